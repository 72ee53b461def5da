//! What corral does as root inside a directory its runner's user can write (the runner
//! root): every operation works on a descriptor of that directory, opened without following
//! a link, and on one name in it. A link a job planted there is replaced, moved or removed as
//! a link and never followed; nothing of the job's is copied, so no file of the job's ever
//! becomes root's or keeps a set-id bit under root's name; files corral writes there are new
//! inodes (`O_CREAT | O_EXCL | O_NOFOLLOW`) handed to the runner's user before they hold a byte.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use nix::unistd::{Gid, Uid};
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, ResolveFlags};

/// Largest file read through [`Beneath::read`]: identity files are a few KiB.
const MAX_READ: u64 = 1 << 20;

/// A directory opened without following a link; the anchor of every operation below.
#[derive(Debug)]
pub struct Beneath {
    fd: OwnedFd,
}

impl Beneath {
    /// Opens the directory `path`; a symlink or a non-directory there is refused (`ELOOP`,
    /// `ENOTDIR`). `path` itself must be one the runner's user cannot rename (it is under
    /// `state_dir`, which is root's).
    pub fn open(path: &Path) -> io::Result<Self> {
        let fd = rfs::open(path, dir_flags(), Mode::empty())?;
        Ok(Beneath { fd })
    }

    /// The directory `name` in this one, opened the same way.
    pub fn open_dir(&self, name: &str) -> io::Result<Self> {
        let fd = rfs::openat(&self.fd, one(name)?, dir_flags(), Mode::empty())?;
        Ok(Beneath { fd })
    }

    /// The descriptor.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The regular file at `rel` below this directory, resolved without any symlink and
    /// without leaving it (`openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`); `None`
    /// when it is absent, a link, or not a regular file with one link.
    pub fn open_file(&self, rel: &str) -> io::Result<Option<File>> {
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY;
        let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_XDEV;
        let opened = match rfs::openat2(
            &self.fd,
            rel,
            flags | OFlags::CLOEXEC,
            Mode::empty(),
            resolve,
        ) {
            // Kernels before 5.6: one name, never a path, through plain `O_NOFOLLOW`.
            Err(rustix::io::Errno::NOSYS) => {
                rfs::openat(&self.fd, one(rel)?, flags | OFlags::CLOEXEC, Mode::empty())
            }
            other => other,
        };
        let fd = match opened {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT | rustix::io::Errno::LOOP | rustix::io::Errno::XDEV) => {
                return Ok(None)
            }
            Err(e) => return Err(e.into()),
        };
        let st = rfs::fstat(&fd)?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile || st.st_nlink != 1 {
            return Ok(None);
        }
        Ok(Some(File::from(fd)))
    }

    /// The bytes of the regular file `rel` (see [`Beneath::open_file`]), at most 1 MiB.
    pub fn read(&self, rel: &str) -> io::Result<Option<Vec<u8>>> {
        let Some(file) = self.open_file(rel)? else {
            return Ok(None);
        };
        let mut bytes = Vec::new();
        file.take(MAX_READ + 1).read_to_end(&mut bytes)?;
        if bytes.len() as u64 > MAX_READ {
            return Err(io::Error::other(format!("`{rel}` is larger than 1 MiB")));
        }
        Ok(Some(bytes))
    }

    /// Replaces whatever `name` is (a file, a link, nothing) with a new regular file holding
    /// `bytes`, mode `mode`, owned by `owner` (corral's own user when `None`). Written under a
    /// temporary name first and renamed over `name`, so a reader sees the old or the new file.
    pub fn install(
        &self,
        name: &str,
        bytes: &[u8],
        mode: u32,
        owner: Option<(Uid, Gid)>,
    ) -> io::Result<()> {
        let name = one(name)?;
        let tmp = format!(".corral-new{name}");
        let create = || {
            rfs::openat(
                &self.fd,
                tmp.as_str(),
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )
        };
        let fd = match create() {
            // Left by a crash, or planted: removed (as a name, never followed) and made anew.
            Err(rustix::io::Errno::EXIST) => {
                rfs::unlinkat(&self.fd, tmp.as_str(), AtFlags::empty())?;
                create()?
            }
            other => other?,
        };
        let written = (|| {
            if let Some((uid, gid)) = owner {
                rfs::fchown(&fd, Some(raw_uid(uid)), Some(raw_gid(gid)))?;
            }
            rfs::fchmod(&fd, Mode::from_raw_mode(mode & 0o777))?;
            let mut file = File::from(fd);
            file.write_all(bytes)?;
            file.sync_all()
        })();
        if let Err(e) = written.and_then(|()| {
            rfs::renameat(&self.fd, tmp.as_str(), &self.fd, name).map_err(io::Error::from)
        }) {
            let _ = rfs::unlinkat(&self.fd, tmp.as_str(), AtFlags::empty());
            return Err(e);
        }
        Ok(())
    }

    /// Moves the entry `name` (whatever it is: a file, a directory, a link) to `to`, under the
    /// same name, without opening it. Returns false when there is no such entry.
    pub fn move_to(&self, name: &str, to: &Beneath) -> io::Result<bool> {
        let name = one(name)?;
        match rfs::renameat(&self.fd, name, &to.fd, name) {
            Ok(()) => Ok(true),
            Err(rustix::io::Errno::NOENT) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes the entry `name` if it is not a directory (a link goes as a link); absent is
    /// fine.
    pub fn remove(&self, name: &str) -> io::Result<()> {
        match rfs::unlinkat(&self.fd, one(name)?, AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes the empty directory `name`; absent is fine.
    pub fn remove_empty_dir(&self, name: &str) -> io::Result<()> {
        match rfs::unlinkat(&self.fd, one(name)?, AtFlags::REMOVEDIR) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Owner, group and mode of this directory.
    pub fn stat(&self) -> io::Result<(u32, u32, u32)> {
        let st = rfs::fstat(&self.fd)?;
        Ok((st.st_uid, st.st_gid, st.st_mode & 0o7777))
    }

    /// Sets owner and group (`None` keeps one) and the mode of this directory.
    pub fn set_owner_and_mode(
        &self,
        owner: (Option<Uid>, Option<Gid>),
        mode: u32,
    ) -> io::Result<()> {
        if owner.0.is_some() || owner.1.is_some() {
            rfs::fchown(&self.fd, owner.0.map(raw_uid), owner.1.map(raw_gid))?;
        }
        // After the chown, which clears set-id bits; the sticky bit is asked for here.
        rfs::fchmod(&self.fd, Mode::from_raw_mode(mode & 0o7777))?;
        Ok(())
    }
}

fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

/// `name` as one path component: no `/`, not `.` or `..`, not empty.
fn one(name: &str) -> io::Result<&str> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("`{name}` is not a plain file name"),
        ));
    }
    Ok(name)
}

fn raw_uid(uid: Uid) -> rfs::Uid {
    rfs::Uid::from_raw(uid.as_raw())
}

fn raw_gid(gid: Gid) -> rfs::Gid {
    rfs::Gid::from_raw(gid.as_raw())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_replaces_a_planted_link_and_never_writes_through_it() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let outside = tmp.path().join("outside");
        std::fs::write(&outside, "precious").expect("write");
        let dir = tmp.path().join("root");
        std::fs::create_dir(&dir).expect("mkdir");
        std::os::unix::fs::symlink(&outside, dir.join(".runner")).expect("symlink");
        // A leftover temporary name, planted as a link too.
        std::os::unix::fs::symlink(&outside, dir.join(".corral-new.runner")).expect("symlink");
        let root = Beneath::open(&dir).expect("open");
        root.install(".runner", b"{}", 0o600, None)
            .expect("install");
        assert_eq!(std::fs::read_to_string(&outside).expect("read"), "precious");
        let meta = std::fs::symlink_metadata(dir.join(".runner")).expect("lstat");
        assert!(meta.is_file());
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
            0o600
        );
        assert_eq!(std::fs::read(dir.join(".runner")).expect("read"), b"{}");
        assert!(!dir.join(".corral-new.runner").exists());
    }

    #[test]
    fn open_file_refuses_links_hard_links_and_escapes() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("root");
        std::fs::create_dir_all(dir.join("sub")).expect("mkdir");
        std::fs::write(dir.join("plain"), "x").expect("write");
        std::fs::write(tmp.path().join("outside"), "x").expect("write");
        std::os::unix::fs::symlink(tmp.path().join("outside"), dir.join("link")).expect("symlink");
        std::os::unix::fs::symlink("..", dir.join("sub/up")).expect("symlink");
        std::fs::hard_link(dir.join("plain"), dir.join("hard")).expect("link");
        let root = Beneath::open(&dir).expect("open");
        assert!(root.open_file("link").expect("open").is_none());
        assert!(root.open_file("sub/up/outside").expect("open").is_none());
        assert!(root.open_file("hard").expect("open").is_none(), "two links");
        assert!(root.open_file("absent").expect("open").is_none());
        std::fs::remove_file(dir.join("hard")).expect("rm");
        assert!(root.open_file("plain").expect("open").is_some());
        assert!(
            Beneath::open(&dir.join("link")).is_err(),
            "a link is no directory"
        );
    }

    #[test]
    fn move_to_moves_links_as_links() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        std::fs::create_dir(&a).expect("mkdir");
        std::fs::create_dir(&b).expect("mkdir");
        std::os::unix::fs::symlink("/etc", a.join("_work")).expect("symlink");
        let (from, to) = (Beneath::open(&a).expect("a"), Beneath::open(&b).expect("b"));
        assert!(from.move_to("_work", &to).expect("move"));
        assert!(!from.move_to("_work", &to).expect("absent"));
        assert!(std::fs::symlink_metadata(b.join("_work"))
            .expect("lstat")
            .is_symlink());
        assert!(from.move_to("../x", &to).is_err());
    }
}
