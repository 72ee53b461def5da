//! The HTTP side: one fallback handler that records, routes, applies faults, authenticates,
//! dispatches and stamps the common headers.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use axum::body::Bytes;
use axum::extract::{Request, State as AxState};
use axum::http::HeaderMap;
use axum::response::Response;
use tokio::sync::Notify;

use super::routes::{self, Target};
use super::state::State;
use super::types::{Fault, RecordedRequest, Route};
use super::util::{not_found, set_header};
use super::{app, auth, faults, releases, rest, scaleset_http, service};

/// State plus the two ways to wait for a change: `Condvar` for test threads, `Notify` for long polls.
pub struct Shared {
    /// The world.
    pub state: Mutex<State>,
    /// Woken on every change (test-side `wait_until`).
    pub cond: Condvar,
    /// Woken on every change (server-side long polls).
    pub notify: Notify,
}

impl Shared {
    /// Locks the state, tolerating a test that panicked while holding it.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the state without waking anyone (pure reads).
    pub fn quiet<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.lock())
    }

    /// Runs a change, hands out queued jobs, then wakes every waiter.
    pub fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let r = {
            let mut s = self.lock();
            let r = f(&mut s);
            s.assign_jobs();
            s.scaleset_tick();
            r
        };
        self.cond.notify_all();
        self.notify.notify_waiters();
        r
    }
}

/// One request, read in full.
pub struct Ctx {
    /// HTTP method.
    pub method: String,
    /// Path as sent.
    pub path: String,
    /// Raw query.
    pub query: Option<String>,
    /// Request headers.
    pub headers: HeaderMap,
    /// Request body.
    pub body: Bytes,
    /// Parsed route.
    pub target: Target,
}

impl Ctx {
    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// This request's URL without query, on `base`.
    pub fn url(&self, base: &str) -> String {
        format!("{base}{}", self.path)
    }
}

fn record(parts: &axum::http::request::Parts, body: &Bytes) -> RecordedRequest {
    RecordedRequest {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: String::from_utf8_lossy(body).into_owned(),
        at: tokio::time::Instant::now(),
    }
}

/// The only handler.
pub async fn handle(AxState(shared): AxState<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 16 << 20)
        .await
        .unwrap_or_default();
    let recorded = record(&parts, &body);
    shared.with(|s| s.requests.push(recorded));
    if let Some(mut resp) = releases::handle(&shared, parts.method.as_str(), parts.uri.path()) {
        finish(&shared, None, &mut resp);
        return resp;
    }
    let Some(target) = routes::parse(parts.method.as_str(), parts.uri.path()) else {
        let mut resp = shared
            .with(|s| faults::charge(s).err())
            .unwrap_or_else(not_found);
        finish(&shared, None, &mut resp);
        return resp;
    };
    let route = target.route;
    let ctx = Ctx {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        headers: parts.headers,
        body,
        target,
    };
    let fault = shared.with(|s| faults::pop(s, route));
    if let Some(Fault::Delay(d)) = fault {
        tokio::time::sleep(d).await;
    }
    let resp = respond(&shared, &ctx, fault.as_ref()).await;
    let mut resp = faults::after(fault.as_ref(), resp).await;
    finish(&shared, Some(route), &mut resp);
    resp
}

async fn respond(shared: &Shared, ctx: &Ctx, fault: Option<&Fault>) -> Response {
    let pre = fault.and_then(|f| {
        shared.with(|s| {
            let name = s
                .runners
                .get(&ctx.target.id)
                .map(|r| r.info.name.clone())
                .unwrap_or_default();
            faults::before(s, f, &name)
        })
    });
    if let Some(resp) = pre {
        return resp;
    }
    if ctx.target.route == Route::ServicePoll {
        return service::poll(shared, ctx).await;
    }
    if ctx.target.route == Route::ScaleSetPoll {
        return scaleset_http::poll(shared, ctx).await;
    }
    if ctx.target.route == Route::ScaleSet {
        let method = ctx.method.clone();
        return shared.with(|s| scaleset_http::handle(s, ctx, &method));
    }
    if routes::is_service(ctx.target.route) {
        return shared.with(|s| service::handle(s, ctx));
    }
    shared.with(|s| {
        let strict = s.strict.then(|| {
            auth::strict_check(ctx.header("user-agent"), ctx.header("x-github-api-version"))
        });
        if let Some(resp) = strict.flatten() {
            return resp;
        }
        if let Err(resp) = faults::charge(s) {
            return resp;
        }
        if app::is_app(ctx.target.route) {
            return app::handle(s, ctx);
        }
        let t = &ctx.target;
        match auth::check(s, ctx.header("authorization"), t.route, &t.owner, &t.repo) {
            Ok(repo) => rest::handle(s, ctx, &repo),
            Err(resp) => resp,
        }
    })
}

/// Stamps the headers every response carries (github-api.md §6.2).
fn finish(shared: &Shared, route: Option<Route>, resp: &mut Response) {
    let request_id = shared.with(|s| {
        faults::rate_headers(s, resp);
        let (a, b) = (s.rng.next(), s.rng.next());
        format!(
            "{:04X}:{:04X}:{:06X}:{:06X}:{:08X}",
            a & 0xffff,
            (a >> 16) & 0xffff,
            b & 0xff_ffff,
            (b >> 24) & 0xff_ffff,
            a >> 32
        )
    });
    if !resp.headers().contains_key("content-type") {
        set_header(resp, "content-type", "application/json; charset=utf-8");
    }
    set_header(resp, "x-github-request-id", &request_id);
    set_header(resp, "x-github-api-version-selected", "2022-11-28");
    if let Some(route) = route.filter(|r| !routes::is_service(*r) && !app::is_app(*r)) {
        set_header(
            resp,
            "x-accepted-github-permissions",
            auth::accepted_permissions(route),
        );
    }
}
