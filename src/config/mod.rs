//! Desired state: `runners.yaml` (DESIGN.md §1) read, checked and resolved.
//!
//! Loading runs in stages so that a broken file gets every message at once, each with a
//! position: YAML syntax (yaml-rust2, which keeps positions), unknown fields (walked along
//! the schema the types derive), types (`serde_yaml`), then the rules of `validate`.
//!
//! # Layers
//!
//! A module uses only the layers below its own, so there is no import cycle:
//!
//! 1. Leaves, shared by all: `tree` (YAML with positions), `error`, `duration`, `rules`
//!    (single-value rules), `patterns` (schema patterns), `unknown`, `check` (the collector).
//! 2. The file as written: `model` (serde + schemars types, with `docker`, `resources` and
//!    `source` sections in its submodules).
//! 3. The file as resolved: `desired` (`Desired`, `RunnerSpec`, `Pool`, `DockerPolicy`, …).
//! 4. Resolving and checking: `scale`, `docker`, `resources` and `git` resolve one section;
//!    `entry` (with `instances`) one `runners` entry; `validate` the whole file.
//! 5. Loading: this module's parse functions, `source` (the repository's file merged in) and
//!    `locations`.

mod check;
mod desired;
mod docker;
mod duration;
mod entry;
mod error;
mod git;
mod instances;
mod locations;
mod model;
mod patterns;
mod resources;
mod rules;
mod scale;
mod source;
mod tree;
mod unknown;
mod validate;

use std::path::Path;

use error::serde_error;

pub use desired::{
    scale_set_key, Api, BaseSource, Desired, DockerPolicy, GitCredential, GitHub, GitHubAuth,
    GitSource, Pool, Registration, Repo, RunnerSpec, TokenSource, DEFAULT_DOWNLOAD_URL,
};
pub use docker::DEFAULT_IMAGE_BUDGET;
pub use duration::Duration;
pub use error::{ConfigError, ConfigErrors};
pub use git::DEFAULT_SOURCE_INTERVAL;
pub use locations::status_locations;
pub use model::{
    ApiSpec, BaseSpec, Clean, DockerSpec, GitHubAppSpec, GitHubSpec, GitSourceSpec, Isolation,
    Leftovers, ResourcesSpec, RunnerDefaults, RunnerEntry, RunnersFile, ScaleEngine, ScaleSpec,
    Size, SourceSpec,
};
pub use rules::{check_host_id, parse_bytes};
pub use source::{last_good_path, read_last_good, write_last_good, Fleet};
pub use tree::Position;

/// The JSON Schema of `runners.yaml`, pretty-printed.
pub fn schema_json() -> String {
    let schema = schemars::schema_for!(RunnersFile);
    // A schema is a JSON value; printing it cannot fail.
    serde_json::to_string_pretty(&schema).unwrap_or_default()
}

/// This host's id when `--host-id` is not given: its hostname.
pub fn default_host_id() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".to_string())
}

/// Reads, checks and resolves the config file at `path` for this host (its hostname).
pub fn load(path: &Path) -> Result<Desired, ConfigErrors> {
    load_on(path, &default_host_id())
}

/// Reads, checks and resolves the config file at `path` for host `host_id`.
pub fn load_on(path: &Path, host_id: &str) -> Result<Desired, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|err| {
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            pos: None,
            path: String::new(),
            message: format!("cannot read the config file: {err}"),
        }])
    })?;
    parse_on(&text, path, host_id)
}

/// Checks and resolves `text` as if read from `path` (relative paths resolve against its
/// directory), for this host.
pub fn parse(text: &str, path: &Path) -> Result<Desired, ConfigErrors> {
    parse_on(text, path, &default_host_id())
}

/// [`parse`] for host `host_id`.
pub fn parse_on(text: &str, path: &Path, host_id: &str) -> Result<Desired, ConfigErrors> {
    parse_with_fleet(text, path, host_id, None)
}

/// [`parse_on`] with `fleet` as the revision of the repository's file when the local file has
/// a `source` (`None`: the last good revision kept under `state_dir`).
pub fn parse_with_fleet(
    text: &str,
    path: &Path,
    host_id: &str,
    fleet: Option<&Fleet>,
) -> Result<Desired, ConfigErrors> {
    let whole_file = |pos, message| ConfigError {
        file: path.to_path_buf(),
        pos,
        path: String::new(),
        message,
    };
    let root = match tree::parse(text) {
        Ok(Some(root)) => root,
        Ok(None) => {
            return Err(ConfigErrors(vec![whole_file(
                None,
                "the file is empty; it needs at least `base`".into(),
            )]))
        }
        Err(err) => {
            return Err(ConfigErrors(vec![whole_file(
                Some(err.pos),
                format!("invalid YAML: {}", err.message),
            )]))
        }
    };
    let schema = serde_json::to_value(schemars::schema_for!(RunnersFile)).unwrap_or_default();
    let mut errors: Vec<ConfigError> = unknown::unknown_fields(&root, &schema)
        .into_iter()
        .map(|u| ConfigError {
            file: path.to_path_buf(),
            pos: Some(u.pos),
            path: u.path,
            message: u.message,
        })
        .collect();
    let file = match serde_yaml::from_str::<RunnersFile>(text) {
        Ok(file) => Some(file),
        Err(err) if errors.is_empty() || !err.to_string().contains("unknown field") => {
            errors.push(serde_error(&err, path));
            None
        }
        Err(_) => None,
    };
    if let (Some(file), true) = (&file, errors.is_empty()) {
        return source::resolve(file, &root, path, host_id, fleet).map_err(sorted);
    }
    Err(sorted(errors))
}

fn sorted(mut errors: Vec<ConfigError>) -> ConfigErrors {
    errors.sort_by_key(|e| e.pos);
    // A broken value in `defaults` is reported once, not once per runner that inherits it.
    errors.dedup();
    ConfigErrors(errors)
}
