//! The file operations provisioning is made of, behind a trait so tests can inject faults
//! (`EXDEV`, `EPERM`, a full disk, a crash) at any call without swapping types under `cfg(test)`.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The file operations a runner tree is built with.
pub trait FileOps: Send + Sync {
    /// `link(src, dst)`: never follows `src` when it is a symlink.
    fn hard_link(&self, src: &Path, dst: &Path) -> io::Result<()>;
    /// A new file `dst` sharing `src`'s extents (`FICLONE`), with `mode`.
    fn reflink(&self, src: &Path, dst: &Path, mode: u32) -> io::Result<()>;
    /// A new file `dst` with `src`'s bytes and `mode`.
    fn copy(&self, src: &Path, dst: &Path, mode: u32) -> io::Result<()>;
    /// A symlink `dst` whose target is `target` (not resolved).
    fn symlink(&self, target: &Path, dst: &Path) -> io::Result<()>;
    /// A new directory with `mode` (the umask does not apply).
    fn create_dir(&self, path: &Path, mode: u32) -> io::Result<()>;
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealOps;

impl FileOps for RealOps {
    fn hard_link(&self, src: &Path, dst: &Path) -> io::Result<()> {
        // std uses linkat(…, 0): a symlink `src` is linked itself, never followed.
        fs::hard_link(src, dst)
    }

    fn reflink(&self, src: &Path, dst: &Path, mode: u32) -> io::Result<()> {
        let from = File::open(src)?;
        let to = create_new(dst, mode)?;
        // SAFETY: FICLONE takes the source descriptor as its integer argument and no pointer;
        // both descriptors are open for the whole call because `from` and `to` are alive.
        #[allow(unsafe_code)]
        let rc = unsafe { nix::libc::ioctl(to.as_raw_fd(), nix::libc::FICLONE, from.as_raw_fd()) };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        drop(to);
        let _ = fs::remove_file(dst);
        Err(err)
    }

    fn copy(&self, src: &Path, dst: &Path, mode: u32) -> io::Result<()> {
        let mut from = File::open(src)?;
        let result = create_new(dst, mode).and_then(|mut to| io::copy(&mut from, &mut to));
        if result.is_err() {
            let _ = fs::remove_file(dst);
        }
        result.map(drop)
    }

    fn symlink(&self, target: &Path, dst: &Path) -> io::Result<()> {
        std::os::unix::fs::symlink(target, dst)
    }

    fn create_dir(&self, path: &Path, mode: u32) -> io::Result<()> {
        fs::create_dir(path)?;
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
    }
}

/// `O_CREAT | O_EXCL`, then the exact mode (the umask would otherwise strip bits).
fn create_new(path: &Path, mode: u32) -> io::Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode & 0o7777)
        .open(path)?;
    file.set_permissions(fs::Permissions::from_mode(mode & 0o7777))?;
    Ok(file)
}
