//! One logical request to GitHub (`reference/github-api.md` §1): the documented headers, a
//! timeout, 5xx retried with jittered backoff, and the rate-limit gate.
//!
//! The gate is why corral never hammers a limited API without ever sleeping in a request: a
//! rate-limited answer records "blocked until T" (shared by every clone of the client), and each
//! call before T fails with [`GitHubError::RateLimited`] without sending; the reconcile loop requeues.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::HeaderMap;
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use tracing::{debug, warn};

use super::error::GitHubError;
use super::types::RateBudget;
use crate::secret::Secret;

const API_VERSION: &str = "2022-11-28";
const USER_AGENT: &str = concat!("corral/", env!("CARGO_PKG_VERSION"));
/// Attempts for a request answered 5xx; with the delays below all fit in about 3 s.
const ATTEMPTS: u32 = 4;
const FIRST_DELAY: Duration = Duration::from_millis(250);
/// A secondary limit without `retry-after` or a spent budget: GitHub says wait at least a minute.
const SECONDARY_WAIT: Duration = Duration::from_secs(60);
const SECONDARY_MAX_WAIT: Duration = Duration::from_secs(15 * 60);

/// A request to make.
pub(crate) struct Call<'a> {
    /// HTTP method.
    pub method: Method,
    /// Absolute URL.
    pub url: String,
    /// JSON body.
    pub body: Option<&'a serde_json::Value>,
    /// Retry 5xx here; off where the caller must see the first failure (JIT ghost creation).
    pub retry_5xx: bool,
}

/// An answer, read in full.
pub(crate) struct Reply {
    /// `METHOD /path` for errors and logs.
    pub endpoint: String,
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: HeaderMap,
    /// Response body.
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as `T`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, GitHubError> {
        serde_json::from_slice(&self.body).map_err(|source| GitHubError::Decode {
            endpoint: self.endpoint.clone(),
            source,
        })
    }

    /// A response header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `rel="next"` URL of the `Link` header (§1.3).
    pub fn next_link(&self) -> Option<String> {
        self.header("link")?.split(',').find_map(|part| {
            let (url, params) = part.split_once(';')?;
            let next = params
                .split(';')
                .any(|p| p.trim().replace(' ', "") == "rel=\"next\"");
            next.then(|| {
                url.trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_string()
            })
        })
    }

    fn error(&self) -> GitHubError {
        GitHubError::Status {
            endpoint: self.endpoint.clone(),
            status: self.status,
            message: self.message(),
        }
    }

    /// GitHub's `message`, or what the body was when it was not JSON (a proxy's 502 page).
    fn message(&self) -> String {
        #[derive(Deserialize)]
        struct ErrorBody {
            message: Option<String>,
        }
        if let Ok(ErrorBody { message: Some(m) }) = serde_json::from_slice(&self.body) {
            return m;
        }
        let kind = self.header("content-type").unwrap_or("no content type");
        if self.body.is_empty() {
            "empty body".to_string()
        } else {
            format!("non-JSON body ({kind}, {} bytes)", self.body.len())
        }
    }
}

/// The parts of an error body that identify a rate limit.
#[derive(Deserialize, Default)]
struct LimitBody {
    message: Option<String>,
    documentation_url: Option<String>,
}

#[derive(Default)]
struct Limits {
    blocked: Option<(SystemTime, bool)>,
    budget: Option<RateBudget>,
    /// Secondary limits in a row without `retry-after`: the wait doubles each time.
    strikes: u32,
    /// Requests by endpoint template and status (0: no answer), for metrics.
    counts: std::collections::BTreeMap<(String, u16), u64>,
}

/// The HTTP side of a client; shared by its clones.
pub(crate) struct Transport {
    http: reqwest::Client,
    api_url: String,
    timeout: Duration,
    limits: Mutex<Limits>,
}

impl Transport {
    /// A transport for the API at `api_url` (any trailing `/` dropped).
    pub fn new(api_url: &str, timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(USER_AGENT)
            .build()
            .unwrap_or_default();
        Transport {
            http,
            api_url: api_url.trim_end_matches('/').to_string(),
            timeout,
            limits: Mutex::new(Limits::default()),
        }
    }

    /// `path` (starting with `/`) on the API base.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.api_url)
    }

    /// True when `url` is on this API: a `Link` elsewhere is never followed with our token.
    pub fn owns(&self, url: &str) -> bool {
        url.strip_prefix(&self.api_url)
            .is_some_and(|rest| rest.starts_with('/'))
    }

    fn limits(&self) -> std::sync::MutexGuard<'_, Limits> {
        self.limits.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a request under its endpoint template (owner, repository and ids replaced, so
    /// the label set stays small).
    fn count(&self, endpoint: &str, status: u16) {
        let template = endpoint_template(endpoint);
        *self.limits().counts.entry((template, status)).or_default() += 1;
    }

    /// Requests so far by endpoint template and status (0: no answer).
    pub fn request_counts(&self) -> Vec<(String, u16, u64)> {
        self.limits()
            .counts
            .iter()
            .map(|((endpoint, status), n)| (endpoint.clone(), *status, *n))
            .collect()
    }

    /// The budget the last response reported.
    pub fn budget(&self) -> Option<RateBudget> {
        self.limits().budget
    }

    /// Until when requests are held back, if they are.
    pub fn blocked_until(&self) -> Option<SystemTime> {
        let limits = self.limits();
        limits
            .blocked
            .map(|(until, _)| until)
            .filter(|until| *until > SystemTime::now())
    }

    fn gate(&self) -> Result<(), GitHubError> {
        match self.limits().blocked {
            Some((until, secondary)) if until > SystemTime::now() => {
                Err(GitHubError::RateLimited { until, secondary })
            }
            _ => Ok(()),
        }
    }

    /// Sends `call` with `token`; a 2xx is `Ok`, anything else a typed error.
    pub async fn send(&self, call: &Call<'_>, token: &Secret) -> Result<Reply, GitHubError> {
        self.send_if(call, token, None).await
    }

    /// [`send`](Self::send) with `If-None-Match: etag` when given; then `304 Not Modified`
    /// is `Ok` too (GitHub does not charge it to the rate limit, `reference/github-api.md` §1.5).
    pub async fn send_if(
        &self,
        call: &Call<'_>,
        token: &Secret,
        etag: Option<&str>,
    ) -> Result<Reply, GitHubError> {
        let mut attempt = 0;
        loop {
            self.gate()?;
            let reply = self.send_once(call, token, etag).await?;
            self.observe(&reply);
            if (200..300).contains(&reply.status) || (reply.status == 304 && etag.is_some()) {
                return Ok(reply);
            }
            if let Some(limited) = self.rate_limited(&reply) {
                return Err(limited);
            }
            attempt += 1;
            if reply.status < 500 || !call.retry_5xx || attempt >= ATTEMPTS {
                return Err(reply.error());
            }
            let delay = backoff(attempt);
            debug!(endpoint = %reply.endpoint, status = reply.status, attempt, ?delay, "server error; retrying");
            tokio::time::sleep(delay).await;
        }
    }

    async fn send_once(
        &self,
        call: &Call<'_>,
        token: &Secret,
        etag: Option<&str>,
    ) -> Result<Reply, GitHubError> {
        let path = call.url.strip_prefix(&self.api_url).unwrap_or(&call.url);
        let endpoint = format!("{} {}", call.method, path.split('?').next().unwrap_or(path));
        let mut request = self
            .http
            .request(call.method.clone(), &call.url)
            .header("Accept", "application/vnd.github+json")
            .header("X-GitHub-Api-Version", API_VERSION)
            .bearer_auth(token.expose());
        if let Some(body) = call.body {
            request = request.json(body);
        }
        if let Some(etag) = etag {
            request = request.header("If-None-Match", etag);
        }
        let transport = |source: reqwest::Error| {
            if source.is_timeout() {
                GitHubError::Timeout {
                    endpoint: endpoint.clone(),
                    after: self.timeout,
                }
            } else {
                GitHubError::Transport {
                    endpoint: endpoint.clone(),
                    source: source.without_url(),
                }
            }
        };
        let response = request.send().await.map_err(|e| {
            self.count(&endpoint, 0);
            transport(e)
        })?;
        let status = response.status().as_u16();
        self.count(&endpoint, status);
        let headers = response.headers().clone();
        let body = response.bytes().await.map_err(transport)?.to_vec();
        debug!(%endpoint, status, "github request");
        Ok(Reply {
            endpoint,
            status,
            headers,
            body,
        })
    }

    /// Records the budget; a spent one closes the gate until its reset, before GitHub says so.
    fn observe(&self, reply: &Reply) {
        let num = |name| {
            reply
                .header(name)
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        let mut limits = self.limits();
        if let (Some(limit), Some(remaining), Some(reset)) = (
            num("x-ratelimit-limit"),
            num("x-ratelimit-remaining"),
            num("x-ratelimit-reset"),
        ) {
            let reset_at = UNIX_EPOCH + Duration::from_secs(reset);
            limits.budget = Some(RateBudget {
                limit,
                remaining,
                reset_at,
            });
            if remaining == 0 && (200..300).contains(&reply.status) {
                block(&mut limits, reset_at + Duration::from_secs(1), false);
            }
        }
        if (200..300).contains(&reply.status) {
            limits.strikes = 0;
        }
    }

    /// Classifies a 403/429 as a primary or secondary limit (§1.5), closing the gate.
    fn rate_limited(&self, reply: &Reply) -> Option<GitHubError> {
        if reply.status != 403 && reply.status != 429 {
            return None;
        }
        let body: LimitBody = serde_json::from_slice(&reply.body).unwrap_or_default();
        let message = body.message.unwrap_or_default().to_ascii_lowercase();
        let doc = body.documentation_url.unwrap_or_default();
        // GOGH keys on the doc URL, octokit on the message: either is enough.
        let secondary = message.contains("secondary rate")
            || doc.ends_with("secondary-rate-limits")
            || doc.ends_with("#abuse-rate-limits");
        let num = |name| {
            reply
                .header(name)
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        let spent = num("x-ratelimit-remaining") == Some(0);
        if !secondary && !spent && reply.status != 429 {
            return None;
        }
        let now = SystemTime::now();
        let reset = num("x-ratelimit-reset").map(|s| UNIX_EPOCH + Duration::from_secs(s + 1));
        let mut limits = self.limits();
        let until = match (num("retry-after"), spent, reset) {
            (Some(secs), _, _) => now + Duration::from_secs(secs),
            (None, true, Some(reset)) => reset.max(now),
            _ => {
                limits.strikes += 1;
                let factor = 1u32 << (limits.strikes - 1).min(4);
                now + (SECONDARY_WAIT * factor).min(SECONDARY_MAX_WAIT)
            }
        };
        let secondary = secondary || !spent;
        let until = block(&mut limits, until, secondary);
        warn!(endpoint = %reply.endpoint, status = reply.status, secondary,
            until = %humantime::format_rfc3339_seconds(until), "GitHub rate limit: holding requests");
        Some(GitHubError::RateLimited { until, secondary })
    }
}

/// Closes the gate until `until` (never shortening it); returns the effective time.
fn block(limits: &mut Limits, until: SystemTime, secondary: bool) -> SystemTime {
    match limits.blocked {
        Some((current, _)) if current >= until => current,
        _ => {
            limits.blocked = Some((until, secondary));
            until
        }
    }
}

/// `FIRST_DELAY` doubled per attempt, jittered to 50–150 % so clients do not retry in step.
pub(crate) fn backoff(attempt: u32) -> Duration {
    let base = FIRST_DELAY * (1 << (attempt - 1).min(5));
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u32(attempt);
    let jitter = 0.5 + f64::from((hasher.finish() % 1000) as u32) / 1000.0;
    base.mul_f64(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(link: &str) -> Reply {
        let mut headers = HeaderMap::new();
        headers.insert("link", link.parse().expect("header"));
        Reply {
            endpoint: "GET /x".into(),
            status: 200,
            headers,
            body: Vec::new(),
        }
    }

    #[test]
    fn next_link_among_others() {
        let r = reply(
            r#"<http://h/x?page=1>; rel="prev", <http://h/x?page=3>; rel="next", <http://h/x?page=9>; rel="last""#,
        );
        assert_eq!(r.next_link().as_deref(), Some("http://h/x?page=3"));
        assert_eq!(
            reply(r#"<http://h/x?page=1>; rel="first""#).next_link(),
            None
        );
    }

    #[test]
    fn backoff_is_bounded() {
        let total: Duration = (1..ATTEMPTS).map(backoff).sum();
        assert!(total < Duration::from_secs(10), "{total:?}");
    }

    #[test]
    fn links_elsewhere_are_not_ours() {
        let t = Transport::new("http://h/api/v3/", Duration::from_secs(1));
        assert!(t.owns("http://h/api/v3/repos/a/b"));
        assert!(!t.owns("http://h/api/v3evil/repos"));
        assert!(!t.owns("http://evil/api/v3/repos"));
    }
}

/// `GET /repos/o/r/actions/runners/42` → `GET /repos/{owner}/{repo}/actions/runners/{id}`.
fn endpoint_template(endpoint: &str) -> String {
    let (method, path) = endpoint.split_once(' ').unwrap_or(("", endpoint));
    let mut parts: Vec<String> = path.split('/').map(str::to_string).collect();
    if parts.get(1).is_some_and(|p| p == "repos") && parts.len() > 3 {
        parts[2] = "{owner}".into();
        parts[3] = "{repo}".into();
    }
    for part in &mut parts {
        if !part.is_empty() && part.chars().all(|c| c.is_ascii_digit()) {
            *part = "{id}".into();
        }
    }
    format!("{method} {}", parts.join("/"))
}

#[cfg(test)]
mod template_tests {
    #[test]
    fn endpoints_become_templates() {
        assert_eq!(
            super::endpoint_template("DELETE /repos/o/r/actions/runners/42"),
            "DELETE /repos/{owner}/{repo}/actions/runners/{id}"
        );
        assert_eq!(
            super::endpoint_template("POST /app/installations/7/access_tokens"),
            "POST /app/installations/{id}/access_tokens"
        );
    }
}
