//! Runner directories built from one immutable base (DESIGN.md §3): every file of `bin/` and
//! of the top level hard-linked (each runner keeps its own root, which the runner finds through
//! `/proc/self/exe`), `externals` one symlink to the base's, and the runner's own `_work`/`_diag`.
//!
//! Invariants: a runner dir is built in `runners/.tmp-<name>-<random>` and renamed into place,
//! and removed by renaming it back to such a name first, so an observer sees a runner dir whole
//! or not at all; a crash leaves only `.tmp-*` leftovers, removed on the next pass. Nothing here
//! writes into the base, and no removal follows a symlink.
//!
//! Layout when corral is root and the runner has its own user (SECURITY.md): the root is
//! root's, group the runner's, mode `1770`. The runner can create and replace its own files
//! there (the listener writes `.runner`, `_diag`, a job its `HOME` dotfiles), but the sticky
//! bit keeps it from renaming or deleting root's: `bin/`, `config.sh`, `externals` stay what
//! corral built. Only `_work`, `_diag` and the identity files are the runner's.
//!
//! - [`base`]: the pristine check and [`Base::protect`].
//! - [`beneath`]: what corral does as root inside a runner root, by descriptor.
//! - `tree`: mirroring the base, with reflink/copy fallbacks.
//! - `remove`: removal that tolerates any state and never follows a link.
//! - `secure`: a root, `_work`, `_diag` (0700) and identity files (0600) for its runner alone.
//! - [`usage`]: bytes a runner holds alone vs shares with the base.

pub mod base;
pub mod beneath;
pub mod clean;
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
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use nix::fcntl::{renameat2, RenameFlags};
use nix::unistd::{Gid, Uid};

pub use base::{Base, BaseError};
pub use beneath::Beneath;
pub use error::ProvisionError;
pub use ops::{FileOps, RealOps};
pub use secure::{secure_root, tighten_credentials};
pub use tree::LinkStats;
pub use usage::{allocated_outside, DiskUsage};

use crate::layout::{read_record, write_record, DirRecord, StateLayout, TMP_PREFIX};

/// Mode of a runner root the runner's user does not own: root's, the runner's group may add
/// entries and remove its own, never root's (sticky).
pub const SHARED_ROOT_MODE: u32 = 0o1770;

/// What the runner writes to identify and configure itself; moved over by a re-base.
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

    /// Builds `runners/<name>` from the base; success without change if corral's record says
    /// it is already built from it.
    pub fn provision(&self, name: &str) -> Result<Provisioned, ProvisionError> {
        let root = self.root_of(name)?;
        if root.symlink_metadata().is_ok() {
            return self.built_from(name, &root, &self.base);
        }
        let (tmp, stats) = self.build(name, &self.base)?;
        crate::crashpoint::reached("provision.built");
        // Recorded before it is in place: a runner dir never exists without its record.
        self.record_base(name, &self.base, false)?;
        if let Err(e) = fs::rename(&tmp, &root) {
            let _ = remove::remove_tree(&tmp);
            return Err(ProvisionError::io("rename into", &root, e));
        }
        crate::crashpoint::reached("provision.renamed");
        self.report(name, &stats);
        tracing::info!(runner = name, root = %root.display(), linked = stats.linked, "provisioned runner dir");
        Ok(Provisioned::Built(stats))
    }

    /// Deletes `runners/<name>` in whatever state it is, and its private registration
    /// install if a crash left one; an absent one is success.
    pub fn deprovision(&self, name: &str) -> Result<(), ProvisionError> {
        let root = self.root_of(name)?;
        let staged = self.layout.registration_dir(name);
        remove::remove_tree(&staged).map_err(|e| ProvisionError::io("remove", &staged, e))?;
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
    /// with `keep_work`, its `_work`: moved, never copied. An absent runner is provisioned from
    /// `new_base`. Whatever the directory holds, corral's record says which base it is on.
    pub fn rebase(
        &self,
        name: &str,
        new_base: &Base,
        keep_work: bool,
    ) -> Result<Provisioned, ProvisionError> {
        let root = self.root_of(name)?;
        let recorded = read_record::<DirRecord>(&self.layout.dir_record(name));
        if root.symlink_metadata().is_err() {
            let (tmp, stats) = self.build(name, new_base)?;
            self.record_base(name, new_base, false)?;
            fs::rename(&tmp, &root).map_err(|e| ProvisionError::io("rename into", &root, e))?;
            return Ok(Provisioned::Built(stats));
        }
        if recorded.as_ref().is_some_and(|r| r.base == new_base.path()) {
            return Ok(Provisioned::AlreadyThere);
        }
        let (tmp, stats) = self.build(name, new_base)?;
        if let Err(e) = carry_over(&root, &tmp, keep_work) {
            let _ = remove::remove_tree(&tmp);
            return Err(e);
        }
        crate::crashpoint::reached("rebase.built");
        // One atomic swap: the old root ends up at the temporary name, then goes.
        renameat2(None, &tmp, None, &root, RenameFlags::RENAME_EXCHANGE)
            .map_err(|e| ProvisionError::io("swap in", &root, e.into()))?;
        crate::crashpoint::reached("rebase.swapped");
        // Recorded after the swap: a crash in between leaves the old base on record, and the
        // next pass moves the runner again.
        self.record_base(name, new_base, recorded.is_some_and(|r| r.started))?;
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

    /// Builds a private install at `registrations/<name>` for `config.sh` to register in:
    /// root's (corral's) alone, so the token in its environment and the credentials it writes
    /// are out of reach of the runner's user until corral hands the credentials over.
    pub fn stage_registration(&self, name: &str) -> Result<PathBuf, ProvisionError> {
        self.root_of(name)?;
        let dir = self.layout.registrations_dir();
        fs::create_dir_all(&dir).map_err(|e| ProvisionError::io("create directory", &dir, e))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| ProvisionError::io("set the mode of", &dir, e))?;
        let path = self.layout.registration_dir(name);
        remove::remove_tree(&path).map_err(|e| ProvisionError::io("remove", &path, e))?;
        self.build_at(&path, &self.base, None)?;
        Ok(path)
    }

    /// Removes the private install of [`Provisioner::stage_registration`].
    pub fn unstage_registration(&self, name: &str) -> Result<(), ProvisionError> {
        let path = self
            .layout
            .registration_dir(self.root_of(name).map(|_| name)?);
        remove::remove_tree(&path).map_err(|e| ProvisionError::io("remove", &path, e))
    }

    /// Gives runner `name` its identity files (`.runner`, `.credentials`, …), owned by its
    /// user and 0600, replacing whatever is under those names (as names: a link a job put
    /// there is replaced, never written through). Stale migrated copies go first.
    pub fn install_identity(
        &self,
        name: &str,
        files: &[(String, Vec<u8>)],
    ) -> Result<(), ProvisionError> {
        let root = self.root_of(name)?;
        let io_err = |e| ProvisionError::io("write the identity files of", &root, e);
        let dir = Beneath::open(&root).map_err(io_err)?;
        for stale in [".runner_migrated", ".credentials_migrated"] {
            dir.remove(stale).map_err(io_err)?;
        }
        for (file, bytes) in files {
            if !secure::CREDENTIALS.contains(&file.as_str()) {
                return Err(ProvisionError::io(
                    "write",
                    root.join(file),
                    io::Error::other("not an identity file of the runner"),
                ));
            }
            dir.install(file, bytes, 0o600, self.owner)
                .map_err(io_err)?;
        }
        Ok(())
    }

    /// Notes in corral's record that a listener is being started in `runners/<name>`.
    pub fn record_started(&self, name: &str) -> Result<(), ProvisionError> {
        let path = self.layout.dir_record(name);
        let mut record = read_record::<DirRecord>(&path).unwrap_or_else(|| DirRecord {
            base: self.base.path().to_path_buf(),
            started: false,
        });
        record.started = true;
        write_record(&path, &record).map_err(|e| ProvisionError::io("write", path, e))
    }

    /// What the record says of an existing `root`: built from `base`, or not corral's to use.
    fn built_from(
        &self,
        name: &str,
        root: &Path,
        base: &Base,
    ) -> Result<Provisioned, ProvisionError> {
        match read_record::<DirRecord>(&self.layout.dir_record(name)) {
            Some(r) if r.base == base.path() => Ok(Provisioned::AlreadyThere),
            Some(r) => Err(ProvisionError::OtherBase {
                path: root.to_path_buf(),
                found: r.base,
            }),
            None => Err(ProvisionError::NotARunner {
                path: root.to_path_buf(),
            }),
        }
    }

    fn record_base(&self, name: &str, base: &Base, started: bool) -> Result<(), ProvisionError> {
        let path = self.layout.dir_record(name);
        let record = DirRecord {
            base: base.path().to_path_buf(),
            started,
        };
        write_record(&path, &record).map_err(|e| ProvisionError::io("write", path, e))
    }

    /// A complete runner dir from `base` at a temporary name; nothing is left on failure.
    fn build(&self, name: &str, base: &Base) -> Result<(PathBuf, LinkStats), ProvisionError> {
        let dir = self.layout.runners_dir();
        fs::create_dir_all(&dir).map_err(|e| ProvisionError::io("create directory", &dir, e))?;
        let tmp = self.tmp_path(name);
        let stats = self.build_at(&tmp, base, self.owner)?;
        Ok((tmp, stats))
    }

    /// A complete runner dir from `base` at `path`, for `owner`; nothing is left on failure.
    fn build_at(
        &self,
        path: &Path,
        base: &Base,
        owner: Option<(Uid, Gid)>,
    ) -> Result<LinkStats, ProvisionError> {
        // Private while it is built; a clash of random names is an error, not a merge.
        self.ops
            .create_dir(path, 0o700)
            .map_err(|e| ProvisionError::io("create directory", path, e))?;
        let mut stats = LinkStats::default();
        match self.fill(path, base, owner, &mut stats) {
            Ok(()) => Ok(stats),
            Err(e) => {
                let _ = remove::remove_tree(path);
                Err(e)
            }
        }
    }

    fn fill(
        &self,
        tmp: &Path,
        base: &Base,
        owner: Option<(Uid, Gid)>,
        stats: &mut LinkStats,
    ) -> Result<(), ProvisionError> {
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
        let io_err = |e| ProvisionError::io("hand over", tmp, e);
        let root = Beneath::open(tmp).map_err(io_err)?;
        match owner {
            // Root's, and the runner's only where it writes (module comment).
            Some((uid, gid)) => {
                for own in ["_work", "_diag"] {
                    root.open_dir(own)
                        .and_then(|d| d.set_owner_and_mode((Some(uid), Some(gid)), 0o700))
                        .map_err(io_err)?;
                }
                root.set_owner_and_mode((None, Some(gid)), SHARED_ROOT_MODE)
                    .map_err(io_err)?;
            }
            None => root
                .set_owner_and_mode((None, None), 0o700)
                .map_err(io_err)?,
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

/// The runner's own files (identity, settings and, with `keep_work`, `_work`) moved from the
/// old root into the new one by name: never opened, followed or copied, so whatever a job
/// made of them (a link, a hard link to a set-id file) arrives as it was, still the job's.
fn carry_over(old: &Path, new: &Path, keep_work: bool) -> Result<(), ProvisionError> {
    let from = Beneath::open(old).map_err(|e| ProvisionError::io("open", old, e))?;
    let to = Beneath::open(new).map_err(|e| ProvisionError::io("open", new, e))?;
    let moved = |e| ProvisionError::io("move the runner's files out of", old, e);
    for name in KEPT_ON_REBASE {
        from.move_to(name, &to).map_err(moved)?;
    }
    if keep_work && from.open_dir("_work").is_ok() {
        to.remove_empty_dir("_work").map_err(moved)?;
        from.move_to("_work", &to).map_err(moved)?;
    }
    Ok(())
}
