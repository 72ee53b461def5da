//! Elastic pools (`scale` entries): which of a pool's instances should exist now. Pure, like
//! the planner it feeds: demand (queued jobs), idle times and the clock are inputs.
//!
//! Rules (per pool): keep `min_idle` idle runners; for jobs queued in the pool's repository
//! whose labels its runners satisfy, add more, up to `max`; an idle runner above that is
//! retired once it has been idle for `idle_timeout`; a busy or starting runner is never
//! retired. Pools share what `max_runners` leaves after the fixed runners, in file order.

use std::time::Duration;

use crate::config::{Desired, Pool, RunnerSpec};
use crate::observe::{Observed, ObservedRunner};

/// One instance slot of a pool, as observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// Nothing there (or an ephemeral runner that finished its job and exited).
    Absent,
    /// Being built, registered or started, or between restarts: kept.
    Starting,
    /// Online without a job, for this long.
    Idle(Duration),
    /// Running a job: never retired.
    Busy,
}

/// The indices of `slots` that should exist: every busy and starting one; idle ones while
/// the target (`busy + max(min_idle, queued)`, at most `slots.len()` and `budget`) needs them
/// or their `idle_timeout` has not run out; then absent ones, lowest first, up to the target.
/// Also returns how many the budget (not `max`) kept from being created.
pub fn active_slots(
    slots: &[Slot],
    min_idle: u32,
    idle_timeout: Duration,
    queued: usize,
    budget: usize,
) -> (Vec<usize>, usize) {
    let busy = slots.iter().filter(|s| **s == Slot::Busy).count();
    let wanted = (busy + queued.max(min_idle as usize)).min(slots.len());
    let target = wanted.min(budget);
    let mut active: Vec<usize> = (0..slots.len())
        .filter(|i| matches!(slots[*i], Slot::Busy | Slot::Starting))
        .collect();
    for (i, slot) in slots.iter().enumerate() {
        if let Slot::Idle(idle_for) = slot {
            if active.len() < target || *idle_for < idle_timeout {
                active.push(i);
            }
        }
    }
    for (i, slot) in slots.iter().enumerate() {
        if *slot == Slot::Absent && active.len() < target {
            active.push(i);
        }
    }
    let left_out = wanted.saturating_sub(active.len());
    active.sort_unstable();
    (active, left_out)
}

/// True when a job with `job_labels` can run on a runner with `runner_labels`: every job
/// label but `self-hosted` is the runner's, ignoring case (`reference/github-api.md` §3.3).
pub fn job_matches(job_labels: &[String], runner_labels: &[String]) -> bool {
    job_labels
        .iter()
        .filter(|l| !l.eq_ignore_ascii_case("self-hosted"))
        .all(|l| runner_labels.iter().any(|r| r.eq_ignore_ascii_case(l)))
}

/// How one runner of a pool looks: from the host (`seen`) and the controller's inputs.
pub fn slot_of(name: &str, seen: Option<&ObservedRunner>, observed: &Observed) -> Slot {
    let Some(seen) = seen else {
        return Slot::Absent;
    };
    match seen.process {
        Some(p) if p.busy => return Slot::Busy,
        Some(_) => {}
        // Its one job done, the listener gone: nothing left to keep.
        None if seen.used && !seen.configured => return Slot::Absent,
        None if !seen.provisioned => return Slot::Absent,
        None => return Slot::Starting,
    }
    if observed.busy.contains(name) {
        return Slot::Busy;
    }
    match (observed.idle_since.get(name), observed.now) {
        (Some(since), Some(now)) => Slot::Idle(now.duration_since(*since).unwrap_or_default()),
        (Some(_), None) => Slot::Idle(Duration::ZERO),
        (None, _) => Slot::Starting,
    }
}

/// Queued jobs in the pool's repository that its runners could take.
pub fn queued_for(pool: &Pool, observed: &Observed) -> usize {
    let labels = pool.spec.all_labels();
    observed
        .demand
        .get(&pool.spec.repo.url.to_lowercase())
        .map_or(0, |jobs| {
            jobs.iter().filter(|j| job_matches(j, &labels)).count()
        })
}

/// `desired` with each pool's active instances added to `runners`, and the instances
/// `max_runners` kept from being created added to `capped`.
pub fn effective(desired: &Desired, observed: &Observed) -> Desired {
    let mut out = desired.clone();
    let mut budget = desired.max_runners.map_or(usize::MAX, |n| {
        (n as usize).saturating_sub(desired.runners.len())
    });
    for pool in &desired.pools {
        let slots: Vec<Slot> = pool
            .slots
            .iter()
            .map(|name| slot_of(name, observed.runners.get(name), observed))
            .collect();
        let queued = queued_for(pool, observed);
        let (active, left_out) =
            active_slots(&slots, pool.min_idle, pool.idle_timeout, queued, budget);
        budget = budget.saturating_sub(active.len());
        for i in active {
            let name = pool.slots[i].clone();
            let spec = RunnerSpec {
                name: name.clone(),
                ..pool.spec.clone()
            };
            out.runners.insert(name, spec);
        }
        out.capped.extend(
            pool.slots
                .iter()
                .filter(|s| !out.runners.contains_key(*s))
                .take(left_out)
                .cloned(),
        );
    }
    out
}

#[cfg(test)]
#[path = "scale_tests.rs"]
mod tests;
