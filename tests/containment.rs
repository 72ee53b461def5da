//! Nothing outlives its job (issue 22), and each listener in its own session (issue 17):
//! through the real binary, as root, with jobs that run shell commands. Tests that need a
//! writable cgroup2 hierarchy say `SKIPPED <name>: why` where there is none.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::{json, Value};

use crate::kit::cmd;
use crate::kit::daemon::{runner, World, REPO};
use crate::kit::github::{JobSpec, JobStatus};
use crate::kit::proc::{wait_until, TIMEOUT};
use crate::provision::diag_text;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// True when this host gives corral cgroups (root, a writable cgroup2); else says why the
/// test `name` is skipped.
fn cgroups_or_skip(name: &str) -> bool {
    if !is_root() {
        println!("SKIPPED {name}: needs root");
        return false;
    }
    let host = corral::cgroup::Host::detect();
    match &host.v2 {
        Some(v2) if rustix::fs::access(&v2.own, rustix::fs::Access::WRITE_OK).is_ok() => true,
        Some(v2) => {
            println!("SKIPPED {name}: `{}` is not writable", v2.own.display());
            false
        }
        None => {
            println!("SKIPPED {name}: no cgroup2 hierarchy is mounted");
            false
        }
    }
}

/// A world whose runners' users can reach the base and their roots through the temp dir.
fn world() -> World {
    use std::os::unix::fs::PermissionsExt;
    let world = World::new();
    std::fs::set_permissions(world.dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    world
}

/// A runner entry of its own user, labelled with its name, with `extra` lines.
fn own_user(name: &str, extra: &str) -> String {
    format!(
        "  - name: {name}\n    repo: {REPO}\n    labels: [{name}]\n    allow_root: false\n    isolation: user-per-runner\n{extra}"
    )
}

/// A `run` step.
fn sh(name: &str, script: &str) -> Value {
    json!({"run": script, "name": name})
}

/// A step that starts a daemon the way a job escapes a process tree: a new session
/// (`setsid`), a clean environment (`env -i`), its parent gone at once; it prints its pid.
fn daemon_step() -> Value {
    sh(
        "daemon",
        "setsid env -i /bin/sh -c 'sleep 600 </dev/null >/dev/null 2>&1 & echo pid=$!'",
    )
}

/// The last `out <name>: <key>=<value>` value of a Worker log.
fn said(log: &str, name: &str, key: &str) -> Option<String> {
    let prefix = format!("out {name}: {key}=");
    log.lines()
        .rev()
        .find_map(|l| l.split_once(&prefix).map(|(_, v)| v.trim().to_string()))
}

fn pid_said(log: &str, name: &str) -> i32 {
    said(log, name, "pid")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid from step {name} in the Worker log:\n{log}"))
}

fn stat(pid: i32) -> (i32, i32, i32, i32) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let s = corral::procfs::parse_stat(&text).expect("parse stat");
    (s.ppid, s.pgrp, s.session, s.tty_nr)
}

fn alive(pid: i32) -> bool {
    corral::procfs::process_start_time(pid).is_some()
}

/// `pid`'s cgroup2 path, as `/proc/<pid>/cgroup` says it.
fn cgroup_of(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("0::").map(str::to_string))
        .unwrap_or_default()
}

/// `pid`'s directory in the v1 hierarchy of `controller`, if it is in one.
fn v1_dir(pid: i32, controller: &str) -> Option<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let path = text.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers
            .split(',')
            .any(|c| c == controller)
            .then(|| path.to_string())
    })?;
    let host = corral::cgroup::Host::detect();
    let mount = host.v1.iter().find(|(c, _)| c.name() == controller)?.1;
    Some(mount.dir.join(path.trim_start_matches('/')))
}

/// Queues `steps` on runner `name` (labelled with its name), waits for the job to complete,
/// and returns its conclusion and Worker log.
fn run_job(world: &World, name: &str, steps: Vec<Value>) -> (String, String) {
    crate::security::run_steps(world, name, name, steps)
}

/// Waits until `cond` holds for runner `name`'s status.
fn wait_runner(
    world: &World,
    what: &str,
    name: &str,
    mut cond: impl FnMut(&corral::status::RunnerStatus) -> bool,
) -> corral::status::RunnerStatus {
    let status = world.wait_status(what, |s| runner(s, name).is_some_and(&mut cond));
    runner(&status, name).cloned().expect("runner in status")
}

#[test]
fn a_listener_has_a_session_of_its_own_and_a_job_cannot_leave_its_stop() {
    if !is_root() {
        println!("SKIPPED a_listener_has_a_session_of_its_own: needs root");
        return;
    }
    let mut world = World::new();
    // No cgroups (a plain directory as their root): the session alone must stop the job.
    let not_cgroups = world.dir.path().join("not-cgroups");
    std::fs::create_dir(&not_cgroups).expect("mkdir");
    let root_env = format!("{}={}", corral::cgroup::ROOT_ENV, not_cgroups.display());
    world.write_config(
        "  - name: ct-sess\n    repo: owner/repo\n    labels: [ct-sess]\n    leftovers: keep\n",
    );
    // corral in a terminal, as an admin starts it by hand.
    world.start_under(&[
        "env",
        &root_env,
        "/bin/sh",
        "-c",
        "exec script -qefc \"$*\" /dev/null",
        "sh",
    ]);
    let pid = world.wait_idle(&["ct-sess"])[0];
    let (_, _, corral_sid, corral_tty) = stat(stat(pid).0);
    assert_ne!(corral_tty, 0, "corral runs in a terminal (script)");
    let (_, pgrp, sid, tty) = stat(pid);
    assert_eq!(sid, pid, "the listener leads its own session");
    assert_eq!(pgrp, pid, "and its own process group");
    assert_eq!(tty, 0, "and has no controlling terminal");
    assert_ne!(sid, corral_sid, "not corral's session");

    // A job starts a process that leaves the listener's process group, and tries the terminal.
    let (conclusion, log) = run_job(
        &world,
        "ct-sess",
        vec![
            sh(
                "escape",
                "perl -e 'setpgrp(0,0); exec \"sleep\", \"600\"' </dev/null >/dev/null 2>&1 &\necho pid=$!",
            ),
            sh(
                "tty",
                "if ( : <>/dev/tty ) 2>/dev/null; then echo tty=open; else echo tty=none; fi",
            ),
        ],
    );
    assert_eq!(conclusion, "success", "{log}");
    let escaped = pid_said(&log, "escape");
    wait_until("the escaped process left the group", || {
        alive(escaped) && stat(escaped).1 == escaped
    });
    assert_eq!(stat(escaped).2, pid, "still in the listener's session");
    assert_eq!(said(&log, "tty", "tty").as_deref(), Some("none"), "{log}");
    let status = wait_runner(&world, "ct-sess idle after its job", "ct-sess", |r| {
        r.state == corral::status::State::Idle && r.last_job.is_some()
    });
    assert!(
        status
            .cleanup
            .as_deref()
            .is_some_and(|c| c.starts_with("degraded (")),
        "{status:?}"
    );
    assert!(alive(escaped), "kept between jobs (leftovers: keep)");

    // Removed from the file: the listener and everything in its session are gone.
    world.write_config("");
    world.wait_status("ct-sess removed", |s| runner(s, "ct-sess").is_none());
    wait_until("the escaped process is stopped", || !alive(escaped));
    assert!(!alive(pid), "the listener is stopped");
    assert!(
        std::fs::read_dir(&not_cgroups)
            .expect("ls")
            .next()
            .is_none(),
        "nothing was made in a directory that is not a cgroup"
    );
}

#[test]
fn a_setsid_job_with_a_clean_environment_leaves_nothing_behind() {
    let name = "a_setsid_job_with_a_clean_environment_leaves_nothing_behind";
    if !cgroups_or_skip(name) {
        return;
    }
    let mut world = world();
    world.write_config(&format!(
        "{}{}",
        own_user("ct-kill", ""),
        own_user("ct-keep", "    leftovers: keep\n")
    ));
    world.start();
    let pids = world.wait_idle(&["ct-kill", "ct-keep"]);

    // Each job leaves a daemon in a session of its own with a clean environment.
    let (conclusion, log) = run_job(&world, "ct-kill", vec![daemon_step()]);
    assert_eq!(conclusion, "success", "{log}");
    let killed = pid_said(&log, "daemon");
    let (conclusion, log) = run_job(&world, "ct-keep", vec![daemon_step()]);
    assert_eq!(conclusion, "success", "{log}");
    let kept = pid_said(&log, "daemon");
    assert!(
        cgroup_of(kept).ends_with("/ct-keep"),
        "the job's daemon is in its runner's cgroup: {}",
        cgroup_of(kept)
    );
    let (_, _, sid, _) = stat(kept);
    assert_ne!(sid, pids[1], "the daemon left the listener's session");

    // After its job: gone, the listener unharmed; with `leftovers: keep`, kept.
    wait_until("the daemon of ct-kill's job is killed", || !alive(killed));
    let status = wait_runner(&world, "ct-kill counts what it killed", "ct-kill", |r| {
        r.leftovers_killed >= 1
    });
    assert_eq!(
        status.pid,
        Some(pids[0]),
        "the listener survives the clean-up"
    );
    assert_eq!(status.cleanup.as_deref(), Some("after every job"));
    let cgroup = status.cgroup.clone().expect("a cgroup in status");
    assert!(
        cgroup.ends_with("/ct-kill") && cgroup.contains("/corral-"),
        "{cgroup}"
    );
    assert!(Path::new(&cgroup).is_dir());
    // Measured every 2 s: the listener and the daemon it kept.
    let keep = wait_runner(&world, "ct-keep counts its daemon", "ct-keep", |r| {
        r.usage.is_some_and(|u| u.processes >= 2)
    });
    assert_eq!(
        keep.cleanup.as_deref(),
        Some("at removal (leftovers: keep)")
    );
    assert!(alive(kept), "kept between jobs");
    world.wait_idle(&["ct-kill", "ct-keep"]);

    // At removal: the whole cgroup goes, and the cgroup with it.
    world.write_config("");
    world.wait_status("both removed", |s| s.runners.is_empty());
    wait_until("ct-keep's daemon is killed at removal", || !alive(kept));
    assert!(!alive(pids[0]) && !alive(pids[1]));
    assert!(
        !Path::new(&cgroup).exists(),
        "the cgroup is removed: {cgroup}"
    );
}

/// `GET /metrics` as `series -> value`.
fn metrics(port: u16) -> std::collections::BTreeMap<String, String> {
    let text = reqwest::blocking::Client::new()
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .timeout(Duration::from_secs(10))
        .send()
        .and_then(reqwest::blocking::Response::text)
        .unwrap_or_default();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn a_memory_limit_turns_a_hungry_job_into_an_oom_kill_while_others_carry_on() {
    let name = "a_memory_limit_turns_a_hungry_job_into_an_oom_kill_while_others_carry_on";
    if !cgroups_or_skip(name) {
        return;
    }
    let mut world = world();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let runners = format!(
        "{}{}",
        own_user(
            "ct-oom",
            "    resources: { memory: 64MiB, cpu: 0.5, pids: 512 }\n"
        ),
        own_user("ct-calm", "")
    );
    let text = world.config_text(&runners).replace(
        "github:\n",
        &format!("api:\n  listen: \"127.0.0.1:{port}\"\ngithub:\n"),
    );
    std::fs::write(world.config(), text).expect("write config");
    world.start();
    let pids = world.wait_idle(&["ct-oom", "ct-calm"]);
    let status = wait_runner(&world, "ct-oom measured", "ct-oom", |r| r.usage.is_some());
    assert!(status.limits_not_applied.is_empty(), "{status:?}");
    if let Some(cpu) = v1_dir(pids[0], "cpu") {
        let quota = std::fs::read_to_string(cpu.join("cpu.cfs_quota_us")).expect("quota");
        assert_eq!(quota.trim(), "50000", "cpu: 0.5 is half of each 100 ms");
    }

    // A job asks for 400 MiB under a 64 MiB limit, and another runner's job runs meanwhile.
    let hungry = world.gh.queue_job_with_steps(
        REPO,
        &["ct-oom"],
        JobSpec::default(),
        vec![sh(
            "hungry",
            "perl -e '$x = \"x\" x (400 * 1024 * 1024); print \"survived\\n\"'",
        )],
    );
    let (conclusion, log) = run_job(&world, "ct-calm", vec![sh("calm", "echo calm=yes")]);
    assert_eq!(conclusion, "success", "{log}");
    assert_eq!(said(&log, "calm", "calm").as_deref(), Some("yes"));
    assert!(
        world.gh.wait_until(TIMEOUT, |v| v
            .job(hungry)
            .is_some_and(|j| j.status == JobStatus::Completed)),
        "the hungry job completes"
    );
    let log = diag_text(&world.runner_dir("ct-oom").join("_diag"), "Worker_");
    assert!(!log.contains("survived"), "the limit held:\n{log}");
    assert!(log.contains("step run hungry: error"), "{log}");
    let status = wait_runner(&world, "ct-oom reports an OOM kill", "ct-oom", |r| {
        r.usage.is_some_and(|u| u.oom_kills >= Some(1))
    });
    assert_eq!(
        status.pid,
        Some(pids[0]),
        "the listener survives its job's OOM kill"
    );
    let peak = status.usage.and_then(|u| u.memory_peak_bytes).unwrap_or(0);
    assert!(peak <= 65 << 20, "peak {peak} within the limit");
    wait_until("the OOM kill in /metrics", || {
        metrics(port)
            .get("corral_runner_oom_kills_total{runner=\"ct-oom\"}")
            .is_some_and(|v| v.parse::<u64>().is_ok_and(|n| n >= 1))
    });
    let m = metrics(port);
    assert_eq!(
        m.get("corral_runner_oom_kills_total{runner=\"ct-calm\"}")
            .map(String::as_str),
        Some("0"),
        "{m:?}"
    );
    assert!(m.contains_key("corral_runner_cpu_seconds_total{runner=\"ct-oom\"}"));
    // The other runner carried on, and both are still there to take jobs.
    assert_eq!(world.wait_idle(&["ct-oom", "ct-calm"]), pids);
}

#[test]
fn a_pids_limit_stops_a_fork_bomb() {
    let name = "a_pids_limit_stops_a_fork_bomb";
    if !cgroups_or_skip(name) {
        return;
    }
    let mut world = world();
    world.write_config(&own_user("ct-bomb", "    resources: { pids: 48 }\n"));
    world.start();
    let pid = world.wait_idle(&["ct-bomb"])[0];
    if let Some(dir) = v1_dir(pid, "pids") {
        let max = std::fs::read_to_string(dir.join("pids.max")).expect("pids.max");
        assert_eq!(max.trim(), "48");
    } else {
        let dir = Path::new("/sys/fs/cgroup").join(cgroup_of(pid).trim_start_matches('/'));
        let max = std::fs::read_to_string(dir.join("pids.max")).expect("pids.max");
        assert_eq!(max.trim(), "48");
    }
    // Without the limit this would start 300 processes; with it, the fork fails.
    let (_, log) = run_job(
        &world,
        "ct-bomb",
        vec![sh(
            "bomb",
            "n=0; while [ $n -lt 300 ]; do sleep 120 </dev/null >/dev/null 2>&1 & n=$((n+1)); done; echo started=$n",
        )],
    );
    assert_ne!(
        said(&log, "bomb", "started").as_deref(),
        Some("300"),
        "{log}"
    );
    assert!(
        log.contains("step run bomb: error") || log.contains("Cannot fork"),
        "the fork bomb failed:\n{log}"
    );
    // What it started goes after the job; the listener stays.
    let status = wait_runner(&world, "ct-bomb swept", "ct-bomb", |r| {
        r.leftovers_killed >= 10 && r.usage.is_some_and(|u| u.processes <= 2)
    });
    assert_eq!(status.pid, Some(pid));
    assert_eq!(world.wait_idle(&["ct-bomb"]), vec![pid]);
}

#[test]
fn without_cgroups_clean_up_is_degraded_says_why_and_still_finds_the_runners_user() {
    if !is_root() {
        println!("SKIPPED without_cgroups_clean_up_is_degraded: needs root");
        return;
    }
    let mut world = world();
    let not_cgroups = world.dir.path().join("not-cgroups");
    std::fs::create_dir(&not_cgroups).expect("mkdir");
    let root = not_cgroups.display().to_string();
    world.write_config(&own_user("ct-deg", "    resources: { memory: 1GiB }\n"));
    // `check` and `plan` say what this host cannot do, before anything runs.
    for verb in ["check", "plan"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_corral"))
            .args([verb, "-c"])
            .arg(world.config())
            .env(corral::cgroup::ROOT_ENV, &root)
            .output()
            .expect("run corral");
        let (stdout, stderr) = cmd::texts(&out);
        assert_eq!(out.status.code(), Some(0), "{verb}: {stderr}");
        assert!(
            stdout.contains(&format!(
                "cleanup: degraded (`{root}` (CORRAL_CGROUP_ROOT) is not a cgroup2 directory)"
            )),
            "{verb}: {stdout}"
        );
        assert!(
            stdout.contains("resources not applied on this host (no cgroups): ct-deg"),
            "{verb}: {stdout}"
        );
    }
    world.start_with_env(&[(corral::cgroup::ROOT_ENV, root.as_str())]);
    let pid = world.wait_idle(&["ct-deg"])[0];
    let status = wait_runner(&world, "ct-deg described", "ct-deg", |r| r.cgroup.is_some());
    let cgroup = status.cgroup.clone().unwrap_or_default();
    assert!(
        cgroup.starts_with("degraded (") && cgroup.contains("is not a cgroup2 directory"),
        "{cgroup}"
    );
    assert_eq!(status.cleanup.as_deref(), Some(cgroup.as_str()));
    assert_eq!(status.usage, None);
    assert!(
        status
            .limits_not_applied
            .iter()
            .any(|l| l.starts_with("memory: no cgroup for the runner: ")),
        "{status:?}"
    );
    // A daemon in a session of its own is still found: it runs as the runner's own user.
    let (conclusion, log) = run_job(&world, "ct-deg", vec![daemon_step()]);
    assert_eq!(conclusion, "success", "{log}");
    let daemon = pid_said(&log, "daemon");
    wait_until("the daemon of the job is killed", || !alive(daemon));
    assert!(alive(pid), "the listener is not");
    assert!(std::fs::read_dir(&not_cgroups)
        .expect("ls")
        .next()
        .is_none());
}

#[test]
fn an_adopted_listener_keeps_its_cgroup_after_kill_9_of_corral() {
    let name = "an_adopted_listener_keeps_its_cgroup_after_kill_9_of_corral";
    if !cgroups_or_skip(name) {
        return;
    }
    let mut world = world();
    world.write_config(&own_user("ct-adopt", "    resources: { pids: 256 }\n"));
    world.start();
    let pid = world.wait_idle(&["ct-adopt"])[0];
    let before = cgroup_of(pid);
    assert!(before.ends_with("/ct-adopt"), "{before}");
    world.signal(Signal::SIGKILL);
    let _ = world.corral().exit_code();
    world.start();
    wait_until("corral adopted the listener", || {
        world
            .corral
            .as_ref()
            .is_some_and(|c| c.output().contains("adopted a running listener"))
    });
    let status = wait_runner(&world, "ct-adopt measured again", "ct-adopt", |r| {
        r.usage.is_some() && r.state == corral::status::State::Idle
    });
    assert_eq!(status.pid, Some(pid), "the same listener");
    assert_eq!(cgroup_of(pid), before, "in the cgroup it was started in");
    assert!(
        status
            .cgroup
            .as_deref()
            .is_some_and(|c| c.ends_with(&before)),
        "{status:?}"
    );
    // The adopted listener's jobs are cleaned up after as before.
    let (conclusion, log) = run_job(&world, "ct-adopt", vec![daemon_step()]);
    assert_eq!(conclusion, "success", "{log}");
    let daemon = pid_said(&log, "daemon");
    wait_until("the daemon of the adopted listener's job is killed", || {
        !alive(daemon)
    });
    assert!(alive(pid));
}

#[test]
fn clean_workspace_empties_work_but_the_tool_cache_before_the_next_job() {
    let name = "clean_workspace_empties_work_but_the_tool_cache_before_the_next_job";
    if !cgroups_or_skip(name) {
        return;
    }
    let mut world = world();
    world.write_config(&own_user("ct-clean", "    clean: workspace\n"));
    world.start();
    let pid = world.wait_idle(&["ct-clean"])[0];
    let work = world.runner_dir("ct-clean").join("_work");
    let outside = world.dir.path().join("outside");
    std::fs::create_dir(&outside).expect("mkdir");
    std::fs::write(outside.join("precious"), "keep").expect("write");
    // The job leaves files in its workspace, a tool in the cache, and a link out of `_work`.
    let (conclusion, log) = run_job(
        &world,
        "ct-clean",
        vec![sh(
            "mess",
            &format!(
                "echo junk > leftover.txt && mkdir -p ../../_tool/node && echo 20 > ../../_tool/node/v && ln -s {} ../../out-link && echo done=1",
                outside.display()
            ),
        )],
    );
    assert_eq!(conclusion, "success", "{log}");
    assert_eq!(said(&log, "mess", "done").as_deref(), Some("1"), "{log}");
    wait_until("the workspace is emptied", || {
        !work.join("repo").exists() && !work.join("out-link").exists()
    });
    assert_eq!(
        std::fs::read_to_string(work.join("_tool/node/v")).expect("tool cache kept"),
        "20\n"
    );
    assert!(
        outside.join("precious").exists(),
        "the link was not followed"
    );
    // The stash is removed once the cgroup is thawed.
    wait_until("no stash is left", || {
        !std::fs::read_dir(world.state().join("runners"))
            .expect("ls")
            .filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().starts_with(".tmp-clean"))
    });
    // The next job finds a fresh workspace, on the same listener.
    let (conclusion, log) = run_job(
        &world,
        "ct-clean",
        vec![sh("fresh", "echo files=$(ls -A | wc -l)")],
    );
    assert_eq!(conclusion, "success", "{log}");
    assert_eq!(said(&log, "fresh", "files").as_deref(), Some("0"), "{log}");
    assert_eq!(world.wait_idle(&["ct-clean"]), vec![pid]);
}
