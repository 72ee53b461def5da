//! Runner directories built from one immutable base (DESIGN.md §3): every file of `bin/` and
//! of the top level hard-linked (each runner keeps its own root, which the runner finds through
//! `/proc/self/exe`), `externals` one symlink to the base's, and the runner's own `_work`/`_diag`.
//!
//! Invariants: a runner dir is built in `runners/.tmp-<name>-<random>` and renamed into place,
//! and removed by renaming it back to such a name first, so an observer sees a runner dir whole
//! or not at all; a crash leaves only `.tmp-*` leftovers, removed on the next pass. Nothing here
//! writes into the base, and no removal follows a symlink.
//!
//! - [`base`]: the pristine check and [`Base::protect`].
//! - `tree`: mirroring the base, with reflink/copy fallbacks.
//! - `remove`: removal that tolerates any state and never follows a link.
//! - `secure`: a root, `_work`, `_diag` (0700) and identity files (0600) for its runner alone.
//! - [`usage`]: bytes a runner holds alone vs shares with the base.

pub mod base;
mod error;
mod ops;
mod remove;
mod secure;
mod tree;
pub mod usage;
mod walk;

use std::fs;
use std::hash::{BuildHasher, RandomState};
use std::io;
use std::os::unix::fs::{lchown, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use nix::fcntl::{renameat2, RenameFlags};
use nix::unistd::{Gid, Uid};

pub use base::{Base, BaseError};
pub use error::ProvisionError;
pub use ops::{FileOps, RealOps};
pub use secure::{secure_root, tighten_credentials};
pub use tree::LinkStats;
pub use usage::{allocated_outside, DiskUsage};

use crate::layout::{StateLayout, TMP_PREFIX};

/// What the runner writes to identify and configure itself; carried over by a re-base.
const KEPT_ON_REBASE: [&str; 7] = [
    ".runner",
    ".credentials",
    ".credentials_rsaparams",
    ".runner_migrated",
    ".credentials_migrated",
    ".env",
    ".path",
];

/// What [`Provisioner::provision`] or [`Provisioner::rebase`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provisioned {
    /// A new runner dir was built; how its files were made.
    Built(LinkStats),
    /// The runner dir already existed on this base; nothing was done.
    AlreadyThere,
}

/// Builds, re-bases, measures and removes runner dirs under one `state_dir`.
pub struct Provisioner {
    layout: StateLayout,
    base: Arc<Base>,
    owner: Option<(Uid, Gid)>,
    ops: Arc<dyn FileOps>,
}

/// Where a runner dir stands with respect to a base.
enum State {
    Absent,
    Built,
    Other(ProvisionError),
}

impl Provisioner {
    /// A provisioner for `layout` from `base`; `owner` (corral as root) gets each runner's
    /// root, `_work` and `_diag`.
    /// The base may be shared (`Arc<Base>`) by provisioners for different owners.
    pub fn new(layout: StateLayout, base: impl Into<Arc<Base>>, owner: Option<(Uid, Gid)>) -> Self {
        Self::with_ops(layout, base, owner, Arc::new(RealOps))
    }

    /// The same, with the file operations given (tests inject faults through them).
    pub fn with_ops(
        layout: StateLayout,
        base: impl Into<Arc<Base>>,
        owner: Option<(Uid, Gid)>,
        ops: Arc<dyn FileOps>,
    ) -> Self {
        Provisioner {
            layout,
            base: base.into(),
            owner,
            ops,
        }
    }

    /// The base runner dirs are built from.
    pub fn base(&self) -> &Base {
        &self.base
    }

    /// Builds `runners/<name>` from the base; success without change if it is already built
    /// from it.
    pub fn provision(&self, name: &str) -> Result<Provisioned, ProvisionError> {
        let root = self.root_of(name)?;
        match state(&root, &self.base) {
            State::Built => return Ok(Provisioned::AlreadyThere),
            State::Other(err) => return Err(err),
            State::Absent => {}
        }
        let (tmp, stats) = self.build(name, &self.base)?;
        crate::crashpoint::reached("provision.built");
        if let Err(e) = fs::rename(&tmp, &root) {
            let _ = remove::remove_tree(&tmp);
            // Lost a race with another pass that built it: fine if it is ours.
            return match state(&root, &self.base) {
                State::Built => Ok(Provisioned::AlreadyThere),
                _ => Err(ProvisionError::io("rename into", &root, e)),
            };
        }
        crate::crashpoint::reached("provision.renamed");
        self.report(name, &stats);
        tracing::info!(runner = name, root = %root.display(), linked = stats.linked, "provisioned runner dir");
        Ok(Provisioned::Built(stats))
    }

    /// Deletes `runners/<name>` in whatever state it is; an absent one is success.
    pub fn deprovision(&self, name: &str) -> Result<(), ProvisionError> {
        let root = self.root_of(name)?;
        // Renamed out of the way first, so a crash half-way leaves a leftover, not a runner.
        let doomed = self.tmp_path(name);
        match fs::rename(&root, &doomed) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(ProvisionError::io("rename for removal", &root, e)),
        }
        crate::crashpoint::reached("deprovision.renamed");
        remove::remove_tree(&doomed).map_err(|e| ProvisionError::io("remove", &doomed, e))?;
        crate::crashpoint::reached("deprovision.done");
        tracing::info!(runner = name, root = %root.display(), "deprovisioned runner dir");
        Ok(())
    }

    /// Removes one `runners/.tmp-*` leftover; refuses any other path.
    pub fn remove_leftover(&self, path: &Path) -> Result<(), ProvisionError> {
        let in_runners = path.parent() == Some(self.layout.runners_dir().as_path());
        let tmp_name = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(TMP_PREFIX));
        if !in_runners || !tmp_name {
            return Err(ProvisionError::NotLeftover {
                path: path.to_path_buf(),
            });
        }
        remove::remove_tree(path).map_err(|e| ProvisionError::io("remove", path, e))?;
        tracing::info!(path = %path.display(), "removed leftover runner build");
        Ok(())
    }

    /// Removes every `runners/.tmp-*` leftover; returns how many there were.
    pub fn remove_leftovers(&self) -> Result<usize, ProvisionError> {
        let dir = self.layout.runners_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(ProvisionError::io("read directory", &dir, e)),
        };
        let mut removed = 0;
        for entry in entries {
            let entry = entry.map_err(|e| ProvisionError::io("read directory", &dir, e))?;
            if entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                self.remove_leftover(&entry.path())?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Moves `runners/<name>` onto `new_base`, keeping its identity and settings files and,
    /// with `keep_work`, its `_work`. An absent runner is provisioned from `new_base`.
    pub fn rebase(
        &self,
        name: &str,
        new_base: &Base,
        keep_work: bool,
    ) -> Result<Provisioned, ProvisionError> {
        let root = self.root_of(name)?;
        match state(&root, new_base) {
            State::Built => return Ok(Provisioned::AlreadyThere),
            State::Absent => {
                let (tmp, stats) = self.build(name, new_base)?;
                fs::rename(&tmp, &root).map_err(|e| ProvisionError::io("rename into", &root, e))?;
                return Ok(Provisioned::Built(stats));
            }
            State::Other(_) => {}
        }
        let (tmp, mut stats) = self.build(name, new_base)?;
        if let Err(e) = self.carry_over(&root, &tmp, keep_work, &mut stats) {
            let _ = remove::remove_tree(&tmp);
            return Err(e);
        }
        crate::crashpoint::reached("rebase.built");
        // One atomic swap: the old root ends up at the temporary name, then goes.
        renameat2(None, &tmp, None, &root, RenameFlags::RENAME_EXCHANGE)
            .map_err(|e| ProvisionError::io("swap in", &root, e.into()))?;
        crate::crashpoint::reached("rebase.swapped");
        if let Err(e) = remove::remove_tree(&tmp) {
            tracing::warn!(path = %tmp.display(), cause = %e, "old runner dir left for the next pass");
        }
        self.report(name, &stats);
        tracing::info!(runner = name, base = %new_base.path().display(), keep_work, "re-based runner dir");
        Ok(Provisioned::Built(stats))
    }

    /// Makes `runners/<name>` its runner's alone (see `secure`): handed over to the
    /// provisioner's owner if another user has it, 0700 directories, 0600 identity files.
    pub fn secure(&self, name: &str) -> Result<(), ProvisionError> {
        let root = self.root_of(name)?;
        secure::secure_root(&root, self.owner)
            .map_err(|e| ProvisionError::io("make private", &root, e))
    }

    /// Bytes `runners/<name>` holds alone and bytes it shares with the base.
    pub fn disk_usage(&self, name: &str) -> Result<DiskUsage, ProvisionError> {
        let root = self.root_of(name)?;
        let base = self.base.path();
        let index = self
            .base
            .index()
            .map_err(|e| ProvisionError::io("measure", base, e))?;
        let shares =
            fs::read_link(root.join("externals")).is_ok_and(|t| t == self.base.externals());
        index
            .usage_of(&root, shares)
            .map_err(|e| ProvisionError::io("measure", &root, e))
    }

    fn root_of(&self, name: &str) -> Result<PathBuf, ProvisionError> {
        let plain = Path::new(name).file_name().is_some_and(|n| n == name);
        if !plain || name.starts_with(TMP_PREFIX) {
            return Err(ProvisionError::BadName {
                name: name.to_owned(),
            });
        }
        Ok(self.layout.runner_dir(name))
    }

    fn tmp_path(&self, name: &str) -> PathBuf {
        let random = RandomState::new().hash_one(std::time::SystemTime::now());
        self.layout
            .runners_dir()
            .join(format!("{TMP_PREFIX}{name}-{random:016x}"))
    }

    /// A complete runner dir from `base` at a temporary name; nothing is left on failure.
    fn build(&self, name: &str, base: &Base) -> Result<(PathBuf, LinkStats), ProvisionError> {
        let dir = self.layout.runners_dir();
        fs::create_dir_all(&dir).map_err(|e| ProvisionError::io("create directory", &dir, e))?;
        let tmp = self.tmp_path(name);
        // Private while it is built; a clash of random names is an error, not a merge.
        self.ops
            .create_dir(&tmp, 0o700)
            .map_err(|e| ProvisionError::io("create directory", &tmp, e))?;
        let mut stats = LinkStats::default();
        match self.fill(&tmp, base, &mut stats) {
            Ok(()) => Ok((tmp, stats)),
            Err(e) => {
                let _ = remove::remove_tree(&tmp);
                Err(e)
            }
        }
    }

    fn fill(&self, tmp: &Path, base: &Base, stats: &mut LinkStats) -> Result<(), ProvisionError> {
        let ops = self.ops.as_ref();
        tree::mirror(ops, base.path(), tmp, &["externals"], stats)?;
        let link = tmp.join("externals");
        ops.symlink(&base.externals(), &link)
            .map_err(|e| ProvisionError::io("create symlink", &link, e))?;
        // The runner's alone: no other user reads its workspace, logs or credentials.
        for own in ["_work", "_diag"] {
            let dir = tmp.join(own);
            ops.create_dir(&dir, 0o700)
                .map_err(|e| ProvisionError::io("create directory", &dir, e))?;
        }
        fs::set_permissions(tmp, fs::Permissions::from_mode(0o700))
            .map_err(|e| ProvisionError::io("set the mode of", tmp, e))?;
        if let Some((uid, gid)) = self.owner {
            for path in [tmp.to_path_buf(), tmp.join("_work"), tmp.join("_diag")] {
                lchown(&path, Some(uid.as_raw()), Some(gid.as_raw()))
                    .map_err(|e| ProvisionError::io("change the owner of", &path, e))?;
            }
        }
        Ok(())
    }

    /// Identity and settings files (linked: the listener replaces them, never edits in
    /// place), and optionally `_work` (moved), from `old` into the new root `new`.
    fn carry_over(
        &self,
        old: &Path,
        new: &Path,
        keep_work: bool,
        stats: &mut LinkStats,
    ) -> Result<(), ProvisionError> {
        for name in KEPT_ON_REBASE {
            let from = old.join(name);
            if let Ok(meta) = from.symlink_metadata() {
                if meta.is_file() {
                    tree::place_file(
                        self.ops.as_ref(),
                        &from,
                        &new.join(name),
                        meta.mode(),
                        stats,
                    )?;
                }
            }
        }
        let work = old.join("_work");
        if keep_work && work.symlink_metadata().is_ok_and(|m| m.is_dir()) {
            let to = new.join("_work");
            fs::remove_dir(&to).map_err(|e| ProvisionError::io("remove", &to, e))?;
            fs::rename(&work, &to).map_err(|e| ProvisionError::io("move", &work, e))?;
        }
        Ok(())
    }

    /// Says once per provisioner, as a warning, that hard links were refused and why.
    fn report(&self, name: &str, stats: &LinkStats) {
        let Some(why) = &stats.fallback else {
            return;
        };
        if self.base.fallback_reported.swap(true, Ordering::Relaxed) {
            tracing::debug!(runner = name, reason = %why, "runner files reflinked or copied");
        } else {
            tracing::warn!(
                runner = name,
                reason = %why,
                reflinked = stats.reflinked,
                copied = stats.copied,
                "hard links into the base were refused; runner files are reflinked or copied, which costs disk"
            );
        }
    }
}

/// Whether `root` is absent, built from `base`, or something else.
fn state(root: &Path, base: &Base) -> State {
    if root.symlink_metadata().is_err() {
        return State::Absent;
    }
    match fs::read_link(root.join("externals")) {
        Ok(target) if target == base.externals() => State::Built,
        Ok(found) => State::Other(ProvisionError::OtherBase {
            path: root.to_path_buf(),
            found,
        }),
        Err(_) => State::Other(ProvisionError::NotARunner {
            path: root.to_path_buf(),
        }),
    }
}
