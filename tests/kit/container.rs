//! One container test's world: a fake GitHub, a config directory mounted at `/etc/corral`,
//! and a compose project on the shipped compose file with an override file written here,
//! plus what a test reads inside (`corral status`, processes, Worker logs).
//!
//! Networking: the fake GitHub (and its release server) listens on the host's loopback, and
//! the container uses the host's network (`network_mode: host`), so corral and the fake
//! runners inside reach it at `127.0.0.1:<port>` and nothing leaves the machine. Each
//! container's status API listens on a port of its own for the same reason.

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use corral::status::{State, Status};
use serde_yaml::Value;

use crate::kit::compose::Project;
use crate::kit::daemon::{runner, World, PAT, REPO};
use crate::kit::docker::{docker, docker_ok, Cleanup};
use crate::kit::docker_image::{corral_image, prefix, publish_release};

pub const WAIT: Duration = Duration::from_secs(90);
/// The shipped config's runners (`ci`, `count: 2`).
pub const NAMES: [&str; 2] = ["ci-1", "ci-2"];

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// One test's container: a fake GitHub, a config directory mounted at `/etc/corral`, and a
/// compose project on the shipped file. Fields drop in order: the project (`down -v`), any
/// leftover object named with its prefix, then the fake.
pub struct Ctr {
    /// The compose project.
    pub project: Project,
    _cleanup: Cleanup,
    /// The fake GitHub and the test's temp dir.
    pub world: World,
    /// The config directory mounted at `/etc/corral`.
    pub etc: PathBuf,
    /// The status API's port.
    pub port: u16,
}

/// What a test changes: the image, the config, and lines added to the override's service.
pub struct Spec {
    /// The image the service runs.
    pub image: String,
    /// A change to the config (docker/config/runners.yaml pointed at the fake).
    pub edit: Box<dyn FnOnce(&mut Value)>,
    /// Lines added to the service in the override file (after its `volumes:` entries).
    pub service: String,
}

impl Spec {
    pub fn new() -> Self {
        Self {
            image: corral_image(),
            edit: Box::new(|_| {}),
            service: String::new(),
        }
    }
    pub fn edit(mut self, edit: impl FnOnce(&mut Value) + 'static) -> Self {
        self.edit = Box::new(edit);
        self
    }
    pub fn service(mut self, lines: &str) -> Self {
        lines.clone_into(&mut self.service);
        self
    }
}

impl Ctr {
    /// `compose up -d` of the shipped file with the test's override, as project `<prefix><short>`.
    pub fn up(short: &str, spec: Spec) -> Self {
        let world = World::new();
        publish_release(&world.gh);
        let port = free_port();
        let etc = world.dir.path().join("etc-corral");
        fs::create_dir(&etc).expect("config dir");
        let mut config = base_config(&world, port);
        (spec.edit)(&mut config);
        fs::write(etc.join("runners.yaml"), yaml(&config)).expect("config");
        let override_file = world.dir.path().join("override.yml");
        let text = format!(
            "services:\n  corral:\n    image: {image}\n    network_mode: host\n    environment:\n      \
             CORRAL_HEALTH_URL: http://127.0.0.1:{port}/healthz\n    volumes:\n      \
             - {etc}:/etc/corral:ro\n{extra}",
            image = spec.image,
            etc = etc.display(),
            extra = spec.service,
        );
        fs::write(&override_file, text).expect("override file");
        let name = format!("{}{short}-{}", prefix(), std::process::id()).to_lowercase();
        let project = Project::new(&name, &override_file).env("GITHUB_TOKEN", PAT);
        let cleanup = Cleanup {
            runners: Vec::new(),
            prefix: name,
        };
        let ctr = Ctr {
            project,
            _cleanup: cleanup,
            world,
            etc,
            port,
        };
        ctr.project.ok(&["up", "-d", "--no-build"]);
        ctr
    }

    pub fn id(&self) -> String {
        self.project.container()
    }

    /// `docker exec CONTAINER ARGS…`.
    pub fn exec(&self, args: &[&str]) -> std::process::Output {
        let id = self.id();
        let mut all = vec!["exec", id.as_str()];
        all.extend_from_slice(args);
        docker(&all)
    }

    /// `corral status --json` inside, when it answers.
    pub fn status(&self) -> Option<Status> {
        let out = self.exec(&["corral", "status", "--json"]);
        serde_json::from_slice(&out.stdout).ok()
    }

    pub fn logs(&self) -> String {
        let out = docker(&["logs", "--tail", "80", &self.id()]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// Waits until `cond` holds, failing with the container's log.
    pub fn wait(&self, what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + WAIT;
        while !cond() {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; container log:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Waits until `corral status` inside shows every one of `names` idle; that status.
    pub fn wait_idle(&self, names: &[&str]) -> Status {
        let mut last = None;
        self.wait(&format!("{names:?} idle"), || {
            last = self.status();
            last.as_ref().is_some_and(|s| {
                names
                    .iter()
                    .all(|n| runner(s, n).is_some_and(|r| r.state == State::Idle))
            })
        });
        last.expect("a status")
    }

    /// Replaces the config as an editor saves: a new file renamed over the old one.
    pub fn save(&self, text: &str) {
        let tmp = self.etc.join(".runners.yaml.swp");
        fs::write(&tmp, text).expect("write the new config");
        fs::rename(&tmp, self.etc.join("runners.yaml")).expect("rename over the config");
    }

    /// The processes inside the container, without `docker exec`'s own.
    pub fn procs(&self) -> Vec<ProcInfo> {
        procs_in(&self.id())
    }

    pub fn listeners(&self) -> Vec<ProcInfo> {
        self.procs()
            .into_iter()
            .filter(|p| p.cmd.contains("Runner.Listener"))
            .collect()
    }

    /// The fake Worker logs of every runner inside.
    pub fn worker_logs(&self) -> String {
        let out = self.exec(&[
            "sh",
            "-c",
            "cat /var/lib/corral/runners/*/_diag/Worker_* 2>/dev/null",
        ]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn inspect(&self, format: &str) -> String {
        docker_ok(&["inspect", "-f", format, &self.id()])
            .trim()
            .to_owned()
    }

    pub fn registrations(&self) -> Vec<(String, u64)> {
        let mut ids = self.world.gh.runner_ids(REPO);
        ids.sort();
        ids
    }
}

/// The processes inside container `id`, without `docker exec`'s own.
pub fn procs_in(id: &str) -> Vec<ProcInfo> {
    // /proc/PID/cmdline, not exe: reading another user's exe link needs CAP_SYS_PTRACE,
    // which a container does not have.
    let script = r#"for d in /proc/[0-9]*; do
        s=$(cat "$d/stat" 2>/dev/null) || continue
        u=$(awk '/^Uid:/ { print $2 }' "$d/status" 2>/dev/null)
        c=$(tr '\0' ' ' <"$d/cmdline" 2>/dev/null)
        echo "$u|$c|$s"
    done"#;
    let out = docker(&["exec", id, "sh", "-c", script]);
    assert!(out.status.success(), "list processes: {out:?}");
    let all: Vec<ProcInfo> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(ProcInfo::parse)
        .collect();
    // `docker exec`'s shell has its parent outside the container (ppid 0); drop it and
    // everything below it.
    let mut exec: Vec<i32> = all
        .iter()
        .filter(|p| p.ppid == 0 && p.pid != 1)
        .map(|p| p.pid)
        .collect();
    loop {
        let more: Vec<i32> = all
            .iter()
            .filter(|p| exec.contains(&p.ppid) && !exec.contains(&p.pid))
            .map(|p| p.pid)
            .collect();
        if more.is_empty() {
            break;
        }
        exec.extend(more);
    }
    all.into_iter().filter(|p| !exec.contains(&p.pid)).collect()
}

/// One process: pid, parent, uid, state letter, command line.
#[derive(Debug, Clone)]
pub struct ProcInfo {
    pub pid: i32,
    pub ppid: i32,
    pub uid: u32,
    pub state: char,
    pub cmd: String,
}

impl ProcInfo {
    /// `uid|cmdline|<contents of /proc/PID/stat>`; `comm` may hold spaces and parentheses.
    pub fn parse(line: &str) -> Option<Self> {
        let (uid, rest) = line.split_once('|')?;
        let (cmd, stat) = rest.rsplit_once('|')?;
        let pid = stat.split_whitespace().next()?.parse().ok()?;
        let after = &stat[stat.rfind(')')? + 1..];
        let mut fields = after.split_whitespace();
        let state = fields.next()?.chars().next()?;
        let parent = fields.next()?.parse().ok()?;
        Some(Self {
            pid,
            ppid: parent,
            uid: uid.trim().parse().unwrap_or(u32::MAX),
            state,
            cmd: cmd.trim().to_owned(),
        })
    }
}

/// docker/config/runners.yaml pointed at the fake GitHub, with the API on `port`.
pub fn base_config(world: &World, port: u16) -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docker/config/runners.yaml");
    let mut config: Value =
        serde_yaml::from_str(&fs::read_to_string(path).expect("the container's config"))
            .expect("YAML");
    config["api"]["listen"] = format!("127.0.0.1:{port}").into();
    config["github"]["url"] = world.gh.web_url().into();
    config["github"]["api_url"] = world.gh.api_url().into();
    // A release that is not installed is downloaded from the fake, never from github.com.
    config["base"]["download_url"] = world.gh.download_url_template().into();
    config["runners"][0]["repo"] = REPO.into();
    config
}

pub fn yaml(config: &Value) -> String {
    serde_yaml::to_string(config).expect("YAML")
}

pub fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Asserts that `listeners` (from [`Ctr::listeners`] or a fleet host's) hold exactly one
/// `Runner.Listener` of each runner in `names`, and nothing else.
pub fn assert_one_listener_each(listeners: &[ProcInfo], names: &[&str]) {
    for name in names {
        let own = listeners
            .iter()
            .filter(|p| {
                p.cmd
                    .contains(&format!("/runners/{name}/bin/Runner.Listener"))
            })
            .count();
        assert_eq!(own, 1, "{name}: {listeners:#?}");
    }
    assert_eq!(listeners.len(), names.len(), "{listeners:#?}");
}
