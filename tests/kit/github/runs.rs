//! Workflow run and job endpoints (github-api.md §3.1, §3.2).

use axum::response::Response;
use serde_json::{json, Value};

use super::server::Ctx;
use super::state::State;
use super::types::Route;
use super::util::{empty, json_response, not_found, paginate, query_param, set_header};

/// Dispatches the runs/jobs routes.
pub fn handle(s: &mut State, ctx: &Ctx, repo: &str) -> Response {
    match ctx.target.route {
        Route::ListRuns => {
            let status = query_param(ctx.query.as_deref(), "status");
            let runs: Vec<Value> = s
                .runs
                .values()
                .rev() // newest first, as GitHub lists runs
                .filter(|r| r.repo == repo)
                .filter(|r| {
                    let (st, concl) = s.run_status(r);
                    status
                        .as_deref()
                        .is_none_or(|want| want == st || Some(want) == concl)
                })
                .map(|r| s.run_json(r))
                .collect();
            // A filtered search returns at most 1,000 results.
            let runs = if status.is_some() {
                runs.into_iter().take(1000).collect()
            } else {
                runs
            };
            let resp = listing(s, ctx, "workflow_runs", runs);
            // Counted per repository and per repository and status filter.
            let keys = [
                repo.to_string(),
                format!("{repo}?{}", status.as_deref().unwrap_or("")),
            ];
            for key in &keys {
                *s.run_polls.entry(key.clone()).or_default() += 1;
            }
            let resp = conditional(s, ctx, resp);
            if resp.status() == 304 {
                for key in keys {
                    *s.not_modified.entry(key).or_default() += 1;
                }
            }
            resp
        }
        Route::ListRunJobs => {
            let Some(run) = s.runs.get(&ctx.target.id).filter(|r| r.repo == repo) else {
                return not_found();
            };
            // `latest` (the default): the last attempt of each job; `all`: every attempt.
            let all = query_param(ctx.query.as_deref(), "filter").as_deref() == Some("all");
            let jobs = run
                .job_ids
                .iter()
                .filter_map(|id| s.jobs.get(id))
                .filter(|j| all || !j.superseded)
                .map(|j| s.job_json(j))
                .collect();
            let resp = listing(s, ctx, "jobs", jobs);
            *s.job_polls.entry(repo.to_string()).or_default() += 1;
            let resp = conditional(s, ctx, resp);
            if resp.status() == 304 {
                *s.jobs_not_modified.entry(repo.to_string()).or_default() += 1;
            }
            resp
        }
        _ => match s
            .jobs
            .get(&ctx.target.id)
            .filter(|j| s.runs.get(&j.job.run_id).is_some_and(|r| r.repo == repo))
        {
            Some(j) => json_response(200, &s.job_json(j)),
            None => not_found(),
        },
    }
}

/// `ETag` on a run or job listing, and `304 Not Modified` (no body, not charged to the rate
/// limit) when `If-None-Match` names the listing as it still is (github-api.md §1.5).
fn conditional(s: &mut State, ctx: &Ctx, mut resp: Response) -> Response {
    let Some(etag) = resp
        .extensions()
        .get::<ListingDigest>()
        .map(|d| d.0.clone())
    else {
        return resp;
    };
    if ctx.header("if-none-match") == Some(etag.as_str()) {
        s.rate.used = s.rate.used.saturating_sub(1);
        let mut resp = empty(304);
        set_header(&mut resp, "etag", &etag);
        return resp;
    }
    set_header(&mut resp, "etag", &etag);
    resp
}

/// The digest of a listing's body, for its `ETag`.
#[derive(Clone)]
struct ListingDigest(String);

fn listing(s: &State, ctx: &Ctx, key: &str, all: Vec<Value>) -> Response {
    let total = all.len();
    let page = paginate(all, &ctx.url(&s.base), ctx.query.as_deref());
    let body = json!({"total_count": total, key: page.items});
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    std::hash::Hash::hash(&body.to_string(), &mut hasher);
    let digest = format!("W/\"{:016x}\"", std::hash::Hasher::finish(&hasher));
    let mut resp = json_response(200, &body);
    resp.extensions_mut().insert(ListingDigest(digest));
    if let Some(link) = page.link {
        set_header(&mut resp, "link", &link);
    }
    resp
}
