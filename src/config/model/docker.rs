//! `docker` as written: the switches of a runner's own Docker socket (README "Docker access
//! for jobs").

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `docker`, as written.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DockerSpec {
    /// Serve the runner a Docker socket of its own and set `DOCKER_HOST` for its jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Allow `--privileged` containers and privileged `exec`, and unconfined security options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_privileged: Option<bool>,
    /// Allow the host's namespaces: `--pid=host`, `--network=host`, `--ipc=host`,
    /// `--uts=host`, `--userns=host`, `--cgroupns=host`, host-network builds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_host_namespaces: Option<bool>,
    /// Allow `--cap-add`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_capabilities: Option<bool>,
    /// Allow `--device`, `--gpus` and device cgroup rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_devices: Option<bool>,
    /// Host paths jobs may bind-mount besides the runner's `_work` (absolute, or relative
    /// to the config file's directory; `/` allows any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_mounts: Option<Vec<PathBuf>>,
    /// Most bytes of images the runner's jobs built that are kept between jobs (`10GiB`
    /// default, `0` keeps none); the oldest go first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_budget: Option<String>,
}
