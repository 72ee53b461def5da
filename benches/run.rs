//! `corral run` end to end against the fake GitHub and a fake runner base: time from saving
//! `runners.yaml` to the new listeners running and online, for 1 and for 50 runners, and
//! corral's own RSS and CPU over 60 s idle with 50 runners.
//!
//! `cargo bench --bench run` (about two minutes); `-- --quick` uses 10 runners and 10 s idle.

#![allow(
    clippy::cast_precision_loss,
    reason = "tick and KiB counts are far below 2^52"
)]

#[path = "../tests/kit/mod.rs"]
mod kit;

mod common;

use std::time::Duration;

use common::{converge, cores, save, usage};
use corral::status::Status;
use kit::daemon::World;

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (many, idle) = if quick { (10, 10) } else { (50, 60) };
    let mut world = World::new();
    world.write_config("");
    world.start();
    let pid = world.corral().pid().as_raw();
    world.wait_status("first status", |s: &Status| s.runners.is_empty());

    save(&world, 1);
    let (one_running, one_online) = converge(&world, 1);
    save(&world, many);
    let (many_running, many_online) = converge(&world, many);

    let before = usage(pid);
    std::thread::sleep(Duration::from_secs(idle));
    let after = usage(pid);
    let (cpu0, cpu1, rss, peak) = (before.cpu, after.cpu, after.rss_kib, after.peak_kib);

    println!(
        "corral run, {} cores, {}",
        cores(),
        if quick { "quick" } else { "full" }
    );
    println!("| measure | value |");
    println!("|---|---:|");
    println!(
        "| save → 1 new listener running | {:.0} ms |",
        one_running * 1000.0
    );
    println!(
        "| save → 1 new listener online | {:.0} ms |",
        one_online * 1000.0
    );
    println!(
        "| save → {many} listeners running ({} new) | {:.0} ms |",
        many - 1,
        many_running * 1000.0
    );
    println!(
        "| save → {many} listeners online | {:.0} ms |",
        many_online * 1000.0
    );
    println!(
        "| corral CPU over {idle} s idle, {many} runners | {:.2} % of one core |",
        (cpu1 - cpu0) / idle as f64 * 100.0
    );
    println!(
        "| corral RSS after {idle} s idle | {:.1} MiB (peak {:.1} MiB) |",
        rss as f64 / 1024.0,
        peak as f64 / 1024.0
    );
    world.signal(nix::sys::signal::Signal::SIGTERM);
    let code = world.corral().exit_code();
    assert_eq!(code, 0, "corral stops cleanly");
}
