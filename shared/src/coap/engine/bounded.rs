//! A map of expiring entries bounded by their total size in bytes, for the state a
//! server keeps on behalf of peers it has not authenticated (Block2 bodies being read,
//! Block1 bodies being received): whatever peers send, it never holds more than its
//! budget.

use crate::Instant;
use alloc::collections::BTreeMap;

/// One entry: the value, its weight in bytes, when it expires, and its age rank.
struct Entry<V> {
    value: V,
    weight: usize,
    expires: Instant,
    rank: u64,
}

/// Expiring entries whose weights add up to at most `max_bytes`.
pub(super) struct BoundedMap<K, V> {
    entries: BTreeMap<K, Entry<V>>,
    /// Keys by age rank, oldest first (for eviction).
    by_age: BTreeMap<u64, K>,
    next_rank: u64,
    bytes: usize,
    max_bytes: usize,
}

impl<K: Ord + Clone, V> BoundedMap<K, V> {
    /// An empty map holding at most `max_bytes`.
    pub(super) fn new(max_bytes: usize) -> Self {
        BoundedMap {
            entries: BTreeMap::new(),
            by_age: BTreeMap::new(),
            next_rank: 0,
            bytes: 0,
            max_bytes,
        }
    }

    /// The total weight held.
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    /// How many entries are held.
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether `extra` more bytes fit without evicting anything.
    pub(super) fn has_room(&self, extra: usize) -> bool {
        self.bytes.saturating_add(extra) <= self.max_bytes
    }

    /// Inserts (or replaces) `key`, evicting the oldest entries until it fits. An entry
    /// heavier than the whole budget is not kept; returns whether it was.
    pub(super) fn insert_evicting(
        &mut self,
        key: K,
        value: V,
        weight: usize,
        expires: Instant,
    ) -> bool {
        self.remove(&key);
        if weight > self.max_bytes {
            return false;
        }
        while !self.has_room(weight) {
            let Some((_, oldest)) = self.by_age.pop_first() else {
                break;
            };
            if let Some(entry) = self.entries.remove(&oldest) {
                self.bytes -= entry.weight;
            }
        }
        let rank = self.next_rank;
        self.next_rank += 1;
        self.by_age.insert(rank, key.clone());
        self.bytes += weight;
        self.entries.insert(
            key,
            Entry {
                value,
                weight,
                expires,
                rank,
            },
        );
        true
    }

    /// The value of `key` if it has not expired by `now`.
    pub(super) fn get(&self, key: &K, now: Instant) -> Option<&V> {
        self.entries
            .get(key)
            .filter(|e| e.expires > now)
            .map(|e| &e.value)
    }

    /// The value of `key` (expired or not), to change it in place with its new weight
    /// and expiry: `change` returns the weight it added. The caller checks
    /// [`BoundedMap::has_room`] first.
    pub(super) fn update<R>(
        &mut self,
        key: &K,
        expires: Instant,
        change: impl FnOnce(&mut V) -> (usize, R),
    ) -> Option<R> {
        let entry = self.entries.get_mut(key)?;
        let (added, result) = change(&mut entry.value);
        entry.weight += added;
        entry.expires = expires;
        self.bytes += added;
        Some(result)
    }

    /// Removes `key`, returning its value (expired or not).
    /// Whether `key` is held (expired or not).
    pub(super) fn contains(&self, key: &K) -> bool {
        self.entries.contains_key(key)
    }

    /// Marks `key` as just used: it expires at `expires` and is evicted last.
    pub(super) fn touch(&mut self, key: &K, expires: Instant) {
        let Some(entry) = self.entries.get_mut(key) else {
            return;
        };
        self.by_age.remove(&entry.rank);
        entry.rank = self.next_rank;
        entry.expires = expires;
        self.next_rank += 1;
        self.by_age.insert(entry.rank, key.clone());
    }

    pub(super) fn remove(&mut self, key: &K) -> Option<V> {
        let entry = self.entries.remove(key)?;
        self.by_age.remove(&entry.rank);
        self.bytes -= entry.weight;
        Some(entry.value)
    }

    /// Drops every entry expired by `now`.
    pub(super) fn purge(&mut self, now: Instant) {
        let expired: alloc::vec::Vec<K> = self
            .entries
            .iter()
            .filter(|(_, e)| e.expires <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in expired {
            self.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Duration;

    #[test]
    fn the_oldest_entries_go_first_and_the_total_never_exceeds_the_budget() {
        let now = Instant::from_millis(0);
        let later = now + Duration::from_secs(60);
        let mut map = BoundedMap::new(100);
        for key in 0..10u32 {
            assert!(map.insert_evicting(key, key, 30, later));
            assert!(map.bytes() <= 100);
        }
        // 30-byte entries, 100 bytes: the last three remain.
        assert_eq!(map.len(), 3);
        assert!(map.get(&6, now).is_none());
        assert_eq!(map.get(&9, now), Some(&9));
        // Heavier than the whole budget: not kept, nothing evicted for it.
        assert!(!map.insert_evicting(99, 99, 101, later));
        assert_eq!(map.len(), 3);
        // Replacing a key frees its old weight first.
        assert!(map.insert_evicting(9, 90, 40, later));
        assert_eq!(map.bytes(), 100);
        assert_eq!(map.remove(&9), Some(90));
        assert_eq!(map.bytes(), 60);
    }

    #[test]
    fn updates_add_weight_and_expired_entries_are_purged() {
        let now = Instant::from_millis(0);
        let mut map = BoundedMap::new(100);
        map.insert_evicting(1u8, 0usize, 10, now + Duration::from_secs(1));
        assert!(map.has_room(90) && !map.has_room(91));
        let grown = map.update(&1, now + Duration::from_secs(2), |v| {
            *v += 1;
            (20, *v)
        });
        assert_eq!(grown, Some(1));
        assert_eq!(map.bytes(), 30);
        map.purge(now + Duration::from_secs(1));
        assert_eq!(map.len(), 1, "its expiry moved on");
        assert!(map.get(&1, now + Duration::from_secs(2)).is_none());
        map.purge(now + Duration::from_secs(2));
        assert_eq!((map.len(), map.bytes()), (0, 0));
    }
}
