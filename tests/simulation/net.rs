//! turmoil's simulated UDP under the endpoints: a [`DynSocket`] over
//! `turmoil::net::UdpSocket`, the socket factory and the seed source installed on the
//! simulation's thread.

use pehra_shared::driver::socket::{self, BoxFuture, DynSocket};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;

/// A turmoil socket, reporting a host address instead of `0.0.0.0` where the port is a
/// service's (the broker advertises its bound address; on a real machine it asks the
/// kernel for its route).
struct SimSocket {
    inner: turmoil::net::UdpSocket,
    local: SocketAddr,
}

impl DynSocket for SimSocket {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
    fn recv_from<'a>(
        &'a self,
        buf: &'a mut [u8],
    ) -> BoxFuture<'a, io::Result<(usize, SocketAddr)>> {
        Box::pin(self.inner.recv_from(buf))
    }
    fn try_recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.inner.try_recv_from(buf)
    }
    fn try_send_to(&self, buf: &[u8], peer: SocketAddr) -> io::Result<usize> {
        self.inner.try_send_to(buf, peer)
    }
}

/// Installs turmoil's sockets, a seeded source of seeds and inline disk work
/// (`driver::blocking`) on this thread; removed
/// again when the returned guard is dropped. `services` maps a service port to the IP of
/// the host serving it.
pub fn install(seed: u64, services: BTreeMap<u16, IpAddr>) -> Installed {
    let services = std::sync::Arc::new(services);
    socket::set_socket_factory(Some(Rc::new(move |addr: SocketAddr, peer| {
        let services = services.clone();
        Box::pin(async move {
            let inner = turmoil::net::UdpSocket::bind(addr).await?;
            if let Some(peer) = peer {
                inner.connect(peer).await?;
            }
            let mut local = inner.local_addr()?;
            if local.ip().is_unspecified() {
                if let Some(ip) = services.get(&local.port()) {
                    local.set_ip(*ip);
                }
            }
            Ok(Box::new(SimSocket { inner, local }) as Box<dyn DynSocket>)
        })
    })));
    let rng = RefCell::new(crate::simulation::rng::Rng::new(seed ^ 0x5eed_5eed));
    socket::set_seed_source(Some(Rc::new(move |out: &mut [u8]| {
        rng.borrow_mut().fill(out);
    })));
    // Disk work on the hosts' own task, not on real threads that finish in real time.
    pehra_shared::driver::blocking::set_inline(true);
    Installed
}

/// Removes what [`install`] installed, when dropped.
pub struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        socket::set_socket_factory(None);
        socket::set_seed_source(None);
        pehra_shared::driver::blocking::set_inline(false);
    }
}
