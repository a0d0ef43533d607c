//! `observer-flood`: what an attacker with a UDP socket does to a CoAP server's memory,
//! for `bench/flood.sh` (loopback only).
//!
//! From `--sockets` source ports (each its own UDP socket: to the server, its own peer)
//! it sends `--observes` CON GETs with Observe: 0 per socket, each with a new token, to
//! `--path`; then, from `--block2-sockets` more source ports, one CON GET of `--block2-path`
//! each, the first block of a large representation that the server slices block-wise
//! and keeps for the follow-up blocks that never come. It reads every answer (2.05 with
//! Observe is a registered observer; 5.03 is the server at a limit; anything else is
//! counted by code), prints one JSON line `{"phase":"flooded",…}`, and then keeps its
//! sockets open for `--hold-ms`, never acknowledging a notification (the CON ones are
//! what lets the server find and drop dead observers), and counting the notifications
//! that arrive. A last JSON line `{"phase":"done",…}` follows. The counts let the script
//! compare the server's memory with the number of observers it actually holds.

use anyhow::{Context, Result};
use clap::Parser;
use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType};
use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(about = "Flood a CoAP server with observers and abandoned Block2 transfers")]
struct Args {
    /// The server (loopback).
    #[arg(long)]
    target: SocketAddr,
    /// The resource to observe, e.g. `ps/data/flood`.
    #[arg(long)]
    path: String,
    /// Source ports (sockets) registering observers.
    #[arg(long, default_value_t = 256)]
    sockets: usize,
    /// Observe registrations per socket (each a new token).
    #[arg(long, default_value_t = 64)]
    observes: usize,
    /// A resource with a large representation, for abandoned Block2 transfers.
    #[arg(long)]
    block2_path: Option<String>,
    /// Source ports asking for its first block (one request each).
    #[arg(long, default_value_t = 0)]
    block2_sockets: usize,
    /// How long to keep the sockets open after the flood, counting notifications (ms).
    #[arg(long, default_value_t = 5000)]
    hold_ms: u64,
}

/// Answers seen, by code ("2.05", "5.03", …), and notifications after the flood.
#[derive(Default)]
struct Tally {
    codes: BTreeMap<String, u64>,
    registered: u64,
    block2_first_blocks: u64,
    block2_bytes: u64,
    notifications: u64,
    sent: u64,
}

fn get(path: &str, mid: u16, token: u32, observe: bool) -> Vec<u8> {
    let mut p = Packet::new();
    p.header.set_type(MessageType::Confirmable);
    p.header.code = MessageClass::Request(RequestType::Get);
    p.header.message_id = mid;
    p.set_token(token.to_be_bytes().to_vec());
    if observe {
        p.add_option(CoapOption::Observe, Vec::new());
    }
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        p.add_option(CoapOption::UriPath, segment.as_bytes().to_vec());
    }
    p.to_bytes().expect("a small GET encodes")
}

/// Reads whatever is waiting on `socket` within `wait`, into the tally.
fn drain(socket: &UdpSocket, wait: Duration, tally: &mut Tally, block2: bool) {
    let deadline = Instant::now() + wait;
    let mut buf = vec![0u8; 65536];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        socket
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .expect("set a timeout");
        let Ok(n) = socket.recv(&mut buf) else {
            return;
        };
        let Ok(packet) = Packet::from_bytes(&buf[..n]) else {
            continue;
        };
        if packet.header.code == MessageClass::Empty {
            continue;
        }
        let code = format!("{}", packet.header.code);
        let observed = packet.get_option(CoapOption::Observe).is_some();
        let is_ack = packet.header.get_type() == MessageType::Acknowledgement;
        if !is_ack {
            // A notification (or a separate response): never acknowledged.
            tally.notifications += 1;
            continue;
        }
        *tally.codes.entry(code.clone()).or_default() += 1;
        if observed && code == "2.05" {
            tally.registered += 1;
        }
        if block2 && packet.get_option(CoapOption::Block2).is_some() {
            tally.block2_first_blocks += 1;
            tally.block2_bytes += packet.payload.len() as u64;
        }
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let started = Instant::now();
    let mut tally = Tally::default();
    let mut sockets = Vec::with_capacity(args.sockets + args.block2_sockets);
    let mut mid: u16 = 1;
    let mut token: u32 = 1;
    for _ in 0..args.sockets {
        let socket = UdpSocket::bind("127.0.0.1:0").context("bind a source port")?;
        socket.connect(args.target).context("connect")?;
        for _ in 0..args.observes {
            socket.send(&get(&args.path, mid, token, true))?;
            tally.sent += 1;
            mid = mid.wrapping_add(1);
            token += 1;
        }
        drain(&socket, Duration::from_millis(20), &mut tally, false);
        sockets.push(socket);
    }
    if let Some(path) = &args.block2_path {
        for _ in 0..args.block2_sockets {
            let socket = UdpSocket::bind("127.0.0.1:0").context("bind a source port")?;
            socket.connect(args.target).context("connect")?;
            socket.send(&get(path, mid, token, false))?;
            tally.sent += 1;
            mid = mid.wrapping_add(1);
            token += 1;
            drain(&socket, Duration::from_millis(20), &mut tally, true);
            sockets.push(socket);
        }
    }
    // Late answers.
    for socket in &sockets {
        drain(socket, Duration::from_millis(2), &mut tally, false);
    }
    let codes: Vec<String> = tally
        .codes
        .iter()
        .map(|(c, n)| format!("\"{c}\":{n}"))
        .collect();
    println!(
        "{{\"phase\":\"flooded\",\"sockets\":{},\"sent\":{},\"registered\":{},\"block2_first_blocks\":{},\"block2_bytes\":{},\"codes\":{{{}}},\"secs\":{:.3}}}",
        sockets.len(),
        tally.sent,
        tally.registered,
        tally.block2_first_blocks,
        tally.block2_bytes,
        codes.join(","),
        started.elapsed().as_secs_f64()
    );
    let hold_end = Instant::now() + Duration::from_millis(args.hold_ms);
    while Instant::now() < hold_end {
        for socket in &sockets {
            drain(socket, Duration::from_micros(200), &mut tally, false);
        }
    }
    println!(
        "{{\"phase\":\"done\",\"notifications\":{}}}",
        tally.notifications
    );
    Ok(())
}
