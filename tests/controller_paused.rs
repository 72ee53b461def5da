//! The controller driven as a whole on tokio's paused clock, against the fake GitHub served
//! on the test's own runtime (`FakeGitHub::start_local`): drain deadlines and shutdown, with
//! every decision hinging on the fake's answers and asserted on the virtual time of the
//! requests it recorded.
//!
//! A runner is "removed while busy" by building its directory and records as corral would
//! have left them and starting corral with a file that no longer names it: the first pass
//! then plans its removal, with no file event (from another thread) in between. Where a
//! listener is needed, a `sleep` in a session of its own stands in for it: corral adopts it
//! by its record and only signals it. Waiting for a process to exit lets the paused clock
//! jump (the exit comes from outside the runtime), so such waits are asserted only on what a
//! jump cannot break.

mod kit;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use corral::layout::{write_record, ProcessRecord, SpecRecord, StateLayout};
use tokio::sync::mpsc;
use tokio::time::Instant;

use kit::github::{FakeGitHub, Fault, RecordedRequest, Route, TokenKind};
use kit::install::FakeRunnerInstall;

const PAT: &str = "ghp_corralTestPat0123456789abcdefABCDEF";
const REPO: &str = "owner/repo";
const HOST: &str = "paused-host";
/// `DRAIN_RETRY` of the controller: how often a draining runner's DELETE is tried again.
const DRAIN_RETRY: Duration = Duration::from_secs(2);
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// The GitHub client's own timeout: a stop must never wait for it.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Every test's bound, in virtual time (a controller that idles moves it fast).
const BOUND: Duration = Duration::from_secs(600);

/// One test's world: a temp dir with a fake runner base and a token file, the fake GitHub.
struct Scene {
    dir: tempfile::TempDir,
    gh: FakeGitHub,
    shutdown_timeout: Duration,
}

impl Scene {
    fn new(shutdown_timeout: Duration) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let gh = FakeGitHub::start_local();
        gh.add_repo(REPO);
        gh.add_token(
            PAT,
            TokenKind::Classic {
                scopes: vec!["repo".into()],
            },
        );
        FakeRunnerInstall::new()
            .build(&dir.path().join("base"))
            .expect("build the fake runner base");
        std::fs::write(dir.path().join("token"), PAT).expect("write the token file");
        std::fs::create_dir_all(dir.path().join("etc")).expect("config dir");
        Scene {
            dir,
            gh,
            shutdown_timeout,
        }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("etc/runners.yaml")
    }

    fn layout(&self) -> StateLayout {
        StateLayout::new(self.dir.path().join("state"))
    }

    /// A config against the fake with `runners` (YAML under `runners:`, or ` []`); paths are
    /// absolute, since the controller runs in this process.
    fn config_text(&self, runners: &str) -> String {
        let root = self.dir.path().display();
        format!(
            "base:\n  path: {root}/base\nstate_dir: {root}/state\nresync_interval: 60s\n\
             shutdown_timeout: {shutdown}s\n\
             github:\n  url: {web}\n  api_url: {api}\n  token_file: {root}/token\n\
             defaults:\n  allow_root: true\n  drain_timeout: {drain}s\nrunners:{runners}",
            shutdown = self.shutdown_timeout.as_secs(),
            drain = DRAIN_TIMEOUT.as_secs(),
            web = self.gh.web_url(),
            api = self.gh.api_url(),
        )
    }

    /// Runner `name` as corral leaves it once registered: its directory built from the base,
    /// an identity, and the spec record with the id of a registration made on the fake.
    /// Returns that id.
    async fn registered(&self, name: &str) -> u64 {
        let text = self.config_text(&format!("\n  - name: {name}\n    repo: {REPO}\n"));
        let desired = corral::config::parse(&text, &self.config()).expect("config");
        let spec = desired.runners[name].clone();
        let client = corral::github::GitHubClient::new(desired.github.as_ref().expect("github"));
        let jit = client
            .generate_jitconfig(&spec.repo, name, &spec.all_labels(), "_work")
            .await
            .expect("a registration on the fake");
        let base = corral::provision::Base::open(&self.dir.path().join("base")).expect("base");
        let layout = self.layout();
        corral::provision::Provisioner::new(layout.clone(), Arc::new(base), None)
            .provision(name)
            .expect("provision");
        std::fs::write(layout.runner_dir(name).join(".runner"), "{}").expect("identity");
        let record = SpecRecord {
            registration_hash: spec.registration_hash(),
            runtime_hash: spec.runtime_hash(),
            spec: Some(spec),
            runner_id: Some(jit.runner_id),
        };
        write_record(&layout.spec_record(name), &record).expect("spec record");
        jit.runner_id
    }

    /// Writes a config that names no runner.
    fn write_empty_config(&self) {
        std::fs::write(self.config(), self.config_text(" []\n")).expect("write config");
    }

    /// DELETE requests for registration `id`, oldest first.
    fn deletes(&self, id: u64) -> Vec<RecordedRequest> {
        let path = format!("/repos/{REPO}/actions/runners/{id}");
        self.gh
            .requests()
            .into_iter()
            .filter(|r| r.method == "DELETE" && r.path == path)
            .collect()
    }

    /// When each DELETE of registration `id` arrived, counted from the first.
    fn delete_times(&self, id: u64) -> Vec<Duration> {
        let deletes = self.deletes(id);
        deletes
            .iter()
            .map(|r| r.at.duration_since(deletes[0].at))
            .collect()
    }

    /// Resolves once the fake has seen `n` DELETEs of registration `id`.
    async fn deletes_reach(&self, id: u64, n: usize) {
        let path = format!("/repos/{REPO}/actions/runners/{id}");
        self.gh
            .until(|s| {
                s.requests()
                    .iter()
                    .filter(|r| r.method == "DELETE" && r.path == path)
                    .count()
                    >= n
            })
            .await;
    }
}

/// A stand-in listener: `sleep` in a session of its own (corral's stop signals the
/// listener's session; this one must never be the test's), reaped by a thread so that its
/// exit shows at once. `worker`: it runs a child named `Runner.Worker` (a job is running).
struct FakeListener {
    pid: i32,
    start_time: u64,
}

impl FakeListener {
    fn spawn(dir: &Path, worker: bool) -> Self {
        // `setsid` execs its program in a new session without a fork: the test's child is
        // no process group leader, so the pid spawned is the session's.
        let mut cmd = std::process::Command::new(which("setsid"));
        if worker {
            // The kernel names a process after the file it runs: a link named Runner.Worker.
            let link = dir.join("Runner.Worker");
            std::os::unix::fs::symlink(which("sleep"), &link).expect("link Runner.Worker");
            cmd.args(["sh", "-c", "\"$0\" 3600 & wait"]).arg(&link);
        } else {
            cmd.args(["sleep", "3600"]);
        }
        let mut child = cmd.spawn().expect("spawn the stand-in listener");
        let pid = i32::try_from(child.id()).expect("a pid");
        std::thread::spawn(move || child.wait());
        let start_time = corral::procfs::process_start_time(pid).expect("its start time");
        if worker {
            // Its child must be there before corral looks.
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while !corral::procfs::has_worker_child(pid) {
                assert!(
                    std::time::Instant::now() < deadline,
                    "no Runner.Worker child"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        FakeListener { pid, start_time }
    }

    /// Records it as runner `name`'s listener, as corral does when it starts one.
    fn record_as(&self, layout: &StateLayout, name: &str) {
        let rec = ProcessRecord {
            pid: self.pid,
            start_time: self.start_time,
        };
        write_record(&layout.process_record(name), &rec).expect("process record");
    }

    /// Still the process it was (a reused pid is told by its start time).
    fn alive(&self) -> bool {
        corral::procfs::process_start_time(self.pid) == Some(self.start_time)
    }

    /// Alive and not exited: a zombie (exited, not yet reaped by its thread) is not running.
    fn running(&self) -> bool {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap_or_default();
        // The state follows the command name, which may hold any bytes but not end in ") ".
        let state = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next());
        self.alive() && state.is_some_and(|s| s != 'Z')
    }

    /// True once it is gone, within 10 s of real time: a signal is delivered at once, but the
    /// exit and the reaping thread's wait come after (this blocks the runtime meanwhile,
    /// which moves no virtual time).
    fn gone(&self) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self.alive() {
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }
}

impl Drop for FakeListener {
    fn drop(&mut self) {
        if self.alive() {
            // Its whole session: the shell and its Runner.Worker.
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(self.pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

fn which(program: &str) -> PathBuf {
    ["/bin", "/usr/bin"]
        .iter()
        .map(|dir| Path::new(dir).join(program))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("no {program} in /bin or /usr/bin"))
}

/// Polls `cond` every 10 ms of virtual time (for what only the file system tells).
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    while !cond() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!("{what}");
}

/// The controller's task: how its run ended, and when.
type Run = tokio::task::JoinHandle<(Result<(), corral::controller::RunError>, Instant)>;

/// Starts the controller on `config` in a task of this thread; the sender asks it to stop.
fn start(config: &Path) -> (mpsc::UnboundedSender<()>, Run) {
    let (stop, stops) = mpsc::unbounded_channel();
    let config = config.to_path_buf();
    let run = tokio::task::spawn_local(async move {
        let result = corral::controller::run_until(&config, HOST, stops).await;
        (result, Instant::now())
    });
    (stop, run)
}

/// Stops the controller and waits for it; returns when it ended.
async fn stop_and_join(stop: &mpsc::UnboundedSender<()>, run: Run) -> Instant {
    stop.send(()).expect("the controller listens");
    let (result, ended) = run.await.expect("the controller's task");
    result.expect("the controller ran");
    ended
}

/// Runs `test` in a local set on this (paused) runtime, bounded by [`BOUND`] of virtual time.
async fn bounded(test: impl std::future::Future<Output = ()>) {
    let local = tokio::task::LocalSet::new();
    tokio::time::timeout(BOUND, local.run_until(test))
        .await
        .expect("the test ends within its bound of virtual time");
}

#[tokio::test(start_paused = true)]
async fn a_busy_runner_is_drained_until_the_drain_timeout_then_stopped_and_deleted() {
    bounded(async {
        let scene = Scene::new(Duration::from_secs(20));
        let id = scene.registered("a").await;
        let listener = FakeListener::spawn(scene.dir.path(), false);
        listener.record_as(&scene.layout(), "a");
        // GitHub refuses while a job runs: every DELETE until the drain time is up, and the
        // one that finds it up (then corral stops the listener and deletes again).
        let busy = DRAIN_TIMEOUT.as_secs() / DRAIN_RETRY.as_secs() + 1;
        scene.gh.push_fault(
            Route::DeleteRunner,
            Fault::BusyDelete,
            u32::try_from(busy).expect("a count"),
        );
        scene.write_empty_config();
        let (stop, run) = start(&scene.config());
        let busy = usize::try_from(busy).expect("a count");
        for n in 1..=busy {
            // This task is woken as the fake records the request, before corral reads the
            // answer: nothing corral does after an answer shows here yet.
            scene.deletes_reach(id, n).await;
            assert!(
                listener.running(),
                "the listener was stopped before DELETE {n}"
            );
            assert!(
                scene.layout().process_record("a").exists(),
                "its record went before DELETE {n}"
            );
        }
        scene.deletes_reach(id, busy + 1).await;
        // The drain time was up at the last busy answer: the job was stopped (its listener
        // waited for) before the registration was deleted, not at another retry.
        assert!(
            !listener.running(),
            "the registration was deleted under a running job"
        );
        eventually("runner a removed", || {
            !scene.layout().runner_dir("a").exists()
        })
        .await;
        assert!(listener.gone(), "the listener outlived the drain timeout");
        assert!(
            scene.gh.runner(id).is_none(),
            "the registration is still on GitHub"
        );
        let times = scene.delete_times(id);
        eprintln!("DELETEs at {times:?}");
        assert_eq!(times.len(), busy + 1, "{times:?}");
        for pair in times[..busy].windows(2) {
            assert_eq!(
                pair[1].saturating_sub(pair[0]),
                DRAIN_RETRY,
                "retried every DRAIN_RETRY: {times:?}"
            );
        }
        assert_eq!(
            times[busy - 1],
            DRAIN_TIMEOUT,
            "the drain time was up at the last busy answer: {times:?}"
        );
        assert!(
            times[busy] >= DRAIN_TIMEOUT,
            "deleted only once the drain time was up: {times:?}"
        );
        stop_and_join(&stop, run).await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_drain_whose_job_ends_early_removes_the_runner_at_that_retry() {
    bounded(async {
        let scene = Scene::new(Duration::from_secs(20));
        let id = scene.registered("a").await;
        // Busy twice, then the job is over: GitHub deletes it at the second retry.
        scene
            .gh
            .push_fault(Route::DeleteRunner, Fault::BusyDelete, 2);
        scene.write_empty_config();
        let (stop, run) = start(&scene.config());
        scene.deletes_reach(id, 3).await;
        eventually("runner a removed", || {
            !scene.layout().runner_dir("a").exists()
        })
        .await;
        let removed = Instant::now();
        let first = scene.deletes(id)[0].at;
        let times = scene.delete_times(id);
        eprintln!("DELETEs at {times:?}");
        assert_eq!(times, [Duration::ZERO, DRAIN_RETRY, 2 * DRAIN_RETRY]);
        assert!(
            scene.gh.runner(id).is_none(),
            "the registration is still on GitHub"
        );
        assert!(
            removed.duration_since(first) < DRAIN_TIMEOUT,
            "removed at {:?}, not at the retry that found the job over",
            removed.duration_since(first)
        );
        assert!(
            !scene.layout().record_dir("a").exists(),
            "its records are still there"
        );
        stop_and_join(&stop, run).await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_stop_while_a_github_call_hangs_ends_the_run_at_once() {
    bounded(async {
        let scene = Scene::new(Duration::from_secs(20));
        let id = scene.registered("a").await;
        // The DELETE hangs for an hour: only the client's 30 s timeout would end it.
        scene.gh.push_fault(
            Route::DeleteRunner,
            Fault::Delay(Duration::from_secs(3600)),
            1,
        );
        scene.write_empty_config();
        let (stop, run) = start(&scene.config());
        scene.deletes_reach(id, 1).await;
        let asked = Instant::now();
        let ended = stop_and_join(&stop, run).await;
        assert!(
            ended.duration_since(asked) < Duration::from_secs(1),
            "the stop took {:?} of virtual time",
            ended.duration_since(asked)
        );
        assert!(ended.duration_since(scene.deletes(id)[0].at) < CLIENT_TIMEOUT);
        assert_eq!(
            scene.deletes(id).len(),
            1,
            "the hung DELETE was tried again"
        );
        assert!(
            scene.gh.runner(id).is_some(),
            "the hung DELETE completed after all"
        );
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_stop_waits_for_a_running_job_and_a_second_stop_forces() {
    let shutdown_timeout = Duration::from_secs(3600);
    bounded(async {
        let scene = Scene::new(shutdown_timeout);
        scene.registered("a").await;
        let listener = FakeListener::spawn(scene.dir.path(), true);
        listener.record_as(&scene.layout(), "a");
        // Still in the file: corral adopts the busy listener and leaves it alone.
        std::fs::write(
            scene.config(),
            scene.config_text(&format!("\n  - name: a\n    repo: {REPO}\n")),
        )
        .expect("write config");
        let (stop, mut run) = start(&scene.config());
        // A first pass ran: it wrote the status.
        eventually("status written", || scene.layout().status_file().exists()).await;
        stop.send(()).expect("the controller listens");
        let asked = Instant::now();
        // The job gets shutdown_timeout to finish: the run does not end in the next minute.
        let waited = tokio::time::timeout(Duration::from_secs(60), &mut run).await;
        assert!(waited.is_err(), "the first stop did not wait for the job");
        assert!(listener.alive(), "the first stop touched the busy listener");
        stop.send(()).expect("the controller listens");
        let forced = Instant::now();
        let (result, ended) = run.await.expect("the controller's task");
        result.expect("the controller ran");
        assert!(
            ended.duration_since(forced) < Duration::from_secs(1),
            "the second stop took {:?} of virtual time",
            ended.duration_since(forced)
        );
        assert!(ended.duration_since(asked) < shutdown_timeout);
        assert!(listener.gone(), "the second stop left the listener running");
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_hung_github_api_holds_no_local_step_of_another_runner() {
    bounded(async {
        let scene = Scene::new(Duration::from_secs(20));
        let id = scene.registered("a").await;
        // Every call hangs for an hour: each ends only at the client's 30 s timeout.
        scene
            .gh
            .push_fault(Route::Any, Fault::Delay(Duration::from_secs(3600)), 1_000);
        // a left the file (its DELETE hangs), b is new (its directory needs no GitHub).
        std::fs::write(
            scene.config(),
            scene.config_text(&format!("\n  - name: b\n    repo: {REPO}\n")),
        )
        .expect("write config");
        let started = Instant::now();
        let (stop, run) = start(&scene.config());
        scene.deletes_reach(id, 1).await;
        eventually("runner b provisioned", || {
            scene.layout().dir_record("b").exists()
        })
        .await;
        let provisioned = Instant::now().duration_since(started);
        assert!(
            provisioned < CLIENT_TIMEOUT,
            "b's directory waited {provisioned:?} for a hung call"
        );
        assert!(
            scene.gh.runner(id).is_some(),
            "a's DELETE was answered after all"
        );
        let asked = Instant::now();
        let ended = stop_and_join(&stop, run).await;
        assert!(
            ended.duration_since(asked) < Duration::from_secs(1),
            "the stop took {:?} of virtual time",
            ended.duration_since(asked)
        );
    })
    .await;
}
