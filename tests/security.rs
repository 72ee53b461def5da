//! SECURITY.md, proven through the real binary: secrets reach no job, log, status, metric or
//! argv; credential files are 0600; hostile jobs cannot change the base, reach outside their
//! root through planted links, or (with `isolation: user-per-runner`) read another runner's
//! credentials or workspace.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::check::{refused, with_head};
use crate::kit::cmd;
use crate::kit::daemon::{cmdlines_under, runner, World, PAT, REPO};
use crate::kit::github::{JobSpec, JobStatus};
use crate::kit::proc::{wait_until, TIMEOUT};
use crate::provision::{diag_text, tree_hash};

const IDENTITY: [&str; 3] = [".runner", ".credentials", ".credentials_rsaparams"];

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Queues a job for the runner labelled `label` that runs `steps`; returns its conclusion
/// and the runner's Worker log.
pub(crate) fn run_steps(
    world: &World,
    runner: &str,
    label: &str,
    steps: Vec<Value>,
) -> (String, String) {
    let job = world
        .gh
        .queue_job_with_steps(REPO, &[label], JobSpec::default(), steps);
    assert!(
        world.gh.wait_until(TIMEOUT, |v| v
            .job(job)
            .is_some_and(|j| j.status == JobStatus::Completed)),
        "job {job} did not complete on {runner}; corral's log:\n{}",
        world
            .corral
            .as_ref()
            .map(super::kit::proc::Proc::output)
            .unwrap_or_default()
    );
    let conclusion = world
        .gh
        .job(job)
        .and_then(|j| j.conclusion)
        .unwrap_or_default();
    let log = diag_text(&world.runner_dir(runner).join("_diag"), "Worker_");
    (conclusion, log)
}

/// The `step …` line of `what` in a Worker log.
fn step_line<'a>(log: &'a str, what: &str) -> &'a str {
    let prefix = format!("step {what}: ");
    log.lines()
        .find_map(|l| l.split_once(&prefix).map(|(_, rest)| rest))
        .unwrap_or_else(|| panic!("no `{prefix}` line in the Worker log:\n{log}"))
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .mode()
        & 0o7777
}

fn uid_of_pid(pid: i32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|u| u.parse().ok())
        .expect("Uid line")
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[test]
fn secrets_reach_no_job_log_status_metric_or_argv() {
    let mut world = World::new();
    let port = free_port();
    let text = world
        .config_text(
            "  - name: sec-s\n    repo: owner/repo\n    labels: [sec-s]\n\
             \x20 - name: sec-jit\n    repo: owner/repo\n    ephemeral: true\n    labels: [sec-jit]\n",
        )
        .replace(
            "github:\n",
            &format!("api:\n  listen: \"127.0.0.1:{port}\"\ngithub:\n"),
        );
    std::fs::write(world.config(), text).expect("write config");
    world.start();
    let pids = world.wait_idle(&["sec-s", "sec-jit"]);
    let (conclusion, job_log) = run_steps(&world, "sec-s", "sec-s", vec![json!({"env": true})]);
    assert_eq!(conclusion, "success", "{job_log}");
    let job_env: Vec<&str> = job_log
        .lines()
        .filter_map(|l| l.split_once("] env ").map(|(_, kv)| kv))
        .collect();
    assert!(
        job_env.iter().any(|kv| kv.starts_with("PATH=")),
        "the job's environment was dumped: {job_log}"
    );
    for kv in &job_env {
        assert!(
            !kv.starts_with("ACTIONS_RUNNER_INPUT_") && !kv.starts_with("GITHUB_TOKEN="),
            "the job sees `{kv}`"
        );
    }
    let metrics = reqwest::blocking::Client::new()
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .timeout(Duration::from_secs(10))
        .send()
        .and_then(reqwest::blocking::Response::text)
        .expect("GET /metrics");
    assert!(metrics.contains("corral_"), "{metrics}");
    let status_json = cmd::run(world.dir.path(), &["status", "--json"]);
    let status_json = String::from_utf8_lossy(&status_json.stdout).into_owned();
    assert!(status_json.contains("sec-jit"), "{status_json}");
    let listener_logs: String = ["sec-s", "sec-jit"]
        .iter()
        .map(|n| {
            std::fs::read_to_string(world.state().join(format!("records/{n}/listener.log")))
                .unwrap_or_default()
        })
        .collect();
    let listener_env: String = pids
        .iter()
        .map(|pid| {
            let raw = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
            String::from_utf8_lossy(&raw).replace('\0', "\n")
        })
        .collect();
    let argv = cmdlines_under(world.dir.path()).join("\n");
    let stderr = world.corral().output();
    let tokens = world.gh.issued_tokens();
    assert!(tokens.len() >= 2, "the fake issued tokens: {tokens:?}");
    for secret in std::iter::once(PAT.to_string()).chain(tokens) {
        for (place, text) in [
            ("the job's environment", &job_env.join("\n")),
            ("corral's stderr", &stderr),
            ("corral status --json", &status_json),
            ("/metrics", &metrics),
            ("a listener log", &listener_logs),
            ("argv of a child", &argv),
        ] {
            assert!(!text.contains(&secret), "a secret leaked into {place}");
        }
        // corral hands registration tokens to config.sh only, never to a listener.
        assert!(
            !listener_env.contains(&secret),
            "a secret in a listener's environment"
        );
    }
    assert!(!argv.contains("jitconfig"), "{argv}");
    // No listener is handed a secret at all: config.sh ran in a private install as root, and
    // corral wrote the JIT runner's files itself (the fake logs every secret input it gets).
    for name in ["sec-s", "sec-jit"] {
        let log = diag_text(&world.runner_dir(name).join("_diag"), "Runner_");
        assert!(
            log.contains("Listening") || log.contains("Session created"),
            "{log}"
        );
        assert!(
            !log.contains("Secret input"),
            "{name}'s listener got a secret: {log}"
        );
    }
    assert!(!world.state().join("registrations/sec-s").exists());
    // corral writes every identity file 0600.
    for name in ["sec-s", "sec-jit"] {
        let root = world.runner_dir(name);
        wait_until(&format!("{name}'s identity files 0600"), || {
            IDENTITY
                .iter()
                .all(|f| root.join(f).exists() && mode(&root.join(f)) == 0o600)
        });
        for dir in [root.clone(), root.join("_work"), root.join("_diag")] {
            assert_eq!(mode(&dir), 0o700, "{}", dir.display());
        }
    }
}

#[test]
fn links_a_job_plants_in_work_reach_nothing_outside_on_removal() {
    let mut world = World::new();
    let outside = world.dir.path().join("outside");
    std::fs::create_dir_all(outside.join("keep")).expect("mkdir");
    std::fs::write(outside.join("keep/precious"), "data").expect("write");
    world.write_config("  - name: sec-link\n    repo: owner/repo\n    labels: [sec-link]\n");
    world.start();
    world.wait_idle(&["sec-link"]);
    let work = world.runner_dir("sec-link").join("_work");
    let steps = vec![
        json!({"symlink": outside, "link": work.join("dir-link")}),
        json!({"symlink": outside.join("keep/precious"), "link": work.join("file-link")}),
        json!({"symlink": "/", "link": work.join("root-link")}),
    ];
    let (conclusion, log) = run_steps(&world, "sec-link", "sec-link", steps);
    assert_eq!(conclusion, "success", "the links were planted: {log}");
    assert!(work.join("dir-link").is_symlink());
    // The runner leaves the file: drained, deregistered, its directory deleted.
    world.write_config("  - name: sec-other\n    repo: owner/repo\n");
    world.wait_status("sec-link removed", |s| {
        runner(s, "sec-link").is_none() && runner(s, "sec-other").is_some()
    });
    wait_until("sec-link's dir deleted", || {
        !world.runner_dir("sec-link").exists()
    });
    assert_eq!(
        std::fs::read_to_string(outside.join("keep/precious")).expect("still there"),
        "data"
    );
    assert!(Path::new("/etc/passwd").exists(), "`/` was not followed");
}

/// The root is root's, group `uid`'s group, 1770 (the runner adds its own files, never
/// renames root's); `_work`, `_diag` are `uid`'s and 0700, its identity files 0600; base
/// files root's and read-only.
fn assert_private_to(root: &Path, uid: u32) {
    let gid = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .expect("getpwuid")
        .expect("user")
        .gid
        .as_raw();
    let meta = std::fs::metadata(root).expect("stat");
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777),
        (0, gid, 0o1770),
        "{}",
        root.display()
    );
    for dir in [root.join("_work"), root.join("_diag")] {
        let meta = std::fs::metadata(&dir).expect("stat");
        let got = (meta.uid(), meta.mode() & 0o777);
        assert_eq!(got, (uid, 0o700), "{}", dir.display());
    }
    for file in IDENTITY {
        let meta = std::fs::metadata(root.join(file)).expect("stat");
        let got = (meta.uid(), meta.mode() & 0o777);
        assert_eq!(got, (uid, 0o600), "{}/{file}", root.display());
    }
    let listener = std::fs::metadata(root.join("bin/Runner.Listener")).expect("stat");
    let got = (listener.uid(), listener.mode() & 0o222);
    assert_eq!(got, (0, 0), "base stays root's and read-only");
}

#[test]
fn user_per_runner_keeps_runners_apart_and_the_base_read_only() {
    if !is_root() {
        return; // creating users and switching to them needs root (CI runs tests as root)
    }
    let mut world = World::new();
    // The runners' users must reach the base and their roots through the temp dir.
    std::fs::set_permissions(world.dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    let entry = |name: &str| {
        format!("  - name: {name}\n    repo: owner/repo\n    labels: [{name}]\n    allow_root: false\n    isolation: user-per-runner\n")
    };
    world.write_config(&format!("{}{}", entry("sec-a"), entry("sec-b")));
    world.start();
    let pids = world.wait_idle(&["sec-a", "sec-b"]);
    // As corral protected it: root-owned and read-only.
    let base_before = tree_hash(&world.dir.path().join("base"));
    let uid_of = |user: &str| {
        nix::unistd::User::from_name(user)
            .expect("getpwnam")
            .unwrap_or_else(|| panic!("corral created user {user}"))
            .uid
            .as_raw()
    };
    let (uid_a, uid_b) = (uid_of("corral-sec-a"), uid_of("corral-sec-b"));
    assert!(uid_a != 0 && uid_b != 0 && uid_a != uid_b);
    assert_eq!(uid_of_pid(pids[0]), uid_a, "sec-a runs as its own user");
    assert_eq!(uid_of_pid(pids[1]), uid_b, "sec-b runs as its own user");
    assert_private_to(&world.runner_dir("sec-a"), uid_a);
    assert_private_to(&world.runner_dir("sec-b"), uid_b);
    let (a, b) = (world.runner_dir("sec-a"), world.runner_dir("sec-b"));
    std::fs::write(b.join("_work/secret.txt"), "b's workspace").expect("write");
    std::fs::set_permissions(
        b.join("_work/secret.txt"),
        std::fs::Permissions::from_mode(0o644),
    )
    .expect("chmod");
    let own = a.join("_work/mine.txt");
    // corral's environment holds the PAT; B's listener's holds what B was started with.
    let corral_pid = world.corral().pid().as_raw();
    let steps = vec![
        json!({"write": own}),
        json!({"read": a.join(".credentials")}),
        json!({"read": b.join(".credentials")}),
        json!({"read": b.join("_work/secret.txt")}),
        json!({"read": b.join("_work")}),
        json!({"read": world.state().join("records/sec-b/listener.log")}),
        json!({"read": format!("/proc/{}/environ", pids[1])}),
        json!({"read": format!("/proc/{corral_pid}/environ")}),
        json!({"write": a.join("bin/Runner.Listener")}),
        json!({"write": a.join("bin/planted")}),
        json!({"write": a.join("config.sh")}),
    ];
    let (conclusion, log) = run_steps(&world, "sec-a", "sec-a", steps);
    assert_eq!(
        conclusion, "failure",
        "the hostile steps fail the job: {log}"
    );
    // The probe works: the job reads and writes what is its own.
    assert_eq!(step_line(&log, &format!("write {}", own.display())), "ok");
    let own_creds = a.join(".credentials");
    assert_eq!(
        step_line(&log, &format!("read {}", own_creds.display())),
        "ok"
    );
    for what in [
        format!("read {}", b.join(".credentials").display()),
        format!("read {}", b.join("_work/secret.txt").display()),
        format!("read {}", b.join("_work").display()),
        format!(
            "read {}",
            world.state().join("records/sec-b/listener.log").display()
        ),
        format!("read /proc/{}/environ", pids[1]),
        format!("read /proc/{corral_pid}/environ"),
        format!("write {}", a.join("bin/Runner.Listener").display()),
        format!("write {}", a.join("bin/planted").display()),
        format!("write {}", a.join("config.sh").display()),
    ] {
        let line = step_line(&log, &what);
        assert!(line.contains("Permission denied"), "{what}: {line}");
    }
    assert_eq!(
        tree_hash(&world.dir.path().join("base")),
        base_before,
        "the base changed"
    );
}

#[test]
fn changing_isolation_hands_the_runner_dir_to_its_new_user() {
    if !is_root() {
        return;
    }
    let mut world = World::new();
    std::fs::set_permissions(world.dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    world.write_config("  - name: sec-move\n    repo: owner/repo\n");
    world.start();
    let [before] = world.wait_idle(&["sec-move"])[..] else {
        panic!("one pid")
    };
    assert_eq!(uid_of_pid(before), 0, "allow_root from the defaults");
    let root = world.runner_dir("sec-move");
    std::fs::write(root.join("_work/left.txt"), "from the root job").expect("write");
    world.write_config(
        "  - name: sec-move\n    repo: owner/repo\n    allow_root: false\n    isolation: user-per-runner\n",
    );
    let status = world.wait_status("restarted as its own user", |s| {
        runner(s, "sec-move").is_some_and(|r| r.pid.is_some_and(|p| p != before))
    });
    let pid = runner(&status, "sec-move")
        .and_then(|r| r.pid)
        .expect("pid");
    let uid = nix::unistd::User::from_name("corral-sec-move")
        .expect("getpwnam")
        .expect("created")
        .uid
        .as_raw();
    assert_eq!(uid_of_pid(pid), uid);
    assert_private_to(&root, uid);
    for path in [root.join("_work/left.txt"), root.join(".credentials")] {
        assert_eq!(
            std::fs::metadata(&path).expect("stat").uid(),
            uid,
            "{}",
            path.display()
        );
    }
    assert_eq!(
        std::fs::metadata(root.join("bin/Runner.Listener"))
            .expect("stat")
            .uid(),
        0,
        "base files are never handed over"
    );
}

#[test]
fn isolation_contradictions_are_refused() {
    refused(
        &with_head("runners:\n  - name: a\n    repo: o/r\n    allow_root: true\n    isolation: ⟨user-per-runner\n"),
        "runners[0].isolation: isolation: user-per-runner runs each runner as its own unprivileged user; it cannot be combined with allow_root: true",
    );
    refused(
        &with_head("defaults:\n  isolation: ⟨user-per-runner\n  user: ci\nrunners:\n  - name: a\n    repo: o/r\n"),
        "defaults.isolation: isolation: user-per-runner gives each runner its own user",
    );
    refused(
        &with_head("runners:\n  - name: a\n    repo: o/r\n    isolation: ⟨per-repo\n"),
        "runners[0].isolation: unknown variant `per-repo`, expected `shared` or `user-per-runner`",
    );
}

#[test]
fn a_secret_file_others_can_read_is_warned_about() {
    let mut world = World::new();
    let pat_file = world.dir.path().join("pat");
    std::fs::write(&pat_file, format!("{PAT}\n")).expect("write");
    std::fs::set_permissions(&pat_file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let text = world
        .config_text("  - name: sec-file\n    repo: owner/repo\n")
        .replace("token_env: GITHUB_TOKEN", "token_file: ./pat");
    std::fs::write(world.config(), text).expect("write config");
    world.start_with_env(&[("GITHUB_TOKEN", "")]);
    world.wait_idle(&["sec-file"]);
    world
        .corral()
        .wait_for("secret file is readable by other users");
    let stderr = world.corral().output();
    assert_eq!(
        stderr
            .matches("secret file is readable by other users")
            .count(),
        1,
        "warned once: {stderr}"
    );
    assert!(
        stderr.contains("mode=\"644\"") || stderr.contains("mode=644"),
        "{stderr}"
    );
    assert!(!stderr.contains(PAT));
}

#[test]
fn handing_a_root_over_never_gives_away_a_linked_or_outside_file() {
    if !is_root() {
        return; // chown needs root
    }
    let tmp = tempfile::tempdir().expect("temp dir");
    let (old, new) = (4242_u32, 4343_u32);
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&outside).expect("mkdir");
    for f in ["hardlinked", "linked", "passwd"] {
        std::fs::write(outside.join(f), f).expect("write");
        std::fs::set_permissions(outside.join(f), std::fs::Permissions::from_mode(0o644))
            .expect("chmod");
    }
    let root = tmp.path().join("runner");
    std::fs::create_dir_all(root.join("_work/repo")).expect("mkdir");
    std::fs::create_dir_all(root.join("bin")).expect("mkdir");
    std::fs::write(root.join("_work/repo/file"), "job output").expect("write");
    std::fs::write(root.join(".credentials"), "{}").expect("write");
    // What a job (or a base) could leave: a hard link to a root file, links out.
    std::fs::hard_link(outside.join("hardlinked"), root.join("_work/hard")).expect("link");
    std::fs::hard_link(outside.join("hardlinked"), root.join("bin/Runner.Listener")).expect("link");
    std::os::unix::fs::symlink(outside.join("linked"), root.join("_work/soft")).expect("link");
    std::os::unix::fs::symlink(outside.join("passwd"), root.join(".runner")).expect("link");
    for path in [
        root.clone(),
        root.join("_work"),
        root.join("_work/repo"),
        root.join("_work/repo/file"),
        root.join(".credentials"),
    ] {
        std::os::unix::fs::lchown(&path, Some(old), Some(old)).expect("chown");
    }
    let owner = Some((
        nix::unistd::Uid::from_raw(new),
        nix::unistd::Gid::from_raw(new),
    ));
    corral::provision::secure_root(&root, owner).expect("secure");
    let meta = |p: &Path| std::fs::symlink_metadata(p).expect("lstat");
    for path in [
        root.join("_work/repo/file"),
        root.join(".credentials"),
        root.join("_work/soft"),
    ] {
        assert_eq!(meta(&path).uid(), new, "{} handed over", path.display());
    }
    // The root itself stays root's, the runner's group may add to it (provision/mod.rs).
    assert_eq!((meta(&root).uid(), meta(&root).gid()), (0, new));
    assert_eq!(mode(&root), 0o1770);
    assert_eq!(mode(&root.join("_work")), 0o700);
    assert_eq!(mode(&root.join(".credentials")), 0o600);
    for f in ["hardlinked", "linked", "passwd"] {
        let m = meta(&outside.join(f));
        assert_eq!((m.uid(), m.mode() & 0o777), (0, 0o644), "{f} untouched");
    }
}

#[test]
fn a_github_app_key_and_its_tokens_reach_no_job() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let public =
        std::fs::read_to_string(fixtures.join("test-only-github-app-key.pub.pem")).expect("key");
    let pem = std::fs::read_to_string(fixtures.join("test-only-github-app-key.pem")).expect("key");
    let mut world = World::new();
    std::fs::set_permissions(world.dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    let key = world.dir.path().join("app.pem");
    std::fs::write(&key, &pem).expect("write key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    world.gh.add_app(4242, &public, &[(77, &[REPO])]);
    // As root the job runs as its own user and tries to read the key; otherwise as corral's.
    let isolation = if is_root() {
        "    allow_root: false\n    isolation: user-per-runner\n"
    } else {
        ""
    };
    let text = world
        .config_text(&format!(
            "  - name: sec-app\n    repo: owner/repo\n    labels: [sec-app]\n{isolation}"
        ))
        .replace(
            "  token_env: GITHUB_TOKEN\n",
            "  app:\n    id: 4242\n    private_key_file: ./app.pem\n",
        );
    std::fs::write(world.config(), text).expect("write config");
    world.start_with_env(&[("GITHUB_TOKEN", "")]);
    world.wait_idle(&["sec-app"]);
    let mut steps = vec![json!({"env": true})];
    if is_root() {
        steps.push(json!({"read": key}));
    }
    let (_, log) = run_steps(&world, "sec-app", "sec-app", steps);
    if is_root() {
        let line = step_line(&log, &format!("read {}", key.display()));
        assert!(line.contains("Permission denied"), "{line}");
    }
    let key_line = pem.lines().nth(1).expect("a base64 line of the key");
    let status_json = cmd::run(world.dir.path(), &["status", "--json"]);
    let status_json = String::from_utf8_lossy(&status_json.stdout).into_owned();
    let argv = cmdlines_under(world.dir.path()).join("\n");
    let stderr = world.corral().output();
    let minted = world.gh.minted_installation_tokens();
    assert!(!minted.is_empty(), "an installation token was minted");
    for secret in minted.iter().map(String::as_str).chain([key_line]) {
        for (place, text) in [
            ("the job's log and environment", &log),
            ("corral status --json", &status_json),
            ("argv of a child", &argv),
            ("corral's stderr", &stderr),
        ] {
            assert!(!text.contains(secret), "a secret leaked into {place}");
        }
    }
    assert!(
        !stderr.contains("secret file is readable by other users"),
        "a 0600 key is not warned about"
    );
}
