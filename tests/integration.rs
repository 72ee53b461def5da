//! corral's integration tests: one test binary, one module per area (just's layout).

mod kit;

mod bases;
mod bases_cli;
mod check;
mod crash;
mod docker_socket;
mod fake_github_tests;
mod fake_runner_tests;
mod fleet;
mod fuzz_corpus;
mod github_client;
mod github_client_app;
mod gitops;
mod hostile_jobs;
mod identity;
mod openapi;
mod plan;
mod provision;
mod provision_e2e;
mod readme;
mod run;
mod run_api;
mod run_edges;
mod run_faults;
mod run_github;
mod run_release;
mod scale;
mod schema;
mod security;
mod ship;
mod ship_container;
mod ship_demo;
mod ship_lint;
mod ship_unit;
mod webhook;
