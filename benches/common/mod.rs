//! What the `run` and `scale` benchmarks share: runner lists, saving the config as an editor
//! does, waiting for listeners, and corral's own cost read from `/proc/<pid>`.

#![allow(
    dead_code,
    reason = "each benchmark uses part of this module; both include it"
)]
#![allow(
    clippy::cast_precision_loss,
    reason = "tick and KiB counts are far below 2^52"
)]

use std::time::{Duration, Instant};

use corral::status::{RunnerStatus, State};

use super::kit::daemon::{World, REPO};

/// Clock ticks per second of `/proc/<pid>/stat` times (`getconf CLK_TCK`; 100 on Linux).
const TICKS: f64 = 100.0;

/// The host's core count.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

/// The repository of runner `i` when `repos` repositories share the runners: `owner/repo`
/// (the one `World::new` adds) when there is one, `owner/repo-<k>` otherwise.
pub fn repo_of(i: usize, repos: usize) -> String {
    if repos <= 1 {
        REPO.to_string()
    } else {
        format!("owner/repo-{}", i % repos)
    }
}

/// `runners:` lines for `n` runners `r1`…`rn` spread round-robin over `repos` repositories.
pub fn runners_in(n: usize, repos: usize) -> String {
    (1..=n).fold(String::new(), |mut out, i| {
        use std::fmt::Write as _;
        let _ = write!(out, "  - name: r{i}\n    repo: {}\n", repo_of(i, repos));
        out
    })
}

/// `runners:` lines for `n` runners in `owner/repo`.
pub fn runners(n: usize) -> String {
    runners_in(n, 1)
}

/// The world's config for `runners` with `resync_interval` set to `resync` (the tests' 2 s
/// replaced).
pub fn config_text(world: &World, runners: &str, resync: Duration) -> String {
    world.config_text(runners).replace(
        "resync_interval: 2s\n",
        &format!("resync_interval: {}s\n", resync.as_secs()),
    )
}

/// Writes the config the way an editor saves: a temporary file renamed over it.
pub fn save_text(world: &World, text: &str) {
    let tmp = world.dir.path().join(".runners.yaml.tmp");
    std::fs::write(&tmp, text).expect("write config");
    std::fs::rename(&tmp, world.config()).expect("rename over the config");
}

/// Saves a config of `n` runners in `owner/repo` with the default resync (30 s), as a user
/// would have it.
pub fn save(world: &World, n: usize) {
    let text = world
        .config_text(&runners(n))
        .replace("resync_interval: 2s\n", "");
    save_text(world, &text);
}

/// Seconds until `n` listeners run (a pid in status) and until all are online (idle),
/// reading `status.json` every `tick`.
pub fn converge_every(world: &World, n: usize, tick: Duration) -> (f64, f64) {
    let t0 = Instant::now();
    let mut running = None;
    loop {
        if let Some(status) = world.status() {
            let count = |pred: &dyn Fn(&RunnerStatus) -> bool| {
                status.runners.iter().filter(|r| pred(r)).count()
            };
            if running.is_none() && count(&|r| r.pid.is_some()) >= n {
                running = Some(t0.elapsed().as_secs_f64());
            }
            if count(&|r| r.state == State::Idle) >= n {
                return (running.unwrap_or_default(), t0.elapsed().as_secs_f64());
            }
        }
        assert!(t0.elapsed() < Duration::from_secs(600), "did not converge");
        std::thread::sleep(tick);
    }
}

/// [`converge_every`] at 10 ms.
pub fn converge(world: &World, n: usize) -> (f64, f64) {
    converge_every(world, n, Duration::from_millis(10))
}

/// One reading of a process's own cost.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    /// User + system CPU seconds so far.
    pub cpu: f64,
    /// Resident set, KiB.
    pub rss_kib: u64,
    /// Peak resident set, KiB.
    pub peak_kib: u64,
    /// Threads.
    pub threads: u64,
    /// Open file descriptors.
    pub fds: usize,
}

/// Reads [`Usage`] of `pid` from `/proc/<pid>/{stat,status,fd}`.
pub fn usage(pid: i32) -> Usage {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let fields: Vec<&str> = stat[stat.rfind(')').expect("comm") + 2..]
        .split(' ')
        .collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count);
    let cpu = ticks as f64 / TICKS;
    Usage {
        cpu,
        rss_kib: field("VmRSS:"),
        peak_kib: field("VmHWM:"),
        threads: field("Threads:"),
        fds,
    }
}

/// (busy, total) jiffies of the whole host, from the `cpu` line of `/proc/stat`.
pub fn host_cpu() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").expect("/proc/stat");
    let line = stat.lines().next().expect("cpu line");
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    let total: u64 = ticks.iter().sum();
    // idle and iowait.
    let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// The busy share of all cores, in percent, between two [`host_cpu`] readings.
pub fn host_busy(before: (u64, u64), after: (u64, u64)) -> f64 {
    let busy = after.0.saturating_sub(before.0) as f64;
    let total = after.1.saturating_sub(before.1).max(1) as f64;
    busy / total * 100.0
}

/// CPU of `pid` over `window`, as a percentage of one core, and the usage at its end.
pub fn idle_cost(pid: i32, window: Duration) -> (f64, Usage) {
    let before = usage(pid);
    let t0 = Instant::now();
    std::thread::sleep(window);
    let after = usage(pid);
    let share = (after.cpu - before.cpu) / t0.elapsed().as_secs_f64() * 100.0;
    (share, after)
}
