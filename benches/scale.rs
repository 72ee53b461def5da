//! `corral run` at scale: the real binary with 200 fake runners against the fake GitHub.
//!
//! Reports the time from start to all runners online, the observe + plan time of a pass at
//! 10, 50 and 200 runners (in-process, on the state directory of a running corral), corral's
//! CPU over an idle window with the listeners as its children and again after a restart that
//! adopted them, its RSS, open file descriptors and threads, and the GitHub requests per
//! resync for 1 repository × 200 runners, 10 × 20 and 200 × 1. Each figure with a target
//! gets PASS or FAIL.
//!
//! `cargo bench --bench scale` (about four minutes on 2 cores);
//! `cargo bench --bench scale -- --quick`: 20 runners, 10 s idle, 5 s resync (CI-sized).
//! Options: `--runners N` (200), `--idle SECS` (60), `--resync SECS` (30, corral's default),
//! `--pass-only` (only start to online and the observe + plan rows, about a minute).
//!
//! Observe + plan is judged on the on-CPU time of the measuring thread (median of 25), so
//! that other work on a shared host does not count; the wall time is printed beside it.

#![allow(
    clippy::cast_precision_loss,
    reason = "counts and KiB are far below 2^52"
)]

#[path = "../tests/kit/mod.rs"]
mod kit;

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{
    config_text, converge_every, cores, host_busy, host_cpu, idle_cost, repo_of, runners_in,
    save_text,
};
use corral::layout::StateLayout;
use corral::observe::{observe, ServerRunner, ServerView};
use corral::reconcile::plan;
use kit::daemon::World;
use kit::github::{FakeGitHub, RecordedRequest, RunnerStatus};
use kit::install::FakeRunnerInstall;
use nix::sys::signal::Signal;

/// The real listener long-polls for about 50 s; so do the fakes here, for a quiet host.
const POLL_WAIT_SECS: u64 = 50;
/// How often `status.json` is read while waiting for runners.
const STATUS_TICK: Duration = Duration::from_millis(50);
/// GitHub lists at most this many runners per page (`per_page=100`).
const PAGE: usize = 100;
/// Targets of the issue.
const PASS_TARGET: Duration = Duration::from_millis(20);
const CPU_TARGET: f64 = 0.5;
const RSS_TARGET_BYTES: u64 = 40_000_000;

struct Opts {
    quick: bool,
    /// Only the observe + plan rows (and start to online).
    pass_only: bool,
    runners: usize,
    idle: Duration,
    resync: Duration,
}

fn opts() -> Opts {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let value = |name: &str| {
        let at = args.iter().position(|a| a == name)?;
        let text = args.get(at + 1)?;
        Some(
            text.parse::<u64>()
                .unwrap_or_else(|_| panic!("{name} wants a number, not {text:?}")),
        )
    };
    let (runners, idle, resync) = if quick { (20, 10, 5) } else { (200, 60, 30) };
    Opts {
        quick,
        pass_only: args.iter().any(|a| a == "--pass-only"),
        runners: value("--runners").map_or(runners, |n| n as usize),
        idle: Duration::from_secs(value("--idle").unwrap_or(idle)),
        resync: Duration::from_secs(value("--resync").unwrap_or(resync)),
    }
}

/// One line of the table.
struct Row {
    measure: String,
    value: String,
    target: &'static str,
    pass: Option<bool>,
}

fn row(measure: impl Into<String>, value: impl Into<String>) -> Row {
    Row {
        measure: measure.into(),
        value: value.into(),
        target: "",
        pass: None,
    }
}

fn judged(measure: impl Into<String>, value: String, target: &'static str, pass: bool) -> Row {
    Row {
        target,
        pass: Some(pass),
        ..row(measure, value)
    }
}

/// A world with `n` runners over `repos` repositories, started.
fn start_world(n: usize, repos: usize, resync: Duration) -> World {
    let mut world = World::with_base(
        &FakeRunnerInstall::new()
            .poll_wait_secs(POLL_WAIT_SECS)
            .session_conflict_retry_secs(1),
    );
    for k in 0..repos.min(n) {
        world.gh.add_repo(&repo_of(k, repos));
    }
    std::fs::write(
        world.config(),
        config_text(&world, &runners_in(n, repos), resync),
    )
    .expect("write config");
    world.start_with_env(&[("RUST_LOG", "info")]);
    world
}

fn stop(mut world: World) {
    world.signal(Signal::SIGTERM);
    assert_eq!(world.corral().exit_code(), 0, "corral stops cleanly");
}

/// What GitHub lists now for the config's repositories, as corral would see it.
fn server_view(gh: &FakeGitHub, desired: &corral::config::Desired) -> ServerView {
    let mut view = ServerView::default();
    for spec in desired.runners.values() {
        let key = spec.repo.url.to_lowercase();
        if view.repos.contains_key(&key) {
            continue;
        }
        let listed = gh.runners(&format!("{}/{}", spec.repo.owner, spec.repo.name));
        let runners = listed.into_iter().map(|r| ServerRunner {
            id: r.id,
            custom_labels: r
                .labels
                .iter()
                .filter(|l| !l.read_only)
                .map(|l| l.name.clone())
                .collect(),
            name: r.name,
            repo: spec.repo.clone(),
            online: r.status == RunnerStatus::Online,
            busy: r.busy,
        });
        view.repos.insert(key, runners.collect());
    }
    view
}

/// Time this thread has spent on a CPU (`CLOCK_THREAD_CPUTIME_ID`): unlike wall time, it
/// does not count the waits for a core that other work on a shared host causes.
fn on_cpu() -> Duration {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .expect("thread CPU clock");
    Duration::from(now)
}

/// Medians over `rounds` on the world's live state directory: observe and plan on-CPU
/// times, and the wall time of both.
struct PassTimes {
    observe: Duration,
    plan: Duration,
    wall: Duration,
}

impl PassTimes {
    fn total(&self) -> Duration {
        self.observe + self.plan
    }

    fn value(&self) -> String {
        format!(
            "{} on CPU (observe {}, plan {}); wall {}",
            ms(self.total()),
            ms(self.observe),
            ms(self.plan),
            ms(self.wall)
        )
    }
}

fn observe_plan(world: &World, rounds: usize) -> PassTimes {
    let desired = corral::config::load(&world.config()).expect("load the config");
    let layout = StateLayout::new(&desired.state_dir);
    let server = server_view(&world.gh, &desired);
    let (mut observing, mut planning, mut wall) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let (t0, c0) = (Instant::now(), on_cpu());
        let mut observed = observe(&layout);
        observed.server = Some(server.clone());
        let c1 = on_cpu();
        let actions = plan(&desired, &observed);
        let c2 = on_cpu();
        wall.push(t0.elapsed());
        observing.push(c1.saturating_sub(c0));
        planning.push(c2.saturating_sub(c1));
        assert!(
            actions.is_empty(),
            "a converged host plans nothing: {actions:?}"
        );
    }
    PassTimes {
        observe: median(observing),
        plan: median(planning),
        wall: median(wall),
    }
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort_unstable();
    times[times.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// Requests corral sends to the REST API (not the runner service, not token exchanges).
fn is_rest(r: &RecordedRequest) -> bool {
    r.path.contains("/repos/")
}

/// The first page of a listing of `repo`'s runners: one per resync.
fn is_listing(r: &RecordedRequest, repo: &str) -> bool {
    let first_page = r
        .query
        .as_deref()
        .unwrap_or_default()
        .split('&')
        .all(|kv| !kv.starts_with("page="));
    r.method == "GET" && r.path.ends_with(&format!("/repos/{repo}/actions/runners")) && first_page
}

/// Waits until no REST request arrived for a second; returns the log length then.
fn quiet(gh: &FakeGitHub) -> usize {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut start = gh.request_count();
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let now = gh.request_count();
        if !gh.requests_since(start).iter().any(is_rest) {
            return now;
        }
        start = now;
        assert!(Instant::now() < deadline, "GitHub requests never stopped");
    }
}

/// REST requests from `start` until `repo` has been listed at least once and the batch is
/// over: (resyncs seen, requests, requests by endpoint).
fn resync_requests(
    gh: &FakeGitHub,
    start: usize,
    repo: &str,
    resync: Duration,
) -> (usize, usize, BTreeMap<String, usize>) {
    let deadline = Instant::now() + resync * 3 + Duration::from_secs(60);
    while !gh.requests_since(start).iter().any(|r| is_listing(r, repo)) {
        assert!(Instant::now() < deadline, "no resync listed {repo}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let end = quiet(gh);
    let requests: Vec<RecordedRequest> = gh
        .requests_since(start)
        .into_iter()
        .take(end - start)
        .filter(is_rest)
        .collect();
    let resyncs = requests.iter().filter(|r| is_listing(r, repo)).count();
    let mut by_endpoint = BTreeMap::new();
    for r in &requests {
        let shape = if r.path.ends_with("/actions/runners") {
            "list runners"
        } else {
            r.path.as_str()
        };
        *by_endpoint
            .entry(format!("{} {shape}", r.method))
            .or_insert(0) += 1;
    }
    (resyncs, requests.len(), by_endpoint)
}

/// The requests-per-resync row for `n` runners over `repos` repositories.
fn requests_row(n: usize, repos: usize, window: (usize, usize, BTreeMap<String, usize>)) -> Row {
    let (resyncs, requests, by_endpoint) = window;
    let repos = repos.min(n);
    let per_repo = n.div_ceil(repos);
    let pages = repos * per_repo.div_ceil(PAGE);
    let per_resync = requests as f64 / resyncs.max(1) as f64;
    judged(
        format!("GitHub requests per resync, {repos} repo(s) × {per_repo} runners"),
        format!("{per_resync:.0} ({resyncs} resync(s): {by_endpoint:?})"),
        "= listing pages (repos × ⌈runners/100⌉), none per runner",
        (per_resync - pages as f64).abs() < f64::EPSILON,
    )
}

/// Phase 1: observe + plan at the two smaller sizes, on one world that grows.
fn small_sizes(o: &Opts, rows: &mut Vec<Row>) {
    let sizes = [(o.runners / 20).max(1), (o.runners / 4).max(2)];
    let mut world = start_world(sizes[0], 1, o.resync);
    for (i, &n) in sizes.iter().enumerate() {
        if i > 0 {
            save_text(&world, &config_text(&world, &runners_in(n, 1), o.resync));
        }
        converge_every(&world, n, STATUS_TICK);
        let times = observe_plan(&world, rounds(o));
        rows.push(row(format!("observe + plan, {n} runners"), times.value()));
    }
    world.signal(Signal::SIGTERM);
    assert_eq!(world.corral().exit_code(), 0, "corral stops cleanly");
}

fn rounds(o: &Opts) -> usize {
    if o.quick {
        5
    } else {
        25
    }
}

/// Phase 2: `n` runners in one repository: start to online, observe + plan, idle with the
/// listeners as corral's children, requests per resync, then a restart that adopts them.
fn main_world(o: &Opts, rows: &mut Vec<Row>) {
    let n = o.runners;
    let host = host_cpu();
    let mut world = start_world(n, 1, o.resync);
    let (_, online) = converge_every(&world, n, STATUS_TICK);
    rows.push(row(
        format!("start → {n} runners online (8 applied at a time)"),
        format!(
            "{online:.1} s (host CPU {:.0} % busy meanwhile)",
            host_busy(host, host_cpu())
        ),
    ));
    let times = observe_plan(&world, rounds(o));
    rows.push(judged(
        format!("observe + plan, {n} runners"),
        times.value(),
        "< 20 ms on CPU",
        times.total() < PASS_TARGET,
    ));
    if o.pass_only {
        stop(world);
        return;
    }
    let pid = world.corral().pid().as_raw();
    let start = quiet(&world.gh);
    let (cpu, after) = idle_cost(pid, o.idle);
    let window = resync_requests(&world.gh, start, kit::daemon::REPO, o.resync);
    idle_rows(rows, &format!("{n} runners (its children)"), o, cpu, after);
    rows.push(requests_row(n, 1, window));

    // Killed, so that the listeners outlive it; the next corral adopts them.
    world.signal(Signal::SIGKILL);
    world.corral().exit_code();
    std::fs::remove_file(world.state().join("status.json")).expect("remove status.json");
    world.start_with_env(&[("RUST_LOG", "info")]);
    let (_, adopted) = converge_every(&world, n, STATUS_TICK);
    rows.push(row(
        format!("restart → {n} listeners adopted and online"),
        format!("{adopted:.1} s"),
    ));
    let pid = world.corral().pid().as_raw();
    let (cpu, after) = idle_cost(pid, o.idle);
    idle_rows(rows, &format!("{n} adopted runners"), o, cpu, after);
    stop(world);
}

fn idle_rows(rows: &mut Vec<Row>, what: &str, o: &Opts, cpu: f64, after: common::Usage) {
    let secs = o.idle.as_secs();
    rows.push(judged(
        format!("corral CPU over {secs} s idle, {what}"),
        format!("{cpu:.3} % of one core"),
        "< 0.5 %",
        cpu < CPU_TARGET,
    ));
    rows.push(judged(
        format!("corral RSS after {secs} s idle, {what}"),
        format!(
            "{:.1} MiB (peak {:.1} MiB)",
            after.rss_kib as f64 / 1024.0,
            after.peak_kib as f64 / 1024.0
        ),
        "< 40 MB (38.1 MiB)",
        after.rss_kib * 1024 < RSS_TARGET_BYTES,
    ));
    rows.push(row(
        format!("corral open file descriptors / threads, {what}"),
        format!("{} / {}", after.fds, after.threads),
    ));
}

/// Phase 3: requests per resync when the same runners spread over 10 and over `n` repos.
fn spread(o: &Opts, rows: &mut Vec<Row>) {
    let n = o.runners;
    for repos in [10, n] {
        let world = start_world(n, repos, o.resync);
        converge_every(&world, n, STATUS_TICK);
        let start = quiet(&world.gh);
        let window = resync_requests(&world.gh, start, &repo_of(0, repos), o.resync);
        rows.push(requests_row(n, repos, window));
        stop(world);
    }
}

fn main() {
    let o = opts();
    let t0 = Instant::now();
    let mut rows = Vec::new();
    small_sizes(&o, &mut rows);
    main_world(&o, &mut rows);
    if !o.pass_only {
        spread(&o, &mut rows);
    }
    println!(
        "corral run at scale, {} cores, {} runners, {} s idle, {} s resync{}, took {:.0} s",
        cores(),
        o.runners,
        o.idle.as_secs(),
        o.resync.as_secs(),
        if o.quick { " (quick)" } else { "" },
        t0.elapsed().as_secs_f64()
    );
    println!("| measure | value | target | |");
    println!("|---|---:|---|---|");
    for r in &rows {
        let verdict = match r.pass {
            Some(true) => "PASS",
            Some(false) => "FAIL",
            None => "",
        };
        println!("| {} | {} | {} | {verdict} |", r.measure, r.value, r.target);
    }
}
