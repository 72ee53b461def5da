//! `docker`: a runner's own Docker socket (README "Docker access for jobs"), as written and
//! as resolved. Merged field by field with `defaults.docker`, the entry's value winning.

use std::path::{Component, Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::check::{join_clean, Checker};
use super::model::{RunnerDefaults, RunnerEntry};

/// Images a runner's jobs built that are kept between jobs, by default (10 GiB).
pub const DEFAULT_IMAGE_BUDGET: u64 = 10 * 1024 * 1024 * 1024;

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

/// The entry's `docker` merged with `defaults.docker` and checked; `None` when not enabled.
pub(super) fn resolve(
    c: &mut Checker<'_>,
    i: usize,
    entry: &RunnerEntry,
    defaults: &RunnerDefaults,
    dir: &Path,
) -> Option<DockerPolicy> {
    let own = entry.docker.clone().unwrap_or_default();
    let base = defaults.docker.clone().unwrap_or_default();
    let path_of = |field: &str, set_here: bool| {
        if set_here {
            format!("runners[{i}].docker.{field}")
        } else {
            format!("defaults.docker.{field}")
        }
    };
    let flag = |a: Option<bool>, b: Option<bool>| a.or(b).unwrap_or(false);
    let mounts_path = path_of("allow_mounts", own.allow_mounts.is_some());
    let mounts = own.allow_mounts.or(base.allow_mounts).unwrap_or_default();
    let budget_path = path_of("image_budget", own.image_budget.is_some());
    let budget = own.image_budget.or(base.image_budget);
    let mut allow_mounts = Vec::new();
    for (k, mount) in mounts.iter().enumerate() {
        let at = format!("{mounts_path}[{k}]");
        if mount.components().any(|p| p == Component::ParentDir) {
            c.error(
                &at,
                format!(
                    "`{}`: `..` is not allowed in a mount path; write the path it means",
                    mount.display()
                ),
            );
        } else {
            allow_mounts.push(join_clean(dir, mount));
        }
    }
    let image_budget = match budget.as_deref().map(parse_bytes) {
        None => DEFAULT_IMAGE_BUDGET,
        Some(Ok(bytes)) => bytes,
        Some(Err(message)) => {
            c.error(&budget_path, message);
            DEFAULT_IMAGE_BUDGET
        }
    };
    flag(own.enabled, base.enabled).then_some(DockerPolicy {
        allow_privileged: flag(own.allow_privileged, base.allow_privileged),
        allow_host_namespaces: flag(own.allow_host_namespaces, base.allow_host_namespaces),
        allow_capabilities: flag(own.allow_capabilities, base.allow_capabilities),
        allow_devices: flag(own.allow_devices, base.allow_devices),
        allow_mounts,
        image_budget,
    })
}

/// `512MiB`, `10GB`, `0`: a byte count with an optional SI (`kB`, `MB`, `GB`, `TB`) or
/// binary (`KiB`, `MiB`, `GiB`, `TiB`) unit.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let unit = unit.trim();
    let factor: u64 = match unit {
        "" | "B" => 1,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        _ => {
            return Err(format!(
                "`{text}` is not a size: write a number with B, kB, MB, GB, TB, KiB, MiB, GiB or TiB (e.g. `10GiB`)"
            ))
        }
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(factor))
        .ok_or_else(|| {
            format!("`{text}` is not a size: write a whole number and a unit (e.g. `10GiB`)")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("0"), Ok(0));
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("10 GB"), Ok(10_000_000_000));
        assert!(parse_bytes("ten")
            .expect_err("not a size")
            .contains("`ten` is not a size"));
        assert!(parse_bytes("1.5GiB").is_err());
        assert!(parse_bytes("99999999999TiB").is_err());
    }
}
