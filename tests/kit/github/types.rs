//! Public data types of `FakeGitHub`: identities, jobs, runners, routes, faults, the request log.

use std::time::Duration;

/// A fine-grained or installation permission level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Perm {
    /// No access.
    None,
    /// Read access.
    Read,
    /// Read and write access.
    Write,
}

/// What a token in the fake's token table is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenKind {
    /// Classic PAT / OAuth token with these scopes (`repo` grants every endpoint here).
    Classic {
        /// OAuth scopes, e.g. `repo`.
        scopes: Vec<String>,
    },
    /// Fine-grained PAT; `repos` empty means every repository.
    FineGrained {
        /// Repository permission "Administration".
        administration: Perm,
        /// Repository permission "Actions".
        actions: Perm,
        /// Repositories it may see (`owner/repo`, case-insensitive); empty = all.
        repos: Vec<String>,
    },
    /// App installation token (minted by the test, not by the API); `repos` empty means all.
    Installation {
        /// Repository permission "Administration".
        administration: Perm,
        /// Repository permission "Actions".
        actions: Perm,
        /// Repositories of the installation (`owner/repo`); empty = all.
        repos: Vec<String>,
    },
    /// A revoked token: always `401 Bad credentials`.
    Revoked,
}

/// How a job ends when its runner reports it (the README's `result`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobResult {
    /// Conclusion `success`.
    Succeeded,
    /// Conclusion `failure`.
    Failed,
    /// Conclusion `cancelled`.
    Canceled,
}

impl JobResult {
    /// The protocol spelling (`Succeeded`, `Failed`, `Canceled`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
            Self::Canceled => "Canceled",
        }
    }

    /// Parses the protocol spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "Succeeded" => Some(Self::Succeeded),
            "Failed" => Some(Self::Failed),
            "Canceled" => Some(Self::Canceled),
            _ => None,
        }
    }

    /// The REST `conclusion` this result maps to.
    pub fn conclusion(self) -> &'static str {
        match self {
            Self::Succeeded => "success",
            Self::Failed => "failure",
            Self::Canceled => "cancelled",
        }
    }
}

/// What a queued job is and does.
#[derive(Clone, Debug)]
pub struct JobSpec {
    /// Job name.
    pub name: String,
    /// How long the fake worker should run it (sent as `duration_ms`).
    pub duration: Duration,
    /// How it ends unless cancelled.
    pub result: JobResult,
}

impl Default for JobSpec {
    fn default() -> Self {
        Self {
            name: "build".into(),
            duration: Duration::from_millis(100),
            result: JobResult::Succeeded,
        }
    }
}

/// REST job status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobStatus {
    /// Waiting for a runner.
    Queued,
    /// Assigned to a runner.
    InProgress,
    /// Done (see `conclusion`).
    Completed,
}

impl JobStatus {
    /// The REST spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::InProgress => "in_progress",
            Self::Completed => "completed",
        }
    }
}

/// A snapshot of one job.
#[derive(Clone, Debug)]
pub struct Job {
    /// Job id.
    pub id: u64,
    /// Workflow run id.
    pub run_id: u64,
    /// `owner/repo` as added.
    pub repo: String,
    /// What the test asked for.
    pub spec: JobSpec,
    /// `runs-on` labels.
    pub labels: Vec<String>,
    /// Current status.
    pub status: JobStatus,
    /// REST conclusion once completed.
    pub conclusion: Option<String>,
    /// Assigned runner id.
    pub runner_id: Option<u64>,
    /// Assigned runner name.
    pub runner_name: Option<String>,
}

/// A runner label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Label {
    /// Label id (one id per label name, case-insensitive).
    pub id: u64,
    /// Label name as given.
    pub name: String,
    /// `true` for `read-only`, `false` for `custom`.
    pub read_only: bool,
}

/// Runner connection status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunnerStatus {
    /// Has a session (or was set online by the test).
    Online,
    /// No session.
    Offline,
}

/// A snapshot of one runner registration.
#[derive(Clone, Debug)]
pub struct Runner {
    /// Runner id.
    pub id: u64,
    /// Runner name.
    pub name: String,
    /// `os` field (`unknown` for a JIT runner that never connected).
    pub os: String,
    /// Online or offline.
    pub status: RunnerStatus,
    /// Running a job.
    pub busy: bool,
    /// Ephemeral (or JIT) runner: deleted after one job.
    pub ephemeral: bool,
    /// Runner version, once known.
    pub version: Option<String>,
    /// Labels, read-only first.
    pub labels: Vec<Label>,
}

/// One request as the fake received it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// HTTP method.
    pub method: String,
    /// Path, including any `/api/v3` prefix.
    pub path: String,
    /// Raw query string, if any.
    pub query: Option<String>,
    /// Headers with lower-case names, in arrival order.
    pub headers: Vec<(String, String)>,
    /// Raw body as text (lossy UTF-8).
    pub body: String,
    /// When it arrived, on the tokio clock of the runtime serving it: the test's own clock,
    /// paused or not, for a fake started with `FakeGitHub::start_local`.
    pub at: tokio::time::Instant,
}

impl RecordedRequest {
    /// First value of a header (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A route of the fake, used to aim faults (`Any` matches every route).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Route {
    /// Every route.
    Any,
    /// `POST …/runners/registration-token`.
    RegistrationToken,
    /// `POST …/runners/remove-token`.
    RemoveToken,
    /// `POST …/runners/generate-jitconfig`.
    GenerateJitConfig,
    /// `GET …/runners`.
    ListRunners,
    /// `GET …/runners/{id}`.
    GetRunner,
    /// `DELETE …/runners/{id}`.
    DeleteRunner,
    /// `GET …/runners/{id}/labels`.
    ListLabels,
    /// `POST …/runners/{id}/labels`.
    AddLabels,
    /// `PUT …/runners/{id}/labels`.
    SetLabels,
    /// `DELETE …/runners/{id}/labels`.
    RemoveAllLabels,
    /// `DELETE …/runners/{id}/labels/{name}`.
    RemoveLabel,
    /// `GET …/actions/runs`.
    ListRuns,
    /// `GET …/actions/runs/{id}/jobs`.
    ListRunJobs,
    /// `GET …/actions/jobs/{id}`.
    GetJob,
    /// `GET /repos/{o}/{r}/installation` (App JWT).
    Installation,
    /// `POST /app/installations/{id}/access_tokens` (App JWT).
    AccessTokens,
    /// Private service: `POST /api/v3/actions/runner-registration`.
    ServiceExchange,
    /// Private service: `POST /_fake/runners`.
    ServiceAddRunner,
    /// Private service: `DELETE /_fake/runners/{id}`.
    ServiceRemoveRunner,
    /// Private service: `POST /_fake/runners/{id}/sessions`.
    ServiceCreateSession,
    /// Private service: `DELETE /_fake/runners/{id}/sessions/{sid}`.
    ServiceDeleteSession,
    /// Private service: `GET /_fake/runners/{id}/message`.
    ServicePoll,
    /// Private service: `POST /_fake/jobs/{id}/complete`.
    ServiceCompleteJob,
    /// Scale-set service: tenant API and message acknowledgements (`scaleset_http.rs`).
    ScaleSet,
    /// Scale-set service: the message queue's long poll.
    ScaleSetPoll,
}

impl Route {
    /// Every REST route corral calls (the private runner service the listeners use is not
    /// among them): faulting all of them makes GitHub down or hung for corral alone.
    pub const REST: [Route; 7] = [
        Route::ListRunners,
        Route::GetRunner,
        Route::RegistrationToken,
        Route::RemoveToken,
        Route::GenerateJitConfig,
        Route::DeleteRunner,
        Route::SetLabels,
    ];
}

/// A way to make a success body odd but still valid (§6.6 item 9); applied to runner objects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// Drop `runner_group_id`, `ephemeral`, `version`.
    MissingOptional,
    /// Add unknown fields at the top level and in each runner.
    ExtraFields,
    /// Replace each runner's `status` with this value.
    OddStatus(String),
}

/// A scripted response (github-api.md §6.6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Primary limit hit: `status` (403 or 429), remaining 0; every REST call fails until the clock passes `reset_in`.
    PrimaryRateLimit {
        /// 403 or 429.
        status: u16,
        /// Reset = fake now + this.
        reset_in: Duration,
    },
    /// Secondary limit with the `#about-secondary-rate-limits` doc URL and an optional `retry-after`.
    SecondaryRateLimit {
        /// 403 or 429.
        status: u16,
        /// `retry-after` seconds, if sent.
        retry_after: Option<u64>,
    },
    /// Secondary limit with no `retry-after`, only `x-ratelimit-reset` = now + `reset_in`.
    SecondaryResetOnly {
        /// 403 or 429.
        status: u16,
        /// Reset = fake now + this.
        reset_in: Duration,
    },
    /// Secondary limit recognisable only by its message (generic doc URL, no retry-after).
    SecondaryMessageOnly {
        /// 403 or 429.
        status: u16,
    },
    /// `401 Bad credentials`.
    BadCredentials,
    /// `403 Resource not accessible by integration`.
    PermissionLost,
    /// `500 {"message":"Server Error"}`.
    ServerError,
    /// `502` with an HTML body.
    BadGateway,
    /// `503` with a `service_unavailable` body.
    ServiceUnavailable,
    /// Hold the request this long, then answer normally.
    Delay(Duration),
    /// Do the work (e.g. create the JIT runner) but answer with this 5xx status.
    GhostCreate {
        /// 500, 502 or 503.
        status: u16,
    },
    /// `422 Bad request - Runner "NAME" is still running a job` without deleting.
    BusyDelete,
    /// Answer normally but with an odd body.
    Malformed(Malformed),
}
