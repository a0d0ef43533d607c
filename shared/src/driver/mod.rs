//! The tokio driver (feature `std`): one UDP socket, one [`Engine`](crate::coap::Engine),
//! a [`Router`] of async handlers on the server side and an async [`Handle`] on the
//! client side.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use pehra_shared::coap::{Config, Method, Request, Response};
//! use pehra_shared::driver::{Endpoint, Router};
//!
//! let router = Router::new().route(Method::Get, "hello", |_req| async { Response::content(*b"hi") });
//! let server = Endpoint::bind("127.0.0.1:0".parse().unwrap(), Config::default(), router).await?;
//! let client = Endpoint::bind("127.0.0.1:0".parse().unwrap(), Config::default(), Router::new()).await?;
//! let response = client.handle().request(server.local_addr(), Request::get("hello")).await.unwrap();
//! assert_eq!(response.payload(), b"hi");
//! # Ok(()) }
//! ```

pub mod blocking;
pub mod clock;
mod endpoint;
mod handle;
mod router;
pub mod security;
pub mod socket;

pub use endpoint::Endpoint;
pub use handle::{CeilingStore, Handle, Observation};
pub use router::{Guard, Incoming, Params, Responder, Router};

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

/// The address a client socket for talking to `peer` binds: any address of `peer`'s
/// family, an ephemeral port (an IPv4 socket cannot reach an IPv6 peer, nor the reverse).
pub fn any_local_for(peer: SocketAddr) -> SocketAddr {
    match peer {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    }
}

use crate::coap::ExchangeError;

/// Why a request made through a [`Handle`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The exchange failed (timeout, reset, broken block-wise transfer).
    #[error(transparent)]
    Exchange(#[from] ExchangeError),
    /// The endpoint was shut down.
    #[error("the CoAP endpoint is shut down")]
    Closed,
    /// Nothing listens at the peer: the network answered with an ICMP port unreachable.
    /// Only an endpoint made with [`Endpoint::connect`] hears of it; others time out.
    #[error("nothing listens on udp {peer}")]
    Refused {
        /// The peer.
        peer: SocketAddr,
    },
}
