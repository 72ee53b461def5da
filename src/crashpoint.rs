//! Named crash points for the crash-safety tests (`tests/crash.rs`).
//!
//! In debug builds only (`cfg(debug_assertions)`: what `cargo test` builds), the variable
//! `CORRAL_TEST_CRASH_AFTER=<step>:<n>` makes the process send itself SIGKILL the n-th time
//! it reaches `<step>`: exactly what `kill -9` at that instant does, but at a chosen point
//! between two effects (say, a registration on GitHub and corral's record of it) instead of
//! wherever a timer happens to land. A release build compiles every call to nothing and
//! never reads the variable.

/// The variable naming the step and occurrence to die at.
pub const ENV: &str = "CORRAL_TEST_CRASH_AFTER";

/// Marks that `step` is done; in a debug build with [`ENV`] naming it, dies on its n-th time.
#[inline]
pub fn reached(step: &'static str) {
    #[cfg(debug_assertions)]
    armed::reached(step);
    #[cfg(not(debug_assertions))]
    let _ = step;
}

#[cfg(debug_assertions)]
mod armed {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;

    static TARGET: OnceLock<Option<(String, u64)>> = OnceLock::new();
    static SEEN: AtomicU64 = AtomicU64::new(0);

    fn target() -> Option<&'static (String, u64)> {
        TARGET
            .get_or_init(|| {
                let value = std::env::var(super::ENV).ok()?;
                let (step, n) = value.rsplit_once(':')?;
                Some((step.to_string(), n.parse().ok()?))
            })
            .as_ref()
    }

    pub fn reached(step: &str) {
        let Some((want, n)) = target() else { return };
        if want != step {
            return;
        }
        if SEEN.fetch_add(1, Ordering::SeqCst) + 1 == *n {
            // Said on stderr so a test can tell this death from any other.
            eprintln!("crash point {step}:{n}: SIGKILL");
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
        }
    }
}
