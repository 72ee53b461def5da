//! The runner scale-set protocol (`reference/scaleset-api.md`), GitHub's own autoscaling
//! protocol (ARC, `actions/scaleset`): demand arrives by one long-polled message session per
//! scale set, with no inbound endpoint and about one request a minute while idle.
//!
//! # Layout
//! - `client`: the admin connection (registration token → `/actions/runner-registration` →
//!   tenant URL + admin JWT, renewed a minute before its `exp`), requests with the protocol's
//!   retries, scale sets, JIT configs, runners.
//! - `session`: the message session and its queue (long poll, ack, acquire), with the queue
//!   token refreshed on 401.
//! - `engine`: the listener loop of one scale set, publishing an [`EngineStatus`].
//! - `types`, `error`: what comes back.
//!
//! Written here rather than taken from the `scaleset` crate: that crate (0.x, one author)
//! needs Rust 1.91 where corral supports 1.85, owns the loop through its own `Listener` and
//! `Scaler` traits where corral's planner wants a status to read, and would bring a second
//! HTTP/secret stack beside `github::`; the protocol is small (about fifteen calls).
//! No token ever reaches a log line, an error or `Debug` output: tokens are [`Secret`]s.
//!
//! [`Secret`]: crate::secret::Secret

mod client;
pub mod engine;
mod error;
mod session;
mod types;

pub use client::ScaleSetClient;
pub use engine::{EngineConfig, EngineStatus, SessionState};
pub use error::ScaleSetError;
pub use session::Session;
pub use types::{JobEvent, Message, ScaleSet, ScaleSetLabel, Statistics};
