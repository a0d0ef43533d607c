//! OSCORE against a man in the middle: a valid protected request (made by a client
//! context, or by a client engine after the Echo round trip) with the fuzzer's byte
//! edits applied, verified by the server context or delivered to the server engine.
//!
//! Invariant: an edited request either fails verification or reaches the application
//! as exactly the request the client sent (method, end-to-end options, payload); only
//! what OSCORE leaves outside the ciphertext on purpose (message ID, type, token, the
//! Class U options Uri-Host, Uri-Port, Proxy-Scheme, Proxy-Uri) may differ. The
//! unedited request always verifies.
#![no_main]

use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use pehra_fuzz::{context, edit, Pair, CLIENT};
use pehra_shared::coap::Packet;
use pehra_shared::coap::{Code, Request};
use std::collections::BTreeMap;

/// Class U options: outside the ciphertext and not integrity-protected (RFC 8613 §4.1).
const OUTER: [u16; 4] = [3, 7, 35, 39];

fn end_to_end(packet: &Packet) -> (u8, BTreeMap<u16, Vec<Vec<u8>>>, Vec<u8>) {
    let options = packet
        .options()
        .filter(|(n, _)| !OUTER.contains(n))
        .map(|(n, v)| (*n, v.iter().cloned().collect()))
        .collect();
    (
        u8::from(packet.header.code),
        options,
        packet.payload.clone(),
    )
}

fn original(u: &mut Unstructured<'_>) -> Result<Request> {
    let mut r = match u.int_in_range(0..=3u8)? {
        0 => Request::get("/z/a/b"),
        1 => Request::post("/produce").with_payload(vec![0xA5; 40]),
        2 => Request::put("/z/x?v=1").with_payload(*b"data"),
        _ => Request::delete("/session/12"),
    };
    if u.arbitrary()? {
        r = r.with_content_format(60);
    }
    if u.arbitrary()? {
        r = r.with_observe();
    }
    Ok(r)
}

/// The context API: protect, edit, unprotect.
fn contexts(u: &mut Unstructured<'_>) -> Result<()> {
    let request = original(u)?;
    let mut client = context(true);
    let mut server = context(false);
    // Some requests before, so the Partial IV is not always 0.
    for _ in 0..u.int_in_range(0..=2u8)? {
        let p = client.protect_request(request.packet()).expect("protects");
        let _ = server.unprotect_request(&p.packet);
    }
    let protected = client.protect_request(request.packet()).expect("protects");
    let bytes = protected.packet.to_bytes().expect("encodes");
    let mut edited = bytes.clone();
    edit(u, &mut edited)?;
    let Ok(packet) = Packet::from_bytes(&edited) else {
        return Ok(());
    };
    let result = server.unprotect_request(&packet);
    if edited == bytes {
        assert!(
            result.is_ok(),
            "the unedited request did not verify: {result:?}"
        );
    }
    if let Ok(verified) = result {
        assert_eq!(
            end_to_end(&verified.packet),
            end_to_end(request.packet()),
            "an edited request verified as a different one:\n{bytes:02x?}\n{edited:02x?}"
        );
        assert!(Code(u8::from(verified.packet.header.code)).is_request());
    }
    Ok(())
}

/// The engines: a client whose context is established, one more request captured,
/// edited and delivered.
fn engines(u: &mut Unstructured<'_>) -> Result<()> {
    let mut pair = Pair::new();
    pair.request(Request::post("/hello").with_payload(*b"!"));
    assert_eq!(pair.served.len(), 1);
    let request = original(u)?;
    pair.deliver = false;
    pair.client_sent.clear();
    pair.client
        .request(pair.now, pehra_fuzz::SERVER, request.clone());
    pair.run();
    let bytes = pair
        .client_sent
        .first()
        .expect("the client sent it")
        .clone();
    let mut edited = bytes.clone();
    edit(u, &mut edited)?;
    pair.served.clear();
    pair.server.handle_datagram(pair.now, CLIENT, &edited);
    pair.serve();
    // The application gets the request only unchanged, and at most once. An edit that
    // strips the OSCORE option makes a plain request: it reaches the application without
    // an identity, as any plain request does (the servers' security layer refuses it with
    // 4.01); it never carries Alice's identity.
    assert!(pair.served.len() <= 1);
    if edited == bytes {
        assert_eq!(pair.served.len(), 1, "the unedited request was not served");
    }
    for r in &pair.served {
        if r.identity.is_none() {
            assert!(!pehra_shared::oscore::is_protected(r.request.packet()));
            continue;
        }
        assert_eq!(r.identity, Some(pehra_fuzz::alice()));
        assert_eq!(r.request.method(), request.method());
        assert_eq!(r.request.path(), request.path());
        assert_eq!(r.request.payload(), request.payload());
        assert_eq!(
            r.request.queries().collect::<Vec<_>>(),
            request.queries().collect::<Vec<_>>()
        );
    }
    // A replay of the edited datagram under a new message ID is never served.
    if edited.len() >= 4 {
        edited[2] ^= 0x55;
        pair.served.clear();
        pair.server.handle_datagram(pair.now, CLIENT, &edited);
        pair.serve();
        assert!(
            pair.served.iter().all(|r| r.identity.is_none()),
            "a replay was served with Alice's identity"
        );
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut u = Unstructured::new(rest);
    let _ = if mode & 1 == 0 {
        contexts(&mut u)
    } else {
        engines(&mut u)
    };
});
