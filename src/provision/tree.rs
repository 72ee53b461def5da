//! Mirrors a base into a new runner root: directories created, files hard-linked (reflink,
//! then copy, when the kernel refuses the link), symlinks recreated as symlinks, never followed.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use serde::Serialize;

use super::error::ProvisionError;
use super::ops::FileOps;

/// How the files of one runner tree were made.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct LinkStats {
    /// Files hard-linked to the base (no extra data).
    pub linked: usize,
    /// Files cloned with `FICLONE` (extents shared, inode private).
    pub reflinked: usize,
    /// Files copied byte for byte.
    pub copied: usize,
    /// Symlinks recreated.
    pub symlinks: usize,
    /// Why hard links were not used, for the first file they were refused for.
    pub fallback: Option<String>,
}

/// Mirrors `src` into the existing directory `dst`, skipping the top-level names in `skip`.
pub(crate) fn mirror(
    ops: &dyn FileOps,
    src: &Path,
    dst: &Path,
    skip: &[&str],
    stats: &mut LinkStats,
) -> Result<(), ProvisionError> {
    let entries = fs::read_dir(src).map_err(|e| ProvisionError::io("read directory", src, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| ProvisionError::io("read directory", src, e))?;
        let name = entry.file_name();
        if skip.iter().any(|s| name == *s) {
            continue;
        }
        let (from, to) = (entry.path(), dst.join(&name));
        let meta = from
            .symlink_metadata()
            .map_err(|e| ProvisionError::io("inspect", &from, e))?;
        let kind = meta.file_type();
        if kind.is_dir() {
            // Owner-writable while it is filled; the base's mode once it is complete.
            ops.create_dir(&to, 0o700)
                .map_err(|e| ProvisionError::io("create directory", &to, e))?;
            mirror(ops, &from, &to, &[], stats)?;
            fs::set_permissions(&to, fs::Permissions::from_mode(meta.mode() & 0o7777))
                .map_err(|e| ProvisionError::io("set the mode of", &to, e))?;
        } else if kind.is_symlink() {
            let target =
                fs::read_link(&from).map_err(|e| ProvisionError::io("read link", &from, e))?;
            ops.symlink(&target, &to)
                .map_err(|e| ProvisionError::io("create symlink", &to, e))?;
            stats.symlinks += 1;
        } else if kind.is_file() {
            place_file(ops, &from, &to, meta.mode(), stats)?;
            crate::crashpoint::reached("provision.file");
        }
        // Sockets, FIFOs and devices have no place in a runner install: not mirrored.
    }
    Ok(())
}

/// Hard link; on `EXDEV`/`EPERM`/`EMLINK` a reflink, and when that fails too, a copy. A
/// reflink or copy never has set-id or sticky bits: corral makes it, as root.
pub(crate) fn place_file(
    ops: &dyn FileOps,
    from: &Path,
    to: &Path,
    mode: u32,
    stats: &mut LinkStats,
) -> Result<(), ProvisionError> {
    let mode = mode & 0o777;
    let refused = match ops.hard_link(from, to) {
        Ok(()) => {
            stats.linked += 1;
            return Ok(());
        }
        Err(e) if link_refused(&e) => e,
        Err(e) => return Err(ProvisionError::io("link", to, e)),
    };
    let reflink = match ops.reflink(from, to, mode) {
        Ok(()) => {
            stats.reflinked += 1;
            note(stats, &refused, None);
            return Ok(());
        }
        Err(e) => e,
    };
    ops.copy(from, to, mode)
        .map_err(|e| ProvisionError::io("copy", to, e))?;
    stats.copied += 1;
    note(stats, &refused, Some(&reflink));
    Ok(())
}

/// The kernel refuses the link but a private copy would do: another file system,
/// `fs.protected_hardlinks` for a file corral does not own, or the link count limit.
fn link_refused(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(nix::libc::EXDEV | nix::libc::EPERM | nix::libc::EMLINK)
    )
}

fn note(stats: &mut LinkStats, refused: &io::Error, reflink: Option<&io::Error>) {
    if stats.fallback.is_none() {
        stats.fallback = Some(match reflink {
            None => format!("hard link refused ({refused}); reflinked instead"),
            Some(r) => {
                format!("hard link refused ({refused}), reflink refused ({r}); copied instead")
            }
        });
    }
}
