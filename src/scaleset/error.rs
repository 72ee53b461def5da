//! What can go wrong talking to the scale-set service. No token ever appears here.

use crate::github::GitHubError;

/// A failed scale-set call.
#[derive(Debug, thiserror::Error)]
pub enum ScaleSetError {
    /// The registration token for the admin connection could not be had.
    #[error("cannot get a registration token for the scale-set service")]
    GitHub(#[source] GitHubError),
    /// No answer.
    #[error("{endpoint}: no answer")]
    Http {
        /// `METHOD path`.
        endpoint: String,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
    /// An answer that is not what the protocol says.
    #[error("{endpoint}: unexpected body")]
    Decode {
        /// `METHOD path`.
        endpoint: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The service refused.
    #[error("{endpoint}: HTTP {status} {type_name}: {message}")]
    Status {
        /// `METHOD path`.
        endpoint: String,
        /// HTTP status.
        status: u16,
        /// The .NET exception name (without assembly), or empty.
        type_name: String,
        /// Its message.
        message: String,
    },
    /// The admin connection answered without a tenant URL or token.
    #[error("the scale-set admin connection is incomplete")]
    Connection,
}

impl ScaleSetError {
    /// The HTTP status, for a refusal.
    pub fn status(&self) -> Option<u16> {
        match self {
            ScaleSetError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// True when the exception name contains `name` (`SessionConflict`, `AgentExists`, …).
    pub fn is(&self, name: &str) -> bool {
        matches!(self, ScaleSetError::Status { type_name, .. } if type_name.contains(name))
    }

    /// Another session holds the scale set (`409 …SessionConflictException`).
    pub fn is_conflict(&self) -> bool {
        self.status() == Some(409) || self.is("SessionConflict")
    }
}
