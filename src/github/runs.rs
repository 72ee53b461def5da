//! Demand: the jobs queued in a repository (`reference/github-api.md` §3.1–3.3), for pools.
//!
//! A poll lists the runs with `status=queued` and with `status=in_progress` (a running
//! workflow can still hold queued jobs: a `needs:` job, a matrix leg past `max-parallel`, a
//! re-run of one job), every page, then each listed run's jobs (`filter=latest`, every page),
//! keeping those still `queued`. Every page is asked with the `ETag` it had last time: a `304`
//! costs no rate limit and means "as before". A poll sends at most [`MAX_RUN_PAGES`] pages of
//! each run listing and [`MAX_JOB_REQUESTS`] job pages; a run whose jobs it could not re-read
//! keeps what they said last, and is read first next time.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use reqwest::Method;
use serde::Deserialize;

use super::transport::{Call, Reply};
use super::{GitHubClient, GitHubError};
use crate::config::Repo;

/// Pages of one run listing read per poll: GitHub returns at most 1,000 runs for a filtered
/// search, 100 a page.
pub const MAX_RUN_PAGES: usize = 10;
/// Job pages read per poll and repository, over every run (the run listings come on top).
pub const MAX_JOB_REQUESTS: u32 = 30;
/// Pages of one run's jobs: 300 jobs (a matrix has at most 256).
const MAX_JOB_PAGES: usize = 3;

/// The run statuses whose runs can hold a queued job.
const ACTIVE: [&str; 2] = ["queued", "in_progress"];

/// A job GitHub lists as queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedJob {
    /// Its id.
    pub id: u64,
    /// Its `runs-on` labels.
    pub labels: Vec<String>,
    /// Since when it is queued (its `created_at`, or when corral first saw it).
    pub queued_at: Option<SystemTime>,
}

/// What the last polls of one repository read, kept between polls so that an unchanged
/// listing costs a `304`; and, from it, the jobs queued there.
#[derive(Debug, Clone, Default)]
pub struct DemandCache {
    /// Run listing pages by URL.
    run_pages: BTreeMap<String, Page<RunRef>>,
    /// Runs queued or in progress at the last listing, by id.
    runs: BTreeMap<u64, RunJobs>,
    /// Polls so far (orders runs by when their jobs were last read).
    polls: u64,
}

impl DemandCache {
    /// Every job queued in the runs last listed, oldest (lowest id) first.
    pub fn queued_jobs(&self) -> Vec<QueuedJob> {
        let mut jobs: BTreeMap<u64, QueuedJob> = BTreeMap::new();
        for run in self.runs.values() {
            for page in run.pages.values() {
                for job in &page.items {
                    jobs.entry(job.id).or_insert_with(|| job.clone());
                }
            }
        }
        jobs.into_values().collect()
    }

    /// How many listed runs have never had their jobs read (the request bound held them back).
    pub fn unread_runs(&self) -> usize {
        self.runs.values().filter(|r| r.read_at.is_none()).count()
    }
}

/// One page of a listing as last read.
#[derive(Debug, Clone)]
struct Page<T> {
    etag: Option<String>,
    next: Option<String>,
    items: Vec<T>,
}

/// A listed run: enough to tell that it changed.
#[derive(Debug, Clone, Deserialize)]
struct RunRef {
    id: u64,
    #[serde(default)]
    updated_at: Option<String>,
}

#[derive(Debug, Clone, Default)]
struct RunJobs {
    updated_at: Option<String>,
    /// The poll that last read every page of its jobs; `None`: never, or it changed since.
    read_at: Option<u64>,
    pages: BTreeMap<String, Page<QueuedJob>>,
}

/// What one poll cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PollCost {
    /// Requests sent.
    pub requests: u32,
    /// Of those, answered `304 Not Modified`.
    pub not_modified: u32,
}

#[derive(Deserialize)]
struct RunList {
    #[serde(default)]
    workflow_runs: Vec<RunRef>,
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
    #[serde(default)]
    created_at: Option<String>,
}

fn get(url: String) -> Call<'static> {
    Call {
        method: Method::GET,
        url,
        body: None,
        retry_5xx: true,
    }
}

fn runs_of(reply: &Reply) -> Result<Vec<RunRef>, GitHubError> {
    Ok(reply.json::<RunList>()?.workflow_runs)
}

fn queued_of(reply: &Reply) -> Result<Vec<QueuedJob>, GitHubError> {
    let jobs = reply.json::<JobList>()?.jobs;
    // A run GitHub lists with no jobs yet asks for nothing (ARC saw such runs).
    Ok(jobs
        .into_iter()
        .filter(|j| j.status == "queued")
        .map(|j| QueuedJob {
            id: j.id,
            labels: j.labels,
            queued_at: j
                .created_at
                .and_then(|t| humantime::parse_rfc3339_weak(&t).ok()),
        })
        .collect())
}

/// Requests left for a poll's job pages.
struct Budget(u32);

impl GitHubClient {
    /// Polls `repo`'s queued jobs into `cache`; see the module docs for what is read. On an
    /// error the cache keeps what it knew, and the pages read before the error.
    pub async fn poll_demand(
        &self,
        repo: &Repo,
        cache: &mut DemandCache,
    ) -> Result<PollCost, GitHubError> {
        let mut cost = PollCost::default();
        cache.polls += 1;
        let base = format!("/repos/{}/{}/actions/runs", repo.owner, repo.name);
        let mut active: BTreeMap<u64, Option<String>> = BTreeMap::new();
        let mut seen_pages = BTreeSet::new();
        for status in ACTIVE {
            let first = self
                .inner
                .transport
                .url(&format!("{base}?status={status}&per_page=100"));
            let mut no_limit = Budget(u32::MAX);
            let (runs, _) = self
                .read_listing(
                    repo,
                    first,
                    &mut cache.run_pages,
                    MAX_RUN_PAGES,
                    &mut no_limit,
                    &mut cost,
                    runs_of,
                )
                .await?;
            seen_pages.extend(runs.pages);
            active.extend(runs.items.into_iter().map(|r| (r.id, r.updated_at)));
        }
        cache.run_pages.retain(|url, _| seen_pages.contains(url));
        // A run neither queued nor in progress has no queued job left.
        cache.runs.retain(|id, _| active.contains_key(id));
        for (id, updated_at) in &active {
            let run = cache.runs.entry(*id).or_default();
            if run.updated_at != *updated_at {
                run.updated_at.clone_from(updated_at);
                run.read_at = None;
            }
        }
        self.read_jobs(repo, &base, cache, &mut cost).await?;
        Ok(cost)
    }

    /// Reads the jobs of `cache`'s runs within [`MAX_JOB_REQUESTS`]: changed or never read
    /// runs first (newest first), then those read longest ago.
    async fn read_jobs(
        &self,
        repo: &Repo,
        base: &str,
        cache: &mut DemandCache,
        cost: &mut PollCost,
    ) -> Result<(), GitHubError> {
        let mut order: Vec<(Option<u64>, std::cmp::Reverse<u64>)> = cache
            .runs
            .iter()
            .map(|(id, run)| (run.read_at, std::cmp::Reverse(*id)))
            .collect();
        order.sort_unstable();
        let mut budget = Budget(MAX_JOB_REQUESTS);
        for (_, std::cmp::Reverse(id)) in order {
            if budget.0 == 0 {
                break;
            }
            let Some(run) = cache.runs.get_mut(&id) else {
                continue;
            };
            let first = self
                .inner
                .transport
                .url(&format!("{base}/{id}/jobs?filter=latest&per_page=100"));
            let read = self
                .read_listing(
                    repo,
                    first,
                    &mut run.pages,
                    MAX_JOB_PAGES,
                    &mut budget,
                    cost,
                    queued_of,
                )
                .await;
            match read {
                Ok((listing, true)) => {
                    run.pages.retain(|url, _| listing.pages.contains(url));
                    run.read_at = Some(cache.polls);
                }
                // Out of requests mid-run: what was read stays, the run comes first next time.
                Ok((_, false)) => break,
                // Deleted since it was listed.
                Err(err) if err.status() == Some(404) => {
                    cache.runs.remove(&id);
                }
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    /// Reads the listing starting at `first`, following `rel="next"` for up to `max_pages`
    /// pages and as long as `budget` lasts, each page conditional on its cached `ETag`.
    /// Returns the items and pages read, and whether the listing was read to its end.
    #[allow(
        clippy::too_many_arguments,
        reason = "one private helper for both listings; a struct would only rename the arguments"
    )]
    async fn read_listing<T: Clone>(
        &self,
        repo: &Repo,
        first: String,
        cache: &mut BTreeMap<String, Page<T>>,
        max_pages: usize,
        budget: &mut Budget,
        cost: &mut PollCost,
        parse: fn(&Reply) -> Result<Vec<T>, GitHubError>,
    ) -> Result<(Listing<T>, bool), GitHubError> {
        let mut listing = Listing {
            items: Vec::new(),
            pages: Vec::new(),
        };
        let mut url = Some(first);
        for _ in 0..max_pages {
            let Some(this) = url.take() else {
                return Ok((listing, true));
            };
            if budget.0 == 0 {
                return Ok((listing, false));
            }
            budget.0 -= 1;
            let etag = cache.get(&this).and_then(|p| p.etag.clone());
            let reply = self
                .send_if(repo, &get(this.clone()), etag.as_deref())
                .await?;
            cost.requests += 1;
            let page = match (reply.status, cache.get(&this)) {
                (304, Some(page)) => {
                    cost.not_modified += 1;
                    page.clone()
                }
                _ => Page {
                    etag: reply.header("etag").map(str::to_string),
                    next: reply.next_link().filter(|n| self.inner.transport.owns(n)),
                    items: parse(&reply)?,
                },
            };
            listing.items.extend(page.items.iter().cloned());
            listing.pages.push(this.clone());
            url.clone_from(&page.next);
            cache.insert(this, page);
        }
        Ok((listing, url.is_none()))
    }
}

/// What one read of a listing gave.
struct Listing<T> {
    items: Vec<T>,
    /// URLs of the pages read.
    pages: Vec<String>,
}
