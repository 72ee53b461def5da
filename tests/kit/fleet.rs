//! A fleet for real (issue 20): corral containers from the repository's image as hosts on a
//! private Docker network the test creates, a git server in a container on it, and the fake
//! GitHub bound to the network's gateway address.
//!
//! Networking: one `--internal` bridge network. The fake GitHub listens on the bridge's
//! gateway address (an address of this machine that only that network's containers and the
//! machine itself reach), so no relay is needed and nothing listens beyond it. The git server
//! is the kit's https `git http-backend` script in a small Debian image with git, python3 and
//! openssl (corral follows only `https://`, `ssh://` and `file://`, and its image has no TLS
//! server), answering as `https://git/fleet.git` with a certificate made at its start.
//! A second network would not cut a host off: Docker gives an internal network a default
//! route to its gateway, and the machine answers for all its bridges' addresses on any of
//! them; so `cut` disconnects the host from the only network, git server included.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use corral::status::Status;

use crate::kit::container::{procs_in, ProcInfo};
use crate::kit::daemon::{PAT, REPO};
use crate::kit::docker::{docker, docker_ok, Cleanup};
use crate::kit::docker_image::{corral_image, prefix, publish_release, run_with_deadline, tail};
use crate::kit::github::{FakeGitHub, TokenKind};

/// The git server's Basic-auth token (user `x-access-token`), given to hosts by environment.
pub const GIT_TOKEN: &str = "fleet_git_tok_Zr81KmQw";
/// How long any one fleet condition may take.
pub const WAIT: Duration = Duration::from_secs(150);
/// The file the hosts follow, inside the repository.
const FLEET_PATH: &str = "runners/prod.yaml";

/// Fleets run one at a time: each is three corral containers on a 2-core budget.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// One test's fleet. Fields drop in order: the containers, network and volumes (by prefix),
/// then the fake, then the temp dir.
pub struct Fleet {
    _cleanup: Cleanup,
    /// The fake GitHub on the network's gateway.
    pub gh: FakeGitHub,
    /// The config directory mounted at `/etc/corral` in every host.
    pub etc: PathBuf,
    dir: tempfile::TempDir,
    /// Every object's name starts with this.
    pub prefix: String,
    /// The network.
    pub net: String,
    /// The git server's container.
    pub git: String,
    /// The host ids, each also its container's hostname.
    pub hosts: Vec<String>,
    _serial: MutexGuard<'static, ()>,
}

/// Prints `what` with the seconds since `t0` (the test's timeline, for measurements).
pub fn mark(t0: Instant, what: &str) {
    eprintln!("[{:>7.2}s] {what}", t0.elapsed().as_secs_f64());
}

impl Fleet {
    /// The network, the fake GitHub on its gateway, the git server holding `fleet` as the
    /// first commit, and one corral container per id in `hosts`, all following it.
    pub fn up(short: &str, hosts: &[&str], fleet: &str) -> Self {
        let serial = ONE_AT_A_TIME
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let image = corral_image();
        let git_image = git_server_image();
        let prefix = format!("{}fleet-{short}-{}-", prefix(), std::process::id()).to_lowercase();
        let cleanup = Cleanup {
            runners: Vec::new(),
            prefix: prefix.clone(),
        };
        let net = format!("{prefix}net");
        docker_ok(&["network", "create", "--internal", &net]);
        let gateway = docker_ok(&[
            "network",
            "inspect",
            "-f",
            "{{(index .IPAM.Config 0).Gateway}}",
            &net,
        ]);
        let gateway: std::net::IpAddr = gateway.trim().parse().expect("the gateway's address");
        let gh = FakeGitHub::start_on(gateway);
        gh.add_repo(REPO);
        gh.add_token(
            PAT,
            TokenKind::Classic {
                scopes: vec!["repo".into()],
            },
        );
        publish_release(&gh);
        let dir = tempfile::tempdir().expect("temp dir");
        let etc = dir.path().join("etc");
        fs::create_dir(&etc).expect("config dir");
        let mut me = Fleet {
            _cleanup: cleanup,
            gh,
            etc,
            dir,
            git: format!("{prefix}git"),
            prefix,
            net,
            hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
            _serial: serial,
        };
        me.start_git_server(&git_image);
        me.push(fleet);
        fs::write(me.etc.join("runners.yaml"), me.local_config()).expect("local config");
        for host in hosts {
            me.create_host(&image, host);
        }
        me.hosts = hosts.iter().map(|h| (*h).to_owned()).collect();
        me
    }

    fn start_git_server(&self, image: &str) {
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kit/scripts/git_https_server.py");
        let mount = format!("{}:/srv/server.py:ro", script.display());
        let setup = "set -e; cd /srv; \
            openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=git \
              -addext subjectAltName=DNS:git -keyout key.pem -out cert.pem 2>/dev/null; \
            git init -q --bare -b main repos/fleet.git; \
            git init -q -b main work; mkdir -p work/runners; \
            exec python3 server.py /srv/repos /srv/port cert.pem key.pem /srv/log 0.0.0.0 443";
        let out = docker_env(&[
            "run",
            "-d",
            "--name",
            &self.git,
            "--network",
            &self.net,
            "--network-alias",
            "git",
            "-e",
            "FLEET_TOKEN",
            "-v",
            &mount,
            "--entrypoint",
            "sh",
            image,
            "-c",
            setup,
        ]);
        assert!(out.status.success(), "start the git server: {out:?}");
        self.wait("the git server's port", || {
            docker(&["exec", &self.git, "test", "-f", "/srv/port"])
                .status
                .success()
        });
        let ca = format!("{}:/srv/cert.pem", self.git);
        docker_ok(&["cp", &ca, &self.etc.join("git-ca.pem").to_string_lossy()]);
    }

    /// Commits `text` as the fleet file and pushes it to the server; the commit id.
    pub fn push(&self, text: &str) -> String {
        let file = self.dir.path().join("prod.yaml");
        fs::write(&file, text).expect("write the fleet file");
        let to = format!("{}:/srv/work/{FLEET_PATH}", self.git);
        docker_ok(&["cp", &file.to_string_lossy(), &to]);
        let out = docker_ok(&[
            "exec",
            "-w",
            "/srv/work",
            &self.git,
            "sh",
            "-c",
            "set -e; git add -A; \
             git -c user.name=t -c user.email=t@example.com commit -q --allow-empty -m change; \
             git push -q /srv/repos/fleet.git HEAD:main; git rev-parse HEAD",
        ]);
        out.trim().to_owned()
    }

    /// The hosts' shared local file: the state, GitHub (the fake), and the git source.
    fn local_config(&self) -> String {
        format!(
            "base:\n  version: {release}\n  download_url: {download}\n\
             state_dir: /var/lib/corral\nshutdown_timeout: 20s\nresync_interval: 2s\n\
             api:\n  listen: \"127.0.0.1:9180\"\n\
             github:\n  url: {web}\n  api_url: {api}\n  token_env: GITHUB_TOKEN\n\
             source:\n  git:\n    url: https://git/fleet.git\n    ref: main\n    path: {FLEET_PATH}\n    \
             interval: 1s\n    token_env: FLEET_TOKEN\n",
            release = crate::kit::docker_image::RELEASE,
            download = self.gh.download_url_template(),
            web = self.gh.web_url(),
            api = self.gh.api_url(),
        )
    }

    fn create_host(&self, image: &str, host: &str) {
        let name = self.container(host);
        let etc = format!("{}:/etc/corral:ro", self.etc.display());
        let state = format!("{}state-{host}:/var/lib/corral", self.prefix);
        let out = docker_env(&[
            "run",
            "-d",
            "--name",
            &name,
            "--hostname",
            host,
            "--network",
            &self.net,
            "-e",
            "GITHUB_TOKEN",
            "-e",
            "FLEET_TOKEN",
            "-e",
            "GIT_SSL_CAINFO=/etc/corral/git-ca.pem",
            "-e",
            "RUST_LOG=info",
            "-v",
            &etc,
            "-v",
            &state,
            image,
            "run",
            "-c",
            "/etc/corral/runners.yaml",
            "--host-id",
            host,
        ]);
        assert!(out.status.success(), "start host {host}: {out:?}");
    }

    /// The container of host `host`.
    pub fn container(&self, host: &str) -> String {
        format!("{}{host}", self.prefix)
    }

    /// `docker exec` in host `host`.
    pub fn exec(&self, host: &str, args: &[&str]) -> Output {
        let name = self.container(host);
        let mut all = vec!["exec", name.as_str()];
        all.extend_from_slice(args);
        docker(&all)
    }

    /// `corral status --json` in host `host`, when it answers.
    pub fn status(&self, host: &str) -> Option<Status> {
        let out = self.exec(host, &["corral", "status", "--json"]);
        serde_json::from_slice(&out.stdout).ok()
    }

    /// The runners' names on host `host` and whether all of them are idle.
    pub fn idle_names(&self, host: &str) -> Option<Vec<String>> {
        let s = self.status(host)?;
        s.runners
            .iter()
            .all(|r| r.state == corral::status::State::Idle)
            .then(|| s.runners.iter().map(|r| r.name.clone()).collect())
    }

    /// Host `host`'s `/metrics`.
    pub fn metrics(&self, host: &str) -> String {
        let out = self.exec(host, &["curl", "-fsS", "http://127.0.0.1:9180/metrics"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The listeners inside host `host`.
    pub fn listeners(&self, host: &str) -> Vec<ProcInfo> {
        procs_in(&self.container(host))
            .into_iter()
            .filter(|p| p.cmd.contains("Runner.Listener"))
            .collect()
    }

    /// The last lines of every host's log.
    pub fn logs(&self) -> String {
        let mut all = String::new();
        for host in &self.hosts {
            let out = docker(&["logs", "--tail", "60", &self.container(host)]);
            let _ = write!(
                all,
                "--- {host}:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        all
    }

    /// Waits until `cond` holds, failing after [`WAIT`] with every host's log.
    pub fn wait(&self, what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + WAIT;
        while !cond() {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; logs:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Cuts host `host` off the network (the fake and the git server with it).
    pub fn cut(&self, host: &str) {
        docker_ok(&["network", "disconnect", &self.net, &self.container(host)]);
    }

    /// Connects host `host` to the network again.
    pub fn reconnect(&self, host: &str) {
        docker_ok(&["network", "connect", &self.net, &self.container(host)]);
    }
}

/// `docker args…` with the fleet's secrets in the CLI's environment, so that `-e NAME`
/// passes them on and no value is on a command line.
fn docker_env(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .env_remove("DOCKER_HOST")
        .env("GITHUB_TOKEN", PAT)
        .env("FLEET_TOKEN", GIT_TOKEN)
        .output()
        .unwrap_or_else(|e| panic!("run docker {args:?}: {e}"))
}

/// The git server's image: Debian's git, python3 and openssl on the base image the corral
/// image builds from; built once and kept under `<prefix>gitserver:1`.
fn git_server_image() -> String {
    let tag = format!("{}gitserver:1", prefix());
    if docker(&["image", "inspect", &tag]).status.success() {
        return tag;
    }
    crate::kit::docker_image::ensure_base_images();
    let ctx = tempfile::tempdir().expect("build context");
    fs::write(
        ctx.path().join("Dockerfile"),
        "FROM debian:bookworm-slim\n\
         RUN apt-get update && apt-get install -y --no-install-recommends git python3 openssl \
         && rm -rf /var/lib/apt/lists/*\n",
    )
    .expect("Dockerfile");
    let mut cmd = Command::new("docker");
    cmd.args(["build", "--force-rm", "--network", "host", "-t", &tag])
        .arg(ctx.path())
        .env_remove("DOCKER_HOST");
    let out = run_with_deadline(cmd, Duration::from_secs(15 * 60));
    assert!(
        out.status.success(),
        "build the git server image:\n{}",
        tail(&out, 40)
    );
    tag
}
