//! Runs the real `corral` binary, as a user would.

use std::path::Path;
use std::process::{Command, Output};

/// The built `corral` binary.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_corral")
}

/// Runs `corral ARGS` in `dir` with a clean `CORRAL_CONFIG` and returns what it did.
pub fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new(binary())
        .args(args)
        .current_dir(dir)
        .env_remove("CORRAL_CONFIG")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run the corral binary")
}

/// stdout and stderr of `out` as text.
pub fn texts(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
