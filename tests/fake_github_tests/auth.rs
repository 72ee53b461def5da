//! Headers, authentication, permissions, routing, pagination, token shapes.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use super::{api, client, code, fake, get, header, jit, send, ADMIN, RUNNERS};
use crate::kit::github::{FakeGitHub, Perm, TokenKind};

#[test]
fn fake_github_response_headers_and_prefixes() {
    let gh = fake();
    let (status, body, _) = send(client().get(format!("{}{RUNNERS}", gh.api_url())));
    assert_eq!(
        (status, body["message"].as_str()),
        (401, Some("Requires authentication"))
    );
    let (_, _, h) = send(
        client()
            .get(format!("{}{RUNNERS}", gh.api_url()))
            .header("authorization", "Bearer nope"),
    );
    let names = [
        "x-github-request-id",
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-used",
        "x-ratelimit-reset",
    ];
    for name in names {
        assert!(!header(&h, name).is_empty(), "missing {name}");
    }
    assert_eq!(
        header(&h, "content-type"),
        "application/json; charset=utf-8"
    );
    assert_eq!(header(&h, "x-ratelimit-resource"), "core");

    let (status, _, h1) = get(&gh, RUNNERS);
    assert_eq!(
        (status, header(&h1, "x-accepted-github-permissions")),
        (200, "administration=read".into())
    );
    let ghes = client()
        .get(format!("{}{RUNNERS}", gh.ghes_api_url()))
        .header("authorization", format!("token {ADMIN}"));
    let (status, _, h2) = send(ghes);
    assert_eq!(status, 200, "`token` prefix on the GHES base");
    let remaining = |h: &reqwest::header::HeaderMap| {
        header(h, "x-ratelimit-remaining")
            .parse::<u64>()
            .expect("number")
    };
    assert_eq!(
        remaining(&h1) - 1,
        remaining(&h2),
        "budget decremented per request"
    );

    let recorded = gh.requests();
    let last = recorded
        .iter()
        .rev()
        .find(|r| r.path.starts_with("/repos/"))
        .expect("recorded");
    assert_eq!(last.header("User-Agent"), Some("corral-tests"));
    assert_eq!(last.header("x-github-api-version"), Some("2022-11-28"));
    assert_eq!(last.header("accept"), Some("application/vnd.github+json"));
}

#[test]
fn fake_github_auth_errors_and_routing() {
    let gh = fake();
    let bad = client()
        .get(format!("{}{RUNNERS}", gh.api_url()))
        .header("authorization", "Bearer nope");
    let (status, body, _) = send(bad);
    let want = json!({"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest", "status": "401"});
    assert_eq!((status, body), (401, want));
    assert_eq!(
        code(&gh, Method::GET, "/repos/OCTO/Hello/actions/runners"),
        200,
        "case-insensitive"
    );
    let (status, body, _) = get(&gh, "/repos/octo/nope/actions/runners");
    let want = json!({"message": "Not Found", "documentation_url": "https://docs.github.com/rest"});
    assert_eq!((status, body), (404, want));
    assert_eq!(
        code(&gh, Method::GET, &format!("{RUNNERS}/")),
        404,
        "trailing slash"
    );
    assert_eq!(
        code(
            &gh,
            Method::GET,
            "/api/v3/repos/octo/hello/actions/runners/"
        ),
        404,
        "trailing slash, GHES"
    );
}

#[test]
fn fake_github_strict_headers() {
    let gh = fake();
    gh.set_strict(true);
    let url = format!("{}{RUNNERS}", gh.api_url());
    let bare = client()
        .get(&url)
        .header("authorization", format!("Bearer {ADMIN}"));
    assert_eq!(send(bare).0, 403, "no User-Agent");
    let odd = client()
        .get(&url)
        .header("authorization", format!("Bearer {ADMIN}"))
        .header("user-agent", "t")
        .header("x-github-api-version", "1999-01-01");
    assert_eq!(send(odd).0, 400, "unknown API version");
    assert_eq!(code(&gh, Method::GET, RUNNERS), 200);
}

fn as_token(gh: &FakeGitHub, token: &str, method: Method, path: &str) -> (u16, Value) {
    let req = client()
        .request(method, format!("{}{path}", gh.api_url()))
        .header("authorization", format!("Bearer {token}"));
    let (status, body, _) = send(req);
    (status, body)
}

#[test]
fn fake_github_permissions() {
    let gh = fake();
    gh.add_token(
        "github_pat_ro",
        TokenKind::FineGrained {
            administration: Perm::Read,
            actions: Perm::None,
            repos: vec![],
        },
    );
    let other = vec!["octo/other".to_string()];
    gh.add_token(
        "ghs_other",
        TokenKind::Installation {
            administration: Perm::Write,
            actions: Perm::None,
            repos: other,
        },
    );
    gh.add_token(
        "ghs_here",
        TokenKind::Installation {
            administration: Perm::Write,
            actions: Perm::None,
            repos: vec![],
        },
    );
    gh.add_token(
        "ghp_noscope",
        TokenKind::Classic {
            scopes: vec!["read:org".into()],
        },
    );
    let reg = format!("{RUNNERS}/registration-token");
    assert_eq!(as_token(&gh, "github_pat_ro", Method::GET, RUNNERS).0, 200);
    let (status, body) = as_token(&gh, "github_pat_ro", Method::POST, &reg);
    assert_eq!(
        (status, body["message"].as_str()),
        (
            403,
            Some("Resource not accessible by personal access token")
        )
    );
    assert_eq!(body["status"], "403");
    let (status, body) = as_token(
        &gh,
        "ghs_here",
        Method::GET,
        "/repos/octo/hello/actions/runs",
    );
    assert_eq!(
        (status, body["message"].as_str()),
        (403, Some("Resource not accessible by integration"))
    );
    assert_eq!(as_token(&gh, "ghs_here", Method::POST, &reg).0, 201);
    assert_eq!(
        as_token(&gh, "ghs_other", Method::GET, RUNNERS).0,
        404,
        "outside the installation"
    );
    assert_eq!(as_token(&gh, "ghp_noscope", Method::GET, RUNNERS).0, 403);
}

#[test]
fn fake_github_revoked_and_expired_tokens() {
    let gh = fake();
    gh.add_token("ghp_revoked", TokenKind::Revoked);
    let classic = TokenKind::Classic {
        scopes: vec!["repo".into()],
    };
    gh.add_token_expiring("ghs_short", classic, Duration::from_secs(3600));
    assert_eq!(as_token(&gh, "ghp_revoked", Method::GET, RUNNERS).0, 401);
    assert_eq!(as_token(&gh, "ghs_short", Method::GET, RUNNERS).0, 200);
    gh.advance_clock(Duration::from_secs(3601));
    let (status, body) = as_token(&gh, "ghs_short", Method::GET, RUNNERS);
    assert_eq!(
        (status, body["message"].as_str()),
        (401, Some("Bad credentials"))
    );
}

#[test]
fn fake_github_registration_and_remove_token_shape() {
    let gh = fake();
    for kind in ["registration-token", "remove-token"] {
        let (status, body, _) = send(api(&gh, Method::POST, &format!("{RUNNERS}/{kind}")));
        assert_eq!(status, 201);
        let token = body["token"].as_str().expect("token");
        assert_eq!(token.len(), 29);
        assert!(token
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()));
        // e.g. 2020-01-22T12:13:35.123-08:00
        let at = body["expires_at"].as_str().expect("expires_at");
        assert_eq!((at.len(), &at[10..11], &at[19..20]), (29, "T", "."), "{at}");
        assert!(at.ends_with("-08:00"), "{at}");
        assert_eq!(at.chars().filter(char::is_ascii_digit).count(), 21, "{at}");
    }
}

fn names(body: &Value) -> Vec<&str> {
    body["runners"]
        .as_array()
        .expect("runners")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect()
}

#[test]
fn fake_github_pagination_with_link() {
    let gh = fake();
    for i in 0..5 {
        assert_eq!(jit(&gh, &format!("r{i}")).0, 201);
    }
    let (status, body, h) = get(&gh, RUNNERS);
    assert_eq!(
        (status, body["total_count"].as_u64(), names(&body).len()),
        (200, Some(5), 5)
    );
    assert!(h.get("link").is_none(), "one page, no Link");
    let base = format!("{}/api/v3{RUNNERS}", gh.web_url());
    let (_, body, h) = get(&gh, &format!("/api/v3{RUNNERS}?per_page=2"));
    assert_eq!(names(&body), ["r0", "r1"]);
    let want = format!(
        "<{base}?per_page=2&page=2>; rel=\"next\", <{base}?per_page=2&page=3>; rel=\"last\""
    );
    assert_eq!(header(&h, "link"), want);
    let (_, body, h) = get(&gh, &format!("/api/v3{RUNNERS}?per_page=2&page=3"));
    assert_eq!(
        (names(&body), body["total_count"].as_u64()),
        (vec!["r4"], Some(5))
    );
    let want = format!(
        "<{base}?per_page=2&page=2>; rel=\"prev\", <{base}?per_page=2&page=1>; rel=\"first\""
    );
    assert_eq!(header(&h, "link"), want);
    let (_, body, _) = get(&gh, &format!("{RUNNERS}?name=r3"));
    assert_eq!(
        (body["total_count"].as_u64(), names(&body)),
        (Some(1), vec!["r3"])
    );
}
