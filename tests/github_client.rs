//! `corral::github::GitHubClient` against `FakeGitHub` with a PAT: headers, bases, pagination,
//! the token file, and every fault of github-api.md §6.6 that is not about Apps.

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use corral::config::{GitHub, GitHubAuth, Repo};
use corral::github::{GitHubClient, GitHubError};

use crate::kit::github::{FakeGitHub, Fault, Malformed, Route, TokenKind};

const PAT: &str = "ghp_clienttests0000000000000000000000";
const REPO: &str = "octo/app";

/// Runs a test body with a deadline, so a hung request fails instead of hanging the suite.
pub async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .expect("test timed out")
}

/// The repository every test uses.
pub fn repo(gh: &FakeGitHub) -> Repo {
    Repo {
        owner: "octo".into(),
        name: "app".into(),
        url: gh.runner_url(REPO),
    }
}

/// `github` settings for the fake at `api_url`.
pub fn settings(gh: &FakeGitHub, api_url: String, auth: GitHubAuth) -> GitHub {
    GitHub {
        web_url: gh.web_url(),
        api_url,
        auth,
        marker_label: None,
        cleanup_orphans: false,
    }
}

struct World {
    gh: FakeGitHub,
    _dir: tempfile::TempDir,
    token_file: PathBuf,
    client: GitHubClient,
}

fn world() -> World {
    world_with(Duration::from_secs(10), FakeGitHub::api_url)
}

fn world_with(timeout: Duration, base: impl Fn(&FakeGitHub) -> String) -> World {
    let gh = FakeGitHub::start();
    gh.add_repo(REPO);
    let classic = TokenKind::Classic {
        scopes: vec!["repo".into()],
    };
    gh.add_token(PAT, classic);
    let dir = tempfile::tempdir().expect("temp dir");
    let token_file = dir.path().join("pat");
    std::fs::write(&token_file, format!("{PAT}\n")).expect("write token");
    let github = settings(&gh, base(&gh), GitHubAuth::TokenFile(token_file.clone()));
    let client = GitHubClient::with_timeout(&github, timeout);
    World {
        gh,
        _dir: dir,
        token_file,
        client,
    }
}

fn labels() -> Vec<String> {
    vec!["self-hosted".into(), "linux".into(), "gpu".into()]
}

#[tokio::test]
async fn github_client_sends_the_documented_headers_on_both_bases() {
    within(async {
        let bases: [fn(&FakeGitHub) -> String; 3] = [
            |gh| gh.api_url(),
            |gh| gh.ghes_api_url(),
            |gh| format!("{}/", gh.ghes_api_url()),
        ];
        for (i, base) in bases.into_iter().enumerate() {
            let w = world_with(Duration::from_secs(10), base);
            w.gh.set_strict(true);
            let token = w.client.registration_token(&repo(&w.gh)).await;
            assert!(token.is_ok(), "base {i}: {token:?}");
            let last = w.gh.requests().pop().expect("a request");
            let want = if i == 0 { "/repos/" } else { "/api/v3/repos/" };
            assert!(last.path.starts_with(want), "base {i}: {}", last.path);
            assert_eq!(last.header("accept"), Some("application/vnd.github+json"));
            assert_eq!(last.header("x-github-api-version"), Some("2022-11-28"));
            let ua = last.header("user-agent").unwrap_or_default();
            assert!(ua.starts_with("corral/"), "{ua}");
            let bearer = format!("Bearer {PAT}");
            assert_eq!(last.header("authorization"), Some(bearer.as_str()));
            let budget = w.client.budget().expect("budget from the response");
            assert_eq!((budget.limit, budget.remaining), (5000, 4999));
            assert!(budget.reset_at > SystemTime::now());
        }
    })
    .await;
}

#[tokio::test]
async fn github_client_follows_link_pages() {
    within(async {
        let w = world();
        let repo = repo(&w.gh);
        for i in 0..130 {
            w.client
                .generate_jitconfig(&repo, &format!("ci-{i:03}"), &labels(), "_work")
                .await
                .expect("jit");
        }
        let before = w.gh.requests().len();
        let all = w.client.list_runners(&repo).await.expect("list");
        assert_eq!(all.len(), 130);
        let pages = w.gh.requests().len() - before;
        assert_eq!(pages, 2, "100 per page, then the rel=\"next\" page");
        let found = w.client.find_runner(&repo, "ci-129").await.expect("find");
        assert_eq!(found.map(|r| r.name), Some("ci-129".to_string()));
        assert_eq!(all[0].custom_labels(), vec!["gpu".to_string()]);
    })
    .await;
}

#[tokio::test]
async fn github_client_rereads_a_changed_token_file() {
    within(async {
        let w = world();
        let repo = repo(&w.gh);
        w.client.remove_token(&repo).await.expect("first token");
        let rotated = "ghp_rotated00000000000000000000000000";
        w.gh.add_token(
            rotated,
            TokenKind::Classic {
                scopes: vec!["repo".into()],
            },
        );
        w.gh.add_token(PAT, TokenKind::Revoked);
        std::fs::write(&w.token_file, rotated).expect("rotate");
        w.client.remove_token(&repo).await.expect("rotated token");
        let last = w.gh.requests().pop().expect("request");
        let bearer = format!("Bearer {rotated}");
        assert_eq!(last.header("authorization"), Some(bearer.as_str()));
    })
    .await;
}

#[tokio::test]
async fn github_client_does_not_retry_a_lost_permission() {
    within(async {
        let w = world();
        w.gh.push_fault(Route::RegistrationToken, Fault::PermissionLost, 1);
        let before = w.gh.requests().len();
        let err = w
            .client
            .registration_token(&repo(&w.gh))
            .await
            .expect_err("403");
        assert_eq!(err.status(), Some(403));
        assert!(!err.is_transient(), "{err}");
        assert!(err.to_string().contains("Resource not accessible"), "{err}");
        assert_eq!(w.gh.requests().len() - before, 1, "sent once");
        assert!(
            w.client.blocked_until().is_none(),
            "a 403 without limit signs is no limit"
        );
    })
    .await;
}

#[tokio::test]
async fn github_client_retries_server_errors() {
    within(async {
        let w = world();
        let repo = repo(&w.gh);
        w.gh.push_fault(Route::ListRunners, Fault::ServerError, 2);
        w.gh.push_fault(Route::ListRunners, Fault::ServiceUnavailable, 1);
        let before = w.gh.requests().len();
        w.client
            .list_runners(&repo)
            .await
            .expect("fourth attempt succeeds");
        assert_eq!(w.gh.requests().len() - before, 4);

        w.gh.push_fault(Route::ListRunners, Fault::BadGateway, 4);
        let err = w
            .client
            .list_runners(&repo)
            .await
            .expect_err("502 every time");
        assert_eq!(err.status(), Some(502));
        assert!(err.is_transient());
        let text = err.to_string();
        assert!(text.contains("non-JSON body (text/html"), "{text}");
    })
    .await;
}

#[tokio::test]
async fn github_client_times_out_a_slow_answer() {
    within(async {
        let w = world_with(Duration::from_millis(300), FakeGitHub::api_url);
        let repo = repo(&w.gh);
        w.gh.push_fault(Route::ListRunners, Fault::Delay(Duration::from_secs(3)), 1);
        let err = w.client.list_runners(&repo).await.expect_err("timeout");
        assert!(matches!(err, GitHubError::Timeout { .. }), "{err:?}");
        assert!(err.is_transient());
        w.client
            .list_runners(&repo)
            .await
            .expect("next call answers");
    })
    .await;
}

/// Asserts `err` is a rate limit ending within `range` from now; returns its end.
fn limited(err: &GitHubError, secondary: bool, range: std::ops::Range<u64>) -> SystemTime {
    let GitHubError::RateLimited {
        until,
        secondary: s,
    } = err
    else {
        panic!("not rate limited: {err:?}");
    };
    assert_eq!(*s, secondary, "{err}");
    let left = until
        .duration_since(SystemTime::now())
        .unwrap_or_default()
        .as_secs();
    assert!(range.contains(&left), "{left} s left, want {range:?}");
    *until
}

/// Calls twice more while blocked: neither reaches the fake, clones included.
async fn held_back(w: &World) {
    let before = w.gh.requests().len();
    let clone = w.client.clone();
    for client in [&w.client, &clone] {
        let err = client
            .list_runners(&repo(&w.gh))
            .await
            .expect_err("blocked");
        assert!(matches!(err, GitHubError::RateLimited { .. }), "{err:?}");
    }
    assert_eq!(w.gh.requests().len(), before, "nothing sent while blocked");
}

async fn resumes(w: &World, until: SystemTime) {
    let left = until.duration_since(SystemTime::now()).unwrap_or_default();
    tokio::time::sleep(left).await;
    w.client.list_runners(&repo(&w.gh)).await.expect("resumed");
}

#[tokio::test]
async fn github_client_waits_out_a_primary_limit() {
    within(async {
        for status in [403, 429] {
            let w = world();
            let fault = Fault::PrimaryRateLimit {
                status,
                reset_in: Duration::from_secs(1),
            };
            w.gh.push_fault(Route::ListRunners, fault, 1);
            let err = w
                .client
                .list_runners(&repo(&w.gh))
                .await
                .expect_err("limited");
            let until = limited(&err, false, 0..3);
            assert_eq!(w.client.budget().map(|b| b.remaining), Some(0));
            held_back(&w).await;
            resumes(&w, until).await;
        }
    })
    .await;
}

#[tokio::test]
async fn github_client_waits_out_a_secondary_limit_with_retry_after() {
    within(async {
        let w = world();
        let fault = Fault::SecondaryRateLimit {
            status: 403,
            retry_after: Some(1),
        };
        w.gh.push_fault(Route::RegistrationToken, fault, 1);
        let err = w
            .client
            .registration_token(&repo(&w.gh))
            .await
            .expect_err("limited");
        let until = limited(&err, true, 0..2);
        held_back(&w).await;
        resumes(&w, until).await;
    })
    .await;
}

#[tokio::test]
async fn github_client_waits_a_minute_for_other_secondary_limits() {
    within(async {
        let faults = [
            Fault::SecondaryRateLimit {
                status: 429,
                retry_after: None,
            },
            Fault::SecondaryResetOnly {
                status: 403,
                reset_in: Duration::from_secs(120),
            },
            Fault::SecondaryMessageOnly { status: 403 },
            Fault::SecondaryMessageOnly { status: 429 },
        ];
        for fault in faults {
            let w = world();
            w.gh.push_fault(Route::ListRunners, fault.clone(), 1);
            let err = w
                .client
                .list_runners(&repo(&w.gh))
                .await
                .expect_err("limited");
            limited(&err, true, 55..61);
            held_back(&w).await;
        }
    })
    .await;
}

#[tokio::test]
async fn github_client_repairs_a_ghost_jit_registration() {
    within(async {
        let w = world();
        let repo = repo(&w.gh);
        w.gh.push_fault(
            Route::GenerateJitConfig,
            Fault::GhostCreate { status: 502 },
            1,
        );
        let jit = w
            .client
            .generate_jitconfig(&repo, "ci-ghost", &labels(), "_work")
            .await
            .expect("repaired");
        let runners = w.gh.runners(REPO);
        assert_eq!(runners.len(), 1, "the ghost was replaced, not kept");
        assert_eq!(runners[0].id, jit.runner_id);
        let deletes =
            w.gh.requests()
                .iter()
                .filter(|r| r.method == "DELETE")
                .count();
        assert_eq!(deletes, 1);
    })
    .await;
}

#[tokio::test]
async fn github_client_never_deletes_a_busy_registration_to_reuse_its_name() {
    within(async {
        let w = world();
        let repo = repo(&w.gh);
        let busy = w
            .client
            .generate_jitconfig(&repo, "ci-busy", &labels(), "_work")
            .await
            .expect("jit");
        w.gh.set_runner_busy(busy.runner_id, true);
        // A 5xx, then 409 from the retry: the same as a ghost, but this one is running a job.
        w.gh.push_fault(Route::GenerateJitConfig, Fault::ServerError, 1);
        let err = w
            .client
            .generate_jitconfig(&repo, "ci-busy", &labels(), "_work")
            .await
            .expect_err("name in use");
        assert!(
            matches!(err, GitHubError::NameInUse { id, .. } if id == busy.runner_id),
            "{err:?}"
        );
        assert!(w.gh.runner(busy.runner_id).is_some(), "not deleted");

        let err = w
            .client
            .generate_jitconfig(&repo, "ci-busy", &labels(), "_work")
            .await
            .expect_err("plain 409");
        assert_eq!(err.status(), Some(409), "no 5xx before: the caller decides");
    })
    .await;
}

#[tokio::test]
async fn github_client_reports_a_busy_delete_and_tolerates_a_gone_one() {
    within(async {
        let w = world();
        let repo = repo(&w.gh);
        let jit = w
            .client
            .generate_jitconfig(&repo, "ci-del", &labels(), "_work")
            .await
            .expect("jit");
        w.gh.push_fault(Route::DeleteRunner, Fault::BusyDelete, 1);
        let err = w
            .client
            .delete_runner(&repo, jit.runner_id)
            .await
            .expect_err("busy");
        assert!(matches!(err, GitHubError::Busy { .. }), "{err:?}");
        assert_eq!(err.status(), Some(422));
        w.client
            .delete_runner(&repo, jit.runner_id)
            .await
            .expect("deleted");
        w.client
            .delete_runner(&repo, jit.runner_id)
            .await
            .expect("404 is gone");
    })
    .await;
}

#[tokio::test]
async fn github_client_tolerates_odd_but_valid_bodies() {
    within(async {
        let w = world();
        let repo = repo(&w.gh);
        w.client
            .generate_jitconfig(&repo, "ci-odd", &labels(), "_work")
            .await
            .expect("jit");
        let odd = [
            Malformed::MissingOptional,
            Malformed::ExtraFields,
            Malformed::OddStatus("starting".into()),
        ];
        for how in odd {
            w.gh.push_fault(Route::ListRunners, Fault::Malformed(how.clone()), 1);
            let list = w.client.list_runners(&repo).await.expect("lenient");
            assert_eq!(list.len(), 1, "{how:?}");
        }
        let found = w.client.find_runner(&repo, "ci-odd").await.expect("find");
        assert_eq!(found.map(|r| r.status), Some("offline".to_string()));
        w.gh.push_fault(
            Route::ListRunners,
            Fault::Malformed(Malformed::OddStatus("starting".into())),
            1,
        );
        let list = w.client.list_runners(&repo).await.expect("lenient");
        assert_eq!(list[0].status, "starting");
    })
    .await;
}

#[tokio::test]
async fn github_client_never_shows_a_token() {
    within(async {
        let w = world();
        let repo = repo(&w.gh);
        w.gh.push_fault(Route::RegistrationToken, Fault::BadCredentials, 1);
        let err = w.client.registration_token(&repo).await.expect_err("401");
        let token = w.client.remove_token(&repo).await.expect("token");
        let jit = w
            .client
            .generate_jitconfig(&repo, "ci-secret", &labels(), "_work")
            .await
            .expect("jit");
        let shown = format!("{err} {err:?} {:?} {token:?} {jit:?}", w.client);
        assert!(!shown.contains(PAT), "{shown}");
        assert!(!shown.contains(token.expose()), "{shown}");
        assert!(!shown.contains(jit.encoded.expose()), "{shown}");
    })
    .await;
}
