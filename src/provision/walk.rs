//! A tree walk by directory descriptors (`openat` with `O_NOFOLLOW`), for the steps corral
//! runs as root on trees it does not fully trust: a directory swapped for a symlink half-way
//! is skipped, never followed.

use std::ffi::{CStr, CString, OsStr};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{fstatat, FileStat, Mode, SFlag};

/// One thing found by [`walk`].
pub(crate) enum Node<'a> {
    /// A directory, open (visited before what it holds).
    Dir(RawFd),
    /// A regular file, open read-only.
    File(&'a File),
    /// A symlink: its directory, its name and its `lstat`.
    Symlink {
        /// The directory holding it.
        parent: RawFd,
        /// Its name in that directory.
        name: &'a CStr,
        /// Its own status, not its target's.
        stat: FileStat,
    },
}

/// Calls `visit` for `root` and everything below it; symlinks are reported, never followed.
pub(crate) fn walk(
    root: &Path,
    visit: &mut dyn FnMut(&Path, Node<'_>) -> io::Result<()>,
) -> io::Result<()> {
    let dir = Dir::open(root, dir_flags(), Mode::empty())?;
    visit(root, Node::Dir(dir.as_raw_fd()))?;
    walk_dir(dir, root, visit)
}

pub(crate) fn dir_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

fn walk_dir(
    mut dir: Dir,
    path: &Path,
    visit: &mut dyn FnMut(&Path, Node<'_>) -> io::Result<()>,
) -> io::Result<()> {
    let fd = dir.as_raw_fd();
    let names: Vec<CString> = dir
        .iter()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_owned())
        .filter(|n| n.as_bytes() != b"." && n.as_bytes() != b"..")
        .collect();
    for name in names {
        let child = path.join(OsStr::from_bytes(name.as_bytes()));
        let stat = match fstatat(Some(fd), name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) => continue,
            Err(e) => return Err(e.into()),
        };
        match SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT {
            SFlag::S_IFDIR => {
                let sub = match Dir::openat(Some(fd), name.as_c_str(), dir_flags(), Mode::empty()) {
                    Ok(sub) => sub,
                    // Replaced by a symlink or a file, or gone, since the lstat: not followed.
                    Err(Errno::ELOOP | Errno::ENOTDIR | Errno::ENOENT) => continue,
                    Err(e) => return Err(e.into()),
                };
                visit(&child, Node::Dir(sub.as_raw_fd()))?;
                walk_dir(sub, &child, visit)?;
            }
            SFlag::S_IFREG => {
                let Some(file) = open_file(fd, &name)? else {
                    continue;
                };
                visit(&child, Node::File(&file))?;
            }
            SFlag::S_IFLNK => visit(
                &child,
                Node::Symlink {
                    parent: fd,
                    name: &name,
                    stat,
                },
            )?,
            _ => {}
        }
    }
    Ok(())
}

/// `openat(fd, name, O_NOFOLLOW)` through `/proc/self/fd`, which names the open directory
/// itself; `None` if it is no longer a regular file.
fn open_file(dir: RawFd, name: &CStr) -> io::Result<Option<File>> {
    let path = Path::new("/proc/self/fd")
        .join(dir.to_string())
        .join(OsStr::from_bytes(name.to_bytes()));
    Ok(open_no_follow(&path)?
        .filter(|(_, meta)| meta.is_file())
        .map(|(f, _)| f))
}

/// `path` opened for reading without following a final link, with its metadata; `None`
/// when it is absent or a link.
pub(crate) fn open_no_follow(path: &Path) -> io::Result<Option<(File, std::fs::Metadata)>> {
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if matches!(e.raw_os_error(), Some(nix::libc::ELOOP | nix::libc::ENOENT)) => {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    Ok(Some((file, meta)))
}
