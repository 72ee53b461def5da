//! `corral run` at its edges: failed registrations, users, `corral status`, SIGHUP.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;

use corral::status::{State, Status};
use nix::sys::signal::Signal;

use crate::kit::cmd;
use crate::kit::daemon::{runner, World};
use crate::kit::proc::wait_until;

#[test]
fn failed_registration_shows_the_runners_text_and_is_retried() {
    let mut world = World::new();
    world.write_config(
        "  - name: good\n    repo: owner/repo\n  - name: bad\n    repo: owner/repo\n    registration_token_env: BAD_TOKEN\n",
    );
    world.start_with_env(&[("BAD_TOKEN", "NOTATOKEN")]);
    world.wait_idle(&["good"]);
    let status = world.wait_status("bad failed to register", |s| {
        runner(s, "bad").is_some_and(|r| r.last_error.is_some())
    });
    let bad = runner(&status, "bad").expect("bad");
    let error = bad.last_error.as_deref().unwrap_or_default();
    assert!(
        error.contains("Http response code: NotFound"),
        "the runner's own text: {error}"
    );
    assert!(!error.contains("NOTATOKEN"), "the token is never shown");
    assert!(
        matches!(
            bad.state,
            State::Backoff | State::Error | State::Registering
        ),
        "{bad:?}"
    );
    // It is tried again, with backoff.
    let exchanges = || {
        world
            .gh
            .requests()
            .iter()
            .filter(|r| r.path.ends_with("/actions/runner-registration"))
            .count()
    };
    let first = exchanges();
    wait_until("a second registration attempt", || exchanges() > first);
}

#[test]
fn missing_user_is_a_clear_error_for_that_runner_only() {
    let mut world = World::new();
    world.write_config(
        "  - name: fine\n    repo: owner/repo\n  - name: nouser\n    repo: owner/repo\n    allow_root: false\n    user: corral-no-such-user\n",
    );
    world.start();
    world.wait_idle(&["fine"]);
    let status = world.wait_status("nouser reports its user", |s| {
        runner(s, "nouser").is_some_and(|r| r.last_error.is_some())
    });
    let error = runner(&status, "nouser")
        .and_then(|r| r.last_error.clone())
        .unwrap_or_default();
    assert!(
        error.contains("user `corral-no-such-user` does not exist on this host"),
        "{error}"
    );
}

/// Creates a system user for the test if it does not exist (tests run as root).
fn ensure_user(name: &str) -> u32 {
    let exists = Command::new("id")
        .arg("-u")
        .arg(name)
        .output()
        .expect("run id");
    if !exists.status.success() {
        let made = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                name,
            ])
            .status()
            .expect("run useradd");
        // Another test process may have created it at the same time.
        assert!(
            made.success()
                || Command::new("id")
                    .arg(name)
                    .status()
                    .is_ok_and(|s| s.success())
        );
    }
    let out = Command::new("id")
        .arg("-u")
        .arg(name)
        .output()
        .expect("run id");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("numeric uid")
}

#[test]
fn runner_runs_as_its_unprivileged_user() {
    let uid = ensure_user("corral-test-runner");
    let mut world = World::new();
    // The temporary directory is private to root; the runner user must reach its root.
    std::fs::set_permissions(world.dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    world.write_config("  - name: plain\n    repo: owner/repo\n    allow_root: false\n    user: corral-test-runner\n");
    world.start();
    let [pid] = world.wait_idle(&["plain"])[..] else {
        panic!("one pid")
    };
    let proc_status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let real_uid = proc_status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .expect("Uid line");
    assert_eq!(
        real_uid,
        uid.to_string(),
        "the listener runs as the runner's user"
    );
    let root = world.runner_dir("plain");
    // The root is root's (the runner may add its own files, never rename root's).
    assert_eq!(std::fs::metadata(&root).expect("stat").uid(), 0);
    for own in [root.join("_work"), root.join("_diag"), root.join(".runner")] {
        assert_eq!(
            std::fs::metadata(&own).expect("stat").uid(),
            uid,
            "{} owned by the runner",
            own.display()
        );
    }
    let listener = std::fs::metadata(root.join("bin/Runner.Listener")).expect("stat");
    assert_eq!(listener.uid(), 0, "shared files stay root's");
    assert_eq!(listener.mode() & 0o222, 0, "and read-only");
}

#[test]
fn status_command_prints_a_table_and_json() {
    let mut world = World::new();
    world.write_config("  - name: web\n    repo: owner/repo\n    count: 2\n");
    world.start();
    let pids = world.wait_idle(&["web-1", "web-2"]);
    let out = cmd::run(world.dir.path(), &["status"]);
    let (table, stderr) = cmd::texts(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        table.starts_with("GitHub API: "),
        "the API budget comes first: {table}"
    );
    let lines: Vec<&str> = table
        .lines()
        .skip_while(|l| !l.starts_with("NAME"))
        .collect();
    assert!(lines[0].starts_with("NAME   STATE  PID"), "{table}");
    assert!(
        lines[1].starts_with("web-1  idle   ") && lines[1].contains(&pids[0].to_string()),
        "{table}"
    );
    let out = cmd::run(world.dir.path(), &["status", "--json"]);
    let status: Status = serde_json::from_slice(&out.stdout).expect("status --json is JSON");
    let names: Vec<&str> = status.runners.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["web-1", "web-2"]);
    assert!(status
        .runners
        .iter()
        .all(|r| r.status == "running" && r.registration == "registered"));
}

#[test]
fn status_without_a_running_controller_says_so() {
    let world = World::new();
    world.write_config("  - name: web\n    repo: owner/repo\n");
    let out = cmd::run(world.dir.path(), &["status"]);
    let (_, stderr) = cmd::texts(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("no status yet") && stderr.contains("is `corral run` running?"),
        "{stderr}"
    );
}

#[test]
fn sighup_reloads_what_the_watch_cannot_see() {
    let mut world = World::new();
    // A config reached through a symlink whose target changes in place: the watch on the
    // config's own directory sees nothing, and the resync is an hour away.
    let real = world.dir.path().join("real");
    std::fs::create_dir(&real).expect("mkdir");
    // Relative paths stay relative to the directory the config is named in, not to the
    // directory its symlink resolves to (as with a ConfigMap's `..data` link).
    let template = world
        .config_text("RUNNERS")
        .replace("resync_interval: 2s", "resync_interval: 1h");
    let text = |runners: &str| template.replace("RUNNERS", runners);
    std::fs::write(
        real.join("runners.yaml"),
        text("  - name: one\n    repo: owner/repo\n"),
    )
    .expect("write");
    std::os::unix::fs::symlink("real/runners.yaml", world.config()).expect("symlink");
    world.start();
    world.wait_idle(&["one"]);
    std::fs::write(
        real.join("runners.yaml"),
        text("  - name: one\n    repo: owner/repo\n  - name: two\n    repo: owner/repo\n"),
    )
    .expect("write");
    world.signal(Signal::SIGHUP);
    world.corral().wait_for("SIGHUP: reloading the config");
    // Every pass re-reads the file, so a pass for another reason (a listener's log line) may
    // see the change first; SIGHUP guarantees one at once, however quiet the host is.
    world.wait_idle(&["two"]);
}

#[test]
fn without_api_credentials_removal_is_local_and_says_so() {
    let mut world = World::new();
    let token = world.gh.registration_token(crate::kit::daemon::REPO);
    let repo_url = world.gh.runner_url(crate::kit::daemon::REPO);
    let config = |runners: &str| {
        format!(
            "base:\n  path: ./base\nstate_dir: ./state\nresync_interval: 2s\n\
             defaults:\n  allow_root: true\nrunners:\n{runners}"
        )
    };
    let seed =
        format!("  - name: seed\n    repo: {repo_url}\n    registration_token_env: SEED_TOKEN\n");
    std::fs::write(world.config(), config(&seed)).expect("write config");
    world.start_with_env(&[("SEED_TOKEN", &token)]);
    let status = world.wait_status("seed idle", |s| {
        runner(s, "seed").is_some_and(|r| r.state == State::Idle)
    });
    assert_eq!(
        runner(&status, "seed").map(|r| r.registration.as_str()),
        Some("local-only")
    );
    std::fs::write(
        world.config(),
        config("  []\n").replace("runners:\n  []", "runners: []"),
    )
    .expect("write config");
    world.wait_status("seed gone", |s| s.runners.is_empty());
    assert!(!world.runner_dir("seed").exists(), "deleted locally");
    assert!(
        world
            .corral()
            .output()
            .contains("no GitHub credential: the registration stays on GitHub"),
        "says so"
    );
    let left: Vec<String> = world
        .gh
        .runners(crate::kit::daemon::REPO)
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(left, ["seed"], "corral could not deregister it on GitHub");
}

#[test]
fn logs_command_prints_and_follows_a_listener_log() {
    let mut world = World::new();
    world.write_config("  - name: web\n    repo: owner/repo\n");
    world.start();
    world.wait_idle(&["web"]);
    let out = cmd::run(world.dir.path(), &["logs", "web"]);
    let (text, stderr) = cmd::texts(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(text.contains("Listening for Jobs"), "{text}");
    let mut follow = Command::new(cmd::binary());
    follow
        .args(["logs", "web", "--follow"])
        .current_dir(world.dir.path());
    let follow = crate::kit::proc::Proc::spawn(follow);
    follow.wait_for("Listening for Jobs");
    let job = world.gh.queue_job(
        crate::kit::daemon::REPO,
        &["self-hosted"],
        crate::kit::github::JobSpec {
            duration: std::time::Duration::from_secs(2),
            ..crate::kit::github::JobSpec::default()
        },
    );
    follow.wait_for("Running job: build");
    let status = world.wait_status("the job is tracked", |s| {
        runner(s, "web").is_some_and(|r| {
            r.last_job
                .as_ref()
                .is_some_and(|j| j.name == "build" && j.result == "Succeeded")
        })
    });
    let web = runner(&status, "web").expect("web");
    assert!(web.version.as_deref() == Some("2.336.0"), "{web:?}");
    assert!(
        web.last_job
            .as_ref()
            .and_then(|j| j.duration_seconds)
            .is_some(),
        "{web:?}"
    );
    assert!(world.gh.job(job).is_some_and(|j| j.conclusion.is_some()));
    let missing = cmd::run(world.dir.path(), &["logs", "nope"]);
    assert_eq!(missing.status.code(), Some(1));
    let log = world.corral().output();
    assert!(
        log.lines()
            .any(|l| l.contains("runner state changed runner=web from=") && l.contains("to=idle")),
        "state changes are logged:\n{log}"
    );
    assert!(log.contains("to=busy"), "{log}");
}
