//! Table tests of the planner: each row is a host situation and the exact steps expected.
//! Here the helpers and the runner lifecycle; by topic: `github` (what GitHub lists),
//! `bases` (moving to another base), `ephemeral` (runners rebuilt after each job).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::*;
use crate::config::{BaseSource, GitHub, GitHubAuth, Registration, Repo};
use crate::layout::SpecRecord;
use crate::observe::{LiveProcess, ServerRunner, ServerView};

mod bases;
mod ephemeral;
mod github;

fn spec(name: &str) -> RunnerSpec {
    RunnerSpec {
        name: name.to_string(),
        entry: 0,
        repo: Repo {
            owner: "o".into(),
            name: "r".into(),
            url: "https://github.com/o/r".into(),
        },
        labels: vec!["docker".into()],
        no_default_labels: false,
        ephemeral: false,
        env: BTreeMap::new(),
        drain_timeout: Duration::from_secs(60),
        user: "runner".into(),
        allow_root: false,
        isolation: crate::config::Isolation::Shared,
        registration: Registration::GitHub,
        marker: None,
        version: None,
        docker: None,
        resources: crate::cgroup::Limits::default(),
        clean: crate::config::Clean::None,
        leftovers: crate::config::Leftovers::Kill,
        scale_set: None,
    }
}

fn desired(specs: Vec<RunnerSpec>) -> Desired {
    Desired {
        config_path: PathBuf::from("runners.yaml"),
        state_dir: PathBuf::from("state"),
        base: BaseSource::Path(PathBuf::from("base")),
        github: None,
        resync_interval: Duration::from_secs(30),
        shutdown_timeout: Duration::from_secs(60),
        api: None,
        max_unavailable: 1,
        update_check_interval: Duration::from_secs(3600),
        download_url: "http://127.0.0.1:1/{version}.tar.gz".into(),
        base_prune_after: Duration::from_secs(3600),
        runners: specs.into_iter().map(|s| (s.name.clone(), s)).collect(),
        host_id: "test-host".into(),
        elsewhere: Vec::new(),
        max_runners: None,
        capped: Vec::new(),
        pools: Vec::new(),
        demand_poll_interval: Duration::from_secs(15),
        source: None,
    }
}

fn record(spec: &RunnerSpec) -> SpecRecord {
    SpecRecord {
        registration_hash: spec.registration_hash(),
        runtime_hash: spec.runtime_hash(),
        spec: Some(spec.clone()),
        runner_id: None,
    }
}

/// A runner that is provisioned, registered as `spec` says, and running.
fn healthy(spec: &RunnerSpec) -> ObservedRunner {
    ObservedRunner {
        provisioned: true,
        configured: true,
        spec: Some(record(spec)),
        process: Some(LiveProcess {
            pid: 42,
            busy: false,
        }),
        used: true,
        base: Some(PathBuf::from("/bases/in-force")),
    }
}

fn observed(runners: Vec<(&str, ObservedRunner)>) -> Observed {
    Observed {
        runners: runners
            .into_iter()
            .map(|(n, r)| (n.to_string(), r))
            .collect(),
        ..Observed::default()
    }
}

fn steps(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .map(|a| format!("{} {}", a.runner().unwrap_or("-"), a))
        .collect()
}

#[test]
fn new_runner_is_provisioned_registered_and_started() {
    let plan = plan(&desired(vec![spec("web")]), &Observed::default());
    assert_eq!(steps(&plan), ["web provision", "web register", "web start"]);
}

#[test]
fn removed_runner_is_deregistered_stopped_and_deleted() {
    let old = spec("old");
    let plan = plan(&desired(vec![]), &observed(vec![("old", healthy(&old))]));
    assert_eq!(
        steps(&plan),
        [
            "old deregister (waits for a running job)",
            "old stop",
            "old deprovision"
        ]
    );
}

#[test]
fn removed_runner_that_never_registered_is_only_deleted() {
    let seen = ObservedRunner {
        provisioned: true,
        ..ObservedRunner::default()
    };
    let plan = plan(&desired(vec![]), &observed(vec![("half", seen)]));
    assert_eq!(steps(&plan), ["half deprovision"]);
}

#[test]
fn label_change_registers_afresh() {
    let before = spec("web");
    let mut after = spec("web");
    after.labels.push("gpu".into());
    let plan = plan(
        &desired(vec![after]),
        &observed(vec![("web", healthy(&before))]),
    );
    assert_eq!(
        steps(&plan),
        [
            "web deregister (waits for a running job)",
            "web stop",
            "web deprovision",
            "web provision",
            "web register",
            "web start"
        ]
    );
}

#[test]
fn env_change_restarts_only() {
    let before = spec("web");
    let mut after = spec("web");
    after.env.insert("TZ".into(), "UTC".into());
    let plan = plan(
        &desired(vec![after]),
        &observed(vec![("web", healthy(&before))]),
    );
    assert_eq!(steps(&plan), ["web restart (settings changed)"]);
}

#[test]
fn crashed_listener_is_started_again() {
    let web = spec("web");
    let seen = ObservedRunner {
        process: None,
        ..healthy(&web)
    };
    let plan = plan(&desired(vec![web]), &observed(vec![("web", seen)]));
    assert_eq!(steps(&plan), ["web start (listener not running)"]);
}

#[test]
fn half_provisioned_leftovers_are_removed_and_registration_finished() {
    let web = spec("web");
    let mut seen = observed(vec![(
        "web",
        ObservedRunner {
            provisioned: true,
            base: Some(PathBuf::from("/bases/in-force")),
            ..ObservedRunner::default()
        },
    )]);
    seen.leftovers
        .push(PathBuf::from("state/runners/.tmp-api-1-x7"));
    let plan = plan(&desired(vec![web]), &seen);
    assert_eq!(
        steps(&plan),
        [
            "- remove leftover state/runners/.tmp-api-1-x7",
            "web register",
            "web start"
        ]
    );
}

#[test]
fn records_without_a_directory_are_rebuilt() {
    let web = spec("web");
    let seen = ObservedRunner {
        spec: Some(record(&web)),
        ..ObservedRunner::default()
    };
    let plan = plan(&desired(vec![web]), &observed(vec![("web", seen)]));
    assert_eq!(steps(&plan), ["web provision", "web register", "web start"]);
}

#[test]
fn used_ephemeral_runner_comes_back_fresh() {
    let mut eph = spec("eph");
    eph.ephemeral = true;
    let seen = ObservedRunner {
        configured: false,
        process: None,
        ..healthy(&eph)
    };
    let plan = plan(&desired(vec![eph]), &observed(vec![("eph", seen)]));
    assert_eq!(
        steps(&plan),
        [
            "eph deprovision",
            "eph provision",
            "eph register",
            "eph start"
        ]
    );
}

#[test]
fn deleted_registration_of_a_persistent_runner_is_registered_again() {
    let web = spec("web");
    let seen = ObservedRunner {
        configured: false,
        process: None,
        ..healthy(&web)
    };
    let plan = plan(&desired(vec![web]), &observed(vec![("web", seen)]));
    assert_eq!(steps(&plan), ["web register", "web start"]);
}

#[test]
fn nothing_to_do_when_equal() {
    let (a, b) = (spec("a"), spec("b"));
    let seen = observed(vec![("a", healthy(&a)), ("b", healthy(&b))]);
    assert!(plan(&desired(vec![a, b]), &seen).is_empty());
}

#[test]
fn busy_runner_with_same_spec_is_left_alone() {
    let web = spec("web");
    let mut seen = healthy(&web);
    seen.process = Some(LiveProcess { pid: 7, busy: true });
    assert!(plan(&desired(vec![web]), &observed(vec![("web", seen)])).is_empty());
}

#[test]
fn plan_is_ordered_by_runner_name() {
    let plan = plan(&desired(vec![spec("b"), spec("a")]), &Observed::default());
    let order: Vec<&str> = plan.iter().filter_map(Action::runner).collect();
    assert_eq!(order, ["a", "a", "a", "b", "b", "b"]);
}

/// `base` (the test desired state's) resolved to `path`.
fn on_base(path: &str) -> BTreeMap<BaseSource, PathBuf> {
    BTreeMap::from([(BaseSource::Path(PathBuf::from("base")), PathBuf::from(path))])
}
