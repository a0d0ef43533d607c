//! Limits broker and clients agree on.

/// The largest CoAP payload a broker sends in one datagram (replication answers, big
/// fetches): [`PEER_MAX_PAYLOAD`](pehra_shared::coap::PEER_MAX_PAYLOAD), since brokers
/// talk over a LAN or loopback. Devices keep RFC 7252's 1 KiB.
pub const BROKER_MAX_PAYLOAD: usize = pehra_shared::coap::PEER_MAX_PAYLOAD;
