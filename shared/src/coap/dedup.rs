//! Duplicate detection (RFC 7252 §4.5): remembers, per peer and message ID, what was
//! answered, so a retransmitted message gets the same answer and its handler runs once.

use crate::Instant;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;

/// What is known about a message ID seen from a peer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Seen {
    /// Being handled: the request with this engine-local id has no response yet.
    InProgress(u64),
    /// Handled: resend these bytes if the message comes again (`None`: say nothing).
    Answered(Option<Vec<u8>>),
}

/// A bounded, time-limited map from `(peer, message ID)` to [`Seen`].
pub(crate) struct DedupCache<A> {
    entries: BTreeMap<(A, u16), (Instant, Seen)>,
    /// Insertion order with expiry, for eviction; may hold stale keys (checked on pop).
    order: VecDeque<(Instant, A, u16)>,
    capacity: usize,
}

impl<A: Ord + Copy> DedupCache<A> {
    pub(crate) fn new(capacity: usize) -> Self {
        DedupCache {
            entries: BTreeMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// The entry for a message, unless it has expired.
    pub(crate) fn get(&self, now: Instant, peer: A, mid: u16) -> Option<&Seen> {
        match self.entries.get(&(peer, mid)) {
            Some((expires, seen)) if *expires > now => Some(seen),
            _ => None,
        }
    }

    /// Remembers a message until `expires`, forgetting expired entries and, at capacity,
    /// the oldest ones.
    pub(crate) fn insert(&mut self, now: Instant, expires: Instant, peer: A, mid: u16, seen: Seen) {
        self.purge(now);
        while self.entries.len() >= self.capacity {
            if !self.pop_oldest() {
                break;
            }
        }
        self.entries.insert((peer, mid), (expires, seen));
        self.order.push_back((expires, peer, mid));
    }

    /// Updates what is known about a message still remembered.
    pub(crate) fn update(&mut self, peer: A, mid: u16, seen: Seen) {
        if let Some(entry) = self.entries.get_mut(&(peer, mid)) {
            entry.1 = seen;
        }
    }

    /// Forgets entries that expired by `now`.
    pub(crate) fn purge(&mut self, now: Instant) {
        while let Some(&(expires, _, _)) = self.order.front() {
            if expires > now {
                break;
            }
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) -> bool {
        let Some((expires, peer, mid)) = self.order.pop_front() else {
            return false;
        };
        if self
            .entries
            .get(&(peer, mid))
            .is_some_and(|(e, _)| *e == expires)
        {
            self.entries.remove(&(peer, mid));
        }
        true
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_until_expiry_and_stays_bounded() {
        let mut c = DedupCache::<u8>::new(3);
        let t0 = Instant::from_millis(0);
        let exp = Instant::from_millis(100);
        c.insert(t0, exp, 1, 7, Seen::InProgress(1));
        assert_eq!(c.get(t0, 1, 7), Some(&Seen::InProgress(1)));
        assert_eq!(c.get(t0, 2, 7), None);
        c.update(1, 7, Seen::Answered(None));
        assert_eq!(
            c.get(Instant::from_millis(99), 1, 7),
            Some(&Seen::Answered(None))
        );
        assert_eq!(c.get(exp, 1, 7), None, "expired");
        for mid in 0..10 {
            c.insert(t0, exp, 1, mid, Seen::Answered(None));
        }
        assert_eq!(c.len(), 3, "capacity bounds the cache");
        assert!(c.get(t0, 1, 9).is_some() && c.get(t0, 1, 0).is_none());
        c.purge(exp);
        assert_eq!(c.len(), 0);
    }
}
