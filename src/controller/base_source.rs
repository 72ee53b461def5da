//! Where the base comes from: `base.path`, or `base.version` installed in the background.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{error, info};

use super::{Controller, Trigger};
use crate::config::BaseSource;
use crate::provision::Base;

/// An installed release's tree, or why it is not there and when to try again.
pub(super) type ReleaseOutcome = Result<PathBuf, (String, Instant)>;

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
    let store = crate::bases::BaseStore::new(state_dir).map_err(|e| e.to_string())?;
    store.install(&release).await.map_err(|e| e.to_string())
}

impl Controller {
    /// The base in force, opened (checked, protected) once per base path.
    pub(super) fn base(&mut self) -> Result<Arc<Base>, String> {
        let path = match &self.desired.base {
            BaseSource::Path(path) => path.clone(),
            BaseSource::Version { .. } => self.release_path()?,
        };
        let fresh = !matches!(&self.base, Some((p, _)) if *p == path);
        if fresh {
            let opened = Base::open(&path).map(Arc::new).map_err(|e| e.to_string());
            if let Ok(base) = &opened {
                match base.protect() {
                    Ok(true) => info!(base = %path.display(), "made the runner base read-only"),
                    Ok(false) => {}
                    Err(err) => error!(cause = %err, "cannot make the runner base read-only"),
                }
            }
            self.base = Some((path.clone(), opened));
        }
        self.base
            .as_ref()
            .map_or_else(|| Err("no base".to_string()), |(_, b)| b.clone())
    }

    /// The installed tree of `base.version`; until it is there, an install runs in the
    /// background (its end triggers a pass) and this says what runners wait for.
    fn release_path(&mut self) -> Result<PathBuf, String> {
        let BaseSource::Version {
            version,
            sha256,
            download_url,
        } = self.desired.base.clone()
        else {
            return Err("no base.version".into());
        };
        let store_root = self.desired.state_dir.join("bases").join(&version);
        if version != "latest" && store_root.is_dir() {
            return Ok(store_root);
        }
        match &self.release {
            Some((key, Ok(path))) if *key == version => {
                let path = path.clone();
                if version == "latest" && self.latest_due() && self.installing.is_none() {
                    // Look again in the background; the release in use stays until a newer
                    // one is installed (then runners roll over to it).
                    self.spawn_install(version, sha256, download_url);
                }
                return Ok(path);
            }
            Some((key, _)) if *key != version => self.release = None,
            _ => {}
        }
        let now = Instant::now();
        match &self.release {
            Some((_, Err((message, retry_at)))) if now < *retry_at => return Err(message.clone()),
            _ if self.installing.as_deref() == Some(version.as_str()) => {
                return Err(format!(
                    "waiting for runner release {version} to be installed"
                ));
            }
            _ => {}
        }
        self.spawn_install(version, sha256, download_url);
        Err("installing the runner release".into())
    }

    /// True when `latest` should be looked up again.
    fn latest_due(&self) -> bool {
        self.recheck_latest
            || self
                .latest_checked
                .is_none_or(|at| at.elapsed() >= self.desired.update_check_interval)
    }

    /// Resolves and installs `version` in the background; its end is a trigger.
    fn spawn_install(&mut self, version: String, sha256: Option<String>, download_url: String) {
        self.installing = Some(version.clone());
        let api = self.desired.github.as_ref().map_or_else(
            || "https://api.github.com".to_string(),
            |g| g.api_url.clone(),
        );
        let (state_dir, triggers) = (self.desired.state_dir.clone(), self.triggers.clone());
        tokio::spawn(async move {
            let result =
                install_release(&state_dir, &api, &version, sha256.as_deref(), &download_url).await;
            let _ = triggers.send(Trigger::ReleaseInstalled { version, result });
        });
    }
}
