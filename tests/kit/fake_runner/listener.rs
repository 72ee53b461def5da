//! `run` (contract §4, §5, §9.7–9.9): session, long poll, one Worker child per job.
//! Every input (signals, poll results, Worker exit) arrives on one channel.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use base64::Engine as _;
use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use nix::sys::signal::Signal;
use nix::unistd::{pipe2, Pid};
use serde_json::{json, Value};

use crate::args::Command;
use crate::settings::{self, Settings};
use crate::{diag, http, signals, Ctx};

pub enum Event {
    Signal(Signal),
    Message(Value),
    Deleted,
    PollError(String),
    Reconnected,
    PollFatal(String),
    WorkerExit(i32),
}

struct Job {
    id: u64,
    name: String,
    to_worker: File,
    _from_worker: File,
    pid: Pid,
}

struct Listener<'a> {
    ctx: &'a Ctx,
    cfg: Settings,
    session: String,
    once: bool,
    tx: Sender<Event>,
    job: Option<Job>,
    stopping: bool,
    sigterm: bool,
    pending_exit: Option<i32>,
}

pub fn run(ctx: &Ctx, cmd: &Command) -> i32 {
    if let Some(jit) = cmd.arg("jitconfig") {
        if let Err(e) = write_jitconfig(ctx, &jit) {
            diag::err(&format!(
                "An error occurred: Failed to decode the jitconfig: {e}"
            ));
            return 1;
        }
    }
    if let Some(code) = ctx.knobs.exit_at_start {
        diag::err("An error occurred: the fake runner was told to crash at start");
        return code;
    }
    let Some(cfg) = settings::load(&ctx.root) else {
        diag::err(
            "An error occurred: Not configured. Run config.(sh/cmd) to configure the runner.",
        );
        return 1;
    };
    if cmd.flag("once") {
        diag::out("Warning: '--once' is going to be deprecated in the future, please consider using '--ephemeral' during runner registration.");
    }
    diag::info(
        "Runner",
        &format!(
            "Runner '{}' (id {}) at {}",
            cfg.agent_name, cfg.agent_id, cfg.server_url
        ),
    );
    let _ = std::fs::create_dir_all(settings::work_dir(&ctx.root, &cfg.work_folder));
    let (tx, rx) = mpsc::channel();
    let sig_tx = tx.clone();
    let ignore_sigint = ctx.knobs.ignore_sigint;
    signals::spawn(move |sig| {
        if ignore_sigint && sig == nix::sys::signal::Signal::SIGINT {
            diag::out("SIGINT ignored (fake-runner.json ignore_sigint)");
            return;
        }
        let _ = sig_tx.send(Event::Signal(sig));
    });
    let session = match create_session(ctx, &cfg, &rx) {
        Ok(s) => s,
        Err(code) => return code,
    };
    diag::out(&format!("Current runner version: '{}'", ctx.knobs.version));
    diag::out_ts("Listening for Jobs");
    spawn_poller(ctx, &cfg, &session, tx.clone());
    let once = cmd.flag("once") || cfg.ephemeral;
    let mut listener = Listener {
        ctx,
        cfg,
        session,
        once,
        tx,
        job: None,
        stopping: false,
        sigterm: false,
        pending_exit: None,
    };
    loop {
        let Ok(event) = rx.recv() else { return 2 };
        if let Some(code) = listener.handle(event) {
            return code;
        }
    }
}

/// §7: every entry of the base64 JSON map becomes `Root/<key>` with the decoded bytes.
fn write_jitconfig(ctx: &Ctx, b64: &str) -> Result<(), String> {
    let engine = base64::engine::general_purpose::STANDARD;
    let bytes = engine.decode(b64.trim()).map_err(|e| e.to_string())?;
    let map: std::collections::BTreeMap<String, String> =
        serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    for (key, value) in &map {
        // Only plain root file names: the fake must not write outside §2.4's files.
        if key.is_empty() || key.contains('/') || key == "." || key == ".." {
            return Err(format!("invalid file name '{key}'"));
        }
        let content = engine.decode(value).map_err(|e| e.to_string())?;
        let path = ctx.root.join(key);
        let _ = std::fs::remove_file(&path);
        std::fs::write(&path, content).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn auth(cfg: &Settings) -> String {
    format!("Bearer {}", cfg.client_id)
}

/// README step 4, with the real runner's retry rules for conflicts and transport errors.
fn create_session(ctx: &Ctx, cfg: &Settings, rx: &Receiver<Event>) -> Result<String, i32> {
    diag::out("");
    diag::out("√ Connected to GitHub");
    diag::out("");
    let url = format!("{}runners/{}/sessions", cfg.server_url, cfg.agent_id);
    let started = Instant::now();
    let limit = Duration::from_secs(ctx.knobs.session_conflict_retry_secs);
    let mut erroring = false;
    loop {
        let resp = http::request(
            "POST",
            &url,
            Some(&auth(cfg)),
            Some(&json!({})),
            Duration::from_secs(30),
        );
        let error = match resp {
            Ok(r) if r.status == 200 || r.status == 201 => {
                if let Some(id) = r.json()["session_id"].as_str().map(str::to_owned) {
                    if erroring {
                        diag::out_ts("Runner reconnected.");
                    }
                    diag::info("MessageListener", &format!("Session created: {id}"));
                    return Ok(id);
                }
                "the session response has no session_id".to_owned()
            }
            Ok(r) if r.status == 404 => {
                diag::err("Failed to create a session. The runner registration has been deleted from the server, please re-configure. Runner registrations are automatically deleted for runners that have not connected to the service recently.");
                return Err(1);
            }
            Ok(r) if r.status == 409 => {
                diag::err("A session for this runner already exists.");
                if started.elapsed() >= limit {
                    diag::err(&format!(
                        "Stop retry on SessionConflictException after retried for {} seconds.",
                        limit.as_secs()
                    ));
                    return Err(5);
                }
                "A session for this runner already exists.".to_owned()
            }
            Ok(r) => format!(
                "Response status code does not indicate success: {} ({}).",
                r.status,
                http::reason(r.status).1
            ),
            Err(e) => e.to_string(),
        };
        if !erroring {
            diag::err(&format!(
                "{}: Runner connect error: {error}. Retrying until reconnected.",
                diag::stamp()
            ));
            erroring = true;
        }
        if let Some(code) = pause_for_signal(rx) {
            return Err(code);
        }
    }
}

/// The retry pause doubles as the signal check while no session exists yet.
fn pause_for_signal(rx: &Receiver<Event>) -> Option<i32> {
    match rx.recv_timeout(Duration::from_secs(1)) {
        Ok(Event::Signal(sig)) => {
            diag::out("Exiting...");
            Some(if sig == Signal::SIGTERM { 143 } else { 0 })
        }
        Ok(_) | Err(RecvTimeoutError::Timeout) => None,
        Err(RecvTimeoutError::Disconnected) => Some(2),
    }
}

/// README step 5 on its own thread so the main loop stays responsive.
fn spawn_poller(ctx: &Ctx, cfg: &Settings, session: &str, tx: Sender<Event>) {
    let wait = ctx.knobs.poll_wait_secs;
    let url = format!(
        "{}runners/{}/message?session_id={session}&wait={wait}",
        cfg.server_url, cfg.agent_id
    );
    let auth = auth(cfg);
    std::thread::spawn(move || {
        let mut failures = 0_u32;
        loop {
            let resp = http::request(
                "GET",
                &url,
                Some(&auth),
                None,
                Duration::from_secs(wait + 15),
            );
            let event = match resp {
                Ok(r) if r.status == 200 => Some(Event::Message(r.json())),
                Ok(r) if r.status == 204 => None,
                Ok(r) if r.status == 404 => {
                    let _ = tx.send(Event::Deleted);
                    return;
                }
                Ok(r) => Some(Event::PollError(format!(
                    "Response status code does not indicate success: {}",
                    r.status
                ))),
                Err(e) => Some(Event::PollError(e.to_string())),
            };
            if let Some(Event::PollError(msg)) = event {
                // Only the first error of a streak is printed; ten in a row end the run.
                failures += 1;
                if failures >= 10 {
                    let _ = tx.send(Event::PollFatal(msg));
                    return;
                }
                if failures == 1 {
                    let _ = tx.send(Event::PollError(msg));
                }
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
            if failures > 0 {
                failures = 0;
                let _ = tx.send(Event::Reconnected);
            }
            if let Some(ev) = event {
                if tx.send(ev).is_err() {
                    return;
                }
            }
        }
    });
}

impl Listener<'_> {
    /// Returns the exit code once the process should end.
    fn handle(&mut self, event: Event) -> Option<i32> {
        match event {
            Event::Signal(sig) => self.on_signal(sig),
            Event::Message(msg) => self.on_message(&msg),
            Event::Deleted => {
                if let Some(job) = &self.job {
                    let _ = nix::sys::signal::kill(job.pid, Signal::SIGKILL);
                }
                diag::out(
                    "The runner no longer exists on the server. Cleaning up local configuration.",
                );
                settings::delete_local_config(&self.ctx.root);
                Some(0)
            }
            Event::PollError(msg) => {
                diag::err(&format!(
                    "{}: Runner connect error: {msg}. Retrying until reconnected.",
                    diag::stamp()
                ));
                None
            }
            Event::Reconnected => {
                diag::out_ts("Runner reconnected.");
                None
            }
            Event::PollFatal(msg) => {
                diag::err(&format!("{}: An error occurred: {msg}", diag::stamp()));
                Some(self.finish(2))
            }
            Event::WorkerExit(code) => self.on_worker_exit(code),
        }
    }

    fn on_signal(&mut self, sig: Signal) -> Option<i32> {
        if sig == Signal::SIGTERM && !self.sigterm {
            self.sigterm = true;
            // SIGTERM: the process is gone within 30 s whatever the Worker does (§4.3).
            std::thread::spawn(|| {
                std::thread::sleep(Duration::from_secs(30));
                std::process::exit(143);
            });
        }
        if self.stopping {
            return None;
        }
        self.stopping = true;
        diag::out("Exiting...");
        if self.job.is_some() {
            self.cancel_job();
            return None;
        }
        Some(self.finish(0))
    }

    fn on_message(&mut self, msg: &Value) -> Option<i32> {
        match msg["type"].as_str() {
            Some("job") if self.job.is_none() && !self.stopping && self.pending_exit.is_none() => {
                if let Err(e) = self.start_job(&msg["job"]) {
                    diag::err(&format!("{}: An error occurred: {e}", diag::stamp()));
                    return Some(self.finish(2));
                }
                None
            }
            Some("cancel") => {
                let id = msg["job_id"].as_u64();
                if self.job.as_ref().is_some_and(|j| Some(j.id) == id) {
                    self.cancel_job();
                }
                None
            }
            Some("exit") => {
                let code = msg["code"].as_i64().unwrap_or(2) as i32;
                if self.job.is_some() {
                    // Like an update: wait for the running job first.
                    self.pending_exit = Some(code);
                    return None;
                }
                Some(self.exit_knob(code))
            }
            other => {
                diag::warn("Runner", &format!("Ignoring message of type {other:?}"));
                None
            }
        }
    }

    fn cancel_job(&mut self) {
        if let Some(job) = &mut self.job {
            let _ = job.to_worker.write_all(b"{\"type\":\"cancel\"}\n");
        }
    }

    /// §5: print, then spawn `Bin/Runner.Worker spawnclient <in> <out>` with cwd = Bin.
    fn start_job(&mut self, job: &Value) -> std::io::Result<()> {
        let name = job["name"].as_str().unwrap_or("job").to_owned();
        let id = job["id"].as_u64().unwrap_or_default();
        diag::out_ts(&format!("Running job: {name}"));
        // Both pipes close-on-exec, then the Worker's two ends are made inheritable.
        let (worker_in, to_worker) = pipe2(OFlag::O_CLOEXEC)?;
        let (from_worker, worker_out) = pipe2(OFlag::O_CLOEXEC)?;
        for fd in [&worker_in, &worker_out] {
            fcntl(fd.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::empty()))?;
        }
        let bin = &self.ctx.bin;
        let mut child = std::process::Command::new(bin.join("Runner.Worker"))
            .arg("spawnclient")
            .arg(worker_in.as_raw_fd().to_string())
            .arg(worker_out.as_raw_fd().to_string())
            .current_dir(bin)
            .env("GITHUB_ACTIONS", "true")
            .env("CI", "true")
            .stdin(std::process::Stdio::null())
            .spawn()?;
        drop((worker_in, worker_out));
        let pid = Pid::from_raw(child.id() as i32);
        let mut to_worker = File::from(to_worker);
        let line = json!({"type": "job", "job": job}).to_string();
        to_worker.write_all(format!("{line}\n").as_bytes())?;
        let tx = self.tx.clone();
        std::thread::spawn(move || {
            let code = child.wait().map_or(1, |s| {
                use std::os::unix::process::ExitStatusExt;
                s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0))
            });
            let _ = tx.send(Event::WorkerExit(code));
        });
        self.job = Some(Job {
            id,
            name,
            to_worker,
            _from_worker: File::from(from_worker),
            pid,
        });
        Ok(())
    }

    fn on_worker_exit(&mut self, code: i32) -> Option<i32> {
        let job = self.job.take()?;
        let result = match code {
            100 => "Succeeded",
            101 => "SucceededWithIssues",
            103 => "Canceled",
            104 => "Skipped",
            105 => "Abandoned",
            _ => "Failed",
        };
        diag::out_ts(&format!("Job {} completed with result: {result}", job.name));
        self.report(job.id, result);
        if self.stopping {
            return Some(self.finish(0));
        }
        if let Some(code) = self.pending_exit {
            return Some(self.exit_knob(code));
        }
        if self.once {
            diag::info("Runner", "Job has finished at backend, the runner will exit since it is running under onetime use mode.");
            let code = self.finish(0);
            if self.cfg.ephemeral {
                settings::delete_local_config(&self.ctx.root);
            }
            return Some(code);
        }
        None
    }

    /// README step 6; the protocol knows three results, so the others are folded in.
    fn report(&self, job_id: u64, result: &str) {
        let wire = match result {
            "Canceled" => "Canceled",
            "Failed" | "Abandoned" => "Failed",
            _ => "Succeeded",
        };
        let url = format!("{}jobs/{job_id}/complete", self.cfg.server_url);
        let body = json!({"result": wire});
        if let Err(e) = http::request(
            "POST",
            &url,
            Some(&auth(&self.cfg)),
            Some(&body),
            Duration::from_secs(30),
        ) {
            diag::warn(
                "JobDispatcher",
                &format!("Failed to report job completion: {e}"),
            );
        }
    }

    /// Deletes the session (best effort, ≤30 s) and picks the exit code.
    fn finish(&self, code: i32) -> i32 {
        let url = format!(
            "{}runners/{}/sessions/{}",
            self.cfg.server_url, self.cfg.agent_id, self.session
        );
        let _ = http::request(
            "DELETE",
            &url,
            Some(&auth(&self.cfg)),
            None,
            Duration::from_secs(30),
        );
        if self.sigterm {
            143
        } else {
            code
        }
    }

    /// The `exit` test knob (§9.9): behave as the real runner does before exiting with `code`.
    fn exit_knob(&self, code: i32) -> i32 {
        match code {
            1 => diag::err("Failed to create a session. The runner registration has been deleted from the server, please re-configure. Runner registrations are automatically deleted for runners that have not connected to the service recently."),
            2 => diag::err(&format!("{}: An error occurred: Fake retryable error requested by the server.", diag::stamp())),
            3 | 4 => {
                let v = &self.ctx.knobs.version;
                for line in ["Runner update in progress, do not shutdown runner.", &format!("Downloading {v} runner"), "Waiting for current job finish running.", "Generate and execute update script.", "Runner will exit shortly for update, should be back online within 10 seconds."] {
                    diag::out_ts(line);
                }
                // The update script's marker, in the current directory (contract §2.4).
                let _ = std::fs::write("update.finished", b"");
            }
            5 => diag::err("A session for this runner already exists."),
            7 => {
                diag::err(&format!("An error occurred: Runner version v{} is deprecated and cannot receive messages.", self.ctx.knobs.version));
                let deprecated = std::env::var("ACTIONS_RUNNER_RETURN_VERSION_DEPRECATED_EXIT_CODE")
                    .is_ok_and(|v| v.trim().eq_ignore_ascii_case("true") || v.trim() == "1");
                return self.finish(if deprecated { 7 } else { 1 });
            }
            _ => {}
        }
        self.finish(code)
    }
}
