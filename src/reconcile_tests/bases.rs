//! Planner tests on bases: rolling runners over to a new base, and directories without a record.

use super::*;

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
