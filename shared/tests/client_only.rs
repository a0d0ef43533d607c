//! The engine without feature `server` (as a device builds it): the client works as
//! ever, a request received is answered with Reset (CON) or ignored (NON).
//!
//! Only compiled when `server` is off: `cargo test -p pehra-shared --test client_only`
//! (a workspace build turns `server` on through the brokers' `std`).
#![cfg(not(feature = "server"))]

use pehra_shared::coap::{Code, Config, Engine, Event, IncomingId, Request, Response};
use pehra_shared::Instant;

const GATEWAY: u32 = 7;

fn engine() -> Engine<u32> {
    Engine::new(Config::default(), [3; 32])
}

#[test]
fn client_request_gets_its_piggybacked_response() {
    let mut e = engine();
    let now = Instant::from_millis(1);
    let id = e.request(now, GATEWAY, Request::get("/x"));
    let sent = e.poll_transmit().expect("the request");
    assert_eq!(sent.peer, GATEWAY);
    let b = &sent.bytes;
    assert_eq!(b[0] >> 4, 0x4, "version 1, CON");
    let tkl = usize::from(b[0] & 0xf);
    let mut ack = vec![0x60 | b[0] & 0xf, Code::CONTENT.0, b[2], b[3]];
    ack.extend_from_slice(&b[4..4 + tkl]);
    ack.extend_from_slice(&[0xff, b'h', b'i']);
    e.handle_datagram(now, GATEWAY, &ack);
    match e.poll_event() {
        Some(Event::Response { id: got, response }) => {
            assert_eq!(got, id);
            assert_eq!(response.code(), Code::CONTENT);
            assert_eq!(response.payload(), b"hi");
        }
        other => panic!("expected the response, got {other:?}"),
    }
    assert_eq!(e.pending_requests(), 0);
    assert_eq!(e.poll_timeout(), None);
}

#[test]
fn client_request_times_out_after_retransmissions() {
    let mut e = engine();
    let id = e.request(Instant::ZERO, GATEWAY, Request::get("/x"));
    let mut sent = 0;
    while let Some(at) = e.poll_timeout() {
        while e.poll_transmit().is_some() {
            sent += 1;
        }
        e.handle_timeout(at);
    }
    assert_eq!(sent, 1 + usize::from(Config::default().max_retransmit));
    assert!(matches!(
        e.poll_event(),
        Some(Event::Failed { id: got, .. }) if got == id
    ));
}

#[test]
fn received_con_request_is_reset_and_non_ignored() {
    let mut e = engine();
    let now = Instant::from_millis(1);
    // CON GET, MID 0x1234, token AA.
    e.handle_datagram(now, GATEWAY, &[0x41, 0x01, 0x12, 0x34, 0xaa]);
    let rst = e.poll_transmit().expect("a Reset");
    assert_eq!(rst.bytes, vec![0x70, 0x00, 0x12, 0x34]);
    assert_eq!(e.stats().resets_sent, 1);
    // NON GET: nothing at all.
    e.handle_datagram(now, GATEWAY, &[0x51, 0x01, 0x12, 0x35, 0xaa]);
    assert!(e.poll_transmit().is_none());
    assert!(e.poll_event().is_none());
    assert_eq!(e.pending_incoming(), 0);
    assert_eq!(e.poll_timeout(), None);
    assert!(!e.respond(now, IncomingId(1), Response::new(Code::CONTENT)));
    assert!(!e.discard(now, IncomingId(1)));
    // An empty CON (a ping) is still answered with Reset.
    e.handle_datagram(now, GATEWAY, &[0x40, 0x00, 0x12, 0x36]);
    assert_eq!(
        e.poll_transmit().unwrap().bytes,
        vec![0x70, 0x00, 0x12, 0x36]
    );
}
