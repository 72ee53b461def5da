//! corral's integration tests: one test binary, one module per area (just's layout).

mod kit;

mod check;
mod plan;
mod schema;
