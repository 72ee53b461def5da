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

use std::time::{Duration, Instant};

use corral::status::{State, Status};
use kit::daemon::World;

/// Clock ticks per second of `/proc/<pid>/stat` times (`getconf CLK_TCK`; 100 on Linux).
const TICKS: f64 = 100.0;

fn runners(n: usize) -> String {
    (1..=n).fold(String::new(), |mut out, i| {
        use std::fmt::Write as _;
        let _ = write!(out, "  - name: r{i}\n    repo: owner/repo\n");
        out
    })
}

/// Writes the config the way an editor saves: a temporary file renamed over it.
fn save(world: &World, n: usize) {
    let tmp = world.dir.path().join(".runners.yaml.tmp");
    // The default resync (30 s), as a user would have it; the tests use 2 s.
    let text = world
        .config_text(&runners(n))
        .replace("resync_interval: 2s\n", "");
    std::fs::write(&tmp, text).expect("write config");
    std::fs::rename(&tmp, world.config()).expect("rename over the config");
}

/// Seconds until `n` listeners run (a pid in status) and until all are online (idle).
fn converge(world: &World, n: usize) -> (f64, f64) {
    let t0 = Instant::now();
    let mut running = None;
    loop {
        if let Some(status) = world.status() {
            let count = |pred: &dyn Fn(&corral::status::RunnerStatus) -> bool| {
                status.runners.iter().filter(|r| pred(r)).count()
            };
            if running.is_none() && count(&|r| r.pid.is_some()) >= n {
                running = Some(t0.elapsed().as_secs_f64());
            }
            if count(&|r| r.state == State::Idle) >= n {
                return (running.unwrap_or_default(), t0.elapsed().as_secs_f64());
            }
        }
        assert!(t0.elapsed() < Duration::from_secs(300), "did not converge");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// (user + system CPU seconds, RSS KiB, peak RSS KiB) of `pid`.
fn usage(pid: i32) -> (f64, u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let fields: Vec<&str> = stat[stat.rfind(')').expect("comm") + 2..]
        .split(' ')
        .collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (ticks as f64 / TICKS, kib("VmRSS:"), kib("VmHWM:"))
}

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

    let (cpu0, _, _) = usage(pid);
    std::thread::sleep(Duration::from_secs(idle));
    let (cpu1, rss, peak) = usage(pid);

    println!(
        "corral run, {} cores, {}",
        std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
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
