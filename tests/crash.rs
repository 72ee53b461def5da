//! Crash safety: corral dies by SIGKILL at a seeded crash point (`src/crashpoint.rs`) while
//! provisioning, registering, deregistering or re-basing; a restarted corral converges with
//! one listener per runner, no leftover directory or record, and exactly the file's
//! registrations on the fake GitHub.
//!
//! `CORRAL_CRASH_SEED=<u64>` reproduces a run (every failure prints it), and
//! `CORRAL_CRASH_TRIALS=<n>` runs n trials per phase instead of 5 (4 phases: 20 by default).

use std::collections::BTreeMap;
use std::path::Path;

use corral::status::State;

use crate::kit::daemon::{listeners_under, World, REPO};
use crate::kit::install::FakeRunnerInstall;
use crate::kit::proc::wait_until;
use crate::kit::rng::Rng;

/// The default seed: CI runs the same points every time; change it to explore others.
const DEFAULT_SEED: u64 = 0x00c0_77a1_5eed;
const DEFAULT_TRIALS: u64 = 5;

/// What is changed to get corral into a phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// From nothing to three runners (two plain, one ephemeral JIT runner).
    Provisioning,
    /// The same start, with points around registration and the listener's start.
    Registration,
    /// Three idle runners, then two of them removed from the file.
    Deregistration,
    /// Three idle runners, then the base changed.
    Rebasing,
}

impl Phase {
    /// Crash points of the phase and how many times each is surely reached in it.
    fn points(self) -> &'static [(&'static str, u64)] {
        match self {
            Phase::Provisioning => &[
                ("provision.file", 12),
                ("provision.built", 3),
                ("provision.renamed", 3),
            ],
            Phase::Registration => &[
                ("register.configured", 3),
                ("register.recorded", 3),
                ("start.spawned", 3),
                ("start.recorded", 3),
            ],
            Phase::Deregistration => &[
                ("deregister.token", 2),
                ("deregister.removed", 2),
                ("stop.done", 2),
                ("deprovision.renamed", 2),
                ("deprovision.done", 2),
            ],
            // `a` and `b` are moved; the ephemeral `c` gets a fresh directory on the new base.
            Phase::Rebasing => &[
                ("rebase.stopped", 2),
                ("provision.file", 12),
                ("rebase.built", 2),
                ("rebase.swapped", 2),
                ("rebase.done", 2),
            ],
        }
    }
}

/// Three runners: `a` and `b` plain, `c` ephemeral (registered just in time).
const THREE: &str = "  - name: a\n    repo: owner/repo\n  - name: b\n    repo: owner/repo\n  - name: c\n    repo: owner/repo\n    ephemeral: true\n";
const ONE: &str = "  - name: a\n    repo: owner/repo\n";

fn seed() -> u64 {
    std::env::var("CORRAL_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED)
}

fn trials() -> u64 {
    std::env::var("CORRAL_CRASH_TRIALS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_TRIALS)
}

/// Runs the phase's trials; a failure names the seed, trial and crash point.
fn run_phase(phase: Phase) {
    let seed = seed();
    let mut rng = Rng::new(seed ^ (phase as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    for trial in 0..trials() {
        let points = phase.points();
        let (step, max) = points[(rng.next() % points.len() as u64) as usize];
        let n = rng.upto(max);
        let result = std::panic::catch_unwind(|| one_trial(phase, step, n));
        if let Err(panic) = result {
            eprintln!(
                "crash trial failed: phase {phase:?}, trial {trial}, point {step}:{n}; \
                 reproduce with CORRAL_CRASH_SEED={seed} CORRAL_CRASH_TRIALS={}",
                trial + 1
            );
            std::panic::resume_unwind(panic);
        }
    }
}

fn config_for(world: &World, runners: &str, base: &str) -> String {
    world
        .config_text(runners)
        .replace("path: ./base\n", &format!("path: ./{base}\n"))
}

fn one_trial(phase: Phase, step: &str, n: u64) {
    let mut world = World::new();
    if phase == Phase::Rebasing {
        FakeRunnerInstall::new()
            .poll_wait_secs(1)
            .session_conflict_retry_secs(1)
            .build(&world.dir.path().join("base2"))
            .expect("build the second base");
    }
    let write = |world: &World, runners: &str, base: &str| {
        std::fs::write(world.config(), config_for(world, runners, base)).expect("write config");
    };
    write(&world, THREE, "base");
    let crash = format!("{step}:{n}");
    let armed = [("CORRAL_TEST_CRASH_AFTER", crash.as_str())];
    let (want, base): (&[&str], &str) = match phase {
        Phase::Provisioning | Phase::Registration => {
            world.start_with_env(&armed);
            (&["a", "b", "c"], "base")
        }
        Phase::Deregistration | Phase::Rebasing => {
            // Armed only once the runners are up, so the points count this phase alone:
            // a first corral builds them and is killed (its listeners live on), a second one
            // adopts them and meets the change.
            world.start();
            world.wait_idle(&["a", "b", "c"]);
            world.signal(nix::sys::signal::Signal::SIGKILL);
            world.corral().exit_code();
            // The dead corral's status would satisfy the wait below at once.
            std::fs::remove_file(world.state().join("status.json")).expect("remove status");
            world.start_with_env(&armed);
            world.wait_idle(&["a", "b", "c"]);
            if phase == Phase::Deregistration {
                write(&world, ONE, "base");
                (&["a"], "base")
            } else {
                write(&world, THREE, "base2");
                (&["a", "b", "c"], "base2")
            }
        }
    };
    let code = world.corral().exit_code();
    let log = world.corral().output();
    assert!(
        code == -1 && log.contains(&format!("crash point {crash}: SIGKILL")),
        "corral died at {crash} (exit {code}):\n{log}"
    );
    // Only the restarted corral's own status counts (the dead one may not have written any).
    let _ = std::fs::remove_file(world.state().join("status.json"));
    world.start();
    converged(&world, want, base);
}

/// The host and the fake GitHub hold exactly `want`, each once, on `base`.
fn converged(world: &World, want: &[&str], base: &str) {
    world.wait_status(&format!("{want:?} idle and nothing else"), |s| {
        s.runners.len() == want.len()
            && s.runners.iter().all(|r| {
                want.contains(&r.name.as_str()) && r.state == State::Idle && r.pid.is_some()
            })
    });
    let runners = world.state().join("runners");
    let records = world.state().join("records");
    let mut last = String::new();
    let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_until(
            "one listener per runner, no leftover, one registration each",
            || {
                let listeners = listeners_per_runner(&runners);
                let dirs = entries(&runners);
                let recs = entries(&records);
                let mut registered: Vec<String> =
                    world.gh.runners(REPO).into_iter().map(|r| r.name).collect();
                registered.sort();
                let bases: Vec<String> = want
                    .iter()
                    .map(|n| {
                        std::fs::read_link(runners.join(n).join("externals"))
                            .map(|t| t.display().to_string())
                            .unwrap_or_default()
                    })
                    .collect();
                last = format!(
                "listeners {listeners:?}\ndirs {dirs:?}\nrecords {recs:?}\nregistered {registered:?}\nbases {bases:?}"
            );
                let names: Vec<String> = want.iter().map(|n| (*n).to_string()).collect();
                listeners.len() == want.len()
                    && listeners.values().all(|n| *n == 1)
                    && dirs == names
                    && recs == names
                    && registered == names
                    && bases
                        .iter()
                        .all(|b| b.contains(&format!("/{base}/externals")))
            },
        );
    }));
    let log = world
        .corral
        .as_ref()
        .map(crate::kit::proc::Proc::output)
        .unwrap_or_default();
    assert!(ok.is_ok(), "not converged:\n{last}\ncorral log:\n{log}");
}

/// Live `Runner.Listener` processes under `runners`, by runner directory.
fn listeners_per_runner(runners: &Path) -> BTreeMap<String, usize> {
    let mut per = BTreeMap::new();
    for pid in listeners_under(runners) {
        let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe")) else {
            continue;
        };
        let name = exe
            .strip_prefix(runners)
            .ok()
            .and_then(|p| p.components().next())
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .unwrap_or_default();
        *per.entry(name).or_default() += 1;
    }
    per
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn crash_while_provisioning_converges() {
    run_phase(Phase::Provisioning);
}

#[test]
fn crash_while_registering_converges() {
    run_phase(Phase::Registration);
}

#[test]
fn crash_while_deregistering_converges() {
    run_phase(Phase::Deregistration);
}

#[test]
fn crash_while_rebasing_converges() {
    run_phase(Phase::Rebasing);
}
