//! `resources` (issue 22, DESIGN.md §6) resolved into the limits of a runner's cgroup. It is
//! merged field by field with `defaults.resources`, the entry's value winning.

use super::check::Checker;
use super::model::{RunnerDefaults, RunnerEntry, Size};
use super::rules::{parse_bytes, MIN_MEMORY};
use crate::cgroup::Limits;

/// Most CPUs a limit may name.
const MAX_CPUS: f64 = 4096.0;
/// Fewest CPUs: the kernel's smallest quota is 1 ms per 100 ms period.
const MIN_CPUS: f64 = 0.01;
/// Most processes a limit may name (the kernel's largest `pid_max`).
const MAX_PIDS: u32 = 4_194_304;

/// The entry's `resources` merged with `defaults.resources`, checked.
pub(super) fn resolve(
    c: &mut Checker<'_>,
    i: usize,
    entry: &RunnerEntry,
    defaults: &RunnerDefaults,
) -> Limits {
    let own = entry.resources.clone().unwrap_or_default();
    let base = defaults.resources.clone().unwrap_or_default();
    let path_of = |field: &str, set_here: bool| {
        if set_here {
            format!("runners[{i}].resources.{field}")
        } else {
            format!("defaults.resources.{field}")
        }
    };
    let cpu_path = path_of("cpu", own.cpu.is_some());
    let memory_path = path_of("memory", own.memory.is_some());
    let pids_path = path_of("pids", own.pids.is_some());
    let cpu = own.cpu.or(base.cpu);
    let memory = own.memory.or(base.memory);
    let pids = own.pids.or(base.pids);
    Limits {
        cpu_millis: cpu.and_then(|n| checked(c, &cpu_path, cpu_millis(&n))),
        memory_bytes: memory.and_then(|m| checked(c, &memory_path, memory_bytes(&m))),
        pids: pids.and_then(|p| checked(c, &pids_path, pids_max(p))),
    }
}

/// `defaults.resources` on its own, so a bad default is reported even when no runner
/// inherits it.
pub(super) fn check_defaults(c: &mut Checker<'_>, defaults: &RunnerDefaults) {
    let Some(r) = &defaults.resources else { return };
    if let Some(cpu) = &r.cpu {
        c.check("defaults.resources.cpu", cpu_millis(cpu).map(drop));
    }
    if let Some(memory) = &r.memory {
        c.check("defaults.resources.memory", memory_bytes(memory).map(drop));
    }
    if let Some(pids) = r.pids {
        c.check("defaults.resources.pids", pids_max(pids).map(drop));
    }
}

fn pids_max(pids: u32) -> Result<u32, String> {
    if (1..=MAX_PIDS).contains(&pids) {
        Ok(pids)
    } else {
        Err(format!(
            "{pids} is not a number of processes from 1 to {MAX_PIDS}"
        ))
    }
}

fn checked<T>(c: &mut Checker<'_>, path: &str, value: Result<T, String>) -> Option<T> {
    match value {
        Ok(v) => Some(v),
        Err(message) => {
            c.error(path, message);
            None
        }
    }
}

/// CPUs in thousandths.
fn cpu_millis(n: &serde_json::Number) -> Result<u32, String> {
    let cpus = n.as_f64().unwrap_or(f64::NAN);
    if !(MIN_CPUS..=MAX_CPUS).contains(&cpus) {
        return Err(format!(
            "{n} is not a number of CPUs from {MIN_CPUS} to {MAX_CPUS} (e.g. `2` or `0.5`)"
        ));
    }
    Ok((cpus * 1000.0).round() as u32)
}

fn memory_bytes(size: &Size) -> Result<u64, String> {
    let bytes = parse_bytes(&size.0)?;
    if bytes < MIN_MEMORY {
        return Err(format!(
            "`{}` is less than 1MiB, too little for a runner to start",
            size.0
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpus_and_sizes() {
        let n = |v: f64| serde_json::Number::from_f64(v).expect("finite");
        assert_eq!(cpu_millis(&n(2.0)), Ok(2000));
        assert_eq!(cpu_millis(&n(0.5)), Ok(500));
        assert_eq!(cpu_millis(&serde_json::Number::from(3)), Ok(3000));
        assert!(cpu_millis(&n(0.001)).is_err());
        assert!(cpu_millis(&n(5000.0)).is_err());
        assert_eq!(memory_bytes(&Size("64MiB".into())), Ok(64 << 20));
        assert_eq!(memory_bytes(&Size("4294967296".into())), Ok(4 << 30));
        assert!(memory_bytes(&Size("100KiB".into())).is_err());
        assert!(memory_bytes(&Size("lots".into())).is_err());
    }
}
