//! One `runners` entry: merged with `defaults`, checked, expanded into instances.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use super::desired::{GitHub, GitHubAuth, Registration, Repo, RunnerSpec};
use super::model::{Isolation, RunnerDefaults, RunnerEntry};
use super::rules;
use super::validate::{join_clean, Checker, DEFAULT_DRAIN};

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

pub(super) fn resolve_entry(
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
    let user_set = user.is_some();
    let user = user.cloned().unwrap_or_else(|| DEFAULT_USER.to_string());
    c.check(&user_path, rules::check_user(&user));
    let allow_root = merged!(entry, defaults, i, allow_root)
        .0
        .copied()
        .unwrap_or(false);
    let isolation = resolve_isolation(c, i, entry, defaults, user_set, allow_root);
    let registration = resolve_registration(c, i, entry, defaults, github, dir);
    let (count, count_path) = merged!(entry, defaults, i, count);
    let count = count.copied();
    let names = instance_names(c, &entry.name, count, &count_path);
    let (drain, drain_path) = merged!(entry, defaults, i, drain_timeout);
    let drain_timeout = c.duration(&drain_path, drain, DEFAULT_DRAIN);
    let (version, version_path) = merged!(entry, defaults, i, version);
    if let Some(version) = version {
        c.check(&version_path, rules::check_version(version));
    }
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
        allow_root,
        isolation,
        registration,
        marker: github.marker_label.clone(),
        version: version.cloned(),
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
