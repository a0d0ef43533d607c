//! What the firmware needs of a board. Implemented with embassy on a device and with
//! tokio (or fakes in virtual time) on a host.

use alloc::vec::Vec;
use core::fmt::{Debug, Write as _};
use core::net::SocketAddr;

/// A UDP socket bound to the device's address.
pub trait UdpSocket {
    /// What can go wrong.
    type Error: Debug;

    /// Sends one datagram.
    async fn send_to(&mut self, bytes: &[u8], to: SocketAddr) -> Result<(), Self::Error>;

    /// Waits for one datagram until `deadline_ms` (on the [`Clock`]'s time): its length
    /// and sender, or `None` once the deadline passed.
    async fn recv_until(
        &mut self,
        buf: &mut [u8],
        deadline_ms: u64,
    ) -> Result<Option<(usize, SocketAddr)>, Self::Error>;
}

/// A monotonic clock in milliseconds (since boot: only differences matter) that can
/// sleep.
pub trait Clock {
    /// Now.
    fn now_ms(&self) -> u64;

    /// Returns at `at_ms` (at once if that has passed). On a device, the executor's
    /// idle (and the deep sleep around [`crate::node::Device::sleep`]) saves the energy.
    async fn sleep_until(&mut self, at_ms: u64);
}

/// Randomness (seeds the CoAP engine's message IDs and tokens).
pub trait Rng {
    /// Fills `buf`.
    fn fill_bytes(&mut self, buf: &mut [u8]);
}

/// A `rand` generator as the device's [`Rng`]: [`SeededRng::new`] expands a seed (from a
/// hardware source, or the boot's timing where there is none) with the same ChaCha
/// generator the CoAP engine uses, so it costs a firmware no extra code.
pub struct SeededRng(rand::rngs::StdRng);

impl SeededRng {
    /// A generator expanded from `seed`.
    pub fn new(seed: [u8; 32]) -> Self {
        use rand::SeedableRng;
        SeededRng(rand::rngs::StdRng::from_seed(seed))
    }

    /// A generator expanded from a 64-bit seed.
    pub fn from_u64(seed: u64) -> Self {
        use rand::SeedableRng;
        SeededRng(rand::rngs::StdRng::seed_from_u64(seed))
    }
}

impl Rng for SeededRng {
    fn fill_bytes(&mut self, buf: &mut [u8]) {
        rand::Rng::fill_bytes(&mut self.0, buf)
    }
}

/// The device's sensor.
pub trait Sensor {
    /// What can go wrong.
    type Error: Debug;

    /// Takes one reading, the `seq`-th since the device was first started, as the bytes
    /// to publish.
    async fn read(&mut self, seq: u64) -> Result<Vec<u8>, Self::Error>;

    /// The battery's charge, ‰ (`None`: unknown or mains powered).
    fn battery_permille(&mut self) -> Option<u16> {
        None
    }
}

/// What a device keeps across deep sleep and restarts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Persisted {
    /// The device's name.
    pub name: heapless::String<32>,
    /// The first downlink offset not processed yet.
    pub downlink_from: Option<u64>,
    /// Readings taken so far (the next reading's sequence number).
    pub readings_seq: u64,
    /// Chosen at random when the device starts without storage: with the name it makes
    /// the producer id of its readings, so a device whose storage was wiped (its
    /// sequence numbers start again) is a new producer, not a stale one.
    pub incarnation: u32,
    /// The Pehredar's address as last learned (so the first check-in after a deep sleep
    /// goes there).
    pub pehredar: Option<SocketAddr>,
}

/// The largest encoded [`Persisted`].
pub const PERSISTED_MAX: usize = 1 + 1 + 32 + 1 + 8 + 8 + 4 + 1 + 48;

impl Persisted {
    /// A small binary form: version 2, name length, name, flags, offsets, incarnation,
    /// address text (version 1, without the incarnation, is still read).
    pub fn encode(&self) -> heapless::Vec<u8, PERSISTED_MAX> {
        let mut out = heapless::Vec::new();
        let mut addr: heapless::String<48> = heapless::String::new();
        if let Some(a) = self.pehredar {
            // An address always fits in 48 bytes ("[ipv6%scope]:port" is at most 47).
            let _ = write!(addr, "{a}");
        }
        let name = self.name.as_bytes();
        let _ = out.push(2);
        let _ = out.push(name.len() as u8);
        let _ = out.extend_from_slice(name);
        let _ = out.push(self.downlink_from.is_some() as u8);
        let _ = out.extend_from_slice(&self.downlink_from.unwrap_or(0).to_be_bytes());
        let _ = out.extend_from_slice(&self.readings_seq.to_be_bytes());
        let _ = out.extend_from_slice(&self.incarnation.to_be_bytes());
        let _ = out.push(addr.len() as u8);
        let _ = out.extend_from_slice(addr.as_bytes());
        out
    }

    /// Reads [`Self::encode`]'s form; `None` if it is not that (never panics).
    pub fn decode(bytes: &[u8]) -> Option<Persisted> {
        let mut r = Reader(bytes);
        let version = r.byte()?;
        if version != 1 && version != 2 {
            return None;
        }
        let n = r.byte()? as usize;
        let name = core::str::from_utf8(r.take(n)?).ok()?;
        let has_from = r.byte()? != 0;
        let from = u64::from_be_bytes(r.take(8)?.try_into().ok()?);
        let seq = u64::from_be_bytes(r.take(8)?.try_into().ok()?);
        let incarnation = match version {
            1 => 0,
            _ => u32::from_be_bytes(r.take(4)?.try_into().ok()?),
        };
        let n = r.byte()? as usize;
        let addr = core::str::from_utf8(r.take(n)?).ok()?;
        Some(Persisted {
            name: heapless::String::try_from(name).ok()?,
            downlink_from: has_from.then_some(from),
            readings_seq: seq,
            incarnation,
            pehredar: addr.parse().ok(),
        })
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }
}

/// Storage that survives deep sleep (RTC memory, flash, a file on a host).
pub trait Storage {
    /// What can go wrong.
    type Error: Debug;

    /// What was saved last, if anything.
    async fn load(&mut self) -> Result<Option<Persisted>, Self::Error>;

    /// Saves it.
    async fn save(&mut self, persisted: &Persisted) -> Result<(), Self::Error>;
}

/// What the radio is doing, for the board's power management and the energy model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RadioMode {
    /// Off (deep sleep, or computing between exchanges).
    Off,
    /// Listening (waiting for an answer, or kept awake).
    Rx,
    /// Transmitting.
    Tx,
}

/// Hooks into the radio's power management: called when the node loop changes what it
/// needs of the radio. The default does nothing (the network stack manages it).
pub trait Radio {
    /// The node loop now needs the radio in `mode`.
    fn set_mode(&mut self, mode: RadioMode) {
        let _ = mode;
    }
}

/// A radio without hooks.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoRadio;

impl Radio for NoRadio {}

/// [`Clock`] on embassy-time (the firmware binary provides the time driver).
#[cfg(feature = "embassy")]
#[derive(Debug, Clone, Copy, Default)]
pub struct EmbassyClock;

#[cfg(feature = "embassy")]
impl Clock for EmbassyClock {
    fn now_ms(&self) -> u64 {
        embassy_time::Instant::now().as_millis()
    }

    async fn sleep_until(&mut self, at_ms: u64) {
        embassy_time::Timer::at(embassy_time::Instant::from_millis(at_ms)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persisted_round_trips_and_garbage_is_refused() {
        let p = Persisted {
            name: heapless::String::try_from("dev-0001").unwrap(),
            downlink_from: Some(42),
            readings_seq: 7,
            incarnation: 0xdead_beef,
            pehredar: Some("127.0.0.1:5683".parse().unwrap()),
        };
        assert_eq!(Persisted::decode(&p.encode()), Some(p.clone()));
        let q = Persisted::default();
        assert_eq!(Persisted::decode(&q.encode()), Some(q));
        let bytes = p.encode();
        for n in 0..bytes.len() {
            assert_eq!(Persisted::decode(&bytes[..n]), None);
        }
        assert_eq!(Persisted::decode(&[2, 0]), None);
    }
}
