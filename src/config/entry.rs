//! One `runners` entry: merged with `defaults`, checked, expanded into instances.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use super::check::{join_clean, Checker, DEFAULT_DRAIN};
use super::desired::{GitHub, GitHubAuth, Pool, Registration, Repo, RunnerSpec};
use super::model::{Isolation, RunnerDefaults, RunnerEntry};
use super::rules;
use super::scale;

const DEFAULT_USER: &str = "runner";
/// Largest `count`: a typo such as `count: 1000` should not provision a thousand runners.
const MAX_COUNT: u32 = 500;

/// Checks `defaults` on their own, so a bad default is reported even when no runner
/// inherits it yet. Runners that do inherit it report the same error, which is deduplicated.
pub(super) fn check_defaults(c: &mut Checker<'_>, defaults: &RunnerDefaults) {
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
    if let Some(version) = &defaults.version {
        c.check("defaults.version", rules::check_version(version));
    }
    if let Some(budget) = defaults
        .docker
        .as_ref()
        .and_then(|d| d.image_budget.as_deref())
    {
        c.check(
            "defaults.docker.image_budget",
            rules::parse_bytes(budget).map(drop),
        );
    }
    super::resources::check_defaults(c, defaults);
    if defaults.count == Some(0) {
        c.error("defaults.count", "count must be at least 1".into());
    }
    c.duration(
        "defaults.drain_timeout",
        defaults.drain_timeout.as_ref(),
        DEFAULT_DRAIN,
    );
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

/// One entry resolved: every instance name it claims (for uniqueness, whatever the host),
/// its fixed instances and its pools.
#[derive(Default)]
pub(super) struct Resolved {
    pub names: Vec<String>,
    pub specs: Vec<RunnerSpec>,
    pub pools: Vec<Pool>,
}

/// `no_default_labels`, which needs a label of the runner's own.
fn resolve_no_default_labels(
    c: &mut Checker<'_>,
    i: usize,
    entry: &RunnerEntry,
    defaults: &RunnerDefaults,
    labels: &[String],
) -> bool {
    let (no_default, no_default_path) = merged!(entry, defaults, i, no_default_labels);
    let no_default_labels = no_default.copied().unwrap_or(false);
    if no_default_labels && labels.is_empty() {
        c.error(
            &no_default_path,
            "no_default_labels: true needs at least one label in `labels`".into(),
        );
    }
    no_default_labels
}

pub(super) fn resolve_entry(
    c: &mut Checker<'_>,
    i: usize,
    entry: &RunnerEntry,
    defaults: &RunnerDefaults,
    github: &GitHub,
    dir: &Path,
) -> Resolved {
    let errors_before = c.errors.len();
    let name_path = format!("runners[{i}].name");
    c.check(&name_path, rules::check_name(&entry.name));
    check_hosts(c, i, entry.hosts.as_deref());
    let repos = resolve_repos(c, i, entry, defaults, github);
    let labels = resolve_labels(c, i, entry, defaults);
    let no_default_labels = resolve_no_default_labels(c, i, entry, defaults, &labels);
    let env = resolve_env(c, i, entry, defaults);
    let (user, user_path) = merged!(entry, defaults, i, user);
    let user_set = user.is_some();
    let user = user.cloned().unwrap_or_else(|| DEFAULT_USER.to_string());
    c.check(&user_path, rules::check_user(&user));
    let allow_root = merged!(entry, defaults, i, allow_root)
        .0
        .copied()
        .unwrap_or(false);
    let isolation = resolve_isolation(c, i, entry, defaults, user_set, allow_root);
    let registration = resolve_registration(c, i, entry, defaults, github, dir);
    let (ephemeral, ephemeral_path) = merged!(entry, defaults, i, ephemeral);
    let scale = entry.scale.as_ref().map(|s| {
        scale::resolve(
            c,
            i,
            entry,
            s,
            ephemeral.copied(),
            &ephemeral_path,
            &registration,
        )
    });
    let (count, count_path) = merged!(entry, defaults, i, count);
    // `scale` decides the instances; a `count` in `defaults` does not apply to it.
    let count = if scale.is_some() {
        None
    } else {
        count.copied()
    };
    let instances = scale.as_ref().map_or(count, |s| Some(s.max));
    let names = set_names(c, i, entry, &repos, instances, &count_path);
    let (drain, drain_path) = merged!(entry, defaults, i, drain_timeout);
    let drain_timeout = c.duration(&drain_path, drain, DEFAULT_DRAIN);
    let version = resolve_version(c, i, entry, defaults);
    let docker = super::docker::resolve(c, i, entry, defaults, dir);
    let resources = super::resources::resolve(c, i, entry, defaults);
    let all_names = names.iter().flatten().cloned().collect();
    if c.errors.len() > errors_before {
        return Resolved {
            names: all_names,
            ..Resolved::default()
        };
    }
    let clean = merged!(entry, defaults, i, clean)
        .0
        .copied()
        .unwrap_or_default();
    let leftovers = merged!(entry, defaults, i, leftovers)
        .0
        .copied()
        .unwrap_or_default();
    let template = RunnerSpec {
        name: String::new(),
        entry: i,
        repo: Repo {
            owner: String::new(),
            name: String::new(),
            url: String::new(),
        },
        labels,
        no_default_labels,
        ephemeral: scale.is_some() || ephemeral.copied().unwrap_or(false),
        env,
        drain_timeout,
        user,
        allow_root,
        isolation,
        registration,
        marker: github.marker_label.clone(),
        version,
        docker,
        resources,
        clean,
        leftovers,
        scale_set: None,
    };
    let mut out = Resolved {
        names: all_names,
        ..Resolved::default()
    };
    expand(
        &mut out,
        i,
        &entry.name,
        repos,
        names,
        &template,
        scale.as_ref(),
    );
    out
}

/// `isolation`, refused together with what contradicts it: a user of its own is never root
/// and never a named shared user.
fn resolve_isolation(
    c: &mut Checker<'_>,
    i: usize,
    entry: &RunnerEntry,
    defaults: &RunnerDefaults,
    user_set: bool,
    allow_root: bool,
) -> Isolation {
    let (isolation, path) = merged!(entry, defaults, i, isolation);
    let isolation = isolation.copied().unwrap_or_default();
    if isolation == Isolation::UserPerRunner {
        if allow_root {
            c.error(
                &path,
                "isolation: user-per-runner runs each runner as its own unprivileged user; it cannot be combined with allow_root: true".into(),
            );
        }
        if user_set {
            c.error(
                &path,
                "isolation: user-per-runner gives each runner its own user `corral-<name>`; remove `user`, which names a shared one".into(),
            );
        }
    }
    isolation
}

/// The instance names of each repository's set, in the order of `repos`.
fn set_names(
    c: &mut Checker<'_>,
    i: usize,
    entry: &RunnerEntry,
    repos: &[(Repo, String)],
    instances: Option<u32>,
    count_path: &str,
) -> Vec<Vec<String>> {
    let path = if entry.scale.is_some() {
        format!("runners[{i}].scale.max")
    } else {
        count_path.to_string()
    };
    repos
        .iter()
        .enumerate()
        .map(|(k, (_, base))| {
            let base_path = if entry.repos.is_some() {
                format!("runners[{i}].repos[{k}]")
            } else {
                format!("runners[{i}].name")
            };
            instance_names(c, &entry.name, base, &base_path, instances, &path)
        })
        .collect()
}

/// `version`, checked.
fn resolve_version(
    c: &mut Checker<'_>,
    i: usize,
    entry: &RunnerEntry,
    defaults: &RunnerDefaults,
) -> Option<String> {
    let (version, path) = merged!(entry, defaults, i, version);
    if let Some(version) = version {
        c.check(&path, rules::check_version(version));
    }
    version.cloned()
}

/// Fills `out` with one set per repository: fixed instances, or a pool.
fn expand(
    out: &mut Resolved,
    i: usize,
    entry_name: &str,
    repos: Vec<(Repo, String)>,
    names: Vec<Vec<String>>,
    template: &RunnerSpec,
    scale: Option<&scale::Scale>,
) {
    for ((repo, _), slots) in repos.into_iter().zip(names) {
        let spec = RunnerSpec {
            repo,
            ..template.clone()
        };
        match scale {
            Some(s) => {
                // A scale set is named after the pool's instances unless the file names it;
                // its runners carry the name first, then the entry's labels.
                let base = slots.first().map_or(entry_name, |first| {
                    first.strip_suffix("-1").unwrap_or(first)
                });
                let scale_set = s
                    .scaleset
                    .then(|| s.set_name.clone().unwrap_or_else(|| base.to_string()));
                let mut spec = spec;
                if let Some(name) = &scale_set {
                    spec.labels.insert(0, name.clone());
                    spec.scale_set = Some(name.clone());
                }
                out.pools.push(Pool {
                    entry: i,
                    name: entry_name.to_string(),
                    slots,
                    spec,
                    min_idle: s.min_idle,
                    idle_timeout: s.idle_timeout,
                    queued_alert_after: s.queued_alert_after,
                    scale_set,
                });
            }
            None => out.specs.extend(slots.into_iter().map(|name| RunnerSpec {
                name,
                ..spec.clone()
            })),
        }
    }
}

/// `hosts`: a non-empty list of distinct host ids.
fn check_hosts(c: &mut Checker<'_>, i: usize, hosts: Option<&[String]>) {
    let Some(hosts) = hosts else { return };
    if hosts.is_empty() {
        c.error(
            &format!("runners[{i}].hosts"),
            "hosts may not be empty (remove it to run the entry on every host)".into(),
        );
    }
    let mut seen = HashSet::new();
    for (k, host) in hosts.iter().enumerate() {
        let path = format!("runners[{i}].hosts[{k}]");
        if let Err(message) = rules::check_host_id(host) {
            c.error(&path, message);
        } else if !seen.insert(host.to_ascii_lowercase()) {
            c.error(&path, format!("host {host:?} is listed twice"));
        }
    }
}

/// The instance names of one repository's set: `base`, or `base-1` … `base-N`.
fn instance_names(
    c: &mut Checker<'_>,
    entry_name: &str,
    base: &str,
    base_path: &str,
    count: Option<u32>,
    count_path: &str,
) -> Vec<String> {
    if let Err(message) = rules::check_name(base) {
        // A bad entry name is reported at `name`; a good one made too long by the repository
        // it is joined with, at that repository.
        if base_path.contains(".repos[") && rules::check_name(entry_name).is_ok() {
            c.error(
                base_path,
                format!("runner names for this repository: {message}"),
            );
        }
        return Vec::new();
    }
    match count {
        None => vec![base.to_string()],
        Some(0) => {
            // `scale.max: 0` is reported by the scale rules.
            if !count_path.ends_with("scale.max") {
                c.error(
                    count_path,
                    "count must be at least 1 (remove the entry to have no runner)".into(),
                );
            }
            Vec::new()
        }
        Some(n) if n > MAX_COUNT => {
            let field = count_path.rsplit('.').next().unwrap_or("count");
            c.error(count_path, format!("{field} {n} is more than {MAX_COUNT}"));
            Vec::new()
        }
        Some(n) => {
            let last = format!("{base}-{n}");
            if rules::check_name(&last).is_err() {
                c.error(
                    count_path,
                    format!(
                        "instance name {last:?} would be longer than {} characters",
                        rules::MAX_NAME_LEN
                    ),
                );
            }
            (1..=n).map(|k| format!("{base}-{k}")).collect()
        }
    }
}

/// The entry's repositories, each with the base of its instance names: `repo` gives one
/// (named `<name>`), `repos` one per item (named `<name>-<repo>`, or `<name>-<owner>-<repo>`
/// for repositories of the entry that share a name).
fn resolve_repos(
    c: &mut Checker<'_>,
    i: usize,
    entry: &RunnerEntry,
    defaults: &RunnerDefaults,
    github: &GitHub,
) -> Vec<(Repo, String)> {
    let Some(list) = &entry.repos else {
        return resolve_repo(c, i, entry, defaults, github)
            .map(|repo| (repo, entry.name.clone()))
            .into_iter()
            .collect();
    };
    if entry.repo.is_some() {
        c.error(
            &format!("runners[{i}].repos"),
            "set repo or repos, not both".into(),
        );
        return Vec::new();
    }
    if list.is_empty() {
        c.error(
            &format!("runners[{i}].repos"),
            "repos may not be empty".into(),
        );
    }
    let mut repos: Vec<Repo> = Vec::new();
    for (k, text) in list.iter().enumerate() {
        let path = format!("runners[{i}].repos[{k}]");
        match rules::parse_repo(text, &github.web_url).and_then(|r| on_github_host(r, github)) {
            Ok((owner, name, url)) => {
                if repos.iter().any(|r| r.url.eq_ignore_ascii_case(&url)) {
                    c.error(&path, format!("repository {text:?} is listed twice"));
                } else {
                    repos.push(Repo { owner, name, url });
                }
            }
            Err(message) => c.error(&path, message),
        }
    }
    let shared = |repo: &Repo| {
        repos
            .iter()
            .filter(|r| r.name.eq_ignore_ascii_case(&repo.name))
            .count()
            > 1
    };
    repos
        .iter()
        .map(|repo| {
            let part = if shared(repo) {
                format!("{}-{}", repo.owner, repo.name)
            } else {
                repo.name.clone()
            };
            (repo.clone(), format!("{}-{part}", entry.name))
        })
        .collect()
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
            format!("runner {:?} has no `repo` (or `repos`)", entry.name),
        );
        return None;
    };
    match rules::parse_repo(text, &github.web_url).and_then(|r| on_github_host(r, github)) {
        Ok((owner, name, url)) => Some(Repo { owner, name, url }),
        Err(message) => {
            c.error(&path, message);
            None
        }
    }
}

/// A parsed repository, refused when corral has a credential and it is on another host.
fn on_github_host(
    repo: (String, String, String),
    github: &GitHub,
) -> Result<(String, String, String), String> {
    if github.auth != GitHubAuth::None {
        rules::check_repo_host(&repo.2, &github.web_url)?;
    }
    Ok(repo)
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
        let mut own = HashSet::new();
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
