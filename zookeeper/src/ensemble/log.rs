//! The Raft log and hard state of one member, durable in the zookeeper's own storage.
//!
//! The records go through a [`Storage`] of their own (`DATA_DIR/raft`): the same
//! segments, CRC per record, fsync per batch and torn-tail recovery as the zookeeper's
//! write-ahead log. Its "zxids" are only a sequence number of Raft records here. Each
//! record is either a run of entries (which replaces every entry from its first index on:
//! Raft may overwrite an uncommitted suffix) or a hard state (which replaces the last
//! one). Recovery replays them in order.
//!
//! A cut of the log ([`RaftLog::compact`], see [`super::member`] for when) is written as a
//! snapshot of the storage: the cut's base, the entries kept and the hard state; the
//! storage then deletes the segments before its previous snapshot, so the log on disk
//! stays about two cuts long.
//!
//! The ensemble's membership (voters and addresses, see [`super::Membership`]) is kept
//! here too: a record each time it changes, and in every cut, so that a restart knows
//! it whatever `--peers` says.

use crate::storage::{RecoveryOptions, Storage, StorageError};
use protobuf::Message as _;
use raft::eraftpb::{Entry, HardState};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// One durable record of the Raft log.
#[derive(Debug, Serialize, Deserialize)]
enum Record {
    /// Entries (protobuf-encoded), contiguous: they replace the log from the first one's
    /// index on.
    Entries(Vec<serde_bytes::ByteBuf>),
    /// The hard state (term, vote, commit).
    HardState {
        /// Current term.
        term: u64,
        /// Vote in that term.
        vote: u64,
        /// Commit index.
        commit: u64,
    },
    /// The membership from now on.
    Membership(super::Membership),
}

/// A cut of the log, as the storage's snapshot holds it.
#[derive(Debug, Serialize, Deserialize)]
struct Cut {
    /// The index and term of the last entry cut.
    base: (u64, u64),
    /// The entries kept (protobuf-encoded), from `base.0 + 1` on.
    entries: Vec<serde_bytes::ByteBuf>,
    /// The hard state at the cut: (term, vote, commit).
    hard_state: (u64, u64, u64),
    /// The membership at the cut (absent in cuts written before membership changes).
    #[serde(default)]
    membership: Option<super::Membership>,
}

/// What was on disk.
#[derive(Debug, Default, Clone)]
pub struct Restored {
    /// The last hard state written.
    pub hard_state: HardState,
    /// Where the log was cut: the index and term of the last entry cut.
    pub base: Option<(u64, u64)>,
    /// The entries, from the one after the cut (index 1 if none) on.
    pub entries: Vec<Entry>,
    /// The membership last written, if any was.
    pub membership: Option<super::Membership>,
}

/// The durable Raft log of a member.
#[derive(Debug)]
pub struct RaftLog {
    storage: Storage,
    next_seq: u64,
    /// The membership last written (written into every cut too).
    membership: Option<super::Membership>,
}

/// Why the Raft log could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RaftLogError {
    /// The storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A record does not decode.
    #[error("raft log record {seq} is damaged: {reason}")]
    Damaged {
        /// Its sequence number.
        seq: u64,
        /// Why.
        reason: String,
    },
}

impl RaftLog {
    /// Opens (creating) the log in `dir` and replays it.
    pub fn open(dir: &Path) -> Result<(RaftLog, Restored), RaftLogError> {
        let (storage, recovery) = Storage::open_with(dir, &RecoveryOptions::default())?;
        let mut restored = Restored::default();
        if let Some((seq, state)) = &recovery.snapshot {
            let damaged = |reason: String| RaftLogError::Damaged { seq: *seq, reason };
            let cut: Cut = pehra_shared::wire::decode(state).map_err(|e| damaged(e.to_string()))?;
            restored.base = Some(cut.base);
            let (term, vote, commit) = cut.hard_state;
            restored.hard_state.term = term;
            restored.hard_state.vote = vote;
            restored.hard_state.commit = commit;
            restored.membership = cut.membership;
            for bytes in &cut.entries {
                restored
                    .entries
                    .push(Entry::parse_from_bytes(bytes).map_err(|e| damaged(e.to_string()))?);
            }
        }
        for (seq, payload) in &recovery.records {
            if payload.is_empty() {
                continue;
            }
            let damaged = |reason: String| RaftLogError::Damaged { seq: *seq, reason };
            let record: Record =
                pehra_shared::wire::decode(payload).map_err(|e| damaged(e.to_string()))?;
            match record {
                Record::Entries(entries) => {
                    for (i, bytes) in entries.iter().enumerate() {
                        let entry =
                            Entry::parse_from_bytes(bytes).map_err(|e| damaged(e.to_string()))?;
                        if i == 0 {
                            restored.entries.retain(|e| e.index < entry.index);
                        }
                        restored.entries.push(entry);
                    }
                }
                Record::HardState { term, vote, commit } => {
                    restored.hard_state.term = term;
                    restored.hard_state.vote = vote;
                    restored.hard_state.commit = commit;
                }
                Record::Membership(membership) => restored.membership = Some(membership),
            }
        }
        let next_seq = storage.last_zxid() + 1;
        let membership = restored.membership.clone();
        Ok((
            RaftLog {
                storage,
                next_seq,
                membership,
            },
            restored,
        ))
    }

    /// Makes entries and a hard state durable (one fsync for both).
    pub fn persist(
        &mut self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
    ) -> Result<(), RaftLogError> {
        if !entries.is_empty() {
            let encoded = entries
                .iter()
                .map(|e| {
                    e.write_to_bytes()
                        .map(serde_bytes::ByteBuf::from)
                        .expect("entries encode")
                })
                .collect();
            self.append(&Record::Entries(encoded))?;
        }
        if let Some(hs) = hard_state {
            self.append(&Record::HardState {
                term: hs.term,
                vote: hs.vote,
                commit: hs.commit,
            })?;
        }
        self.storage.sync()?;
        Ok(())
    }

    /// Replaces the log on disk by a cut: `base` (the last entry cut), the `entries` kept
    /// after it and the `hard_state`. Durable when it returns; older segments go.
    pub fn compact(
        &mut self,
        base: (u64, u64),
        entries: &[Entry],
        hard_state: &HardState,
    ) -> Result<(), RaftLogError> {
        // A record of its own first, so the cut covers a sequence number of its own.
        self.append(&Record::HardState {
            term: hard_state.term,
            vote: hard_state.vote,
            commit: hard_state.commit,
        })?;
        let cut = Cut {
            base,
            entries: entries
                .iter()
                .map(|e| serde_bytes::ByteBuf::from(e.write_to_bytes().expect("entries encode")))
                .collect(),
            hard_state: (hard_state.term, hard_state.vote, hard_state.commit),
            membership: self.membership.clone(),
        };
        let state = pehra_shared::wire::encode(&cut).expect("cuts encode");
        self.storage.snapshot(self.next_seq - 1, &state)?;
        Ok(())
    }

    /// Makes `membership` the durable membership (unless it already is).
    pub fn set_membership(&mut self, membership: &super::Membership) -> Result<(), RaftLogError> {
        if self.membership.as_ref() == Some(membership) {
            return Ok(());
        }
        self.append(&Record::Membership(membership.clone()))?;
        self.storage.sync()?;
        self.membership = Some(membership.clone());
        Ok(())
    }

    fn append(&mut self, record: &Record) -> Result<(), RaftLogError> {
        let bytes = pehra_shared::wire::encode(record).expect("raft records encode");
        self.storage.append(self.next_seq, &bytes)?;
        self.next_seq += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64, data: &[u8]) -> Entry {
        Entry {
            index,
            term,
            data: data.to_vec().into(),
            ..Default::default()
        }
    }

    #[test]
    fn entries_and_hard_state_survive_a_reopen_and_a_suffix_is_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut log, restored) = RaftLog::open(dir.path()).unwrap();
            assert!(restored.entries.is_empty());
            let hs = HardState {
                term: 2,
                vote: 1,
                commit: 1,
                ..Default::default()
            };
            log.persist(
                &[entry(1, 1, b"a"), entry(2, 1, b"b"), entry(3, 1, b"c")],
                Some(&hs),
            )
            .unwrap();
            // A new leader overwrites the uncommitted suffix from index 2.
            log.persist(&[entry(2, 2, b"B")], None).unwrap();
        }
        let (_, restored) = RaftLog::open(dir.path()).unwrap();
        let got: Vec<_> = restored
            .entries
            .iter()
            .map(|e| (e.index, e.term, e.data.to_vec()))
            .collect();
        assert_eq!(got, vec![(1, 1, b"a".to_vec()), (2, 2, b"B".to_vec())]);
        assert_eq!(
            (
                restored.hard_state.term,
                restored.hard_state.vote,
                restored.hard_state.commit
            ),
            (2, 1, 1)
        );
    }

    #[test]
    fn a_cut_replaces_the_log_and_later_records_follow_it() {
        let dir = tempfile::tempdir().unwrap();
        let hs = |commit| HardState {
            term: 3,
            vote: 2,
            commit,
            ..Default::default()
        };
        {
            let (mut log, _) = RaftLog::open(dir.path()).unwrap();
            let entries: Vec<Entry> = (1..=100).map(|i| entry(i, 1 + i / 50, b"x")).collect();
            log.persist(&entries, Some(&hs(100))).unwrap();
            log.compact((97, 2), &entries[97..], &hs(100)).unwrap();
            // After the cut: more entries, one overwriting a kept one.
            log.persist(&[entry(100, 3, b"y"), entry(101, 3, b"z")], Some(&hs(101)))
                .unwrap();
        }
        let (_, restored) = RaftLog::open(dir.path()).unwrap();
        assert_eq!(restored.base, Some((97, 2)));
        let got: Vec<_> = restored
            .entries
            .iter()
            .map(|e| (e.index, e.data.to_vec()))
            .collect();
        assert_eq!(
            got,
            vec![
                (98, b"x".to_vec()),
                (99, b"x".to_vec()),
                (100, b"y".to_vec()),
                (101, b"z".to_vec())
            ]
        );
        assert_eq!(restored.hard_state.commit, 101);
        // A second cut: the segments before the first one are deleted.
        let size_before = dir_size(dir.path());
        {
            let (mut log, restored) = RaftLog::open(dir.path()).unwrap();
            log.compact((100, 3), &restored.entries[3..], &hs(101))
                .unwrap();
        }
        let (_, restored) = RaftLog::open(dir.path()).unwrap();
        assert_eq!(restored.base, Some((100, 3)));
        assert_eq!(restored.entries.len(), 1);
        assert!(
            dir_size(dir.path()) < size_before,
            "the old segments went: {} -> {}",
            size_before,
            dir_size(dir.path())
        );
    }

    #[test]
    fn the_membership_survives_a_reopen_and_a_cut() {
        let dir = tempfile::tempdir().unwrap();
        let membership = |voters: &[u64]| super::super::Membership {
            learners: Vec::new(),
            voters: voters.to_vec(),
            addrs: voters
                .iter()
                .map(|&id| (id, format!("127.0.0.1:{}", 2180 + id)))
                .collect(),
        };
        {
            let (mut log, restored) = RaftLog::open(dir.path()).unwrap();
            assert_eq!(restored.membership, None);
            log.set_membership(&membership(&[1, 2, 3])).unwrap();
            let entries: Vec<Entry> = (1..=10).map(|i| entry(i, 1, b"x")).collect();
            log.persist(&entries, None).unwrap();
            log.set_membership(&membership(&[1, 2, 3, 4])).unwrap();
        }
        let (mut log, restored) = RaftLog::open(dir.path()).unwrap();
        assert_eq!(restored.membership, Some(membership(&[1, 2, 3, 4])));
        // A learner is kept too.
        let with_learner = super::super::Membership {
            learners: vec![5],
            ..membership(&[1, 2, 3, 4])
        };
        log.set_membership(&with_learner).unwrap();
        drop(log);
        let (mut log, restored) = RaftLog::open(dir.path()).unwrap();
        assert_eq!(restored.membership, Some(with_learner.clone()));
        log.set_membership(&membership(&[1, 2, 3, 4])).unwrap();
        // A cut carries it: the records before are gone.
        log.compact((8, 1), &restored.entries[8..], &HardState::default())
            .unwrap();
        drop(log);
        let (_, restored) = RaftLog::open(dir.path()).unwrap();
        assert_eq!(restored.base, Some((8, 1)));
        assert_eq!(restored.membership, Some(membership(&[1, 2, 3, 4])));
    }

    fn dir_size(dir: &Path) -> u64 {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum()
    }
}
