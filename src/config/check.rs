//! What every part of the validation shares: the error collector, the merge of an entry's
//! field with `defaults`, and path joining. A leaf module, so the parts (`validate`, `entry`,
//! `scale`, …) never import one another for it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::error::ConfigError;
use super::tree::Position;

/// A runner's drain timeout when `drain_timeout` is unset.
pub(super) const DEFAULT_DRAIN: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// Collects errors with the position of the field each one is about.
pub(super) struct Checker<'a> {
    file: &'a Path,
    pub(super) positions: &'a BTreeMap<String, Position>,
    pub(super) errors: Vec<ConfigError>,
}

impl<'a> Checker<'a> {
    /// A collector for `file`, whose fields sit at `positions`.
    pub(super) fn new(file: &'a Path, positions: &'a BTreeMap<String, Position>) -> Self {
        Checker {
            file,
            positions,
            errors: Vec::new(),
        }
    }

    /// Records an error about `path`; `path#key` points at the key instead of its value.
    pub(super) fn error(&mut self, path: &str, message: String) {
        self.errors.push(ConfigError {
            file: self.file.to_path_buf(),
            pos: self.position(path),
            path: path.trim_end_matches("#key").to_string(),
            message,
        });
    }

    /// The field's own position, or that of the closest enclosing field that is written.
    pub(super) fn position(&self, path: &str) -> Option<Position> {
        let mut path = path;
        loop {
            if let Some(pos) = self.positions.get(path) {
                return Some(*pos);
            }
            let cut = path.rfind(['.', '['])?;
            path = &path[..cut];
        }
    }

    /// The parsed duration at `path`, or `default` when unset (or broken, after an error).
    pub(super) fn duration(
        &mut self,
        path: &str,
        value: Option<&super::duration::Duration>,
        default: std::time::Duration,
    ) -> std::time::Duration {
        match value.map(super::duration::Duration::parse) {
            None => default,
            Some(Ok(d)) => d,
            Some(Err(message)) => {
                self.error(path, message);
                default
            }
        }
    }

    pub(super) fn check(&mut self, path: &str, result: Result<(), String>) {
        if let Err(message) = result {
            self.error(path, message);
        }
    }
}

/// Joins `rel` to `dir` and drops `.` and `..` components lexically, so paths in plans and
/// logs read the way the user wrote them (`/srv/ci/state`, not `/srv/ci/./state`).
pub(super) fn join_clean(dir: &Path, rel: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in dir.join(rel).components() {
        match part {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// `pick` for a field of the same name in the entry and in `defaults`.
macro_rules! merged {
    ($entry:ident, $defaults:ident, $i:ident, $field:ident) => {
        $crate::config::check::pick(
            $entry.$field.as_ref(),
            $defaults.$field.as_ref(),
            $i,
            stringify!($field),
        )
    };
}
pub(super) use merged;

/// A merged field: the entry's value, else the default's, with the path where it is written.
pub(super) fn pick<'a, T>(
    own: Option<&'a T>,
    default: Option<&'a T>,
    i: usize,
    field: &str,
) -> (Option<&'a T>, String) {
    match own {
        Some(v) => (Some(v), format!("runners[{i}].{field}")),
        None => (default, format!("defaults.{field}")),
    }
}
