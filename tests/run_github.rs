//! `corral run` and GitHub: label sync, JIT, registrations deleted or orphaned on the server,
//! and the API budget.

use std::time::{Duration, Instant};

use corral::status::State;
use nix::sys::signal::Signal;

use crate::kit::daemon::{runner, World, REPO};
use crate::kit::github::{JobResult, JobSpec, Runner};
use crate::kit::proc::wait_until;

fn registration(world: &World, repo: &str, name: &str) -> Option<Runner> {
    world.gh.runners(repo).into_iter().find(|r| r.name == name)
}

fn has_label(r: &Runner, label: &str) -> bool {
    r.labels.iter().any(|l| l.name == label)
}

#[test]
fn label_change_is_set_in_place_and_a_repo_change_registers_afresh() {
    let mut world = World::new();
    world.gh.add_repo("owner/other");
    world.write_config(
        "  - name: a\n    repo: owner/repo\n    labels: [x]\n  - name: b\n    repo: owner/repo\n",
    );
    world.start();
    let pids = world.wait_idle(&["a", "b"]);
    let before = registration(&world, REPO, "a").expect("a registered");
    assert!(has_label(&before, "x"));
    assert!(
        before.labels.iter().any(|l| l.name.starts_with("corral-")),
        "carries the marker: {before:?}"
    );

    world.write_config(
        "  - name: a\n    repo: owner/repo\n    labels: [y]\n  - name: b\n    repo: owner/repo\n",
    );
    wait_until("a carries y and not x", || {
        registration(&world, REPO, "a").is_some_and(|r| has_label(&r, "y") && !has_label(&r, "x"))
    });
    let after = registration(&world, REPO, "a").expect("a");
    assert_eq!(after.id, before.id, "same registration");
    assert!(
        after.labels.iter().any(|l| l.name.starts_with("corral-")),
        "marker kept"
    );
    let status = world.status().expect("status");
    assert_eq!(
        runner(&status, "a").and_then(|r| r.pid),
        Some(pids[0]),
        "no restart"
    );
    assert_eq!(
        runner(&status, "b").and_then(|r| r.pid),
        Some(pids[1]),
        "b untouched"
    );

    // Another repository is another registration.
    world.write_config(
        "  - name: a\n    repo: owner/other\n    labels: [y]\n  - name: b\n    repo: owner/repo\n",
    );
    wait_until("a moved to owner/other", || {
        registration(&world, "owner/other", "a").is_some()
            && registration(&world, REPO, "a").is_none()
    });
    let status = world.wait_status("a idle in its new repo", |s| {
        runner(s, "a")
            .is_some_and(|r| r.state == State::Idle && r.repo_url.ends_with("/owner/other"))
    });
    assert_eq!(
        runner(&status, "b").and_then(|r| r.pid),
        Some(pids[1]),
        "b still untouched"
    );
}

#[test]
fn ephemeral_runners_register_just_in_time() {
    let mut world = World::new();
    world.write_config(
        "  - name: jit\n    repo: owner/repo\n    ephemeral: true\n    labels: [gpu]\n",
    );
    world.start();
    world.wait_idle(&["jit"]);
    let requests = world.gh.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.path.ends_with("/generate-jitconfig")),
        "JIT used"
    );
    assert!(
        !requests
            .iter()
            .any(|r| r.path.ends_with("/registration-token")),
        "no registration token, no config.sh"
    );
    let first = registration(&world, REPO, "jit").expect("registered");
    assert!(
        has_label(&first, "gpu") && has_label(&first, "self-hosted"),
        "{first:?}"
    );
    let job = world.gh.queue_job(
        REPO,
        &["self-hosted", "gpu"],
        JobSpec {
            name: "once".into(),
            duration: Duration::from_millis(200),
            result: JobResult::Succeeded,
        },
    );
    wait_until("a new JIT registration after the job", || {
        world.gh.job(job).is_some_and(|j| j.conclusion.is_some())
            && registration(&world, REPO, "jit").is_some_and(|r| r.id != first.id)
    });
    world.wait_status("jit idle again", |s| {
        runner(s, "jit").is_some_and(|r| r.state == State::Idle && r.restarts == 0)
    });
    // The JIT config is a credential: never in argv.
    let argv = crate::kit::daemon::cmdlines_under(world.dir.path()).join("\n");
    assert!(!argv.contains("jitconfig"), "{argv}");
}

#[test]
fn registration_deleted_while_corral_was_down_is_created_again() {
    let mut world = World::new();
    world.write_config("  - name: a\n    repo: owner/repo\n");
    world.start();
    world.wait_idle(&["a"]);
    world.signal(Signal::SIGTERM);
    assert_eq!(world.corral().exit_code(), 0);
    let old = registration(&world, REPO, "a").expect("a stays registered while stopped");
    world.gh.delete_runner_silently(REPO, old.id);
    world.start();
    world
        .corral()
        .wait_for("forget the registration GitHub deleted");
    wait_until("a registered again", || {
        registration(&world, REPO, "a").is_some_and(|r| r.id != old.id)
    });
    world.wait_idle(&["a"]);
}

#[test]
fn orphans_are_deleted_only_when_marked_offline_and_idle() {
    let mut world = World::new();
    world.write_config(
        "  - name: lost\n    repo: owner/repo\n  - name: busy\n    repo: owner/repo\n  - name: keep\n    repo: owner/repo\n",
    );
    world.start();
    world.wait_idle(&["lost", "busy", "keep"]);
    world.signal(Signal::SIGTERM);
    assert_eq!(world.corral().exit_code(), 0);
    // The state directory is lost; the registrations stay on GitHub, offline.
    std::fs::remove_dir_all(world.state()).expect("lose the state dir");
    let busy = registration(&world, REPO, "busy").expect("busy");
    world.gh.set_runner_busy(busy.id, true);
    let keep_only = "  - name: keep\n    repo: owner/repo\n";
    world.write_config(keep_only);
    world.start();
    world.corral().wait_for("deleted orphan registration");
    wait_until("lost deleted", || {
        registration(&world, REPO, "lost").is_none()
    });
    world.wait_idle(&["keep"]);
    assert!(
        registration(&world, REPO, "busy").is_some(),
        "a busy registration is never deleted"
    );
    assert!(registration(&world, REPO, "keep").is_some());
}

#[test]
fn steady_state_costs_requests_per_repository_not_per_runner() {
    let mut world = World::new();
    world.gh.add_repo("owner/other");
    world.write_config(
        "  - name: a\n    repo: owner/repo\n    count: 4\n  - name: b\n    repo: owner/other\n    count: 4\n",
    );
    world.start();
    world.wait_idle(&["a-1", "a-2", "a-3", "a-4", "b-1", "b-2", "b-3", "b-4"]);
    let start = world.gh.rest_request_count();
    let began = Instant::now();
    // Three resync intervals (2 s each in these tests).
    wait_until("three resyncs", || {
        began.elapsed() >= Duration::from_secs(6)
    });
    let spent = world.gh.rest_request_count() - start;
    // At most one listing per repository per resync (+1 for the interval boundary); a
    // per-runner cost would be at least 8 per resync.
    assert!(
        spent <= 2 * (3 + 1),
        "{spent} REST requests for 2 repositories over 3 resyncs"
    );
    assert!(spent >= 2, "the registrations were listed: {spent}");
}

#[test]
fn a_github_app_registers_runners_end_to_end() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let public =
        std::fs::read_to_string(fixtures.join("test-only-github-app-key.pub.pem")).expect("key");
    let mut world = World::new();
    world.gh.add_app(4242, &public, &[(77, &[REPO])]);
    let text = world
        .config_text("  - name: app-runner\n    repo: owner/repo\n")
        .replace(
            "  token_env: GITHUB_TOKEN\n",
            &format!(
                "  app:\n    id: 4242\n    private_key_file: {}\n",
                fixtures.join("test-only-github-app-key.pem").display()
            ),
        );
    std::fs::write(world.config(), text).expect("write config");
    world.start();
    world.wait_idle(&["app-runner"]);
    assert!(registration(&world, REPO, "app-runner").is_some());
    let minted = world.gh.minted_installation_tokens();
    assert!(!minted.is_empty(), "an installation token was minted");
    let output = world.corral().output();
    for token in &minted {
        assert!(
            !output.contains(token.as_str()),
            "installation token in corral's output"
        );
    }
}

#[test]
fn a_rate_limit_is_waited_out_and_shown() {
    let mut world = World::new();
    world.gh.push_fault(
        crate::kit::github::Route::RegistrationToken,
        crate::kit::github::Fault::SecondaryRateLimit {
            status: 403,
            retry_after: Some(3),
        },
        1,
    );
    world.write_config("  - name: a\n    repo: owner/repo\n");
    world.start();
    let status = world.wait_status("the limit shows", |s| {
        s.github.as_ref().is_some_and(|g| g.blocked_until.is_some())
    });
    let a = runner(&status, "a").expect("a");
    assert!(
        a.last_error
            .as_deref()
            .is_some_and(|e| e.contains("rate limit")),
        "{a:?}"
    );
    let tokens = || {
        world
            .gh
            .requests()
            .iter()
            .filter(|r| r.path.ends_with("/registration-token"))
            .count()
    };
    assert_eq!(tokens(), 1, "nothing sent while blocked");
    world.wait_idle(&["a"]);
    assert_eq!(tokens(), 2, "one more request once the limit passed");
    let status = world.status().expect("status");
    assert!(
        status
            .github
            .as_ref()
            .and_then(|g| g.rate_limit.as_ref())
            .is_some(),
        "the budget is shown: {status:?}"
    );
}
