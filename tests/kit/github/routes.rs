//! Maps method + path to a `Route` and its path arguments; both `/` and `/api/v3/` prefixes.

use super::types::Route;
use super::util::percent_decode;

/// A parsed request target.
#[derive(Clone, Debug)]
pub struct Target {
    /// Which route.
    pub route: Route,
    /// `{owner}` (REST routes only).
    pub owner: String,
    /// `{repo}` (REST routes only).
    pub repo: String,
    /// Runner, run or job id in the path.
    pub id: u64,
    /// Label name or session id in the path.
    pub sub: String,
}

/// Parses a request; `None` ⇒ 404. A trailing slash is never a route (github-api.md §6.1).
pub fn parse(method: &str, path: &str) -> Option<Target> {
    if path.len() > 1 && path.ends_with('/') {
        return None;
    }
    let rest = path.strip_prefix("/api/v3").unwrap_or(path);
    let segs: Vec<String> = rest
        .trim_start_matches('/')
        .split('/')
        .map(percent_decode)
        .collect();
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    match s.as_slice() {
        ["_fake", "scaleset-queue", _, _] if method == "GET" => Some(bare(Route::ScaleSetPoll)),
        ["_fake", tail @ ..] if super::scaleset_http::is_scaleset_path(tail) => {
            Some(bare(Route::ScaleSet))
        }
        ["_fake", tail @ ..] => service(method, tail),
        ["actions", "runner-registration"] if method == "POST" => {
            Some(bare(Route::ServiceExchange))
        }
        ["repos", owner, repo, "installation"] if method == "GET" => {
            let mut t = bare(Route::Installation);
            t.owner = (*owner).to_string();
            t.repo = (*repo).to_string();
            Some(t)
        }
        ["app", "installations", id, "access_tokens"] if method == "POST" => {
            with_id(Route::AccessTokens, id)
        }
        ["repos", owner, repo, "actions", tail @ ..] => {
            let mut t = rest_route(method, tail)?;
            t.owner = (*owner).to_string();
            t.repo = (*repo).to_string();
            Some(t)
        }
        _ => None,
    }
}

fn bare(route: Route) -> Target {
    Target {
        route,
        owner: String::new(),
        repo: String::new(),
        id: 0,
        sub: String::new(),
    }
}

fn with_id(route: Route, id: &str) -> Option<Target> {
    let mut t = bare(route);
    t.id = id.parse().ok()?;
    Some(t)
}

fn rest_route(method: &str, tail: &[&str]) -> Option<Target> {
    let t = match (method, tail) {
        ("POST", ["runners", "registration-token"]) => bare(Route::RegistrationToken),
        ("POST", ["runners", "remove-token"]) => bare(Route::RemoveToken),
        ("POST", ["runners", "generate-jitconfig"]) => bare(Route::GenerateJitConfig),
        ("GET", ["runners"]) => bare(Route::ListRunners),
        ("GET", ["runners", id]) => with_id(Route::GetRunner, id)?,
        ("DELETE", ["runners", id]) => with_id(Route::DeleteRunner, id)?,
        ("GET", ["runners", id, "labels"]) => with_id(Route::ListLabels, id)?,
        ("POST", ["runners", id, "labels"]) => with_id(Route::AddLabels, id)?,
        ("PUT", ["runners", id, "labels"]) => with_id(Route::SetLabels, id)?,
        ("DELETE", ["runners", id, "labels"]) => with_id(Route::RemoveAllLabels, id)?,
        ("DELETE", ["runners", id, "labels", name]) => {
            let mut t = with_id(Route::RemoveLabel, id)?;
            t.sub = (*name).to_string();
            t
        }
        ("GET", ["runs"]) => bare(Route::ListRuns),
        ("GET", ["runs", id, "jobs"]) => with_id(Route::ListRunJobs, id)?,
        ("GET", ["jobs", id]) => with_id(Route::GetJob, id)?,
        _ => return None,
    };
    Some(t)
}

fn service(method: &str, tail: &[&str]) -> Option<Target> {
    let t = match (method, tail) {
        ("POST", ["runners"]) => bare(Route::ServiceAddRunner),
        ("DELETE", ["runners", id]) => with_id(Route::ServiceRemoveRunner, id)?,
        ("POST", ["runners", id, "sessions"]) => with_id(Route::ServiceCreateSession, id)?,
        ("DELETE", ["runners", id, "sessions", sid]) => {
            let mut t = with_id(Route::ServiceDeleteSession, id)?;
            t.sub = (*sid).to_string();
            t
        }
        ("GET", ["runners", id, "message"]) => with_id(Route::ServicePoll, id)?,
        ("POST", ["jobs", id, "complete"]) => with_id(Route::ServiceCompleteJob, id)?,
        _ => return None,
    };
    Some(t)
}

/// Whether a route belongs to the private runner service (no REST auth, no rate budget).
pub fn is_service(route: Route) -> bool {
    matches!(
        route,
        Route::ServiceExchange
            | Route::ServiceAddRunner
            | Route::ServiceRemoveRunner
            | Route::ServiceCreateSession
            | Route::ServiceDeleteSession
            | Route::ServicePoll
            | Route::ServiceCompleteJob
            | Route::ScaleSet
            | Route::ScaleSetPoll
    )
}

/// What a REST route needs from the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Administration: read.
    AdminRead,
    /// Administration: write.
    AdminWrite,
    /// Actions: read.
    ActionsRead,
}

/// Permission needed by a REST route.
pub fn need(route: Route) -> Need {
    match route {
        Route::ListRunners | Route::GetRunner | Route::ListLabels => Need::AdminRead,
        Route::ListRuns | Route::ListRunJobs | Route::GetJob => Need::ActionsRead,
        _ => Need::AdminWrite,
    }
}

/// The docs page a 403 body points at.
pub fn doc_url(route: Route) -> String {
    let anchor = match route {
        Route::RegistrationToken => {
            "self-hosted-runners#create-a-registration-token-for-a-repository"
        }
        Route::RemoveToken => "self-hosted-runners#create-a-remove-token-for-a-repository",
        Route::GenerateJitConfig => {
            "self-hosted-runners#create-configuration-for-a-just-in-time-runner-for-a-repository"
        }
        Route::ListRunners => "self-hosted-runners#list-self-hosted-runners-for-a-repository",
        Route::GetRunner => "self-hosted-runners#get-a-self-hosted-runner-for-a-repository",
        Route::DeleteRunner => "self-hosted-runners#delete-a-self-hosted-runner-from-a-repository",
        Route::ListRuns => "workflow-runs#list-workflow-runs-for-a-repository",
        Route::ListRunJobs => "workflow-jobs#list-jobs-for-a-workflow-run",
        Route::GetJob => "workflow-jobs#get-a-job-for-a-workflow-run",
        _ => "self-hosted-runners",
    };
    format!("https://docs.github.com/rest/actions/{anchor}")
}
