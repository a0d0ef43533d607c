//! Duplicate detection (RFC 7252 §4.5): remembers, per peer and message ID, what was
//! answered, so a retransmitted message gets the same answer and its handler runs once.
//!
//! A message counts as a duplicate only if it is the same datagram (same bytes: a
//! retransmission is byte-identical). A peer that reuses a message ID within
//! EXCHANGE_LIFETIME (any sender above ~265 messages/s does, and a server notifying one
//! observer fast enough wraps its IDs under one token) would otherwise have new messages
//! taken for old ones: a request answered with a stale response, a notification dropped.

use crate::Instant;
use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::hash::Hash;

/// The entries' map. A gateway's holds thousands: a hash map. A device's (no `server`
/// feature) holds a handful: a sorted vector, without hashing code and its random seed
/// (about 3 KiB of a firmware's flash).
#[cfg(any(feature = "server", test))]
type Entries<K, V> = hashbrown::HashMap<K, V>;
#[cfg(not(any(feature = "server", test)))]
type Entries<K, V> = super::engine::map::VecMap<K, V>;

/// What is known about a message ID seen from a peer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Seen {
    /// Being handled: the request with this engine-local id has no response yet.
    #[cfg(any(feature = "server", test))]
    InProgress(u64),
    /// Handled: resend these bytes if the message comes again (`None`: say nothing).
    Answered(Option<Vec<u8>>),
}

struct Entry {
    expires: Instant,
    fingerprint: u64,
    seen: Seen,
}

/// A fingerprint of a datagram: equal for a retransmission, different (but for a chance of
/// about 2^-64) for any other message.
///
/// Gateways (feature `server`) hash with foldhash's quality hasher under a fixed seed: it
/// takes 16 bytes a step, where a byte-at-a-time hash spent ~3 instructions a byte (a
/// third of the engine's cost for a 1 KiB request, and more for a broker's batches). The
/// value only has to agree within one process (the duplicate cache, an ETag that tells
/// versions of a body apart). Devices keep FNV-1a (64-bit): a few instructions of code
/// for their short datagrams, no hasher linked in.
#[cfg(feature = "server")]
pub(crate) fn fingerprint(bytes: &[u8]) -> u64 {
    use core::hash::BuildHasher;
    foldhash::quality::FixedState::with_seed(FINGERPRINT_SEED).hash_one(bytes)
}

/// The fixed seed of [`fingerprint`] on gateways.
#[cfg(feature = "server")]
const FINGERPRINT_SEED: u64 = 0x7065_6872_615f_6670; // "pehra_fp"

/// A fingerprint of a datagram (FNV-1a, 64-bit): equal for a retransmission, different
/// (but for a 2^-64 chance) for any other message.
#[cfg(not(feature = "server"))]
pub(crate) fn fingerprint(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A bounded, time-limited map from `(peer, message ID)` to [`Seen`].
pub(crate) struct DedupCache<A> {
    entries: Entries<(A, u16), Entry>,
    /// Insertion order with expiry, for eviction; may hold stale keys (checked on pop).
    order: VecDeque<(Instant, A, u16)>,
    capacity: usize,
}

impl<A: Hash + Ord + Copy> DedupCache<A> {
    pub(crate) fn new(capacity: usize) -> Self {
        DedupCache {
            entries: Entries::default(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// The entry for a message (same peer, message ID and datagram), unless it expired.
    pub(crate) fn get(&self, now: Instant, peer: A, mid: u16, fingerprint: u64) -> Option<&Seen> {
        match self.entries.get(&(peer, mid)) {
            Some(e) if e.expires > now && e.fingerprint == fingerprint => Some(&e.seen),
            _ => None,
        }
    }

    /// Remembers a message until `expires`, forgetting expired entries and, at capacity,
    /// the oldest ones.
    pub(crate) fn insert(
        &mut self,
        now: Instant,
        expires: Instant,
        (peer, mid, fingerprint): (A, u16, u64),
        seen: Seen,
    ) {
        self.purge(now);
        while self.entries.len() >= self.capacity {
            if !self.pop_oldest() {
                break;
            }
        }
        self.entries.insert(
            (peer, mid),
            Entry {
                expires,
                fingerprint,
                seen,
            },
        );
        self.order.push_back((expires, peer, mid));
    }

    /// Updates what is known about a message still remembered.
    #[cfg(any(feature = "server", test))]
    pub(crate) fn update(&mut self, peer: A, mid: u16, seen: Seen) {
        if let Some(entry) = self.entries.get_mut(&(peer, mid)) {
            entry.seen = seen;
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
            .is_some_and(|e| e.expires == expires)
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
        c.insert(t0, exp, (1, 7, 1), Seen::InProgress(1));
        assert_eq!(c.get(t0, 1, 7, 1), Some(&Seen::InProgress(1)));
        assert_eq!(c.get(t0, 2, 7, 1), None);
        assert_eq!(
            c.get(t0, 1, 7, 2),
            None,
            "a reused message ID is not a duplicate"
        );
        c.update(1, 7, Seen::Answered(None));
        let later = Instant::from_millis(99);
        assert_eq!(c.get(later, 1, 7, 1), Some(&Seen::Answered(None)));
        assert_eq!(c.get(exp, 1, 7, 1), None, "expired");
        for mid in 0..10 {
            c.insert(t0, exp, (1, mid, 0), Seen::Answered(None));
        }
        assert_eq!(c.len(), 3, "capacity bounds the cache");
        assert!(c.get(t0, 1, 9, 0).is_some() && c.get(t0, 1, 0, 0).is_none());
        c.purge(exp);
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn a_fingerprint_tells_any_changed_byte_or_length_apart() {
        let datagram: Vec<u8> = (0..1100u32).map(|i| (i * 31 % 251) as u8).collect();
        let original = fingerprint(&datagram);
        assert_eq!(
            fingerprint(&datagram.clone()),
            original,
            "a copy is a retransmission"
        );
        let mut seen = std::collections::HashSet::new();
        for at in 0..datagram.len() {
            let mut flipped = datagram.clone();
            flipped[at] ^= 1;
            let f = fingerprint(&flipped);
            assert_ne!(f, original, "a flipped bit at byte {at} went unnoticed");
            assert!(
                seen.insert(f),
                "two one-bit changes share a fingerprint (byte {at})"
            );
        }
        for len in 0..datagram.len() {
            assert_ne!(
                fingerprint(&datagram[..len]),
                original,
                "a prefix of {len} bytes"
            );
        }
    }
}
