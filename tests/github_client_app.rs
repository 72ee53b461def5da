//! GitHub App authentication end to end against `FakeGitHub` (github-api.md §4, §6.4): JWT,
//! installation lookup, token minting, caching and renewal, and the fake's JWT checks.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use corral::config::{GitHubAuth, Repo};
use corral::github::{GitHubClient, GitHubError};
use serde_json::{json, Value};

use crate::github_client::{repo, settings, within};
use crate::kit::github::{FakeGitHub, Fault, Perm, Route};

const APP: u64 = 42;
const INSTALLATION: u64 = 7;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn public_key() -> String {
    std::fs::read_to_string(fixture("test-only-github-app-key.pub.pem")).expect("public key")
}

fn fake() -> FakeGitHub {
    let gh = FakeGitHub::start();
    gh.add_repo("octo/app");
    gh.add_repo("octo/other");
    gh.add_app(APP, &public_key(), &[(INSTALLATION, &["octo/app"])]);
    gh
}

fn app_client(
    gh: &FakeGitHub,
    base: String,
    key: &str,
    installation_id: Option<u64>,
) -> GitHubClient {
    let auth = GitHubAuth::App {
        id: APP,
        private_key_file: fixture(key),
        installation_id,
    };
    GitHubClient::new(&settings(gh, base, auth))
}

fn client(gh: &FakeGitHub) -> GitHubClient {
    app_client(gh, gh.api_url(), "test-only-github-app-key.pem", None)
}

fn count(gh: &FakeGitHub, suffix: &str) -> usize {
    gh.requests()
        .iter()
        .filter(|r| r.path.ends_with(suffix))
        .count()
}

#[tokio::test]
async fn github_app_token_is_minted_once_and_used() {
    within(async {
        for ghes in [false, true] {
            let gh = fake();
            let base = if ghes {
                gh.ghes_api_url()
            } else {
                gh.api_url()
            };
            let client = app_client(&gh, base, "test-only-github-app-key.pem", None);
            let repo = repo(&gh);
            client.registration_token(&repo).await.expect("first call");
            client.list_runners(&repo).await.expect("second call");
            let minted = gh.minted_installation_tokens();
            assert_eq!(minted.len(), 1, "one mint for two calls");
            assert_eq!(
                count(&gh, "/installation"),
                1,
                "installation looked up once"
            );
            let requests = gh.requests();
            let lookup = requests
                .iter()
                .find(|r| r.path.ends_with("/installation"))
                .expect("lookup");
            let jwt = lookup.header("authorization").unwrap_or_default();
            assert!(jwt.starts_with("Bearer eyJ"), "a JWT: {jwt}");
            let mint = requests
                .iter()
                .find(|r| r.path.ends_with("/access_tokens"))
                .expect("mint");
            assert!(mint
                .path
                .ends_with(&format!("/app/installations/{INSTALLATION}/access_tokens")));
            assert_eq!(ghes, mint.path.starts_with("/api/v3/"));
            let asked: Value = serde_json::from_str(&mint.body).expect("json body");
            assert_eq!(asked, json!({"permissions": {"administration": "write"}}));
            let last = requests.last().expect("request");
            let bearer = format!("Bearer {}", minted[0]);
            assert_eq!(last.header("authorization"), Some(bearer.as_str()));
            assert!(!format!("{client:?}").contains(&minted[0]));
        }
    })
    .await;
}

#[tokio::test]
async fn github_app_token_is_renewed_when_expired_or_revoked() {
    within(async {
        let gh = fake();
        let client = client(&gh);
        let repo = repo(&gh);
        client.list_runners(&repo).await.expect("first token");
        // Expired on GitHub's clock while the client still trusts it: 401, then a new token.
        gh.advance_clock(Duration::from_secs(61 * 60));
        client
            .list_runners(&repo)
            .await
            .expect("renewed after expiry");
        assert_eq!(gh.minted_installation_tokens().len(), 2);
        gh.revoke_installation_tokens();
        client
            .list_runners(&repo)
            .await
            .expect("renewed after revocation");
        assert_eq!(gh.minted_installation_tokens().len(), 3);
        gh.push_fault(Route::ListRunners, Fault::BadCredentials, 1);
        client
            .list_runners(&repo)
            .await
            .expect("renewed after a scripted 401");
        assert_eq!(gh.minted_installation_tokens().len(), 4);
        // Only one retry: a second 401 is the caller's.
        gh.push_fault(Route::ListRunners, Fault::BadCredentials, 2);
        let err = client.list_runners(&repo).await.expect_err("401 twice");
        assert_eq!(err.status(), Some(401));
        assert_eq!(gh.minted_installation_tokens().len(), 5);
    })
    .await;
}

#[tokio::test]
async fn github_app_token_is_renewed_before_it_expires() {
    within(async {
        let gh = fake();
        // Inside the 5-minute renewal margin from the start: every call mints.
        gh.set_installation_token_ttl(Duration::from_secs(4 * 60));
        let client = client(&gh);
        let repo = repo(&gh);
        client.list_runners(&repo).await.expect("first");
        client.list_runners(&repo).await.expect("second");
        assert_eq!(gh.minted_installation_tokens().len(), 2);
        assert_eq!(
            count(&gh, "/installation"),
            1,
            "the installation stays cached"
        );
    })
    .await;
}

#[tokio::test]
async fn github_app_with_a_fixed_installation_skips_the_lookup() {
    within(async {
        let gh = fake();
        let client = app_client(
            &gh,
            gh.api_url(),
            "test-only-github-app-key.pem",
            Some(INSTALLATION),
        );
        client.list_runners(&repo(&gh)).await.expect("list");
        assert_eq!(count(&gh, "/installation"), 0);
        assert_eq!(gh.minted_installation_tokens().len(), 1);
    })
    .await;
}

#[tokio::test]
async fn github_app_errors_are_typed() {
    within(async {
        let gh = fake();
        let other = Repo {
            owner: "octo".into(),
            name: "other".into(),
            url: gh.runner_url("octo/other"),
        };
        let err = client(&gh)
            .list_runners(&other)
            .await
            .expect_err("not installed");
        assert!(
            matches!(err, GitHubError::NotInstalled { app_id: APP, .. }),
            "{err:?}"
        );

        let wrong = app_client(&gh, gh.api_url(), "test-only-other-app-key.pem", None);
        let err = wrong.list_runners(&repo(&gh)).await.expect_err("wrong key");
        assert_eq!(err.status(), Some(401));
        assert!(err.to_string().contains("could not be decoded"), "{err}");

        let missing = app_client(&gh, gh.api_url(), "no-such-key.pem", None);
        let err = missing.list_runners(&repo(&gh)).await.expect_err("no key");
        assert!(matches!(err, GitHubError::AppKey { .. }), "{err:?}");

        gh.set_app_permissions(APP, Perm::Read, Perm::Read);
        let err = client(&gh)
            .list_runners(&repo(&gh))
            .await
            .expect_err("narrower app");
        assert_eq!(err.status(), Some(422), "{err}");
    })
    .await;
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn jwt(key: &str, claims: &Value) -> String {
    let pem = std::fs::read(fixture(key)).expect("key");
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(&pem).expect("rsa key");
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    jsonwebtoken::encode(&header, claims, &key).expect("sign")
}

async fn mint_with(gh: &FakeGitHub, installation: u64, jwt: &str) -> (u16, Value) {
    let url = format!(
        "{}/app/installations/{installation}/access_tokens",
        gh.api_url()
    );
    let resp = reqwest::Client::new()
        .post(url)
        .header("user-agent", "corral-tests")
        .bearer_auth(jwt)
        .send()
        .await
        .expect("send");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn fake_github_checks_app_jwts() {
    within(async {
        let gh = fake();
        let key = "test-only-github-app-key.pem";
        let t = now();
        let good = json!({"iat": t - 60, "exp": t + 540, "iss": APP.to_string()});
        let (status, body) = mint_with(&gh, INSTALLATION, &jwt(key, &good)).await;
        assert_eq!(status, 201, "{body}");
        let token = body["token"].as_str().unwrap_or_default();
        assert!(token.starts_with("ghs_"), "{body}");
        assert_eq!(body["repository_selection"], "selected");
        assert!(body["expires_at"].is_string());

        let cases = [
            (
                json!({"iat": t - 60, "exp": t + 900, "iss": APP}),
                401,
                "too far in the future",
            ),
            (
                json!({"iat": t - 60, "exp": t - 1, "iss": APP}),
                401,
                "'Expiration time'",
            ),
            (
                json!({"iat": t + 120, "exp": t + 300, "iss": APP}),
                401,
                "'Issued at'",
            ),
            (
                json!({"iat": t - 60, "exp": t + 540, "iss": 999}),
                404,
                "Integration not found",
            ),
        ];
        for (claims, want, text) in cases {
            let (status, body) = mint_with(&gh, INSTALLATION, &jwt(key, &claims)).await;
            let message = body["message"].as_str().unwrap_or_default();
            assert_eq!(status, want, "{claims}: {body}");
            assert!(message.contains(text), "{claims}: {message}");
        }
        let (status, _) = mint_with(&gh, 999, &jwt(key, &good)).await;
        assert_eq!(status, 404, "unknown installation");
        let (status, body) = mint_with(
            &gh,
            INSTALLATION,
            &jwt("test-only-other-app-key.pem", &good),
        )
        .await;
        assert_eq!(
            (status, body["message"].as_str()),
            (401, Some("A JSON web token could not be decoded"))
        );
        let (status, _) = mint_with(&gh, INSTALLATION, "garbage").await;
        assert_eq!(status, 401);
    })
    .await;
}
