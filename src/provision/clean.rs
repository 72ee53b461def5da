//! `clean: workspace`: what a job left in a persistent runner's `_work` goes before the next
//! job, but the tool cache (`_work/_tool`) and the runner's bookkeeping
//! (`_work/_PipelineMapping`).
//!
//! corral is root and `_work` is the job's: nothing there is opened by path or followed.
//! Each entry is renamed, by descriptor, into a new root-only directory `runners/.tmp-clean-…`
//! (a link moves as a link; a crash leaves a `.tmp-` leftover the next pass removes), and
//! that directory is then removed without following links. Renaming is quick, so the
//! runner's cgroup is frozen only for that part.

use std::ffi::CStr;
use std::io;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};

use rustix::fs::{Dir, Mode, OFlags};

use super::beneath::Beneath;
use crate::layout::TMP_PREFIX;

/// What stays in `_work`.
pub const KEPT: [&str; 2] = ["_tool", "_PipelineMapping"];

/// Moves everything of `root`'s `_work` but [`KEPT`] into a new directory under
/// `runners_dir`; returns that directory (to remove with [`remove_stash`]) and how many
/// entries moved. No `_work` is nothing to do.
pub fn stash_workspace(
    root: &Path,
    runners_dir: &Path,
    name: &str,
) -> io::Result<(PathBuf, usize)> {
    let root = Beneath::open(root)?;
    let work = match root.open_dir("_work") {
        Ok(work) => work,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((PathBuf::new(), 0)),
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!(
                    "`_work` is not a directory corral can enter without following a link: {e}"
                ),
            ))
        }
    };
    let stash = runners_dir.join(format!(
        "{TMP_PREFIX}clean-{name}-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    std::fs::DirBuilder::new().mode(0o700).create(&stash)?;
    let into = Beneath::open(&stash)?;
    let mut moved = 0;
    // Names are read once up front: renaming while reading a directory may skip entries.
    let names: Vec<std::ffi::CString> = {
        let fd = rustix::fs::openat(
            work.fd(),
            c".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Dir::read_from(&fd)?
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_owned())
            .collect()
    };
    for entry in &names {
        if skip(entry) {
            continue;
        }
        rustix::fs::renameat(work.fd(), entry.as_c_str(), into.fd(), entry.as_c_str())?;
        moved += 1;
    }
    Ok((stash, moved))
}

fn skip(name: &CStr) -> bool {
    let bytes = name.to_bytes();
    bytes == b"." || bytes == b".." || KEPT.iter().any(|k| k.as_bytes() == bytes)
}

/// Removes a directory made by [`stash_workspace`], following no link.
pub fn remove_stash(stash: &Path) -> io::Result<()> {
    if stash.as_os_str().is_empty() {
        return Ok(());
    }
    super::remove::remove_tree(stash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_but_the_tool_cache_goes_and_links_are_not_followed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let runners = tmp.path().join("runners");
        let root = runners.join("r");
        let work = root.join("_work");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(work.join("_tool/node")).expect("mkdir");
        std::fs::create_dir_all(work.join("repo/repo/src")).expect("mkdir");
        std::fs::create_dir_all(work.join("_PipelineMapping")).expect("mkdir");
        std::fs::create_dir_all(&outside).expect("mkdir");
        std::fs::write(outside.join("precious"), "keep").expect("write");
        std::fs::write(work.join("repo/repo/src/a.c"), "x").expect("write");
        std::os::unix::fs::symlink(&outside, work.join("link")).expect("symlink");
        std::os::unix::fs::symlink(&outside, work.join("repo/inner")).expect("symlink");
        std::fs::write(work.join(".hidden"), "x").expect("write");
        let (stash, moved) = stash_workspace(&root, &runners, "r").expect("stash");
        assert_eq!(moved, 3, "repo, link, .hidden");
        let mut left: Vec<String> = std::fs::read_dir(&work)
            .expect("ls")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["_PipelineMapping", "_tool"]);
        assert!(work.join("_tool/node").is_dir());
        remove_stash(&stash).expect("remove");
        assert!(!stash.exists());
        assert!(outside.join("precious").exists(), "links were not followed");
        // A `_work` that is a link is refused, not entered.
        std::fs::remove_dir_all(&work).expect("rm");
        std::os::unix::fs::symlink(&outside, &work).expect("symlink");
        let err = stash_workspace(&root, &runners, "r").expect_err("a link");
        assert!(
            err.to_string().contains("without following a link"),
            "{err}"
        );
        assert_eq!(
            std::fs::read_dir(&runners).expect("ls").count(),
            1,
            "no stash made for a refused `_work`"
        );
    }
}
