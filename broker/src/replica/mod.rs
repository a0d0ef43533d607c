//! One partition replica as a sans-IO state machine, in the style of raft-rs's `RawNode`
//! and quinn-proto: every replication decision of a broker (produce admission, the
//! leader's view of its followers' fetches, the in-sync set, the high watermark, leader
//! epochs, fencing, idempotent producers, min in-sync replicas, and the follower's
//! truncation on divergence) is made here, from inputs given with the time (`handle_*`),
//! and what must be done about it is drained with [`PartitionReplica::poll_action`] and
//! [`PartitionReplica::poll_timeout`]. No clock, no socket, no task: the broker server
//! is the driver (it answers producers, writes in-sync set changes to the zookeeper,
//! wakes followers and consumers), and the tests drive it in virtual time.
//!
//! The log is behind [`ReplicaLog`]; appends go to the page cache synchronously, and the
//! driver makes them durable on its flusher thread (see [`crate::log`]).
//!
//! # The rules
//!
//! - A leader takes a produce only in its epoch (a producer naming another epoch is
//!   fenced), not while a newer epoch is known to exist ([`PartitionReplica::fence`]), and
//!   for acks=all only with at least `min_insync` replicas in sync. An idempotent
//!   producer's retry of one of its last batches gets the first copy's place; an older
//!   sequence is refused; a gapless producer's batch must start where its last ended.
//! - A follower's fetch offset is its log end: the leader takes it as its progress, moves
//!   the high watermark to what every in-sync replica (and one being added) has, and
//!   answers the acks=all produces that covers. A follower that caught up joins the
//!   in-sync set, one that has not caught up for longer than the replica lag leaves it:
//!   both are [`Action::ChangeIsr`], applied only once the driver has written them
//!   ([`PartitionReplica::handle_isr_written`]).
//! - A fetch claiming a newer epoch is checked with the zookeeper
//!   ([`Action::CheckEpoch`]) before the leader steps down: a number in a datagram never
//!   fences a leader by itself.
//! - A follower truncates to where its log diverges from the leader's, never below the
//!   high watermark it knew unless the operator allowed it.

mod leader;
mod log;
#[cfg(test)]
mod tests;

pub use self::log::ReplicaLog;

use crate::log::{BatchMeta, FetchedBatch, LogError, ProducerBatch};
use leader::{AckWaiter, FollowerProgress, LeaderState};
use pehra_shared::time::{Duration, Instant};
use pehra_shared::wire::{
    Acks, EpochEndOffset, ErrorKind, PartitionMetadata, ProduceResponse, ReplicaBatch,
    ReplicaPartitionData,
};
use std::collections::VecDeque;

/// How long after a refuted epoch claim further claims are ignored (an attacker
/// repeating a forged epoch makes at most one zookeeper read per this period).
pub const REFUTED_CLAIM_HOLDOFF: Duration = Duration::from_secs(1);

/// A refusal: what kind, and a one-line explanation for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The error kind on the wire.
    pub kind: ErrorKind,
    /// Why, in one line.
    pub message: String,
}

impl Refusal {
    fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Refusal {
            kind,
            message: message.into(),
        }
    }
}

/// The answer to a produce.
pub type ProduceAnswer = Result<ProduceResponse, Refusal>;

/// A change to a partition's in-sync set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IsrChange {
    /// A follower caught up.
    Add(u32),
    /// Followers fell behind.
    Remove(Vec<u32>),
}

impl IsrChange {
    /// Applies the change to a partition's state as its leader `me` writes it; `false` if
    /// it changes nothing. A follower added to the ISR empties the eligible leader
    /// replicas ([`PartitionMetadata::elr`]): acks=all records may be acknowledged from
    /// now on without them, so they would no longer hold every acknowledged record.
    pub fn apply(&self, meta: &mut PartitionMetadata, me: u32) -> bool {
        match self {
            IsrChange::Add(r) => {
                if !meta.replicas.contains(r) || meta.isr.contains(r) {
                    return false;
                }
                meta.isr.push(*r);
                meta.elr.clear();
                true
            }
            IsrChange::Remove(gone) => {
                let before = meta.isr.len();
                meta.isr.retain(|r| *r == me || !gone.contains(r));
                meta.isr.len() != before
            }
        }
    }
}

/// What the driver must do; drained with [`PartitionReplica::poll_action`].
#[derive(Debug)]
pub enum Action<T> {
    /// Send this answer to the producer behind `token`.
    Answer {
        /// The driver's token for the request.
        token: T,
        /// The answer.
        answer: ProduceAnswer,
    },
    /// An acks=0 produce is done: nothing is sent.
    Discard(T),
    /// New records were appended: wake the followers' waiting fetches and the flusher.
    Appended,
    /// The high watermark moved: consumers may read up to `hw`.
    HighWatermark {
        /// The new high watermark.
        hw: u64,
        /// The log end offset.
        log_end: u64,
    },
    /// Write this change to the partition znode if it still names this broker leader in
    /// `epoch`, then call [`PartitionReplica::handle_isr_written`].
    ChangeIsr {
        /// The epoch the change is made in.
        epoch: u32,
        /// The change.
        change: IsrChange,
    },
    /// Ask the zookeeper whether the partition has an epoch newer than ours (a follower
    /// claimed `claimed`), then call [`PartitionReplica::handle_epoch_check`].
    CheckEpoch {
        /// The follower that claimed it.
        replica: u32,
        /// The epoch it claimed.
        claimed: u32,
    },
    /// Whether this replica may lead changed (see [`PartitionReplica::ineligible_reason`]).
    EligibilityChanged,
    /// The zookeeper's state of the partition is newer than the replica's (a check found
    /// it deposed): read the assignment again.
    ReadAssignment,
}

/// What the zookeeper said about a claimed newer epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EpochCheckOutcome {
    /// The partition znode as the zookeeper holds it now. The replica decides: a newer
    /// epoch or another leader deposed it; still this broker in our epoch refutes the
    /// claim (forged or impossible).
    Read(PartitionMetadata),
    /// The partition znode does not decode.
    Undecodable,
    /// The zookeeper did not answer (the driver asks again).
    Unreachable,
}

/// What came of an [`Action::ChangeIsr`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IsrWritten {
    /// Written: the partition's new state and its znode version.
    Changed(PartitionMetadata, u32),
    /// Not written, and certainly not: nothing to change, or no longer ours to change.
    NotWritten,
    /// Unknown: the write may or may not have happened.
    Failed,
}

/// The replica's settings.
#[derive(Debug, Clone, Copy)]
pub struct ReplicaConfig {
    /// This broker's id.
    pub me: u32,
    /// A follower that has not caught up for longer than this leaves the in-sync set.
    pub replica_lag: Duration,
    /// An acks=all produce not replicated within this is answered 5.03.
    pub ack_timeout: Duration,
    /// Whether a follower may truncate below the high watermark it knew (after an unclean
    /// election, losing acknowledged records).
    pub allow_truncation_below_hw: bool,
}

/// A produce, as the leader's machine needs it.
#[derive(Debug, Clone)]
pub struct Produce<'a> {
    /// The topic (for messages).
    pub topic: &'a str,
    /// The opaque record batch.
    pub batch: &'a [u8],
    /// Records in it (at least 1; the driver checked the batch).
    pub record_count: u32,
    /// When to answer.
    pub acks: Acks,
    /// The leader epoch the producer believes in, if it says.
    pub leader_epoch: Option<u32>,
    /// The idempotent producer's id, if any.
    pub producer_id: Option<u64>,
    /// Its sequence number of the batch's first record.
    pub base_sequence: Option<u32>,
    /// Whether the producer's sequences have no gaps.
    pub gapless: bool,
    /// Append only if the log ends exactly here (compare-and-append).
    pub if_log_end: Option<u64>,
    /// The wall-clock time of the batch, Unix milliseconds.
    pub timestamp_ms: u64,
}

/// What [`PartitionReplica::handle_produce`] did with the batch (for metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Produced {
    /// Appended now.
    New,
    /// A producer's retry of a stored batch: not appended again.
    Duplicate,
    /// Refused: nothing appended.
    Refused,
}

/// A follower's fetch of one partition, as the leader sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerFetch {
    /// The follower.
    pub replica: u32,
    /// The epoch it fetches in.
    pub leader_epoch: u32,
    /// Its log end: where it wants to read from.
    pub offset: u64,
    /// The epoch of its last batch, for the divergence check.
    pub last_fetched_epoch: Option<u32>,
    /// Whether this is the fetch's first look (a held fetch is looked at again when
    /// something is appended; only the first look counts as progress).
    pub first: bool,
}

/// The leader's answer to a [`FollowerFetch`], without the batches (the driver reads
/// them from `read_from`, within its byte budget).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FollowerView {
    /// Why the fetch is refused, if it is.
    pub error: Option<ErrorKind>,
    /// The leader's high watermark.
    pub high_watermark: u64,
    /// The leader's log start.
    pub log_start_offset: u64,
    /// The leader's log end.
    pub log_end_offset: u64,
    /// Where the follower's log diverges: it truncates there.
    pub diverging: Option<EpochEndOffset>,
    /// Read batches from this offset for it, if there is anything to read.
    pub read_from: Option<u64>,
}

/// Where a follower fetches from its leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchPosition {
    /// Its log end.
    pub offset: u64,
    /// The epoch it follows in.
    pub leader_epoch: u32,
    /// The epoch of its last batch.
    pub last_fetched_epoch: Option<u32>,
}

/// Where the check of a follower's newer-epoch claim stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EpochCheck {
    /// No check under way.
    Idle,
    /// The zookeeper is being asked.
    Pending,
    /// The last claim was refuted: ignore further claims until then.
    HoldOff(Instant),
}

/// One partition replica on this broker: its log, its role, and, while it leads, the
/// followers' progress, the high watermark and the acks=all produces waiting for it.
/// `T` is the driver's token for a produce waiting for its answer.
pub struct PartitionReplica<L, T> {
    config: ReplicaConfig,
    log: L,
    /// The partition's state as the zookeeper last said.
    meta: PartitionMetadata,
    /// The znode version `meta` was read at.
    version: u32,
    /// acks=all needs at least this many in-sync replicas.
    min_insync: u32,
    /// Offset below which every in-sync replica has every record.
    high_watermark: u64,
    /// The highest high watermark this replica has known (checkpoint, leader's answers,
    /// its own while it leads): every record below it was acknowledged.
    known_hw: u64,
    /// A newer leader epoch is known to exist: no writes until the zookeeper's new state.
    fenced_by: Option<u32>,
    epoch_check: EpochCheck,
    /// Present while this replica leads.
    leader: Option<LeaderState<T>>,
    actions: VecDeque<Action<T>>,
}

impl<L: ReplicaLog, T> PartitionReplica<L, T> {
    /// A replica opened with state `meta` (read at znode `version`), whose high watermark
    /// was `checkpoint_hw` when last checkpointed. It leads only once
    /// [`handle_assignment`](Self::handle_assignment) says so.
    pub fn new(
        config: ReplicaConfig,
        log: L,
        meta: PartitionMetadata,
        version: u32,
        min_insync: u32,
        checkpoint_hw: u64,
    ) -> Self {
        let high_watermark = checkpoint_hw.min(log.log_end_offset());
        PartitionReplica {
            config,
            log,
            meta,
            version,
            min_insync,
            high_watermark,
            known_hw: checkpoint_hw,
            fenced_by: None,
            epoch_check: EpochCheck::Idle,
            leader: None,
            actions: VecDeque::new(),
        }
    }

    // ---- outputs ----

    /// The next thing the driver must do.
    pub fn poll_action(&mut self) -> Option<Action<T>> {
        self.actions.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) may next find work if nothing else
    /// happens: the earliest acks=all deadline, and for each in-sync follower without
    /// every record the moment it will have lagged too long. `None`: nothing can change
    /// before a write, a fetch or an assignment. A time in the past means now.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let leader = self.leader.as_ref()?;
        let end = self.log.log_end_offset();
        let waiters = leader.waiters.iter().map(|w| w.deadline);
        // Not eligible itself: it drops nobody (see `handle_timeout`).
        let shrinks = self.ineligible_reason().is_none() && !leader.isr_change_pending;
        let me = self.config.me;
        let lag = self.config.replica_lag;
        let followers = self
            .meta
            .isr
            .iter()
            .filter(|&&r| r != me && shrinks)
            .filter_map(|r| match leader.followers.get(r) {
                Some(p) if p.log_end.is_some_and(|e| e >= end) => None,
                Some(p) => Some(p.caught_up_at + lag),
                // Not a follower of this term: dropped at once.
                None => Some(Instant::ZERO),
            });
        waiters.chain(followers).min()
    }

    // ---- inputs ----

    /// The zookeeper's state of the partition (an assignment, or the outcome of a write).
    /// A stale read (older version, no newer epoch) is ignored. Leading in a new epoch
    /// starts a term; leadership lost answers the waiting produces `NotLeader`.
    pub fn handle_assignment(
        &mut self,
        now: Instant,
        meta: PartitionMetadata,
        version: u32,
        min_insync: u32,
    ) {
        if version < self.version && meta.leader_epoch <= self.meta.leader_epoch {
            return;
        }
        let me = self.config.me;
        self.min_insync = min_insync;
        if self.fenced_by.is_some_and(|e| meta.leader_epoch >= e) {
            self.fenced_by = None;
        }
        let leads_now = meta.leader == Some(me);
        let same_term = self
            .leader
            .as_ref()
            .is_some_and(|l| l.epoch == meta.leader_epoch);
        self.meta = meta;
        self.version = version;
        match (leads_now, same_term) {
            (true, true) => {
                if let Some(l) = self.leader.as_mut() {
                    l.isr_change_pending = false;
                    l.adding = None;
                }
            }
            (true, false) => {
                self.step_down("a new leader epoch began");
                let end = self.log.log_end_offset();
                if self.known_hw > end {
                    // Named leader although it lacks acknowledged records: an unclean
                    // election, or the zookeeper still names it from before its restart.
                    tracing::error!(
                        partition = self.meta.partition,
                        epoch = self.meta.leader_epoch,
                        "leading without the acknowledged offsets {end} to {}: they are lost \
                         here unless another replica comes back with them",
                        self.known_hw - 1
                    );
                }
                // A new term: every follower counts as caught up now, so none is dropped
                // before it had a chance to fetch (Kafka does the same).
                let followers = self
                    .meta
                    .replicas
                    .iter()
                    .filter(|&&r| r != me)
                    .map(|&r| (r, FollowerProgress::new(now, end)))
                    .collect();
                self.leader = Some(LeaderState {
                    epoch: self.meta.leader_epoch,
                    followers,
                    waiters: Vec::new(),
                    isr_change_pending: false,
                    adding: None,
                });
                self.high_watermark = self.high_watermark.min(end);
            }
            (false, _) => self.step_down("leadership moved"),
        }
        self.advance_high_watermark();
    }

    /// A produce to this replica, which leads (the driver routed it here). Its answer
    /// comes as [`Action::Answer`] (at once, or for acks=all once replicated or timed out)
    /// or [`Action::Discard`] (acks 0).
    pub fn handle_produce(&mut self, now: Instant, produce: &Produce<'_>, token: T) -> Produced {
        let (response, produced) = match self.append(now, produce) {
            Ok(appended) => appended,
            Err(refusal) => {
                // Refusals are answered whatever the acks (acks 0 only skips the success).
                self.actions.push_back(Action::Answer {
                    token,
                    answer: Err(refusal),
                });
                return Produced::Refused;
            }
        };
        if produced == Produced::New {
            self.actions.push_back(Action::Appended);
        }
        self.advance_high_watermark();
        let until = response.base_offset + u64::from(response.record_count);
        let in_sync = self.meta.isr.len();
        // A duplicate gets the answer its original would get now: "ok" for acks=all only
        // once it is committed with enough replicas in sync (a new batch was checked
        // against min in-sync before it was written: only a duplicate meets this).
        match produce.acks {
            Acks::All if in_sync < self.min_insync as usize => {
                let refusal = not_enough_replicas(in_sync, self.min_insync, true);
                self.answer(token, Acks::All, Err(refusal));
            }
            Acks::All if self.high_watermark < until => {
                let deadline = now + self.config.ack_timeout;
                match self.leader.as_mut() {
                    Some(leader) => leader.waiters.push(AckWaiter {
                        until,
                        deadline,
                        token,
                        response,
                    }),
                    None => unreachable!("a produce is appended only while leading"),
                }
            }
            acks => self.answer(token, acks, Ok(response)),
        }
        produced
    }

    /// A follower's fetch of this partition. Returns the answer (the driver adds the
    /// batches from [`FollowerView::read_from`]).
    pub fn handle_follower_fetch(&mut self, now: Instant, fetch: FollowerFetch) -> FollowerView {
        let mut view = FollowerView::default();
        let replica = fetch.replica;
        if fetch.leader_epoch > self.meta.leader_epoch && self.leads() {
            // A fetch claims a newer epoch: we may have been deposed. The claim is only a
            // number in a datagram: checked with the zookeeper before stepping down.
            if self.begin_epoch_check(now) {
                self.actions.push_back(Action::CheckEpoch {
                    replica,
                    claimed: fetch.leader_epoch,
                });
            }
        }
        if fetch.leader_epoch != self.meta.leader_epoch || !self.leads() {
            view.error = Some(if fetch.leader_epoch < self.meta.leader_epoch {
                ErrorKind::FencedEpoch
            } else {
                ErrorKind::NotLeader
            });
            return view;
        }
        if !self.meta.replicas.contains(&replica) {
            view.error = Some(ErrorKind::NotFound);
            return view;
        }
        let (start, end) = (self.log.log_start_offset(), self.log.log_end_offset());
        view.log_start_offset = start;
        view.log_end_offset = end;
        if let Some(epoch) = fetch.last_fetched_epoch {
            let diverging = match self.log.end_offset_for_epoch(epoch) {
                Some((found, end_offset)) if found == epoch && end_offset >= fetch.offset => None,
                Some((found, end_offset)) => Some(EpochEndOffset {
                    epoch: found,
                    end_offset,
                }),
                None => Some(EpochEndOffset {
                    epoch,
                    end_offset: start,
                }),
            };
            if diverging.is_some() {
                view.diverging = diverging;
                view.high_watermark = self.high_watermark;
                return view;
            }
        }
        if fetch.offset > end {
            // No follower can have more than the leader once their epochs agree: an
            // offset past our end is refused and not taken as progress (else one datagram
            // could acknowledge records no follower has). It truncates to our end.
            tracing::warn!(
                partition = self.meta.partition,
                replica,
                offset = fetch.offset,
                end,
                "a follower's fetch offset is past the leader's log end: refused"
            );
            view.diverging = Some(EpochEndOffset {
                epoch: self.meta.leader_epoch,
                end_offset: end,
            });
            view.high_watermark = self.high_watermark;
            return view;
        }
        if fetch.first {
            if self.record_fetch(replica, fetch.offset, now) {
                self.begin_adding(replica);
            }
            self.advance_high_watermark();
        }
        view.high_watermark = self.high_watermark;
        if fetch.offset >= start && fetch.offset < end {
            view.read_from = Some(fetch.offset);
        }
        view
    }

    /// Time passed: answers the acks=all produces whose deadline passed (5.03) and drops
    /// in-sync followers that have not caught up for longer than the replica lag.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.expire_waiters(now);
        let lagging = self.lagging_followers(now);
        if lagging.is_empty() {
            return;
        }
        tracing::info!(
            partition = self.meta.partition,
            lagging = %join(&lagging),
            "followers fell behind: leaving the in-sync set"
        );
        if let Some(leader) = self.leader.as_mut() {
            leader.isr_change_pending = true;
            let epoch = leader.epoch;
            self.actions.push_back(Action::ChangeIsr {
                epoch,
                change: IsrChange::Remove(lagging),
            });
        }
    }

    /// The outcome of an [`Action::ChangeIsr`].
    pub fn handle_isr_written(&mut self, now: Instant, written: IsrWritten) {
        let known = !matches!(written, IsrWritten::Failed);
        if let IsrWritten::Changed(meta, version) = written {
            let min_insync = self.min_insync;
            self.handle_assignment(now, meta, version, min_insync);
        }
        if let Some(leader) = self.leader.as_mut() {
            leader.isr_change_pending = false;
            // A refused or pointless addition stops counting; after an error the write may
            // or may not have happened, so the follower keeps counting until the next read
            // of the znode settles it.
            if known {
                leader.adding = None;
            }
        }
        if known {
            self.add_next_caught_up();
        }
    }

    /// The zookeeper's answer to an [`Action::CheckEpoch`]. Returns whether to ask again
    /// (it did not answer).
    pub fn handle_epoch_check(&mut self, now: Instant, outcome: EpochCheckOutcome) -> bool {
        let ours = self.meta.leader_epoch;
        let partition = self.meta.partition;
        match outcome {
            EpochCheckOutcome::Read(meta)
                if meta.leader_epoch > ours || meta.leader != Some(self.config.me) =>
            {
                self.fence(meta.leader_epoch.max(ours + 1));
                self.actions.push_back(Action::ReadAssignment);
                false
            }
            EpochCheckOutcome::Read(_) => {
                tracing::warn!(
                    partition,
                    ours,
                    "a fetch claimed a leader epoch the zookeeper does not know (forged or \
                     impossible): ignored"
                );
                if self.fenced_by == Some(ours + 1) {
                    self.fenced_by = None; // set while the zookeeper did not answer
                }
                self.epoch_check = EpochCheck::HoldOff(now + REFUTED_CLAIM_HOLDOFF);
                false
            }
            EpochCheckOutcome::Undecodable => {
                tracing::error!(partition, "undecodable partition znode");
                self.epoch_check = EpochCheck::Idle;
                false
            }
            EpochCheckOutcome::Unreachable => {
                if self.fenced_by.is_none() {
                    tracing::warn!(
                        partition,
                        ours,
                        "a fetch claimed a newer leader epoch and the zookeeper cannot confirm \
                         ours: fenced until it answers"
                    );
                    self.fenced_by = Some(ours + 1);
                    self.step_down("a newer leader epoch may exist");
                }
                true
            }
        }
    }

    /// Where this replica, following `leader`, fetches from; `None` if it does not
    /// follow that leader. Damage in its log is healed first: cut at the first damaged
    /// offset and fetched again (it may not lead until it has it back).
    pub fn fetch_position(&mut self, leader: u32) -> Option<FetchPosition> {
        if self.meta.leader != Some(leader) || self.leader.is_some() {
            return None;
        }
        if let Some(&(first, _)) = self.log.damaged_offsets().first() {
            self.heal_from(first, leader);
        }
        Some(FetchPosition {
            offset: self.log.log_end_offset(),
            leader_epoch: self.meta.leader_epoch,
            last_fetched_epoch: self.log.last_epoch(),
        })
    }

    /// The leader's answer to this follower's fetch from `asked`: appends its batches, or
    /// truncates where the logs diverge, or starts over at the leader's log start. Returns
    /// whether the follower made progress (an answer for another epoch or position, e.g.
    /// from before a change of leader, is ignored: `Ok(true)`, nothing done).
    pub fn handle_leader_data(
        &mut self,
        leader: u32,
        asked: FetchPosition,
        data: ReplicaPartitionData,
    ) -> Result<bool, LogError> {
        if self.meta.leader != Some(leader)
            || self.meta.leader_epoch != asked.leader_epoch
            || self.leader.is_some()
            || self.log.log_end_offset() != asked.offset
        {
            return Ok(true);
        }
        let was_eligible = self.ineligible_reason().is_none();
        let applied = self.apply_leader_data(asked, data);
        if self.ineligible_reason().is_none() != was_eligible {
            self.actions.push_back(Action::EligibilityChanged);
        }
        applied
    }

    /// A newer epoch than ours exists (`epoch`, or at least ours + 1): take no writes
    /// until the zookeeper's new state arrives.
    pub fn fence(&mut self, epoch: u32) {
        tracing::warn!(
            partition = self.meta.partition,
            ours = self.meta.leader_epoch,
            epoch,
            "a newer leader epoch exists: fenced"
        );
        self.fenced_by = Some(epoch);
        self.epoch_check = EpochCheck::Idle;
        self.step_down("a newer leader epoch exists");
    }

    /// Stops leading: waiting producers are told to go to the new leader.
    pub fn step_down(&mut self, why: &str) {
        if let Some(leader) = self.leader.take() {
            for waiter in leader.waiters {
                let refusal = Refusal::new(
                    ErrorKind::NotLeader,
                    format!(
                        "{why} before the records were replicated: send again to the new leader"
                    ),
                );
                self.actions.push_back(Action::Answer {
                    token: waiter.token,
                    answer: Err(refusal),
                });
            }
        }
    }

    // ---- state ----

    /// Whether this broker may take writes for the partition now.
    pub fn leads(&self) -> bool {
        self.meta.leader == Some(self.config.me)
            && self.leader.is_some()
            && self.fenced_by.is_none()
    }

    /// Whether it has a leader's term (even fenced).
    pub fn in_leader_term(&self) -> bool {
        self.leader.is_some()
    }

    /// The epoch of its leader's term, if it has one.
    pub fn term_epoch(&self) -> Option<u32> {
        self.leader.as_ref().map(|l| l.epoch)
    }

    /// A follower's log end as its last fetch in this term showed it (while leading).
    pub fn follower_log_end(&self, replica: u32) -> Option<u64> {
        self.leader.as_ref()?.followers.get(&replica)?.log_end
    }

    /// The partition's state as the zookeeper last said.
    pub fn meta(&self) -> &PartitionMetadata {
        &self.meta
    }

    /// The znode version of [`meta`](Self::meta).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The min in-sync replicas for acks=all.
    pub fn min_insync(&self) -> u32 {
        self.min_insync
    }

    /// Offset below which every in-sync replica has every record.
    pub fn high_watermark(&self) -> u64 {
        self.high_watermark
    }

    /// The high watermark to checkpoint: the highest this replica has known.
    pub fn durable_hw(&self) -> u64 {
        self.known_hw.max(self.high_watermark)
    }

    /// The newer epoch that fences it, if one does.
    pub fn fenced_by(&self) -> Option<u32> {
        self.fenced_by
    }

    /// The log.
    pub fn log(&self) -> &L {
        &self.log
    }

    /// The log, for the driver's upkeep (flush, retention, scrubbing).
    pub fn log_mut(&mut self) -> &mut L {
        &mut self.log
    }

    /// Why this replica may not lead now (damage in its log, or a log that ends below the
    /// high watermark it knew), or `None` when it may.
    pub fn ineligible_reason(&self) -> Option<String> {
        ineligible_reason(
            self.log.log_end_offset(),
            &self.log.damaged_offsets(),
            self.known_hw,
        )
    }

    // ---- decisions ----

    /// Admits and appends a produce, or refuses it.
    fn append(
        &mut self,
        now: Instant,
        produce: &Produce<'_>,
    ) -> Result<(ProduceResponse, Produced), Refusal> {
        if !self.leads() {
            return Err(Refusal::new(
                ErrorKind::NotLeader,
                format!("broker {} does not lead this partition now", self.config.me),
            ));
        }
        if let Some(epoch) = produce.leader_epoch {
            if epoch != self.meta.leader_epoch {
                return Err(Refusal::new(
                    ErrorKind::FencedEpoch,
                    format!(
                        "leader epoch {epoch} is not the current {}",
                        self.meta.leader_epoch
                    ),
                ));
            }
        }
        if produce.producer_id == Some(u64::MAX) {
            return Err(Refusal::new(
                ErrorKind::Malformed,
                "producer id 18446744073709551615 (u64::MAX) is reserved",
            ));
        }
        let producer =
            produce
                .producer_id
                .zip(produce.base_sequence)
                .map(|(producer_id, base_sequence)| ProducerBatch {
                    producer_id,
                    base_sequence,
                });
        if let Some(producer) = producer {
            if let Some(stored) = self.check_sequence(producer, produce.gapless)? {
                return Ok((stored, Produced::Duplicate));
            }
        }
        if let Some(end) = produce.if_log_end {
            let now_end = self.log.log_end_offset();
            if end != now_end {
                return Err(Refusal::new(
                    ErrorKind::VersionMismatch,
                    format!(
                        "the log of {}/{} ends at {now_end}, not {end}: not appended",
                        produce.topic, self.meta.partition
                    ),
                ));
            }
        }
        let in_sync = self.meta.isr.len();
        if produce.acks == Acks::All && in_sync < self.min_insync as usize {
            return Err(not_enough_replicas(in_sync, self.min_insync, false));
        }
        let epoch = self.meta.leader_epoch;
        let meta = BatchMeta {
            record_count: produce.record_count,
            max_timestamp_ms: produce.timestamp_ms,
            leader_epoch: epoch,
            producer,
            base_offset: None,
        };
        self.note_append(now);
        let info = self.log.append_batch(produce.batch, &meta).map_err(|e| {
            tracing::error!(topic = %produce.topic, partition = self.meta.partition, error = %e, "append failed");
            let me = self.config.me;
            match e {
                LogError::StorageFull { .. } => Refusal::new(
                    ErrorKind::Busy,
                    format!(
                        "{e} (broker {me}): the batch was not stored; produce is refused until \
                         space is freed, fetches go on"
                    ),
                ),
                e => Refusal::new(
                    ErrorKind::Internal,
                    format!("append failed on broker {me}: {e}"),
                ),
            }
        })?;
        Ok((
            ProduceResponse {
                base_offset: info.base_offset,
                record_count: produce.record_count,
                leader_epoch: epoch,
            },
            Produced::New,
        ))
    }

    /// Checks an idempotent producer's batch against the batches of it the log
    /// remembers: `Some` place for a retry of one of its last batches (not to be written
    /// again), an error for a stale copy of an older batch, or (for a gapless producer) a
    /// batch that does not start where its last stored batch ended.
    fn check_sequence(
        &self,
        producer: ProducerBatch,
        gapless: bool,
    ) -> Result<Option<ProduceResponse>, Refusal> {
        let id = producer.producer_id;
        if let Some(stored) = self.log.producer_batch(id, producer.base_sequence) {
            return Ok(Some(ProduceResponse {
                base_offset: stored.base_offset,
                record_count: stored.record_count,
                leader_epoch: stored.leader_epoch,
            }));
        }
        let last = self.log.last_producer_batch(id);
        if let Some(last) = last {
            if producer.base_sequence < last.base_sequence {
                // A copy of an older batch arriving late: the producer already moved on,
                // so it was stored or given up on. Never store it now, out of order.
                return Err(Refusal::new(
                    ErrorKind::Malformed,
                    format!(
                        "producer {id} sequence {} is older than its last stored batch ({}): \
                         a stale duplicate, not stored",
                        producer.base_sequence, last.base_sequence
                    ),
                ));
            }
        }
        if gapless {
            let expected = last.map_or(0, |l| l.base_sequence.wrapping_add(l.record_count));
            if producer.base_sequence != expected {
                return Err(Refusal::new(
                    ErrorKind::OutOfOrderSequence,
                    format!(
                        "producer {id} sequence {} is not the next one ({expected}): an \
                         earlier batch is not stored yet; send this one again after it",
                        producer.base_sequence
                    ),
                ));
            }
        }
        Ok(None)
    }

    /// Queues the answer to a produce (nothing for acks 0).
    fn answer(&mut self, token: T, acks: Acks, answer: ProduceAnswer) {
        self.actions.push_back(match acks {
            Acks::None => Action::Discard(token),
            _ => Action::Answer { token, answer },
        });
    }

    /// Where this leader's epoch begins in its log (0 if it wrote nothing in it yet).
    fn epoch_start(&self) -> u64 {
        self.leader.as_ref().map_or(0, |leader| {
            self.log
                .epoch_start_offsets()
                .iter()
                .find(|(e, _)| *e == leader.epoch)
                .map_or(0, |(_, start)| *start)
        })
    }

    /// Whether a follower last seen at `offset` may join the in-sync set: a replica not
    /// in it that has every committed record of this epoch.
    fn may_join(&self, replica: u32, offset: u64) -> bool {
        !self.meta.isr.contains(&replica)
            && self.meta.replicas.contains(&replica)
            && offset >= self.high_watermark
            && offset >= self.epoch_start()
    }

    /// An in-sync set change just settled: a follower that caught up while it was being
    /// written (its fetch came while the change was pending, so it was not added then)
    /// is added now, from the progress its last fetch showed, rather than at its next
    /// fetch (which an idle leader holds for up to 30 s).
    fn add_next_caught_up(&mut self) {
        let Some(leader) = self.leader.as_ref() else {
            return;
        };
        if leader.isr_change_pending || leader.adding.is_some() {
            return;
        }
        let next = leader
            .followers
            .iter()
            .filter_map(|(&r, p)| Some((r, p.log_end?)))
            .find(|&(r, end)| self.may_join(r, end))
            .map(|(r, _)| r);
        if let Some(replica) = next {
            self.begin_adding(replica);
        }
    }

    /// Asks for `replica` to be added to the in-sync set (one change at a time).
    fn begin_adding(&mut self, replica: u32) {
        if let Some(leader) = self.leader.as_mut() {
            leader.isr_change_pending = true;
            leader.adding = Some(replica);
            let epoch = leader.epoch;
            self.actions.push_back(Action::ChangeIsr {
                epoch,
                change: IsrChange::Add(replica),
            });
        }
    }

    /// A follower fetched at `offset` in the current epoch. Returns whether it should
    /// now join the in-sync set (it is not in it and has caught up).
    fn record_fetch(&mut self, replica: u32, offset: u64, now: Instant) -> bool {
        let leader_end = self.log.log_end_offset();
        let may_join = self.may_join(replica, offset);
        let Some(leader) = self.leader.as_mut() else {
            return false;
        };
        let progress = leader
            .followers
            .entry(replica)
            .or_insert(FollowerProgress::new(now, leader_end));
        if offset >= leader_end {
            progress.caught_up_at = now;
        } else if offset >= progress.leader_end_at_last_fetch {
            progress.caught_up_at = progress.caught_up_at.max(progress.last_fetch_at);
        }
        progress.log_end = Some(offset.min(leader_end));
        progress.last_fetch_at = now;
        progress.leader_end_at_last_fetch = leader_end;
        may_join && !leader.isr_change_pending
    }

    /// The leader is about to append: every follower that has everything so far was
    /// caught up until now (however long ago it last fetched: a dormant PEHRA follower
    /// sends no fetch while nothing is written), so its lag starts now.
    fn note_append(&mut self, now: Instant) {
        let end = self.log.log_end_offset();
        if let Some(leader) = self.leader.as_mut() {
            for progress in leader.followers.values_mut() {
                if progress.log_end.is_some_and(|e| e >= end) {
                    progress.caught_up_at = now;
                }
            }
        }
    }

    /// In-sync followers that have not caught up for longer than the lag. One that has
    /// every record is caught up now, even if it has not fetched for a while (it sleeps
    /// under PEHRA while nothing is written). None while this replica is itself not
    /// eligible to lead: then the in-sync set names who has the records.
    fn lagging_followers(&mut self, now: Instant) -> Vec<u32> {
        if self.ineligible_reason().is_some() {
            return Vec::new();
        }
        let end = self.log.log_end_offset();
        let (me, lag) = (self.config.me, self.config.replica_lag);
        let Some(leader) = self.leader.as_mut() else {
            return Vec::new();
        };
        for progress in leader.followers.values_mut() {
            if progress.log_end.is_some_and(|e| e >= end) {
                progress.caught_up_at = now;
            }
        }
        if leader.isr_change_pending {
            return Vec::new();
        }
        self.meta
            .isr
            .iter()
            .copied()
            .filter(|&r| r != me)
            .filter(|r| {
                leader
                    .followers
                    .get(r)
                    .is_none_or(|p| now.saturating_duration_since(p.caught_up_at) > lag)
            })
            .collect()
    }

    /// Moves the high watermark up to what every in-sync replica has, answers the acks=all
    /// produces it now covers, and says so ([`Action::HighWatermark`]).
    fn advance_high_watermark(&mut self) {
        let me = self.config.me;
        let Some(leader) = self.leader.as_mut() else {
            return;
        };
        let mut hw = self.log.log_end_offset();
        let in_sync = self.meta.isr.iter().chain(leader.adding.iter());
        for replica in in_sync.filter(|&&r| r != me) {
            match leader.followers.get(replica).and_then(|p| p.log_end) {
                Some(end) => hw = hw.min(end),
                None => return, // not heard from in this term yet
            }
        }
        if hw <= self.high_watermark {
            return;
        }
        self.high_watermark = hw;
        self.known_hw = self.known_hw.max(hw);
        let in_sync = self.meta.isr.len();
        let enough = in_sync >= self.min_insync as usize;
        let (done, waiting): (Vec<_>, Vec<_>) =
            leader.waiters.drain(..).partition(|w| w.until <= hw);
        leader.waiters = waiting;
        for waiter in done {
            let answer = if enough {
                Ok(waiter.response)
            } else {
                Err(not_enough_replicas(in_sync, self.min_insync, true))
            };
            self.actions.push_back(Action::Answer {
                token: waiter.token,
                answer,
            });
        }
        self.actions.push_back(Action::HighWatermark {
            hw,
            log_end: self.log.log_end_offset(),
        });
    }

    /// Answers the acks=all produces whose deadline passed with 5.03.
    fn expire_waiters(&mut self, now: Instant) {
        let Some(leader) = self.leader.as_mut() else {
            return;
        };
        if leader.waiters.iter().all(|w| w.deadline > now) {
            return;
        }
        let (expired, waiting): (Vec<_>, Vec<_>) =
            leader.waiters.drain(..).partition(|w| w.deadline <= now);
        leader.waiters = waiting;
        for waiter in expired {
            let refusal = Refusal::new(
                ErrorKind::NotEnoughReplicas,
                format!(
                    "the in-sync replicas ({}) did not confirm offset {} in time: the batch is \
                     written on the leader; send it again (the producer id makes that harmless)",
                    join(&self.meta.isr),
                    waiter.until
                ),
            );
            self.actions.push_back(Action::Answer {
                token: waiter.token,
                answer: Err(refusal),
            });
        }
    }

    /// A fetch claimed a newer leader epoch: whether to start checking it with the
    /// zookeeper (not while a check is under way or in the hold-off after a refuted one).
    fn begin_epoch_check(&mut self, now: Instant) -> bool {
        match self.epoch_check {
            EpochCheck::Pending => false,
            EpochCheck::HoldOff(until) if now < until => false,
            EpochCheck::Idle | EpochCheck::HoldOff(_) => {
                self.epoch_check = EpochCheck::Pending;
                true
            }
        }
    }

    /// Cuts the log at its first damaged offset `first`, to fetch the rest again.
    fn heal_from(&mut self, first: u64, leader: u32) {
        let end = self.log.log_end_offset();
        match self.log.truncate_to(first) {
            Ok(()) => {
                tracing::warn!(
                    partition = self.meta.partition,
                    leader,
                    from = first,
                    to = end,
                    "healing the damaged log: cut at the first damaged offset, fetching offsets \
                     {first} to {end} again from the leader (this replica may not lead until it \
                     has them)"
                );
                self.high_watermark = self.high_watermark.min(first);
                self.actions.push_back(Action::EligibilityChanged);
            }
            Err(e) => tracing::error!(
                partition = self.meta.partition,
                error = %e,
                "cannot cut the damaged log to heal it"
            ),
        }
    }

    /// See [`handle_leader_data`](Self::handle_leader_data).
    fn apply_leader_data(
        &mut self,
        asked: FetchPosition,
        data: ReplicaPartitionData,
    ) -> Result<bool, LogError> {
        let partition = self.meta.partition;
        if let Some(diverging) = data.diverging {
            let ours = self
                .log
                .end_offset_for_epoch(diverging.epoch)
                .map_or(self.log.log_start_offset(), |(_, end)| end);
            let target = diverging.end_offset.min(ours);
            let from = self.log.log_end_offset();
            if target < self.known_hw.min(from) {
                if !self.config.allow_truncation_below_hw {
                    tracing::error!(
                        partition,
                        epoch = diverging.epoch,
                        leader_end = diverging.end_offset,
                        hw = self.known_hw,
                        "refusing to truncate the log to offset {target}, below the high \
                         watermark {} this replica knew: the leader lacks acknowledged records \
                         (an unclean election?); they are kept here. To accept their loss, \
                         restart this broker with --allow-truncation-below-hw",
                        self.known_hw
                    );
                    return Ok(false);
                }
                tracing::warn!(
                    partition,
                    hw = self.known_hw,
                    "truncating below the high watermark to offset {target}, as \
                     --allow-truncation-below-hw allows: acknowledged records are dropped"
                );
                self.known_hw = target;
            }
            if target < self.log.log_start_offset() {
                self.log.reset_to(data.log_start_offset)?;
            } else {
                match self.log.truncate_to(target) {
                    Err(LogError::NotBatchBoundary { batch_base, .. }) => {
                        self.log.truncate_to(batch_base)?
                    }
                    other => other?,
                }
            }
            self.high_watermark = self.high_watermark.min(self.log.log_end_offset());
            tracing::info!(
                partition,
                from,
                to = self.log.log_end_offset(),
                epoch = diverging.epoch,
                "log diverged from the leader's: truncated"
            );
            return Ok(true);
        }
        if asked.offset < data.log_start_offset && data.batches.is_empty() {
            tracing::warn!(
                partition,
                ours = asked.offset,
                leader_start = data.log_start_offset,
                "behind the leader's log start (retention): starting over from there"
            );
            self.log.reset_to(data.log_start_offset)?;
            return Ok(true);
        }
        for batch in &data.batches {
            let meta = BatchMeta {
                record_count: batch.record_count,
                max_timestamp_ms: batch.max_timestamp_ms,
                leader_epoch: batch.leader_epoch,
                producer: batch.producer_id.zip(batch.base_sequence).map(
                    |(producer_id, base_sequence)| ProducerBatch {
                        producer_id,
                        base_sequence,
                    },
                ),
                base_offset: Some(batch.base_offset),
            };
            self.log.append_batch(&batch.batch, &meta)?;
        }
        self.high_watermark = data.high_watermark.min(self.log.log_end_offset());
        self.known_hw = self.known_hw.max(data.high_watermark);
        Ok(true)
    }
}

impl From<FetchedBatch> for ReplicaBatch {
    /// A batch read from the leader's log, as a follower's fetch carries it.
    fn from(b: FetchedBatch) -> Self {
        ReplicaBatch {
            base_offset: b.base_offset,
            record_count: b.record_count,
            leader_epoch: b.leader_epoch,
            max_timestamp_ms: b.max_timestamp_ms,
            producer_id: b.producer.map(|p| p.producer_id),
            base_sequence: b.producer.map(|p| p.base_sequence),
            batch: b.bytes,
        }
    }
}

/// The refusal for too few in-sync replicas (before or after the batch was written).
pub fn not_enough_replicas(isr: usize, min: u32, after_append: bool) -> Refusal {
    Refusal::new(
        ErrorKind::NotEnoughReplicas,
        if after_append {
            format!(
                "the batch was written, but only {isr} replica(s) are in sync and acks=all needs \
                 {min}: not acknowledged; send it again once replicas are back"
            )
        } else {
            format!(
                "only {isr} replica(s) are in sync and acks=all needs {min} \
                 (min_insync_replicas): refused, nothing written"
            )
        },
    )
}

/// Why a replica whose log ends at `log_end`, with `damage` (first and end offsets of
/// each damaged range), may not lead, having known the high watermark `known_hw`; `None`
/// when it may (KIP-966's spirit: only a replica with every acknowledged record leads).
pub fn ineligible_reason(log_end: u64, damage: &[(u64, u64)], known_hw: u64) -> Option<String> {
    if let Some(&(first, end)) = damage.first() {
        return Some(format!(
            "damaged: offsets {first} to {} of its log fail their checks ({} range(s)); it \
             re-fetches them from the leader",
            end.saturating_sub(1),
            damage.len()
        ));
    }
    (log_end < known_hw).then(|| {
        format!(
            "behind: its log ends at offset {log_end}, below the high watermark {known_hw} it \
             last knew; it catches up from the leader"
        )
    })
}

/// `1,2,3`.
pub fn join(ids: &[u32]) -> String {
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}
