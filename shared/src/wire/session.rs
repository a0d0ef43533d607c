//! Zookeeper sessions: open (`POST /session`), heartbeat (`POST /session/{id}/hb`) and
//! what the zookeeper tells a node to do next.

use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use super::health::NodeHealth;

/// Body of `POST /session`: open a session.
///
/// CBOR: `{"timeout_ms": u32, "node"?: text, "health"?: NodeHealth}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionOpen {
    /// The session timeout the client asks for, milliseconds; the zookeeper may clamp it.
    pub timeout_ms: u32,
    /// The node's name (broker id, device name), if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The node's health now, to size its first lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<NodeHealth>,
}

/// Body of the 2.01 answer to `POST /session`.
///
/// CBOR: `{"session": u64, "timeout_ms": u32, "incarnation"?: u64}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SessionOpened {
    /// The new session's id.
    pub session: u64,
    /// The timeout granted, milliseconds.
    pub timeout_ms: u32,
    /// The answering zookeeper process's incarnation (see
    /// [`HeartbeatAck::incarnation`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incarnation: Option<u64>,
}

/// Body of `POST /session/{id}/hb`: a heartbeat with the node's health.
///
/// CBOR: `{"health": NodeHealth, "sleep_ms"?: u32}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The node's health now.
    pub health: NodeHealth,
    /// The node is going dormant for this long (PEHRA sleepCycle) and will send no
    /// heartbeat meanwhile: the zookeeper stretches this one lease to the session
    /// timeout plus `sleep_ms` (capped by its maximum sleep) and says so in
    /// [`HeartbeatAck::lease_ms`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sleep_ms: Option<u32>,
}

/// Body of the 2.04 answer to a heartbeat.
///
/// CBOR: `{"lease_ms": u32, "directives": [Directive, ...], "incarnation"?: u64}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatAck {
    /// How long the session lives from now without another heartbeat, milliseconds
    /// (the adaptive lease, stretched to cover a dormant node's sleep).
    pub lease_ms: u32,
    /// What the node should do, in order (often empty).
    #[serde(deserialize_with = "super::array_only::array_only")]
    pub directives: Vec<Directive>,
    /// The answering zookeeper process's incarnation: a random number drawn at its
    /// start. Sessions survive a restart (they are in the log), watches do not (they
    /// are CoAP observations held in memory): a client that sees another incarnation
    /// than the one its watches were registered with registers them again (ZooKeeper's
    /// SetWatches on reconnect).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incarnation: Option<u64>,
}

/// An instruction from the zookeeper or the Pehredar to one node.
///
/// CBOR: the data-less variants are text strings (`"stay_awake"`, `"wake_now"`,
/// `"rejoin"`); `SleepUntil` is `{"sleep_until": {"at_ms": u64}}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Directive {
    /// Sleep (PEHRA sleepCycle) until this time, then check in again.
    SleepUntil {
        /// When to wake: milliseconds since the Unix epoch.
        at_ms: u64,
    },
    /// Do not sleep: stay awake (the Pehredar, a node with traffic, PEHRA disabled).
    StayAwake,
    /// Wake up now and take part fully (wakeUpAll).
    WakeNow,
    /// The session is dead (expired, the node is "undead"): open a new session and rejoin.
    Rejoin,
}
