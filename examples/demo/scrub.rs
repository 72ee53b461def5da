//! A nested cargo without the environment cargo gave this program (shared with
//! `tests/ship_demo.rs`, which runs the demo through cargo from inside `cargo test`).

use std::process::Command;

/// Removes what `cargo run` (or `cargo test`) set for the running program: a nested cargo would
/// take it as the build's own environment, and build scripts that watch such variables
/// (`CARGO_MANIFEST_DIR`) would rerun and rebuild half the dependency tree every time.
pub fn scrub_cargo_run_env(cmd: &mut Command) {
    const SET_FOR_THE_PROGRAM: [&str; 8] = [
        "CARGO_MANIFEST_",
        "CARGO_PKG_",
        "CARGO_CRATE_",
        "CARGO_BIN_",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_TARGET_TMPDIR",
        "CARGO_RUSTC_CURRENT_DIR",
        "OUT_DIR",
    ];
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if SET_FOR_THE_PROGRAM.iter().any(|p| name.starts_with(p)) {
            cmd.env_remove(name.as_ref());
        }
    }
}
