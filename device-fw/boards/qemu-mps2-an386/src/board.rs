//! The board's parts for `pehra_device_fw`'s node loop: the routes of the core's
//! embassy-net [`hal::UdpSocket`] (the host's loopback aliased), a fake thermometer, and
//! an application that prints downlink records.
//!
//! [`hal::UdpSocket`]: pehra_device_fw::UdpSocket

use alloc::vec::Vec;
use core::convert::Infallible;
use core::fmt::Write as _;
use core::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use cortex_m_semihosting::hprintln;
use embassy_net::{IpAddress, IpEndpoint};
use pehra_device_fw::net::Routes;
use pehra_device_fw::{Application, Sensor, SetInterval, Settings};
use pehra_shared::wire::Record;

use crate::Text;

/// The host's loopback as QEMU's user network shows it to the guest.
const HOST_ALIAS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);

/// QEMU's routes: addresses on 127.0.0.0/8 (what a local cluster advertises: its
/// brokers and the Pehredar) go to and come from QEMU's host alias 10.0.2.2, so the node
/// loop and the CoAP engine see one address per gateway.
#[derive(Debug, Clone, Copy)]
pub struct HostAlias;

impl Routes for HostAlias {
    fn outbound(&self, to: SocketAddr) -> Option<IpEndpoint> {
        let SocketAddr::V4(a) = to else { return None };
        let ip = if a.ip().is_loopback() {
            HOST_ALIAS
        } else {
            *a.ip()
        };
        Some(SocketAddrV4::new(ip, a.port()).into())
    }

    fn inbound(&self, from: IpEndpoint) -> SocketAddr {
        let IpAddress::Ipv4(ip) = from.addr;
        to_cluster(ip, from.port)
    }
}

/// A datagram from 10.0.2.2 came from the host's loopback.
pub fn to_cluster(ip: Ipv4Addr, port: u16) -> SocketAddr {
    let ip = if ip == HOST_ALIAS {
        Ipv4Addr::LOCALHOST
    } else {
        ip
    };
    SocketAddr::V4(SocketAddrV4::new(ip, port))
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
        let _ = write!(s, "{} #{} {}.{}C", Text(self.name), seq, tenths / 10, tenths % 10);
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
            Text(core::str::from_utf8(&record.value).unwrap_or("(not UTF-8)"))
        );
        SetInterval.on_downlink(offset, record, settings);
    }
}
