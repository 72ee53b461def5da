//! The scale-set service's routes (`reference/scaleset-api.md` §2–6): the tenant API under
//! the exchange's URL (`{base}/_fake/`, admin bearer = a service token from
//! `/actions/runner-registration`) and the message queue (`{base}/_fake/scaleset-queue/…`,
//! bearer = the session's queue token). Errors are `{"typeName","message"}` with the real
//! exception names.

use std::time::Duration;

use axum::response::Response;
use serde_json::{json, Value};

use super::scaleset::{SessionRec, SetRec};
use super::server::{Ctx, Shared};
use super::state::State;
use super::util::{empty, json_response, query_param};

/// `{"typeName","message"}` with `status`.
fn fail(status: u16, type_name: &str, message: &str) -> Response {
    json_response(
        status,
        &json!({"typeName": format!("GitHub.Actions.Runtime.WebApi.{type_name}, GitHub.Actions.Runtime.WebApi"), "message": message}),
    )
}

fn bearer(ctx: &Ctx) -> Option<&str> {
    let (scheme, value) = ctx.header("authorization")?.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| value.trim())
}

/// The repo of a live admin token, or the 401.
fn admin(s: &State, ctx: &Ctx) -> Result<String, Response> {
    let now = s.now();
    match bearer(ctx).and_then(|t| s.service_tokens.get(t)) {
        Some(t) if t.expires_at > now => Ok(t.repo.clone()),
        _ => Err(fail(
            401,
            "UnauthorizedException",
            "admin token expired or invalid",
        )),
    }
}

/// The session whose queue token is the bearer, or the 401.
fn queue_session(s: &State, ctx: &Ctx, set: u64) -> Result<SessionRec, Response> {
    let now = s.now();
    let token = bearer(ctx);
    match s
        .scalesets
        .sessions
        .values()
        .find(|x| Some(x.queue_token.as_str()) == token && x.set == set)
    {
        Some(x) if x.queue_expires > now && !x.evicted => Ok(x.clone()),
        _ => Err(fail(
            401,
            "UnauthorizedException",
            "message queue token expired",
        )),
    }
}

/// Path segments after `/_fake/` (the `/api/v3` prefix dropped).
fn segments(ctx: &Ctx) -> Vec<String> {
    let path = ctx.path.strip_prefix("/api/v3").unwrap_or(&ctx.path);
    path.trim_start_matches('/')
        .split('/')
        .skip(1)
        .filter(|s| !s.is_empty())
        .map(super::util::percent_decode)
        .collect()
}

/// True for a path this module serves.
pub fn is_scaleset_path(tail: &[&str]) -> bool {
    matches!(tail.first(), Some(&"_apis" | &"scaleset-queue"))
}

/// Dispatches every route but the long poll.
pub fn handle(s: &mut State, ctx: &Ctx, method: &str) -> Response {
    let segs = segments(ctx);
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    if let ["scaleset-queue", set, session, message] = segs.as_slice() {
        return ack(s, ctx, method, set, session, message);
    }
    if let ["_apis", "runtime", "runnerscalesets", set, "acquirejobs"] = segs.as_slice() {
        return acquire(s, ctx, set);
    }
    let repo = match admin(s, ctx) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let id = |x: &str| x.parse::<u64>().unwrap_or(0);
    match (method, segs.as_slice()) {
        ("GET", ["_apis", "runtime", "runnergroups"]) => json_response(
            200,
            &json!({"count": 1, "value": [{"id": 1, "name": "Default", "size": 0, "isDefaultGroup": true}]}),
        ),
        ("GET", ["_apis", "runtime", "runnerscalesets"]) => by_name(s, ctx, &repo),
        ("POST", ["_apis", "runtime", "runnerscalesets"]) => create_set(s, ctx, &repo),
        ("GET", ["_apis", "runtime", "runnerscalesets", set]) => {
            match s.scalesets.sets.get(&id(set)) {
                Some(rec) => json_response(200, &rec.json(&s.scale_set_stats(rec.id))),
                None => fail(
                    404,
                    "RunnerScaleSetNotFoundException",
                    "scale set not found",
                ),
            }
        }
        ("PATCH", ["_apis", "runtime", "runnerscalesets", set]) => patch_set(s, ctx, id(set)),
        ("DELETE", ["_apis", "runtime", "runnerscalesets", set]) => delete_set(s, id(set)),
        ("POST", ["_apis", "runtime", "runnerscalesets", set, "sessions"]) => {
            create_session(s, ctx, id(set))
        }
        ("PATCH", ["_apis", "runtime", "runnerscalesets", set, "sessions", sid]) => {
            refresh(s, id(set), sid)
        }
        ("DELETE", ["_apis", "runtime", "runnerscalesets", set, "sessions", sid]) => {
            close(s, id(set), sid)
        }
        ("POST", ["_apis", "runtime", "runnerscalesets", set, "generatejitconfig"]) => {
            jit(s, ctx, &repo, id(set))
        }
        ("GET", ["_apis", "distributedtask", "pools", "0", "agents"]) => agents(s, ctx, &repo),
        ("DELETE", ["_apis", "distributedtask", "pools", "0", "agents", runner]) => {
            remove_agent(s, id(runner))
        }
        _ => fail(404, "NotFoundException", "no such route"),
    }
}

fn body(ctx: &Ctx) -> Value {
    let bytes = ctx.body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&ctx.body);
    serde_json::from_slice(bytes).unwrap_or(Value::Null)
}

fn by_name(s: &State, ctx: &Ctx, repo: &str) -> Response {
    let name = query_param(ctx.query.as_deref(), "name").unwrap_or_default();
    let found: Vec<Value> = s
        .scalesets
        .sets
        .values()
        .filter(|x| x.repo == repo && x.name.eq_ignore_ascii_case(&name))
        .map(|x| x.json(&s.scale_set_stats(x.id)))
        .collect();
    json_response(200, &json!({"count": found.len(), "value": found}))
}

fn create_set(s: &mut State, ctx: &Ctx, repo: &str) -> Response {
    let b = body(ctx);
    let Some(name) = b["name"].as_str().filter(|n| !n.is_empty()) else {
        return fail(400, "ArgumentException", "name is required");
    };
    if s.scalesets
        .sets
        .values()
        .any(|x| x.repo == repo && x.name.eq_ignore_ascii_case(name))
    {
        return fail(
            409,
            "RunnerScaleSetExistsException",
            &format!("A runner scale set named {name} already exists."),
        );
    }
    let mut labels: Vec<String> = b["labels"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|l| l["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if labels.is_empty() {
        labels.push(name.to_string());
    }
    let id = s.id();
    let rec = SetRec {
        id,
        name: name.to_string(),
        repo: repo.to_string(),
        labels,
        group_id: b["runnerGroupId"].as_u64().unwrap_or(1),
        messages: Vec::new(),
        acked: std::collections::BTreeSet::new(),
        last_capacity: None,
        acquired: std::collections::BTreeSet::new(),
    };
    let out = rec.json(&json!({}));
    s.scalesets.sets.insert(id, rec);
    json_response(200, &out)
}

fn patch_set(s: &mut State, ctx: &Ctx, set: u64) -> Response {
    let b = body(ctx);
    let Some(rec) = s.scalesets.sets.get_mut(&set) else {
        return fail(
            404,
            "RunnerScaleSetNotFoundException",
            "scale set not found",
        );
    };
    if let Some(name) = b["name"].as_str() {
        rec.name = name.to_string();
    }
    if let Some(labels) = b["labels"].as_array() {
        rec.labels = labels
            .iter()
            .filter_map(|l| l["name"].as_str().map(str::to_string))
            .collect();
    }
    let out = rec.json(&json!({}));
    json_response(200, &out)
}

fn delete_set(s: &mut State, set: u64) -> Response {
    if s.runners
        .values()
        .any(|r| r.scale_set == Some(set) && r.info.busy)
    {
        return fail(
            400,
            "JobStillRunningException",
            "a runner of the scale set is running a job",
        );
    }
    if s.scalesets.sets.remove(&set).is_none() {
        return fail(
            404,
            "RunnerScaleSetNotFoundException",
            "scale set not found",
        );
    }
    s.scalesets.sessions.retain(|_, x| x.set != set);
    s.runners.retain(|_, r| r.scale_set != Some(set));
    empty(204)
}

fn session_json(s: &State, x: &SessionRec) -> Value {
    let stats = s.scale_set_stats(x.set);
    let set = s.scalesets.sets.get(&x.set).map(|r| r.json(&stats));
    json!({
        "sessionId": x.id, "ownerName": x.owner, "runnerScaleSet": set,
        "messageQueueUrl": format!("{}/_fake/scaleset-queue/{}/{}?sessionId={}", s.base, x.set, x.id, x.id),
        "messageQueueAccessToken": x.queue_token, "statistics": stats,
    })
}

fn create_session(s: &mut State, ctx: &Ctx, set: u64) -> Response {
    if !s.scalesets.sets.contains_key(&set) {
        return fail(
            404,
            "RunnerScaleSetNotFoundException",
            "scale set not found",
        );
    }
    if s.live_session(set).is_some() {
        let name = s
            .scalesets
            .sets
            .get(&set)
            .map(|x| x.name.clone())
            .unwrap_or_default();
        return fail(
            409,
            "RunnerScaleSetSessionConflictException",
            &format!("The actions runner scaleset {name} already has an active session."),
        );
    }
    // A lapsed session (its owner crashed) is reaped now.
    s.scalesets.sessions.retain(|_, x| x.set != set);
    let now = s.now();
    let x = SessionRec {
        id: s.rng.guid(),
        set,
        owner: body(ctx)["ownerName"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        queue_token: queue_token(s),
        queue_expires: now + s.scalesets.queue_ttl,
        last_seen: now,
        polling: 0,
        evicted: false,
    };
    let out = session_json(s, &x);
    s.scalesets.sessions.insert(x.id.clone(), x);
    json_response(200, &out)
}

fn queue_token(s: &mut State) -> String {
    format!("q{}", s.rng.token(40))
}

fn refresh(s: &mut State, set: u64, sid: &str) -> Response {
    let now = s.now();
    let ttl = s.scalesets.queue_ttl;
    let token = queue_token(s);
    match s
        .scalesets
        .sessions
        .get_mut(sid)
        .filter(|x| x.set == set && !x.evicted)
    {
        Some(x) => {
            x.queue_token = token;
            x.queue_expires = now + ttl;
            x.last_seen = now;
            let x = x.clone();
            json_response(200, &session_json(s, &x))
        }
        None => fail(
            404,
            "RunnerAdminException",
            "A session ID that doesn't exist was given.",
        ),
    }
}

fn close(s: &mut State, set: u64, sid: &str) -> Response {
    match s.scalesets.sessions.get(sid) {
        Some(x) if x.set == set && !x.evicted => {
            s.scalesets.sessions.remove(sid);
            empty(204)
        }
        _ => fail(
            400,
            "RunnerScaleSetSessionExpiredException",
            &format!("The session identifier {sid} is not valid."),
        ),
    }
}

fn jit(s: &mut State, ctx: &Ctx, repo: &str, set: u64) -> Response {
    let Some(labels) = s.scalesets.sets.get(&set).map(|x| x.labels.clone()) else {
        return fail(
            404,
            "RunnerScaleSetNotFoundException",
            "scale set not found",
        );
    };
    let b = body(ctx);
    let Some(name) = b["name"].as_str().filter(|n| !n.is_empty()) else {
        return fail(400, "ArgumentException", "name is required");
    };
    if s.runner_by_name(repo, name).is_some() {
        return fail(
            409,
            "AgentExistsException",
            &format!("Agent exists with name {name}"),
        );
    }
    let labels = labels.iter().map(|l| s.label(l, false)).collect();
    let id = s.create_runner(repo, name, labels, true, "unknown");
    if let Some(r) = s.runners.get_mut(&id) {
        r.scale_set = Some(set);
    }
    let encoded = super::rest::encode_jit(s, id);
    json_response(
        200,
        &json!({"runner": {"id": id, "name": name, "runnerScaleSetId": set}, "encodedJITConfig": encoded}),
    )
}

fn agents(s: &State, ctx: &Ctx, repo: &str) -> Response {
    let name = query_param(ctx.query.as_deref(), "agentName").unwrap_or_default();
    let found: Vec<Value> = s
        .runners
        .values()
        .filter(|r| r.repo == repo && r.info.name.eq_ignore_ascii_case(&name))
        .map(|r| json!({"id": r.info.id, "name": r.info.name, "runnerScaleSetId": r.scale_set}))
        .collect();
    json_response(200, &json!({"count": found.len(), "value": found}))
}

fn remove_agent(s: &mut State, id: u64) -> Response {
    if s.runners.get(&id).is_some_and(|r| r.info.busy) {
        return fail(
            400,
            "JobStillRunningException",
            "the runner is running a job",
        );
    }
    s.runners.remove(&id);
    empty(204)
}

fn acquire(s: &mut State, ctx: &Ctx, set: &str) -> Response {
    let set = set.parse::<u64>().unwrap_or(0);
    if let Err(resp) = queue_session(s, ctx, set) {
        return resp;
    }
    let wanted: Vec<u64> = serde_json::from_slice(&ctx.body).unwrap_or_default();
    let mut got = Vec::new();
    for job in wanted {
        let free = s
            .jobs
            .get(&job)
            .is_some_and(|j| j.job.status == super::types::JobStatus::Queued)
            && !s.scalesets.sets.values().any(|x| x.acquired.contains(&job))
            && s.scale_set_for(job) == Some(set);
        if free {
            if let Some(rec) = s.scalesets.sets.get_mut(&set) {
                rec.acquired.insert(job);
                got.push(job);
            }
        }
    }
    json_response(200, &json!({"count": got.len(), "value": got}))
}

fn ack(
    s: &mut State,
    ctx: &Ctx,
    method: &str,
    set: &str,
    _session: &str,
    message: &str,
) -> Response {
    let set = set.parse::<u64>().unwrap_or(0);
    if method != "DELETE" {
        return fail(404, "NotFoundException", "no such route");
    }
    if let Err(resp) = queue_session(s, ctx, set) {
        return resp;
    }
    if let (Some(rec), Ok(id)) = (s.scalesets.sets.get_mut(&set), message.parse::<u64>()) {
        rec.acked.insert(id);
    }
    empty(204)
}

/// One look at the queue: the oldest unacked message past `lastMessageId`, with statistics.
fn look(s: &mut State, ctx: &Ctx, set: u64, session: &str) -> Result<Option<Value>, Response> {
    let x = queue_session(s, ctx, set)?;
    if x.id != session {
        return Err(fail(404, "NotFoundException", "unknown session"));
    }
    let last = query_param(ctx.query.as_deref(), "lastMessageId")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let now = s.now();
    let stats = s.scale_set_stats(set);
    let capacity = ctx
        .header("x-scalesetmaxcapacity")
        .and_then(|v| v.parse().ok());
    if let Some(sx) = s.scalesets.sessions.get_mut(session) {
        sx.last_seen = now;
    }
    let Some(rec) = s.scalesets.sets.get_mut(&set) else {
        return Err(fail(
            404,
            "RunnerScaleSetNotFoundException",
            "scale set not found",
        ));
    };
    rec.last_capacity = capacity.or(rec.last_capacity);
    Ok(rec
        .messages
        .iter()
        .find(|(id, _)| *id > last && !rec.acked.contains(id))
        .map(|(_, m)| {
            let mut m = m.clone();
            m["statistics"] = stats;
            m
        }))
}

/// `GET <messageQueueUrl>`: a message as soon as there is one, else `202` after `poll_hold`.
pub async fn poll(shared: &Shared, ctx: &Ctx) -> Response {
    let segs = segments(ctx);
    let (set, session) = match segs.as_slice() {
        [_, set, session] => (set.parse::<u64>().unwrap_or(0), session.clone()),
        _ => return fail(404, "NotFoundException", "no such route"),
    };
    let hold = shared.quiet(|s| s.scalesets.poll_hold);
    let deadline = tokio::time::Instant::now() + hold.min(Duration::from_secs(300));
    shared.quiet(|s| {
        if let Some(x) = s.scalesets.sessions.get_mut(&session) {
            x.polling += 1;
        }
    });
    // Also when the client goes away mid-poll (the future is dropped).
    let _parked = Parked {
        shared,
        session: session.clone(),
    };
    loop {
        let notified = shared.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        match shared.quiet(|s| look(s, ctx, set, &session)) {
            Err(resp) => break resp,
            Ok(Some(msg)) => break json_response(200, &msg),
            Ok(None) => {}
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            break empty(202);
        }
    }
}

/// A poll parked on a session: the session counts as alive until it ends.
struct Parked<'a> {
    shared: &'a Shared,
    session: String,
}

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        self.shared.with(|s| {
            let now = s.now();
            if let Some(x) = s.scalesets.sessions.get_mut(&self.session) {
                x.polling = x.polling.saturating_sub(1);
                x.last_seen = now;
            }
        });
    }
}
