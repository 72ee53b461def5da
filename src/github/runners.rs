//! The runner endpoints (`reference/github-api.md` §2): tokens, JIT configurations, listing
//! with `Link` pagination, labels and deletion.

use reqwest::Method;
use tracing::{info, warn};

use super::transport::Call;
use super::types::{JitBody, RunnerList, TokenBody};
use super::{GitHubClient, GitHubError, JitConfig, RunnerRegistration};
use crate::config::Repo;
use crate::secret::Secret;

/// Pages followed at most: 100 runners a page, far beyond any repository's runners.
const MAX_PAGES: usize = 100;
/// JIT attempts when GitHub answers 5xx or does not answer (the runner may exist anyway).
const JIT_ATTEMPTS: u32 = 3;

fn call(method: Method, url: String, body: Option<&serde_json::Value>) -> Call<'_> {
    Call {
        method,
        url,
        body,
        retry_5xx: true,
    }
}

/// Percent-encodes a query value (runner names are usually plain, but never trust that).
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl GitHubClient {
    async fn token(&self, repo: &Repo, kind: &str) -> Result<Secret, GitHubError> {
        let url = self.runners_url(repo, &format!("/{kind}"));
        let body: TokenBody = self
            .send(repo, &call(Method::POST, url, None))
            .await?
            .json()?;
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

    /// Every registration at `url` and the pages its `Link: rel="next"` leads to.
    async fn list_from(
        &self,
        repo: &Repo,
        mut url: String,
    ) -> Result<Vec<RunnerRegistration>, GitHubError> {
        let mut all = Vec::new();
        for _ in 0..MAX_PAGES {
            let reply = self.send(repo, &call(Method::GET, url, None)).await?;
            all.extend(reply.json::<RunnerList>()?.runners);
            match reply.next_link() {
                Some(next) if self.inner.transport.owns(&next) => url = next,
                Some(_) => {
                    warn!(endpoint = %reply.endpoint, "ignoring a Link to another host");
                    break;
                }
                None => break,
            }
        }
        Ok(all)
    }

    /// The registration named `name` in `repo`, if any (compared ignoring case, as GitHub does).
    pub async fn find_runner(
        &self,
        repo: &Repo,
        name: &str,
    ) -> Result<Option<RunnerRegistration>, GitHubError> {
        // `?name=` is a hint (its exact semantics are undocumented): compare here as well.
        let url = self.runners_url(repo, &format!("?name={}&per_page=100", encode(name)));
        let list = self.list_from(repo, url).await?;
        Ok(list.into_iter().find(|r| r.name.eq_ignore_ascii_case(name)))
    }

    /// Every registration of `repo` (all pages).
    pub async fn list_runners(&self, repo: &Repo) -> Result<Vec<RunnerRegistration>, GitHubError> {
        self.list_from(repo, self.runners_url(repo, "?per_page=100"))
            .await
    }

    /// Registers a just-in-time runner `name` with exactly `labels` (defaults included).
    ///
    /// A 5xx or lost answer may still have created the runner, so the retry can get 409: then
    /// the registration of that name is deleted (never one running a job) and the call made once more.
    pub async fn generate_jitconfig(
        &self,
        repo: &Repo,
        name: &str,
        labels: &[String],
        work_folder: &str,
    ) -> Result<JitConfig, GitHubError> {
        let body = serde_json::json!({
            "name": name,
            "runner_group_id": 1,
            "labels": labels,
            "work_folder": work_folder,
        });
        let url = self.runners_url(repo, "/generate-jitconfig");
        let request = Call {
            retry_5xx: false,
            ..call(Method::POST, url, Some(&body))
        };
        let (mut attempt, mut maybe_created, mut repaired) = (0, false, false);
        loop {
            attempt += 1;
            let err = match self.send(repo, &request).await {
                Ok(reply) => {
                    let jit: JitBody = reply.json()?;
                    return Ok(JitConfig {
                        runner_id: jit.runner.id,
                        encoded: Secret::new(&jit.encoded_jit_config),
                    });
                }
                Err(err) => err,
            };
            let lost = matches!(
                err,
                GitHubError::Timeout { .. } | GitHubError::Transport { .. }
            );
            if (lost || err.status().is_some_and(|s| s >= 500)) && attempt < JIT_ATTEMPTS {
                warn!(runner = name, cause = %err, attempt, "JIT registration failed; retrying");
                maybe_created = true;
                tokio::time::sleep(super::transport::backoff(attempt)).await;
                continue;
            }
            if err.status() == Some(409) && maybe_created && !repaired {
                self.remove_ghost(repo, name).await?;
                repaired = true;
                continue;
            }
            return Err(err);
        }
    }

    /// Deletes the registration `name` left by a JIT call whose answer was lost, unless busy.
    async fn remove_ghost(&self, repo: &Repo, name: &str) -> Result<(), GitHubError> {
        let Some(ghost) = self.find_runner(repo, name).await? else {
            return Ok(());
        };
        if ghost.busy {
            return Err(GitHubError::NameInUse {
                name: name.to_string(),
                id: ghost.id,
            });
        }
        info!(
            runner = name,
            id = ghost.id,
            "deleting the registration a failed JIT call left"
        );
        self.delete_runner(repo, ghost.id).await
    }

    /// Replaces the custom labels of registration `id`.
    pub async fn set_labels(
        &self,
        repo: &Repo,
        id: u64,
        labels: &[String],
    ) -> Result<(), GitHubError> {
        let url = self.runners_url(repo, &format!("/{id}/labels"));
        let body = serde_json::json!({ "labels": labels });
        self.send(repo, &call(Method::PUT, url, Some(&body)))
            .await
            .map(drop)
    }

    /// Deletes registration `id`; one already gone counts as deleted, a busy one is `Busy`.
    pub async fn delete_runner(&self, repo: &Repo, id: u64) -> Result<(), GitHubError> {
        let url = self.runners_url(repo, &format!("/{id}"));
        match self.send(repo, &call(Method::DELETE, url, None)).await {
            Ok(_) => Ok(()),
            Err(err) if err.status() == Some(404) => Ok(()),
            Err(GitHubError::Status {
                endpoint,
                status: 422,
                message,
            }) => Err(GitHubError::Busy { endpoint, message }),
            Err(err) => Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn query_values_are_encoded() {
        assert_eq!(super::encode("ci-1.a_b~"), "ci-1.a_b~");
        assert_eq!(super::encode("a b&c"), "a%20b%26c");
    }
}
