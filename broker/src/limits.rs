//! Limits broker and clients agree on.

/// The largest CoAP payload a broker sends in one datagram (replication answers, big
/// fetches): brokers talk over a LAN or loopback, where a 32 KiB datagram saves 31 round
/// trips of block-wise transfer. Devices keep RFC 7252's 1 KiB.
pub const BROKER_MAX_PAYLOAD: usize = 32 * 1024;
