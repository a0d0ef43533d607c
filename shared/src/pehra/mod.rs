//! PEHRA, the energy-saving protocol (seed 000), as sans-IO state machines: time in
//! (milliseconds since the Unix epoch, because terms are compared across processes),
//! actions out. No clocks, sockets or files: the zookeeper, the brokers and the firmware
//! drive them.
//!
//! - [`addr`]: socket addresses parsed as `core::net` parses them, in less code.
//! - [`coordinator`]: the elector the zookeeper runs: random elections among candidates,
//!   terms and their handover, wakeUpAll generations, traffic mode, the admin's switch,
//!   allDown.
//! - [`device`]: a battery-powered device: alarms, directives, gateway rotation,
//!   readings buffer, downlink offset.
//! - [`node`]: one participant: awake, dormant until its alarm, Pehredar, opted out.
//! - [`vitals`]: a participant's health, RTT window and (as Pehredar) adaptive lease.
//!
//! `docs/pehra.md` describes the protocol as a whole.

pub mod addr;
pub mod coordinator;
pub mod device;
pub mod node;
pub mod vitals;
