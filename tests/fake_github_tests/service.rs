//! The private runner service (tests/kit/README.md §1–6) at the HTTP level.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{client, fake, REPO, WAIT};
use crate::kit::github::{FakeGitHub, JobResult, JobSpec, JobStatus, RunnerStatus};

fn post(url: &str, auth: &str, body: &Value) -> (u16, Value) {
    let resp = client()
        .post(url)
        .header("authorization", auth)
        .json(body)
        .send()
        .expect("service request");
    let status = resp.status().as_u16();
    (status, resp.json().unwrap_or(Value::Null))
}

/// Token exchange; returns the service base URL and service token.
fn exchange(gh: &FakeGitHub, token: &str, event: &str) -> (u16, Value) {
    let url = format!("{}/actions/runner-registration", gh.ghes_api_url());
    post(
        &url,
        &format!("RemoteAuth {token}"),
        &json!({"url": gh.runner_url(REPO), "runner_event": event}),
    )
}

/// A configured listener: runner id and client id.
struct Configured {
    service: String,
    id: u64,
    client_id: String,
}

fn configure(gh: &FakeGitHub, name: &str, ephemeral: bool) -> Configured {
    let (status, ex) = exchange(gh, &gh.registration_token(REPO), "register");
    assert_eq!(status, 200, "{ex}");
    let service = ex["url"].as_str().expect("url").to_string();
    let body = json!({"name": name, "labels": ["gpu"], "no_default_labels": false, "ephemeral": ephemeral,
        "disable_update": true, "replace": false, "version": "2.336.0", "os": "Linux", "arch": "X64", "work_folder": "_work"});
    let (status, added) = post(
        &format!("{service}runners"),
        &format!("Bearer {}", ex["token"].as_str().expect("token")),
        &body,
    );
    assert_eq!(status, 201, "{added}");
    Configured {
        service,
        id: added["runner"]["id"].as_u64().expect("id"),
        client_id: added["client_id"].as_str().expect("client id").to_string(),
    }
}

impl Configured {
    fn session(&self) -> (u16, Value) {
        post(
            &format!("{}runners/{}/sessions", self.service, self.id),
            &format!("Bearer {}", self.client_id),
            &json!({}),
        )
    }

    fn poll(&self, session: &str, wait: u64) -> (u16, Value) {
        let url = format!(
            "{}runners/{}/message?session_id={session}&wait={wait}",
            self.service, self.id
        );
        let resp = client()
            .get(url)
            .header("authorization", format!("Bearer {}", self.client_id))
            .send()
            .expect("poll");
        let status = resp.status().as_u16();
        (status, resp.json().unwrap_or(Value::Null))
    }

    fn complete(&self, job: u64, result: &str) -> u16 {
        let url = format!("{}jobs/{job}/complete", self.service);
        post(
            &url,
            &format!("Bearer {}", self.client_id),
            &json!({"result": result}),
        )
        .0
    }
}

#[test]
fn fake_github_service_end_to_end() {
    let gh = fake();
    assert_eq!(exchange(&gh, "WRONGTOKEN", "register").0, 404);
    let r = configure(&gh, "box-1", false);
    let runner = gh.runner(r.id).expect("registered");
    let labels: Vec<(String, bool)> = runner
        .labels
        .iter()
        .map(|l| (l.name.clone(), l.read_only))
        .collect();
    let expected = [
        ("self-hosted", true),
        ("Linux", true),
        ("X64", true),
        ("gpu", false),
    ];
    assert_eq!(labels, expected.map(|(n, ro)| (n.to_string(), ro)));
    assert_eq!(
        (runner.status, runner.version.as_deref()),
        (RunnerStatus::Offline, Some("2.336.0"))
    );

    let (status, s) = r.session();
    assert_eq!(status, 201);
    let session = s["session_id"].as_str().expect("session").to_string();
    assert_eq!(r.session().0, 409, "one session at a time");
    assert_eq!(
        gh.runner(r.id).map(|x| x.status),
        Some(RunnerStatus::Online)
    );

    let spec = JobSpec {
        name: "build".into(),
        duration: Duration::from_millis(250),
        result: JobResult::Failed,
    };
    let job = gh.queue_job(REPO, &["self-hosted", "LINUX", "gpu"], spec);
    let (status, msg) = r.poll(&session, 5);
    assert_eq!(status, 200);
    let want = json!({"type": "job", "job": {"id": job, "name": "build", "repo": REPO, "duration_ms": 250, "result": "Failed"}});
    assert_eq!(msg, want);
    let j = gh.job(job).expect("job");
    assert_eq!(
        (j.status, j.runner_id, j.runner_name.as_deref()),
        (JobStatus::InProgress, Some(r.id), Some("box-1"))
    );
    assert!(gh.runner(r.id).expect("runner").busy);

    assert_eq!(r.complete(job, "Failed"), 200);
    assert!(gh.wait_until(WAIT, |v| v.runner(r.id).is_some_and(|x| !x.busy)));
    let j = gh.job(job).expect("job");
    assert_eq!(
        (j.status, j.conclusion.as_deref()),
        (JobStatus::Completed, Some("failure"))
    );

    let started = Instant::now();
    assert_eq!(r.poll(&session, 1).0, 204, "nothing to say within wait");
    assert!(
        started.elapsed() >= Duration::from_millis(900)
            && started.elapsed() < Duration::from_secs(5)
    );
}

#[test]
fn fake_github_service_long_poll_wakes_on_job() {
    let gh = fake();
    let r = configure(&gh, "waker", false);
    let session = r.session().1["session_id"]
        .as_str()
        .expect("session")
        .to_string();
    let started = Instant::now();
    let (status, msg) = std::thread::scope(|scope| {
        let poller = scope.spawn(|| r.poll(&session, 30));
        // Queue only once the poll is parked, so the wake-up path is what is tested.
        assert!(gh.wait_until(WAIT, |v| v.request_count() >= 4));
        gh.queue_job(REPO, &["gpu"], JobSpec::default());
        poller.join().expect("poller thread")
    });
    assert_eq!((status, msg["type"].as_str()), (200, Some("job")));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "woke promptly, not after wait"
    );

    gh.send_exit(r.id, 3);
    assert_eq!(r.poll(&session, 5).1, json!({"type": "exit", "code": 3}));
    let job = msg["job"]["id"].as_u64().expect("job id");
    gh.cancel_job(job);
    assert_eq!(
        r.poll(&session, 5).1,
        json!({"type": "cancel", "job_id": job})
    );
    assert_eq!(r.complete(job, "Canceled"), 200);
    assert_eq!(
        gh.job(job).and_then(|j| j.conclusion),
        Some("cancelled".into())
    );
}

#[test]
fn fake_github_service_ephemeral_replace_and_stale() {
    let gh = fake();
    let r = configure(&gh, "eph", true);
    let session = r.session().1["session_id"]
        .as_str()
        .expect("session")
        .to_string();
    let job = gh.queue_job(REPO, &["self-hosted"], JobSpec::default());
    assert_eq!(r.poll(&session, 5).1["job"]["id"].as_u64(), Some(job));
    assert_eq!(r.complete(job, "Succeeded"), 200);
    assert!(
        gh.wait_until(WAIT, |v| v.runner(r.id).is_none()),
        "ephemeral runner deleted after its job"
    );
    assert_eq!(r.poll(&session, 1).0, 404);
    assert_eq!(r.session().0, 404);

    let old = configure(&gh, "same", false);
    let (status, ex) = exchange(&gh, &gh.registration_token(REPO), "register");
    assert_eq!(status, 200);
    let token = format!("Bearer {}", ex["token"].as_str().expect("token"));
    let url = format!("{}runners", old.service);
    assert_eq!(
        post(&url, &token, &json!({"name": "SAME", "labels": []})).0,
        409
    );
    let (status, body) = post(
        &url,
        &token,
        &json!({"name": "same", "labels": [], "replace": true}),
    );
    assert_eq!(status, 201);
    assert_ne!(body["runner"]["id"].as_u64(), Some(old.id));
    assert_eq!(old.session().0, 404, "replaced registration is gone");

    let fresh = configure(&gh, "stale", false);
    gh.delete_runner_silently(REPO, fresh.id);
    assert_eq!(fresh.session().0, 404);
    let expired = gh.registration_token(REPO);
    gh.advance_clock(Duration::from_secs(3601));
    assert_eq!(
        exchange(&gh, &expired, "register").0,
        404,
        "expired registration token"
    );
}

#[test]
fn fake_github_service_session_end_and_remove() {
    let gh = fake();
    let r = configure(&gh, "box-2", false);
    let session = r.session().1["session_id"]
        .as_str()
        .expect("session")
        .to_string();
    gh.set_runner_busy(r.id, true);
    let (_, ex) = exchange(&gh, &gh.remove_token(REPO), "remove");
    let busy = client().delete(format!("{}runners/{}", r.service, r.id));
    let busy = busy.header(
        "authorization",
        format!("Bearer {}", ex["token"].as_str().expect("t")),
    );
    assert_eq!(busy.send().expect("remove").status(), 422, "busy runner");
    gh.set_runner_busy(r.id, false);
    let del = client().delete(format!("{}runners/{}/sessions/{session}", r.service, r.id));
    assert_eq!(
        del.header("authorization", format!("Bearer {}", r.client_id))
            .send()
            .expect("delete session")
            .status(),
        204
    );
    assert_eq!(
        gh.runner(r.id).map(|x| x.status),
        Some(RunnerStatus::Offline)
    );

    let remove_url = format!("{}runners/{}", r.service, r.id);
    let (_, reg_ex) = exchange(&gh, &gh.registration_token(REPO), "register");
    let with_reg = client().delete(&remove_url).header(
        "authorization",
        format!("Bearer {}", reg_ex["token"].as_str().expect("t")),
    );
    assert_eq!(
        with_reg.send().expect("remove").status(),
        403,
        "a register token cannot remove"
    );
    let (status, ex) = exchange(&gh, &gh.remove_token(REPO), "remove");
    assert_eq!(status, 200);
    let remove = client().delete(&remove_url).header(
        "authorization",
        format!("Bearer {}", ex["token"].as_str().expect("t")),
    );
    assert_eq!(remove.send().expect("remove").status(), 204);
    assert!(gh.runners(REPO).is_empty());
}
