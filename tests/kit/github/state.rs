//! The fake's whole world, behind one mutex: repos, tokens, runners, runs, jobs, clock, log.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use super::app::Apps;
use super::types::{
    Fault, Job, JobResult, JobSpec, JobStatus, Label, RecordedRequest, Route, Runner, RunnerStatus,
    TokenKind,
};
use super::util::Rng;

/// Names that get `type: read-only` when a client passes them as labels.
const READ_ONLY_LABELS: &[&str] = &[
    "self-hosted",
    "linux",
    "x64",
    "arm64",
    "arm",
    "macos",
    "windows",
];

/// Which exchange a registration/remove token is good for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenUse {
    /// `registration-token` / `runner_event: register`.
    Register,
    /// `remove-token` / `runner_event: remove`.
    Remove,
}

/// A registration or remove token, or a service token got from one.
#[derive(Clone, Debug)]
pub struct RunnerToken {
    /// Repo key (lower case).
    pub repo: String,
    /// What it is for.
    pub usage: TokenUse,
    /// Expiry on the fake clock.
    pub expires_at: SystemTime,
}

/// A PAT/installation token and its optional expiry.
#[derive(Clone, Debug)]
pub struct TokenRec {
    /// What the token may do.
    pub kind: TokenKind,
    /// Expiry on the fake clock, if any.
    pub expires_at: Option<SystemTime>,
}

/// A registration plus what only the server knows about it.
#[derive(Debug)]
pub struct RunnerRec {
    /// Repo key (lower case).
    pub repo: String,
    /// The public view.
    pub info: Runner,
    /// Credential the listener uses for sessions and polls.
    pub client_id: String,
    /// Open session id.
    pub session: Option<String>,
    /// When the session's listener was last heard from, and the `wait` of its last poll: a
    /// listener killed with SIGKILL never closes its session, which then lapses.
    pub session_seen: Option<(std::time::Instant, Duration)>,
    /// Messages waiting for the next poll.
    pub messages: VecDeque<Value>,
    /// Since when it is offline (auto-removal).
    pub offline_since: SystemTime,
    /// `runner_group_id`, 1 for repo runners.
    pub group_id: u64,
    /// The scale set whose JIT config registered it.
    pub scale_set: Option<u64>,
}

/// A job plus timestamps.
#[derive(Debug)]
pub struct JobRec {
    /// Public view.
    pub job: Job,
    /// Queued at.
    pub created_at: SystemTime,
    /// Assigned at.
    pub started_at: Option<SystemTime>,
    /// Finished at.
    pub completed_at: Option<SystemTime>,
    /// What the fake worker does besides waiting (`steps` of the job message).
    pub steps: Vec<Value>,
    /// `run_attempt`: 1, then one more for each re-run.
    pub attempt: u32,
    /// Re-run since: `filter=latest` leaves it out.
    pub superseded: bool,
}

/// A workflow run.
#[derive(Debug)]
pub struct RunRec {
    /// Run id.
    pub id: u64,
    /// Repo key.
    pub repo: String,
    /// Jobs of the run.
    pub job_ids: Vec<u64>,
    /// Created at.
    pub created_at: SystemTime,
    /// Last change.
    pub updated_at: SystemTime,
}

/// Primary rate-limit budget.
#[derive(Debug)]
pub struct RateLimit {
    /// Requests per window.
    pub limit: u64,
    /// Used in this window.
    pub used: u64,
    /// End of this window.
    pub reset: SystemTime,
    /// While set, every REST call is answered with this primary-limit status.
    pub limited: Option<u16>,
}

/// Everything.
pub struct State {
    /// `actions/runner` releases and download faults.
    pub releases: super::releases::Releases,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Added to real time.
    pub clock_offset: Duration,
    /// Token and id source.
    pub rng: Rng,
    /// Repo key → name as added.
    pub repos: BTreeMap<String, String>,
    /// PATs and installation tokens.
    pub tokens: HashMap<String, TokenRec>,
    /// Registration and remove tokens.
    pub runner_tokens: HashMap<String, RunnerToken>,
    /// Service tokens from the exchange.
    pub service_tokens: HashMap<String, RunnerToken>,
    /// Runners by id.
    pub runners: BTreeMap<u64, RunnerRec>,
    /// Jobs by id.
    pub jobs: BTreeMap<u64, JobRec>,
    /// Runs by id.
    pub runs: BTreeMap<u64, RunRec>,
    /// Label name (lower case) → id.
    pub label_ids: HashMap<String, u64>,
    /// Next id for runners, jobs, runs, labels.
    pub next_id: u64,
    /// Request log.
    pub requests: Vec<RecordedRequest>,
    /// Scripted faults, FIFO, with remaining counts.
    pub faults: Vec<(Route, Fault, u32)>,
    /// Primary budget.
    pub rate: RateLimit,
    /// Reject a missing `User-Agent` and unknown API versions.
    pub strict: bool,
    /// How long after its last poll ended an unclosed session lapses.
    pub session_timeout: Duration,
    /// GitHub Apps, their installations and minted tokens.
    pub apps: Apps,
    /// Run listings asked for, by repo key.
    pub run_polls: BTreeMap<String, u64>,
    /// Job listings asked for, by repo key.
    pub job_polls: BTreeMap<String, u64>,
    /// Job listings answered `304 Not Modified`, by repo key.
    pub jobs_not_modified: BTreeMap<String, u64>,
    /// Run listings answered `304 Not Modified`, by repo key.
    pub not_modified: BTreeMap<String, u64>,
    /// The runner scale-set service.
    pub scalesets: super::scaleset::ScaleSets,
    /// `repo/name` (lower case) → the most registrations that name ever had at once, a
    /// replacing registration counted with the one it replaced (two hosts claimed it).
    pub claims: BTreeMap<String, usize>,
}

impl State {
    /// A fresh world for a server at `base`.
    pub fn new(base: String) -> Self {
        Self {
            releases: super::releases::Releases::default(),
            base,
            clock_offset: Duration::ZERO,
            rng: Rng::new(),
            repos: BTreeMap::new(),
            tokens: HashMap::new(),
            runner_tokens: HashMap::new(),
            service_tokens: HashMap::new(),
            runners: BTreeMap::new(),
            jobs: BTreeMap::new(),
            runs: BTreeMap::new(),
            label_ids: HashMap::new(),
            next_id: 1,
            requests: Vec::new(),
            faults: Vec::new(),
            session_timeout: Duration::from_secs(5),
            rate: RateLimit {
                limit: 5000,
                used: 0,
                reset: SystemTime::now() + Duration::from_secs(3600),
                limited: None,
            },
            strict: false,
            apps: Apps::default(),
            run_polls: BTreeMap::new(),
            not_modified: BTreeMap::new(),
            job_polls: BTreeMap::new(),
            jobs_not_modified: BTreeMap::new(),
            scalesets: super::scaleset::ScaleSets::default(),
            claims: BTreeMap::new(),
        }
    }

    /// Records a registration of `name` in `repo` made while `existing` others held it.
    pub fn note_claim(&mut self, repo: &str, name: &str, existing: usize) {
        let key = format!("{repo}/{name}").to_ascii_lowercase();
        let most = self.claims.entry(key).or_insert(0);
        *most = (*most).max(existing + 1);
    }

    /// The fake clock.
    pub fn now(&self) -> SystemTime {
        SystemTime::now() + self.clock_offset
    }

    /// Fresh id; one counter for everything so ids of different kinds never collide.
    pub fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Lower-case key of a known repo.
    pub fn repo_key(&self, owner: &str, repo: &str) -> Option<String> {
        let key = format!("{owner}/{repo}").to_ascii_lowercase();
        self.repos.contains_key(&key).then_some(key)
    }

    /// A new registration or remove token valid for one hour.
    pub fn mint_runner_token(&mut self, repo: &str, usage: TokenUse) -> (String, SystemTime) {
        let token = self.rng.token(29);
        let expires_at = self.now() + Duration::from_secs(3600);
        self.runner_tokens.insert(
            token.clone(),
            RunnerToken {
                repo: repo.to_string(),
                usage,
                expires_at,
            },
        );
        (token, expires_at)
    }

    /// A label with its per-name id; `read_only` is decided by name unless forced.
    pub fn label(&mut self, name: &str, force_read_only: bool) -> Label {
        let key = name.to_ascii_lowercase();
        let next = self.next_id + 1;
        let id = *self.label_ids.entry(key.clone()).or_insert(next);
        if id == next {
            self.next_id = next;
        }
        Label {
            id,
            name: name.to_string(),
            read_only: force_read_only || READ_ONLY_LABELS.contains(&key.as_str()),
        }
    }

    /// Registers a runner; returns its id.
    pub fn create_runner(
        &mut self,
        repo: &str,
        name: &str,
        labels: Vec<Label>,
        ephemeral: bool,
        os: &str,
    ) -> u64 {
        let id = self.id();
        let client_id = self.rng.guid();
        let info = Runner {
            id,
            name: name.to_string(),
            os: os.to_string(),
            status: RunnerStatus::Offline,
            busy: false,
            ephemeral,
            version: None,
            labels,
        };
        let offline_since = self.now();
        let rec = RunnerRec {
            repo: repo.to_string(),
            info,
            client_id,
            session: None,
            session_seen: None,
            messages: VecDeque::new(),
            offline_since,
            group_id: 1,
            scale_set: None,
        };
        self.runners.insert(id, rec);
        id
    }

    /// Runner of `repo` named `name` (case-insensitive).
    pub fn runner_by_name(&self, repo: &str, name: &str) -> Option<u64> {
        self.runners
            .values()
            .find(|r| r.repo == repo && r.info.name.eq_ignore_ascii_case(name))
            .map(|r| r.info.id)
    }

    /// Runner `id` if it belongs to `repo`.
    pub fn runner_in(&mut self, repo: &str, id: u64) -> Option<&mut RunnerRec> {
        self.runners.get_mut(&id).filter(|r| r.repo == repo)
    }

    /// Sets online/offline; going offline closes the session.
    pub fn set_online(&mut self, id: u64, online: bool) {
        let now = self.now();
        if let Some(r) = self.runners.get_mut(&id) {
            if online {
                r.info.status = RunnerStatus::Online;
            } else {
                if r.info.status == RunnerStatus::Online {
                    r.offline_since = now;
                }
                r.info.status = RunnerStatus::Offline;
                r.session = None;
            }
        }
    }

    /// Creates a run with no jobs; returns its id.
    pub fn add_run(&mut self, repo: &str) -> u64 {
        let id = self.id();
        let now = self.now();
        self.runs.insert(
            id,
            RunRec {
                id,
                repo: repo.to_string(),
                job_ids: Vec::new(),
                created_at: now,
                updated_at: now,
            },
        );
        id
    }

    /// Adds a queued job to a run; returns the job id.
    pub fn add_job(&mut self, run_id: u64, labels: &[&str], spec: JobSpec) -> Option<u64> {
        let repo = self.runs.get(&run_id)?.repo.clone();
        let id = self.id();
        let job = Job {
            id,
            run_id,
            repo: self.repos.get(&repo).cloned().unwrap_or(repo),
            spec,
            labels: labels.iter().map(|l| (*l).to_string()).collect(),
            status: JobStatus::Queued,
            conclusion: None,
            runner_id: None,
            runner_name: None,
        };
        let created_at = self.now();
        self.jobs.insert(
            id,
            JobRec {
                job,
                created_at,
                started_at: None,
                completed_at: None,
                steps: Vec::new(),
                attempt: 1,
                superseded: false,
            },
        );
        if let Some(run) = self.runs.get_mut(&run_id) {
            run.job_ids.push(id);
            run.updated_at = created_at;
        }
        Some(id)
    }

    /// Re-runs job `job_id` (a completed one, as "Re-run failed jobs" does): a new queued job
    /// with the same name and labels, the next `run_attempt`, in the same run, which goes back
    /// in progress; the old attempt is listed by `filter=all` only. Returns the new job id.
    pub fn rerun_job(&mut self, job_id: u64) -> Option<u64> {
        let old = self.jobs.get_mut(&job_id)?;
        old.superseded = true;
        let (run, labels, spec, steps, attempt) = (
            old.job.run_id,
            old.job.labels.clone(),
            old.job.spec.clone(),
            old.steps.clone(),
            old.attempt + 1,
        );
        let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
        let id = self.add_job(run, &labels, spec)?;
        if let Some(rec) = self.jobs.get_mut(&id) {
            rec.attempt = attempt;
            rec.steps = steps;
        }
        Some(id)
    }

    /// Gives queued jobs (oldest first) to eligible runners; called after every change.
    pub fn assign_jobs(&mut self) {
        let queued: Vec<u64> = self
            .jobs
            .values()
            .filter(|j| j.job.status == JobStatus::Queued)
            .map(|j| j.job.id)
            .collect();
        for job_id in queued {
            let Some(rec) = self.jobs.get(&job_id) else {
                continue;
            };
            let run_repo = self
                .runs
                .get(&rec.job.run_id)
                .map(|r| r.repo.clone())
                .unwrap_or_default();
            let wanted = rec.job.labels.clone();
            let runner = self.runners.values().find(|r| {
                self.scale_set_allows(r.info.id, job_id)
                    && r.repo == run_repo
                    && r.session.is_some()
                    && r.info.status == RunnerStatus::Online
                    && !r.info.busy
                    && wanted
                        .iter()
                        .all(|w| r.info.labels.iter().any(|l| l.name.eq_ignore_ascii_case(w)))
            });
            if let Some(runner_id) = runner.map(|r| r.info.id) {
                self.start_job(job_id, runner_id);
            }
        }
    }

    /// Marks `job_id` in progress on `runner_id` and queues the job message for that runner.
    pub fn start_job(&mut self, job_id: u64, runner_id: u64) {
        let now = self.now();
        let Some(runner) = self.runners.get_mut(&runner_id) else {
            return;
        };
        let Some(rec) = self.jobs.get_mut(&job_id) else {
            return;
        };
        runner.info.busy = true;
        rec.job.status = JobStatus::InProgress;
        rec.job.runner_id = Some(runner_id);
        rec.job.runner_name = Some(runner.info.name.clone());
        rec.started_at = Some(now);
        let mut job = json!({
            "id": job_id,
            "name": rec.job.spec.name,
            "repo": rec.job.repo,
            "duration_ms": rec.job.spec.duration.as_millis() as u64,
            "result": rec.job.spec.result.as_str(),
        });
        if !rec.steps.is_empty() {
            job["steps"] = json!(rec.steps);
        }
        runner
            .messages
            .push_back(json!({"type": "job", "job": job}));
        let run_id = rec.job.run_id;
        self.touch_run(run_id);
    }

    /// Completes a job; frees its runner and deletes it if ephemeral.
    pub fn complete_job(&mut self, job_id: u64, result: JobResult) {
        let now = self.now();
        let Some(rec) = self.jobs.get_mut(&job_id) else {
            return;
        };
        rec.job.status = JobStatus::Completed;
        rec.job.conclusion = Some(result.conclusion().to_string());
        rec.completed_at = Some(now);
        let (run_id, runner_id) = (rec.job.run_id, rec.job.runner_id);
        if let Some(runner) = runner_id.and_then(|id| self.runners.get_mut(&id)) {
            runner.info.busy = false;
            if runner.info.ephemeral {
                self.runners.remove(&runner_id.unwrap_or_default());
            }
        }
        self.touch_run(run_id);
    }

    /// Marks run `run_id` changed now.
    pub fn touch_run(&mut self, run_id: u64) {
        let now = self.now();
        if let Some(run) = self.runs.get_mut(&run_id) {
            run.updated_at = now;
        }
    }

    /// Run `status` and `conclusion` derived from its jobs.
    pub fn run_status(&self, run: &RunRec) -> (&'static str, Option<&'static str>) {
        let jobs: Vec<&Job> = run
            .job_ids
            .iter()
            .filter_map(|id| self.jobs.get(id))
            .filter(|r| !r.superseded)
            .map(|r| &r.job)
            .collect();
        if !jobs.is_empty() && jobs.iter().all(|j| j.status == JobStatus::Completed) {
            let any = |c: &str| jobs.iter().any(|j| j.conclusion.as_deref() == Some(c));
            let conclusion = if any("failure") {
                "failure"
            } else if any("cancelled") {
                "cancelled"
            } else {
                "success"
            };
            return ("completed", Some(conclusion));
        }
        if jobs.iter().any(|j| j.status != JobStatus::Queued) {
            ("in_progress", None)
        } else {
            ("queued", None)
        }
    }

    /// Deletes runners offline too long: 1 day for ephemeral, 14 days otherwise (github-api.md §5).
    pub fn expire_runners(&mut self) {
        let now = self.now();
        self.runners.retain(|_, r| {
            let limit = Duration::from_secs(if r.info.ephemeral {
                86_400
            } else {
                14 * 86_400
            });
            r.info.status == RunnerStatus::Online || r.offline_since + limit > now
        });
    }
}
