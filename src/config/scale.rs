//! `scale` on an entry: checked and resolved into the numbers a pool needs.

use super::check::Checker;
use super::desired::Registration;
use super::model::{RunnerEntry, ScaleEngine, ScaleSpec};

/// How long a runner above `min_idle` may stay idle by default.
const DEFAULT_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5 * 60);
/// How long a job may stay queued before it is reported, by default: a pool at rest starts a
/// runner within two polls and the runner's start (well under a minute), so five minutes
/// means something holds it back (`max`, `max_runners`, labels no runner of the pool has).
const DEFAULT_QUEUED_ALERT: std::time::Duration = std::time::Duration::from_secs(5 * 60);

/// `scale` after checks.
pub(super) struct Scale {
    pub min_idle: u32,
    pub max: u32,
    pub idle_timeout: std::time::Duration,
    pub queued_alert_after: std::time::Duration,
    /// `engine: scaleset`.
    pub scaleset: bool,
    /// The scale set's name, if the file gives it.
    pub set_name: Option<String>,
}

/// Checks `scale` of entry `i`: exclusive with `count`, ephemeral runners only (a persistent
/// runner could be handed a job while it is being retired), `min_idle ≤ max`, and a GitHub
/// credential (demand is read from the API, runners registered just in time).
pub(super) fn resolve(
    c: &mut Checker<'_>,
    i: usize,
    entry: &RunnerEntry,
    spec: &ScaleSpec,
    ephemeral: Option<bool>,
    ephemeral_path: &str,
    registration: &Registration,
) -> Scale {
    let path = format!("runners[{i}].scale");
    check_fits_entry(c, i, entry, ephemeral, ephemeral_path, registration);
    if spec.max == 0 {
        c.error(&format!("{path}.max"), "max must be at least 1".into());
    }
    let min_idle = spec.min_idle.unwrap_or(0);
    if min_idle > spec.max {
        c.error(
            &format!("{path}.min_idle"),
            format!("min_idle {min_idle} is more than max {}", spec.max),
        );
    }
    let idle_timeout = c.duration(
        &format!("{path}.idle_timeout"),
        spec.idle_timeout.as_ref(),
        DEFAULT_IDLE_TIMEOUT,
    );
    let queued_alert_after = c.duration(
        &format!("{path}.queued_alert_after"),
        spec.queued_alert_after.as_ref(),
        DEFAULT_QUEUED_ALERT,
    );
    let scaleset = resolve_engine(c, &path, spec);
    Scale {
        min_idle,
        max: spec.max,
        idle_timeout,
        queued_alert_after,
        scaleset,
        set_name: spec.scale_set.clone(),
    }
}

/// What `scale` asks of the rest of the entry: no `count`, not `ephemeral: false`, and
/// corral's own GitHub credential rather than a registration token.
fn check_fits_entry(
    c: &mut Checker<'_>,
    i: usize,
    entry: &RunnerEntry,
    ephemeral: Option<bool>,
    ephemeral_path: &str,
    registration: &Registration,
) {
    if entry.count.is_some() {
        c.error(
            &format!("runners[{i}].count"),
            "set count or scale, not both".into(),
        );
    }
    if ephemeral == Some(false) {
        c.error(
            ephemeral_path,
            format!(
                "runner {:?} has `scale`, which needs ephemeral runners: remove ephemeral: false",
                entry.name
            ),
        );
    }
    if *registration != Registration::GitHub {
        c.error(
            &format!("runners[{i}].scale"),
            "scale needs github.token_env, github.token_file or github.app (demand is read from the API), not a registration token".into(),
        );
    }
}

/// `engine`, and `scale_set`, which only `engine: scaleset` takes; true for the scale set
/// engine. `path` is the entry's `scale`.
fn resolve_engine(c: &mut Checker<'_>, path: &str, spec: &ScaleSpec) -> bool {
    let scaleset = spec.engine.unwrap_or_default() == ScaleEngine::Scaleset;
    if let Some(name) = &spec.scale_set {
        if scaleset {
            c.check(&format!("{path}.scale_set"), super::rules::check_name(name));
        } else {
            c.error(
                &format!("{path}.scale_set"),
                format!("scale_set {name:?} needs engine: scaleset"),
            );
        }
    }
    scaleset
}
