//! Runner label endpoints (github-api.md §2.7).

use axum::response::Response;
use serde_json::json;

use super::render::labels_json;
use super::rest::{invalid, json_object, label_list};
use super::server::Ctx;
use super::state::State;
use super::types::{Label, Route};
use super::util::{json_response, not_found};

/// Dispatches the label routes.
pub fn handle(s: &mut State, ctx: &Ctx, repo: &str) -> Response {
    let id = ctx.target.id;
    let Some(current) = s.runner_in(repo, id).map(|r| r.info.labels.clone()) else {
        return not_found();
    };
    let result = match ctx.target.route {
        Route::ListLabels => Ok(current),
        Route::AddLabels => body_labels(ctx, 1).map(|names| add(s, current, &names)),
        Route::SetLabels => body_labels(ctx, 0).map(|names| {
            let kept = current.into_iter().filter(|l| l.read_only).collect();
            add(s, kept, &names)
        }),
        Route::RemoveAllLabels => Ok(current.into_iter().filter(|l| l.read_only).collect()),
        Route::RemoveLabel => remove_one(current, &ctx.target.sub),
        _ => Err(not_found()),
    };
    let labels = match result {
        Ok(l) => l,
        Err(r) => return r,
    };
    if labels.len() > 100 {
        return invalid("Validation Failed: a runner can have at most 100 labels");
    }
    let Some(r) = s.runner_in(repo, id) else {
        return not_found();
    };
    r.info.labels.clone_from(&labels);
    json_response(
        200,
        &json!({"total_count": labels.len(), "labels": labels_json(&labels)}),
    )
}

fn body_labels(ctx: &Ctx, min: usize) -> Result<Vec<String>, Response> {
    let map = json_object(&ctx.body)?;
    label_list(map.get("labels"), min)
}

/// Appends custom labels not present yet (case-insensitive).
fn add(s: &mut State, mut labels: Vec<Label>, names: &[String]) -> Vec<Label> {
    for n in names {
        if !labels.iter().any(|l| l.name.eq_ignore_ascii_case(n)) {
            labels.push(s.label(n, false));
            if let Some(l) = labels.last_mut() {
                // Labels added through this API are custom even if named like a default label.
                l.read_only = false;
            }
        }
    }
    labels
}

fn remove_one(labels: Vec<Label>, name: &str) -> Result<Vec<Label>, Response> {
    match labels.iter().find(|l| l.name.eq_ignore_ascii_case(name)) {
        None => Err(not_found()),
        Some(l) if l.read_only => Err(invalid(&format!(
            "Cannot remove read-only label {}",
            l.name
        ))),
        Some(_) => Ok(labels
            .into_iter()
            .filter(|l| !l.name.eq_ignore_ascii_case(name))
            .collect()),
    }
}
