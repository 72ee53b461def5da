//! Turns a parsed `RunnersFile` into `Desired`, collecting every rule it breaks.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use super::check::{join_clean, Checker};
use super::desired::{
    Api, BaseSource, Desired, GitHub, GitHubAuth, Pool, RunnerSpec, TokenSource,
    DEFAULT_DOWNLOAD_URL,
};
use super::entry::{check_defaults, resolve_entry};
use super::error::ConfigError;
use super::model::{ApiSpec, BaseSpec, GitHubSpec, RunnersFile};
use super::rules;
use super::tree::Position;

const DEFAULT_RESYNC: std::time::Duration = std::time::Duration::from_secs(30);
const DEFAULT_SHUTDOWN: std::time::Duration = std::time::Duration::from_secs(5 * 60);
const DEFAULT_DEMAND_POLL: std::time::Duration = std::time::Duration::from_secs(15);
/// How long an unused installed release is kept.
const DEFAULT_BASE_PRUNE_AFTER: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Validates `file` and builds the desired state of host `host_id`; `config_path` anchors
/// relative paths.
pub fn resolve(
    file: &RunnersFile,
    config_path: &Path,
    positions: &BTreeMap<String, Position>,
    host_id: &str,
) -> Result<Desired, Vec<ConfigError>> {
    let mut c = Checker::new(config_path, positions);
    let absolute = std::path::absolute(config_path).unwrap_or_else(|_| config_path.to_path_buf());
    let dir = absolute.parent().unwrap_or(Path::new("/"));
    // The sections are checked in this order, which is the order of errors at one position.
    let base = resolve_base_section(&mut c, &file.base, dir);
    let github = resolve_github(&mut c, file.github.as_ref(), dir);
    if file.state_dir.as_os_str().is_empty() {
        c.error("state_dir", "state_dir may not be empty".into());
    }
    let runners = resolve_runners(&mut c, file, &github, dir, host_id);
    let host = resolve_host_settings(&mut c, file, dir);
    if !c.errors.is_empty() {
        return Err(c.errors);
    }
    Ok(Desired {
        config_path: absolute.clone(),
        state_dir: join_clean(dir, &file.state_dir),
        base: base.source,
        github: Some(github).filter(|g| g.auth != GitHubAuth::None || file.github.is_some()),
        resync_interval: host.resync_interval,
        shutdown_timeout: host.shutdown_timeout,
        api: host.api,
        max_unavailable: file.max_unavailable.unwrap_or(1).max(1),
        download_url: base.download_url,
        base_prune_after: base.prune_after,
        update_check_interval: host.update_check_interval,
        runners: runners.runners,
        host_id: host_id.to_string(),
        elsewhere: runners.elsewhere,
        max_runners: file.max_runners,
        capped: runners.capped,
        pools: runners.pools,
        demand_poll_interval: runners.demand_poll_interval,
        source: None,
    })
}

/// `base` resolved: where the runner software comes from and how releases are handled.
struct BaseSection {
    source: BaseSource,
    download_url: String,
    prune_after: std::time::Duration,
}

fn resolve_base_section(c: &mut Checker<'_>, base: &BaseSpec, dir: &Path) -> BaseSection {
    let source = resolve_base(c, base, dir);
    let download_url = match &source {
        BaseSource::Version { download_url, .. } => download_url.clone(),
        BaseSource::Path(_) => download_url(c, base),
    };
    let prune_after = c.duration(
        "base.prune_after",
        base.prune_after.as_ref(),
        DEFAULT_BASE_PRUNE_AFTER,
    );
    BaseSection {
        source,
        download_url,
        prune_after,
    }
}

/// The runners this host runs, after `max_runners`, and how the pools' demand is polled.
struct RunnerSet {
    runners: BTreeMap<String, RunnerSpec>,
    capped: Vec<String>,
    pools: Vec<Pool>,
    elsewhere: Vec<String>,
    demand_poll_interval: std::time::Duration,
}

/// `runners`, `max_runners`, `demand_poll_interval` and `defaults`.
fn resolve_runners(
    c: &mut Checker<'_>,
    file: &RunnersFile,
    github: &GitHub,
    dir: &Path,
    host_id: &str,
) -> RunnerSet {
    let (fixed, pools, elsewhere) = resolve_entries(c, file, github, dir, host_id);
    if file.max_runners == Some(0) {
        c.error("max_runners", "max_runners must be at least 1".into());
    }
    // Past the cap, the last instances in file order are the ones not created.
    let cap = file.max_runners.map_or(usize::MAX, |n| n as usize);
    let capped: Vec<String> = fixed.iter().skip(cap).map(|s| s.name.clone()).collect();
    let runners: BTreeMap<String, _> = fixed
        .into_iter()
        .take(cap)
        .map(|spec| (spec.name.clone(), spec))
        .collect();
    let demand_poll_interval = c.duration(
        "demand_poll_interval",
        file.demand_poll_interval.as_ref(),
        DEFAULT_DEMAND_POLL,
    );
    check_defaults(c, &file.defaults);
    RunnerSet {
        runners,
        capped,
        pools,
        elsewhere,
        demand_poll_interval,
    }
}

/// The host-wide settings that are not about runners.
struct HostSettings {
    update_check_interval: std::time::Duration,
    api: Option<Api>,
    shutdown_timeout: std::time::Duration,
    resync_interval: std::time::Duration,
}

/// `update_check_interval`, `max_unavailable`, `api`, `shutdown_timeout`, `resync_interval`.
fn resolve_host_settings(c: &mut Checker<'_>, file: &RunnersFile, dir: &Path) -> HostSettings {
    let update_check_interval = c.duration(
        "update_check_interval",
        file.update_check_interval.as_ref(),
        std::time::Duration::from_secs(6 * 3600),
    );
    if file.max_unavailable == Some(0) {
        c.error(
            "max_unavailable",
            "max_unavailable must be at least 1".into(),
        );
    }
    let api = file.api.as_ref().and_then(|spec| resolve_api(c, spec, dir));
    let shutdown_timeout = c.duration(
        "shutdown_timeout",
        file.shutdown_timeout.as_ref(),
        DEFAULT_SHUTDOWN,
    );
    let resync_interval = c.duration(
        "resync_interval",
        file.resync_interval.as_ref(),
        DEFAULT_RESYNC,
    );
    HostSettings {
        update_check_interval,
        api,
        shutdown_timeout,
        resync_interval,
    }
}

/// Every entry: the fixed instances and pools this host runs, and the entries it leaves to
/// other hosts.
fn resolve_entries(
    c: &mut Checker<'_>,
    file: &RunnersFile,
    github: &GitHub,
    dir: &Path,
    host_id: &str,
) -> (Vec<RunnerSpec>, Vec<Pool>, Vec<String>) {
    let mut fixed = Vec::new();
    let mut pools = Vec::new();
    let mut elsewhere = Vec::new();
    let mut seen: HashMap<String, String> = HashMap::new();
    for (i, entry) in file.runners.iter().enumerate() {
        let resolved = resolve_entry(c, i, entry, &file.defaults, github, dir);
        let path = format!("runners[{i}].name");
        // Unique across every host's entries: hosts share repositories, and GitHub names.
        for name in resolved.names {
            // Case-insensitive: GitHub compares runner names that way.
            if let Some(first) = seen.insert(name.to_lowercase(), path.clone()) {
                c.error(
                    &path,
                    format!("runner name {name:?} is used twice (also by {first})"),
                );
            }
        }
        let here = entry
            .hosts
            .as_ref()
            .is_none_or(|hosts| hosts.iter().any(|h| h.eq_ignore_ascii_case(host_id)));
        if here {
            fixed.extend(resolved.specs);
            pools.extend(resolved.pools);
        } else {
            elsewhere.push(entry.name.clone());
        }
    }
    (fixed, pools, elsewhere)
}

fn resolve_base(c: &mut Checker<'_>, base: &BaseSpec, dir: &Path) -> BaseSource {
    let fallback = BaseSource::Path(PathBuf::new());
    match (&base.path, &base.version) {
        (Some(_), Some(_)) => {
            c.error(
                "base",
                "set either base.path or base.version, not both".into(),
            );
            fallback
        }
        (None, None) => {
            c.error("base", "set base.path or base.version".into());
            fallback
        }
        (Some(path), None) => {
            if c.positions.contains_key("base.sha256") {
                c.error(
                    "base.sha256",
                    "base.sha256 goes with base.version, not base.path".into(),
                );
            }
            BaseSource::Path(join_clean(dir, path))
        }
        (None, Some(version)) => resolve_version(c, base, version),
    }
}

fn resolve_version(c: &mut Checker<'_>, base: &BaseSpec, version: &str) -> BaseSource {
    c.check(
        "base.version",
        rules::check_version(version).map_err(|e| format!("base.{e}")),
    );
    let sha256 = base.sha256.as_ref().map(|s| s.to_ascii_lowercase());
    if let Some(sha) = &sha256 {
        if sha.len() != 64 || !sha.chars().all(|ch| ch.is_ascii_hexdigit()) {
            c.error(
                "base.sha256",
                format!("base.sha256 {sha:?} is not 64 hex digits"),
            );
        }
    }
    BaseSource::Version {
        version: version.to_string(),
        sha256,
        download_url: download_url(c, base),
    }
}

/// `base.download_url`, checked, or the official one.
fn download_url(c: &mut Checker<'_>, base: &BaseSpec) -> String {
    let download_url = base
        .download_url
        .clone()
        .unwrap_or_else(|| DEFAULT_DOWNLOAD_URL.into());
    if !download_url.contains("{version}") {
        c.error(
            "base.download_url",
            format!("base.download_url {download_url:?} must contain `{{version}}`"),
        );
    }
    download_url
}

fn resolve_github(c: &mut Checker<'_>, spec: Option<&GitHubSpec>, dir: &Path) -> GitHub {
    let default = GitHubSpec::default();
    let spec = spec.unwrap_or(&default);
    let web_url = match spec.url.as_deref().map(rules::check_url) {
        None => "https://github.com".to_string(),
        Some(Ok(url)) => url,
        Some(Err(e)) => {
            c.error("github.url", format!("github.url {e}"));
            "https://github.com".to_string()
        }
    };
    let api_url = match spec.api_url.as_deref().map(rules::check_url) {
        None => rules::api_url_for(&web_url),
        Some(Ok(url)) => url,
        Some(Err(e)) => {
            c.error("github.api_url", format!("github.api_url {e}"));
            String::new()
        }
    };
    let set = [
        spec.token_env.is_some(),
        spec.token_file.is_some(),
        spec.app.is_some(),
    ];
    if set.iter().filter(|s| **s).count() > 1 {
        c.error(
            "github",
            "set only one of github.token_env, github.token_file and github.app".into(),
        );
    }
    let auth = if let Some(var) = &spec.token_env {
        c.check("github.token_env", rules::check_env_name(var));
        GitHubAuth::TokenEnv(var.clone())
    } else if let Some(file) = &spec.token_file {
        GitHubAuth::TokenFile(join_clean(dir, file))
    } else if let Some(app) = &spec.app {
        GitHubAuth::App {
            id: app.id,
            private_key_file: join_clean(dir, &app.private_key_file),
            installation_id: app.installation_id,
        }
    } else {
        GitHubAuth::None
    };
    let marker_label = resolve_marker(c, spec, &auth);
    let cleanup_orphans = spec.cleanup_orphans.unwrap_or(true) && marker_label.is_some();
    GitHub {
        web_url,
        api_url,
        auth,
        marker_label,
        cleanup_orphans,
    }
}

/// The marker label: as configured (`""` for none), else `corral-<hostname>` when corral has
/// a credential to manage registrations with.
fn resolve_marker(c: &mut Checker<'_>, spec: &GitHubSpec, auth: &GitHubAuth) -> Option<String> {
    match spec.marker_label.as_deref() {
        Some("") => None,
        Some(label) => {
            c.check("github.marker_label", rules::check_label(label));
            Some(label.to_string())
        }
        None if *auth == GitHubAuth::None => None,
        None => {
            let host = nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "host".to_string());
            let host: String = host.chars().filter(|ch| *ch != ',').take(200).collect();
            Some(format!("corral-{host}"))
        }
    }
}

/// The status API: a parseable address, and a token whenever it is reachable from elsewhere.
fn resolve_api(c: &mut Checker<'_>, spec: &ApiSpec, dir: &Path) -> Option<Api> {
    let token = match (&spec.token_env, &spec.token_file) {
        (Some(_), Some(_)) => {
            c.error(
                "api",
                "set api.token_env or api.token_file, not both".into(),
            );
            return None;
        }
        (Some(var), None) => {
            c.check("api.token_env", rules::check_env_name(var));
            Some(TokenSource::Env(var.clone()))
        }
        (None, Some(file)) => Some(TokenSource::File(join_clean(dir, file))),
        (None, None) => None,
    };
    let webhook_secret = match (&spec.webhook_secret_env, &spec.webhook_secret_file) {
        (Some(_), Some(_)) => {
            c.error(
                "api",
                "set api.webhook_secret_env or api.webhook_secret_file, not both".into(),
            );
            None
        }
        (Some(var), None) => {
            c.check("api.webhook_secret_env", rules::check_env_name(var));
            Some(TokenSource::Env(var.clone()))
        }
        (None, Some(file)) => Some(TokenSource::File(join_clean(dir, file))),
        (None, None) => None,
    };
    let Ok(listen) = spec.listen.parse::<std::net::SocketAddr>() else {
        c.error(
            "api.listen",
            format!(
                "api.listen {:?} is not an address and port such as `127.0.0.1:9180`",
                spec.listen
            ),
        );
        return None;
    };
    if !listen.ip().is_loopback() && token.is_none() {
        c.error(
            "api.listen",
            format!("api.listen {listen} is reachable from other hosts: set api.token_env or api.token_file"),
        );
        return None;
    }
    Some(Api {
        listen,
        token,
        webhook_secret,
    })
}

/// [`resolve_api`] outside a full check: the API `spec` names, when it passes on its own.
pub(super) fn api_alone(spec: &ApiSpec, file: &Path, dir: &Path) -> Option<Api> {
    let positions = BTreeMap::new();
    let mut c = Checker::new(file, &positions);
    let api = resolve_api(&mut c, spec, dir);
    api.filter(|_| c.errors.is_empty())
}
