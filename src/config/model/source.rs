//! `source` as written (DESIGN.md §6): the git repository the runner list is followed from.

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::duration::Duration;
use crate::config::patterns;

/// `source`: where the runner list comes from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// A git repository followed the `GitOps` way.
    pub git: GitSourceSpec,
}

/// `source.git`: the repository, the revision followed and the file inside it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GitSourceSpec {
    /// Repository URL: `https://`, `ssh://` or `file://` (no credentials in it).
    #[schemars(regex(pattern = r"^(https|ssh|file)://"))]
    pub url: String,
    /// A branch, tag or commit (default `HEAD`, the remote's default branch).
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
    /// The file inside the repository, holding `defaults`, `runners` and `max_runners` only.
    pub path: String,
    /// How often the repository is fetched (default 1m); a push webhook fetches at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    /// Environment variable holding an https token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = patterns::ENV_NAME))]
    pub token_env: Option<String>,
    /// File holding an https token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// Private key file for an `ssh://` URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_key_file: Option<PathBuf>,
    /// `known_hosts` file holding the `ssh://` server's host key (default: ssh's own,
    /// `~/.ssh/known_hosts` of corral's user and `/etc/ssh/ssh_known_hosts`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_hosts_file: Option<PathBuf>,
}
