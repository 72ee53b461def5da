//! `BaseStore::verify`, `prune`, `remove_leftovers`, and `corral base …` through the binary.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::mpsc;

use corral::bases::Difference;

use crate::bases::{within, Env, V};
use crate::kit::cmd;
use crate::kit::proc::TIMEOUT;

#[tokio::test]
async fn verify_lists_every_difference() {
    within(async {
        let env = Env::new();
        env.publish(V);
        let path = env.install(V).await.expect("install");
        fs::write(path.join("config.sh"), "#!/bin/sh\necho changed\n").expect("change");
        fs::remove_file(path.join("safe_sleep.sh")).expect("remove");
        fs::write(path.join("bin/extra"), "x").expect("extra");
        let diffs = env.store.verify(V).expect("verify");
        assert_eq!(
            diffs,
            [
                Difference::Changed {
                    path: "config.sh".into(),
                    what: "content".into()
                },
                Difference::Missing("safe_sleep.sh".into()),
                Difference::Extra("bin/extra".into()),
            ]
        );
        assert_eq!(diffs[0].to_string(), "changed content: config.sh");
    })
    .await;
}

#[tokio::test]
async fn prune_keeps_the_listed_versions() {
    within(async {
        let env = Env::new();
        for version in [V, "2.337.0", "2.338.0"] {
            env.publish(version);
            env.install(version).await.expect("install");
        }
        let removed = env.store.prune(&[V, "2.338.0"]).expect("prune");
        assert_eq!(removed, ["2.337.0"]);
        let left: Vec<_> = env
            .store
            .list()
            .expect("list")
            .into_iter()
            .map(|b| b.version)
            .collect();
        assert_eq!(left, [V, "2.338.0"]);
        assert!(!env.store.manifest_path("2.337.0").exists());
    })
    .await;
}

#[tokio::test]
async fn leftovers_never_look_installed_and_are_removed() {
    within(async {
        let env = Env::new();
        let root = env.store.root();
        fs::create_dir_all(root.join(format!(".tmp-{V}-1/bin"))).expect("leftover tree");
        fs::write(root.join(format!(".tmp-{V}-1.tar.gz")), "partial").expect("leftover download");
        assert_eq!(env.store.list().expect("list"), []);
        assert_eq!(env.store.remove_leftovers().expect("clean").len(), 2);
        assert_eq!(env.bases_entries(), Vec::<String>::new());
    })
    .await;
}

/// Runs the real binary with the kit's deadline.
fn corral(dir: &Path, args: &[&str]) -> Output {
    let mut command = Command::new(cmd::binary());
    command
        .args(args)
        .current_dir(dir)
        .env_remove("CORRAL_CONFIG")
        .env("RUST_LOG", "warn");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || tx.send(command.output().expect("run corral")));
    rx.recv_timeout(TIMEOUT)
        .expect("corral finished before the deadline")
}

#[test]
fn cli_installs_lists_verifies_and_prunes() {
    let env = Env::new();
    env.publish(V);
    env.publish("2.337.0");
    env.gh.set_latest("2.337.0");
    let config = format!(
        "base:\n  version: {V}\n  download_url: {}\nstate_dir: ./state\ngithub:\n  url: {}\n  api_url: {}\nrunners: []\n",
        env.gh.download_url_template(),
        env.gh.web_url(),
        env.gh.api_url()
    );
    let dir = env.tmp.path();
    fs::write(dir.join("runners.yaml"), config).expect("config");
    for version in [V, "latest"] {
        let out = corral(dir, &["base", "install", version]);
        let (stdout, stderr) = cmd::texts(&out);
        assert!(out.status.success(), "{stdout}{stderr}");
        assert!(stdout.contains("installed at"), "{stdout}");
    }
    let out = corral(dir, &["base", "list", "-c", "runners.yaml"]);
    let (stdout, _) = cmd::texts(&out);
    assert!(
        stdout.contains(V) && stdout.contains("2.337.0") && stdout.contains("MiB"),
        "{stdout}"
    );
    let out = corral(dir, &["base", "verify"]);
    let (stdout, _) = cmd::texts(&out);
    assert!(
        out.status.success() && stdout.contains(&format!("{V}: ok")),
        "{stdout}"
    );
    // A runner built from 2.337.0 (by corral's record) keeps it; the configured one is
    // always kept.
    let runner = dir.join("state/runners/web");
    fs::create_dir_all(&runner).expect("runner dir");
    let tree = fs::canonicalize(dir.join("state/bases/2.337.0")).expect("tree");
    corral::layout::write_record(
        &dir.join("state/records/web/dir.json"),
        &corral::layout::DirRecord {
            base: tree,
            started: false,
        },
    )
    .expect("record");
    let out = corral(dir, &["base", "prune"]);
    let (stdout, _) = cmd::texts(&out);
    assert!(
        out.status.success() && stdout.contains("nothing to prune"),
        "{stdout}"
    );
    fs::remove_dir_all(&runner).expect("remove runner");
    let out = corral(dir, &["base", "prune"]);
    let (stdout, _) = cmd::texts(&out);
    assert!(
        out.status.success() && stdout.contains("removed 2.337.0"),
        "{stdout}"
    );
    let out = corral(dir, &["base", "install", "9.9.9"]);
    let (_, stderr) = cmd::texts(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("404"), "{stderr}");
}

/// At the default log level (no `RUST_LOG`) the unpack step logs from a blocking thread while
/// the main thread waits for it; an output lock held across that wait made `base install`
/// hang right after the download (issue 18). The child is killed when the deadline passes.
#[test]
fn base_install_finishes_at_the_default_log_level() {
    let env = Env::new();
    env.publish(V);
    let config = format!(
        "base:\n  version: {V}\n  download_url: {}\nstate_dir: ./state\ngithub:\n  api_url: {}\nrunners: []\n",
        env.gh.download_url_template(),
        env.gh.api_url()
    );
    let dir = env.tmp.path();
    fs::write(dir.join("runners.yaml"), config).expect("config");
    let mut child = Command::new(cmd::binary())
        .args(["base", "install", V])
        .current_dir(dir)
        .env_remove("CORRAL_CONFIG")
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run corral");
    let deadline = std::time::Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for corral") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("reap corral");
            let (_, stderr) = cmd::texts(&out);
            panic!("`corral base install` hung at the default log level; stderr:\n{stderr}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let out = child.wait_with_output().expect("output");
    let (stdout, stderr) = cmd::texts(&out);
    assert!(status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("installed at"), "{stdout}");
    // The info lines of both threads arrived: the download's and the unpack's.
    assert!(stderr.contains("downloading runner release"), "{stderr}");
    assert!(stderr.contains("installed runner release"), "{stderr}");
}
