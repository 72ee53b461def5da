//! Scripted responses per route (github-api.md §6.6) and the primary rate-limit budget.

use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use super::state::State;
use super::types::{Fault, Malformed, Route};
use super::util::{epoch_secs, error, error_with_status, json_response, set_header, DOCS};

const PRIMARY_DOC: &str =
    "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-rate-limits";
const SECONDARY_DOC: &str =
    "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits";
const SECONDARY_MSG: &str =
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.";

/// Takes the first scripted fault for `route` (FIFO), consuming one of its count.
pub fn pop(state: &mut State, route: Route) -> Option<Fault> {
    let idx = state
        .faults
        .iter()
        .position(|(r, _, _)| *r == Route::Any || *r == route)?;
    let entry = &mut state.faults[idx];
    entry.2 = entry.2.saturating_sub(1);
    let fault = entry.1.clone();
    if entry.2 == 0 {
        state.faults.remove(idx);
    }
    Some(fault)
}

/// Charges one REST request; `Err` is the primary-limit response while the budget is spent.
pub fn charge(state: &mut State) -> Result<(), Response> {
    let now = state.now();
    if now >= state.rate.reset {
        state.rate.used = 0;
        state.rate.reset = now + Duration::from_secs(3600);
        state.rate.limited = None;
    }
    if let Some(status) = state.rate.limited {
        return Err(primary(status));
    }
    if state.rate.used >= state.rate.limit {
        return Err(primary(403));
    }
    state.rate.used += 1;
    Ok(())
}

fn primary(status: u16) -> Response {
    let body = json!({"message": "API rate limit exceeded for installation ID 1.", "documentation_url": PRIMARY_DOC});
    json_response(status, &body)
}

fn secondary(status: u16, doc: &str) -> Response {
    json_response(
        status,
        &json!({"message": SECONDARY_MSG, "documentation_url": doc}),
    )
}

/// The response a fault replaces the real one with, if it does; `runner_name` serves `BusyDelete`.
pub fn before(state: &mut State, fault: &Fault, runner_name: &str) -> Option<Response> {
    let now = state.now();
    let resp = match fault {
        Fault::PrimaryRateLimit { status, reset_in } => {
            state.rate.used = state.rate.limit;
            state.rate.reset = now + *reset_in;
            state.rate.limited = Some(*status);
            primary(*status)
        }
        Fault::SecondaryRateLimit {
            status,
            retry_after,
        } => {
            let mut r = secondary(*status, SECONDARY_DOC);
            if let Some(secs) = retry_after {
                set_header(&mut r, "retry-after", &secs.to_string());
            }
            r
        }
        Fault::SecondaryResetOnly { status, reset_in } => {
            let mut r = secondary(*status, SECONDARY_DOC);
            set_header(
                &mut r,
                "x-ratelimit-reset",
                &epoch_secs(now + *reset_in).to_string(),
            );
            r
        }
        Fault::SecondaryMessageOnly { status } => secondary(*status, DOCS),
        Fault::BadCredentials => error_with_status(401, "Bad credentials", DOCS),
        Fault::PermissionLost => {
            error_with_status(403, "Resource not accessible by integration", DOCS)
        }
        Fault::ServerError => json_response(500, &json!({"message": "Server Error"})),
        Fault::BadGateway => bad_gateway(),
        Fault::ServiceUnavailable => service_unavailable(),
        Fault::BusyDelete => error(
            422,
            &format!("Bad request - Runner \"{runner_name}\" is still running a job"),
        ),
        Fault::Delay(_) | Fault::GhostCreate { .. } | Fault::Malformed(_) => return None,
    };
    Some(resp)
}

fn bad_gateway() -> Response {
    let mut r = Response::new(Body::from(
        "<html><body><h1>502 Bad Gateway</h1></body></html>\n",
    ));
    *r.status_mut() = StatusCode::BAD_GATEWAY;
    set_header(&mut r, "content-type", "text/html; charset=utf-8");
    r
}

fn service_unavailable() -> Response {
    let body = json!({"code": "service_unavailable", "message": "Service Unavailable", "documentation_url": DOCS});
    json_response(503, &body)
}

/// Rewrites a finished response for faults that act after the work is done.
pub async fn after(fault: Option<&Fault>, resp: Response) -> Response {
    match fault {
        Some(Fault::GhostCreate { status }) => match status {
            502 => bad_gateway(),
            503 => service_unavailable(),
            _ => json_response(*status, &json!({"message": "Server Error"})),
        },
        Some(Fault::Malformed(how)) if resp.status().is_success() => {
            let (parts, body) = resp.into_parts();
            let bytes = axum::body::to_bytes(body, usize::MAX)
                .await
                .unwrap_or_default();
            let Ok(mut v) = serde_json::from_slice::<Value>(&bytes) else {
                return Response::from_parts(parts, Body::from(bytes));
            };
            malform(&mut v, how, true);
            Response::from_parts(parts, Body::from(v.to_string()))
        }
        _ => resp,
    }
}

/// Applies `how` to every runner object (an object with `busy` and `labels`) inside `v`.
fn malform(v: &mut Value, how: &Malformed, top: bool) {
    match v {
        Value::Object(map) => {
            let is_runner = map.contains_key("busy") && map.contains_key("labels");
            if is_runner || (top && *how == Malformed::ExtraFields) {
                match how {
                    Malformed::MissingOptional if is_runner => {
                        for k in ["runner_group_id", "ephemeral", "version"] {
                            map.remove(k);
                        }
                    }
                    Malformed::ExtraFields => {
                        map.insert("fake_extra_field".into(), json!({"nested": [1, 2, 3]}));
                    }
                    Malformed::OddStatus(s) if is_runner => {
                        map.insert("status".into(), Value::String(s.clone()));
                    }
                    _ => {}
                }
            }
            map.values_mut().for_each(|c| malform(c, how, false));
        }
        Value::Array(items) => items.iter_mut().for_each(|c| malform(c, how, false)),
        _ => {}
    }
}

/// Headers every response carries (§6.2); values a fault already set win.
pub fn rate_headers(state: &State, resp: &mut Response) {
    let remaining = if state.rate.limited.is_some() {
        0
    } else {
        state.rate.limit.saturating_sub(state.rate.used)
    };
    let reset = epoch_secs(state.rate.reset.max(SystemTime::UNIX_EPOCH));
    for (name, value) in [
        ("x-ratelimit-limit", state.rate.limit.to_string()),
        ("x-ratelimit-remaining", remaining.to_string()),
        (
            "x-ratelimit-used",
            state.rate.used.min(state.rate.limit).to_string(),
        ),
        ("x-ratelimit-reset", reset.to_string()),
        ("x-ratelimit-resource", "core".to_string()),
    ] {
        if !resp.headers().contains_key(name) {
            set_header(resp, name, &value);
        }
    }
}
