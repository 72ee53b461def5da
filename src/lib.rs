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
//! - [`provision`]: runner directories as hard-link trees of one immutable base.
//! - [`cli`]: the command line (`check`, `plan`, `schema`).
//!
//! Every trigger runs the same observe → plan → apply pass (DESIGN.md). The planner trusts
//! no trigger's payload, only what it observes.

pub mod cli;
pub mod config;
pub mod layout;
pub mod observe;
pub mod provision;
pub mod reconcile;
