//! What a device (a battery-powered node running `device-fw`) says to the gateway:
//! readings up, downlink records down. Check-ins use [`super::CheckIn`].
//!
//! Every broker serves the device routes (`docs/devices.md`):
//!
//! - `POST /dev/checkin` — [`super::CheckIn`] → [`super::CheckInReply`] (PEHRA alarmClock);
//! - `POST /dev/{node}/readings` — [`DeviceReadings`] → [`super::ProduceResponse`];
//! - `POST /dev/{node}/downlink` — [`DownlinkRequest`] → [`DownlinkResponse`].

use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use super::log::{Acks, Record};

/// A device's readings, published to `topic` keyed by the device's name (so one
/// device's readings stay in order on one partition).
///
/// CBOR: `{"topic": text, "acks": Acks, "records": [Record, ...], "first_seq"?: u32,
/// "incarnation": u32}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceReadings {
    /// The topic (e.g. `readings`).
    pub topic: String,
    /// When the gateway answers: 1 (the leader wrote them) or all (committed).
    pub acks: Acks,
    /// The readings, oldest first (several when the device batched them).
    #[serde(deserialize_with = "super::array_only::array_only")]
    pub records: Vec<Record>,
    /// The device's sequence number of the first reading (its persisted counter, one
    /// per reading). With it the gateway produces idempotently (producer id derived from
    /// the node's name), so a device that repeats a request whose answer it lost never
    /// stores its readings twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_seq: Option<u32>,
    /// Chosen at random by a device that started without storage: a wiped device is a
    /// new producer (its sequence numbers start again), not a stale one.
    #[serde(default)]
    pub incarnation: u32,
}

/// A device collects its downlink records (topic `downlink.{node}`, partition 0).
///
/// `from` acknowledges everything before it: the gateway commits it as the offset of
/// the consumer group `dev.{node}` first, then answers from the committed offset, so a
/// device that lost its storage still resumes where it last acknowledged.
///
/// CBOR: `{"from"?: u64, "max_bytes": u32}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DownlinkRequest {
    /// The first offset the device has not processed yet (`None`: it does not know).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<u64>,
    /// Answer with at most about this many bytes of records.
    pub max_bytes: u32,
}

/// The downlink records waiting for a device.
///
/// CBOR: `{"records": [[u64, Record], ...], "next": u64, "pending": u32}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DownlinkResponse {
    /// `(offset, record)` pairs, in order.
    #[serde(deserialize_with = "super::array_only::array_only")]
    pub records: Vec<(u64, Record)>,
    /// The offset to ask from next time (after the last record given).
    pub next: u64,
    /// How many more records wait beyond these.
    pub pending: u32,
}
