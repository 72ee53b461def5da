//! `POST /webhook`: GitHub's `workflow_job` deliveries (`reference/github-api.md` §3.4), so a
//! host GitHub can reach reacts to a queued job at once instead of at the next demand poll.
//!
//! Every delivery must carry `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body with
//! the secret>`, compared in constant time; anything else is `401` and changes nothing. A
//! valid delivery carries no payload the controller trusts: a queued job only makes the next
//! pass poll the demand now.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::AppState;
use crate::secret::Secret;

/// What a valid `push` delivery sets off, given its payload.
pub type OnPush = Arc<dyn Fn(&serde_json::Value) + Send + Sync>;

/// The webhook receiver's secret and what a queued job sets off.
#[derive(Clone)]
pub struct Webhook {
    /// The secret GitHub signs deliveries with.
    pub secret: Secret,
    /// Called for every valid `workflow_job` delivery with `action: queued`.
    pub on_queued: Arc<dyn Fn() + Send + Sync>,
    /// Called with the payload of every valid `push` delivery (the controller fetches its
    /// `source.git` at once when the delivery is for that repository).
    pub on_push: Option<OnPush>,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("secret", &self.secret)
            .finish_non_exhaustive()
    }
}

/// HMAC-SHA256 (RFC 2104) of `message` under `key`.
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    mac(key, message).finalize().into_bytes().into()
}

/// The HMAC state for `key` over `message`.
fn mac(key: &[u8], message: &[u8]) -> Hmac<Sha256> {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(message);
    mac
}

/// The `X-Hub-Signature-256` value GitHub sends for `body` under `secret`: `sha256=<hex>`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    hmac_sha256(secret, body)
        .iter()
        .fold(String::from("sha256="), |mut out, b| {
            use std::fmt::Write as _;
            let _ = write!(out, "{b:02x}");
            out
        })
}

/// True when `header` is the signature of `body` under `secret`, compared in constant time
/// (`Mac::verify_slice`).
fn signature_ok(secret: &[u8], body: &[u8], header: Option<&str>) -> bool {
    let Some(digest) = header
        .and_then(|h| h.strip_prefix("sha256="))
        .and_then(unhex)
    else {
        return false;
    };
    mac(secret, body).verify_slice(&digest).is_ok()
}

/// Bytes of a hex string, or `None` when it is not one.
fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

fn message(status: StatusCode, text: &str) -> Response {
    (status, Json(serde_json::json!({ "message": text }))).into_response()
}

/// The `POST /webhook` handler.
pub(super) async fn receive(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(hook) = &state.webhook else {
        return message(StatusCode::NOT_FOUND, "no webhook secret is configured");
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let delivery = header("x-github-delivery").unwrap_or("-").to_string();
    if !signature_ok(
        hook.secret.expose().as_bytes(),
        &body,
        header("x-hub-signature-256"),
    ) {
        tracing::warn!(
            delivery,
            "webhook delivery refused: bad or missing signature"
        );
        state.shared.with(|p| p.metrics.webhook_refused += 1);
        return message(
            StatusCode::UNAUTHORIZED,
            "bad or missing X-Hub-Signature-256",
        );
    }
    let event = header("x-github-event").unwrap_or_default();
    let payload = serde_json::from_slice::<serde_json::Value>(&body).unwrap_or_default();
    let action = payload["action"].as_str().unwrap_or_default().to_string();
    tracing::info!(delivery, event, action, "webhook delivery");
    if event == "workflow_job" && action == "queued" {
        (hook.on_queued)();
    }
    if event == "push" {
        if let Some(on_push) = &hook.on_push {
            on_push(&payload);
        }
    }
    message(StatusCode::ACCEPTED, "accepted")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().fold(String::new(), |mut out, b| {
            use std::fmt::Write as _;
            let _ = write!(out, "{b:02x}");
            out
        })
    }

    #[test]
    fn hmac_matches_known_vectors() {
        // RFC 4231 test case 2.
        assert_eq!(
            hex(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // GitHub's documented example delivery.
        assert!(signature_ok(
            b"It's a Secret to Everybody",
            b"Hello, World!",
            Some("sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17")
        ));
        // A key longer than the block is hashed first (RFC 4231 test case 6).
        assert_eq!(
            hex(&hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn bad_signatures_are_refused() {
        let ok = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        let secret = b"It's a Secret to Everybody";
        assert!(!signature_ok(secret, b"Hello, World?", Some(ok)));
        assert!(!signature_ok(b"other", b"Hello, World!", Some(ok)));
        assert!(!signature_ok(secret, b"Hello, World!", None));
        assert!(!signature_ok(secret, b"Hello, World!", Some(&ok[7..])));
        assert!(!signature_ok(secret, b"Hello, World!", Some("sha256=")));
    }
}
