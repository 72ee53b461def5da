//! Where things live under `state_dir` (DESIGN.md §3), and corral's record files.
//!
//! Records live outside the runner root: everything under the root is the runner's to write,
//! and a job could forge what it can write.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Prefix of a runner directory being built; such a directory is never a runner.
pub const TMP_PREFIX: &str = ".tmp-";

/// Paths under one `state_dir`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateLayout {
    root: PathBuf,
}

impl StateLayout {
    /// The layout of `state_dir`.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        StateLayout {
            root: state_dir.into(),
        }
    }

    /// `state_dir` itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<state_dir>/runners`.
    pub fn runners_dir(&self) -> PathBuf {
        self.root.join("runners")
    }

    /// `<state_dir>/runners/<name>`: the runner's root.
    pub fn runner_dir(&self, name: &str) -> PathBuf {
        self.runners_dir().join(name)
    }

    /// `<state_dir>/records`.
    pub fn records_dir(&self) -> PathBuf {
        self.root.join("records")
    }

    /// `<state_dir>/records/<name>`.
    pub fn record_dir(&self, name: &str) -> PathBuf {
        self.records_dir().join(name)
    }

    /// `<state_dir>/records/<name>/spec.json`.
    pub fn spec_record(&self, name: &str) -> PathBuf {
        self.record_dir(name).join("spec.json")
    }

    /// `<state_dir>/records/<name>/process.json`.
    pub fn process_record(&self, name: &str) -> PathBuf {
        self.record_dir(name).join("process.json")
    }

    /// `<state_dir>/records/<name>/listener.log`.
    pub fn listener_log(&self, name: &str) -> PathBuf {
        self.record_dir(name).join("listener.log")
    }

    /// `<state_dir>/records/<name>/dir.json`.
    pub fn dir_record(&self, name: &str) -> PathBuf {
        self.record_dir(name).join("dir.json")
    }

    /// `<state_dir>/registrations`: where `config.sh` runs, root's alone.
    pub fn registrations_dir(&self) -> PathBuf {
        self.root.join("registrations")
    }

    /// `<state_dir>/registrations/<name>`: a private install `config.sh` registers runner
    /// `name` in, away from anything its user can reach.
    pub fn registration_dir(&self, name: &str) -> PathBuf {
        self.registrations_dir().join(name)
    }

    /// `<state_dir>/status.json`.
    pub fn status_file(&self) -> PathBuf {
        self.root.join("status.json")
    }
}

/// What corral built a runner's directory from, and whether a listener has run in it: the
/// planner's truth about the directory, which the runner's own files (an `externals` link, a
/// `_diag` a job can empty) are not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirRecord {
    /// The base (canonical path) the directory was built from.
    pub base: PathBuf,
    /// corral started a listener in it since it was built: an ephemeral runner's directory
    /// is then used up, whatever is in it now.
    #[serde(default)]
    pub started: bool,
}

/// What a runner was registered with: written after a successful registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecRecord {
    /// `RunnerSpec::registration_hash` at registration.
    pub registration_hash: String,
    /// `RunnerSpec::runtime_hash` when the listener was last started.
    pub runtime_hash: String,
    /// The spec it was registered with, to drain and deregister it after it left the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<crate::config::RunnerSpec>,
    /// The id GitHub gave the registration corral made: the one corral deletes, never one
    /// found by a name or in a file of the runner's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner_id: Option<u64>,
}

/// The listener corral started: enough to recognise it again after a restart of corral.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRecord {
    /// Process id.
    pub pid: i32,
    /// Start time in clock ticks since boot (`/proc/<pid>/stat` field 22), so a reused pid
    /// is never mistaken for the listener.
    pub start_time: u64,
}

/// Writes a JSON record atomically (temporary file, then rename), creating its directory.
/// Records are corral's alone: the file is 0600 and its directory 0700.
pub fn write_record<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let bytes = serde_json::to_vec_pretty(value)?;
    write_private(path, &path.with_extension("tmp"), &bytes, false)
}

/// Replaces `path` with `bytes` atomically through the temporary file `tmp`, which is made
/// anew with mode 0600 (never the umask's) and, with `sync`, synced before the rename.
pub fn write_private(path: &Path, tmp: &Path, bytes: &[u8], sync: bool) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let _ = std::fs::remove_file(tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)?;
    file.write_all(bytes)?;
    if sync {
        file.sync_all()?;
    }
    drop(file);
    std::fs::rename(tmp, path)
}

/// Reads a JSON record; a missing or unreadable one is `None` (the planner then acts as if
/// corral never wrote it, which is always safe).
pub fn read_record<T: for<'de> Deserialize<'de>>(path: &Path) -> Option<T> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}
