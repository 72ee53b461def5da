//! What the host would give runners' cgroups, assessed read-only for `check` and `plan`.

use std::path::{Path, PathBuf};

use super::{base_of, not_offered, strip_supervisor, subtree_name};
use crate::cgroup::{read, Controller, Host, Reasons};

/// What `check` and `plan` can say without changing anything: where runners' cgroups would
/// be, or why there would be none, and which limits could not be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assessment {
    /// The subtree directory, or why cgroups cannot be used.
    pub tree: Result<PathBuf, String>,
    /// Controllers that could not be used, and why.
    pub missing: Reasons,
}

/// Assesses `host` for `state_dir` as [`Tree::establish`](super::Tree::establish) would,
/// read-only: a directory is usable when corral could write there (root, or its owner), a
/// controller when the base offers it or a v1 hierarchy has it.
pub fn assess(host: &Host, state_dir: &Path, root: Option<&Path>) -> Assessment {
    let base = match base_of(host, root) {
        Ok(base) => base,
        Err(reason) => {
            return Assessment {
                tree: Err(reason),
                missing: Reasons::new(),
            }
        }
    };
    let dir = base.join(subtree_name(state_dir));
    if !writable(&base) {
        return Assessment {
            tree: Err(format!(
                "cannot create `{}`: `{}` is not writable for corral",
                dir.display(),
                base.display()
            )),
            missing: Reasons::new(),
        };
    }
    let offered = read(&base.join("cgroup.controllers")).unwrap_or_default();
    let mut missing = Reasons::new();
    for controller in Controller::ALL {
        let v2 = offered.split(' ').any(|c| c == controller.name());
        let v1 = host
            .v1
            .get(&controller)
            .is_some_and(|m| writable(&strip_supervisor(&m.own)));
        if !v2 && !v1 {
            let reason = if host.v1.contains_key(&controller) {
                format!("the v1 `{controller}` hierarchy is not writable for corral")
            } else {
                not_offered(controller, &base)
            };
            missing.insert(controller, reason);
        }
    }
    Assessment {
        tree: Ok(dir),
        missing,
    }
}

fn writable(dir: &Path) -> bool {
    rustix::fs::access(dir, rustix::fs::Access::WRITE_OK).is_ok()
}
