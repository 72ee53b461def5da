//! A runner root for its runner alone: `_work` and `_diag` mode 0700 and the identity files
//! (`.runner`, `.credentials`, …) mode 0600, owned by the runner's user; the root itself 0700
//! (corral's user) or, when the runner has a user of its own, root's with the runner's group,
//! mode 1770 (`SHARED_ROOT_MODE`: see the module comment of `provision`).
//!
//! corral writes the identity files 0600 itself; one the listener rewrites (a migration) gets
//! its umask, so corral tightens them before each start and at every pass.
//!
//! A root whose runner's user changed (its `user` or `isolation` changed, or it was laid out
//! before the root became root's) is handed over: everything below `_work` and `_diag`, the
//! identity files, and anything else owned by another unprivileged user. Base files
//! (root-owned, hard-linked) are never touched, no link is followed, and a root-owned file with
//! other hard links is left alone, so a job cannot trick corral into giving it a file from
//! elsewhere on the host.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::dir::Dir;
use nix::fcntl::AtFlags;
use nix::sys::stat::{fchmod, fstat, fstatat, Mode};
use nix::unistd::{fchown, fchownat, Gid, Uid};

use super::walk::{dir_flags, open_no_follow, walk, Node};

/// What the runner writes to identify itself (runner-contract §2.4, §7).
pub(crate) const CREDENTIALS: [&str; 5] = [
    ".runner",
    ".credentials",
    ".credentials_rsaparams",
    ".runner_migrated",
    ".credentials_migrated",
];
/// The runner's own directories, private like its root.
const PRIVATE_DIRS: [&str; 2] = ["_work", "_diag"];

/// Makes the identity files of `root` mode 0600; regular files only, never through a link.
/// Returns how many it changed.
pub fn tighten_credentials(root: &Path) -> io::Result<usize> {
    let mut changed = 0;
    for name in CREDENTIALS {
        let Some(file) = open_own_file(&root.join(name))? else {
            continue;
        };
        let meta = file.metadata()?;
        if meta.mode() & 0o7777 != 0o600 {
            fchmod(file.as_raw_fd(), Mode::from_bits_truncate(0o600))?;
            changed += 1;
        }
    }
    Ok(changed)
}

/// Makes `root` readable by `owner` alone (corral's own user when `None`): hands its files
/// over when they are another user's, then sets owners and modes.
pub fn secure_root(root: &Path, owner: Option<(Uid, Gid)>) -> io::Result<()> {
    let dir = Dir::open(root, dir_flags(), Mode::empty())?;
    match owner {
        Some((uid, gid)) if nix::unistd::geteuid().is_root() => {
            let st = fstat(dir.as_raw_fd())?;
            if st.st_uid != 0 || st.st_gid != gid.as_raw() || !private_dirs_owned_by(&dir, uid)? {
                hand_over(root, uid, gid)?;
                tracing::info!(root = %root.display(), uid = uid.as_raw(), "handed the runner dir over to its user");
            }
            if (st.st_uid, st.st_gid, st.st_mode & 0o7777)
                != (0, gid.as_raw(), super::SHARED_ROOT_MODE)
            {
                fchown(dir.as_raw_fd(), Some(Uid::from_raw(0)), Some(gid))?;
                fchmod(
                    dir.as_raw_fd(),
                    Mode::from_bits_truncate(super::SHARED_ROOT_MODE),
                )?;
            }
        }
        _ => fchmod(dir.as_raw_fd(), Mode::from_bits_truncate(0o700))?,
    }
    for name in PRIVATE_DIRS {
        match Dir::openat(Some(dir.as_raw_fd()), name, dir_flags(), Mode::empty()) {
            Ok(sub) => fchmod(sub.as_raw_fd(), Mode::from_bits_truncate(0o700))?,
            // Absent, or replaced by a link or a file: nothing to protect there.
            Err(
                nix::errno::Errno::ENOENT | nix::errno::Errno::ELOOP | nix::errno::Errno::ENOTDIR,
            ) => {}
            Err(e) => return Err(e.into()),
        }
    }
    tighten_credentials(root)?;
    Ok(())
}

/// True when every private directory there is (`_work`, `_diag`) is `uid`'s.
fn private_dirs_owned_by(dir: &Dir, uid: Uid) -> io::Result<bool> {
    for name in PRIVATE_DIRS {
        match fstatat(Some(dir.as_raw_fd()), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) if st.st_uid != uid.as_raw() => return Ok(false),
            Ok(_) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(true)
}

/// Gives `uid` what is the runner's under `root` (see the module comment for what that is);
/// the root itself stays root's.
fn hand_over(root: &Path, uid: Uid, gid: Gid) -> io::Result<()> {
    let to = (Some(uid), Some(gid));
    walk(root, &mut |path, node| {
        let rel = path.strip_prefix(root).unwrap_or(path);
        if rel.as_os_str().is_empty() {
            return Ok(());
        }
        let runners_own = rel
            .components()
            .next()
            .is_some_and(|c| PRIVATE_DIRS.iter().any(|d| c.as_os_str() == OsStr::new(d)))
            || CREDENTIALS.iter().any(|c| rel == Path::new(c));
        let give = |owner: u32, links: u64| {
            owner != uid.as_raw() && (owner != 0 || (runners_own && links <= 1))
        };
        match node {
            Node::Dir(fd) => {
                let st = fstat(fd)?;
                // Directories cannot be hard-linked: the link count says nothing here.
                if give(st.st_uid, 1) {
                    fchown(fd, to.0, to.1)?;
                }
            }
            Node::File(file) => {
                let meta = file.metadata()?;
                if give(meta.uid(), meta.nlink()) {
                    fchown(file.as_raw_fd(), to.0, to.1)?;
                }
            }
            Node::Symlink { parent, name, stat } => {
                if give(stat.st_uid, 1) {
                    fchownat(Some(parent), name, to.0, to.1, AtFlags::AT_SYMLINK_NOFOLLOW)?;
                }
            }
        }
        Ok(())
    })
}

/// `path` opened without following a final link; `None` when absent, a link, or not a
/// regular file with a single link.
fn open_own_file(path: &Path) -> io::Result<Option<File>> {
    Ok(open_no_follow(path)?
        .filter(|(_, meta)| meta.is_file() && meta.nlink() == 1)
        .map(|(file, _)| file))
}
