//! The Raft log in memory, as raft-rs reads it: raft-rs' [`MemStorage`] plus what it
//! lacks for compaction and snapshots.
//!
//! After a cut ([`LogStore::compact`]) the log starts at some index `first`; Raft still
//! asks for the term of the entry before it (to check a follower's log matches), so the
//! store keeps that one term (the *base*). The ensemble cuts its logs only below what
//! every member has (see `docs/ensemble.md`, "Log compaction"), so only a member that
//! lost its disk (or a new one) needs entries below the cut. For it Raft asks
//! [`LogStore::snapshot`], which has none ready the first time: it notes the want
//! ([`LogStore::take_wanted`]), the member's tree is encoded at a committed index and
//! offered ([`LogStore::offer`]), and the next ask gets it (its data: a
//! [`super::snapshot::SnapshotRef`] the follower pulls the tree by).

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::storage::MemStorage;
use raft::{GetEntriesContext, RaftState, Storage, StorageError};
use std::sync::atomic::{AtomicBool, Ordering};

/// A member's Raft log in memory.
pub struct LogStore {
    mem: MemStorage,
    /// The index and term of the entry just before the first one kept (0, 0: no cut).
    base: (u64, u64),
    /// The snapshot offered: (index, term, data for the `MsgSnapshot`).
    offered: Option<(u64, u64, Vec<u8>)>,
    /// Raft asked for a snapshot that is not offered (yet).
    wanted: AtomicBool,
}

impl LogStore {
    /// A store for the voters `voters` and learners `learners`, holding what the disk held: a cut at `base`
    /// (the entry before the first kept: index, term), then `entries`, then `hard_state`.
    pub fn new(
        voters: &[u64],
        learners: &[u64],
        base: Option<(u64, u64)>,
        entries: &[Entry],
        hard_state: HardState,
    ) -> raft::Result<LogStore> {
        let conf = || ConfState::from((voters.to_vec(), learners.to_vec()));
        let mem = MemStorage::new_with_conf_state(conf());
        {
            let mut core = mem.wl();
            if let Some((index, term)) = base.filter(|&(index, _)| index > 0) {
                let mut snapshot = Snapshot::default();
                let meta = snapshot.mut_metadata();
                meta.index = index;
                meta.term = term;
                meta.set_conf_state(conf());
                core.apply_snapshot(snapshot)?;
            }
            core.append(entries)?;
            core.set_hardstate(hard_state);
        }
        Ok(LogStore {
            mem,
            base: base.unwrap_or((0, 0)),
            offered: None,
            wanted: AtomicBool::new(false),
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

    /// Offers a snapshot of the state machine at `index` (committed and applied, at or
    /// after the entry before the first kept) whose `MsgSnapshot` carries `data`. `false`
    /// (nothing offered) if `index` is outside the log.
    pub fn offer(&mut self, index: u64, data: Vec<u8>) -> bool {
        match self.term(index) {
            Ok(term) if index > 0 => {
                self.offered = Some((index, term, data));
                true
            }
            _ => false,
        }
    }

    /// Whether Raft asked for a snapshot that was not offered since (and forgets it).
    pub fn take_wanted(&self) -> bool {
        self.wanted.swap(false, Ordering::Relaxed)
    }

    /// Withdraws the snapshot offered (the driver forgot its data).
    pub fn withdraw(&mut self) {
        self.offered = None;
    }

    /// Starts the log over from a snapshot received from the leader: the log is empty,
    /// its base the snapshot's index and term. Returns the new base.
    pub fn restore(&mut self, snapshot: Snapshot) -> raft::Result<(u64, u64)> {
        let meta = snapshot.get_metadata();
        let base = (meta.index, meta.term);
        self.mem.wl().apply_snapshot(snapshot)?;
        self.base = base;
        Ok(base)
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

    /// The snapshot offered, if it is recent enough (at or after `request_index`, and
    /// the log goes on from it); else "temporarily unavailable", noting the want.
    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        let first = self.mem.first_index()?;
        if let Some((index, term, data)) = self
            .offered
            .as_ref()
            .filter(|(index, _, _)| *index >= request_index && index + 1 >= first)
        {
            let mut snapshot = Snapshot::default();
            snapshot.set_data(data.clone().into());
            let meta = snapshot.mut_metadata();
            meta.index = *index;
            meta.term = *term;
            meta.set_conf_state(self.mem.initial_state()?.conf_state);
            return Ok(snapshot);
        }
        if !self.wanted.swap(true, Ordering::Relaxed) {
            tracing::info!(
                member = to,
                first,
                "ensemble: member {to} needs entries this member's log no longer holds (a new or emptied member): preparing a snapshot"
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
        let mut store =
            LogStore::new(&[1, 2, 3], &[], None, &entries, HardState::default()).unwrap();
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
        let rebuilt =
            LogStore::new(&[1, 2, 3], &[], Some((6, 2)), &kept, store.hard_state()).unwrap();
        assert_eq!(rebuilt.first_index().unwrap(), 7);
        assert_eq!(rebuilt.last_index().unwrap(), 10);
        assert_eq!(rebuilt.term(6).unwrap(), 2);
        assert_eq!(rebuilt.term(10).unwrap(), 3);
        assert!(rebuilt.snapshot(0, 2).is_err(), "no snapshot is offered");
    }

    #[test]
    fn a_snapshot_is_offered_once_asked_for_and_restores_a_log() {
        let entries: Vec<Entry> = (1..=10).map(|i| entry(i, 1 + i / 5)).collect();
        let mut store =
            LogStore::new(&[1, 2, 3], &[], None, &entries, HardState::default()).unwrap();
        store.compact(7).unwrap();
        assert!(!store.take_wanted());
        assert!(store.snapshot(0, 3).is_err(), "nothing offered yet");
        assert!(store.take_wanted(), "the ask is noted");
        assert!(!store.take_wanted(), "once");
        // Outside the log: not offered.
        assert!(!store.offer(5, b"old".to_vec()));
        assert!(!store.offer(11, b"ahead".to_vec()));
        assert!(store.offer(8, b"tree@8".to_vec()));
        let snapshot = store.snapshot(0, 3).unwrap();
        assert_eq!(snapshot.get_metadata().index, 8);
        assert_eq!(snapshot.get_metadata().term, 2);
        assert_eq!(
            snapshot.get_metadata().get_conf_state().voters,
            vec![1, 2, 3]
        );
        assert_eq!(&snapshot.data[..], b"tree@8");
        // Asked for a later one than offered: prepare again.
        assert!(store.snapshot(9, 3).is_err());
        assert!(store.take_wanted());
        // Cut past the offer: it no longer continues the log.
        store.compact(10).unwrap();
        assert!(store.snapshot(0, 3).is_err());
        store.withdraw();
        // An empty member takes the snapshot: its log starts after it.
        let mut empty = LogStore::new(&[1, 2, 3], &[], None, &[], HardState::default()).unwrap();
        assert_eq!(empty.restore(snapshot).unwrap(), (8, 2));
        assert_eq!(empty.first_index().unwrap(), 9);
        assert_eq!(empty.last_index().unwrap(), 8);
        assert_eq!(empty.term(8).unwrap(), 2);
    }
}
