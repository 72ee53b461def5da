//! Turns a parsed `RunnersFile` into `Desired`, collecting every rule it breaks.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use super::desired::{
    BaseSource, Desired, GitHub, GitHubAuth, Registration, Repo, RunnerSpec, DEFAULT_DOWNLOAD_URL,
};
use super::error::ConfigError;
use super::model::{BaseSpec, GitHubSpec, RunnerDefaults, RunnerEntry, RunnersFile};
use super::rules;
use super::tree::Position;

const DEFAULT_RESYNC: std::time::Duration = std::time::Duration::from_secs(30);
const DEFAULT_SHUTDOWN: std::time::Duration = std::time::Duration::from_secs(5 * 60);
const DEFAULT_DRAIN: std::time::Duration = std::time::Duration::from_secs(15 * 60);
const DEFAULT_USER: &str = "runner";
/// Largest `count`: a typo such as `count: 1000` should not provision a thousand runners.
const MAX_COUNT: u32 = 500;

/// Collects errors with the position of the field each one is about.
struct Checker<'a> {
    file: &'a Path,
    positions: &'a BTreeMap<String, Position>,
    errors: Vec<ConfigError>,
}

impl Checker<'_> {
    /// Records an error about `path`; `path#key` points at the key instead of its value.
    fn error(&mut self, path: &str, message: String) {
        self.errors.push(ConfigError {
            file: self.file.to_path_buf(),
            pos: self.position(path),
            path: path.trim_end_matches("#key").to_string(),
            message,
        });
    }

    /// The field's own position, or that of the closest enclosing field that is written.
    fn position(&self, path: &str) -> Option<Position> {
        let mut path = path;
        loop {
            if let Some(pos) = self.positions.get(path) {
                return Some(*pos);
            }
            let cut = path.rfind(['.', '['])?;
            path = &path[..cut];
        }
    }

    /// The parsed duration at `path`, or `default` when unset (or broken, after an error).
    fn duration(
        &mut self,
        path: &str,
        value: Option<&super::duration::Duration>,
        default: std::time::Duration,
    ) -> std::time::Duration {
        match value.map(super::duration::Duration::parse) {
            None => default,
            Some(Ok(d)) => d,
            Some(Err(message)) => {
                self.error(path, message);
                default
            }
        }
    }

    fn check(&mut self, path: &str, result: Result<(), String>) {
        if let Err(message) = result {
            self.error(path, message);
        }
    }
}

/// Validates `file` and builds the desired state; `config_path` anchors relative paths.
pub fn resolve(
    file: &RunnersFile,
    config_path: &Path,
    positions: &BTreeMap<String, Position>,
) -> Result<Desired, Vec<ConfigError>> {
    let mut c = Checker {
        file: config_path,
        positions,
        errors: Vec::new(),
    };
    let absolute = std::path::absolute(config_path).unwrap_or_else(|_| config_path.to_path_buf());
    let dir = absolute.parent().unwrap_or(Path::new("/"));
    let base = resolve_base(&mut c, &file.base, dir);
    let github = resolve_github(&mut c, file.github.as_ref(), dir);
    if file.state_dir.as_os_str().is_empty() {
        c.error("state_dir", "state_dir may not be empty".into());
    }
    let mut runners = BTreeMap::new();
    let mut seen: HashMap<String, String> = HashMap::new();
    for (i, entry) in file.runners.iter().enumerate() {
        let (names, specs) = resolve_entry(&mut c, i, entry, &file.defaults, &github, dir);
        let path = format!("runners[{i}].name");
        for name in names {
            // Case-insensitive: GitHub compares runner names that way.
            if let Some(first) = seen.insert(name.to_lowercase(), path.clone()) {
                c.error(
                    &path,
                    format!("runner name {name:?} is used twice (also by {first})"),
                );
            }
        }
        runners.extend(specs.into_iter().map(|spec| (spec.name.clone(), spec)));
    }
    check_defaults(&mut c, &file.defaults);
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
    if !c.errors.is_empty() {
        return Err(c.errors);
    }
    Ok(Desired {
        config_path: absolute.clone(),
        state_dir: join_clean(dir, &file.state_dir),
        base,
        github: Some(github).filter(|g| g.auth != GitHubAuth::None || file.github.is_some()),
        resync_interval,
        shutdown_timeout,
        runners,
    })
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
            for field in ["sha256", "download_url"] {
                if c.positions.contains_key(&format!("base.{field}")) {
                    c.error(
                        &format!("base.{field}"),
                        format!("base.{field} goes with base.version, not base.path"),
                    );
                }
            }
            BaseSource::Path(join_clean(dir, path))
        }
        (None, Some(version)) => resolve_version(c, base, version),
    }
}

fn resolve_version(c: &mut Checker<'_>, base: &BaseSpec, version: &str) -> BaseSource {
    let numeric = version.split('.').count() == 3
        && version
            .split('.')
            .all(|p| !p.is_empty() && p.chars().all(|ch| ch.is_ascii_digit()));
    if !numeric && version != "latest" {
        c.error(
            "base.version",
            format!("base.version {version:?} must be a release such as `2.329.0`, or `latest`"),
        );
    }
    let sha256 = base.sha256.as_ref().map(|s| s.to_ascii_lowercase());
    if let Some(sha) = &sha256 {
        if sha.len() != 64 || !sha.chars().all(|ch| ch.is_ascii_hexdigit()) {
            c.error(
                "base.sha256",
                format!("base.sha256 {sha:?} is not 64 hex digits"),
            );
        }
    }
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
    BaseSource::Version {
        version: version.to_string(),
        sha256,
        download_url,
    }
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
    GitHub {
        web_url,
        api_url,
        auth,
    }
}

/// Checks `defaults` on their own, so a bad default is reported even when no runner
/// inherits it yet. Runners that do inherit it report the same error, which is deduplicated.
fn check_defaults(c: &mut Checker<'_>, defaults: &RunnerDefaults) {
    let inherits_all = RunnerEntry::default();
    resolve_labels(c, 0, &inherits_all, defaults);
    resolve_env(c, 0, &inherits_all, defaults);
    if let Some(user) = &defaults.user {
        c.check("defaults.user", rules::check_user(user));
    }
    if let Some(var) = &defaults.registration_token_env {
        c.check(
            "defaults.registration_token_env",
            rules::check_env_name(var),
        );
    }
    if defaults.count == Some(0) {
        c.error("defaults.count", "count must be at least 1".into());
    }
    c.duration(
        "defaults.drain_timeout",
        defaults.drain_timeout.as_ref(),
        DEFAULT_DRAIN,
    );
}

/// Joins `rel` to `dir` and drops `.` and `..` components lexically, so paths in plans and
/// logs read the way the user wrote them (`/srv/ci/state`, not `/srv/ci/./state`).
fn join_clean(dir: &Path, rel: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in dir.join(rel).components() {
        match part {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// `pick` for a field of the same name in the entry and in `defaults`.
macro_rules! merged {
    ($entry:ident, $defaults:ident, $i:ident, $field:ident) => {
        pick(
            $entry.$field.as_ref(),
            $defaults.$field.as_ref(),
            $i,
            stringify!($field),
        )
    };
}

/// A merged field: the entry's value, else the default's, with the path where it is written.
fn pick<'a, T>(
    own: Option<&'a T>,
    default: Option<&'a T>,
    i: usize,
    field: &str,
) -> (Option<&'a T>, String) {
    match own {
        Some(v) => (Some(v), format!("runners[{i}].{field}")),
        None => (default, format!("defaults.{field}")),
    }
}

fn resolve_entry(
    c: &mut Checker<'_>,
    i: usize,
    entry: &RunnerEntry,
    defaults: &RunnerDefaults,
    github: &GitHub,
    dir: &Path,
) -> (Vec<String>, Vec<RunnerSpec>) {
    let errors_before = c.errors.len();
    let name_path = format!("runners[{i}].name");
    c.check(&name_path, rules::check_name(&entry.name));
    let repo = resolve_repo(c, i, entry, defaults, github);
    let labels = resolve_labels(c, i, entry, defaults);
    let (no_default, no_default_path) = merged!(entry, defaults, i, no_default_labels);
    let no_default_labels = no_default.copied().unwrap_or(false);
    if no_default_labels && labels.is_empty() {
        c.error(
            &no_default_path,
            "no_default_labels: true needs at least one label in `labels`".into(),
        );
    }
    let env = resolve_env(c, i, entry, defaults);
    let (user, user_path) = merged!(entry, defaults, i, user);
    let user = user.cloned().unwrap_or_else(|| DEFAULT_USER.to_string());
    c.check(&user_path, rules::check_user(&user));
    let registration = resolve_registration(c, i, entry, defaults, github, dir);
    let (count, count_path) = merged!(entry, defaults, i, count);
    let count = count.copied();
    let names = instance_names(c, &entry.name, count, &count_path);
    let (drain, drain_path) = merged!(entry, defaults, i, drain_timeout);
    let drain_timeout = c.duration(&drain_path, drain, DEFAULT_DRAIN);
    let (Some(repo), false) = (repo, c.errors.len() > errors_before) else {
        return (names, Vec::new());
    };
    let spec = RunnerSpec {
        name: String::new(),
        entry: i,
        repo,
        labels,
        no_default_labels,
        ephemeral: merged!(entry, defaults, i, ephemeral)
            .0
            .copied()
            .unwrap_or(false),
        env,
        drain_timeout,
        user,
        allow_root: merged!(entry, defaults, i, allow_root)
            .0
            .copied()
            .unwrap_or(false),
        registration,
    };
    let specs = names
        .iter()
        .map(|name| RunnerSpec {
            name: name.clone(),
            ..spec.clone()
        })
        .collect();
    (names, specs)
}

fn instance_names(
    c: &mut Checker<'_>,
    name: &str,
    count: Option<u32>,
    count_path: &str,
) -> Vec<String> {
    match count {
        None => vec![name.to_string()],
        Some(0) => {
            c.error(
                count_path,
                "count must be at least 1 (remove the entry to have no runner)".into(),
            );
            Vec::new()
        }
        Some(n) if n > MAX_COUNT => {
            c.error(count_path, format!("count {n} is more than {MAX_COUNT}"));
            Vec::new()
        }
        Some(n) => {
            let last = format!("{name}-{n}");
            if rules::check_name(name).is_ok() && rules::check_name(&last).is_err() {
                c.error(
                    count_path,
                    format!(
                        "instance name {last:?} would be longer than {} characters",
                        rules::MAX_NAME_LEN
                    ),
                );
            }
            (1..=n).map(|k| format!("{name}-{k}")).collect()
        }
    }
}

fn resolve_repo(
    c: &mut Checker<'_>,
    i: usize,
    entry: &RunnerEntry,
    defaults: &RunnerDefaults,
    github: &GitHub,
) -> Option<Repo> {
    let (repo, path) = merged!(entry, defaults, i, repo);
    let Some(text) = repo else {
        c.error(
            &format!("runners[{i}]"),
            format!("runner {:?} has no `repo`", entry.name),
        );
        return None;
    };
    match rules::parse_repo(text, &github.web_url) {
        Ok((owner, name, url)) => Some(Repo { owner, name, url }),
        Err(message) => {
            c.error(&path, message);
            None
        }
    }
}

fn resolve_labels(
    c: &mut Checker<'_>,
    i: usize,
    entry: &RunnerEntry,
    defaults: &RunnerDefaults,
) -> Vec<String> {
    let mut labels: Vec<String> = Vec::new();
    let sources = [
        (defaults.labels.as_ref(), "defaults.labels".to_string()),
        (entry.labels.as_ref(), format!("runners[{i}].labels")),
    ];
    for (list, path) in sources {
        let mut own = std::collections::HashSet::new();
        for (k, label) in list.into_iter().flatten().enumerate() {
            let item = format!("{path}[{k}]");
            c.check(&item, rules::check_label(label));
            if !own.insert(label.to_lowercase()) {
                c.error(&item, format!("label {label:?} is listed twice"));
            } else if !labels.iter().any(|l| l.eq_ignore_ascii_case(label)) {
                labels.push(label.clone());
            }
        }
    }
    if labels.len() > rules::MAX_LABELS {
        c.error(
            &format!("runners[{i}].labels"),
            format!("{} labels is more than {}", labels.len(), rules::MAX_LABELS),
        );
    }
    labels
}

/// Variables corral sets itself; setting them in `env` would bypass its rules.
const RESERVED_ENV: &[&str] = &["RUNNER_ALLOW_RUNASROOT"];

fn resolve_env(
    c: &mut Checker<'_>,
    i: usize,
    entry: &RunnerEntry,
    defaults: &RunnerDefaults,
) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    let sources = [
        (defaults.env.as_ref(), "defaults.env".to_string()),
        (entry.env.as_ref(), format!("runners[{i}].env")),
    ];
    for (map, path) in sources {
        for (key, value) in map.into_iter().flatten() {
            let item = format!("{path}.{key}");
            c.check(&format!("{item}#key"), rules::check_env_name(key));
            if key
                .to_ascii_uppercase()
                .starts_with("ACTIONS_RUNNER_INPUT_")
                || RESERVED_ENV.contains(&key.as_str())
            {
                c.error(
                    &format!("{item}#key"),
                    format!("{key} is set by corral (use allow_root or the token fields instead)"),
                );
            }
            env.insert(key.clone(), value.clone());
        }
    }
    env
}

fn resolve_registration(
    c: &mut Checker<'_>,
    i: usize,
    entry: &RunnerEntry,
    defaults: &RunnerDefaults,
    github: &GitHub,
    dir: &Path,
) -> Registration {
    let (env, env_path) = merged!(entry, defaults, i, registration_token_env);
    let (file, file_path) = merged!(entry, defaults, i, registration_token_file);
    match (env, file) {
        (Some(_), Some(_)) => {
            c.error(
                &file_path,
                "set registration_token_env or registration_token_file, not both".into(),
            );
            Registration::GitHub
        }
        (Some(var), None) => {
            c.check(&env_path, rules::check_env_name(var));
            Registration::TokenEnv(var.clone())
        }
        (None, Some(file)) => Registration::TokenFile(join_clean(dir, file)),
        (None, None) if github.auth == GitHubAuth::None => {
            c.error(
                &format!("runners[{i}]"),
                format!(
                    "runner {:?} has no way to register: set github.token_env, github.token_file or github.app, or registration_token_env / registration_token_file on the runner",
                    entry.name
                ),
            );
            Registration::GitHub
        }
        (None, None) => Registration::GitHub,
    }
}
