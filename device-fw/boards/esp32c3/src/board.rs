//! The ESP32-C3's implementations of `pehra_device_fw::hal`: storage in RTC fast memory,
//! the hardware RNG, the on-chip temperature sensor, and (feature `wifi`) a UDP socket
//! over embassy-net.

use alloc::vec::Vec;
use core::convert::Infallible;

use esp_hal::tsens::TemperatureSensor;
use pehra_device_fw::hal::{Persisted, Rng, Sensor, Storage, PERSISTED_MAX};

// ---------------------------------------------------------------------------------------
// Storage: RTC fast memory (8 KiB on the C3), kept across deep sleep and software resets
// (`persistent`: not zeroed at boot), lost on power-on and brown-out resets.

const MAGIC: u32 = 0x5045_4852; // "PEHR"
const SLOT: usize = 4 + 1 + PERSISTED_MAX + 4;

#[esp_hal::ram(unstable(rtc_fast, persistent))]
static mut RTC_SLOT: [u8; SLOT] = [0; SLOT];

/// [`Storage`] in RTC fast memory: magic, length, [`Persisted::encode`]'s bytes, FNV-1a
/// checksum. A slot that does not check (power-on: random content) reads as empty.
pub struct RtcStorage;

fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, b| (h ^ *b as u32).wrapping_mul(0x0100_0193))
}

impl Storage for RtcStorage {
    type Error = Infallible;

    async fn load(&mut self) -> Result<Option<Persisted>, Infallible> {
        // SAFETY: one executor thread; nothing else touches the slot.
        let slot = unsafe { core::ptr::read_volatile(&raw const RTC_SLOT) };
        if u32::from_le_bytes(slot[..4].try_into().unwrap()) != MAGIC {
            return Ok(None);
        }
        let n = slot[4] as usize;
        if n > PERSISTED_MAX {
            return Ok(None);
        }
        let body = &slot[5..5 + n];
        let sum = u32::from_le_bytes(slot[5 + n..9 + n].try_into().unwrap());
        if sum != fnv1a(body) {
            return Ok(None);
        }
        Ok(Persisted::decode(body))
    }

    async fn save(&mut self, persisted: &Persisted) -> Result<(), Infallible> {
        let body = persisted.encode();
        let mut slot = [0u8; SLOT];
        slot[..4].copy_from_slice(&MAGIC.to_le_bytes());
        slot[4] = body.len() as u8;
        slot[5..5 + body.len()].copy_from_slice(&body);
        slot[5 + body.len()..9 + body.len()].copy_from_slice(&fnv1a(&body).to_le_bytes());
        // SAFETY: as in `load`.
        unsafe { core::ptr::write_volatile(&raw mut RTC_SLOT, slot) };
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Randomness: the hardware RNG (true random while the Wi-Fi/ADC entropy source runs,
// which esp-radio turns on; pseudo-random seeded by hardware noise before).

/// [`Rng`] on `esp_hal::rng::Rng`.
pub struct HwRng(pub esp_hal::rng::Rng);

impl Rng for HwRng {
    fn fill_bytes(&mut self, buf: &mut [u8]) {
        self.0.read(buf);
    }
}

// ---------------------------------------------------------------------------------------
// Sensor: the on-chip temperature sensor (die temperature, not ambient).

/// [`Sensor`] on the C3's TSENS: each reading is `seq=N t=DD.D` (°C, text, so
/// `pehra consume` shows it as it is).
pub struct ChipTemperature<'d>(pub TemperatureSensor<'d>);

impl Sensor for ChipTemperature<'_> {
    type Error = Infallible;

    async fn read(&mut self, seq: u64) -> Result<Vec<u8>, Infallible> {
        // Tenths of a degree without float formatting (core::fmt's float code is ~10 KiB).
        let deci = (self.0.get_temperature().to_celsius() * 10.0) as i32;
        let sign = if deci < 0 { "-" } else { "" };
        let deci = deci.unsigned_abs();
        Ok(alloc::format!("seq={seq} t={sign}{}.{}", deci / 10, deci % 10).into_bytes())
    }
}

// ---------------------------------------------------------------------------------------
// UDP over embassy-net (feature `wifi`).

#[cfg(feature = "wifi")]
pub use net::NetUdp;

#[cfg(feature = "wifi")]
mod net {
    use core::net::{IpAddr, SocketAddr};

    use embassy_net::udp::{RecvError, SendError, UdpSocket};
    use embassy_net::{IpAddress, IpEndpoint};
    use embassy_time::{with_deadline, Instant};
    use pehra_device_fw::hal;

    /// [`hal::UdpSocket`] on an embassy-net UDP socket (IPv4).
    pub struct NetUdp(pub UdpSocket<'static>);

    /// Why a datagram was not sent or received (read through `Debug`).
    #[derive(Debug)]
    #[allow(dead_code)]
    pub enum NetError {
        Send(SendError),
        Recv(RecvError),
        /// An IPv6 peer (the stack is built for IPv4 only).
        Ipv6,
    }

    impl hal::UdpSocket for NetUdp {
        type Error = NetError;

        async fn send_to(&mut self, bytes: &[u8], to: SocketAddr) -> Result<(), NetError> {
            let IpAddr::V4(ip) = to.ip() else {
                return Err(NetError::Ipv6);
            };
            let ep = IpEndpoint::new(IpAddress::Ipv4(ip), to.port());
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
                    let IpAddress::Ipv4(ip) = meta.endpoint.addr;
                    Ok(Some((n, SocketAddr::new(IpAddr::V4(ip), meta.endpoint.port))))
                }
            }
        }
    }
}

/// Without Wi-Fi (feature `wifi` off): a socket that sends nowhere and never hears back,
/// so the node loop runs (and backs off) and the rest of the firmware stays buildable.
#[cfg(not(feature = "wifi"))]
pub struct NoNet;

#[cfg(not(feature = "wifi"))]
impl pehra_device_fw::hal::UdpSocket for NoNet {
    type Error = Infallible;

    async fn send_to(&mut self, _bytes: &[u8], _to: core::net::SocketAddr) -> Result<(), Infallible> {
        Ok(())
    }

    async fn recv_until(
        &mut self,
        _buf: &mut [u8],
        deadline_ms: u64,
    ) -> Result<Option<(usize, core::net::SocketAddr)>, Infallible> {
        embassy_time::Timer::at(embassy_time::Instant::from_millis(deadline_ms)).await;
        Ok(None)
    }
}
