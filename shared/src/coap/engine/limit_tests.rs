//! The server's limits in virtual time: many peers (`u16` addresses) flooding one
//! engine with observe registrations, large GETs, uploads and unanswered requests. What
//! it holds for them stays within its [`Config`] limits, and a refusal is one a standard
//! client understands (no Observe option, or 5.03 with Max-Age).

use super::*;
use crate::coap::{option, Method};
use alloc::vec::Vec;
use coap_lite::CoapOption;

/// A CON request from a peer, encoded as a client would send it.
fn datagram(mid: u16, token: u32, request: Request) -> Vec<u8> {
    let packet = request.packet().clone();
    let kind = if request.is_confirmable() {
        MessageType::Confirmable
    } else {
        MessageType::NonConfirmable
    };
    Engine::<u16>::encode(packet, kind, mid, &token.to_be_bytes())
}

/// The responses the server sent, parsed.
fn sent(server: &mut Engine<u16>) -> Vec<(u16, Packet)> {
    let mut out = Vec::new();
    while let Some(t) = server.poll_transmit() {
        out.push((t.peer, Packet::from_bytes(&t.bytes).unwrap()));
    }
    out
}

/// A server that answers every request at once with `body`.
fn answer_all(server: &mut Engine<u16>, now: Instant, body: &[u8]) {
    while let Some(event) = server.poll_event() {
        if let Event::Request(r) = event {
            server.respond(now, r.id, Response::content(body.to_vec()));
        }
    }
}

fn small_limits() -> Config {
    Config {
        max_observers: 100,
        max_observers_per_peer: 4,
        max_cached_body_bytes: 64 * 1024,
        max_upload_bytes: 8 * 1024,
        max_pending_requests: 50,
        ..Config::default()
    }
}

#[test]
fn observers_beyond_the_per_peer_and_global_limits_are_answered_without_observe() {
    let now = Instant::from_millis(1_000);
    let mut server = Engine::<u16>::new(small_limits(), [7; 32]);
    let mut mid = 0;
    // One peer registers 10 observations: 4 are kept.
    for token in 0..10 {
        mid += 1;
        let get = Request::get("/t").with_observe();
        server.handle_datagram(now, 1, &datagram(mid, token, get));
        answer_all(&mut server, now, b"v");
    }
    let answers = sent(&mut server);
    let observing = answers
        .iter()
        .filter(|(_, p)| p.get_option(CoapOption::Observe).is_some())
        .count();
    assert_eq!(observing, 4);
    assert_eq!(answers.len(), 10, "every request is still answered");
    assert_eq!(server.observer_count("t"), 4);
    // 500 peers, one each: the global limit holds.
    for peer in 2..502u16 {
        mid += 1;
        let get = Request::get("/t").with_observe();
        server.handle_datagram(now, peer, &datagram(mid, 1, get));
        answer_all(&mut server, now, b"v");
    }
    sent(&mut server);
    assert_eq!(server.held().observers, 100);
    // A change costs one datagram per kept observer, not per request ever made.
    assert_eq!(server.notify(now, "t", Response::content(*b"w")), 100);
    assert_eq!(sent(&mut server).len(), 100);
}

#[test]
fn cached_block2_bodies_stay_within_their_byte_budget() {
    let mut now = Instant::from_millis(1_000);
    let mut server = Engine::<u16>::new(small_limits(), [7; 32]);
    let big = alloc::vec![b'x'; 20 * 1024];
    // 1,000 GETs of a 20 KiB body from one peer, each a new transfer (new token).
    for i in 0..1_000u32 {
        now += Duration::from_millis(1);
        server.handle_datagram(now, 9, &datagram(i as u16, i, Request::get("/big")));
        answer_all(&mut server, now, &big);
        let answers = sent(&mut server);
        assert_eq!(answers.len(), 1);
        assert_eq!(answers[0].1.payload.len(), 1024, "the first block only");
        assert!(server.held().cached_body_bytes <= 64 * 1024);
    }
    // The latest transfer is still served from the cache: block 1 without the handler.
    let mut next = Request::get("/big");
    next.set_option(
        option::BLOCK2,
        BlockValue::new(1, false, 6).unwrap().encode(),
    );
    server.handle_datagram(now, 9, &datagram(5_000, 999, next));
    assert!(server.poll_event().is_none(), "answered from the cache");
    let answers = sent(&mut server);
    assert_eq!(answers[0].1.payload, big[1024..2048]);
}

#[test]
fn the_block2_index_stays_bounded_when_many_peers_read_large_bodies() {
    let mut now = Instant::from_millis(1_000);
    let mut server = Engine::<u16>::new(small_limits(), [7; 32]);
    let big = alloc::vec![b'x'; 20 * 1024];
    // 5,000 peers, each reading its own resource: only three bodies fit the budget.
    for peer in 0..5_000u16 {
        now += Duration::from_millis(1);
        let path = alloc::format!("/big/{peer}");
        server.handle_datagram(now, peer, &datagram(1, 1, Request::get(&path)));
        answer_all(&mut server, now, &big);
        sent(&mut server);
        assert!(server.latest_download.len() <= server.downloads.len() + 256);
    }
}

#[test]
fn uploads_past_their_byte_budget_get_5_03_with_max_age() {
    let now = Instant::from_millis(1_000);
    let mut server = Engine::<u16>::new(small_limits(), [7; 32]);
    let block = alloc::vec![b'u'; 1024];
    let mut codes = Vec::new();
    // Twenty peers each start an upload (block 0 of more): 8 KiB hold eight of them.
    for peer in 0..20u16 {
        let mut put = Request::new(Method::Put, "/up").with_payload(block.clone());
        put.set_option(
            option::BLOCK1,
            BlockValue::new(0, true, 6).unwrap().encode(),
        );
        server.handle_datagram(now, peer, &datagram(peer, 1, put));
        let answers = sent(&mut server);
        let code = Code(answers[0].1.header.code.into());
        if code == Code::SERVICE_UNAVAILABLE {
            assert!(answers[0].1.get_option(CoapOption::MaxAge).is_some());
        }
        codes.push(code);
    }
    assert_eq!(codes.iter().filter(|c| **c == Code::CONTINUE).count(), 8);
    assert_eq!(
        codes
            .iter()
            .filter(|c| **c == Code::SERVICE_UNAVAILABLE)
            .count(),
        12
    );
    assert_eq!(server.held().upload_bytes, 8 * 1024);
}

#[test]
fn requests_past_the_pending_limit_get_5_03_at_once() {
    let now = Instant::from_millis(1_000);
    let mut server = Engine::<u16>::new(small_limits(), [7; 32]);
    for i in 0..80u16 {
        server.handle_datagram(now, i, &datagram(i, 1, Request::get("/slow")));
    }
    // The application has not answered any: 50 wait, 30 were refused.
    let mut waiting = 0;
    while let Some(Event::Request(_)) = server.poll_event() {
        waiting += 1;
    }
    assert_eq!(waiting, 50);
    assert_eq!(server.held().pending_requests, 50);
    let refused = sent(&mut server)
        .into_iter()
        .filter(|(_, p)| Code(p.header.code.into()) == Code::SERVICE_UNAVAILABLE)
        .count();
    assert_eq!(refused, 30);
}
