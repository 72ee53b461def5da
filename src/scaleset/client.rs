//! The admin side: the connection (registration token → `/actions/runner-registration` →
//! tenant URL and admin JWT, renewed a minute before its `exp`, §1), one request with the
//! protocol's headers and retries (§7.1), and the tenant calls on scale sets and runners
//! (§2, §6).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::Method;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use tokio::sync::Mutex;
use tracing::{debug, info};

use super::error::ScaleSetError;
use super::types::{ErrorBody, List, ScaleSet};
use crate::config::Repo;
use crate::github::GitHubClient;
use crate::secret::Secret;

/// The API version every tenant call names.
const API_VERSION: &str = "6.0-preview";
/// An admin token is renewed this long before it expires.
const RENEW_BEFORE: Duration = Duration::from_secs(60);
/// Assumed lifetime of an admin token whose `exp` cannot be read.
const UNKNOWN_TTL: Duration = Duration::from_secs(600);
/// Tries of a call the service answers 429 or 5xx (not 501).
const ATTEMPTS: u32 = 5;
/// Ordinary calls give up after this; the long poll has its own, longer timeout.
const TIMEOUT: Duration = Duration::from_secs(30);
const USER_AGENT: &str = concat!("corral/", env!("CARGO_PKG_VERSION"), " (scaleset)");

/// A client for one repository's scale sets; clones share the admin connection.
#[derive(Clone)]
pub struct ScaleSetClient {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub http: reqwest::Client,
    github: GitHubClient,
    api_url: String,
    repo: Repo,
    admin: Mutex<Option<Admin>>,
    /// The first retry's wait (tests shorten it).
    pub retry_delay: Duration,
}

struct Admin {
    /// Tenant base, ending with `/`.
    tenant: String,
    token: Secret,
    renew_at: SystemTime,
}

/// An answer, read in full, its BOM dropped.
pub(super) struct Reply {
    pub endpoint: String,
    pub status: u16,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ScaleSetError> {
        serde_json::from_slice(&self.body).map_err(|source| ScaleSetError::Decode {
            endpoint: self.endpoint.clone(),
            source,
        })
    }

    pub fn error(&self) -> ScaleSetError {
        let body: ErrorBody = serde_json::from_slice(&self.body).unwrap_or_default();
        // `GitHub.Actions….RunnerScaleSetSessionConflictException, GitHub.Actions…` → the name.
        let type_name = body.type_name.split(',').next().unwrap_or("");
        let type_name = type_name.rsplit('.').next().unwrap_or("").to_string();
        let message = if body.message.is_empty() {
            String::from_utf8_lossy(&self.body)
                .chars()
                .take(200)
                .collect()
        } else {
            body.message
        };
        ScaleSetError::Status {
            endpoint: self.endpoint.clone(),
            status: self.status,
            type_name,
            message,
        }
    }
}

/// A request: what to send and whether a 5xx may be tried again.
pub(super) struct Request<'a> {
    pub method: Method,
    pub url: String,
    pub bearer: &'a Secret,
    pub body: Option<&'a Value>,
    pub headers: &'a [(&'a str, String)],
    pub timeout: Duration,
    /// Off for a call whose retry could clash with what the lost first try did (a session).
    pub retry: bool,
}

/// `exp` of a JWT, read without verifying it (the client only schedules its renewal).
fn jwt_expiry(token: &str) -> Option<SystemTime> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let exp = serde_json::from_slice::<Value>(&bytes).ok()?["exp"].as_u64()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(exp))
}

/// `url` with `api-version` added unless it has one.
fn versioned(url: String) -> String {
    if url.contains("api-version=") {
        return url;
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}api-version={API_VERSION}")
}

/// Percent-encodes a query value.
pub(super) fn encode(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC).to_string()
}

impl ScaleSetClient {
    /// A client for `repo`'s scale sets, with `github` for registration tokens and the REST
    /// base `api_url` (the admin exchange is `{api_url}/actions/runner-registration`).
    pub fn new(github: GitHubClient, api_url: &str, repo: Repo) -> Self {
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .build()
            .unwrap_or_default();
        ScaleSetClient {
            inner: Arc::new(Inner {
                http,
                github,
                api_url: api_url.trim_end_matches('/').to_string(),
                repo,
                admin: Mutex::new(None),
                retry_delay: Duration::from_secs(1),
            }),
        }
    }

    /// The same client with retries starting after `delay` (tests).
    #[must_use]
    pub fn with_retry_delay(self, delay: Duration) -> Self {
        let inner = Inner {
            http: self.inner.http.clone(),
            github: self.inner.github.clone(),
            api_url: self.inner.api_url.clone(),
            repo: self.inner.repo.clone(),
            admin: Mutex::new(None),
            retry_delay: delay,
        };
        ScaleSetClient {
            inner: Arc::new(inner),
        }
    }

    /// Sends `req`, trying 429 and 5xx (but 501) again with a doubling wait, or the
    /// `Retry-After` seconds; any answer else is returned as it is.
    pub(super) async fn send(&self, req: &Request<'_>) -> Result<Reply, ScaleSetError> {
        let path = req.url.split('?').next().unwrap_or(&req.url);
        let path = path
            .split("://")
            .nth(1)
            .map_or(path, |p| p.find('/').map_or(p, |i| &p[i..]));
        let endpoint = format!("{} {path}", req.method);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut builder = self
                .inner
                .http
                .request(req.method.clone(), &req.url)
                .timeout(req.timeout)
                .bearer_auth(req.bearer.expose())
                .header("Content-Type", "application/json");
            for (name, value) in req.headers {
                builder = builder.header(*name, value);
            }
            if let Some(body) = req.body {
                builder = builder.body(body.to_string());
            }
            let sent = builder.send().await;
            let retry_after = match sent {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let retry_after = resp
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
                    let retryable = status == 429 || (status >= 500 && status != 501);
                    if !retryable || !req.retry || attempt >= ATTEMPTS {
                        let body = resp.bytes().await.unwrap_or_default();
                        let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&body).to_vec();
                        return Ok(Reply {
                            endpoint,
                            status,
                            body,
                        });
                    }
                    retry_after.map(Duration::from_secs)
                }
                Err(source) if !req.retry && !source.is_connect() || attempt >= ATTEMPTS => {
                    return Err(ScaleSetError::Http { endpoint, source });
                }
                Err(_) => None,
            };
            let delay = retry_after.unwrap_or_else(|| {
                (self.inner.retry_delay * (1 << (attempt - 1).min(5))).min(Duration::from_secs(30))
            });
            debug!(%endpoint, attempt, ?delay, "scale-set service: retrying");
            tokio::time::sleep(delay).await;
        }
    }

    /// The tenant base and a live admin token, renewing them when due.
    async fn admin(&self) -> Result<(String, Secret), ScaleSetError> {
        let mut admin = self.inner.admin.lock().await;
        if let Some(a) = admin.as_ref().filter(|a| a.renew_at > SystemTime::now()) {
            return Ok((a.tenant.clone(), a.token.clone()));
        }
        let fresh = self.connect().await?;
        let out = (fresh.tenant.clone(), fresh.token.clone());
        *admin = Some(fresh);
        Ok(out)
    }

    /// The tenant URL of `path`, with its `api-version`.
    pub(super) async fn tenant_url(&self, path: &str) -> Result<String, ScaleSetError> {
        let (tenant, _) = self.admin().await?;
        Ok(versioned(format!("{tenant}{path}")))
    }

    /// Drops the admin token (the service refused it early).
    async fn forget_admin(&self) {
        *self.inner.admin.lock().await = None;
    }

    /// §1.2–1.3: a registration token, exchanged for the tenant URL and an admin JWT.
    async fn connect(&self) -> Result<Admin, ScaleSetError> {
        let registration = self
            .inner
            .github
            .registration_token(&self.inner.repo)
            .await
            .map_err(ScaleSetError::GitHub)?;
        let body =
            json!({"url": self.inner.repo.url.trim_end_matches('/'), "runner_event": "register"});
        let url = format!("{}/actions/runner-registration", self.inner.api_url);
        let endpoint = "POST /actions/runner-registration".to_string();
        let resp = self
            .inner
            .http
            .post(&url)
            .timeout(TIMEOUT)
            .header(
                "Authorization",
                format!("RemoteAuth {}", registration.expose()),
            )
            .json(&body)
            .send()
            .await
            .map_err(|source| ScaleSetError::Http {
                endpoint: endpoint.clone(),
                source,
            })?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.unwrap_or_default();
        let reply = Reply {
            endpoint,
            status,
            body: bytes
                .strip_prefix(b"\xEF\xBB\xBF")
                .unwrap_or(&bytes)
                .to_vec(),
        };
        if !(200..300).contains(&status) {
            return Err(reply.error());
        }
        let v: Value = reply.json()?;
        let (Some(tenant), Some(token)) = (v["url"].as_str(), v["token"].as_str()) else {
            return Err(ScaleSetError::Connection);
        };
        if tenant.is_empty() || token.is_empty() {
            return Err(ScaleSetError::Connection);
        }
        let expires = jwt_expiry(token).unwrap_or_else(|| SystemTime::now() + UNKNOWN_TTL);
        let renew_at = expires
            .checked_sub(RENEW_BEFORE)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        info!(repo = %self.inner.repo.url, expires = %humantime::format_rfc3339_seconds(expires),
            "scale-set admin connection");
        Ok(Admin {
            tenant: format!("{}/", tenant.trim_end_matches('/')),
            token: Secret::new(token),
            renew_at,
        })
    }

    /// A tenant call on `path` (relative to the tenant base); a 401 renews the admin token
    /// and tries once more. Returns the reply, 2xx or not.
    pub(super) async fn tenant(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        retry: bool,
    ) -> Result<Reply, ScaleSetError> {
        for first in [true, false] {
            let (tenant, token) = self.admin().await?;
            let req = Request {
                method: method.clone(),
                url: versioned(format!("{tenant}{path}")),
                bearer: &token,
                body,
                headers: &[],
                timeout: TIMEOUT,
                retry,
            };
            let reply = self.send(&req).await?;
            if reply.status == 401 && first {
                self.forget_admin().await;
                continue;
            }
            return Ok(reply);
        }
        unreachable!("the loop returns on its second turn")
    }

    /// A tenant call that must succeed, decoded.
    async fn tenant_json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<T, ScaleSetError> {
        let reply = self.tenant(method, path, body, true).await?;
        if !(200..300).contains(&reply.status) {
            return Err(reply.error());
        }
        reply.json()
    }

    /// The scale set named `name` in the Default runner group, if there is one.
    pub async fn find_scale_set(&self, name: &str) -> Result<Option<ScaleSet>, ScaleSetError> {
        let path = format!(
            "_apis/runtime/runnerscalesets?runnerGroupId=1&name={}",
            encode(name)
        );
        let list: List<ScaleSet> = self.tenant_json(Method::GET, &path, None).await?;
        Ok(list
            .value
            .into_iter()
            .find(|s| s.name.eq_ignore_ascii_case(name)))
    }

    /// The scale set `name` with exactly `labels` (the name first): adopted when it exists
    /// (its labels set if they differ), else created. Runner group: Default (1).
    pub async fn ensure_scale_set(
        &self,
        name: &str,
        labels: &[String],
    ) -> Result<ScaleSet, ScaleSetError> {
        let labels_json: Vec<Value> = labels
            .iter()
            .map(|l| json!({"name": l, "type": "System"}))
            .collect();
        if let Some(found) = self.find_scale_set(name).await? {
            let have: Vec<&str> = found.labels.iter().map(|l| l.name.as_str()).collect();
            if have
                .iter()
                .map(|l| l.to_lowercase())
                .ne(labels.iter().map(|l| l.to_lowercase()))
            {
                let path = format!("_apis/runtime/runnerscalesets/{}", found.id);
                let change = json!({"labels": labels_json});
                return self.tenant_json(Method::PATCH, &path, Some(&change)).await;
            }
            return Ok(found);
        }
        let body = json!({
            "name": name, "runnerGroupId": 1, "labels": labels_json,
            "RunnerSetting": {"disableUpdate": true},
        });
        let set: ScaleSet = self
            .tenant_json(Method::POST, "_apis/runtime/runnerscalesets", Some(&body))
            .await?;
        info!(scale_set = %set.name, id = set.id, "scale set created");
        Ok(set)
    }

    /// Deletes scale set `id`; one already gone is fine. Refused (400) while a runner of
    /// it runs a job.
    pub async fn delete_scale_set(&self, id: u64) -> Result<(), ScaleSetError> {
        let path = format!("_apis/runtime/runnerscalesets/{id}");
        let reply = self.tenant(Method::DELETE, &path, None, true).await?;
        match reply.status {
            200..=299 | 404 => Ok(()),
            _ => Err(reply.error()),
        }
    }

    /// A just-in-time runner `name` of scale set `set`: its id and the encoded config (a
    /// credential). A leftover runner of that name in the same set is deleted first.
    pub async fn generate_jit_config(
        &self,
        set: u64,
        name: &str,
    ) -> Result<(u64, Secret), ScaleSetError> {
        let path = format!("_apis/runtime/runnerscalesets/{set}/generatejitconfig");
        let body = json!({"name": name, "workFolder": "_work"});
        for first in [true, false] {
            let reply = self.tenant(Method::POST, &path, Some(&body), false).await?;
            if (200..300).contains(&reply.status) {
                let v: Value = reply.json()?;
                let id = v["runner"]["id"].as_u64().unwrap_or(0);
                let config = v["encodedJITConfig"].as_str().unwrap_or_default();
                return Ok((id, Secret::new(config)));
            }
            let err = reply.error();
            if !(first && err.is("AgentExists")) {
                return Err(err);
            }
            self.remove_leftover(set, name).await?;
        }
        unreachable!("the loop returns on its second turn")
    }

    /// Deletes the runner `name` if it belongs to scale set `set` (never one running a job).
    async fn remove_leftover(&self, set: u64, name: &str) -> Result<(), ScaleSetError> {
        let path = format!(
            "_apis/distributedtask/pools/0/agents?agentName={}",
            encode(name)
        );
        let list: List<Value> = self.tenant_json(Method::GET, &path, None).await?;
        for agent in list.value {
            if agent["runnerScaleSetId"].as_u64() == Some(set) {
                if let Some(id) = agent["id"].as_u64() {
                    self.delete_runner(id).await?;
                }
            }
        }
        Ok(())
    }

    /// Deletes runner `id`; one already gone is fine; a busy one is an error
    /// (`JobStillRunningException`).
    pub async fn delete_runner(&self, id: u64) -> Result<(), ScaleSetError> {
        let path = format!("_apis/distributedtask/pools/0/agents/{id}");
        let reply = self.tenant(Method::DELETE, &path, None, true).await?;
        match reply.status {
            200..=299 | 404 => Ok(()),
            _ => Err(reply.error()),
        }
    }
}
