//! The ordered maps of the engine's client path.
//!
//! With the server half (a gateway: thousands of exchanges, observers and timers) they
//! are `BTreeMap`/`BTreeSet`. Without it (a device: a few exchanges with one gateway)
//! they are [`VecMap`]/[`VecSet`], sorted vectors behind the same API, which cost a
//! fraction of the flash of the B-tree code each key/value pair instantiates.

#[cfg(any(not(feature = "server"), test))]
use alloc::vec::Vec;
#[cfg(any(not(feature = "server"), test))]
use core::borrow::Borrow;

#[cfg(any(feature = "server", test))]
pub(super) type Map<K, V> = alloc::collections::BTreeMap<K, V>;
#[cfg(any(feature = "server", test))]
pub(super) type Set<T> = alloc::collections::BTreeSet<T>;
#[cfg(not(any(feature = "server", test)))]
pub(super) type Map<K, V> = VecMap<K, V>;
#[cfg(not(any(feature = "server", test)))]
pub(super) type Set<T> = VecSet<T>;

#[cfg(any(not(feature = "server"), test))]
/// An ordered map on a sorted vector: `O(log n)` lookups, `O(n)` inserts and removals.
/// For the handful of entries a device has.
#[derive(Debug, Clone)]
pub(crate) struct VecMap<K, V> {
    entries: Vec<(K, V)>,
}

#[cfg(any(not(feature = "server"), test))]
impl<K: Ord, V> VecMap<K, V> {
    pub(crate) const fn new() -> Self {
        VecMap {
            entries: Vec::new(),
        }
    }

    fn find<Q: Ord + ?Sized>(&self, key: &Q) -> Result<usize, usize>
    where
        K: Borrow<Q>,
    {
        self.entries.binary_search_by(|(k, _)| k.borrow().cmp(key))
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn get<Q: Ord + ?Sized>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        let i = self.find(key).ok()?;
        Some(&self.entries[i].1)
    }

    pub(crate) fn get_mut<Q: Ord + ?Sized>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
    {
        let i = self.find(key).ok()?;
        Some(&mut self.entries[i].1)
    }

    pub(crate) fn contains_key<Q: Ord + ?Sized>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
    {
        self.find(key).is_ok()
    }

    /// Inserts, returning the value the key had.
    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self.find(&key) {
            Ok(i) => Some(core::mem::replace(&mut self.entries[i].1, value)),
            Err(i) => {
                self.entries.insert(i, (key, value));
                None
            }
        }
    }

    pub(crate) fn remove<Q: Ord + ?Sized>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        let i = self.find(key).ok()?;
        Some(self.entries.remove(i).1)
    }

    /// The entry for `key`, to fill if vacant.
    pub(crate) fn entry(&mut self, key: K) -> Entry<'_, K, V> {
        let at = self.find(&key);
        Entry { map: self, key, at }
    }

    /// The entries in key order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.entries.iter().map(|(k, v)| (k, v))
    }
}

#[cfg(any(not(feature = "server"), test))]
impl<K: Ord, V> Default for VecMap<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(any(not(feature = "server"), test))]
/// A [`VecMap`] entry, as `btree_map::Entry` (only what the engine uses).
pub(crate) struct Entry<'a, K, V> {
    map: &'a mut VecMap<K, V>,
    key: K,
    at: Result<usize, usize>,
}

#[cfg(any(not(feature = "server"), test))]
impl<'a, K, V: Default> Entry<'a, K, V> {
    /// The value, inserting `V::default()` if the key was absent.
    pub(crate) fn or_default(self) -> &'a mut V {
        let i = match self.at {
            Ok(i) => i,
            Err(i) => {
                self.map.entries.insert(i, (self.key, V::default()));
                i
            }
        };
        &mut self.map.entries[i].1
    }
}

#[cfg(any(not(feature = "server"), test))]
/// An ordered set on a sorted vector, as [`VecMap`].
#[derive(Debug, Clone)]
pub(crate) struct VecSet<T> {
    map: VecMap<T, ()>,
}

#[cfg(any(not(feature = "server"), test))]
impl<T: Ord> VecSet<T> {
    pub(crate) const fn new() -> Self {
        VecSet { map: VecMap::new() }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Inserts, returning whether the value was new.
    pub(crate) fn insert(&mut self, value: T) -> bool {
        self.map.insert(value, ()).is_none()
    }

    /// Removes, returning whether the value was there.
    pub(crate) fn remove(&mut self, value: &T) -> bool {
        self.map.remove(value).is_some()
    }

    /// The smallest value.
    pub(crate) fn first(&self) -> Option<&T> {
        self.map.entries.first().map(|(t, _)| t)
    }

    /// Removes and returns the smallest value.
    pub(crate) fn pop_first(&mut self) -> Option<T> {
        if self.map.entries.is_empty() {
            return None;
        }
        Some(self.map.entries.remove(0).0)
    }

    /// The values in order.
    #[cfg(test)]
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.map.iter().map(|(t, _)| t)
    }
}

#[cfg(any(not(feature = "server"), test))]
impl<T: Ord> Default for VecSet<T> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::{VecMap, VecSet};
    use alloc::collections::{BTreeMap, BTreeSet};
    use alloc::vec::Vec;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8, u16),
        Remove(u8),
        Bump(u8),
        PopFirst,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..32, any::<u16>()).prop_map(|(k, v)| Op::Insert(k, v)),
            (0u8..32).prop_map(Op::Remove),
            (0u8..32).prop_map(Op::Bump),
            Just(Op::PopFirst),
        ]
    }

    proptest! {
        /// VecMap and VecSet behave as BTreeMap and BTreeSet under any sequence of the
        /// operations the engine uses.
        #[test]
        fn same_as_btree(ops in proptest::collection::vec(op(), 0..200)) {
            let (mut vm, mut bm) = (VecMap::new(), BTreeMap::new());
            let (mut vs, mut bs) = (VecSet::new(), BTreeSet::new());
            for op in ops {
                match op {
                    Op::Insert(k, v) => {
                        prop_assert_eq!(vm.insert(k, v), bm.insert(k, v));
                        prop_assert_eq!(vs.insert((v, k)), bs.insert((v, k)));
                    }
                    Op::Remove(k) => {
                        prop_assert_eq!(vm.remove(&k), bm.remove(&k));
                        let first = bs.first().copied();
                        if let Some(x) = first {
                            prop_assert_eq!(vs.remove(&x), bs.remove(&x));
                        }
                        prop_assert_eq!(vs.remove(&(0, k)), bs.remove(&(0, k)));
                    }
                    Op::Bump(k) => {
                        // Wrapping, as a value near u16::MAX may be bumped.
                        let v = vm.entry(k).or_default();
                        *v = v.wrapping_add(1);
                        let b = bm.entry(k).or_default();
                        *b = b.wrapping_add(1);
                        prop_assert_eq!(vm.get_mut(&k).copied(), bm.get_mut(&k).copied());
                    }
                    Op::PopFirst => prop_assert_eq!(vs.pop_first(), bs.pop_first()),
                }
                prop_assert_eq!(vm.len(), bm.len());
                prop_assert_eq!(vs.len(), bs.len());
                prop_assert_eq!(vs.first(), bs.first());
                for k in 0..32u8 {
                    prop_assert_eq!(vm.get(&k), bm.get(&k));
                    prop_assert_eq!(vm.contains_key(&k), bm.contains_key(&k));
                }
                let a: Vec<_> = vm.iter().collect();
                let b: Vec<_> = bm.iter().collect();
                prop_assert_eq!(a, b);
                let a: Vec<_> = vs.iter().collect();
                let b: Vec<_> = bs.iter().collect();
                prop_assert_eq!(a, b);
            }
        }
    }
}
