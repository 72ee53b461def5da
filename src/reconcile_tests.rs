//! Table tests of the planner: each row is a host situation and the exact steps expected.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::*;
use crate::config::{BaseSource, GitHub, GitHubAuth, Registration, Repo};
use crate::layout::SpecRecord;
use crate::observe::{LiveProcess, ServerRunner, ServerView};

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

const MARKER: &str = "corral-test-host";

fn with_auth(mut d: Desired, cleanup_orphans: bool) -> Desired {
    d.github = Some(GitHub {
        web_url: "https://github.com".into(),
        api_url: "https://api.github.com".into(),
        auth: GitHubAuth::TokenEnv("GITHUB_TOKEN".into()),
        marker_label: Some(MARKER.into()),
        cleanup_orphans,
    });
    d
}

/// GitHub listed `registrations` for the test repository this pass.
fn set_listed(observed: &mut Observed, registrations: Vec<ServerRunner>) {
    let mut view = ServerView::default();
    view.repos
        .insert("https://github.com/o/r".into(), registrations);
    observed.server = Some(view);
}

fn registration(name: &str, labels: &[&str], online: bool, busy: bool) -> ServerRunner {
    ServerRunner {
        id: 7,
        name: name.into(),
        repo: spec(name).repo,
        online,
        busy,
        custom_labels: labels.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn label_change_with_a_credential_is_set_in_place() {
    let before = spec("web");
    let mut after = spec("web");
    after.labels.push("gpu".into());
    let plan = plan(
        &with_auth(desired(vec![after]), true),
        &observed(vec![("web", healthy(&before))]),
    );
    assert_eq!(steps(&plan), ["web set labels on GitHub"]);
}

#[test]
fn labels_changed_on_github_are_set_back() {
    let web = spec("web");
    let mut seen = observed(vec![("web", healthy(&web))]);
    set_listed(
        &mut seen,
        vec![registration(
            "web",
            &["docker", "added-by-hand"],
            true,
            false,
        )],
    );
    let plan = plan(&with_auth(desired(vec![web]), true), &seen);
    assert_eq!(steps(&plan), ["web set labels on GitHub"]);
}

#[test]
fn registration_deleted_on_github_is_registered_again() {
    let web = spec("web");
    let mut seen = observed(vec![(
        "web",
        ObservedRunner {
            process: None,
            ..healthy(&web)
        },
    )]);
    set_listed(&mut seen, vec![]);
    let plan = plan(&with_auth(desired(vec![web]), true), &seen);
    assert_eq!(
        steps(&plan),
        [
            "web forget the registration GitHub deleted",
            "web register",
            "web start"
        ]
    );
}

#[test]
fn a_running_listener_finds_a_deleted_registration_itself() {
    let web = spec("web");
    let mut seen = observed(vec![("web", healthy(&web))]);
    set_listed(&mut seen, vec![]);
    assert!(plan(&with_auth(desired(vec![web]), true), &seen).is_empty());
}

#[test]
fn a_starting_jit_listener_is_left_alone() {
    let mut eph = spec("eph");
    eph.ephemeral = true;
    let seen = ObservedRunner {
        configured: false,
        used: true,
        ..healthy(&eph)
    };
    let plan = plan(&desired(vec![eph]), &observed(vec![("eph", seen)]));
    assert!(plan.is_empty(), "{plan:?}");
}

#[test]
fn offline_idle_orphans_with_the_marker_are_deleted_and_nothing_else() {
    let web = spec("web");
    let mut seen = observed(vec![("web", healthy(&web))]);
    set_listed(
        &mut seen,
        vec![
            registration("web", &["docker"], true, false),
            registration("gone", &["x", MARKER], false, false),
            registration("gone-busy", &[MARKER], false, true),
            registration("gone-online", &[MARKER], true, false),
            registration("someone-elses", &["x"], false, false),
        ],
    );
    let plan_on = plan(&with_auth(desired(vec![web.clone()]), true), &seen);
    assert_eq!(
        steps(&plan_on),
        ["- delete orphan registration gone (id 7) in https://github.com/o/r"]
    );
    let plan_off = plan(&with_auth(desired(vec![web]), false), &seen);
    assert!(plan_off.is_empty(), "cleanup switched off: {plan_off:?}");
}

#[test]
fn a_new_base_rolls_over_idle_runners_one_at_a_time() {
    let (a, b, c) = (spec("a"), spec("b"), spec("c"));
    let on_old = |s: &RunnerSpec, busy: bool| ObservedRunner {
        base: Some(PathBuf::from("/bases/old")),
        process: Some(LiveProcess { pid: 1, busy }),
        ..healthy(s)
    };
    let mut seen = observed(vec![
        ("a", on_old(&a, true)),
        ("b", on_old(&b, false)),
        ("c", on_old(&c, false)),
    ]);
    seen.bases = on_base("/bases/new");
    let mut d = desired(vec![a, b, c]);
    let plan_one = plan(&d, &seen);
    assert_eq!(
        steps(&plan_one),
        ["b move to the new base (keeps its registration)", "b start"],
        "the busy one waits; one at a time"
    );
    d.max_unavailable = 2;
    let plan_two = plan(&d, &seen);
    assert_eq!(
        plan_two
            .iter()
            .filter(|a| matches!(a, Action::Rebase { .. }))
            .count(),
        2
    );
    seen.bases = on_base("/bases/old");
    assert!(
        plan(&d, &seen).is_empty(),
        "nothing to move when the base is the same"
    );
}

/// `base` (the test desired state's) resolved to `path`.
fn on_base(path: &str) -> BTreeMap<BaseSource, PathBuf> {
    BTreeMap::from([(BaseSource::Path(PathBuf::from("base")), PathBuf::from(path))])
}

#[test]
fn a_runner_pinned_to_its_own_version_moves_to_that_base_alone() {
    let (a, mut b) = (spec("a"), spec("b"));
    b.version = Some("2.300.0".into());
    let on = |s: &RunnerSpec, base: &str| ObservedRunner {
        base: Some(PathBuf::from(base)),
        ..healthy(s)
    };
    let d = desired(vec![a.clone(), b.clone()]);
    let pinned = d.base_of(&b);
    assert_eq!(
        pinned,
        BaseSource::Version {
            version: "2.300.0".into(),
            sha256: None,
            download_url: d.download_url.clone(),
        }
    );
    let mut seen = observed(vec![
        ("a", on(&a, "/bases/main")),
        ("b", on(&b, "/bases/main")),
    ]);
    seen.bases = on_base("/bases/main");
    assert!(
        plan(&d, &seen).is_empty(),
        "the pinned release is not installed yet: b stays where it is"
    );
    seen.bases.insert(pinned, PathBuf::from("/bases/2.300.0"));
    assert_eq!(
        steps(&plan(&d, &seen)),
        ["b move to the new base (keeps its registration)", "b start"]
    );
    seen.runners.insert("b".into(), on(&b, "/bases/2.300.0"));
    assert!(plan(&d, &seen).is_empty(), "each on its own base: {seen:?}");
}

#[test]
fn registrations_are_found_by_name_in_any_case_among_many() {
    // Stopped runners whose registration is missing would be registered again; found ones
    // are only started. Names on GitHub differ in case from the file's.
    let specs: Vec<RunnerSpec> = (0..300).map(|i| spec(&format!("r{i}"))).collect();
    let mut seen = observed(
        specs
            .iter()
            .map(|s| {
                let stopped = ObservedRunner {
                    process: None,
                    ..healthy(s)
                };
                (s.name.as_str(), stopped)
            })
            .collect(),
    );
    let listed = specs
        .iter()
        .filter(|s| s.name != "r7")
        .map(|s| registration(&s.name.to_uppercase(), &["docker"], false, false))
        .collect();
    set_listed(&mut seen, listed);
    let plan = plan(&with_auth(desired(specs), true), &seen);
    let forgotten: Vec<&str> = plan
        .iter()
        .filter(|a| matches!(a, Action::Forget { .. }))
        .filter_map(Action::runner)
        .collect();
    assert_eq!(forgotten, ["r7"]);
    assert_eq!(
        plan.iter()
            .filter(|a| matches!(a, Action::Start { .. }))
            .count(),
        300
    );
}

const FRESH: [&str; 4] = [
    "eph deprovision",
    "eph provision",
    "eph register",
    "eph start",
];

fn ephemeral(name: &str) -> RunnerSpec {
    let mut eph = spec(name);
    eph.ephemeral = true;
    eph
}

#[test]
fn an_ephemeral_dir_is_rebuilt_after_its_listener_whatever_it_holds() {
    let eph = ephemeral("eph");
    // (configured, used by corral's record, a live listener) -> the plan.
    let table: [(bool, bool, bool, &[&str]); 6] = [
        // Its job done, or a job kept `.runner` and planted a wrapper, emptied `_diag`,
        // killed its listener: corral's record says a listener ran there.
        (false, true, false, &FRESH),
        (true, true, false, &FRESH),
        // Built and registered, no listener started yet: started there.
        (false, false, false, &["eph register", "eph start"]),
        (true, false, false, &["eph start (listener not running)"]),
        // A listener is running: nothing until it exits.
        (true, true, true, &[]),
        (false, true, true, &[]),
    ];
    for (configured, used, live, want) in table {
        let seen = ObservedRunner {
            configured,
            used,
            process: live.then_some(LiveProcess {
                pid: 7,
                busy: false,
            }),
            ..healthy(&eph)
        };
        let got = plan(&desired(vec![eph.clone()]), &observed(vec![("eph", seen)]));
        assert_eq!(
            steps(&got),
            want,
            "configured {configured}, used {used}, live {live}"
        );
    }
}

#[test]
fn a_dir_corral_has_no_record_of_is_never_trusted() {
    let web = spec("web");
    let mut seen = observed(vec![(
        "web",
        ObservedRunner {
            base: None,
            process: None,
            ..healthy(&web)
        },
    )]);
    seen.bases = on_base("/bases/in-force");
    // Registered: moved onto the base in force, which writes the record.
    assert_eq!(
        steps(&plan(&desired(vec![web.clone()]), &seen)),
        [
            "web move to the new base (keeps its registration)",
            "web start"
        ]
    );
    // Not registered: nothing in it is worth keeping.
    if let Some(r) = seen.runners.get_mut("web") {
        r.configured = false;
    }
    assert_eq!(
        steps(&plan(&desired(vec![web]), &seen)),
        [
            "web deprovision",
            "web provision",
            "web register",
            "web start"
        ]
    );
}

#[test]
fn an_ephemeral_runner_is_never_moved_or_restarted_in_place() {
    let eph = ephemeral("eph");
    let mut seen = observed(vec![(
        "eph",
        ObservedRunner {
            base: Some(PathBuf::from("/bases/old")),
            ..healthy(&eph)
        },
    )]);
    seen.bases = on_base("/bases/new");
    let mut want = vec!["eph stop"];
    want.extend(FRESH);
    assert_eq!(steps(&plan(&desired(vec![eph.clone()]), &seen)), want);
    let mut changed = eph.clone();
    changed.env.insert("TZ".into(), "UTC".into());
    seen.bases = on_base("/bases/old");
    assert_eq!(steps(&plan(&desired(vec![changed]), &seen)), want);
}
