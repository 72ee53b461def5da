//! Helpers of the fake runner tests: fake installs, their scripts as commands, and a runner
//! configured through `config.sh` against a `FakeGitHub` of its own.

use std::path::{Path, PathBuf};
use std::process::Command;

use nix::unistd::Pid;
use serde_json::Value;

use crate::kit::github::{FakeGitHub, Runner, StateView};
use crate::kit::install::FakeRunnerInstall;
use crate::kit::proc::{Proc, TIMEOUT};

/// The repository every test registers its runner in (each test has its own fake).
pub(super) const REPO: &str = "owner/repo";

/// A tiny install with short poll and session-conflict windows, so tests end quickly.
pub(super) fn tiny(dir: &Path) -> PathBuf {
    let root = FakeRunnerInstall::new()
        .poll_wait_secs(1)
        .session_conflict_retry_secs(1)
        .build(dir)
        .expect("build fake install");
    root.canonicalize().expect("canonical root")
}

/// `bin/Runner.Listener ARGS`, run from the install root.
pub(super) fn listener(root: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(root.join("bin/Runner.Listener"));
    cmd.args(args).current_dir(root);
    cmd
}

/// One of the install's scripts (`config.sh`, `run.sh`), allowed to run as root as in CI.
pub(super) fn script(root: &Path, name: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(root.join(name));
    cmd.args(args)
        .env("RUNNER_ALLOW_RUNASROOT", "1")
        .current_dir(root);
    cmd
}

/// `config.sh --unattended` for runner `name` of [`REPO`] on `gh`.
pub(super) fn config_sh(
    root: &Path,
    gh: &FakeGitHub,
    name: &str,
    token: &str,
    extra: &[&str],
) -> Proc {
    let url = gh.runner_url(REPO);
    let mut args = vec![
        "--unattended",
        "--url",
        &url,
        "--name",
        name,
        "--token",
        token,
    ];
    args.extend_from_slice(extra);
    Proc::spawn(script(root, "config.sh", &args))
}

/// The `_diag` logs of `root` whose names start with `prefix`, concatenated.
pub(super) fn diag_text(root: &Path, prefix: &str) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(root.join("_diag"))
        .expect("read _diag")
        .flatten()
    {
        if entry.file_name().to_string_lossy().starts_with(prefix) {
            text.push_str(&std::fs::read_to_string(entry.path()).expect("read diag log"));
        }
    }
    text
}

/// A runner `r1` configured through `config.sh` against a fresh fake.
pub(super) struct Configured {
    pub root: PathBuf,
    pub gh: FakeGitHub,
    /// The registration's id on the fake.
    pub id: u64,
}

impl Configured {
    /// Configures `r1` in `dir` with `extra` `config.sh` arguments.
    pub fn new(dir: &Path, extra: &[&str]) -> Self {
        let root = tiny(dir);
        let gh = FakeGitHub::start();
        gh.add_repo(REPO);
        let token = gh.registration_token(REPO);
        let mut cfg = config_sh(&root, &gh, "r1", &token, extra);
        assert_eq!(cfg.exit_code(), 0, "{}", cfg.output());
        let id = registered(&gh, "r1").id;
        Self { root, gh, id }
    }

    /// Waits until `cond` holds on the fake; fails the test naming `what` after the deadline.
    pub fn wait(&self, what: &str, cond: impl FnMut(&StateView<'_>) -> bool) {
        wait_gh(&self.gh, what, cond);
    }

    /// Waits until the listener holds a session (the fake then sends it jobs).
    pub fn wait_online(&self) {
        let id = self.id;
        self.wait("the runner online", |s| {
            s.runner(id)
                .is_some_and(|r| r.status == crate::kit::github::RunnerStatus::Online)
        });
    }
}

/// Waits on `gh` until `cond` holds; fails the test naming `what` after the deadline.
pub(super) fn wait_gh(gh: &FakeGitHub, what: &str, cond: impl FnMut(&StateView<'_>) -> bool) {
    assert!(gh.wait_until(TIMEOUT, cond), "timed out waiting for {what}");
}

/// The registration named `name` in [`REPO`]; fails the test if there is none.
pub(super) fn registered(gh: &FakeGitHub, name: &str) -> Runner {
    gh.runners(REPO)
        .into_iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("runner {name} is not registered on the fake"))
}

/// Opens a session for the runner configured in `root`, as a second listener with a copy
/// of its credentials would (README step 4), so the runner's own session request gets 409.
pub(super) fn open_competing_session(root: &Path) {
    let runner = read_bom_json(&root.join(".runner"));
    let creds = read_bom_json(&root.join(".credentials"));
    let url = format!(
        "{}runners/{}/sessions",
        runner["serverUrl"].as_str().expect(".runner has serverUrl"),
        runner["agentId"].as_u64().expect(".runner has agentId")
    );
    let client = creds["data"]["clientId"]
        .as_str()
        .expect(".credentials has data.clientId");
    let resp = reqwest::blocking::Client::new()
        .post(url)
        .bearer_auth(client)
        .json(&serde_json::json!({}))
        .timeout(TIMEOUT)
        .send()
        .expect("session request to the fake");
    assert_eq!(resp.status().as_u16(), 201, "competing session refused");
}

/// The runner writes its settings as JSON behind a UTF-8 BOM, as the real one does.
fn read_bom_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).expect("read runner settings");
    serde_json::from_str(text.trim_start_matches('\u{feff}')).expect("settings are JSON")
}

/// The direct child of `parent` whose comm is `Runner.Worker`, if any.
pub(super) fn worker_child(parent: Pid) -> Option<Pid> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let child: i32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            let (comm, rest) = stat.split_once(") ")?;
            let ppid: i32 = rest.split(' ').nth(1)?.parse().ok()?;
            (comm.ends_with("(Runner.Worker") && ppid == parent.as_raw())
                .then(|| Pid::from_raw(child))
        })
}

pub(super) fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}
