//! `docker`: a runner's own Docker socket (README "Docker access for jobs"), resolved into
//! its `DockerPolicy`. Merged field by field with `defaults.docker`, the entry's value winning.

use std::path::{Component, Path};

use super::check::{join_clean, Checker};
use super::desired::DockerPolicy;
use super::model::{RunnerDefaults, RunnerEntry};
use super::rules::parse_bytes;

/// Images a runner's jobs built that are kept between jobs, by default (10 GiB).
pub const DEFAULT_IMAGE_BUDGET: u64 = 10 * 1024 * 1024 * 1024;

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
