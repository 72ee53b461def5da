//! Symlinks and hard links of an archive: each must point inside the tree, lexically when
//! written and again through the final tree once every entry is in place.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::fs::symlink;
use std::path::{Component, Path, PathBuf};

use tar::Entry;

use super::{clear, relative};
use crate::bases::error::BasesError;

/// Symlinks followed while resolving one link target, as the kernel's `MAXSYMLINKS`.
const MAX_HOPS: usize = 40;

fn link_target<R: io::Read>(entry: &Entry<'_, R>, name: &str) -> Result<PathBuf, BasesError> {
    match entry.link_name() {
        Ok(Some(target)) => Ok(target.into_owned()),
        Ok(None) => Err(BasesError::unsafe_entry(name, "link without a target")),
        Err(e) => Err(BasesError::unsafe_entry(
            name,
            format!("bad link target: {e}"),
        )),
    }
}

pub(super) fn make_symlink<R: io::Read>(
    entry: &Entry<'_, R>,
    dest: &Path,
    rel: &Path,
    name: &str,
) -> Result<(), BasesError> {
    let target = link_target(entry, name)?;
    if target.is_absolute() {
        return Err(BasesError::unsafe_entry(
            name,
            "symlink to an absolute path",
        ));
    }
    // A first, lexical check; `resolves_inside` repeats it through the final tree.
    let mut depth = rel.components().count().saturating_sub(1);
    for component in target.components() {
        match component {
            Component::ParentDir if depth == 0 => {
                return Err(BasesError::unsafe_entry(
                    name,
                    "symlink points outside the tree",
                ))
            }
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            _ => {}
        }
    }
    let path = dest.join(rel);
    clear(&path, name)?;
    symlink(&target, &path).map_err(|e| BasesError::io("create symlink", path, e))
}

pub(super) fn make_hard_link<R: io::Read>(
    entry: &Entry<'_, R>,
    dest: &Path,
    rel: &Path,
    name: &str,
) -> Result<(), BasesError> {
    let target = link_target(entry, name)?;
    let outside = || BasesError::unsafe_entry(name, "hard link points outside the tree");
    let target_rel = relative(&target.to_string_lossy())
        .map_err(|_| outside())?
        .ok_or_else(outside)?;
    // The source must be a file extracted before, reached through real directories only.
    let mut ancestor = dest.to_path_buf();
    for component in target_rel.parent().into_iter().flat_map(Path::components) {
        ancestor.push(component);
        if !fs::symlink_metadata(&ancestor).is_ok_and(|m| m.is_dir()) {
            return Err(outside());
        }
    }
    let source = dest.join(&target_rel);
    if !fs::symlink_metadata(&source).is_ok_and(|m| m.is_file()) {
        return Err(BasesError::unsafe_entry(
            name,
            "hard link to something that is not a file extracted before it",
        ));
    }
    let path = dest.join(rel);
    clear(&path, name)?;
    fs::hard_link(&source, &path).map_err(|e| BasesError::io("create hard link", path, e))
}

/// Whether the symlink at `dest/rel` resolves inside `dest`, following every symlink on the way.
pub(super) fn resolves_inside(dest: &Path, rel: &Path) -> bool {
    let mut at: Vec<OsString> = rel
        .parent()
        .into_iter()
        .flat_map(Path::components)
        .map(|c| c.as_os_str().to_owned())
        .collect();
    // Start from the link's own target, relative to its parent.
    let Ok(first) = fs::read_link(dest.join(rel)) else {
        return false;
    };
    let mut pending: VecDeque<OsString> = first
        .components()
        .map(|c| c.as_os_str().to_owned())
        .collect();
    let mut hops = 0;
    while let Some(part) = pending.pop_front() {
        match part.to_str() {
            Some(".") => continue,
            Some("..") => {
                if at.pop().is_none() {
                    return false;
                }
                continue;
            }
            Some("/") => return false,
            _ => {}
        }
        at.push(part);
        let here: PathBuf = dest.join(at.iter().collect::<PathBuf>());
        if fs::symlink_metadata(&here).is_ok_and(|m| m.file_type().is_symlink()) {
            hops += 1;
            let Ok(target) = fs::read_link(&here) else {
                return false;
            };
            if hops > MAX_HOPS || target.is_absolute() {
                return false;
            }
            at.pop();
            for c in target.components().rev() {
                pending.push_front(c.as_os_str().to_owned());
            }
        }
    }
    true
}
