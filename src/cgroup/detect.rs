//! Which cgroup hierarchies this host has and where corral is in them, read from
//! `/proc/self/mountinfo` and `/proc/self/cgroup`. Pure parsing: no file is touched here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::Controller;

/// One mounted hierarchy and corral's own cgroup in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The mount point, e.g. `/sys/fs/cgroup` or `/sys/fs/cgroup/unified`.
    pub dir: PathBuf,
    /// corral's own cgroup as a directory under `dir` (`dir` itself for the root).
    pub own: PathBuf,
}

/// The cgroup hierarchies corral can use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Host {
    /// The unified (v2) hierarchy: at `/sys/fs/cgroup` on a pure cgroup2 host, at
    /// `/sys/fs/cgroup/unified` on a hybrid one.
    pub v2: Option<Mount>,
    /// v1 hierarchies of the controllers corral limits (a hybrid host), by controller.
    pub v1: BTreeMap<Controller, Mount>,
}

impl Host {
    /// The host as this process sees it; unreadable files give an empty host (degraded).
    pub fn detect() -> Host {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        Host::parse(&mountinfo, &cgroup)
    }

    /// The host described by the text of `/proc/self/mountinfo` and `/proc/self/cgroup`.
    pub fn parse(mountinfo: &str, self_cgroup: &str) -> Host {
        let own = Membership::parse(self_cgroup);
        let mut host = Host::default();
        let mut v2_mounts = Vec::new();
        for line in mountinfo.lines() {
            let Some(m) = MountLine::parse(line) else {
                continue;
            };
            match m.fstype {
                "cgroup2" => {
                    if let Some(path) = &own.v2 {
                        if let Some(mount) = m.locate(path) {
                            v2_mounts.push(mount);
                        }
                    }
                }
                "cgroup" => {
                    for controller in Controller::ALL {
                        let mounted = m.super_options.split(',').any(|o| o == controller.name());
                        let path = own.v1.get(&controller);
                        if let (true, Some(path)) = (mounted, path) {
                            if let Some(mount) = m.locate(path) {
                                host.v1.entry(controller).or_insert(mount);
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        // Several cgroup2 mounts (a container runtime's bind mounts): the usual places first.
        v2_mounts.sort_by_key(|m| {
            (
                m.dir != Path::new("/sys/fs/cgroup"),
                m.dir != Path::new("/sys/fs/cgroup/unified"),
            )
        });
        host.v2 = v2_mounts.into_iter().next();
        host
    }
}

/// corral's cgroup in each hierarchy, from `/proc/self/cgroup`.
#[derive(Debug, Default)]
struct Membership {
    v2: Option<String>,
    v1: BTreeMap<Controller, String>,
}

impl Membership {
    fn parse(text: &str) -> Membership {
        let mut out = Membership::default();
        for line in text.lines() {
            let mut parts = line.splitn(3, ':');
            let (Some(id), Some(controllers), Some(path)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            if id == "0" && controllers.is_empty() {
                out.v2 = Some(path.to_string());
                continue;
            }
            for controller in Controller::ALL {
                if controllers.split(',').any(|c| c == controller.name()) {
                    out.v1.insert(controller, path.to_string());
                }
            }
        }
        out
    }
}

/// The fields of one `/proc/self/mountinfo` line corral needs.
struct MountLine<'a> {
    /// The mount's root within its hierarchy (`/` unless a subtree is bind-mounted, as in a
    /// container without its own cgroup namespace).
    root: String,
    dir: PathBuf,
    fstype: &'a str,
    super_options: &'a str,
}

impl<'a> MountLine<'a> {
    fn parse(line: &'a str) -> Option<MountLine<'a>> {
        // `id parent major:minor root mount-point options [optional…] - fstype source super`
        let (head, tail) = line.split_once(" - ")?;
        let head: Vec<&str> = head.split(' ').collect();
        let mut tail = tail.split(' ');
        let fstype = tail.next()?;
        let _source = tail.next()?;
        let super_options = tail.next().unwrap_or("");
        Some(MountLine {
            root: unescape(head.get(3)?),
            dir: PathBuf::from(unescape(head.get(4)?)),
            fstype,
            super_options,
        })
    }

    /// corral's cgroup `path` (as `/proc/self/cgroup` writes it) as a directory of this
    /// mount; `None` when the mount does not show it.
    fn locate(&self, path: &str) -> Option<Mount> {
        let rel = if self.root == "/" {
            path
        } else if path == self.root {
            ""
        } else {
            path.strip_prefix(self.root.as_str())
                .filter(|r| r.starts_with('/'))?
        };
        let rel = rel.trim_start_matches('/');
        // A path the kernel marks as outside this namespace's view.
        if rel.split('/').any(|c| c == "..") || rel.contains("(deleted)") {
            return None;
        }
        let own = if rel.is_empty() {
            self.dir.clone()
        } else {
            self.dir.join(rel)
        };
        Some(Mount {
            dir: self.dir.clone(),
            own,
        })
    }
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\011`, `\012`, `\134`).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            if let Some(code) = std::str::from_utf8(&bytes[i + 1..i + 4])
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
            {
                out.push(code);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_MOUNTS: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const HYBRID_SELF: &str = "\
9:name=systemd:/
8:pids:/
4:memory:/process_api/40c6
1:cpu:/
0::/
";

    #[test]
    fn a_hybrid_host_has_cgroup2_at_unified_and_v1_controllers() {
        let host = Host::parse(HYBRID_MOUNTS, HYBRID_SELF);
        let v2 = host.v2.expect("cgroup2");
        assert_eq!(v2.dir, Path::new("/sys/fs/cgroup/unified"));
        assert_eq!(v2.own, Path::new("/sys/fs/cgroup/unified"));
        assert_eq!(
            host.v1[&Controller::Memory].own,
            Path::new("/sys/fs/cgroup/memory/process_api/40c6")
        );
        assert_eq!(
            host.v1[&Controller::Pids].own,
            Path::new("/sys/fs/cgroup/pids")
        );
        assert_eq!(
            host.v1[&Controller::Cpu].own,
            Path::new("/sys/fs/cgroup/cpu")
        );
    }

    #[test]
    fn a_pure_host_under_systemd_and_a_combined_cpu_mount() {
        let mounts = "\
25 20 0:23 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";
        let own = "0::/system.slice/corral.service\n";
        let host = Host::parse(mounts, own);
        let v2 = host.v2.expect("cgroup2");
        assert_eq!(
            v2.own,
            Path::new("/sys/fs/cgroup/system.slice/corral.service")
        );
        assert!(host.v1.is_empty());

        let v1 = "33 31 0:30 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n";
        let host = Host::parse(v1, "3:cpu,cpuacct:/a\n");
        assert_eq!(
            host.v1[&Controller::Cpu].own,
            Path::new("/sys/fs/cgroup/cpu,cpuacct/a")
        );
        assert!(host.v2.is_none(), "no cgroup2 mount");
    }

    #[test]
    fn a_container_sees_its_own_subtree() {
        // Bind-mounted subtree without a cgroup namespace: the mount root is the container's.
        let mounts = "\
50 40 0:30 /docker/abc /sys/fs/cgroup ro,nosuid - cgroup2 cgroup2 rw
";
        let host = Host::parse(mounts, "0::/docker/abc/inner\n");
        assert_eq!(
            host.v2.expect("cgroup2").own,
            Path::new("/sys/fs/cgroup/inner")
        );
        // A cgroup outside the mount's view is not usable.
        let host = Host::parse(mounts, "0::/elsewhere\n");
        assert!(host.v2.is_none());
        // With a namespace of its own, the container is at its root.
        let ns = "50 40 0:30 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let host = Host::parse(ns, "0::/\n");
        assert_eq!(host.v2.expect("cgroup2").own, Path::new("/sys/fs/cgroup"));
    }

    #[test]
    fn escaped_mount_points() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape("/trail\\"), "/trail\\");
    }
}
