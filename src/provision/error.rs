//! What can go wrong while building, re-basing or removing a runner directory.

use std::io;
use std::path::PathBuf;

/// A provisioning step that failed; the runner dir is left as it was or absent, never half-built.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// A file system call failed.
    #[error("failed to {action} `{path}`")]
    Io {
        /// What was being done: "link", "create directory", "rename", …
        action: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The name cannot be a directory name under `runners/`.
    #[error("`{name}` cannot name a runner directory")]
    BadName {
        /// The name given.
        name: String,
    },
    /// The runner dir exists but was built from another base; re-base it instead.
    #[error("runner dir `{path}` is built from another base (`{found}`, by corral's record)")]
    OtherBase {
        /// The runner's root.
        path: PathBuf,
        /// The base corral's record names.
        found: PathBuf,
    },
    /// Something corral has no record of building sits where the runner dir belongs.
    #[error("`{path}` exists but corral has no record of building it")]
    NotARunner {
        /// The path.
        path: PathBuf,
    },
    /// `remove_leftover` was given a path that is not a `runners/.tmp-*` directory.
    #[error("`{path}` is not a leftover runner build under the runners directory")]
    NotLeftover {
        /// The path.
        path: PathBuf,
    },
}

impl ProvisionError {
    /// An [`ProvisionError::Io`] for `action` on `path`.
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        ProvisionError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
