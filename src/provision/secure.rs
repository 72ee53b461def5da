//! A runner root for its runner alone: the root, `_work` and `_diag` mode 0700 and the
//! identity files (`.runner`, `.credentials`, …) mode 0600, owned by the runner's user.
//!
//! The listener writes the identity files with its umask (0644 as a rule): at `configure`, and
//! from a JIT configuration at every start. corral tightens them after each registration,
//! before each start and at every pass; the 0700 root keeps other users out in between.
//!
//! A root whose owner is not the runner's user (its `user` or `isolation` changed) is handed
//! over: the root, everything below `_work` and `_diag`, the identity files, and anything else
//! owned by another unprivileged user. Base files (root-owned, hard-linked) are never touched,
//! no link is followed, and a root-owned file with other hard links is left alone, so a job
//! cannot trick corral into giving it a file from elsewhere on the host.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::dir::Dir;
use nix::fcntl::AtFlags;
use nix::sys::stat::{fchmod, fstat, Mode};
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

/// Makes `root` readable by `owner` alone (corral's own user when `None`): hands it over
/// when another user owns it, then sets the modes.
pub fn secure_root(root: &Path, owner: Option<(Uid, Gid)>) -> io::Result<()> {
    let dir = Dir::open(root, dir_flags(), Mode::empty())?;
    if let Some((uid, gid)) = owner {
        if fstat(dir.as_raw_fd())?.st_uid != uid.as_raw() {
            hand_over(root, uid, gid)?;
            tracing::info!(root = %root.display(), uid = uid.as_raw(), "handed the runner dir over to its user");
        }
    }
    fchmod(dir.as_raw_fd(), Mode::from_bits_truncate(0o700))?;
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

/// Gives `uid` what is the runner's under `root` (see the module comment for what that is).
fn hand_over(root: &Path, uid: Uid, gid: Gid) -> io::Result<()> {
    let to = (Some(uid), Some(gid));
    walk(root, &mut |path, node| {
        let rel = path.strip_prefix(root).unwrap_or(path);
        let runners_own = rel.as_os_str().is_empty()
            || rel
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
