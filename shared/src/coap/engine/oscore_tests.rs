//! OSCORE through the engine, in virtual time: a client engine with a context towards
//! the server, a server engine with a key table, and an attacker who can replay, forge
//! and answer in the clear. The application sees only verified requests, with the
//! sender's identity, and the client only verified answers.

use super::*;
use crate::coap::Method;
use crate::oscore::{ContextParams, SecurityContext};
use crate::security::{self, Identity, KeyTable, PeerKey, Role};
use alloc::{vec, vec::Vec};
use coap_lite::CoapOption;

const CLIENT: u8 = 1;
const SERVER: u8 = 2;
const ALICE_KEY: [u8; 32] = [0xA1; 32];

fn alice() -> Identity {
    Identity {
        name: "alice".into(),
        role: Role::Client,
        kid: security::kid(Role::Client, 1),
    }
}

fn server_kid() -> Vec<u8> {
    security::broker_kid(1)
}

fn server_security(floor: u64) -> ServerSecurity {
    let mut keys = KeyTable::new();
    keys.insert(PeerKey {
        identity: alice(),
        secret: security::pairwise_secret(&ALICE_KEY, &server_kid()),
    });
    ServerSecurity::new(server_kid(), keys, floor)
}

/// Alice's context towards the server, for a run whose random ID Context is `run`.
fn alice_context(identity_key: &[u8; 32], run: u64) -> SecurityContext {
    let secret = security::pairwise_secret(identity_key, &server_kid());
    let id_context = client_id_context(run);
    let params = ContextParams {
        master_secret: &secret,
        master_salt: &[],
        id_context: Some(&id_context),
        sender_id: &alice().kid,
        recipient_id: &server_kid(),
    };
    SecurityContext::new(&params, None).unwrap()
}

/// Two engines, the datagrams between them, and what each side saw.
struct Pair {
    now: Instant,
    client: Engine<u8>,
    server: Engine<u8>,
    /// Every datagram the client sent, in order.
    client_sent: Vec<Vec<u8>>,
    /// Requests the server application got (it answers each with its path and payload).
    served: Vec<IncomingRequest<u8>>,
    client_events: Vec<Event<u8>>,
    /// Ceilings the server asked to store, and how many datagrams it had sent by then.
    persisted: Vec<(u64, usize)>,
    server_sent: usize,
}

impl Pair {
    fn new(run: u64) -> Pair {
        Self::with_server_config(run, Config::default())
    }

    fn with_server_config(run: u64, server_config: Config) -> Pair {
        let mut client = Engine::new(Config::default(), [1; 32]);
        client.secure_peer(SERVER, alice_context(&ALICE_KEY, run));
        let mut server = Engine::new(server_config, [2; 32]);
        server.set_server_security(server_security(0));
        Pair {
            now: Instant::from_millis(1_000),
            client,
            server,
            client_sent: Vec::new(),
            served: Vec::new(),
            client_events: Vec::new(),
            persisted: Vec::new(),
            server_sent: 0,
        }
    }

    /// Delivers everything until both sides are quiet.
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
                let mut body = r.request.path().into_bytes();
                body.extend_from_slice(r.request.payload());
                let answer = if r.request.path() == "big" {
                    Response::content(vec![b'b'; 5000])
                } else {
                    Response::content(body)
                };
                self.server.respond(self.now, r.id, answer);
                self.served.push(r);
            }
            if let Some(ceiling) = self.server.poll_persist() {
                self.persisted.push((ceiling, self.server_sent));
            }
            while let Some(t) = self.server.poll_transmit() {
                moved = true;
                self.server_sent += 1;
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

    /// The payloads of the notifications the client delivered for the observation `id`.
    fn notifications(&self, id: RequestId) -> Vec<Vec<u8>> {
        self.client_events
            .iter()
            .filter_map(|e| match e {
                Event::Notification { id: i, response } if *i == id => {
                    Some(response.payload().to_vec())
                }
                _ => None,
            })
            .collect()
    }

    fn request(&mut self, request: Request) -> RequestId {
        let id = self.client.request(self.now, SERVER, request);
        self.run();
        id
    }

    fn response(&self, id: RequestId) -> Option<&Response> {
        self.client_events.iter().find_map(|e| match e {
            Event::Response { id: i, response } if *i == id => Some(response),
            _ => None,
        })
    }
}

#[test]
fn a_protected_request_reaches_the_application_once_with_its_identity() {
    let mut pair = Pair::new(7);
    let id = pair.request(Request::post("/hello").with_payload(*b"!"));
    assert_eq!(pair.response(id).unwrap().payload(), b"hello!");
    // The first request of a context after the server's start was answered with Echo
    // and repeated: two protected requests on the wire, one reached the application.
    assert_eq!(pair.client_sent.len(), 2);
    assert_eq!(pair.served.len(), 1);
    assert_eq!(pair.served[0].identity, Some(alice()));
    // Nothing of the request is readable on the wire.
    for bytes in &pair.client_sent {
        let packet = Packet::from_bytes(bytes).unwrap();
        assert!(crate::oscore::is_protected(&packet));
        assert_eq!(Code(packet.header.code.into()), Code::POST);
        assert!(!bytes.windows(5).any(|w| w == b"hello"));
    }
    // The next request needs no Echo.
    let id = pair.request(Request::get("/again"));
    assert_eq!(pair.response(id).unwrap().payload(), b"again");
    assert_eq!(pair.client_sent.len(), 3);
    assert_eq!(pair.server.held().oscore_contexts, 1);
}

#[test]
fn a_replayed_request_with_a_new_message_id_is_refused_and_not_acted_on() {
    let mut pair = Pair::new(7);
    pair.request(Request::post("/pay").with_payload(*b"10"));
    assert_eq!(pair.served.len(), 1);
    let mut replay = pair.client_sent.last().unwrap().clone();
    for mid in [0x1234u16, 0x4321] {
        replay[2..4].copy_from_slice(&mid.to_be_bytes());
        pair.server.handle_datagram(pair.now, 9, &replay);
        let answer = pair.server.poll_transmit().unwrap();
        let answer = Packet::from_bytes(&answer.bytes).unwrap();
        assert_eq!(Code(answer.header.code.into()), Code::UNAUTHORIZED);
        assert!(
            pair.server.poll_event().is_none(),
            "the replay reached the application"
        );
    }
}

#[test]
fn a_wrong_key_or_an_unknown_kid_gets_a_plain_error_and_never_reaches_the_application() {
    // The right kid with the wrong key: "Decryption failed", 4.00 (RFC 8613 §8.2).
    let mut pair = Pair::new(7);
    pair.client
        .secure_peer(SERVER, alice_context(&[0xEE; 32], 7));
    let id = pair.request(Request::get("/secret"));
    assert!(pair.served.is_empty());
    let answer = pair.response(id).expect("the plain error is passed on");
    assert_eq!(answer.code(), Code::BAD_REQUEST);
    // A kid the server does not know: "Security context not found", 4.01.
    let secret = security::pairwise_secret(&ALICE_KEY, &server_kid());
    let stranger = security::kid(Role::Client, 99);
    let params = ContextParams {
        master_secret: &secret,
        master_salt: &[],
        id_context: None,
        sender_id: &stranger,
        recipient_id: &server_kid(),
    };
    pair.client
        .secure_peer(SERVER, SecurityContext::new(&params, None).unwrap());
    let id = pair.request(Request::get("/secret"));
    assert!(pair.served.is_empty());
    assert_eq!(pair.response(id).unwrap().code(), Code::UNAUTHORIZED);
}

#[test]
fn a_plain_request_reaches_the_application_without_identity() {
    let mut pair = Pair::new(7);
    let mut plain = Engine::<u8>::new(Config::default(), [3; 32]);
    plain.request(pair.now, SERVER, Request::get("/.well-known/core"));
    let datagram = plain.poll_transmit().unwrap();
    pair.server.handle_datagram(pair.now, 3, &datagram.bytes);
    let Some(Event::Request(request)) = pair.server.poll_event() else {
        panic!("no request")
    };
    assert_eq!(request.identity, None);
}

#[test]
fn an_answer_in_the_clear_to_a_protected_request_is_refused() {
    let mut pair = Pair::new(7);
    let id = pair
        .client
        .request(pair.now, SERVER, Request::get("/balance"));
    let sent = pair.client.poll_transmit().unwrap();
    let request = Packet::from_bytes(&sent.bytes).unwrap();
    // An attacker answers first, in the clear, with the right message ID and token.
    let mut forged = Packet::new();
    forged.header.set_version(1);
    forged.header.set_type(MessageType::Acknowledgement);
    forged.header.message_id = request.header.message_id;
    forged.header.code = coap_lite::MessageClass::Response(coap_lite::ResponseType::Content);
    forged.set_token(request.get_token().to_vec());
    forged.payload = b"1000000".to_vec();
    pair.client
        .handle_datagram(pair.now, SERVER, &forged.to_bytes().unwrap());
    assert_eq!(
        pair.client.poll_event(),
        Some(Event::Failed {
            id,
            error: ExchangeError::Unprotected
        })
    );
}

/// A server's own sequence numbers may start anywhere (a random floor when it has no
/// stored ceiling). Where the Partial IV's low bits look older than the registration
/// response's Observe value by RFC 7641's arithmetic, notifications were once dropped
/// as stale: an observer saw the first answer and nothing after.
#[test]
fn notifications_arrive_wherever_the_servers_own_numbers_start() {
    for floor in [0, (1 << 35) + 0x00F0_0000, (1 << 32) + 0x00FF_FFFE] {
        let mut pair = Pair::new(11);
        pair.server.set_server_security(server_security(floor));
        let id = pair.request(Request::new(Method::Get, "/t").with_observe());
        for n in 0..3u8 {
            let now = pair.now;
            pair.server
                .notify(now, "t", Response::content(vec![b'n', b'0' + n]));
            pair.run();
        }
        assert_eq!(
            pair.notifications(id),
            [
                b"t".to_vec(),
                b"n0".to_vec(),
                b"n1".to_vec(),
                b"n2".to_vec()
            ],
            "floor {floor:#x}"
        );
    }
}

#[test]
fn observations_and_block_wise_answers_are_protected_end_to_end() {
    let mut pair = Pair::new(7);
    let big = pair.request(Request::get("/big"));
    assert_eq!(pair.response(big).unwrap().payload(), vec![b'b'; 5000]);
    let id = pair.request(Request::new(Method::Get, "/t").with_observe());
    for n in 0..3u8 {
        let now = pair.now;
        assert_eq!(
            pair.server
                .notify(now, "t", Response::content(vec![b'n', b'0' + n])),
            1
        );
        pair.run();
    }
    assert_eq!(
        pair.notifications(id),
        [
            b"t".to_vec(),
            b"n0".to_vec(),
            b"n1".to_vec(),
            b"n2".to_vec()
        ]
    );
    // The Echo answer and each notification used a Partial IV of the server's own: a
    // ceiling above the first (0, then 4096 ahead) was to be stored before the server
    // sent anything at all.
    assert_eq!(pair.persisted.first(), Some(&(4097, 0)));
}

#[test]
fn a_protected_large_answer_from_a_broker_like_server_goes_block_wise() {
    // The server sends up to 32 KiB in one datagram to those who ask for it; this
    // client (RFC 7252's 1 KiB) does not, and gets every answer in blocks.
    let mut pair = Pair::with_server_config(
        3,
        Config {
            max_payload: 32 * 1024,
            ..Config::default()
        },
    );
    let mut sizes = Vec::new();
    let big = pair.client.request(pair.now, SERVER, Request::get("/big"));
    loop {
        let mut moved = false;
        while let Some(t) = pair.client.poll_transmit() {
            moved = true;
            pair.server.handle_datagram(pair.now, CLIENT, &t.bytes);
        }
        while let Some(e) = pair.server.poll_event() {
            moved = true;
            if let Event::Request(r) = e {
                let now = pair.now;
                pair.server
                    .respond(now, r.id, Response::content(vec![b'b'; 5000]));
            }
        }
        while let Some(t) = pair.server.poll_transmit() {
            moved = true;
            sizes.push(t.bytes.len());
            pair.client.handle_datagram(pair.now, SERVER, &t.bytes);
        }
        while let Some(e) = pair.client.poll_event() {
            moved = true;
            pair.client_events.push(e);
        }
        if !moved {
            break;
        }
    }
    assert_eq!(
        pair.response(big).expect("answered").payload(),
        vec![b'b'; 5000]
    );
    assert!(sizes.len() > 5, "block-wise: {sizes:?}");
    assert!(sizes.iter().all(|s| *s <= 1152), "{sizes:?}");
}

#[test]
fn after_a_server_restart_its_numbers_start_above_the_stored_ceiling_and_echo_again() {
    let mut pair = Pair::new(7);
    let id = pair.request(Request::get("/t").with_observe());
    let now = pair.now;
    pair.server.notify(now, "t", Response::content(*b"x"));
    pair.run();
    let (stored, _) = *pair.persisted.last().unwrap();
    assert!(pair.response(id).is_none(), "still observing");
    // The server restarts from the stored ceiling; the client goes on in its context.
    let mut restarted = Engine::new(Config::default(), [9; 32]);
    restarted.set_server_security(server_security(stored));
    pair.server = restarted;
    pair.served.clear();
    let sent_before = pair.client_sent.len();
    let id = pair.request(Request::get("/after"));
    assert_eq!(pair.response(id).unwrap().payload(), b"after");
    assert_eq!(
        pair.client_sent.len() - sent_before,
        2,
        "an Echo round trip"
    );
    assert_eq!(pair.served.len(), 1);
    // The Echo answer used the server's own Partial IV, at or above the stored ceiling.
    let ceiling_now = pair.persisted.last().unwrap().0;
    assert!(ceiling_now > stored);
}

#[test]
fn a_plain_peer_gets_at_most_three_times_its_request_until_it_echoes() {
    use crate::coap::link_format::Link;
    let now = Instant::from_millis(1_000);
    let mut server = Engine::<u8>::new(Config::default(), [2; 32]);
    server.set_server_security(server_security(0));
    server.set_links(
        (0..40)
            .map(|i| Link::new(&alloc::format!("resource-{i}")).attr("rt", "test.thing"))
            .collect(),
    );
    // Each request from a fresh plain client engine (its own message IDs).
    let mut seed = 10u8;
    let mut ask = |server: &mut Engine<u8>, from: u8, request: Request| {
        seed += 1;
        let mut plain = Engine::<u8>::new(Config::default(), [seed; 32]);
        plain.request(now, SERVER, request);
        let sent = plain.poll_transmit().unwrap();
        server.handle_datagram(now, from, &sent.bytes);
        while let Some(Event::Request(r)) = server.poll_event() {
            let diagnostic = alloc::vec![b'x'; 500];
            server.respond(
                now,
                r.id,
                Response::new(Code::FORBIDDEN).with_payload(diagnostic),
            );
        }
        let answer = server.poll_transmit().unwrap();
        (sent.bytes.len(), answer.bytes)
    };
    // Discovery: the link list is far more than three times the request.
    let (asked, answer) = ask(&mut server, 3, Request::get("/.well-known/core"));
    assert!(answer.len() <= 3 * asked, "{} > 3 x {asked}", answer.len());
    let answer = Packet::from_bytes(&answer).unwrap();
    assert_eq!(Code(answer.header.code.into()), Code::UNAUTHORIZED);
    let echo = answer
        .get_option(CoapOption::Unknown(ECHO))
        .unwrap()
        .first()
        .unwrap()
        .clone();
    // The same client sends the Echo value back: its address is validated.
    let again = Request::get("/.well-known/core").with_option(ECHO, echo.clone());
    let (_, answer) = ask(&mut server, 3, again);
    let answer = Packet::from_bytes(&answer).unwrap();
    assert_eq!(Code(answer.header.code.into()), Code::CONTENT);
    assert!(answer.payload.len() > 1000);
    // From another address the value is worthless.
    let forged = Request::get("/.well-known/core").with_option(ECHO, echo);
    let (_, answer) = ask(&mut server, 4, forged);
    let answer = Packet::from_bytes(&answer).unwrap();
    assert_eq!(Code(answer.header.code.into()), Code::UNAUTHORIZED);
    // A long error to a plain request keeps its code and loses its diagnostic.
    let (asked, answer) = ask(&mut server, 3, Request::get("/anything"));
    assert!(answer.len() <= 3 * asked, "{} > 3 x {asked}", answer.len());
    let answer = Packet::from_bytes(&answer).unwrap();
    assert_eq!(Code(answer.header.code.into()), Code::FORBIDDEN);
    assert!(answer.payload.is_empty());
}

/// A plain peer that declares the large-datagram option (Pehra-Max-Payload) to a server
/// that sends up to [`PEER_MAX_PAYLOAD`](crate::coap::PEER_MAX_PAYLOAD) in one datagram
/// (brokers, the zookeeper) still gets at most three times its request until it has
/// echoed: the option is no way around the amplification budget.
#[test]
fn the_large_datagram_option_does_not_lift_a_plain_peers_budget() {
    let now = Instant::from_millis(1_000);
    let config = Config {
        max_payload: crate::coap::PEER_MAX_PAYLOAD,
        ..Config::default()
    };
    let mut server = Engine::<u8>::new(config, [2; 32]);
    server.set_server_security(server_security(0));
    let mut plain = Engine::<u8>::new(Config::default(), [9; 32]);
    let request = Request::get("/znode").with_option(
        crate::coap::option::MAX_PAYLOAD,
        u32::try_from(crate::coap::PEER_MAX_PAYLOAD)
            .unwrap()
            .to_be_bytes()
            .to_vec(),
    );
    plain.request(now, SERVER, request);
    let sent = plain.poll_transmit().unwrap();
    server.handle_datagram(now, 3, &sent.bytes);
    let Some(Event::Request(r)) = server.poll_event() else {
        panic!("the plain request reaches the application");
    };
    server.respond(now, r.id, Response::content(alloc::vec![b'v'; 20 * 1024]));
    let answer = server.poll_transmit().unwrap();
    assert!(
        answer.bytes.len() <= 3 * sent.bytes.len(),
        "{} > 3 x {}",
        answer.bytes.len(),
        sent.bytes.len()
    );
    let answer = Packet::from_bytes(&answer.bytes).unwrap();
    assert_eq!(Code(answer.header.code.into()), Code::UNAUTHORIZED);
    assert!(answer.get_option(CoapOption::Unknown(ECHO)).is_some());
}

/// The Partial IVs of every protected message in `datagrams` (those that carry one).
fn partial_ivs(datagrams: &[Vec<u8>]) -> Vec<u64> {
    datagrams
        .iter()
        .filter_map(|bytes| {
            let packet = coap_lite::Packet::from_bytes(bytes).ok()?;
            let value = packet
                .get_option(CoapOption::Unknown(crate::oscore::OSCORE))?
                .front()?
                .clone();
            let option = crate::oscore::OscoreOption::decode(&value).ok()?;
            Some(crate::oscore::decode_partial_iv(&option.partial_iv?))
        })
        .collect()
}

#[test]
fn a_context_dropped_for_room_and_derived_again_never_reuses_a_partial_iv() {
    // One context kept at a time: alice's two runs (two ID Contexts) push each other
    // out, and each comes back to a context derived again from the same secret. Every
    // derivation must continue above the numbers any context used (a repeated Partial
    // IV under the same key is a repeated AES-CCM nonce).
    let mut security = server_security(0);
    security.max_contexts = 1;
    let mut server = Engine::new(Config::default(), [2; 32]);
    server.set_server_security(security);
    let mut clients: Vec<(u8, Engine<u8>)> = [7u64, 8]
        .iter()
        .map(|&run| {
            let mut client = Engine::new(Config::default(), [1; 32]);
            client.secure_peer(SERVER, alice_context(&ALICE_KEY, run));
            (u8::try_from(run).unwrap(), client)
        })
        .collect();
    let now = Instant::from_millis(1_000);
    let mut to_client: BTreeMap<u8, Vec<Vec<u8>>> = BTreeMap::new();
    for round in 0..3 {
        for (peer, client) in clients.iter_mut() {
            let id = client.request(now, SERVER, Request::get("/t"));
            let mut answered = false;
            for _ in 0..10 {
                while let Some(t) = client.poll_transmit() {
                    server.handle_datagram(now, *peer, &t.bytes);
                }
                while let Some(e) = server.poll_event() {
                    if let Event::Request(r) = e {
                        server.respond(now, r.id, Response::content(*b"ok"));
                    }
                }
                while server.poll_persist().is_some() {}
                while let Some(t) = server.poll_transmit() {
                    to_client.entry(t.peer).or_default().push(t.bytes.clone());
                    client.handle_datagram(now, SERVER, &t.bytes);
                }
                while let Some(e) = client.poll_event() {
                    answered |= matches!(e, Event::Response { id: i, .. } if i == id);
                }
            }
            assert!(answered, "round {round}, run {peer}: no answer");
        }
    }
    for (peer, sent) in &to_client {
        let mut ivs = partial_ivs(sent);
        let count = ivs.len();
        assert!(count >= 3, "run {peer}: an Echo answer each round");
        ivs.sort_unstable();
        ivs.dedup();
        assert_eq!(ivs.len(), count, "run {peer}: a Partial IV used twice");
    }
}

#[test]
fn new_keys_lock_out_a_revoked_peer_at_once_and_let_it_back_when_added_again() {
    let mut pair = Pair::new(7);
    let id = pair.request(Request::get("/before"));
    assert_eq!(pair.response(id).unwrap().payload(), b"before");
    // Revoked: the key table no longer has alice. Her kept context goes with it.
    assert!(pair.server.set_server_keys(KeyTable::new()));
    let id = pair.request(Request::get("/revoked"));
    assert!(
        pair.served.iter().all(|r| r.request.path() != "revoked"),
        "a revoked peer reached the application"
    );
    assert_eq!(
        pair.response(id).map(|r| r.code()),
        Some(Code::UNAUTHORIZED)
    );
    // Rotated: a new key for alice. Her old context is not accepted.
    let mut rotated = KeyTable::new();
    rotated.insert(PeerKey {
        identity: alice(),
        secret: security::pairwise_secret(&[0xB2; 32], &server_kid()),
    });
    pair.server.set_server_keys(rotated);
    let id = pair.request(Request::get("/old-key"));
    assert!(pair.served.iter().all(|r| r.request.path() != "old-key"));
    // RFC 8613 §8.2: a request that does not decrypt gets 4.00.
    assert_eq!(pair.response(id).map(|r| r.code()), Some(Code::BAD_REQUEST));
    // Her key back: served again.
    pair.server.set_server_keys(server_security(0).keys);
    let id = pair.request(Request::get("/back"));
    assert_eq!(pair.response(id).unwrap().payload(), b"back");
}
