//! Seed 002's health arithmetic, sans-IO and without floating point (it runs on a
//! microcontroller too): the Node Health Index ([`nhi`]) computed from the
//! [`NodeHealth`](crate::wire::NodeHealth) reports nodes send, the sliding window of
//! round-trip times whose standard deviation measures network stability ([`rtt`]), and
//! the adaptive lease built from both and the master's load ([`lease`]).
//!
//! Every ratio is an integer in permille (‰, 1000 = 1.0); signed factors are `i32` ‰.
//! `docs/pehra.md` argues the defaults.

pub mod handover;
pub mod lease;
pub mod nhi;
pub mod rtt;
#[cfg(feature = "std")]
pub mod system;

pub use lease::{LeaseConfig, LeaseInputs, LeaseParts};
pub use nhi::{HealthClass, NhiConfig, NhiThresholds, NhiWeights};
pub use rtt::RttWindow;
