//! File watches. Events are only hints: a callback `try_send`s into a channel of one and
//! drops the event when one is already pending, because the next pass re-reads everything.
//!
//! The config file's directory is watched, so every way of saving the file is seen: an
//! in-place write, a write to a temporary file renamed over it (vim and most editors), a
//! deleted and recreated file, and the `..data` symlink swap of a Kubernetes `ConfigMap` mount.

use std::path::Path;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// Starts watching the directory of `config`; each change sends `()` on the returned channel.
/// Keep the watcher alive as long as events are wanted.
pub fn watch_config(config: &Path) -> notify::Result<(RecommendedWatcher, mpsc::Receiver<()>)> {
    let dir = config
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    watch(dir, RecursiveMode::NonRecursive, |_| true)
}

/// Watches every listener log under `records_dir`: a listener writes a line there when it
/// comes online, takes a job or finishes one, and status should say so at once. One watch
/// for all runners, not a poll per runner.
pub fn watch_listener_logs(
    records_dir: &Path,
) -> notify::Result<(RecommendedWatcher, mpsc::Receiver<()>)> {
    watch(records_dir, RecursiveMode::Recursive, |event| {
        event.paths.iter().any(|p| p.ends_with("listener.log"))
    })
}

fn watch(
    path: &Path,
    mode: RecursiveMode,
    wanted: impl Fn(&notify::Event) -> bool + Send + 'static,
) -> notify::Result<(RecommendedWatcher, mpsc::Receiver<()>)> {
    let (tx, rx) = mpsc::channel(1);
    let mut watcher =
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            Ok(event) if event.kind.is_access() || !wanted(&event) => {}
            Ok(_) => {
                // Full means a pass is already due; dropping this hint loses nothing.
                let _ = tx.try_send(());
            }
            Err(err) => tracing::warn!(cause = %err, "file watch error"),
        })?;
    watcher.watch(path, mode)?;
    Ok((watcher, rx))
}
