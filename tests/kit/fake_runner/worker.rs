//! `Runner.Worker spawnclient <in> <out>` (contract §5, §9.7): reads one job from the
//! inherited pipe, "runs" it for `duration_ms`, exits `100 + TaskResult`.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use nix::sys::signal::{SigSet, Signal};
use serde_json::Value;

use crate::{diag, settings, signals, Ctx};

enum Event {
    Job(Value),
    Cancel(&'static str),
}

pub fn main(ctx: &Ctx, argv: &[String]) -> i32 {
    let fds: Option<(i32, i32)> = match argv {
        [cmd, a, b] if cmd == "spawnclient" => a.parse().ok().zip(b.parse().ok()),
        _ => None,
    };
    let Some((fd_in, fd_out)) = fds else {
        diag::err("Runner.Worker: usage: Runner.Worker spawnclient <pipeIn> <pipeOut>");
        return 1;
    };
    // SIGINT/SIGQUIT stay blocked and are never waited for: ignored, so a terminal Ctrl-C
    // reaches the Listener, which cancels us over the pipe (§4.3).
    let mut set = SigSet::empty();
    for sig in [Signal::SIGINT, Signal::SIGQUIT, Signal::SIGTERM] {
        set.add(sig);
    }
    let _ = set.thread_block();
    diag::init(&ctx.root.join("_diag"), "Worker");
    diag::info(
        "Worker",
        &format!("Well known directory 'Bin': '{}'", ctx.bin.display()),
    );
    diag::info(
        "Worker",
        &format!("Well known directory 'Root': '{}'", ctx.root.display()),
    );
    // Opening /proc/self/fd/N reopens the inherited pipe end without unsafe fd adoption.
    let (Ok(input), Ok(mut output)) = (
        File::open(format!("/proc/self/fd/{fd_in}")),
        OpenOptions::new()
            .write(true)
            .open(format!("/proc/self/fd/{fd_out}")),
    ) else {
        diag::err("Runner.Worker: cannot open the pipes given on the command line");
        return 1;
    };
    let (tx, rx) = mpsc::channel();
    let sig_tx = tx.clone();
    signals::spawn_for(Some(Signal::SIGTERM), move |_| {
        let _ = sig_tx.send(Event::Cancel("The runner has received a shutdown signal."));
    });
    spawn_reader(input, tx);
    let Ok(Event::Job(job)) = rx.recv_timeout(Duration::from_secs(30)) else {
        diag::err("Runner.Worker: no job message received within 30 seconds");
        return 1;
    };
    let _ = writeln!(output, "{{\"type\":\"started\"}}");
    let result = run_job(ctx, &job, &rx);
    diag::info("Worker", &format!("Job result: {result}"));
    let _ = writeln!(output, "{{\"type\":\"result\",\"result\":\"{result}\"}}");
    100 + result_code(result)
}

/// Job and cancel messages from the Listener; EOF (Listener gone) also cancels.
fn spawn_reader(input: File, tx: mpsc::Sender<Event>) {
    std::thread::spawn(move || {
        for line in BufReader::new(input).lines() {
            let Ok(msg) = line.map(|l| serde_json::from_str::<Value>(&l).unwrap_or(Value::Null))
            else {
                break;
            };
            let event = match msg["type"].as_str() {
                Some("job") => Event::Job(msg["job"].clone()),
                _ => Event::Cancel("The job was canceled by the runner listener."),
            };
            let _ = tx.send(event);
        }
        // The Listener is gone: nobody will collect the result.
        let _ = tx.send(Event::Cancel("The runner listener pipe was closed."));
    });
}

fn run_job(ctx: &Ctx, job: &Value, rx: &mpsc::Receiver<Event>) -> &'static str {
    let name = job["name"].as_str().unwrap_or("job");
    diag::info("Worker", &format!("Job message received: {name}"));
    let work_folder =
        settings::load(&ctx.root).map_or_else(|| "_work".to_owned(), |s| s.work_folder);
    let work = settings::work_dir(&ctx.root, &work_folder);
    let repo = job["repo"].as_str().unwrap_or("repo");
    let repo_name = repo.rsplit('/').next().unwrap_or(repo);
    for dir in [work.join(repo_name).join(repo_name), work.join("_temp")] {
        if let Err(e) = std::fs::create_dir_all(&dir) {
            diag::warn("Worker", &format!("cannot create {}: {e}", dir.display()));
        }
    }
    if !run_node(ctx) {
        return "Failed";
    }
    if !run_steps(job) {
        return "Failed";
    }
    let duration = Duration::from_millis(job["duration_ms"].as_u64().unwrap_or(0));
    match rx.recv_timeout(duration) {
        Ok(Event::Cancel(why)) => {
            diag::info("Worker", why);
            "Canceled"
        }
        Ok(Event::Job(_)) | Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
            match job["result"].as_str().unwrap_or("Succeeded") {
                "SucceededWithIssues" => "SucceededWithIssues",
                "Failed" => "Failed",
                "Canceled" => "Canceled",
                "Skipped" => "Skipped",
                "Abandoned" => "Abandoned",
                _ => "Succeeded",
            }
        }
    }
}

/// The job's `steps` (tests/kit/README.md, "Job steps"), as the job's user; each outcome is
/// a `step …: ok` or `step …: error: …` line in the Worker log. False if any step failed.
fn run_steps(job: &Value) -> bool {
    let mut all_ok = true;
    for step in job["steps"].as_array().into_iter().flatten() {
        let (what, outcome) = if let Some(path) = step["read"].as_str() {
            let outcome = if std::path::Path::new(path).is_dir() {
                std::fs::read_dir(path).map(drop)
            } else {
                std::fs::read(path).map(drop)
            };
            (format!("read {path}"), outcome)
        } else if let Some(path) = step["write"].as_str() {
            let outcome = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .and_then(|mut f| f.write_all(b"written by a hostile job\n"));
            (format!("write {path}"), outcome)
        } else if let (Some(target), Some(link)) = (step["symlink"].as_str(), step["link"].as_str())
        {
            let outcome = std::os::unix::fs::symlink(target, link);
            (format!("symlink {link} -> {target}"), outcome)
        } else if let Some(script) = step["run"].as_str() {
            (format!("run {script}"), run_script(script))
        } else if step["env"].as_bool() == Some(true) {
            for (key, value) in std::env::vars_os() {
                diag::info(
                    "Step",
                    &format!("env {}={}", key.to_string_lossy(), value.to_string_lossy()),
                );
            }
            ("env".to_owned(), Ok(()))
        } else {
            (
                format!("unknown {step}"),
                Err(std::io::Error::other("unknown step")),
            )
        };
        match outcome {
            Ok(()) => diag::info("Step", &format!("step {what}: ok")),
            Err(e) => {
                all_ok = false;
                diag::info("Step", &format!("step {what}: error: {e}"));
            }
        }
    }
    all_ok
}

/// A `run` step: `sh -c SCRIPT` in the job's environment, as a workflow's `run:` is; each
/// line it prints goes to the Worker log as `run> …`.
fn run_script(script: &str) -> std::io::Result<()> {
    let out = std::process::Command::new("sh")
        .args(["-c", script])
        .stdin(std::process::Stdio::null())
        .output()?;
    for line in String::from_utf8_lossy(&out.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&out.stderr).lines())
    {
        diag::info("Step", &format!("run> {line}"));
    }
    if out.status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!("exited with {}", out.status)))
    }
}

/// Every job runs `<Root>/externals/node20/bin/node --version`, as the real Worker runs node
/// for JavaScript actions, so a broken `externals` (link) fails the job.
fn run_node(ctx: &Ctx) -> bool {
    let node = ctx.root.join("externals/node20/bin/node");
    match std::process::Command::new(&node).arg("--version").output() {
        Ok(out) if out.status.success() => {
            let version = String::from_utf8_lossy(&out.stdout);
            diag::info(
                "Worker",
                &format!("{} --version: {}", node.display(), version.trim()),
            );
            true
        }
        Ok(out) => {
            diag::warn(
                "Worker",
                &format!("{} --version failed: {}", node.display(), out.status),
            );
            false
        }
        Err(e) => {
            diag::warn("Worker", &format!("cannot run {}: {e}", node.display()));
            false
        }
    }
}

fn result_code(result: &str) -> i32 {
    match result {
        "SucceededWithIssues" => 1,
        "Failed" => 2,
        "Canceled" => 3,
        "Skipped" => 4,
        "Abandoned" => 5,
        _ => 0,
    }
}
