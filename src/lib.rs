//! corral keeps a host's GitHub Actions self-hosted runners equal to a declarative
//! `runners.yaml`.
//!
//! # Layout
//!
//! - [`config`]: the desired state — `runners.yaml` read, checked, defaults merged, `count`
//!   expanded into [`config::Desired`].
//! - [`observe`]: what is on the host — runner directories, corral's records and live
//!   listener processes under `state_dir` — as [`observe::Observed`].
//! - [`reconcile`]: the pure planner, `plan(&Desired, &Observed) -> Vec<Action>`; no I/O.
//! - [`scale`]: which instances of `scale` pools exist now, from demand and idle times; pure.
//! - [`controller`]: `corral run` — triggers, passes, apply steps, shutdown.
//! - [`provision`]: runner directories as hard-link trees of one immutable base.
//! - [`bases`]: runner releases downloaded, checked, extracted and kept under
//!   `<state_dir>/bases/<version>`.
//! - [`registration`]: `config.sh` configure/remove, tokens in the environment only.
//! - [`supervisor`]: one listener's life behind a handle (start, adopt, signal, wait, stop);
//!   [`process`] launches and signals (start time checked), [`procfs`] reads `/proc`;
//!   [`markers`], [`backoff`], [`users`]: reading and restarting listeners.
//! - [`github`], [`secret`]: the REST client and secrets that never print.
//! - [`watch`]: the config file watch; [`status`]: `status.json` and `corral status`;
//!   [`api`]: the optional HTTP status API and metrics.
//! - [`layout`]: paths and records under `state_dir`; [`cli`], [`cli_base`]: the command
//!   line.
//!
//! Every trigger runs the same observe → plan → apply pass (DESIGN.md). The planner trusts
//! no trigger's payload, only what it observes.

pub mod api;
pub mod backoff;
pub mod bases;
pub mod cgroup;
pub mod cli;
pub mod cli_base;
pub mod config;
pub mod controller;
pub mod crashpoint;
pub mod docker;
pub mod github;
pub mod gitsource;
pub mod layout;
pub mod markers;
pub mod observe;
pub mod plan_view;
pub mod process;
pub mod procfs;
pub mod provision;
pub mod reconcile;
pub mod registration;
pub mod scale;
pub mod scaleset;
pub mod secret;
pub mod status;
pub mod supervisor;
pub mod users;
pub mod watch;

/// An error with its causes, on one line: `error: cause: cause`.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
