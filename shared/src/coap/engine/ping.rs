//! CoAP ping (RFC 7252 §4.3): an empty CON, which any CoAP endpoint answers with a Reset
//! (or an empty ACK). It tells whether a process still serves its address without
//! touching any resource of it: the zookeeper probes a session's node with it when a
//! client reports the node unanswering.

use super::{Engine, Event, ExchangeError, PeerAddress, Purpose, RequestId};
use crate::Instant;
use coap_lite::MessageType;

impl<A: PeerAddress> Engine<A> {
    /// Sends a CoAP ping to `peer`, retransmitted as any CON. The outcome arrives as
    /// [`Event::Pong`] (the peer answered) or [`Event::Failed`] with
    /// [`ExchangeError::Timeout`] (no answer after the last retransmission); a caller
    /// that decides sooner drops it with [`Engine::cancel`].
    pub fn ping(&mut self, now: Instant, peer: A) -> RequestId {
        self.tick(now);
        let id = RequestId(self.next_id());
        let mid = self.next_message_id();
        let bytes = Self::empty_message(MessageType::Confirmable, mid);
        self.pings.insert(id, (peer, mid));
        self.send_confirmable(now, peer, mid, bytes, Purpose::Ping(id));
        id
    }

    /// The peer answered ping `id` (its Reset or empty ACK was taken off the unacked set).
    pub(super) fn on_pong(&mut self, id: RequestId) {
        if self.pings.remove(&id).is_some() {
            self.events.push_back(Event::Pong { id });
        }
    }

    /// Ping `id` got no answer after its last retransmission.
    pub(super) fn on_ping_lost(&mut self, id: RequestId) {
        if self.pings.remove(&id).is_some() {
            self.stats.timeouts += 1;
            self.events.push_back(Event::Failed {
                id,
                error: ExchangeError::Timeout,
            });
        }
    }

    /// Forgets ping `id` (no event will come for it); whether it was pending.
    pub(super) fn cancel_ping(&mut self, id: RequestId) -> bool {
        match self.pings.remove(&id) {
            Some((peer, mid)) => {
                self.take_unacked(peer, mid);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Engine, Event, ExchangeError, Timer};
    use crate::coap::Config;
    use crate::{Duration, Instant};

    fn engine(seed: u8) -> Engine<u8> {
        Engine::new(Config::default(), [seed; 32])
    }

    /// Moves every datagram `from` has to send into `to` (as peer `from_addr`).
    fn deliver(from: &mut Engine<u8>, from_addr: u8, to: &mut Engine<u8>, now: Instant) -> usize {
        let mut n = 0;
        while let Some(t) = from.poll_transmit() {
            to.handle_datagram(now, from_addr, &t.bytes);
            n += 1;
        }
        n
    }

    #[test]
    fn a_live_peer_answers_a_ping_with_a_reset() {
        let t0 = Instant::from_millis(1_000);
        let (mut a, mut b) = (engine(1), engine(2));
        let id = a.ping(t0, 2);
        assert_eq!(deliver(&mut a, 1, &mut b, t0), 1, "one empty CON");
        assert_eq!(b.stats().resets_sent, 1, "answered with a Reset");
        assert!(
            b.poll_event().is_none(),
            "a ping is no request for the application"
        );
        deliver(&mut b, 2, &mut a, t0);
        assert_eq!(a.poll_event(), Some(Event::Pong { id }));
        assert!(a.poll_event().is_none());
        assert_eq!(a.poll_timeout(), None, "nothing left to retransmit");
    }

    #[test]
    fn an_unanswered_ping_is_retransmitted_then_fails() {
        let t0 = Instant::from_millis(1_000);
        let mut a = engine(1);
        let id = a.ping(t0, 9);
        assert!(a.poll_transmit().is_some());
        let mut sent = 1;
        let mut now = t0;
        while let Some(at) = a.poll_timeout() {
            now = at;
            a.handle_timeout(now);
            while a.poll_transmit().is_some() {
                sent += 1;
            }
        }
        assert_eq!(sent, 1 + usize::from(Config::default().max_retransmit));
        assert!(
            now > t0 + Duration::from_secs(10),
            "CON retransmission timing"
        );
        assert_eq!(
            a.poll_event(),
            Some(Event::Failed {
                id,
                error: ExchangeError::Timeout
            })
        );
    }

    #[test]
    fn a_cancelled_ping_leaves_no_timer_and_ignores_a_late_answer() {
        let t0 = Instant::from_millis(1_000);
        let (mut a, mut b) = (engine(1), engine(2));
        let id = a.ping(t0, 2);
        let bytes = a.poll_transmit().expect("the ping").bytes;
        assert!(a.cancel(id));
        assert!(!a.cancel(id), "only once");
        assert!(
            !a.timers
                .iter()
                .any(|(_, t)| matches!(t, Timer::Retransmit(2, _))),
            "its retransmission is gone"
        );
        b.handle_datagram(t0, 1, &bytes);
        deliver(&mut b, 2, &mut a, t0);
        assert!(a.poll_event().is_none(), "no event for a cancelled ping");
    }
}
