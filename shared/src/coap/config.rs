//! Transmission parameters (RFC 7252 §4.8) and the engine's own limits.

use crate::Duration;

/// The largest payload Pehra's own processes (brokers, the zookeeper, their clients and
/// tools on a gateway's LAN or loopback) send each other in one datagram, set as their
/// endpoints' [`Config::max_payload`]: a 32 KiB datagram saves 31 round trips of
/// block-wise transfer (IP fragments it; losing a fragment loses the datagram, and CoAP
/// retransmits it). A peer receives that much only when it declared it with
/// [`option::MAX_PAYLOAD`](super::option::MAX_PAYLOAD): standard clients and devices get
/// RFC 7252's 1 KiB blocks.
pub const PEER_MAX_PAYLOAD: usize = 32 * 1024;

/// How an [`Engine`](super::Engine) paces, retries, remembers and limits exchanges.
///
/// The defaults are RFC 7252's, except where noted. On a LAN, a shorter
/// `exchange_lifetime` lets one peer use more message IDs per second (the ID space is
/// 65 536 per `exchange_lifetime`: about 265 CON messages/s at the standard 247 s).
#[derive(Debug, Clone)]
pub struct Config {
    /// ACK_TIMEOUT: the first retransmission waits between this and this × `ack_random_factor`.
    pub ack_timeout: Duration,
    /// ACK_RANDOM_FACTOR (≥ 1.0).
    pub ack_random_factor: f32,
    /// MAX_RETRANSMIT: retransmissions of a CON before giving up.
    pub max_retransmit: u8,
    /// NSTART: exchanges outstanding towards one peer at once; more wait in a queue.
    /// (RFC 7252 default 1; Pehra's default 1, raised by drivers that batch.)
    pub nstart: usize,
    /// EXCHANGE_LIFETIME: how long a received message ID is remembered for duplicate
    /// detection (and so how long a message ID must not be reused towards one peer).
    pub exchange_lifetime: Duration,
    /// How many received message IDs the duplicate cache holds at most; past that the
    /// oldest is forgotten first. Bounds memory under any load.
    pub dedup_capacity: usize,
    /// How long a request handler may take before an empty ACK is sent and the response
    /// follows later as a separate CON (RFC 7252 §5.2.2). Should be well under `ack_timeout`.
    pub piggyback_window: Duration,
    /// How long a client waits for a response once its request was acknowledged (or,
    /// for a NON request, sent). Default: MAX_TRANSMIT_WAIT (93 s).
    pub response_timeout: Duration,
    /// Preferred block size for block-wise transfer (16..=1024 bytes, a power of two).
    pub block_size: usize,
    /// The largest payload sent in one datagram; larger ones go block-wise in
    /// `block_size` blocks. Default 1024 (= `block_size`: RFC 7252's safe size for any
    /// path). Between servers on a LAN or on loopback, up to about 60 000 saves a round
    /// trip per KiB (IP fragments the datagram; losing a fragment loses it, and CoAP
    /// retransmits). Must be at least `block_size`.
    pub max_payload: usize,
    /// The largest request body assembled from Block1 blocks; larger ones get 4.13.
    pub max_body_size: usize,
    /// How long a server keeps a partly received Block1 body or a Block2 body being read.
    pub block_lifetime: Duration,
    /// A notification to an observer is sent CON at least this often, so observers that
    /// went away are found (RFC 7641 §4.5: "at least every 24 hours"; Pehra: 60 s).
    pub observe_con_interval: Duration,
    /// Token length in bytes (1..=8). Random tokens guard against off-path spoofing.
    pub token_len: u8,
    /// Most observers a server keeps at once. A GET with Observe beyond it is answered
    /// without the Observe option, i.e. not registered (RFC 7641 §4.1 lets a server
    /// decline), so no peer can make every change cost unbounded datagrams.
    pub max_observers: usize,
    /// Most observers one peer address holds at once (the same answer beyond it).
    pub max_observers_per_peer: usize,
    /// Most bytes of Block2 response bodies a server keeps for follow-up blocks, over
    /// all transfers. Past it the oldest transfer is forgotten (its next block is
    /// produced again by the application).
    pub max_cached_body_bytes: usize,
    /// Most bytes of partly received Block1 bodies a server keeps over all uploads; a
    /// block past it gets 5.03 with Max-Age.
    pub max_upload_bytes: usize,
    /// Most requests a server has received and not yet answered; one more gets 5.03
    /// with Max-Age at once.
    pub max_pending_requests: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            ack_timeout: Duration::from_secs(2),
            ack_random_factor: 1.5,
            max_retransmit: 4,
            nstart: 1,
            exchange_lifetime: Duration::from_secs(247),
            dedup_capacity: 16 * 1024,
            piggyback_window: Duration::from_millis(500),
            response_timeout: Duration::from_secs(93),
            block_size: 1024,
            max_payload: 1024,
            max_body_size: 2 * 1024 * 1024,
            block_lifetime: Duration::from_secs(60),
            observe_con_interval: Duration::from_secs(60),
            token_len: 8,
            max_observers: 8192,
            max_observers_per_peer: 256,
            max_cached_body_bytes: 8 * 1024 * 1024,
            max_upload_bytes: 8 * 1024 * 1024,
            max_pending_requests: 8192,
        }
    }
}

impl Config {
    /// MAX_TRANSMIT_SPAN: from a CON's first transmission to its last retransmission.
    pub fn max_transmit_span(&self) -> Duration {
        self.ack_timeout
            .mul_f32(((1u32 << self.max_retransmit) - 1) as f32 * self.ack_random_factor)
    }

    /// MAX_TRANSMIT_WAIT: from a CON's first transmission to giving up on its ACK.
    pub fn max_transmit_wait(&self) -> Duration {
        self.ack_timeout
            .mul_f32(((1u32 << (self.max_retransmit + 1)) - 1) as f32 * self.ack_random_factor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_times_match_rfc7252_section_4_8_2() {
        let c = Config::default();
        assert_eq!(c.max_transmit_span(), Duration::from_secs(45));
        assert_eq!(c.max_transmit_wait(), Duration::from_secs(93));
    }
}
