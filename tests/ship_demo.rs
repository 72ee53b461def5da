//! `cargo run --example demo` as a newcomer runs it: it builds, converges twice, drains a busy
//! runner without cancelling its job, stops cleanly, and exits 0. The demo fails itself (non-zero
//! exit) when a step does not converge within 30 s.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

#[path = "../examples/demo/scrub.rs"]
mod scrub;
use scrub::scrub_cargo_run_env;

/// The whole run, a build of the example included when it is not yet built (a loaded CI
/// machine may need minutes for that); the demo itself takes seconds.
const DEADLINE: Duration = Duration::from_secs(900);

#[test]
fn demo_example_converges() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (out_path, err_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut cargo = Command::new(env!("CARGO"));
    scrub_cargo_run_env(&mut cargo);
    let mut child = cargo
        .args(["run", "--offline", "--quiet", "--example", "demo"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"))
        .process_group(0)
        .spawn()
        .expect("cargo run --example demo");
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break Some(status);
        }
        if Instant::now() > deadline {
            // SIGTERM first: the demo stops corral, which stops its runners.
            let group = Pid::from_raw(child.id() as i32);
            let _ = killpg(group, Signal::SIGTERM);
            std::thread::sleep(Duration::from_secs(5));
            let _ = killpg(group, Signal::SIGKILL);
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    let report = format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    let status = status.unwrap_or_else(|| panic!("the demo overran {DEADLINE:?}\n{report}"));
    assert!(status.success(), "the demo failed ({status})\n{report}");
    assert_eq!(stdout.matches("] Converged in ").count(), 2, "{report}");
    for line in [
        "build is busy with compile.",
        "build is draining",
        "job compile finished with `success` (never cancelled)",
        "corral stopped every runner on SIGTERM and exited 0.",
    ] {
        assert!(stdout.contains(line), "missing {line:?}\n{report}");
    }
    for name in ["docs-1", "docs-2", "docs-3", "lint"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.trim_start().starts_with(name) && l.contains(" idle ")),
            "{name} idle in the final `corral status`\n{report}"
        );
    }
}
