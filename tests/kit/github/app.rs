//! GitHub App side of github-api.md §4 and §6.4: `GET /repos/{o}/{r}/installation` and
//! `POST /app/installations/{id}/access_tokens`, both authenticated by an RS256 JWT checked
//! with the registered App's public key.
//!
//! JWT times are checked against real time, not the fake clock: clients sign with their own
//! clock, and `advance_clock` models tokens expiring, not GitHub's clock drifting.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::response::Response;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{json, Map, Value};

use super::auth::bearer;
use super::server::Ctx;
use super::state::{State, TokenRec};
use super::types::{Perm, Route, TokenKind};
use super::util::{error_with_status, json_response, not_found, rfc3339_utc, DOCS};

/// A registered App.
#[derive(Debug)]
pub struct AppRec {
    /// PEM public key its JWTs are verified with.
    pub public_key_pem: String,
    /// Repository permission "Administration" it was granted.
    pub administration: Perm,
    /// Repository permission "Actions" it was granted.
    pub actions: Perm,
}

/// An installation of an App on some repositories.
#[derive(Debug)]
pub struct InstallationRec {
    /// The App.
    pub app_id: u64,
    /// Repositories as added (`owner/repo`).
    pub repos: Vec<String>,
}

/// The Apps part of the fake's world.
#[derive(Debug)]
pub struct Apps {
    /// Apps by id.
    pub registered: HashMap<u64, AppRec>,
    /// Installations by id.
    pub installations: HashMap<u64, InstallationRec>,
    /// Lifetime of minted installation tokens on the fake clock (GitHub: one hour).
    pub token_ttl: Duration,
    /// Tokens minted through the API, oldest first.
    pub minted: Vec<String>,
}

impl Default for Apps {
    fn default() -> Self {
        Self {
            registered: HashMap::new(),
            installations: HashMap::new(),
            token_ttl: Duration::from_secs(3600),
            minted: Vec::new(),
        }
    }
}

/// Whether `route` is one of the JWT-authenticated App routes.
pub fn is_app(route: Route) -> bool {
    matches!(route, Route::Installation | Route::AccessTokens)
}

/// Serves an App route.
pub fn handle(s: &mut State, ctx: &Ctx) -> Response {
    let app_id = match verify_jwt(s, ctx.header("authorization")) {
        Ok(id) => id,
        Err(resp) => return resp,
    };
    match ctx.target.route {
        Route::Installation => installation(s, ctx, app_id),
        _ => access_token(s, ctx, app_id),
    }
}

fn unauthorized(message: &str) -> Response {
    error_with_status(401, message, DOCS)
}

fn decode_error() -> Response {
    unauthorized("A JSON web token could not be decoded")
}

/// The App a JWT is from, or the 401/404 GitHub answers (§4.1 messages).
fn verify_jwt(s: &State, authorization: Option<&str>) -> Result<u64, Response> {
    let Some(token) = bearer(authorization) else {
        return Err(unauthorized("Requires authentication"));
    };
    let mut validation = Validation::new(Algorithm::RS256);
    validation.validate_exp = false;
    validation.required_spec_claims.clear();
    // First read `iss` unverified, only to pick the key to verify with.
    let mut unverified = validation.clone();
    unverified.insecure_disable_signature_validation();
    let claims = jsonwebtoken::decode::<Value>(token, &DecodingKey::from_secret(&[]), &unverified)
        .map_err(|_| decode_error())?
        .claims;
    let iss = match &claims["iss"] {
        Value::String(text) => text.parse::<u64>().ok(),
        other => other.as_u64(),
    };
    let Some((app_id, app)) = iss.and_then(|id| s.apps.registered.get(&id).map(|a| (id, a))) else {
        return Err(error_with_status(404, "Integration not found", DOCS));
    };
    let key =
        DecodingKey::from_rsa_pem(app.public_key_pem.as_bytes()).map_err(|_| decode_error())?;
    jsonwebtoken::decode::<Value>(token, &key, &validation).map_err(|_| decode_error())?;
    check_times(&claims)?;
    Ok(app_id)
}

fn check_times(claims: &Value) -> Result<(), Response> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let (Some(iat), Some(exp)) = (claims["iat"].as_u64(), claims["exp"].as_u64()) else {
        return Err(decode_error());
    };
    if exp <= now {
        return Err(unauthorized("'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires"));
    }
    if exp - now > 600 {
        return Err(unauthorized(
            "'Expiration time' claim ('exp') is too far in the future",
        ));
    }
    if iat > now {
        return Err(unauthorized("'Issued at' claim ('iat') is in the future"));
    }
    Ok(())
}

fn installation(s: &State, ctx: &Ctx, app_id: u64) -> Response {
    let Some(key) = s.repo_key(&ctx.target.owner, &ctx.target.repo) else {
        return not_found();
    };
    let found =
        s.apps.installations.iter().find(|(_, i)| {
            i.app_id == app_id && i.repos.iter().any(|r| r.eq_ignore_ascii_case(&key))
        });
    let Some((id, _)) = found else {
        return not_found();
    };
    let prefix = if ctx.path.starts_with("/api/v3/") {
        "/api/v3"
    } else {
        ""
    };
    let owner = key.split('/').next().unwrap_or_default();
    json_response(
        200,
        &json!({
            "id": id, "app_id": app_id, "client_id": format!("Iv1.fake{app_id}"),
            "app_slug": format!("fake-app-{app_id}"), "target_type": "User",
            "account": {"login": owner, "id": 1, "type": "User"},
            "repository_selection": "selected",
            "access_tokens_url": format!("{}{prefix}/app/installations/{id}/access_tokens", s.base),
            "repositories_url": format!("{}{prefix}/installation/repositories", s.base),
            "permissions": permissions(s, app_id),
            "events": [], "created_at": "2024-01-01T00:00:00Z", "updated_at": "2024-01-01T00:00:00Z",
        }),
    )
}

fn permissions(s: &State, app_id: u64) -> Value {
    let mut map = Map::new();
    if let Some(app) = s.apps.registered.get(&app_id) {
        for (name, perm) in [
            ("administration", app.administration),
            ("actions", app.actions),
        ] {
            if let Some(level) = perm_name(perm) {
                map.insert(name.into(), level.into());
            }
        }
    }
    Value::Object(map)
}

fn perm_name(perm: Perm) -> Option<&'static str> {
    match perm {
        Perm::None => None,
        Perm::Read => Some("read"),
        Perm::Write => Some("write"),
    }
}

fn unprocessable(message: &str) -> Response {
    json_response(422, &json!({"message": message, "documentation_url": DOCS}))
}

fn access_token(s: &mut State, ctx: &Ctx, app_id: u64) -> Response {
    let id = ctx.target.id;
    let Some(inst) = s.apps.installations.get(&id).filter(|i| i.app_id == app_id) else {
        return not_found();
    };
    let Some(app) = s.apps.registered.get(&app_id) else {
        return not_found();
    };
    let body: Value = if ctx.body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(&ctx.body) {
            Ok(v) => v,
            Err(_) => return super::util::error(400, "Problems parsing JSON"),
        }
    };
    let (mut administration, mut actions) = (app.administration, app.actions);
    if let Some(asked) = body["permissions"].as_object() {
        (administration, actions) = (Perm::None, Perm::None);
        for (name, level) in asked {
            let level = match level.as_str() {
                Some("read") => Perm::Read,
                Some("write") => Perm::Write,
                _ => return unprocessable("Invalid permission level"),
            };
            let (granted, slot) = match name.as_str() {
                "administration" => (app.administration, &mut administration),
                "actions" => (app.actions, &mut actions),
                _ => {
                    return unprocessable(
                        "The permissions requested are not granted to this installation.",
                    )
                }
            };
            if level > granted {
                return unprocessable(
                    "The permissions requested are not granted to this installation.",
                );
            }
            *slot = level;
        }
    }
    let repos = inst.repos.clone();
    mint(
        s,
        TokenKind::Installation {
            administration,
            actions,
            repos,
        },
    )
}

fn mint(s: &mut State, kind: TokenKind) -> Response {
    // Vary the length: GitHub's tokens are no longer always 40 characters (§4.3).
    let len = 36 + (s.rng.next() % 40) as usize;
    let token = format!("ghs_{}", s.rng.token(len));
    let expires_at = s.now() + s.apps.token_ttl;
    let perms = match &kind {
        TokenKind::Installation {
            administration,
            actions,
            ..
        } => {
            let mut map = Map::new();
            for (name, perm) in [("administration", *administration), ("actions", *actions)] {
                if let Some(level) = perm_name(perm) {
                    map.insert(name.into(), level.into());
                }
            }
            Value::Object(map)
        }
        _ => json!({}),
    };
    s.tokens.insert(
        token.clone(),
        TokenRec {
            kind,
            expires_at: Some(expires_at),
        },
    );
    s.apps.minted.push(token.clone());
    json_response(
        201,
        &json!({"token": token, "expires_at": rfc3339_utc(expires_at),
            "permissions": perms, "repository_selection": "selected"}),
    )
}
