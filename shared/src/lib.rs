//! Pehra's shared core: one definition of every wire type, the sans-IO CoAP exchange
//! engine, and (later) the PEHRA state machines.
//!
//! `#![no_std]` + `alloc`: nothing here touches a socket, a file or a clock. Time comes in
//! as an [`Instant`] argument and what to send comes out as data, so the same logic runs
//! in tokio on a gateway (feature `std`, module [`driver`]) and in embassy on a
//! microcontroller. The engine's server half (answering requests, observers, block-wise
//! serving) is feature `server` (part of `std`); a device builds without it, for flash.
#![no_std]
#![warn(missing_docs)]

extern crate alloc;
#[cfg(any(feature = "std", test))]
extern crate std;

pub mod api;
pub mod coap;
#[cfg(feature = "edhoc")]
pub mod edhoc;
pub mod health;
pub mod oscore;
pub mod pehra;
pub mod security;
pub mod time;
pub mod wire;

#[cfg(feature = "std")]
pub mod driver;

pub use time::{Duration, Instant};
