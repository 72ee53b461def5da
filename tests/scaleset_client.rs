//! `corral::scaleset` against the fake's scale-set service (`reference/scaleset-api.md` §8):
//! the admin connection and its renewal, scale-set create/adopt/delete, one session per set,
//! the long poll, acquisition, JIT configs the fake runner runs, queue-token expiry, and the
//! engine's loop (capacity, a leftover session after a crash, close on stop).

use std::path::Path;
use std::time::{Duration, Instant};

use corral::config::GitHubAuth;
use corral::github::GitHubClient;
use corral::scaleset::engine::{self, EngineConfig, EngineStatus, SessionState};
use corral::scaleset::{Message, ScaleSetClient, Session};
use tokio::sync::watch;

use crate::github_client::{repo, settings, within};
use crate::kit::github::{FakeGitHub, JobResult, JobSpec, TokenKind};
use crate::kit::install::FakeRunnerInstall;
use crate::kit::proc::Proc;

const PAT: &str = "ghp_scalesettests000000000000000000000";
const REPO: &str = "octo/app";
const SET: &str = "corral-ci";

struct World {
    gh: FakeGitHub,
    client: ScaleSetClient,
    dir: tempfile::TempDir,
}

fn world() -> World {
    let gh = FakeGitHub::start();
    gh.add_repo(REPO);
    gh.add_token(
        PAT,
        TokenKind::Classic {
            scopes: vec!["repo".into()],
        },
    );
    gh.set_scaleset_timing(Duration::from_millis(300), Duration::from_secs(2));
    let dir = tempfile::tempdir().expect("temp dir");
    let token_file = dir.path().join("pat");
    std::fs::write(&token_file, PAT).expect("write token");
    let github = settings(&gh, gh.ghes_api_url(), GitHubAuth::TokenFile(token_file));
    let rest = GitHubClient::with_timeout(&github, Duration::from_secs(10));
    let client = ScaleSetClient::new(rest, &gh.ghes_api_url(), repo(&gh))
        .with_retry_delay(Duration::from_millis(50));
    World { gh, client, dir }
}

fn labels() -> Vec<String> {
    vec![SET.to_string()]
}

fn job(name: &str, millis: u64) -> JobSpec {
    JobSpec {
        name: name.into(),
        duration: Duration::from_millis(millis),
        result: JobResult::Succeeded,
    }
}

/// Polls until a message whose events include `kind`; acknowledges every message seen.
async fn until_event(w: &World, session: &mut Session, last: &mut i64, kind: &str) -> Message {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let got = w.client.get_message(session, *last, 2).await.expect("poll");
        let Some(message) = got else { continue };
        *last = message.message_id;
        w.client
            .ack(session, message.message_id)
            .await
            .expect("ack");
        if message.events().iter().any(|e| e.message_type == kind) {
            return message;
        }
    }
    panic!("no {kind} event");
}

fn exchanges(gh: &FakeGitHub) -> usize {
    gh.requests()
        .iter()
        .filter(|r| r.path.ends_with("/actions/runner-registration"))
        .count()
}

#[tokio::test]
async fn scaleset_client_adopts_its_set_and_holds_one_session() {
    within(async {
        let w = world();
        let set = w
            .client
            .ensure_scale_set(SET, &labels())
            .await
            .expect("create");
        let again = w
            .client
            .ensure_scale_set(SET, &labels())
            .await
            .expect("adopt");
        assert_eq!(set.id, again.id, "the second call adopts the first set");
        assert_eq!(w.gh.scale_sets(REPO).len(), 1);
        // Labels follow the file.
        let wider = vec![SET.to_string(), "gpu".to_string()];
        w.client
            .ensure_scale_set(SET, &wider)
            .await
            .expect("relabel");
        assert_eq!(w.gh.scale_sets(REPO)[0].2, wider);
        let first = w
            .client
            .create_session(set.id, "host-a")
            .await
            .expect("session");
        let second = w.client.create_session(set.id, "host-b").await;
        let err = second.expect_err("a second session conflicts");
        assert!(err.is_conflict(), "{err}");
        assert!(
            err.to_string().contains("already has an active session"),
            "{err}"
        );
        w.client.delete_session(&first).await.expect("close");
        w.client
            .create_session(set.id, "host-b")
            .await
            .expect("free once the first is closed");
        // The exchange used RemoteAuth; tenant calls name the API version; no token leaks.
        let requests = w.gh.requests();
        let exchange = requests
            .iter()
            .find(|r| r.path.ends_with("/actions/runner-registration"))
            .expect("an exchange");
        assert!(exchange
            .header("authorization")
            .is_some_and(|a| a.starts_with("RemoteAuth ")));
        assert!(requests
            .iter()
            .filter(|r| r.path.contains("/_apis/"))
            .all(|r| r
                .query
                .as_deref()
                .is_some_and(|q| q.contains("api-version=6.0-preview"))));
        assert!(!format!("{err:?}{first:?}").contains(PAT));
        w.client.delete_scale_set(set.id).await.expect("delete");
        assert!(w.gh.scale_sets(REPO).is_empty());
        w.client
            .delete_scale_set(set.id)
            .await
            .expect("gone is fine");
    })
    .await;
}

/// A fake runner install under `dir`, started with `config` as its JIT configuration.
fn start_runner(dir: &Path, config: &str) -> Proc {
    let root = FakeRunnerInstall::new()
        .poll_wait_secs(1)
        .build(&dir.join("runner"))
        .expect("fake install");
    let mut cmd = std::process::Command::new(root.join("bin/Runner.Listener"));
    cmd.arg("run")
        .current_dir(&root)
        .env("ACTIONS_RUNNER_INPUT_JITCONFIG", config);
    Proc::spawn(cmd)
}

#[tokio::test]
async fn scaleset_job_is_acquired_then_run_by_a_jit_runner_of_the_set() {
    within(async {
        let w = world();
        let set = w
            .client
            .ensure_scale_set(SET, &labels())
            .await
            .expect("set");
        let mut session = w
            .client
            .create_session(set.id, "host")
            .await
            .expect("session");
        let mut last = 0;
        // Nothing yet: the poll is held, then 202.
        assert!(w
            .client
            .get_message(&mut session, 0, 2)
            .await
            .expect("poll")
            .is_none());
        let (runner_id, config) = w
            .client
            .generate_jit_config(set.id, "ci-1")
            .await
            .expect("jit");
        let mut runner = start_runner(w.dir.path(), config.expose());
        crate::kit::proc::wait_until("the JIT runner online", || {
            w.gh.runner(runner_id)
                .is_some_and(|r| r.status == crate::kit::github::RunnerStatus::Online)
        });
        let other =
            w.gh.queue_job(REPO, &["self-hosted", "linux"], job("other", 100));
        let id = w.gh.queue_job(REPO, &[SET], job("build", 300));
        let available = until_event(&w, &mut session, &mut last, "JobAvailable").await;
        let stats = available.statistics.expect("statistics");
        assert_eq!(stats.total_available_jobs, 1, "only the job for the set");
        assert!(
            w.gh.job(id).is_some_and(|j| j.runner_id.is_none()),
            "not before it is acquired"
        );
        let event = available
            .events()
            .into_iter()
            .find(|e| e.message_type == "JobAvailable");
        let request = event.expect("available").runner_request_id;
        let got = w
            .client
            .acquire_jobs(&mut session, &[request])
            .await
            .expect("acquire");
        assert_eq!(got, [request]);
        until_event(&w, &mut session, &mut last, "JobStarted").await;
        let done = until_event(&w, &mut session, &mut last, "JobCompleted").await;
        let completed = done
            .events()
            .into_iter()
            .find(|e| e.message_type == "JobCompleted");
        assert_eq!(
            completed.and_then(|e| e.runner_name).as_deref(),
            Some("ci-1")
        );
        assert_eq!(
            w.gh.job(id).and_then(|j| j.conclusion).as_deref(),
            Some("success")
        );
        assert_eq!(runner.exit_code(), 0, "a JIT runner runs one job and exits");
        assert!(
            w.gh.job(other).is_some_and(|j| j.runner_id.is_none()),
            "never the other job"
        );
        let stats = w.gh.scale_set_stats(set.id);
        assert_eq!(stats["totalAssignedJobs"], 0);
    })
    .await;
}

#[tokio::test]
async fn scaleset_queue_token_expiry_mid_poll_refreshes_the_session() {
    within(async {
        let w = world();
        let set = w
            .client
            .ensure_scale_set(SET, &labels())
            .await
            .expect("set");
        let mut session = w
            .client
            .create_session(set.id, "host")
            .await
            .expect("session");
        let id = session.id.clone();
        w.gh.expire_queue_tokens();
        let job = w.gh.queue_job(REPO, &[SET], job("after expiry", 100));
        let mut last = 0;
        let message = until_event(&w, &mut session, &mut last, "JobAvailable").await;
        assert!(message
            .events()
            .iter()
            .any(|e| e.runner_request_id == i64::try_from(job).unwrap_or(0)));
        assert_eq!(session.id, id, "the same session, with a new queue token");
        let patches =
            w.gh.requests()
                .iter()
                .filter(|r| r.method == "PATCH" && r.path.contains("/sessions/"))
                .count();
        assert_eq!(patches, 1);
    })
    .await;
}

#[tokio::test]
async fn scaleset_admin_token_is_renewed_before_it_expires_and_after_a_401() {
    within(async {
        let w = world();
        w.client.find_scale_set(SET).await.expect("find");
        w.client.find_scale_set(SET).await.expect("find");
        assert_eq!(exchanges(&w.gh), 1, "an hour-long token is reused");
        // Refused early (revoked, clock skew): one new exchange, and the call succeeds.
        w.gh.expire_admin_tokens();
        w.client
            .find_scale_set(SET)
            .await
            .expect("find after a 401");
        assert_eq!(exchanges(&w.gh), 2);
        // A token with less than a minute left is renewed before the call.
        w.gh.set_admin_token_ttl(Duration::from_secs(30));
        let w2 = World {
            client: w.client.clone().with_retry_delay(Duration::from_millis(50)),
            ..w
        };
        w2.client.find_scale_set(SET).await.expect("find");
        w2.client.find_scale_set(SET).await.expect("find");
        assert_eq!(
            exchanges(&w2.gh),
            4,
            "each call renews a token about to expire"
        );
    })
    .await;
}

fn engine_config(max: u32) -> EngineConfig {
    EngineConfig {
        name: SET.into(),
        labels: labels(),
        max,
        owner: "test-host".into(),
        retry: Duration::from_millis(200),
        idle_cycle: Duration::ZERO,
    }
}

async fn wait_status(
    rx: &mut watch::Receiver<EngineStatus>,
    what: &str,
    cond: impl Fn(&EngineStatus) -> bool,
) -> EngineStatus {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let now = rx.borrow_and_update().clone();
        if cond(&now) {
            return now;
        }
        let changed = tokio::time::timeout_at(deadline, rx.changed()).await;
        assert!(
            changed.is_ok(),
            "engine never reached: {what}; last {now:?}"
        );
    }
}

#[tokio::test]
async fn scaleset_engine_acquires_within_capacity_and_waits_out_a_leftover_session() {
    within(async {
        let w = world();
        // A corral killed with SIGKILL left its session open.
        let set = w
            .client
            .ensure_scale_set(SET, &labels())
            .await
            .expect("set");
        let leftover = w
            .client
            .create_session(set.id, "crashed")
            .await
            .expect("session");
        let (tx, mut rx) = watch::channel(EngineStatus::default());
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(engine::run(w.client.clone(), engine_config(2), tx, stop_rx));
        wait_status(&mut rx, "conflict", |s| s.session == SessionState::Conflict).await;
        // Nobody polls the leftover: it lapses and the engine's session opens.
        let open = wait_status(&mut rx, "open", |s| s.session == SessionState::Open).await;
        assert_ne!(open.session_id.as_deref(), Some(leftover.id.as_str()));
        assert_eq!(w.gh.scale_set_sessions(set.id), ["test-host"]);
        for i in 0..3 {
            w.gh.queue_job(REPO, &[SET], job(&format!("j{i}"), 100));
        }
        let status = wait_status(&mut rx, "two acquired", |s| s.acquired == 2).await;
        assert_eq!(status.statistics.total_assigned_jobs, 2);
        assert_eq!(status.waiting_jobs(), 2);
        assert!(status
            .last_message
            .as_deref()
            .is_some_and(|m| m.contains("JobAvailable")));
        assert_eq!(
            w.gh.scale_set_acquired(set.id).len(),
            2,
            "never more than max"
        );
        assert_eq!(w.gh.scale_set_capacity(set.id), Some(2));
        // Queue token expiry mid-poll: the same session goes on.
        w.gh.expire_queue_tokens();
        let before = status.last_message_id;
        w.gh.queue_job(REPO, &[SET], job("late", 100));
        let after = wait_status(&mut rx, "a message after expiry", |s| {
            s.last_message_id > before
        })
        .await;
        assert_eq!(after.session_id, open.session_id);
        assert_eq!(after.session, SessionState::Open);
        stop_tx.send(true).expect("stop");
        task.await.expect("engine task");
        assert_eq!(rx.borrow().session, SessionState::Closed);
        assert!(w.gh.scale_set_sessions(set.id).is_empty(), "closed on stop");
    })
    .await;
}
