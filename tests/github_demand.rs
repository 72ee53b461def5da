//! `GitHubClient::poll_demand` against `FakeGitHub`: queued jobs in queued and in-progress
//! runs, every page, conditional requests, and the bound on requests per poll.

use std::time::Duration;

use corral::config::GitHubAuth;
use corral::github::{DemandCache, GitHubClient, MAX_JOB_REQUESTS};

use crate::github_client::{repo, settings, within};
use crate::kit::github::{FakeGitHub, Fault, JobResult, JobSpec, Route, TokenKind};

const PAT: &str = "ghp_demandtests0000000000000000000000";
const REPO: &str = "octo/app";

fn world() -> (FakeGitHub, GitHubClient, tempfile::TempDir) {
    let gh = FakeGitHub::start();
    gh.add_repo(REPO);
    gh.add_token(
        PAT,
        TokenKind::Classic {
            scopes: vec!["repo".into()],
        },
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let token_file = dir.path().join("pat");
    std::fs::write(&token_file, PAT).expect("write token");
    let github = settings(&gh, gh.api_url(), GitHubAuth::TokenFile(token_file));
    let client = GitHubClient::with_timeout(&github, Duration::from_secs(10));
    (gh, client, dir)
}

fn ids(cache: &DemandCache) -> Vec<u64> {
    cache.queued_jobs().iter().map(|j| j.id).collect()
}

#[tokio::test]
async fn github_demand_finds_queued_jobs_in_running_workflows_once_each() {
    within(async {
        let (gh, client, _dir) = world();
        let repo = repo(&gh);
        // A workflow whose first job runs while its second is queued (a `needs:` job or a
        // matrix leg), a plain queued one, and one done.
        let running = gh.queue_job(REPO, &["self-hosted", "gpu"], JobSpec::default());
        let run = gh.job(running).expect("job").run_id;
        let inside = gh
            .queue_job_in_run(run, &["self-hosted", "gpu"], JobSpec::default())
            .expect("run");
        let jit = client
            .generate_jitconfig(&repo, "r1", &["gpu".into()], "_work")
            .await
            .expect("jit");
        gh.start_job(running, jit.runner_id);
        let queued = gh.queue_job(REPO, &["self-hosted"], JobSpec::default());
        let done = gh.queue_job(REPO, &["self-hosted"], JobSpec::default());
        gh.finish_job(done, JobResult::Succeeded);
        let mut cache = DemandCache::default();
        let cost = client.poll_demand(&repo, &mut cache).await.expect("poll");
        assert_eq!(ids(&cache), [inside, queued]);
        let found = cache.queued_jobs();
        assert_eq!(found[0].labels, ["self-hosted", "gpu"]);
        assert!(
            found[0].queued_at.is_some(),
            "created_at read as the queued time"
        );
        // Two run listings and the jobs of the two active runs, nothing for the finished one.
        assert_eq!((cost.requests, cost.not_modified), (4, 0));
        let jobs_urls: Vec<String> = gh
            .requests()
            .iter()
            .filter(|r| r.path.ends_with("/jobs"))
            .map(|r| r.query.clone().unwrap_or_default())
            .collect();
        assert!(
            jobs_urls.iter().all(|q| q.contains("filter=latest")),
            "{jobs_urls:?}"
        );
        // Unchanged: every request is a 304, and the answer is the same.
        let cost = client.poll_demand(&repo, &mut cache).await.expect("poll");
        assert_eq!((cost.requests, cost.not_modified), (4, 4));
        assert_eq!(ids(&cache), [inside, queued]);
        // The queued job is taken: its run leaves the queued listing for the in-progress one.
        gh.start_job(queued, jit.runner_id);
        client.poll_demand(&repo, &mut cache).await.expect("poll");
        assert_eq!(ids(&cache), [inside]);
    })
    .await;
}

#[tokio::test]
async fn github_demand_reads_every_page_within_a_bound_per_poll() {
    within(async {
        let (gh, client, _dir) = world();
        let repo = repo(&gh);
        // 120 queued runs: two pages of runs, more job listings than one poll may send.
        let jobs: Vec<u64> = (0..120)
            .map(|_| gh.queue_job(REPO, &["self-hosted"], JobSpec::default()))
            .collect();
        let bound = MAX_JOB_REQUESTS as usize;
        let mut cache = DemandCache::default();
        let mut seen = 0;
        for poll in 1..=4 {
            let cost = client.poll_demand(&repo, &mut cache).await.expect("poll");
            // Queued: 2 pages; in progress: 1 page; then the job listings up to the bound.
            assert_eq!(cost.requests as usize, 3 + bound, "poll {poll}");
            let now = cache.queued_jobs().len();
            assert_eq!(now, (poll * bound).min(120), "poll {poll}");
            assert!(now > seen);
            seen = now;
        }
        assert_eq!(ids(&cache), jobs, "every job, read over four polls");
        assert_eq!(cache.unread_runs(), 0);
        // Nothing changed: everything is a 304, still bounded.
        let cost = client.poll_demand(&repo, &mut cache).await.expect("poll");
        assert_eq!(cost.requests, cost.not_modified);
        assert_eq!(ids(&cache), jobs);
    })
    .await;
}

#[tokio::test]
async fn github_demand_follows_the_pages_of_a_large_matrix() {
    within(async {
        let (gh, client, _dir) = world();
        let repo = repo(&gh);
        let first = gh.queue_job(REPO, &["self-hosted"], JobSpec::default());
        let run = gh.job(first).expect("job").run_id;
        let mut legs = vec![first];
        for _ in 1..150 {
            legs.push(
                gh.queue_job_in_run(run, &["self-hosted"], JobSpec::default())
                    .expect("run"),
            );
        }
        let mut cache = DemandCache::default();
        let cost = client.poll_demand(&repo, &mut cache).await.expect("poll");
        assert_eq!(ids(&cache), legs);
        assert_eq!(cost.requests, 2 + 2, "two run listings, two pages of jobs");
        let cost = client.poll_demand(&repo, &mut cache).await.expect("poll");
        assert_eq!((cost.requests, cost.not_modified), (4, 4));
        assert_eq!(ids(&cache).len(), 150);
    })
    .await;
}

#[tokio::test]
async fn github_demand_keeps_what_it_knew_when_github_fails() {
    within(async {
        let (gh, client, _dir) = world();
        let repo = repo(&gh);
        let job = gh.queue_job(REPO, &["self-hosted"], JobSpec::default());
        let mut cache = DemandCache::default();
        client.poll_demand(&repo, &mut cache).await.expect("poll");
        gh.push_fault(Route::ListRuns, Fault::PermissionLost, 1);
        let failed = client.poll_demand(&repo, &mut cache).await;
        assert!(failed.is_err());
        assert_eq!(ids(&cache), [job], "the last answer stands");
    })
    .await;
}
