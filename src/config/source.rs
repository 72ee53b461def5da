//! `source:` (DESIGN.md §6): the runner list followed from a git repository.
//!
//! The local file keeps what belongs to the host (`base`, `state_dir`, `github`, `api`,
//! `source` and the other top-level settings); the file in the repository holds what the
//! fleet shares: `defaults`, `runners`, `max_runners`. The two are checked apart (a host
//! field in the repository's file, `runners` in a local file with a source are errors
//! naming the field) and then resolved together, each error naming the file it is in.
//!
//! The last revision that was applied is kept under `<state_dir>/source/last-good`, so a
//! restarted corral (or `corral check`/`plan`) uses it without the remote.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::check::join_clean;
use super::desired::{Desired, GitSource};
use super::error::{serde_error, ConfigError};
use super::git::check_source;
use super::model::{GitSourceSpec, RunnerDefaults, RunnerEntry, RunnersFile};
use super::tree::{self, Key, Node, NodeKind, Position};
use super::unknown::{unknown_fields, UnknownField};

/// The fields the repository's file may hold; every other top-level field is the host's.
pub const FLEET_FIELDS: [&str; 3] = ["defaults", "runners", "max_runners"];

/// The repository's file: what the fleet shares.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FleetFile {
    #[serde(default)]
    defaults: RunnerDefaults,
    #[serde(default)]
    runners: Vec<RunnerEntry>,
    #[serde(default)]
    max_runners: Option<u32>,
}

/// One revision of the repository's file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fleet {
    /// The 40-hex commit it was read from.
    pub commit: String,
    /// The file's text.
    pub text: String,
}

/// Where the last applied revision is kept.
pub fn last_good_path(state_dir: &Path) -> PathBuf {
    state_dir.join("source").join("last-good")
}

/// The last applied revision, if one was kept.
pub fn read_last_good(state_dir: &Path) -> Option<Fleet> {
    let text = std::fs::read_to_string(last_good_path(state_dir)).ok()?;
    let (commit, text) = text.split_once('\n')?;
    let commit = commit.trim();
    (commit.len() == 40 && commit.bytes().all(|b| b.is_ascii_hexdigit())).then(|| Fleet {
        commit: commit.to_string(),
        text: text.to_string(),
    })
}

/// Keeps `fleet` as the last applied revision: written whole to a temporary file, synced,
/// then renamed over the old one, so a crash leaves one or the other.
pub fn write_last_good(state_dir: &Path, fleet: &Fleet) -> std::io::Result<()> {
    use std::io::Write as _;
    let path = last_good_path(state_dir);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        writeln!(f, "{}", fleet.commit)?;
        f.write_all(fleet.text.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &path)
}

/// Checks the local file `file` (which has a `source`) and the repository's file, and
/// resolves them together. `fleet` is the revision to use; `None` takes the kept last good
/// one (no runners before the first good fetch).
pub(super) fn resolve(
    file: &RunnersFile,
    root: &Node,
    config_path: &Path,
    host_id: &str,
    fleet: Option<&Fleet>,
) -> Result<Desired, Vec<ConfigError>> {
    let Some(spec) = file.source.as_ref() else {
        return super::validate::resolve(file, config_path, &root.positions(), host_id);
    };
    let spec = &spec.git;
    let positions = root.positions();
    let absolute = std::path::absolute(config_path).unwrap_or_else(|_| config_path.to_path_buf());
    let dir = absolute.parent().unwrap_or(Path::new("/")).to_path_buf();
    let mut errors = Vec::new();
    let mut source = check_local(root, spec, &dir, &mut |path, message| {
        errors.push(local_error(config_path, &positions, path, message));
    });
    let state_dir = join_clean(&dir, &file.state_dir);
    let kept;
    let fleet = if let Some(fleet) = fleet {
        Some(fleet)
    } else {
        kept = read_last_good(&state_dir);
        kept.as_ref()
    };
    let fleet_path = PathBuf::from(&spec.path);
    let parsed = match fleet.map(|fleet| parse_fleet(&fleet.text, &fleet_path)) {
        Some(Ok(parsed)) => parsed,
        Some(Err(mut errs)) => {
            errors.append(&mut errs);
            (FleetFile::default(), BTreeMap::new())
        }
        None => (FleetFile::default(), BTreeMap::new()),
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut desired = resolve_merged(file, positions, parsed, config_path, &fleet_path, host_id)?;
    if let Some(source) = source.as_mut() {
        source.revision = fleet.map(|f| f.commit.clone());
    }
    desired.source = source;
    Ok(desired)
}

/// An error in the local file at `path`, positioned at its key when it has one.
fn local_error(
    config_path: &Path,
    positions: &BTreeMap<String, Position>,
    path: &str,
    message: String,
) -> ConfigError {
    ConfigError {
        file: config_path.to_path_buf(),
        pos: positions
            .get(&format!("{path}#key"))
            .or_else(|| positions.get(path))
            .copied(),
        path: path.to_string(),
        message,
    }
}

/// The local file's own checks when it has a `source`: no fleet field in it, and a valid
/// `source.git`, resolved. Reports through `err(field, message)`.
fn check_local(
    root: &Node,
    spec: &GitSourceSpec,
    dir: &Path,
    err: &mut dyn FnMut(&str, String),
) -> Option<GitSource> {
    if let NodeKind::Map(entries) = &root.kind {
        for (key, _) in entries {
            if FLEET_FIELDS.contains(&key.name.as_str()) {
                err(
                    &key.name,
                    format!(
                        "`{}` belongs in the repository's file `{}` when the local file has a `source`",
                        key.name, spec.path
                    ),
                );
            }
        }
    }
    check_source(spec, dir, err)
}

/// True for a field path inside `defaults`, `runners` or `max_runners`.
fn is_fleet_path(path: &str) -> bool {
    FLEET_FIELDS.iter().any(|f| {
        path.strip_prefix(f)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[', '#']))
    })
}

/// Resolves the local file with the fleet fields of the repository's file (`parsed`, with
/// their positions there); each error names the file its field is in.
fn resolve_merged(
    file: &RunnersFile,
    positions: BTreeMap<String, Position>,
    parsed: (FleetFile, BTreeMap<String, Position>),
    config_path: &Path,
    fleet_path: &Path,
    host_id: &str,
) -> Result<Desired, Vec<ConfigError>> {
    let (fleet_file, fleet_positions) = parsed;
    let mut merged = file.clone();
    merged.source = None;
    merged.defaults = fleet_file.defaults;
    merged.runners = fleet_file.runners;
    merged.max_runners = fleet_file.max_runners;
    let mut all: BTreeMap<String, Position> = positions
        .into_iter()
        .filter(|(k, _)| !is_fleet_path(k))
        .collect();
    all.extend(fleet_positions);
    super::validate::resolve(&merged, config_path, &all, host_id).map_err(|errs| {
        errs.into_iter()
            .map(|mut e| {
                if is_fleet_path(&e.path) {
                    e.file = fleet_path.to_path_buf();
                }
                e
            })
            .collect()
    })
}

/// The repository's file, checked alone: YAML, host fields, unknown fields, types.
fn parse_fleet(
    text: &str,
    path: &Path,
) -> Result<(FleetFile, BTreeMap<String, Position>), Vec<ConfigError>> {
    let error = |pos, field: &str, message| ConfigError {
        file: path.to_path_buf(),
        pos,
        path: field.to_string(),
        message,
    };
    let root = match tree::parse(text) {
        Ok(Some(root)) => root,
        // An empty file: no runners.
        Ok(None) => return Ok((FleetFile::default(), BTreeMap::new())),
        Err(err) => {
            return Err(vec![error(
                Some(err.pos),
                "",
                format!("invalid YAML: {}", err.message),
            )])
        }
    };
    let NodeKind::Map(entries) = &root.kind else {
        return Err(vec![error(
            Some(root.pos),
            "",
            "the repository's file must be a mapping of `defaults`, `runners`, `max_runners`"
                .into(),
        )]);
    };
    let errors: Vec<ConfigError> = non_fleet_fields(entries)
        .into_iter()
        .chain(unknown_fleet_fields(&root))
        .map(|u| error(Some(u.pos), &u.path, u.message))
        .collect();
    if !errors.is_empty() {
        return Err(errors);
    }
    match serde_yaml::from_str::<FleetFile>(text) {
        Ok(file) => Ok((file, root.positions())),
        Err(err) => Err(vec![serde_error(&err, path)]),
    }
}

/// Top-level fields of the repository's file other than the fleet's: host fields, which
/// belong in the local file, and unknown ones.
fn non_fleet_fields(entries: &[(Key, Node)]) -> Vec<UnknownField> {
    let host_fields = serde_json::to_value(schemars::schema_for!(RunnersFile))
        .ok()
        .and_then(|s| s.get("properties").and_then(|p| p.as_object()).cloned())
        .unwrap_or_default();
    let mut fields = Vec::new();
    for (key, _) in entries {
        if FLEET_FIELDS.contains(&key.name.as_str()) {
            continue;
        }
        let message = if host_fields.contains_key(&key.name) {
            format!(
                "`{}` is a host field: it belongs in the local config file, not the repository's",
                key.name
            )
        } else {
            format!(
                "unknown field `{}` (the repository's file holds `defaults`, `runners`, `max_runners`)",
                key.name
            )
        };
        fields.push(UnknownField {
            path: key.name.clone(),
            pos: key.pos,
            message,
        });
    }
    fields
}

/// Unknown fields inside `defaults`, `runners` and `max_runners`.
fn unknown_fleet_fields(root: &Node) -> Vec<UnknownField> {
    let schema = serde_json::to_value(schemars::schema_for!(RunnersFile)).unwrap_or_default();
    unknown_fields(root, &schema)
        .into_iter()
        .filter(|u| {
            FLEET_FIELDS
                .iter()
                .any(|f| u.path.starts_with(f) && u.path != *f)
        })
        .collect()
}
