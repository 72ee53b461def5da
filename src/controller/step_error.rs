//! Why an apply step failed, with its cause chain, and the one policy that decides what
//! happens next: requeue at GitHub's reset, back off, or report a permanent error.
//!
//! No variant carries a secret: tokens live in [`crate::secret::Secret`], GitHub errors hold
//! `METHOD /path` without the query, and `config.sh`'s output is the runner's own text.

use std::time::SystemTime;

use crate::docker::DockerError;
use crate::github::GitHubError;
use crate::provision::ProvisionError;
use crate::registration::RegistrationError;
use crate::scaleset::ScaleSetError;
use crate::secret::SecretError;
use crate::users::UserError;

/// A failed apply step.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// A GitHub call failed while doing `during`.
    #[error("{during}")]
    GitHub {
        /// What the call was for: `registration token`, `deregister`, …
        during: &'static str,
        /// Why.
        #[source]
        source: GitHubError,
    },
    /// The scale-set service refused or did not answer.
    #[error("scale-set registration")]
    ScaleSet(#[source] ScaleSetError),
    /// The pool's scale set is not adopted or created yet.
    #[error("scale set {0:?} is not ready yet")]
    ScaleSetNotReady(String),
    /// The step needs a GitHub credential and none is configured.
    #[error("no GitHub credential to {0}")]
    NoCredential(&'static str),
    /// The step needs the runner's entry and it left the file.
    #[error("runner is not in the config")]
    NotInConfig,
    /// The runner's registration is not on GitHub (label sync).
    #[error("the registration is not on GitHub")]
    NotOnGitHub,
    /// A registration of this name is live on GitHub and is not replaced.
    #[error("a registration named `{name}` (id {id}) is {state} on GitHub; not replaced")]
    NameTaken {
        /// The runner name.
        name: String,
        /// The registration's id.
        id: u64,
        /// `busy` or `online`.
        state: &'static str,
    },
    /// The registration token from `token_env`/`token_file` could not be read.
    #[error("registration token")]
    Secret(#[source] SecretError),
    /// `config.sh` or a JIT configuration failed.
    #[error(transparent)]
    Registration(#[from] RegistrationError),
    /// Building, securing or removing the runner's directory failed.
    #[error(transparent)]
    Provision(#[from] ProvisionError),
    /// The runner's user cannot be used or made.
    #[error(transparent)]
    Users(#[from] UserError),
    /// Its Docker socket could not be served.
    #[error("docker socket")]
    Docker(#[source] DockerError),
    /// Its cgroup could not be made, emptied or entered.
    #[error(transparent)]
    Cgroup(#[from] crate::cgroup::CgroupError),
    /// The base its directory is built from cannot be used (yet).
    #[error(transparent)]
    Base(BaseUnavailable),
    /// A file or process call of the step failed.
    #[error("{what}")]
    Io {
        /// What was done: `start the listener`, `write record`, …
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The listener could not be started or recorded.
    #[error(transparent)]
    Listener(#[from] crate::supervisor::SupervisorError),
    /// A blocking task of the step did not finish (it panicked or was cancelled).
    #[error("{0} task failed")]
    Task(&'static str, #[source] tokio::task::JoinError),
}

/// Why a base cannot be used (yet). The base source reports it for every runner of the base
/// at once, so causes are shared, not copied.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BaseUnavailable {
    /// An install of the release began this pass.
    #[error("installing runner release {version}")]
    Installing {
        /// The version as configured.
        version: String,
    },
    /// An install of the release is under way.
    #[error("waiting for runner release {version} to be installed")]
    Waiting {
        /// The version as configured.
        version: String,
    },
    /// The last install of the release failed; it is tried again later.
    #[error(transparent)]
    NotInstalled(std::sync::Arc<crate::bases::BasesError>),
    /// The tree is there but cannot be used as a base.
    #[error(transparent)]
    Unusable(std::sync::Arc<crate::provision::BaseError>),
    /// The runner's base is not among those opened this pass.
    #[error("no base")]
    NotOpened,
}

impl StepError {
    /// A GitHub error met while doing `during`.
    pub fn github(during: &'static str) -> impl FnOnce(GitHubError) -> StepError {
        move |source| StepError::GitHub { during, source }
    }

    /// An io error met while doing `what`.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> StepError {
        let what = what.into();
        move |source| StepError::Io { what, source }
    }

    /// The error and its causes on one line, for logs and status.
    pub fn chain(&self) -> String {
        crate::error_chain(self)
    }
}

/// What to do after a failed step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Rate limited: hold the runner's steps until exactly then (GitHub's reset).
    RequeueAt(SystemTime),
    /// Transient: the step backoff (1 s doubling to 1 min).
    Backoff,
    /// Retrying will not help until something changes: report it, try again only at the
    /// step backoff's cap or after an edit of the entry.
    Permanent,
}

/// Maps a step error to what happens next; `now` is the wall clock (a reset already past is
/// backed off, not requeued into the past).
pub fn error_policy(err: &StepError, now: SystemTime) -> Policy {
    match err {
        StepError::GitHub { source, .. } => github_policy(source, now),
        StepError::ScaleSet(source) => scale_set_policy(source, now),
        StepError::NoCredential(_) | StepError::NotInConfig | StepError::Secret(_) => {
            Policy::Permanent
        }
        // A user the entry names that is missing or not allowed; `useradd` or a lookup
        // that failed may pass.
        StepError::Users(err) => match err {
            UserError::Create { .. } | UserError::Lookup { .. } => Policy::Backoff,
            _ => Policy::Permanent,
        },
        StepError::Provision(err) => match err {
            ProvisionError::Io { .. } => Policy::Backoff,
            _ => Policy::Permanent,
        },
        StepError::ScaleSetNotReady(_)
        | StepError::NotOnGitHub
        | StepError::NameTaken { .. }
        | StepError::Registration(_)
        | StepError::Docker(_)
        | StepError::Cgroup(_)
        | StepError::Base(_)
        | StepError::Io { .. }
        | StepError::Listener(_)
        | StepError::Task(..) => Policy::Backoff,
    }
}

fn github_policy(err: &GitHubError, now: SystemTime) -> Policy {
    if let Some(until) = err.retry_at() {
        return if until > now {
            Policy::RequeueAt(until)
        } else {
            Policy::Backoff
        };
    }
    if err.is_transient() || matches!(err, GitHubError::Decode { .. }) {
        return Policy::Backoff;
    }
    match err.status() {
        // Refusals that a retry may outlive (a conflict, a 429 without limit headers).
        Some(408 | 409 | 429) => Policy::Backoff,
        // Bad credentials, no access, no such repository, a request GitHub will not take;
        // with no status: no credential, an unusable App key, an App not installed.
        _ => Policy::Permanent,
    }
}

fn scale_set_policy(err: &ScaleSetError, now: SystemTime) -> Policy {
    match err {
        ScaleSetError::GitHub(inner) => github_policy(inner, now),
        ScaleSetError::Status { status, .. } if (400..500).contains(status) => {
            if matches!(status, 408 | 409 | 429) {
                Policy::Backoff
            } else {
                Policy::Permanent
            }
        }
        _ => Policy::Backoff,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn status(code: u16) -> StepError {
        StepError::GitHub {
            during: "registration token",
            source: GitHubError::Status {
                endpoint: "POST /repos/o/r/actions/runners/registration-token".into(),
                status: code,
                message: "nope".into(),
            },
        }
    }

    fn limited(until: SystemTime, secondary: bool) -> StepError {
        StepError::GitHub {
            during: "registration token",
            source: GitHubError::RateLimited { until, secondary },
        }
    }

    #[test]
    fn a_primary_rate_limit_is_requeued_at_its_reset() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let reset = now + Duration::from_secs(600);
        assert_eq!(
            error_policy(&limited(reset, false), now),
            Policy::RequeueAt(reset)
        );
    }

    #[test]
    fn a_secondary_rate_limit_is_requeued_at_its_retry_after() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let after = now + Duration::from_secs(60);
        assert_eq!(
            error_policy(&limited(after, true), now),
            Policy::RequeueAt(after)
        );
        // Through the scale-set client's token call, the same.
        let nested = StepError::ScaleSet(ScaleSetError::GitHub(GitHubError::RateLimited {
            until: after,
            secondary: true,
        }));
        assert_eq!(error_policy(&nested, now), Policy::RequeueAt(after));
    }

    #[test]
    fn a_reset_already_past_backs_off_instead_of_requeueing_into_the_past() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let past = now - Duration::from_secs(1);
        assert_eq!(error_policy(&limited(past, false), now), Policy::Backoff);
    }

    #[test]
    fn server_errors_and_timeouts_back_off() {
        let now = SystemTime::now();
        for code in [500, 502, 503] {
            assert_eq!(error_policy(&status(code), now), Policy::Backoff, "{code}");
        }
        let timeout = StepError::GitHub {
            during: "deregister",
            source: GitHubError::Timeout {
                endpoint: "GET /x".into(),
                after: Duration::from_secs(30),
            },
        };
        assert_eq!(error_policy(&timeout, now), Policy::Backoff);
    }

    #[test]
    fn bad_credentials_a_missing_repository_and_a_refused_request_are_permanent() {
        let now = SystemTime::now();
        for code in [401, 403, 404, 422] {
            assert_eq!(
                error_policy(&status(code), now),
                Policy::Permanent,
                "{code}"
            );
        }
        assert_eq!(error_policy(&status(409), now), Policy::Backoff);
    }

    #[test]
    fn io_failures_back_off() {
        let now = SystemTime::now();
        let spawn = StepError::io("start the listener")(std::io::Error::from_raw_os_error(24));
        assert_eq!(error_policy(&spawn, now), Policy::Backoff);
        let disk = StepError::Provision(ProvisionError::Io {
            action: "link",
            path: "/srv/runners/a".into(),
            source: std::io::Error::from_raw_os_error(28),
        });
        assert_eq!(error_policy(&disk, now), Policy::Backoff);
    }

    #[test]
    fn a_config_the_step_cannot_use_is_permanent() {
        let now = SystemTime::now();
        for err in [
            StepError::Secret(SecretError::EnvUnset("TOKEN".into())),
            StepError::Users(UserError::Missing("nobody-here".into())),
            StepError::NoCredential("mint a registration token"),
            StepError::NotInConfig,
        ] {
            assert_eq!(error_policy(&err, now), Policy::Permanent, "{err}");
        }
    }

    #[test]
    fn the_chain_names_the_step_and_every_cause_once() {
        let text = status(401).chain();
        assert_eq!(
            text,
            "registration token: POST /repos/o/r/actions/runners/registration-token: HTTP 401: nope"
        );
        let spawn = StepError::io("start the listener")(std::io::Error::from_raw_os_error(24));
        assert!(
            spawn.chain().starts_with("start the listener: "),
            "{}",
            spawn.chain()
        );
    }
}
