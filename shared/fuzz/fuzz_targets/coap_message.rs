//! The CoAP message parser and the whole sans-IO engine (server and client halves) on
//! arbitrary datagrams: `coap::Packet::from_bytes` (checked against coap-lite's), the option helpers, and an
//! `Engine<u8>` that receives the datagrams from a few peers, answers every request
//! (small, block-wise, error, discarded, observed and notified), has a request of its own
//! outstanding, and runs its timers. Nothing may panic; everything the engine sends must
//! parse as CoAP again.
#![no_main]

use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use pehra_shared::api;
use pehra_shared::coap::Packet;
use pehra_shared::coap::{option, BlockValue, Code, Config, Engine, Event, Request, Response};
use pehra_shared::{Duration, Instant};

/// Every datagram the engine sends is a well-formed CoAP message.
fn drain(engine: &mut Engine<u8>) {
    while let Some(t) = engine.poll_transmit() {
        assert!(
            Packet::from_bytes(&t.bytes).is_ok(),
            "the engine sent a datagram that does not parse: {:02x?}",
            t.bytes
        );
    }
}

/// Looks at a packet the way the handlers do.
fn inspect_packet(packet: &Packet) {
    for (_, values) in packet.options() {
        for v in values {
            let _ = option::decode_uint(v);
            let _ = BlockValue::decode(v);
        }
    }
    let _ = packet.to_bytes();
}

fn inspect_request(request: &Request) {
    let _ = request.path();
    let _ = request.queries().count();
    let _ = request.resource_key();
    let _ = request.method();
    let _ = request.observe();
    let _ = request.content_format();
    let _ = api::if_match_version(request);
    let _ = api::decode_request::<pehra_shared::wire::ProduceRequest>(request);
    inspect_packet(request.packet());
}

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    let config = Config {
        block_size: 1 << u.int_in_range(4..=10u32)?,
        max_observers: u.int_in_range(0..=4usize)?,
        max_observers_per_peer: u.int_in_range(0..=2usize)?,
        ..Config::default()
    };
    let mut engine = Engine::new(config, [7; 32]);
    let mut now = Instant::from_millis(u.int_in_range(0..=10_000u64)?);
    // A request of ours towards peer 1, so that answers from it reach the client half.
    if u.arbitrary()? {
        let mut r = Request::get("/a");
        if u.arbitrary()? {
            r = r.with_observe();
        }
        engine.request(now, 1, r);
        drain(&mut engine);
    }
    let steps = u.int_in_range(1..=8u8)?;
    for _ in 0..steps {
        let peer: u8 = u.int_in_range(0..=3)?;
        let len = u.int_in_range(0..=300usize)?;
        let datagram = u.bytes(len.min(u.len()))?;
        if let Ok(packet) = Packet::from_bytes(datagram) {
            inspect_packet(&packet);
        }
        engine.handle_datagram(now, peer, datagram);
        drain(&mut engine);
        while let Some(event) = engine.poll_event() {
            if let Event::Request(r) = event {
                inspect_request(&r.request);
                let answer = match u.int_in_range(0..=4u8)? {
                    0 => Response::content(vec![0xAB; 4]),
                    1 => Response::content(vec![0xCD; 3000]),
                    2 => Response::error(Code::NOT_FOUND, "no"),
                    3 => {
                        engine.discard(now, r.id);
                        continue;
                    }
                    _ => Response::content(Vec::new()).with_max_age(1),
                };
                engine.respond(now, r.id, answer);
                drain(&mut engine);
            }
        }
        if u.arbitrary()? {
            let resource = if u.arbitrary()? { "a" } else { "/a" };
            engine.notify(now, resource, Response::content(vec![1; 20]));
            drain(&mut engine);
        }
        let _ = engine.poll_persist();
        now = now + Duration::from_millis(u.int_in_range(0..=5_000u64)?);
        engine.handle_timeout(now);
        drain(&mut engine);
    }
    // Let every timer run out: the engine must settle.
    for _ in 0..64 {
        match engine.poll_timeout() {
            Some(t) => {
                now = if t > now {
                    t
                } else {
                    now + Duration::from_millis(1)
                };
                engine.handle_timeout(now);
                drain(&mut engine);
                while engine.poll_event().is_some() {}
            }
            None => break,
        }
    }
    let _ = engine.stats();
    let _ = engine.held();
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    // The raw bytes as one datagram, too: the parser alone, which must accept and refuse
    // what coap-lite's does (ours replaced it in the engine), and write back what it read.
    let reference = coap_lite::Packet::from_bytes(data);
    match Packet::from_bytes(data) {
        Ok(packet) => {
            let reference = reference.expect("coap-lite refused a datagram ours parsed");
            assert_eq!(packet.payload, reference.payload);
            assert_eq!(packet.get_token(), reference.get_token());
            assert_eq!(
                packet.to_bytes_unlimited(),
                reference.to_bytes_unlimited().unwrap()
            );
            inspect_packet(&packet);
        }
        Err(e) => assert_eq!(Err(e), reference.map(|_| ())),
    }
    let _ = run(&mut Unstructured::new(data));
});
