//! The attacks of issue 17, each tried by a job that runs shell commands as its runner's own
//! user (`isolation: user-per-runner`, corral as root), through the real binary, and each
//! asserting that its outcome is gone: no set-id root file from a re-base, no registration or
//! removal token anywhere the job's user can read, a fresh directory after every ephemeral
//! job. (Listeners in their own session, the fourth attack, are in `tests/containment.rs`.)

use std::collections::HashSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::kit::daemon::{runner, World, REPO};
use crate::kit::github::JobSpec;
use crate::kit::install::FakeRunnerInstall;
use crate::kit::proc::wait_until;
use crate::provision::diag_text;
use crate::security::run_steps;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A world whose runners' users can reach the base and their roots through the temp dir.
fn world() -> World {
    let world = World::new();
    std::fs::set_permissions(world.dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    world
}

/// A runner entry of its own user, labelled with its name.
fn own_user(name: &str, extra: &str) -> String {
    format!(
        "  - name: {name}\n    repo: {REPO}\n    labels: [{name}]\n    allow_root: false\n    isolation: user-per-runner\n{extra}"
    )
}

fn user_ids(runner: &str) -> (u32, u32) {
    let user = nix::unistd::User::from_name(&corral::users::per_runner_name(runner))
        .expect("getpwnam")
        .expect("corral created the runner's user");
    (user.uid.as_raw(), user.gid.as_raw())
}

/// Queues a job of `steps` that then runs on for a while, and returns the Worker log once
/// the step `last` has logged: an ephemeral runner's directory (and log) goes after its job.
fn running_job_log(
    world: &World,
    root: &Path,
    label: &str,
    steps: Vec<Value>,
    last: &str,
) -> String {
    let spec = JobSpec {
        duration: Duration::from_secs(20),
        ..JobSpec::default()
    };
    world.gh.queue_job_with_steps(REPO, &[label], spec, steps);
    let mut log = String::new();
    wait_until(&format!("step {last} logged on {label}"), || {
        log = diag_text(&root.join("_diag"), "Worker_");
        log.contains(&format!("step {last}: "))
    });
    log
}

/// A `run` step.
fn sh(name: &str, script: &str) -> Value {
    json!({"run": script, "name": name})
}

/// Every `out <name>: …` line of a Worker log.
fn out_lines<'a>(log: &'a str, name: &str) -> Vec<&'a str> {
    let prefix = format!("out {name}: ");
    log.lines()
        .filter_map(|l| l.split_once(&prefix).map(|(_, rest)| rest))
        .collect()
}

/// Everything below `dir`, not following links.
fn walk(dir: &Path, out: &mut Vec<(PathBuf, std::fs::Metadata)>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        let Ok(meta) = path.symlink_metadata() else {
            continue;
        };
        if meta.is_dir() {
            walk(&path, out);
        }
        out.push((path, meta));
    }
}

/// Files a job hard-links, swaps and points at before a re-base, the attack that got a
/// job a set-id root shell: `.path` a hard link of a set-id copy of `sh` whose link count
/// is used up (so a link fails and a copy is tried), `.env` a link to a root-only file,
/// `externals`, `bin/` and `config.sh` repointed or moved.
fn plant_for_a_rebase(root: &Path) -> String {
    let root = root.display();
    format!(
        r#"set -u
cd {root}
cp /bin/sh sh-copy && chmod 4755 sh-copy
ln -f sh-copy .path
perl -e 'for my $i (1..70000) {{ link "sh-copy", "_work/l$i" or last }}'
echo "links: $(stat -c %h sh-copy)"
ln -sf /etc/shadow .env
rm -f externals 2>/dev/null && ln -s /tmp externals && echo externals-repointed || echo externals-kept
mv bin _work/bin-moved 2>/dev/null && echo bin-moved || echo bin-kept
mv config.sh _work/ 2>/dev/null && echo config-moved || echo config-kept
true"#
    )
}

#[test]
fn a_rebase_never_hands_a_job_a_setuid_root_file_or_a_root_only_file() {
    if !is_root() {
        return; // users and set-id files need root (CI runs tests as root)
    }
    let mut world = world();
    let base2 = world.dir.path().join("base2");
    FakeRunnerInstall::new()
        .version("2.999.0")
        .poll_wait_secs(1)
        .session_conflict_retry_secs(1)
        .build(&base2)
        .expect("second base");
    world.write_config(&own_user("hj-root", ""));
    world.start();
    world.wait_idle(&["hj-root"]);
    let root = world.runner_dir("hj-root");
    let (uid, _) = user_ids("hj-root");
    let (conclusion, log) = run_steps(
        &world,
        "hj-root",
        "hj-root",
        vec![sh("plant", &plant_for_a_rebase(&root))],
    );
    assert_eq!(conclusion, "success", "{log}");
    let said = out_lines(&log, "plant");
    for kept in ["externals-kept", "bin-kept", "config-kept"] {
        assert!(said.contains(&kept), "the job could not {kept}: {said:?}");
    }
    // corral moves the runner onto the second base.
    let text = world
        .config_text(&own_user("hj-root", ""))
        .replace("path: ./base\n", "path: ./base2\n");
    std::fs::write(world.config(), text).expect("write config");
    let new_externals = base2.canonicalize().expect("canonical").join("externals");
    wait_until("hj-root on the second base", || {
        std::fs::read_link(root.join("externals")).is_ok_and(|t| t == new_externals)
    });
    world.wait_idle(&["hj-root"]);
    // No set-id file of root's anywhere corral writes, and the job's files are still its own.
    let mut all = Vec::new();
    walk(&world.state(), &mut all);
    for (path, meta) in &all {
        assert!(
            !(meta.is_file() && meta.uid() == 0 && meta.mode() & 0o6000 != 0),
            "a set-id root file: {}",
            path.display()
        );
    }
    let base_inodes: HashSet<u64> = {
        let mut files = Vec::new();
        walk(&base2, &mut files);
        files.iter().map(|(_, m)| m.ino()).collect()
    };
    for (path, meta) in all.iter().filter(|(p, _)| p.starts_with(&root)) {
        if meta.is_file() && meta.uid() == 0 {
            assert!(
                base_inodes.contains(&meta.ino()),
                "a root-owned file in the runner dir that is not the base's: {}",
                path.display()
            );
        }
    }
    let dot_path = root
        .join(".path")
        .symlink_metadata()
        .expect(".path moved over");
    assert_eq!(
        (dot_path.uid(), dot_path.is_file()),
        (uid, true),
        ".path is the job's, moved"
    );
    let dot_env = root
        .join(".env")
        .symlink_metadata()
        .expect(".env moved over");
    assert!(
        dot_env.is_symlink() && dot_env.uid() == uid,
        ".env is the job's link, not a copy"
    );
    // The next job runs what it planted: as its own user, never as root.
    let (_, log) = run_steps(
        &world,
        "hj-root",
        "hj-root",
        vec![sh(
            "euid",
            &format!("{}/.path -p -c 'id -u'", root.display()),
        )],
    );
    assert_eq!(
        out_lines(&log, "euid").last().copied(),
        Some(uid.to_string().as_str()),
        "{log}"
    );
}

/// Every environment and command line the runner's user `uid` can read while `stop` is
/// unset (its own processes' `/proc/<pid>/environ`, everyone's `cmdline`), scanned as root.
fn watch_what_uid_reads(uid: u32, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let seen = Mutex::new(String::new());
        while !stop.load(Ordering::Relaxed) {
            for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
                let dir = entry.path();
                let Ok(meta) = dir.metadata() else { continue };
                let mut text = std::fs::read(dir.join("cmdline")).unwrap_or_default();
                if meta.uid() == uid {
                    text.extend(std::fs::read(dir.join("environ")).unwrap_or_default());
                }
                let mut seen = seen.lock().expect("lock");
                seen.push_str(&String::from_utf8_lossy(&text));
                seen.push('\n');
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        seen.into_inner().expect("lock")
    })
}

#[test]
fn a_job_never_sees_a_registration_or_removal_token() {
    if !is_root() {
        return;
    }
    let mut world = world();
    // The job kills its listener from a process it leaves behind, which `leftovers: keep`
    // lets run after the job (by default corral kills it first).
    world.write_config(&own_user("hj-tok", "    leftovers: keep\n"));
    world.start();
    let pid = world.wait_idle(&["hj-tok"])[0];
    let root = world.runner_dir("hj-tok");
    let (uid, _) = user_ids("hj-tok");
    let before = world.gh.runner_ids(REPO);
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch_what_uid_reads(uid, Arc::clone(&stop));
    // The attack: a wrapper for config.sh, the identity deleted, the listener killed, so
    // that corral registers again.
    let script = format!(
        r#"cd {root}
printf '#!/bin/sh\nenv > {root}/_work/stolen-env\nexec "$0.real" "$@"\n' > wrapper && chmod +x wrapper
mv config.sh config.sh.real 2>/dev/null && echo config-moved || echo config-kept
ln -sf wrapper config.sh 2>/dev/null && echo config-replaced || echo config-not-replaced
mv bin bin.real 2>/dev/null && echo bin-moved || echo bin-kept
rm -f .runner .credentials
(sleep 2; kill -KILL {pid}) >/dev/null 2>&1 &
true"#,
        root = root.display()
    );
    let (_, log) = run_steps(&world, "hj-tok", "hj-tok", vec![sh("swap", &script)]);
    let said = out_lines(&log, "swap");
    for kept in ["config-kept", "config-not-replaced", "bin-kept"] {
        assert!(said.contains(&kept), "{kept}: {said:?}\n{log}");
    }
    // corral registers it again: a new registration, a new listener.
    world.wait_status("hj-tok registered again and running", |s| {
        runner(s, "hj-tok").is_some_and(|r| {
            r.pid.is_some_and(|p| p != pid) && r.state == corral::status::State::Idle
        })
    });
    assert_ne!(world.gh.runner_ids(REPO), before, "registered afresh");
    // Removed from the file: drained and deleted through the API by its id.
    world.write_config(&own_user("hj-other", ""));
    world.wait_status("hj-tok removed", |s| runner(s, "hj-tok").is_none());
    wait_until("hj-tok deleted on GitHub", || {
        !world.gh.runner_ids(REPO).iter().any(|(n, _)| n == "hj-tok")
    });
    world.wait_idle(&["hj-other"]);
    stop.store(true, Ordering::Relaxed);
    let seen = watcher.join().expect("watcher");
    let tokens = world.gh.issued_tokens();
    assert!(!tokens.is_empty(), "the fake issued tokens");
    for token in &tokens {
        assert!(
            !seen.contains(token.as_str()),
            "a token in an environment or command line the job's user can read"
        );
    }
    assert!(
        seen.contains("HOME="),
        "the watcher read the runner's environments"
    );
    // No removal token was ever minted: nothing a job could be handed.
    let minted_remove = world
        .gh
        .requests()
        .iter()
        .any(|r| r.path.ends_with("/remove-token"));
    assert!(!minted_remove, "corral minted a removal token");
    // No file the other runner's user (same attack surface) can read holds a token: a job of
    // `hj-other` greps the whole test directory and /dev/shm for them.
    let other = world.runner_dir("hj-other");
    let list = other.join("_work/tokens");
    std::fs::write(&list, tokens.join("\n") + "\n").expect("write token list");
    let (owner, group) = user_ids("hj-other");
    std::os::unix::fs::chown(&list, Some(owner), Some(group)).expect("chown");
    let (_, log) = run_steps(
        &world,
        "hj-other",
        "hj-other",
        vec![sh(
            "grep",
            &format!(
                "grep -rlF -f {list} {dir} /dev/shm 2>/dev/null | grep -v '^{list}$' || echo none",
                list = list.display(),
                dir = world.dir.path().display()
            ),
        )],
    );
    assert_eq!(out_lines(&log, "grep"), ["none"], "{log}");
    // Records and status are root's alone.
    let mut state = Vec::new();
    walk(&world.state(), &mut state);
    for (path, meta) in &state {
        let corral_only = path.starts_with(world.state().join("records"))
            || path.starts_with(world.state().join("registrations"))
            || path == &world.state().join("status.json");
        if corral_only && !meta.is_symlink() {
            assert_eq!(
                meta.mode() & 0o077,
                0,
                "{} is readable by others",
                path.display()
            );
        }
    }
}

#[test]
fn an_ephemeral_runner_gets_a_fresh_directory_after_every_job() {
    if !is_root() {
        return;
    }
    let mut world = world();
    world.write_config(&own_user("hj-eph", "    ephemeral: true\n"));
    world.start();
    let first = world.wait_idle(&["hj-eph"])[0];
    let root = world.runner_dir("hj-eph");
    // The attack: leave a listener wrapper and settings for the next job, and empty `_diag`
    // so that the directory looks unused.
    let script = format!(
        r"cd {root}
echo planted > planted && echo planted-root
echo PLANTED=yes >> .env
cp bin/Runner.Listener wrapper && echo copied-listener
mv bin bin.real 2>/dev/null && echo bin-moved || echo bin-kept
touch _work/planted
rm -rf _diag/* _diag/.[!.]* 2>/dev/null
true",
        root = root.display()
    );
    let (conclusion, _) = run_steps(&world, "hj-eph", "hj-eph", vec![sh("plant", &script)]);
    assert_eq!(conclusion, "success");
    let second = world.wait_status("hj-eph back with a new listener", |s| {
        runner(s, "hj-eph").is_some_and(|r| {
            r.pid.is_some_and(|p| p != first) && r.state == corral::status::State::Idle
        })
    });
    let second = runner(&second, "hj-eph").and_then(|r| r.pid).expect("pid");
    for planted in ["planted", "wrapper", "bin.real", "_work/planted", ".env"] {
        assert!(
            root.join(planted).symlink_metadata().is_err(),
            "{planted} survived the job"
        );
    }
    let log = running_job_log(
        &world,
        &root,
        "hj-eph",
        vec![json!({"env": true}), sh("look", "ls -a \"$HOME\"")],
        "run look",
    );
    assert!(!log.contains("PLANTED=yes"), "{log}");
    assert!(!out_lines(&log, "look").contains(&"planted"), "{log}");
    // The JIT configuration never sat in a listener's environment, where its job could
    // read it: corral wrote it as the runner's 0600 files.
    for pid in [first, second] {
        if let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) {
            assert!(!String::from_utf8_lossy(&env).contains("ACTIONS_RUNNER_INPUT_JITCONFIG"));
        }
    }
}

/// Keeps `count` idle connections open to `addr` until `stop`: one closed by the server is
/// opened again. Returns how many times it had to reconnect.
fn flood(
    addr: std::net::SocketAddr,
    count: usize,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let connect = || {
            let s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
            s.set_nonblocking(true).ok()?;
            Some(s)
        };
        let mut socks: Vec<Option<std::net::TcpStream>> = (0..count).map(|_| connect()).collect();
        let mut reconnects = 0;
        while !stop.load(Ordering::Relaxed) {
            for sock in &mut socks {
                let mut byte = [0_u8; 1];
                let alive = sock.as_ref().is_some_and(|s| match s.peek(&mut byte) {
                    Ok(n) => n > 0,
                    Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
                });
                if !alive {
                    *sock = connect();
                    reconnects += 1;
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        reconnects
    })
}

fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

#[test]
fn supervision_goes_on_under_2000_idle_api_connections() {
    if !is_root() {
        return;
    }
    // The test holds 2000 sockets itself.
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let want = limit.maximum.map_or(8192, |m| m.min(8192));
    rustix::process::setrlimit(
        rustix::process::Resource::Nofile,
        rustix::process::Rlimit {
            current: Some(want),
            maximum: limit.maximum,
        },
    )
    .expect("raise the test's descriptor limit");
    let mut world = world();
    let port = crate::security::free_port();
    let with_api = |world: &World, runners: &str| {
        world.config_text(runners).replace(
            "github:\n",
            &format!("api:\n  listen: \"127.0.0.1:{port}\"\ngithub:\n"),
        )
    };
    std::fs::write(world.config(), with_api(&world, &own_user("hj-flood", ""))).expect("config");
    world.start_with_nofile(1024);
    let listener = world.wait_idle(&["hj-flood"])[0];
    let corral = world.corral().pid().as_raw();
    let stop = Arc::new(AtomicBool::new(false));
    let flooder = flood(([127, 0, 0, 1], port).into(), 2000, Arc::clone(&stop));
    let mut most = 0;
    let mut sample = || {
        most = most.max(open_fds(corral));
    };
    std::thread::sleep(Duration::from_secs(2));
    sample();
    // A listener that dies is restarted...
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(listener),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the listener");
    world.wait_status("hj-flood restarted", |s| {
        runner(s, "hj-flood").is_some_and(|r| {
            r.pid.is_some_and(|p| p != listener) && r.state == corral::status::State::Idle
        })
    });
    sample();
    // ... and a new runner, with a user of its own (`useradd`), is created and started.
    let both = format!("{}{}", own_user("hj-flood", ""), own_user("hj-flood2", ""));
    std::fs::write(world.config(), with_api(&world, &both)).expect("config");
    world.wait_idle(&["hj-flood", "hj-flood2"]);
    sample();
    stop.store(true, Ordering::Relaxed);
    let reconnects = flooder.join().expect("flooder");
    assert!(most < 1024, "corral held {most} descriptors");
    assert!(most > 256, "the flood reached corral ({most} descriptors)");
    assert!(reconnects > 0, "corral closed connections over its limit");
    let log = world.corral().output();
    assert!(!log.contains("Too many open files"), "{log}");
}
