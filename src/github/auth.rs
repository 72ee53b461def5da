//! Credentials (`reference/github-api.md` §1.6, §4): a PAT read on every use, so a rotated
//! `token_file` takes effect at once, or a GitHub App's installation token, minted with an RS256
//! JWT and cached per installation until 5 minutes before it expires.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::Method;
use serde::Serialize;
use tracing::{debug, info};

use super::error::{AppKeyError, GitHubError};
use super::transport::{Call, Transport};
use super::types::{parse_time, InstallationBody, TokenBody};
use crate::config::{GitHubAuth, Repo};
use crate::secret::{self, Secret};

/// Renew an installation token this long before GitHub says it expires.
const RENEW_EARLY: Duration = Duration::from_secs(5 * 60);
/// Expiry assumed when GitHub's `expires_at` cannot be read (tokens live an hour).
const FALLBACK_LIFETIME: Duration = Duration::from_secs(10 * 60);

/// The credential sent with one request.
pub(crate) struct Credential {
    /// The bearer token.
    pub token: Secret,
    /// The installation it belongs to, for an App token.
    pub installation: Option<u64>,
}

/// Where credentials come from.
pub(crate) enum Auth {
    None,
    Env(String),
    File(PathBuf),
    App(AppAuth),
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::None => f.write_str("None"),
            Auth::Env(var) => write!(f, "TokenEnv({var})"),
            Auth::File(path) => write!(f, "TokenFile({})", path.display()),
            Auth::App(app) => write!(f, "App({})", app.id),
        }
    }
}

/// A GitHub App and what it has learnt: installations by repository, tokens by installation.
pub(crate) struct AppAuth {
    id: u64,
    key_file: PathBuf,
    installation_id: Option<u64>,
    // A tokio mutex held across the lookup and the mint, so concurrent calls mint one token.
    cache: tokio::sync::Mutex<AppCache>,
}

#[derive(Default)]
struct AppCache {
    installations: HashMap<String, u64>,
    tokens: HashMap<u64, (Secret, SystemTime)>,
}

#[derive(Serialize)]
struct Claims {
    iat: u64,
    exp: u64,
    iss: String,
}

impl Auth {
    /// The source `auth` names.
    pub fn new(auth: &GitHubAuth) -> Self {
        match auth {
            GitHubAuth::None => Auth::None,
            GitHubAuth::TokenEnv(var) => Auth::Env(var.clone()),
            GitHubAuth::TokenFile(path) => Auth::File(path.clone()),
            GitHubAuth::App {
                id,
                private_key_file,
                installation_id,
            } => Auth::App(AppAuth {
                id: *id,
                key_file: private_key_file.clone(),
                installation_id: *installation_id,
                cache: tokio::sync::Mutex::default(),
            }),
        }
    }

    /// The credential for a request about `repo`.
    pub async fn credential(&self, t: &Transport, repo: &Repo) -> Result<Credential, GitHubError> {
        let token = match self {
            Auth::None => return Err(GitHubError::NoAuth),
            Auth::Env(var) => secret::from_env(var)?,
            Auth::File(path) => secret::from_file(path)?,
            Auth::App(app) => return app.credential(t, repo).await,
        };
        Ok(Credential {
            token,
            installation: None,
        })
    }

    /// Forgets an installation token GitHub refused (expired early or revoked).
    pub async fn invalidate(&self, installation: u64) {
        if let Auth::App(app) = self {
            app.cache.lock().await.tokens.remove(&installation);
        }
    }
}

impl AppAuth {
    async fn credential(&self, t: &Transport, repo: &Repo) -> Result<Credential, GitHubError> {
        let mut cache = self.cache.lock().await;
        let installation = match self.installation_id {
            Some(id) => id,
            None => self.installation(t, &mut cache, repo).await?,
        };
        let now = SystemTime::now();
        if let Some((token, expires)) = cache.tokens.get(&installation) {
            if now + RENEW_EARLY < *expires {
                return Ok(Credential {
                    token: token.clone(),
                    installation: Some(installation),
                });
            }
        }
        let (token, expires) = self.mint(t, installation).await?;
        cache.tokens.insert(installation, (token.clone(), expires));
        Ok(Credential {
            token,
            installation: Some(installation),
        })
    }

    /// `GET /repos/{o}/{r}/installation`, cached per repository (installations rarely move).
    async fn installation(
        &self,
        t: &Transport,
        cache: &mut AppCache,
        repo: &Repo,
    ) -> Result<u64, GitHubError> {
        let key = format!("{}/{}", repo.owner, repo.name).to_ascii_lowercase();
        if let Some(id) = cache.installations.get(&key) {
            return Ok(*id);
        }
        let call = Call {
            method: Method::GET,
            url: t.url(&format!("/repos/{}/{}/installation", repo.owner, repo.name)),
            body: None,
            retry_5xx: true,
        };
        let found = match t.send(&call, &self.jwt()?).await {
            Err(err) if err.status() == Some(404) => {
                return Err(GitHubError::NotInstalled {
                    app_id: self.id,
                    repo: key,
                })
            }
            other => other?.json::<InstallationBody>()?,
        };
        debug!(app_id = self.id, repo = %key, installation = found.id, "found the App installation");
        cache.installations.insert(key, found.id);
        Ok(found.id)
    }

    /// `POST /app/installations/{id}/access_tokens`, narrowed to what corral needs.
    async fn mint(
        &self,
        t: &Transport,
        installation: u64,
    ) -> Result<(Secret, SystemTime), GitHubError> {
        let body = serde_json::json!({"permissions": {"administration": "write"}});
        let call = Call {
            method: Method::POST,
            url: t.url(&format!("/app/installations/{installation}/access_tokens")),
            body: Some(&body),
            retry_5xx: true,
        };
        let reply: TokenBody = t.send(&call, &self.jwt()?).await?.json()?;
        let expires = reply
            .expires_at
            .as_deref()
            .and_then(parse_time)
            .unwrap_or_else(|| SystemTime::now() + FALLBACK_LIFETIME);
        info!(app_id = self.id, installation, expires = %humantime::format_rfc3339_seconds(expires),
            "minted a GitHub App installation token");
        Ok((Secret::new(&reply.token), expires))
    }

    /// A fresh App JWT: `iat` backdated 60 s and `exp` 9 min ahead, so a fast local clock
    /// still passes GitHub's 10-minute limit (§4.1). The key is read each time: it may rotate.
    fn jwt(&self) -> Result<Secret, GitHubError> {
        let key_error = |source| GitHubError::AppKey {
            path: self.key_file.clone(),
            source,
        };
        crate::secret::warn_if_exposed(&self.key_file);
        let pem = std::fs::read(&self.key_file).map_err(|e| key_error(AppKeyError::Read(e)))?;
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(&pem)
            .map_err(|e| key_error(AppKeyError::Key(e)))?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let claims = Claims {
            iat: now.saturating_sub(60),
            exp: now + 540,
            iss: self.id.to_string(),
        };
        let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        let jwt = jsonwebtoken::encode(&header, &claims, &key)
            .map_err(|e| key_error(AppKeyError::Key(e)))?;
        Ok(Secret::new(&jwt))
    }
}
