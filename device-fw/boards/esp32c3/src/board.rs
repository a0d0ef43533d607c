//! The ESP32-C3's implementations of `pehra_device_fw::hal`: storage in RTC fast memory,
//! a clock that runs on through deep sleep, the hardware RNG, the on-chip temperature
//! sensor, and without Wi-Fi a socket that reaches nothing. (With Wi-Fi the socket is the
//! core's `pehra_device_fw::net::EmbassyUdp`.)

use alloc::vec::Vec;
use core::convert::Infallible;

use esp_hal::tsens::TemperatureSensor;
use pehra_device_fw::hal::{EmbassyClock, Persisted, Rng, Sensor, Storage};

// ---------------------------------------------------------------------------------------
// Storage: RTC fast memory (8 KiB on the C3), kept across deep sleep and software resets
// (`persistent`: not zeroed at boot), lost on power-on and brown-out resets.

const MAGIC: u32 = 0x5045_4833; // "PEH3": CBOR `Persisted`
/// The slot: magic, length, `Persisted`'s CBOR (readings included), FNV-1a checksum.
const SLOT: usize = 4096;
const BODY_MAX: usize = SLOT - 4 - 2 - 4;

#[esp_hal::ram(unstable(rtc_fast, persistent))]
static mut RTC_SLOT: [u8; SLOT] = [0; SLOT];

/// [`Storage`] in RTC fast memory: magic, length, [`Persisted::encode`]'s bytes, FNV-1a
/// checksum. A slot that does not check (power-on: random content) reads as empty.
/// Readings that do not fit are left out (oldest first) and counted.
#[derive(Default)]
pub struct RtcStorage {
    left_out: usize,
}

impl RtcStorage {
    /// Everything the last save was given is in the slot (no reading was left out), so
    /// a deep sleep loses nothing.
    pub fn kept_everything(&self) -> bool {
        self.left_out == 0
    }
}

fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, b| {
        (h ^ *b as u32).wrapping_mul(0x0100_0193)
    })
}

impl Storage for RtcStorage {
    type Error = Infallible;

    async fn load(&mut self) -> Result<Option<Persisted>, Infallible> {
        // SAFETY: one executor thread; nothing else touches the slot.
        let slot = unsafe { &*(&raw const RTC_SLOT) };
        if u32::from_le_bytes(slot[..4].try_into().unwrap()) != MAGIC {
            return Ok(None);
        }
        let n = u16::from_le_bytes([slot[4], slot[5]]) as usize;
        if n > BODY_MAX {
            return Ok(None);
        }
        let body = &slot[6..6 + n];
        let sum = u32::from_le_bytes(slot[6 + n..10 + n].try_into().unwrap());
        if sum != fnv1a(body) {
            return Ok(None);
        }
        Ok(Persisted::decode(body))
    }

    async fn save(&mut self, persisted: &Persisted) -> Result<(), Infallible> {
        let Some((body, left_out)) = persisted.encode_within(BODY_MAX) else {
            // Cannot happen (a name and counters are far below 4 KiB); keep the old slot.
            self.left_out = persisted.readings.len();
            return Ok(());
        };
        self.left_out = left_out;
        // SAFETY: as in `load`.
        let slot = unsafe { &mut *(&raw mut RTC_SLOT) };
        slot[..4].copy_from_slice(&MAGIC.to_le_bytes());
        slot[4..6].copy_from_slice(&(body.len() as u16).to_le_bytes());
        slot[6..6 + body.len()].copy_from_slice(&body);
        slot[6 + body.len()..10 + body.len()].copy_from_slice(&fnv1a(&body).to_le_bytes());
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Clock: embassy-time runs on the SYSTIMER, which a deep sleep resets; the RTC timer runs
// from power-on through every sleep and reset. Their difference at boot makes a clock
// that runs on through deep sleep (the `Clock` contract: the stored clock offset and
// schedule stay right).

/// The node's clock, in ms since power-on: embassy-time plus the RTC timer's reading at
/// boot (read once, here).
pub fn rtc_clock(rtc: &esp_hal::rtc_cntl::Rtc<'_>) -> EmbassyClock {
    let since_power_up = rtc.time_since_power_up().as_millis();
    let since_boot = embassy_time::Instant::now().as_millis();
    EmbassyClock::starting_at(since_power_up.saturating_sub(since_boot))
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

/// Without Wi-Fi (feature `wifi` off): a socket that sends nowhere and never hears back,
/// so the node loop runs (and backs off) and the rest of the firmware stays buildable.
#[cfg(not(feature = "wifi"))]
pub struct NoNet(pub EmbassyClock);

#[cfg(not(feature = "wifi"))]
impl pehra_device_fw::hal::UdpSocket for NoNet {
    type Error = Infallible;

    async fn send_to(
        &mut self,
        _bytes: &[u8],
        _to: core::net::SocketAddr,
    ) -> Result<(), Infallible> {
        Ok(())
    }

    async fn recv_until(
        &mut self,
        _buf: &mut [u8],
        deadline_ms: u64,
    ) -> Result<Option<(usize, core::net::SocketAddr)>, Infallible> {
        embassy_time::Timer::at(self.0.instant(deadline_ms)).await;
        Ok(None)
    }
}

// ---------------------------------------------------------------------------------------
// Wi-Fi reconnect cache: RTC fast memory, next to the `Persisted` slot. What a wake after
// deep sleep needs to skip the scan and DHCP (`pehra_device_fw::energy::WakeMode::
// DeepSleepCached`): the access point's BSSID and channel, and the DHCP lease to use as a
// static address until `energy::LEASE_CACHE_MS` after it was given.

const CACHE_MAGIC: u32 = 0x5045_5743; // "PEWC"
const CACHE_LEN: usize = 4 + 6 + 1 + 4 + 1 + 4 + 8 + 4;

#[esp_hal::ram(unstable(rtc_fast, persistent))]
static mut WIFI_CACHE: [u8; CACHE_LEN] = [0; CACHE_LEN];

/// The access point and lease of the last full connect, kept across deep sleep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WifiCache {
    /// The access point's BSSID.
    pub bssid: [u8; 6],
    /// Its channel.
    pub channel: u8,
    /// The leased address.
    pub address: [u8; 4],
    /// Its prefix length.
    pub prefix_len: u8,
    /// The default gateway (0.0.0.0: none).
    pub gateway: [u8; 4],
    /// When the lease was given, on the node's clock (ms since power-on).
    pub leased_at_ms: u64,
}

impl WifiCache {
    /// The cache, if RTC memory holds one that checks and its lease is younger than
    /// `max_age_ms` at `now_ms`.
    pub fn load(now_ms: u64, max_age_ms: u64) -> Option<WifiCache> {
        // SAFETY: one executor thread; nothing else touches the cache.
        let b = unsafe { &*(&raw const WIFI_CACHE) };
        if u32::from_le_bytes(b[..4].try_into().unwrap()) != CACHE_MAGIC {
            return None;
        }
        let sum = u32::from_le_bytes(b[CACHE_LEN - 4..].try_into().unwrap());
        if sum != fnv1a(&b[..CACHE_LEN - 4]) {
            return None;
        }
        let cache = WifiCache {
            bssid: b[4..10].try_into().unwrap(),
            channel: b[10],
            address: b[11..15].try_into().unwrap(),
            prefix_len: b[15],
            gateway: b[16..20].try_into().unwrap(),
            leased_at_ms: u64::from_le_bytes(b[20..28].try_into().unwrap()),
        };
        (now_ms.saturating_sub(cache.leased_at_ms) < max_age_ms).then_some(cache)
    }

    /// Stores it.
    pub fn store(&self) {
        let mut b = [0u8; CACHE_LEN];
        b[..4].copy_from_slice(&CACHE_MAGIC.to_le_bytes());
        b[4..10].copy_from_slice(&self.bssid);
        b[10] = self.channel;
        b[11..15].copy_from_slice(&self.address);
        b[15] = self.prefix_len;
        b[16..20].copy_from_slice(&self.gateway);
        b[20..28].copy_from_slice(&self.leased_at_ms.to_le_bytes());
        let sum = fnv1a(&b[..CACHE_LEN - 4]);
        b[CACHE_LEN - 4..].copy_from_slice(&sum.to_le_bytes());
        // SAFETY: as in `load`.
        unsafe { *(&raw mut WIFI_CACHE) = b };
    }

    /// Forgets it (the cached access point did not answer): the next boot connects in
    /// full.
    pub fn clear() {
        // SAFETY: as in `load`.
        let cache = unsafe { &mut *(&raw mut WIFI_CACHE) };
        cache[..4].copy_from_slice(&[0; 4]);
    }
}
