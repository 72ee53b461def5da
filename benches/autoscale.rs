//! Autoscaling latency: time from a job queued (no runner for it yet, pool at zero) to a new
//! runner busy with it, when corral learns of the job by polling (`demand_poll_interval: 2s`)
//! and by a signed `POST /webhook` delivery (the poll an hour away).
//!
//! The poll path waits for the next poll, so its jobs are queued at a random phase of the
//! poll cycle: expect about half the interval plus the runner's start.
//!
//! `cargo bench --bench autoscale` (9 jobs each, about a minute); `-- --quick` runs 2 each.

#[path = "../tests/kit/mod.rs"]
mod kit;

use std::time::{Duration, Instant};

use kit::daemon::{World, REPO};
use kit::github::{JobResult, JobSpec};
use kit::proc::wait_until;

const SECRET: &str = "bench-webhook-secret";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A corral with one pool (`min_idle: 0`) and the API with a webhook secret on `port`.
fn start(poll: &str, port: u16) -> World {
    let mut world = World::new();
    let top = format!(
        "demand_poll_interval: {poll}\napi:\n  listen: \"127.0.0.1:{port}\"\n  webhook_secret_env: HOOK_SECRET\n"
    );
    let runners = "  - name: ci\n    repo: owner/repo\n    labels: [bench]\n    scale: {max: 2, idle_timeout: 1s}\n";
    std::fs::write(
        world.config(),
        format!("{top}{}", world.config_text(runners)),
    )
    .expect("write config");
    world.start_with_env(&[("HOOK_SECRET", SECRET)]);
    world.wait_status("first status", |s| s.runners.is_empty());
    world
}

/// Queues a job, optionally announces it by webhook; seconds until a runner is busy with it.
/// Then waits until the pool is back at zero.
fn one(world: &World, port: u16, hook: bool) -> f64 {
    if !hook {
        // Queue at a random phase of the poll cycle, not right after the pass that emptied
        // the pool (which also polled): the wait for the next poll is then uniform.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        std::thread::sleep(Duration::from_millis(u64::from(nanos % 2000)));
    }
    let job = world.gh.queue_job(
        REPO,
        &["self-hosted", "bench"],
        JobSpec {
            name: "bench".into(),
            duration: Duration::from_millis(200),
            result: JobResult::Succeeded,
        },
    );
    let t0 = Instant::now();
    if hook {
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
    loop {
        if world.gh.job(job).is_some_and(|j| j.runner_id.is_some()) {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(120), "job never taken");
        std::thread::sleep(Duration::from_millis(5));
    }
    let took = t0.elapsed().as_secs_f64();
    wait_until("job done", || {
        world.gh.job(job).is_some_and(|j| j.conclusion.is_some())
    });
    world.wait_status("pool back at zero", |s| s.runners.is_empty());
    took
}

fn summary(mut xs: Vec<f64>) -> String {
    xs.sort_by(f64::total_cmp);
    format!(
        "{:.0} ms | {:.0} ms | {:.0} ms",
        xs[xs.len() / 2] * 1000.0,
        xs[0] * 1000.0,
        xs[xs.len() - 1] * 1000.0
    )
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let n = if quick { 2 } else { 9 };
    let port = free_port();
    let world = start("2s", port);
    let poll: Vec<f64> = (0..n).map(|_| one(&world, port, false)).collect();
    drop(world);
    let port = free_port();
    let world = start("1h", port);
    let hook: Vec<f64> = (0..n).map(|_| one(&world, port, true)).collect();
    drop(world);
    println!(
        "queued job → new runner busy with it, {} cores, {n} jobs each",
        std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
    );
    println!("| path | median | min | max |");
    println!("|---|---:|---:|---:|");
    println!("| poll (demand_poll_interval 2s) | {} |", summary(poll));
    println!("| webhook | {} |", summary(hook));
}
