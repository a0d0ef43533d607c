//! The nRF52840-DK's implementations of `pehra_device_fw::hal` (the radio hook is
//! [`crate::ieee802154::RadioSwitch`]): a UDP socket over embassy-net (IPv6 over
//! 6LoWPAN), storage in RAM, the die temperature as the sensor, and an application that
//! logs downlink records.

use alloc::vec::Vec;
use core::convert::Infallible;
use core::net::{IpAddr, SocketAddr};

use embassy_net::udp::{RecvError, SendError, UdpSocket};
use embassy_net::{IpAddress, IpEndpoint};
use embassy_nrf::temp::Temp;
use embassy_time::{with_deadline, Instant};
use pehra_device_fw::{Application, Sensor, SetInterval, Settings};
use pehra_shared::wire::Record;

// ---------------------------------------------------------------------------------------
// UDP over embassy-net (IPv6 only).

/// Why a datagram was not sent or received (read through `Debug`).
#[derive(Debug)]
#[allow(dead_code)]
pub enum NetError {
    /// An IPv4 peer: the stack is IPv6 only (over 6LoWPAN).
    Ipv4,
    /// embassy-net could not send.
    Send(SendError),
    /// embassy-net could not receive.
    Recv(RecvError),
}

/// [`pehra_device_fw::UdpSocket`] on an embassy-net UDP socket (IPv6).
pub struct NetUdp(pub UdpSocket<'static>);

impl pehra_device_fw::UdpSocket for NetUdp {
    type Error = NetError;

    async fn send_to(&mut self, bytes: &[u8], to: SocketAddr) -> Result<(), NetError> {
        let IpAddr::V6(ip) = to.ip() else {
            return Err(NetError::Ipv4);
        };
        let ep = IpEndpoint::new(IpAddress::Ipv6(ip), to.port());
        self.0.send_to(bytes, ep).await.map_err(NetError::Send)
    }

    async fn recv_until(
        &mut self,
        buf: &mut [u8],
        deadline_ms: u64,
    ) -> Result<Option<(usize, SocketAddr)>, NetError> {
        let recv = self.0.recv_from(buf);
        match with_deadline(Instant::from_millis(deadline_ms), recv).await {
            Err(_timeout) => Ok(None),
            Ok(Err(e)) => Err(NetError::Recv(e)),
            Ok(Ok((n, meta))) => {
                let IpAddress::Ipv6(ip) = meta.endpoint.addr;
                Ok(Some((
                    n,
                    SocketAddr::new(IpAddr::V6(ip), meta.endpoint.port),
                )))
            }
        }
    }

    async fn flush(&mut self, deadline_ms: u64) -> Result<(), NetError> {
        // Past the deadline the datagrams stay queued (no route): not an error.
        let _ = with_deadline(Instant::from_millis(deadline_ms), self.0.flush()).await;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Sensor: the die temperature (TEMP peripheral, 0.25 °C steps; the chip's, not the air's).

/// [`Sensor`] on the nRF52840's TEMP: each reading is `seq=N t=DD.D` (°C, text, as the
/// ESP32-C3 board's). Battery: unknown (the DK runs from USB or a coin cell with no
/// gauge; the SAADC could measure VDD, not done here).
pub struct DieTemperature(pub Temp<'static>);

impl Sensor for DieTemperature {
    type Error = Infallible;

    async fn read(&mut self, seq: u64) -> Result<Vec<u8>, Infallible> {
        // Quarter degrees (I30F2's bits) to tenths, without float formatting.
        let deci = self.0.read().await.to_bits() * 10 / 4;
        let sign = if deci < 0 { "-" } else { "" };
        let deci = deci.unsigned_abs();
        Ok(alloc::format!("seq={seq} t={sign}{}.{}", deci / 10, deci % 10).into_bytes())
    }
}

// ---------------------------------------------------------------------------------------
// Application: log each downlink record, then obey `set-interval N`.

/// Logs each downlink record's text (defmt), then lets [`SetInterval`] obey it.
pub struct LoggingApp;

impl Application for LoggingApp {
    fn on_downlink(&mut self, offset: u64, record: &Record, settings: &mut Settings) {
        defmt::info!(
            "downlink @{}: {}",
            offset,
            core::str::from_utf8(&record.value).unwrap_or("(not UTF-8)")
        );
        SetInterval.on_downlink(offset, record, settings);
    }
}
