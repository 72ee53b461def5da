//! The desired state: `runners.yaml` after validation, defaults merged and `count` expanded.
//! This is what the planner compares with what it observes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::model::{Clean, Isolation, Leftovers};

/// The validated desired state of the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// The config file it came from.
    pub config_path: PathBuf,
    /// Absolute state directory.
    pub state_dir: PathBuf,
    /// Where the runner software comes from.
    pub base: BaseSource,
    /// GitHub access, when configured.
    pub github: Option<GitHub>,
    /// Periodic resync.
    pub resync_interval: Duration,
    /// How long busy runners may finish their jobs when corral stops.
    pub shutdown_timeout: Duration,
    /// The status API, when configured.
    pub api: Option<Api>,
    /// Runners moved to a new base at the same time.
    pub max_unavailable: u32,
    /// How often `latest` is looked up again.
    pub update_check_interval: Duration,
    /// Release URL template, for `base.version` and runners' own `version`.
    pub download_url: String,
    /// How long an installed release no runner uses is kept.
    pub base_prune_after: Duration,
    /// Every runner instance by its name (entries with `scale` are in `pools` instead).
    pub runners: BTreeMap<String, RunnerSpec>,
    /// The host id entries' `hosts` are matched against (`--host-id`, default the hostname).
    pub host_id: String,
    /// Entries (by name) whose `hosts` leave this host out: they are absent here.
    pub elsewhere: Vec<String>,
    /// The host-wide cap on runners, if set.
    pub max_runners: Option<u32>,
    /// Instances of the file not created because `max_runners` was reached, in file order.
    pub capped: Vec<String>,
    /// Entries with `scale`, one pool per repository, in file order.
    pub pools: Vec<Pool>,
    /// How often queued jobs are polled for the pools.
    pub demand_poll_interval: Duration,
    /// The git repository the runner list is followed from, when the file has a `source`.
    pub source: Option<GitSource>,
}

impl Desired {
    /// The spec of `name`: a fixed runner, or a slot of a pool (active or not).
    pub fn spec_for(&self, name: &str) -> Option<RunnerSpec> {
        if let Some(spec) = self.runners.get(name) {
            return Some(spec.clone());
        }
        self.pools.iter().find_map(|p| p.slot_spec(name))
    }
}

/// The key of the engine of scale set `name` in the repository at `repo_url`.
pub fn scale_set_key(repo_url: &str, name: &str) -> String {
    format!("{}#{}", repo_url.to_lowercase(), name.to_lowercase())
}

/// An entry with `scale` for one repository: instances `slots[0]` … `slots[max-1]` exist while
/// demand (queued jobs) or `min_idle` asks for them. Always ephemeral.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    /// Index of the `runners` entry it comes from.
    pub entry: usize,
    /// That entry's `name`.
    pub name: String,
    /// Every instance name it may use, slot 1 first; `max` is its length.
    pub slots: Vec<String>,
    /// What each instance is (its `name` is set per slot).
    pub spec: RunnerSpec,
    /// Idle runners kept waiting.
    pub min_idle: u32,
    /// How long a runner above `min_idle` may stay idle.
    pub idle_timeout: Duration,
    /// A job queued longer than this is reported as waiting too long.
    pub queued_alert_after: Duration,
    /// The scale set's name with `engine: scaleset`; `None`: the REST engine.
    pub scale_set: Option<String>,
}

impl Pool {
    /// With `engine: scaleset`, the key of its engine: repository URL and scale set name,
    /// lower case.
    pub fn scale_set_key(&self) -> Option<String> {
        let name = self.scale_set.as_ref()?;
        Some(scale_set_key(&self.spec.repo.url, name))
    }

    /// The spec of slot `name`, if it is one of this pool's.
    pub fn slot_spec(&self, name: &str) -> Option<RunnerSpec> {
        self.slots.iter().any(|s| s == name).then(|| RunnerSpec {
            name: name.to_string(),
            ..self.spec.clone()
        })
    }
}

impl Desired {
    /// The base `spec` runs on: its own `version`, else `base`.
    pub fn base_of(&self, spec: &RunnerSpec) -> BaseSource {
        match (&spec.version, &self.base) {
            (None, base) => base.clone(),
            (Some(want), base @ BaseSource::Version { version, .. }) if want == version => {
                base.clone()
            }
            (Some(want), _) => BaseSource::Version {
                version: want.clone(),
                sha256: None,
                download_url: self.download_url.clone(),
            },
        }
    }

    /// Every base some runner runs on, each once.
    pub fn bases_in_use(&self) -> std::collections::BTreeSet<BaseSource> {
        self.runners
            .values()
            .chain(self.pools.iter().map(|p| &p.spec))
            .map(|s| self.base_of(s))
            .collect()
    }
}

/// Where the base install comes from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum BaseSource {
    /// An extracted runner tarball at this absolute path.
    Path(PathBuf),
    /// A release corral installs under `<state_dir>/bases/<version>`.
    Version {
        /// `2.329.0` or `latest`.
        version: String,
        /// Expected tarball digest (lowercase hex).
        sha256: Option<String>,
        /// URL template.
        download_url: String,
    },
}

/// The default release URL template (`reference/runner-contract.md` §1).
pub const DEFAULT_DOWNLOAD_URL: &str = "https://github.com/actions/runner/releases/download/v{version}/actions-runner-linux-{arch}-{version}.tar.gz";

/// The status API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Api {
    /// Where it listens.
    pub listen: std::net::SocketAddr,
    /// Where its bearer token comes from, if it requires one.
    pub token: Option<TokenSource>,
    /// Where the `POST /webhook` signing secret comes from; no webhook route without it.
    pub webhook_secret: Option<TokenSource>,
}

/// Where a secret comes from (never the secret itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// This environment variable.
    Env(String),
    /// This file.
    File(PathBuf),
}

/// A resolved git source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitSource {
    /// Repository URL as written.
    pub url: String,
    /// Branch, tag or commit followed.
    pub git_ref: String,
    /// The file inside the repository.
    pub path: String,
    /// How often it is fetched.
    pub interval: std::time::Duration,
    /// How git authenticates.
    pub credential: Option<GitCredential>,
    /// The `known_hosts` file ssh checks the server's host key against, when not ssh's own.
    pub known_hosts: Option<PathBuf>,
    /// The commit whose file is in force (`None` before the first good fetch).
    pub revision: Option<String>,
}

/// Where git's credential comes from (never the credential itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GitCredential {
    /// An https token.
    Token(TokenSource),
    /// An ssh private key file.
    SshKey(PathBuf),
}

/// GitHub endpoints and credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitHub {
    /// Web URL without a trailing slash (`https://github.com`).
    pub web_url: String,
    /// REST API base without a trailing slash.
    pub api_url: String,
    /// How corral authenticates.
    pub auth: GitHubAuth,
    /// The label that marks this corral's registrations, if any.
    pub marker_label: Option<String>,
    /// Delete offline, idle registrations with the marker that are not in the file.
    pub cleanup_orphans: bool,
}

/// Where corral's GitHub credential comes from. Never the secret itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GitHubAuth {
    /// No credential: runners bring registration tokens.
    None,
    /// A PAT in this environment variable.
    TokenEnv(String),
    /// A PAT in this file.
    TokenFile(PathBuf),
    /// A GitHub App.
    App {
        /// App id.
        id: u64,
        /// Private key file.
        private_key_file: PathBuf,
        /// Installation id, when fixed.
        installation_id: Option<u64>,
    },
}

/// A repository a runner serves.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Repo {
    /// Owner (user or organization).
    pub owner: String,
    /// Repository name.
    pub name: String,
    /// The URL the runner registers with (`https://github.com/owner/repo`).
    pub url: String,
}

/// How a runner gets its registration token.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Registration {
    /// corral mints it with its GitHub credential.
    GitHub,
    /// A one-hour token in this environment variable.
    TokenEnv(String),
    /// A one-hour token in this file.
    TokenFile(PathBuf),
}

/// One runner instance as it should be. corral records it at registration, so a runner that
/// left the file can still be drained and deregistered as it was registered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerSpec {
    /// Instance name: directory name and GitHub runner name.
    pub name: String,
    /// Index of the `runners` entry it comes from.
    pub entry: usize,
    /// The repository.
    pub repo: Repo,
    /// Custom labels, in order.
    pub labels: Vec<String>,
    /// `--no-default-labels`.
    pub no_default_labels: bool,
    /// `--ephemeral`.
    pub ephemeral: bool,
    /// Extra environment.
    pub env: BTreeMap<String, String>,
    /// Drain limit on removal.
    #[serde(with = "seconds")]
    pub drain_timeout: Duration,
    /// Unix user (when corral is root).
    pub user: String,
    /// May run as root.
    pub allow_root: bool,
    /// A shared user, or one of its own.
    #[serde(default)]
    pub isolation: Isolation,
    /// Token source.
    pub registration: Registration,
    /// This corral's marker label, added to `labels` at registration.
    #[serde(default)]
    pub marker: Option<String>,
    /// Its own runner release, when it does not use `base`.
    #[serde(default)]
    pub version: Option<String>,
    /// Its own Docker socket and policy, when `docker.enabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker: Option<DockerPolicy>,
    /// Limits of its cgroup (`resources`), applied in place: no restart.
    #[serde(default, skip_serializing_if = "crate::cgroup::Limits::is_empty")]
    pub resources: crate::cgroup::Limits,
    /// What corral empties after each job (`clean`).
    #[serde(default)]
    pub clean: Clean,
    /// What becomes of processes a job leaves running (`leftovers`).
    #[serde(default)]
    pub leftovers: Leftovers,
    /// The scale set whose JIT configuration registers it (a pool with `engine: scaleset`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_set: Option<String>,
}

impl RunnerSpec {
    /// Digest of the registration's identity; a change means register again. Labels are not
    /// part of it: they change in place (label sync) where GitHub can be asked to.
    pub fn registration_hash(&self) -> String {
        digest(&(
            &self.name,
            &self.repo,
            self.no_default_labels,
            self.ephemeral,
        ))
    }

    /// The custom labels the registration carries: `labels`, then the marker.
    pub fn registered_labels(&self) -> Vec<String> {
        let mut labels = self.labels.clone();
        if let Some(marker) = &self.marker {
            if !labels.iter().any(|l| l.eq_ignore_ascii_case(marker)) {
                labels.push(marker.clone());
            }
        }
        labels
    }

    /// Every label the runner carries: the runner's defaults (`self-hosted`, `Linux`, its
    /// architecture) unless turned off, then its custom labels.
    pub fn all_labels(&self) -> Vec<String> {
        let mut labels = Vec::new();
        if !self.no_default_labels {
            let arch = match std::env::consts::ARCH {
                "aarch64" => "ARM64",
                "arm" => "ARM",
                _ => "X64",
            };
            labels.extend(["self-hosted", "Linux", arch].map(String::from));
        }
        labels.extend(self.registered_labels());
        labels
    }

    /// True when `other` carries the same custom labels, ignoring case and order.
    pub fn same_labels(&self, other: &[String]) -> bool {
        let norm = |labels: &[String]| {
            let mut set: Vec<String> = labels.iter().map(|l| l.to_lowercase()).collect();
            set.sort();
            set.dedup();
            set
        };
        norm(&self.registered_labels()) == norm(other)
    }

    /// Digest of how the process runs; a change means restart.
    pub fn runtime_hash(&self) -> String {
        // `shared` and no `docker` hash as before they existed, so an upgrade restarts nothing.
        // A Docker policy changes the listener's environment (`DOCKER_HOST`): a restart.
        match (self.isolation, &self.docker) {
            (Isolation::Shared, None) => digest(&(&self.env, &self.user, self.allow_root)),
            (other @ Isolation::UserPerRunner, None) => {
                digest(&(&self.env, &self.user, self.allow_root, other))
            }
            (other, Some(docker)) => {
                digest(&(&self.env, &self.user, self.allow_root, other, docker))
            }
        }
    }
}

/// A runner's Docker policy, resolved: what its socket lets jobs do.
#[allow(
    clippy::struct_excessive_bools,
    reason = "one switch per thing a job may be allowed, as written in the file"
)]
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DockerPolicy {
    /// `--privileged`, privileged exec, unconfined seccomp/AppArmor.
    pub allow_privileged: bool,
    /// The host's pid, network, ipc, uts, user and cgroup namespaces.
    pub allow_host_namespaces: bool,
    /// `--cap-add`.
    pub allow_capabilities: bool,
    /// Devices and GPUs.
    pub allow_devices: bool,
    /// Absolute host paths bind mounts may come from, besides the runner's `_work`.
    pub allow_mounts: Vec<PathBuf>,
    /// Bytes of built images kept between jobs.
    pub image_budget: u64,
}

fn digest(value: &impl Serialize) -> String {
    // Serializing plain data into JSON cannot fail; an empty string would only force a restart.
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    let hash = Sha256::digest(&bytes);
    hash.iter().take(8).fold(String::new(), |mut out, b| {
        use std::fmt::Write as _;
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// A `Duration` as whole seconds in records.
mod seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}
