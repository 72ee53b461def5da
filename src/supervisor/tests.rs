//! The handle on real processes: `sleep`, and a shell that ignores SIGINT.

use std::future::Future;
use std::time::Duration;

use rustix::process::Signal;

use super::{Listener, ListenerState, SupervisorError};
use crate::layout::{read_record, ProcessRecord};
use crate::procfs::process_start_time;

/// Every test's bound: a hung stop or wait fails the test instead of hanging it.
async fn bounded<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish"))
}

/// `sh -c script` started through the handle in a session of its own, as a listener is.
fn start_shell(script: &str) -> Listener {
    let mut cmd = tokio::process::Command::new("/bin/sh");
    cmd.args(["-c", script]).stdin(std::process::Stdio::null());
    crate::process::in_own_session(&mut cmd, Vec::new());
    Listener::start(&mut cmd).expect("start the shell")
}

/// A `sleep` that is not the handle's child (as an adopted listener is not corral's).
fn sleeper() -> (std::process::Child, ProcessRecord) {
    let child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("start sleep");
    let pid = child.id() as i32;
    let start_time = process_start_time(pid).expect("start time");
    (child, ProcessRecord { pid, start_time })
}

fn end(mut child: std::process::Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Polls `cond` until it holds (the shell forks its child after it starts).
async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    bounded(what, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_started_listener_is_recorded_then_stops_on_sigint_within_the_grace() {
    let mut listener = start_shell("exec sleep 30");
    assert_eq!(listener.state(), ListenerState::Starting);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("process.json");
    listener.record(&path).expect("record");
    assert_eq!(listener.state(), ListenerState::Running);
    let recorded = read_record::<ProcessRecord>(&path).expect("a record");
    assert_eq!(recorded, listener.identity());
    assert_eq!(process_start_time(recorded.pid), Some(recorded.start_time));

    let stopped = bounded("stop", listener.stop(Duration::from_secs(30))).await;
    assert!(stopped.clean, "sleep ends on SIGINT: {stopped:?}");
    assert_eq!(stopped.pid, recorded.pid);
    // Killed by SIGINT: no exit code.
    assert_eq!(listener.state(), ListenerState::Exited { code: None });
    assert!(!super::is_alive(&recorded), "reaped and gone");
}

#[tokio::test]
async fn stop_escalates_to_the_whole_session_after_the_grace() {
    // The shell and its child ignore SIGINT, as a listener stuck in a job might.
    let mut listener = start_shell("trap '' INT; sleep 30 & wait; wait");
    let me = listener.identity();
    let members = || crate::process::session_members(me.pid, me.start_time);
    wait_for("the shell's child", || members().len() >= 2).await;
    let before = members();

    let stopped = bounded("stop", listener.stop(Duration::from_millis(300))).await;
    assert!(!stopped.clean, "SIGINT was ignored: {stopped:?}");
    assert!(stopped.killed >= 2, "the shell and its sleep: {stopped:?}");
    assert!(matches!(listener.state(), ListenerState::Exited { .. }));
    wait_for("every member gone", || {
        before
            .iter()
            .all(|&(pid, started)| process_start_time(pid) != Some(started))
    })
    .await;
}

#[tokio::test]
async fn a_recycled_pid_with_another_start_time_is_never_signalled() {
    let (child, rec) = sleeper();
    let mut listener = Listener::adopt(&rec).expect("adopt the live sleep");
    // As if the recorded listener had ended and its pid gone to this process.
    listener.start_time = rec.start_time.wrapping_sub(1);
    let refused = listener.signal(Signal::KILL);
    assert!(
        matches!(refused, Err(SupervisorError::NotRecorded { pid, .. }) if pid == rec.pid),
        "{refused:?}"
    );
    let stopped = bounded("stop", listener.stop(Duration::from_millis(100))).await;
    assert_eq!(stopped.killed, 0, "{stopped:?}");
    assert_eq!(listener.kill(), 0);
    assert!(super::is_alive(&rec), "the other process lives on");
    end(child);
}

#[tokio::test]
async fn adopt_takes_only_the_recorded_process() {
    let (child, rec) = sleeper();
    let wrong = ProcessRecord {
        pid: rec.pid,
        start_time: rec.start_time + 1,
    };
    let refused = Listener::adopt(&wrong);
    assert!(
        matches!(refused, Err(SupervisorError::NotRecorded { found, .. }) if found == Some(rec.start_time)),
        "{refused:?}"
    );
    let adopted = Listener::adopt(&rec).expect("the recorded one is adopted");
    assert_eq!(adopted.state(), ListenerState::Running);
    assert_eq!(adopted.identity(), rec);
    assert!(super::is_alive(&rec), "adopting signals nothing");
    end(child);
    assert!(
        Listener::adopt(&rec).is_err(),
        "a process that is gone is not adopted"
    );
}

#[tokio::test]
async fn waiting_on_an_adopted_listener_wakes_on_its_exit() {
    let (mut child, rec) = sleeper();
    let mut listener = Listener::adopt(&rec).expect("adopt");
    let waiting = tokio::spawn(async move {
        let code = listener.wait().await;
        (code, listener.state())
    });
    tokio::task::yield_now().await;
    assert!(!waiting.is_finished(), "sleep is still alive");
    child.kill().expect("kill sleep");
    child.wait().expect("reap sleep");
    let (code, state) = bounded("the wait", waiting).await.expect("task");
    assert_eq!(
        code, None,
        "an adopted process's code is not corral's to know"
    );
    assert_eq!(state, ListenerState::Exited { code: None });
}

#[tokio::test]
async fn a_started_listener_reports_its_exit_code() {
    let mut listener = start_shell("exit 3");
    assert_eq!(bounded("the wait", listener.wait()).await, Some(3));
    assert_eq!(listener.state(), ListenerState::Exited { code: Some(3) });
    // Stopping what has exited sends nothing and is clean.
    let stopped = bounded("stop", listener.stop(Duration::from_secs(1))).await;
    assert!(stopped.clean);
    assert_eq!(stopped.killed, 0);
}

#[tokio::test]
async fn an_exited_listener_not_yet_reaped_is_not_adopted() {
    // Where nothing reaps the orphans of a killed corral, its exited listener stays a
    // zombie with the recorded pid and start time: adopting it would report its exit at
    // once, pass after pass.
    let mut child = std::process::Command::new("/bin/sh")
        .args(["-c", "read line"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("start sh");
    let pid = child.id() as i32;
    let rec = ProcessRecord {
        pid,
        start_time: process_start_time(pid).expect("start time"),
    };
    assert!(super::is_alive(&rec));
    drop(child.stdin.take());
    let mut buf = String::new();
    wait_for("a zombie", || {
        crate::procfs::read_stat(pid, &mut buf).is_some_and(|s| s.is_zombie())
    })
    .await;
    assert!(!super::is_alive(&rec), "a zombie is not alive");
    assert!(
        matches!(
            Listener::adopt(&rec),
            Err(SupervisorError::NotRecorded { found: None, .. })
        ),
        "a zombie is not adopted"
    );
    child.wait().expect("reap sh");
}
