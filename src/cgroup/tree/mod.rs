//! corral's subtree: made once at start (idempotently), or found unusable, with the reason.
//! Enabling a controller is in `enable.rs`; the read-only assessment `check` prints, in
//! `assess.rs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::{read, why, write, Controller, Host, Reasons, RunnerCgroup};

mod assess;
mod enable;

pub use assess::{assess, Assessment};
use enable::enable_v2;

/// The environment variable naming the cgroup2 directory corral's subtree goes under,
/// instead of corral's own cgroup (an operator's choice, or a test's).
pub const ROOT_ENV: &str = "CORRAL_CGROUP_ROOT";

/// The name of the child corral moves itself into when its own cgroup must hold only
/// cgroups (cgroup2's "no internal processes" rule), as systemd's `DelegateSubgroup=` does.
const SUPERVISOR: &str = "supervisor";

/// cgroup2's filesystem magic (`statfs`).
const CGROUP2_MAGIC: i64 = 0x6367_7270;

/// corral's cgroups, or why there are none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tree {
    /// A subtree corral owns.
    Ready(Subtree),
    /// No writable cgroup2: stops and clean-ups fall back to sessions (and users).
    Degraded(String),
}

/// corral's subtree: where runners' cgroups are made, and where each controller is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subtree {
    /// The cgroup2 directory `…/corral-<id>`; runners' cgroups are its children.
    pub dir: PathBuf,
    /// `corral-<id>`.
    pub name: String,
    /// The cgroup2 mount the paths of `/proc/<pid>/cgroup` are relative to.
    pub mount: Option<PathBuf>,
    /// Controllers enabled for runners' cgroups in cgroup2.
    pub v2: Vec<Controller>,
    /// Controllers of v1 hierarchies (a hybrid host): corral's directory in each.
    pub v1: BTreeMap<Controller, PathBuf>,
    /// Controllers that cannot be used, and why.
    pub missing: Reasons,
}

impl Subtree {
    /// The cgroup of runner `name` (its directories may not exist yet).
    pub fn runner(&self, name: &str) -> RunnerCgroup {
        RunnerCgroup {
            v2: self.dir.join(name),
            v2_controllers: self.v2.clone(),
            v1: self.v1.iter().map(|(c, d)| (*c, d.join(name))).collect(),
        }
    }

    /// The cgroup of runner `name` that the live process `pid` is in, if it is one of this
    /// corral's (a listener adopted after a restart keeps the cgroup it was started in, even
    /// where this corral would put a new one elsewhere). A cgroup is this corral's when it
    /// is named `corral-<id>/<name>` with this corral's id.
    pub fn runner_of_pid(&self, name: &str, pid: i32) -> Option<RunnerCgroup> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        let v2_rel = text.lines().find_map(|l| l.strip_prefix("0::"))?;
        let dir = self.mount.as_ref()?.join(v2_rel.trim_start_matches('/'));
        let ours = dir.file_name().is_some_and(|n| n == name)
            && dir
                .parent()
                .and_then(Path::file_name)
                .is_some_and(|n| n == self.name.as_str());
        ours.then(|| RunnerCgroup {
            v2: dir,
            ..self.runner(name)
        })
    }
}

impl Tree {
    /// corral's subtree for `state_dir`, made (idempotently) under `root` (else corral's own
    /// cgroup) on `host`, with every controller of [`Controller::ALL`] that can be had.
    pub fn establish(host: &Host, state_dir: &Path, root: Option<&Path>) -> Tree {
        let base = match base_of(host, root) {
            Ok(base) => base,
            Err(reason) => return Tree::Degraded(reason),
        };
        let name = subtree_name(state_dir);
        let dir = base.join(&name);
        if let Err(e) = make_dir(&dir) {
            return Tree::Degraded(format!("cannot create `{}`: {}", dir.display(), why(&e)));
        }
        let mut missing = Reasons::new();
        let mut v2 = Vec::new();
        let offered = read(&base.join("cgroup.controllers")).unwrap_or_default();
        let at_root = !base.join("cgroup.type").exists();
        for controller in Controller::ALL {
            if !offered.split(' ').any(|c| c == controller.name()) {
                continue;
            }
            match enable_v2(&base, &dir, controller, at_root) {
                Ok(()) => v2.push(controller),
                Err(reason) => {
                    missing.insert(controller, reason);
                }
            }
        }
        let mut v1 = BTreeMap::new();
        for controller in Controller::ALL {
            if v2.contains(&controller) || missing.contains_key(&controller) {
                continue;
            }
            let Some(mount) = host.v1.get(&controller) else {
                missing.insert(controller, not_offered(controller, &base));
                continue;
            };
            let v1_dir = strip_supervisor(&mount.own).join(&name);
            match make_dir(&v1_dir) {
                Ok(()) => {
                    v1.insert(controller, v1_dir);
                }
                Err(e) => {
                    missing.insert(
                        controller,
                        format!("cannot create `{}`: {}", v1_dir.display(), why(&e)),
                    );
                }
            }
        }
        Tree::Ready(Subtree {
            mount: host.v2.as_ref().map(|m| m.dir.clone()),
            dir,
            name,
            v2,
            v1,
            missing,
        })
    }

    /// The subtree, when there is one.
    pub fn subtree(&self) -> Option<&Subtree> {
        match self {
            Tree::Ready(s) => Some(s),
            Tree::Degraded(_) => None,
        }
    }

    /// Removes corral's (empty) subtree directories; what still holds a cgroup stays. When
    /// corral runs in a `supervisor` child of a cgroup that is not the root, the controllers
    /// it enabled there are disabled again once its subtree is gone, so that a service
    /// manager can start the next corral in that cgroup (a cgroup with controllers enabled
    /// for its children takes no process).
    pub fn remove_empty(&self) {
        let Tree::Ready(s) = self else { return };
        for dir in std::iter::once(&s.dir).chain(s.v1.values()) {
            let _ = std::fs::remove_dir(dir);
        }
        let Some(base) = s.dir.parent() else { return };
        let in_supervisor = std::fs::read_to_string("/proc/self/cgroup")
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with("0::") && l.ends_with(&format!("/{SUPERVISOR}")));
        let at_root = !base.join("cgroup.type").exists();
        if s.dir.exists() || at_root || !in_supervisor {
            return;
        }
        for controller in &s.v2 {
            let _ = write(
                &base.join("cgroup.subtree_control"),
                &format!("-{controller}"),
            );
        }
    }
}

/// Kills everything in corral's subtree for `state_dir` and removes it, in every hierarchy
/// (what a corral killed with SIGKILL leaves; for test kits and clean-up scripts).
pub fn discard(host: &Host, state_dir: &Path, root: Option<&Path>) {
    let name = subtree_name(state_dir);
    let mut dirs: Vec<PathBuf> = host
        .v1
        .values()
        .map(|m| strip_supervisor(&m.own).join(&name))
        .collect();
    if let Ok(base) = base_of(host, root) {
        dirs.insert(0, base.join(&name));
    }
    for dir in dirs {
        let children = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path());
        for child in children {
            let cg = RunnerCgroup {
                v2: child,
                v2_controllers: Vec::new(),
                v1: Vec::new(),
            };
            cg.kill();
            cg.remove();
        }
        let _ = std::fs::remove_dir(&dir);
    }
}

/// `corral-<8 hex digits of the state directory's path>`.
pub fn subtree_name(state_dir: &Path) -> String {
    let path = state_dir
        .canonicalize()
        .or_else(|_| std::path::absolute(state_dir))
        .unwrap_or_else(|_| state_dir.to_path_buf());
    let digest = Sha256::digest(path.as_os_str().as_encoded_bytes());
    digest
        .iter()
        .take(4)
        .fold(String::from("corral-"), |mut out, b| {
            use std::fmt::Write as _;
            let _ = write!(out, "{b:02x}");
            out
        })
}

/// The cgroup2 directory corral's subtree goes under.
fn base_of(host: &Host, root: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(root) = root {
        return match rustix::fs::statfs(root) {
            Ok(fs) if fs.f_type == CGROUP2_MAGIC => Ok(root.to_path_buf()),
            Ok(_) => Err(format!(
                "`{}` ({ROOT_ENV}) is not a cgroup2 directory",
                root.display()
            )),
            Err(e) => Err(format!(
                "`{}` ({ROOT_ENV}): {}",
                root.display(),
                why(&e.into())
            )),
        };
    }
    let Some(v2) = &host.v2 else {
        return Err("no cgroup2 hierarchy is mounted".into());
    };
    Ok(strip_supervisor(&v2.own))
}

/// corral's own cgroup, or its parent when corral runs in its `supervisor` child.
fn strip_supervisor(own: &Path) -> PathBuf {
    match (own.file_name(), own.parent()) {
        (Some(leaf), Some(parent)) if leaf == SUPERVISOR => parent.to_path_buf(),
        _ => own.to_path_buf(),
    }
}

fn make_dir(dir: &Path) -> std::io::Result<()> {
    match std::fs::create_dir(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}

fn not_offered(controller: Controller, base: &Path) -> String {
    format!(
        "no `{controller}` controller: not in `{}` and not mounted as cgroup v1",
        base.join("cgroup.controllers").display()
    )
}

#[cfg(test)]
mod tests {
    use super::super::Mount;
    use super::*;

    /// A fake cgroup2 tree: a base offering `controllers`, writable plain files.
    fn fake_base(dir: &Path, controllers: &str) {
        std::fs::create_dir_all(dir).expect("mkdir");
        std::fs::write(dir.join("cgroup.controllers"), controllers).expect("write");
        std::fs::write(dir.join("cgroup.subtree_control"), "").expect("write");
    }

    fn host_at(v2: &Path, v1: &[(Controller, &Path)]) -> Host {
        Host {
            v2: Some(Mount {
                dir: v2.to_path_buf(),
                own: v2.to_path_buf(),
            }),
            v1: v1
                .iter()
                .map(|(c, p)| {
                    (
                        *c,
                        Mount {
                            dir: p.to_path_buf(),
                            own: p.to_path_buf(),
                        },
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn the_subtree_name_is_stable_and_per_state_dir() {
        let a = subtree_name(Path::new("/var/lib/corral"));
        assert_eq!(a, subtree_name(Path::new("/var/lib/corral")));
        assert_ne!(a, subtree_name(Path::new("/var/lib/other")));
        assert!(
            a.starts_with("corral-") && a.len() == "corral-".len() + 8,
            "{a}"
        );
    }

    #[test]
    fn a_pure_host_enables_its_controllers_in_the_subtree() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("v2");
        fake_base(&root, "cpuset cpu io memory pids");
        let state = tmp.path().join("state");
        let name = subtree_name(&state);
        // The kernel makes the interface files of a new cgroup; the fake has them ready.
        fake_base(&root.join(&name), "cpu memory pids");
        let tree = Tree::establish(&host_at(&root, &[]), &state, None);
        let Tree::Ready(sub) = tree else {
            panic!("degraded: {tree:?}")
        };
        assert_eq!(sub.v2, Controller::ALL.to_vec());
        assert!(sub.v1.is_empty() && sub.missing.is_empty(), "{sub:?}");
        assert_eq!(sub.dir, root.join(&name));
        // The fake files hold the last write: each controller was enabled at both levels.
        assert_eq!(
            std::fs::read_to_string(root.join("cgroup.subtree_control")).expect("read"),
            "+pids"
        );
        let runner = sub.runner("web-1");
        assert_eq!(runner.v2, root.join(&name).join("web-1"));
    }

    #[test]
    fn a_hybrid_host_takes_limits_from_v1() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("unified");
        fake_base(&root, "");
        let memory = tmp.path().join("memory/own");
        let pids = tmp.path().join("pids");
        std::fs::create_dir_all(&memory).expect("mkdir");
        std::fs::create_dir_all(&pids).expect("mkdir");
        let state = tmp.path().join("state");
        let host = host_at(
            &root,
            &[(Controller::Memory, &memory), (Controller::Pids, &pids)],
        );
        let Tree::Ready(sub) = Tree::establish(&host, &state, None) else {
            panic!("degraded")
        };
        let name = subtree_name(&state);
        assert!(sub.v2.is_empty());
        assert_eq!(sub.v1[&Controller::Memory], memory.join(&name));
        assert!(memory.join(&name).is_dir(), "made in the v1 hierarchy");
        assert!(
            sub.missing[&Controller::Cpu].contains("no `cpu` controller"),
            "{:?}",
            sub.missing
        );
        let runner = sub.runner("r");
        assert_eq!(
            runner.v1,
            vec![
                (Controller::Memory, memory.join(&name).join("r")),
                (Controller::Pids, pids.join(&name).join("r")),
            ]
        );
        let assessed = assess(&host, &state, None);
        assert_eq!(assessed.tree, Ok(root.join(&name)));
        assert_eq!(
            assessed.missing.keys().copied().collect::<Vec<_>>(),
            [Controller::Cpu]
        );
    }

    #[test]
    fn without_cgroup2_or_with_a_foreign_root_it_is_degraded() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let state = tmp.path().join("state");
        let tree = Tree::establish(&Host::default(), &state, None);
        assert_eq!(
            tree,
            Tree::Degraded("no cgroup2 hierarchy is mounted".into())
        );
        // A plain directory named as the root is refused before anything is made in it.
        let tree = Tree::establish(&Host::default(), &state, Some(tmp.path()));
        let Tree::Degraded(reason) = tree else {
            panic!("a tmp dir is no cgroup2")
        };
        assert!(reason.contains("is not a cgroup2 directory"), "{reason}");
        assert!(std::fs::read_dir(tmp.path()).expect("ls").next().is_none());
        let assessed = assess(&Host::default(), &state, None);
        assert_eq!(assessed.tree, Err("no cgroup2 hierarchy is mounted".into()));
    }

    #[test]
    fn a_supervisor_child_is_not_the_base() {
        assert_eq!(
            strip_supervisor(Path::new("/sys/fs/cgroup/x.service/supervisor")),
            Path::new("/sys/fs/cgroup/x.service")
        );
        assert_eq!(
            strip_supervisor(Path::new("/sys/fs/cgroup/x.service")),
            Path::new("/sys/fs/cgroup/x.service")
        );
    }
}
