//! The releases of `actions/runner` and their tarball downloads (not GitHub's REST runner API,
//! so they bypass auth, rate limits and route faults):
//! - `GET /repos/actions/runner/releases/latest` and `…/releases/tags/v{version}` answer
//!   `{tag_name, assets: [{name, browser_download_url, digest, size}]}`, one asset per arch;
//! - `GET /_downloads/actions-runner-linux-{arch}-{version}.tar.gz` serves the tarball bytes,
//!   or the next scripted [`DownloadFault`].

use std::collections::{BTreeMap, VecDeque};

use axum::body::Body;
use axum::response::Response;
use serde_json::{json, Value};

use super::server::Shared;
use super::util::{json_response, not_found, set_header};
use super::FakeGitHub;

/// What the next download answers instead of the tarball.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DownloadFault {
    /// `Content-Length` of the whole tarball, but only its first half, then the connection closes.
    Truncated,
    /// The right length, but one byte changed.
    WrongBytes,
    /// This HTTP status with an empty body.
    Status(u16),
}

/// The fake's releases.
#[derive(Debug, Default)]
pub struct Releases {
    by_version: BTreeMap<String, (Vec<u8>, Option<String>)>,
    latest: Option<String>,
    faults: VecDeque<DownloadFault>,
}

const ARCHES: [&str; 3] = ["x64", "arm64", "arm"];

impl FakeGitHub {
    /// Publishes runner `version` (`2.336.0`) with `tarball` for every arch, its asset `digest`
    /// (`"sha256:<hex>"`, or `None` as older releases have). The first one added is `latest`.
    pub fn add_runner_release(&self, version: &str, tarball: Vec<u8>, digest: Option<String>) {
        self.shared.with(|s| {
            let r = &mut s.releases;
            r.latest.get_or_insert_with(|| version.to_owned());
            r.by_version.insert(version.to_owned(), (tarball, digest));
        });
    }

    /// Makes `version` the latest release.
    pub fn set_latest(&self, version: &str) {
        self.shared
            .with(|s| s.releases.latest = Some(version.to_owned()));
    }

    /// Scripts `fault` for the next download (FIFO).
    pub fn push_download_fault(&self, fault: DownloadFault) {
        self.shared.with(|s| s.releases.faults.push_back(fault));
    }

    /// The download URL template for `base.download_url`.
    pub fn download_url_template(&self) -> String {
        format!(
            "{}/_downloads/actions-runner-linux-{{arch}}-{{version}}.tar.gz",
            self.web_url()
        )
    }

    /// Downloads served (any outcome).
    pub fn download_count(&self) -> usize {
        self.shared.quiet(|s| {
            s.requests
                .iter()
                .filter(|r| r.path.starts_with("/_downloads/"))
                .count()
        })
    }
}

/// Answers a releases or download request; `None` when the path is neither.
pub fn handle(shared: &Shared, method: &str, path: &str) -> Option<Response> {
    if method != "GET" {
        return None;
    }
    let rest = path.strip_prefix("/api/v3").unwrap_or(path);
    if let Some(file) = path.strip_prefix("/_downloads/") {
        return Some(download(shared, file));
    }
    let which = rest.strip_prefix("/repos/actions/runner/releases/")?;
    Some(shared.with(|s| {
        let version = match which {
            "latest" => s.releases.latest.clone(),
            tag => tag.strip_prefix("tags/v").map(str::to_owned),
        };
        match version.and_then(|v| release_json(&s.base, &s.releases, &v)) {
            Some(body) => json_response(200, &body),
            None => not_found(),
        }
    }))
}

fn release_json(base: &str, releases: &Releases, version: &str) -> Option<Value> {
    let (tarball, digest) = releases.by_version.get(version)?;
    let assets: Vec<Value> = ARCHES
        .iter()
        .map(|arch| {
            let name = format!("actions-runner-linux-{arch}-{version}.tar.gz");
            json!({
                "name": name,
                "browser_download_url": format!("{base}/_downloads/{name}"),
                "digest": digest,
                "size": tarball.len(),
            })
        })
        .collect();
    Some(
        json!({ "tag_name": format!("v{version}"), "name": format!("v{version}"), "assets": assets }),
    )
}

fn download(shared: &Shared, file: &str) -> Response {
    let found = shared.with(|s| {
        let version = ARCHES.iter().find_map(|arch| {
            file.strip_prefix(&format!("actions-runner-linux-{arch}-"))?
                .strip_suffix(".tar.gz")
        })?;
        let bytes = s.releases.by_version.get(version)?.0.clone();
        Some((bytes, s.releases.faults.pop_front()))
    });
    let Some((mut bytes, fault)) = found else {
        return not_found();
    };
    let full = bytes.len();
    match fault {
        None => {}
        Some(DownloadFault::Status(code)) => return super::util::empty(code),
        Some(DownloadFault::WrongBytes) => {
            if let Some(last) = bytes.last_mut() {
                *last ^= 0xff;
            }
        }
        Some(DownloadFault::Truncated) => {
            // Headers and half the body go out, then the body fails and hyper drops the connection.
            bytes.truncate(full / 2);
            let cut = std::io::Error::new(std::io::ErrorKind::BrokenPipe, "cut short by the fake");
            let chunks = futures_util::stream::iter([Ok(bytes), Err(cut)]);
            let mut resp = Response::new(Body::from_stream(chunks));
            set_header(&mut resp, "content-length", &full.to_string());
            return resp;
        }
    }
    let mut resp = Response::new(Body::from(bytes));
    set_header(&mut resp, "content-type", "application/octet-stream");
    set_header(&mut resp, "content-length", &full.to_string());
    resp
}
