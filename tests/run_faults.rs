//! `corral run` under faults: the config file broken while running, GitHub down or rate
//! limited for many resync intervals.

use std::time::{Duration, Instant};

use crate::kit::daemon::{listeners_under, runner, World, REPO};
use crate::kit::github::{Fault, Route};

const TWO: &str = "  - name: a\n    repo: owner/repo\n  - name: b\n    repo: owner/repo\n";
const THREE: &str = "  - name: a\n    repo: owner/repo\n  - name: b\n    repo: owner/repo\n  - name: c\n    repo: owner/repo\n";

/// Waits until c asks for a registration token again after request number `since`: a
/// request sent just before faults were cleared may still hang until the client gives up
/// (30 s), and the next attempt comes after c's step backoff (at most 1 min).
fn wait_for_a_token_request(world: &World, since: usize) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while !world
        .gh
        .requests_since(since)
        .iter()
        .any(|r| r.path.ends_with("/actions/runners/registration-token") && r.method == "POST")
    {
        assert!(Instant::now() < deadline, "c never asked for a token again");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Keeps watching for `window` that the runners' listeners stay the same processes.
fn hold_for(world: &World, window: Duration, pids: &[i32]) {
    let until = Instant::now() + window;
    while Instant::now() < until {
        let alive = listeners_under(world.dir.path());
        assert!(
            pids.iter().all(|p| alive.contains(p)),
            "a running listener was touched: {pids:?} vs {alive:?}"
        );
        // The window is the point of the test (an outage lasts); the listeners are checked
        // all along it.
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_broken_config_file_keeps_the_last_good_state() {
    let mut world = World::new();
    world.write_config(TWO);
    world.start();
    let pids = world.wait_idle(&["a", "b"]);
    let good = world.config_text(TWO);
    let cut = good.rfind("    repo:").expect("a repo line") + "    rep".len();
    let cases: [(&str, Option<Vec<u8>>, &str); 4] = [
        ("deleted", None, "cannot read the config file"),
        ("emptied", Some(Vec::new()), "the file is empty"),
        (
            "truncated",
            Some(good.as_bytes()[..cut].to_vec()),
            "runners.yaml:",
        ),
        (
            "garbage",
            Some(b"\x00\xff\xfe{{{: ::\n\t- ]]\x1b[31m".to_vec()),
            "runners.yaml",
        ),
    ];
    for (what, bytes, expected) in cases {
        match &bytes {
            None => std::fs::remove_file(world.config()).expect("delete the config"),
            Some(b) => std::fs::write(world.config(), b).expect("break the config"),
        }
        world.signal(nix::sys::signal::Signal::SIGHUP);
        let status = world.wait_status(&format!("the {what} config reported"), |s| {
            s.config_error
                .as_deref()
                .is_some_and(|e| e.contains(expected))
        });
        assert_eq!(status.runners.len(), 2, "{what}: {status:?}");
        for (name, pid) in ["a", "b"].iter().zip(&pids) {
            assert_eq!(
                runner(&status, name).and_then(|r| r.pid),
                Some(*pid),
                "{what}: {name} untouched"
            );
        }
        assert_eq!(listeners_under(world.dir.path()), {
            let mut p = pids.clone();
            p.sort_unstable();
            p
        });
        assert_eq!(
            world.gh.runners(REPO).len(),
            2,
            "{what}: registrations kept"
        );
        world.write_config(TWO);
        world.wait_status(&format!("fixed after {what}"), |s| s.config_error.is_none());
    }
    assert!(!world.corral().output().contains("panicked"));
    assert_eq!(world.wait_idle(&["a", "b"]), pids, "nothing restarted");
}

/// Requests allowed while every REST route answers 5xx for `window` at a 2 s resync: each
/// logical request is tried at most 4 times (transport.rs), the listing runs once per resync,
/// and the one runner that cannot register backs off 1, 2, 4, 8… s.
fn outage_bound(window: Duration) -> usize {
    let resyncs = window.as_secs() as usize / 2 + 1;
    let registrations = 6; // attempts at 0, 1, 3, 7, 15, 31 s cover a window up to 31 s.
    4 * resyncs + 4 * registrations
}

#[test]
fn a_github_outage_keeps_runners_running_and_requests_bounded() {
    let mut world = World::new();
    world.write_config(TWO);
    world.start();
    let pids = world.wait_idle(&["a", "b"]);
    let faults = [
        Fault::ServerError,
        Fault::BadGateway,
        Fault::ServiceUnavailable,
    ];
    for (i, route) in Route::REST.into_iter().enumerate() {
        world
            .gh
            .push_fault(route, faults[i % faults.len()].clone(), 1_000_000);
    }
    let before = world.gh.rest_request_count();
    // A runner added during the outage cannot register; the others must not notice.
    world.write_config(THREE);
    // 20 s at a 2 s resync is ten resync intervals: five minutes at the default 30 s.
    let window = Duration::from_secs(20);
    hold_for(&world, window, &pids);
    let during = world.gh.rest_request_count() - before;
    let bound = outage_bound(window);
    assert!(
        during <= bound,
        "{during} REST requests in a {window:?} outage; bound {bound}"
    );
    let status = world.status().expect("status");
    let c = runner(&status, "c").expect("c is listed");
    assert!(has_error(c, "HTTP 50"), "{c:?}");
    eprintln!("outage: {during} REST requests in {window:?} (bound {bound})");
    let cleared = world.gh.request_count();
    world.gh.clear_faults();
    wait_for_a_token_request(&world, cleared);
    world.wait_idle(&["c"]);
    assert_eq!(
        world.wait_idle(&["a", "b"]),
        pids,
        "a and b never restarted"
    );
    let mut names: Vec<String> = world.gh.runners(REPO).into_iter().map(|r| r.name).collect();
    names.sort();
    assert_eq!(names, ["a", "b", "c"], "nothing lost, nothing doubled");
}

#[test]
fn a_long_rate_limit_sends_nothing_until_its_reset() {
    let mut world = World::new();
    world.write_config(TWO);
    world.start();
    let pids = world.wait_idle(&["a", "b"]);
    // The budget is spent for ten minutes (GitHub's own reset, not a guess) by whichever
    // comes first: the next listing or c's registration token.
    for route in [Route::ListRunners, Route::RegistrationToken] {
        world.gh.push_fault(
            route,
            Fault::PrimaryRateLimit {
                status: 403,
                reset_in: Duration::from_secs(600),
            },
            1,
        );
    }
    world.write_config(THREE);
    let status = world.wait_status("the limit shows", |s| {
        s.github.as_ref().is_some_and(|g| g.blocked_until.is_some())
    });
    let after_limit = world.gh.rest_request_count();
    hold_for(&world, Duration::from_secs(10), &pids);
    let sent = world.gh.rest_request_count() - after_limit;
    assert_eq!(sent, 0, "REST requests while blocked");
    let c = runner(&status, "c");
    assert!(
        c.is_none_or(|c| c.pid.is_none()),
        "c cannot register while blocked: {c:?}"
    );
    let status = world.status().expect("status");
    let c = runner(&status, "c").expect("c listed");
    assert!(has_error(c, "rate limit"), "{c:?}");
}

/// Writes the fake runner knobs of the world's base (read by every listener at its start).
fn base_knobs(world: &World, knobs: &str) {
    std::fs::write(world.dir.path().join("base/bin/fake-runner.json"), knobs).expect("knobs");
}

#[test]
fn a_listener_ignoring_sigint_is_killed_after_the_grace_period() {
    let mut world = World::new();
    base_knobs(
        &world,
        r#"{"poll_wait_secs": 1, "session_conflict_retry_secs": 1, "ignore_sigint": true}"#,
    );
    world.write_config(TWO);
    world.start();
    let [_, pid] = world.wait_idle(&["a", "b"])[..] else {
        panic!("two pids")
    };
    let removed = Instant::now();
    // A new environment restarts b's listener: SIGINT, the grace period, then SIGKILL.
    // (Removing b would not do: its deregistration makes the listener exit by itself.)
    world.write_config(&format!("{TWO}    env: {{ROUND: \"2\"}}\n"));
    let log = world.state().join("records/b/listener.log");
    crate::kit::proc::wait_until("b's listener got SIGINT and ignored it", || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("SIGINT ignored"))
    });
    // The grace period is 30 s (supervisor STOP_GRACE): wait past it, not forever.
    let deadline = removed + Duration::from_secs(50);
    while listeners_under(world.dir.path()).contains(&pid) {
        assert!(
            Instant::now() < deadline,
            "b's listener outlived the grace period"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let took = removed.elapsed();
    assert!(
        took >= Duration::from_secs(29),
        "killed only after the grace period, not at once: {took:?}"
    );
    // The status of the pass that killed it may not be written yet: wait for the new pid.
    world.wait_status("b runs a new listener", |s| {
        runner(s, "b").is_some_and(|r| {
            r.state == corral::status::State::Idle && r.pid.is_some_and(|p| p != pid)
        })
    });
    let out = world.corral().output();
    assert!(
        out.contains(&format!("listener stopped pid={pid} clean=false")),
        "{out}"
    );
}

/// A second SIGTERM while listeners ignore the first stop's SIGINT kills their sessions at
/// once: the stops (each waiting out its 30 s grace) are abandoned, none reports an end.
#[test]
fn a_second_sigterm_kills_listeners_ignoring_sigint_at_once() {
    use nix::sys::signal::Signal;
    let mut world = World::new();
    base_knobs(
        &world,
        r#"{"poll_wait_secs": 1, "session_conflict_retry_secs": 1, "ignore_sigint": true}"#,
    );
    world.write_config(TWO);
    world.start();
    world.wait_idle(&["a", "b"]);
    world.signal(Signal::SIGTERM);
    for name in ["a", "b"] {
        let log = world.state().join(format!("records/{name}/listener.log"));
        crate::kit::proc::wait_until("the listener got SIGINT and ignored it", || {
            std::fs::read_to_string(&log).is_ok_and(|l| l.contains("SIGINT ignored"))
        });
    }
    world.signal(Signal::SIGTERM);
    let code = world.corral().exit_code();
    let out = world.corral().output();
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("second signal: killing every runner now"),
        "{out}"
    );
    assert!(
        !out.contains("listener stopped"),
        "a stop waited out its grace instead of being forced:\n{out}"
    );
    assert!(listeners_under(world.dir.path()).is_empty());
}

/// Starts of a listener that exits at once, over `window`: the backoff waits 1, 2, 4, 8, 16 s
/// between them (backoff.rs), so at most 1 + log2(window + 1) starts.
fn crashloop_bound(window: Duration) -> usize {
    1 + (window.as_secs() + 1).ilog2() as usize
}

#[test]
fn a_crash_looping_runner_backs_off_instead_of_spinning() {
    let mut world = World::new();
    base_knobs(
        &world,
        r#"{"poll_wait_secs": 1, "session_conflict_retry_secs": 1, "exit_at_start": 1}"#,
    );
    world.write_config("  - name: crashy\n    repo: owner/repo\n");
    world.start();
    world.corral().wait_for("listener started");
    let starts = |world: &mut World| world.corral().output().matches("listener started").count();
    let window = Duration::from_secs(20);
    let until = Instant::now() + window;
    while Instant::now() < until {
        // The window is the measure: starts are counted over all of it.
        std::thread::sleep(Duration::from_millis(200));
    }
    let n = starts(&mut world);
    let bound = crashloop_bound(window);
    eprintln!("crash loop: {n} starts in {window:?} (bound {bound})");
    assert!(n >= 3, "it is restarted: {n}");
    assert!(n <= bound, "{n} starts in {window:?}; bound {bound}");
    let status = world.wait_status("backing off", |s| {
        runner(s, "crashy").is_some_and(|r| {
            matches!(
                r.state,
                corral::status::State::Backoff | corral::status::State::Crashloop
            ) && r.restarts >= 3
        })
    });
    let crashy = runner(&status, "crashy").expect("crashy");
    assert!(has_error(crashy, "exited with 1"), "{crashy:?}");
}

/// True when `r`'s last error mentions `text`.
fn has_error(r: &corral::status::RunnerStatus, text: &str) -> bool {
    r.last_error.as_deref().is_some_and(|e| e.contains(text))
}

/// A tmpfs mounted for one test; lazily unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    /// `None` when mounting is not permitted here (not root, or no `CAP_SYS_ADMIN`).
    fn mount(at: &std::path::Path, size: &str) -> Option<Self> {
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(at.to_path_buf()))
    }

    fn resize(&self, size: &str) {
        let ok = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "remount the tmpfs");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn a_full_disk_fails_provisioning_cleanly_and_recovers() {
    let mut world = World::new();
    let state = world.state();
    std::fs::create_dir(&state).expect("mkdir state");
    // The base is ~26 MB (two copies of the fake runner binary); on another file system
    // every file is copied, so 4 MB fills up half-way through the first runner.
    let Some(disk) = Tmpfs::mount(&state, "4m") else {
        eprintln!(
            "skipped: cannot mount a tmpfs here (needs root); the disk-full test did not run"
        );
        return;
    };
    world.write_config("  - name: a\n    repo: owner/repo\n");
    world.start();
    let status = world.wait_status("the full disk shows", |s| {
        runner(s, "a").is_some_and(|r| has_error(r, "No space left on device"))
    });
    let a = runner(&status, "a").expect("a");
    assert!(a.pid.is_none(), "{a:?}");
    let left: Vec<String> = std::fs::read_dir(state.join("runners"))
        .expect("runners dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.is_empty(), "no partial runner: {left:?}");
    assert!(world.gh.runners(REPO).is_empty(), "nothing registered");
    disk.resize("256m");
    world.wait_idle(&["a"]);
    let names: Vec<String> = world.gh.runners(REPO).into_iter().map(|r| r.name).collect();
    assert_eq!(names, ["a"]);
}

#[test]
fn a_hung_github_api_times_out_without_touching_runners() {
    let mut world = World::new();
    world.write_config(TWO);
    world.start();
    let pids = world.wait_idle(&["a", "b"]);
    // Every REST call hangs past the client's 30 s timeout (github/mod.rs TIMEOUT).
    for route in Route::REST {
        world
            .gh
            .push_fault(route, Fault::Delay(Duration::from_secs(31)), 1_000);
    }
    let before = world.gh.rest_request_count();
    world.write_config(THREE);
    let window = Duration::from_secs(32);
    hold_for(&world, window, &pids);
    let during = world.gh.rest_request_count() - before;
    // A timed-out request is not retried; corral waits for it before the next, so at most
    // one listing and one registration token are in flight per timeout.
    let bound = 2 * (window.as_secs() as usize / 30 + 1);
    eprintln!("hung API: {during} REST requests in {window:?} (bound {bound})");
    assert!(during <= bound, "{during} requests; bound {bound}");
    let cleared = world.gh.request_count();
    world.gh.clear_faults();
    wait_for_a_token_request(&world, cleared);
    world.wait_idle(&["c"]);
    assert_eq!(
        world.wait_idle(&["a", "b"]),
        pids,
        "a and b never restarted"
    );
    let status = world.status().expect("status");
    assert!(status.config_error.is_none());
}

/// How many times corral has logged a listing that failed (a hung one, after the client's
/// 30 s timeout).
fn failed_listings(log: &str) -> usize {
    log.matches("cannot list registrations").count()
}

/// Kills `runner`'s listener `pid` and waits for a new one; `failed` counts in corral's log
/// the failures of what hangs, which must not have grown meanwhile (nothing waited for it).
/// Returns that count, for the checks after.
fn restart_without_waiting(
    world: &mut World,
    runner_name: &str,
    pid: i32,
    failed: fn(&str) -> usize,
) -> usize {
    let hung = failed(&world.corral().output());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the listener");
    world.wait_status("the listener restarted", |s| {
        runner(s, runner_name).is_some_and(|r| r.pid.is_some_and(|p| p != pid))
    });
    assert_eq!(
        failed(&world.corral().output()),
        hung,
        "the restart waited for the hung call"
    );
    hung
}

/// SIGTERM: corral exits 0 and logs its stop while `failed` still counts `hung`.
fn stop_without_waiting(world: &mut World, failed: fn(&str) -> usize, hung: usize) {
    world.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(world.corral().exit_code(), 0, "{}", world.corral().output());
    let log = world.corral().output();
    let stopped = log.find("corral stopped").expect("corral stopped");
    assert_eq!(
        failed(&log[..stopped]),
        hung,
        "the stop waited for the hung call:\n{log}"
    );
}

#[test]
fn a_hung_github_never_delays_a_restart_a_local_edit_or_a_stop() {
    let mut world = World::new();
    world.write_config(TWO);
    world.start();
    let pids = world.wait_idle(&["a", "b"]);
    let listings = |world: &World| {
        world
            .gh
            .requests()
            .iter()
            .filter(|r| r.method == "GET" && r.path.ends_with("/actions/runners"))
            .count()
    };
    let before = listings(&world);
    // Every REST call hangs for an hour: the client gives up on each after 30 s.
    for route in Route::REST {
        world
            .gh
            .push_fault(route, Fault::Delay(Duration::from_secs(3600)), 1_000);
    }
    crate::kit::proc::wait_until("a listing hung at the fake", || listings(&world) > before);
    // From here until that listing times out, nothing corral does may wait for it: each
    // outcome below must show before the failed listing is logged.
    let hung = restart_without_waiting(&mut world, "a", pids[0], failed_listings);
    // An edit that needs no GitHub call (b's environment) restarts b at once.
    world.write_config(
        "  - name: a\n    repo: owner/repo\n  - name: b\n    repo: owner/repo\n    env: { EDITED: \"1\" }\n",
    );
    world.wait_status("b restarted for its new environment", |s| {
        runner(s, "b").is_some_and(|r| r.pid.is_some_and(|p| p != pids[1]))
    });
    assert_eq!(
        failed_listings(&world.corral().output()),
        hung,
        "the edit waited for the hung listing"
    );
    stop_without_waiting(&mut world, failed_listings, hung);
}

/// Demand polls that failed, as logged (a timed-out one included).
fn failed_polls(log: &str) -> usize {
    log.matches("cannot poll queued jobs").count()
}

#[test]
fn a_hung_demand_poll_never_delays_a_restart_or_a_stop() {
    let mut world = World::new();
    // A pool, so corral polls demand every second, and a static runner whose listener is
    // killed while the poll hangs.
    let runners = "  - name: a\n    repo: owner/repo\n  - name: ci\n    repo: owner/repo\n    labels: [gpu]\n    scale: {max: 2}\n";
    std::fs::write(
        world.config(),
        format!("demand_poll_interval: 1s\n{}", world.config_text(runners)),
    )
    .expect("write config");
    world.start();
    let pids = world.wait_idle(&["a"]);
    let polls = |world: &World| {
        world
            .gh
            .requests()
            .iter()
            .filter(|r| r.method == "GET" && r.path.contains("/actions/runs"))
            .count()
    };
    crate::kit::proc::wait_until("a first demand poll", || polls(&world) > 0);
    // Every REST call hangs for an hour, the demand poll's with them: the poll gives up at
    // its own deadline (20 s), the client on each request after 30 s.
    for route in Route::REST
        .into_iter()
        .chain([Route::ListRuns, Route::ListRunJobs, Route::GetJob])
    {
        world
            .gh
            .push_fault(route, Fault::Delay(Duration::from_secs(3600)), 1_000);
    }
    let before = polls(&world);
    crate::kit::proc::wait_until("a demand poll hung at the fake", || polls(&world) > before);
    // Until that poll ends, nothing corral does may wait for it: each outcome below must show
    // before the failed poll is logged.
    let hung = restart_without_waiting(&mut world, "a", pids[0], failed_polls);
    stop_without_waiting(&mut world, failed_polls, hung);
}

/// The registration-token requests among `requests`.
fn token_requests(requests: &[crate::kit::github::RecordedRequest]) -> usize {
    requests
        .iter()
        .filter(|r| r.path.ends_with("/actions/runners/registration-token") && r.method == "POST")
        .count()
}

#[test]
fn a_rate_limited_registration_is_held_until_the_reset_then_registers() {
    let mut world = World::new();
    world.write_config("  - name: a\n    repo: owner/repo\n");
    world.start();
    world.wait_idle(&["a"]);
    let since = world.gh.request_count();
    // The next registration token spends the budget until GitHub's reset a few seconds on.
    world.gh.push_fault(
        Route::RegistrationToken,
        Fault::PrimaryRateLimit {
            status: 429,
            reset_in: Duration::from_secs(6),
        },
        1,
    );
    world.write_config(TWO);
    let status = world.wait_status("b held by the rate limit", |s| {
        runner(s, "b").is_some_and(|b| {
            b.last_error_kind == Some(corral::status::ErrorKind::RateLimited)
                && b.retry_at.is_some()
        })
    });
    let b = runner(&status, "b").expect("b listed");
    assert!(has_error(b, "rate limit"), "{b:?}");
    assert_eq!(b.pid, None, "b cannot register while limited: {b:?}");
    world.wait_idle(&["a", "b"]);
    // The fake refuses every REST call before the reset: one refused token request and one
    // that registered b mean corral sent nothing to that route before the reset, and tried
    // again after it without being told to.
    let requests = world.gh.requests_since(since);
    assert_eq!(token_requests(&requests), 2, "{requests:#?}");
    let status = world.status().expect("status");
    let b = runner(&status, "b").expect("b listed");
    assert_eq!(b.registration, "registered", "{b:?}");
}
