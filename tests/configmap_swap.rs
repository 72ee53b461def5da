//! A Kubernetes `ConfigMap` volume as the kubelet updates it (its atomic writer): the files
//! live in a `..<timestamp>` directory, `..data` points at it, and each key is a symlink
//! `runners.yaml -> ..data/runners.yaml`. An update writes a new `..<timestamp>` directory,
//! points `..data_tmp` at it, renames `..data_tmp` over `..data` and removes the old
//! directory: `runners.yaml` itself is never written. corral applies each swap, natively and
//! inside the real image with the `DaemonSet`'s capabilities (`examples/kubernetes`).

use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::Instant;

use crate::kit::compose::skip_without_compose;
use crate::kit::container::{base_config, yaml, Ctr, Spec, NAMES};
use crate::kit::daemon::{World, REPO};
use crate::kit::proc::wait_until;

/// The kubelet's update of a `ConfigMap` volume at `dir` to `files`, in its order of steps;
/// `stamp` names the new data directory. Relative links, as the kubelet makes them, so the
/// layout reads the same through a bind mount.
pub fn atomic_write(dir: &Path, stamp: &str, files: &[(&str, &str)]) {
    let data = dir.join("..data");
    let old = std::fs::read_link(&data).ok();
    let new_dir = format!("..{stamp}");
    std::fs::create_dir(dir.join(&new_dir)).expect("the new data directory");
    for (name, text) in files {
        std::fs::write(dir.join(&new_dir).join(name), text).expect("a key's file");
    }
    let tmp = dir.join("..data_tmp");
    symlink(&new_dir, &tmp).expect("..data_tmp");
    std::fs::rename(&tmp, &data).expect("..data_tmp renamed over ..data");
    for (name, _) in files {
        let link = dir.join(name);
        if link.symlink_metadata().is_err() {
            symlink(Path::new("..data").join(name), &link).expect("the key's symlink");
        }
    }
    if let Some(old) = old {
        std::fs::remove_dir_all(dir.join(old)).expect("the old data directory removed");
    }
}

/// Whether `dir/runners.yaml` is the kubelet's layout at `stamp`.
fn assert_layout(dir: &Path, stamp: &str) {
    assert_eq!(
        std::fs::read_link(dir.join("runners.yaml")).expect("a symlink"),
        Path::new("..data/runners.yaml")
    );
    assert_eq!(
        std::fs::read_link(dir.join("..data")).expect("..data"),
        Path::new(&format!("..{stamp}"))
    );
}

#[test]
fn a_configmap_symlink_swap_is_applied() {
    let mut world = World::new();
    let one = config(&world, &format!("  - name: web\n    repo: {REPO}\n"));
    atomic_write(
        world.dir.path(),
        "2026_01_01_00_00_00.000000001",
        &[("runners.yaml", &one)],
    );
    world.start();
    let web = world.wait_idle(&["web"])[0];
    wait_quiet(&world);

    let two = config(
        &world,
        &format!("  - name: web\n    repo: {REPO}\n  - name: api\n    repo: {REPO}\n"),
    );
    let swapped = Instant::now();
    atomic_write(
        world.dir.path(),
        "2026_01_01_00_01_00.000000002",
        &[("runners.yaml", &two)],
    );
    assert_layout(world.dir.path(), "2026_01_01_00_01_00.000000002");
    let pids = world.wait_idle(&["web", "api"]);
    eprintln!("swap to api idle: {:.1?}", swapped.elapsed());
    assert_eq!(pids[0], web, "web kept its listener");
    wait_quiet(&world);

    // A second swap (the watch outlives the first): web leaves.
    let three = config(&world, &format!("  - name: api\n    repo: {REPO}\n"));
    atomic_write(
        world.dir.path(),
        "2026_01_01_00_02_00.000000003",
        &[("runners.yaml", &three)],
    );
    world.wait_status("web gone after the second swap", |s| {
        s.runners
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>()
            == ["api"]
    });
    let entries: Vec<String> = std::fs::read_dir(world.dir.path())
        .expect("dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("..2026"))
        .collect();
    assert_eq!(
        entries,
        ["..2026_01_01_00_02_00.000000003"],
        "old dirs removed"
    );
}

/// Waits until corral has written no status for 2 s: no pass is under way or due, so a
/// pass after this comes from the watch (the resync is an hour).
fn wait_quiet(world: &World) {
    let written = || {
        std::fs::metadata(world.state().join("status.json"))
            .and_then(|m| m.modified())
            .ok()
    };
    let mut last = (written(), Instant::now());
    wait_until("corral quiet", || {
        let now = written();
        if now != last.0 {
            last = (now, Instant::now());
        }
        last.1.elapsed() >= std::time::Duration::from_secs(2)
    });
}

/// The world's config with `runners`. Without the resync a pass comes only from the watch,
/// so the test sees the swap itself.
fn config(world: &World, runners: &str) -> String {
    world
        .config_text(runners)
        .replace("resync_interval: 2s", "resync_interval: 1h")
}

/// The capabilities the `DaemonSet` adds (`examples/kubernetes/daemonset.yaml`).
fn daemonset_caps() -> Vec<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/kubernetes/daemonset.yaml"
    );
    let ds: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(path).expect("daemonset.yaml"))
            .expect("YAML");
    let container = &ds["spec"]["template"]["spec"]["containers"][0];
    container["securityContext"]["capabilities"]["add"]
        .as_sequence()
        .expect("capabilities.add")
        .iter()
        .map(|c| c.as_str().expect("a name").to_string())
        .collect()
}

#[test]
fn a_configmap_symlink_swap_is_applied_in_the_container() {
    if skip_without_compose("configmap_swap::a_configmap_symlink_swap_is_applied_in_the_container")
    {
        return;
    }
    // As the DaemonSet runs it: every capability dropped but its own, no_new_privs, the
    // engine's default seccomp profile.
    let caps: String = daemonset_caps()
        .iter()
        .fold(String::new(), |all, c| all + "      - " + c + "\n");
    let service = format!(
        "    cap_drop:\n      - ALL\n    cap_add:\n{caps}    security_opt:\n      - no-new-privileges:true\n"
    );
    let ctr = Ctr::up("cmswap", Spec::new().service(&service));
    ctr.wait_idle(&NAMES);
    let etc = ctr.etc.clone();
    let mut config = base_config(&ctr.world, ctr.port);
    // The mounted directory becomes the kubelet's layout; from then on only the watch
    // brings a change in (no resync for an hour).
    config["resync_interval"] = "1h".into();
    config["runners"][0]["count"] = 3.into();
    atomic_write(
        &etc,
        "2026_01_01_00_00_00.000000001",
        &[("runners.yaml", &yaml(&config))],
    );
    // `runners.yaml` was a plain file: the key's symlink is renamed over it.
    symlink("..data/runners.yaml", etc.join(".runners.yaml.link")).expect("the key's symlink");
    std::fs::rename(etc.join(".runners.yaml.link"), etc.join("runners.yaml")).expect("rename");
    assert_layout(&etc, "2026_01_01_00_00_00.000000001");
    ctr.wait_idle(&["ci-1", "ci-2", "ci-3"]);
    // No pass under way or due (status.json unwritten for 3 s): the next comes from the watch.
    let written = || {
        ctr.exec(&["stat", "-c", "%.9Y", "/var/lib/corral/status.json"])
            .stdout
    };
    let mut last = (written(), Instant::now());
    ctr.wait("corral quiet", || {
        let now = written();
        if now != last.0 {
            last = (now, Instant::now());
        }
        last.1.elapsed() >= std::time::Duration::from_secs(3)
    });

    config["runners"][0]["count"] = 2.into();
    let swapped = Instant::now();
    atomic_write(
        &etc,
        "2026_01_01_00_01_00.000000002",
        &[("runners.yaml", &yaml(&config))],
    );
    assert_layout(&etc, "2026_01_01_00_01_00.000000002");
    let mut last = None;
    ctr.wait("ci-3 gone after the swap", || {
        last = ctr.status();
        last.as_ref().is_some_and(|s| {
            s.runners
                .iter()
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>()
                == NAMES
        })
    });
    eprintln!("container: swap to ci-3 gone: {:.1?}", swapped.elapsed());
    let status = last.expect("status");
    assert!(status.config_error.is_none(), "{:?}", status.config_error);
}
