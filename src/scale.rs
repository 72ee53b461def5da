//! Elastic pools (`scale` entries): which of a pool's instances should exist now. Pure, like
//! the planner it feeds: demand (queued jobs), idle times and the clock are inputs.
//!
//! Rules (per pool): keep `min_idle` idle runners; for jobs queued in the pool's repository
//! whose labels its runners satisfy, add more, up to `max`; an idle runner above that is
//! retired once it has been idle for `idle_timeout`; a busy or starting runner is never
//! retired. Pools share what `max_runners` leaves after the fixed runners, in file order.
//!
//! A queued job counts for one pool only, however many pools' labels it matches
//! ([`assign_jobs`]): two pools never both start a runner for it.

use std::time::Duration;

use crate::config::{Desired, RunnerSpec};
use crate::observe::{Observed, ObservedRunner, QueuedJob};

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

/// The queued jobs each pool serves (by index in `desired.pools`), every job once. Of the pools
/// of its repository whose labels it matches, in file order, a job goes to the first with an
/// idle or starting runner no earlier job took (that runner will get it), else to the first
/// with room below `max`, else to the first. Jobs are taken oldest first, so the outcome
/// depends only on the inputs.
pub fn assign_jobs(
    desired: &Desired,
    slots: &[Vec<Slot>],
    observed: &Observed,
) -> Vec<Vec<QueuedJob>> {
    let pools = &desired.pools;
    let mut assigned: Vec<Vec<QueuedJob>> = vec![Vec::new(); pools.len()];
    let mut spare: Vec<usize> = slots
        .iter()
        .map(|s| {
            s.iter()
                .filter(|s| matches!(s, Slot::Idle(_) | Slot::Starting))
                .count()
        })
        .collect();
    let mut room: Vec<usize> = slots
        .iter()
        .map(|s| s.len() - s.iter().filter(|s| **s == Slot::Busy).count())
        .collect();
    let labels: Vec<Vec<String>> = pools.iter().map(|p| p.spec.all_labels()).collect();
    for (repo, jobs) in &observed.demand {
        // A scale-set pool learns its demand from its session, not from these jobs.
        let of_repo: Vec<usize> = (0..pools.len())
            .filter(|i| pools[*i].scale_set.is_none())
            .filter(|i| pools[*i].spec.repo.url.to_lowercase() == *repo)
            .collect();
        for job in jobs {
            let fits: Vec<usize> = of_repo
                .iter()
                .copied()
                .filter(|i| job_matches(&job.labels, &labels[*i]))
                .collect();
            let Some(&first) = fits.first() else { continue };
            let pick = fits
                .iter()
                .copied()
                .find(|i| spare[*i] > 0)
                .or_else(|| fits.iter().copied().find(|i| room[*i] > 0))
                .unwrap_or(first);
            spare[pick] = spare[pick].saturating_sub(1);
            room[pick] = room[pick].saturating_sub(1);
            assigned[pick].push(job.clone());
        }
    }
    assigned
}

/// `desired` with each pool's active instances added to `runners`, and the instances
/// `max_runners` kept from being created added to `capped`.
pub fn effective(desired: &Desired, observed: &Observed) -> Desired {
    plan_pools(desired, observed).0
}

/// [`effective`], and the queued jobs each pool serves ([`assign_jobs`]).
pub fn plan_pools(desired: &Desired, observed: &Observed) -> (Desired, Vec<Vec<QueuedJob>>) {
    let mut out = desired.clone();
    let mut budget = desired.max_runners.map_or(usize::MAX, |n| {
        (n as usize).saturating_sub(desired.runners.len())
    });
    let slots: Vec<Vec<Slot>> = desired
        .pools
        .iter()
        .map(|pool| {
            pool.slots
                .iter()
                .map(|name| slot_of(name, observed.runners.get(name), observed))
                .collect()
        })
        .collect();
    let queues = assign_jobs(desired, &slots, observed);
    for ((pool, slots), queue) in desired.pools.iter().zip(&slots).zip(&queues) {
        // A scale-set pool: the jobs assigned to its set and not running yet.
        let demand = match pool.scale_set_key() {
            Some(key) => observed.scalesets.get(&key).map_or(0, |s| {
                usize::try_from(s.waiting_jobs()).unwrap_or(usize::MAX)
            }),
            None => queue.len(),
        };
        let (active, left_out) =
            active_slots(slots, pool.min_idle, pool.idle_timeout, demand, budget);
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
    (out, queues)
}

#[cfg(test)]
#[path = "scale_tests.rs"]
mod tests;
