//! `corral run` with `base.version`: the release is installed in the background, then the
//! runners are built from it.

use corral::status::State;

use crate::kit::daemon::{runner, World, REPO};

fn config_with_version(world: &World, version: &str, runners: &str) -> String {
    world.config_text(runners).replace(
        "base:\n  path: ./base\n",
        &format!(
            "base:\n  version: {version}\n  download_url: {}\n",
            world.gh.download_url_template()
        ),
    )
}

#[test]
fn base_version_is_installed_then_used() {
    let mut world = World::new();
    world.publish_release("2.336.0");
    std::fs::write(
        world.config(),
        config_with_version(&world, "2.336.0", "  - name: r\n    repo: owner/repo\n"),
    )
    .expect("write config");
    world.start();
    world.wait_idle(&["r"]);
    let installed = world.state().join("bases/2.336.0");
    assert!(installed.join("bin/Runner.Listener").is_file());
    let link = std::fs::read_link(world.runner_dir("r").join("externals")).expect("externals link");
    assert!(link.starts_with(&installed), "{}", link.display());
    assert!(world.corral().output().contains("runner release installed"));
    assert_eq!(world.gh.download_count(), 1);
    assert!(world.gh.runners(REPO).iter().any(|r| r.name == "r"));
}

#[test]
fn latest_resolves_through_the_releases_api() {
    let mut world = World::new();
    world.publish_release("2.336.0");
    world.publish_release("2.337.0");
    world.gh.set_latest("2.337.0");
    std::fs::write(
        world.config(),
        config_with_version(&world, "latest", "  - name: r\n    repo: owner/repo\n"),
    )
    .expect("write config");
    world.start();
    let status = world.wait_status("r idle on 2.337.0", |s| {
        runner(s, "r")
            .is_some_and(|r| r.state == State::Idle && r.version.as_deref() == Some("2.337.0"))
    });
    assert!(runner(&status, "r").is_some());
    assert!(world.state().join("bases/2.337.0").is_dir());
    assert!(!world.state().join("bases/2.336.0").exists());
}

#[test]
fn a_release_that_fails_verification_is_a_runner_error_and_installs_nothing() {
    let mut world = World::new();
    world.publish_release("2.336.0");
    let text = config_with_version(&world, "2.336.0", "  - name: r\n    repo: owner/repo\n")
        .replace(
            "  version: 2.336.0\n",
            &format!("  version: 2.336.0\n  sha256: {}\n", "0".repeat(64)),
        );
    std::fs::write(world.config(), text).expect("write config");
    world.start();
    let status = world.wait_status("the checksum error shows", |s| {
        runner(s, "r").is_some_and(|r| {
            r.last_error
                .as_deref()
                .is_some_and(|e| e.contains(&"0".repeat(64)))
        })
    });
    assert!(runner(&status, "r").is_some_and(|r| r.pid.is_none()));
    assert!(
        !world.state().join("bases/2.336.0").exists(),
        "nothing installed"
    );
}

#[test]
fn a_new_version_rolls_over_every_runner_and_waits_for_the_busy_one() {
    let mut world = World::new();
    world.publish_release("2.336.0");
    world.publish_release("2.337.0");
    let runners = "  - name: w\n    repo: owner/repo\n    count: 3\n";
    std::fs::write(
        world.config(),
        config_with_version(&world, "2.336.0", runners),
    )
    .expect("write");
    world.start();
    world.wait_idle(&["w-1", "w-2", "w-3"]);
    let ids: Vec<(String, u64)> = world.gh.runner_ids(REPO);
    let job = world.gh.queue_job(
        REPO,
        &["self-hosted"],
        crate::kit::github::JobSpec {
            name: "long".into(),
            // Long enough to outlast installing 2.337.0 and moving the other two on a loaded
            // host (4 s was not, with the crash and outage tests running beside it).
            duration: std::time::Duration::from_secs(10),
            result: crate::kit::github::JobResult::Succeeded,
        },
    );
    let status = world.wait_status("one runner busy", |s| {
        s.runners.iter().any(|r| r.state == State::Busy)
    });
    let busy = status
        .runners
        .iter()
        .find(|r| r.state == State::Busy)
        .map(|r| r.name.clone())
        .expect("busy");

    std::fs::write(
        world.config(),
        config_with_version(&world, "2.337.0", runners),
    )
    .expect("write");
    world.wait_status("every runner on 2.337.0", |s| {
        s.runners.len() == 3
            && s.runners
                .iter()
                .all(|r| r.state == State::Idle && r.version.as_deref() == Some("2.337.0"))
    });
    let done = world.gh.job(job).expect("job");
    assert_eq!(
        done.conclusion.as_deref(),
        Some("success"),
        "the busy runner's job completed: {done:?}"
    );
    let now: Vec<(String, u64)> = world.gh.runner_ids(REPO);
    assert_eq!(now, ids, "every runner kept its registration");
    let base = world.state().join("bases/2.337.0");
    for n in ["w-1", "w-2", "w-3"] {
        let link = std::fs::read_link(world.runner_dir(n).join("externals")).expect("link");
        assert!(
            link.starts_with(&base),
            "{n} on the new base: {}",
            link.display()
        );
    }
    // One at a time, and the busy one last.
    let log = world.corral().output();
    let moves: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("moved to the new base"))
        .filter_map(|l| l.split("runner=").nth(1)?.split('}').next())
        .collect();
    assert_eq!(moves.len(), 3, "{log}");
    assert_eq!(
        moves.last().copied(),
        Some(busy.as_str()),
        "the busy runner moves after its job: {moves:?}"
    );
}

#[test]
fn a_newer_latest_is_found_and_rolled_out() {
    let mut world = World::new();
    world.publish_release("2.336.0");
    world.gh.set_latest("2.336.0");
    let text = config_with_version(
        &world,
        "latest",
        "  - name: r\n    repo: owner/repo\n    count: 2\n",
    )
    .replace(
        "resync_interval: 2s\n",
        "resync_interval: 2s\nupdate_check_interval: 2s\n",
    );
    std::fs::write(world.config(), text).expect("write config");
    world.start();
    world.wait_status("both on 2.336.0", |s| {
        s.runners.len() == 2
            && s.runners
                .iter()
                .all(|r| r.state == State::Idle && r.version.as_deref() == Some("2.336.0"))
    });
    let ids: Vec<u64> = world.gh.runners(REPO).into_iter().map(|r| r.id).collect();
    world.publish_release("2.337.0");
    world.gh.set_latest("2.337.0");
    world.wait_status("both on 2.337.0", |s| {
        s.runners.len() == 2
            && s.runners
                .iter()
                .all(|r| r.state == State::Idle && r.version.as_deref() == Some("2.337.0"))
    });
    let now: Vec<u64> = world.gh.runners(REPO).into_iter().map(|r| r.id).collect();
    assert_eq!(now, ids, "registrations kept across the upgrade");
}

/// The inode of `path`.
fn inode(path: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .ino()
}

#[test]
fn two_pinned_versions_run_side_by_side_and_an_unused_one_is_pruned_after_its_grace() {
    let mut world = World::new();
    world.publish_release("2.336.0");
    world.publish_release("2.337.0");
    let pinned = "  - name: a\n    repo: owner/repo\n  - name: b\n    repo: owner/repo\n    version: 2.337.0\n";
    let with_grace = |world: &World, runners: &str| {
        config_with_version(world, "2.336.0", runners).replace(
            "  version: 2.336.0\n",
            "  version: 2.336.0\n  prune_after: 3s\n",
        )
    };
    std::fs::write(world.config(), with_grace(&world, pinned)).expect("write config");
    world.start();
    world.wait_status("a on 2.336.0, b on 2.337.0", |s| {
        let on = |n: &str, v: &str| {
            runner(s, n).is_some_and(|r| r.state == State::Idle && r.version.as_deref() == Some(v))
        };
        on("a", "2.336.0") && on("b", "2.337.0")
    });
    let bases = world.state().join("bases");
    let (a, b) = (world.runner_dir("a"), world.runner_dir("b"));
    let listener = "bin/Runner.Listener";
    assert_eq!(
        inode(&a.join(listener)),
        inode(&bases.join("2.336.0").join(listener))
    );
    assert_eq!(
        inode(&b.join(listener)),
        inode(&bases.join("2.337.0").join(listener))
    );
    assert_ne!(inode(&a.join(listener)), inode(&b.join(listener)));
    for (dir, version) in [(&a, "2.336.0"), (&b, "2.337.0")] {
        let link = std::fs::read_link(dir.join("externals")).expect("externals link");
        assert!(link.starts_with(bases.join(version)), "{}", link.display());
        // Identity and work are the runner's own, never shared through a link.
        for own in [".runner", ".credentials"] {
            use std::os::unix::fs::MetadataExt;
            let meta = std::fs::metadata(dir.join(own)).expect("identity file");
            assert_eq!(meta.nlink(), 1, "{own} of {} is linked", dir.display());
        }
    }
    assert_ne!(inode(&a.join("_work")), inode(&b.join("_work")));

    let config = world.config();
    let config = config.to_str().expect("utf-8 path");
    let list = crate::kit::cmd::run(world.dir.path(), &["base", "list", "-c", config]);
    let (listed, _) = crate::kit::cmd::texts(&list);
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("2.336.0") && l.ends_with("\ta")),
        "{listed}"
    );
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("2.337.0") && l.ends_with("\tb")),
        "{listed}"
    );
    let prune = crate::kit::cmd::run(world.dir.path(), &["base", "prune", "-c", config]);
    assert_eq!(crate::kit::cmd::texts(&prune).0.trim(), "nothing to prune");
    assert!(bases.join("2.336.0").is_dir() && bases.join("2.337.0").is_dir());

    // b gives up its pin: it moves onto `base` keeping its registration, and 2.337.0, now
    // used by no runner, is deleted once its grace has passed.
    let id_of_b = || {
        world
            .gh
            .runners(REPO)
            .into_iter()
            .find(|r| r.name == "b")
            .map(|r| r.id)
    };
    let before = id_of_b();
    std::fs::write(
        world.config(),
        with_grace(
            &world,
            "  - name: a\n    repo: owner/repo\n  - name: b\n    repo: owner/repo\n",
        ),
    )
    .expect("write config");
    world.wait_status("b on 2.336.0", |s| {
        runner(s, "b")
            .is_some_and(|r| r.state == State::Idle && r.version.as_deref() == Some("2.336.0"))
    });
    assert_eq!(id_of_b(), before, "b kept its registration");
    crate::kit::proc::wait_until("2.337.0 pruned", || !bases.join("2.337.0").exists());
    assert!(bases.join("2.336.0").join(listener).is_file());
    // The line follows the removal: waited for, not read at once.
    world
        .corral()
        .wait_for("pruned a runner release no runner uses");
}

#[test]
fn a_listener_too_old_for_github_makes_corral_look_for_a_newer_latest_at_once() {
    let mut world = World::new();
    world.publish_release("2.336.0");
    world.gh.set_latest("2.336.0");
    // The periodic look-up is hours away: only the exit can make corral look sooner.
    let text = config_with_version(&world, "latest", "  - name: r\n    repo: owner/repo\n")
        .replace(
            "resync_interval: 2s\n",
            "resync_interval: 2s\nupdate_check_interval: 6h\n",
        );
    std::fs::write(world.config(), text).expect("write config");
    world.start();
    world.wait_status("r on 2.336.0", |s| {
        runner(s, "r")
            .is_some_and(|r| r.state == State::Idle && r.version.as_deref() == Some("2.336.0"))
    });
    let id = world.gh.runners(REPO)[0].id;
    world.publish_release("2.337.0");
    world.gh.set_latest("2.337.0");
    // GitHub refuses the old version: the listener exits 7 (corral asked it to).
    world.gh.send_exit(id, 7);
    world.wait_status("r on 2.337.0", |s| {
        runner(s, "r")
            .is_some_and(|r| r.state == State::Idle && r.version.as_deref() == Some("2.337.0"))
    });
    assert_eq!(world.gh.runners(REPO)[0].id, id, "registration kept");
}
