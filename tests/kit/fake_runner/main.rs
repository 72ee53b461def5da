//! `corral-fake-runner`: a stand-in for the official `Runner.Listener` / `Runner.Worker`
//! (reference/runner-contract.md §9) that speaks the private protocol of tests/kit/README.md.
//! It picks its role from the name it was executed as.

mod args;
mod configure;
mod diag;
mod http;
mod listener;
mod settings;
mod signals;
mod worker;

use std::path::{Path, PathBuf};

/// Where the fake lives and what its knob file says.
pub struct Ctx {
    pub root: PathBuf,
    pub bin: PathBuf,
    pub knobs: Knobs,
}

/// `bin/fake-runner.json`; every field optional.
#[derive(serde::Deserialize)]
#[serde(default)]
pub struct Knobs {
    pub version: String,
    pub session_conflict_retry_secs: u64,
    pub poll_wait_secs: u64,
    /// A listener that never stops on SIGINT (only SIGKILL ends it).
    pub ignore_sigint: bool,
    /// `run` exits with this code as soon as it starts (a crash-looping runner).
    pub exit_at_start: Option<i32>,
}

impl Default for Knobs {
    fn default() -> Self {
        Self {
            version: "2.336.0".to_owned(),
            session_conflict_retry_secs: 240,
            poll_wait_secs: 50,
            ignore_sigint: false,
            exit_at_start: None,
        }
    }
}

fn main() {
    std::process::exit(real_main());
}

fn real_main() -> i32 {
    // Like the .NET apphost (contract §2.2): the kernel-resolved path of the executable,
    // so a symlinked bin/ yields the base and a hard link yields the directory it sits in.
    let exe = std::fs::canonicalize("/proc/self/exe")
        .or_else(|_| std::env::current_exe())
        .unwrap_or_else(|_| PathBuf::from("/nonexistent/bin/Runner.Listener"));
    let bin = exe
        .parent()
        .map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
    let root = bin
        .parent()
        .map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
    // Environment changes happen here, before any thread exists.
    load_dot_env(&root.join(".env"));
    let knobs = load_knobs(&bin.join("fake-runner.json"));
    let ctx = Ctx { root, bin, knobs };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if is_worker(&exe) {
        worker::main(&ctx, &argv)
    } else {
        let cmd = args::Command::parse(&argv);
        listener_main(&ctx, &cmd)
    }
}

fn is_worker(exe: &Path) -> bool {
    let argv0 = std::env::args().next().unwrap_or_default();
    let by_arg = Path::new(&argv0)
        .file_name()
        .is_some_and(|n| n == "Runner.Worker");
    by_arg || exe.file_name().is_some_and(|n| n == "Runner.Worker")
}

/// §8: `KEY=VALUE` split at the first `=`, no quoting; `KEY=` unsets; other lines ignored.
fn load_dot_env(path: &Path) {
    let Ok(text) = std::fs::read_to_string(path) else {
        return;
    };
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        match line.split_once('=') {
            Some(("", _)) | None => {}
            Some((key, "")) => std::env::remove_var(key),
            Some((key, value)) => std::env::set_var(key, value),
        }
    }
}

fn load_knobs(path: &Path) -> Knobs {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn listener_main(ctx: &Ctx, cmd: &args::Command) -> i32 {
    signals::block_all();
    diag::init(&ctx.root.join("_diag"), "Runner");
    diag::info(
        "HostContext",
        &format!("Well known directory 'Bin': '{}'", ctx.bin.display()),
    );
    diag::info(
        "HostContext",
        &format!("Well known directory 'Root': '{}'", ctx.root.display()),
    );
    diag::info(
        "Runner",
        &format!(
            "Runner is built for Linux (X64) - version {}",
            ctx.knobs.version
        ),
    );
    diag::info(
        "Runner",
        &format!("Arguments parsed: command {:?}", cmd.verb),
    );
    for (name, source) in cmd.secret_sources() {
        diag::info("Runner", &format!("Secret input {name} given in {source}"));
    }
    cmd.warn_unknown();
    if cmd.flag("version") {
        diag::out(&ctx.knobs.version);
        return 0;
    }
    if cmd.flag("commit") {
        diag::out("0000000000000000000000000000000000000000");
        return 0;
    }
    if cmd.flag("help") {
        diag::out(args::USAGE);
        return 0;
    }
    match cmd.verb.as_deref() {
        Some("configure") => with_exit_on_signal(|| configure::configure(ctx, cmd)),
        Some("remove") => with_exit_on_signal(|| configure::remove(ctx, cmd)),
        Some("warmup") => 0,
        None | Some("run") => listener::run(ctx, cmd),
        Some(other) => {
            diag::err(&format!("Unrecognized command '{other}'. For usage refer to: .\\config.cmd --help or ./config.sh --help"));
            1
        }
    }
}

/// configure/remove: Ctrl-C ends the process with 1 (contract §4.3), SIGTERM with 143.
fn with_exit_on_signal(f: impl FnOnce() -> i32) -> i32 {
    signals::spawn(|sig| {
        if sig == nix::sys::signal::Signal::SIGTERM {
            std::process::exit(143);
        }
        diag::out("Exiting...");
        std::process::exit(1);
    });
    f()
}
