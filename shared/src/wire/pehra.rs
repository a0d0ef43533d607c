//! PEHRA, the energy-saving protocol: check-ins at each node's alarm, the Pehredar's
//! terms and elections, wake-ups, and the admin's mode switch.

use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use super::health::NodeHealth;
use super::session::Directive;

/// The part a node plays in PEHRA.
///
/// CBOR: a text string: `"pehredar"`, `"awake"`, `"dormant"`, `"opted_out"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeRole {
    /// The elected watchman: stays awake for its term and wakes the others on traffic.
    Pehredar,
    /// A participant that is awake now (traffic, maintenance, PEHRA disabled).
    Awake,
    /// A participant that sleeps between alarms.
    Dormant,
    /// A node that does not take part (selfChk said no): always awake, never elected.
    OptedOut,
}

/// What a node sends to the Pehredar when its alarm wakes it (alarmClock).
///
/// CBOR: `{"node": text, "role": NodeRole, "mains_powered": bool, "next_alarm_ms"?: u64,
/// "traffic_waiting": bool, "health"?: NodeHealth}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckIn {
    /// The node's name.
    pub node: String,
    /// Its role as it sees it.
    pub role: NodeRole,
    /// Mains powered: only such nodes are Pehredar candidates.
    pub mains_powered: bool,
    /// When it means to wake next if left to sleep, milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_alarm_ms: Option<u64>,
    /// It has something to send (readings to publish, a produce to make).
    pub traffic_waiting: bool,
    /// Its health, if it reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<NodeHealth>,
}

/// The Pehredar's answer to a [`CheckIn`].
///
/// CBOR: `{"pehredar"?: text, "term"?: Term, "directive": Directive, "pending": u32}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckInReply {
    /// The current Pehredar's name; `None` while there is none (an election is on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pehredar: Option<String>,
    /// The current term, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term: Option<Term>,
    /// What the node should do now: sleep until its next alarm, stay awake, ...
    pub directive: Directive,
    /// How many messages are waiting for the node.
    pub pending: u32,
}

/// A Pehredar's term of office.
///
/// CBOR: `{"number": u64, "pehredar": text, "started_ms": u64, "ends_ms": u64}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Term {
    /// The term's number: it only grows, so a stale Pehredar is recognised.
    pub number: u64,
    /// The node elected for it.
    pub pehredar: String,
    /// When it began, milliseconds since the Unix epoch.
    pub started_ms: u64,
    /// When it ends (a re-election happens before), milliseconds since the Unix epoch.
    pub ends_ms: u64,
}

/// Why a node is being woken.
///
/// CBOR: a text string: `"traffic"`, `"pehredar_lost"`, `"admin"`, `"maintenance"`,
/// `"election"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WakeReason {
    /// Traffic reached the Pehredar (wakeUpAll).
    Traffic,
    /// A node found the Pehredar dead at its alarm.
    PehredarLost,
    /// A human admin is switching PEHRA mode (enablePehra / disablePehra).
    Admin,
    /// Rolling maintenance.
    Maintenance,
    /// An election (or re-election) is being held.
    Election,
}

/// A wake-up sent to a dormant node (wakeUpAll).
///
/// CBOR: `{"reason": WakeReason, "term": u64}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Wake {
    /// Why.
    pub reason: WakeReason,
    /// The sender's current term number (a wake from an older term is stale).
    pub term: u64,
}

/// The outcome of a Pehredar election, announced to the participants.
///
/// CBOR: `{"term": Term, "candidates": [text, ...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElectionResult {
    /// The new term, naming the new Pehredar.
    pub term: Term,
    /// The eligible nodes the Pehredar was drawn from.
    pub candidates: Vec<String>,
}

/// A human admin's switch of PEHRA mode for the cluster (enablePehra / disablePehra).
///
/// CBOR: `{"enabled": bool, "nonce": bytes, "mac": bytes}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModeChange {
    /// PEHRA on (`true`) or off.
    pub enabled: bool,
    /// A fresh random value, so a recorded message cannot be replayed.
    #[serde(with = "serde_bytes")]
    pub nonce: Vec<u8>,
    /// The message authentication code over `enabled` and `nonce` with the admin key
    /// (the scheme is defined where it is checked).
    #[serde(with = "serde_bytes")]
    pub mac: Vec<u8>,
}
