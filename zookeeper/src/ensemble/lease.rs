//! Seed 002's adaptive lease for the zookeeper's own leader: the same formula and the
//! same bookkeeping as the Pehredar's ([`pehra_shared::pehra::vitals::Vitals`]), mapped
//! onto Raft.
//!
//! A Raft leader's "lease" is how long its followers wait without a heartbeat before they
//! elect another: their election timeout. The leader computes
//! `lease = base × (1 + NHI factor + network stability factor + load factor)`, clamped,
//! from its own health (sampled every [`super::health::SAMPLE_EVERY`]: its class and its
//! CPU load) and the standard deviation of the round trips of its heartbeats (a sliding
//! window of [`RTT_WINDOW`]); every heartbeat it sends carries the lease (`POST
//! /raft?lease=MS`), and a follower draws its election timeout in [lease, 2 × lease)
//! while that leader leads ([`super::member::Member::handle_leader_lease`]).
//!
//! The bounds are Raft's, not the Pehredar's: the lease is at least the election timeout
//! of raft-rs' check-quorum ([`MIN_LEASE_MS`], one second: a follower must not give up on
//! a leader sooner than the leader gives up on itself), so the seed's shorter leases for
//! an excellent or loaded leader end at today's failover time, and at most
//! [`MAX_LEASE_MS`] (three seconds: a dead leader is replaced within 6 s at worst).
//! `docs/ensemble.md`, "Adaptive lease", has the table.

use pehra_shared::health::{LeaseConfig, LeaseParts, NhiConfig};
use pehra_shared::pehra::vitals::{Vitals, VitalsConfig};
use pehra_shared::wire::NodeHealth;
use std::time::Duration;

use super::member::{ELECTION_TICK, MAX_LEASE_TICKS};

/// The query of a heartbeat's `POST /raft` that carries the leader's lease, ms.
pub const LEASE_QUERY: &str = "lease";
/// How many heartbeat round trips the network stability window keeps (a few seconds of
/// heartbeats to two followers).
pub const RTT_WINDOW: usize = 32;
/// The shortest lease: raft-rs' election timeout ([`ELECTION_TICK`] ticks).
pub const MIN_LEASE_MS: u32 = (ELECTION_TICK as u64 * super::TICK.as_millis() as u64) as u32;
/// The longest lease ([`MAX_LEASE_TICKS`] ticks).
pub const MAX_LEASE_MS: u32 = (MAX_LEASE_TICKS as u64 * super::TICK.as_millis() as u64) as u32;

/// The leader lease's defaults: base and minimum one election timeout (1 s), maximum 3 s,
/// the seed's factors (as the Pehredar's: [`LeaseConfig::default`]).
pub fn default_config() -> LeaseConfig {
    LeaseConfig {
        base_ms: MIN_LEASE_MS,
        min_ms: MIN_LEASE_MS,
        max_ms: MAX_LEASE_MS,
        ..LeaseConfig::default()
    }
}

/// Why a lease configuration is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseConfigError {
    /// Outside what Raft's timing allows.
    #[error("the zookeeper leader's lease must stay within {MIN_LEASE_MS}..={MAX_LEASE_MS} ms with min <= base <= max (got base {base}, min {min}, max {max})")]
    OutOfRange {
        /// The base given.
        base: u32,
        /// The minimum given.
        min: u32,
        /// The maximum given.
        max: u32,
    },
}

/// Checks that `config` fits Raft's timing ([`MIN_LEASE_MS`], [`MAX_LEASE_MS`]).
pub fn check(config: &LeaseConfig) -> Result<(), LeaseConfigError> {
    let (base, min, max) = (config.base_ms, config.min_ms, config.max_ms);
    if MIN_LEASE_MS <= min && min <= base && base <= max && max <= MAX_LEASE_MS {
        Ok(())
    } else {
        Err(LeaseConfigError::OutOfRange { base, min, max })
    }
}

/// The leader's side: its health, its heartbeats' round trips, and the lease they make.
#[derive(Debug, Clone)]
pub struct LeaderLease {
    vitals: Vitals,
}

impl LeaderLease {
    /// Nothing measured yet: the lease is that of a Good, idle leader on a steady network.
    pub fn new(nhi: NhiConfig, lease: LeaseConfig) -> LeaderLease {
        LeaderLease {
            vitals: Vitals::new(VitalsConfig {
                nhi,
                lease,
                rtt_window: RTT_WINDOW,
            }),
        }
    }

    /// The leader's own health, sampled now (its CPU is the load factor's load).
    pub fn handle_health(&mut self, health: NodeHealth) {
        self.vitals.set_health(NodeHealth {
            // The RTT the lease uses is the heartbeats' ([`Self::handle_rtt`]).
            rtt_ms: 0,
            ..health
        });
    }

    /// A heartbeat went to a follower and came back after `rtt`.
    pub fn handle_rtt(&mut self, rtt: Duration) {
        self.vitals
            .rtt_sample_us(rtt.as_micros().min(u32::MAX as u128) as u32);
    }

    /// The lease now, with its parts.
    pub fn lease(&self) -> LeaseParts {
        self.vitals.lease()
    }

    /// The standard deviation of the heartbeats' round trips in the window, µs.
    pub fn rtt_stddev_us(&self) -> u32 {
        self.vitals.rtts().stddev_us()
    }

    /// The lease and its parts, as `GET /ensemble` shows them.
    pub fn status(&self) -> super::LeaseStatus {
        let parts = self.lease();
        super::LeaseStatus {
            lease_ms: parts.lease_ms,
            nhi_factor: parts.nhi_factor,
            network_factor: parts.network_factor,
            load_factor: parts.load_factor,
            rtt_stddev_us: self.rtt_stddev_us(),
        }
    }
}

/// A lease in ms as ticks of `tick` (rounded to the nearest; the member bounds it).
pub fn ticks(lease_ms: u32, tick: Duration) -> usize {
    let tick_ms = tick.as_millis().max(1) as u64;
    ((u64::from(lease_ms) + tick_ms / 2) / tick_ms) as usize
}

/// The lease a `POST /raft` carries, from its queries (`lease=MS`).
pub fn from_queries<'a>(mut queries: impl Iterator<Item = &'a str>) -> Option<u32> {
    queries.find_map(|q| q.strip_prefix(LEASE_QUERY)?.strip_prefix('=')?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pehra_shared::health::HealthClass;

    fn health(cpu: u16, memory: u16) -> NodeHealth {
        NodeHealth {
            cpu_permille: cpu,
            memory_permille: memory,
            // Failing too: only then is a loaded leader Critical.
            failures: if memory == 1000 { 5 } else { 0 },
            disk_io_permille: memory,
            ..NodeHealth::default()
        }
    }

    #[test]
    fn the_lease_follows_the_formula_within_raft_bounds() {
        let nhi = NhiConfig::default();
        let mut l = LeaderLease::new(nhi, default_config());
        // Nothing sampled: a Good, idle leader on a steady network; the seed's −5 %
        // ends at the minimum, one election timeout.
        assert_eq!(l.lease().lease_ms, MIN_LEASE_MS);
        // A critical leader (everything at full use) at full load: +30 % − 20 %.
        l.handle_health(health(1000, 1000));
        let (index, class) = nhi.rate(&health(1000, 1000));
        assert_eq!(class, HealthClass::Critical, "index {index}");
        let parts = l.lease();
        assert_eq!(parts.nhi_factor, 300);
        assert_eq!(parts.load_factor, -200);
        assert_eq!(parts.network_factor, 0, "no round trips yet");
        assert_eq!(parts.lease_ms, 1_100);
        // Jittery heartbeats shorten it: 1 ms and 21 ms round trips, stddev 10 ms,
        // −20 ‰ per ms: −200 ‰.
        for i in 0..RTT_WINDOW {
            l.handle_rtt(Duration::from_millis(if i % 2 == 0 { 1 } else { 21 }));
        }
        assert_eq!(l.rtt_stddev_us(), 10_000);
        assert_eq!(l.lease().network_factor, -200);
        assert_eq!(l.lease().lease_ms, MIN_LEASE_MS, "900 ms, clamped");
        // A longer base (configurable) shows the factors whole; the maximum holds.
        let mut wide = LeaderLease::new(
            nhi,
            LeaseConfig {
                base_ms: 2_000,
                ..default_config()
            },
        );
        wide.handle_health(health(500, 1000));
        let p = wide.lease();
        assert_eq!(
            u64::from(p.lease_ms),
            2_000 * (1000 + p.nhi_factor + p.load_factor) as u64 / 1000
        );
        wide.handle_health(health(0, 1000));
        let stretched = LeaseConfig {
            base_ms: 3_000,
            ..default_config()
        };
        let mut top = LeaderLease::new(nhi, stretched);
        top.handle_health(health(0, 1000));
        assert_eq!(top.lease().lease_ms, MAX_LEASE_MS);
    }

    #[test]
    fn configurations_outside_rafts_timing_are_refused() {
        assert_eq!(check(&default_config()), Ok(()));
        let bad = |base, min, max| LeaseConfig {
            base_ms: base,
            min_ms: min,
            max_ms: max,
            ..default_config()
        };
        assert!(
            check(&bad(1_000, 500, 3_000)).is_err(),
            "below one election timeout"
        );
        assert!(
            check(&bad(1_000, 1_000, 5_000)).is_err(),
            "above the maximum"
        );
        assert!(check(&bad(2_500, 1_000, 2_000)).is_err(), "base above max");
        assert_eq!(check(&bad(2_000, 1_500, 3_000)), Ok(()));
    }

    #[test]
    fn heartbeats_carry_the_lease_as_a_query() {
        assert_eq!(from_queries(["lease=1300"].into_iter()), Some(1_300));
        assert_eq!(from_queries(["x=1", "lease=900"].into_iter()), Some(900));
        assert_eq!(from_queries(["leases=9"].into_iter()), None);
        assert_eq!(from_queries(["lease=-1"].into_iter()), None);
        assert_eq!(from_queries(std::iter::empty()), None);
        assert_eq!(ticks(1_300, Duration::from_millis(100)), 13);
        assert_eq!(ticks(1_249, Duration::from_millis(100)), 12);
    }
}
