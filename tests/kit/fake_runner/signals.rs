//! Signals are blocked in every thread and taken synchronously by one thread with
//! `sigwait`, so a blocking HTTP long poll on another thread never hides them.

use nix::sys::signal::{SigSet, Signal};

fn set() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGQUIT);
    set.add(Signal::SIGTERM);
    set
}

/// Must run before any thread is spawned so that all threads inherit the mask.
/// Children get an empty mask again (std resets it at spawn).
pub fn block_all() {
    let _ = set().thread_block();
}

/// Calls `handler` for every SIGINT / SIGQUIT / SIGTERM, or only for `only` if given.
pub fn spawn_for(only: Option<Signal>, mut handler: impl FnMut(Signal) + Send + 'static) {
    let wanted = only.map_or_else(set, |sig| {
        let mut s = SigSet::empty();
        s.add(sig);
        s
    });
    std::thread::spawn(move || loop {
        if let Ok(sig) = wanted.wait() {
            handler(sig);
        }
    });
}

pub fn spawn(handler: impl FnMut(Signal) + Send + 'static) {
    spawn_for(None, handler);
}
