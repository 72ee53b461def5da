//! The private runner service of tests/kit/README.md, sections 1–6.

use std::time::Duration;

use axum::response::Response;
use serde_json::{json, Map, Value};

use super::rest::json_object;
use super::server::{Ctx, Shared};
use super::state::{RunnerToken, State, TokenUse};
use super::types::{JobResult, JobStatus, Label, Route, RunnerStatus};
use super::util::{empty, error, json_response, not_found, query_param};

/// Dispatches every service route except the long poll.
pub fn handle(s: &mut State, ctx: &Ctx) -> Response {
    match ctx.target.route {
        Route::ServiceExchange => exchange(s, ctx),
        Route::ServiceAddRunner => add_runner(s, ctx),
        Route::ServiceRemoveRunner => remove_runner(s, ctx),
        Route::ServiceCreateSession => create_session(s, ctx),
        Route::ServiceDeleteSession => delete_session(s, ctx),
        Route::ServiceCompleteJob => complete(s, ctx),
        _ => not_found(),
    }
}

/// The value after `scheme ` in `Authorization`.
fn credential<'a>(ctx: &'a Ctx, scheme: &str) -> Option<&'a str> {
    let (got, value) = ctx.header("authorization")?.trim().split_once(' ')?;
    got.eq_ignore_ascii_case(scheme).then(|| value.trim())
}

/// `owner/repo` (lower case) from a runner `--url`.
fn repo_of_url(url: &str) -> Option<String> {
    let path = url.split_once("://").map_or(url, |(_, rest)| rest);
    let segs: Vec<&str> = path.split('/').skip(1).filter(|s| !s.is_empty()).collect();
    match segs.as_slice() {
        [owner, repo] => {
            Some(format!("{owner}/{}", repo.trim_end_matches(".git")).to_ascii_lowercase())
        }
        _ => None,
    }
}

fn exchange(s: &mut State, ctx: &Ctx) -> Response {
    let now = s.now();
    let token = credential(ctx, "RemoteAuth")
        .and_then(|t| s.runner_tokens.get(t))
        .cloned();
    let body = json_object(&ctx.body).unwrap_or_default();
    let usage = match body.get("runner_event").and_then(Value::as_str) {
        Some("register") => TokenUse::Register,
        Some("remove") => TokenUse::Remove,
        _ => return not_found(),
    };
    let url_repo = body
        .get("url")
        .and_then(Value::as_str)
        .and_then(repo_of_url);
    let Some(token) = token
        .filter(|t| t.expires_at > now && t.usage == usage && Some(&t.repo) == url_repo.as_ref())
    else {
        return not_found();
    };
    // A JWT, as GitHub's is: the scale-set client reads its `exp` (reference/scaleset-api.md §1.4).
    let expires_at = now + s.scalesets.admin_ttl;
    let service_token = jwt_shaped(
        expires_at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        &s.rng.token(40),
    );
    s.service_tokens.insert(
        service_token.clone(),
        RunnerToken {
            expires_at,
            ..token
        },
    );
    let url = format!("{}/_fake/", s.base);
    json_response(
        200,
        &json!({"url": url, "token": service_token, "token_schema": "OAuthAccessToken"}),
    )
}

/// `header.payload.signature` with `exp` in the payload; the signature is random (clients
/// never verify it).
fn jwt_shaped(exp: u64, signature: &str) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
    use base64::Engine as _;
    let header = B64URL.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
    let payload = B64URL.encode(json!({"exp": exp, "iss": "fake-actions"}).to_string());
    format!("{header}.{payload}.{signature}")
}

/// The repo a valid service token of `usage` is for, or the 401 to send.
fn service_repo(s: &State, ctx: &Ctx, usage: TokenUse) -> Result<String, Response> {
    let now = s.now();
    match credential(ctx, "Bearer").and_then(|t| s.service_tokens.get(t)) {
        Some(t) if t.expires_at > now && t.usage == usage => Ok(t.repo.clone()),
        Some(_) => Err(error(403, "Token not valid for this operation")),
        None => Err(error(401, "Bad credentials")),
    }
}

fn flag(body: &Map<String, Value>, key: &str) -> bool {
    body.get(key).and_then(Value::as_bool).unwrap_or(false)
}

fn add_runner(s: &mut State, ctx: &Ctx) -> Response {
    let repo = match service_repo(s, ctx, TokenUse::Register) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let body = match json_object(&ctx.body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(name) = body
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
    else {
        return error(400, "name is required");
    };
    let existing = s.runner_by_name(&repo, name);
    if let Some(old) = existing {
        if !flag(&body, "replace") {
            return error(409, "A runner exists with the same name");
        }
        s.runners.remove(&old);
    }
    s.note_claim(&repo, name, usize::from(existing.is_some()));
    let mut labels: Vec<Label> = Vec::new();
    if !flag(&body, "no_default_labels") {
        labels.extend(
            ["self-hosted", "Linux", "X64"]
                .iter()
                .map(|n| s.label(n, true)),
        );
    }
    let custom = body
        .get("labels")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for n in custom.iter().filter_map(Value::as_str) {
        if !labels.iter().any(|l| l.name.eq_ignore_ascii_case(n)) {
            let mut l = s.label(n, false);
            l.read_only = false;
            labels.push(l);
        }
    }
    let os = body
        .get("os")
        .and_then(Value::as_str)
        .unwrap_or("Linux")
        .to_string();
    let id = s.create_runner(&repo, name, labels, flag(&body, "ephemeral"), &os);
    let Some(rec) = s.runners.get_mut(&id) else {
        return not_found();
    };
    rec.info.version = body
        .get("version")
        .and_then(Value::as_str)
        .map(str::to_string);
    json_response(
        201,
        &json!({"runner": State::runner_json(rec), "client_id": rec.client_id}),
    )
}

fn remove_runner(s: &mut State, ctx: &Ctx) -> Response {
    let repo = match service_repo(s, ctx, TokenUse::Remove) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    super::rest::delete_runner(s, &repo, ctx.target.id)
}

/// The runner `id` if the bearer is its client id.
fn client_runner(s: &State, ctx: &Ctx, id: u64) -> Option<u64> {
    let client = credential(ctx, "Bearer")?;
    s.runners
        .get(&id)
        .filter(|r| r.client_id == client)
        .map(|r| r.info.id)
}

fn create_session(s: &mut State, ctx: &Ctx) -> Response {
    let Some(id) = client_runner(s, ctx, ctx.target.id) else {
        return not_found();
    };
    let session = s.rng.guid();
    let session_timeout = s.session_timeout;
    let Some(r) = s.runners.get_mut(&id) else {
        return not_found();
    };
    let lapsed = r
        .session_seen
        .is_some_and(|(seen, wait)| seen.elapsed() > wait + session_timeout);
    if r.session.is_some() && !lapsed {
        return error(409, "A session for this runner already exists.");
    }
    r.session = Some(session.clone());
    r.session_seen = Some((std::time::Instant::now(), Duration::ZERO));
    r.info.status = RunnerStatus::Online;
    if r.info.os == "unknown" {
        r.info.os = "Linux".into(); // a JIT runner reports its OS when it first connects
    }
    json_response(201, &json!({"session_id": session}))
}

fn delete_session(s: &mut State, ctx: &Ctx) -> Response {
    let Some(id) = client_runner(s, ctx, ctx.target.id) else {
        return not_found();
    };
    if s.runners.get(&id).and_then(|r| r.session.as_deref()) != Some(ctx.target.sub.as_str()) {
        return not_found();
    }
    s.set_online(id, false);
    empty(204)
}

fn complete(s: &mut State, ctx: &Ctx) -> Response {
    let Some(job) = s.jobs.get(&ctx.target.id).map(|j| j.job.clone()) else {
        return not_found();
    };
    let Some(runner_id) = job.runner_id.and_then(|id| client_runner(s, ctx, id)) else {
        return not_found();
    };
    if job.status != JobStatus::InProgress || job.runner_id != Some(runner_id) {
        return error(409, "Job is not running on this runner");
    }
    let body = json_object(&ctx.body).unwrap_or_default();
    let Some(result) = body
        .get("result")
        .and_then(Value::as_str)
        .and_then(JobResult::parse)
    else {
        return error(400, "result must be Succeeded, Failed or Canceled");
    };
    s.complete_job(job.id, result);
    json_response(200, &json!({}))
}

/// One look at the runner's queue: `Err` ends the poll with that response, `Ok(Some)` is a message.
fn poll_once(s: &mut State, ctx: &Ctx) -> Result<Option<Value>, Response> {
    let Some(id) = client_runner(s, ctx, ctx.target.id) else {
        return Err(not_found());
    };
    let session = query_param(ctx.query.as_deref(), "session_id");
    let Some(r) = s.runners.get_mut(&id) else {
        return Err(not_found());
    };
    if r.session.is_none() || r.session != session {
        // Not a deleted registration, so not 404: the listener must create a session first.
        return Err(error(400, "No open session with this id"));
    }
    let wait = query_param(ctx.query.as_deref(), "wait")
        .and_then(|w| w.parse::<u64>().ok())
        .unwrap_or(30);
    r.session_seen = Some((std::time::Instant::now(), Duration::from_secs(wait)));
    Ok(r.messages.pop_front())
}

/// The long poll: answers as soon as a message is there, or 204 after `wait` seconds.
pub async fn poll(shared: &Shared, ctx: &Ctx) -> Response {
    let wait = query_param(ctx.query.as_deref(), "wait")
        .and_then(|w| w.parse::<u64>().ok())
        .unwrap_or(30);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait.min(300));
    loop {
        let notified = shared.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        // Look without notifying, or every poller would wake itself forever.
        match shared.quiet(|s| poll_once(s, ctx)) {
            Err(resp) => return resp,
            Ok(Some(msg)) => {
                shared.with(|_| ());
                return json_response(200, &msg);
            }
            Ok(None) => {}
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return empty(204);
        }
    }
}
