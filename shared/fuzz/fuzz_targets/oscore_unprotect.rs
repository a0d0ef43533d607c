//! OSCORE verification on arbitrary input: the OSCORE option decoder, a server context's
//! `unprotect_request`, a client's `unprotect_response` for a request it protected, and
//! an engine with a server key table (`set_server_security`) fed arbitrary datagrams,
//! from a stranger or after a real client established its context (Echo done).
//!
//! Invariants: nothing panics; an option that decodes re-encodes to the same bytes; an
//! arbitrary message never verifies (the fuzzer cannot forge an AES-CCM tag) so nothing
//! reaches the application with an identity; the engine sends only parseable CoAP.
#![no_main]

use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use pehra_fuzz::{context, Pair, CLIENT};
use pehra_shared::coap::Packet;
use pehra_shared::coap::{Event, Request};
use pehra_shared::oscore::{self, OscoreOption};
use pehra_shared::{Duration, Instant};
use std::sync::OnceLock;

struct Contexts {
    server: oscore::SecurityContext,
    client: oscore::SecurityContext,
    binding: oscore::RequestBinding,
}

fn contexts() -> &'static Contexts {
    static C: OnceLock<Contexts> = OnceLock::new();
    C.get_or_init(|| {
        let mut client = context(true);
        let protected = client
            .protect_request(Request::get("/a").packet())
            .expect("protects");
        Contexts {
            server: context(false),
            client,
            binding: protected.binding,
        }
    })
}

fn engine(u: &mut Unstructured<'_>) -> Result<()> {
    let mut pair = Pair::new();
    if u.arbitrary()? {
        // A real client first: its context is then known and past the Echo check.
        pair.request(Request::post("/hello").with_payload(*b"!"));
        assert_eq!(pair.served.len(), 1, "the real request was served once");
    }
    let served = pair.served.len();
    let mut now = pair.now;
    for _ in 0..u.int_in_range(1..=6u8)? {
        let peer = if u.arbitrary()? { CLIENT } else { 9 };
        let len = u.int_in_range(0..=200usize)?;
        let datagram = u.bytes(len.min(u.len()))?;
        pair.server.handle_datagram(now, peer, datagram);
        while let Some(t) = pair.server.poll_transmit() {
            assert!(Packet::from_bytes(&t.bytes).is_ok());
        }
        while let Some(e) = pair.server.poll_event() {
            if let Event::Request(r) = e {
                assert!(
                    r.identity.is_none(),
                    "an arbitrary datagram reached the application with an identity: {r:?}"
                );
                pair.server
                    .respond(now, r.id, pehra_shared::coap::Response::content(vec![1]));
            }
        }
        let _ = pair.server.poll_persist();
        now = now + Duration::from_millis(u.int_in_range(0..=3_000u64)?);
        pair.server.handle_timeout(now);
        while pair.server.poll_transmit().is_some() {}
    }
    assert_eq!(pair.served.len(), served);
    let _ = Instant::ZERO;
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    if let Ok(option) = OscoreOption::decode(data) {
        assert_eq!(
            option.encode(),
            data,
            "the OSCORE option does not round trip"
        );
    }
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => {
            if let Ok(packet) = Packet::from_bytes(rest) {
                let _ = oscore::is_protected(&packet);
                let _ = oscore::oscore_option(&packet);
                let mut server = contexts().server.clone();
                if let Ok(v) = server.unprotect_request(&packet) {
                    panic!("an arbitrary request verified: {v:?}");
                }
                if let Err(e) = server.unprotect_request(&packet) {
                    let _ = e.error_response();
                }
            }
        }
        1 => {
            if let Ok(packet) = Packet::from_bytes(rest) {
                let c = contexts();
                let mut client = c.client.clone();
                let mut binding = c.binding.clone();
                if let Ok(v) = client.unprotect_response(&mut binding, &packet) {
                    panic!("an arbitrary response verified: {v:?}");
                }
            }
        }
        _ => {
            let _ = engine(&mut Unstructured::new(rest));
        }
    }
});
