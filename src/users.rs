//! Which Unix user a runner runs as.

use std::path::PathBuf;

use nix::unistd::{Uid, User};

use crate::process::RunAs;

/// A runner's user, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerUser {
    /// How to launch its processes.
    pub run_as: RunAs,
    /// Its home directory (`HOME` for the runner).
    pub home: PathBuf,
}

/// Why a runner's user cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// No such user on this host.
    #[error(
        "user `{0}` does not exist on this host (create it, or set `user:` to an existing one)"
    )]
    Missing(String),
    /// The user is root but `allow_root` is not set.
    #[error("user `{0}` is root; set `allow_root: true` to run this runner as root")]
    RootNotAllowed(String),
    /// The user database could not be read.
    #[error("cannot look up user `{name}`")]
    Lookup {
        /// The user.
        name: String,
        /// Why.
        #[source]
        source: nix::Error,
    },
}

/// Resolves `name` for a runner. When corral is root the runner drops to that user unless
/// `allow_root`; otherwise it runs as corral's own user.
pub fn resolve(name: &str, allow_root: bool) -> Result<RunnerUser, UserError> {
    let me = Uid::current();
    if !me.is_root() || allow_root {
        let home = User::from_uid(me)
            .ok()
            .flatten()
            .map_or_else(|| PathBuf::from("/"), |u| u.dir);
        return Ok(RunnerUser {
            run_as: RunAs::Inherit,
            home,
        });
    }
    let user = User::from_name(name)
        .map_err(|source| UserError::Lookup {
            name: name.to_string(),
            source,
        })?
        .ok_or_else(|| UserError::Missing(name.to_string()))?;
    if user.uid.is_root() {
        return Err(UserError::RootNotAllowed(name.to_string()));
    }
    Ok(RunnerUser {
        run_as: RunAs::User {
            uid: user.uid,
            gid: user.gid,
        },
        home: user.dir,
    })
}
