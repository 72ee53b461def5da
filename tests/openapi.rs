//! The `OpenAPI` document lists every status each route answers: every route is called with
//! and without the token, before the first pass and after it, and each answer's status must
//! be documented for that route, and each documented status must be seen.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use ::corral::api::{router_with, signature, Shared, Webhook};
use ::corral::secret::Secret;
use ::corral::status::{RunnerStatus, Status};

const TOKEN: &str = "openapi-test-token";
const SECRET: &str = "openapi-test-webhook-secret";

/// One request of the test: method, path as sent, the document's path template, headers.
struct Call {
    method: &'static str,
    path: String,
    template: &'static str,
    token: bool,
    signed: bool,
    body: Vec<u8>,
}

fn runner(name: &str) -> RunnerStatus {
    serde_json::from_value(serde_json::json!({
        "name": name, "repo_url": "https://github.com/o/r", "status": "running", "pid": 1,
        "state": "idle", "job": null, "restarts": 0, "last_exit_code": null,
        "registration": "registered", "last_error": null
    }))
    .expect("a runner status")
}

/// Serves the API on loopback with `webhook` or not; returns its base URL.
async fn serve(shared: Shared, webhook: bool) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let hook = webhook.then(|| Webhook {
        secret: Secret::new(SECRET),
        on_queued: Arc::new(|| {}),
        on_push: None,
    });
    let app = router_with(shared, Some(Secret::new(TOKEN)), hook);
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

fn calls() -> Vec<Call> {
    let mut calls = Vec::new();
    let gets = [
        ("/status", "/status"),
        ("/runners", "/runners"),
        ("/runners/web-1", "/runners/{name}"),
        ("/runners/nobody", "/runners/{name}"),
        ("/healthz", "/healthz"),
        ("/readyz", "/readyz"),
        ("/metrics", "/metrics"),
        ("/openapi.json", "/openapi.json"),
    ];
    for (path, template) in gets {
        for token in [true, false] {
            calls.push(Call {
                method: "get",
                path: path.into(),
                template,
                token,
                signed: false,
                body: Vec::new(),
            });
        }
    }
    let delivery = br#"{"action":"queued","workflow_job":{"id":1}}"#.to_vec();
    for (signed, body) in [
        (true, delivery.clone()),
        (false, delivery),
        (true, vec![b' '; 3 << 20]),
    ] {
        calls.push(Call {
            method: "post",
            path: "/webhook".into(),
            template: "/webhook",
            token: false,
            signed,
            body,
        });
    }
    calls
}

async fn status_of(client: &reqwest::Client, base: &str, call: &Call) -> u16 {
    let url = format!("{base}{}", call.path);
    let mut request = match call.method {
        "post" => client.post(&url).body(call.body.clone()),
        _ => client.get(&url),
    };
    if call.token {
        request = request.bearer_auth(TOKEN);
    }
    if call.signed {
        request = request.header("X-GitHub-Event", "workflow_job").header(
            "X-Hub-Signature-256",
            signature(SECRET.as_bytes(), &call.body),
        );
    }
    request
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("the API answers")
        .status()
        .as_u16()
}

/// Documented statuses by `(method, template)`.
fn documented() -> BTreeMap<(String, String), BTreeSet<u16>> {
    let doc = ::corral::api::openapi_document();
    let mut out = BTreeMap::new();
    for (template, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            let statuses = op["responses"]
                .as_object()
                .expect("responses")
                .keys()
                .map(|code| code.parse().expect("a numeric status"))
                .collect();
            out.insert((method.clone(), template.clone()), statuses);
        }
    }
    out
}

#[tokio::test]
async fn every_status_every_route_answers_is_documented() {
    let client = reqwest::Client::new();
    let documented = documented();
    let mut seen: BTreeMap<(String, String), BTreeSet<u16>> = BTreeMap::new();
    let mut undocumented = Vec::new();
    for webhook in [true, false] {
        // Before the first pass, and after it with one runner.
        let shared = Shared::default();
        let base = serve(shared.clone(), webhook).await;
        for ready in [false, true] {
            if ready {
                shared.with(|p| {
                    p.status = Some(Status {
                        runners: vec![runner("web-1")],
                        ..Status::default()
                    });
                    p.ready = true;
                });
            }
            for call in calls() {
                let key = (call.method.to_string(), call.template.to_string());
                let status =
                    tokio::time::timeout(Duration::from_secs(20), status_of(&client, &base, &call))
                        .await
                        .expect("an answer in time");
                if !documented.get(&key).is_some_and(|s| s.contains(&status)) {
                    undocumented.push(format!(
                        "{} {} (token: {}, webhook: {webhook}, ready: {ready}) answered {status}",
                        call.method, call.path, call.token
                    ));
                }
                seen.entry(key).or_default().insert(status);
            }
        }
    }
    assert!(undocumented.is_empty(), "undocumented: {undocumented:#?}");
    assert_eq!(
        seen.keys().collect::<Vec<_>>(),
        documented.keys().collect::<Vec<_>>(),
        "the test calls every documented route"
    );
    for (key, statuses) in &documented {
        let never: Vec<_> = statuses.difference(&seen[key]).collect();
        assert!(
            never.is_empty(),
            "{key:?} documents {never:?}, never answered"
        );
    }
}
