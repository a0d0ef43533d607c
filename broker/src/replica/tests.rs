//! The replica machine in virtual time: unit checks of its rules, and a three-broker
//! simulation (real on-disk logs, a modelled zookeeper and controller) with loss,
//! duplication and reordering of the fetches and their answers, duplicated produces, and
//! crashes of followers and leaders, after which every acknowledged record must be on
//! the leader, once, where it was acknowledged.

use super::*;
use crate::log::{LogConfig, PartitionLog};
use pehra_shared::wire::ReplicaBatch;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const LAG: Duration = Duration::from_secs(5);
const ACK_TIMEOUT: Duration = Duration::from_secs(2);
const MS: Duration = Duration::from_millis(1);

type Replica = PartitionReplica<PartitionLog, u32>;

fn config(me: u32) -> ReplicaConfig {
    ReplicaConfig {
        me,
        replica_lag: LAG,
        ack_timeout: ACK_TIMEOUT,
        allow_truncation_below_hw: false,
    }
}

fn meta(leader: u32, epoch: u32, isr: &[u32]) -> PartitionMetadata {
    PartitionMetadata {
        partition: 0,
        leader: Some(leader),
        leader_epoch: epoch,
        replicas: vec![1, 2, 3],
        isr: isr.to_vec(),
        elr: Vec::new(),
    }
}

fn open(dir: &Path, me: u32, meta: PartitionMetadata, version: u32, hw: u64) -> Replica {
    let (log, _) = PartitionLog::open(dir, LogConfig::default()).unwrap();
    PartitionReplica::new(config(me), log, meta, version, 2, hw)
}

fn produce(sequence: u32, acks: Acks) -> Produce<'static> {
    Produce {
        topic: "t",
        batch: b"record",
        record_count: 1,
        acks,
        leader_epoch: None,
        producer_id: Some(7),
        base_sequence: Some(sequence),
        gapless: false,
        if_log_end: None,
        timestamp_ms: 1,
    }
}

fn actions(replica: &mut Replica) -> Vec<Action<u32>> {
    std::iter::from_fn(|| replica.poll_action()).collect()
}

/// The answers among `actions`, by token.
fn answers(actions: &[Action<u32>]) -> BTreeMap<u32, ProduceAnswer> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Answer { token, answer } => Some((*token, answer.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn acks_all_is_answered_when_every_in_sync_follower_has_the_batch_and_never_before() {
    let tmp = tempfile::tempdir().unwrap();
    let t0 = Instant::from_millis(1000);
    let mut leader = open(tmp.path(), 1, meta(1, 1, &[1, 2]), 0, 0);
    leader.handle_assignment(t0, meta(1, 1, &[1, 2]), 1, 2);
    assert!(leader.leads());
    let fetch = |offset, first| FollowerFetch {
        replica: 2,
        leader_epoch: 1,
        offset,
        last_fetched_epoch: None,
        first,
    };
    leader.handle_follower_fetch(t0, fetch(0, true));
    assert_eq!(
        leader.handle_produce(t0, &produce(0, Acks::All), 10),
        Produced::New
    );
    let first = actions(&mut leader);
    assert!(answers(&first).is_empty(), "{first:?}");
    assert!(matches!(first[0], Action::Appended));
    // A held fetch looked at again is no progress; the next fetch from offset 1 is.
    let view = leader.handle_follower_fetch(t0, fetch(0, false));
    assert_eq!(view.read_from, Some(0));
    assert!(answers(&actions(&mut leader)).is_empty());
    leader.handle_follower_fetch(t0 + MS, fetch(1, true));
    let done = actions(&mut leader);
    assert_eq!(answers(&done)[&10].as_ref().unwrap().base_offset, 0);
    assert!(done
        .iter()
        .any(|a| matches!(a, Action::HighWatermark { hw: 1, log_end: 1 })));
    // The retry of the same batch gets the same place, written once.
    assert_eq!(
        leader.handle_produce(t0, &produce(0, Acks::All), 11),
        Produced::Duplicate
    );
    assert_eq!(
        answers(&actions(&mut leader))[&11]
            .as_ref()
            .unwrap()
            .base_offset,
        0
    );
    assert_eq!(leader.log().log_end_offset(), 1);
}

/// Two followers catch up together: the second one's fetch comes while the first one's
/// addition is being written, so it is not added then; it is added as soon as that write
/// settles, not at its next fetch (an idle leader holds that one up to 30 s: tests/
/// handover.rs once waited 30 s in vain for a full in-sync set).
#[test]
fn a_follower_that_caught_up_during_another_addition_is_added_after_it() {
    let tmp = tempfile::tempdir().unwrap();
    let t0 = Instant::from_millis(1000);
    let mut leader = open(tmp.path(), 1, meta(1, 1, &[1]), 0, 0);
    leader.handle_assignment(t0, meta(1, 1, &[1]), 1, 2);
    let fetch = |replica| FollowerFetch {
        replica,
        leader_epoch: 1,
        offset: 0,
        last_fetched_epoch: None,
        first: true,
    };
    let adds = |actions: &[Action<u32>]| -> Vec<u32> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::ChangeIsr {
                    change: IsrChange::Add(r),
                    ..
                } => Some(*r),
                _ => None,
            })
            .collect()
    };
    leader.handle_follower_fetch(t0, fetch(2));
    assert_eq!(adds(&actions(&mut leader)), [2]);
    leader.handle_follower_fetch(t0 + MS, fetch(3));
    assert_eq!(
        adds(&actions(&mut leader)),
        Vec::<u32>::new(),
        "one change at a time"
    );
    leader.handle_isr_written(t0 + 2 * MS, IsrWritten::Changed(meta(1, 1, &[1, 2]), 2));
    assert_eq!(
        adds(&actions(&mut leader)),
        [3],
        "the next one, without a fetch"
    );
    leader.handle_isr_written(t0 + 3 * MS, IsrWritten::Changed(meta(1, 1, &[1, 2, 3]), 3));
    assert_eq!(
        adds(&actions(&mut leader)),
        Vec::<u32>::new(),
        "all in sync"
    );
}

#[test]
fn a_produce_is_refused_without_enough_in_sync_replicas_or_in_another_epoch() {
    let tmp = tempfile::tempdir().unwrap();
    let t0 = Instant::from_millis(1000);
    let mut leader = open(tmp.path(), 1, meta(1, 3, &[1]), 0, 0);
    leader.handle_assignment(t0, meta(1, 3, &[1]), 1, 2);
    assert_eq!(
        leader.handle_produce(t0, &produce(0, Acks::All), 1),
        Produced::Refused
    );
    let refused = answers(&actions(&mut leader))
        .remove(&1)
        .unwrap()
        .unwrap_err();
    assert_eq!(refused.kind, ErrorKind::NotEnoughReplicas);
    assert!(refused.message.contains("nothing written"), "{refused:?}");
    let mut stale = produce(0, Acks::Leader);
    stale.leader_epoch = Some(2);
    assert_eq!(leader.handle_produce(t0, &stale, 2), Produced::Refused);
    let fenced = answers(&actions(&mut leader))
        .remove(&2)
        .unwrap()
        .unwrap_err();
    assert_eq!(fenced.kind, ErrorKind::FencedEpoch);
    // acks 0: nothing is sent for a success, but a refusal is still answered.
    assert_eq!(
        leader.handle_produce(t0, &produce(0, Acks::None), 3),
        Produced::New
    );
    assert!(matches!(
        actions(&mut leader).last(),
        Some(Action::Discard(3))
    ));
    assert_eq!(leader.log().log_end_offset(), 1);
}

#[test]
fn the_next_timeout_is_due_only_while_a_follower_lacks_records_or_a_produce_waits() {
    let tmp = tempfile::tempdir().unwrap();
    let t0 = Instant::from_millis(1000);
    let mut p = open(tmp.path(), 1, meta(1, 1, &[1, 2]), 0, 0);
    p.handle_assignment(t0, meta(1, 1, &[1, 2]), 1, 1);
    // A new term: the follower has not fetched yet; it is dropped if it does not within
    // the lag.
    assert_eq!(p.poll_timeout(), Some(t0 + LAG));
    let fetch = |offset| FollowerFetch {
        replica: 2,
        leader_epoch: 1,
        offset,
        last_fetched_epoch: None,
        first: true,
    };
    p.handle_follower_fetch(t0, fetch(0));
    assert_eq!(p.poll_timeout(), None);
    p.handle_timeout(t0 + LAG * 10);
    assert!(actions(&mut p).is_empty(), "nobody lags");
    // A write it lacks: due when it will have lagged for the lag.
    let t1 = t0 + Duration::from_secs(1);
    p.handle_produce(t1, &produce(0, Acks::Leader), 1);
    actions(&mut p);
    assert_eq!(p.poll_timeout(), Some(t1 + LAG));
    p.handle_timeout(t1 + LAG);
    assert!(actions(&mut p).is_empty());
    p.handle_timeout(t1 + LAG * 2);
    let shrink = actions(&mut p);
    assert!(matches!(
        &shrink[..],
        [Action::ChangeIsr { epoch: 1, change: IsrChange::Remove(gone) }] if *gone == [2]
    ));
    // While the change is being written, its outcome is awaited instead...
    assert_eq!(p.poll_timeout(), None);
    // ...but an acks=all produce is due at its ack timeout.
    let t2 = t1 + LAG * 2;
    p.handle_produce(t2, &produce(1, Acks::All), 2);
    assert!(answers(&actions(&mut p)).is_empty());
    assert_eq!(p.poll_timeout(), Some(t2 + ACK_TIMEOUT));
    p.handle_timeout(t2 + ACK_TIMEOUT);
    let expired = answers(&actions(&mut p)).remove(&2).unwrap().unwrap_err();
    assert_eq!(expired.kind, ErrorKind::NotEnoughReplicas);
    p.handle_isr_written(t1 + LAG * 2, IsrWritten::Changed(meta(1, 1, &[1]), 2));
    assert_eq!(p.meta().isr, [1]);
}

#[test]
fn an_epoch_claim_is_checked_once_at_a_time_and_a_refuted_one_holds_off_the_next() {
    let tmp = tempfile::tempdir().unwrap();
    let t0 = Instant::from_millis(1000);
    let mut p = open(tmp.path(), 1, meta(1, 1, &[1, 2]), 0, 0);
    p.handle_assignment(t0, meta(1, 1, &[1, 2]), 1, 1);
    let claim = |at| {
        let fetch = FollowerFetch {
            replica: 2,
            leader_epoch: 5,
            offset: 0,
            last_fetched_epoch: None,
            first: true,
        };
        (at, fetch)
    };
    let checks = |p: &mut Replica| {
        actions(p)
            .iter()
            .filter(|a| matches!(a, Action::CheckEpoch { claimed: 5, .. }))
            .count()
    };
    let (at, fetch) = claim(t0);
    assert_eq!(
        p.handle_follower_fetch(at, fetch).error,
        Some(ErrorKind::NotLeader)
    );
    let (at, fetch) = claim(t0);
    p.handle_follower_fetch(at, fetch);
    assert_eq!(checks(&mut p), 1, "one check at a time");
    assert!(p.leads(), "a claim alone does not fence");
    let still_ours = EpochCheckOutcome::Read(meta(1, 1, &[1, 2]));
    assert!(!p.handle_epoch_check(t0, still_ours));
    let (at, fetch) = claim(t0 + Duration::from_millis(500));
    p.handle_follower_fetch(at, fetch);
    assert_eq!(checks(&mut p), 0, "held off after a refuted claim");
    let (at, fetch) = claim(t0 + REFUTED_CLAIM_HOLDOFF);
    p.handle_follower_fetch(at, fetch);
    assert_eq!(checks(&mut p), 1);
    // The zookeeper does not answer: fenced meanwhile, asked again.
    assert!(p.handle_epoch_check(t0, EpochCheckOutcome::Unreachable));
    assert!(!p.leads());
    let deposed = EpochCheckOutcome::Read(meta(2, 4, &[2]));
    assert!(!p.handle_epoch_check(t0, deposed));
    assert_eq!(p.fenced_by(), Some(4));
    // The new state arrives: fenced no more.
    p.handle_assignment(t0, meta(2, 4, &[2]), 2, 1);
    assert_eq!(p.fenced_by(), None);
}

#[test]
fn a_follower_never_truncates_below_the_high_watermark_it_knew() {
    let tmp = tempfile::tempdir().unwrap();
    let mut follower = open(tmp.path(), 2, meta(1, 1, &[1, 2]), 1, 0);
    let position = follower.fetch_position(1).unwrap();
    let batch = |offset| ReplicaBatch {
        base_offset: offset,
        record_count: 1,
        leader_epoch: 1,
        max_timestamp_ms: 1,
        producer_id: None,
        base_sequence: None,
        batch: b"r".to_vec(),
    };
    let data = |hw, batches, diverging| ReplicaPartitionData {
        topic: "t".into(),
        partition: 0,
        error: None,
        high_watermark: hw,
        log_start_offset: 0,
        log_end_offset: 2,
        diverging,
        batches,
    };
    assert!(follower
        .handle_leader_data(1, position, data(2, vec![batch(0), batch(1)], None))
        .unwrap());
    assert_eq!(
        (follower.log().log_end_offset(), follower.high_watermark()),
        (2, 2)
    );
    // A new leader (unclean) whose log ends at 1 asks it to truncate there: refused.
    follower.handle_assignment(Instant::ZERO, meta(3, 2, &[3]), 2, 1);
    let position = follower.fetch_position(3).unwrap();
    let diverging = Some(EpochEndOffset {
        epoch: 1,
        end_offset: 1,
    });
    assert!(!follower
        .handle_leader_data(3, position, data(1, Vec::new(), diverging))
        .unwrap());
    assert_eq!(
        follower.log().log_end_offset(),
        2,
        "acknowledged records kept"
    );
}

// ---- in-sync set changes as the leader writes them ----

fn isr_meta(isr: &[u32], elr: &[u32]) -> PartitionMetadata {
    PartitionMetadata {
        partition: 0,
        leader: Some(1),
        leader_epoch: 2,
        replicas: vec![1, 2, 3],
        isr: isr.to_vec(),
        elr: elr.to_vec(),
    }
}

#[test]
fn a_follower_back_in_the_isr_empties_the_eligible_leader_replicas() {
    let mut m = isr_meta(&[1], &[2, 3]);
    assert!(IsrChange::Add(3).apply(&mut m, 1));
    assert_eq!(m, isr_meta(&[1, 3], &[]));
    // Nothing to add: nothing changes, the ELR neither.
    let mut m = isr_meta(&[1, 3], &[2]);
    assert!(!IsrChange::Add(3).apply(&mut m, 1));
    assert!(!IsrChange::Add(7).apply(&mut m, 1));
    assert_eq!(m, isr_meta(&[1, 3], &[2]));
}

#[test]
fn the_leader_never_removes_itself_and_a_removal_keeps_the_elr() {
    let mut m = isr_meta(&[1, 2, 3], &[]);
    assert!(IsrChange::Remove(vec![1, 2]).apply(&mut m, 1));
    assert_eq!(m, isr_meta(&[1, 3], &[]));
    let mut m = isr_meta(&[1, 3], &[2]);
    assert!(!IsrChange::Remove(vec![2]).apply(&mut m, 1));
    assert_eq!(m, isr_meta(&[1, 3], &[2]));
}

// ---- the simulation ----

/// Deterministic pseudo-random numbers (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// A message between the leader and a follower, delivered at a time.
#[derive(Clone)]
enum Message {
    Fetch {
        from: u32,
        leader: u32,
        position: FetchPosition,
    },
    Answer {
        to: u32,
        leader: u32,
        position: FetchPosition,
        data: ReplicaPartitionData,
    },
}

struct Broker {
    dir: PathBuf,
    /// `None` while crashed.
    replica: Option<Replica>,
    /// Its fetch in flight was sent at this time.
    fetching_since: Option<Instant>,
}

struct Sim {
    now: Instant,
    rng: Rng,
    brokers: BTreeMap<u32, Broker>,
    /// The partition znode and its version.
    znode: (PartitionMetadata, u32),
    net: Vec<(Instant, Message)>,
    /// The producer's next sequence, and when its request was sent.
    sequence: u32,
    sent_at: Option<Instant>,
    /// Acknowledged sequences and the offsets they were acknowledged at.
    acked: BTreeMap<u32, u64>,
    crashes: u32,
}

impl Sim {
    fn new(root: &Path, seed: u64) -> Sim {
        let znode = (meta(1, 1, &[1, 2, 3]), 1);
        let brokers = (1..=3)
            .map(|id| {
                let dir = root.join(format!("b{id}"));
                let mut replica = open(&dir, id, znode.0.clone(), znode.1, 0);
                replica.handle_assignment(Instant::ZERO, znode.0.clone(), znode.1, 2);
                let broker = Broker {
                    dir,
                    replica: Some(replica),
                    fetching_since: None,
                };
                (id, broker)
            })
            .collect();
        Sim {
            now: Instant::ZERO,
            rng: Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1),
            brokers,
            znode,
            net: Vec::new(),
            sequence: 0,
            sent_at: None,
            acked: BTreeMap::new(),
            crashes: 0,
        }
    }

    fn leader(&self) -> u32 {
        self.znode.0.leader.expect("a leader")
    }

    /// Sends `message` through the network: maybe lost, maybe twice, after 1 to 30 ms.
    fn send(&mut self, message: Message, faults: bool) {
        if faults && self.rng.chance(10) {
            return;
        }
        let copies = if faults && self.rng.chance(5) { 2 } else { 1 };
        for _ in 0..copies {
            let delay = MS * (1 + (self.rng.next() % 30) as u32);
            self.net.push((self.now + delay, message.clone()));
        }
    }

    /// Carries out what broker `id`'s replica asked for: the modelled zookeeper applies
    /// in-sync set changes and answers epoch checks at once; produce answers reach the
    /// producer.
    fn settle(&mut self, id: u32) {
        loop {
            let Some(replica) = self.brokers.get_mut(&id).and_then(|b| b.replica.as_mut()) else {
                return;
            };
            let Some(action) = replica.poll_action() else {
                return;
            };
            match action {
                Action::Answer { token, answer } => {
                    if token == self.sequence && self.sent_at.is_some() {
                        self.sent_at = None;
                        if let Ok(response) = answer {
                            assert_eq!(response.record_count, 1);
                            if let Some(before) = self.acked.insert(token, response.base_offset) {
                                assert_eq!(
                                    before, response.base_offset,
                                    "acknowledged twice, elsewhere"
                                );
                            }
                            self.sequence += 1;
                        }
                    }
                }
                Action::ChangeIsr { epoch, change } => {
                    let (meta, version) = &mut self.znode;
                    let written = if meta.leader == Some(id)
                        && meta.leader_epoch == epoch
                        && change.apply(meta, id)
                    {
                        *version += 1;
                        IsrWritten::Changed(meta.clone(), *version)
                    } else {
                        IsrWritten::NotWritten
                    };
                    replica.handle_isr_written(self.now, written);
                }
                Action::CheckEpoch { .. } => {
                    let znode = EpochCheckOutcome::Read(self.znode.0.clone());
                    replica.handle_epoch_check(self.now, znode);
                }
                Action::Discard(_)
                | Action::Appended
                | Action::HighWatermark { .. }
                | Action::EligibilityChanged
                | Action::ReadAssignment => {}
            }
        }
    }

    /// The zookeeper's new state reaches every live replica.
    fn assign(&mut self) {
        let (meta, version) = self.znode.clone();
        let ids: Vec<u32> = self.brokers.keys().copied().collect();
        for id in ids {
            if let Some(replica) = self.brokers.get_mut(&id).unwrap().replica.as_mut() {
                replica.handle_assignment(self.now, meta.clone(), version, 2);
            }
            self.settle(id);
        }
    }

    /// Crashes broker `id` (its log stays on disk: every append is fdatasynced). The
    /// controller elects another in-sync replica if it led.
    fn crash(&mut self, id: u32) {
        let broker = self.brokers.get_mut(&id).unwrap();
        if broker.replica.take().is_none() {
            return;
        }
        self.crashes += 1;
        let (meta, version) = &mut self.znode;
        let others: Vec<u32> = meta.isr.iter().copied().filter(|&r| r != id).collect();
        if meta.leader == Some(id) && !others.is_empty() {
            let up: Vec<u32> = others
                .iter()
                .copied()
                .filter(|r| self.brokers[r].replica.is_some())
                .collect();
            if let Some(&next) = up.first() {
                meta.leader = Some(next);
                meta.leader_epoch += 1;
                meta.isr = others;
                *version += 1;
            }
        }
        self.assign();
    }

    /// Restarts broker `id` from its directory, with the high watermark it had
    /// checkpointed (here: the log's end, the most a checkpoint can say).
    fn restart(&mut self, id: u32) {
        let broker = self.brokers.get_mut(&id).unwrap();
        if broker.replica.is_some() {
            return;
        }
        let (meta, version) = self.znode.clone();
        broker.replica = Some(open(&broker.dir, id, meta.clone(), version, 0));
        broker.fetching_since = None;
        self.assign();
    }

    /// One millisecond: deliveries, fetches, the producer, timers.
    fn step(&mut self, faults: bool) {
        self.now += MS;
        let leader = self.leader();
        // Deliveries due, in random order.
        let mut due = Vec::new();
        let mut i = 0;
        while i < self.net.len() {
            if self.net[i].0 <= self.now {
                due.push(self.net.swap_remove(i).1);
            } else {
                i += 1;
            }
        }
        while !due.is_empty() {
            let pick = (self.rng.next() % due.len() as u64) as usize;
            let message = due.swap_remove(pick);
            self.deliver(message, faults);
        }
        // Followers fetch (again after an answer, or 200 ms without one).
        let ids: Vec<u32> = self.brokers.keys().copied().collect();
        for id in ids.iter().copied().filter(|&id| id != leader) {
            let now = self.now;
            let broker = self.brokers.get_mut(&id).unwrap();
            let Some(replica) = broker.replica.as_mut() else {
                continue;
            };
            if broker
                .fetching_since
                .is_some_and(|since| now < since + MS * 200)
            {
                continue;
            }
            if let Some(position) = replica.fetch_position(leader) {
                broker.fetching_since = Some(now);
                self.send(
                    Message::Fetch {
                        from: id,
                        leader,
                        position,
                    },
                    faults,
                );
            }
            self.settle(id);
        }
        // The producer: one acks=all batch at a time, sent again after 3 s without an
        // answer (to whoever leads then), sometimes delivered twice.
        if self
            .sent_at
            .is_none_or(|at| self.now >= at + Duration::from_secs(3))
        {
            self.sent_at = Some(self.now);
            let copies = if faults && self.rng.chance(10) { 2 } else { 1 };
            for _ in 0..copies {
                let now = self.now;
                let sequence = self.sequence;
                if let Some(replica) = self.brokers.get_mut(&leader).unwrap().replica.as_mut() {
                    replica.handle_produce(now, &produce(sequence, Acks::All), sequence);
                }
                self.settle(leader);
            }
        }
        // Timers.
        for id in ids {
            let now = self.now;
            if let Some(replica) = self.brokers.get_mut(&id).unwrap().replica.as_mut() {
                if replica.poll_timeout().is_some_and(|at| at <= now) {
                    replica.handle_timeout(now);
                }
            }
            self.settle(id);
        }
    }

    fn deliver(&mut self, message: Message, faults: bool) {
        match message {
            Message::Fetch {
                from,
                leader,
                position,
            } => {
                let now = self.now;
                let Some(replica) = self.brokers.get_mut(&leader).unwrap().replica.as_mut() else {
                    return;
                };
                let fetch = FollowerFetch {
                    replica: from,
                    leader_epoch: position.leader_epoch,
                    offset: position.offset,
                    last_fetched_epoch: position.last_fetched_epoch,
                    first: true,
                };
                let view = replica.handle_follower_fetch(now, fetch);
                let batches = match view.read_from {
                    Some(offset) => replica
                        .log()
                        .read(offset, 4096)
                        .unwrap()
                        .into_iter()
                        .map(ReplicaBatch::from)
                        .collect(),
                    None => Vec::new(),
                };
                let data = ReplicaPartitionData {
                    topic: "t".into(),
                    partition: 0,
                    error: view.error,
                    high_watermark: view.high_watermark,
                    log_start_offset: view.log_start_offset,
                    log_end_offset: view.log_end_offset,
                    diverging: view.diverging,
                    batches,
                };
                self.settle(leader);
                self.send(
                    Message::Answer {
                        to: from,
                        leader,
                        position,
                        data,
                    },
                    faults,
                );
            }
            Message::Answer {
                to,
                leader,
                position,
                data,
            } => {
                let broker = self.brokers.get_mut(&to).unwrap();
                let Some(replica) = broker.replica.as_mut() else {
                    return;
                };
                broker.fetching_since = None;
                if data.error.is_none() {
                    replica.handle_leader_data(leader, position, data).unwrap();
                }
                self.settle(to);
            }
        }
    }

    /// The producer's records in the leader's log: sequence → offset, each once.
    fn leader_records(&self) -> BTreeMap<u32, u64> {
        let leader = self.brokers[&self.leader()].replica.as_ref().unwrap();
        let batches = leader.log().read(0, usize::MAX).unwrap();
        let mut records = BTreeMap::new();
        for b in batches {
            let sequence = b.producer.unwrap().base_sequence;
            assert!(
                records.insert(sequence, b.base_offset).is_none(),
                "sequence {sequence} written twice"
            );
        }
        records
    }
}

/// Runs one seeded simulation: faults and crashes for 20 virtual seconds, then 10 s of
/// calm; checks that every acknowledged record is on the leader, once, at its offset.
fn simulate(seed: u64) {
    let tmp = tempfile::tempdir().unwrap();
    let mut sim = Sim::new(tmp.path(), seed);
    for step in 0..20_000u32 {
        sim.step(true);
        if step % 1000 == 999 {
            let victim = 1 + (sim.rng.next() % 3) as u32;
            if sim.rng.chance(50) {
                sim.crash(victim);
            }
        }
        if step % 1000 == 499 {
            for id in 1..=3 {
                sim.restart(id);
            }
        }
    }
    for id in 1..=3 {
        sim.restart(id);
    }
    for _ in 0..10_000 {
        sim.step(false);
    }
    let records = sim.leader_records();
    assert!(
        sim.acked.len() > 20,
        "seed {seed}: only {} acknowledged",
        sim.acked.len()
    );
    for (sequence, offset) in &sim.acked {
        assert_eq!(
            records.get(sequence),
            Some(offset),
            "seed {seed}: acknowledged sequence {sequence} at offset {offset} is not there on \
             the leader after {} crashes",
            sim.crashes
        );
    }
    // Every in-sync replica has the leader's log up to the high watermark.
    let leader = sim.brokers[&sim.leader()].replica.as_ref().unwrap();
    let hw = leader.high_watermark();
    let reference = leader.log().read(0, usize::MAX).unwrap();
    for id in &sim.znode.0.isr {
        let replica = sim.brokers[id].replica.as_ref().unwrap();
        let theirs = replica.log().read(0, usize::MAX).unwrap();
        for (a, b) in reference
            .iter()
            .zip(&theirs)
            .take_while(|(a, _)| a.base_offset < hw)
        {
            assert_eq!(
                (a.base_offset, &a.bytes, a.producer),
                (b.base_offset, &b.bytes, b.producer),
                "seed {seed}: replica {id} differs below the high watermark {hw}"
            );
        }
    }
}

#[test]
fn acknowledged_records_survive_loss_reordering_duplicates_and_crashes() {
    let seeds: u64 = std::env::var("REPLICA_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    for seed in 1..=seeds {
        simulate(seed);
    }
}
