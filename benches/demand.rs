//! Exact demand (issue 21): time from a job queued to a runner busy with it, and the GitHub
//! requests corral sends while idle.
//!
//! Each job is queued inside a workflow run that is already in progress (its first job runs
//! on a GitHub-hosted runner): the case the `status=queued` listing alone never saw. The pool
//! is at `min_idle: 0`, so every job needs a new runner (JIT registration and the fake
//! runner's start are included). Paths: REST polling at the default `demand_poll_interval`
//! (15 s) and at 2 s, and a signed `POST /webhook` (the poll an hour away). Poll jobs are
//! queued at a random phase of the poll cycle.
//!
//! Idle cost: corral with 10 pools, one per repository, nothing queued or running, at the
//! default interval and default resync; requests to the fake's REST API over a window,
//! scaled to an hour (demand polls apart from the total).
//!
//! Scale set: `engine: scaleset` against the fake's scale-set service holding each long poll
//! 50 s, as the real one does; jobs name the scale set in `runs-on` and are queued at a
//! random phase of corral's one-minute idle cycle. Its idle cost counts every request to
//! the fake (REST, tenant and queue), the same 10 repositories, one pool each.
//!
//! `cargo bench --bench demand` (20 jobs per path and 120 s idle windows, about 25 minutes
//! on 2 cores); `-- --quick`: 4 jobs per path, 60 s windows; `-- --only scaleset` (or
//! `rest`, `rest2s`, `webhook`): that path alone, no idle windows.

#[path = "../tests/kit/mod.rs"]
mod kit;

use std::time::{Duration, Instant};

use kit::daemon::{World, REPO};
use kit::github::{JobResult, JobSpec};
use kit::proc::wait_until;
use kit::rng::Rng;

const SECRET: &str = "bench-webhook-secret";
const DEFAULT_POLL: Duration = Duration::from_secs(15);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// How corral learns of a job, in one path of the benchmark.
#[derive(Clone, Copy, PartialEq, Eq)]
enum How {
    Poll,
    Webhook,
    ScaleSet,
}

/// The scale set's idle cycle (one poll a minute) and the real service's hold.
const SCALESET_CYCLE: Duration = Duration::from_secs(60);
const SCALESET_HOLD: Duration = Duration::from_secs(50);

/// A corral with one pool (`min_idle: 0`) polling every `poll` (`None`: the default), with
/// the API and a webhook secret on `port`; with `how` `ScaleSet`, the pool's engine.
fn start(poll: Option<&str>, port: u16, how: How) -> World {
    let mut world = World::new();
    let poll = poll.map_or(String::new(), |p| format!("demand_poll_interval: {p}\n"));
    let top =
        format!("{poll}api:\n  listen: \"127.0.0.1:{port}\"\n  webhook_secret_env: HOOK_SECRET\n");
    let runners = if how == How::ScaleSet {
        world
            .gh
            .set_scaleset_timing(SCALESET_HOLD, Duration::from_secs(120));
        "  - name: ci\n    repo: owner/repo\n    scale: {engine: scaleset, max: 2, idle_timeout: 1s}\n"
    } else {
        "  - name: ci\n    repo: owner/repo\n    labels: [bench]\n    scale: {max: 2, idle_timeout: 1s}\n"
    };
    std::fs::write(
        world.config(),
        format!("{top}{}", world.config_text(runners)),
    )
    .expect("write config");
    world.start_with_env(&[("HOOK_SECRET", SECRET)]);
    world.wait_status("first status", |s| {
        s.runners.is_empty()
            && (how != How::ScaleSet
                || s.pools
                    .first()
                    .and_then(|p| p.scale_set.as_ref())
                    .is_some_and(|x| x.engine.session == corral::scaleset::SessionState::Open))
    });
    world
}

/// One job: seconds until corral asked for a runner for it (found), and until a runner is
/// busy with it.
struct Sample {
    found: f64,
    busy: f64,
}

/// Queues a job in a run whose first job is running elsewhere, announced by webhook for
/// `Webhook`, and times it. Then waits until the pool is back at zero.
fn one(world: &World, port: u16, how: How, phase: Duration) -> Sample {
    let labels: &[&str] = if how == How::ScaleSet {
        &["ci"]
    } else {
        &["self-hosted", "bench"]
    };
    let run = world.gh.add_run(REPO);
    let hosted = world
        .gh
        .queue_job_in_run(run, &["ubuntu-latest"], JobSpec::default())
        .expect("run");
    world.gh.start_hosted_job(hosted);
    std::thread::sleep(phase);
    let before = world.gh.request_count();
    let job = world
        .gh
        .queue_job_in_run(
            run,
            labels,
            JobSpec {
                name: "bench".into(),
                duration: Duration::from_millis(200),
                result: JobResult::Succeeded,
            },
        )
        .expect("run");
    let t0 = Instant::now();
    if how == How::Webhook {
        let body = format!(r#"{{"action":"queued","workflow_job":{{"id":{job}}}}}"#);
        let status = reqwest::blocking::Client::new()
            .post(format!("http://127.0.0.1:{port}/webhook"))
            .header("X-GitHub-Event", "workflow_job")
            .header(
                "X-Hub-Signature-256",
                corral::api::signature(SECRET.as_bytes(), body.as_bytes()),
            )
            .body(body)
            .send()
            .expect("POST /webhook")
            .status();
        assert_eq!(status.as_u16(), 202);
    }
    let mut found = None;
    loop {
        if found.is_none()
            && world.gh.requests_since(before).iter().any(|r| {
                r.path.ends_with("/generate-jitconfig") || r.path.ends_with("/generatejitconfig")
            })
        {
            found = Some(t0.elapsed().as_secs_f64());
        }
        if world.gh.job(job).is_some_and(|j| j.runner_id.is_some()) {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(120), "job never taken");
        std::thread::sleep(Duration::from_millis(5));
    }
    let busy = t0.elapsed().as_secs_f64();
    wait_until("job done", || {
        world.gh.job(job).is_some_and(|j| j.conclusion.is_some())
    });
    world.gh.finish_job(hosted, JobResult::Succeeded);
    world.wait_status("pool back at zero", |s| s.runners.is_empty());
    Sample {
        found: found.unwrap_or(busy),
        busy,
    }
}

/// Runs `n` jobs on a fresh corral; `interval` picks the random phase (webhook: none).
fn path(poll: Option<&str>, interval: Duration, how: How, n: usize, rng: &mut Rng) -> Vec<Sample> {
    let port = free_port();
    let world = start(poll, port, how);
    (0..n)
        .map(|_| {
            let millis = u64::try_from(interval.as_millis())
                .unwrap_or(u64::MAX)
                .max(1);
            let phase = Duration::from_millis(rng.next() % millis);
            one(&world, port, how, phase)
        })
        .collect()
}

/// (p50, p95, max) in milliseconds.
fn percentiles(mut xs: Vec<f64>) -> (f64, f64, f64) {
    xs.sort_by(f64::total_cmp);
    let at = |q: f64| {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "an index into a short list"
        )]
        let i = ((xs.len() as f64 * q).ceil() as usize).clamp(1, xs.len()) - 1;
        xs[i] * 1000.0
    };
    (at(0.5), at(0.95), at(1.0))
}

/// Requests per hour from a corral with 10 idle pools, one per repository, at the
/// defaults: REST (all, and the demand polls among them), and every request to the fake
/// (the scale-set service's included).
fn idle_requests(window: Duration, scaleset: bool) -> (f64, f64, f64) {
    use std::fmt::Write as _;
    let mut world = World::new();
    world
        .gh
        .set_scaleset_timing(SCALESET_HOLD, Duration::from_secs(120));
    let engine = if scaleset { "engine: scaleset, " } else { "" };
    let mut runners = String::new();
    for i in 0..10 {
        let repo = format!("owner/r{i}");
        world.gh.add_repo(&repo);
        let _ = writeln!(
            runners,
            "  - name: p{i}\n    repo: {repo}\n    scale: {{{engine}max: 2}}"
        );
    }
    // The kit's config resyncs every 2 s; idle cost is measured at corral's default.
    let text = world
        .config_text(&runners)
        .replace("resync_interval: 2s\n", "");
    std::fs::write(world.config(), text).expect("write config");
    world.start();
    world.wait_status("first status", |s| {
        s.pools.len() == 10
            && (!scaleset
                || s.pools.iter().all(|p| {
                    p.scale_set
                        .as_ref()
                        .is_some_and(|x| x.engine.session == corral::scaleset::SessionState::Open)
                }))
    });
    // Past start-up (registrations listed, first polls with bodies).
    std::thread::sleep(DEFAULT_POLL + Duration::from_secs(1));
    let before = world.gh.request_count();
    std::thread::sleep(window);
    let requests = world.gh.requests_since(before);
    let rest: Vec<_> = requests
        .iter()
        .filter(|r| r.path.contains("/repos/"))
        .collect();
    let demand = rest
        .iter()
        .filter(|r| r.path.contains("/actions/runs"))
        .count();
    let per_hour = |n: usize| {
        #[allow(clippy::cast_precision_loss, reason = "small counts")]
        let n = n as f64;
        n * 3600.0 / window.as_secs_f64()
    };
    (
        per_hour(rest.len()),
        per_hour(demand),
        per_hour(requests.len()),
    )
}

/// One path's row; returns (busy p50, found p50).
fn row(name: &str, xs: &[Sample]) -> (f64, f64) {
    let (p50, p95, max) = percentiles(xs.iter().map(|s| s.busy).collect());
    let (f50, f95, _) = percentiles(xs.iter().map(|s| s.found).collect());
    println!("| {name} | {p50:.0} ms | {p95:.0} ms | {max:.0} ms | {f50:.0} ms | {f95:.0} ms |");
    (p50, f50)
}

const HEADER: &str = "| path | busy p50 | busy p95 | busy max | found p50 | found p95 |\n|---|---:|---:|---:|---:|---:|";

/// `--only NAME`: one path, printed alone.
fn only(name: &str, n: usize, rng: &mut Rng) {
    let (poll, interval, how, label) = match name {
        "rest" => (
            None,
            DEFAULT_POLL,
            How::Poll,
            "REST, demand_poll_interval 15s (default)",
        ),
        "rest2s" => (
            Some("2s"),
            Duration::from_secs(2),
            How::Poll,
            "REST, demand_poll_interval 2s",
        ),
        "webhook" => (Some("1h"), Duration::ZERO, How::Webhook, "webhook"),
        "scaleset" => (
            None,
            SCALESET_CYCLE,
            How::ScaleSet,
            "scale set (50 s hold, 60 s idle cycle)",
        ),
        other => panic!("--only wants rest, rest2s, webhook or scaleset, not {other:?}"),
    };
    let xs = path(poll, interval, how, n, rng);
    println!("{n} jobs\n{HEADER}");
    row(label, &xs);
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let n = if quick { 4 } else { 20 };
    let window = Duration::from_secs(if quick { 60 } else { 120 });
    let mut rng = Rng::new(21);
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--only") {
        only(args.get(at + 1).map_or("", String::as_str), n, &mut rng);
        return;
    }
    let rest_default = path(None, DEFAULT_POLL, How::Poll, n, &mut rng);
    let rest_2s = path(Some("2s"), Duration::from_secs(2), How::Poll, n, &mut rng);
    let hook = path(Some("1h"), Duration::ZERO, How::Webhook, n, &mut rng);
    let scaleset = path(None, SCALESET_CYCLE, How::ScaleSet, n, &mut rng);
    let (idle_all, idle_demand, _) = idle_requests(window, false);
    let (_, _, idle_scaleset) = idle_requests(window, true);
    println!(
        "queued job (in a run already in progress) → new runner busy with it, {} cores, {n} jobs per path",
        std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
    );
    println!("{HEADER}");
    let (rest_p50, _) = row("REST, demand_poll_interval 15s (default)", &rest_default);
    row("REST, demand_poll_interval 2s", &rest_2s);
    row("webhook", &hook);
    let (set_p50, set_found) = row("scale set (50 s hold, 60 s idle cycle)", &scaleset);
    println!(
        "(busy: queued → a runner runs it; found: queued → corral asks GitHub for its runner)"
    );
    let secs = window.as_secs();
    println!(
        "idle, 10 repositories, 1 pool each, defaults, {secs}s windows: REST {idle_demand:.0} demand requests/h ({idle_all:.0} REST requests/h in all); scale set {idle_scaleset:.0} requests/h in all"
    );
    let worst = rest_default.iter().map(|s| s.found).fold(0.0, f64::max);
    println!(
        "REST finds a job in an in-progress run within two poll intervals (30 s): {} (slowest {worst:.1} s)",
        if worst < 30.0 { "PASS" } else { "FAIL" }
    );
    println!(
        "scale set p50 under 1 s, runner start excluded (found p50 {set_found:.0} ms): {}",
        if set_found < 1000.0 { "PASS" } else { "FAIL" }
    );
    println!(
        "scale set at most one request a minute per pool while idle ({:.1}/min): {}",
        idle_scaleset / 600.0,
        if idle_scaleset <= 600.0 {
            "PASS"
        } else {
            "FAIL"
        }
    );
    println!(
        "demand: scaleset p50 {set_p50:.0} ms, rest p50 {rest_p50:.0} ms, idle requests/h {idle_scaleset:.0} (scaleset) {idle_demand:.0} (rest)"
    );
}
