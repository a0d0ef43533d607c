//! Seed 002 for the zookeeper's own leader: a leader whose health falls hands its office
//! over (Raft's leadership transfer, [`super::member::Member::transfer_leadership`]) to
//! the healthiest member, before it fails, with the same rules as a partition leader's
//! warm handover (`pehra_cluster::handover`).
//!
//! - [`HealthWatch`]: the pure decision. The leader feeds it its own Node Health Index
//!   every sample; after [`SAMPLES_BEFORE_HANDOVER`] samples in a row at the trigger class
//!   (Warning or worse by default: one bad sample is noise) it asks for a candidate, and
//!   [`HealthWatch::choose`] picks the member rated at least `min_candidate` and better
//!   than the leader by [`MARGIN`], best index first (its CPU load is part of it), then
//!   the one whose log is furthest along (the shortest pre-sync), then the nearest (the
//!   shortest heartbeat round trip from the leader), then the lowest id. After a handover, or when no member
//!   qualifies, it keeps quiet for a while ([`COOLDOWN_MS`], [`NO_CANDIDATE_RETRY_MS`]):
//!   leadership must not bounce between members that are all unwell.
//! - `cluster::leader_health::watch_leader_health`: the thin driver, run on the leader
//!   only (beside the controller): samples its own health every [`SAMPLE_EVERY`], asks each member its index
//!   (`GET /ensemble`, `health_index`) only when the leader wants to hand over, and asks
//!   its own member to transfer (`POST /ensemble`). If the transferee does not take over
//!   within an election timeout, Raft abandons the transfer and the leader stays (the
//!   rollback); the ordinary election deals with a leader that dies.

use pehra_shared::health::handover::{should_hand_over, HandoverConfig};
use pehra_shared::time::Instant;
use std::path::PathBuf;
use std::time::Duration;

/// Samples in a row at the trigger class before the leader hands over.
pub const SAMPLES_BEFORE_HANDOVER: u32 = 3;
/// After a handover, no health-triggered one for this long (ms).
pub const COOLDOWN_MS: u64 = 30_000;
/// When no member qualified, the next look is this much later (ms).
pub const NO_CANDIDATE_RETRY_MS: u64 = 5_000;
/// How often the leader samples its health: health changes over minutes, and every
/// sample wakes the gateway (issue 19 counts those wakeups).
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// A candidate's index must beat the leader's by this much (‰): members on one host
/// (`pehra dev --zookeepers 3`, a loaded test machine) sample the same load a moment
/// apart, and a few ‰ of difference must not move the leadership.
pub const MARGIN: u16 = 100;

/// What the leader knows of another member when it chooses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// Its id.
    pub id: u64,
    /// Its Node Health Index, ‰ (`None`: it did not answer).
    pub index: Option<u16>,
    /// The last log index the leader knows it has.
    pub matched: u64,
    /// The mean round trip of the leader's heartbeats to it, µs (`None`: not measured).
    pub rtt_us: Option<u32>,
}

/// The leader's watch over its own health.
#[derive(Debug, Clone)]
pub struct HealthWatch {
    config: HandoverConfig,
    /// Samples in a row at the trigger class.
    low: u32,
    /// No handover before this time.
    quiet_until: Instant,
}

impl HealthWatch {
    /// A watch with these thresholds.
    pub fn new(config: HandoverConfig) -> HealthWatch {
        HealthWatch {
            config,
            low: 0,
            quiet_until: Instant::ZERO,
        }
    }

    /// The leader's index `own_index` sampled at `now`: `true` if it should hand over
    /// now (look for a candidate).
    pub fn handle_sample(&mut self, now: Instant, own_index: u16) -> bool {
        if should_hand_over(&self.config, Some(own_index), false) {
            self.low = self.low.saturating_add(1);
        } else {
            self.low = 0;
        }
        self.low >= SAMPLES_BEFORE_HANDOVER && now >= self.quiet_until
    }

    /// The member to hand over to, if one qualifies (see the module docs).
    pub fn choose(&self, own_index: u16, peers: &[Peer]) -> Option<u64> {
        peers
            .iter()
            .filter_map(|p| {
                let index = p.index?;
                (self.config.nhi.class_of(index) >= self.config.min_candidate
                    && index >= own_index.saturating_add(MARGIN))
                .then_some((p.id, index, p.matched, p.rtt_us.unwrap_or(u32::MAX)))
            })
            .min_by_key(|&(id, index, matched, rtt)| {
                (u16::MAX - index, u64::MAX - matched, rtt, id)
            })
            .map(|(id, ..)| id)
    }

    /// A handover started at `now`: quiet for [`COOLDOWN_MS`].
    pub fn handle_handed_over(&mut self, now: Instant) {
        self.low = 0;
        self.quiet_until = now + Duration::from_millis(COOLDOWN_MS);
    }

    /// No member qualified (or the transfer was refused) at `now`: look again later.
    pub fn handle_no_candidate(&mut self, now: Instant) {
        self.quiet_until = now + Duration::from_millis(NO_CANDIDATE_RETRY_MS);
    }
}

/// Where a member's health comes from and how it is rated.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HealthSource {
    /// A file of `key=value` lines to read instead of the system (tests, experiments;
    /// see [`pehra_shared::health::system::parse`]).
    pub file: Option<PathBuf>,
    /// How the index is computed.
    pub nhi: pehra_shared::health::NhiConfig,
}

impl HealthSource {
    /// The member's health now (the system's, or the file's).
    pub fn sample(&self) -> pehra_shared::wire::NodeHealth {
        pehra_shared::health::system::sample(self.file.as_deref())
    }

    /// The member's Node Health Index now, ‰.
    pub fn index(&self) -> u16 {
        self.nhi.index(&self.sample())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pehra_shared::health::HealthClass;

    fn peer(id: u64, index: Option<u16>, matched: u64) -> Peer {
        Peer {
            id,
            index,
            matched,
            rtt_us: None,
        }
    }

    #[test]
    fn a_leader_hands_over_after_three_bad_samples_then_keeps_quiet() {
        let mut w = HealthWatch::new(HandoverConfig::default());
        // Default thresholds: below 650 is Warning or worse, the trigger class.
        assert!(!w.handle_sample(Instant::from_millis(0), 300));
        assert!(
            !w.handle_sample(Instant::from_millis(1_000), 900),
            "a good sample resets the count"
        );
        assert!(!w.handle_sample(Instant::from_millis(2_000), 300));
        assert!(!w.handle_sample(Instant::from_millis(3_000), 300));
        assert!(w.handle_sample(Instant::from_millis(4_000), 300));
        w.handle_handed_over(Instant::from_millis(4_000));
        for t in 1..=29 {
            assert!(
                !w.handle_sample(Instant::from_millis(4_000 + t * 1_000), 300),
                "cooling down at {t} s"
            );
        }
        // Quiet over, still unwell (three more samples: the count restarted).
        assert!(w.handle_sample(Instant::from_millis(34_000), 300));
        w.handle_no_candidate(Instant::from_millis(34_000));
        assert!(!w.handle_sample(Instant::from_millis(35_000), 300));
        assert!(w.handle_sample(Instant::from_millis(39_000), 300));
    }

    #[test]
    fn the_candidate_is_the_healthiest_then_the_furthest_along_and_better_than_the_leader() {
        let w = HealthWatch::new(HandoverConfig::default());
        let peers = [
            peer(2, Some(900), 10),
            peer(3, Some(950), 5),
            peer(4, None, 99),
        ];
        assert_eq!(w.choose(300, &peers), Some(3));
        let tied = [peer(2, Some(900), 10), peer(3, Some(900), 12)];
        assert_eq!(w.choose(300, &tied), Some(3), "furthest along");
        // Then the nearest; an unmeasured member last.
        let near = |id, rtt| Peer {
            rtt_us: rtt,
            ..peer(id, Some(900), 10)
        };
        assert_eq!(
            w.choose(
                300,
                &[near(2, Some(900)), near(3, Some(300)), near(4, None)]
            ),
            Some(3),
            "nearest"
        );
        assert_eq!(w.choose(300, &[near(4, None), near(2, Some(900))]), Some(2));
        // Nobody good enough (Good is 650), nor better than the leader by the margin.
        assert_eq!(w.choose(300, &[peer(2, Some(600), 10)]), None);
        assert_eq!(w.choose(950, &[peer(2, Some(900), 10)]), None);
        assert_eq!(w.choose(600, &[peer(2, Some(690), 10)]), None);
        assert_eq!(w.choose(600, &[peer(2, Some(700), 10)]), Some(2));
        // With a stricter candidate class.
        let strict = HealthWatch::new(HandoverConfig {
            min_candidate: HealthClass::Excellent,
            ..HandoverConfig::default()
        });
        assert_eq!(strict.choose(300, &[peer(2, Some(800), 10)]), None);
    }
}
