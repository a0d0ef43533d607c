//! `udp-echo`: a minimal UDP echo server, the raw-UDP ceiling for `coap-load --mode raw`.
//!
//! One thread, blocking `recv_from` / `send_to`: every datagram goes straight back to
//! its sender, unchanged.

use std::net::UdpSocket;

use anyhow::{Context, Result};
use clap::Parser;

/// Raw UDP echo server.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Address to listen on, HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:7007")]
    listen: String,
    /// Do not print the "listening" line.
    #[arg(long)]
    quiet: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let sock = UdpSocket::bind(&args.listen).with_context(|| format!("bind {}", args.listen))?;
    if !args.quiet {
        eprintln!("udp-echo: listening on {}", sock.local_addr()?);
    }
    let mut buf = vec![0u8; 65536];
    loop {
        match sock.recv_from(&mut buf) {
            Ok((n, peer)) => {
                // A full socket buffer or a vanished peer is not our problem: drop it.
                let _ = sock.send_to(&buf[..n], peer);
            }
            // ICMP errors from earlier sends (ECONNREFUSED etc.) surface here: ignore.
            Err(_) => continue,
        }
    }
}
