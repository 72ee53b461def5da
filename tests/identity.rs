//! A listener is known by corral's own record (pid and start time), not by what its
//! executable looks like: a listener started through a wrapper script, or a `state_dir`
//! reached through a symlink, is adopted and never started twice (issue 19).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use corral::status::State;

use crate::kit::daemon::{runner, World, REPO};
use crate::kit::github::{JobResult, JobSpec};

const TWO: &str = "  - name: a\n    repo: owner/repo\n  - name: b\n    repo: owner/repo\n";

/// Replaces the base's `bin/Runner.Listener` with a site's wrapper that runs the real one as
/// its child (no `exec`): the recorded pid is then a shell's.
fn wrap_the_listener(base: &Path) {
    let bin = base.join("bin");
    std::fs::rename(
        bin.join("Runner.Listener"),
        bin.join("Runner.Listener.real"),
    )
    .expect("move the listener");
    let wrapper = "#!/bin/sh\n# a site's wrapper around the listener\n\"$(dirname \"$0\")/Runner.Listener.real\" \"$@\"\n";
    std::fs::write(bin.join("Runner.Listener"), wrapper).expect("write the wrapper");
    std::fs::set_permissions(
        bin.join("Runner.Listener"),
        std::fs::Permissions::from_mode(0o755),
    )
    .expect("chmod the wrapper");
}

/// Pids of live processes whose executable's path ends with `tail` and lies below `dir`.
fn processes_of(dir: &Path, tail: &str) -> Vec<i32> {
    let dir = std::fs::canonicalize(dir).expect("canonical dir");
    let mut pids: Vec<i32> = std::fs::read_dir("/proc")
        .expect("read /proc")
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_string_lossy().parse::<i32>().ok()?;
            let exe = std::fs::read_link(e.path().join("exe")).ok()?;
            (exe.starts_with(&dir) && exe.to_string_lossy().ends_with(tail)).then_some(pid)
        })
        .collect();
    pids.sort_unstable();
    pids
}

/// Watches for `window` that exactly `pids` (one per runner) run `tail`: never a second.
fn hold_one_each(world: &World, window: Duration, tail: &str, pids: &[i32]) {
    let until = Instant::now() + window;
    while Instant::now() < until {
        let now = processes_of(world.dir.path(), tail);
        assert_eq!(now, pids, "the listeners changed or were duplicated");
        // The window is the point: a duplicate would appear within a pass or two.
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_listener_behind_a_wrapper_script_is_adopted_not_duplicated() {
    let mut world = World::new();
    wrap_the_listener(&world.dir.path().join("base"));
    world.write_config(TWO);
    world.start();
    world.wait_idle(&["a", "b"]);
    let real = processes_of(world.dir.path(), "bin/Runner.Listener.real");
    assert_eq!(real.len(), 2, "one real listener per runner: {real:?}");
    // Several resync intervals (2 s in the test config): before, each pass started another.
    hold_one_each(
        &world,
        Duration::from_secs(7),
        "bin/Runner.Listener.real",
        &real,
    );
    let status = world.status().expect("status");
    for name in ["a", "b"] {
        let r = runner(&status, name).expect("runner");
        assert_eq!(r.restarts, 0, "{r:?}");
    }
    // The job's Runner.Worker is the wrapper's grandchild: the runner still shows busy.
    world.gh.queue_job(
        REPO,
        &["self-hosted"],
        JobSpec {
            name: "wrapped".into(),
            duration: Duration::from_secs(3),
            result: JobResult::Succeeded,
        },
    );
    world.wait_status("a wrapped runner busy", |s| {
        s.runners.iter().any(|r| r.state == State::Busy)
    });
    assert_eq!(
        processes_of(world.dir.path(), "bin/Runner.Listener.real"),
        real
    );
}

#[test]
fn a_state_dir_reached_through_a_symlink_gets_one_listener_per_runner() {
    let mut world = World::new();
    let data = world.dir.path().join("data-disk");
    std::fs::create_dir(&data).expect("mkdir data disk");
    std::os::unix::fs::symlink(&data, world.state()).expect("link state to the data disk");
    world.write_config(TWO);
    world.start();
    world.wait_idle(&["a", "b"]);
    let listeners = processes_of(&data, "bin/Runner.Listener");
    assert_eq!(listeners.len(), 2, "{listeners:?}");
    hold_one_each(
        &world,
        Duration::from_secs(5),
        "bin/Runner.Listener",
        &listeners,
    );
    // corral restarted: it adopts the same two, through the link.
    world.signal(nix::sys::signal::Signal::SIGKILL);
    world.corral().exit_code();
    // The dead corral's status would satisfy the wait below at once.
    std::fs::remove_file(world.state().join("status.json")).expect("remove status");
    world.start();
    world.wait_idle(&["a", "b"]);
    hold_one_each(
        &world,
        Duration::from_secs(5),
        "bin/Runner.Listener",
        &listeners,
    );
}
