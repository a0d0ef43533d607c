//! Seed 002's predictive (warm) handover of a partition leader: the pure decisions, no
//! I/O. [`super::warm`] drives it in the controller, and the leader broker's side
//! (holding produces, confirming the pre-sync) is `pehra_broker`'s `server::handover`;
//! the protocol is in `docs/pehra.md`, "Warm handover".
//!
//! - [`should_hand_over`]: the leader's health fell to the trigger class (Warning by
//!   default) or an operator asked.
//! - [`candidate`]: the eligible in-sync replica with the best Node Health Index (then the
//!   lowest CPU load, then the lowest RTT: "high NHI, low load, network proximity"), never
//!   the leader, never an unavailable or ineligible broker.
//! - [`Handover`]: one handover in progress. The leader pre-synchronises the candidate;
//!   [`Handover::step`] says *wait* until the candidate's log end equals the leader's
//!   (fully caught up), then *transfer*: the Lease Transfer is the partition metadata
//!   written conditionally with `leader = candidate`, `leader_epoch + 1` and the ISR
//!   unchanged, together with the log end both agreed on (the pre-sync confirmation).
//!   If the candidate dies, leaves the ISR or does not catch up in time, or anything
//!   else changed the partition meanwhile, it says *roll back*: nothing is written and
//!   the ordinary election ([`super::election::decide`]) stays in charge.

use pehra_shared::time::{Duration, Instant};
use pehra_shared::wire::PartitionMetadata;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// What the controller knows of a broker when it chooses a candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rating {
    /// Its Node Health Index, ‰ (as it publishes it in its PEHRA status).
    pub index: u16,
    /// Its load: how many partitions it leads now.
    pub load: u32,
    /// Its distance: the mean round-trip time it reports in its PEHRA status, ms (0 when
    /// unknown). Its index counts only the RTT of its own health sample; this one is
    /// what it measured to its peers over its window.
    pub rtt_ms: u32,
}

pub use pehra_shared::health::handover::{should_hand_over, HandoverConfig};

/// The best candidate to take over `meta`'s leadership, if any: an in-sync replica
/// other than the leader that is live and eligible, reports health of at least
/// `min_candidate` and a higher index than the leader's.
pub fn candidate(
    config: &HandoverConfig,
    meta: &PartitionMetadata,
    live: &BTreeSet<u32>,
    ineligible: &BTreeSet<u32>,
    ratings: &BTreeMap<u32, Rating>,
) -> Option<u32> {
    let leader = meta.leader?;
    let leader_index = ratings.get(&leader).map(|r| r.index);
    meta.isr
        .iter()
        .copied()
        .filter(|&b| b != leader && meta.replicas.contains(&b))
        .filter(|b| live.contains(b) && !ineligible.contains(b))
        .filter_map(|b| {
            let r = ratings.get(&b)?;
            let class = config.nhi.class_of(r.index);
            (class >= config.min_candidate && leader_index.is_none_or(|l| r.index > l))
                .then_some((b, r.index, r.load, r.rtt_ms))
        })
        // Best index, then least load, then nearest, then the lowest id.
        .min_by_key(|&(b, index, load, rtt)| (u16::MAX - index, load, rtt, b))
        .map(|(b, ..)| b)
}

/// Why a warm handover was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HandoverReason {
    /// An operator asked (`pehra cluster handover`).
    Operator,
    /// The leader's health fell to the trigger class.
    Health,
}

/// A warm handover order: the znode [`super::HANDOVERS`]`/{topic}:{partition}`, created
/// by an operator (or by the controller on a health trigger), advanced by the controller
/// (`presync`) and the leader (`ready_log_end`), deleted by the controller when it is
/// done or rolled back.
///
/// CBOR: `{"reason": "operator" | "health", "to"?: u32, "presync"?: PreSync,
/// "ready_log_end"?: u64}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandoverOrder {
    /// Why.
    pub reason: HandoverReason,
    /// The broker the operator wants as the new leader (`None`: the controller chooses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<u32>,
    /// Set by the controller once it chose the candidate: the leader stops appending
    /// and waits for the candidate to catch up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presync: Option<PreSync>,
    /// Set by the leader: the candidate's log ends where the leader's does, here, and
    /// every acks=all produce before it is answered (the pre-sync confirmation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_log_end: Option<u64>,
}

/// The pre-synchronisation the controller started.
///
/// CBOR: `{"leader": u32, "candidate": u32, "leader_epoch": u32}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreSync {
    /// The leader handing over.
    pub leader: u32,
    /// The replica taking over.
    pub candidate: u32,
    /// The epoch the leader leads in; the new leader's is the next.
    pub leader_epoch: u32,
}

/// The handover counts: the data of [`super::HANDOVERS`], written by the controller.
///
/// CBOR: `{"completed": u64, "rolled_back": u64, "no_candidate": u64,
/// "last"?: HandoverResult}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandoverStats {
    /// Handovers that moved the leadership.
    pub completed: u64,
    /// Handovers abandoned during pre-sync or switchover (the ordinary election stayed
    /// in charge).
    pub rolled_back: u64,
    /// Orders dropped because no replica could take over.
    pub no_candidate: u64,
    /// The last outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<HandoverResult>,
}

/// How one handover ended.
///
/// CBOR: `{"topic": text, "partition": u32, "from"?: u32, "to"?: u32, "reason": text,
/// "outcome": text, "took_ms": u64, "at_ms": u64}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandoverResult {
    /// The partition's topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// The leader it started from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<u32>,
    /// The candidate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<u32>,
    /// Why it was asked for.
    pub reason: HandoverReason,
    /// `completed`, `rolled back: ...` or `no candidate`.
    pub outcome: String,
    /// From the candidate's choice to the outcome, ms.
    pub took_ms: u64,
    /// When, ms since the Unix epoch.
    pub at_ms: u64,
}

/// Why a handover was abandoned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RollBack {
    /// The candidate is gone, ineligible, or out of the ISR.
    CandidateLost,
    /// The leader is gone: the ordinary election replaces it.
    LeaderLost,
    /// The partition changed under the handover (another election, a reassignment).
    Superseded,
    /// The candidate did not catch up within the pre-sync timeout.
    Timeout,
}

impl RollBack {
    /// Its name, for the outcome.
    pub fn as_str(self) -> &'static str {
        match self {
            RollBack::CandidateLost => "candidate lost",
            RollBack::LeaderLost => "leader lost",
            RollBack::Superseded => "superseded",
            RollBack::Timeout => "timeout",
        }
    }
}

/// What to do next in a handover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Pre-synchronisation goes on: the candidate is behind.
    Wait,
    /// The Lease Transfer: write this metadata (conditionally on the version read).
    Transfer {
        /// The partition with the candidate as leader, the epoch bumped.
        meta: PartitionMetadata,
        /// The log end both leader and candidate have: the pre-sync confirmation.
        log_end: u64,
    },
    /// Abandon it; the ordinary election decides.
    RollBack(RollBack),
}

/// One warm handover in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handover {
    meta: PartitionMetadata,
    candidate: u32,
    started: Instant,
    timeout: Duration,
}

impl Handover {
    /// Starts handing `meta`'s leadership to `candidate` at `now`.
    pub fn start(
        config: &HandoverConfig,
        meta: PartitionMetadata,
        candidate: u32,
        now: Instant,
    ) -> Handover {
        Handover {
            meta,
            candidate,
            started: now,
            timeout: Duration::from_millis(config.presync_timeout_ms),
        }
    }

    /// The candidate.
    pub fn candidate(&self) -> u32 {
        self.candidate
    }

    /// The partition as it was when the handover started.
    pub fn meta(&self) -> &PartitionMetadata {
        &self.meta
    }

    /// When the pre-sync times out, ms.
    pub fn poll_timeout(&self) -> Instant {
        self.started + self.timeout
    }

    /// Decides at `now` from the partition as it is now, the live and ineligible
    /// brokers, and the log ends the leader and the candidate last reported.
    pub fn step(
        &self,
        now: Instant,
        meta: &PartitionMetadata,
        live: &BTreeSet<u32>,
        ineligible: &BTreeSet<u32>,
        leader_log_end: Option<u64>,
        candidate_log_end: Option<u64>,
    ) -> Step {
        let leader = self.meta.leader;
        let leader_dead = leader.is_none_or(|l| !live.contains(&l));
        let changed = meta.leader != leader
            || meta.leader_epoch != self.meta.leader_epoch
            || meta.replicas != self.meta.replicas;
        if leader_dead {
            return Step::RollBack(RollBack::LeaderLost);
        }
        if changed {
            return Step::RollBack(RollBack::Superseded);
        }
        let c = self.candidate;
        if !live.contains(&c) || ineligible.contains(&c) || !meta.isr.contains(&c) {
            return Step::RollBack(RollBack::CandidateLost);
        }
        match (leader_log_end, candidate_log_end) {
            (Some(l), Some(c_end)) if l == c_end => Step::Transfer {
                meta: PartitionMetadata {
                    leader: Some(c),
                    leader_epoch: meta.leader_epoch + 1,
                    ..meta.clone()
                },
                log_end: l,
            },
            _ if now >= self.poll_timeout() => Step::RollBack(RollBack::Timeout),
            _ => Step::Wait,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pehra_shared::health::NhiConfig;

    fn meta() -> PartitionMetadata {
        PartitionMetadata {
            partition: 0,
            leader: Some(1),
            leader_epoch: 4,
            replicas: vec![1, 2, 3],
            isr: vec![1, 2, 3],
            elr: Vec::new(),
        }
    }

    /// A broker loaded `cpu` ‰ (CPU, memory, disk, and as many partitions led).
    fn h(cpu: u16, rtt_ms: u32) -> Rating {
        let health = pehra_shared::wire::NodeHealth {
            cpu_permille: cpu,
            memory_permille: cpu,
            disk_io_permille: cpu,
            rtt_ms,
            ..Default::default()
        };
        Rating {
            index: NhiConfig::DEFAULT.index(&health),
            load: u32::from(cpu),
            rtt_ms,
        }
    }

    fn set(ids: &[u32]) -> BTreeSet<u32> {
        ids.iter().copied().collect()
    }

    #[test]
    fn a_leader_hands_over_at_warning_or_when_asked() {
        let c = HandoverConfig::default();
        assert!(!should_hand_over(&c, Some(h(100, 1).index), false));
        assert!(!should_hand_over(&c, None, false));
        assert!(
            should_hand_over(&c, Some(h(800, 1).index), false),
            "warning"
        );
        assert!(should_hand_over(&c, None, true), "operator");
    }

    #[test]
    fn the_candidate_is_the_healthiest_eligible_in_sync_replica() {
        let c = HandoverConfig::default();
        let live = set(&[1, 2, 3]);
        let mut health = BTreeMap::from([(1, h(800, 5)), (2, h(300, 5)), (3, h(100, 5))]);
        assert_eq!(candidate(&c, &meta(), &live, &set(&[]), &health), Some(3));
        // Ineligible, dead or out of the ISR: not a candidate.
        assert_eq!(candidate(&c, &meta(), &live, &set(&[3]), &health), Some(2));
        assert_eq!(
            candidate(&c, &meta(), &set(&[1, 2]), &set(&[]), &health),
            Some(2)
        );
        let m = PartitionMetadata {
            isr: vec![1, 2],
            ..meta()
        };
        assert_eq!(candidate(&c, &m, &live, &set(&[]), &health), Some(2));
        // Same index: the nearer one.
        health.insert(2, h(100, 1));
        assert_eq!(candidate(&c, &meta(), &live, &set(&[]), &health), Some(2));
        // Nobody healthy enough, or not healthier than the leader: none.
        let sick = BTreeMap::from([(1, h(800, 5)), (2, h(900, 5)), (3, h(1000, 5))]);
        assert_eq!(candidate(&c, &meta(), &live, &set(&[]), &sick), None);
        // No health reported: not a candidate (a warm handover needs a known-good one).
        assert_eq!(
            candidate(&c, &meta(), &live, &set(&[]), &BTreeMap::new()),
            None
        );
    }

    #[test]
    fn at_equal_health_the_less_loaded_then_the_nearer_replica_wins() {
        let c = HandoverConfig::default();
        let live = set(&[1, 2, 3]);
        let r = |index, load, rtt_ms| Rating {
            index,
            load,
            rtt_ms,
        };
        // Equal index and load: broker 3 is nearer (the lower id would win otherwise).
        let mut ratings =
            BTreeMap::from([(1, r(500, 3, 2)), (2, r(900, 1, 30)), (3, r(900, 1, 4))]);
        assert_eq!(candidate(&c, &meta(), &live, &set(&[]), &ratings), Some(3));
        // Equal RTTs: the lower id.
        ratings.insert(3, r(900, 1, 30));
        assert_eq!(candidate(&c, &meta(), &live, &set(&[]), &ratings), Some(2));
        // Load counts before distance, the index before both.
        ratings.insert(3, r(900, 0, 200));
        assert_eq!(candidate(&c, &meta(), &live, &set(&[]), &ratings), Some(3));
        ratings.insert(2, r(901, 5, 200));
        assert_eq!(candidate(&c, &meta(), &live, &set(&[]), &ratings), Some(2));
    }

    #[test]
    fn the_transfer_waits_for_the_candidate_to_catch_up_and_bumps_the_epoch() {
        let c = HandoverConfig::default();
        let live = set(&[1, 2, 3]);
        let none = set(&[]);
        let ho = Handover::start(&c, meta(), 3, Instant::from_millis(1_000));
        assert_eq!(
            ho.step(
                Instant::from_millis(1_100),
                &meta(),
                &live,
                &none,
                Some(50),
                Some(48)
            ),
            Step::Wait
        );
        assert_eq!(
            ho.step(
                Instant::from_millis(1_100),
                &meta(),
                &live,
                &none,
                Some(50),
                None
            ),
            Step::Wait
        );
        match ho.step(
            Instant::from_millis(1_200),
            &meta(),
            &live,
            &none,
            Some(52),
            Some(52),
        ) {
            Step::Transfer { meta: m, log_end } => {
                assert_eq!((m.leader, m.leader_epoch, log_end), (Some(3), 5, 52));
                assert_eq!(m.isr, vec![1, 2, 3], "the ISR is unchanged");
            }
            other => panic!("expected the transfer, got {other:?}"),
        }
    }

    #[test]
    fn a_candidate_lost_mid_pre_sync_rolls_back_to_the_ordinary_election() {
        let c = HandoverConfig::default();
        let none = set(&[]);
        let ho = Handover::start(&c, meta(), 3, Instant::from_millis(1_000));
        let step = |meta: &PartitionMetadata, live: &[u32], ineligible: &[u32], now| {
            ho.step(
                Instant::from_millis(now),
                meta,
                &set(live),
                &set(ineligible),
                Some(50),
                Some(49),
            )
        };
        assert_eq!(
            step(&meta(), &[1, 2], &[], 1_100),
            Step::RollBack(RollBack::CandidateLost)
        );
        assert_eq!(
            step(&meta(), &[1, 2, 3], &[3], 1_100),
            Step::RollBack(RollBack::CandidateLost)
        );
        let shrunk = PartitionMetadata {
            isr: vec![1, 2],
            ..meta()
        };
        assert_eq!(
            step(&shrunk, &[1, 2, 3], &[], 1_100),
            Step::RollBack(RollBack::CandidateLost)
        );
        assert_eq!(
            step(&meta(), &[2, 3], &[], 1_100),
            Step::RollBack(RollBack::LeaderLost)
        );
        let reelected = PartitionMetadata {
            leader: Some(2),
            leader_epoch: 5,
            ..meta()
        };
        assert_eq!(
            step(&reelected, &[1, 2, 3], &[], 1_100),
            Step::RollBack(RollBack::Superseded)
        );
        assert_eq!(
            step(&meta(), &[1, 2, 3], &[], 6_000),
            Step::RollBack(RollBack::Timeout)
        );
        // Rolling back writes nothing: the ordinary election, given the candidate dead,
        // leaves the living leader in place.
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(7);
        let after =
            crate::election::decide(&meta(), &set(&[1, 2]), &none, &none, 1, false, &mut rng)
                .expect("the dead candidate leaves the ISR");
        assert_eq!((after.leader, after.leader_epoch), (Some(1), 4));
    }
}
