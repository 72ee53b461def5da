//! The runner scale-set service (`reference/scaleset-api.md` §8): scale sets, message
//! sessions, the long-polled message queue, acquisition, JIT configs, statistics. The model:
//! scale sets, sessions and the job events they have been told of; the HTTP side is in
//! `scaleset_http.rs`.
//!
//! A job targets a scale set when every one of its `runs-on` labels is one of the set's
//! (ignoring case; no implicit `self-hosted`, ARC#3330). While the set has a live session, a
//! queued job it did not acquire yet is announced as `JobAvailable`; acquired (`acquirejobs`),
//! it is `JobAssigned` and only then handed to a runner of that set (registered with the set's
//! JIT config); then `JobStarted` and `JobCompleted`. Events are batched 50 to a message.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use super::state::State;
use super::types::JobStatus;
use super::util::rfc3339_utc;

/// Events a message carries at most (the real service's cap).
const BATCH: usize = 50;

/// Everything the service keeps.
#[derive(Debug)]
pub struct ScaleSets {
    /// Scale sets by id.
    pub sets: BTreeMap<u64, SetRec>,
    /// Sessions by id.
    pub sessions: BTreeMap<String, SessionRec>,
    /// Lifetime of admin tokens (the exchange's), default one hour.
    pub admin_ttl: Duration,
    /// Lifetime of message-queue tokens, default one hour.
    pub queue_ttl: Duration,
    /// How long a long poll is held before `202`, default 50 s (tests shorten it).
    pub poll_hold: Duration,
    /// A session whose owner stopped polling (it crashed) is reaped after this; until then
    /// a new session gets `409`. Default 5 s (the real service takes minutes).
    pub session_ttl: Duration,
    /// Jobs reach a runner only once acquired (GHES behaviour; scaleset#75).
    pub require_acquire: bool,
    /// Events already announced: (set, job, event type).
    announced: BTreeSet<(u64, u64, &'static str)>,
}

impl Default for ScaleSets {
    fn default() -> Self {
        ScaleSets {
            sets: BTreeMap::new(),
            sessions: BTreeMap::new(),
            admin_ttl: Duration::from_secs(3600),
            queue_ttl: Duration::from_secs(3600),
            poll_hold: Duration::from_secs(50),
            session_ttl: Duration::from_secs(5),
            require_acquire: true,
            announced: BTreeSet::new(),
        }
    }
}

/// One scale set.
#[derive(Debug, Clone)]
pub struct SetRec {
    /// Its id.
    pub id: u64,
    /// Its name (unique per runner group).
    pub name: String,
    /// Repo key of the admin connection that created it.
    pub repo: String,
    /// Label names (the name first).
    pub labels: Vec<String>,
    /// Runner group id (1, Default).
    pub group_id: u64,
    /// Messages, oldest first: (id, message without statistics).
    pub messages: Vec<(u64, Value)>,
    /// Acknowledged message ids.
    pub acked: BTreeSet<u64>,
    /// The last `X-ScaleSetMaxCapacity` a poll sent.
    pub last_capacity: Option<u64>,
    /// Jobs acquired by this set.
    pub acquired: BTreeSet<u64>,
}

/// One message session.
#[derive(Debug, Clone)]
pub struct SessionRec {
    /// Its id.
    pub id: String,
    /// The scale set.
    pub set: u64,
    /// `ownerName` as sent.
    pub owner: String,
    /// Bearer for the queue and `acquirejobs`.
    pub queue_token: String,
    /// When that token stops working (fake clock).
    pub queue_expires: SystemTime,
    /// When its owner last polled or created it (fake clock).
    pub last_seen: SystemTime,
    /// Polls parked right now (a parked poll keeps the session alive).
    pub polling: u32,
    /// Evicted by the service: refresh 404, delete 400, queue 401.
    pub evicted: bool,
}

impl SetRec {
    /// The JSON of the set.
    pub fn json(&self, stats: &Value) -> Value {
        json!({
            "id": self.id, "name": self.name, "runnerGroupId": self.group_id,
            "runnerGroupName": "Default",
            "labels": self.labels.iter().map(|l| json!({"type": "System", "name": l})).collect::<Vec<_>>(),
            "RunnerSetting": {"ephemeral": true, "isElastic": false, "disableUpdate": true},
            "createdOn": "2026-01-01T00:00:00Z", "status": "online", "enabled": true,
            "runnerJitConfigUrl": "", "statistics": stats,
        })
    }

    /// True when `labels` (a job's `runs-on`) target this set.
    pub fn matches(&self, labels: &[String]) -> bool {
        !labels.is_empty()
            && labels
                .iter()
                .all(|l| self.labels.iter().any(|s| s.eq_ignore_ascii_case(l)))
    }
}

impl State {
    /// The scale set a queued job targets, if one with a live session does (lowest id).
    pub fn scale_set_for(&self, job_id: u64) -> Option<u64> {
        let rec = self.jobs.get(&job_id)?;
        let repo = self.runs.get(&rec.job.run_id)?.repo.clone();
        self.scalesets
            .sets
            .values()
            .filter(|set| set.repo == repo && set.matches(&rec.job.labels))
            .find(|set| self.live_session(set.id).is_some())
            .map(|set| set.id)
    }

    /// The live session of `set`, if any (one not evicted and heard from recently).
    pub fn live_session(&self, set: u64) -> Option<&SessionRec> {
        let now = self.now();
        let ttl = self.scalesets.session_ttl;
        self.scalesets
            .sessions
            .values()
            .find(|s| s.set == set && !s.evicted && (s.polling > 0 || s.last_seen + ttl > now))
    }

    /// May runner `runner_id` take job `job_id`? Scale-set runners take only their set's
    /// acquired jobs; jobs bound for a set go to no other runner.
    pub fn scale_set_allows(&self, runner_id: u64, job_id: u64) -> bool {
        let runner_set = self.runners.get(&runner_id).and_then(|r| r.scale_set);
        let acquired_by = self
            .scalesets
            .sets
            .values()
            .find(|s| s.acquired.contains(&job_id))
            .map(|s| s.id);
        match (runner_set, acquired_by) {
            (Some(set), Some(by)) => set == by,
            (Some(set), None) => {
                !self.scalesets.require_acquire && self.scale_set_for(job_id) == Some(set)
            }
            (None, Some(_)) => false,
            (None, None) => self.scale_set_for(job_id).is_none(),
        }
    }

    /// Statistics of `set` now (the fake's definitions, reference §8).
    pub fn scale_set_stats(&self, set: u64) -> Value {
        let Some(rec) = self.scalesets.sets.get(&set) else {
            return json!({});
        };
        let mut available = 0;
        let mut assigned = 0;
        let mut running = 0;
        for job in self.jobs.values() {
            let of_set = rec.acquired.contains(&job.job.id);
            match job.job.status {
                JobStatus::Queued if of_set => assigned += 1,
                JobStatus::Queued if self.scale_set_for(job.job.id) == Some(set) => available += 1,
                JobStatus::InProgress if of_set => {
                    assigned += 1;
                    running += 1;
                }
                _ => {}
            }
        }
        let runners: Vec<_> = self
            .runners
            .values()
            .filter(|r| r.scale_set == Some(set))
            .collect();
        let busy = runners.iter().filter(|r| r.info.busy).count();
        json!({
            "totalAvailableJobs": available, "totalAcquiredJobs": 0,
            "totalAssignedJobs": assigned, "totalRunningJobs": running,
            "totalRegisteredRunners": runners.len(), "totalBusyRunners": busy,
            "totalIdleRunners": runners.len() - busy,
        })
    }

    /// Announces what changed since the last call as job messages (run after every change).
    pub fn scaleset_tick(&mut self) {
        let sets: Vec<u64> = self.scalesets.sets.keys().copied().collect();
        for set in sets {
            let events = self.new_events(set);
            for chunk in events.chunks(BATCH) {
                let id = self.id();
                let body = Value::Array(chunk.to_vec()).to_string();
                if let Some(rec) = self.scalesets.sets.get_mut(&set) {
                    rec.messages.push((
                        id,
                        json!({"messageId": id, "messageType": "RunnerScaleSetJobMessages", "body": body}),
                    ));
                }
            }
        }
    }

    /// The job events of `set` not announced yet, marking them announced.
    fn new_events(&mut self, set: u64) -> Vec<Value> {
        let Some(rec) = self.scalesets.sets.get(&set).cloned() else {
            return Vec::new();
        };
        let live = self.live_session(set).is_some();
        let mut events = Vec::new();
        let jobs: Vec<u64> = self.jobs.keys().copied().collect();
        for job_id in jobs {
            let Some(job) = self.jobs.get(&job_id).map(|j| j.job.clone()) else {
                continue;
            };
            let acquired = rec.acquired.contains(&job_id);
            let kinds: &[&'static str] = match job.status {
                JobStatus::Queued
                    if !acquired && live && self.scale_set_for(job_id) == Some(set) =>
                {
                    &["JobAvailable"]
                }
                JobStatus::Queued if acquired => &["JobAssigned"],
                JobStatus::InProgress if acquired => &["JobAssigned", "JobStarted"],
                JobStatus::Completed if acquired => &["JobAssigned", "JobStarted", "JobCompleted"],
                _ => &[],
            };
            for kind in kinds {
                if self.scalesets.announced.insert((set, job_id, kind)) {
                    events.push(self.job_event(&rec, job_id, kind));
                }
            }
        }
        events
    }

    fn job_event(&self, set: &SetRec, job_id: u64, kind: &str) -> Value {
        let Some(rec) = self.jobs.get(&job_id) else {
            return json!({});
        };
        let (owner, repo) = rec.job.repo.split_once('/').unwrap_or(("", &rec.job.repo));
        let mut event = json!({
            "messageType": kind, "runnerRequestId": job_id, "repositoryName": repo,
            "ownerName": owner, "jobId": job_id.to_string(),
            "jobWorkflowRef": format!("{owner}/{repo}/.github/workflows/ci.yml@refs/heads/main"),
            "jobDisplayName": rec.job.spec.name, "workflowRunId": rec.job.run_id,
            "eventName": "push", "requestLabels": rec.job.labels,
            "queueTime": rfc3339_utc(rec.created_at),
        });
        match kind {
            "JobAvailable" => {
                event["acquireJobUrl"] = json!(format!(
                    "{}/_fake/_apis/runtime/runnerscalesets/{}/acquirejobs",
                    self.base, set.id
                ));
            }
            "JobStarted" | "JobCompleted" => {
                event["runnerId"] = json!(rec.job.runner_id);
                event["runnerName"] = json!(rec.job.runner_name);
                if kind == "JobCompleted" {
                    event["result"] = json!(rec.job.conclusion.as_deref().map(|c| match c {
                        "success" => "succeeded",
                        "failure" => "failed",
                        _ => "canceled",
                    }));
                }
            }
            _ => {}
        }
        event
    }
}
