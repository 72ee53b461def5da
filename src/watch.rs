//! Watches the config file's directory, so every way of saving it is seen: an in-place write,
//! a write to a temporary file renamed over it (vim and most editors), a deleted and
//! recreated file, and the `..data` symlink swap of a Kubernetes `ConfigMap` mount.
//!
//! Events are only hints: the callback `try_send`s into a channel of one and drops the event
//! when one is already pending, because the next pass re-reads the whole file anyway.

use std::path::Path;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// Starts watching the directory of `config`; each change sends `()` on the returned channel.
/// Keep the watcher alive as long as events are wanted.
pub fn watch_config(config: &Path) -> notify::Result<(RecommendedWatcher, mpsc::Receiver<()>)> {
    let (tx, rx) = mpsc::channel(1);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        match event {
            Ok(event) if event.kind.is_access() => {}
            Ok(_) => {
                // Full means a pass is already due; dropping this hint loses nothing.
                let _ = tx.try_send(());
            }
            Err(err) => tracing::warn!(cause = %err, "config watch error"),
        }
    })?;
    let dir = config
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    Ok((watcher, rx))
}
