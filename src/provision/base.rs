//! The base: a pristine, extracted runner install every runner root is built from.
//!
//! Invariant: nothing under the base is ever written by a runner. Files the runner rewrites
//! in place (`run-helper.sh`, `.env`, `.path`) would write through every hard link, so a base
//! that has them, or any other trace of having been configured or run, is refused.

use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use nix::fcntl::AtFlags;
use nix::sys::stat::{fchmod, fstat, Mode};
use nix::unistd::{fchown, fchownat, Gid, Uid};

use super::usage::BaseIndex;
use super::walk::{walk, Node};

/// Top-level names that show a base was configured, run or self-updated (runner-contract §2.4).
const FORBIDDEN: [&str; 9] = [
    ".env",
    ".path",
    ".service",
    "run-helper.sh",
    "runsvc.sh",
    "svc.sh",
    "_diag",
    "_work",
    "update.finished",
];
/// Prefixes of the same: identity files, and `bin.<ver>`/`externals.<ver>` self-update leftovers.
const FORBIDDEN_PREFIXES: [&str; 4] = [".runner", ".credentials", "bin.", "externals."];

/// Why a base cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BaseError {
    /// The base could not be read.
    #[error("failed to read the runner base `{path}`")]
    Read {
        /// What could not be read.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The base was configured, run or updated, or is not a runner install.
    #[error("runner base `{path}` is not pristine: {}", .offending.join(", "))]
    NotPristine {
        /// The base.
        path: PathBuf,
        /// Every offending path, relative to the base, with why.
        offending: Vec<String>,
    },
    /// Making the base read-only failed.
    #[error("failed to make the runner base read-only at `{path}`")]
    Protect {
        /// Where it failed.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// A checked, pristine runner base.
#[derive(Debug)]
pub struct Base {
    path: PathBuf,
    index: OnceLock<BaseIndex>,
    /// A link fallback was logged for runners of this base (it is logged once).
    pub(crate) fallback_reported: std::sync::atomic::AtomicBool,
}

impl Base {
    /// Opens the base at `path`, refusing it with every offending path if it is not pristine.
    pub fn open(path: &Path) -> Result<Base, BaseError> {
        let read = |source| BaseError::Read {
            path: path.to_path_buf(),
            source,
        };
        let path = fs::canonicalize(path).map_err(read)?;
        let mut offending = Vec::new();
        for entry in fs::read_dir(&path).map_err(read)? {
            let name = entry.map_err(read)?.file_name();
            let name = name.to_string_lossy();
            if FORBIDDEN.contains(&name.as_ref())
                || FORBIDDEN_PREFIXES.iter().any(|p| name.starts_with(p))
            {
                offending.push(format!(
                    "`{name}` (written by a configured or running runner)"
                ));
            }
        }
        offending.sort();
        if !is_file(&path.join("bin/Runner.Listener")) {
            offending.push("`bin/Runner.Listener` (missing)".to_owned());
        }
        if !is_real_dir(&path.join("bin")) {
            offending.push("`bin` (not a directory)".to_owned());
        }
        if !is_real_dir(&path.join("externals")) {
            offending.push("`externals` (missing or not a directory)".to_owned());
        }
        if !offending.is_empty() {
            return Err(BaseError::NotPristine { path, offending });
        }
        Ok(Base {
            path,
            index: OnceLock::new(),
            fallback_reported: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The base's canonical path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `<base>/externals`: what every runner's `externals` link points to.
    pub fn externals(&self) -> PathBuf {
        self.path.join("externals")
    }

    /// Inodes and sizes of the base, computed once (a base never changes).
    pub(crate) fn index(&self) -> io::Result<&BaseIndex> {
        if let Some(index) = self.index.get() {
            return Ok(index);
        }
        let index = BaseIndex::build(&self.path)?;
        Ok(self.index.get_or_init(|| index))
    }

    /// Makes every file and directory of the base root-owned and not writable, so no runner
    /// can change what the others run. Only as root; returns whether anything changed.
    pub fn protect(&self) -> Result<bool, BaseError> {
        if !nix::unistd::geteuid().is_root() {
            return Ok(false);
        }
        let mut changed = 0_usize;
        walk(&self.path, &mut |path, node| {
            let fixed = protect_node(&node)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
            changed += usize::from(fixed);
            Ok(())
        })
        .map_err(|source| BaseError::Protect {
            path: self.path.clone(),
            source,
        })?;
        if changed > 0 {
            tracing::info!(
                base = %self.path.display(),
                changed,
                "made the runner base root-owned and read-only, so no runner can change what the others run"
            );
        }
        Ok(changed > 0)
    }
}

/// Root-owned, `a-w`, no set-id bits, through the open descriptor (never a path that could
/// be swapped). A runner install needs no set-id file, and one in the base would be in every
/// runner's `bin/`, runnable by every job.
fn protect_node(node: &Node<'_>) -> io::Result<bool> {
    let root = (Some(Uid::from_raw(0)), Some(Gid::from_raw(0)));
    match node {
        Node::Dir(fd) => {
            let st = fstat(*fd)?;
            let mode = st.st_mode & 0o7777;
            if st.st_uid == 0 && st.st_gid == 0 && mode & 0o222 == 0 {
                return Ok(false);
            }
            fchown(*fd, root.0, root.1)?;
            fchmod(*fd, Mode::from_bits_truncate(mode & !0o222))?;
        }
        Node::File(file) => {
            let meta = file.metadata()?;
            let mode = meta.mode() & 0o7777;
            if meta.uid() == 0 && meta.gid() == 0 && mode & 0o6222 == 0 {
                return Ok(false);
            }
            fchown(file.as_raw_fd(), root.0, root.1)?;
            file.set_permissions(fs::Permissions::from_mode(mode & !0o6222))?;
        }
        Node::Symlink { parent, name, stat } => {
            if stat.st_uid == 0 && stat.st_gid == 0 {
                return Ok(false);
            }
            fchownat(
                Some(*parent),
                *name,
                root.0,
                root.1,
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )?;
        }
    }
    Ok(true)
}

fn is_file(path: &Path) -> bool {
    path.symlink_metadata().is_ok_and(|m| m.is_file())
}

fn is_real_dir(path: &Path) -> bool {
    path.symlink_metadata().is_ok_and(|m| m.is_dir())
}
