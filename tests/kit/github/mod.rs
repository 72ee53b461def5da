//! `FakeGitHub`: the REST API of `reference/github-api.md` §6 plus the private runner service of
//! `tests/kit/README.md`, served on `127.0.0.1:0` by its own thread and tokio runtime, so tests can
//! drive it from sync code or any async runtime. Dropping the handle stops it. `start_local`
//! serves on the caller's runtime instead, for tests on paused time.
//!
//! GitHub Apps (`app.rs`): `add_app` registers an App's public key and installations; a JWT signed
//! with its private key gets installations and mints `ghs_` tokens, which then authenticate like
//! `TokenKind::Installation` tokens of the installation's repos. A JWT on any other route is
//! answered `401 Bad credentials`.

#![allow(
    dead_code,
    reason = "shared test kit: each test binary uses only part of the API"
)]
#![allow(
    clippy::result_large_err,
    reason = "handler helpers fail with the HTTP response itself; boxing it is noise here"
)]

mod app;
mod auth;
mod faults;
mod labels;
mod releases;
mod render;
mod rest;
mod routes;
mod runs;
mod scaleset;
mod scaleset_http;
mod server;
mod service;
mod state;
mod types;
mod util;

use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;
use tokio::sync::{oneshot, Notify};

#[allow(
    unused_imports,
    reason = "the full vocabulary is exported even where a test binary names only part of it"
)]
pub use types::{
    Fault, Job, JobResult, JobSpec, JobStatus, Label, Malformed, Perm, RecordedRequest, Route,
    Runner, RunnerStatus, TokenKind,
};

#[allow(unused_imports, reason = "only the bases tests script download faults")]
pub use releases::DownloadFault;
use server::Shared;
use state::{RunnerRec, State, TokenRec, TokenUse};

/// A running fake GitHub; dropping it shuts the server down.
pub struct FakeGitHub {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// Read-only access to the fake's state inside `wait_until`.
pub struct StateView<'a>(&'a State);

impl StateView<'_> {
    /// A job snapshot.
    pub fn job(&self, id: u64) -> Option<Job> {
        self.0.jobs.get(&id).map(|j| j.job.clone())
    }

    /// Runners of `owner/repo`, by id.
    pub fn runners(&self, repo: &str) -> Vec<Runner> {
        runners_of(self.0, repo)
    }

    /// A runner snapshot.
    pub fn runner(&self, id: u64) -> Option<Runner> {
        self.0.runners.get(&id).map(|r| r.info.clone())
    }

    /// Number of requests received so far.
    pub fn request_count(&self) -> usize {
        self.0.requests.len()
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> &[RecordedRequest] {
        &self.0.requests
    }

    /// `GET …/actions/runs?status=queued` requests for `owner/repo` so far (one per poll of
    /// corral's), and how many got `304`.
    pub fn run_polls(&self, repo: &str) -> (u64, u64) {
        run_polls_of(self.0, &format!("{repo}?queued"))
    }
}

/// Run listings counted under `key`: `owner/repo` (every listing) or `owner/repo?STATUS`.
fn run_polls_of(s: &State, key: &str) -> (u64, u64) {
    let key = key.to_ascii_lowercase();
    let get = |m: &std::collections::BTreeMap<String, u64>| m.get(&key).copied().unwrap_or(0);
    (get(&s.run_polls), get(&s.not_modified))
}

fn runners_of(s: &State, repo: &str) -> Vec<Runner> {
    let key = repo.to_ascii_lowercase();
    s.runners
        .values()
        .filter(|r| r.repo == key)
        .map(|r| r.info.clone())
        .collect()
}

impl FakeGitHub {
    /// Binds `127.0.0.1:0` and starts serving.
    pub fn start() -> Self {
        Self::start_on(std::net::Ipv4Addr::LOCALHOST.into())
    }

    /// Binds `ip:0` and starts serving; every URL it hands out names `ip` (a fleet test binds
    /// a Docker network's gateway so that containers on that network, and only they, reach it).
    pub fn start_on(ip: std::net::IpAddr) -> Self {
        let (listener, addr, shared, app) = Self::bind(ip);
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("fake-github".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("tokio runtime for the fake");
                rt.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                    tokio::select! {
                        _ = axum::serve(listener, app) => {}
                        _ = stopped => {}
                    }
                });
                // Long polls may still be parked; do not wait for them.
                rt.shutdown_background();
            })
            .expect("spawn the fake's thread");
        Self {
            shared,
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Binds `127.0.0.1:0` and serves on the current tokio runtime, not a runtime of its own.
    /// For tests on paused time: a runtime that is idle advances its paused clock, so an
    /// answer computed on another runtime may come after the client's timeout fired in
    /// virtual time; served here, the answer is in the socket before the clock can move
    /// (tokio polls I/O once more before it advances). A `Fault::Delay` then sleeps on the
    /// test's clock too. Dropping the handle stops the server.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn start_local() -> Self {
        let (listener, addr, shared, app) = Self::bind(std::net::Ipv4Addr::LOCALHOST.into());
        let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            tokio::select! {
                _ = axum::serve(listener, app) => {}
                _ = stopped => {}
            }
        });
        Self {
            shared,
            addr,
            stop: Some(stop),
            thread: None,
        }
    }

    /// The listening socket on `ip:0`, its address, and the state and routes serving it.
    fn bind(ip: std::net::IpAddr) -> (TcpListener, SocketAddr, Arc<Shared>, axum::Router) {
        let listener = TcpListener::bind((ip, 0)).unwrap_or_else(|e| panic!("bind {ip}:0: {e}"));
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener for tokio");
        let addr = listener.local_addr().expect("local addr of the fake");
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new(format!("http://{addr}"))),
            cond: Condvar::new(),
            notify: Notify::new(),
        });
        let app = axum::Router::new()
            .fallback(server::handle)
            .with_state(Arc::clone(&shared));
        (listener, addr, shared, app)
    }

    /// `http://127.0.0.1:PORT`: the runners' `--url` base and the GHES host.
    pub fn web_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:PORT`: dotcom-style REST base.
    pub fn api_url(&self) -> String {
        self.web_url()
    }

    /// `http://127.0.0.1:PORT/api/v3`: GHES-style REST base (also the private service's exchange base).
    pub fn ghes_api_url(&self) -> String {
        format!("{}/api/v3", self.web_url())
    }

    /// `--url` for a runner of `owner/repo`.
    pub fn runner_url(&self, repo: &str) -> String {
        format!("{}/{repo}", self.web_url())
    }

    /// Adds a repository (`owner/repo`).
    pub fn add_repo(&self, repo: &str) {
        self.shared
            .with(|s| s.repos.insert(repo.to_ascii_lowercase(), repo.to_string()));
    }

    /// Adds a token that never expires.
    pub fn add_token(&self, token: &str, kind: TokenKind) {
        self.shared.with(|s| {
            s.tokens.insert(
                token.to_string(),
                TokenRec {
                    kind,
                    expires_at: None,
                },
            )
        });
    }

    /// Adds a token that expires `ttl` from now on the fake clock.
    pub fn add_token_expiring(&self, token: &str, kind: TokenKind, ttl: Duration) {
        self.shared.with(|s| {
            let expires_at = Some(s.now() + ttl);
            s.tokens
                .insert(token.to_string(), TokenRec { kind, expires_at })
        });
    }

    /// Mints a registration token for `owner/repo` without the API.
    pub fn registration_token(&self, repo: &str) -> String {
        self.shared.with(|s| {
            s.mint_runner_token(&repo.to_ascii_lowercase(), TokenUse::Register)
                .0
        })
    }

    /// Mints a remove token for `owner/repo` without the API.
    pub fn remove_token(&self, repo: &str) -> String {
        self.shared.with(|s| {
            s.mint_runner_token(&repo.to_ascii_lowercase(), TokenUse::Remove)
                .0
        })
    }

    /// Queues a job with `runs-on` labels in a new workflow run; returns the job id.
    pub fn queue_job(&self, repo: &str, labels: &[&str], spec: JobSpec) -> u64 {
        self.shared.with(|s| {
            let run = s.add_run(&repo.to_ascii_lowercase());
            s.add_job(run, labels, spec)
                .expect("the run was just created")
        })
    }

    /// Queues a job whose fake worker also runs `steps` (tests/kit/README.md, "Job steps").
    pub fn queue_job_with_steps(
        &self,
        repo: &str,
        labels: &[&str],
        spec: JobSpec,
        steps: Vec<serde_json::Value>,
    ) -> u64 {
        self.shared.with(|s| {
            let run = s.add_run(&repo.to_ascii_lowercase());
            let id = s
                .add_job(run, labels, spec)
                .expect("the run was just created");
            if let Some(rec) = s.jobs.get_mut(&id) {
                rec.steps = steps;
            }
            id
        })
    }

    /// Creates a workflow run with no jobs (GitHub returns such runs); returns the run id.
    pub fn add_run(&self, repo: &str) -> u64 {
        self.shared.with(|s| s.add_run(&repo.to_ascii_lowercase()))
    }

    /// Re-runs a job (see `State::rerun_job`); returns the new attempt's job id.
    pub fn rerun_job(&self, job_id: u64) -> Option<u64> {
        self.shared.with(|s| s.rerun_job(job_id))
    }

    /// `GET …/actions/runs/{id}/jobs` requests for `owner/repo` so far, and how many got `304`.
    pub fn job_polls(&self, repo: &str) -> (u64, u64) {
        let key = repo.to_ascii_lowercase();
        self.shared.quiet(|s| {
            let get =
                |m: &std::collections::BTreeMap<String, u64>| m.get(&key).copied().unwrap_or(0);
            (get(&s.job_polls), get(&s.jobs_not_modified))
        })
    }

    /// Queues a job in an existing run; `None` if the run is unknown.
    pub fn queue_job_in_run(&self, run_id: u64, labels: &[&str], spec: JobSpec) -> Option<u64> {
        self.shared.with(|s| s.add_job(run_id, labels, spec))
    }

    /// A job snapshot.
    pub fn job(&self, id: u64) -> Option<Job> {
        self.shared
            .quiet(|s| s.jobs.get(&id).map(|j| j.job.clone()))
    }

    /// Runners of `owner/repo`, by id.
    pub fn runners(&self, repo: &str) -> Vec<Runner> {
        self.shared.quiet(|s| runners_of(s, repo))
    }

    /// `GET …/actions/runs?status=queued` requests for `owner/repo` so far (one per poll of
    /// corral's), and how many got `304 Not Modified` (an `If-None-Match` naming the listing
    /// as it still is; not charged).
    pub fn run_polls(&self, repo: &str) -> (u64, u64) {
        self.shared
            .quiet(|s| run_polls_of(s, &format!("{repo}?queued")))
    }

    /// Every `GET …/actions/runs` request for `owner/repo` (any status filter), and how many
    /// got `304`.
    pub fn run_listings(&self, repo: &str) -> (u64, u64) {
        self.shared.quiet(|s| run_polls_of(s, repo))
    }

    /// A runner snapshot.
    pub fn runner(&self, id: u64) -> Option<Runner> {
        self.shared
            .quiet(|s| s.runners.get(&id).map(|r| r.info.clone()))
    }

    /// Waits until `cond` holds (re-checked on every state change); `false` on timeout.
    pub fn wait_until(
        &self,
        timeout: Duration,
        mut cond: impl FnMut(&StateView<'_>) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        let mut guard = self.shared.lock();
        loop {
            if cond(&StateView(&guard)) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            guard = self
                .shared
                .cond
                .wait_timeout(guard, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }

    /// How long after its last poll a session that was never closed (its listener was
    /// killed) lapses, so a new listener can open one; default 5 s (GitHub takes minutes).
    pub fn set_session_timeout(&self, timeout: Duration) {
        self.shared.with(|s| s.session_timeout = timeout);
    }

    /// Every registration, remove and service token the fake ever issued (to assert that
    /// none leaks).
    pub fn issued_tokens(&self) -> Vec<String> {
        self.shared.quiet(|s| {
            s.runner_tokens
                .keys()
                .chain(s.service_tokens.keys())
                .cloned()
                .collect()
        })
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.quiet(|s| s.requests.clone())
    }

    /// How many requests arrived so far (without copying the log, which grows by one per
    /// listener poll).
    pub fn request_count(&self) -> usize {
        self.shared.quiet(|s| s.requests.len())
    }

    /// The most registrations each name of `owner/repo` ever had at once (`name` lower case;
    /// a `replace` of an existing registration counts 2: one runner's registration was
    /// taken over by another, as when two hosts claim one name).
    pub fn registration_claims(&self, repo: &str) -> std::collections::BTreeMap<String, usize> {
        let prefix = format!("{repo}/").to_ascii_lowercase();
        self.shared.quiet(|s| {
            s.claims
                .iter()
                .filter_map(|(k, n)| k.strip_prefix(&prefix).map(|name| (name.to_owned(), *n)))
                .collect()
        })
    }

    /// Every registration of `repo` as (name, id), in the fake's order.
    pub fn runner_ids(&self, repo: &str) -> Vec<(String, u64)> {
        self.runners(repo)
            .into_iter()
            .map(|r| (r.name, r.id))
            .collect()
    }

    /// How many REST API requests (`…/repos/…`: corral's, not the runner service's) arrived
    /// so far.
    pub fn rest_request_count(&self) -> usize {
        self.shared.quiet(|s| {
            s.requests
                .iter()
                .filter(|r| r.path.contains("/repos/"))
                .count()
        })
    }

    /// The requests after the first `start`, oldest first.
    pub fn requests_since(&self, start: usize) -> Vec<RecordedRequest> {
        self.shared
            .quiet(|s| s.requests.get(start..).unwrap_or_default().to_vec())
    }

    /// Scripts `fault` for the next `count` requests matching `route` (FIFO per route).
    pub fn push_fault(&self, route: Route, fault: Fault, count: u32) {
        self.shared
            .with(|s| s.faults.push((route, fault, count.max(1))));
    }

    /// Drops every scripted fault not yet used up (an outage ends).
    pub fn clear_faults(&self) {
        self.shared.with(|s| s.faults.clear());
    }

    /// Sets the primary rate-limit budget per hour-long window (default 5000) and starts a new window.
    pub fn set_rate_limit(&self, limit: u64) {
        self.shared.with(|s| {
            s.rate.limit = limit;
            s.rate.used = 0;
            s.rate.reset = s.now() + Duration::from_secs(3600);
            s.rate.limited = None;
        });
    }

    /// Registers GitHub App `app_id` (Administration: write, Actions: read) verified with
    /// `public_key_pem`, installed as each `(installation_id, ["owner/repo", …])`.
    pub fn add_app(&self, app_id: u64, public_key_pem: &str, installations: &[(u64, &[&str])]) {
        self.shared.with(|s| {
            s.apps.registered.insert(
                app_id,
                app::AppRec {
                    public_key_pem: public_key_pem.to_string(),
                    administration: Perm::Write,
                    actions: Perm::Read,
                },
            );
            for (id, repos) in installations {
                let repos = repos.iter().map(|r| (*r).to_string()).collect();
                s.apps
                    .installations
                    .insert(*id, app::InstallationRec { app_id, repos });
            }
        });
    }

    /// Sets what App `app_id` was granted; wider token requests then get 422.
    pub fn set_app_permissions(&self, app_id: u64, administration: Perm, actions: Perm) {
        self.shared.with(|s| {
            if let Some(app) = s.apps.registered.get_mut(&app_id) {
                app.administration = administration;
                app.actions = actions;
            }
        });
    }

    /// Lifetime of installation tokens minted from now on (default one hour, fake clock).
    pub fn set_installation_token_ttl(&self, ttl: Duration) {
        self.shared.with(|s| s.apps.token_ttl = ttl);
    }

    /// Installation tokens minted through the API so far, oldest first.
    pub fn minted_installation_tokens(&self) -> Vec<String> {
        self.shared.quiet(|s| s.apps.minted.clone())
    }

    /// Revokes every installation token minted so far (`401 Bad credentials` from now on).
    pub fn revoke_installation_tokens(&self) {
        self.shared.with(|s| {
            for token in &s.apps.minted {
                if let Some(rec) = s.tokens.get_mut(token) {
                    rec.kind = TokenKind::Revoked;
                }
            }
        });
    }

    /// Strict header checks: 403 without `User-Agent`, 400 for an unknown `X-GitHub-Api-Version`.
    pub fn set_strict(&self, strict: bool) {
        self.shared.with(|s| s.strict = strict);
    }

    /// Queues an `exit` message for the runner's listener.
    pub fn send_exit(&self, runner_id: u64, code: i32) {
        self.push_message(runner_id, json!({"type": "exit", "code": code}));
    }

    fn push_message(&self, runner_id: u64, msg: serde_json::Value) {
        self.shared.with(|s| {
            s.runners
                .get_mut(&runner_id)
                .map(|r| r.messages.push_back(msg))
        });
    }

    /// Cancels a job: a queued one completes as cancelled, a running one gets a `cancel` message.
    pub fn cancel_job(&self, job_id: u64) {
        self.shared.with(|s| {
            let Some(job) = s.jobs.get(&job_id).map(|j| j.job.clone()) else {
                return;
            };
            let runner = job.runner_id.and_then(|id| s.runners.get_mut(&id));
            match (job.status, runner) {
                (JobStatus::InProgress, Some(r)) => r
                    .messages
                    .push_back(json!({"type": "cancel", "job_id": job_id})),
                (JobStatus::Completed, _) => {}
                _ => s.complete_job(job_id, JobResult::Canceled),
            }
        });
    }

    /// Starts a job on a runner the fake does not model (a GitHub-hosted one): its run is in
    /// progress from now on, and the job runs until `finish_job`.
    pub fn start_hosted_job(&self, job_id: u64) {
        self.shared.with(|s| {
            let now = s.now();
            let id = s.id();
            if let Some(rec) = s.jobs.get_mut(&job_id) {
                rec.job.status = JobStatus::InProgress;
                rec.job.runner_id = Some(id);
                rec.job.runner_name = Some(format!("GitHub Actions {id}"));
                rec.started_at = Some(now);
                let run = rec.job.run_id;
                s.touch_run(run);
            }
        });
    }

    /// Scale-set service timing: how long a long poll is held before `202`, and how long a
    /// session whose owner stopped polling keeps blocking a new one (`409`).
    pub fn set_scaleset_timing(&self, poll_hold: Duration, session_ttl: Duration) {
        self.shared.with(|s| {
            s.scalesets.poll_hold = poll_hold;
            s.scalesets.session_ttl = session_ttl;
        });
    }

    /// Lifetime of admin tokens minted from now on by `/actions/runner-registration`.
    pub fn set_admin_token_ttl(&self, ttl: Duration) {
        self.shared.with(|s| s.scalesets.admin_ttl = ttl);
    }

    /// Lifetime of message-queue tokens issued from now on (sessions created or refreshed).
    pub fn set_queue_token_ttl(&self, ttl: Duration) {
        self.shared.with(|s| s.scalesets.queue_ttl = ttl);
    }

    /// Expires every message-queue token now: the next queue call gets `401`.
    pub fn expire_queue_tokens(&self) {
        self.shared.with(|s| {
            let now = s.now();
            for x in s.scalesets.sessions.values_mut() {
                x.queue_expires = now;
            }
        });
    }

    /// Expires every admin token now: the next tenant call gets `401`.
    pub fn expire_admin_tokens(&self) {
        self.shared.with(|s| {
            let now = s.now();
            for t in s.service_tokens.values_mut() {
                t.expires_at = now;
            }
        });
    }

    /// Whether jobs reach a scale set's runners only once acquired (default true).
    pub fn set_require_acquire(&self, on: bool) {
        self.shared.with(|s| s.scalesets.require_acquire = on);
    }

    /// Scale sets of `owner/repo`: (id, name, labels).
    pub fn scale_sets(&self, repo: &str) -> Vec<(u64, String, Vec<String>)> {
        let key = repo.to_ascii_lowercase();
        self.shared.quiet(|s| {
            s.scalesets
                .sets
                .values()
                .filter(|x| x.repo == key)
                .map(|x| (x.id, x.name.clone(), x.labels.clone()))
                .collect()
        })
    }

    /// Sessions of scale set `set` that still block a new one, with their owners.
    pub fn scale_set_sessions(&self, set: u64) -> Vec<String> {
        self.shared.quiet(|s| {
            s.live_session(set)
                .map(|x| x.owner.clone())
                .into_iter()
                .collect()
        })
    }

    /// The statistics scale set `set` would report now.
    pub fn scale_set_stats(&self, set: u64) -> serde_json::Value {
        self.shared.quiet(|s| s.scale_set_stats(set))
    }

    /// The last `X-ScaleSetMaxCapacity` a poll of `set` sent.
    pub fn scale_set_capacity(&self, set: u64) -> Option<u64> {
        self.shared
            .quiet(|s| s.scalesets.sets.get(&set).and_then(|x| x.last_capacity))
    }

    /// Jobs scale set `set` acquired.
    pub fn scale_set_acquired(&self, set: u64) -> Vec<u64> {
        self.shared.quiet(|s| {
            s.scalesets
                .sets
                .get(&set)
                .map(|x| x.acquired.iter().copied().collect())
                .unwrap_or_default()
        })
    }

    /// Runners registered with scale set `set`: (id, name).
    pub fn scale_set_runners(&self, set: u64) -> Vec<(u64, String)> {
        self.shared.quiet(|s| {
            s.runners
                .values()
                .filter(|r| r.scale_set == Some(set))
                .map(|r| (r.info.id, r.info.name.clone()))
                .collect()
        })
    }

    /// Test-side job start: assigns a queued job to a runner (e.g. a JIT runner with no listener).
    pub fn start_job(&self, job_id: u64, runner_id: u64) {
        self.shared.with(|s| s.start_job(job_id, runner_id));
    }

    /// Test-side job end: completes a job as its runner would.
    pub fn finish_job(&self, job_id: u64, result: JobResult) {
        self.shared.with(|s| s.complete_job(job_id, result));
    }

    /// Deletes a registration server-side, as auto-removal would (§6.6 item 8).
    pub fn delete_runner_silently(&self, repo: &str, runner_id: u64) {
        let key = repo.to_ascii_lowercase();
        self.shared.with(|s| {
            s.runners
                .retain(|id, r| !(*id == runner_id && r.repo == key));
        });
    }

    /// Sets a runner online or offline; offline also closes its session. Jobs go only to runners
    /// holding a session: use `start_job` for a runner without a listener.
    pub fn set_runner_online(&self, runner_id: u64, online: bool) {
        self.shared.with(|s| s.set_online(runner_id, online));
    }

    /// Sets a runner's `busy` flag.
    pub fn set_runner_busy(&self, runner_id: u64, busy: bool) {
        self.edit_runner(runner_id, |r| r.info.busy = busy);
    }

    /// Sets a runner's `version`.
    pub fn set_runner_version(&self, runner_id: u64, version: Option<&str>) {
        self.edit_runner(runner_id, |r| r.info.version = version.map(str::to_string));
    }

    fn edit_runner(&self, runner_id: u64, f: impl FnOnce(&mut RunnerRec)) {
        self.shared.with(|s| s.runners.get_mut(&runner_id).map(f));
    }

    /// Resolves once `cond` holds (re-checked on every state change); the async
    /// [`FakeGitHub::wait_until`], for a test on the fake's own runtime (`start_local`), which
    /// bounds it with its own timeout.
    pub async fn until(&self, mut cond: impl FnMut(&StateView<'_>) -> bool) {
        loop {
            let changed = self.shared.notify.notified();
            tokio::pin!(changed);
            // Registered before the check, so a change between the two is not missed.
            changed.as_mut().enable();
            if cond(&StateView(&self.shared.lock())) {
                return;
            }
            changed.await;
        }
    }

    /// Moves the fake clock forward; expires tokens and auto-removes long-offline runners.
    pub fn advance_clock(&self, by: Duration) {
        self.shared.with(|s| {
            s.clock_offset += by;
            s.expire_runners();
        });
    }

    /// The fake clock's now.
    pub fn now(&self) -> SystemTime {
        self.shared.quiet(|s| s.now())
    }
}

impl Drop for FakeGitHub {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
