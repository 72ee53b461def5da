//! Removing a runner root in any state: absent, half-built, a file, or full of whatever its
//! jobs left. Never follows a symlink: `externals` and anything a job planted (`_work/x -> /`)
//! are removed as links, and what they point to stays untouched.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Removes `path` and everything below it; an absent `path` is success.
pub(crate) fn remove_tree(path: &Path) -> io::Result<()> {
    let meta = match path.symlink_metadata() {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.is_dir() {
        return absent_ok(fs::remove_file(path));
    }
    // std's remove_dir_all walks by descriptor with O_NOFOLLOW (the CVE-2022-21658 fix), so
    // a directory swapped for a symlink mid-walk is unlinked, not entered.
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied && !is_root() => {
            // Without root a job can leave read-only directories (Go's module cache does).
            make_writable(path);
            absent_ok(fs::remove_dir_all(path))
        }
        other => absent_ok(other),
    }
}

fn absent_ok(result: io::Result<()>) -> io::Result<()> {
    match result {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// `u+rwx` on every directory below `path`, best effort. Only used without root, where
/// corral and the runner are one user: a swapped path could only reach that user's files.
fn make_writable(path: &Path) {
    let Ok(meta) = path.symlink_metadata() else {
        return;
    };
    if !meta.is_dir() {
        return;
    }
    let mode = meta.permissions().mode();
    if mode & 0o700 != 0o700 {
        let _ = fs::set_permissions(path, fs::Permissions::from_mode(mode | 0o700));
    }
    if let Ok(entries) = fs::read_dir(path) {
        for entry in entries.flatten() {
            make_writable(&entry.path());
        }
    }
}
