//! Each runner's apply steps run in a worker of their own, one at a time per runner. A pass
//! plans and hands each runner's steps to a worker without waiting for it, so a step that
//! waits on GitHub (a registration token, a removal) never delays another runner, the
//! restart of a crashed listener, a local edit, or a stop. An ended worker wakes the loop,
//! which folds its outcome in and runs the next pass at once.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::apply::Outcome;
use crate::status::State;

/// Workers applying at the same time (the rest wait for a permit).
const CONCURRENCY: usize = 8;

/// A worker that ended.
#[derive(Debug)]
pub struct Done {
    /// The runner (or `.leftovers`).
    pub name: String,
    /// Its repository's URL, lower case, when known.
    pub repo: Option<String>,
    /// What its steps did.
    pub outcome: Outcome,
}

/// The workers in flight.
pub struct Workers {
    tasks: JoinSet<Done>,
    running: BTreeSet<String>,
    /// Which runner each task is for, so that a panicked one frees its runner.
    names: HashMap<tokio::task::Id, String>,
    permits: Arc<Semaphore>,
    /// What each runner's worker is doing, for its state in status (`provisioning`).
    phases: BTreeMap<String, State>,
    /// When a worker last ended for each repository: a listing of that repository begun
    /// earlier may predate what the worker registered or removed.
    touched: BTreeMap<String, Instant>,
}

impl Default for Workers {
    fn default() -> Self {
        Workers {
            tasks: JoinSet::new(),
            running: BTreeSet::new(),
            names: HashMap::new(),
            permits: Arc::new(Semaphore::new(CONCURRENCY)),
            phases: BTreeMap::new(),
            touched: BTreeMap::new(),
        }
    }
}

impl Workers {
    /// True while `name`'s worker runs: its directory and records are mid-change, so no
    /// pass plans for it.
    pub fn running(&self, name: &str) -> bool {
        self.running.contains(name)
    }

    /// True while any worker runs.
    pub fn any(&self) -> bool {
        !self.running.is_empty()
    }

    /// Every runner's state from its worker in flight.
    pub fn phases(&self) -> &BTreeMap<String, State> {
        &self.phases
    }

    /// Runs `steps` for `name` in a worker; while they run, `name` is in `phase`.
    pub fn spawn(
        &mut self,
        name: String,
        repo: Option<String>,
        phase: Option<State>,
        steps: impl Future<Output = Outcome> + Send + 'static,
    ) {
        self.running.insert(name.clone());
        if let Some(phase) = phase {
            self.phases.insert(name.clone(), phase);
        }
        let permits = Arc::clone(&self.permits);
        let id_name = name.clone();
        let handle = self.tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let outcome = steps.await;
            Done {
                name,
                repo,
                outcome,
            }
        });
        self.names.insert(handle.id(), id_name);
    }

    /// The next worker to end; never resolves while none runs.
    pub async fn next(&mut self) -> Done {
        loop {
            match self.tasks.join_next_with_id().await {
                Some(Ok((id, done))) => return self.ended(id, done),
                Some(Err(err)) => self.failed(&err),
                None => std::future::pending().await,
            }
        }
    }

    /// A worker that already ended, if any.
    pub fn try_next(&mut self) -> Option<Done> {
        loop {
            match self.tasks.try_join_next_with_id()? {
                Ok((id, done)) => return Some(self.ended(id, done)),
                Err(err) => self.failed(&err),
            }
        }
    }

    /// True when a worker for `repo` ended after `since`.
    pub fn touched_since(&self, repo: &str, since: Instant) -> bool {
        self.touched.get(repo).is_some_and(|at| *at > since)
    }

    /// Stops every worker at its next await (corral is stopping). Their steps are
    /// idempotent, like after a crash: the next corral finishes what they began.
    pub async fn abort(&mut self) {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        self.running.clear();
        self.names.clear();
        self.phases.clear();
    }

    fn ended(&mut self, id: tokio::task::Id, done: Done) -> Done {
        self.names.remove(&id);
        self.running.remove(&done.name);
        self.phases.remove(&done.name);
        if let Some(repo) = &done.repo {
            self.touched.insert(repo.clone(), super::now());
        }
        done
    }

    /// A worker that panicked: its runner is planned again at the next pass.
    fn failed(&mut self, err: &tokio::task::JoinError) {
        let name = self.names.remove(&err.id());
        tracing::error!(runner = ?name, error = %err, "an apply worker failed");
        if let Some(name) = name {
            self.running.remove(&name);
            self.phases.remove(&name);
        }
    }
}
