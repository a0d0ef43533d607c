//! One partition replica on this broker: its log, its role, and, while it leads, the
//! followers' progress, the high watermark and the acks=all produces waiting for it.
//!
//! Everything here is synchronous and runs under the partition's mutex; the I/O it
//! implies (answering waiting producers, writing the in-sync set to the zookeeper) is
//! done by the callers.

use crate::log::PartitionLog;
use pehra_shared::api::{cbor_response, error_response};
use pehra_shared::coap::Code;
use pehra_shared::driver::Responder;
use pehra_shared::wire::{ErrorKind, PartitionMetadata, ProduceResponse};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::time::Instant;

/// A partition's name: topic and number.
pub(crate) type PartitionKey = (String, u32);

/// One partition this broker holds a replica of.
pub(crate) struct Partition {
    /// The replica's log.
    pub log: PartitionLog,
    /// The partition's state as the zookeeper last said.
    pub meta: PartitionMetadata,
    /// The znode version `meta` was read at (in-sync set changes are conditional on it).
    pub version: u32,
    /// acks=all needs at least this many in-sync replicas.
    pub min_insync: u32,
    /// Offset below which every in-sync replica has every record: consumers read below it.
    pub high_watermark: u64,
    /// The highest high watermark this replica has known: from its checkpoint when it was
    /// opened, from its leader's answers, or its own while it leads. Every record below it
    /// was acknowledged: while the log ends below it the replica may not lead
    /// ([`Partition::ineligible_reason`]), and it is never truncated below it
    /// (unless the operator allows it after an unclean election).
    pub known_hw: u64,
    /// A follower fetched with this newer leader epoch: the partition has a new leader
    /// that the zookeeper has not told us about yet; refuse writes meanwhile.
    pub fenced_by: Option<u32>,
    /// A follower's claim of a newer leader epoch is being checked with the zookeeper
    /// ([`Partition::begin_epoch_check`]).
    pub epoch_check: EpochCheck,
    /// Present while this broker leads the partition.
    pub leader: Option<LeaderState>,
    /// A warm handover of this partition's leadership: its side on this broker.
    pub handover: HandoverSide,
}

/// This broker's part in a warm handover of the partition (see `server::handover`).
#[derive(Default)]
pub(crate) enum HandoverSide {
    /// None under way.
    #[default]
    None,
    /// It leads and hands over: produces are held, not appended, until
    /// the lease is transferred (they go to the new leader) or the handover is rolled
    /// back (they are appended here).
    Holding {
        /// The produces held, in arrival order.
        held: Vec<(pehra_shared::driver::Incoming, Responder)>,
    },
    /// It handed over to `to` at this time: late produces are forwarded there.
    HandedTo {
        /// The new leader.
        to: u32,
        /// When.
        at: Instant,
    },
    /// It is the candidate: a produce that arrives before it knows it leads waits for
    /// the new assignment instead of being refused.
    TakingOver {
        /// Since when.
        since: Instant,
        /// The produces waiting.
        held: Vec<(pehra_shared::driver::Incoming, Responder)>,
    },
}

/// Where the check of a follower's newer-epoch claim stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EpochCheck {
    /// No check under way.
    Idle,
    /// The zookeeper is being asked.
    Pending,
    /// The last claim was refuted: ignore further claims until then.
    HoldOff(Instant),
}

/// What a leader keeps about its partition's followers and producers.
pub(crate) struct LeaderState {
    /// The epoch it leads in.
    pub epoch: u32,
    /// Progress of each follower (by broker id), from its fetches.
    pub followers: BTreeMap<u32, FollowerProgress>,
    /// acks=all produces waiting for the high watermark.
    pub waiters: Vec<AckWaiter>,
    /// An in-sync set change is being written to the zookeeper.
    pub isr_change_pending: bool,
    /// A follower being added to the in-sync set: counted for the high watermark from
    /// the moment the write is sent (Kafka's "maximal ISR", KIP-497). Once the znode
    /// lists it, the controller may elect it, so no record may be acknowledged that it
    /// lacks, even before this leader has seen the write succeed.
    pub adding: Option<u32>,
}

/// A follower's progress as its fetches show it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FollowerProgress {
    /// Its log end offset (the offset of its last fetch), once it has fetched in this epoch.
    pub log_end: Option<u64>,
    /// When it last fetched.
    pub last_fetch_at: Instant,
    /// The leader's log end offset when it last fetched.
    pub leader_end_at_last_fetch: u64,
    /// The last time it had everything the leader had (Kafka's lastCaughtUpTime).
    pub caught_up_at: Instant,
}

/// An acks=all produce waiting until its records are on every in-sync replica.
pub(crate) struct AckWaiter {
    /// Answer once the high watermark reaches this offset.
    pub until: u64,
    /// Give up (5.03) at this time.
    pub deadline: Instant,
    /// Where the answer goes.
    pub responder: Responder,
    /// The answer.
    pub response: ProduceResponse,
}

impl Partition {
    /// A replica opened with state `meta` (read at znode `version`), whose high watermark
    /// was `checkpoint_hw` when last checkpointed.
    pub fn new(
        log: PartitionLog,
        meta: PartitionMetadata,
        version: u32,
        min_insync: u32,
        checkpoint_hw: u64,
    ) -> Self {
        let high_watermark = checkpoint_hw.min(log.log_end_offset());
        Partition {
            log,
            meta,
            version,
            min_insync,
            high_watermark,
            known_hw: checkpoint_hw,
            fenced_by: None,
            epoch_check: EpochCheck::Idle,
            leader: None,
            handover: HandoverSide::None,
        }
    }

    /// Why this replica may not lead now (damage in its log, or a log that ends below the
    /// high watermark it knew), or `None` when it may.
    pub fn ineligible_reason(&self) -> Option<String> {
        let damage: Vec<(u64, u64)> = self
            .log
            .damage()
            .iter()
            .map(|r| (r.first_offset, r.end_offset))
            .collect();
        super::eligibility::ineligible_reason(self.log.log_end_offset(), &damage, self.known_hw)
    }

    /// The high watermark to checkpoint: the highest this replica has known.
    pub fn durable_hw(&self) -> u64 {
        self.known_hw.max(self.high_watermark)
    }

    /// A fetch claimed a newer leader epoch at `now`: whether to start checking it with
    /// the zookeeper (not while a check is under way or in the hold-off after a refuted
    /// claim).
    pub fn begin_epoch_check(&mut self, now: Instant) -> bool {
        match self.epoch_check {
            EpochCheck::Pending => false,
            EpochCheck::HoldOff(until) if now < until => false,
            EpochCheck::Idle | EpochCheck::HoldOff(_) => {
                self.epoch_check = EpochCheck::Pending;
                true
            }
        }
    }

    /// The check ended; with `hold_off`, further claims are ignored until then.
    pub fn end_epoch_check(&mut self, hold_off: Option<Instant>) {
        self.epoch_check = hold_off.map_or(EpochCheck::Idle, EpochCheck::HoldOff);
    }

    /// A newer epoch than ours exists (`epoch`, or at least ours + 1): take no writes
    /// until the zookeeper's new state arrives, and end the check.
    pub fn fence(&mut self, epoch: u32) {
        self.fenced_by = Some(epoch);
        self.epoch_check = EpochCheck::Idle;
        self.step_down("a newer leader epoch exists");
    }

    /// Whether broker `me` may take writes for this partition now.
    pub fn leads(&self, me: u32) -> bool {
        self.meta.leader == Some(me) && self.leader.is_some() && self.fenced_by.is_none()
    }

    /// Takes the zookeeper's new state for the partition. Returns the acks=all produces
    /// that can no longer be answered here (leadership lost), already answered with
    /// `not_leader`, so the producer retries at the new leader.
    pub fn update(
        &mut self,
        me: u32,
        meta: PartitionMetadata,
        version: u32,
        min_insync: u32,
        now: Instant,
    ) {
        if version < self.version && meta.leader_epoch <= self.meta.leader_epoch {
            return; // an older read than the one we have
        }
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
                    // It stays reported as not eligible; a complete replica takes over
                    // once one is back, and the others refuse to truncate to it.
                    tracing::error!(
                        partition = self.meta.partition,
                        epoch = self.meta.leader_epoch,
                        "leading without the acknowledged offsets {end} to {}: they are lost \
                         here unless another replica comes back with them",
                        self.known_hw - 1
                    );
                }
                // A new term: every in-sync follower counts as caught up now, so none is
                // dropped before it had a chance to fetch (Kafka does the same).
                let followers = self
                    .meta
                    .replicas
                    .iter()
                    .filter(|&&r| r != me)
                    .map(|&r| {
                        (
                            r,
                            FollowerProgress {
                                log_end: None,
                                last_fetch_at: now,
                                leader_end_at_last_fetch: self.log.log_end_offset(),
                                caught_up_at: now,
                            },
                        )
                    })
                    .collect();
                self.leader = Some(LeaderState {
                    epoch: self.meta.leader_epoch,
                    followers,
                    waiters: Vec::new(),
                    isr_change_pending: false,
                    adding: None,
                });
                self.high_watermark = self.high_watermark.min(self.log.log_end_offset());
            }
            (false, _) => self.step_down("leadership moved"),
        }
    }

    /// Stops leading: waiting producers are told to go to the new leader.
    pub fn step_down(&mut self, why: &str) {
        if let Some(leader) = self.leader.take() {
            for waiter in leader.waiters {
                waiter.responder.respond(error_response(
                    ErrorKind::NotLeader,
                    &format!(
                        "{why} before the records were replicated: send again to the new leader"
                    ),
                ));
            }
        }
    }

    /// A follower fetched at `offset` in the current epoch. Returns whether it should
    /// now join the in-sync set (it is not in it and has caught up).
    pub fn record_fetch(&mut self, replica: u32, offset: u64, now: Instant) -> bool {
        let leader_end = self.log.log_end_offset();
        let hw = self.high_watermark;
        let Some(leader) = self.leader.as_mut() else {
            return false;
        };
        let progress = leader.followers.entry(replica).or_insert(FollowerProgress {
            log_end: None,
            last_fetch_at: now,
            leader_end_at_last_fetch: leader_end,
            caught_up_at: now,
        });
        if offset >= leader_end {
            progress.caught_up_at = now;
        } else if offset >= progress.leader_end_at_last_fetch {
            progress.caught_up_at = progress.caught_up_at.max(progress.last_fetch_at);
        }
        progress.log_end = Some(offset.min(leader_end));
        progress.last_fetch_at = now;
        progress.leader_end_at_last_fetch = leader_end;
        let epoch_start = self
            .log
            .epoch_start_offsets()
            .iter()
            .find(|(e, _)| *e == leader.epoch)
            .map_or(0, |(_, start)| *start);
        !self.meta.isr.contains(&replica)
            && self.meta.replicas.contains(&replica)
            && offset >= hw
            && offset >= epoch_start
            && !leader.isr_change_pending
    }

    /// The leader is about to append: every follower that has everything so far was
    /// caught up until now (however long ago it last fetched: a dormant PEHRA follower
    /// sends no fetch while nothing is written), so its `lag` starts now.
    pub fn note_append(&mut self, now: Instant) {
        let end = self.log.log_end_offset();
        if let Some(leader) = self.leader.as_mut() {
            for progress in leader.followers.values_mut() {
                if progress.log_end.is_some_and(|e| e >= end) {
                    progress.caught_up_at = now;
                }
            }
        }
    }

    /// When [`Self::lagging_followers`] or [`Self::expire_waiters`] may next find work,
    /// if nothing is written meanwhile: the earliest acks=all deadline, and for each
    /// in-sync follower without every record the moment it will have lagged for `lag`
    /// (now for one that never fetched in this epoch is not known yet). `None`: nothing
    /// can change before a write, a fetch or an assignment change.
    pub fn next_isr_check(&self, me: u32, lag: Duration) -> Option<Instant> {
        let leader = self.leader.as_ref()?;
        let end = self.log.log_end_offset();
        let waiters = leader.waiters.iter().map(|w| w.deadline);
        // Not eligible itself: it drops nobody (see `lagging_followers`).
        let shrinks = self.ineligible_reason().is_none();
        // While an in-sync set change is being written, its outcome is awaited instead.
        let followers = self
            .meta
            .isr
            .iter()
            .filter(|&&r| r != me && !leader.isr_change_pending && shrinks)
            .filter_map(|r| match leader.followers.get(r) {
                Some(p) if p.log_end.is_some_and(|e| e >= end) => None,
                Some(p) => Some(p.caught_up_at + lag),
                // Not a follower of this epoch: `lagging_followers` drops it at once.
                None => Some(Instant::now()),
            });
        waiters.chain(followers).min()
    }

    /// In-sync followers that have not caught up for longer than `lag`. A follower that
    /// has every record the leader has is caught up now, even if it has not fetched for
    /// a while (it sleeps under PEHRA while nothing is written; a write wakes it).
    ///
    /// None while this replica is itself not eligible to lead (it lacks records): then
    /// the in-sync set names who has them, for the controller to elect one once back.
    pub fn lagging_followers(&mut self, me: u32, lag: Duration, now: Instant) -> Vec<u32> {
        if self.ineligible_reason().is_some() {
            return Vec::new();
        }
        let end = self.log.log_end_offset();
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

    /// Moves the high watermark up to what every in-sync replica has, and answers the
    /// acks=all produces it now covers. Returns the new high watermark if it moved.
    pub fn advance_high_watermark(&mut self, me: u32) -> Option<u64> {
        let leader = self.leader.as_mut()?;
        let mut hw = self.log.log_end_offset();
        let in_sync = self.meta.isr.iter().chain(leader.adding.iter());
        for replica in in_sync.filter(|&&r| r != me) {
            match leader.followers.get(replica).and_then(|p| p.log_end) {
                Some(end) => hw = hw.min(end),
                None => return None, // not heard from in this term yet
            }
        }
        if hw <= self.high_watermark {
            return None;
        }
        self.high_watermark = hw;
        self.known_hw = self.known_hw.max(hw);
        let enough = self.meta.isr.len() >= self.min_insync as usize;
        let (done, waiting): (Vec<_>, Vec<_>) =
            leader.waiters.drain(..).partition(|w| w.until <= hw);
        leader.waiters = waiting;
        for waiter in done {
            waiter.responder.respond(if enough {
                cbor_response(Code::CHANGED, &waiter.response)
            } else {
                not_enough_replicas(self.meta.isr.len(), self.min_insync, true)
            });
        }
        Some(hw)
    }

    /// Answers the acks=all produces whose deadline passed with 5.03.
    pub fn expire_waiters(&mut self, now: Instant) {
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
            waiter.responder.respond(error_response(
                ErrorKind::NotEnoughReplicas,
                &format!(
                    "the in-sync replicas ({}) did not confirm offset {} in time: the batch is \
                     written on the leader; send it again (the producer id makes that harmless)",
                    join(&self.meta.isr),
                    waiter.until
                ),
            ));
        }
    }
}

/// The 5.03 for too few in-sync replicas.
pub(crate) fn not_enough_replicas(
    isr: usize,
    min: u32,
    after_append: bool,
) -> pehra_shared::coap::Response {
    error_response(
        ErrorKind::NotEnoughReplicas,
        &if after_append {
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

/// `1,2,3`.
pub(crate) fn join(ids: &[u32]) -> String {
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{BatchMeta, LogConfig};

    const LAG: Duration = Duration::from_secs(5);

    fn leading(dir: &std::path::Path, now: Instant) -> Partition {
        let (log, _) = PartitionLog::open(dir, LogConfig::default()).unwrap();
        let meta = PartitionMetadata {
            partition: 0,
            leader: Some(1),
            leader_epoch: 1,
            replicas: vec![1, 2],
            isr: vec![1, 2],
            elr: Vec::new(),
        };
        let mut p = Partition::new(log, meta.clone(), 0, 1, 0);
        p.update(1, meta, 1, 1, now);
        p
    }

    fn append(p: &mut Partition, now: Instant) {
        p.note_append(now);
        let meta = BatchMeta {
            record_count: 1,
            max_timestamp_ms: 1,
            leader_epoch: 1,
            producer: None,
            base_offset: None,
        };
        p.log.append_batch(b"x", &meta).unwrap();
    }

    #[test]
    fn the_next_isr_check_is_due_only_while_a_follower_lacks_records_or_a_produce_waits() {
        let tmp = tempfile::tempdir().unwrap();
        let t0 = Instant::now();
        let mut p = leading(&tmp.path().join("t-0"), t0);
        // A new term: the follower has not fetched yet; it is dropped if it does not
        // within the lag.
        assert_eq!(p.next_isr_check(1, LAG), Some(t0 + LAG));
        // It has everything: nothing can change until a write.
        p.record_fetch(2, 0, t0);
        assert_eq!(p.next_isr_check(1, LAG), None);
        assert!(p.lagging_followers(1, LAG, t0 + 10 * LAG).is_empty());
        // A write it lacks: due when it will have lagged for LAG.
        let t1 = t0 + Duration::from_secs(1);
        append(&mut p, t1);
        assert_eq!(p.next_isr_check(1, LAG), Some(t1 + LAG));
        assert!(p.lagging_followers(1, LAG, t1 + LAG).is_empty());
        assert_eq!(p.lagging_followers(1, LAG, t1 + LAG * 2), vec![2]);
        // While the change is being written, its outcome is awaited instead.
        p.leader.as_mut().unwrap().isr_change_pending = true;
        assert_eq!(p.next_isr_check(1, LAG), None);
    }

    #[test]
    fn an_epoch_claim_is_checked_once_at_a_time_and_a_refuted_one_holds_off_the_next() {
        let tmp = tempfile::tempdir().unwrap();
        let t0 = Instant::now();
        let mut p = leading(&tmp.path().join("t-0"), t0);
        assert!(p.begin_epoch_check(t0));
        assert!(!p.begin_epoch_check(t0), "one check at a time");
        assert!(p.leads(1), "a claim alone does not fence");
        let hold = t0 + Duration::from_secs(1);
        p.end_epoch_check(Some(hold));
        assert!(!p.begin_epoch_check(t0 + Duration::from_millis(500)));
        assert!(p.begin_epoch_check(hold));
        // Confirmed: fenced until the zookeeper's newer state arrives.
        p.fence(2);
        assert!(!p.leads(1));
        assert_eq!(p.epoch_check, EpochCheck::Idle);
    }
}
