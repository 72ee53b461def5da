//! Which Unix user a runner runs as: corral's own (corral is not root, or `allow_root`), the
//! shared `user` (`isolation: shared`), or one of its own (`isolation: user-per-runner`).
//!
//! A runner's own user is `corral-<name>` (lower case; past 32 characters, a prefix of the
//! name and a digest of it). corral creates it with `useradd --system` when it is missing, and
//! uses it as it is when it exists, so an administrator who wants fixed uids creates the users
//! first. corral never deletes one: a uid handed to a new user could read what an old runner's
//! jobs left outside the state directory.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use nix::unistd::{Uid, User};
use sha2::{Digest, Sha256};

use crate::config::{Isolation, RunnerSpec};
use crate::process::RunAs;

/// Longest user name `useradd` accepts on common distributions.
const MAX_USER_LEN: usize = 32;
/// Serializes `useradd` within corral: it locks `/etc/passwd` and fails rather than waits.
static CREATING: Mutex<()> = Mutex::new(());

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
    /// `isolation: user-per-runner` needs root to create users and switch to them.
    #[error("isolation: user-per-runner needs corral to run as root (it creates and switches to user `{0}`)")]
    NeedsRoot(String),
    /// `useradd` failed.
    #[error("cannot create user `{name}` with useradd: {output}")]
    Create {
        /// The user.
        name: String,
        /// What useradd said.
        output: String,
    },
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

/// The user a runner runs as, for `spec` with its root at `root`; with `user-per-runner`
/// (and corral root) its own user, created when missing, with `HOME` at its root.
pub fn for_runner(spec: &RunnerSpec, root: &Path) -> Result<RunnerUser, UserError> {
    if spec.isolation == Isolation::Shared {
        return resolve(&spec.user, spec.allow_root);
    }
    let name = per_runner_name(&spec.name);
    if !Uid::current().is_root() {
        return Err(UserError::NeedsRoot(name));
    }
    let user = ensure(&name, &spec.name, root)?;
    if user.uid.is_root() {
        return Err(UserError::RootNotAllowed(name));
    }
    Ok(RunnerUser {
        run_as: RunAs::User {
            uid: user.uid,
            gid: user.gid,
        },
        // Its private root: nothing of one runner's home is another's.
        home: root.to_path_buf(),
    })
}

/// The user name of runner `runner` under `user-per-runner`.
pub fn per_runner_name(runner: &str) -> String {
    let lower = runner.to_ascii_lowercase();
    let full = format!("corral-{lower}");
    if full.len() <= MAX_USER_LEN {
        return full;
    }
    // Runner names are unique ignoring case, so the digest of the lower-case name keeps
    // shortened names apart.
    let hash = Sha256::digest(lower.as_bytes());
    let hex = hash.iter().take(4).fold(String::new(), |mut out, b| {
        use std::fmt::Write as _;
        let _ = write!(out, "{b:02x}");
        out
    });
    format!("corral-{}-{hex}", &lower[..16])
}

fn lookup(name: &str) -> Result<Option<User>, UserError> {
    User::from_name(name).map_err(|source| UserError::Lookup {
        name: name.to_string(),
        source,
    })
}

/// `name`, created as a system user without a login shell when it does not exist.
fn ensure(name: &str, runner: &str, root: &Path) -> Result<User, UserError> {
    if let Some(user) = lookup(name)? {
        return Ok(user);
    }
    let _guard = CREATING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let shell = ["/usr/sbin/nologin", "/sbin/nologin", "/bin/false"]
        .into_iter()
        .find(|s| Path::new(s).exists())
        .unwrap_or("/bin/false");
    let mut last = String::new();
    // Another process (a second corral, an administrator) may hold the passwd lock.
    for attempt in 0..5_u32 {
        if let Some(user) = lookup(name)? {
            return Ok(user);
        }
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(200 * u64::from(attempt)));
        }
        let out = Command::new("useradd")
            .args([
                "--system",
                "--user-group",
                "--no-create-home",
                "--shell",
                shell,
            ])
            .arg("--home-dir")
            .arg(root)
            .args(["--comment", &format!("corral runner {runner}"), name])
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .output();
        match out {
            Ok(out) if out.status.success() => {
                tracing::info!(user = name, runner, "created the runner's own user");
            }
            Ok(out) => last = String::from_utf8_lossy(&out.stderr).trim().to_string(),
            Err(e) => last = e.to_string(),
        }
    }
    lookup(name)?.ok_or_else(|| UserError::Create {
        name: name.to_string(),
        output: last,
    })
}

#[cfg(test)]
mod tests {
    use super::per_runner_name;

    #[test]
    fn per_runner_names_fit_useradd_and_stay_apart() {
        assert_eq!(per_runner_name("Web-1"), "corral-web-1");
        let long_a = format!("{}a", "x".repeat(63));
        let long_b = format!("{}b", "x".repeat(63));
        let (a, b) = (per_runner_name(&long_a), per_runner_name(&long_b));
        assert!(a.len() <= 32 && b.len() <= 32, "{a} {b}");
        assert_ne!(a, b);
        assert_eq!(per_runner_name(&long_a.to_uppercase()), a);
    }
}
