//! Workflow run and job endpoints (github-api.md §3.1, §3.2).

use axum::response::Response;
use serde_json::{json, Value};

use super::server::Ctx;
use super::state::State;
use super::types::Route;
use super::util::{json_response, not_found, paginate, query_param, set_header};

/// Dispatches the runs/jobs routes.
pub fn handle(s: &State, ctx: &Ctx, repo: &str) -> Response {
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
            listing(s, ctx, "workflow_runs", runs)
        }
        Route::ListRunJobs => {
            let Some(run) = s.runs.get(&ctx.target.id).filter(|r| r.repo == repo) else {
                return not_found();
            };
            let jobs = run
                .job_ids
                .iter()
                .filter_map(|id| s.jobs.get(id))
                .map(|j| s.job_json(j))
                .collect();
            listing(s, ctx, "jobs", jobs)
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

fn listing(s: &State, ctx: &Ctx, key: &str, all: Vec<Value>) -> Response {
    let total = all.len();
    let page = paginate(all, &ctx.url(&s.base), ctx.query.as_deref());
    let mut resp = json_response(200, &json!({"total_count": total, key: page.items}));
    if let Some(link) = page.link {
        set_header(&mut resp, "link", &link);
    }
    resp
}
