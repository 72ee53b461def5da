//! corral's integration tests: one test binary, one module per area (just's layout).

mod kit;

mod bases;
mod bases_cli;
mod check;
mod fake_github_tests;
mod fake_runner_tests;
mod fleet;
mod github_client;
mod github_client_app;
mod plan;
mod provision;
mod provision_e2e;
mod run;
mod run_api;
mod run_edges;
mod run_github;
mod run_release;
mod scale;
mod schema;
mod ship;
mod webhook;
