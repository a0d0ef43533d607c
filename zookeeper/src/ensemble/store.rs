//! The Raft log in memory, as raft-rs reads it: raft-rs' [`MemStorage`] plus what it
//! lacks for compaction.
//!
//! After a cut ([`LogStore::compact`]) the log starts at some index `first`; Raft still
//! asks for the term of the entry before it (to check a follower's log matches), so the
//! store keeps that one term (the *base*). No Raft snapshot is ever offered: a member's
//! state machine is its own tree, durable in its own storage, and the ensemble cuts its
//! logs only below what every member has (see `docs/ensemble.md`, "Log compaction"). A
//! member that needs entries below the cut (its disk was lost) cannot be caught up by
//! Raft; [`LogStore::snapshot`] says so, and it must be rebuilt from another member's
//! data directory.

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::storage::MemStorage;
use raft::{GetEntriesContext, RaftState, Storage, StorageError};
use std::sync::atomic::{AtomicBool, Ordering};

/// A member's Raft log in memory.
pub struct LogStore {
    mem: MemStorage,
    /// The index and term of the entry just before the first one kept (0, 0: no cut).
    base: (u64, u64),
    /// Whether the "needs a snapshot" warning was logged.
    warned: AtomicBool,
}

impl LogStore {
    /// A store for the voters `voters`, holding what the disk held: a cut at `base`
    /// (the entry before the first kept: index, term), then `entries`, then `hard_state`.
    pub fn new(
        voters: &[u64],
        base: Option<(u64, u64)>,
        entries: &[Entry],
        hard_state: HardState,
    ) -> raft::Result<LogStore> {
        let mem = MemStorage::new_with_conf_state((voters.to_vec(), vec![]));
        {
            let mut core = mem.wl();
            if let Some((index, term)) = base.filter(|&(index, _)| index > 0) {
                let mut snapshot = Snapshot::default();
                let meta = snapshot.mut_metadata();
                meta.index = index;
                meta.term = term;
                meta.set_conf_state(ConfState::from((voters.to_vec(), vec![])));
                core.apply_snapshot(snapshot)?;
            }
            core.append(entries)?;
            core.set_hardstate(hard_state);
        }
        Ok(LogStore {
            mem,
            base: base.unwrap_or((0, 0)),
            warned: AtomicBool::new(false),
        })
    }

    /// The in-memory log, for appending and setting the hard state.
    pub fn mem(&self) -> &MemStorage {
        &self.mem
    }

    /// Drops every entry before `first` (which must exist: at most the last index),
    /// keeping the term of the one before it. Returns the new base (index, term), or
    /// `None` if nothing was cut.
    pub fn compact(&mut self, first: u64) -> raft::Result<Option<(u64, u64)>> {
        if first <= self.first_index()? || first > self.last_index()? {
            return Ok(None);
        }
        let base = (first - 1, self.term(first - 1)?);
        self.mem.wl().compact(first)?;
        self.base = base;
        Ok(Some(base))
    }

    /// The entries from `first` on (what a cut at `first` keeps).
    pub fn entries_from(&self, first: u64) -> raft::Result<Vec<Entry>> {
        let last = self.last_index()?;
        if first > last {
            return Ok(Vec::new());
        }
        self.mem
            .entries(first, last + 1, None, GetEntriesContext::empty(false))
    }

    /// The hard state as it stands.
    pub fn hard_state(&self) -> HardState {
        self.mem.rl().hard_state().clone()
    }
}

impl Storage for LogStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        self.mem.initial_state()
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        self.mem.entries(low, high, max_size, context)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx == self.base.0 && idx > 0 {
            return Ok(self.base.1);
        }
        self.mem.term(idx)
    }

    fn first_index(&self) -> raft::Result<u64> {
        self.mem.first_index()
    }

    fn last_index(&self) -> raft::Result<u64> {
        self.mem.last_index()
    }

    /// Never available: see the module docs.
    fn snapshot(&self, _request_index: u64, to: u64) -> raft::Result<Snapshot> {
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::error!(
                member = to,
                first = self.mem.first_index().unwrap_or(0),
                "ensemble: member {to} needs entries this member's log no longer holds (its data directory was lost?): rebuild it from a copy of a healthy member's data directory"
            );
        }
        Err(raft::Error::Store(
            StorageError::SnapshotTemporarilyUnavailable,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            ..Default::default()
        }
    }

    #[test]
    fn a_cut_keeps_the_term_before_the_first_entry_and_survives_a_rebuild() {
        let entries: Vec<Entry> = (1..=10).map(|i| entry(i, 1 + i / 5)).collect();
        let mut store = LogStore::new(&[1, 2, 3], None, &entries, HardState::default()).unwrap();
        assert_eq!(store.compact(7).unwrap(), Some((6, 2)));
        assert_eq!(store.first_index().unwrap(), 7);
        assert_eq!(store.term(6).unwrap(), 2, "the base's term");
        assert!(store.term(5).is_err(), "cut");
        assert_eq!(store.entries_from(7).unwrap().len(), 4);
        // Nothing to cut below the first entry, nor past the last.
        assert_eq!(store.compact(7).unwrap(), None);
        assert_eq!(store.compact(11).unwrap(), None);
        // What the disk holds after the cut rebuilds the same store.
        let kept = store.entries_from(7).unwrap();
        let rebuilt = LogStore::new(&[1, 2, 3], Some((6, 2)), &kept, store.hard_state()).unwrap();
        assert_eq!(rebuilt.first_index().unwrap(), 7);
        assert_eq!(rebuilt.last_index().unwrap(), 10);
        assert_eq!(rebuilt.term(6).unwrap(), 2);
        assert_eq!(rebuilt.term(10).unwrap(), 3);
        assert!(rebuilt.snapshot(0, 2).is_err(), "no snapshot is offered");
    }
}
