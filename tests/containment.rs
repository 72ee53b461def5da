//! Nothing outlives its job (issue 22), and each listener in its own session (issue 17):
//! through the real binary, as root, with jobs that run shell commands.

use serde_json::{json, Value};

use crate::kit::daemon::{runner, World};
use crate::kit::proc::wait_until;
use crate::security::run_steps;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A `run` step.
fn sh(name: &str, script: &str) -> Value {
    json!({"run": script, "name": name})
}

/// The last `out <name>: <key>=<value>` value of a Worker log.
fn said(log: &str, name: &str, key: &str) -> Option<String> {
    let prefix = format!("out {name}: {key}=");
    log.lines()
        .rev()
        .find_map(|l| l.split_once(&prefix).map(|(_, v)| v.trim().to_string()))
}

/// (session id, process group, controlling terminal) of `pid`.
fn session_of(pid: i32) -> (i32, i32, i32) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let parsed = corral::procfs::parse_stat(&stat).expect("parse stat");
    (parsed.session, parsed.pgrp, parsed.tty_nr)
}

fn ppid_of(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    corral::procfs::parse_stat(&stat).expect("parse stat").ppid
}

fn alive(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && corral::procfs::process_start_time(pid).is_some()
}

/// Queues `steps` on the runner labelled `label` and returns the Worker log once the job
/// completed.
fn job(world: &World, name: &str, steps: Vec<Value>) -> String {
    let (conclusion, log) = run_steps(world, name, name, steps);
    assert_eq!(conclusion, "success", "{log}");
    log
}

#[test]
fn a_listener_has_a_session_of_its_own_and_a_job_cannot_leave_its_stop() {
    if !is_root() {
        return; // CI runs tests as root; the runner's processes are then root's to inspect
    }
    let mut world = World::new();
    let entry = "  - name: ct-sess\n    repo: owner/repo\n    labels: [ct-sess]\n";
    world.write_config(entry);
    // corral in a terminal, as an admin starts it by hand.
    world.start_under(&["/bin/sh", "-c", "exec script -qefc \"$*\" /dev/null", "sh"]);
    let pid = world.wait_idle(&["ct-sess"])[0];
    let (corral_sid, _, corral_tty) = session_of(ppid_of(pid));
    assert_ne!(corral_tty, 0, "corral runs in a terminal (script)");
    let (sid, pgrp, tty) = session_of(pid);
    assert_eq!(sid, pid, "the listener leads its own session");
    assert_eq!(pgrp, pid, "and its own process group");
    assert_eq!(tty, 0, "and has no controlling terminal");
    assert_ne!(sid, corral_sid, "not corral's session");

    // A job starts a process that leaves the listener's process group, and one that tries
    // its terminal.
    let log = job(
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
    let escaped: i32 = said(&log, "escape", "pid")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in the Worker log:\n{log}"));
    wait_until("the escaped process left the group", || {
        alive(escaped) && session_of(escaped).1 == escaped
    });
    assert_eq!(
        session_of(escaped).0,
        pid,
        "still in the listener's session"
    );
    assert_eq!(said(&log, "tty", "tty").as_deref(), Some("none"), "{log}");
    assert!(alive(escaped), "kept between jobs");

    // Removed from the file: the listener and everything in its session are gone.
    world.write_config("");
    world.wait_status("ct-sess removed", |s| runner(s, "ct-sess").is_none());
    wait_until("the escaped process is stopped", || !alive(escaped));
    assert!(!alive(pid), "the listener is stopped");
}
