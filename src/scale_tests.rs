//! Table tests of the pool rules.

use std::time::Duration;

use super::*;
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
