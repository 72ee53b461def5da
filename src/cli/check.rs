//! `corral check`: what the file gives this host, what it leaves out and what the host
//! cannot give; and `corral schema`.

use std::io::Write;
use std::path::Path;

use super::ExitStatus;
use crate::config;

/// `corral check`: prints a summary for host `host`, or every error to `err`.
pub fn check(
    path: &Path,
    host: &str,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> std::io::Result<ExitStatus> {
    if let Err(message) = config::check_host_id(host) {
        writeln!(err, "--host-id: {message}")?;
        return Ok(1);
    }
    match config::load_on(path, host) {
        Ok(desired) => {
            let n = desired.runners.len();
            write!(
                out,
                "{}: ok, {n} runner{}",
                path.display(),
                if n == 1 { "" } else { "s" }
            )?;
            if !desired.pools.is_empty() {
                let slots: usize = desired.pools.iter().map(|p| p.slots.len()).sum();
                write!(
                    out,
                    " and {} scaled set(s) of up to {slots}",
                    desired.pools.len()
                )?;
            }
            writeln!(out, " on host {host}")?;
            write_left_out(&desired, out)?;
            write_containment(&desired, out)?;
            Ok(0)
        }
        Err(errors) => {
            writeln!(err, "{errors}")?;
            let n = errors.len();
            writeln!(
                err,
                "{}: {n} error{}",
                path.display(),
                if n == 1 { "" } else { "s" }
            )?;
            Ok(1)
        }
    }
}

/// What this host leaves out of the file: entries for other hosts, instances past `max_runners`.
pub(super) fn write_left_out(
    desired: &config::Desired,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    if !desired.elsewhere.is_empty() {
        writeln!(
            out,
            "left alone on host {} (not in their hosts): {}",
            desired.host_id,
            desired.elsewhere.join(", ")
        )?;
    }
    if let (Some(max), false) = (desired.max_runners, desired.capped.is_empty()) {
        writeln!(
            out,
            "not created (max_runners: {max}): {}",
            desired.capped.join(", ")
        )?;
    }
    Ok(())
}

/// What this host cannot give the runners: cgroups (then clean-up is degraded), or the
/// controllers some `resources` need, each with the reason (issue 22).
pub(super) fn write_containment(
    desired: &config::Desired,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let root = std::env::var_os(crate::cgroup::ROOT_ENV).map(std::path::PathBuf::from);
    let host = crate::cgroup::Host::detect();
    let assessed = crate::cgroup::assess(&host, &desired.state_dir, root.as_deref());
    let limited: Vec<(String, &config::RunnerSpec)> = desired
        .runners
        .values()
        .map(|s| (s.name.clone(), s))
        .chain(desired.pools.iter().map(|p| (p.slots.join(", "), &p.spec)))
        .filter(|(_, s)| !s.resources.is_empty())
        .collect();
    if let Err(reason) = &assessed.tree {
        writeln!(
            out,
            "cleanup: degraded ({reason}): what jobs leave is found by the listener's session (and a runner's own user) only"
        )?;
        if !limited.is_empty() {
            writeln!(
                out,
                "resources not applied on this host (no cgroups): {}",
                names(&limited)
            )?;
        }
        return Ok(());
    }
    for (controller, reason) in &assessed.missing {
        let wanting: Vec<(String, &config::RunnerSpec)> = limited
            .iter()
            .filter(|(_, s)| s.resources.controllers().contains(controller))
            .cloned()
            .collect();
        if !wanting.is_empty() {
            writeln!(
                out,
                "resources.{controller} not applied on this host for {}: {reason}",
                names(&wanting)
            )?;
        }
    }
    Ok(())
}

fn names(specs: &[(String, &config::RunnerSpec)]) -> String {
    specs
        .iter()
        .map(|(name, _)| name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `corral schema`.
pub fn schema(out: &mut dyn Write) -> std::io::Result<ExitStatus> {
    writeln!(out, "{}", config::schema_json())?;
    Ok(0)
}
