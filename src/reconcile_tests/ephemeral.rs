//! Planner tests on ephemeral runners: rebuilt after their listener, never moved in place.

use super::*;

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
