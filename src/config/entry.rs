//! One `runners` entry: merged with `defaults`, checked, expanded into instances.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use super::check::{join_clean, merged, Checker, DEFAULT_DRAIN};
use super::desired::{GitHub, GitHubAuth, Pool, Registration, Repo, RunnerSpec};
use super::instances::{resolve_names, resolve_repos};
use super::model::{Isolation, RunnerDefaults, RunnerEntry};
use super::rules;
use super::scale;

const DEFAULT_USER: &str = "runner";

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

/// Resolves entry `i` merged with `defaults`: every field is checked, and an entry without
/// errors is expanded into its instances.
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
    let (template, scale, names) = resolve_spec(c, i, entry, defaults, github, dir, &repos);
    let mut out = Resolved {
        names: names.iter().flatten().cloned().collect(),
        ..Resolved::default()
    };
    if c.errors.len() == errors_before {
        expand(
            &mut out,
            i,
            &entry.name,
            repos,
            names,
            &template,
            scale.as_ref(),
        );
    }
    out
}

/// What every instance of the entry shares, as a spec without name and repository, with
/// `scale` and the instance names of each repository's set. Fields are checked in the order
/// they are written here, which is the order their errors are reported in.
fn resolve_spec(
    c: &mut Checker<'_>,
    i: usize,
    entry: &RunnerEntry,
    defaults: &RunnerDefaults,
    github: &GitHub,
    dir: &Path,
    repos: &[(Repo, String)],
) -> (RunnerSpec, Option<scale::Scale>, Vec<Vec<String>>) {
    let labels = resolve_labels(c, i, entry, defaults);
    let no_default_labels = resolve_no_default_labels(c, i, entry, defaults, &labels);
    let env = resolve_env(c, i, entry, defaults);
    let (user, allow_root, isolation) = resolve_user(c, i, entry, defaults);
    let registration = resolve_registration(c, i, entry, defaults, github, dir);
    let (scale, ephemeral) = resolve_scale(c, i, entry, defaults, &registration);
    let names = resolve_names(c, i, entry, defaults, repos, scale.as_ref().map(|s| s.max));
    let (drain, drain_path) = merged!(entry, defaults, i, drain_timeout);
    // Struct fields are evaluated in the order written: the checks below keep their order.
    let spec = RunnerSpec {
        name: String::new(),
        entry: i,
        repo: Repo {
            owner: String::new(),
            name: String::new(),
            url: String::new(),
        },
        labels,
        no_default_labels,
        ephemeral,
        env,
        drain_timeout: c.duration(&drain_path, drain, DEFAULT_DRAIN),
        user,
        allow_root,
        isolation,
        registration,
        marker: github.marker_label.clone(),
        version: resolve_version(c, i, entry, defaults),
        docker: super::docker::resolve(c, i, entry, defaults, dir),
        resources: super::resources::resolve(c, i, entry, defaults),
        clean: or_default(merged!(entry, defaults, i, clean)),
        leftovers: or_default(merged!(entry, defaults, i, leftovers)),
        scale_set: None,
    };
    (spec, scale, names)
}

/// A merged field with nothing to check: its value, else the type's default.
fn or_default<T: Copy + Default>((value, _path): (Option<&T>, String)) -> T {
    value.copied().unwrap_or_default()
}

/// `user`, `allow_root` and `isolation`: whom the runner runs as.
fn resolve_user(
    c: &mut Checker<'_>,
    i: usize,
    entry: &RunnerEntry,
    defaults: &RunnerDefaults,
) -> (String, bool, Isolation) {
    let (user, user_path) = merged!(entry, defaults, i, user);
    let user_set = user.is_some();
    let user = user.cloned().unwrap_or_else(|| DEFAULT_USER.to_string());
    c.check(&user_path, rules::check_user(&user));
    let allow_root = or_default(merged!(entry, defaults, i, allow_root));
    let isolation = resolve_isolation(c, i, entry, defaults, user_set, allow_root);
    (user, allow_root, isolation)
}

/// `ephemeral` and `scale`: the instances are ephemeral when the entry scales or says so.
fn resolve_scale(
    c: &mut Checker<'_>,
    i: usize,
    entry: &RunnerEntry,
    defaults: &RunnerDefaults,
    registration: &Registration,
) -> (Option<scale::Scale>, bool) {
    let (ephemeral, ephemeral_path) = merged!(entry, defaults, i, ephemeral);
    let scale = entry.scale.as_ref().map(|s| {
        scale::resolve(
            c,
            i,
            entry,
            s,
            ephemeral.copied(),
            &ephemeral_path,
            registration,
        )
    });
    let ephemeral = scale.is_some() || ephemeral.copied().unwrap_or(false);
    (scale, ephemeral)
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
