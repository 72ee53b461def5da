//! The manifest of an installed release: what its tree held when installed, so `verify` can
//! list every difference. It lives beside the tree (`<bases>/<version>.manifest.json`), never
//! inside it: the base must stay pristine.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::release::hex;

/// One path of the tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Entry {
    /// A regular file.
    File {
        /// Permission bits.
        mode: u32,
        /// Size in bytes.
        size: u64,
        /// Lowercase hex SHA-256 of the content.
        sha256: String,
    },
    /// A directory.
    Dir {
        /// Permission bits.
        mode: u32,
    },
    /// A symbolic link.
    Symlink {
        /// The link's target, as stored.
        target: String,
    },
}

/// What an installed release's tree held, written when it was installed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The release.
    pub version: String,
    /// Lowercase hex SHA-256 of the tarball it came from.
    pub tarball_sha256: String,
    /// Every path under the tree, relative to it, `/`-separated.
    pub entries: BTreeMap<String, Entry>,
}

/// One way the tree differs from its manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Difference {
    /// In the manifest, not on disk.
    Missing(String),
    /// On disk, not in the manifest.
    Extra(String),
    /// Both, but different: what changed.
    Changed {
        /// The path.
        path: String,
        /// `content`, `mode 0755 -> 0777`, `link target`, `type`.
        what: String,
    },
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Difference::Missing(path) => write!(f, "missing: {path}"),
            Difference::Extra(path) => write!(f, "extra: {path}"),
            Difference::Changed { path, what } => write!(f, "changed {what}: {path}"),
        }
    }
}

/// Reads every path under `root` (not following symlinks), hashing file contents.
pub fn scan(root: &Path) -> io::Result<BTreeMap<String, Entry>> {
    let mut entries = BTreeMap::new();
    scan_dir(root, "", &mut entries)?;
    Ok(entries)
}

fn scan_dir(dir: &Path, prefix: &str, out: &mut BTreeMap<String, Entry>) -> io::Result<()> {
    for item in fs::read_dir(dir)? {
        let item = item?;
        let name = format!("{prefix}{}", item.file_name().to_string_lossy());
        let path = item.path();
        let meta = fs::symlink_metadata(&path)?;
        let mode = meta.permissions().mode() & 0o7777;
        let entry = if meta.file_type().is_symlink() {
            let target = fs::read_link(&path)?.to_string_lossy().into_owned();
            Entry::Symlink { target }
        } else if meta.is_dir() {
            scan_dir(&path, &format!("{name}/"), out)?;
            Entry::Dir { mode }
        } else {
            let mut hasher = Sha256::new();
            io::copy(&mut fs::File::open(&path)?, &mut hasher)?;
            Entry::File {
                mode,
                size: meta.size(),
                sha256: hex(&hasher.finalize()),
            }
        };
        out.insert(name, entry);
    }
    Ok(())
}

/// Every difference between `expected` (the manifest) and `actual` (a fresh [`scan`]).
pub fn compare(
    expected: &BTreeMap<String, Entry>,
    actual: &BTreeMap<String, Entry>,
) -> Vec<Difference> {
    let mut diffs = Vec::new();
    for (path, want) in expected {
        match actual.get(path) {
            None => diffs.push(Difference::Missing(path.clone())),
            Some(have) => {
                if let Some(what) = change(want, have) {
                    diffs.push(Difference::Changed {
                        path: path.clone(),
                        what,
                    });
                }
            }
        }
    }
    diffs.extend(
        actual
            .keys()
            .filter(|p| !expected.contains_key(*p))
            .map(|p| Difference::Extra(p.clone())),
    );
    diffs
}

fn change(want: &Entry, have: &Entry) -> Option<String> {
    let mode = |a: u32, b: u32| (a != b).then(|| format!("mode {a:04o} -> {b:04o}"));
    match (want, have) {
        (
            Entry::File {
                mode: m1,
                size: s1,
                sha256: h1,
            },
            Entry::File {
                mode: m2,
                size: s2,
                sha256: h2,
            },
        ) => {
            if s1 != s2 || h1 != h2 {
                Some("content".to_owned())
            } else {
                mode(*m1, *m2)
            }
        }
        (Entry::Dir { mode: m1 }, Entry::Dir { mode: m2 }) => mode(*m1, *m2),
        (Entry::Symlink { target: t1 }, Entry::Symlink { target: t2 }) => {
            (t1 != t2).then(|| format!("link target {t1} -> {t2}"))
        }
        _ => Some("type".to_owned()),
    }
}
