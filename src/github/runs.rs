//! Demand: the jobs queued in a repository (`reference/github-api.md` §3.1–3.3), for pools.
//!
//! One conditional request per repository and poll: `GET …/actions/runs?status=queued` with
//! the last `ETag` in `If-None-Match`. A `304` costs no rate limit and means "as before"; only
//! a changed listing is followed by each queued run's jobs.

use reqwest::Method;
use serde::Deserialize;

use super::transport::Call;
use super::{GitHubClient, GitHubError};
use crate::config::Repo;

/// A queued job: what it asks of a runner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedJob {
    /// Its id.
    pub id: u64,
    /// Its `runs-on` labels.
    pub labels: Vec<String>,
}

/// The answer to a conditional poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Polled<T> {
    /// `304`: nothing changed since the `ETag` sent.
    NotModified,
    /// A new answer, and the `ETag` to send next time.
    Fresh {
        /// The listing's `ETag`.
        etag: Option<String>,
        /// What it says.
        value: T,
    },
}

#[derive(Deserialize)]
struct RunList {
    #[serde(default)]
    workflow_runs: Vec<Run>,
}

#[derive(Deserialize)]
struct Run {
    id: u64,
}

#[derive(Deserialize)]
struct JobList {
    #[serde(default)]
    jobs: Vec<Job>,
}

#[derive(Deserialize)]
struct Job {
    id: u64,
    #[serde(default)]
    status: String,
    #[serde(default)]
    labels: Vec<String>,
}

fn get(url: String) -> Call<'static> {
    Call {
        method: Method::GET,
        url,
        body: None,
        retry_5xx: true,
    }
}

impl GitHubClient {
    /// The jobs queued in `repo`, unless its queued runs are as they were at `etag`.
    /// Up to 100 queued runs and 100 jobs per run are read (one page each).
    pub async fn queued_jobs(
        &self,
        repo: &Repo,
        etag: Option<&str>,
    ) -> Result<Polled<Vec<QueuedJob>>, GitHubError> {
        let base = format!("/repos/{}/{}/actions/runs", repo.owner, repo.name);
        let url = self
            .inner
            .transport
            .url(&format!("{base}?status=queued&per_page=100"));
        let reply = self.send_if(repo, &get(url), etag).await?;
        if reply.status == 304 {
            return Ok(Polled::NotModified);
        }
        let etag = reply.header("etag").map(str::to_string);
        let runs: RunList = reply.json()?;
        let mut queued = Vec::new();
        for run in runs.workflow_runs {
            let url = self
                .inner
                .transport
                .url(&format!("{base}/{}/jobs?per_page=100", run.id));
            let jobs: JobList = self.send(repo, &get(url)).await?.json()?;
            // A run GitHub lists with no jobs yet asks for nothing (ARC saw such runs).
            queued.extend(
                jobs.jobs
                    .into_iter()
                    .filter(|j| j.status == "queued")
                    .map(|j| QueuedJob {
                        id: j.id,
                        labels: j.labels,
                    }),
            );
        }
        Ok(Polled::Fresh {
            etag,
            value: queued,
        })
    }
}
