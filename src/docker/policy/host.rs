//! The `HostConfig` of a container: privileges, namespaces, capabilities, devices, cgroups,
//! and the containers and networks it names.

use serde_json::Value;

use super::{Refs, Refusal, Scope, BUILTIN_NETWORKS};

/// The `HostConfig` switches: privileges, namespaces, capabilities, devices, cgroups, and
/// the containers and networks it names. Checked in this order, so the first refusal a
/// request meets is always the same.
pub(super) fn host_config(host: &Value, scope: &Scope<'_>, refs: &mut Refs) -> Result<(), Refusal> {
    privileges(host, scope)?;
    namespaces(host, scope, refs)?;
    capabilities_and_devices(host, scope)?;
    if !text(host, "CgroupParent").is_empty() {
        return Err(Refusal(format!(
            "corral: `--cgroup-parent` is not allowed on the Docker socket of runner `{}`",
            scope.runner
        )));
    }
    refs.containers.extend(container_names(host, "VolumesFrom"));
    refs.containers.extend(container_names(host, "Links"));
    Ok(())
}

/// `--privileged` and security options that lift confinement.
fn privileges(host: &Value, scope: &Scope<'_>) -> Result<(), Refusal> {
    let policy = scope.policy;
    let privileged = host
        .get("Privileged")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if privileged && !policy.allow_privileged {
        return Err(scope.refuse("`--privileged`", "allow_privileged"));
    }
    let unconfined = host
        .get("SecurityOpt")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .find(|o| o.contains("unconfined") || o.ends_with("disable"));
    if let (Some(opt), false) = (unconfined, policy.allow_privileged) {
        return Err(scope.refuse(&format!("`--security-opt {opt}`"), "allow_privileged"));
    }
    Ok(())
}

/// The host's namespaces, another container's (a ref), and the network joined.
fn namespaces(host: &Value, scope: &Scope<'_>, refs: &mut Refs) -> Result<(), Refusal> {
    for (key, flag) in [
        ("PidMode", "--pid"),
        ("IpcMode", "--ipc"),
        ("UTSMode", "--uts"),
        ("UsernsMode", "--userns"),
        ("CgroupnsMode", "--cgroupns"),
        ("NetworkMode", "--network"),
    ] {
        let mode = text(host, key);
        if mode == "host" && !scope.policy.allow_host_namespaces {
            return Err(scope.refuse(&format!("`{flag}=host`"), "allow_host_namespaces"));
        }
        if let Some(id) = mode.strip_prefix("container:") {
            refs.containers.push(id.to_string());
        }
    }
    let network = text(host, "NetworkMode");
    if !network.is_empty() && !network.starts_with("container:") {
        network_ref(network, scope, refs)?;
    }
    Ok(())
}

/// `--cap-add` and the device switches.
fn capabilities_and_devices(host: &Value, scope: &Scope<'_>) -> Result<(), Refusal> {
    if nonempty(host, "CapAdd") && !scope.policy.allow_capabilities {
        return Err(scope.refuse("`--cap-add`", "allow_capabilities"));
    }
    for (key, what) in [
        ("Devices", "`--device`"),
        ("DeviceRequests", "`--gpus`"),
        ("DeviceCgroupRules", "`--device-cgroup-rule`"),
    ] {
        if nonempty(host, key) && !scope.policy.allow_devices {
            return Err(scope.refuse(what, "allow_devices"));
        }
    }
    Ok(())
}

/// A network a container joins: built-in ones are everyone's (`host` is the host's
/// namespace), others must be this runner's.
pub(super) fn network_ref(name: &str, scope: &Scope<'_>, refs: &mut Refs) -> Result<(), Refusal> {
    if name == "host" {
        if !scope.policy.allow_host_namespaces {
            return Err(scope.refuse("`--network=host`", "allow_host_namespaces"));
        }
    } else if !BUILTIN_NETWORKS.contains(&name) {
        refs.networks.push(name.to_string());
    }
    Ok(())
}

/// `host[key]` as text, empty when absent.
fn text<'a>(host: &'a Value, key: &str) -> &'a str {
    host.get(key).and_then(Value::as_str).unwrap_or("")
}

/// `host[key]` is a list with something in it.
fn nonempty(host: &Value, key: &str) -> bool {
    host.get(key)
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty())
}

/// The container names of a `name[:alias]` list (`VolumesFrom`, `Links`).
fn container_names(host: &Value, key: &str) -> Vec<String> {
    host.get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|s| s.split(':').next().unwrap_or(s).to_string())
        .collect()
}
