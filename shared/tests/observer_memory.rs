//! What a server engine holds, in real heap bytes, for many observers of a resource with
//! a large representation (an observer flood: one attacker, many source ports): the
//! cached Block2 bodies stay within `max_cached_body_bytes`, and each observer costs a
//! small, fixed amount, not a copy of the body.
//!
//! A counting global allocator measures the live bytes; this file is its own test
//! binary, and its one test runs alone in it.
#![cfg(feature = "server")]

use pehra_shared::coap::{Config, Engine, Event, Response};
use pehra_shared::Instant;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// A CON GET of `/data` with Observe: 0 and a 4-byte token.
fn observe(mid: u16, token: u32) -> Vec<u8> {
    let mut m = vec![0x44, 0x01, (mid >> 8) as u8, mid as u8];
    m.extend_from_slice(&token.to_be_bytes());
    m.push(0x60); // Observe (6), empty: register
    m.push(0x54); // Uri-Path (delta 5), 4 bytes
    m.extend_from_slice(b"data");
    m
}

/// Answers every request waiting with `body` and drops what the engine sends.
fn answer_all(server: &mut Engine<u32>, now: Instant, body: &[u8]) {
    while let Some(event) = server.poll_event() {
        if let Event::Request(incoming) = event {
            server.respond(now, incoming.id, Response::content(body.to_vec()));
        }
    }
    while server.poll_transmit().is_some() {}
}

#[test]
fn observers_of_a_large_resource_cost_no_copy_of_it_each() {
    const BODY: usize = 60 * 1024;
    const PEERS: u32 = 2048;
    const TOKENS: u32 = 16;
    let config = Config::default();
    let budget = config.max_cached_body_bytes;
    let mut server: Engine<u32> = Engine::new(config, [1; 32]);
    let body = vec![b'x'; BODY];
    let now = Instant::from_millis(1);
    // Warm up the engine's maps, then measure from here.
    server.handle_datagram(now, 0, &observe(1, 1));
    answer_all(&mut server, now, &body);
    let before = LIVE.load(Ordering::Relaxed);
    // As a flood sends them: each source port registers many tokens at once, and the
    // answers come later (separate responses, after the empty ACK).
    let mut mid = 1u16;
    for peer in 1..=PEERS / TOKENS {
        for token in 0..TOKENS {
            mid = mid.wrapping_add(1);
            server.handle_datagram(now, peer, &observe(mid, peer * 1000 + token));
        }
        while server.poll_transmit().is_some() {}
    }
    let later = now + pehra_shared::Duration::from_secs(2);
    server.handle_timeout(later);
    answer_all(&mut server, later, &body);
    let registered = server.observer_count("data");
    let held = LIVE.load(Ordering::Relaxed) - before;
    let per_observer = (held - budget as isize).max(0) / registered as isize;
    eprintln!(
        "{registered} observers: {held} bytes held ({} cached bodies), {per_observer} bytes each beyond the body budget",
        server.held().cached_body_bytes
    );
    assert!(registered >= 1000, "registered {registered}");
    assert!(
        held < budget as isize + registered as isize * 4096,
        "{held} bytes held for {registered} observers: more than the {budget}-byte body budget \
         plus 4 KiB each ({per_observer} bytes each)"
    );
}
