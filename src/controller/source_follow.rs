//! The controller's side of `source.git`: one fetch task per source, and each fetched
//! revision checked with the local file before it replaces the desired state, whole.

use std::path::Path;
use std::sync::Arc;

use tokio::sync::{mpsc, Notify};
use tracing::{error, info, warn};

use super::Trigger;
use crate::config::{self, Desired, GitSource};
use crate::gitsource::{Fetched, Follower};
use crate::status::SourceStatus;

/// What the controller knows of its source between passes.
#[derive(Default)]
pub struct SourceState {
    follower: Option<Follower>,
    /// Shared with the webhook: a push fetches at once.
    kick: Arc<Notify>,
    /// The URL followed, shared with the webhook to match a push's repository.
    watched: Arc<std::sync::Mutex<Option<String>>>,
    fetched_at: Option<String>,
    /// Why the newest fetched commit is not in force.
    error: Option<String>,
    /// The newest commit refused, so it is not checked (and logged) again every interval.
    refused: Option<String>,
}

/// Hands each fetch to the controller loop as a trigger; `false` once the loop is gone.
fn deliver_to(triggers: mpsc::UnboundedSender<Trigger>) -> impl FnMut(Fetched) -> bool + Send {
    move |fetched| {
        triggers
            .send(Trigger::SourceFetched(Box::new(fetched)))
            .is_ok()
    }
}

fn same_source(a: &GitSource, b: &GitSource) -> bool {
    GitSource {
        revision: None,
        ..a.clone()
    } == GitSource {
        revision: None,
        ..b.clone()
    }
}

impl SourceState {
    /// What a valid `push` delivery does: fetch at once when it is for the source repository.
    pub fn on_push(&self) -> crate::api::OnPush {
        let kick = self.kick.clone();
        let watched = self.watched.clone();
        Arc::new(move |payload: &serde_json::Value| {
            let url = watched.lock().ok().and_then(|w| w.clone());
            match url {
                Some(url) if push_is_for(payload, &url) => {
                    info!(url, "a push to the source repository: fetching now");
                    kick.notify_one();
                }
                _ => tracing::debug!("a push delivery for another repository"),
            }
        })
    }

    /// Starts, restarts or stops the fetch task so it follows `desired`'s source.
    pub fn follow(&mut self, desired: &Desired, triggers: &mpsc::UnboundedSender<Trigger>) {
        if let Ok(mut watched) = self.watched.lock() {
            *watched = desired.source.as_ref().map(|s| s.url.clone());
        }
        match (&desired.source, &self.follower) {
            (None, None) => {}
            (None, Some(_)) => {
                info!("the config has no source any more: fetching stops");
                *self = SourceState {
                    kick: self.kick.clone(),
                    watched: self.watched.clone(),
                    ..SourceState::default()
                };
            }
            (Some(want), Some(have)) if same_source(want, &have.source) => {}
            (Some(want), _) => {
                info!(url = %want.url, git_ref = %want.git_ref, path = %want.path,
                    interval = ?want.interval, revision = ?want.revision, "following the source");
                self.error = None;
                self.refused = None;
                self.follower = Some(Follower::spawn(
                    GitSource {
                        revision: None,
                        ..want.clone()
                    },
                    &desired.state_dir,
                    deliver_to(triggers.clone()),
                    self.kick.clone(),
                ));
            }
        }
    }

    /// Stops following (corral is stopping); returns once the fetch task has ended.
    pub async fn stop(&mut self) {
        if let Some(follower) = self.follower.take() {
            follower.stop().await;
        }
    }

    /// The local file changed and loads: a commit refused with the old one is checked again.
    pub fn local_changed(&mut self) {
        self.refused = None;
    }

    /// Takes one fetch: the desired state to apply when it brings a new, valid revision.
    pub fn fetched(
        &mut self,
        fetched: Fetched,
        desired: &Desired,
        config_path: &Path,
    ) -> Option<Desired> {
        let source = desired.source.as_ref()?;
        self.fetched_at = Some(humantime::format_rfc3339_seconds(fetched.at).to_string());
        let fleet = match fetched.result {
            Ok(fleet) => fleet,
            Err(err) => {
                self.error = Some(format!("fetch failed: {}", crate::error_chain(&err)));
                return None;
            }
        };
        if source.revision.as_deref() == Some(fleet.commit.as_str()) {
            self.error = None;
            self.refused = None;
            return None;
        }
        if self.refused.as_deref() == Some(fleet.commit.as_str()) {
            // Still the commit refused before: the error (not a fetch failure) stands.
            self.error = self
                .error
                .take()
                .filter(|e| !e.starts_with("fetch failed"))
                .or_else(|| Some(format!("commit {} was refused", fleet.commit)));
            return None;
        }
        let text = match std::fs::read_to_string(config_path) {
            Ok(text) => text,
            Err(err) => {
                self.error = Some(format!(
                    "commit {}: cannot read the local config file: {err}",
                    fleet.commit
                ));
                return None;
            }
        };
        match config::parse_with_fleet(&text, config_path, &desired.host_id, Some(&fleet)) {
            Ok(next) => {
                if let Err(err) = config::write_last_good(&next.state_dir, &fleet) {
                    warn!(cause = %err, "cannot keep the source revision under state_dir; a restart will use the previous one");
                }
                info!(revision = %fleet.commit, runners = next.runners.len(), "source revision applied");
                self.error = None;
                self.refused = None;
                Some(next)
            }
            Err(errors) => {
                error!(revision = %fleet.commit, errors = %errors,
                    "source revision refused; the last good revision stays in force");
                self.error = Some(format!("commit {} refused: {errors}", fleet.commit));
                self.refused = Some(fleet.commit);
                None
            }
        }
    }

    /// The `source` object of status.
    pub fn status(&self, desired: &Desired) -> Option<SourceStatus> {
        let source = desired.source.as_ref()?;
        Some(SourceStatus {
            url: source.url.clone(),
            git_ref: source.git_ref.clone(),
            path: source.path.clone(),
            revision: source.revision.clone(),
            fetched_at: self.fetched_at.clone(),
            error: self.error.clone(),
        })
    }
}

/// `host/owner/repo` of a git URL (`https://`, `ssh://`, scp-like `git@host:owner/repo`,
/// `file://`), lowercased, without `.git`, a user or a trailing slash.
fn normalized(url: &str) -> String {
    let url = url.trim().to_ascii_lowercase();
    let rest = match url.split_once("://") {
        Some((_, rest)) => rest.to_string(),
        // scp-like: git@github.com:owner/repo.git
        None => url.replacen(':', "/", 1),
    };
    let rest = match rest.split_once('/') {
        Some((authority, path)) => {
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            format!("{host}/{path}")
        }
        None => rest,
    };
    let rest = rest.trim_end_matches('/');
    rest.strip_suffix(".git").unwrap_or(rest).to_string()
}

/// True when a `push` payload's repository is the one at `url`.
fn push_is_for(payload: &serde_json::Value, url: &str) -> bool {
    let want = normalized(url);
    let repo = &payload["repository"];
    ["clone_url", "ssh_url", "git_url", "html_url", "url"]
        .iter()
        .filter_map(|k| repo[*k].as_str())
        .any(|u| normalized(u) == want)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_push_matches_its_repository_by_any_of_its_urls() {
        let payload = serde_json::json!({"repository": {
            "clone_url": "https://github.com/Me/fleet.git",
            "ssh_url": "git@github.com:Me/fleet.git",
        }});
        assert!(push_is_for(&payload, "https://github.com/me/fleet"));
        assert!(push_is_for(&payload, "ssh://git@github.com/me/fleet.git"));
        assert!(!push_is_for(&payload, "https://github.com/me/other.git"));
        assert!(!push_is_for(
            &serde_json::json!({}),
            "https://github.com/me/fleet"
        ));
    }
}
