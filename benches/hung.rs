//! `corral run` while every GitHub REST call hangs (the fake answers none for an hour; the
//! client gives up on each after 30 s): how long a killed listener takes to run again, an
//! edit that needs no GitHub call takes to apply, and SIGTERM takes to end corral. The
//! issue's targets: 2 s, at once, 5 s.
//!
//! Each of 10 runners has its listener killed once (a first crash: its restart backoff is
//! 1 s), one after the other. `cargo bench --bench hung` (about half a minute); `-- --quick`
//! uses 3 runners.

#[path = "../tests/kit/mod.rs"]
mod kit;

mod common;

use std::time::{Duration, Instant};

use common::{cores, save_text};
use corral::status::Status;
use kit::daemon::{runner, World};
use kit::github::{Fault, Route};

const TICK: Duration = Duration::from_millis(5);
const LIMIT: Duration = Duration::from_secs(60);

/// Seconds from now until `cond` holds for the status, read every [`TICK`].
fn seconds_until(world: &World, what: &str, cond: impl Fn(&Status) -> bool) -> f64 {
    let t0 = Instant::now();
    while t0.elapsed() < LIMIT {
        if world.status().as_ref().is_some_and(&cond) {
            return t0.elapsed().as_secs_f64();
        }
        std::thread::sleep(TICK);
    }
    panic!("{what}: not within {LIMIT:?}");
}

fn pid_of(world: &World, name: &str) -> i32 {
    world
        .status()
        .and_then(|s| runner(&s, name)?.pid)
        .expect("a running listener")
}

/// `runners:` lines: `r1`…`rN` and `b`, `b` with `b_env`.
fn runners(kills: usize, b_env: &str) -> String {
    use std::fmt::Write as _;
    let mut text = String::new();
    for i in 1..=kills {
        let _ = write!(text, "  - name: r{i}\n    repo: owner/repo\n");
    }
    let _ = write!(text, "  - name: b\n    repo: owner/repo\n{b_env}");
    text
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let kills = if quick { 3 } else { 10 };
    let names: Vec<String> = (1..=kills).map(|i| format!("r{i}")).collect();
    let mut world = World::new();
    world.write_config(&runners(kills, ""));
    world.start();
    let mut all: Vec<&str> = names.iter().map(String::as_str).collect();
    all.push("b");
    world.wait_idle(&all);
    for route in Route::REST {
        world
            .gh
            .push_fault(route, Fault::Delay(Duration::from_secs(3600)), 1_000_000);
    }
    let mut restarts = Vec::new();
    for name in &names {
        let pid = pid_of(&world, name);
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("kill the listener");
        restarts.push(seconds_until(&world, "restarted", |s| {
            runner(s, name).is_some_and(|r| r.pid.is_some_and(|p| p != pid))
        }));
    }
    let b = pid_of(&world, "b");
    save_text(
        &world,
        &world.config_text(&runners(kills, "    env: { EDITED: \"1\" }\n")),
    );
    let edit = seconds_until(&world, "b restarted for its edit", |s| {
        runner(s, "b").is_some_and(|r| r.pid.is_some_and(|p| p != b))
    });
    let t0 = Instant::now();
    world.signal(nix::sys::signal::Signal::SIGTERM);
    let code = world.corral().exit_code();
    let stop = t0.elapsed().as_secs_f64();
    assert_eq!(code, 0, "corral stops cleanly");
    restarts.sort_by(f64::total_cmp);

    println!(
        "corral run with every GitHub call hung, {} cores, {}",
        cores(),
        if quick { "quick" } else { "full" }
    );
    println!("| measure | value | target |");
    println!("|---|---:|---:|");
    println!(
        "| killed listener → running again ({kills} kills) | median {:.0} ms, max {:.0} ms | 2 s |",
        restarts[restarts.len() / 2] * 1000.0,
        restarts[restarts.len() - 1] * 1000.0
    );
    println!(
        "| edit needing no GitHub call → applied (listener restarted) | {:.0} ms | at once |",
        edit * 1000.0
    );
    println!(
        "| SIGTERM, no job running → corral exited 0 | {:.0} ms | 5 s |",
        stop * 1000.0
    );
}
