//! `POST /webhook` end to end: a signed `workflow_job` delivery scales a pool up at once, far
//! ahead of the next demand poll; a badly signed one is refused and changes nothing.

use std::time::Duration;

use crate::kit::daemon::{World, REPO};
use crate::kit::github::{JobResult, JobSpec};
use crate::kit::proc::wait_until;

const SECRET: &str = "webhook-test-secret";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn deliver(url: &str, body: &str, signature: &str) -> u16 {
    reqwest::blocking::Client::new()
        .post(url)
        .header("X-GitHub-Event", "workflow_job")
        .header("X-GitHub-Delivery", "d-1")
        .header("X-Hub-Signature-256", signature)
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .timeout(Duration::from_secs(10))
        .send()
        .expect("POST /webhook")
        .status()
        .as_u16()
}

#[test]
fn a_signed_queued_event_scales_up_without_waiting_for_the_poll() {
    let mut world = World::new();
    let port = free_port();
    let top = format!(
        "demand_poll_interval: 1h\napi:\n  listen: \"127.0.0.1:{port}\"\n  token_env: API_TOKEN\n  webhook_secret_env: HOOK_SECRET\n"
    );
    std::fs::write(
        world.config(),
        format!(
            "{top}{}",
            world.config_text(
                "  - name: ci\n    repo: owner/repo\n    labels: [gpu]\n    scale: {max: 2}\n"
            )
        ),
    )
    .expect("write config");
    world.start_with_env(&[("HOOK_SECRET", SECRET), ("API_TOKEN", "api-token")]);
    world.wait_status("a first pass", |s| s.runners.is_empty());
    wait_until("the first poll", || world.gh.run_polls(REPO).0 == 1);
    let job = world.gh.queue_job(
        REPO,
        &["self-hosted", "gpu"],
        JobSpec {
            name: "hooked".into(),
            duration: Duration::from_millis(500),
            result: JobResult::Succeeded,
        },
    );
    let url = format!("http://127.0.0.1:{port}/webhook");
    let body = format!(
        r#"{{"action":"queued","workflow_job":{{"id":{job},"status":"queued","labels":["self-hosted","gpu"]}}}}"#
    );
    let forged = corral::api::signature(b"not-the-secret", body.as_bytes());
    assert_eq!(deliver(&url, &body, &forged), 401);
    assert_eq!(deliver(&url, &body, "sha256="), 401);
    assert_eq!(deliver(&url, &body, ""), 401);
    assert_eq!(
        world.gh.run_polls(REPO).0,
        1,
        "one poll at start; none for the refused deliveries"
    );
    // Valid: the pass polls at once and a runner takes the job (the next poll is an hour away).
    let good = corral::api::signature(SECRET.as_bytes(), body.as_bytes());
    assert_eq!(deliver(&url, &body, &good), 202);
    wait_until("the job taken by a new runner", || {
        world
            .gh
            .job(job)
            .is_some_and(|j| j.runner_name.as_deref() == Some("ci-1"))
    });
    // The valid delivery's poll; a runner that took a job polls once more (what was polled
    // is stale then), which may come before this read.
    let polls = world.gh.run_polls(REPO).0;
    assert!((2..=3).contains(&polls), "{polls} polls");
    let metrics = reqwest::blocking::Client::new()
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .bearer_auth("api-token")
        .send()
        .and_then(reqwest::blocking::Response::text)
        .expect("GET /metrics");
    assert!(
        metrics.contains("corral_webhook_refused_total 3"),
        "{metrics}"
    );
    let log = world.corral().output();
    assert!(!log.contains(SECRET), "the secret never reaches the log");
}

#[test]
fn without_a_secret_there_is_no_webhook() {
    let mut world = World::new();
    let port = free_port();
    std::fs::write(
        world.config(),
        format!(
            "api:\n  listen: \"127.0.0.1:{port}\"\n{}",
            world.config_text("  - name: a\n    repo: owner/repo\n")
        ),
    )
    .expect("write config");
    world.start();
    world.wait_idle(&["a"]);
    let url = format!("http://127.0.0.1:{port}/webhook");
    let body = r#"{"action":"queued"}"#;
    let signed = corral::api::signature(SECRET.as_bytes(), body.as_bytes());
    assert_eq!(deliver(&url, body, &signed), 404);
}
