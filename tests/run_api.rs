//! The status API of `corral run`, through a real HTTP client.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::kit::cmd;
use crate::kit::daemon::{World, REPO};
use crate::kit::github::{JobResult, JobSpec};
use crate::kit::proc::wait_until;

const API_TOKEN: &str = "corral-api-test-token-0123456789";

/// A free loopback port (bound and released; the test binds it again at once).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn with_api(world: &World, runners: &str, listen: &str, token: bool) -> String {
    let api = if token {
        format!("api:\n  listen: \"{listen}\"\n  token_env: CORRAL_API_TOKEN\n")
    } else {
        format!("api:\n  listen: \"{listen}\"\n")
    };
    world
        .config_text(runners)
        .replace("github:\n", &format!("{api}github:\n"))
}

fn get(url: &str, token: Option<&str>) -> reqwest::blocking::Response {
    let client = reqwest::blocking::Client::new();
    let mut request = client.get(url).timeout(Duration::from_secs(10));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().expect("the API answers")
}

/// Prometheus text as `series -> value` (as written); fails on any line that is neither a
/// comment nor a sample with a numeric value.
fn parse_metrics(text: &str) -> BTreeMap<String, String> {
    let mut samples = BTreeMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# ") {
            assert!(
                rest.starts_with("HELP ") || rest.starts_with("TYPE "),
                "bad comment: {line}"
            );
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("`series value`");
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "unterminated labels in {line}");
        }
        assert!(value.parse::<f64>().is_ok(), "a numeric value in {line}");
        samples.insert(series.to_string(), value.to_string());
    }
    samples
}

/// A corral with two idle runners and the API on a free loopback port, behind a token.
fn world_with_api() -> (World, String, Vec<i32>) {
    let mut world = World::new();
    let port = free_port();
    let text = with_api(
        &world,
        "  - name: web\n    repo: owner/repo\n    count: 2\n",
        &format!("127.0.0.1:{port}"),
        true,
    );
    std::fs::write(world.config(), text).expect("write config");
    world.start_with_env(&[("CORRAL_API_TOKEN", API_TOKEN)]);
    let pids = world.wait_idle(&["web-1", "web-2"]);
    (world, format!("http://127.0.0.1:{port}"), pids)
}

#[test]
fn the_api_serves_runners_and_openapi_behind_a_token() {
    let (mut world, base, pids) = world_with_api();
    assert_eq!(get(&format!("{base}/runners"), None).status(), 401);
    assert_eq!(get(&format!("{base}/runners"), Some("wrong")).status(), 401);
    assert_eq!(
        get(&format!("{base}/healthz"), None).status(),
        200,
        "liveness needs no token"
    );
    let runners: Vec<Value> = get(&format!("{base}/runners"), Some(API_TOKEN))
        .json()
        .expect("JSON");
    assert_eq!(runners.len(), 2);
    for (runner, pid) in runners.iter().zip(&pids) {
        // The original project's four fields, typed as before.
        assert!(
            runner["name"].is_string() && runner["repo_url"].is_string(),
            "{runner}"
        );
        assert_eq!(runner["status"], "running");
        assert_eq!(runner["pid"].as_i64(), Some(i64::from(*pid)));
        assert_eq!(runner["state"], "idle");
    }
    let one: Value = get(&format!("{base}/runners/web-2"), Some(API_TOKEN))
        .json()
        .expect("JSON");
    assert_eq!(one["name"], "web-2");
    assert_eq!(
        get(&format!("{base}/runners/nope"), Some(API_TOKEN)).status(),
        404
    );
    assert_eq!(
        get(&format!("{base}/readyz"), Some(API_TOKEN)).status(),
        200
    );
    let openapi: Value = get(&format!("{base}/openapi.json"), Some(API_TOKEN))
        .json()
        .expect("JSON");
    for route in [
        "/status",
        "/runners",
        "/runners/{name}",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
    ] {
        assert!(
            openapi["paths"][route].is_object(),
            "{route} in the OpenAPI document"
        );
    }
    // corral status reads the live API.
    let out = std::process::Command::new(cmd::binary())
        .args(["status", "--json"])
        .current_dir(world.dir.path())
        .env("CORRAL_API_TOKEN", API_TOKEN)
        .output()
        .expect("corral status");
    let (stdout, stderr) = cmd::texts(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("did not answer"), "{stderr}");
    assert!(stdout.contains("\"web-1\""), "{stdout}");
    assert!(
        !world.corral().output().contains(API_TOKEN),
        "the token is never logged"
    );
}

#[test]
fn metrics_follow_the_runners_while_a_job_runs() {
    let (world, base, _) = world_with_api();
    let job = world.gh.queue_job(
        REPO,
        &["self-hosted"],
        JobSpec {
            name: "metrics-job".into(),
            duration: Duration::from_secs(3),
            result: JobResult::Succeeded,
        },
    );
    let metrics = || {
        parse_metrics(
            &get(&format!("{base}/metrics"), Some(API_TOKEN))
                .text()
                .expect("text"),
        )
    };
    let value =
        |m: &BTreeMap<String, String>, series: &str| m.get(series).cloned().unwrap_or_default();
    wait_until("one runner busy in the metrics", || {
        let m = metrics();
        value(&m, "corral_runners{state=\"busy\"}") == "1"
            && value(&m, "corral_runners{state=\"idle\"}") == "1"
    });
    let m = metrics();
    let busy: Vec<String> = ["web-1", "web-2"]
        .iter()
        .map(|n| value(&m, &format!("corral_runner_busy{{runner=\"{n}\"}}")))
        .collect();
    assert!(
        busy.contains(&"1".to_string()) && busy.contains(&"0".to_string()),
        "{busy:?}"
    );
    wait_until("the job counted", || {
        metrics()
            .keys()
            .any(|k| k.starts_with("corral_jobs_total{") && k.contains("result=\"Succeeded\""))
    });
    assert!(world.gh.job(job).is_some_and(|j| j.conclusion.is_some()));
    wait_until("disk measured", || {
        metrics().contains_key("corral_runner_disk_bytes{runner=\"web-1\",kind=\"unique\"}")
    });
    let m = metrics();
    assert!(
        m.keys().any(|k| k.starts_with("corral_github_requests_total{endpoint=\"POST /repos/{owner}/{repo}/actions/runners/registration-token\",status=\"201\"}")),
        "GitHub requests are counted: {m:?}"
    );
    assert_ne!(
        value(&m, "corral_reconcile_pass_duration_seconds_count"),
        "0"
    );
    assert_eq!(value(&m, "corral_job_duration_seconds_count"), "1");
}

#[test]
fn a_non_loopback_api_without_a_token_is_refused() {
    let world = World::new();
    std::fs::write(
        world.config(),
        with_api(
            &world,
            "  - name: a\n    repo: owner/repo\n",
            "0.0.0.0:9180",
            false,
        ),
    )
    .expect("write config");
    let out = cmd::run(world.dir.path(), &["check", "runners.yaml"]);
    let (_, stderr) = cmd::texts(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("api.listen 0.0.0.0:9180 is reachable from other hosts: set api.token_env or api.token_file"), "{stderr}");
    let out = cmd::run(world.dir.path(), &["run", "-c", "runners.yaml"]);
    assert_eq!(out.status.code(), Some(1), "corral refuses to start");
}
