//! Planner tests on what GitHub lists: labels, deleted registrations, orphans.

use super::*;

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
