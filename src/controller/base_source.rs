//! Where bases come from: `base.path`, or releases (`base.version`, a runner's own `version`)
//! installed in the background; and pruning releases no runner has used for a while.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use super::step_error::BaseUnavailable;
use super::{Controller, Trigger};
use crate::bases::{BaseStore, BasesError};
use crate::config::BaseSource;
use crate::provision::Base;

/// An installed release's tree, or why it is not there and when to try again.
pub(super) type ReleaseOutcome = Result<PathBuf, (Arc<BasesError>, Instant)>;

/// A base opened, or why it cannot be used.
pub(super) type Opened = Result<Arc<Base>, BaseUnavailable>;

/// Every base in use, opened, or why it cannot be used.
pub(super) type Bases = BTreeMap<BaseSource, Opened>;

/// How long after a failed release install the next one may start.
pub(super) const RELEASE_RETRY: Duration = Duration::from_secs(60);

/// Resolves and installs a runner release.
async fn install_release(
    state_dir: &Path,
    api: &str,
    version: &str,
    sha256: Option<&str>,
    url_template: &str,
) -> Result<PathBuf, BasesError> {
    let arch = crate::bases::runner_arch()?;
    let release = crate::bases::resolve(api, version, arch, url_template, sha256).await?;
    BaseStore::new(state_dir)?.install(&release).await
}

impl Controller {
    /// Every base the file names (`base`, and each runner's `version`), opened once per tree.
    pub(super) fn bases(&mut self) -> Bases {
        let mut sources = self.desired.bases_in_use();
        sources.insert(self.desired.base.clone());
        let bases: Bases = sources
            .into_iter()
            .map(|source| {
                let base = self.base_of(&source);
                (source, base)
            })
            .collect();
        // Trees no longer named are opened afresh if they come back.
        let in_use: Vec<&Path> = bases.values().flatten().map(|b| b.path()).collect();
        self.releases
            .opened
            .retain(|path, _| in_use.contains(&path.as_path()));
        bases
    }

    /// `base` alone: what the disk of runners without a base of their own is measured against.
    pub(super) fn main_base(&mut self) -> Opened {
        let source = self.desired.base.clone();
        self.base_of(&source)
    }

    /// One base, opened (checked, protected) once per tree.
    fn base_of(&mut self, source: &BaseSource) -> Opened {
        let path = match source {
            BaseSource::Path(path) => path.clone(),
            BaseSource::Version {
                version,
                sha256,
                download_url,
            } => self.release_path(version, sha256.as_deref(), download_url)?,
        };
        self.releases
            .opened
            .entry(path.clone())
            .or_insert_with(|| {
                let opened = Base::open(&path)
                    .map(Arc::new)
                    .map_err(|e| BaseUnavailable::Unusable(Arc::new(e)));
                if let Ok(base) = &opened {
                    match base.protect() {
                        Ok(true) => info!(base = %path.display(), "made the runner base read-only"),
                        Ok(false) => {}
                        Err(err) => error!(cause = %err, "cannot make the runner base read-only"),
                    }
                }
                opened
            })
            .clone()
    }

    /// The installed tree of a release; until it is there, an install runs in the background
    /// (its end triggers a pass) and this says what runners wait for.
    fn release_path(
        &mut self,
        version: &str,
        sha256: Option<&str>,
        download_url: &str,
    ) -> Result<PathBuf, BaseUnavailable> {
        let store_root = self.desired.state_dir.join("bases").join(version);
        if version != "latest" && store_root.is_dir() {
            return Ok(store_root);
        }
        let installing = self.releases.installing.contains(version);
        match self.releases.outcomes.get(version) {
            Some(Ok(path)) => {
                let path = path.clone();
                if version == "latest" && self.latest_due() && !installing {
                    // Look again in the background; the release in use stays until a newer
                    // one is installed (then runners roll over to it).
                    self.spawn_install(version, sha256, download_url);
                }
                return Ok(path);
            }
            Some(Err((cause, retry_at))) if super::now() < *retry_at => {
                return Err(BaseUnavailable::NotInstalled(Arc::clone(cause)));
            }
            _ if installing => {
                return Err(BaseUnavailable::Waiting {
                    version: version.to_string(),
                });
            }
            _ => {}
        }
        self.spawn_install(version, sha256, download_url);
        Err(BaseUnavailable::Installing {
            version: version.to_string(),
        })
    }

    /// True when `latest` should be looked up again.
    fn latest_due(&self) -> bool {
        self.releases.recheck_latest
            || self.releases.latest_checked.is_none_or(|at| {
                super::now().duration_since(at) >= self.desired.update_check_interval
            })
    }

    /// Resolves and installs `version` in the background; its end is a trigger.
    fn spawn_install(&mut self, version: &str, sha256: Option<&str>, download_url: &str) {
        self.releases.installing.insert(version.to_string());
        let api = self.desired.github.as_ref().map_or_else(
            || "https://api.github.com".to_string(),
            |g| g.api_url.clone(),
        );
        let (state_dir, triggers) = (self.desired.state_dir.clone(), self.triggers.clone());
        let (version, sha256, url) = (
            version.to_string(),
            sha256.map(str::to_string),
            download_url.to_string(),
        );
        self.tasks.spawner().spawn(async move {
            let result = install_release(&state_dir, &api, &version, sha256.as_deref(), &url)
                .await
                .map_err(Arc::new);
            let _ = triggers.send(Trigger::ReleaseInstalled { version, result });
        });
    }

    /// Takes the end of a background install into account.
    pub(super) fn release_installed(
        &mut self,
        version: String,
        result: Result<PathBuf, Arc<BasesError>>,
    ) {
        match &result {
            Ok(path) => info!(version, path = %path.display(), "runner release installed"),
            Err(cause) => {
                let error = crate::error_chain(&**cause);
                error!(version, error, "runner release not installed");
            }
        }
        self.releases.installing.remove(&version);
        if version == "latest" {
            self.releases.latest_checked = Some(super::now());
            self.releases.recheck_latest = false;
            if result.is_err() && matches!(self.releases.outcomes.get("latest"), Some(Ok(_))) {
                // A failed look-up keeps the release in use; the next check tries again.
                return;
            }
        }
        let retry_at = super::now() + RELEASE_RETRY;
        self.releases
            .outcomes
            .insert(version, result.map_err(|m| (m, retry_at)));
    }

    /// Deletes installed releases that no runner has used, and the file has not named, for
    /// `base.prune_after`. Runs once per resync with the disk measurement.
    pub(super) fn prune_unused_releases(&mut self, bases: &Bases) {
        let Ok(store) = BaseStore::new(&self.desired.state_dir) else {
            return;
        };
        let Ok(installed) = store.list() else { return };
        let mut wanted: Vec<String> = store.in_use(&self.layout()).into_keys().collect();
        wanted.extend(
            bases
                .values()
                .flatten()
                .filter_map(|b| b.path().strip_prefix(store.root()).ok())
                .map(|rest| rest.to_string_lossy().into_owned()),
        );
        let now = super::now();
        let mut keep: Vec<&str> = Vec::new();
        for release in &installed {
            let version = release.version.as_str();
            if wanted.iter().any(|w| w == version) {
                self.releases.unused_since.remove(version);
                keep.push(version);
                continue;
            }
            let since = *self
                .releases
                .unused_since
                .entry(version.to_string())
                .or_insert(now);
            if now.duration_since(since) < self.desired.base_prune_after {
                keep.push(version);
            }
        }
        if keep.len() == installed.len() {
            return;
        }
        match store.prune(&keep) {
            Ok(removed) => {
                for version in removed {
                    info!(version, after = %humantime::format_duration(self.desired.base_prune_after), "pruned a runner release no runner uses");
                    self.releases.unused_since.remove(&version);
                }
            }
            Err(err) => warn!(cause = %err, "cannot prune unused runner releases"),
        }
    }
}
