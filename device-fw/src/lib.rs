//! The device firmware core (`#![no_std]` + `alloc`), issue 7 (`docs/devices.md`).
//!
//! - [`hal`]: what the firmware needs of a board: a UDP socket, a clock, randomness, a
//!   sensor, storage that survives deep sleep, radio hooks.
//! - [`client`]: a CoAP client over the shared sans-IO engine
//!   ([`pehra_shared::coap::Engine`]) and a [`hal::UdpSocket`]: one request at a time.
//! - [`node`]: the node loop, [`node::Device::run_cycle`]: check in, obey, publish,
//!   collect downlink, persist, say when to wake. The PEHRA decisions are
//!   [`pehra_shared::pehra::device::DeviceNode`]'s.
//! - `net` (features `net-ipv4`/`net-ipv6`): the [`hal::UdpSocket`] on embassy-net that
//!   every board uses.
//! - [`security`]: OSCORE towards the brokers: the device's keys, a context per broker,
//!   the ID Context and sequence number claim kept across a reset; with feature `edhoc`,
//!   EDHOC for devices that hold only a static key pair.
//! - [`energy`]: per-board currents (from the datasheets), charges per wake and per radio
//!   start, and the time spent per power state, so a run can be turned into µAh/day and
//!   battery life.
//!
//! The same code runs on a microcontroller (embassy: feature `embassy` gives a
//! [`hal::Clock`] on embassy-time) and on a host (`pehra device-sim`, tokio
//! implementations of the traits). Logging goes through defmt with feature `defmt`.
#![no_std]
#![warn(missing_docs)]
// The traits are used by one executor at a time (embassy or a tokio LocalSet): their
// futures need no `Send` bound.
#![allow(async_fn_in_trait)]

extern crate alloc;

/// Logs through defmt when the feature is on; nothing otherwise.
macro_rules! log_debug {
    ($($arg:tt)*) => {
        #[cfg(feature = "defmt")]
        defmt::debug!($($arg)*);
    };
}

/// Logs a warning through defmt when the feature is on; nothing otherwise.
macro_rules! log_warn {
    ($($arg:tt)*) => {
        #[cfg(feature = "defmt")]
        defmt::warn!($($arg)*);
    };
}

pub mod client;
pub mod energy;
pub mod frame;
pub mod hal;
#[cfg(any(feature = "net-ipv4", feature = "net-ipv6"))]
pub mod net;
pub mod node;
pub mod security;

pub use client::{ClientError, CoapClient};
pub use energy::{Board, Meter, PowerState, StateTimes};
pub use frame::OwnFrame;
pub use hal::{Clock, Persisted, Radio, RadioMode, Rng, SeededRng, Sensor, Storage, UdpSocket};
pub use node::{Application, CycleReport, Device, DeviceStats, Parts, SetInterval, Settings};
#[cfg(feature = "edhoc")]
pub use security::EdhocKeys;
pub use security::{split_broker, DeviceIdentity, DeviceKeys, DeviceSecurity, OscoreResume};
