//! Table tests of the pool rules.

use std::time::Duration;

use super::*;
use crate::observe::QueuedJob;
use Slot::{Absent, Busy, Idle, Starting};

const TIMEOUT: Duration = Duration::from_secs(300);
const FRESH: Slot = Idle(Duration::from_secs(10));
const STALE: Slot = Idle(Duration::from_secs(301));

fn active(slots: &[Slot], min_idle: u32, queued: usize, budget: usize) -> (Vec<usize>, usize) {
    active_slots(slots, min_idle, TIMEOUT, queued, budget)
}

/// (what, slots, `min_idle`, queued, budget, active, left out by budget)
type Case = (
    &'static str,
    &'static [Slot],
    u32,
    usize,
    usize,
    &'static [usize],
    usize,
);

#[test]
#[allow(
    clippy::too_many_lines,
    reason = "one table, one case a line before rustfmt"
)]
fn pool_rules() {
    let cases: &[Case] = &[
        // (what, slots, min_idle, queued, budget, active, left out by budget)
        ("nothing wanted", &[Absent; 3], 0, 0, 9, &[], 0),
        ("min_idle kept from zero", &[Absent; 3], 1, 0, 9, &[0], 0),
        (
            "queued jobs start runners",
            &[Absent; 4],
            0,
            2,
            9,
            &[0, 1],
            0,
        ),
        ("never above max", &[Absent; 3], 0, 7, 9, &[0, 1, 2], 0),
        (
            "min_idle on top of busy",
            &[Busy, Absent, Absent],
            1,
            0,
            9,
            &[0, 1],
            0,
        ),
        (
            "queued beyond min_idle",
            &[Busy, FRESH, Absent, Absent],
            1,
            2,
            9,
            &[0, 1, 2],
            0,
        ),
        (
            "idle within timeout kept",
            &[FRESH, FRESH, Absent],
            0,
            0,
            9,
            &[0, 1],
            0,
        ),
        (
            "idle past timeout retired",
            &[STALE, STALE, Absent],
            0,
            0,
            9,
            &[],
            0,
        ),
        (
            "retired down to min_idle",
            &[STALE, STALE, STALE],
            1,
            0,
            9,
            &[0],
            0,
        ),
        (
            "busy never retired",
            &[Busy, Busy, STALE],
            0,
            0,
            9,
            &[0, 1],
            0,
        ),
        (
            "starting never retired",
            &[Starting, STALE],
            0,
            0,
            9,
            &[0],
            0,
        ),
        (
            "a stale idle one serves a queued job",
            &[STALE, Absent],
            0,
            1,
            9,
            &[0],
            0,
        ),
        ("budget caps creation", &[Absent; 4], 0, 4, 2, &[0, 1], 2),
        (
            "budget never stops busy",
            &[Busy, Busy, Absent],
            0,
            1,
            1,
            &[0, 1],
            1,
        ),
        ("budget zero", &[Absent; 2], 1, 0, 0, &[], 1),
        (
            "gaps filled lowest first",
            &[Absent, Busy, Absent, Absent],
            0,
            2,
            9,
            &[0, 1, 2],
            0,
        ),
    ];
    for (what, slots, min_idle, queued, budget, want, left_out) in cases {
        let (got, out) = active(slots, *min_idle, *queued, *budget);
        assert_eq!(&got, want, "{what}");
        assert_eq!(out, *left_out, "{what}: left out");
    }
}

#[test]
fn label_matching() {
    let runner: Vec<String> = ["self-hosted", "Linux", "X64", "gpu"]
        .map(String::from)
        .to_vec();
    let cases: &[(&[&str], bool)] = &[
        (&["self-hosted"], true),
        (&["self-hosted", "linux", "x64"], true),
        (&["SELF-HOSTED", "GPU"], true),
        (&["gpu"], true),
        (&["self-hosted", "arm64"], false),
        (&["ubuntu-latest"], false),
        (&[], true),
    ];
    for (job, want) in cases {
        let job: Vec<String> = job.iter().map(|l| (*l).to_string()).collect();
        assert_eq!(job_matches(&job, &runner), *want, "{job:?}");
    }
    // `self-hosted` is never required of the runner's own set.
    assert!(job_matches(
        &["self-hosted".into(), "gpu".into()],
        &["gpu".into()]
    ));
}

/// Two pools of one repository (`a`: labels `x`; `b`: labels `x`, `y`) and one of another.
fn three_pools() -> Desired {
    let yaml = "base: {path: ./base}\ngithub: {token_env: T}\nrunners:\n  - {name: a, repo: o/r, labels: [x], scale: {max: 2}}\n  - {name: b, repo: o/r, labels: [x, y], scale: {max: 2}}\n  - {name: c, repo: o/other, labels: [x], scale: {max: 2}}\n";
    crate::config::parse(yaml, std::path::Path::new("/nowhere/runners.yaml")).expect("valid")
}

fn queued(id: u64, labels: &[&str]) -> QueuedJob {
    QueuedJob {
        id,
        labels: labels.iter().map(|l| (*l).to_string()).collect(),
        queued_at: None,
    }
}

fn assigned(desired: &Desired, slots: &[Vec<Slot>], jobs: Vec<QueuedJob>) -> Vec<Vec<u64>> {
    let mut observed = Observed::default();
    observed
        .demand
        .insert("https://github.com/o/r".into(), jobs);
    assign_jobs(desired, slots, &observed)
        .iter()
        .map(|q| q.iter().map(|j| j.id).collect())
        .collect()
}

#[test]
fn a_job_counts_for_one_pool_only() {
    let d = three_pools();
    let empty = vec![vec![Absent; 2]; 3];
    // Both pools match: the first in file order; only `b` matches: `b`; none: nobody.
    let got = assigned(
        &d,
        &empty,
        vec![queued(1, &["x"]), queued(2, &["x", "y"]), queued(3, &["z"])],
    );
    assert_eq!(got, [vec![1], vec![2], vec![]]);
    // The other repository's pool never counts this repository's jobs.
    let got = assigned(&d, &empty, vec![queued(1, &["self-hosted"])]);
    assert_eq!(got, [vec![1], vec![], vec![]]);
}

#[test]
fn a_job_goes_where_a_runner_waits_then_where_there_is_room() {
    let d = three_pools();
    // `b` has an idle runner: the job it matches goes there, not to `a`.
    let slots = vec![vec![Absent; 2], vec![FRESH, Absent], vec![Absent; 2]];
    assert_eq!(
        assigned(&d, &slots, vec![queued(1, &["x"]), queued(2, &["x"])]),
        [vec![2], vec![1], vec![]],
        "the idle runner takes the oldest; the next goes to the first pool"
    );
    // `a` is full of busy runners: the job goes to `b`, which has room.
    let slots = vec![vec![Busy, Busy], vec![Absent; 2], vec![Absent; 2]];
    assert_eq!(
        assigned(&d, &slots, vec![queued(1, &["x"])]),
        [vec![], vec![1], vec![]]
    );
    // Both full: the first pool still counts it (it waits there).
    let slots = vec![vec![Busy, Busy], vec![Busy, Busy], vec![Absent; 2]];
    assert_eq!(
        assigned(&d, &slots, vec![queued(1, &["x"])]),
        [vec![1], vec![], vec![]]
    );
}
