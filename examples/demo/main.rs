//! `cargo run --example demo`: corral converging, in about a minute, with no GitHub account.
//!
//! It starts the test kit's fake GitHub on loopback and a fake runner install (the official
//! layout, with a stand-in listener), writes a `runners.yaml`, runs the real `corral run` on
//! it, queues a job, edits the file while the job runs, and narrates what corral does until
//! the host and the fake GitHub equal the file again. It exits non-zero, with corral's log, if
//! they do not converge in time.
//!
//! Cargo builds an example without the package's binaries, so the demo builds `corral` and
//! `corral-fake-runner` itself with the cargo that runs it (same profile and target dir).

#[path = "../../tests/kit/github/mod.rs"]
mod github;
#[path = "../../tests/kit/install.rs"]
#[allow(dead_code, reason = "the demo uses part of the kit's install builder")]
mod install;

mod scrub;
mod steps;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{bail, Context};

use scrub::scrub_cargo_run_env;
use steps::Demo;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("\nThe demo failed: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let bins = build_binaries()?;
    let mut demo = Demo::start(&bins)?;
    let result = demo.play();
    if result.is_err() {
        demo.keep_for_inspection();
    }
    result
}

/// The two binaries the demo runs.
pub struct Binaries {
    /// The real `corral`.
    pub corral: PathBuf,
    /// The kit's fake `Runner.Listener`/`Runner.Worker`.
    pub fake_runner: PathBuf,
}

/// `cargo build --bin corral --bin corral-fake-runner` in this demo's profile and target dir;
/// the executables' paths come from cargo's JSON messages.
fn build_binaries() -> anyhow::Result<Binaries> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let exe = std::env::current_exe().context("the demo's own path")?;
    // <target dir>/<profile dir>/examples/demo
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("the demo runs from <target>/<profile>/examples")?;
    let target_dir = profile_dir.parent().context("a target dir")?;
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev",
        Some(other) => other,
    };
    println!("Building corral and the fake runner (cargo build, profile {profile})...");
    let mut build = Command::new(&cargo);
    scrub_cargo_run_env(&mut build);
    let out = build
        .args(["build", "--bin", "corral", "--bin", "corral-fake-runner"])
        .args([
            "--message-format",
            "json-render-diagnostics",
            "--profile",
            profile,
        ])
        .arg("--manifest-path")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir)
        .output()
        .with_context(|| format!("run {}", Path::new(&cargo).display()))?;
    if !out.status.success() {
        bail!(
            "cargo build failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (mut corral, mut fake_runner) = (None, None);
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let Some(path) = msg["executable"].as_str() else {
            continue;
        };
        match msg["target"]["name"].as_str() {
            Some("corral") => corral = Some(PathBuf::from(path)),
            Some("corral-fake-runner") => fake_runner = Some(PathBuf::from(path)),
            _ => {}
        }
    }
    Ok(Binaries {
        corral: corral.context("cargo built no `corral` executable")?,
        fake_runner: fake_runner.context("cargo built no `corral-fake-runner` executable")?,
    })
}
