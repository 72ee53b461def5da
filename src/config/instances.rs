//! The repositories a `runners` entry serves and the instance names it claims in each.

use super::check::{merged, Checker};
use super::desired::{GitHub, GitHubAuth, Repo};
use super::model::{RunnerDefaults, RunnerEntry};
use super::rules;

/// Largest `count`: a typo such as `count: 1000` should not provision a thousand runners.
const MAX_COUNT: u32 = 500;

/// The instance names of each repository's set, in the order of `repos`: `scale.max` of
/// them when the entry has `scale` (`scale_max`), else `count`.
pub(super) fn resolve_names(
    c: &mut Checker<'_>,
    i: usize,
    entry: &RunnerEntry,
    defaults: &RunnerDefaults,
    repos: &[(Repo, String)],
    scale_max: Option<u32>,
) -> Vec<Vec<String>> {
    let (count, count_path) = merged!(entry, defaults, i, count);
    // `scale` decides the instances; a `count` in `defaults` does not apply to it.
    let instances = scale_max.or_else(|| count.copied());
    set_names(c, i, entry, repos, instances, &count_path)
}

/// [`resolve_names`] once the number of instances is known.
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
pub(super) fn resolve_repos(
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
