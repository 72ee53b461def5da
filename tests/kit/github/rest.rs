//! REST runner endpoints (github-api.md §2.1–§2.6, §6.4).

use axum::response::Response;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};

use super::server::Ctx;
use super::state::{State, TokenUse};
use super::types::Route;
use super::util::{
    error, json_response, not_found, paginate, query_param, rfc3339_offset, set_header, DOCS,
};
use super::{labels, runs};

/// Dispatches an authorised REST request for repo key `repo`.
pub fn handle(s: &mut State, ctx: &Ctx, repo: &str) -> Response {
    match ctx.target.route {
        Route::RegistrationToken => runner_token(s, repo, TokenUse::Register),
        Route::RemoveToken => runner_token(s, repo, TokenUse::Remove),
        Route::GenerateJitConfig => generate_jitconfig(s, ctx, repo),
        Route::ListRunners => list_runners(s, ctx, repo),
        Route::GetRunner => match s.runner_in(repo, ctx.target.id) {
            Some(r) => json_response(200, &State::runner_json(r)),
            None => not_found(),
        },
        Route::DeleteRunner => delete_runner(s, repo, ctx.target.id),
        Route::ListRuns | Route::ListRunJobs | Route::GetJob => runs::handle(s, ctx, repo),
        _ => labels::handle(s, ctx, repo),
    }
}

fn runner_token(s: &mut State, repo: &str, usage: TokenUse) -> Response {
    let (token, expires_at) = s.mint_runner_token(repo, usage);
    json_response(
        201,
        &json!({"token": token, "expires_at": rfc3339_offset(expires_at)}),
    )
}

fn list_runners(s: &State, ctx: &Ctx, repo: &str) -> Response {
    let name = query_param(ctx.query.as_deref(), "name");
    let all: Vec<Value> = s
        .runners
        .values()
        .filter(|r| r.repo == repo && name.as_ref().is_none_or(|n| r.info.name == *n))
        .map(State::runner_json)
        .collect();
    let total = all.len();
    let page = paginate(all, &ctx.url(&s.base), ctx.query.as_deref());
    let mut resp = json_response(200, &json!({"total_count": total, "runners": page.items}));
    if let Some(link) = page.link {
        set_header(&mut resp, "link", &link);
    }
    resp
}

/// Deletes runner `id` of `repo`: 204, 404 when unknown, 422 while it runs a job (GitHub's
/// answer to both the REST delete and the runner's own removal).
pub fn delete_runner(s: &mut State, repo: &str, id: u64) -> Response {
    let Some(r) = s.runner_in(repo, id) else {
        return not_found();
    };
    if r.info.busy {
        return error(
            422,
            &format!(
                "Bad request - Runner \"{}\" is still running a job",
                r.info.name
            ),
        );
    }
    s.runners.remove(&id);
    super::util::empty(204)
}

/// `validation-error-simple` body.
pub fn invalid(message: &str) -> Response {
    json_response(422, &json!({"message": message, "documentation_url": DOCS}))
}

/// Parses a JSON object body; `Err` is the 400 GitHub sends.
pub fn json_object(body: &[u8]) -> Result<serde_json::Map<String, Value>, Response> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(error(400, "Body should be a JSON object")),
        Err(_) => Err(error(400, "Problems parsing JSON")),
    }
}

/// Label names of `labels`: `Err` unless an array of strings within `min..=100` items.
pub fn label_list(v: Option<&Value>, min: usize) -> Result<Vec<String>, Response> {
    let Some(v) = v else {
        return Err(invalid(
            "Invalid input: object is missing required key: labels",
        ));
    };
    let Some(items) = v.as_array() else {
        return Err(invalid("Invalid input: `labels` is not an array"));
    };
    if items.len() < min {
        return Err(invalid(&format!(
            "Invalid input: `labels` must contain at least {min} items"
        )));
    }
    if items.len() > 100 {
        return Err(invalid(
            "Invalid input: `labels` must contain at most 100 items",
        ));
    }
    items
        .iter()
        .map(|l| {
            l.as_str()
                .map(str::to_string)
                .ok_or_else(|| invalid("Invalid input: `labels` items must be strings"))
        })
        .collect()
}

fn generate_jitconfig(s: &mut State, ctx: &Ctx, repo: &str) -> Response {
    let map = match json_object(&ctx.body) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let Some(group) = map.get("runner_group_id") else {
        return invalid("Invalid input: object is missing required key: runner_group_id");
    };
    let Some(name) = map.get("name") else {
        return invalid("Invalid input: object is missing required key: name");
    };
    let Some(name) = name.as_str().filter(|n| !n.is_empty()) else {
        return invalid("Invalid input: `name` must be a non-empty string");
    };
    let names = match label_list(map.get("labels"), 1) {
        Ok(n) => n,
        Err(r) => return r,
    };
    match group.as_u64() {
        Some(1) => {}
        Some(_) => return not_found(),
        None => return invalid("Invalid input: `runner_group_id` is not an integer"),
    }
    if s.runner_by_name(repo, name).is_some() {
        let msg = format!("Already exists - A runner with the name {name} already exists.");
        return error(409, &msg);
    }
    s.note_claim(repo, name, 0);
    let mut labels = Vec::new();
    for n in &names {
        if !labels
            .iter()
            .any(|l: &super::types::Label| l.name.eq_ignore_ascii_case(n))
        {
            labels.push(s.label(n, false));
        }
    }
    let id = s.create_runner(repo, name, labels, true, "unknown");
    let Some(rec) = s.runners.get(&id) else {
        return not_found();
    };
    let runner = State::runner_json(rec);
    let encoded = encode_jit(s, id);
    json_response(
        201,
        &json!({"runner": runner, "encoded_jit_config": encoded}),
    )
}

/// The README's JIT blob: base64 of `{".runner", ".credentials", ".credentials_rsaparams"}`, each base64 JSON.
pub(super) fn encode_jit(s: &State, id: u64) -> String {
    let Some(rec) = s.runners.get(&id) else {
        return String::new();
    };
    let repo_name = s
        .repos
        .get(&rec.repo)
        .cloned()
        .unwrap_or_else(|| rec.repo.clone());
    let runner = json!({
        "agentId": id, "agentName": rec.info.name, "poolId": 1, "poolName": "Default",
        "serverUrl": format!("{}/_fake/", s.base), "gitHubUrl": format!("{}/{repo_name}", s.base),
        "workFolder": "_work", "ephemeral": true, "disableUpdate": true,
    });
    let credentials = json!({"scheme": "OAuth", "data": {"clientId": rec.client_id,
        "authorizationUrl": format!("{}/_fake/oauth2/token", s.base), "requireFipsCryptography": "False"}});
    let rsa = json!({"d": "", "dp": "", "dq": "", "exponent": "AQAB", "inverseQ": "", "modulus": "", "p": "", "q": ""});
    let files = json!({
        ".runner": B64.encode(runner.to_string()),
        ".credentials": B64.encode(credentials.to_string()),
        ".credentials_rsaparams": B64.encode(rsa.to_string()),
    });
    B64.encode(files.to_string())
}
