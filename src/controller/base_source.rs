//! Where bases come from: `base.path`, or releases (`base.version`, a runner's own `version`)
//! installed in the background; and pruning releases no runner has used for a while.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use super::{Controller, Trigger};
use crate::bases::BaseStore;
use crate::config::BaseSource;
use crate::provision::Base;

/// An installed release's tree, or why it is not there and when to try again.
pub(super) type ReleaseOutcome = Result<PathBuf, (String, Instant)>;

/// Every base in use, opened, or why it cannot be used.
pub(super) type Bases = BTreeMap<BaseSource, Result<Arc<Base>, String>>;

/// How long after a failed release install the next one may start.
pub(super) const RELEASE_RETRY: Duration = Duration::from_secs(60);

/// Resolves and installs a runner release; the text of what went wrong otherwise.
async fn install_release(
    state_dir: &Path,
    api: &str,
    version: &str,
    sha256: Option<&str>,
    url_template: &str,
) -> Result<PathBuf, String> {
    let arch = crate::bases::runner_arch().map_err(|e| e.to_string())?;
    let release = crate::bases::resolve(api, version, arch, url_template, sha256)
        .await
        .map_err(|e| e.to_string())?;
    let store = BaseStore::new(state_dir).map_err(|e| e.to_string())?;
    store.install(&release).await.map_err(|e| e.to_string())
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
    pub(super) fn main_base(&mut self) -> Result<Arc<Base>, String> {
        let source = self.desired.base.clone();
        self.base_of(&source)
    }

    /// One base, opened (checked, protected) once per tree.
    fn base_of(&mut self, source: &BaseSource) -> Result<Arc<Base>, String> {
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
                let opened = Base::open(&path).map(Arc::new).map_err(|e| e.to_string());
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
    ) -> Result<PathBuf, String> {
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
            Some(Err((message, retry_at))) if super::now() < *retry_at => {
                return Err(message.clone());
            }
            _ if installing => {
                return Err(format!(
                    "waiting for runner release {version} to be installed"
                ));
            }
            _ => {}
        }
        self.spawn_install(version, sha256, download_url);
        Err(format!("installing runner release {version}"))
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
            let result = install_release(&state_dir, &api, &version, sha256.as_deref(), &url).await;
            let _ = triggers.send(Trigger::ReleaseInstalled { version, result });
        });
    }

    /// Takes the end of a background install into account.
    pub(super) fn release_installed(&mut self, version: String, result: Result<PathBuf, String>) {
        match &result {
            Ok(path) => info!(version, path = %path.display(), "runner release installed"),
            Err(message) => error!(version, error = %message, "runner release not installed"),
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
