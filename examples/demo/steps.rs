//! The demo's story: a first file, a job, an edit while the job runs, convergence, a clean stop.

use std::collections::BTreeSet;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use corral::status::{State, Status};
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

use crate::github::{FakeGitHub, JobResult, JobSpec, RunnerStatus, TokenKind};
use crate::install::FakeRunnerInstall;
use crate::Binaries;

/// The fake's PAT; it reaches corral through its environment only.
const PAT: &str = "ghp_corralDemoToken0123456789abcdefABCDEF";
const REPO: &str = "demo/app";
/// The longest the demo waits for any one step.
const STEP: Duration = Duration::from_secs(30);

const FIRST: &str = "  - name: build          # one runner, for jobs that ask for `build`
    repo: demo/app
    labels: [build]
  - name: docs           # two instances: docs-1, docs-2
    repo: demo/app
    count: 2
";

const SECOND: &str = "  - name: docs           # build removed; docs scaled to 3
    repo: demo/app
    count: 3
  - name: lint           # new: one job per registration
    repo: demo/app
    ephemeral: true
";

/// Everything the demo started; dropping it stops corral and any runner left.
pub struct Demo {
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    gh: FakeGitHub,
    corral_bin: PathBuf,
    corral: Option<Child>,
    started: Instant,
}

impl Demo {
    /// A fake GitHub, a fake runner install and a first `runners.yaml`; corral not yet running.
    pub fn start(bins: &Binaries) -> anyhow::Result<Self> {
        let started = Instant::now();
        let dir = tempfile::Builder::new()
            .prefix("corral-demo-")
            .tempdir()
            .context("a temporary directory")?;
        let root = dir.path().to_path_buf();
        let gh = FakeGitHub::start();
        gh.add_repo(REPO);
        gh.add_token(
            PAT,
            TokenKind::Classic {
                scopes: vec!["repo".into()],
            },
        );
        FakeRunnerInstall::new()
            .runner_binary(&bins.fake_runner)
            .poll_wait_secs(1)
            .session_conflict_retry_secs(1)
            .build(&root.join("runner-base"))
            .context("build the fake runner install")?;
        let demo = Self {
            dir: Some(dir),
            root,
            gh,
            corral_bin: bins.corral.clone(),
            corral: None,
            started,
        };
        demo.say(&format!(
            "A fake GitHub listens on {} (nothing leaves this machine), with repository {REPO}.",
            demo.gh.web_url()
        ));
        demo.say(&format!(
            "A fake runner install is at {}: the official layout, with a stand-in listener.",
            demo.root.join("runner-base").display()
        ));
        Ok(demo)
    }

    /// Keeps the directory (corral's log, the state) when something went wrong.
    pub fn keep_for_inspection(&mut self) {
        if let Some(dir) = self.dir.take() {
            let path = dir.keep();
            eprintln!("\ncorral's log:\n{}", tail(&path.join("corral.log"), 40));
            eprintln!("Everything is kept in {}", path.display());
        }
    }

    /// The whole story.
    pub fn play(&mut self) -> anyhow::Result<()> {
        self.save(FIRST)?;
        self.say(&format!(
            "runners.yaml asks for build, docs-1 and docs-2:\n\n{}",
            indent(&self.config_text(FIRST))
        ));
        self.start_corral()?;
        let t0 = Instant::now();
        self.converged(&["build", "docs-1", "docs-2"])?;
        self.say(&format!(
            "Converged in {:.1} s: build, docs-1 and docs-2 are provisioned from the one base \
             (hard links and a symlink, no copies), registered, and online on the fake GitHub.",
            t0.elapsed().as_secs_f64()
        ));
        let job = self.run_job_on_build()?;
        self.save(SECOND)?;
        let t1 = Instant::now();
        self.say(
            "You edit runners.yaml: build is removed, docs goes to 3 instances, and lint, an \
             ephemeral runner, is added. Saved the way an editor saves (a new file renamed over \
             the old one).",
        );
        self.watch_drain()?;
        self.converged(&["docs-1", "docs-2", "docs-3", "lint"])?;
        let conclusion = self
            .gh
            .job(job)
            .and_then(|j| j.conclusion)
            .unwrap_or_default();
        if conclusion != "success" {
            bail!("job `compile` ended `{conclusion}`, not success: the drain cut it short");
        }
        self.say(&format!(
            "Converged in {:.1} s: job compile finished with `{conclusion}` (never cancelled), \
             build was deregistered and its directory deleted, docs-3 and lint are online.",
            t1.elapsed().as_secs_f64()
        ));
        self.show_status()?;
        self.stop_corral()?;
        self.say(&format!(
            "corral stopped every runner on SIGTERM and exited 0. The demo took {:.0} s.",
            self.started.elapsed().as_secs_f64()
        ));
        Ok(())
    }

    fn say(&self, text: &str) {
        println!("[{:5.1}s] {text}", self.started.elapsed().as_secs_f64());
    }

    fn config(&self) -> PathBuf {
        self.root.join("runners.yaml")
    }

    fn config_text(&self, runners: &str) -> String {
        format!(
            "base:\n  path: ./runner-base       # a pristine runner install\n\
             state_dir: ./state\n\
             resync_interval: 2s\n\
             shutdown_timeout: 20s\n\
             github:\n  url: {web}\n  api_url: {api}\n  token_env: GITHUB_TOKEN    # the PAT, from corral's environment\n\
             defaults:\n  drain_timeout: 1m\n{root}\
             runners:\n{runners}",
            web = self.gh.web_url(),
            api = self.gh.api_url(),
            // As root, corral runs runners as the `runner` user, which this machine may lack.
            root = if nix::unistd::Uid::current().is_root() {
                "  allow_root: true          # you run as root; on a host they run as `runner`\n"
            } else {
                ""
            },
        )
    }

    /// Writes the config the way an editor saves: a new file renamed over the old one.
    fn save(&self, runners: &str) -> anyhow::Result<()> {
        let tmp = self.root.join(".runners.yaml.swp");
        std::fs::write(&tmp, self.config_text(runners)).context("write runners.yaml")?;
        std::fs::rename(&tmp, self.config()).context("save runners.yaml")
    }

    fn start_corral(&mut self) -> anyhow::Result<()> {
        let log = File::create(self.root.join("corral.log")).context("corral.log")?;
        let child = Command::new(&self.corral_bin)
            .args(["run", "-c"])
            .arg(self.config())
            .current_dir(&self.root)
            .env("GITHUB_TOKEN", PAT)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .context("start corral")?;
        self.corral = Some(child);
        self.say(&format!(
            "Started `corral run -c runners.yaml` (pid {}); its log goes to corral.log.",
            self.corral_pid().as_raw()
        ));
        Ok(())
    }

    fn corral_pid(&self) -> Pid {
        Pid::from_raw(self.corral.as_ref().map_or(0, Child::id) as i32)
    }

    fn status(&self) -> Option<Status> {
        corral::status::read(&self.root.join("state/status.json")).ok()
    }

    /// Waits until exactly `names` are idle in corral's status and online on the fake GitHub.
    fn converged(&mut self, names: &[&str]) -> anyhow::Result<()> {
        let want: BTreeSet<String> = names.iter().map(|n| (*n).to_string()).collect();
        self.wait(&format!("the runners to be exactly {names:?}"), |demo| {
            let local: Option<BTreeSet<String>> = demo.status().map(|s| {
                s.runners
                    .iter()
                    .filter(|r| r.state == State::Idle)
                    .map(|r| r.name.clone())
                    .collect()
            });
            let all_local = demo.status().map(|s| s.runners.len());
            let online: BTreeSet<String> = demo
                .gh
                .runners(REPO)
                .into_iter()
                .filter(|r| r.status == RunnerStatus::Online)
                .map(|r| r.name)
                .collect();
            let registered = demo.gh.runners(REPO).len();
            local.as_ref() == Some(&want)
                && all_local == Some(want.len())
                && online == want
                && registered == want.len()
        })
    }

    /// Queues a job only `build` can take and waits until it runs there.
    fn run_job_on_build(&mut self) -> anyhow::Result<u64> {
        let job = self.gh.queue_job(
            REPO,
            &["self-hosted", "build"],
            JobSpec {
                name: "compile".into(),
                duration: Duration::from_secs(6),
                result: JobResult::Succeeded,
            },
        );
        self.say(
            "A workflow job, compile, is queued with runs-on: [self-hosted, build] (6 s long).",
        );
        self.wait("build to pick up the job", |demo| {
            demo.status().is_some_and(|s| {
                s.runners
                    .iter()
                    .any(|r| r.name == "build" && r.state == State::Busy)
            })
        })?;
        self.say("build is busy with compile.");
        Ok(job)
    }

    /// Narrates the drain of `build`: registered while its job runs, then gone.
    fn watch_drain(&mut self) -> anyhow::Result<()> {
        self.wait("build to be draining", |demo| {
            demo.status().is_some_and(|s| {
                s.runners
                    .iter()
                    .all(|r| r.name != "build" || r.state == State::Draining)
            })
        })?;
        let still_registered = self.gh.runners(REPO).iter().any(|r| r.name == "build");
        self.say(&format!(
            "build is draining: it is out of the file, but it {} registered on GitHub until \
             compile ends, so the job is not cut short. docs-3 and lint are being added meanwhile.",
            if still_registered { "stays" } else { "was" }
        ));
        self.wait("build to be gone", |demo| {
            demo.status()
                .is_some_and(|s| s.runners.iter().all(|r| r.name != "build"))
        })?;
        self.say("compile is done: build is deregistered, stopped, and its directory deleted.");
        Ok(())
    }

    fn show_status(&self) -> anyhow::Result<()> {
        let out = Command::new(&self.corral_bin)
            .args(["status", "-c"])
            .arg(self.config())
            .env("RUST_LOG", "warn")
            .output()
            .context("corral status")?;
        self.say(&format!(
            "`corral status` now shows:\n\n{}",
            indent(&String::from_utf8_lossy(&out.stdout))
        ));
        Ok(())
    }

    fn stop_corral(&mut self) -> anyhow::Result<()> {
        let mut child = self.corral.take().context("corral is running")?;
        kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).context("SIGTERM corral")?;
        let deadline = Instant::now() + STEP;
        let status = loop {
            if let Some(status) = child.try_wait().context("wait for corral")? {
                break status;
            }
            if Instant::now() > deadline {
                self.corral = Some(child);
                bail!("corral did not exit within {} s of SIGTERM", STEP.as_secs());
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        if status.code() != Some(0) {
            bail!("corral exited with {status} on SIGTERM");
        }
        Ok(())
    }

    /// Polls `cond` every 50 ms for at most [`STEP`]; fails naming `what`.
    fn wait(&mut self, what: &str, mut cond: impl FnMut(&mut Self) -> bool) -> anyhow::Result<()> {
        let deadline = Instant::now() + STEP;
        while !cond(self) {
            if let Some(status) = self
                .corral
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!("corral exited ({status}) while waiting for {what}");
            }
            if Instant::now() > deadline {
                bail!(
                    "timed out after {} s waiting for {what}\nlast status: {:#?}",
                    STEP.as_secs(),
                    self.status().map(|s| s.runners)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

impl Drop for Demo {
    /// Stops corral (it stops its runners); anything left running under the demo is killed.
    fn drop(&mut self) {
        if let Some(mut child) = self.corral.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            let deadline = Instant::now() + STEP;
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
        }
        for pid in listeners_under(&self.root) {
            let _ = killpg(pid, Signal::SIGKILL);
        }
    }
}

/// Listener processes whose executable is below `dir`.
fn listeners_under(dir: &Path) -> Vec<Pid> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse::<i32>().ok()?;
            let exe = std::fs::read_link(e.path().join("exe")).ok()?;
            (exe.starts_with(dir) && exe.ends_with("bin/Runner.Listener"))
                .then(|| Pid::from_raw(pid))
        })
        .collect()
}

fn indent(text: &str) -> String {
    text.lines().fold(String::new(), |mut out, line| {
        out.push_str("    ");
        out.push_str(line);
        out.push('\n');
        out
    })
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
