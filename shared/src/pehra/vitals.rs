//! A PEHRA participant's health bookkeeping (seed 002): its own [`NodeHealth`] as the
//! driver samples it, the sliding window of round-trip times it sees, and, as Pehredar,
//! the adaptive lease computed from them ([`crate::health`]).
//!
//! What goes into the node's status is damped: the health is republished only when its
//! class changes or its index moves by [`HEALTH_STEP`] ‰, the lease only when it moves
//! by more than 1/[`LEASE_STEP_DIVISOR`] of itself, so a noisy CPU does not turn into a
//! znode write per sample.

use crate::health::{HealthClass, LeaseConfig, LeaseInputs, LeaseParts, NhiConfig, RttWindow};
use crate::wire::NodeHealth;

/// How far the Node Health Index must move (‰) before the status shows the new health.
pub const HEALTH_STEP: u16 = 50;
/// The lease in the status changes once it moved by more than lease / this.
pub const LEASE_STEP_DIVISOR: u32 = 20;
/// How far the mean RTT must move (ms) before the status shows the new one.
pub const RTT_STEP_MS: u32 = 5;

/// How a node rates health and sizes its lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VitalsConfig {
    /// The Node Health Index's weights and thresholds.
    pub nhi: NhiConfig,
    /// The lease formula's knobs.
    pub lease: LeaseConfig,
    /// How many RTT samples the network stability window keeps.
    pub rtt_window: usize,
}

impl Default for VitalsConfig {
    /// Default index and lease; a window of 32 RTTs (half an hour of one-minute
    /// check-ins from a single follower, a few minutes from a cluster of them).
    fn default() -> Self {
        VitalsConfig {
            nhi: NhiConfig::default(),
            lease: LeaseConfig::default(),
            rtt_window: 32,
        }
    }
}

/// One node's health, RTT window and lease.
#[derive(Debug, Clone)]
pub struct Vitals {
    config: VitalsConfig,
    health: Option<NodeHealth>,
    rtts: RttWindow,
    /// The round trip of this node's last check-in with the Pehredar, ms.
    checkin_rtt_ms: Option<u32>,
    published_nhi: Option<u16>,
    published_lease: Option<u32>,
    published_rtt_ms: Option<u32>,
}

impl Vitals {
    /// Nothing measured yet.
    pub fn new(config: VitalsConfig) -> Vitals {
        Vitals {
            rtts: RttWindow::new(config.rtt_window),
            config,
            health: None,
            checkin_rtt_ms: None,
            published_nhi: None,
            published_lease: None,
            published_rtt_ms: None,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &VitalsConfig {
        &self.config
    }

    /// The node's own health now (its `rtt_ms`, if not 0, is an RTT sample too).
    pub fn set_health(&mut self, health: NodeHealth) {
        if health.rtt_ms > 0 {
            self.rtts.push_ms(health.rtt_ms);
        }
        self.health = Some(health);
    }

    /// A round-trip time this node measured or was told of, µs.
    pub fn rtt_sample_us(&mut self, rtt_us: u32) {
        self.rtts.push_us(rtt_us);
    }

    /// This node's check-in took `rtt_ms` there and back.
    pub fn checkin_rtt(&mut self, rtt_ms: u32) {
        self.checkin_rtt_ms = Some(rtt_ms);
        self.rtts.push_ms(rtt_ms);
    }

    /// The RTT window.
    pub fn rtts(&self) -> &RttWindow {
        &self.rtts
    }

    /// The health to report in a check-in: the last sample, with the RTT of the last
    /// check-in if there was one; `None` if nothing was sampled.
    pub fn report(&self) -> Option<NodeHealth> {
        let mut h = self.health?;
        if let Some(rtt) = self.checkin_rtt_ms {
            h.rtt_ms = rtt;
        }
        Some(h)
    }

    /// The index and class of the node's own health; `None` before the first sample.
    pub fn rating(&self) -> Option<(u16, HealthClass)> {
        self.health.as_ref().map(|h| self.config.nhi.rate(h))
    }

    /// The lease this node gives as master now. Unrated (no sample yet) counts as Good.
    pub fn lease(&self) -> LeaseParts {
        let class = self.rating().map_or(HealthClass::Good, |(_, c)| c);
        let load_permille = self.health.map_or(0, |h| h.cpu_permille);
        self.config.lease.lease(&LeaseInputs {
            class,
            rtt_stddev_us: self.rtts.stddev_us(),
            load_permille,
        })
    }

    /// The Node Health Index for the status: the last one published unless the class
    /// changed or the index moved by [`HEALTH_STEP`] ‰.
    pub fn status_nhi(&mut self) -> Option<u16> {
        let (now, class) = self.rating()?;
        let changed = self.published_nhi.is_none_or(|old| {
            self.config.nhi.class_of(old) != class || old.abs_diff(now) >= HEALTH_STEP
        });
        if changed {
            self.published_nhi = Some(now);
        }
        self.published_nhi
    }

    /// The mean round-trip time of the window for the status, ms (rounded): this node's
    /// distance to its peers, which the controller uses to choose the nearer of two
    /// equally healthy candidates. The last one published unless the mean moved by
    /// [`RTT_STEP_MS`] or more; `None` while the window is empty.
    pub fn status_rtt_ms(&mut self) -> Option<u32> {
        if self.rtts.is_empty() {
            return self.published_rtt_ms;
        }
        let now = self.rtts.mean_us().saturating_add(500) / 1000;
        if self
            .published_rtt_ms
            .is_none_or(|old| old.abs_diff(now) >= RTT_STEP_MS)
        {
            self.published_rtt_ms = Some(now);
        }
        self.published_rtt_ms
    }

    /// The lease for the status: the last one published unless the new one differs
    /// by more than 1/[`LEASE_STEP_DIVISOR`] of it.
    pub fn status_lease(&mut self) -> u32 {
        let now = self.lease().lease_ms;
        match self.published_lease {
            Some(old) if old.abs_diff(now) <= old / LEASE_STEP_DIVISOR => old,
            _ => {
                self.published_lease = Some(now);
                now
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu(permille: u16) -> NodeHealth {
        NodeHealth {
            cpu_permille: permille,
            ..NodeHealth::default()
        }
    }

    #[test]
    fn an_unsampled_node_is_rated_good_and_gets_the_good_lease() {
        let v = Vitals::new(VitalsConfig::default());
        assert_eq!(v.rating(), None);
        assert_eq!(v.report(), None);
        assert_eq!(v.lease().lease_ms, 57_000);
    }

    #[test]
    fn the_lease_follows_health_jitter_and_load() {
        let mut v = Vitals::new(VitalsConfig::default());
        v.set_health(NodeHealth::default());
        assert_eq!(v.lease().lease_ms, 54_000, "excellent, steady, idle");
        for ms in [10, 20, 10, 20] {
            v.checkin_rtt(ms);
        }
        // Deviation 5 ms: −100 ‰.
        assert_eq!(v.lease().network_factor, -100);
        assert_eq!(v.lease().lease_ms, 48_000);
        v.set_health(cpu(1000));
        // cpu 1000 ‰: index 750 (Good, −50), load −200, network −100 → 0.65.
        assert_eq!(v.lease().lease_ms, 39_000);
    }

    #[test]
    fn a_check_in_report_carries_the_last_check_in_rtt() {
        let mut v = Vitals::new(VitalsConfig::default());
        v.set_health(NodeHealth {
            rtt_ms: 3,
            ..NodeHealth::default()
        });
        assert_eq!(v.report().map(|h| h.rtt_ms), Some(3));
        v.checkin_rtt(17);
        assert_eq!(v.report().map(|h| h.rtt_ms), Some(17));
    }

    #[test]
    fn the_status_moves_only_on_real_changes() {
        let mut v = Vitals::new(VitalsConfig::default());
        v.set_health(cpu(100));
        assert_eq!(v.status_nhi(), Some(975));
        v.set_health(cpu(200)); // index 975 → 950: same class, 25 ‰.
        assert_eq!(v.status_nhi(), Some(975));
        v.set_health(cpu(700)); // index 825: Good now.
        assert_eq!(v.status_nhi(), Some(825));
        let first = v.status_lease();
        v.set_health(cpu(750)); // load −150 vs −140: 600 ms of 48 600.
        assert_eq!(v.status_lease(), first);
        v.set_health(cpu(1000));
        assert_ne!(v.status_lease(), first);
    }

    #[test]
    fn the_status_carries_the_mean_rtt_moved_by_a_step() {
        let mut v = Vitals::new(VitalsConfig::default());
        assert_eq!(v.status_rtt_ms(), None, "nothing measured");
        v.checkin_rtt(10);
        v.checkin_rtt(20);
        assert_eq!(v.status_rtt_ms(), Some(15));
        v.checkin_rtt(20); // mean 16.7 ms: less than a step.
        assert_eq!(v.status_rtt_ms(), Some(15));
        for _ in 0..4 {
            v.checkin_rtt(40);
        }
        // 10, 20, 20, 40 × 4: mean 30 ms.
        assert_eq!(v.status_rtt_ms(), Some(30));
        v.rtt_sample_us(400); // Sub-millisecond samples round, and pull the mean down.
        assert_eq!(v.status_rtt_ms(), Some(30), "27 ms: less than a step");
    }
}
