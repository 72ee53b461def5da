//! The `runners.yaml` file as written: plain serde + schemars data, no validation.
//!
//! These types are the public contract of DESIGN.md §1. Field names are never renamed;
//! new fields are added with defaults so old files keep working.

use std::collections::BTreeMap;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

mod docker;
mod resources;
mod source;

pub use docker::DockerSpec;
pub use resources::{Clean, Leftovers, ResourcesSpec, Size};
pub use source::{GitSourceSpec, SourceSpec};

use super::duration::Duration;
use super::patterns;

/// The whole `runners.yaml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(transform = patterns::file)]
pub struct RunnersFile {
    /// Where the runner software comes from.
    pub base: BaseSpec,
    /// Runner dirs and corral's own records live here (relative to the config file's directory).
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// How often corral re-checks everything even when nothing triggered it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resync_interval: Option<Duration>,
    /// How long `corral run` lets busy runners finish their jobs when it is stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shutdown_timeout: Option<Duration>,
    /// How often `base.version: latest` is looked up again (default 6h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_check_interval: Option<Duration>,
    /// How many runners may be moved to a new base at the same time (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_unavailable: Option<u32>,
    /// Most runners this host runs across every entry; past it, the last ones in file order
    /// are not created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_runners: Option<u32>,
    /// How often queued jobs are polled for entries with `scale` (default 15s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub demand_poll_interval: Option<Duration>,
    /// The controller's HTTP status API and metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<ApiSpec>,
    /// GitHub access; without it each runner needs its own registration token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github: Option<GitHubSpec>,
    /// Follow `defaults`, `runners` and `max_runners` from a git repository (DESIGN.md §6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceSpec>,
    /// Values every runner entry inherits unless it sets its own.
    #[serde(default)]
    pub defaults: RunnerDefaults,
    /// The runner entries.
    #[serde(default)]
    pub runners: Vec<RunnerEntry>,
}

pub(super) fn default_state_dir() -> PathBuf {
    PathBuf::from("./state")
}

/// `api`: where the status API listens and the token it requires.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(transform = patterns::api)]
pub struct ApiSpec {
    /// Address and port, e.g. `127.0.0.1:9180`.
    #[schemars(transform = patterns::listen)]
    pub listen: String,
    /// Environment variable holding the bearer token clients must send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = patterns::ENV_NAME))]
    pub token_env: Option<String>,
    /// File holding that token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// Environment variable holding the secret GitHub signs `POST /webhook` deliveries with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = patterns::ENV_NAME))]
    pub webhook_secret_env: Option<String>,
    /// File holding that secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_secret_file: Option<PathBuf>,
}

/// `scale`: elastic capacity for an entry of ephemeral runners.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(transform = patterns::scale)]
pub struct ScaleSpec {
    /// Idle runners kept registered and waiting (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 500))]
    pub min_idle: Option<u32>,
    /// Most runners of the entry (per repository), busy and idle together.
    #[schemars(range(min = 1, max = 500))]
    pub max: u32,
    /// How long a runner above `min_idle` may stay idle before it is retired (default 5m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<Duration>,
    /// A job of the pool queued longer than this is reported in status and metrics as
    /// waiting too long (default 5m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_alert_after: Option<Duration>,
    /// How demand is learnt: `rest` (default) polls the runs and jobs endpoints; `scaleset`
    /// holds a runner scale set's message session (workflows then name the scale set in
    /// `runs-on`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<ScaleEngine>,
    /// With `engine: scaleset`: the scale set's name, which is also its first label
    /// (default: the pool's instance base name, e.g. `ci` or `ci-web`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = patterns::NAME))]
    pub scale_set: Option<String>,
}

/// `scale.engine`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ScaleEngine {
    /// Poll `GET …/actions/runs` (queued and in progress) and their jobs.
    #[default]
    Rest,
    /// GitHub's runner scale-set protocol: one long-polled message session.
    Scaleset,
}

/// `base`: exactly one of `path` or `version`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(transform = patterns::base)]
pub struct BaseSpec {
    /// A pristine, extracted official runner tarball.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// A runner release (`2.329.0` or `latest`) that corral downloads, verifies and keeps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = patterns::VERSION))]
    pub version: Option<String>,
    /// Expected SHA-256 of the release tarball (hex); else the releases API's digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = patterns::SHA256))]
    pub sha256: Option<String>,
    /// Download URL template with `{version}` and `{arch}` (also used by runners' `version`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = patterns::DOWNLOAD_URL))]
    pub download_url: Option<String>,
    /// How long an installed release no runner uses is kept before it is deleted (default 24h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prune_after: Option<Duration>,
}

/// `github`: where runners register and how corral authenticates.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(transform = patterns::github)]
pub struct GitHubSpec {
    /// Web URL the runners register against (GHES: `https://ghe.example.com`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = patterns::URL))]
    pub url: Option<String>,
    /// REST API base; derived from `url` when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = patterns::URL))]
    pub api_url: Option<String>,
    /// Name of the environment variable holding a PAT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = patterns::ENV_NAME))]
    pub token_env: Option<String>,
    /// File holding a PAT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// GitHub App credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<GitHubAppSpec>,
    /// The label corral adds to every runner it registers, unique to this host's corral;
    /// default `corral-<hostname>`, `""` for none (which also turns orphan cleanup off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = patterns::marker_label)]
    pub marker_label: Option<String>,
    /// Delete offline, idle registrations that carry the marker but left the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleanup_orphans: Option<bool>,
}

/// `github.app`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GitHubAppSpec {
    /// The App's numeric id.
    pub id: u64,
    /// PEM file with the App's private key.
    pub private_key_file: PathBuf,
    /// Installation id; looked up per repository when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installation_id: Option<u64>,
}

/// `isolation`: which Unix user a runner runs as when corral is root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Isolation {
    /// Every runner of the entry runs as `user` (default `runner`).
    #[default]
    Shared,
    /// Each runner instance runs as its own unprivileged user, `corral-<name>`, and its
    /// directory, workspace and credentials are readable by that user alone.
    UserPerRunner,
}

impl std::fmt::Display for Isolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Isolation::Shared => "shared",
            Isolation::UserPerRunner => "user-per-runner",
        })
    }
}

/// Declares a runner struct: the given fields plus every field a runner and `defaults`
/// share. A macro because serde's `flatten` cannot be combined with `deny_unknown_fields`.
macro_rules! runner_struct {
    ($(#[$meta:meta])* $name:ident $(, transform = $transform:path)? { $($own:tt)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
        #[serde(deny_unknown_fields)]
        $(#[schemars(transform = $transform)])?
        pub struct $name {
            $($own)*
        /// Repository: `owner/repo` or its URL.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(transform = patterns::repo)]
        pub repo: Option<String>,
        /// Number of instances (`<name>-1` … `<name>-N`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(range(min = 1, max = 500))]
        pub count: Option<u32>,
        /// Labels added to the runner's default labels.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(transform = patterns::labels)]
        pub labels: Option<Vec<String>>,
        /// Register with `--no-default-labels` (then `labels` must not be empty).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub no_default_labels: Option<bool>,
        /// One job per registration, fresh runner each time.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub ephemeral: Option<bool>,
        /// Extra environment for the runner process and its jobs.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(transform = patterns::env)]
        pub env: Option<BTreeMap<String, String>>,
        /// How long a removed runner may finish its job before it is stopped.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub drain_timeout: Option<Duration>,
        /// Unix user the runner runs as when corral is root (default `runner`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(regex(pattern = patterns::USER))]
        pub user: Option<String>,
        /// Allow running the runner as root (sets `RUNNER_ALLOW_RUNASROOT`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub allow_root: Option<bool>,
        /// Runner release this runner runs (`2.329.0` or `latest`) instead of the one `base`
        /// gives; runners on different versions each share their own base.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(regex(pattern = patterns::VERSION))]
        pub version: Option<String>,
        /// Whom the runner shares a Unix user with: `shared` (default: the `user`) or
        /// `user-per-runner` (its own user `corral-<name>`, created when missing).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub isolation: Option<Isolation>,
        /// Environment variable holding a one-hour registration token.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(regex(pattern = patterns::ENV_NAME))]
        pub registration_token_env: Option<String>,
        /// File holding a one-hour registration token.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub registration_token_file: Option<PathBuf>,
        /// A Docker socket of the runner's own, with what its jobs may do (`enabled: true`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub docker: Option<DockerSpec>,
        /// Limits of the runner's cgroup, its jobs included: `{ cpu: 2, memory: 4GiB, pids: 4096 }`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub resources: Option<ResourcesSpec>,
        /// `workspace`: empty `_work` after every job, but the tool cache (`_work/_tool`);
        /// `none` (default): as the runner leaves it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub clean: Option<Clean>,
        /// Processes a job leaves running: `kill` them once the job ends (default), or
        /// `keep` them until the runner is removed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub leftovers: Option<Leftovers>,
        }
    };
}

runner_struct! {
    /// `defaults`: any runner field but `name`.
    RunnerDefaults, transform = patterns::runner_fields {}
}

runner_struct! {
    /// One entry of `runners`.
    RunnerEntry, transform = patterns::entry {
        /// Local identity and GitHub runner name (with `-<i>` per instance when `count` is set).
        #[schemars(regex(pattern = patterns::NAME))]
        pub name: String,
        /// Several repositories: one set of runners each, named `<name>-<repo>[-<i>]`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(transform = patterns::repos)]
        pub repos: Option<Vec<String>>,
        /// Host ids that run this entry; every host when omitted.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(transform = patterns::hosts)]
        pub hosts: Option<Vec<String>>,
        /// Start runners for queued jobs between `min_idle` and `max` (instead of `count`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub scale: Option<ScaleSpec>,
    }
}
