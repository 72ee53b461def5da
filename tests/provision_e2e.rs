//! A runner dir built from a base, driven end to end with the fake runner and `FakeGitHub`:
//! configured, running a job that runs node through the `externals` link, removed; the base
//! stays byte-for-byte what it was.

use std::fs::{self, File};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use corral::layout::StateLayout;
use corral::provision::{Base, Provisioner};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::kit::github::{FakeGitHub, JobSpec, JobStatus};
use crate::provision::{diag_text, setup, tree_hash, Setup};

const REPO: &str = "octo/hello";
const WAIT: Duration = Duration::from_secs(30);

/// Waits for `child` up to `WAIT`; kills it and fails the test past that.
fn wait_exit(child: &mut Child, what: &str) -> ExitStatus {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} did not exit within {WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts `cmd` in `root` with its output appended to `log`.
fn spawn(mut cmd: Command, root: &Path, log: &Path) -> Child {
    let out = File::options()
        .create(true)
        .append(true)
        .open(log)
        .expect("log");
    let err = out.try_clone().expect("clone log");
    cmd.current_dir(root)
        .env("RUNNER_ALLOW_RUNASROOT", "1")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    cmd.spawn().expect("spawn")
}

/// Provisions `r1`, configures it, runs one job on it and stops it; returns the job's
/// conclusion.
fn run_one_job(s: &Setup, p: &Provisioner) -> Option<String> {
    p.provision("r1").expect("provision");
    let root = s.root("r1");
    let log = s.tmp.path().join("runner.log");
    let gh = FakeGitHub::start();
    gh.add_repo(REPO);
    let mut config = Command::new(root.join("config.sh"));
    config.args([
        "--unattended",
        "--url",
        &gh.runner_url(REPO),
        "--name",
        "r1",
    ]);
    config.args(["--token", &gh.registration_token(REPO)]);
    let status = wait_exit(&mut spawn(config, &root, &log), "config.sh");
    let text = || fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "{}", text());
    let mut listener = spawn(Command::new(root.join("bin/Runner.Listener")), &root, &log);
    let job = gh.queue_job(REPO, &["self-hosted"], JobSpec::default());
    let done = gh.wait_until(WAIT, |v| {
        v.job(job).is_some_and(|j| j.status == JobStatus::Completed)
    });
    kill(Pid::from_raw(listener.id() as i32), Signal::SIGINT).expect("SIGINT");
    wait_exit(&mut listener, "the listener");
    assert!(
        done,
        "job {job} did not complete; runner output:\n{}",
        text()
    );
    gh.job(job).and_then(|j| j.conclusion)
}

#[test]
fn runner_from_base_runs_node_through_the_link_and_leaves_the_base_untouched() {
    let s = setup();
    let base = Base::open(&s.base).expect("base");
    base.protect().expect("protect");
    let before = tree_hash(&s.base);
    let p = Provisioner::new(StateLayout::new(&s.state), base, None);
    assert_eq!(run_one_job(&s, &p).as_deref(), Some("success"));
    let root = s.root("r1");
    assert!(root.join(".runner").exists() && !s.base.join(".runner").exists());
    let worker = diag_text(&root.join("_diag"), "Worker_");
    let node = root.join("externals/node20/bin/node");
    assert!(
        worker.contains(&format!("{} --version: v20.20.2", node.display())),
        "{worker}"
    );
    assert!(
        worker.contains(&format!(
            "Well known directory 'Root': '{}'",
            root.display()
        )),
        "{worker}"
    );
    p.deprovision("r1").expect("deprovision");
    assert!(!root.exists());
    assert_eq!(tree_hash(&s.base), before, "the base changed");
}

#[test]
fn job_fails_when_node_cannot_run_through_the_link() {
    let s = setup();
    fs::remove_file(s.base.join("externals/node20/bin/node")).expect("remove node");
    let p = s.provisioner(None);
    assert_eq!(run_one_job(&s, &p).as_deref(), Some("failure"));
    let worker = diag_text(&s.root("r1").join("_diag"), "Worker_");
    assert!(worker.contains("cannot run"), "{worker}");
}
