//! Disk accounting by inode: what a runner root holds on its own, and what it shares with
//! the base (hard links, and the `externals` link). Allocated blocks, each inode once, as `du`.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde::Serialize;

/// Disk held by one runner root, in allocated bytes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct DiskUsage {
    /// Bytes only this runner holds: its directories, private files, `_work`, `_diag`.
    pub unique_bytes: u64,
    /// Bytes of the base it uses: hard-linked files, and `externals/` through the link.
    pub shared_bytes: u64,
}

/// The base's inodes and the size of its `externals/`.
#[derive(Debug)]
pub(crate) struct BaseIndex {
    inodes: HashSet<(u64, u64)>,
    externals_bytes: u64,
}

impl BaseIndex {
    /// Walks the base once.
    pub(crate) fn build(base: &Path) -> io::Result<BaseIndex> {
        let mut inodes = HashSet::new();
        tally(base, &mut inodes, &mut |_, _| {})?;
        let mut ext_inodes = HashSet::new();
        let mut externals_bytes = 0;
        tally(&base.join("externals"), &mut ext_inodes, &mut |_, bytes| {
            externals_bytes += bytes;
        })?;
        Ok(BaseIndex {
            inodes,
            externals_bytes,
        })
    }

    /// Whether the inode is one of the base's.
    fn holds(&self, meta: &fs::Metadata) -> bool {
        self.inodes.contains(&(meta.dev(), meta.ino()))
    }

    /// Usage of `root`, a runner root whose `externals` link points to `externals` when
    /// `shares_externals`.
    pub(crate) fn usage_of(&self, root: &Path, shares_externals: bool) -> io::Result<DiskUsage> {
        let mut usage = DiskUsage::default();
        let mut seen = HashSet::new();
        tally(root, &mut seen, &mut |meta, bytes| {
            if self.holds(meta) {
                usage.shared_bytes += bytes;
            } else {
                usage.unique_bytes += bytes;
            }
        })?;
        if shares_externals {
            usage.shared_bytes += self.externals_bytes;
        }
        Ok(usage)
    }
}

/// Allocated bytes under `tree` (the root included) in inodes the base at `base` does not
/// hold, each inode once: what a set of runner roots costs on top of their base.
pub fn allocated_outside(base: &Path, tree: &Path) -> io::Result<u64> {
    let index = BaseIndex::build(base)?;
    let mut seen = HashSet::new();
    let mut extra = 0;
    tally(tree, &mut seen, &mut |meta, bytes| {
        if !index.holds(meta) {
            extra += bytes;
        }
    })?;
    Ok(extra)
}

/// Calls `add` once per inode not yet in `seen`, under `path` and for `path` itself;
/// symlinks are counted as themselves, never followed. Entries that vanish are skipped.
fn tally(
    path: &Path,
    seen: &mut HashSet<(u64, u64)>,
    add: &mut dyn FnMut(&fs::Metadata, u64),
) -> io::Result<()> {
    let meta = match path.symlink_metadata() {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if seen.insert((meta.dev(), meta.ino())) {
        add(&meta, meta.blocks() * 512);
    }
    if meta.is_dir() {
        let entries = match fs::read_dir(path) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for entry in entries {
            tally(&entry?.path(), seen, add)?;
        }
    }
    Ok(())
}
