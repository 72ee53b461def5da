//! JSON shapes of runners, jobs and runs (github-api.md §2.0, §3).

use serde_json::{json, Value};

use super::state::{JobRec, RunRec, RunnerRec, State};
use super::types::{JobStatus, Label, RunnerStatus};
use super::util::rfc3339_utc;

impl State {
    /// REST runner object.
    pub fn runner_json(r: &RunnerRec) -> Value {
        json!({
            "id": r.info.id,
            "runner_group_id": r.group_id,
            "name": r.info.name,
            "os": r.info.os,
            "status": if r.info.status == RunnerStatus::Online { "online" } else { "offline" },
            "busy": r.info.busy,
            "ephemeral": r.info.ephemeral,
            "version": r.info.version,
            "labels": labels_json(&r.info.labels),
        })
    }

    /// REST job object.
    pub fn job_json(&self, rec: &JobRec) -> Value {
        let j = &rec.job;
        let repo_url = format!("{}/repos/{}", self.base, j.repo);
        let steps = if j.status == JobStatus::Queued {
            json!([])
        } else {
            json!([{"name": "Run", "number": 1, "status": j.status.as_str(), "conclusion": j.conclusion}])
        };
        json!({
            "id": j.id, "run_id": j.run_id, "node_id": format!("CR_{}", j.id), "name": j.spec.name,
            "run_url": format!("{repo_url}/actions/runs/{}", j.run_id),
            "url": format!("{repo_url}/actions/jobs/{}", j.id),
            "html_url": format!("{}/{}/actions/runs/{}/job/{}", self.base, j.repo, j.run_id, j.id),
            "check_run_url": format!("{repo_url}/check-runs/{}", j.id),
            "head_sha": "0000000000000000000000000000000000000000", "head_branch": "main",
            "workflow_name": "CI", "run_attempt": rec.attempt,
            "status": j.status.as_str(), "conclusion": j.conclusion,
            "created_at": rfc3339_utc(rec.created_at),
            "started_at": rfc3339_utc(rec.started_at.unwrap_or(rec.created_at)),
            "completed_at": rec.completed_at.map(rfc3339_utc),
            "labels": j.labels, "steps": steps,
            "runner_id": j.runner_id, "runner_name": j.runner_name,
            "runner_group_id": j.runner_id.map(|_| 1), "runner_group_name": j.runner_id.map(|_| "Default"),
        })
    }

    /// REST workflow-run object.
    pub fn run_json(&self, run: &RunRec) -> Value {
        let repo = self
            .repos
            .get(&run.repo)
            .cloned()
            .unwrap_or_else(|| run.repo.clone());
        let url = format!("{}/repos/{repo}/actions/runs/{}", self.base, run.id);
        let (status, conclusion) = self.run_status(run);
        let attempt = run
            .job_ids
            .iter()
            .filter_map(|id| self.jobs.get(id))
            .map(|j| j.attempt)
            .max()
            .unwrap_or(1);
        json!({
            "id": run.id, "name": "CI", "head_branch": "main",
            "head_sha": "0000000000000000000000000000000000000000",
            "run_number": run.id, "run_attempt": attempt, "event": "push", "workflow_id": 1,
            "status": status, "conclusion": conclusion,
            "url": url, "jobs_url": format!("{url}/jobs"),
            "html_url": format!("{}/{repo}/actions/runs/{}", self.base, run.id),
            "created_at": rfc3339_utc(run.created_at), "updated_at": rfc3339_utc(run.updated_at),
            "run_started_at": rfc3339_utc(run.created_at),
        })
    }
}

/// `runner-label` objects.
pub fn labels_json(labels: &[Label]) -> Value {
    labels
        .iter()
        .map(|l| json!({"id": l.id, "name": l.name, "type": if l.read_only { "read-only" } else { "custom" }}))
        .collect()
}
