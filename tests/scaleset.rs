//! `scale: { engine: scaleset }` end to end: `corral run` against the fake's scale-set
//! service (a 50 s long poll, as the real one holds), with jobs whose `runs-on` names the
//! scale set.

use std::time::Duration;

use crate::kit::daemon::{World, REPO};
use crate::kit::proc::wait_until;
use crate::scale::job;
use corral::scaleset::SessionState;
use corral::status::{PoolStatus, Status};
use nix::sys::signal::Signal;

const POOL: &str =
    "  - name: ci\n    repo: owner/repo\n    scale: {engine: scaleset, max: 2, idle_timeout: 1s}\n";

fn write(world: &World, runners: &str) {
    std::fs::write(
        world.config(),
        format!("demand_poll_interval: 1s\n{}", world.config_text(runners)),
    )
    .expect("write config");
}

fn pool(status: &Status) -> Option<&PoolStatus> {
    status.pools.first()
}

fn session(status: &Status) -> Option<SessionState> {
    Some(pool(status)?.scale_set.as_ref()?.engine.session)
}

fn started(runners: &str) -> World {
    let mut world = World::new();
    world
        .gh
        .set_scaleset_timing(Duration::from_secs(50), Duration::from_secs(3));
    write(&world, runners);
    world.start();
    world.wait_status("the scale-set session open", |s| {
        session(s) == Some(SessionState::Open)
    });
    world
}

#[test]
fn scaleset_pool_runs_a_job_queued_in_a_running_workflow_while_the_first_runs() {
    let world = started(POOL);
    let sets = world.gh.scale_sets(REPO);
    assert_eq!(sets.len(), 1);
    // Named after the pool's instances; the name is its first label (then corral's marker).
    assert_eq!(sets[0].1, "ci");
    assert_eq!(sets[0].2.first().map(String::as_str), Some("ci"));
    let first = world.gh.queue_job(REPO, &["ci"], job("build", 15_000));
    wait_until("the first job running", || {
        world.gh.job(first).is_some_and(|j| j.runner_id.is_some())
    });
    let run = world.gh.job(first).map(|j| j.run_id).expect("job");
    let second = world
        .gh
        .queue_job_in_run(run, &["ci"], job("test", 500))
        .expect("run");
    wait_until("the second job done", || {
        world.gh.job(second).is_some_and(|j| j.conclusion.is_some())
    });
    assert_eq!(
        world.gh.job(first).and_then(|j| j.conclusion),
        None,
        "the second ran while the first still ran"
    );
    assert_eq!(
        world.gh.job(second).and_then(|j| j.conclusion).as_deref(),
        Some("success")
    );
    let status = world.status().expect("status");
    let p = pool(&status).expect("pool");
    assert_eq!(p.engine, "scaleset");
    let set = p.scale_set.as_ref().expect("scale set status");
    assert!(set.engine.last_message_id > 0 && set.engine.last_message.is_some());
    assert!(set.engine.acquired >= 2);
    wait_until("the first job done", || {
        world.gh.job(first).is_some_and(|j| j.conclusion.is_some())
    });
    assert_eq!(
        world.gh.job(first).and_then(|j| j.conclusion).as_deref(),
        Some("success"),
        "the busy runner was never retired"
    );
    // No REST demand polling for a scale-set pool.
    assert_eq!(world.gh.run_listings(REPO).0, 0);
}

#[test]
fn scaleset_session_left_by_a_killed_corral_is_waited_out() {
    let mut world = started(POOL);
    world.signal(Signal::SIGKILL);
    world.corral().exit_code();
    std::fs::remove_file(world.state().join("status.json")).expect("remove status");
    let set = world.gh.scale_sets(REPO)[0].0;
    assert_eq!(
        world.gh.scale_set_sessions(set).len(),
        1,
        "the dead corral's session lives on"
    );
    world.start();
    world.wait_status("a conflict with the leftover session", |s| {
        session(s) == Some(SessionState::Conflict)
    });
    world.wait_status("its own session once the leftover lapsed", |s| {
        session(s) == Some(SessionState::Open)
    });
    let id = world.gh.queue_job(REPO, &["ci"], job("after restart", 300));
    wait_until("the job done", || {
        world.gh.job(id).is_some_and(|j| j.conclusion.is_some())
    });
}

#[test]
fn scaleset_queue_token_expiry_mid_poll_keeps_the_session() {
    let world = started(POOL);
    let before = world
        .status()
        .and_then(|s| pool(&s)?.scale_set.as_ref()?.engine.session_id.clone());
    // The poll parked now gets 401 at the next change; the engine refreshes and goes on.
    world.gh.expire_queue_tokens();
    let id = world.gh.queue_job(REPO, &["ci"], job("after expiry", 300));
    wait_until("the job done", || {
        world.gh.job(id).is_some_and(|j| j.conclusion.is_some())
    });
    let after = world
        .status()
        .and_then(|s| pool(&s)?.scale_set.as_ref()?.engine.session_id.clone());
    assert_eq!(before, after, "the same session");
    assert!(world
        .gh
        .requests()
        .iter()
        .any(|r| r.method == "PATCH" && r.path.contains("/sessions/")));
}

#[test]
fn scaleset_is_deleted_with_its_entry_and_its_session_closed_on_stop() {
    let mut world = started(POOL);
    let set = world.gh.scale_sets(REPO)[0].0;
    write(&world, "  - name: plain\n    repo: owner/repo\n");
    wait_until("the scale set deleted", || {
        world.gh.scale_sets(REPO).is_empty()
    });
    assert!(world.gh.scale_set_sessions(set).is_empty());
    // The deletion runs beside the pass that retired the pool: until that pass publishes,
    // status.json still shows the old session open.
    world.wait_status("the pool gone from status", |s| s.pools.is_empty());
    // Back in the file: a new set; SIGTERM closes its session.
    write(&world, POOL);
    world.wait_status("a session again", |s| {
        session(s) == Some(SessionState::Open)
    });
    let set = world.gh.scale_sets(REPO)[0].0;
    world.signal(Signal::SIGTERM);
    assert_eq!(world.corral().exit_code(), 0);
    assert!(
        world.gh.scale_set_sessions(set).is_empty(),
        "closed on stop"
    );
    assert_eq!(
        world.gh.scale_sets(REPO).len(),
        1,
        "kept while its entry is in the file"
    );
}
