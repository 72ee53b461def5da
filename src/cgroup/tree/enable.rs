//! Enabling a controller for the runners' cgroups, under cgroup2's no-internal-process rule:
//! corral moves itself into a `supervisor` child when it is alone in its cgroup.

use std::path::Path;

use super::{make_dir, SUPERVISOR};
use crate::cgroup::{read, why, write, Controller};

/// Enables `controller` for the runners' cgroups: in `base` (for `dir`) and in `dir` (for
/// the runners). A `base` that holds processes cannot enable controllers (cgroup2's "no
/// internal processes" rule) unless it is the root: when corral is the only one there, it
/// moves itself into `base/supervisor` first.
pub(super) fn enable_v2(
    base: &Path,
    dir: &Path,
    controller: Controller,
    at_root: bool,
) -> Result<(), String> {
    let plus = format!("+{controller}");
    let enabled = |at: &Path| {
        read(&at.join("cgroup.subtree_control"))
            .is_some_and(|s| s.split(' ').any(|c| c == controller.name()))
    };
    if !enabled(base) {
        let control = base.join("cgroup.subtree_control");
        if let Err(e) = write(&control, &plus) {
            let busy = e.raw_os_error() == Some(rustix::io::Errno::BUSY.raw_os_error());
            if !(busy && !at_root && move_self_below(base)) {
                return Err(format!(
                    "cannot enable `{controller}` in `{}`: {}{}",
                    control.display(),
                    why(&e),
                    if busy {
                        "; it holds processes other than corral (cgroup2's no-internal-process rule): run corral in a cgroup of its own (systemd: Delegate=yes)"
                    } else {
                        ""
                    }
                ));
            }
            enable_in(&control, &plus, controller)?;
        }
    }
    if !enabled(dir) {
        let control = dir.join("cgroup.subtree_control");
        enable_in(&control, &plus, controller)?;
    }
    Ok(())
}

/// Writes `plus` (`+<controller>`) to the `cgroup.subtree_control` file `control`.
fn enable_in(control: &Path, plus: &str, controller: Controller) -> Result<(), String> {
    write(control, plus).map_err(|e| {
        format!(
            "cannot enable `{controller}` in `{}`: {}",
            control.display(),
            why(&e)
        )
    })
}

/// Moves corral into `base/supervisor` when it is the only process in `base`.
fn move_self_below(base: &Path) -> bool {
    let me = std::process::id().to_string();
    let procs = read(&base.join("cgroup.procs")).unwrap_or_default();
    if procs.lines().any(|p| p.trim() != me) {
        return false;
    }
    let supervisor = base.join(SUPERVISOR);
    let moved =
        make_dir(&supervisor).is_ok() && write(&supervisor.join("cgroup.procs"), &me).is_ok();
    if moved {
        tracing::info!(cgroup = %supervisor.display(), "corral moved itself into a child of its cgroup, so runners' cgroups can have controllers");
    }
    moved
}
