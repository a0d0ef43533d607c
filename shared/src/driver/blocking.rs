//! Blocking work (file I/O, fsync) off the async workers, or, in a simulation, inline.
//!
//! A driver hands its disk work to [`run`], which puts it on tokio's blocking pool: a
//! real thread, so a slow disk never stalls the event loop. In a deterministic
//! simulation (tests/simulation.rs) a real thread finishes in real time, while the
//! simulated hosts run in simulated time: whether a host sees the work done at its next
//! step would depend on the machine's speed, and a seed would not replay exactly. The
//! simulation therefore turns [`set_inline`] on for its thread, as it installs its
//! sockets ([`super::socket`]) and clock ([`super::clock`]): the work then runs at once,
//! on the calling task. Nothing else should turn it on.

use std::cell::Cell;

std::thread_local! {
    static INLINE: Cell<bool> = const { Cell::new(false) };
}

/// Runs blocking work inline on this thread from now on (`true`), or on tokio's
/// blocking pool again (`false`). For a simulation only.
pub fn set_inline(inline: bool) {
    INLINE.with(|i| i.set(inline));
}

/// Whether blocking work runs inline on this thread (a simulation's).
pub fn is_inline() -> bool {
    INLINE.with(Cell::get)
}

/// The blocking work panicked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("blocking work panicked")]
pub struct Panicked;

/// Runs `work` on tokio's blocking pool (inline in a simulation, see the module docs)
/// and returns what it returned.
pub async fn run<T, F>(work: F) -> Result<T, Panicked>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    if is_inline() {
        return std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).map_err(|_| Panicked);
    }
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|_| Panicked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn work_runs_on_another_thread_unless_inline() {
        let here = std::thread::current().id();
        let there = run(|| std::thread::current().id()).await.unwrap();
        assert_ne!(there, here);
        set_inline(true);
        let inline = run(|| std::thread::current().id()).await.unwrap();
        assert_eq!(inline, here);
        assert_eq!(run(|| -> u8 { panic!("boom") }).await, Err(Panicked));
        set_inline(false);
        assert!(!is_inline());
    }
}
