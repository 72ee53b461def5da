//! Tests of the test kit's `FakeGitHub` at the HTTP level.

use std::time::Duration;

use reqwest::blocking::{Client, RequestBuilder};
use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::{json, Value};

use crate::kit::github::{FakeGitHub, TokenKind};

mod auth;
mod faults;
mod runners;
mod service;

const REPO: &str = "octo/hello";
const ADMIN: &str = "ghp_admin";
const WAIT: Duration = Duration::from_secs(10);
const RUNNERS: &str = "/repos/octo/hello/actions/runners";

fn fake() -> FakeGitHub {
    let gh = FakeGitHub::start();
    gh.add_repo(REPO);
    gh.add_token(
        ADMIN,
        TokenKind::Classic {
            scopes: vec!["repo".into()],
        },
    );
    gh
}

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("reqwest client")
}

/// A REST request on the dotcom-style base with the admin token.
fn api(gh: &FakeGitHub, method: Method, path: &str) -> RequestBuilder {
    client()
        .request(method, format!("{}{path}", gh.api_url()))
        .header("authorization", format!("Bearer {ADMIN}"))
        .header("user-agent", "corral-tests")
        .header("accept", "application/vnd.github+json")
        .header("x-github-api-version", "2022-11-28")
}

fn send(req: RequestBuilder) -> (u16, Value, HeaderMap) {
    let resp = req.send().expect("request to the fake");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().expect("body text");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::Null),
        headers,
    )
}

/// `GET path` with the admin token.
fn get(gh: &FakeGitHub, path: &str) -> (u16, Value, HeaderMap) {
    send(api(gh, Method::GET, path))
}

/// Status of `method path` with the admin token.
fn code(gh: &FakeGitHub, method: Method, path: &str) -> u16 {
    send(api(gh, method, path)).0
}

fn header(h: &HeaderMap, name: &str) -> String {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

fn jit(gh: &FakeGitHub, name: &str) -> (u16, Value) {
    let body =
        json!({"name": name, "runner_group_id": 1, "labels": ["self-hosted", "linux", "gpu"]});
    let (status, body, _) =
        send(api(gh, Method::POST, &format!("{RUNNERS}/generate-jitconfig")).json(&body));
    (status, body)
}

fn jit_id(gh: &FakeGitHub, name: &str) -> u64 {
    jit(gh, name).1["runner"]["id"].as_u64().expect("runner id")
}
