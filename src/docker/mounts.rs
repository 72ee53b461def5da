//! Where a job's bind mounts may come from, and where they lead on the engine's host.
//!
//! A bind source is resolved (symlinks and all) when the container is created and the
//! resolved path is what the engine gets; it must lie under the runner's `_work` or a path
//! the policy allows. The runner's own externals may be mounted read-only (the runner's
//! container jobs do). The engine's own socket, which the runner's container jobs mount,
//! becomes the runner's socket. At every `start` the paths are checked again: the engine
//! mounts them anew then, and a job may have swapped a directory for a link meanwhile.
//!
//! When corral runs in a container with the host's socket, the engine reads paths on the
//! host: paths on corral's volumes are translated to their host paths ([`HostPaths`]).

use std::path::{Component, Path, PathBuf};

use super::policy::Refusal;

/// Paths of corral's file system as the engine's host sees them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostPaths {
    /// `(path in corral's container, the same on the host)`, longest first; empty when
    /// corral is not in a container (every path is the host's).
    pub mounts: Vec<(PathBuf, PathBuf)>,
    /// corral runs in a container: a path on no mount is not on the host.
    pub in_container: bool,
}

impl HostPaths {
    /// The host path of `local`; `None` when the host cannot see it.
    pub fn to_host(&self, local: &Path) -> Option<PathBuf> {
        if !self.in_container {
            return Some(local.to_path_buf());
        }
        self.mounts.iter().find_map(|(inside, outside)| {
            let rest = local.strip_prefix(inside).ok()?;
            Some(if rest.as_os_str().is_empty() {
                outside.clone()
            } else {
                outside.join(rest)
            })
        })
    }

    /// The local path of a host path, for checks at `start`.
    pub fn to_local(&self, host: &Path) -> Option<PathBuf> {
        if !self.in_container {
            return Some(host.to_path_buf());
        }
        self.mounts.iter().find_map(|(inside, outside)| {
            let rest = host.strip_prefix(outside).ok()?;
            Some(inside.join(rest))
        })
    }

    /// Sorts the mounts longest first, so the closest one wins.
    #[must_use]
    pub fn sorted(mut self) -> Self {
        self.mounts
            .sort_by_key(|(inside, _)| std::cmp::Reverse(inside.as_os_str().len()));
        self
    }
}

/// The bind mount rules of one runner.
#[derive(Debug, Clone)]
pub struct Mounts {
    /// Runner name, for messages.
    pub runner: String,
    /// Resolved roots any bind may come from (`_work`, `allow_mounts`).
    pub roots: Vec<PathBuf>,
    /// Resolved roots only read-only binds may come from (the runner's externals).
    pub read_only_roots: Vec<PathBuf>,
    /// Paths of the engine's socket a job may name (`/var/run/docker.sock`, …).
    pub engine_sockets: Vec<PathBuf>,
    /// The runner's own socket.
    pub own_socket: PathBuf,
    /// How paths reach the engine's host.
    pub host: HostPaths,
}

impl Mounts {
    /// The host path to give the engine for a job's bind `source`, or why not.
    pub fn resolve(&self, source: &str, read_only: bool) -> Result<String, Refusal> {
        let path = Path::new(source);
        if !path.is_absolute() || path.components().any(|c| c == Component::ParentDir) {
            return Err(self.outside(source));
        }
        let local = if self.engine_sockets.iter().any(|s| s == path) || path == self.own_socket {
            // The runner's container jobs mount the engine's socket; they get their own.
            self.own_socket.clone()
        } else {
            let resolved = resolve_lexically_missing(path).ok_or_else(|| self.outside(source))?;
            self.check_root(&resolved, read_only, source)?;
            resolved
        };
        let host = self.host.to_host(&local).ok_or_else(|| {
            Refusal(format!(
                "corral: `{source}` is not on a volume the Docker engine can see (corral runs in a container); \
                 bind-mount paths under the runner's _work"
            ))
        })?;
        Ok(host.to_string_lossy().into_owned())
    }

    /// At `start`: a bind source given to the engine must still be a path without links
    /// under an allowed root (or the runner's socket).
    pub fn recheck(&self, host_source: &str, read_only: bool) -> Result<(), Refusal> {
        let host = Path::new(host_source);
        let local = self
            .host
            .to_local(host)
            .ok_or_else(|| self.outside(host_source))?;
        if local == self.own_socket {
            return Ok(());
        }
        match resolve_lexically_missing(&local) {
            Some(resolved) if resolved == local => {
                self.check_root(&resolved, read_only, host_source)
            }
            _ => Err(Refusal(format!(
                "corral: the bind mount `{host_source}` now leads elsewhere (a link was put in its path); \
                 the container is not started"
            ))),
        }
    }

    fn check_root(&self, resolved: &Path, read_only: bool, source: &str) -> Result<(), Refusal> {
        if self.roots.iter().any(|r| resolved.starts_with(r)) {
            return Ok(());
        }
        if self.read_only_roots.iter().any(|r| resolved.starts_with(r)) {
            if read_only {
                return Ok(());
            }
            return Err(Refusal(format!(
                "corral: `{source}` may only be mounted read-only (add `:ro`) on the Docker socket of runner `{}`",
                self.runner
            )));
        }
        Err(self.outside(source))
    }

    fn outside(&self, source: &str) -> Refusal {
        Refusal(format!(
            "corral: bind mounts from `{source}` are not allowed on the Docker socket of runner `{}`: \
             only paths under its _work are (add the path to `docker.allow_mounts` in runners.yaml to allow it)",
            self.runner
        ))
    }
}

/// `path` with every link resolved; the part that does not exist yet (the engine creates
/// it) is appended to its deepest existing ancestor's resolved path.
pub fn resolve_lexically_missing(path: &Path) -> Option<PathBuf> {
    let mut missing = Vec::new();
    let mut existing = path;
    loop {
        if let Ok(mut resolved) = std::fs::canonicalize(existing) {
            for part in missing.iter().rev() {
                resolved.push(part);
            }
            return Some(resolved);
        }
        missing.push(existing.file_name()?.to_os_string());
        existing = existing.parent()?;
    }
}

/// corral's own container's volumes, from `/proc/self/mountinfo` and the engine's view of
/// the container: `None` when corral is not in a container.
pub fn container_id(mountinfo: &str) -> Option<String> {
    // Docker bind-mounts `/var/lib/docker/containers/<id>/hostname` at `/etc/hostname`.
    mountinfo.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let root = fields.nth(3)?;
        let mount_point = fields.next()?;
        if mount_point != "/etc/hostname" {
            return None;
        }
        let dir = root.strip_suffix("/hostname")?;
        let id = dir.rsplit('/').next()?;
        (id.len() == 64 && id.chars().all(|c| c.is_ascii_hexdigit())).then(|| id.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mounts(dir: &Path) -> Mounts {
        Mounts {
            runner: "r".into(),
            roots: vec![resolve_lexically_missing(&dir.join("_work")).expect("work")],
            read_only_roots: vec![resolve_lexically_missing(&dir.join("ext")).expect("ext")],
            engine_sockets: vec!["/var/run/docker.sock".into()],
            own_socket: "/state/docker/r.sock".into(),
            host: HostPaths::default(),
        }
    }

    #[test]
    fn binds_stay_under_work_through_links() {
        let dir = tempfile::tempdir().expect("tmp");
        let work = dir.path().join("_work");
        std::fs::create_dir_all(work.join("src")).expect("mkdir");
        std::fs::create_dir_all(dir.path().join("ext")).expect("mkdir");
        std::os::unix::fs::symlink("/", work.join("root")).expect("link");
        let m = mounts(dir.path());
        let real = std::fs::canonicalize(&work).expect("canon");
        assert_eq!(
            m.resolve(&format!("{}/src", work.display()), false),
            Ok(format!("{}/src", real.display()))
        );
        assert_eq!(
            m.resolve(&format!("{}/new/dir", work.display()), false),
            Ok(format!("{}/new/dir", real.display())),
            "a missing path is created by the engine, under _work"
        );
        let err = m
            .resolve(&format!("{}/root/etc", work.display()), false)
            .expect_err("a link out of _work");
        assert!(err.0.contains("not allowed"), "{}", err.0);
        assert!(m.resolve("/", false).is_err());
        assert!(m
            .resolve(&format!("{}/../x", work.display()), false)
            .is_err());
        assert!(m.resolve("relative", false).is_err());
        let ext = format!("{}/ext", dir.path().display());
        assert!(m
            .resolve(&ext, false)
            .expect_err("rw")
            .0
            .contains("read-only"));
        assert!(m.resolve(&ext, true).is_ok());
        assert_eq!(
            m.resolve("/var/run/docker.sock", false),
            Ok("/state/docker/r.sock".into())
        );
        let inside = format!("{}/src", real.display());
        m.recheck(&inside, false).expect("still a plain path");
        std::fs::remove_dir(work.join("src")).expect("rmdir");
        std::os::unix::fs::symlink("/", work.join("src")).expect("swap for a link");
        assert!(
            m.recheck(&inside, false).is_err(),
            "the swap is caught at start"
        );
    }

    #[test]
    fn host_paths_in_a_container() {
        let host = HostPaths {
            mounts: vec![
                (
                    "/var/lib/corral".into(),
                    "/var/lib/docker/volumes/s/_data".into(),
                ),
                ("/var/lib/corral/x".into(), "/srv/x".into()),
            ],
            in_container: true,
        }
        .sorted();
        assert_eq!(
            host.to_host(Path::new("/var/lib/corral/runners/a/_work")),
            Some("/var/lib/docker/volumes/s/_data/runners/a/_work".into())
        );
        assert_eq!(
            host.to_host(Path::new("/var/lib/corral/x/y")),
            Some("/srv/x/y".into())
        );
        assert_eq!(host.to_host(Path::new("/tmp/a")), None);
        assert_eq!(
            host.to_local(Path::new("/var/lib/docker/volumes/s/_data/runners")),
            Some("/var/lib/corral/runners".into())
        );
        let id = "a".repeat(64);
        let info = format!(
            "1 2 8:1 /var/lib/docker/containers/{id}/hostname /etc/hostname rw - ext4 /dev/sda1 rw\n"
        );
        assert_eq!(container_id(&info), Some(id));
        assert_eq!(container_id("1 2 8:1 / / rw - ext4 /dev/sda1 rw\n"), None);
    }
}
