//! Which tarball to install: a release resolved to its URL and digest, and its download.
//!
//! The releases API is public, so no token is sent to it, and never one to a download host.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::error::BasesError;

const USER_AGENT: &str = concat!("corral/", env!("CARGO_PKG_VERSION"));
const API_VERSION: &str = "2022-11-28";
const API_TIMEOUT: Duration = Duration::from_secs(30);
/// Connecting, and each wait for more bytes, is bounded; the whole download is not, since a
/// 150 MB tarball on a slow link may take long while still making progress.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Without a `Content-Length`, progress is logged every this many bytes.
const PROGRESS_STEP_UNKNOWN: u64 = 16 << 20;

/// A runner release to install: where its tarball is and what it must hash to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// `2.329.0`, never `latest`.
    pub version: String,
    /// The tarball's URL.
    pub url: String,
    /// Lowercase hex SHA-256 of the tarball; `install` refuses a release without one.
    pub sha256: Option<String>,
}

#[derive(Deserialize)]
struct ApiRelease {
    tag_name: String,
    #[serde(default)]
    assets: Vec<ApiAsset>,
}

#[derive(Deserialize)]
struct ApiAsset {
    name: String,
    digest: Option<String>,
}

/// The runner's name for this machine's architecture: `x64`, `arm64` or `arm`.
pub fn runner_arch() -> Result<&'static str, BasesError> {
    match std::env::consts::ARCH {
        "x86_64" => Ok("x64"),
        "aarch64" => Ok("arm64"),
        "arm" => Ok("arm"),
        other => Err(BasesError::UnsupportedArch {
            arch: other.to_owned(),
        }),
    }
}

/// Whether `version` is `MAJOR.MINOR.PATCH` in digits (safe as a directory name).
pub fn is_version(version: &str) -> bool {
    version.split('.').count() == 3
        && version
            .split('.')
            .all(|p| !p.is_empty() && p.len() <= 9 && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Resolves `version` (`2.329.0` or `latest`) of `actions/runner` for `arch` to a [`Release`].
///
/// `latest` asks `GET {api_base}/repos/actions/runner/releases/latest`. The digest is
/// `sha256` (from `base.sha256`) when given, else the `digest` of the release asset
/// `actions-runner-linux-{arch}-{version}.tar.gz`; with neither, it is refused.
pub async fn resolve(
    api_base: &str,
    version: &str,
    arch: &str,
    url_template: &str,
    sha256: Option<&str>,
) -> Result<Release, BasesError> {
    let api_base = api_base.trim_end_matches('/');
    let mut fetched = None;
    let version = if version == "latest" {
        let url = format!("{api_base}/repos/actions/runner/releases/latest");
        let release = get_release(&url).await?;
        let version = release.tag_name.trim_start_matches('v').to_owned();
        if !is_version(&version) {
            return Err(BasesError::BadRelease {
                url,
                reason: format!("tag `{}` is not a runner version", release.tag_name),
            });
        }
        fetched = Some(release);
        version
    } else if is_version(version) {
        version.to_owned()
    } else {
        return Err(BasesError::BadVersion {
            version: version.to_owned(),
        });
    };
    let url = url_template
        .replace("{version}", &version)
        .replace("{arch}", arch);
    let sha256 = if let Some(sha) = sha256 {
        sha.to_ascii_lowercase()
    } else {
        let release = if let Some(release) = fetched {
            release
        } else {
            let url = format!("{api_base}/repos/actions/runner/releases/tags/v{version}");
            get_release(&url).await?
        };
        asset_digest(&release, &version, arch)?
    };
    Ok(Release {
        version,
        url,
        sha256: Some(sha256),
    })
}

fn asset_digest(release: &ApiRelease, version: &str, arch: &str) -> Result<String, BasesError> {
    let asset = format!("actions-runner-linux-{arch}-{version}.tar.gz");
    let digest = release
        .assets
        .iter()
        .find(|a| a.name == asset)
        .and_then(|a| a.digest.as_deref())
        .and_then(|d| d.strip_prefix("sha256:"))
        .filter(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()));
    match digest {
        Some(hex) => Ok(hex.to_ascii_lowercase()),
        None => Err(BasesError::NoChecksum {
            version: version.to_owned(),
            asset,
        }),
    }
}

async fn get_release(url: &str) -> Result<ApiRelease, BasesError> {
    let http = |source| BasesError::Http {
        url: url.to_owned(),
        source,
    };
    let client = reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .timeout(API_TIMEOUT)
        .build()
        .map_err(http)?;
    let resp = client
        .get(url)
        .header("accept", "application/vnd.github+json")
        .header("x-github-api-version", API_VERSION)
        .send()
        .await
        .map_err(http)?;
    if !resp.status().is_success() {
        return Err(BasesError::Status {
            url: url.to_owned(),
            status: resp.status().as_u16(),
        });
    }
    let body = resp.bytes().await.map_err(http)?;
    serde_json::from_slice(&body).map_err(|e| BasesError::BadRelease {
        url: url.to_owned(),
        reason: e.to_string(),
    })
}

/// The HTTP client for tarball downloads: no credentials, bounded connect and read waits.
pub(crate) fn download_client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .build()
}

/// How a download shows its progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Progress {
    /// A log line per tenth (a daemon, or output that is not a terminal).
    Log,
    /// A bar redrawn in place on stderr.
    Bar,
}

/// Streams `url` into a new file `dest`, returning the hex SHA-256 of what was written.
pub(crate) async fn download(
    client: &reqwest::Client,
    url: &str,
    dest: &Path,
    shown: Progress,
) -> Result<String, BasesError> {
    let http = |source| BasesError::Http {
        url: url.to_owned(),
        source,
    };
    let mut resp = client.get(url).send().await.map_err(http)?;
    if !resp.status().is_success() {
        return Err(BasesError::Status {
            url: url.to_owned(),
            status: resp.status().as_u16(),
        });
    }
    let total = resp.content_length();
    let write = |e| BasesError::io("write", dest, e);
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dest)
        .await
        .map_err(write)?;
    let (mut hasher, mut received, mut logged) = (Sha256::new(), 0_u64, 0_u64);
    let bar = (shown == Progress::Bar).then(|| bar(total));
    while let Some(chunk) = resp.chunk().await.map_err(http)? {
        hasher.update(&chunk);
        file.write_all(&chunk).await.map_err(write)?;
        received += chunk.len() as u64;
        match &bar {
            Some(bar) => bar.set_position(received),
            None => logged = progress(url, received, total, logged),
        }
    }
    if let Some(bar) = bar {
        bar.finish();
    }
    file.sync_all().await.map_err(write)?;
    if let Some(expected) = total.filter(|t| *t != received) {
        return Err(BasesError::Truncated {
            url: url.to_owned(),
            expected,
            received,
        });
    }
    Ok(hex(&hasher.finalize()))
}

/// Logs a line per tenth of the download (or per 16 MiB without a length); returns the new mark.
fn progress(url: &str, received: u64, total: Option<u64>, logged: u64) -> u64 {
    let mark = match total {
        Some(total) if total > 0 => received * 10 / total,
        _ => received / PROGRESS_STEP_UNKNOWN,
    };
    if mark > logged {
        if let Some(total) = total {
            tracing::info!(url, received, total, "downloading: {}%", mark * 10);
        } else {
            tracing::info!(url, received, "downloading");
        }
    }
    mark.max(logged)
}

/// A bar on stderr (drawn only on a terminal): `[####....]  45%  12.3/27.0 MiB`, or the
/// bytes so far without a length.
fn bar(total: Option<u64>) -> indicatif::ProgressBar {
    let (bar, template) = match total {
        Some(total) if total > 0 => (
            indicatif::ProgressBar::new(total),
            "[{bar:30}] {percent:>3}%  {binary_bytes}/{binary_total_bytes}",
        ),
        _ => (
            indicatif::ProgressBar::new_spinner(),
            "downloading: {binary_bytes}",
        ),
    };
    let style = indicatif::ProgressStyle::with_template(template)
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("#>.");
    bar.set_style(style);
    bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    bar
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::bar;

    #[test]
    fn the_bar_follows_the_download() {
        let sized = bar(Some(4 << 20));
        assert_eq!(sized.length(), Some(4 << 20));
        sized.set_position(2 << 20);
        assert_eq!(sized.position(), 2 << 20);
        assert_eq!(bar(None).length(), None);
    }
}
