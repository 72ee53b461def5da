//! Scripted faults and the rate-limit budget.

use std::time::{Duration, UNIX_EPOCH};

use reqwest::blocking::Client;
use reqwest::Method;
use serde_json::json;

use super::{api, code, fake, get, header, jit_id, ADMIN, RUNNERS};
use crate::kit::github::{FakeGitHub, Fault, Malformed, Route};

fn now_secs(gh: &FakeGitHub) -> u64 {
    gh.now()
        .duration_since(UNIX_EPOCH)
        .expect("after the epoch")
        .as_secs()
}

#[test]
fn fake_github_primary_rate_limit_then_recovery() {
    let gh = fake();
    gh.push_fault(
        Route::ListRunners,
        Fault::PrimaryRateLimit {
            status: 429,
            reset_in: Duration::from_secs(60),
        },
        1,
    );
    let (status, body, h) = get(&gh, RUNNERS);
    assert_eq!(
        (status, header(&h, "x-ratelimit-remaining")),
        (429, "0".into())
    );
    assert_eq!(
        body["message"],
        "API rate limit exceeded for installation ID 1."
    );
    let reset: u64 = header(&h, "x-ratelimit-reset").parse().expect("reset");
    let now = now_secs(&gh);
    assert!(
        (59..=61).contains(&(reset - now)),
        "reset {reset} now {now}"
    );
    assert_eq!(
        code(&gh, Method::GET, "/repos/octo/hello/actions/runs"),
        429,
        "still limited, any route"
    );
    gh.advance_clock(Duration::from_secs(61));
    assert_eq!(
        code(&gh, Method::GET, RUNNERS),
        200,
        "recovered after reset"
    );

    gh.set_rate_limit(1);
    assert_eq!(code(&gh, Method::GET, RUNNERS), 200);
    let (status, _, h) = get(&gh, RUNNERS);
    assert_eq!(
        (status, header(&h, "x-ratelimit-remaining")),
        (403, "0".into()),
        "budget spent"
    );
    gh.advance_clock(Duration::from_secs(3601));
    assert_eq!(code(&gh, Method::GET, RUNNERS), 200);
}

#[test]
fn fake_github_secondary_rate_limits() {
    let gh = fake();
    gh.push_fault(
        Route::Any,
        Fault::SecondaryRateLimit {
            status: 403,
            retry_after: Some(7),
        },
        1,
    );
    gh.push_fault(
        Route::ListRunners,
        Fault::SecondaryRateLimit {
            status: 429,
            retry_after: None,
        },
        1,
    );
    let reset_in = Duration::from_secs(30);
    gh.push_fault(
        Route::ListRunners,
        Fault::SecondaryResetOnly {
            status: 403,
            reset_in,
        },
        1,
    );
    gh.push_fault(
        Route::ListRunners,
        Fault::SecondaryMessageOnly { status: 403 },
        1,
    );
    let (status, body, h) = get(&gh, RUNNERS);
    assert_eq!((status, header(&h, "retry-after")), (403, "7".into()));
    assert!(body["documentation_url"]
        .as_str()
        .is_some_and(|u| u.ends_with("secondary-rate-limits")));
    let (status, _, h) = get(&gh, RUNNERS);
    assert_eq!((status, h.get("retry-after").is_none()), (429, true));
    let (status, _, h) = get(&gh, RUNNERS);
    let now = now_secs(&gh);
    assert_eq!(status, 403);
    let reset: u64 = header(&h, "x-ratelimit-reset").parse().expect("reset");
    assert!(
        (29..=31).contains(&(reset - now)),
        "reset {reset} now {now}"
    );
    let (status, body, _) = get(&gh, RUNNERS);
    assert_eq!(status, 403);
    assert!(body["message"]
        .as_str()
        .is_some_and(|m| m.contains("secondary rate limit")));
    assert_eq!(body["documentation_url"], "https://docs.github.com/rest");
    assert_eq!(code(&gh, Method::GET, RUNNERS), 200, "faults used up");
}

#[test]
fn fake_github_auth_faults_server_errors_and_delay() {
    let gh = fake();
    for fault in [
        Fault::BadCredentials,
        Fault::PermissionLost,
        Fault::ServerError,
        Fault::BadGateway,
        Fault::ServiceUnavailable,
    ] {
        gh.push_fault(Route::ListRunners, fault, 1);
    }
    assert_eq!(get(&gh, RUNNERS).1["message"], "Bad credentials");
    assert_eq!(
        get(&gh, RUNNERS).1["message"],
        "Resource not accessible by integration"
    );
    assert_eq!(get(&gh, RUNNERS).1, json!({"message": "Server Error"}));
    let resp = api(&gh, Method::GET, RUNNERS).send().expect("502");
    assert_eq!(resp.status().as_u16(), 502);
    assert!(header(resp.headers(), "content-type").starts_with("text/html"));
    assert_eq!(code(&gh, Method::GET, RUNNERS), 503);
    assert_eq!(code(&gh, Method::GET, RUNNERS), 200);

    gh.push_fault(
        Route::ListRunners,
        Fault::Delay(Duration::from_millis(1500)),
        1,
    );
    let quick = Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .expect("client");
    let url = format!("{}{RUNNERS}", gh.api_url());
    let err = quick
        .get(url)
        .header("authorization", format!("Bearer {ADMIN}"))
        .send();
    assert!(
        err.is_err_and(|e| e.is_timeout()),
        "delayed past the client timeout"
    );
}

#[test]
fn fake_github_malformed_bodies() {
    let gh = fake();
    let path = format!("{RUNNERS}/{}", jit_id(&gh, "odd"));
    gh.push_fault(
        Route::GetRunner,
        Fault::Malformed(Malformed::MissingOptional),
        1,
    );
    gh.push_fault(
        Route::ListRunners,
        Fault::Malformed(Malformed::ExtraFields),
        1,
    );
    gh.push_fault(
        Route::GetRunner,
        Fault::Malformed(Malformed::OddStatus("idle".into())),
        1,
    );
    let (status, body, _) = get(&gh, &path);
    assert_eq!((status, body["name"].as_str()), (200, Some("odd")));
    assert!(["runner_group_id", "ephemeral", "version"]
        .iter()
        .all(|k| body.get(k).is_none()));
    let (_, body, _) = get(&gh, RUNNERS);
    assert!(
        body.get("fake_extra_field").is_some()
            && body["runners"][0].get("fake_extra_field").is_some()
    );
    assert_eq!(get(&gh, &path).1["status"], "idle");
}

/// The fake can be started, used and dropped from inside an async runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_github_works_from_async_code() {
    let gh = fake();
    let resp = reqwest::Client::new()
        .get(format!("{}{RUNNERS}", gh.api_url()))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 401);
    drop(gh);
}
