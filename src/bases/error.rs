//! What can go wrong while resolving, downloading, extracting or checking a runner release.

use std::io;
use std::path::PathBuf;

use crate::provision::BaseError;

/// A release that could not be resolved, installed, listed, verified or pruned. An install
/// that fails leaves nothing that looks installed: only `.tmp-*` entries, removed later.
#[derive(Debug, thiserror::Error)]
pub enum BasesError {
    /// A file system call failed.
    #[error("failed to {action} `{path}`")]
    Io {
        /// What was being done: "create directory", "rename", …
        action: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// An HTTP request failed before an answer was read in full (connect, timeout, cut short).
    #[error("request to `{url}` failed")]
    Http {
        /// The URL.
        url: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// An HTTP request was answered with an error status.
    #[error("`{url}` answered HTTP {status}")]
    Status {
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
    },
    /// The releases API answered something that is not a release.
    #[error("`{url}` did not answer a release: {reason}")]
    BadRelease {
        /// The URL.
        url: String,
        /// What was wrong.
        reason: String,
    },
    /// The body ended before the length the server announced.
    #[error("download of `{url}` was cut short: {received} of {expected} bytes")]
    Truncated {
        /// The URL.
        url: String,
        /// Bytes announced by `Content-Length`.
        expected: u64,
        /// Bytes received.
        received: u64,
    },
    /// The tarball's digest is not the expected one; the download was deleted.
    #[error("checksum mismatch for `{url}`: expected sha256 {expected}, got {actual}")]
    Checksum {
        /// The URL.
        url: String,
        /// The digest from `base.sha256` or the release asset.
        expected: String,
        /// The digest of what was downloaded.
        actual: String,
    },
    /// Neither the config nor the release gives a digest, so the download cannot be trusted.
    #[error(
        "no SHA-256 for runner {version}: the release asset `{asset}` has no digest; \
         set base.sha256 in runners.yaml"
    )]
    NoChecksum {
        /// The release.
        version: String,
        /// The asset looked for.
        asset: String,
    },
    /// A version that is not `MAJOR.MINOR.PATCH` (it becomes a directory name).
    #[error("`{version}` is not a runner release such as `2.329.0`")]
    BadVersion {
        /// What was given.
        version: String,
    },
    /// No runner tarball is published for this machine.
    #[error("no runner release is built for this architecture (`{arch}`)")]
    UnsupportedArch {
        /// `std::env::consts::ARCH`.
        arch: String,
    },
    /// The tarball could not be read as a gzip'd tar archive.
    #[error("failed to read the runner tarball `{path}`")]
    Archive {
        /// The tarball.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// An archive entry would land outside the destination or is of a refused kind.
    #[error("refused archive entry `{entry}`: {reason}")]
    UnsafeEntry {
        /// The entry's name as stored in the archive.
        entry: String,
        /// Why it is refused.
        reason: String,
    },
    /// The extracted tree is not a pristine runner install, or cannot be made read-only.
    #[error("the extracted release {version} is not a usable runner base")]
    Base {
        /// The release.
        version: String,
        /// The cause.
        #[source]
        source: BaseError,
    },
    /// The version is not installed.
    #[error("runner {version} is not installed under `{path}`")]
    NotInstalled {
        /// The release.
        version: String,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// A manifest could not be read or written.
    #[error("bad manifest `{path}`")]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

impl BasesError {
    /// An [`BasesError::Io`] for `action` on `path`.
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        BasesError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    /// An [`BasesError::UnsafeEntry`].
    pub(crate) fn unsafe_entry(entry: impl Into<String>, reason: impl Into<String>) -> Self {
        BasesError::UnsafeEntry {
            entry: entry.into(),
            reason: reason.into(),
        }
    }
}
