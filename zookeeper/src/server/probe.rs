//! Probing a session's node that a client reports unanswering: a sans-IO machine.
//!
//! A session's lease is its node's promise to be heard from; a dead node is noticed
//! when the lease runs out. A client that sends a node a request and gets no answer
//! knows sooner: it reports the node (`POST /suspect/...`, naming an ephemeral znode of
//! the node's session), and the zookeeper pings the address the session's heartbeats
//! come from, [`ProbeConfig::pings`] CoAP pings spread over [`ProbeConfig::window`].
//! Any answer (or a heartbeat) ends the probe: the node lives. None in the window: the
//! session expires at once, as if its lease had run out, and its ephemerals go (a
//! broker's partitions get new leaders). The pings go to the session's own address,
//! never to one the reporter names, and a session is probed at most once per
//! [`ProbeConfig::cooldown`], so a report cannot turn the zookeeper into a reflector.
//!
//! Fed `handle_*(now, …)`, drained with [`Prober::poll_action`] and
//! [`Prober::poll_timeout`]; no clock, no socket.

use hashbrown::HashMap;
use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;
use tokio::time::{Duration, Instant};

/// How a suspected node is probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeConfig {
    /// Pings sent, evenly spread over the window (the first at once).
    pub pings: u32,
    /// How long the node has to answer one of them.
    pub window: Duration,
    /// After a probe, how long before the same session may be probed again.
    pub cooldown: Duration,
    /// Probes running at once, at most (more reports are answered but not probed).
    pub max_probes: usize,
}

impl Default for ProbeConfig {
    /// Three pings in one second (a node that misses all three on a LAN is gone or
    /// cut off), then a second's rest.
    fn default() -> Self {
        ProbeConfig {
            pings: 3,
            window: Duration::from_secs(1),
            cooldown: Duration::from_secs(1),
            max_probes: 256,
        }
    }
}

/// What the driver must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeAction {
    /// Send a CoAP ping to the session's node; report an answer with
    /// [`Prober::handle_alive`]. A ping still unanswered when its probe ends may be
    /// dropped.
    Ping {
        /// The session probed.
        session: u64,
        /// Its node's address (its heartbeats' source).
        addr: SocketAddr,
    },
    /// The node answered nothing in the window: expire the session now.
    Expire {
        /// The session.
        session: u64,
    },
}

/// What became of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// A probe started.
    Probing,
    /// A probe of that session runs already.
    AlreadyProbing,
    /// The session was probed (and answered) less than a cooldown ago.
    RecentlyProbed,
    /// Too many probes run: this one is not started.
    Busy,
}

struct Probe {
    addr: SocketAddr,
    /// Pings sent so far.
    sent: u32,
    started: Instant,
}

/// The probes in progress (see the module docs).
pub struct Prober {
    config: ProbeConfig,
    probes: HashMap<u64, Probe>,
    /// Sessions probed lately, and until when they rest.
    resting: HashMap<u64, Instant>,
    /// (when, session): a probe's next ping or its end.
    timers: BTreeSet<(Instant, u64)>,
    actions: VecDeque<ProbeAction>,
}

impl Prober {
    /// No probe yet.
    pub fn new(config: ProbeConfig) -> Self {
        Prober {
            config,
            probes: HashMap::new(),
            resting: HashMap::new(),
            timers: BTreeSet::new(),
            actions: VecDeque::new(),
        }
    }

    /// A client reports `session`'s node (whose heartbeats come from `addr`) unanswering.
    pub fn handle_suspect(&mut self, now: Instant, session: u64, addr: SocketAddr) -> Report {
        if self.probes.contains_key(&session) {
            return Report::AlreadyProbing;
        }
        self.resting.retain(|_, until| *until > now);
        if self.resting.contains_key(&session) {
            return Report::RecentlyProbed;
        }
        if self.probes.len() >= self.config.max_probes {
            return Report::Busy;
        }
        self.probes.insert(
            session,
            Probe {
                addr,
                sent: 0,
                started: now,
            },
        );
        self.send_ping(session);
        Report::Probing
    }

    /// The session's node answered a ping, or the session was heard from otherwise (a
    /// heartbeat): its probe ends, the node lives. Whether a probe ended.
    pub fn handle_alive(&mut self, now: Instant, session: u64) -> bool {
        let ended = self.end(session);
        if ended {
            self.resting.insert(session, now + self.config.cooldown);
        }
        ended
    }

    /// The session ended (closed or expired): its probe, if any, is moot.
    pub fn forget(&mut self, session: u64) {
        self.end(session);
        self.resting.remove(&session);
    }

    /// Runs what is due by `now`: the next pings, and the end of probes nobody answered.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(at, session)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            let Some(probe) = self.probes.get(&session) else {
                continue;
            };
            if probe.sent < self.config.pings {
                self.send_ping(session);
            } else {
                self.end(session);
                self.resting.insert(session, now + self.config.cooldown);
                self.actions.push_back(ProbeAction::Expire { session });
            }
        }
    }

    /// The next thing to do, if any.
    pub fn poll_action(&mut self) -> Option<ProbeAction> {
        self.actions.pop_front()
    }

    /// When [`Prober::handle_timeout`] should next run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|(at, _)| *at)
    }

    /// How long a node has to answer a probe's pings ([`ProbeConfig::window`]): a ping
    /// unanswered by then need not be waited for.
    pub fn window(&self) -> Duration {
        self.config.window
    }

    /// Probes running.
    #[cfg(test)]
    pub fn probing(&self) -> usize {
        self.probes.len()
    }

    fn send_ping(&mut self, session: u64) {
        let Some(probe) = self.probes.get_mut(&session) else {
            return;
        };
        probe.sent += 1;
        let pings = self.config.pings.max(1);
        // Ping k (1-based) goes at (k-1)/pings of the window; after the last, the end.
        let next = if probe.sent < pings {
            probe.started + self.config.window * probe.sent / pings
        } else {
            probe.started + self.config.window
        };
        let addr = probe.addr;
        self.timers.insert((next, session));
        self.actions.push_back(ProbeAction::Ping { session, addr });
    }

    /// Drops a probe and its timer; whether there was one.
    fn end(&mut self, session: u64) -> bool {
        if self.probes.remove(&session).is_none() {
            return false;
        }
        self.timers.retain(|(_, s)| *s != session);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODE: &str = "127.0.0.1:9001";

    fn drain(p: &mut Prober) -> Vec<ProbeAction> {
        std::iter::from_fn(|| p.poll_action()).collect()
    }

    /// Runs the prober's timers up to `end`, returning every action in order.
    fn run_until(p: &mut Prober, end: Instant) -> Vec<ProbeAction> {
        let mut actions = drain(p);
        while let Some(at) = p.poll_timeout().filter(|at| *at <= end) {
            p.handle_timeout(at);
            actions.extend(drain(p));
        }
        actions
    }

    fn ping(session: u64) -> ProbeAction {
        ProbeAction::Ping {
            session,
            addr: NODE.parse().unwrap(),
        }
    }

    #[test]
    fn a_node_that_answers_nothing_is_expired_after_three_pings_in_the_window() {
        let t0 = Instant::now();
        let mut p = Prober::new(ProbeConfig::default());
        assert_eq!(
            p.handle_suspect(t0, 7, NODE.parse().unwrap()),
            Report::Probing
        );
        assert_eq!(drain(&mut p), vec![ping(7)], "the first ping at once");
        // Nothing more before the window ends.
        let before_end = run_until(&mut p, t0 + Duration::from_millis(999));
        assert_eq!(before_end, vec![ping(7), ping(7)]);
        let at_end = run_until(&mut p, t0 + Duration::from_secs(1));
        assert_eq!(at_end, vec![ProbeAction::Expire { session: 7 }]);
        assert_eq!(p.probing(), 0);
        assert_eq!(p.poll_timeout(), None);
    }

    #[test]
    fn an_answer_or_a_heartbeat_ends_the_probe_and_nothing_expires() {
        let t0 = Instant::now();
        let mut p = Prober::new(ProbeConfig::default());
        p.handle_suspect(t0, 7, NODE.parse().unwrap());
        drain(&mut p);
        p.handle_alive(t0 + Duration::from_millis(5), 7);
        assert!(run_until(&mut p, t0 + Duration::from_secs(5)).is_empty());
        assert_eq!(p.poll_timeout(), None);
    }

    #[test]
    fn reports_are_bounded_one_probe_per_session_and_a_rest_after_it() {
        let t0 = Instant::now();
        let addr: SocketAddr = NODE.parse().unwrap();
        let config = ProbeConfig {
            max_probes: 2,
            ..ProbeConfig::default()
        };
        let mut p = Prober::new(config);
        assert_eq!(p.handle_suspect(t0, 1, addr), Report::Probing);
        assert_eq!(p.handle_suspect(t0, 1, addr), Report::AlreadyProbing);
        assert_eq!(p.handle_suspect(t0, 2, addr), Report::Probing);
        assert_eq!(p.handle_suspect(t0, 3, addr), Report::Busy);
        assert_eq!(drain(&mut p).len(), 2, "one ping per probe started");
        let t1 = t0 + Duration::from_millis(10);
        p.handle_alive(t1, 1);
        assert_eq!(p.handle_suspect(t1, 1, addr), Report::RecentlyProbed);
        let rested = t1 + config.cooldown;
        assert_eq!(p.handle_suspect(rested, 1, addr), Report::Probing);
    }

    #[test]
    fn a_session_that_ends_during_its_probe_is_not_expired_again() {
        let t0 = Instant::now();
        let mut p = Prober::new(ProbeConfig::default());
        p.handle_suspect(t0, 7, NODE.parse().unwrap());
        p.forget(7);
        let actions = run_until(&mut p, t0 + Duration::from_secs(5));
        assert_eq!(actions, vec![ping(7)], "only the first ping, sent before");
    }
}
