//! A fleet for real (issue 20): three corral containers from the repository's image, hosts
//! `host-a`, `host-b` and `host-c` on a private Docker network, following one git repository
//! served over https from a container on that network, whose file places entries with
//! `hosts:`; the fake GitHub on the network's gateway (tests/kit/fleet.rs). One test per
//! scenario: a fleet starts in seconds once the image is built (once per run).
//! Skipped by name only where no Docker engine answers.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::kit::container::assert_one_listener_each;
use crate::kit::daemon::REPO;
use crate::kit::docker::{docker, docker_ok, skip_without_engine};
use crate::kit::fleet::{mark, Fleet};
use crate::kit::github::RunnerStatus;

const HOSTS: [&str; 3] = ["host-a", "host-b", "host-c"];

/// The fleet's file: one runner per host, and `mover` on `mover_host`.
fn fleet_file(mover_host: &str) -> String {
    let entry = |name: &str, host: &str| {
        format!("  - name: {name}\n    repo: {REPO}\n    hosts: [{host}]\n")
    };
    format!(
        "defaults:\n  labels: [fleet]\n  user: runner\n  drain_timeout: 30s\nrunners:\n{}{}{}{}",
        entry("a-ci", "host-a"),
        entry("b-ci", "host-b"),
        entry("c-ci", "host-c"),
        entry("mover", mover_host),
    )
}

/// What each host must run when `mover` is on `mover_host`.
fn layout(mover_host: &str) -> Vec<(&'static str, Vec<&'static str>)> {
    HOSTS
        .iter()
        .map(|h| {
            let mut names = vec![match *h {
                "host-a" => "a-ci",
                "host-b" => "b-ci",
                _ => "c-ci",
            }];
            if *h == mover_host {
                names.push("mover");
            }
            names.sort_unstable();
            (*h, names)
        })
        .collect()
}

/// True when host `host` runs exactly `names`, all idle.
fn runs_exactly(fleet: &Fleet, host: &str, names: &[&str]) -> bool {
    fleet.idle_names(host).is_some_and(|mut got| {
        got.sort();
        got == names
    })
}

/// Every host runs its part of `layout`, idle, at `revision` when given, and the fake holds
/// one online registration per runner and no other.
fn wait_converged(fleet: &Fleet, mover_host: &str, revision: Option<&str>) {
    let want = layout(mover_host);
    fleet.wait(
        &format!("the fleet converged with mover on {mover_host}"),
        || {
            let hosts_ok = want.iter().all(|(host, names)| {
                runs_exactly(fleet, host, names)
                    && revision.is_none_or(|r| {
                        fleet
                            .status(host)
                            .and_then(|s| s.source.and_then(|s| s.revision))
                            .as_deref()
                            == Some(r)
                    })
            });
            let regs = fleet.gh.runners(REPO);
            hosts_ok && regs.len() == 4 && regs.iter().all(|r| r.status == RunnerStatus::Online)
        },
    );
}

/// Fails unless no name ever had two registrations at once (a replace counts as two).
fn assert_never_twice(fleet: &Fleet) -> BTreeMap<String, usize> {
    let claims = fleet.gh.registration_claims(REPO);
    assert!(
        claims.values().all(|n| *n == 1),
        "a name was registered twice at once: {claims:?}\n{}",
        fleet.logs()
    );
    claims
}

/// The registrations on the fake, sorted by name.
fn registrations(fleet: &Fleet) -> Vec<(String, u64)> {
    let mut ids = fleet.gh.runner_ids(REPO);
    ids.sort();
    ids
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Scenario 1, three times over (a→b, b→a, a→b): one commit moves `mover`; it drains on the
/// old host, starts on the new one, and no name is ever registered twice at once.
#[test]
fn one_commit_moves_an_entry_between_hosts_never_registered_twice() {
    let test = "fleet_hosts::one_commit_moves_an_entry_between_hosts_never_registered_twice";
    if skip_without_engine(test) {
        return;
    }
    let t0 = Instant::now();
    let fleet = Fleet::up("move", &HOSTS, &fleet_file("host-a"));
    mark(t0, "fleet started");
    wait_converged(&fleet, "host-a", None);
    mark(t0, "converged, mover on host-a");
    let mut took = Vec::new();
    for (from, to) in [
        ("host-a", "host-b"),
        ("host-b", "host-a"),
        ("host-a", "host-b"),
    ] {
        let old = fleet
            .gh
            .runner_ids(REPO)
            .into_iter()
            .find(|(n, _)| n == "mover")
            .map(|(_, id)| id)
            .expect("mover registered");
        let commit = fleet.push(&fleet_file(to));
        let pushed = Instant::now();
        mark(t0, &format!("pushed {commit}: mover {from} -> {to}"));
        let mut gone_from_old = None;
        fleet.wait(&format!("mover idle on {to}"), || {
            if gone_from_old.is_none()
                && fleet
                    .status(from)
                    .is_some_and(|s| s.runners.iter().all(|r| r.name != "mover"))
            {
                gone_from_old = Some(pushed.elapsed());
                mark(t0, &format!("mover drained and gone on {from}"));
            }
            runs_exactly(
                &fleet,
                to,
                &layout(to).iter().find(|l| l.0 == to).expect("host").1,
            )
        });
        let elapsed = pushed.elapsed();
        mark(
            t0,
            &format!("mover idle on {to}: {elapsed:.1?} after the push"),
        );
        took.push(elapsed);
        wait_converged(&fleet, to, Some(&commit));
        assert!(
            fleet
                .listeners(from)
                .iter()
                .all(|p| !p.cmd.contains("/runners/mover/")),
            "no mover listener left on {from}"
        );
        let ids = registrations(&fleet);
        let new = ids.iter().find(|(n, _)| n == "mover").expect("mover").1;
        assert_ne!(new, old, "{to} registered mover anew: {ids:?}");
        assert_never_twice(&fleet);
    }
    eprintln!(
        "push to mover idle on the new host: {:?}; median {:.1?}",
        took,
        median(took.clone())
    );
}

/// Sum of `corral_github_requests_total` samples, and of those with no answer (`status="0"`).
fn github_requests(metrics: &str) -> (u64, u64) {
    let (mut all, mut failed) = (0, 0);
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("corral_github_requests_total{"))
    {
        let n: u64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0, |v| v as u64);
        all += n;
        if line.contains("status=\"0\"") {
            failed += n;
        }
    }
    (all, failed)
}

fn listener_pids(fleet: &Fleet, host: &str) -> Vec<i32> {
    let mut pids: Vec<i32> = fleet.listeners(host).iter().map(|p| p.pid).collect();
    pids.sort_unstable();
    pids
}

/// Seconds since the epoch, as `docker logs --since` takes them.
fn unix_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after the epoch");
    format!("{}.{:09}", now.as_secs(), now.subsec_nanos())
}

/// How long host-a stays cut off. Below what the fake listener survives: ten failed polls in
/// a row end its run (reference/runner-contract.md §4.1, exit 2), one a second after its
/// pending long poll times out (16 s), so it lives about 25 s without the server.
const CUT: Duration = Duration::from_secs(14);

/// Scenario 2: host-a cut off from the network (GitHub and the git server both): its
/// listeners keep running, its GitHub requests stay within what the backoff allows, and
/// after the reconnect it converges with nothing duplicated.
#[test]
fn a_host_cut_off_keeps_its_runners_and_converges_after_without_duplicates() {
    let test =
        "fleet_hosts::a_host_cut_off_keeps_its_runners_and_converges_after_without_duplicates";
    if skip_without_engine(test) {
        return;
    }
    let t0 = Instant::now();
    let fleet = Fleet::up("cut", &HOSTS, &fleet_file("host-a"));
    wait_converged(&fleet, "host-a", None);
    mark(t0, "converged");
    let ids = registrations(&fleet);
    let pids = listener_pids(&fleet, "host-a");
    assert_eq!(pids.len(), 2, "{:?}", fleet.listeners("host-a"));

    let metrics = fleet.metrics("host-a");
    let (before, failed_before) = github_requests(&metrics);
    assert!(
        before > 0,
        "host-a's /metrics counts its GitHub requests:\n{metrics}"
    );
    let since = unix_now();
    fleet.cut("host-a");
    let cut = Instant::now();
    mark(t0, "host-a cut off");
    fleet.wait("the cut window", || {
        assert_eq!(
            listener_pids(&fleet, "host-a"),
            pids,
            "host-a's listeners were restarted while cut off\n{}",
            fleet.logs()
        );
        cut.elapsed() >= CUT
    });
    let until = unix_now();
    let metrics = fleet.metrics("host-a");
    let (after, failed_after) = github_requests(&metrics);
    let (sent, failed) = (after - before, failed_after - failed_before);
    // corral logs to stderr.
    let out = docker(&[
        "logs",
        "--since",
        &since,
        "--until",
        &until,
        &fleet.container("host-a"),
    ]);
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    let fetches = log
        .lines()
        .filter(|l| l.contains("cannot fetch the source"))
        .count();
    eprintln!(
        "host-a cut off for {CUT:?}: {sent} GitHub requests ({failed} unanswered), \
         {fetches} failed fetches of the source"
    );
    // With nothing to change corral asks GitHub nothing: its listeners run on. Whatever
    // it would ask goes through its steps' backoff (1 s doubling, src/backoff.rs): at most
    // one try a second for each of its two runners and its listing.
    let bound = 3 * CUT.as_secs();
    assert!(
        sent <= bound,
        "{sent} GitHub requests in {CUT:?} (bound {bound})"
    );
    // The source is retried 1 s after a failure, doubling up to `interval` (1 s here,
    // src/gitsource.rs): at most one try a second. (A fetch under way at the cut waits for
    // its connection up to the fetch deadline, so the window may see none fail.)
    let bound = usize::try_from(CUT.as_secs()).expect("secs") + 1;
    assert!(
        fetches <= bound,
        "{fetches} failed fetches in {CUT:?} (bound {bound}):\n{log}"
    );
    let status = fleet.status("host-a").expect("status while cut off");
    assert_eq!(status.runners.len(), 2, "{status:?}");

    fleet.reconnect("host-a");
    mark(t0, "host-a reconnected");
    wait_converged(&fleet, "host-a", None);
    mark(t0, "converged again");
    assert_eq!(
        registrations(&fleet),
        ids,
        "the same registrations, none added"
    );
    assert_eq!(listener_pids(&fleet, "host-a").len(), 2);
    assert_never_twice(&fleet);
}

/// Scenario 3: host-b's container killed and started again: its runners come back on their
/// registrations, one listener each, none duplicated.
#[test]
fn a_killed_host_comes_back_with_its_runners_once() {
    let test = "fleet_hosts::a_killed_host_comes_back_with_its_runners_once";
    if skip_without_engine(test) {
        return;
    }
    let t0 = Instant::now();
    let fleet = Fleet::up("kill", &HOSTS, &fleet_file("host-b"));
    wait_converged(&fleet, "host-b", None);
    mark(t0, "converged");
    let ids = registrations(&fleet);
    let b = fleet.container("host-b");
    docker_ok(&["kill", &b]);
    mark(t0, "host-b killed");
    assert_eq!(
        docker_ok(&["inspect", "-f", "{{.State.Running}}", &b]).trim(),
        "false"
    );
    docker_ok(&["start", &b]);
    mark(t0, "host-b started again");
    wait_converged(&fleet, "host-b", None);
    mark(t0, "converged again");
    assert_eq!(registrations(&fleet), ids, "the same registrations");
    let listeners = fleet.listeners("host-b");
    assert_one_listener_each(&listeners, &["b-ci", "mover"]);
    assert_never_twice(&fleet);
}
