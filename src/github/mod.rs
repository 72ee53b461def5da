//! The GitHub REST client for repository runners (`reference/github-api.md` §1–2, §4):
//! registration and removal tokens, JIT configurations, listing, labels and deletion.
//!
//! # Layout
//! - `transport`: one request with the documented headers, a timeout, 5xx retries with jittered
//!   backoff, and the rate-limit gate: while GitHub says "limited", calls fail with
//!   [`GitHubError::RateLimited`] without sending, for every clone of the client.
//! - `auth`: a PAT re-read on every use, or GitHub App installation tokens (cached, renewed early).
//! - `runners`: the endpoints, `Link` pagination, JIT ghost-registration repair.
//! - `runs`: queued jobs (demand for `scale` pools) in queued and in-progress runs, every page
//!   polled with `If-None-Match`, a bounded number of requests per poll.
//! - `types`, `error`: what comes back.
//!
//! No token ever appears in an error, a log line or `Debug` output: tokens live in [`Secret`](crate::secret::Secret).

mod auth;
mod error;
mod runners;
mod runs;
mod transport;
mod types;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tracing::warn;

pub use error::{AppKeyError, GitHubError};
pub use runs::{DemandCache, PollCost, QueuedJob, MAX_JOB_REQUESTS, MAX_RUN_PAGES};
pub use types::{JitConfig, RateBudget, RunnerLabel, RunnerRegistration};

use crate::config::{GitHub, GitHubAuth, Repo};
use auth::Auth;
use transport::{Call, Reply, Transport};

/// How long one request may take; GitHub itself gives up after 10 s.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The client; clones share the connection pool, token caches and the rate-limit gate.
#[derive(Clone)]
pub struct GitHubClient {
    inner: Arc<Inner>,
}

struct Inner {
    transport: Transport,
    auth: Auth,
    has_auth: bool,
}

impl fmt::Debug for GitHubClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitHubClient")
            .field("api_url", &self.inner.transport.url(""))
            .field("auth", &self.inner.auth)
            .finish_non_exhaustive()
    }
}

impl GitHubClient {
    /// A client for `github`'s API.
    pub fn new(github: &GitHub) -> Self {
        Self::with_timeout(github, TIMEOUT)
    }

    /// A client whose requests give up after `timeout` (tests shorten it).
    pub fn with_timeout(github: &GitHub, timeout: Duration) -> Self {
        GitHubClient {
            inner: Arc::new(Inner {
                transport: Transport::new(&github.api_url, timeout),
                auth: Auth::new(&github.auth),
                has_auth: github.auth != GitHubAuth::None,
            }),
        }
    }

    /// True when a credential is configured (tokens can be minted, registrations deleted).
    pub fn has_auth(&self) -> bool {
        self.inner.has_auth
    }

    /// The rate-limit budget from the last response that reported one.
    pub fn budget(&self) -> Option<RateBudget> {
        self.inner.transport.budget()
    }

    /// Requests so far by endpoint template and HTTP status (0: no answer).
    pub fn request_counts(&self) -> Vec<(String, u16, u64)> {
        self.inner.transport.request_counts()
    }

    /// Until when calls fail with `RateLimited` without sending, if they do now.
    pub fn blocked_until(&self) -> Option<SystemTime> {
        self.inner.transport.blocked_until()
    }

    /// `path` under `/repos/{owner}/{repo}/actions/runners` on the API base.
    fn runners_url(&self, repo: &Repo, path: &str) -> String {
        let path = format!("/repos/{}/{}/actions/runners{path}", repo.owner, repo.name);
        self.inner.transport.url(&path)
    }

    /// Sends `call` about `repo` with its credential; an App token GitHub calls bad credentials
    /// (expired early, revoked) is dropped and the call made once more with a fresh one.
    async fn send(&self, repo: &Repo, call: &Call<'_>) -> Result<Reply, GitHubError> {
        self.send_if(repo, call, None).await
    }

    /// [`send`](Self::send), conditional on `etag` when given (a 304 is then `Ok`).
    async fn send_if(
        &self,
        repo: &Repo,
        call: &Call<'_>,
        etag: Option<&str>,
    ) -> Result<Reply, GitHubError> {
        let Inner {
            transport, auth, ..
        } = &*self.inner;
        let credential = auth.credential(transport, repo).await?;
        let result = transport.send_if(call, &credential.token, etag).await;
        match (result, credential.installation) {
            (Err(err), Some(installation)) if err.status() == Some(401) => {
                warn!(installation, cause = %err, "installation token refused; minting a new one");
                auth.invalidate(installation).await;
                let credential = auth.credential(transport, repo).await?;
                transport.send_if(call, &credential.token, etag).await
            }
            (result, _) => result,
        }
    }
}
