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
        "- remove leftover {}\n\
         - gone: deregister, deprovision (out of the file: draining until its job ends)\n\
         + web-1: provision, register, start (new runner)\n\
         + web-2: provision, register, start (new runner)\n\
         Plan: 2 to add, 0 to change, 1 to drain, 1 to remove.\n",
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
    assert_eq!(stdout, "No changes: 0 runner(s) as the file says.\n");
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

/// A config with two new runners and a runner on disk that left the file.
fn changed_world() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    write_config(
        dir.path(),
        "runners:\n  - name: web\n    repo: o/web\n    count: 2\n",
    );
    let gone = dir.path().join("state/runners/gone");
    fs::create_dir_all(&gone).expect("mkdir");
    fs::write(gone.join(".runner"), "{}").expect("write");
    dir
}

#[test]
fn plan_json_has_the_documented_shape() {
    let dir = changed_world();
    let out = cmd::run(dir.path(), &["plan", "--json"]);
    let (stdout, stderr) = cmd::texts(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let plan: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    let runners = plan["runners"].as_array().expect("runners");
    let web1 = runners
        .iter()
        .find(|r| r["name"] == "web-1")
        .expect("web-1");
    assert_eq!(web1["change"], "add");
    assert_eq!(web1["sign"], "+");
    assert_eq!(
        web1["steps"],
        serde_json::json!(["provision", "register", "start"])
    );
    let gone = runners.iter().find(|r| r["name"] == "gone").expect("gone");
    assert_eq!(gone["change"], "drain");
    assert_eq!(
        plan["summary"],
        serde_json::json!({"add": 2, "change": 0, "drain": 1, "remove": 0, "unchanged": 0, "cleanup": 0})
    );
    assert_eq!(plan["fetch"], serde_json::json!([]));
    assert_eq!(plan["cleanup"], serde_json::json!([]));
}

#[test]
fn detailed_exitcode_is_0_unchanged_2_changed_1_error() {
    let dir = changed_world();
    let code = |dir: &Path| {
        cmd::run(dir, &["plan", "--detailed-exitcode"])
            .status
            .code()
    };
    assert_eq!(code(dir.path()), Some(2));
    let plain = cmd::run(dir.path(), &["plan"]);
    assert_eq!(plain.status.code(), Some(0), "without the flag: 0");
    let idle = tempfile::tempdir().expect("temp dir");
    write_config(idle.path(), "runners: []\n");
    assert_eq!(code(idle.path()), Some(0));
    let broken = tempfile::tempdir().expect("temp dir");
    write_config(broken.path(), "runners:\n  - name: a\n    repo: nope\n");
    assert_eq!(code(broken.path()), Some(1));
}

#[test]
fn a_pinned_release_not_installed_is_fetched_first() {
    let dir = tempfile::tempdir().expect("temp dir");
    fs::write(
        dir.path().join("runners.yaml"),
        "base:\n  version: 2.336.0\nstate_dir: ./state\ngithub:\n  token_env: GITHUB_TOKEN\nrunners: []\n",
    )
    .expect("write");
    let out = cmd::run(dir.path(), &["plan", "--detailed-exitcode"]);
    let (stdout, _) = cmd::texts(&out);
    assert!(
        stdout.starts_with("fetch first: runner release 2.336.0 from https://github.com/actions/runner/releases/download/v2.336.0/actions-runner-linux-"),
        "{stdout}"
    );
    assert_eq!(out.status.code(), Some(2), "a download is a change");
}

/// Colour on a terminal (`script` gives corral one), none when piped or with `NO_COLOR`.
#[test]
fn colour_only_on_a_terminal_and_not_with_no_color() {
    let dir = changed_world();
    let piped = cmd::run(dir.path(), &["plan"]);
    assert!(
        !cmd::texts(&piped).0.contains('\x1b'),
        "no colour when piped"
    );
    let on_tty = |no_color: bool| {
        let mut command = std::process::Command::new("script");
        command
            .args(["-qec", &format!("{} plan", cmd::binary()), "/dev/null"])
            .current_dir(dir.path())
            .env_remove("NO_COLOR");
        if no_color {
            command.env("NO_COLOR", "1");
        }
        command.output()
    };
    let Ok(coloured) = on_tty(false) else {
        eprintln!("skipped: colour_only_on_a_terminal_and_not_with_no_color: no `script` here");
        return;
    };
    let coloured = String::from_utf8_lossy(&coloured.stdout).into_owned();
    assert!(coloured.contains("\x1b[32m+ web-1"), "{coloured:?}");
    let plain = on_tty(true).expect("script");
    let plain = String::from_utf8_lossy(&plain.stdout).into_owned();
    assert!(
        plain.contains("+ web-1") && !plain.contains('\x1b'),
        "{plain:?}"
    );
}
