//! What our users' linters say about what ships: `promtool check metrics` on the metrics
//! corral serves, `hadolint` on the Dockerfile, `yamllint` (default rules) on the compose
//! file. A linter that is missing makes its test say `skipped` by name (under CI, where
//! `.ci/run` installs them, it fails instead).

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use ::corral::api::{router, Shared};
use ::corral::status::{RunnerStatus, Status};

use crate::ship_unit::have;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Runs `program args` with `stdin`; returns (success, stdout + stderr).
fn lint(program: &str, args: &[&str], stdin: &str) -> (bool, String) {
    let mut child = Command::new(program)
        .args(args)
        .current_dir(ROOT)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `GET /metrics` of a router with runners, jobs, passes and GitHub requests published.
async fn metrics_text() -> String {
    let shared = Shared::default();
    shared.with(|p| {
        let runner: RunnerStatus = serde_json::from_value(serde_json::json!({
            "name": "web-1", "repo_url": "https://github.com/o/r", "status": "running",
            "pid": 1, "state": "busy", "busy": true, "job": "build", "restarts": 1,
            "last_exit_code": 2, "registration": "registered", "last_error": null,
            "disk": {"unique_bytes": 40960, "shared_bytes": 1_000_000},
            "cgroup": "/sys/fs/cgroup/corral-0123abcd/web-1", "leftovers_killed": 2,
            "usage": {"cpu_seconds": 12.25, "memory_bytes": 4096, "memory_peak_bytes": 8192,
                      "oom_kills": 1, "processes": 4}
        }))
        .expect("runner");
        let pool: corral::status::PoolStatus = serde_json::from_value(serde_json::json!({
            "name": "ci", "repo_url": "https://github.com/o/r", "engine": "rest", "queued": 2,
            "queued_longest_seconds": 400, "queued_too_long": 1, "queued_alert_after_seconds": 300,
        }))
        .expect("pool");
        let set: corral::status::PoolStatus = serde_json::from_value(serde_json::json!({
            "name": "sets", "repo_url": "https://github.com/o/r", "engine": "scaleset",
            "queued": 1, "queued_too_long": 0, "queued_alert_after_seconds": 300,
            "scale_set": {"name": "sets", "scale_set_id": 7, "session": "open",
                "last_message_id": 42, "statistics": {"totalAssignedJobs": 2}},
        }))
        .expect("scale-set pool");
        p.status = Some(Status {
            runners: vec![runner],
            pools: vec![pool, set],
            github: serde_json::from_value(serde_json::json!({"rate_limit":
                {"limit": 5000, "remaining": 4000, "reset_at": "2030-01-01T00:00:00Z"}}))
            .ok(),
            source: serde_json::from_value(serde_json::json!({
                "url": "https://github.com/me/fleet.git", "ref": "main", "path": "runners/prod.yaml",
                "revision": "0123456789abcdef0123456789abcdef01234567",
                "fetched_at": "2030-01-01T00:00:00Z", "error": null}))
            .ok(),
            ..Status::default()
        });
        p.metrics.observe_pass(0.03);
        p.metrics.observe_job("web-1", "succeeded", Some(90));
        p.metrics.github_requests = vec![("GET /repos/{owner}/{repo}".into(), 200, 3)];
        p.ready = true;
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router(shared, None)).await });
    let body = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("body");
    assert!(
        body.contains("corral_jobs_total{runner=\"web-1\",result=\"succeeded\"} 1"),
        "{body}"
    );
    assert!(
        body.contains("corral_jobs_queued_too_long{pool=\"ci\",repo=\"o/r\"} 1"),
        "{body}"
    );
    assert!(
        body.contains("corral_scaleset_jobs_assigned{pool=\"sets\",repo=\"o/r\"} 2"),
        "{body}"
    );
    assert!(
        body.contains("corral_source_revision{url=\"https://github.com/me/fleet.git\",ref=\"main\",revision=\"0123456789abcdef0123456789abcdef01234567\"} 1"),
        "{body}"
    );
    body
}

#[tokio::test]
async fn promtool_accepts_the_metrics() {
    let text = tokio::time::timeout(std::time::Duration::from_secs(20), metrics_text())
        .await
        .expect("metrics in time");
    if !have("promtool", "promtool_accepts_the_metrics") {
        return;
    }
    let (ok, out) = lint("promtool", &["check", "metrics"], &text);
    assert!(
        ok && out.trim().is_empty(),
        "promtool check metrics:\n{out}\n{text}"
    );
}

#[test]
fn hadolint_accepts_the_dockerfile() {
    if !have("hadolint", "hadolint_accepts_the_dockerfile") {
        return;
    }
    let (ok, out) = lint("hadolint", &["--no-color", "Dockerfile"], "");
    assert!(ok, "hadolint Dockerfile:\n{out}");
}

#[test]
fn yamllint_accepts_the_compose_file() {
    if !have("yamllint", "yamllint_accepts_the_compose_file") {
        return;
    }
    assert!(Path::new(ROOT).join("docker/docker-compose.yml").is_file());
    let (ok, out) = lint(
        "yamllint",
        &[
            "--strict",
            "--format",
            "parsable",
            "docker/docker-compose.yml",
        ],
        "",
    );
    assert!(ok, "yamllint docker/docker-compose.yml:\n{out}");
}
