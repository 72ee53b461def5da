//! The fake runner against `FakeGitHub`: configure, sessions, jobs, signals, exit knobs,
//! removal. Each test has its own fake and install, so they run in parallel.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::kit::github::{JobSpec, JobStatus, RunnerStatus};
use crate::kit::proc::{wait_until, Proc};

use super::support::{
    config_sh, diag_text, listener, open_competing_session, registered, script, tiny, tmp, wait_gh,
    worker_child, Configured, REPO,
};

fn spec(name: &str, duration: Duration) -> JobSpec {
    JobSpec {
        name: name.into(),
        duration,
        ..JobSpec::default()
    }
}

/// The files `config.sh` leaves behind, as the real runner writes them.
fn assert_configured_files(root: &std::path::Path) {
    let runner = std::fs::read(root.join(".runner")).expect("read .runner");
    assert!(runner.starts_with("\u{feff}".as_bytes()), "UTF-8 BOM");
    let mode = std::fs::metadata(root.join(".credentials_rsaparams"))
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(
        root.join(".path").exists() && root.join(".env").exists() && root.join("svc.sh").exists()
    );
}

#[test]
fn fake_runner_configure_run_job_and_sigint_while_busy() {
    let dir = tmp();
    let c = Configured::new(dir.path(), &[]);
    assert_configured_files(&c.root);
    let p = Proc::spawn(listener(&c.root, &["run"]));
    p.wait_for("Listening for Jobs");
    assert!(p
        .output()
        .contains("\n√ Connected to GitHub\n\nCurrent runner version: '2.336.0'\n"));
    let build = c.gh.queue_job(
        REPO,
        &["self-hosted"],
        spec("build", Duration::from_millis(300)),
    );
    p.wait_for("Running job: build");
    p.wait_for("Job build completed with result: Succeeded");
    assert!(c.root.join("_work/repo/repo").is_dir());
    assert!(diag_text(&c.root, "Worker_").contains("Job message received: build"));
    c.wait("the build job reported", |s| {
        s.job(build)
            .is_some_and(|j| j.conclusion.as_deref() == Some("success"))
    });
    sigint_while_busy(&c, p);
}

/// A long job, cancelled by Ctrl-C while the Worker runs: reported `Canceled`, session closed.
fn sigint_while_busy(c: &Configured, mut p: Proc) {
    let long = c.gh.queue_job(
        REPO,
        &["self-hosted"],
        spec("long", Duration::from_secs(600)),
    );
    p.wait_for("Running job: long");
    let mut worker = None;
    wait_until("a Runner.Worker child", || {
        worker = worker_child(p.pid());
        worker.is_some()
    });
    let worker = worker.expect("worker pid");
    let cmdline = std::fs::read_to_string(format!("/proc/{worker}/cmdline")).expect("cmdline");
    assert!(cmdline.contains("spawnclient"), "{cmdline}");
    assert_eq!(
        std::fs::read_link(format!("/proc/{worker}/cwd")).expect("cwd"),
        c.root.join("bin")
    );
    p.signal(Signal::SIGINT);
    assert_eq!(p.exit_code(), 0);
    let out = p.output();
    assert!(
        out.contains("Exiting...") && out.contains("Job long completed with result: Canceled"),
        "{out}"
    );
    let job = c.gh.job(long).expect("the long job");
    assert_eq!(job.status, JobStatus::Completed);
    assert_eq!(job.conclusion.as_deref(), Some("cancelled"));
    let runner = c.gh.runner(c.id).expect("still registered");
    assert!(!runner.busy, "freed by the Canceled report");
    assert_eq!(runner.status, RunnerStatus::Offline, "session deleted");
}

#[test]
fn fake_runner_configure_bad_token_prints_404_triple() {
    let dir = tmp();
    let root = tiny(dir.path());
    let gh = crate::kit::github::FakeGitHub::start();
    gh.add_repo(REPO);
    // A real registration token past its hour on the fake clock, and one never issued.
    let expired = gh.registration_token(REPO);
    gh.advance_clock(Duration::from_secs(2 * 3600));
    for token in [expired.as_str(), "never-issued"] {
        let mut p = config_sh(&root, &gh, "r1", token, &[]);
        assert_eq!(p.exit_code(), 1);
        let out = p.output();
        assert!(
            out.contains("Http response code: NotFound from 'POST http://127.0.0.1:"),
            "{out}"
        );
        assert!(
            out.contains("Response status code does not indicate success: 404 (Not Found)."),
            "{out}"
        );
        assert!(!root.join(".runner").exists());
        assert!(
            root.join(".credentials_rsaparams").exists(),
            "written before registration"
        );
    }
    assert!(gh.runners(REPO).is_empty());
}

#[test]
fn fake_runner_exit_knob_update_creates_update_finished() {
    let dir = tmp();
    let c = Configured::new(dir.path(), &[]);
    let mut p = Proc::spawn(listener(&c.root, &["run"]));
    p.wait_for("Listening for Jobs");
    c.gh.send_exit(c.id, 3);
    assert_eq!(p.exit_code(), 3);
    assert!(c.root.join("update.finished").exists());
}

#[test]
fn fake_runner_exit_knob_7_needs_env() {
    let dir = tmp();
    let c = Configured::new(dir.path(), &[]);
    let mut p = Proc::spawn(listener(&c.root, &["run"]));
    p.wait_for("Listening for Jobs");
    c.gh.send_exit(c.id, 7);
    assert_eq!(p.exit_code(), 1);
}

#[test]
fn fake_runner_session_conflict_exits_5_and_deleted_exits_1() {
    let dir = tmp();
    let c = Configured::new(dir.path(), &[]);
    open_competing_session(&c.root);
    let mut p = Proc::spawn(listener(&c.root, &["run"]));
    assert_eq!(p.exit_code(), 5);
    assert!(p
        .output()
        .contains("A session for this runner already exists."));
    c.gh.delete_runner_silently(REPO, c.id);
    let mut p = Proc::spawn(listener(&c.root, &["run"]));
    assert_eq!(p.exit_code(), 1);
    assert!(p.output().contains("Failed to create a session. The runner registration has been deleted from the server, please re-configure."));
}

#[test]
fn fake_runner_sigterm_while_idle_exits_143() {
    let dir = tmp();
    let c = Configured::new(dir.path(), &[]);
    let mut p = Proc::spawn(listener(&c.root, &["run"]));
    p.wait_for("Listening for Jobs");
    c.wait_online();
    p.signal(Signal::SIGTERM);
    assert_eq!(p.exit_code(), 143);
    let runner = c.gh.runner(c.id).expect("still registered");
    assert_eq!(runner.status, RunnerStatus::Offline, "session deleted");
}

#[test]
fn fake_runner_ephemeral_job_then_local_cleanup() {
    let dir = tmp();
    let c = Configured::new(dir.path(), &["--ephemeral"]);
    assert!(c.gh.runner(c.id).expect("registered").ephemeral);
    let mut p = Proc::spawn(listener(&c.root, &["run"]));
    p.wait_for("Listening for Jobs");
    let once = c.gh.queue_job(
        REPO,
        &["self-hosted"],
        spec("once", Duration::from_millis(100)),
    );
    assert_eq!(p.exit_code(), 0);
    let out = p.output();
    assert!(out.contains("Job once completed with result: Succeeded\n√ Removed .credentials\n√ Removed .runner\n"), "{out}");
    assert!(!c.root.join(".runner").exists() && !c.root.join(".credentials_rsaparams").exists());
    let job = c.gh.job(once).expect("the job");
    assert_eq!(job.conclusion.as_deref(), Some("success"));
    assert!(
        c.gh.runners(REPO).is_empty(),
        "the server deletes an ephemeral registration after its job"
    );
}

#[test]
fn fake_runner_registration_deleted_while_polling() {
    let dir = tmp();
    let c = Configured::new(dir.path(), &[]);
    let mut p = Proc::spawn(listener(&c.root, &["run"]));
    p.wait_for("Listening for Jobs");
    c.gh.delete_runner_silently(REPO, c.id);
    assert_eq!(p.exit_code(), 0);
    assert!(p
        .output()
        .contains("The runner no longer exists on the server. Cleaning up local configuration."));
    assert!(!c.root.join(".runner").exists());
}

#[test]
fn fake_runner_remove_via_config_sh() {
    let dir = tmp();
    let c = Configured::new(dir.path(), &[]);
    let token = c.gh.remove_token(REPO);
    let mut p = Proc::spawn(script(&c.root, "config.sh", &["remove", "--token", &token]));
    assert_eq!(p.exit_code(), 0, "{}", p.output());
    let out = p.output();
    assert!(
        out.contains("√ Runner removed successfully\n√ Removed .credentials\n√ Removed .runner\n"),
        "{out}"
    );
    assert!(c.gh.runner(c.id).is_none(), "registration deleted");
    assert!(c
        .gh
        .requests()
        .iter()
        .any(|r| r.method == "DELETE" && r.path == format!("/_fake/runners/{}", c.id)));
    assert!(!c.root.join(".credentials_rsaparams").exists());
}

#[test]
fn fake_runner_remove_with_a_registration_token_is_refused() {
    let dir = tmp();
    let c = Configured::new(dir.path(), &[]);
    // Registration and remove tokens are not interchangeable (README step 1).
    let token = c.gh.registration_token(REPO);
    let mut p = Proc::spawn(script(&c.root, "config.sh", &["remove", "--token", &token]));
    assert_eq!(p.exit_code(), 1, "{}", p.output());
    assert!(p.output().contains("404 (Not Found)."), "{}", p.output());
    assert_eq!(registered(&c.gh, "r1").id, c.id);
    assert!(
        c.root.join(".runner").exists(),
        "kept when the server refused"
    );
}

#[test]
fn fake_runner_run_sh_maps_session_conflict() {
    let dir = tmp();
    let c = Configured::new(dir.path(), &[]);
    open_competing_session(&c.root);
    let mut p = Proc::spawn_group(script(&c.root, "run.sh", &[]));
    assert_eq!(p.exit_code(), 0);
    let out = p.output();
    // stdout and stderr are read by two threads: lines of the other stream may come between.
    let conflict = out.find(
        "Runner listener exit with Session Conflict error, stop the service, no retry needed.\n",
    );
    let exiting = out.find("Exiting runner...\n");
    assert!(conflict.zip(exiting).is_some_and(|(c, e)| c < e), "{out}");
    assert!(c.root.join("run-helper.sh").exists());
    wait_gh(&c.gh, "the competing session still open", |s| {
        s.runner(c.id)
            .is_some_and(|r| r.status == RunnerStatus::Online)
    });
}

#[test]
fn fake_runner_jit_config_from_fake_github_runs_one_job() {
    let dir = tmp();
    let root = tiny(dir.path());
    let gh = crate::kit::github::FakeGitHub::start();
    gh.add_repo(REPO);
    let scopes = vec!["repo".to_owned()];
    gh.add_token("pat", crate::kit::github::TokenKind::Classic { scopes });
    let resp: serde_json::Value = reqwest::blocking::Client::new()
        .post(format!(
            "{}/repos/{REPO}/actions/runners/generate-jitconfig",
            gh.api_url()
        ))
        .bearer_auth("pat")
        .header("user-agent", "corral-tests")
        .json(&serde_json::json!({"name": "jit", "runner_group_id": 1, "labels": ["jit-pool"]}))
        .timeout(crate::kit::proc::TIMEOUT)
        .send()
        .expect("generate-jitconfig")
        .json()
        .expect("JSON reply");
    let jit = resp["encoded_jit_config"]
        .as_str()
        .expect("encoded_jit_config");
    let id = resp["runner"]["id"].as_u64().expect("runner id");
    let mut p = Proc::spawn(listener(&root, &["run", "--jitconfig", jit]));
    p.wait_for("Listening for Jobs");
    let job = gh.queue_job(
        REPO,
        &["jit-pool"],
        spec("jit-job", Duration::from_millis(100)),
    );
    assert_eq!(p.exit_code(), 0, "{}", p.output());
    let done = gh.job(job).expect("the job");
    assert_eq!(done.conclusion.as_deref(), Some("success"));
    assert_eq!(done.runner_id, Some(id));
    assert!(
        gh.runner(id).is_none(),
        "a JIT registration is gone after its job"
    );
    assert!(
        !root.join(".runner").exists(),
        "ephemeral: local config cleaned up"
    );
}
