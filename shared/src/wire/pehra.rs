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
/// CBOR: `{"pehredar"?: text, "pehredar_addr"?: text, "term"?: Term, "gateway_ms"?: u64,
/// "directive": Directive, "pending": u32, "lease_ms"?: u32}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckInReply {
    /// The current Pehredar's name; `None` while there is none (an election is on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pehredar: Option<String>,
    /// Where the current Pehredar serves CoAP (`ip:port`), so a device checks in there
    /// next time; `None` if unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pehredar_addr: Option<String>,
    /// The current term, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term: Option<Term>,
    /// The gateway's clock when it answered, ms since the Unix epoch: a device without a
    /// clock of its own sets its offset from it (`SleepUntil` times are on this clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_ms: Option<u64>,
    /// What the node should do now: sleep until its next alarm, stay awake, ...
    pub directive: Directive,
    /// How many messages are waiting for the node.
    pub pending: u32,
    /// The Pehredar's adaptive lease (seed 002), ms: the longest a node may go without
    /// hearing from the Pehredar, so a dormant node checks in again within it (a dead
    /// Pehredar is noticed within one lease). `None` from a node that is not the
    /// Pehredar (or an older one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_ms: Option<u32>,
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
    #[serde(deserialize_with = "super::array_only::array_only")]
    pub candidates: Vec<String>,
}

/// A human admin's switch of PEHRA mode for the cluster (enablePehra / disablePehra),
/// the body of `POST /pehra/mode` at the zookeeper.
///
/// The zookeeper accepts it only if `mac` is right for the admin key it was started with
/// and `issued_ms` is later than the last change it accepted (so a recorded request
/// cannot be replayed); otherwise 4.01 and nothing changes.
///
/// CBOR: `{"enabled": bool, "issued_ms": u64, "nonce": bytes, "mac": bytes}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModeChange {
    /// PEHRA on (`true`) or off.
    pub enabled: bool,
    /// When the admin issued it, milliseconds since the Unix epoch: it must be later
    /// than the last accepted change.
    pub issued_ms: u64,
    /// A fresh random value (16 bytes), so two changes in one millisecond differ.
    #[serde(with = "serde_bytes")]
    pub nonce: Vec<u8>,
    /// HMAC-SHA256 with the admin key over `"pehra-mode-v1"`, `enabled` (one byte),
    /// `issued_ms` (8 bytes, big-endian) and `nonce`.
    #[serde(with = "serde_bytes")]
    pub mac: Vec<u8>,
}

/// The last mode change the admin made: the znode `/pehra/admin`.
///
/// CBOR: `{"enabled": bool, "issued_ms": u64}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AdminSwitch {
    /// PEHRA on or off.
    pub enabled: bool,
    /// When the admin issued it (a later change must be issued later).
    pub issued_ms: u64,
}

/// The cluster's PEHRA state: the znode `/pehra/state`, written only by the zookeeper's
/// PEHRA coordinator and watched by every node.
///
/// CBOR: `{"enabled": bool, "traffic_awake": bool, "wake_generation": u64,
/// "wake_reason"?: WakeReason, "term"?: Term, "next"?: Term, "temporary": bool,
/// "next_temporary"?: true, "known": [text, ...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PehraState {
    /// PEHRA mode as the admin set it (enablePehra / disablePehra). Off: nobody sleeps.
    pub enabled: bool,
    /// The cluster is switched out of PEHRA mode by traffic (disablePehra by the
    /// Pehredar): everyone stays awake until every node reports idle.
    pub traffic_awake: bool,
    /// Bumped by every wakeUpAll: a node that has obeyed an older generation wakes.
    pub wake_generation: u64,
    /// Why the last wakeUpAll happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wake_reason: Option<WakeReason>,
    /// The Pehredar in office and its term.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term: Option<Term>,
    /// A Pehredar elected but not yet in office (the handover of a re-election, or the
    /// election after a Pehredar was lost): it takes office by publishing its
    /// [`NodeStatus::office`] = `next.number`. Nobody sleeps while an election is open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<Term>,
    /// `term` is allDown's temporary Pehredar: an election is held once every node in
    /// `known` is back.
    pub temporary: bool,
    /// `next` is allDown's temporary Pehredar (so a restarted coordinator still makes
    /// its term temporary). Omitted when false.
    #[serde(default, skip_serializing_if = "core::ops::Not::not")]
    pub next_temporary: bool,
    /// Every candidate node ever seen (allDown waits for all of them).
    #[serde(deserialize_with = "super::array_only::array_only")]
    pub known: Vec<String>,
}

impl Default for PehraState {
    fn default() -> Self {
        PehraState {
            enabled: true,
            traffic_awake: false,
            wake_generation: 0,
            wake_reason: None,
            term: None,
            next: None,
            temporary: false,
            next_temporary: false,
            known: Vec::new(),
        }
    }
}

/// One node's PEHRA status: the ephemeral znode `/pehra/nodes/{node}`, written by the
/// node with its own session (so it goes when the node dies).
///
/// CBOR: `{"node": text, "addr": text, "role": NodeRole, "candidate": bool,
/// "stay_awake": bool, "idle": bool, "next_alarm_ms"?: u64, "office"?: u64,
/// "wake_generation": u64, "since_ms": u64, "nhi"?: u16, "lease_ms"?: u32,
/// "rtt_ms"?: u32}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The node's name (`broker-{id}` for brokers).
    pub node: String,
    /// Where it serves CoAP (`ip:port`): check-ins and held requests go there.
    pub addr: String,
    /// Its role now.
    pub role: NodeRole,
    /// It may be elected Pehredar: it participates (selfChk) and is mains powered.
    pub candidate: bool,
    /// It participates but never sleeps (stayAwake).
    pub stay_awake: bool,
    /// It has seen no traffic for its idle period.
    pub idle: bool,
    /// When it wakes next if left to sleep (dormant nodes), ms since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_alarm_ms: Option<u64>,
    /// The term number it holds office in as Pehredar (its acceptance of an election).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub office: Option<u64>,
    /// The last wakeUpAll generation it obeyed.
    pub wake_generation: u64,
    /// When it took its current role, ms since the Unix epoch.
    pub since_ms: u64,
    /// Its Node Health Index (seed 002), ‰, by its own weights, as last published
    /// (republished when it moves noticeably, not at every sample): the coordinator
    /// classes candidates by it. Only the index, not the whole [`NodeHealth`], so the
    /// status stays small (it is written at every change of role).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nhi: Option<u16>,
    /// As Pehredar: the adaptive lease it gives in its check-in replies, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_ms: Option<u32>,
    /// The mean round-trip time the node measured to its peers (its check-ins with the
    /// Pehredar, the RTTs it reports or is told of), ms, republished when it moves by a
    /// few ms: the network proximity the controller weighs when it chooses a warm
    /// handover's candidate. Omitted before the first sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<u32>,
}

/// A request to the PEHRA coordinator: a persistent sequential znode under
/// `/pehra/requests`, which the coordinator applies in order and deletes.
///
/// CBOR: `{"wake_all": {"from": text, "reason": WakeReason, "term": u64}}` or
/// `{"reelect": {"exclude": [text, ...]}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PehraRequest {
    /// wakeUpAll. `Traffic` also switches the cluster out of PEHRA mode until idle;
    /// `PehredarLost` (a node found the Pehredar of `term` dead at its alarm) also
    /// opens an election without it, if `term` is still the current one.
    WakeAll {
        /// The node asking.
        from: String,
        /// Why.
        reason: WakeReason,
        /// The term number the node knows.
        term: u64,
    },
    /// Elect a new Pehredar now, not among `exclude` (maintenance, before taking the
    /// current Pehredar down).
    Reelect {
        /// Nodes that must not be elected this time.
        exclude: Vec<String>,
    },
}

/// One term in the election history: the znode `/pehra/terms/{number:020}`, written
/// when the Pehredar takes office (the latest 1000 are kept).
///
/// CBOR: `{"term": Term, "candidates": [text, ...], "temporary": bool}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TermRecord {
    /// The term; `started_ms` is when the Pehredar took office.
    pub term: Term,
    /// The eligible nodes it was drawn from.
    #[serde(deserialize_with = "super::array_only::array_only")]
    pub candidates: Vec<String>,
    /// An allDown temporary term (no election was held).
    pub temporary: bool,
}

/// A rolling-maintenance order for one node: the znode `/pehra/maintenance/{node}`,
/// written by `pehra cluster maintenance` and updated by the node as it goes.
///
/// CBOR: `{"id": u64, "command"?: text, "state": MaintenanceState, "message"?: text}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Maintenance {
    /// Which maintenance run (a new run has a new id).
    pub id: u64,
    /// The *name* of a maintenance command configured on the node itself (a broker's
    /// `--maintenance-command NAME=CMD`) to run instead of restarting; `None` means
    /// restart the node. Never the command's text: see [`is_maintenance_command_name`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// How far it got.
    pub state: MaintenanceState,
    /// The outcome in words (exit status, error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Whether `name` may name a maintenance command: 1 to 64 ASCII letters, digits, `-`,
/// `_` or `.` (so it can be neither a shell command nor a path).
pub fn is_maintenance_command_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// How far a node's maintenance got.
///
/// CBOR: a text string: `"requested"`, `"running"`, `"done"`, `"failed"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaintenanceState {
    /// Ordered, not yet started.
    Requested,
    /// The node is moving its leadership away, running the command or restarting.
    Running,
    /// Finished and back in service.
    Done,
    /// The command failed (the node is back in service).
    Failed,
}
