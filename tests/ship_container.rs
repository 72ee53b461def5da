//! The container without Docker (`container` runs the real image): the Dockerfile's baking
//! script installs a release into a build-time state directory, that directory seeds a
//! "named volume" as Docker does, and `corral run -c <config dir>/runners.yaml` runs on
//! docker/config/runners.yaml (only what points at GitHub and the port changed), answers the
//! HEALTHCHECK's `/healthz`, uses the seeded release without downloading, never writes into
//! the read-only config directory, and on SIGTERM (what tini forwards from `docker stop`)
//! stops its runners and exits 0.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use corral::status::State;
use nix::sys::signal::Signal;

use crate::kit::cmd;
use crate::kit::daemon::{listeners_under, runner, World, PAT};
use crate::kit::proc::{wait_until, Proc};
use crate::ship::container_config;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `docker/bake-runner.sh`, as the Dockerfile runs it, into `state`.
fn bake(world: &World, version: &str, state: &Path) {
    let out = Command::new("sh")
        .arg(Path::new(ROOT).join("docker/bake-runner.sh"))
        .arg(cmd::binary())
        .arg(state)
        .env("RUNNER_VERSION", version)
        .env("RUNNER_DOWNLOAD_URL", world.gh.download_url_template())
        .env("GITHUB_API_URL", world.gh.api_url())
        .env("RUST_LOG", "warn")
        .output()
        .expect("run bake-runner.sh");
    let (stdout, stderr) = cmd::texts(&out);
    assert!(out.status.success(), "bake failed:\n{stdout}\n{stderr}");
    assert!(state
        .join("bases")
        .join(version)
        .join("bin/Runner.Listener")
        .is_file());
}

/// docker/config/runners.yaml with the fake GitHub, `volume` as `state_dir` and `port` for the API.
fn container_config_for(world: &World, volume: &Path, port: u16) -> String {
    let mut config = container_config();
    config["state_dir"] = volume.to_str().expect("utf-8").into();
    config["api"]["listen"] = format!("127.0.0.1:{port}").into();
    config["github"]["url"] = world.gh.web_url().into();
    config["github"]["api_url"] = world.gh.api_url().into();
    // Were the seeded release not found, a download would reach the fake, not the internet.
    config["base"]["download_url"] = world.gh.download_url_template().into();
    // The image has a `runner` user; this host may not.
    config["defaults"]["allow_root"] = true.into();
    config["runners"][0]["repo"] = crate::kit::daemon::REPO.into();
    serde_yaml::to_string(&config).expect("YAML")
}

fn snapshot(dir: &Path) -> Vec<(PathBuf, u64, i64)> {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .expect("config dir")
        .flatten()
        .map(|e| {
            let meta = e.metadata().expect("metadata");
            (e.path(), meta.len(), meta.mtime())
        })
        .collect();
    entries.sort();
    entries
}

#[test]
fn container_config_runs_from_a_seeded_volume_and_stops_on_sigterm() {
    let world = World::new();
    let config = container_config();
    let version = config["base"]["version"].as_str().expect("base.version");
    world.publish_release(version);
    let bake_state = world.dir.path().join("build-stage/state");
    bake(&world, version, &bake_state);
    assert_eq!(world.gh.download_count(), 1);

    // A new named volume, seeded with the image's content at its mount point.
    let volume = world.dir.path().join("volume");
    fs::create_dir(&volume).expect("volume");
    let seeded = Command::new("cp")
        .arg("-a")
        .arg(bake_state.join("bases"))
        .arg(volume.join("bases"))
        .status()
        .expect("cp -a");
    assert!(seeded.success());

    // The config directory, mounted read-only.
    let etc = world.dir.path().join("etc-corral");
    fs::create_dir(&etc).expect("config dir");
    let port = free_port();
    fs::write(
        etc.join("runners.yaml"),
        container_config_for(&world, &volume, port),
    )
    .expect("config");
    fs::set_permissions(etc.join("runners.yaml"), fs::Permissions::from_mode(0o444))
        .expect("chmod");
    fs::set_permissions(&etc, fs::Permissions::from_mode(0o555)).expect("chmod");
    let before = snapshot(&etc);

    let mut run = Command::new(cmd::binary());
    run.args(["run", "-c"])
        .arg(etc.join("runners.yaml"))
        .current_dir(world.dir.path())
        .env("GITHUB_TOKEN", PAT)
        .env("RUST_LOG", "info");
    let mut corral = Proc::spawn_group(run);

    // The HEALTHCHECK's request.
    let health = format!("http://127.0.0.1:{port}/healthz");
    let client = reqwest::blocking::Client::new();
    wait_until("/healthz answers", || {
        client
            .get(&health)
            .timeout(Duration::from_secs(2))
            .send()
            .is_ok_and(|r| r.status().is_success())
    });
    let status_file = volume.join("status.json");
    let names = ["ci-1", "ci-2"];
    let idle = || {
        corral::status::read(&status_file).is_ok_and(|s| {
            names
                .iter()
                .all(|n| runner(&s, n).is_some_and(|r| r.state == State::Idle))
        })
    };
    let waited = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_until("ci-1 and ci-2 idle", idle);
    }));
    assert!(waited.is_ok(), "corral log:\n{}", corral.output());

    assert_eq!(world.gh.download_count(), 1, "the seeded release is used");
    let base = volume.join("bases").join(version);
    let runner_dir = volume.join("runners/ci-1");
    let link = fs::read_link(runner_dir.join("externals")).expect("externals link");
    assert!(link.starts_with(&base), "{}", link.display());
    let (a, b) = (
        fs::metadata(runner_dir.join("bin/Runner.Listener")).expect("runner bin"),
        fs::metadata(base.join("bin/Runner.Listener")).expect("base bin"),
    );
    assert_eq!(
        (a.dev(), a.ino()),
        (b.dev(), b.ino()),
        "bin/ is hard-linked from the base on the same volume"
    );
    assert_eq!(listeners_under(&volume).len(), 2);

    corral.signal(Signal::SIGTERM);
    assert_eq!(corral.exit_code(), 0, "{}", corral.output());
    assert!(
        listeners_under(&volume).is_empty(),
        "every runner stopped with corral"
    );
    assert_eq!(snapshot(&etc), before, "nothing written into /etc/corral");
    fs::set_permissions(&etc, fs::Permissions::from_mode(0o755)).expect("chmod back");
}
