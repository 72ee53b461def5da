//! `corral run` end to end: the real binary, the fake GitHub, the fake runner install.

use std::time::Duration;

use corral::status::State;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::kit::daemon::{cmdlines_under, listeners_under, runner, World, PAT, REPO};
use crate::kit::github::{JobResult, JobSpec};
use crate::kit::proc::wait_until;

const THREE: &str = "  - name: web\n    repo: owner/repo\n    count: 3\n";

fn registered_names(world: &World) -> Vec<String> {
    let mut names: Vec<String> = world.gh.runners(REPO).into_iter().map(|r| r.name).collect();
    names.sort();
    names
}

#[test]
fn converges_adds_and_removes_runners() {
    let mut world = World::new();
    world.write_config(THREE);
    world.start();
    let pids = world.wait_idle(&["web-1", "web-2", "web-3"]);
    assert_eq!(registered_names(&world), ["web-1", "web-2", "web-3"]);
    assert_eq!(
        listeners_under(world.dir.path()).len(),
        3,
        "one listener per runner"
    );

    // Add one by editing the file: the others keep their listeners.
    world.write_config(&format!(
        "{THREE}  - name: api\n    repo: owner/repo\n    labels: [gpu]\n"
    ));
    world.wait_idle(&["api"]);
    assert_eq!(
        world.wait_idle(&["web-1", "web-2", "web-3"]),
        pids,
        "untouched runners keep their pids"
    );
    let api = world
        .gh
        .runners(REPO)
        .into_iter()
        .find(|r| r.name == "api")
        .expect("api registered");
    assert!(api.labels.iter().any(|l| l.name == "gpu"), "{api:?}");

    // Remove two: deregistered on GitHub, directories and listeners gone.
    world.write_config("  - name: web\n    repo: owner/repo\n");
    world.wait_status("only web left", |s| {
        s.runners.len() == 1 && runner(s, "web").is_some_and(|r| r.state == State::Idle)
    });
    assert_eq!(registered_names(&world), ["web"]);
    for gone in ["web-1", "web-2", "web-3", "api"] {
        assert!(!world.runner_dir(gone).exists(), "{gone} dir removed");
    }
    assert_eq!(listeners_under(world.dir.path()).len(), 1);
}

#[test]
fn killed_listener_is_restarted_with_backoff() {
    let mut world = World::new();
    world.write_config("  - name: solo\n    repo: owner/repo\n");
    world.start();
    let [pid] = world.wait_idle(&["solo"])[..] else {
        panic!("one pid")
    };
    kill(Pid::from_raw(pid), Signal::SIGKILL).expect("kill -9 the listener");
    let status = world.wait_status("solo restarted", |s| {
        runner(s, "solo")
            .is_some_and(|r| r.restarts >= 1 && r.state == State::Idle && r.pid != Some(pid))
    });
    let solo = runner(&status, "solo").expect("solo");
    assert!(
        solo.last_error.is_some(),
        "the last error stays visible: {solo:?}"
    );
    // The killed listener never closed its session, so the first restarts may meet a session
    // conflict (exit 5) until GitHub lets the session lapse; corral backs off meanwhile.
    let log = world.corral().output();
    assert!(
        log.contains(&format!("listener exited pid={pid} code=None")),
        "{log}"
    );
    assert!(log.contains("retry_in=1s"), "the backoff is logged");
}

#[test]
fn invalid_edit_changes_nothing_until_fixed() {
    let mut world = World::new();
    world.write_config("  - name: a\n    repo: owner/repo\n");
    world.start();
    let pids = world.wait_idle(&["a"]);
    std::fs::write(world.config(), world.config_text("  - name: a\n    repo: owner/repo\n    lables: [x]\n  - name: b\n    repo: owner/repo\n")).expect("write");
    let status = world.wait_status("config error shown", |s| s.config_error.is_some());
    let error = status.config_error.clone().expect("config error");
    assert!(
        error.contains("runners[0].lables: unknown field `lables`"),
        "{error}"
    );
    assert!(error.contains("runners.yaml:"), "names the file: {error}");
    assert_eq!(
        runner(&status, "a").and_then(|r| r.pid),
        Some(pids[0]),
        "a untouched"
    );
    assert!(
        runner(&status, "b").is_none(),
        "b not created from a refused file"
    );
    // `corral status` on the refused file: its errors, then the controller's status.
    let out = crate::kit::cmd::run(world.dir.path(), &["status", "-c", "runners.yaml"]);
    let (stdout, stderr) = crate::kit::cmd::texts(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stderr.contains("unknown field `lables`"), "{stderr}");
    assert!(
        stdout.contains("config error (last good config still in force)"),
        "{stdout}"
    );
    assert!(stdout.contains("idle"), "{stdout}");
    world.write_config("  - name: a\n    repo: owner/repo\n  - name: b\n    repo: owner/repo\n");
    let status = world.wait_status("b added after the fix", |s| {
        s.config_error.is_none() && runner(s, "b").is_some_and(|r| r.state == State::Idle)
    });
    assert_eq!(runner(&status, "a").and_then(|r| r.pid), Some(pids[0]));
}

#[test]
fn busy_runner_is_drained_before_removal() {
    let mut world = World::new();
    world.write_config("  - name: keep\n    repo: owner/repo\n  - name: busy\n    repo: owner/repo\n    labels: [only-busy]\n");
    world.start();
    world.wait_idle(&["keep", "busy"]);
    let job = world.gh.queue_job(
        REPO,
        &["self-hosted", "only-busy"],
        JobSpec {
            name: "long".into(),
            duration: Duration::from_secs(4),
            result: JobResult::Succeeded,
        },
    );
    world.wait_status("busy runs the job", |s| {
        runner(s, "busy").is_some_and(|r| r.state == State::Busy)
    });
    world.write_config("  - name: keep\n    repo: owner/repo\n");
    world.wait_status("busy draining", |s| {
        runner(s, "busy").is_some_and(|r| r.state == State::Draining)
    });
    assert!(
        registered_names(&world).contains(&"busy".to_string()),
        "still registered while the job runs"
    );
    world.wait_status("busy gone", |s| runner(s, "busy").is_none());
    let job = world.gh.job(job).expect("job");
    assert_eq!(
        job.conclusion.as_deref(),
        Some("success"),
        "the job completed, not cancelled: {job:?}"
    );
    assert_eq!(registered_names(&world), ["keep"]);
}

#[test]
fn restarted_corral_adopts_listeners() {
    let mut world = World::new();
    world.write_config("  - name: web\n    repo: owner/repo\n    count: 2\n");
    world.start();
    let pids = world.wait_idle(&["web-1", "web-2"]);
    let mut sorted = pids.clone();
    sorted.sort_unstable();
    world.signal(Signal::SIGKILL);
    assert_ne!(world.corral().exit_code(), 0);
    assert_eq!(
        listeners_under(world.dir.path()),
        sorted,
        "listeners outlive a killed corral"
    );
    let requests_before = world.gh.requests().len();
    world.start();
    world.corral().wait_for("adopted a running listener");
    let status = world.wait_status("adopted and idle", |s| {
        s.runners.iter().filter(|r| r.state == State::Idle).count() == 2
    });
    let now: Vec<i32> = ["web-1", "web-2"]
        .iter()
        .filter_map(|n| runner(&status, n).and_then(|r| r.pid))
        .collect();
    assert_eq!(now, pids, "no second listener");
    assert_eq!(listeners_under(world.dir.path()), sorted);
    assert_eq!(
        registered_names(&world),
        ["web-1", "web-2"],
        "no duplicate registration"
    );
    let registrations = world.gh.requests()[requests_before..]
        .iter()
        .filter(|r| r.path.ends_with("registration-token"))
        .count();
    assert_eq!(registrations, 0, "nothing registered again");
}

#[test]
fn ephemeral_runner_is_replaced_after_its_job() {
    let mut world = World::new();
    world.write_config("  - name: eph\n    repo: owner/repo\n    ephemeral: true\n");
    world.start();
    world.wait_idle(&["eph"]);
    let registered = world.gh.runners(REPO);
    assert_eq!(
        registered.len(),
        1,
        "{registered:?}\n{}",
        world.corral().output()
    );
    let first = registered[0].id;
    let job = world.gh.queue_job(
        REPO,
        &["self-hosted"],
        JobSpec {
            name: "once".into(),
            duration: Duration::from_millis(200),
            result: JobResult::Succeeded,
        },
    );
    assert!(
        world.gh.wait_until(Duration::from_secs(30), |s| s
            .job(job)
            .is_some_and(|j| j.conclusion.is_some())),
        "job done"
    );
    // The registration the job used is gone; a new one comes online in its place.
    assert!(
        world.gh.wait_until(Duration::from_secs(30), |s| {
            let now = s.runners(REPO);
            now.len() == 1
                && now[0].id != first
                && now[0].status == crate::kit::github::RunnerStatus::Online
        }),
        "a fresh registration: {:?}\n{}",
        world.gh.runners(REPO),
        world.corral().output()
    );
    let status = world.wait_status("a fresh eph", |s| {
        runner(s, "eph").is_some_and(|r| r.state == State::Idle)
    });
    assert_eq!(
        runner(&status, "eph").map(|r| r.restarts),
        Some(0),
        "not counted as a crash"
    );
}

#[test]
fn sigterm_stops_every_listener_and_exits_0() {
    let mut world = World::new();
    world.write_config(THREE);
    world.start();
    world.wait_idle(&["web-1", "web-2", "web-3"]);
    world.signal(Signal::SIGTERM);
    assert_eq!(world.corral().exit_code(), 0, "{}", world.corral().output());
    assert!(listeners_under(world.dir.path()).is_empty());
    let status = world.status().expect("final status");
    assert!(
        status
            .runners
            .iter()
            .all(|r| r.pid.is_none() && r.status == "stopped"),
        "{status:#?}"
    );
}

#[test]
fn session_conflict_and_deleted_registration_are_handled() {
    let mut world = World::new();
    world.write_config("  - name: a\n    repo: owner/repo\n  - name: b\n    repo: owner/repo\n");
    world.start();
    world.wait_idle(&["a", "b"]);
    let ids: Vec<(String, u64)> = world.gh.runner_ids(REPO);
    let id_of = |n: &str| {
        ids.iter()
            .find(|(name, _)| name == n)
            .map(|(_, id)| *id)
            .expect("id")
    };
    world.gh.send_exit(id_of("a"), 5);
    let status = world.wait_status("a reports the conflict", |s| {
        runner(s, "a").is_some_and(|r| r.last_exit_code == Some(5) && r.restarts >= 1)
    });
    let a = runner(&status, "a").expect("a");
    assert!(
        a.last_error
            .as_deref()
            .is_some_and(|e| e.contains("session conflict")),
        "{a:?}"
    );
    let b_pid = runner(&status, "b").and_then(|r| r.pid);
    world.gh.delete_runner_silently(REPO, id_of("b"));
    wait_until("b has a new registration, online", || {
        world.gh.runners(REPO).iter().any(|r| {
            r.name == "b"
                && r.id != id_of("b")
                && r.status == crate::kit::github::RunnerStatus::Online
        })
    });
    let status = world.wait_status("b idle again", |s| {
        runner(s, "b").is_some_and(|r| r.state == State::Idle && r.pid != b_pid)
    });
    let b = runner(&status, "b").expect("b");
    assert_eq!(
        b.restarts, 0,
        "a deleted registration is not a crash: {b:?}"
    );
}

#[test]
fn saves_by_rename_and_symlink_swap_are_picked_up() {
    let mut world = World::new();
    // ConfigMap layout: runners.yaml -> ..data/runners.yaml, ..data -> ..v1
    let dir = world.dir.path().to_path_buf();
    let v1 = dir.join("..v1");
    std::fs::create_dir(&v1).expect("mkdir");
    std::fs::write(
        v1.join("runners.yaml"),
        world.config_text("  - name: one\n    repo: owner/repo\n"),
    )
    .expect("write");
    std::os::unix::fs::symlink("..v1", dir.join("..data")).expect("symlink");
    std::os::unix::fs::symlink("..data/runners.yaml", world.config()).expect("symlink");
    world.start();
    world.wait_idle(&["one"]);
    // The swap: a new directory, a new ..data link renamed over the old one.
    let v2 = dir.join("..v2");
    std::fs::create_dir(&v2).expect("mkdir");
    std::fs::write(
        v2.join("runners.yaml"),
        world.config_text("  - name: two\n    repo: owner/repo\n"),
    )
    .expect("write");
    std::os::unix::fs::symlink("..v2", dir.join("..data_tmp")).expect("symlink");
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).expect("swap");
    world.wait_status("two replaced one", |s| {
        s.runners.len() == 1 && runner(s, "two").is_some_and(|r| r.state == State::Idle)
    });
    // An editor's save: write a temporary file, rename it over the (resolved) file.
    let real = v2.join("runners.yaml");
    let tmp = v2.join(".runners.yaml.swp");
    std::fs::write(
        &tmp,
        world.config_text(
            "  - name: two\n    repo: owner/repo\n  - name: three\n    repo: owner/repo\n",
        ),
    )
    .expect("write");
    std::fs::rename(&tmp, &real).expect("rename");
    // The rename happened inside ..v2, which is not watched; SIGHUP is the documented nudge
    // for such layouts, and the resync catches it anyway.
    world.wait_idle(&["three"]);
}

#[test]
fn plain_rename_save_is_picked_up() {
    let mut world = World::new();
    world.write_config("  - name: one\n    repo: owner/repo\n");
    world.start();
    world.wait_idle(&["one"]);
    let tmp = world.dir.path().join("runners.yaml.tmp");
    std::fs::write(
        &tmp,
        world.config_text(
            "  - name: one\n    repo: owner/repo\n  - name: other\n    repo: owner/repo\n",
        ),
    )
    .expect("write");
    std::fs::rename(&tmp, world.config()).expect("rename over");
    world.wait_idle(&["other"]);
    assert!(world.corral().output().contains("config reloaded"));
}

#[test]
fn secrets_never_show() {
    let mut world = World::new();
    world.write_config("  - name: s\n    repo: owner/repo\n");
    world.start();
    world.wait_idle(&["s"]);
    let status_text = std::fs::read_to_string(world.state().join("status.json")).expect("status");
    let argv = cmdlines_under(world.dir.path()).join("\n");
    let output = world.corral().output();
    let log =
        std::fs::read_to_string(world.state().join("records/s/listener.log")).unwrap_or_default();
    let tokens = world.gh.issued_tokens();
    assert!(!tokens.is_empty(), "the fake issued tokens");
    for secret in std::iter::once(PAT.to_string()).chain(tokens) {
        for (place, text) in [
            ("status", &status_text),
            ("argv", &argv),
            ("corral output", &output),
            ("listener log", &log),
        ] {
            assert!(!text.contains(&secret), "a secret leaked into {place}");
        }
    }
    // The runner's environment does not carry the PAT either.
    let pid = world
        .status()
        .and_then(|s| runner(&s, "s").and_then(|r| r.pid))
        .expect("pid");
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
    assert!(
        !String::from_utf8_lossy(&environ).contains(PAT),
        "PAT in the listener's environment"
    );
}
