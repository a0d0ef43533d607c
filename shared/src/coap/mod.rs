//! CoAP (RFC 7252) as Pehra uses it: a sans-IO exchange engine on top of coap-lite's
//! packet codec.
//!
//! [`Engine`] owns everything stateful about CoAP messaging — message IDs, tokens,
//! retransmission, duplicate detection, separate responses, Observe (RFC 7641),
//! block-wise transfer (RFC 7959), NSTART and `/.well-known/core` (RFC 6690) — and
//! nothing else: it never reads a clock or touches a socket. A driver feeds it datagrams
//! and the current [`Instant`](crate::Instant), and drains datagrams to send, events for
//! the application, and the next deadline at which it wants to be called again.

mod block;
pub mod conditions;
mod config;
mod dedup;
pub mod encode;
mod engine;
pub mod link_format;
mod message;
pub mod observe;
pub mod option;
pub mod packet;
mod uint;

pub use block::BlockValue;
pub use config::{Config, PEER_MAX_PAYLOAD};
#[cfg(any(feature = "server", test))]
pub use engine::Held;
#[cfg(any(feature = "server", test))]
pub use engine::ServerSecurity;
pub use engine::{
    client_id_context, Engine, Event, ExchangeError, IncomingId, IncomingRequest, PeerAddress,
    RequestId, Stats, Transmit, ECHO,
};
pub use message::{Code, Method, Request, Response};
pub use packet::Packet;

/// The Content-Format number for `application/cbor` (RFC 7049 / 8949).
pub const CONTENT_FORMAT_CBOR: u16 = 60;
/// The Content-Format number for `application/link-format` (RFC 6690).
pub const CONTENT_FORMAT_LINK_FORMAT: u16 = 40;
/// The Content-Format number for `text/plain; charset=utf-8`.
pub const CONTENT_FORMAT_TEXT: u16 = 0;
