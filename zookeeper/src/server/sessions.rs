//! Session leases: when each session expires unless it is heard from, and how long each
//! renewal lasts.
//!
//! A session that reports its node's health in its heartbeats (a broker: the lease of
//! its partition leaderships) gets seed 002's adaptive lease, `timeout × (1 + NHI
//! factor + network stability factor + load factor)`, clamped to [`SessionLeaseConfig`]'s
//! bounds (by default the negotiated timeout to twice it: a session never lives shorter
//! than the timeout its client asked for, ZooKeeper's promise; an unwell node's lasts
//! longer, so a slow patch does not move its partitions). The lease then applies to
//! every renewal of that session (heartbeats and writes) until the next report.

use hashbrown::HashMap;
use pehra_shared::health::{LeaseConfig, LeaseInputs, LeaseParts, NhiConfig, RttWindow};
use pehra_shared::wire::NodeHealth;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use tokio::time::{Duration, Instant};

/// How a session's adaptive lease is made from the health its node reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLeaseConfig {
    /// How the health is rated.
    pub nhi: NhiConfig,
    /// The seed's factors (its `base_ms`, `min_ms`, `max_ms` are not used: the base is
    /// the session's timeout, the bounds are the permilles below).
    pub factors: LeaseConfig,
    /// The shortest lease, ‰ of the session's timeout.
    pub min_permille: u32,
    /// The longest lease, ‰ of the session's timeout.
    pub max_permille: u32,
}

impl Default for SessionLeaseConfig {
    /// The seed's factors; between the timeout and twice it.
    fn default() -> Self {
        SessionLeaseConfig {
            nhi: NhiConfig::default(),
            factors: LeaseConfig::default(),
            min_permille: 1000,
            max_permille: 2000,
        }
    }
}

impl SessionLeaseConfig {
    /// The lease of a session with `timeout` whose node reports `health`, the standard
    /// deviation of its reported round trips being `rtt_stddev_us`.
    pub fn lease(&self, timeout: Duration, health: &NodeHealth, rtt_stddev_us: u32) -> LeaseParts {
        let base = timeout.as_millis().min(u128::from(u32::MAX)) as u64;
        let bound =
            |permille: u32| (base * u64::from(permille) / 1000).min(u64::from(u32::MAX)) as u32;
        let config = LeaseConfig {
            base_ms: base as u32,
            min_ms: bound(self.min_permille),
            max_ms: bound(self.max_permille),
            ..self.factors
        };
        config.lease(&LeaseInputs {
            class: self.nhi.rate(health).1,
            rtt_stddev_us,
            load_permille: health.cpu_permille,
        })
    }
}

/// Round trips a session's node reported, kept for its network stability factor.
const SESSION_RTT_WINDOW: usize = 8;

/// What an adaptive session's lease is made of.
struct Adapted {
    rtts: RttWindow,
    lease: Duration,
}

/// The expiry deadline of every live session.
#[derive(Default)]
pub(crate) struct Leases {
    deadline: HashMap<u64, Instant>,
    by_time: BTreeSet<(Instant, u64)>,
    /// The adaptive lease of sessions whose nodes report their health.
    adapted: HashMap<u64, Adapted>,
    /// Where each session's latest heartbeat came from (where a probe pings).
    heard_from: HashMap<u64, SocketAddr>,
}

impl Leases {
    /// Starts or renews a session's lease.
    pub(crate) fn renew(&mut self, session: u64, now: Instant, timeout: Duration) {
        self.unschedule(session);
        let at = now + timeout;
        self.deadline.insert(session, at);
        self.by_time.insert((at, session));
    }

    /// Renews a session's lease for at least `lease` from now, keeping a longer one it
    /// holds: what a write by the session does (a write by a node whose lease is
    /// stretched, dormant or quiet, must not cut its stretch to the plain timeout while
    /// its heartbeats are paused).
    pub(crate) fn extend(&mut self, session: u64, now: Instant, lease: Duration) {
        let at = now + lease;
        if self.deadline.get(&session).is_some_and(|held| *held >= at) {
            return;
        }
        self.renew(session, now, lease);
    }

    /// A heartbeat of `session` (timeout `timeout`) reported `health`: its adaptive
    /// lease from now on (see the module docs).
    pub(crate) fn adapt(
        &mut self,
        session: u64,
        timeout: Duration,
        health: &NodeHealth,
        config: &SessionLeaseConfig,
    ) -> Duration {
        let adapted = self.adapted.entry(session).or_insert_with(|| Adapted {
            rtts: RttWindow::new(SESSION_RTT_WINDOW),
            lease: timeout,
        });
        if health.rtt_ms > 0 {
            adapted.rtts.push_ms(health.rtt_ms);
        }
        let parts = config.lease(timeout, health, adapted.rtts.stddev_us());
        adapted.lease = Duration::from_millis(u64::from(parts.lease_ms));
        adapted.lease
    }

    /// How long a renewal of `session` (timeout `timeout`) lasts: its adaptive lease if
    /// its node reports health, else the timeout.
    pub(crate) fn lease_for(&self, session: u64, timeout: Duration) -> Duration {
        self.adapted.get(&session).map_or(timeout, |a| a.lease)
    }

    /// Whether the session's lease ended by `now` (even if not yet collected by
    /// [`Leases::expire`]): a late heartbeat must not revive it.
    pub(crate) fn has_lapsed(&self, session: u64, now: Instant) -> bool {
        self.deadline.get(&session).is_some_and(|at| *at <= now)
    }

    /// Forgets a session.
    pub(crate) fn remove(&mut self, session: u64) {
        self.unschedule(session);
        self.adapted.remove(&session);
        self.heard_from.remove(&session);
    }

    /// A heartbeat of `session` came from `addr`.
    pub(crate) fn heard(&mut self, session: u64, addr: SocketAddr) {
        self.heard_from.insert(session, addr);
    }

    /// Where the session's latest heartbeat came from, if it has a lease and sent one.
    pub(crate) fn address(&self, session: u64) -> Option<SocketAddr> {
        self.deadline
            .contains_key(&session)
            .then(|| self.heard_from.get(&session).copied())
            .flatten()
    }

    /// Takes a session's deadline out (it is set again at once, or the session ends).
    fn unschedule(&mut self, session: u64) {
        if let Some(at) = self.deadline.remove(&session) {
            self.by_time.remove(&(at, session));
        }
    }

    /// Whether the session holds a lease.
    #[cfg(test)]
    pub(crate) fn contains(&self, session: u64) -> bool {
        self.deadline.contains_key(&session)
    }

    /// The earliest deadline.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.by_time.first().map(|(at, _)| *at)
    }

    /// Removes and returns every session whose lease ended by `now`.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<u64> {
        let mut expired = Vec::new();
        while let Some(&(at, session)) = self.by_time.first() {
            if at > now {
                break;
            }
            self.by_time.pop_first();
            self.deadline.remove(&session);
            self.adapted.remove(&session);
            self.heard_from.remove(&session);
            expired.push(session);
        }
        expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(text: &str) -> NodeHealth {
        pehra_shared::health::system::parse(text)
    }

    #[test]
    fn a_reporting_sessions_lease_follows_its_health_and_holds_for_every_renewal() {
        let config = SessionLeaseConfig::default();
        let mut l = Leases::default();
        let timeout = Duration::from_millis(1_500);
        assert_eq!(l.lease_for(7, timeout), timeout, "no report: the timeout");
        // Excellent and idle: −10 %, but never under the timeout.
        assert_eq!(l.adapt(7, timeout, &health("cpu=0\n"), &config), timeout);
        // Critical (everything used, failing), half loaded: +30 % − 10 %.
        let critical = health("cpu=500\nmemory=1000\ndisk_io=1000\nbattery=0\nfailures=5\n");
        assert_eq!(
            config.nhi.rate(&critical).1,
            pehra_shared::health::HealthClass::Critical
        );
        let lease = l.adapt(7, timeout, &critical, &config);
        assert_eq!(lease, Duration::from_millis(1_800));
        assert_eq!(l.lease_for(7, timeout), lease, "a write renews for as long");
        // Jittery round trips shorten it (−20 ‰ per ms of deviation).
        let mut jittery = critical;
        for rtt in [10, 30, 10, 30, 10, 30] {
            jittery.rtt_ms = rtt;
            l.adapt(7, timeout, &jittery, &config);
        }
        let parts = config.lease(timeout, &jittery, 10_000);
        assert_eq!(parts.network_factor, -200);
        assert_eq!(
            l.lease_for(7, timeout),
            Duration::from_millis(u64::from(parts.lease_ms))
        );
        // The bounds are the timeout's: at most twice it.
        let wide = SessionLeaseConfig {
            factors: LeaseConfig {
                nhi_critical: 5_000,
                ..LeaseConfig::default()
            },
            ..config
        };
        assert_eq!(l.adapt(8, timeout, &critical, &wide), timeout * 2);
        // A session that ends forgets its lease.
        let t0 = Instant::now();
        l.renew(7, t0, lease);
        l.remove(7);
        assert_eq!(l.lease_for(7, timeout), timeout);
        l.renew(8, t0, timeout * 2);
        assert_eq!(l.expire(t0 + timeout * 2), vec![8]);
        assert_eq!(l.lease_for(8, timeout), timeout);
    }

    /// A write renews a session's lease but never cuts a longer one short: a node
    /// whose lease is stretched (dormant, or awake and quiet) heartbeats no more, and a
    /// status write of its must not leave it the plain timeout.
    #[test]
    fn a_write_keeps_a_stretched_lease() {
        let t0 = Instant::now();
        let mut l = Leases::default();
        l.renew(1, t0, Duration::from_secs(66));
        l.extend(1, t0 + Duration::from_secs(1), Duration::from_secs(6));
        assert_eq!(l.poll_timeout(), Some(t0 + Duration::from_secs(66)));
        // Near its end, the write's renewal reaches further and counts.
        l.extend(1, t0 + Duration::from_secs(65), Duration::from_secs(6));
        assert_eq!(l.poll_timeout(), Some(t0 + Duration::from_secs(71)));
        // A heartbeat sets the lease as it says (the node woke: plain heartbeats again).
        l.renew(1, t0 + Duration::from_secs(66), Duration::from_secs(6));
        assert_eq!(l.poll_timeout(), Some(t0 + Duration::from_secs(72)));
    }

    #[test]
    fn leases_expire_unless_renewed() {
        let t0 = Instant::now();
        let mut l = Leases::default();
        l.renew(1, t0, Duration::from_secs(1));
        l.renew(2, t0, Duration::from_secs(2));
        assert_eq!(l.poll_timeout(), Some(t0 + Duration::from_secs(1)));
        l.renew(1, t0 + Duration::from_millis(900), Duration::from_secs(1));
        assert_eq!(
            l.expire(t0 + Duration::from_millis(1500)),
            Vec::<u64>::new()
        );
        assert_eq!(l.expire(t0 + Duration::from_secs(2)), vec![1, 2]);
        assert!(!l.contains(1) && l.poll_timeout().is_none());
        l.renew(3, t0, Duration::from_secs(1));
        assert!(!l.has_lapsed(3, t0 + Duration::from_millis(999)));
        assert!(l.has_lapsed(3, t0 + Duration::from_secs(1)));
    }
}
