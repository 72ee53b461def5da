//! What the scale-set service sends (`reference/scaleset-api.md` §2–5): camelCase JSON,
//! unknown fields ignored, absent ones defaulted.

use serde::{Deserialize, Serialize};

/// A runner scale set.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScaleSet {
    /// Its id.
    pub id: u64,
    /// Its name: the label workflows target with `runs-on`.
    pub name: String,
    /// Its runner group (1 is Default).
    #[serde(default)]
    pub runner_group_id: u64,
    /// Its labels.
    #[serde(default)]
    pub labels: Vec<ScaleSetLabel>,
}

/// One label of a scale set.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ScaleSetLabel {
    /// The label.
    #[serde(default)]
    pub name: String,
}

/// A scale set's job and runner counts, as the service reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Statistics {
    /// Jobs matched to the set, not acquired yet.
    pub total_available_jobs: u64,
    /// Jobs acquired, not assigned yet.
    pub total_acquired_jobs: u64,
    /// Jobs assigned to the set, waiting or running: the scaling signal.
    pub total_assigned_jobs: u64,
    /// Jobs running on the set's runners.
    pub total_running_jobs: u64,
    /// Runners registered with the set.
    pub total_registered_runners: u64,
    /// Of those, busy.
    pub total_busy_runners: u64,
    /// Of those, idle.
    pub total_idle_runners: u64,
}

/// `{"count", "value"}`.
#[derive(Debug, Deserialize)]
pub(super) struct List<T> {
    #[serde(default = "Vec::new")]
    pub value: Vec<T>,
}

/// A message session as created or refreshed.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct SessionBody {
    pub session_id: String,
    pub message_queue_url: String,
    pub message_queue_access_token: String,
    #[serde(default)]
    pub statistics: Option<Statistics>,
}

/// One long-poll answer.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    /// Its id: acknowledged, then sent back as `lastMessageId`.
    pub message_id: i64,
    /// `RunnerScaleSetJobMessages`.
    #[serde(default)]
    pub message_type: String,
    /// A JSON string holding an array of [`JobEvent`]s (possibly empty).
    #[serde(default)]
    pub body: String,
    /// The set's counts when the message was sent.
    #[serde(default)]
    pub statistics: Option<Statistics>,
}

/// One job event of a message's body.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobEvent {
    /// `JobAvailable`, `JobAssigned`, `JobStarted` or `JobCompleted` (others are ignored).
    #[serde(default)]
    pub message_type: String,
    /// The handle `acquirejobs` takes.
    #[serde(default)]
    pub runner_request_id: i64,
    /// The job's `runs-on`.
    #[serde(default)]
    pub request_labels: Vec<String>,
    /// The runner (`JobStarted`, `JobCompleted`).
    #[serde(default)]
    pub runner_name: Option<String>,
    /// How it ended (`JobCompleted`).
    #[serde(default)]
    pub result: Option<String>,
}

impl Message {
    /// The job events of the body; an empty or unreadable body has none.
    pub fn events(&self) -> Vec<JobEvent> {
        if self.body.trim().is_empty() {
            return Vec::new();
        }
        serde_json::from_str(&self.body).unwrap_or_default()
    }
}

/// `{"typeName","message"}` of a failed call.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(super) struct ErrorBody {
    pub type_name: String,
    pub message: String,
}
