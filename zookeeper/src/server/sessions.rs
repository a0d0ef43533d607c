//! Session leases: when each session expires unless it is heard from.

use std::collections::{BTreeSet, HashMap};
use tokio::time::{Duration, Instant};

/// The expiry deadline of every live session.
#[derive(Default)]
pub(crate) struct Leases {
    deadline: HashMap<u64, Instant>,
    by_time: BTreeSet<(Instant, u64)>,
}

impl Leases {
    /// Starts or renews a session's lease.
    pub(crate) fn renew(&mut self, session: u64, now: Instant, timeout: Duration) {
        self.remove(session);
        let at = now + timeout;
        self.deadline.insert(session, at);
        self.by_time.insert((at, session));
    }

    /// Whether the session's lease ended by `now` (even if not yet collected by
    /// [`Leases::expire`]): a late heartbeat must not revive it.
    pub(crate) fn has_lapsed(&self, session: u64, now: Instant) -> bool {
        self.deadline.get(&session).is_some_and(|at| *at <= now)
    }

    /// Forgets a session.
    pub(crate) fn remove(&mut self, session: u64) {
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
            expired.push(session);
        }
        expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
