//! Runner releases corral downloads, verifies and keeps under `<state_dir>/bases/<version>/`
//! (DESIGN.md §1 `base.version`, §3).
//!
//! Invariants:
//! - `<bases>/<version>` exists only once its tarball matched the expected SHA-256, extracted
//!   without writing outside, opened as a pristine runner install, was made read-only (as root)
//!   and its manifest `<bases>/<version>.manifest.json` was written. It appears by one rename.
//! - Work in progress is only ever `<bases>/.tmp-*`, never taken for an installed release;
//!   [`BaseStore::remove_leftovers`] deletes it.

mod error;
mod extract;
pub mod manifest;
mod release;

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, ErrorKind};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub use error::BasesError;
pub use extract::{
    extract as extract_archive, extract_within as extract_archive_within, Limits as ExtractLimits,
};
pub use manifest::{Difference, Manifest};
pub use release::{is_version, resolve, runner_arch, Release};

use crate::provision::Base;

/// The directory of installed releases, `<state_dir>/bases`.
#[derive(Debug, Clone)]
pub struct BaseStore {
    root: PathBuf,
    http: reqwest::Client,
    progress: release::Progress,
}

/// An installed release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// `2.329.0`.
    pub version: String,
    /// `<bases>/<version>`.
    pub path: PathBuf,
    /// Bytes of its files (each inode counted once).
    pub bytes: u64,
}

impl BaseStore {
    /// The store of `state_dir` (`<state_dir>/bases`); nothing is created until an install.
    pub fn new(state_dir: &Path) -> Result<Self, BasesError> {
        let http = release::download_client().map_err(|source| BasesError::Http {
            url: String::new(),
            source,
        })?;
        Ok(Self {
            root: state_dir.join("bases"),
            http,
            progress: release::Progress::Log,
        })
    }

    /// Shows downloads as a bar redrawn on stderr (for a terminal) instead of log lines.
    #[must_use]
    pub fn with_progress_bar(mut self) -> Self {
        self.progress = release::Progress::Bar;
        self
    }

    /// `<state_dir>/bases`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where `version` is (or would be) installed.
    pub fn path_of(&self, version: &str) -> PathBuf {
        self.root.join(version)
    }

    /// `<bases>/<version>.manifest.json`.
    pub fn manifest_path(&self, version: &str) -> PathBuf {
        self.root.join(format!("{version}.manifest.json"))
    }

    /// Downloads, verifies, extracts and installs `release`; returns `<bases>/<version>`.
    /// Already installed: returns the path without downloading.
    pub async fn install(&self, release: &Release) -> Result<PathBuf, BasesError> {
        let version = checked(&release.version)?;
        let target = self.path_of(&version);
        if is_dir(&target) {
            tracing::debug!(version, "runner release already installed");
            return Ok(target);
        }
        let expected = release
            .sha256
            .clone()
            .ok_or_else(|| BasesError::NoChecksum {
                version: version.clone(),
                asset: release.url.clone(),
            })?;
        fs::create_dir_all(&self.root)
            .map_err(|e| BasesError::io("create directory", &self.root, e))?;
        let tag = format!(".tmp-{version}-{:016x}", random());
        let tarball = self.root.join(format!("{tag}.tar.gz"));
        tracing::info!(version, url = %release.url, "downloading runner release");
        let fetched = self.fetch(&release.url, &tarball, &expected).await;
        if let Err(err) = fetched {
            let _ = fs::remove_file(&tarball);
            return Err(err);
        }
        let job = Unpack {
            tarball,
            tree: self.root.join(&tag),
            target,
            manifest: self.manifest_path(&version),
            version,
            sha256: expected,
        };
        tokio::task::spawn_blocking(move || job.run())
            .await
            .map_err(|e| BasesError::io("extract", &self.root, io::Error::other(e)))?
    }

    async fn fetch(&self, url: &str, tarball: &Path, expected: &str) -> Result<(), BasesError> {
        let actual = release::download(&self.http, url, tarball, self.progress).await?;
        if actual != expected.to_ascii_lowercase() {
            return Err(BasesError::Checksum {
                url: url.to_owned(),
                expected: expected.to_owned(),
                actual,
            });
        }
        Ok(())
    }

    /// Installed releases, oldest version first.
    pub fn list(&self) -> Result<Vec<Installed>, BasesError> {
        let mut found = Vec::new();
        let entries = match fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(found),
            Err(e) => return Err(BasesError::io("read", &self.root, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| BasesError::io("read", &self.root, e))?;
            let version = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if is_version(&version) && is_dir(&path) {
                let bytes = tree_bytes(&path).map_err(|e| BasesError::io("read", &path, e))?;
                found.push(Installed {
                    version,
                    path,
                    bytes,
                });
            }
        }
        found.sort_by_key(|i| version_key(&i.version));
        Ok(found)
    }

    /// Every difference between the installed tree of `version` and its manifest.
    pub fn verify(&self, version: &str) -> Result<Vec<Difference>, BasesError> {
        let version = checked(version)?;
        let tree = self.path_of(&version);
        if !is_dir(&tree) {
            return Err(BasesError::NotInstalled {
                version,
                path: tree,
            });
        }
        let path = self.manifest_path(&version);
        let bytes = fs::read(&path).map_err(|e| BasesError::io("read", &path, e))?;
        let manifest: Manifest = serde_json::from_slice(&bytes)
            .map_err(|source| BasesError::Manifest { path, source })?;
        let actual = manifest::scan(&tree).map_err(|e| BasesError::io("read", &tree, e))?;
        Ok(manifest::compare(&manifest.entries, &actual))
    }

    /// Installed versions that runners are built from, by corral's records (never a link in
    /// a runner's directory, which a job may have changed), with the runners using each,
    /// sorted.
    pub fn in_use(&self, layout: &crate::layout::StateLayout) -> BTreeMap<String, Vec<String>> {
        let bases = fs::canonicalize(&self.root).unwrap_or_else(|_| self.root.clone());
        let mut users: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let Ok(entries) = fs::read_dir(layout.runners_dir()) else {
            return users;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(record) =
                crate::layout::read_record::<crate::layout::DirRecord>(&layout.dir_record(&name))
            else {
                continue;
            };
            let Some(version) = record
                .base
                .strip_prefix(&bases)
                .ok()
                .and_then(|rest| rest.components().next())
            else {
                continue;
            };
            users
                .entry(version.as_os_str().to_string_lossy().into_owned())
                .or_default()
                .push(name);
        }
        for names in users.values_mut() {
            names.sort();
        }
        users
    }

    /// Removes installed releases not in `keep`, with their manifests; returns their versions.
    pub fn prune(&self, keep: &[&str]) -> Result<Vec<String>, BasesError> {
        let mut removed = Vec::new();
        for installed in self.list()? {
            if keep.contains(&installed.version.as_str()) {
                continue;
            }
            remove_tree(&installed.path)?;
            let manifest = self.manifest_path(&installed.version);
            if let Err(e) = fs::remove_file(&manifest) {
                if e.kind() != ErrorKind::NotFound {
                    return Err(BasesError::io("remove", manifest, e));
                }
            }
            tracing::info!(version = %installed.version, "removed runner release");
            removed.push(installed.version);
        }
        Ok(removed)
    }

    /// Deletes what interrupted installs left (`<bases>/.tmp-*`); returns what it removed.
    pub fn remove_leftovers(&self) -> Result<Vec<PathBuf>, BasesError> {
        let mut removed = Vec::new();
        let Ok(entries) = fs::read_dir(&self.root) else {
            return Ok(removed);
        };
        for entry in entries.flatten() {
            if !entry.file_name().to_string_lossy().starts_with(".tmp-") {
                continue;
            }
            let path = entry.path();
            if is_dir(&path) {
                remove_tree(&path)?;
            } else {
                fs::remove_file(&path).map_err(|e| BasesError::io("remove", &path, e))?;
            }
            removed.push(path);
        }
        Ok(removed)
    }
}

/// The blocking half of an install: extract, check, protect, record, rename.
struct Unpack {
    tarball: PathBuf,
    tree: PathBuf,
    target: PathBuf,
    manifest: PathBuf,
    version: String,
    sha256: String,
}

impl Unpack {
    fn run(self) -> Result<PathBuf, BasesError> {
        let result = self.build();
        let _ = fs::remove_file(&self.tarball);
        match result {
            Ok(()) => {}
            Err(err) => {
                let _ = remove_tree(&self.tree);
                return Err(err);
            }
        }
        if let Err(e) = fs::rename(&self.tree, &self.target) {
            let _ = remove_tree(&self.tree);
            // Another install of the same release won the race: it is installed.
            if is_dir(&self.target) {
                return Ok(self.target);
            }
            return Err(BasesError::io("rename into place", &self.target, e));
        }
        tracing::info!(version = %self.version, path = %self.target.display(), "installed runner release");
        Ok(self.target)
    }

    fn build(&self) -> Result<(), BasesError> {
        let entries = extract::extract(&self.tarball, &self.tree)?;
        tracing::info!(version = %self.version, entries, "extracted runner release");
        let base_err = |source| BasesError::Base {
            version: self.version.clone(),
            source,
        };
        let base = Base::open(&self.tree).map_err(base_err)?;
        base.protect().map_err(base_err)?;
        let manifest = Manifest {
            version: self.version.clone(),
            tarball_sha256: self.sha256.clone(),
            entries: manifest::scan(&self.tree)
                .map_err(|e| BasesError::io("read", &self.tree, e))?,
        };
        let mut tmp = self.tree.clone().into_os_string();
        tmp.push(".manifest.json");
        let tmp = PathBuf::from(tmp);
        let json = serde_json::to_vec_pretty(&manifest).map_err(|source| BasesError::Manifest {
            path: self.manifest.clone(),
            source,
        })?;
        fs::write(&tmp, json).map_err(|e| BasesError::io("write", &tmp, e))?;
        fs::rename(&tmp, &self.manifest).map_err(|e| BasesError::io("write", &self.manifest, e))
    }
}

fn checked(version: &str) -> Result<String, BasesError> {
    if is_version(version) {
        Ok(version.to_owned())
    } else {
        Err(BasesError::BadVersion {
            version: version.to_owned(),
        })
    }
}

fn is_dir(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
}

fn version_key(version: &str) -> Vec<u64> {
    version.split('.').map(|p| p.parse().unwrap_or(0)).collect()
}

fn random() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// Bytes of the regular files under `dir`, each inode once.
fn tree_bytes(dir: &Path) -> io::Result<u64> {
    fn walk(dir: &Path, seen: &mut HashSet<(u64, u64)>) -> io::Result<u64> {
        let mut total = 0;
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            let meta = fs::symlink_metadata(&path)?;
            if meta.is_dir() {
                total += walk(&path, seen)?;
            } else if meta.is_file() && seen.insert((meta.dev(), meta.ino())) {
                total += meta.size();
            }
        }
        Ok(total)
    }
    walk(dir, &mut HashSet::new())
}

/// Removes a tree, first giving its directories back the write bit if that is what stops it.
fn remove_tree(path: &Path) -> Result<(), BasesError> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == ErrorKind::PermissionDenied => {
            let _ = make_writable(path);
            fs::remove_dir_all(path).map_err(|e| BasesError::io("remove", path, e))
        }
        Err(e) => Err(BasesError::io("remove", path, e)),
    }
}

fn make_writable(dir: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(dir)?;
    if !meta.is_dir() {
        return Ok(());
    }
    fs::set_permissions(
        dir,
        fs::Permissions::from_mode(meta.mode() & 0o7777 | 0o700),
    )?;
    for entry in fs::read_dir(dir)? {
        make_writable(&entry?.path())?;
    }
    Ok(())
}
