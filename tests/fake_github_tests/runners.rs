//! JIT config, runner deletion, labels, runs and jobs.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use reqwest::Method;
use serde_json::{json, Value};

use super::{api, code, fake, get, header, jit, jit_id, send, REPO, RUNNERS};
use crate::kit::github::{Fault, JobSpec, Route};

fn decode(b64: &str) -> Value {
    serde_json::from_slice(&B64.decode(b64).expect("base64")).expect("json")
}

#[test]
fn fake_github_jit_validations() {
    let gh = fake();
    let path = format!("{RUNNERS}/generate-jitconfig");
    let post = |body: &str| {
        let req = api(&gh, Method::POST, &path).header("content-type", "application/json");
        let (status, body, _) = send(req.body(body.to_string()));
        (
            status,
            body["message"].as_str().unwrap_or_default().to_string(),
        )
    };
    assert_eq!(post("{not json"), (400, "Problems parsing JSON".into()));
    let want = "Invalid input: object is missing required key: runner_group_id";
    assert_eq!(post(r#"{"name":"a","labels":["x"]}"#), (422, want.into()));
    assert_eq!(
        post(r#"{"runner_group_id":1,"labels":["x"]}"#).0,
        422,
        "no name"
    );
    assert_eq!(
        post(r#"{"runner_group_id":1,"name":"a"}"#).0,
        422,
        "no labels"
    );
    assert_eq!(
        post(r#"{"runner_group_id":1,"name":"a","labels":[]}"#).0,
        422,
        "empty labels"
    );
    assert_eq!(
        post(r#"{"runner_group_id":1,"name":"a","labels":[1]}"#).0,
        422,
        "non-string label"
    );
    let many: Vec<String> = (0..101).map(|i| format!("l{i}")).collect();
    let body = json!({"runner_group_id": 1, "name": "a", "labels": many}).to_string();
    assert_eq!(post(&body).0, 422, "101 labels");
    assert_eq!(
        post(r#"{"runner_group_id":99999,"name":"a","labels":["x"]}"#).0,
        404,
        "unknown group"
    );
    assert!(gh.runners(REPO).is_empty());
}

#[test]
fn fake_github_jit_success_conflict_and_ghost_create() {
    let gh = fake();
    let (status, body) = jit(&gh, "jit-1");
    assert_eq!(status, 201);
    let runner = &body["runner"];
    assert_eq!(
        (runner["status"].as_str(), runner["os"].as_str()),
        (Some("offline"), Some("unknown"))
    );
    assert_eq!(
        (runner["busy"].as_bool(), runner["runner_group_id"].as_u64()),
        (Some(false), Some(1))
    );
    let labels = runner["labels"].as_array().expect("labels");
    let types: Vec<&str> = labels.iter().filter_map(|l| l["type"].as_str()).collect();
    assert_eq!(types, ["read-only", "read-only", "custom"]);
    let files = decode(body["encoded_jit_config"].as_str().expect("config"));
    let dot_runner = decode(files[".runner"].as_str().expect(".runner"));
    assert_eq!(dot_runner["serverUrl"], format!("{}/_fake/", gh.web_url()));
    assert_eq!(
        (&dot_runner["agentId"], &dot_runner["agentName"]),
        (&runner["id"], &json!("jit-1"))
    );
    assert_eq!(
        (
            dot_runner["ephemeral"].as_bool(),
            dot_runner["disableUpdate"].as_bool()
        ),
        (Some(true), Some(true))
    );
    let creds = decode(files[".credentials"].as_str().expect(".credentials"));
    assert!(creds["data"]["clientId"]
        .as_str()
        .is_some_and(|c| !c.is_empty()));
    assert!(files[".credentials_rsaparams"].is_string());

    let (status, body) = jit(&gh, "jit-1");
    let want = "Already exists - A runner with the name jit-1 already exists.";
    assert_eq!((status, body["message"].as_str()), (409, Some(want)));

    gh.push_fault(
        Route::GenerateJitConfig,
        Fault::GhostCreate { status: 503 },
        1,
    );
    assert_eq!(jit(&gh, "ghost").0, 503);
    assert!(
        gh.runners(REPO)
            .iter()
            .any(|r| r.name == "ghost" && r.ephemeral),
        "created despite the 503"
    );
    assert_eq!(jit(&gh, "ghost").0, 409);
}

#[test]
fn fake_github_busy_delete_then_delete() {
    let gh = fake();
    let id = jit_id(&gh, "busy");
    let path = format!("{RUNNERS}/{id}");
    gh.push_fault(Route::DeleteRunner, Fault::BusyDelete, 2);
    for _ in 0..2 {
        let (status, body, _) = send(api(&gh, Method::DELETE, &path));
        let want = "Bad request - Runner \"busy\" is still running a job";
        assert_eq!((status, body["message"].as_str()), (422, Some(want)));
    }
    gh.set_runner_busy(id, true);
    assert_eq!(code(&gh, Method::DELETE, &path), 422, "really busy");
    gh.set_runner_busy(id, false);
    let (status, _, h) = send(api(&gh, Method::DELETE, &path));
    assert_eq!(
        (status, header(&h, "x-accepted-github-permissions")),
        (204, "administration=write".into())
    );
    assert_eq!(code(&gh, Method::GET, &path), 404);
    assert_eq!(code(&gh, Method::DELETE, &path), 404);
}

fn label_names(body: &Value) -> Vec<&str> {
    body["labels"]
        .as_array()
        .expect("labels")
        .iter()
        .filter_map(|l| l["name"].as_str())
        .collect()
}

#[test]
fn fake_github_labels() {
    let gh = fake();
    let path = format!("{RUNNERS}/{}/labels", jit_id(&gh, "lab"));
    let labels = |method: Method, body: Option<Value>| {
        let req = api(&gh, method, &path);
        let (status, body, _) = send(match body {
            Some(b) => req.json(&b),
            None => req,
        });
        (status, body)
    };
    let (status, body) = labels(Method::GET, None);
    assert_eq!(
        (status, label_names(&body)),
        (200, vec!["self-hosted", "linux", "gpu"])
    );
    let (_, body) = labels(Method::POST, Some(json!({"labels": ["GPU", "big"]})));
    assert_eq!(
        label_names(&body),
        ["self-hosted", "linux", "gpu", "big"],
        "dedupe is case-insensitive"
    );
    assert_eq!(body["total_count"], 4);
    let (_, body) = labels(Method::PUT, Some(json!({"labels": ["x"]})));
    assert_eq!(label_names(&body), ["self-hosted", "linux", "x"]);
    assert_eq!(code(&gh, Method::DELETE, &format!("{path}/nope")), 404);
    assert_eq!(
        code(&gh, Method::DELETE, &format!("{path}/linux")),
        422,
        "read-only"
    );
    let (_, body, _) = send(api(&gh, Method::DELETE, &format!("{path}/x")));
    assert_eq!(label_names(&body), ["self-hosted", "linux"]);
    labels(Method::PUT, Some(json!({"labels": ["a", "b"]})));
    let (status, body) = labels(Method::DELETE, None);
    assert_eq!(
        (status, label_names(&body)),
        (200, vec!["self-hosted", "linux"])
    );
    assert_eq!(
        labels(Method::PUT, Some(json!({"labels": []}))).0,
        200,
        "[] allowed on PUT"
    );
    assert_eq!(
        labels(Method::POST, Some(json!({"labels": []}))).0,
        422,
        "POST needs one"
    );
}

#[test]
fn fake_github_runs_and_jobs() {
    let gh = fake();
    let job = gh.queue_job(REPO, &["self-hosted", "linux"], JobSpec::default());
    let empty_run = gh.add_run(REPO);
    let (status, body, _) = get(&gh, "/repos/octo/hello/actions/runs?status=queued");
    assert_eq!(
        (status, body["total_count"].as_u64()),
        (200, Some(2)),
        "a run with no jobs counts as queued"
    );
    let run_id = gh.job(job).expect("job").run_id;
    let (_, body, h) = get(
        &gh,
        &format!("/repos/octo/hello/actions/runs/{run_id}/jobs"),
    );
    assert_eq!(header(&h, "x-accepted-github-permissions"), "actions=read");
    assert_eq!(
        (body["total_count"].as_u64(), &body["jobs"][0]["labels"]),
        (Some(1), &json!(["self-hosted", "linux"]))
    );
    let (_, body, _) = get(
        &gh,
        &format!("/repos/octo/hello/actions/runs/{empty_run}/jobs"),
    );
    assert_eq!(body, json!({"total_count": 0, "jobs": []}));
    let (_, body, _) = get(&gh, &format!("/repos/octo/hello/actions/jobs/{job}"));
    assert_eq!(
        (body["status"].as_str(), &body["runner_name"]),
        (Some("queued"), &Value::Null)
    );
    assert_eq!(
        code(&gh, Method::GET, "/repos/octo/hello/actions/jobs/999999"),
        404
    );
    gh.cancel_job(job);
    let (_, body, _) = get(&gh, "/repos/octo/hello/actions/runs?status=cancelled");
    assert_eq!(body["workflow_runs"][0]["id"].as_u64(), Some(run_id));
    assert_eq!(body["total_count"], 1);
}
