//! The sans-IO exchange engine: see the [module docs](super).
//!
//! A driver's loop is, in order, forever:
//!
//! 1. feed what happened: [`Engine::handle_datagram`] for each datagram received,
//!    [`Engine::handle_timeout`] when the deadline from [`Engine::poll_timeout`] passes,
//!    and the application's calls ([`Engine::request`], [`Engine::respond`],
//!    [`Engine::notify`]);
//! 2. drain [`Engine::poll_transmit`] onto the socket and [`Engine::poll_event`] into
//!    the application;
//! 3. sleep until a datagram, an application call, or [`Engine::poll_timeout`].

#[cfg(any(feature = "server", test))]
mod bounded;
mod client;
#[cfg(all(test, feature = "edhoc"))]
mod edhoc_tests;
#[cfg(test)]
mod limit_tests;
pub(crate) mod map;
#[cfg(test)]
mod oscore_tests;
#[cfg(any(feature = "server", test))]
mod ping;
mod secure;
#[cfg(any(feature = "server", test))]
mod server;
#[cfg(test)]
mod tests;

#[cfg(any(feature = "server", test))]
pub use secure::ServerSecurity;
pub use secure::{client_id_context, ECHO};
#[cfg(any(feature = "server", test))]
pub use server::Held;

#[cfg(any(feature = "server", test))]
use super::link_format::Link;
use super::{dedup::DedupCache, BlockValue, Code, Config, Request, Response};
use crate::coap::Packet;
use crate::{Duration, Instant};
#[cfg(any(feature = "server", test))]
use alloc::boxed::Box;
use alloc::collections::VecDeque;
#[cfg(any(feature = "server", test))]
use alloc::collections::{BTreeMap, BTreeSet};
#[cfg(any(feature = "server", test))]
use alloc::string::String;
use alloc::vec::Vec;
use coap_lite::{MessageClass, MessageType};
use core::fmt::Debug;
use map::{Map, Set};
use rand::{rngs::StdRng, Rng, SeedableRng};

/// What the engine needs of a peer address: `SocketAddr` on a gateway, whatever the
/// network stack uses on a microcontroller.
pub trait PeerAddress: Copy + Ord + core::hash::Hash + Debug {}

impl<A: Copy + Ord + core::hash::Hash + Debug> PeerAddress for A {}

/// Identifies a request this endpoint sent (client side).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// Identifies a request this endpoint received and has not yet answered (server side).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IncomingId(pub u64);

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit<A> {
    /// Where to.
    pub peer: A,
    /// The encoded CoAP message.
    pub bytes: Vec<u8>,
}

/// A request received, for the application to answer with [`Engine::respond`].
#[derive(Debug, Clone, PartialEq)]
pub struct IncomingRequest<A> {
    /// Pass this back to [`Engine::respond`].
    pub id: IncomingId,
    /// Who sent it.
    pub peer: A,
    /// Who sent it, authenticated: the OSCORE context the request verified in
    /// ([`Engine::set_server_security`]); `None` for a plain CoAP request.
    pub identity: Option<crate::security::Identity>,
    /// The request, its body already reassembled if it came block-wise.
    pub request: Request,
}

/// Why a request of ours ended without a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ExchangeError {
    /// No acknowledgement after MAX_RETRANSMIT retransmissions, or no response in time.
    #[error("no response from the peer in time")]
    Timeout,
    /// The peer answered with a Reset: it does not know this exchange.
    #[error("the peer reset the exchange")]
    Reset,
    /// The peer's block-wise transfer did not add up.
    #[error("the peer's block-wise transfer was inconsistent")]
    BlockMismatch,
    /// The answer to a protected request was not protected in its OSCORE context (or did
    /// not verify): not from the server we share the context with.
    #[error("the answer was not protected by the peer's OSCORE context")]
    Unprotected,
    /// Nothing listens at the peer's address: the network said so (an ICMP port
    /// unreachable, see [`Engine::peer_unreachable`]).
    #[error("nothing listens at the peer's address")]
    Unreachable,
}

/// Something the application must hear about.
#[derive(Debug, Clone, PartialEq)]
pub enum Event<A> {
    /// A request arrived; answer it with [`Engine::respond`].
    Request(IncomingRequest<A>),
    /// The final response to one of our requests; the exchange is over.
    Response {
        /// The request it answers.
        id: RequestId,
        /// The response, its body reassembled if it came block-wise.
        response: Response,
    },
    /// A notification for one of our observations (the first response included); the
    /// observation goes on. Stale notifications (RFC 7641 §3.4) are never reported.
    Notification {
        /// The observing request.
        id: RequestId,
        /// The notification, its body reassembled if it came block-wise.
        response: Response,
    },
    /// The peer answered one of our pings ([`Engine::ping`]).
    #[cfg(any(feature = "server", test))]
    Pong {
        /// The ping.
        id: RequestId,
    },
    /// One of our requests (or pings) ended without a response.
    Failed {
        /// The request.
        id: RequestId,
        /// Why.
        error: ExchangeError,
    },
}

/// Counters, for logs, tests and benchmarks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams handed to [`Engine::handle_datagram`].
    pub received: u64,
    /// Datagrams produced (retransmissions included).
    pub sent: u64,
    /// CON retransmissions.
    pub retransmissions: u64,
    /// Received duplicates answered from the duplicate cache.
    pub duplicates: u64,
    /// Datagrams that were not valid CoAP.
    pub malformed: u64,
    /// Messages answered with Reset (no matching exchange, empty CON ping, format error).
    pub resets_sent: u64,
    /// Requests of ours that failed with [`ExchangeError::Timeout`] (no ACK after the
    /// last retransmission, or no response in time).
    pub timeouts: u64,
}

/// Which deadlines the engine keeps. Ordered so it can live in a timer set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer<A> {
    /// A CON of ours awaits its ACK: retransmit or give up.
    Retransmit(A, u16),
    /// A request of ours awaits its (separate or NON) response.
    ResponseDeadline(RequestId),
}

/// A CON message of ours awaiting its ACK.
struct Unacked {
    bytes: Vec<u8>,
    retransmits: u8,
    timeout: Duration,
    deadline: Instant,
    purpose: Purpose,
}

/// What a CON message of ours was for, to know what its ACK, RST or loss means.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Purpose {
    Request(RequestId),
    #[cfg(any(feature = "server", test))]
    Ping(RequestId),
    #[cfg(any(feature = "server", test))]
    SeparateResponse,
    #[cfg(any(feature = "server", test))]
    Notification {
        token: Vec<u8>,
    },
}

/// The sans-IO CoAP endpoint: client and server on one address (the server half only
/// with feature `server`; without it, a request received is answered with Reset if CON
/// and ignored if NON).
///
/// `A` is the peer address type (`SocketAddr` on a gateway, whatever the network stack
/// uses on a microcontroller).
pub struct Engine<A> {
    config: Config,
    rng: StdRng,
    next_mid: u16,
    next_id: u64,
    stats: Stats,
    /// The latest `now` any call brought.
    clock: Instant,

    // Client side.
    exchanges: Map<RequestId, client::Exchange<A>>,
    tokens: Map<Vec<u8>, RequestId>,
    outstanding: Map<A, usize>,
    queued: Map<A, VecDeque<RequestId>>,
    /// Our pings awaiting an answer: where to, and their message ID.
    #[cfg(any(feature = "server", test))]
    pings: Map<RequestId, (A, u16)>,

    // Both sides: our CON messages awaiting an ACK.
    unacked: Map<(A, u16), Unacked>,
    /// Duplicate detection: requests (server side) and separate responses (client side).
    dedup: DedupCache<A>,

    // Server side.
    #[cfg(any(feature = "server", test))]
    /// Requests received and not answered yet. Boxed: a B-tree node shifts its
    /// neighbours' values on every insert and removal, and an `Incoming` is ~200 bytes.
    incoming: BTreeMap<IncomingId, Box<server::Incoming<A>>>,
    #[cfg(any(feature = "server", test))]
    piggyback_deadlines: VecDeque<(Instant, IncomingId)>,
    #[cfg(any(feature = "server", test))]
    /// Block1 bodies being received, by (peer, method, resource, Request-Tag): uploads
    /// tagged apart (RFC 9175, as our client does) never mix; untagged ones from one peer
    /// to one resource take turns. (Not the token: clients such as aiocoap change it
    /// from block to block.)
    uploads: bounded::BoundedMap<(A, Code, String, Vec<u8>), Vec<u8>>,
    #[cfg(any(feature = "server", test))]
    /// Block2 bodies being read, by (peer, resource, token): concurrent reads of one
    /// resource (two POSTs with different bodies) never mix. Bounded by bytes, least
    /// recently used first out.
    downloads: bounded::BoundedMap<(A, String, Vec<u8>), Response>,
    #[cfg(any(feature = "server", test))]
    /// The token of the latest Block2 body cached per (peer, resource): a follow-up
    /// with another token (clients may change it from block to block) is served from
    /// that version, so a body never mixes two versions while it is cached.
    latest_download: BTreeMap<(A, String), Vec<u8>>,
    #[cfg(any(feature = "server", test))]
    observers: BTreeMap<(A, Vec<u8>), server::Observer>,
    #[cfg(any(feature = "server", test))]
    observed: BTreeMap<String, BTreeSet<(A, Vec<u8>)>>,
    #[cfg(any(feature = "server", test))]
    observe_seq: u32,
    #[cfg(any(feature = "server", test))]
    links: Vec<Link>,
    /// OSCORE as a server ([`Engine::set_server_security`]).
    #[cfg(any(feature = "server", test))]
    server_security: Option<secure::ServerState>,
    /// The EDHOC responder (RFC 9528), when server security has EDHOC on.
    #[cfg(all(feature = "edhoc", any(feature = "server", test)))]
    edhoc: Option<crate::edhoc::Responder<A>>,
    /// OSCORE as a client: the context of each secured peer ([`Engine::secure_peer`]).
    #[cfg(any(feature = "oscore", test))]
    client_security: Map<A, secure::ClientContext>,

    timers: Set<(Instant, Timer<A>)>,
    transmits: VecDeque<Transmit<A>>,
    events: VecDeque<Event<A>>,
}

impl<A: PeerAddress> Engine<A> {
    /// An engine with `config`, seeded with 32 random bytes (message IDs, tokens and
    /// retransmission jitter come from it: give it real entropy).
    pub fn new(config: Config, seed: [u8; 32]) -> Self {
        let mut rng = StdRng::from_seed(seed);
        let next_mid = rng.next_u32() as u16;
        #[cfg(any(feature = "server", test))]
        let (max_upload, max_cached) = (config.max_upload_bytes, config.max_cached_body_bytes);
        Engine {
            dedup: DedupCache::new(config.dedup_capacity),
            config,
            rng,
            next_mid,
            next_id: 1,
            stats: Stats::default(),
            clock: Instant::ZERO,
            exchanges: Map::new(),
            tokens: Map::new(),
            outstanding: Map::new(),
            queued: Map::new(),
            #[cfg(any(feature = "server", test))]
            pings: Map::new(),
            unacked: Map::new(),
            #[cfg(any(feature = "server", test))]
            incoming: BTreeMap::new(),
            #[cfg(any(feature = "server", test))]
            piggyback_deadlines: VecDeque::new(),
            #[cfg(any(feature = "server", test))]
            uploads: bounded::BoundedMap::new(max_upload),
            #[cfg(any(feature = "server", test))]
            downloads: bounded::BoundedMap::new(max_cached),
            #[cfg(any(feature = "server", test))]
            latest_download: BTreeMap::new(),
            #[cfg(any(feature = "server", test))]
            observers: BTreeMap::new(),
            #[cfg(any(feature = "server", test))]
            observed: BTreeMap::new(),
            #[cfg(any(feature = "server", test))]
            observe_seq: 2,
            #[cfg(any(feature = "server", test))]
            links: Vec::new(),
            #[cfg(any(feature = "server", test))]
            server_security: None,
            #[cfg(all(feature = "edhoc", any(feature = "server", test)))]
            edhoc: None,
            #[cfg(any(feature = "oscore", test))]
            client_security: Map::new(),
            timers: Set::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Counters since creation.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The resources `GET /.well-known/core` lists. While empty, that request reaches the
    /// application like any other.
    #[cfg(any(feature = "server", test))]
    pub fn set_links(&mut self, links: Vec<Link>) {
        self.links = links;
    }

    #[cfg(any(feature = "oscore", test))]
    /// Protects every request to `peer` with `context` from now on (OSCORE, RFC 8613),
    /// and accepts only answers that verify in it. A client derives its contexts with a
    /// random ID Context at each start ([`client_id_context`]).
    pub fn secure_peer(&mut self, peer: A, context: crate::oscore::SecurityContext) {
        self.client_security.insert(
            peer,
            secure::ClientContext {
                ctx: context,
                edhoc_message_3: None,
            },
        );
    }

    /// [`Engine::secure_peer`] with a context EDHOC just made, whose `message_3` has not
    /// been sent: it goes with the next request to `peer` (RFC 9668's combined EDHOC +
    /// OSCORE request: the EDHOC option, message_3 ahead of the OSCORE ciphertext), and
    /// with each request after it until an answer verifies in the context (the server
    /// then has it). Saves the round trip of sending message_3 alone.
    #[cfg(feature = "edhoc")]
    pub fn secure_peer_combined(
        &mut self,
        peer: A,
        context: crate::oscore::SecurityContext,
        message_3: Vec<u8>,
    ) {
        self.client_security.insert(
            peer,
            secure::ClientContext {
                ctx: context,
                edhoc_message_3: Some(message_3),
            },
        );
    }

    /// Forgets the context towards `peer` (one the server no longer has: an EDHOC
    /// context lost at its restart); requests to it go plain until it is secured again.
    #[cfg(any(feature = "oscore", test))]
    pub fn unsecure_peer(&mut self, peer: &A) {
        self.client_security.remove(peer);
    }

    /// Whether requests to `peer` are protected.
    #[cfg(any(feature = "oscore", test))]
    pub fn is_secured(&self, peer: &A) -> bool {
        self.client_security.contains_key(peer)
    }

    /// The next sender sequence number of the context towards `peer` (`None` if it is
    /// not secured): every number below it may have been used. A client that keeps its
    /// contexts across a reset (a device's ID Context in RTC memory) stores a value at
    /// or above it, and derives the context again starting there.
    #[cfg(any(feature = "oscore", test))]
    pub fn next_sequence(&self, peer: &A) -> Option<u64> {
        self.client_security
            .get(peer)
            .map(|c| c.ctx.next_sequence_number())
    }

    /// Verifies OSCORE requests and protects their answers from now on (see
    /// [`ServerSecurity`]); plain requests still reach the application, with no
    /// identity, for it to refuse or serve.
    #[cfg(any(feature = "server", test))]
    pub fn set_server_security(&mut self, security: ServerSecurity) {
        let mut echo = [0u8; 8];
        self.rng.fill_bytes(&mut echo);
        let mut address_key = [0u8; 32];
        self.rng.fill_bytes(&mut address_key);
        #[cfg(feature = "edhoc")]
        {
            self.edhoc = security.edhoc.clone().map(|config| {
                let mut seed = [0u8; 32];
                self.rng.fill_bytes(&mut seed);
                crate::edhoc::Responder::new(config.key, config.peers, config.limits, seed)
            });
        }
        self.server_security = Some(secure::ServerState::new(security, echo, address_key));
    }

    /// Replaces a secured server's EDHOC configuration (new credentials: EDHOC
    /// identities added, rotated or revoked): half-open handshakes start over, and the
    /// contexts EDHOC made with identities no longer listed are dropped at once.
    /// `false` if the server is not secured.
    #[cfg(all(feature = "edhoc", any(feature = "server", test)))]
    pub fn set_server_edhoc(&mut self, edhoc: Option<crate::edhoc::ResponderConfig>) -> bool {
        let Some(security) = self.server_security.as_mut() else {
            return false;
        };
        self.edhoc = edhoc.clone().map(|config| {
            let mut seed = [0u8; 32];
            self.rng.fill_bytes(&mut seed);
            crate::edhoc::Responder::new(config.key, config.peers, config.limits, seed)
        });
        security.replace_edhoc_peers(edhoc);
        true
    }

    /// Replaces the key table of a secured server (new credentials: identities added,
    /// revoked or rotated). Kept contexts of identities no longer in the table, or
    /// whose secret changed, are dropped at once, so a revoked peer's next request is
    /// refused; everyone else keeps their context. `false` if the server is not secured.
    #[cfg(any(feature = "server", test))]
    pub fn set_server_keys(&mut self, keys: crate::security::KeyTable) -> bool {
        match self.server_security.as_mut() {
            Some(security) => {
                security.replace_keys(keys);
                true
            }
            None => false,
        }
    }

    /// A sender sequence ceiling to store durably *before* sending any datagram that
    /// [`Engine::poll_transmit`] returns after this call; give the last one stored to
    /// [`ServerSecurity::sequence_floor`] at the next start. `None` most of the time.
    pub fn poll_persist(&mut self) -> Option<u64> {
        #[cfg(any(feature = "server", test))]
        if let Some(security) = self.server_security.as_mut() {
            return security.take_persist();
        }
        None
    }

    /// Feeds one received datagram. Never panics, whatever the bytes.
    pub fn handle_datagram(&mut self, now: Instant, peer: A, bytes: &[u8]) {
        self.stats.received += 1;
        self.tick(now);
        let packet = match Packet::from_bytes(bytes) {
            Ok(p) if p.header.get_version() == 1 => p,
            Ok(_) => return, // RFC 7252 §3: unknown version numbers are silently ignored.
            Err(_) => return self.reject_malformed(peer, bytes),
        };
        let code = Code(packet.header.code.into());
        let mid = packet.header.message_id;
        if packet.payload.is_empty() && ends_with_payload_marker(bytes) {
            // RFC 7252 §3: a payload marker followed by a zero-length payload is a
            // message format error.
            return self.reject_malformed(peer, bytes);
        }
        if code.is_empty() && (!packet.get_token().is_empty() || !packet.payload.is_empty()) {
            return self.reject_malformed(peer, bytes);
        }
        match packet.header.get_type() {
            MessageType::Confirmable | MessageType::NonConfirmable => {
                let con = packet.header.get_type() == MessageType::Confirmable;
                let fingerprint = super::dedup::fingerprint(bytes);
                if code.is_request() {
                    self.on_request(now, peer, packet, fingerprint, bytes.len())
                } else if code.is_response() {
                    self.on_separate_response(now, peer, packet, fingerprint)
                } else if con {
                    // An empty CON is a ping; a reserved class is a format error.
                    self.send_reset(peer, mid)
                }
            }
            MessageType::Acknowledgement => {
                if code.is_empty() {
                    self.on_empty_ack(now, peer, mid)
                } else if code.is_response() {
                    self.on_piggybacked_response(now, peer, packet)
                }
            }
            MessageType::Reset => self.on_reset(now, peer, mid),
        }
    }

    /// The next datagram to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Transmit<A>> {
        self.transmits.pop_front()
    }

    /// The next event for the application, if any.
    pub fn poll_event(&mut self) -> Option<Event<A>> {
        self.events.pop_front()
    }

    /// When [`Engine::handle_timeout`] should next be called, if anything is pending.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let timer = self.timers.first().map(|(at, _)| *at);
        #[cfg(any(feature = "server", test))]
        let piggyback = self.piggyback_deadlines.front().map(|(at, _)| *at);
        #[cfg(not(any(feature = "server", test)))]
        let piggyback = None;
        match (timer, piggyback) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs everything due by `now`: retransmissions, give-ups, empty ACKs for slow
    /// handlers, response deadlines, cache expiry.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.tick(now);
        while let Some(&(at, timer)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            match timer {
                Timer::Retransmit(peer, mid) => self.on_retransmit_timer(now, peer, mid),
                Timer::ResponseDeadline(id) => self.fail(id, ExchangeError::Timeout),
            }
        }
        #[cfg(any(feature = "server", test))]
        while let Some(&(at, id)) = self.piggyback_deadlines.front() {
            if at > now {
                break;
            }
            self.piggyback_deadlines.pop_front();
            self.acknowledge_slow_request(id);
        }
        self.dedup.purge(now);
    }

    fn on_retransmit_timer(&mut self, now: Instant, peer: A, mid: u16) {
        let Some(unacked) = self.unacked.get_mut(&(peer, mid)) else {
            return;
        };
        if unacked.retransmits < self.config.max_retransmit {
            unacked.retransmits += 1;
            unacked.timeout *= 2;
            unacked.deadline = now + unacked.timeout;
            let (deadline, bytes) = (unacked.deadline, unacked.bytes.clone());
            self.timers.insert((deadline, Timer::Retransmit(peer, mid)));
            self.stats.retransmissions += 1;
            self.transmit(peer, bytes);
            return;
        }
        let unacked = self.unacked.remove(&(peer, mid)).expect("checked above");
        match unacked.purpose {
            Purpose::Request(id) => self.fail(id, ExchangeError::Timeout),
            #[cfg(any(feature = "server", test))]
            Purpose::Ping(id) => self.on_ping_lost(id),
            #[cfg(any(feature = "server", test))]
            Purpose::Notification { token } => self.remove_observer(peer, &token),
            #[cfg(any(feature = "server", test))]
            Purpose::SeparateResponse => {}
        }
    }

    fn on_empty_ack(&mut self, now: Instant, peer: A, mid: u16) {
        let Some(unacked) = self.take_unacked(peer, mid) else {
            return;
        };
        match unacked.purpose {
            Purpose::Request(id) => self.on_request_acknowledged(now, id),
            #[cfg(any(feature = "server", test))]
            Purpose::Ping(id) => self.on_pong(id),
            #[cfg(any(feature = "server", test))]
            Purpose::Notification { token } => {
                if let Some(observer) = self.observers.get_mut(&(peer, token)) {
                    observer.con_in_flight = None;
                }
            }
            #[cfg(any(feature = "server", test))]
            Purpose::SeparateResponse => {}
        }
    }

    fn on_reset(&mut self, _now: Instant, peer: A, mid: u16) {
        if let Some(unacked) = self.take_unacked(peer, mid) {
            match unacked.purpose {
                Purpose::Request(id) => self.fail(id, ExchangeError::Reset),
                #[cfg(any(feature = "server", test))]
                Purpose::Ping(id) => self.on_pong(id),
                #[cfg(any(feature = "server", test))]
                Purpose::Notification { token } => self.remove_observer(peer, &token),
                #[cfg(any(feature = "server", test))]
                Purpose::SeparateResponse => {}
            }
        } else {
            // A Reset answering a NON notification cancels that observation.
            #[cfg(any(feature = "server", test))]
            self.on_reset_notification(peer, mid);
        }
    }

    #[cfg(any(feature = "server", test))]
    fn on_reset_notification(&mut self, peer: A, mid: u16) {
        // A Reset answering a NON notification cancels that observation (RFC 7641 §3.6).
        let token = self
            .observers
            .range((peer, Vec::new())..)
            .take_while(|((p, _), _)| *p == peer)
            .find(|(_, o)| o.last_mid == Some(mid))
            .map(|((_, t), _)| t.clone());
        if let Some(token) = token {
            self.remove_observer(peer, &token);
        }
    }

    /// Removes a CON of ours from the retransmission books, with its timer.
    fn take_unacked(&mut self, peer: A, mid: u16) -> Option<Unacked> {
        let unacked = self.unacked.remove(&(peer, mid))?;
        self.timers
            .remove(&(unacked.deadline, Timer::Retransmit(peer, mid)));
        Some(unacked)
    }

    /// Sends a CON message and keeps it for retransmission until acknowledged.
    fn send_confirmable(
        &mut self,
        now: Instant,
        peer: A,
        mid: u16,
        bytes: Vec<u8>,
        purpose: Purpose,
    ) {
        let timeout = self.initial_timeout();
        let deadline = now + timeout;
        self.timers.insert((deadline, Timer::Retransmit(peer, mid)));
        self.unacked.insert(
            (peer, mid),
            Unacked {
                bytes: bytes.clone(),
                retransmits: 0,
                timeout,
                deadline,
                purpose,
            },
        );
        self.transmit(peer, bytes);
    }

    /// Sends a CON message that replaces another still unacknowledged (a newer
    /// notification, RFC 7641 §4.5.2): it goes now and carries on with the replaced
    /// message's retransmission counter, timeout and deadline.
    #[cfg(any(feature = "server", test))]
    fn resend_confirmable(
        &mut self,
        peer: A,
        mid: u16,
        bytes: Vec<u8>,
        purpose: Purpose,
        replaced: Unacked,
    ) {
        self.timers
            .insert((replaced.deadline, Timer::Retransmit(peer, mid)));
        self.unacked.insert(
            (peer, mid),
            Unacked {
                bytes: bytes.clone(),
                purpose,
                ..replaced
            },
        );
        self.transmit(peer, bytes);
    }

    /// A random initial ACK timeout in [ACK_TIMEOUT, ACK_TIMEOUT × ACK_RANDOM_FACTOR].
    fn initial_timeout(&mut self) -> Duration {
        let base = self.config.ack_timeout;
        let spread = base.mul_f32((self.config.ack_random_factor - 1.0).max(0.0));
        let spread_us = spread.as_micros() as u64;
        let jitter = if spread_us == 0 {
            0
        } else {
            self.rng.next_u64() % (spread_us + 1)
        };
        base + Duration::from_micros(jitter)
    }

    fn tick(&mut self, now: Instant) {
        self.clock = self.clock.max(now);
    }

    fn next_message_id(&mut self) -> u16 {
        self.next_mid = self.next_mid.wrapping_add(1);
        self.next_mid
    }

    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn transmit(&mut self, peer: A, bytes: Vec<u8>) {
        self.stats.sent += 1;
        self.transmits.push_back(Transmit { peer, bytes });
    }

    /// Encodes a packet with version 1, this type, message ID and token (the packet's
    /// own header fields are not used).
    fn encode(packet: Packet, kind: MessageType, mid: u16, token: &[u8]) -> Vec<u8> {
        let envelope = crate::coap::encode::Envelope {
            kind,
            message_id: mid,
            token,
        };
        crate::coap::encode::encode_as(&packet, envelope)
    }

    fn empty_message(kind: MessageType, mid: u16) -> Vec<u8> {
        let mut packet = Packet::new();
        packet.header.code = MessageClass::Empty;
        Self::encode(packet, kind, mid, &[])
    }

    fn send_reset(&mut self, peer: A, mid: u16) {
        self.stats.resets_sent += 1;
        let bytes = Self::empty_message(MessageType::Reset, mid);
        self.transmit(peer, bytes);
    }

    /// A datagram that is not valid CoAP: a CON gets a Reset if its header is readable
    /// (RFC 7252 §4.2), anything else is dropped.
    fn reject_malformed(&mut self, peer: A, bytes: &[u8]) {
        self.stats.malformed += 1;
        // Logged by the driver (which has a clock and a subscriber); counted here.
        #[cfg(feature = "std")]
        tracing::debug!(?peer, len = bytes.len(), "malformed CoAP datagram");
        if bytes.len() >= 4 && bytes[0] >> 6 == 1 && (bytes[0] >> 4) & 0x3 == 0 {
            self.send_reset(peer, u16::from_be_bytes([bytes[2], bytes[3]]));
        }
    }
}

impl<A> Debug for Engine<A> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let mut s = f.debug_struct("Engine");
        s.field("exchanges", &self.exchanges.len());
        #[cfg(any(feature = "server", test))]
        s.field("incoming", &self.incoming.len())
            .field("observers", &self.observers.len());
        s.field("stats", &self.stats).finish()
    }
}

/// Without the server half: a request is answered with Reset if CON (we serve nothing),
/// ignored if NON; and requests and their answers do not exist.
#[cfg(not(any(feature = "server", test)))]
impl<A: PeerAddress> Engine<A> {
    fn on_request(
        &mut self,
        _now: Instant,
        peer: A,
        packet: Packet,
        _fingerprint: u64,
        _len: usize,
    ) {
        if packet.header.get_type() == MessageType::Confirmable {
            self.send_reset(peer, packet.header.message_id);
        }
    }

    /// Answers a request received as [`Event::Request`]: never one without feature
    /// `server`, so this does nothing and returns `false`.
    pub fn respond(&mut self, now: Instant, _id: IncomingId, _response: Response) -> bool {
        self.tick(now);
        false
    }

    /// Ends a received request without a response: never one without feature `server`,
    /// so this does nothing and returns `false`.
    pub fn discard(&mut self, now: Instant, _id: IncomingId) -> bool {
        self.tick(now);
        false
    }

    /// Requests received and not yet answered: none without feature `server`.
    pub fn pending_incoming(&self) -> usize {
        0
    }
}

/// Reads a Block option; `Err` if present but invalid.
fn block_option(message_option: Option<&[u8]>) -> Result<Option<BlockValue>, ()> {
    match message_option {
        None => Ok(None),
        Some(raw) => BlockValue::decode(raw).map(Some).ok_or(()),
    }
}

/// Whether a datagram that parsed has a payload marker and nothing after it. Walks the
/// options as RFC 7252 §3.1 lays them out (only called on a datagram that parsed, so
/// the layout is valid).
fn ends_with_payload_marker(bytes: &[u8]) -> bool {
    let Some(first) = bytes.first() else {
        return false;
    };
    let mut at = 4 + usize::from(first & 0x0f);
    while let Some(&byte) = bytes.get(at) {
        if byte == 0xff {
            return at + 1 == bytes.len();
        }
        at += 1;
        // The extended delta (its value does not matter), then the extended length.
        at += match byte >> 4 {
            13 => 1,
            14 => 2,
            _ => 0,
        };
        let length = match byte & 0x0f {
            13 => usize::from(*bytes.get(at).unwrap_or(&0)) + 13 + 1,
            14 => {
                let high = usize::from(*bytes.get(at).unwrap_or(&0));
                let low = usize::from(*bytes.get(at + 1).unwrap_or(&0));
                (high << 8 | low) + 269 + 2
            }
            n => usize::from(n),
        };
        at += length;
    }
    false
}
