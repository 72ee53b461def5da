//! Every task the controller spawns, tracked so that `corral run` returns only when none is
//! left: each task holds a clone of one sender, and [`Tasks::stop`] aborts them all and
//! waits until the receiver sees the last clone dropped (mini-redis's shutdown pattern).
//! Spawners hold only a weak sender, so one kept in a struct never holds up the stop.

use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinHandle};

/// The abort handles of live tasks; `None` once the stop began.
type Registry = Arc<Mutex<Option<Vec<AbortHandle>>>>;

/// Spawns tracked tasks; cheap to clone into the places that spawn.
#[derive(Clone, Debug)]
pub struct Spawner {
    alive: mpsc::WeakSender<()>,
    registry: Registry,
}

impl Spawner {
    /// Spawns `task`, tracked until it ends; after the stop began it is aborted at once.
    pub fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let alive = self.alive.upgrade();
        let handle = tokio::spawn(async move {
            let _alive = alive;
            task.await
        });
        let mut registry = self
            .registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match registry.as_mut() {
            Some(live) => {
                live.retain(|a| !a.is_finished());
                live.push(handle.abort_handle());
            }
            None => handle.abort(),
        }
        handle
    }
}

/// The owner of the tracked tasks.
#[derive(Debug)]
pub struct Tasks {
    alive: Option<mpsc::Sender<()>>,
    ended: mpsc::Receiver<()>,
    spawner: Spawner,
}

impl Default for Tasks {
    fn default() -> Self {
        // Nothing is ever sent: the channel only tells when every sender is gone.
        let (alive, ended) = mpsc::channel(1);
        let spawner = Spawner {
            alive: alive.downgrade(),
            registry: Arc::new(Mutex::new(Some(Vec::new()))),
        };
        Tasks {
            alive: Some(alive),
            ended,
            spawner,
        }
    }
}

impl Tasks {
    /// A spawner for these tasks.
    pub fn spawner(&self) -> Spawner {
        self.spawner.clone()
    }

    /// Tasks not yet ended.
    #[cfg(test)]
    pub fn live(&self) -> usize {
        let registry = self
            .spawner
            .registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        registry
            .as_ref()
            .map_or(0, |live| live.iter().filter(|a| !a.is_finished()).count())
    }

    /// Aborts every task and returns once all have ended.
    pub async fn stop(&mut self) {
        let live = self
            .spawner
            .registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        for task in live.iter().flatten() {
            task.abort();
        }
        self.alive = None;
        // `None` once the last task's sender is dropped with its future.
        while self.ended.recv().await.is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Counts its drops: a task's future is dropped when it ends or is aborted.
    struct Count(Arc<std::sync::atomic::AtomicUsize>);

    impl Drop for Count {
        fn drop(&mut self) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn stop_returns_only_when_every_task_has_ended() {
        let mut tasks = Tasks::default();
        let spawner = tasks.spawner();
        let dropped = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for _ in 0..3 {
            let count = Count(Arc::clone(&dropped));
            spawner.spawn(async move {
                let _count = count;
                tokio::time::sleep(Duration::from_secs(3600)).await;
            });
        }
        // One spawns another from inside, through its own clone.
        let inner = spawner.clone();
        let count = Count(Arc::clone(&dropped));
        spawner.spawn(async move {
            inner.spawn(async move {
                let _count = count;
                std::future::pending::<()>().await;
            });
        });
        tokio::task::yield_now().await;
        assert!(tasks.live() >= 3);
        tokio::time::timeout(Duration::from_secs(1), tasks.stop())
            .await
            .expect("stop returns");
        assert_eq!(dropped.load(std::sync::atomic::Ordering::SeqCst), 4);
        assert_eq!(tasks.live(), 0);
    }
}
