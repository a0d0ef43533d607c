//! One definition of every CBOR message Pehra puts on the wire.
//!
//! Every CoAP payload in Pehra is one CBOR data item (RFC 8949), Content-Format
//! [`CONTENT_FORMAT_CBOR`] (60, `application/cbor`), made by [`encode`] and read by
//! [`decode`]. The types here are the whole vocabulary; the zookeeper, the brokers and the
//! firmware all use them, so a message can only mean one thing.
//!
//! # Encoding rules (stable: changing any of them is a protocol change)
//!
//! The golden tests in this module pin the exact bytes of every message type, so a change
//! to any of these rules fails a test.
//!
//! * **Structs** are CBOR maps with text keys, the Rust field names in `snake_case`,
//!   written in declaration order. A decoder does not depend on the order and ignores keys
//!   it does not know, so a newer peer may add fields.
//! * **Integers** are CBOR integers in their shortest form; **booleans** are `true` /
//!   `false`; **strings** are CBOR text strings.
//! * **Byte fields** (znode data, record keys and values, encoded batches, nonces, MACs)
//!   are CBOR byte strings (major type 2), never arrays of integers.
//! * **Optional fields** (`Option<_>`) are *omitted* when `None`, which saves bytes on
//!   low-power radios. A missing key decodes as `None`, and so does an explicit CBOR
//!   `null`. The one non-`Option` field treated the same way is
//!   [`Record::headers`]: omitted when empty, absent decodes as empty.
//!   Every other field is required.
//! * **Enums without data** ([`ErrorKind`], [`NodeRole`], [`WakeReason`],
//!   [`WatchEventKind`], and the data-less variants of [`Directive`], [`MultiResult`]) are
//!   CBOR text strings in `snake_case`: `"not_found"`, `"stay_awake"`, `"opted_out"`.
//! * **Enum variants with data** ([`Directive::SleepUntil`], [`MultiOp`],
//!   [`MultiResult`]) are a map with one entry, variant name → map of fields:
//!   `{"sleep_until": {"at_ms": 1000}}` (serde's externally tagged form).
//! * [`Acks`] is the exception: a CBOR integer, Kafka's numbers (`0`, `1`, `-1`).
//!
//! Times (`*_ms` fields that are points in time) are milliseconds since the Unix epoch on
//! the sender's wall clock; durations (`timeout_ms`, `lease_ms`, `retry_after_ms`,
//! `rtt_ms`) are plain milliseconds.
//!
//! # Hostile input
//!
//! [`decode`] first walks the bytes with a small, non-recursive well-formedness check
//! that rejects truncated items, lengths that claim more bytes than the datagram holds,
//! nesting deeper than [`MAX_DEPTH`] and trailing bytes, before serde and ciborium see
//! them. So a bad datagram costs a linear scan and a [`DecodeError`], never a panic, a
//! deep recursion, or an allocation larger than the items it really contains.

mod array_only;
mod codec;
mod codec_error;
mod device;
mod error;
// The device's answers decoded without serde (`decode_by_hand`).
mod hand;
// The device's requests encoded without serde (`encode_by_hand`).
mod hand_enc;
mod head;
mod health;
// The slice decoder `decode` runs (gateways fall back to ciborium for an error's
// message); `decode_lite`/`decode_ciborium` let the fuzz target and tests compare them.
mod lite;
// The small serializer `encode` tries first on gateways (ciborium writes what it refuses).
#[cfg(feature = "std")]
mod lite_ser;
mod log;
mod pehra;
mod scan;
mod session;
mod znode;

#[cfg(test)]
mod tests;

#[cfg(feature = "std")]
#[doc(hidden)]
pub use codec::decode_ciborium;
#[doc(hidden)]
pub use codec::decode_lite;
pub use codec::{decode, encode, encode_into, CONTENT_FORMAT_CBOR};
pub use codec_error::{DecodeError, EncodeError};
pub use device::{DeviceReadings, DownlinkRequest, DownlinkResponse};
pub use error::{ErrorBody, ErrorKind};
pub use hand::{decode_by_hand, HandDecode};
pub use hand_enc::{encode_by_hand, HandEncode};
pub use health::NodeHealth;
pub use log::{
    batch_record_count, Acks, BrokerInfo, EpochEndOffset, FetchRequest, FetchResponse,
    FetchedBatch, Header, MetadataResponse, PartitionMetadata, ProduceRequest, ProduceResponse,
    Record, RecordBatch, ReplicaBatch, ReplicaFetchPartition, ReplicaFetchRequest,
    ReplicaFetchResponse, ReplicaPartitionData, TopicConfig, TopicMetadata,
};
pub use pehra::{
    is_maintenance_command_name, AdminSwitch, CheckIn, CheckInReply, ElectionResult, Maintenance,
    MaintenanceState, ModeChange, NodeRole, NodeStatus, PehraRequest, PehraState, Term, TermRecord,
    Wake, WakeReason,
};
pub use scan::MAX_DEPTH;
pub use session::{Directive, Heartbeat, HeartbeatAck, SessionOpen, SessionOpened};
pub use znode::{
    Children, CreateRequest, CreateResponse, MultiOp, MultiRequest, MultiResponse, MultiResult,
    NodeData, SetDataRequest, Stat, SyncResponse, WatchEvent, WatchEventKind,
};
