//! Secrets: read from where `runners.yaml` names them, never printed.
//!
//! A [`Secret`]'s `Debug` and `Display` print `***`, so it cannot leak through a log line,
//! an error message or status by accident; [`Secret::expose`] is the one way to the value.

use std::fmt;
use std::path::{Path, PathBuf};

/// A secret value (a PAT, a registration token).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value; surrounding whitespace (a file's trailing newline) is dropped.
    pub fn new(value: &str) -> Self {
        Secret(value.trim().to_string())
    }

    /// The value itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Why a secret could not be read. Names where it was looked for, never the value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The environment variable is unset or empty.
    #[error("environment variable {0} is not set (or empty)")]
    EnvUnset(String),
    /// The file could not be read.
    #[error("cannot read secret file `{}`", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is empty.
    #[error("secret file `{}` is empty", .0.display())]
    FileEmpty(PathBuf),
}

/// Reads the secret from where `source` says.
pub fn read(source: &crate::config::TokenSource) -> Result<Secret, SecretError> {
    match source {
        crate::config::TokenSource::Env(var) => from_env(var),
        crate::config::TokenSource::File(path) => from_file(path),
    }
}

/// Reads the secret in environment variable `var`.
pub fn from_env(var: &str) -> Result<Secret, SecretError> {
    match std::env::var(var) {
        Ok(value) if !value.trim().is_empty() => Ok(Secret::new(&value)),
        _ => Err(SecretError::EnvUnset(var.to_string())),
    }
}

/// Reads the secret in `path`, every time: a rotated file is picked up on the next use.
pub fn from_file(path: &Path) -> Result<Secret, SecretError> {
    warn_if_exposed(path);
    let text = std::fs::read_to_string(path).map_err(|source| SecretError::File {
        path: path.to_path_buf(),
        source,
    })?;
    if text.trim().is_empty() {
        return Err(SecretError::FileEmpty(path.to_path_buf()));
    }
    Ok(Secret::new(&text))
}

/// Warns, once per file, when a secret file can be read by users other than its owner: a
/// job running as such a user (a runner's) could read corral's credential.
pub fn warn_if_exposed(path: &Path) {
    use std::os::unix::fs::MetadataExt;
    static WARNED: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    let mode = meta.mode() & 0o777;
    let group_or_others = mode & 0o077;
    if group_or_others == 0 {
        return;
    }
    let mut warned = WARNED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if warned.iter().any(|p| p == path) {
        return;
    }
    warned.push(path.to_path_buf());
    tracing::warn!(
        path = %path.display(),
        mode = format!("{mode:o}"),
        "secret file is readable by other users, so a job could read it; make it 0600 (chmod 600)"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_printed() {
        let s = Secret::new("ghp_abc\n");
        assert_eq!(format!("{s} {s:?}"), "*** ***");
        assert_eq!(s.expose(), "ghp_abc");
    }
}
