//! The node health report every heartbeat and check-in carries (seed 002's inputs to the
//! Node Health Index and the adaptive lease).

use serde::{Deserialize, Serialize};

/// A node's own measure of its health, sent with heartbeats and PEHRA check-ins.
///
/// Loads are in permille (0 = idle, 1000 = saturated) so that they fit in a `u16` and need
/// no floating point on a microcontroller. The receiver computes the Node Health Index
/// and the lease from them.
///
/// CBOR: `{"cpu_permille": u16, "memory_permille": u16, "disk_io_permille": u16,
/// "rtt_ms": u32, "battery_permille"?: u16, "failures": u32}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeHealth {
    /// CPU load, ‰.
    pub cpu_permille: u16,
    /// Memory in use, ‰ of what the node has.
    pub memory_permille: u16,
    /// Disk I/O load, ‰ (0 on a node without a disk).
    pub disk_io_permille: u16,
    /// Round-trip time to the peer this report goes to (the zookeeper or the Pehredar),
    /// milliseconds, as the node last measured it.
    pub rtt_ms: u32,
    /// Battery charge, ‰; `None` (omitted) means mains powered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub battery_permille: Option<u16>,
    /// Failures the node has seen recently (timeouts, restarts, storage errors): its
    /// failure history, counted by the node.
    pub failures: u32,
}
