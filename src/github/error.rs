//! `GitHubError`: what can go wrong talking to GitHub. No variant carries a token: endpoints are
//! `METHOD /path` without the query, and bodies are reduced to GitHub's `message`.

use std::path::PathBuf;
use std::time::SystemTime;

use crate::secret::SecretError;

/// What can go wrong talking to GitHub.
#[derive(Debug, thiserror::Error)]
pub enum GitHubError {
    /// No usable credential.
    #[error("no GitHub credential")]
    Credential(#[from] SecretError),
    /// Never returned since App authentication landed; kept so existing matches still compile.
    #[error(
        "GitHub App authentication is not available yet; use github.token_env or github.token_file"
    )]
    AppUnsupported,
    /// No `github` section with a credential.
    #[error("no GitHub credential is configured (github.token_env, github.token_file)")]
    NoAuth,
    /// The request did not complete.
    #[error("request to {endpoint} failed")]
    Transport {
        /// `METHOD /path`.
        endpoint: String,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
    /// GitHub answered with an error status.
    #[error("{endpoint}: HTTP {status}: {message}")]
    Status {
        /// `METHOD /path`.
        endpoint: String,
        /// HTTP status.
        status: u16,
        /// GitHub's `message`, or a description of a body that was not JSON.
        message: String,
    },
    /// No answer within the client's timeout.
    #[error("{endpoint}: no answer within {}", humantime::format_duration(*.after))]
    Timeout {
        /// `METHOD /path`.
        endpoint: String,
        /// The timeout.
        after: std::time::Duration,
    },
    /// Rate limited: nothing is sent to GitHub before `until`; the caller should requeue.
    #[error("GitHub {} rate limit: no requests until {}", if *.secondary { "secondary" } else { "primary" }, humantime::format_rfc3339_seconds(*.until))]
    RateLimited {
        /// When requests may be sent again.
        until: SystemTime,
        /// A secondary (abuse) limit rather than the hourly budget.
        secondary: bool,
    },
    /// `DELETE` refused with 422 because the runner is running a job; retry later.
    #[error("{endpoint}: runner is busy: {message}")]
    Busy {
        /// `METHOD /path`.
        endpoint: String,
        /// GitHub's `message`.
        message: String,
    },
    /// A JIT registration with this name exists and is running a job, so it was not replaced.
    #[error("runner name {name:?} is taken by registration {id}, which is running a job")]
    NameInUse {
        /// The runner name.
        name: String,
        /// The existing registration.
        id: u64,
    },
    /// A success body that does not have the documented shape.
    #[error("{endpoint}: unexpected response body")]
    Decode {
        /// `METHOD /path`.
        endpoint: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The GitHub App's private key could not be read or used.
    #[error("GitHub App private key `{}` is unusable", path.display())]
    AppKey {
        /// The key file.
        path: PathBuf,
        /// Why.
        #[source]
        source: AppKeyError,
    },
    /// The GitHub App is not installed on the repository (`GET …/installation` said 404).
    #[error("GitHub App {app_id} is not installed on {repo}")]
    NotInstalled {
        /// App id.
        app_id: u64,
        /// `owner/repo`.
        repo: String,
    },
}

/// Why an App private key is unusable.
#[derive(Debug, thiserror::Error)]
pub enum AppKeyError {
    /// Reading the file failed.
    #[error("cannot read it")]
    Read(#[source] std::io::Error),
    /// Not an RSA PEM key, or signing failed.
    #[error("not a usable RSA PEM key")]
    Key(#[source] jsonwebtoken::errors::Error),
}

impl GitHubError {
    /// The HTTP status, when GitHub answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            GitHubError::Status { status, .. } => Some(*status),
            GitHubError::Busy { .. } => Some(422),
            _ => None,
        }
    }

    /// When the request may be tried again, for a rate limit.
    pub fn retry_at(&self) -> Option<SystemTime> {
        match self {
            GitHubError::RateLimited { until, .. } => Some(*until),
            _ => None,
        }
    }

    /// True for failures that a later retry may fix (5xx, timeouts, transport, limits, busy).
    pub fn is_transient(&self) -> bool {
        match self {
            GitHubError::Status { status, .. } => *status >= 500,
            GitHubError::Transport { .. }
            | GitHubError::Timeout { .. }
            | GitHubError::RateLimited { .. }
            | GitHubError::Busy { .. }
            | GitHubError::NameInUse { .. } => true,
            _ => false,
        }
    }
}
