//! `scale` pools end to end: `corral run` against the fake GitHub with queued jobs, which the
//! fake hands to online runners whose labels match.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::kit::daemon::{runner, World, REPO};
use crate::kit::github::{JobResult, JobSpec};
use crate::kit::proc::wait_until;
use corral::status::State;

/// Writes the world's config with `top` (top-level lines) and `runners`.
fn write(world: &World, top: &str, runners: &str) {
    std::fs::write(
        world.config(),
        format!("{top}{}", world.config_text(runners)),
    )
    .expect("write config");
}

/// A job that succeeds after `millis`.
pub(crate) fn job(name: &str, millis: u64) -> JobSpec {
    JobSpec {
        name: name.into(),
        duration: Duration::from_millis(millis),
        result: JobResult::Succeeded,
    }
}

/// Names of the runners corral asked GitHub to create just in time, in order.
fn jit_names(world: &World) -> Vec<String> {
    world
        .gh
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/generate-jitconfig"))
        .filter_map(|r| serde_json::from_str::<serde_json::Value>(&r.body).ok())
        .filter_map(|b| b["name"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn scales_from_zero_to_max_with_queued_jobs_and_back_after_idle_timeout() {
    let mut world = World::new();
    write(
        &world,
        "demand_poll_interval: 1s\n",
        "  - name: ci\n    repo: owner/repo\n    labels: [gpu]\n    scale: {max: 2, idle_timeout: 2s}\n",
    );
    world.start();
    world.wait_status("a first pass with no runner", |s| s.runners.is_empty());
    let jobs: Vec<u64> = (0..3)
        .map(|i| {
            world
                .gh
                .queue_job(REPO, &["self-hosted", "gpu"], job(&format!("j{i}"), 1500))
        })
        .collect();
    let mut most = 0;
    wait_until("every queued job done", || {
        most = most.max(world.gh.runners(REPO).len());
        jobs.iter()
            .all(|id| world.gh.job(*id).is_some_and(|j| j.conclusion.is_some()))
    });
    assert!(most <= 2, "max 2, saw {most} registrations at once");
    let used: BTreeSet<String> = jobs
        .iter()
        .filter_map(|id| world.gh.job(*id)?.runner_name)
        .collect();
    assert_eq!(
        used,
        BTreeSet::from(["ci-1".to_string(), "ci-2".to_string()]),
        "two runners at once, never a third"
    );
    for id in &jobs {
        assert_eq!(
            world.gh.job(*id).and_then(|j| j.conclusion).as_deref(),
            Some("success")
        );
    }
    assert!(jit_names(&world).iter().all(|n| n == "ci-1" || n == "ci-2"));
    // No demand left: back to min_idle (0) once idle_timeout has passed.
    world.wait_status("back to no runner", |s| s.runners.is_empty());
    wait_until("no registration left", || world.gh.runners(REPO).is_empty());
}

#[test]
fn min_idle_is_kept_and_a_busy_runner_is_never_retired() {
    let mut world = World::new();
    write(
        &world,
        "demand_poll_interval: 1s\n",
        "  - name: ci\n    repo: owner/repo\n    scale: {min_idle: 1, max: 2, idle_timeout: 1s}\n",
    );
    world.start();
    world.wait_idle(&["ci-1"]);
    // Longer than idle_timeout, many passes long.
    let long = world
        .gh
        .queue_job(REPO, &["self-hosted"], job("long", 5000));
    wait_until("ci-1 busy with it", || {
        world
            .gh
            .job(long)
            .is_some_and(|j| j.runner_name.as_deref() == Some("ci-1"))
    });
    // min_idle on top of the busy one.
    world.wait_idle(&["ci-2"]);
    let status = world.wait_status("ci-1 still busy past idle_timeout", |s| {
        runner(s, "ci-1").is_some_and(|r| r.state == State::Busy)
    });
    assert!(runner(&status, "ci-2").is_some());
    wait_until("the long job done", || {
        world.gh.job(long).is_some_and(|j| j.conclusion.is_some())
    });
    assert_eq!(
        world.gh.job(long).and_then(|j| j.conclusion).as_deref(),
        Some("success"),
        "never cancelled by a retirement"
    );
    world.wait_status("one idle runner left (min_idle)", |s| {
        s.runners.len() == 1 && s.runners[0].state == State::Idle
    });
}

#[test]
fn only_matching_jobs_count_and_max_runners_caps_the_pool() {
    let mut world = World::new();
    write(
        &world,
        "demand_poll_interval: 1s\nmax_runners: 1\n",
        "  - name: ci\n    repo: owner/repo\n    labels: [gpu]\n    scale: {max: 3, idle_timeout: 1s}\n",
    );
    world.start();
    world.wait_status("a first pass", |s| s.runners.is_empty());
    world
        .gh
        .queue_job(REPO, &["self-hosted", "arm64-only"], job("other", 100));
    let (before, _) = world.gh.run_polls(REPO);
    wait_until("three more polls", || {
        world.gh.run_polls(REPO).0 >= before + 3
    });
    assert!(
        jit_names(&world).is_empty(),
        "no runner for a job it cannot take"
    );
    assert!(world.status().is_some_and(|s| s.runners.is_empty()));
    let a = world
        .gh
        .queue_job(REPO, &["self-hosted", "GPU"], job("a", 1500));
    let b = world.gh.queue_job(REPO, &["gpu", "linux"], job("b", 1500));
    world.wait_status("the cap shown", |s| s.not_created == ["ci-2"]);
    wait_until("both jobs done", || {
        [a, b]
            .iter()
            .all(|id| world.gh.job(*id).is_some_and(|j| j.conclusion.is_some()))
    });
    let names = jit_names(&world);
    assert!(
        names.len() >= 2 && names.iter().all(|n| n == "ci-1"),
        "one runner at a time: {names:?}"
    );
}

#[test]
fn demand_is_polled_once_per_repository_and_unchanged_polls_get_304() {
    let mut world = World::new();
    world.gh.add_repo("owner/other");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    write(
        &world,
        &format!("demand_poll_interval: 1s\napi:\n  listen: \"127.0.0.1:{port}\"\n"),
        "  - name: a\n    repo: owner/repo\n    scale: {max: 1}\n  - name: b\n    repo: owner/repo\n    labels: [x]\n    scale: {max: 1}\n  - name: c\n    repo: owner/other\n    scale: {max: 1}\n",
    );
    world.start();
    wait_until("three 304s on each repository", || {
        world.gh.run_polls(REPO).1 >= 3 && world.gh.run_polls("owner/other").1 >= 3
    });
    let (repo, repo_304) = world.gh.run_polls(REPO);
    let (other, _) = world.gh.run_polls("owner/other");
    // Two pools of owner/repo share its one request per poll.
    assert!(
        repo.abs_diff(other) <= 1,
        "owner/repo {repo} polls, owner/other {other}"
    );
    // Only the first poll of a repository gets a body; every later one is a 304. The same
    // holds for the listing of its runs in progress, asked on every poll as well.
    assert!(repo_304 + 1 >= repo, "{repo_304} of {repo} were 304");
    let (listings, listings_304) = world.gh.run_listings(REPO);
    assert!(
        listings >= 2 * repo - 1 && listings_304 + 2 >= listings,
        "{listings_304} of {listings} run listings were 304, for {repo} polls"
    );
    let conditional = world
        .gh
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/actions/runs"))
        .filter(|r| r.headers.iter().any(|(k, _)| k == "if-none-match"))
        .count();
    assert!(conditional >= 3);
    // corral counts its 304s apart from its 200s.
    wait_until("304s in corral's metrics", || {
        reqwest::blocking::get(format!("http://127.0.0.1:{port}/metrics"))
            .and_then(reqwest::blocking::Response::text)
            .is_ok_and(|m| {
                m.lines()
                    .any(|l| l.contains("/actions/runs\"") && l.contains("status=\"304\""))
            })
    });
}

#[test]
fn a_job_queued_inside_a_running_workflow_gets_a_runner_while_the_first_runs() {
    let mut world = World::new();
    write(
        &world,
        "demand_poll_interval: 1s\n",
        "  - name: ci\n    repo: owner/repo\n    labels: [gpu]\n    scale: {max: 2, idle_timeout: 1s}\n",
    );
    world.start();
    world.wait_status("a first pass with no runner", |s| s.runners.is_empty());
    let first = world
        .gh
        .queue_job(REPO, &["self-hosted", "gpu"], job("build", 15_000));
    wait_until("the first job running", || {
        world.gh.job(first).is_some_and(|j| j.runner_id.is_some())
    });
    // Its run is in progress now: the second job (a `needs:` job, a matrix leg) is queued in it.
    let run = world
        .gh
        .job(first)
        .map(|j| j.run_id)
        .expect("the first job");
    let second = world
        .gh
        .queue_job_in_run(run, &["self-hosted", "gpu"], job("test", 500))
        .expect("the run exists");
    wait_until("the second job done", || {
        world.gh.job(second).is_some_and(|j| j.conclusion.is_some())
    });
    let first_now = world.gh.job(first).expect("the first job");
    assert_eq!(
        first_now.conclusion, None,
        "the second job ran while the first still ran"
    );
    let second_now = world.gh.job(second).expect("the second job");
    assert_eq!(second_now.conclusion.as_deref(), Some("success"));
    assert_ne!(second_now.runner_name, first_now.runner_name);
    wait_until("the first job done", || {
        world.gh.job(first).is_some_and(|j| j.conclusion.is_some())
    });
    assert_eq!(
        world.gh.job(first).and_then(|j| j.conclusion).as_deref(),
        Some("success"),
        "the busy runner was never retired"
    );
    // The jobs of the run were read with conditional requests too.
    let (job_polls, job_304) = world.gh.job_polls(REPO);
    assert!(
        job_polls >= 2 && job_304 >= 1,
        "{job_304} of {job_polls} job listings were 304"
    );
}

#[test]
fn a_rerun_failed_job_gets_a_runner() {
    let mut world = World::new();
    write(
        &world,
        "demand_poll_interval: 1s\n",
        "  - name: ci\n    repo: owner/repo\n    scale: {max: 2, idle_timeout: 1s}\n",
    );
    world.start();
    world.wait_status("a first pass with no runner", |s| s.runners.is_empty());
    let ok = world.gh.queue_job(REPO, &["self-hosted"], job("ok", 200));
    let run = world.gh.job(ok).map(|j| j.run_id).expect("the job");
    let failed = JobSpec {
        result: JobResult::Failed,
        ..job("flaky", 200)
    };
    let flaky = world
        .gh
        .queue_job_in_run(run, &["self-hosted"], failed)
        .expect("the run exists");
    wait_until("both attempts done", || {
        [ok, flaky]
            .iter()
            .all(|id| world.gh.job(*id).is_some_and(|j| j.conclusion.is_some()))
    });
    world.wait_status("back to no runner", |s| s.runners.is_empty());
    // "Re-run failed jobs": the run is in progress again (one job done, one queued).
    let again = world.gh.rerun_job(flaky).expect("a re-run");
    wait_until("the second attempt done", || {
        world.gh.job(again).is_some_and(|j| j.conclusion.is_some())
    });
}

#[test]
fn two_pools_matching_one_job_start_one_runner() {
    let mut world = World::new();
    write(
        &world,
        "demand_poll_interval: 1s\n",
        "  - name: a\n    repo: owner/repo\n    labels: [x]\n    scale: {max: 2, idle_timeout: 1s}\n  - name: b\n    repo: owner/repo\n    labels: [x, y]\n    scale: {max: 2, idle_timeout: 1s}\n",
    );
    world.start();
    world.wait_status("a first pass with no runner", |s| s.runners.is_empty());
    let job_id = world
        .gh
        .queue_job(REPO, &["self-hosted", "x"], job("one", 1500));
    let mut most = 0;
    wait_until("the job done", || {
        most = most.max(world.gh.runners(REPO).len());
        world.gh.job(job_id).is_some_and(|j| j.conclusion.is_some())
    });
    world.wait_status("back to no runner", |s| s.runners.is_empty());
    let names = jit_names(&world);
    assert_eq!(
        names,
        ["a-1"],
        "one runner, from the first pool in file order"
    );
    assert_eq!(most, 1, "never two registrations for one job");
    // A job only the second pool can take goes to the second pool.
    let only_b = world
        .gh
        .queue_job(REPO, &["self-hosted", "x", "y"], job("two", 200));
    wait_until("the second job done", || {
        world.gh.job(only_b).is_some_and(|j| j.conclusion.is_some())
    });
    assert_eq!(jit_names(&world), ["a-1", "b-1"]);
}

#[test]
fn a_job_waiting_past_queued_alert_after_shows_in_status_and_metrics() {
    let mut world = World::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    write(
        &world,
        &format!("demand_poll_interval: 1s\napi:\n  listen: \"127.0.0.1:{port}\"\n"),
        "  - name: ci\n    repo: owner/repo\n    scale: {max: 1, idle_timeout: 1s, queued_alert_after: 1s}\n",
    );
    world.start();
    world.wait_status("a first pass with no runner", |s| s.runners.is_empty());
    let status = world.status().expect("status");
    assert_eq!(status.pools.len(), 1);
    assert_eq!(
        (status.pools[0].queued, status.pools[0].queued_too_long),
        (0, 0)
    );
    let long = world
        .gh
        .queue_job(REPO, &["self-hosted"], job("long", 6000));
    wait_until("the first job running", || {
        world.gh.job(long).is_some_and(|j| j.runner_id.is_some())
    });
    // max 1: the second job waits for the first.
    let waiting = world
        .gh
        .queue_job(REPO, &["self-hosted"], job("waiting", 200));
    // (The first job may have shown as waiting too long itself while its runner started.)
    let status = world.wait_status("the second job reported as waiting too long", |s| {
        s.pools.first().is_some_and(|p| p.waiting_jobs == [waiting])
    });
    let pool = &status.pools[0];
    assert_eq!((pool.name.as_str(), pool.engine.as_str()), ("ci", "rest"));
    assert_eq!((pool.queued, pool.queued_too_long), (1, 1));
    assert!(pool.queued_longest_seconds.is_some_and(|s| s >= 1));
    assert_eq!(pool.queued_alert_after_seconds, 1);
    let metrics = reqwest::blocking::get(format!("http://127.0.0.1:{port}/metrics"))
        .and_then(reqwest::blocking::Response::text)
        .expect("GET /metrics");
    assert!(
        metrics.contains("corral_jobs_queued_too_long{pool=\"ci\",repo=\"owner/repo\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("corral_jobs_queued_longest_seconds{pool=\"ci\",repo=\"owner/repo\"}"));
    wait_until("both jobs done", || {
        world
            .gh
            .job(waiting)
            .is_some_and(|j| j.conclusion.is_some())
    });
    world.wait_status("nothing queued any more", |s| {
        s.pools
            .first()
            .is_some_and(|p| p.queued == 0 && p.queued_too_long == 0)
    });
}
