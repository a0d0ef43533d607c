//! What the firmware needs of a board. Implemented with embassy on a device and with
//! tokio (or fakes in virtual time) on a host.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Debug;
use core::net::SocketAddr;

use pehra_shared::pehra::device::NodeMemory;
use pehra_shared::wire::{self, Record};

#[cfg(feature = "edhoc")]
use crate::security::EdhocSession;
use crate::security::OscoreResume;
use serde::{Deserialize, Serialize};

/// The largest datagram read through [`UdpSocket::recv_with`]'s default (a device's
/// answers are small; larger ones go block-wise).
pub const RECV_BUF: usize = 1280;

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

    /// Waits for one datagram until `deadline_ms` and hands it to `f` with its sender:
    /// `f`'s result, or `None` once the deadline passed. A socket that holds received
    /// datagrams in its own buffer (embassy-net) hands `f` that buffer, so the caller
    /// keeps none of its own (the CoAP client's 1280 bytes of heap on a device). The
    /// default reads it with [`Self::recv_until`] into a [`RECV_BUF`]-byte buffer
    /// allocated for the call.
    async fn recv_with<T, F: FnOnce(&[u8], SocketAddr) -> T>(
        &mut self,
        deadline_ms: u64,
        f: F,
    ) -> Result<Option<T>, Self::Error> {
        let mut buf = alloc::vec![0u8; RECV_BUF];
        let got = self.recv_until(&mut buf, deadline_ms).await?;
        Ok(got.map(|(n, from)| f(&buf[..n.min(buf.len())], from)))
    }

    /// Waits until every datagram given to [`Self::send_to`] has left the device, or
    /// until `deadline_ms`. A network stack that queues datagrams and sends them from
    /// its own task (embassy-net) must wait here: the node loop calls it before the
    /// device sleeps, which would otherwise lose what was sent without waiting for an
    /// answer (readings with acks 0). The default returns at once (a socket that hands
    /// each datagram to the network before `send_to` returns).
    async fn flush(&mut self, deadline_ms: u64) -> Result<(), Self::Error> {
        let _ = deadline_ms;
        Ok(())
    }
}

/// A monotonic clock in milliseconds that can sleep. Only differences matter, but it must
/// run on through deep sleep: a board whose timer starts again when a deep sleep resets
/// it adds the time of a clock that does not (the RTC's), so that the clock offset and
/// the schedule kept in [`Persisted`] stay right.
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

/// A generator borrowed: what it draws advances the generator lent.
impl<G: Rng + ?Sized> Rng for &mut G {
    fn fill_bytes(&mut self, buf: &mut [u8]) {
        (**self).fill_bytes(buf)
    }
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

/// What a device keeps across deep sleep and restarts: who it is, its readings counter,
/// the state machine's memory (schedule, clock offset, Pehredar, downlink offset) and
/// the readings not yet acknowledged. Stored as CBOR ([`Persisted::encode`]), with
/// the same codec as the wire, so a firmware carries no second format.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct Persisted {
    /// The device's name.
    pub name: String,
    /// Readings taken so far (the next reading's sequence number).
    pub readings_seq: u64,
    /// Chosen at random when the device starts without storage: with the name it makes
    /// the producer id of its readings, so a device whose storage was wiped (its
    /// sequence numbers start again) is a new producer, not a stale one.
    pub incarnation: u32,
    /// The PEHRA state machine's memory.
    pub node: NodeMemory,
    /// The readings not acknowledged yet, oldest first.
    pub readings: Vec<Record>,
    /// OSCORE's ID Context and sequence number claim, for a storage that survives a
    /// reset (see [`crate::security`]); `None` for a plain device.
    #[serde(default)]
    pub oscore: Option<OscoreResume>,
    /// The OSCORE contexts EDHOC made, one per broker (EDHOC identities only).
    #[cfg(feature = "edhoc")]
    #[serde(default)]
    pub edhoc: Vec<EdhocSession>,
}

/// [`Persisted`]'s encoded form, borrowing (so that a tail of the readings can be
/// encoded without copying them).
#[derive(Serialize)]
#[serde(rename = "Persisted")]
struct PersistedRef<'a> {
    name: &'a str,
    readings_seq: u64,
    incarnation: u32,
    node: &'a NodeMemory,
    readings: &'a [Record],
    oscore: Option<OscoreResume>,
    #[cfg(feature = "edhoc")]
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    edhoc: &'a [EdhocSession],
}

impl Persisted {
    fn encode_from(&self, first_reading: usize) -> Vec<u8> {
        let view = PersistedRef {
            name: &self.name,
            readings_seq: self.readings_seq,
            incarnation: self.incarnation,
            node: &self.node,
            readings: &self.readings[first_reading.min(self.readings.len())..],
            oscore: self.oscore,
            #[cfg(feature = "edhoc")]
            edhoc: &self.edhoc,
        };
        // Encoding into a Vec fails only when memory does (which aborts anyway).
        wire::encode(&view).unwrap_or_default()
    }

    /// The CBOR form.
    pub fn encode(&self) -> Vec<u8> {
        self.encode_from(0)
    }

    /// The CBOR form in at most `max_bytes`, leaving out the oldest readings if it must:
    /// the bytes and how many readings were left out; `None` if even without readings
    /// it does not fit.
    pub fn encode_within(&self, max_bytes: usize) -> Option<(Vec<u8>, usize)> {
        for left_out in 0..=self.readings.len() {
            let bytes = self.encode_from(left_out);
            if bytes.len() <= max_bytes {
                return Some((bytes, left_out));
            }
        }
        None
    }

    /// Reads [`Self::encode`]'s form; `None` if it is not that (never panics).
    pub fn decode(bytes: &[u8]) -> Option<Persisted> {
        wire::decode(bytes).ok()
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

/// [`Clock`] on embassy-time (the firmware binary provides the time driver), shifted by
/// a fixed offset: `now_ms` is the offset plus embassy's time since boot. A board whose
/// timer starts again at every deep-sleep reset (the ESP32-C3) gives as offset the time
/// a clock that runs on (the RTC's) read at boot, so the clock runs on through the sleep
/// as [`Clock`] requires; a board whose sleeps keep the timer running uses
/// [`EmbassyClock::default`] (no offset).
#[cfg(feature = "embassy")]
#[derive(Debug, Clone, Copy, Default)]
pub struct EmbassyClock {
    offset_ms: u64,
}

#[cfg(feature = "embassy")]
impl EmbassyClock {
    /// A clock that reads `boot_ms` when embassy's time is zero.
    pub const fn starting_at(boot_ms: u64) -> Self {
        EmbassyClock { offset_ms: boot_ms }
    }

    /// The embassy instant at clock time `ms` (boot, if `ms` is before it).
    pub fn instant(&self, ms: u64) -> embassy_time::Instant {
        embassy_time::Instant::from_millis(ms.saturating_sub(self.offset_ms))
    }
}

#[cfg(feature = "embassy")]
impl Clock for EmbassyClock {
    fn now_ms(&self) -> u64 {
        self.offset_ms + embassy_time::Instant::now().as_millis()
    }

    async fn sleep_until(&mut self, at_ms: u64) {
        embassy_time::Timer::at(self.instant(at_ms)).await
    }
}

/// [`Storage`] in a RAM static, for a board whose sleep keeps RAM (System ON idle, a
/// timer wait): it survives every sleep; a reset empties it, and the device starts as a
/// new incarnation. [`Persisted`] is kept as a value, not encoded, and without its
/// readings: they stay in the `Device`, which lives as long as this storage does (a copy
/// here would only double their heap). One per firmware.
#[cfg(feature = "embassy")]
#[derive(Debug, Clone, Copy, Default)]
pub struct RamStorage;

#[cfg(feature = "embassy")]
static RAM_STORED: critical_section::Mutex<core::cell::RefCell<Option<Persisted>>> =
    critical_section::Mutex::new(core::cell::RefCell::new(None));

#[cfg(feature = "embassy")]
impl Storage for RamStorage {
    type Error = core::convert::Infallible;

    async fn load(&mut self) -> Result<Option<Persisted>, Self::Error> {
        Ok(critical_section::with(|cs| {
            RAM_STORED.borrow_ref(cs).clone()
        }))
    }

    async fn save(&mut self, persisted: &Persisted) -> Result<(), Self::Error> {
        let kept = Persisted {
            name: persisted.name.clone(),
            readings_seq: persisted.readings_seq,
            incarnation: persisted.incarnation,
            node: persisted.node.clone(),
            readings: Vec::new(),
            oscore: persisted.oscore,
            #[cfg(feature = "edhoc")]
            edhoc: persisted.edhoc.clone(),
        };
        critical_section::with(|cs| *RAM_STORED.borrow_ref_mut(cs) = Some(kept));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u8) -> Record {
        Record {
            key: Some(b"dev-0001".to_vec()),
            value: alloc::vec![n; 20],
            timestamp_ms: 1_700_000_000_000 + n as u64,
            headers: Vec::new(),
        }
    }

    fn persisted() -> Persisted {
        Persisted {
            name: "dev-0001".into(),
            readings_seq: 7,
            incarnation: 0xdead_beef,
            node: NodeMemory {
                pehredar: Some("127.0.0.1:5683".parse().unwrap()),
                clock_offset_ms: Some(1_699_999_000_000),
                alarm_interval_ms: 30_000,
                downlink_from: Some(42),
                ..NodeMemory::default()
            },
            readings: (0..5).map(record).collect(),
            oscore: Some(OscoreResume {
                id_context: 0x0102_0304_0506_0708,
                claim: 128,
            }),
            #[cfg(feature = "edhoc")]
            edhoc: alloc::vec![crate::security::EdhocSession {
                broker: 2,
                master_secret: [0x11; 16],
                master_salt: [0x22; 8],
                sender_id: alloc::vec![0x06, 1],
                recipient_id: alloc::vec![0x2a],
            }],
        }
    }

    #[test]
    fn persisted_round_trips_and_garbage_is_refused() {
        let p = persisted();
        assert_eq!(Persisted::decode(&p.encode()), Some(p.clone()));
        let q = Persisted::default();
        assert_eq!(Persisted::decode(&q.encode()), Some(q));
        let bytes = p.encode();
        for n in 0..bytes.len() {
            assert_eq!(Persisted::decode(&bytes[..n]), None);
        }
        assert_eq!(Persisted::decode(&[2, 0]), None);
        assert_eq!(Persisted::decode(b"garbage"), None);
    }

    #[test]
    fn encode_within_leaves_out_the_oldest_readings_until_it_fits() {
        let p = persisted();
        let all = p.encode();
        assert_eq!(p.encode_within(all.len()), Some((all.clone(), 0)));
        let (bytes, left_out) = p.encode_within(all.len() - 1).unwrap();
        assert_eq!(left_out, 1);
        let kept = Persisted::decode(&bytes).unwrap();
        assert_eq!(kept.readings, p.readings[1..]);
        assert_eq!(kept.node, p.node);
        let bare = Persisted {
            readings: Vec::new(),
            ..p.clone()
        };
        let (bytes, left_out) = p.encode_within(bare.encode().len()).unwrap();
        assert_eq!((bytes, left_out), (bare.encode(), 5));
        assert_eq!(p.encode_within(bare.encode().len() - 1), None);
    }
}
