//! A minimal GitHub REST client for repository runners (`reference/github-api.md` §1–2):
//! registration and removal tokens, listing and deleting registrations.
//!
//! Every request carries the documented headers; the PAT is read on each use (a rotated
//! `token_file` takes effect at once) and never appears in an error.

use std::time::Duration;

use serde::Deserialize;

use crate::config::{GitHub, GitHubAuth, Repo};
use crate::secret::{self, Secret, SecretError};

const API_VERSION: &str = "2022-11-28";
const USER_AGENT: &str = concat!("corral/", env!("CARGO_PKG_VERSION"));
const TIMEOUT: Duration = Duration::from_secs(30);

/// What can go wrong talking to GitHub.
#[derive(Debug, thiserror::Error)]
pub enum GitHubError {
    /// No usable credential.
    #[error("no GitHub credential")]
    Credential(#[from] SecretError),
    /// `github.app` is not supported by this client yet.
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
        /// GitHub's `message`.
        message: String,
    },
}

impl GitHubError {
    /// The HTTP status, when GitHub answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            GitHubError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A registration on GitHub, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RunnerRegistration {
    /// Runner id.
    pub id: u64,
    /// Runner name.
    pub name: String,
    /// `online` / `offline` (kept as text: the API does not fix the set).
    pub status: String,
    /// Running a job.
    pub busy: bool,
    /// Its labels, read-only (default) and custom.
    #[serde(default)]
    pub labels: Vec<RunnerLabel>,
}

/// A runner label as GitHub lists it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RunnerLabel {
    /// The label.
    pub name: String,
    /// `read-only` (set at registration) or `custom`.
    #[serde(default, rename = "type")]
    pub kind: String,
}

impl RunnerRegistration {
    /// The custom labels (those a runner entry's `labels` control).
    pub fn custom_labels(&self) -> Vec<String> {
        self.labels
            .iter()
            .filter(|l| l.kind != "read-only")
            .map(|l| l.name.clone())
            .collect()
    }
}

/// A just-in-time runner configuration (`generate-jitconfig`).
#[derive(Debug, Clone)]
pub struct JitConfig {
    /// The registration it created.
    pub runner_id: u64,
    /// What the listener takes in `ACTIONS_RUNNER_INPUT_JITCONFIG`; a credential.
    pub encoded: Secret,
}

/// The client.
#[derive(Debug, Clone)]
pub struct GitHubClient {
    http: reqwest::Client,
    api_url: String,
    auth: GitHubAuth,
}

#[derive(Deserialize)]
struct TokenBody {
    token: String,
}

#[derive(Deserialize)]
struct RunnerList {
    runners: Vec<RunnerRegistration>,
}

#[derive(Deserialize)]
struct JitBody {
    runner: RunnerId,
    encoded_jit_config: String,
}

#[derive(Deserialize)]
struct RunnerId {
    id: u64,
}

#[derive(Deserialize)]
struct ErrorBody {
    message: Option<String>,
}

impl GitHubClient {
    /// A client for `github`'s API.
    pub fn new(github: &GitHub) -> Self {
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .user_agent(USER_AGENT)
            .build()
            .unwrap_or_default();
        GitHubClient {
            http,
            api_url: github.api_url.clone(),
            auth: github.auth.clone(),
        }
    }

    /// True when a credential is configured (tokens can be minted, registrations deleted).
    pub fn has_auth(&self) -> bool {
        self.auth != GitHubAuth::None
    }

    fn credential(&self) -> Result<Secret, GitHubError> {
        match &self.auth {
            GitHubAuth::TokenEnv(var) => Ok(secret::from_env(var)?),
            GitHubAuth::TokenFile(path) => Ok(secret::from_file(path)?),
            GitHubAuth::App { .. } => Err(GitHubError::AppUnsupported),
            GitHubAuth::None => Err(GitHubError::NoAuth),
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<reqwest::Response, GitHubError> {
        let token = self.credential()?;
        let endpoint = format!("{method} {}", path.split('?').next().unwrap_or(path));
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.api_url))
            .header("Accept", "application/vnd.github+json")
            .header("X-GitHub-Api-Version", API_VERSION)
            .bearer_auth(token.expose());
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|source| GitHubError::Transport {
                endpoint: endpoint.clone(),
                source: source.without_url(),
            })?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let message = response
            .json::<ErrorBody>()
            .await
            .ok()
            .and_then(|b| b.message)
            .unwrap_or_else(|| "no message".to_string());
        Err(GitHubError::Status {
            endpoint,
            status,
            message,
        })
    }

    /// `send`, then the body as JSON.
    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<T, GitHubError> {
        let endpoint = format!("{method} {path}");
        self.send(method, path, body)
            .await?
            .json()
            .await
            .map_err(|source| GitHubError::Transport {
                endpoint,
                source: source.without_url(),
            })
    }

    async fn token(&self, repo: &Repo, kind: &str) -> Result<Secret, GitHubError> {
        let path = format!("/repos/{}/{}/actions/runners/{kind}", repo.owner, repo.name);
        let body: TokenBody = self.get_json(reqwest::Method::POST, &path, None).await?;
        Ok(Secret::new(&body.token))
    }

    /// A one-hour registration token for `repo`.
    pub async fn registration_token(&self, repo: &Repo) -> Result<Secret, GitHubError> {
        self.token(repo, "registration-token").await
    }

    /// A one-hour removal token for `repo`.
    pub async fn remove_token(&self, repo: &Repo) -> Result<Secret, GitHubError> {
        self.token(repo, "remove-token").await
    }

    /// The registration named `name` in `repo`, if any (compared ignoring case, as GitHub does).
    pub async fn find_runner(
        &self,
        repo: &Repo,
        name: &str,
    ) -> Result<Option<RunnerRegistration>, GitHubError> {
        let path = format!(
            "/repos/{}/{}/actions/runners?name={name}&per_page=100",
            repo.owner, repo.name
        );
        let list: RunnerList = self.get_json(reqwest::Method::GET, &path, None).await?;
        Ok(list
            .runners
            .into_iter()
            .find(|r| r.name.eq_ignore_ascii_case(name)))
    }

    /// Every registration of `repo` (all pages).
    pub async fn list_runners(&self, repo: &Repo) -> Result<Vec<RunnerRegistration>, GitHubError> {
        let mut all = Vec::new();
        for page in 1.. {
            let path = format!(
                "/repos/{}/{}/actions/runners?per_page=100&page={page}",
                repo.owner, repo.name
            );
            let list: RunnerList = self.get_json(reqwest::Method::GET, &path, None).await?;
            let done = list.runners.len() < 100;
            all.extend(list.runners);
            if done {
                break;
            }
        }
        Ok(all)
    }

    /// Registers a just-in-time runner `name` with exactly `labels` (defaults included).
    pub async fn generate_jitconfig(
        &self,
        repo: &Repo,
        name: &str,
        labels: &[String],
        work_folder: &str,
    ) -> Result<JitConfig, GitHubError> {
        let path = format!(
            "/repos/{}/{}/actions/runners/generate-jitconfig",
            repo.owner, repo.name
        );
        let body = serde_json::json!({
            "name": name,
            "runner_group_id": 1,
            "labels": labels,
            "work_folder": work_folder,
        });
        let jit: JitBody = self
            .get_json(reqwest::Method::POST, &path, Some(&body))
            .await?;
        Ok(JitConfig {
            runner_id: jit.runner.id,
            encoded: Secret::new(&jit.encoded_jit_config),
        })
    }

    /// Replaces the custom labels of registration `id`.
    pub async fn set_labels(
        &self,
        repo: &Repo,
        id: u64,
        labels: &[String],
    ) -> Result<(), GitHubError> {
        let path = format!(
            "/repos/{}/{}/actions/runners/{id}/labels",
            repo.owner, repo.name
        );
        let body = serde_json::json!({ "labels": labels });
        self.send(reqwest::Method::PUT, &path, Some(&body))
            .await
            .map(drop)
    }

    /// Deletes registration `id`; one that is already gone counts as deleted.
    pub async fn delete_runner(&self, repo: &Repo, id: u64) -> Result<(), GitHubError> {
        let path = format!("/repos/{}/{}/actions/runners/{id}", repo.owner, repo.name);
        match self.send(reqwest::Method::DELETE, &path, None).await {
            Err(err) if err.status() == Some(404) => Ok(()),
            other => other.map(|_| ()),
        }
    }
}
