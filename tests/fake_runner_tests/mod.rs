//! Tests of the fake runner install (tests/kit): the binary, the scripts, the builder.
//! Lives in a directory module so cargo does not also build it as a test target of its own.
//! The tests here need no server; `service` runs the fake against `FakeGitHub`, and
//! `kit_self_test` checks the whole kit end to end.

mod kit_self_test;
mod service;
mod support;

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use base64::Engine as _;
use nix::sys::signal::Signal;
use serde_json::json;

use crate::kit::install::{fake_runner_binary, FakeRunnerInstall, Shape};
use crate::kit::proc::Proc;
use support::{diag_text, listener, tiny, tmp};

// ---------- tests without a server ----------

#[test]
fn fake_runner_version_and_diag_log() {
    let dir = tmp();
    let root = FakeRunnerInstall::new()
        .version("2.999.1")
        .build(dir.path())
        .expect("build");
    let mut p = Proc::spawn(listener(&root, &["--version"]));
    assert_eq!(p.exit_code(), 0);
    assert_eq!(p.output(), "2.999.1\n");
    let log = diag_text(&root, "Runner_");
    let root = root.canonicalize().expect("canonical");
    assert!(
        log.contains(&format!(
            "Well known directory 'Root': '{}'",
            root.display()
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "Well known directory 'Bin': '{}'",
            root.join("bin").display()
        )),
        "{log}"
    );
}

#[test]
fn fake_runner_not_configured_exits_1() {
    let dir = tmp();
    let root = tiny(dir.path());
    let mut p = Proc::spawn(listener(&root, &["run"]));
    assert_eq!(p.exit_code(), 1);
    assert!(p.output().contains(
        "An error occurred: Not configured. Run config.(sh/cmd) to configure the runner."
    ));
}

#[test]
fn fake_runner_root_follows_hard_links_not_symlinks() {
    let dir = tmp();
    let base = tiny(&dir.path().join("base"));
    // Hard-linked bin/: Root is the per-runner directory.
    let linked = dir.path().join("linked");
    std::fs::create_dir_all(linked.join("bin")).expect("mkdir");
    for entry in std::fs::read_dir(base.join("bin"))
        .expect("read bin")
        .flatten()
    {
        std::fs::hard_link(entry.path(), linked.join("bin").join(entry.file_name()))
            .expect("hard link");
    }
    let linked = linked.canonicalize().expect("canonical");
    assert_eq!(
        Proc::spawn(listener(&linked, &["--version"])).exit_code(),
        0
    );
    let log = diag_text(&linked, "Runner_");
    assert!(
        log.contains(&format!(
            "Well known directory 'Root': '{}'",
            linked.display()
        )),
        "{log}"
    );
    // Symlinked bin/: Root is the base, and nothing is written into the per-runner dir.
    let symlinked = dir.path().join("symlinked");
    std::fs::create_dir_all(&symlinked).expect("mkdir");
    std::os::unix::fs::symlink(base.join("bin"), symlinked.join("bin")).expect("symlink");
    assert_eq!(
        Proc::spawn(listener(&symlinked, &["--version"])).exit_code(),
        0
    );
    assert!(!symlinked.join("_diag").exists());
    let log = diag_text(&base, "Runner_");
    assert!(
        log.contains(&format!(
            "Well known directory 'Root': '{}'",
            base.display()
        )),
        "{log}"
    );
}

#[test]
fn fake_runner_jitconfig_writes_files_then_sigint_exits_0() {
    let dir = tmp();
    let root = tiny(dir.path());
    // Nothing listens on this port: the runner keeps retrying the session until SIGINT.
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let runner = json!({"agentId": 3, "agentName": "jit", "serverUrl": format!("http://127.0.0.1:{port}/_fake/"), "workFolder": "_work", "ephemeral": true, "disableUpdate": true}).to_string();
    let creds = json!({"scheme": "OAuth", "data": {"clientId": "cid-3"}}).to_string();
    let jit = b64(&json!({".runner": b64(&runner), ".credentials": b64(&creds), ".credentials_rsaparams": b64("{}")}).to_string());
    let mut cmd = listener(&root, &["run"]);
    cmd.env("ACTIONS_RUNNER_INPUT_JITCONFIG", jit);
    let mut p = Proc::spawn(cmd);
    p.wait_for("Runner connect error");
    assert_eq!(
        std::fs::read_to_string(root.join(".runner")).expect("read .runner"),
        runner
    );
    assert_eq!(
        std::fs::read_to_string(root.join(".credentials")).expect("read creds"),
        creds
    );
    assert!(root.join(".credentials_rsaparams").exists());
    p.signal(Signal::SIGINT);
    assert_eq!(p.exit_code(), 0);
    assert!(p.output().contains("Exiting..."));
}

#[test]
fn fake_runner_bad_jitconfig_exits_1() {
    let dir = tmp();
    let root = tiny(dir.path());
    let mut p = Proc::spawn(listener(&root, &["run", "--jitconfig", "not base64!"]));
    assert_eq!(p.exit_code(), 1);
    assert!(!root.join(".runner").exists());
}

#[test]
fn fake_runner_config_sh_refuses_root() {
    if !nix::unistd::geteuid().is_root() {
        return; // the refusal only applies to uid 0
    }
    let dir = tmp();
    let root = tiny(dir.path());
    let mut cmd = Command::new(root.join("config.sh"));
    cmd.env_remove("RUNNER_ALLOW_RUNASROOT").current_dir(&root);
    let mut p = Proc::spawn(cmd);
    assert_eq!(p.exit_code(), 1);
    assert_eq!(p.output(), "Must not run with sudo\n");
    assert!(!root.join(".env").exists());
}

#[test]
fn fake_runner_install_shapes() {
    let dir = tmp();
    let tiny_root = tiny(&dir.path().join("tiny"));
    let npm = tiny_root.join("externals/node20/bin/npm");
    assert_eq!(
        std::fs::read_link(&npm).expect("npm link"),
        Path::new("../lib/node_modules/npm/bin/npm-cli.js")
    );
    assert!(npm.exists(), "symlink target exists");
    let mode = std::fs::metadata(tiny_root.join("config.sh"))
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    assert_eq!(
        std::fs::read(tiny_root.join("bin/Runner.Worker"))
            .expect("worker")
            .len(),
        std::fs::read(fake_runner_binary()).expect("binary").len()
    );
    let shape = Shape::Custom {
        bin_files: 40,
        bin_bytes: 30 << 20,
        externals_dirs: 30,
        externals_files: 200,
        externals_bytes: 5 << 20,
    };
    let custom = FakeRunnerInstall::new()
        .shape(shape)
        .build(&dir.path().join("custom"))
        .expect("build");
    let (files, bytes) = du(&custom.join("bin"));
    assert_eq!(files, 40);
    assert!((30 << 20..(30 << 20) + 4096).contains(&bytes), "{bytes}");
    assert_eq!(du(&custom.join("externals")), (200, 5 << 20));
}

#[test]
#[ignore = "writes ~390 MB; run with --ignored"]
fn fake_runner_install_real_runner_shape() {
    let dir = tmp();
    let root = FakeRunnerInstall::new()
        .shape(Shape::RealRunner)
        .build(dir.path())
        .expect("build");
    assert_eq!(du(&root.join("bin")).0, 389);
    assert_eq!(du(&root.join("externals")).0, 8_700);
}

/// (files, bytes) below `dir`, symlinks counted as files of their own length.
fn du(dir: &Path) -> (usize, u64) {
    let mut total = (0, 0);
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let meta = entry.path().symlink_metadata().expect("stat");
        let (f, b) = if meta.is_dir() {
            du(&entry.path())
        } else {
            (1, meta.len())
        };
        total = (total.0 + f, total.1 + b);
    }
    total
}
