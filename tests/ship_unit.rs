//! The systemd unit (`examples/corral.service`) as systemd reads it: `systemd-analyze
//! verify` accepts it, `systemd-run` runs corral with its settings where systemd is the
//! init, and corral as root still creates `isolation: user-per-runner` users and drops to
//! them under the unit's `NoNewPrivileges`, `ProtectSystem` and `LimitNOFILE`. A tool that is
//! missing makes its test say `skipped` by name; under CI (`CI` set) it fails instead,
//! since `.ci/run` installs what these tests need.

use std::path::Path;
use std::process::Command;

use crate::kit::daemon::World;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn unit() -> String {
    std::fs::read_to_string(Path::new(ROOT).join("examples/corral.service")).expect("the unit")
}

/// The value of `key=` in the unit.
fn setting(key: &str) -> String {
    unit()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{key}= in the unit"))
        .trim()
        .to_string()
}

/// Whether `program` runs here; when not, says the test is skipped (or fails under CI).
pub fn have(program: &str, test: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{program} is missing under CI: .ci/run installs it"
        );
        eprintln!("skipped: {test}: {program} is not installed");
    }
    found
}

#[test]
fn the_unit_keeps_the_hardening_that_works_with_every_isolation_mode() {
    assert_eq!(setting("NoNewPrivileges"), "true");
    let nofile: u64 = setting("LimitNOFILE").parse().expect("a number");
    assert!(nofile >= 65536, "LimitNOFILE {nofile}");
    // `full` and `strict` make /etc read-only, where `useradd` writes.
    assert_eq!(setting("ProtectSystem"), "true");
}

#[test]
fn systemd_analyze_verifies_the_unit() {
    if !have("systemd-analyze", "systemd_analyze_verifies_the_unit") {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let text = unit().replace("/usr/local/bin/corral", env!("CARGO_BIN_EXE_corral"));
    let path = dir.path().join("corral.service");
    std::fs::write(&path, text).expect("write");
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .expect("systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let own: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("corral.service"))
        .collect();
    assert!(own.is_empty(), "{own:#?}");
}

#[test]
fn systemd_run_runs_corral_with_the_units_settings() {
    if !Path::new("/run/systemd/system").is_dir() {
        eprintln!(
            "skipped: systemd_run_runs_corral_with_the_units_settings: systemd is not the init here"
        );
        return;
    }
    if !have(
        "systemd-run",
        "systemd_run_runs_corral_with_the_units_settings",
    ) {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("runners.yaml");
    std::fs::write(&config, "base: {path: ./b}\nrunners: []\n").expect("write");
    let mut cmd = Command::new("systemd-run");
    cmd.args(["--wait", "--pipe", "--collect", "--quiet"]);
    for key in ["NoNewPrivileges", "ProtectSystem", "LimitNOFILE"] {
        cmd.arg("-p").arg(format!("{key}={}", setting(key)));
    }
    let out = cmd
        .arg(env!("CARGO_BIN_EXE_corral"))
        .arg("check")
        .arg(&config)
        .output()
        .expect("systemd-run");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("ok, 0 runners"), "{stdout}{stderr}");
}

/// The line of `/proc/<pid>/status` or `/proc/<pid>/limits` that starts with `key`.
fn proc_line(pid: i32, file: &str, key: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .expect("read /proc")
        .lines()
        .find(|l| l.starts_with(key))
        .unwrap_or_default()
        .to_string()
}

/// corral as root under the unit's settings, reproduced without systemd: a mount namespace
/// with `/usr` read-only (`ProtectSystem=true`), `setpriv --no-new-privs`, and `prlimit` at
/// `LimitNOFILE`. It creates the runners' users and starts each runner as its own.
#[test]
fn user_per_runner_works_under_the_units_settings() {
    let test = "user_per_runner_works_under_the_units_settings";
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: {test}: needs root to create users");
        return;
    }
    if !(have("unshare", test) && have("setpriv", test) && have("prlimit", test)) {
        return;
    }
    let probe = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "true"])
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        eprintln!("skipped: {test}: cannot make a mount namespace here");
        return;
    }
    // Raising the hard limit needs CAP_SYS_RESOURCE, which a container may lack: then the
    // unit's number is capped at the hard limit here (systemd itself sets it as PID 1).
    let wanted: u64 = setting("LimitNOFILE").parse().expect("a number");
    let own = proc_line(std::process::id() as i32, "limits", "Max open files");
    let hard: u64 = own
        .split_whitespace()
        .nth(4)
        .and_then(|h| h.parse().ok())
        .unwrap_or(u64::MAX);
    if hard < wanted {
        eprintln!("{test}: LimitNOFILE={wanted} capped at this host's hard limit {hard}");
    }
    let nofile = wanted.min(hard).to_string();
    let mut world = World::new();
    std::fs::set_permissions(
        world.dir.path(),
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755),
    )
    .expect("chmod");
    world.write_config(
        "  - name: unit-a\n    repo: owner/repo\n    allow_root: false\n    isolation: user-per-runner\n",
    );
    // systemd.exec(5): `true` makes /usr and /boot read-only, `full` /etc as well.
    let read_only: &[&str] = match setting("ProtectSystem").as_str() {
        "true" => &["/usr", "/boot"],
        "full" => &["/usr", "/boot", "/etc"],
        other => panic!("ProtectSystem={other} is not reproduced by this test"),
    };
    let mut mounts = String::new();
    for dir in read_only.iter().filter(|dir| Path::new(dir).is_dir()) {
        for part in [
            "mount --bind ",
            dir,
            " ",
            dir,
            " && mount -o remount,bind,ro ",
            dir,
            " && ",
        ] {
            mounts.push_str(part);
        }
    }
    let script =
        format!("{mounts}exec setpriv --no-new-privs prlimit --nofile={nofile}:{nofile} -- \"$@\"");
    world.start_under(&[
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        &script,
        "sh",
    ]);
    let pids = world.wait_idle(&["unit-a"]);
    let listener = pids[0];
    let user = nix::unistd::User::from_name("corral-unit-a")
        .expect("getpwnam")
        .expect("corral created the user under the unit's settings");
    let uid = proc_line(listener, "status", "Uid:");
    assert!(
        uid.split_whitespace().nth(1) == Some(&user.uid.to_string()),
        "the listener runs as corral-unit-a: {uid}"
    );
    assert_eq!(
        proc_line(listener, "status", "NoNewPrivs:")
            .split_whitespace()
            .nth(1),
        Some("1"),
        "the listener inherits NoNewPrivileges"
    );
    let limit = proc_line(listener, "limits", "Max open files");
    assert!(limit.contains(&nofile), "{limit}");
}
