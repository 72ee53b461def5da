//! Where the controller of a config file keeps its status, read from a file that may not
//! pass `corral check`: after an invalid edit the running controller keeps the last good file
//! in force and says so in its status, and `corral status` must still find that status.

use std::path::{Path, PathBuf};

use super::check::join_clean;
use super::desired::Api;
use super::model::{default_state_dir, ApiSpec};
use super::validate::api_alone;

/// `state_dir` and the status API as the file at `path` names them, each read on its own:
/// `None` when the file cannot be read or is not YAML, or `state_dir` is not a path.
pub fn status_locations(path: &Path) -> Option<(PathBuf, Option<Api>)> {
    let text = std::fs::read_to_string(path).ok()?;
    let value: serde_yaml::Value = serde_yaml::from_str(&text).ok()?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let state_dir = match value.get("state_dir") {
        None => default_state_dir(),
        Some(v) => PathBuf::from(v.as_str().filter(|s| !s.is_empty())?),
    };
    let api = value
        .get("api")
        .and_then(|v| serde_yaml::from_value::<ApiSpec>(v.clone()).ok())
        .and_then(|spec| api_alone(&spec, path, dir));
    Some((join_clean(dir, &state_dir), api))
}
