//! When the core hands a batch of writes to the disk (group commit).
//!
//! The core sends a batch to the log thread as soon as the previous one is durable. With
//! N clients each writing one request at a time, that alone makes batches alternate
//! between one write (the first client back after an answer) and N - 1 (those that came
//! back during its fsync): two fsyncs per N writes. So a batch smaller than the last
//! durable one waits, up to half the last fsync's duration (and at most
//! [`MAX_LINGER`]), for the writers just answered to come back. A write is still
//! answered only after the fsync of its batch; only the moment the batch starts moves.
//!
//! Sans-IO: time comes in, the decision goes out.

use std::time::Duration;
use tokio::time::Instant;

/// The longest a batch waits for more writes.
pub(super) const MAX_LINGER: Duration = Duration::from_millis(2);

/// The group-commit policy: whether a batch goes to the disk now.
#[derive(Debug, Default)]
pub(super) struct GroupCommit {
    /// Writes in the last durable batch: how many are likely to come back.
    expected: usize,
    /// How long a smaller batch may wait: half the last fsync, at most [`MAX_LINGER`].
    linger: Duration,
    /// When the batch being built goes anyway, once it has waited.
    deadline: Option<Instant>,
}

impl GroupCommit {
    /// A batch of `writes` became durable, `took` after it was handed to the disk.
    pub(super) fn on_durable(&mut self, writes: usize, took: Duration) {
        self.expected = writes;
        self.linger = (took / 2).min(MAX_LINGER);
        self.deadline = None;
    }

    /// Whether a batch of `pending` writes goes to the disk at `now`. If not, it does at
    /// [`Self::deadline`] at the latest.
    pub(super) fn flush_now(&mut self, now: Instant, pending: usize) -> bool {
        if pending >= self.expected || self.linger.is_zero() {
            self.deadline = None;
            return true;
        }
        let deadline = *self.deadline.get_or_insert(now + self.linger);
        if now >= deadline {
            self.deadline = None;
            return true;
        }
        false
    }

    /// When the batch being built goes to the disk whatever comes, if it is waiting.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.deadline
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYNC: Duration = Duration::from_millis(3);

    #[test]
    fn the_first_batch_goes_at_once() {
        let mut gc = GroupCommit::default();
        assert!(gc.flush_now(Instant::now(), 1));
        assert_eq!(gc.deadline(), None);
    }

    #[test]
    fn a_smaller_batch_waits_for_the_writers_just_answered() {
        let t0 = Instant::now();
        let mut gc = GroupCommit::default();
        gc.on_durable(16, SYNC);
        // The first writer back: wait for the other 15 (half the fsync at most).
        assert!(!gc.flush_now(t0, 1));
        assert_eq!(gc.deadline(), Some(t0 + SYNC / 2));
        assert!(!gc.flush_now(t0 + Duration::from_micros(100), 15));
        // All 16 back: it goes, before the deadline.
        assert!(gc.flush_now(t0 + Duration::from_micros(200), 16));
        assert_eq!(gc.deadline(), None);
    }

    #[test]
    fn a_batch_goes_at_its_deadline_whoever_is_missing() {
        let t0 = Instant::now();
        let mut gc = GroupCommit::default();
        gc.on_durable(16, SYNC);
        assert!(!gc.flush_now(t0, 3));
        // The deadline is set by the first wait, not pushed back by later arrivals.
        assert!(!gc.flush_now(t0 + SYNC / 4, 4));
        assert_eq!(gc.deadline(), Some(t0 + SYNC / 2));
        assert!(gc.flush_now(t0 + SYNC / 2, 4));
        // The next batch expects only as many as this one had.
        gc.on_durable(4, SYNC);
        assert!(gc.flush_now(t0 + SYNC, 4));
    }

    #[test]
    fn the_wait_is_bounded_by_max_linger() {
        let t0 = Instant::now();
        let mut gc = GroupCommit::default();
        gc.on_durable(16, Duration::from_secs(1)); // a very slow disk
        assert!(!gc.flush_now(t0, 1));
        assert_eq!(gc.deadline(), Some(t0 + MAX_LINGER));
    }

    #[test]
    fn an_instant_sync_means_no_wait() {
        let mut gc = GroupCommit::default();
        gc.on_durable(16, Duration::ZERO);
        assert!(gc.flush_now(Instant::now(), 1));
    }
}
