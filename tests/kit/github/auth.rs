//! REST authentication and permission checks (github-api.md §6.2, §6.3).

use axum::response::Response;

use super::routes::{doc_url, need, Need};
use super::state::State;
use super::types::{Perm, Route, TokenKind};
use super::util::{error_with_status, not_found, DOCS};

/// The bearer value of `Authorization: Bearer X` or `token X`, if any.
pub fn bearer(authorization: Option<&str>) -> Option<&str> {
    let value = authorization?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let ok = scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token");
    (ok && !token.trim().is_empty()).then(|| token.trim())
}

fn is_jwt(token: &str) -> bool {
    token.starts_with("eyJ") && token.split('.').count() == 3
}

/// The caller's token kind, or the 401 to send.
fn identify<'s>(state: &'s State, authorization: Option<&str>) -> Result<&'s TokenKind, Response> {
    let Some(token) = bearer(authorization) else {
        return Err(error_with_status(401, "Requires authentication", DOCS));
    };
    let scheme_is_token =
        authorization.is_some_and(|a| a.trim_start().to_ascii_lowercase().starts_with("token "));
    let bad = || error_with_status(401, "Bad credentials", DOCS);
    // A JWT must be sent as Bearer, and authenticates only the App routes (app.rs): here it is unknown.
    if scheme_is_token && is_jwt(token) {
        return Err(bad());
    }
    match state.tokens.get(token) {
        Some(rec) if rec.expires_at.is_none_or(|t| t > state.now()) => Ok(&rec.kind),
        _ => Err(bad()),
    }
}

/// Checks the caller against `route` of repository `owner/repo`; returns the repo key.
pub fn check(
    state: &State,
    authorization: Option<&str>,
    route: Route,
    owner: &str,
    repo: &str,
) -> Result<String, Response> {
    let kind = identify(state, authorization)?;
    let Some(key) = state.repo_key(owner, repo) else {
        return Err(not_found());
    };
    let forbidden = |who: &str| {
        error_with_status(
            403,
            &format!("Resource not accessible by {who}"),
            &doc_url(route),
        )
    };
    let in_scope =
        |repos: &[String]| repos.is_empty() || repos.iter().any(|r| r.eq_ignore_ascii_case(&key));
    let allowed = |admin: Perm, actions: Perm| match need(route) {
        Need::AdminRead => admin >= Perm::Read,
        Need::AdminWrite => admin >= Perm::Write,
        Need::ActionsRead => actions >= Perm::Read,
    };
    match kind {
        TokenKind::Revoked => Err(error_with_status(401, "Bad credentials", DOCS)),
        TokenKind::Classic { scopes } if scopes.iter().any(|s| s == "repo") => Ok(key),
        TokenKind::Classic { .. } => Err(forbidden("personal access token")),
        // GitHub hides repositories outside a token's selection: 404, not 403.
        TokenKind::FineGrained { repos, .. } | TokenKind::Installation { repos, .. }
            if !in_scope(repos) =>
        {
            Err(not_found())
        }
        TokenKind::FineGrained {
            administration,
            actions,
            ..
        } if !allowed(*administration, *actions) => Err(forbidden("personal access token")),
        TokenKind::Installation {
            administration,
            actions,
            ..
        } if !allowed(*administration, *actions) => Err(forbidden("integration")),
        _ => Ok(key),
    }
}

/// Strict mode (github-api.md §6.2 SHOULD): 403 without `User-Agent`, 400 for an unknown API version.
/// The 403 text is GitHub's; the 400 text is not verified.
pub fn strict_check(user_agent: Option<&str>, api_version: Option<&str>) -> Option<Response> {
    if user_agent.is_none_or(|ua| ua.trim().is_empty()) {
        let msg = "Request forbidden by administrative rules. Please make sure your request has a User-Agent header";
        return Some(error_with_status(403, msg, DOCS));
    }
    match api_version {
        None | Some("2022-11-28" | "2026-03-10") => None,
        Some(v) => Some(error_with_status(
            400,
            &format!("Unsupported API version: {v}"),
            DOCS,
        )),
    }
}

/// `x-accepted-github-permissions` value for a REST route.
pub fn accepted_permissions(route: Route) -> &'static str {
    match need(route) {
        Need::AdminRead => "administration=read",
        Need::AdminWrite => "administration=write",
        Need::ActionsRead => "actions=read",
    }
}
