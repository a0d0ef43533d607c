//! The UDP socket an [`Endpoint`](super::Endpoint) runs on, behind a small trait, so
//! that a simulated network (turmoil's `UdpSocket` in tests/simulation.rs) can take the
//! place of the kernel's.
//!
//! The real path is unchanged: the endpoint task is generic over [`Socket`], and for a
//! tokio socket it is compiled for `tokio::net::UdpSocket` itself (no boxing, no dynamic
//! dispatch). Only when a [`SocketFactory`] is installed on the current thread (the
//! simulation does; nothing else should) are sockets made by it, as boxed
//! [`DynSocket`]s. The simulation also installs a seed source ([`fill_seed`]) so that the
//! randomness of message IDs, tokens and session IDs replays with its seed.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::{boxed::Box, format};

/// A future that is `Send` and boxed: what the object-safe [`DynSocket`] returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the endpoint needs of a UDP socket (the subset of `tokio::net::UdpSocket` it
/// uses).
pub trait Socket: Send + Sync + 'static {
    /// The bound address.
    fn local_addr(&self) -> io::Result<SocketAddr>;
    /// Waits for a datagram (cancel safe: nothing is lost when a `select!` drops it).
    fn recv_from<'a>(
        &'a self,
        buf: &'a mut [u8],
    ) -> impl Future<Output = io::Result<(usize, SocketAddr)>> + Send + 'a;
    /// A datagram if one is waiting, else `WouldBlock`.
    fn try_recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)>;
    /// Sends now, or `WouldBlock`.
    fn try_send_to(&self, buf: &[u8], peer: SocketAddr) -> io::Result<usize>;
    /// Sends, waiting for room.
    fn send_to<'a>(
        &'a self,
        buf: &'a [u8],
        peer: SocketAddr,
    ) -> impl Future<Output = io::Result<usize>> + Send + 'a;
}

impl Socket for tokio::net::UdpSocket {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        tokio::net::UdpSocket::local_addr(self)
    }
    fn recv_from<'a>(
        &'a self,
        buf: &'a mut [u8],
    ) -> impl Future<Output = io::Result<(usize, SocketAddr)>> + Send + 'a {
        tokio::net::UdpSocket::recv_from(self, buf)
    }
    fn try_recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        tokio::net::UdpSocket::try_recv_from(self, buf)
    }
    fn try_send_to(&self, buf: &[u8], peer: SocketAddr) -> io::Result<usize> {
        tokio::net::UdpSocket::try_send_to(self, buf, peer)
    }
    fn send_to<'a>(
        &'a self,
        buf: &'a [u8],
        peer: SocketAddr,
    ) -> impl Future<Output = io::Result<usize>> + Send + 'a {
        tokio::net::UdpSocket::send_to(self, buf, peer)
    }
}

/// The object-safe form of [`Socket`], for sockets made by a [`SocketFactory`].
pub trait DynSocket: Send + Sync + 'static {
    /// See [`Socket::local_addr`].
    fn local_addr(&self) -> io::Result<SocketAddr>;
    /// See [`Socket::recv_from`].
    fn recv_from<'a>(&'a self, buf: &'a mut [u8])
        -> BoxFuture<'a, io::Result<(usize, SocketAddr)>>;
    /// See [`Socket::try_recv_from`].
    fn try_recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)>;
    /// See [`Socket::try_send_to`].
    fn try_send_to(&self, buf: &[u8], peer: SocketAddr) -> io::Result<usize>;
}

impl Socket for Box<dyn DynSocket> {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        (**self).local_addr()
    }
    fn recv_from<'a>(
        &'a self,
        buf: &'a mut [u8],
    ) -> impl Future<Output = io::Result<(usize, SocketAddr)>> + Send + 'a {
        (**self).recv_from(buf)
    }
    fn try_recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        (**self).try_recv_from(buf)
    }
    fn try_send_to(&self, buf: &[u8], peer: SocketAddr) -> io::Result<usize> {
        (**self).try_send_to(buf, peer)
    }
    async fn send_to(&self, buf: &[u8], peer: SocketAddr) -> io::Result<usize> {
        (**self).try_send_to(buf, peer)
    }
}

/// Makes the sockets of the endpoints bound on this thread: given the address to bind
/// and, for [`Endpoint::connect`](super::Endpoint::connect), the peer to connect to.
pub type SocketFactory = Rc<
    dyn Fn(SocketAddr, Option<SocketAddr>) -> BoxFuture<'static, io::Result<Box<dyn DynSocket>>>,
>;

/// Where the seeds of random number generators come from, on this thread.
pub type SeedSource = Rc<dyn Fn(&mut [u8])>;

std::thread_local! {
    static FACTORY: RefCell<Option<SocketFactory>> = const { RefCell::new(None) };
    static SEEDS: RefCell<Option<SeedSource>> = const { RefCell::new(None) };
}

/// Installs (or with `None` removes) the socket factory of this thread: every endpoint
/// bound on it from now on gets its socket from `factory`. For a simulation only.
pub fn set_socket_factory(factory: Option<SocketFactory>) {
    FACTORY.with(|f| *f.borrow_mut() = factory);
}

/// A socket from the factory installed on this thread, if there is one: bound to
/// `addr`, connected to `peer` if given.
pub(crate) fn from_factory(
    addr: SocketAddr,
    peer: Option<SocketAddr>,
) -> Option<BoxFuture<'static, io::Result<Box<dyn DynSocket>>>> {
    FACTORY.with(|f| f.borrow().as_ref().map(|factory| factory(addr, peer)))
}

/// Installs (or with `None` removes) the seed source of this thread: [`fill_seed`] asks
/// it instead of the operating system. For a simulation only.
pub fn set_seed_source(source: Option<SeedSource>) {
    SEEDS.with(|s| *s.borrow_mut() = source);
}

/// Fills `seed` with randomness for seeding a generator: from the operating system, or
/// from the seed source of a simulation on this thread.
pub fn fill_seed(seed: &mut [u8]) -> io::Result<()> {
    if let Some(source) = SEEDS.with(|s| s.borrow().clone()) {
        source(seed);
        return Ok(());
    }
    rand::TryRng::try_fill_bytes(&mut rand::rngs::SysRng, seed)
        .map_err(|e| io::Error::other(format!("{e}")))
}

/// [`fill_seed`] for a generator of 32 bytes of seed.
pub fn seed32() -> io::Result<[u8; 32]> {
    let mut seed = [0u8; 32];
    fill_seed(&mut seed)?;
    Ok(seed)
}
