//! `corral plan` through the real binary, against what is on disk. It changes nothing.

use std::fs;
use std::path::Path;

use crate::kit::cmd;

const CONFIG: &str = "base:\n  path: ./base\nstate_dir: ./state\ngithub:\n  token_env: GITHUB_TOKEN\nruns_placeholder";

fn write_config(dir: &Path, runners: &str) {
    fs::write(
        dir.join("runners.yaml"),
        CONFIG.replace("runs_placeholder", runners),
    )
    .expect("write config");
}

#[test]
fn plan_lists_steps_grouped_by_runner() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_config(
        dir.path(),
        "runners:\n  - name: web\n    repo: o/web\n    count: 2\n",
    );
    let state = dir.path().join("state");
    // A half-built directory from a crash, and a runner that left the file.
    fs::create_dir_all(state.join("runners/.tmp-web-1-abc123")).expect("mkdir");
    fs::create_dir_all(state.join("runners/gone")).expect("mkdir");
    fs::write(state.join("runners/gone/.runner"), "{}").expect("write");

    let out = cmd::run(dir.path(), &["plan"]);
    let (stdout, stderr) = cmd::texts(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let leftover = state
        .canonicalize()
        .expect("state exists")
        .join("runners/.tmp-web-1-abc123");
    let want = format!(
        "remove leftover {}\ngone:\n  deregister (waits for a running job)\n  deprovision\nweb-1:\n  provision\n  register\n  start\nweb-2:\n  provision\n  register\n  start\n",
        leftover.display()
    );
    assert_eq!(stdout, want);
    assert!(leftover.is_dir(), "plan must not change anything");
    assert!(
        state.join("runners/gone/.runner").is_file(),
        "plan must not change anything"
    );
}

#[test]
fn plan_with_nothing_to_do_says_so() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_config(dir.path(), "runners: []\n");
    let out = cmd::run(dir.path(), &["plan", "-c", "runners.yaml"]);
    let (stdout, _) = cmd::texts(&out);
    assert_eq!(stdout, "nothing to do\n");
}

#[test]
fn plan_refuses_a_broken_file_and_touches_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_config(dir.path(), "runners:\n  - name: a\n    repo: nope\n");
    let out = cmd::run(dir.path(), &["plan"]);
    let (stdout, stderr) = cmd::texts(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout.is_empty());
    assert!(
        stderr.contains("runners.yaml:8:11: runners[0].repo"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("state").exists(),
        "a refused plan creates nothing"
    );
}
