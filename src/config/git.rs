//! `source.git` checked and resolved into a `GitSource`: a URL without credentials, a
//! relative path, a ref git accepts, and one credential that fits the URL's scheme.

use std::path::Path;

use super::check::join_clean;
use super::desired::{GitCredential, GitSource, TokenSource};
use super::duration::Duration;
use super::model::GitSourceSpec;

/// How often the repository is fetched when `interval` is not set.
pub const DEFAULT_SOURCE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// Checks `source.git` and resolves it; reports through `err(field, message)`.
pub(super) fn check_source(
    spec: &GitSourceSpec,
    dir: &Path,
    err: &mut dyn FnMut(&str, String),
) -> Option<GitSource> {
    let before = std::cell::Cell::new(0usize);
    let mut fail = |path: &str, message: String| {
        before.set(before.get() + 1);
        err(path, message);
    };
    let scheme = check_url(&spec.url, &mut fail);
    check_path(&spec.path, &mut fail);
    let git_ref = check_ref(spec.git_ref.as_deref(), &mut fail);
    let interval = check_interval(spec.interval.as_ref(), &mut fail);
    let credential = check_credential(spec, scheme, dir, &mut fail);
    let known_hosts = spec.known_hosts_file.as_ref().map(|f| join_clean(dir, f));
    if known_hosts.is_some() && scheme.is_some_and(|s| s != "ssh://") {
        fail(
            "source.git.known_hosts_file",
            "`known_hosts_file` is for an `ssh://` URL".into(),
        );
    }
    (before.get() == 0).then(|| GitSource {
        url: spec.url.clone(),
        git_ref,
        path: spec.path.clone(),
        interval,
        credential,
        known_hosts,
        revision: None,
    })
}

/// `url`: a scheme corral follows and no credentials in it. Returns the scheme, if known.
fn check_url(url: &str, fail: &mut dyn FnMut(&str, String)) -> Option<&'static str> {
    let scheme = ["https://", "ssh://", "file://"]
        .into_iter()
        .find(|s| url.starts_with(s));
    match scheme {
        None => fail(
            "source.git.url",
            format!(
                "`{url}` is not a git URL corral follows: write `https://`, `ssh://` or `file://`"
            ),
        ),
        Some(scheme) => {
            let rest = &url[scheme.len()..];
            let authority = rest.split('/').next().unwrap_or("");
            if let Some((userinfo, _)) = authority.rsplit_once('@') {
                if userinfo.contains(':') || scheme == "https://" {
                    fail(
                        "source.git.url",
                        "the URL carries credentials, which would put a secret in the file; \
                         name where the token is with `token_env` or `token_file`"
                            .into(),
                    );
                }
            }
        }
    }
    scheme
}

/// `path`: relative, inside the repository.
fn check_path(text: &str, fail: &mut dyn FnMut(&str, String)) {
    let path = Path::new(text);
    if text.is_empty()
        || path.is_absolute()
        || path
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        fail(
            "source.git.path",
            format!("`{text}` must be a relative path inside the repository, without `..`"),
        );
    }
}

/// `ref` (default `HEAD`): a name git takes as a branch, tag or commit, never an option.
fn check_ref(git_ref: Option<&str>, fail: &mut dyn FnMut(&str, String)) -> String {
    let git_ref = git_ref.unwrap_or("HEAD").to_string();
    if git_ref.is_empty()
        || git_ref.starts_with('-')
        || git_ref.contains("..")
        || git_ref
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || ":~^?*[\\".contains(c))
    {
        fail(
            "source.git.ref",
            format!("`{git_ref}` is not a branch, tag or commit name"),
        );
    }
    git_ref
}

/// `interval`: at least a second; the default when unset or broken.
fn check_interval(
    interval: Option<&Duration>,
    fail: &mut dyn FnMut(&str, String),
) -> std::time::Duration {
    match interval.map(Duration::parse) {
        None => DEFAULT_SOURCE_INTERVAL,
        Some(Ok(d)) if d >= std::time::Duration::from_secs(1) => d,
        Some(Ok(_)) => {
            fail("source.git.interval", "interval must be at least 1s".into());
            DEFAULT_SOURCE_INTERVAL
        }
        Some(Err(message)) => {
            fail("source.git.interval", message);
            DEFAULT_SOURCE_INTERVAL
        }
    }
}

/// `token_env` | `token_file` | `ssh_key_file`: at most one, fitting the URL's scheme.
fn check_credential(
    spec: &GitSourceSpec,
    scheme: Option<&str>,
    dir: &Path,
    fail: &mut dyn FnMut(&str, String),
) -> Option<GitCredential> {
    let forms = [
        spec.token_env.is_some(),
        spec.token_file.is_some(),
        spec.ssh_key_file.is_some(),
    ];
    if forms.iter().filter(|f| **f).count() > 1 {
        fail(
            "source.git",
            "set at most one of `token_env`, `token_file`, `ssh_key_file`".into(),
        );
    }
    let credential = if let Some(name) = &spec.token_env {
        Some(GitCredential::Token(TokenSource::Env(name.clone())))
    } else if let Some(file) = &spec.token_file {
        Some(GitCredential::Token(TokenSource::File(join_clean(
            dir, file,
        ))))
    } else {
        spec.ssh_key_file
            .as_ref()
            .map(|file| GitCredential::SshKey(join_clean(dir, file)))
    };
    match (&credential, scheme) {
        (Some(GitCredential::Token(_)), Some(s)) if s != "https://" => fail(
            "source.git",
            "`token_env`/`token_file` are for an `https://` URL".into(),
        ),
        (Some(GitCredential::SshKey(_)), Some(s)) if s != "ssh://" => fail(
            "source.git.ssh_key_file",
            "`ssh_key_file` is for an `ssh://` URL".into(),
        ),
        _ => {}
    }
    credential
}
