//! EDHOC through the engine, in virtual time: a client that has only a static key runs
//! EDHOC against `/.well-known/edhoc` of a server engine, then speaks OSCORE in the
//! context it yields; the server application sees the identity of the client's
//! registered credential. Replays in that context are refused.

use super::*;
use crate::edhoc::{Initiator, KnownPeer, Limits, ResponderConfig, StaticKey};
use crate::oscore::SecurityContext;
use crate::security::{self, Identity, KeyTable, Role};
use alloc::vec::Vec;

const CLIENT: u8 = 1;
const SERVER: u8 = 2;

fn dana() -> Identity {
    Identity {
        name: "dana".into(),
        role: Role::Device,
        kid: security::kid(Role::Device, 4),
    }
}

fn dana_key() -> StaticKey {
    StaticKey::derive(&[0xD4; 32], &dana().kid, "dana")
}

fn server_key() -> StaticKey {
    StaticKey::derive(&[0x5E; 32], &security::broker_kid(1), "broker-1")
}

struct Pair {
    now: Instant,
    client: Engine<u8>,
    server: Engine<u8>,
    client_sent: Vec<Vec<u8>>,
    served: Vec<IncomingRequest<u8>>,
    client_events: Vec<Event<u8>>,
}

impl Pair {
    fn new() -> Pair {
        let mut server = Engine::new(Config::default(), [2; 32]);
        let mut security = ServerSecurity::new(security::broker_kid(1), KeyTable::new(), 0);
        security.edhoc = Some(ResponderConfig {
            key: server_key(),
            peers: alloc::vec![KnownPeer {
                identity: dana(),
                credential: dana_key().credential(),
            }],
            limits: Limits::default(),
        });
        server.set_server_security(security);
        Pair {
            now: Instant::from_millis(1_000),
            client: Engine::new(Config::default(), [1; 32]),
            server,
            client_sent: Vec::new(),
            served: Vec::new(),
            client_events: Vec::new(),
        }
    }

    fn run(&mut self) {
        loop {
            let mut moved = false;
            while let Some(t) = self.client.poll_transmit() {
                moved = true;
                self.client_sent.push(t.bytes.clone());
                self.server.handle_datagram(self.now, CLIENT, &t.bytes);
            }
            while let Some(e) = self.server.poll_event() {
                moved = true;
                let Event::Request(r) = e else { continue };
                let name = r
                    .identity
                    .as_ref()
                    .map(|i| i.name.clone())
                    .unwrap_or_default();
                self.server
                    .respond(self.now, r.id, Response::content(name.into_bytes()));
                self.served.push(r);
            }
            while let Some(t) = self.server.poll_transmit() {
                moved = true;
                self.client.handle_datagram(self.now, SERVER, &t.bytes);
            }
            while let Some(e) = self.client.poll_event() {
                moved = true;
                self.client_events.push(e);
            }
            if !moved {
                return;
            }
        }
    }

    fn request(&mut self, request: Request) -> Response {
        let id = self.client.request(self.now, SERVER, request);
        self.run();
        self.client_events
            .iter()
            .find_map(|e| match e {
                Event::Response { id: i, response } if *i == id => Some(response.clone()),
                _ => None,
            })
            .expect("answered")
    }

    fn edhoc(&mut self, key: StaticKey) -> Result<SecurityContext, Response> {
        let (initiator, m1) = Initiator::start(key, server_key().ccs(), [7; 32]).unwrap();
        let m2 = self.request(Request::post(".well-known/edhoc").with_payload(m1));
        if m2.code() != Code::CHANGED {
            return Err(m2);
        }
        let (m3, keys) = initiator.finish(m2.payload()).unwrap();
        let done = self.request(Request::post(".well-known/edhoc").with_payload(m3));
        if done.code() != Code::CHANGED {
            return Err(done);
        }
        Ok(SecurityContext::new(&keys.context_params(), None).unwrap())
    }
}

#[test]
fn a_client_with_only_a_static_key_gets_in_as_its_registered_identity() {
    let mut pair = Pair::new();
    let context = pair.edhoc(dana_key()).unwrap();
    assert!(
        pair.served.is_empty(),
        "EDHOC is the engine's, not the application's"
    );
    pair.client.secure_peer(SERVER, context);
    let answer = pair.request(Request::get("whoami"));
    assert_eq!(answer.code(), Code::CONTENT);
    assert_eq!(answer.payload(), b"dana");
    assert_eq!(
        pair.served.len(),
        1,
        "no Echo round trip: the context is new"
    );
    assert_eq!(pair.served[0].identity, Some(dana()));
    assert!(crate::oscore::is_protected(
        &Packet::from_bytes(pair.client_sent.last().unwrap()).unwrap()
    ));
    assert_eq!(pair.server.held().oscore_contexts, 1);

    // The same request again under a new message ID: the replay window refuses it.
    let mut replay = pair.client_sent.last().unwrap().clone();
    replay[2..4].copy_from_slice(&0x7777u16.to_be_bytes());
    pair.server.handle_datagram(pair.now, CLIENT, &replay);
    let answer = Packet::from_bytes(&pair.server.poll_transmit().unwrap().bytes).unwrap();
    assert_eq!(Code(answer.header.code.into()), Code::UNAUTHORIZED);
    assert!(pair.server.poll_event().is_none(), "the replay was served");
}

#[test]
fn an_unregistered_key_is_refused_and_installs_nothing() {
    let mut pair = Pair::new();
    let mallory = StaticKey::derive(&[0x66; 32], &security::kid(Role::Device, 5), "mallory");
    let refusal = pair.edhoc(mallory).unwrap_err();
    assert_eq!(refusal.code(), Code::UNAUTHORIZED);
    assert_eq!(
        crate::edhoc::parse_error_message(refusal.payload()).map(|e| e.0),
        Some(crate::edhoc::ERR_UNKNOWN_CREDENTIAL)
    );
    assert_eq!(pair.server.held().oscore_contexts, 0);
    assert!(pair.served.is_empty());
}

#[test]
fn message_2_stays_within_three_times_message_1() {
    let mut pair = Pair::new();
    let (_, m1) = Initiator::start(dana_key(), server_key().ccs(), [7; 32]).unwrap();
    pair.client.request(
        pair.now,
        SERVER,
        Request::post(".well-known/edhoc").with_payload(m1),
    );
    let request = pair.client.poll_transmit().unwrap().bytes;
    pair.server.handle_datagram(pair.now, CLIENT, &request);
    let answer = pair.server.poll_transmit().unwrap().bytes;
    let packet = Packet::from_bytes(&answer).unwrap();
    assert_eq!(Code(packet.header.code.into()), Code::CHANGED, "{packet:?}");
    assert!(
        answer.len() <= 3 * request.len(),
        "{} > 3 × {}",
        answer.len(),
        request.len()
    );
}

#[test]
fn a_reload_without_an_edhoc_identity_ends_its_context_and_its_handshakes() {
    let mut pair = Pair::new();
    let context = pair.edhoc(dana_key()).unwrap();
    pair.client.secure_peer(SERVER, context);
    assert_eq!(pair.request(Request::get("whoami")).payload(), b"dana");
    // A new key table alone (a pre-provisioned peer revoked, say) leaves dana's
    // EDHOC context alone.
    assert!(pair.server.set_server_keys(KeyTable::new()));
    assert_eq!(pair.request(Request::get("again")).payload(), b"dana");
    // Dana revoked: the EDHOC configuration no longer lists her.
    assert!(pair.server.set_server_edhoc(Some(ResponderConfig {
        key: server_key(),
        peers: alloc::vec![],
        limits: Limits::default(),
    })));
    let refused = pair.request(Request::get("revoked"));
    assert_eq!(refused.code(), Code::UNAUTHORIZED);
    assert!(pair.served.iter().all(|r| r.request.path() != "revoked"));
    assert!(
        pair.edhoc(dana_key()).is_err(),
        "a new handshake is refused too"
    );
}

/// RFC 9668: message_3 travels with the first OSCORE request (the EDHOC option, and
/// message_3 before the OSCORE payload), as aiocoap sends it by default. The server
/// makes the context, answers the request in it, and sends no message_4. The same
/// request again (a new message ID: no session holds its C_R any more) is refused
/// unprotected, with an EDHOC error, and serves nothing.
#[test]
fn a_combined_edhoc_and_oscore_request_is_answered_in_the_context_it_makes() {
    let mut pair = Pair::new();
    let (initiator, m1) = Initiator::start(dana_key(), server_key().ccs(), [7; 32]).unwrap();
    let m2 = pair.request(Request::post(".well-known/edhoc").with_payload(m1));
    assert_eq!(m2.code(), Code::CHANGED);
    let (m3, keys) = initiator.finish(m2.payload()).unwrap();
    // The well-known payload is C_R (a 5-byte byte string: 6 bytes) and message_3.
    let message_3 = m3[6..].to_vec();
    pair.client.secure_peer(
        SERVER,
        SecurityContext::new(&keys.context_params(), None).unwrap(),
    );
    let id = pair
        .client
        .request(pair.now, SERVER, Request::get("whoami"));
    let sent = pair.client.poll_transmit().unwrap();
    let mut packet = Packet::from_bytes(&sent.bytes).unwrap();
    packet.add_option(
        coap_lite::CoapOption::Unknown(crate::edhoc::EDHOC_OPTION),
        Vec::new(),
    );
    packet.payload = [message_3, packet.payload].concat();
    let combined = packet.to_bytes().unwrap();
    pair.client_sent.push(combined.clone());
    pair.server.handle_datagram(pair.now, CLIENT, &combined);
    pair.run();
    let answer = pair
        .client_events
        .iter()
        .find_map(|e| match e {
            Event::Response { id: i, response } if *i == id => Some(response.clone()),
            _ => None,
        })
        .expect("answered in the new context");
    assert_eq!(answer.code(), Code::CONTENT);
    assert_eq!(answer.payload(), b"dana");
    assert_eq!(pair.served.len(), 1);
    assert_eq!(pair.served[0].identity, Some(dana()));
    assert_eq!(pair.server.held().oscore_contexts, 1);

    let mut again = combined;
    again[2..4].copy_from_slice(&0x7777u16.to_be_bytes());
    pair.server.handle_datagram(pair.now, CLIENT, &again);
    let refusal = Packet::from_bytes(&pair.server.poll_transmit().unwrap().bytes).unwrap();
    assert_eq!(Code(refusal.header.code.into()), Code::BAD_REQUEST);
    assert!(!crate::oscore::is_protected(&refusal));
    assert!(crate::edhoc::parse_error_message(&refusal.payload).is_some());
    assert!(
        pair.server.poll_event().is_none(),
        "the refused request was served"
    );
}

#[test]
fn a_client_sends_message_3_with_its_first_request_and_then_no_more() {
    let mut pair = Pair::new();
    let (initiator, m1) = Initiator::start(dana_key(), server_key().ccs(), [7; 32]).unwrap();
    let m2 = pair.request(Request::post(".well-known/edhoc").with_payload(m1));
    assert_eq!(m2.code(), Code::CHANGED);
    let (message_3, keys) = initiator.finish_combined(m2.payload()).unwrap();
    pair.client.secure_peer_combined(
        SERVER,
        SecurityContext::new(&keys.context_params(), None).unwrap(),
        message_3.clone(),
    );
    let edhoc_option = coap_lite::CoapOption::Unknown(crate::edhoc::EDHOC_OPTION);
    let sent_before = pair.client_sent.len();
    let answer = pair.request(Request::get("whoami"));
    assert_eq!(answer.code(), Code::CONTENT);
    assert_eq!(answer.payload(), b"dana");
    assert_eq!(pair.served[0].identity, Some(dana()));
    assert_eq!(
        pair.client_sent.len(),
        sent_before + 1,
        "one request: message_3 went with it"
    );
    let combined = Packet::from_bytes(pair.client_sent.last().unwrap()).unwrap();
    assert!(combined.get_option(edhoc_option).is_some());
    assert!(combined.payload.starts_with(&message_3));
    // Confirmed: the next request is plain OSCORE.
    let answer = pair.request(Request::get("whoami"));
    assert_eq!(answer.payload(), b"dana");
    let next = Packet::from_bytes(pair.client_sent.last().unwrap()).unwrap();
    assert!(crate::oscore::is_protected(&next));
    assert!(next.get_option(edhoc_option).is_none());
    assert_eq!(pair.served.len(), 2);
}
