//! [`UdpSocket`] on an embassy-net UDP socket, for the boards (features `net-ipv4`,
//! `net-ipv6`: the address families the board's stack is built for).
//!
//! embassy-net's addresses have a variant per family compiled in, so which addresses a
//! stack can reach is a build choice: [`Routes`] says it, and lets a board alias
//! addresses (QEMU shows the host's loopback to the guest as 10.0.2.2).

use core::net::SocketAddr;

use embassy_net::udp::{RecvError, SendError, UdpSocket as NetSocket};
use embassy_net::IpEndpoint;
use embassy_time::with_deadline;

use crate::hal::{EmbassyClock, UdpSocket};

/// How the node loop's addresses map onto the stack's endpoints.
pub trait Routes {
    /// Where a datagram for `to` goes; `None` if the stack cannot reach it (an address
    /// family it was not built for). The default maps each family this crate's
    /// `net-ipv4`/`net-ipv6` features compiled in as it is.
    fn outbound(&self, to: SocketAddr) -> Option<IpEndpoint> {
        endpoint(to)
    }

    /// The sender of a received datagram, as the node loop knows it.
    fn inbound(&self, from: IpEndpoint) -> SocketAddr {
        from.into()
    }
}

/// Every address as it is: [`Routes`]'s defaults.
#[derive(Debug, Clone, Copy, Default)]
pub struct Direct;

impl Routes for Direct {}

/// `to` as an embassy-net endpoint, if its family is compiled in.
pub fn endpoint(to: SocketAddr) -> Option<IpEndpoint> {
    match to {
        #[cfg(feature = "net-ipv4")]
        SocketAddr::V4(a) => Some(a.into()),
        #[cfg(feature = "net-ipv6")]
        SocketAddr::V6(a) => Some(a.into()),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

/// Why a datagram was not sent or received (read through `Debug`).
#[derive(Debug)]
pub enum NetError {
    /// The stack cannot reach the address (see [`Routes::outbound`]). The address is
    /// not kept: formatting one would cost a firmware the code of `SocketAddr`'s
    /// `Debug`.
    Unreachable,
    /// embassy-net could not send.
    Send(SendError),
    /// embassy-net could not receive.
    Recv(RecvError),
}

/// [`UdpSocket`] on an embassy-net UDP socket, with deadlines on the node's
/// [`EmbassyClock`].
pub struct EmbassyUdp<'a, R = Direct> {
    socket: NetSocket<'a>,
    clock: EmbassyClock,
    routes: R,
}

impl<'a, R: Routes> EmbassyUdp<'a, R> {
    /// Wraps a bound socket; deadlines are read on `clock` (the node loop's).
    pub fn new(socket: NetSocket<'a>, clock: EmbassyClock, routes: R) -> Self {
        EmbassyUdp {
            socket,
            clock,
            routes,
        }
    }
}

impl<R: Routes> UdpSocket for EmbassyUdp<'_, R> {
    type Error = NetError;

    async fn send_to(&mut self, bytes: &[u8], to: SocketAddr) -> Result<(), NetError> {
        let endpoint = self.routes.outbound(to).ok_or(NetError::Unreachable)?;
        self.socket
            .send_to(bytes, endpoint)
            .await
            .map_err(NetError::Send)
    }

    async fn recv_until(
        &mut self,
        buf: &mut [u8],
        deadline_ms: u64,
    ) -> Result<Option<(usize, SocketAddr)>, NetError> {
        let recv = self.socket.recv_from(buf);
        match with_deadline(self.clock.instant(deadline_ms), recv).await {
            Err(_timeout) => Ok(None),
            Ok(Err(e)) => Err(NetError::Recv(e)),
            Ok(Ok((n, meta))) => Ok(Some((n, self.routes.inbound(meta.endpoint)))),
        }
    }

    async fn recv_with<T, F: FnOnce(&[u8], SocketAddr) -> T>(
        &mut self,
        deadline_ms: u64,
        f: F,
    ) -> Result<Option<T>, NetError> {
        // `f` reads the datagram in the socket's receive buffer (no copy, no buffer of
        // the caller's).
        let routes = &self.routes;
        let recv = self
            .socket
            .recv_from_with(|bytes, meta| f(bytes, routes.inbound(meta.endpoint)));
        Ok(with_deadline(self.clock.instant(deadline_ms), recv)
            .await
            .ok())
    }

    async fn flush(&mut self, deadline_ms: u64) -> Result<(), NetError> {
        // Past the deadline the datagrams stay queued (no link, no route): not an error,
        // the node loop sleeps anyway.
        let _ = with_deadline(self.clock.instant(deadline_ms), self.socket.flush()).await;
        Ok(())
    }
}
