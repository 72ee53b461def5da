//! A `corral run` under test: a temp dir with a fake runner base, a fake GitHub, a config
//! file, and the real binary started on it.

use std::path::{Path, PathBuf};
use std::process::Command;

use corral::status::{RunnerStatus, Status};
use nix::sys::signal::Signal;

use super::github::{FakeGitHub, TokenKind};
use super::install::FakeRunnerInstall;
use super::proc::{wait_until, Proc};

/// The PAT the fake GitHub accepts; tests assert it never leaks.
pub const PAT: &str = "ghp_corralTestPat0123456789abcdefABCDEF";
/// The repository every test's runners serve.
pub const REPO: &str = "owner/repo";

/// One test's world.
pub struct World {
    /// Holds everything on disk.
    pub dir: tempfile::TempDir,
    /// The fake GitHub.
    pub gh: FakeGitHub,
    /// The running corral, when started.
    pub corral: Option<Proc>,
    /// `CORRAL_CGROUP_ROOT` given to corral, if any.
    pub cgroup_root: Option<PathBuf>,
}

impl World {
    /// A fake GitHub with `owner/repo` and a PAT, and a fake runner base at `base/`.
    pub fn new() -> Self {
        Self::with_base(
            &FakeRunnerInstall::new()
                .poll_wait_secs(1)
                .session_conflict_retry_secs(1),
        )
    }

    /// Like [`World::new`], with the fake runner base built by `install` (e.g. a longer
    /// poll wait, as the real listener's, for a quiet host in a benchmark).
    pub fn with_base(install: &FakeRunnerInstall) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let gh = FakeGitHub::start();
        gh.add_repo(REPO);
        gh.add_token(
            PAT,
            TokenKind::Classic {
                scopes: vec!["repo".into()],
            },
        );
        install
            .build(&dir.path().join("base"))
            .expect("build the fake runner base");
        World {
            dir,
            gh,
            corral: None,
            cgroup_root: None,
        }
    }

    /// The config file path.
    pub fn config(&self) -> PathBuf {
        self.dir.path().join("runners.yaml")
    }

    /// The state directory.
    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// A complete config with `runners` (YAML lines under `runners:`) against the fake.
    pub fn config_text(&self, runners: &str) -> String {
        format!(
            "base:\n  path: ./base\nstate_dir: ./state\nresync_interval: 2s\nshutdown_timeout: 20s\n\
             github:\n  url: {web}\n  api_url: {api}\n  token_env: GITHUB_TOKEN\n\
             defaults:\n  allow_root: true\n  drain_timeout: 30s\nrunners:\n{runners}",
            web = self.gh.web_url(),
            api = self.gh.api_url(),
        )
    }

    /// Writes the config in place.
    pub fn write_config(&self, runners: &str) {
        std::fs::write(self.config(), self.config_text(runners)).expect("write config");
    }

    /// Starts `corral run` with the PAT in its environment.
    pub fn start(&mut self) {
        self.start_with_env(&[]);
    }

    /// Starts `corral run` with the PAT and `extra` variables in its environment.
    pub fn start_with_env(&mut self, extra: &[(&str, &str)]) {
        self.start_command(Command::new(env!("CARGO_BIN_EXE_corral")), extra);
    }

    /// Starts `corral run` with at most `nofile` open descriptors (`RLIMIT_NOFILE`, soft and
    /// hard), as a unit's `LimitNOFILE` would set it.
    pub fn start_with_nofile(&mut self, nofile: u64) {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(format!("ulimit -n {nofile} && exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_corral"));
        self.start_command(cmd, &[]);
    }

    fn start_command(&mut self, mut cmd: Command, extra: &[(&str, &str)]) {
        if let Some((_, root)) = extra.iter().find(|(k, _)| *k == corral::cgroup::ROOT_ENV) {
            self.cgroup_root = Some(PathBuf::from(root));
        }
        cmd.args(["run", "-c"])
            .arg(self.config())
            .current_dir(self.dir.path())
            .env("GITHUB_TOKEN", PAT)
            .env("RUST_LOG", "info,corral=debug")
            .envs(extra.iter().copied());
        self.corral = Some(Proc::spawn_group(cmd));
    }

    /// Starts `corral run` as the last arguments of `wrapper` (a program that sets up
    /// limits or namespaces and then runs its arguments), with the PAT in its environment.
    pub fn start_under(&mut self, wrapper: &[&str]) {
        let mut cmd = Command::new(wrapper[0]);
        cmd.args(&wrapper[1..])
            .arg(env!("CARGO_BIN_EXE_corral"))
            .args(["run", "-c"])
            .arg(self.config())
            .current_dir(self.dir.path())
            .env("GITHUB_TOKEN", PAT)
            .env("RUST_LOG", "info,corral=debug");
        self.corral = Some(Proc::spawn_group(cmd));
    }

    /// The running corral.
    pub fn corral(&mut self) -> &mut Proc {
        self.corral.as_mut().expect("corral was started")
    }

    /// Sends `sig` to corral alone (its runners are in their own groups).
    pub fn signal(&mut self, sig: Signal) {
        self.corral().signal(sig);
    }

    /// The last `status.json`, if written.
    pub fn status(&self) -> Option<Status> {
        corral::status::read(&self.state().join("status.json")).ok()
    }

    /// Waits until the status satisfies `cond`; fails with the last status and corral's log.
    pub fn wait_status(&self, what: &str, mut cond: impl FnMut(&Status) -> bool) -> Status {
        let mut last = None;
        let log = || self.corral.as_ref().map(Proc::output).unwrap_or_default();
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_until(what, || {
                last = self.status();
                last.as_ref().is_some_and(&mut cond)
            });
        }));
        assert!(
            ok.is_ok(),
            "timed out waiting for {what}\nstatus: {last:#?}\ncorral log:\n{}",
            log()
        );
        last.expect("status was read")
    }

    /// Waits until every named runner is idle; returns their pids in that order.
    pub fn wait_idle(&self, names: &[&str]) -> Vec<i32> {
        let status = self.wait_status(&format!("{names:?} idle"), |s| {
            names
                .iter()
                .all(|n| runner(s, n).is_some_and(|r| r.state == corral::status::State::Idle))
        });
        names
            .iter()
            .map(|n| {
                runner(&status, n)
                    .and_then(|r| r.pid)
                    .expect("idle runner has a pid")
            })
            .collect()
    }

    /// Publishes a fake runner release `version` on the fake GitHub, with its digest.
    pub fn publish_release(&self, version: &str) {
        let tree = self.dir.path().join(format!("release-{version}"));
        FakeRunnerInstall::new()
            .version(version)
            .poll_wait_secs(1)
            .session_conflict_retry_secs(1)
            .build(&tree)
            .expect("fake release tree");
        let bytes = super::tarball::tar_gz_of_dir(&tree).expect("tarball");
        let digest = format!("sha256:{}", super::tarball::sha256_hex(&bytes));
        self.gh.add_runner_release(version, bytes, Some(digest));
    }

    /// The runner directory of `name`.
    pub fn runner_dir(&self, name: &str) -> PathBuf {
        self.state().join("runners").join(name)
    }
}

/// The status entry of `name`.
pub fn runner<'a>(status: &'a Status, name: &str) -> Option<&'a RunnerStatus> {
    status.runners.iter().find(|r| r.name == name)
}

/// Every pid whose command line runs `Runner.Listener` from below `dir`.
pub fn listeners_under(dir: &Path) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(exe) = std::fs::read_link(entry.path().join("exe")) else {
            continue;
        };
        if exe.starts_with(dir) && exe.ends_with("bin/Runner.Listener") {
            pids.push(pid);
        }
    }
    pids.sort_unstable();
    pids
}

/// Command lines of every process below `dir` (to check that no secret is in argv).
pub fn cmdlines_under(dir: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Ok(cwd) = std::fs::read_link(entry.path().join("cwd")) else {
            continue;
        };
        if cwd.starts_with(dir) {
            let raw = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            lines.push(String::from_utf8_lossy(&raw).replace('\0', " "));
        }
    }
    lines
}

impl Drop for World {
    /// Leaves nothing running: corral first, then any listener group still alive, then
    /// the cgroups corral made for this state directory (a killed corral leaves them).
    fn drop(&mut self) {
        drop(self.corral.take());
        for pid in listeners_under(self.dir.path()) {
            // Its session too: a job's process may have left the listener's group.
            if let Some(start) = corral::procfs::process_start_time(pid) {
                corral::process::kill_session(pid, start);
            }
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
        }
        let root = self.cgroup_root.take();
        corral::cgroup::discard(
            &corral::cgroup::Host::detect(),
            &self.state(),
            root.as_deref(),
        );
    }
}
