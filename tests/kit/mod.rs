//! The test kit; see `tests/kit/README.md`.
#![allow(dead_code)] // Each test module uses a different part of the kit.

pub mod cmd;
pub mod compose;
pub mod container;
pub mod daemon;
pub mod docker;
pub mod docker_image;
pub mod fleet;
pub mod github;
pub mod install;
pub mod proc;
pub mod rng;
pub mod tarball;
