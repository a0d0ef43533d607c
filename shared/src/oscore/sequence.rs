//! The sender sequence number and its persistence across restarts (RFC 8613 §7.2,
//! Appendix B.1.1).

use super::error::OscoreError;
use super::option::MAX_SEQUENCE_NUMBER;

/// How often the mutable parts of a context are written to non-volatile memory
/// (Appendix B.1): the trade-off between flash writes and numbers skipped at a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Persistence {
    /// K of B.1.1: the sender sequence number is stored before using any number evenly
    /// divisible by K (and before the first number used after a restore). At least 1.
    pub sequence_interval: u64,
    /// F of B.1.1: extra numbers skipped after a restart, for stores that may be lost
    /// after they were reported done (write caches). 0 when a store is durable once the
    /// caller has done it — this module asks for every store *before* the message goes
    /// out, so nothing has used a number the store does not cover.
    pub sequence_margin: u64,
    /// The replay window's counterpart of K: the recipient stores its high-water mark
    /// when an accepted Partial IV reaches the last stored value + this (and on the first
    /// accepted one). After a restart everything below the stored value + this is
    /// refused. At least 1; 1 stores every accepted Partial IV and refuses nothing new.
    pub replay_interval: u64,
}

impl Default for Persistence {
    /// K = 32, F = 0, replay interval 32.
    fn default() -> Self {
        Persistence {
            sequence_interval: 32,
            sequence_margin: 0,
            replay_interval: 32,
        }
    }
}

/// A value the caller must write to non-volatile memory (for this context) before it goes
/// on: a [`Persist::SenderSequence`] before the message it came with is sent, a
/// [`Persist::ReplayHighWater`] before the request it came with is acted upon. Restoring a
/// context from the last values written never reuses a nonce nor accepts a replay
/// ([`super::SecurityContext::restore`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persist {
    /// The sender sequence number (SSN1 of B.1.1).
    SenderSequence(u64),
    /// The highest Partial IV accepted from the peer.
    ReplayHighWater(u64),
}

/// The mutable state a context needs back after a restart: the last values the caller
/// wrote for [`Persist`] requests (`None`: none written yet).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PersistedState {
    /// The last [`Persist::SenderSequence`] value written.
    pub sender_sequence: Option<u64>,
    /// The last [`Persist::ReplayHighWater`] value written.
    pub replay_high_water: Option<u64>,
}

/// The sender sequence number: the next Partial IV, and when it must be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SenderSequence {
    next: u64,
    /// K, or `None` when nothing is persisted.
    interval: Option<u64>,
    /// The next number used must be stored first whatever its value (after a restore).
    store_next: bool,
}

impl SenderSequence {
    /// A fresh sequence starting at 0 (§3.2.2). With `persistence`, number 0 is reported
    /// for storing when it is used (it is divisible by K).
    pub fn new(persistence: Option<&Persistence>) -> Self {
        SenderSequence {
            next: 0,
            interval: persistence.map(|p| p.sequence_interval.max(1)),
            store_next: false,
        }
    }

    /// The sequence after a restart (B.1.1): the stored value SSN1 plus K plus F. Nothing
    /// stored at all means the context never sent with persistence on, so it starts at 0.
    /// The first number used is reported for storing, whatever its value.
    pub fn restore(stored: Option<u64>, persistence: &Persistence) -> Self {
        let k = persistence.sequence_interval.max(1);
        let next = match stored {
            Some(s) => s
                .saturating_add(k)
                .saturating_add(persistence.sequence_margin),
            None => 0,
        };
        SenderSequence {
            next,
            interval: Some(k),
            store_next: stored.is_some(),
        }
    }

    /// A sequence that starts at `next` and reports nothing for storing: for a caller
    /// that keeps one persisted ceiling for many contexts (a server whose contexts all
    /// start above every number any of them used before its restart).
    pub fn starting_at(next: u64) -> Self {
        SenderSequence {
            next,
            interval: None,
            store_next: false,
        }
    }

    /// The number the next protected message uses.
    pub fn peek(&self) -> u64 {
        self.next
    }

    /// Takes the next number: the number, and the value to store before using it, if any.
    pub fn take(&mut self) -> Result<(u64, Option<Persist>), OscoreError> {
        let n = self.next;
        if n > MAX_SEQUENCE_NUMBER {
            return Err(OscoreError::SequenceExhausted);
        }
        let persist = match self.interval {
            Some(k) if self.store_next || n.is_multiple_of(k) => Some(Persist::SenderSequence(n)),
            _ => None,
        };
        self.store_next = false;
        self.next = n + 1;
        Ok((n, persist))
    }
}
