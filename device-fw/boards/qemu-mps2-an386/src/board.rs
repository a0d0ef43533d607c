//! The board's parts for `pehra_device_fw`'s node loop: a [`hal::UdpSocket`] over
//! embassy-net's UDP socket, storage in RAM, randomness from the boot seed, a fake
//! thermometer, and an application that prints downlink records.
//!
//! [`hal::UdpSocket`]: pehra_device_fw::UdpSocket

use alloc::vec::Vec;
use core::convert::Infallible;
use core::fmt::Write as _;
use core::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use cortex_m_semihosting::hprintln;
use embassy_net::udp::{RecvError, SendError};
use embassy_net::{IpAddress, IpEndpoint};
use embassy_time::{with_deadline, Instant};
use pehra_device_fw::{Application, Sensor, SetInterval, Settings};
use pehra_shared::wire::Record;

/// The host's loopback as QEMU's user network shows it to the guest.
const HOST_ALIAS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);

/// An address as the node loop sees it (the cluster's view: brokers on 127.0.0.1)
/// to where the datagram goes from inside QEMU (127.0.0.0/8 is the host: 10.0.2.2).
fn to_guest(addr: SocketAddr) -> Option<IpEndpoint> {
    let SocketAddr::V4(a) = addr else { return None };
    let ip = if a.ip().is_loopback() {
        HOST_ALIAS
    } else {
        *a.ip()
    };
    Some(IpEndpoint::new(IpAddress::Ipv4(ip), a.port()))
}

/// The reverse of [`to_guest`]: a datagram from 10.0.2.2 came from the host's loopback.
pub fn to_cluster(ip: Ipv4Addr, port: u16) -> SocketAddr {
    let ip = if ip == HOST_ALIAS {
        Ipv4Addr::LOCALHOST
    } else {
        ip
    };
    SocketAddr::V4(SocketAddrV4::new(ip, port))
}

/// What the socket can fail with (read through `Debug` only).
#[derive(Debug)]
#[allow(dead_code)]
pub enum NetError {
    /// Not an IPv4 address (the stack is IPv4 only).
    NotIpv4,
    /// embassy-net could not send.
    Send(SendError),
    /// embassy-net could not receive.
    Recv(RecvError),
}

/// [`pehra_device_fw::UdpSocket`] over an embassy-net UDP socket. Addresses on
/// 127.0.0.0/8 (what a local cluster advertises: its brokers and the Pehredar) are
/// mapped to and from QEMU's host alias 10.0.2.2, so the node loop and the CoAP engine
/// see one address per gateway.
pub struct NetUdp<'a>(pub embassy_net::udp::UdpSocket<'a>);

impl pehra_device_fw::UdpSocket for NetUdp<'_> {
    type Error = NetError;

    async fn send_to(&mut self, bytes: &[u8], to: SocketAddr) -> Result<(), NetError> {
        let to = to_guest(to).ok_or(NetError::NotIpv4)?;
        self.0.send_to(bytes, to).await.map_err(NetError::Send)
    }

    async fn recv_until(
        &mut self,
        buf: &mut [u8],
        deadline_ms: u64,
    ) -> Result<Option<(usize, SocketAddr)>, NetError> {
        let deadline = Instant::from_millis(deadline_ms);
        match with_deadline(deadline, self.0.recv_from(buf)).await {
            Ok(Ok((n, meta))) => {
                let IpAddress::Ipv4(ip) = meta.endpoint.addr;
                Ok(Some((n, to_cluster(ip, meta.endpoint.port))))
            }
            Ok(Err(e)) => Err(NetError::Recv(e)),
            Err(_) => Ok(None),
        }
    }

    async fn flush(&mut self, deadline_ms: u64) -> Result<(), NetError> {
        // Past the deadline the datagrams stay queued (the link is down): not an error.
        let _ = with_deadline(Instant::from_millis(deadline_ms), self.0.flush()).await;
        Ok(())
    }
}

/// A fake thermometer: `"{name} #{seq} {t}C"`, t wandering between 19.0 and 23.9 °C.
pub struct Thermometer {
    /// The device's name (in the reading's text).
    pub name: &'static str,
}

impl Sensor for Thermometer {
    type Error = Infallible;

    async fn read(&mut self, seq: u64) -> Result<Vec<u8>, Infallible> {
        let tenths = 190 + (seq * 37 + 11) % 50;
        let mut s = alloc::string::String::new();
        let _ = write!(s, "{} #{} {}.{}C", self.name, seq, tenths / 10, tenths % 10);
        Ok(s.into_bytes())
    }

    fn battery_permille(&mut self) -> Option<u16> {
        Some(1000)
    }
}

/// Prints each downlink record's text, then lets [`SetInterval`] obey it.
pub struct PrintingApp;

impl Application for PrintingApp {
    fn on_downlink(&mut self, offset: u64, record: &Record, settings: &mut Settings) {
        hprintln!(
            "pehra-fw: downlink @{}: {}",
            offset,
            core::str::from_utf8(&record.value).unwrap_or("(not UTF-8)")
        );
        SetInterval.on_downlink(offset, record, settings);
    }
}
