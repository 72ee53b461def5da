//! The kit's self-test: the fake runner and `FakeGitHub` together, driven only through the
//! runner's own scripts, as corral will drive them.

use std::path::Path;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::kit::github::{FakeGitHub, JobResult, JobSpec, JobStatus, RunnerStatus};
use crate::kit::proc::Proc;

use super::support::{config_sh, registered, script, tiny, tmp, wait_gh, REPO};

const NAME: &str = "kit-self-test";

/// `config.sh` with a registration token from the fake and a custom label; returns the
/// registration id.
fn configure(root: &Path, gh: &FakeGitHub) -> u64 {
    let token = gh.registration_token(REPO);
    let mut cfg = config_sh(root, gh, NAME, &token, &["--labels", "gpu"]);
    assert_eq!(cfg.exit_code(), 0, "{}", cfg.output());
    let runner = registered(gh, NAME);
    let labels: Vec<&str> = runner.labels.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(labels, ["self-hosted", "Linux", "X64", "gpu"]);
    assert_eq!(runner.status, RunnerStatus::Offline, "no listener yet");
    runner.id
}

/// `run.sh` in its own process group, once its listener holds a session.
fn start(root: &Path, gh: &FakeGitHub, id: u64) -> Proc {
    let run = Proc::spawn_group(script(root, "run.sh", &[]));
    wait_gh(gh, "the runner online", |s| {
        s.runner(id)
            .is_some_and(|r| r.status == RunnerStatus::Online)
    });
    run
}

/// Ctrl-C on run.sh's group: the listener closes its session and run.sh exits 0.
fn stop(mut run: Proc, gh: &FakeGitHub, id: u64) {
    run.signal_group(Signal::SIGINT);
    assert_eq!(run.exit_code(), 0, "{}", run.output());
    let runner = gh.runner(id).expect("still registered after stopping");
    assert_eq!(runner.status, RunnerStatus::Offline, "session deleted");
}

#[test]
fn kit_self_test_config_run_job_remove_against_fake_github() {
    let dir = tmp();
    let root = tiny(dir.path());
    let gh = FakeGitHub::start();
    gh.add_repo(REPO);
    let id = configure(&root, &gh);
    let run = start(&root, &gh, id);
    let spec = JobSpec {
        name: "self-test".into(),
        duration: Duration::from_secs(2),
        result: JobResult::Succeeded,
    };
    let job = gh.queue_job(REPO, &["self-hosted", "gpu"], spec);
    // Busy is set when the fake assigns the job and cleared only by the runner's report.
    wait_gh(&gh, "the runner busy with the job", |s| {
        let running = s
            .job(job)
            .is_some_and(|j| j.status == JobStatus::InProgress);
        running && s.runner(id).is_some_and(|r| r.busy)
    });
    wait_gh(&gh, "the job completed", |s| {
        s.job(job).is_some_and(|j| j.status == JobStatus::Completed)
    });
    let done = gh.job(job).expect("the job");
    assert_eq!(done.conclusion.as_deref(), Some("success"));
    assert_eq!(done.runner_name.as_deref(), Some(NAME));
    assert_eq!(done.runner_id, Some(id));
    assert!(!gh.runner(id).expect("registered").busy, "idle again");
    assert!(run
        .output()
        .contains("Job self-test completed with result: Succeeded"));
    stop(run, &gh, id);
    let token = gh.remove_token(REPO);
    let mut remove = Proc::spawn(script(&root, "config.sh", &["remove", "--token", &token]));
    assert_eq!(remove.exit_code(), 0, "{}", remove.output());
    assert!(gh.runners(REPO).is_empty(), "registration gone on the fake");
    assert!(!root.join(".runner").exists() && !root.join(".credentials").exists());
}

#[test]
fn kit_self_test_job_with_labels_the_runner_lacks_stays_queued() {
    let dir = tmp();
    let root = tiny(dir.path());
    let gh = FakeGitHub::start();
    gh.add_repo(REPO);
    let id = configure(&root, &gh);
    let run = start(&root, &gh, id);
    // Queued first: the fake assigns oldest first, so it had every chance before `fits` ran.
    let lacking = gh.queue_job(REPO, &["self-hosted", "arm64"], JobSpec::default());
    let fits = gh.queue_job(REPO, &["self-hosted", "gpu"], JobSpec::default());
    wait_gh(&gh, "the matching job completed", |s| {
        s.job(fits)
            .is_some_and(|j| j.status == JobStatus::Completed)
    });
    let job = gh.job(lacking).expect("the job");
    assert_eq!(job.status, JobStatus::Queued);
    assert_eq!(job.runner_id, None);
    stop(run, &gh, id);
    assert_eq!(
        gh.job(lacking).expect("the job").status,
        JobStatus::Queued,
        "still queued after the runner left"
    );
}
