//! Why a fetch of the source gave no revision.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// Why a fetch of `source.git` gave no revision. Shown to the user (status, logs) through
/// [`crate::error_chain`], so each text says what failed and its cause follows it.
#[derive(Debug, thiserror::Error)]
pub enum GitSourceError {
    /// corral's own file or directory under `<state_dir>/source` could not be made.
    #[error("cannot {what} `{}`", path.display())]
    Local {
        /// `create` or `write`.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The `git` command could not be started.
    #[error("cannot run git")]
    Spawn(#[source] std::io::Error),
    /// A git command outlived its deadline and was killed.
    #[error("{what} took longer than {}s", deadline.as_secs())]
    TimedOut {
        /// Which command (`git fetch`, …).
        what: &'static str,
        /// Its deadline.
        deadline: Duration,
    },
    /// Waiting for a git command failed.
    #[error("{what}")]
    Wait {
        /// Which command.
        what: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A git command exited with an error.
    #[error("{what} failed ({status}): {}", if stderr.is_empty() { "no message" } else { stderr })]
    Failed {
        /// Which command.
        what: &'static str,
        /// How it exited.
        status: ExitStatus,
        /// What it wrote to stderr, trimmed.
        stderr: String,
    },
    /// The remote has no `ref` (any more).
    #[error("`{git_ref}` is not in the repository (deleted?)")]
    RefGone {
        /// The ref.
        git_ref: String,
        /// git's own report.
        #[source]
        source: Box<GitSourceError>,
    },
    /// `rev-parse` printed something that is not a commit id.
    #[error("git rev-parse gave `{0}`, not a commit id")]
    NotACommit(String),
    /// The commit has no file at `source.git.path`.
    #[error("commit {commit} has no file `{path}`")]
    NoFile {
        /// The commit.
        commit: String,
        /// `source.git.path`.
        path: String,
        /// git's own report.
        #[source]
        source: Box<GitSourceError>,
    },
    /// The file is not UTF-8.
    #[error("commit {commit}: `{path}` is not UTF-8 text")]
    NotText {
        /// The commit.
        commit: String,
        /// `source.git.path`.
        path: String,
    },
    /// `source.git.token_env` names an unset variable.
    #[error("the environment variable `{0}` (source.git.token_env) is not set")]
    TokenEnvUnset(String),
    /// A path ssh's config syntax cannot hold.
    #[error(
        "source.git.{field} `{path}`: a path with `\"` or a line break cannot be given to ssh"
    )]
    UnquotablePath {
        /// `ssh_key_file` or `known_hosts_file`.
        field: &'static str,
        /// The path, as given.
        path: String,
    },
}

impl GitSourceError {
    /// Whether git said the remote has no such ref.
    pub(super) fn is_missing_ref(&self) -> bool {
        matches!(self, GitSourceError::Failed { stderr, .. }
            if stderr.contains("couldn't find remote ref") || stderr.contains("not our ref"))
    }
}
