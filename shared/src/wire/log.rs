//! The brokers' partitioned logs: records, produce, fetch and cluster metadata.
//!
//! # Batches are opaque on the hot path
//!
//! A producer encodes its records as one [`RecordBatch`] and puts those bytes in
//! [`ProduceRequest::batch`]. The broker decodes only the small request around them,
//! checks and stores the batch bytes as they are (with a CRC, at an offset), replicates
//! them, and serves them back unchanged in [`FetchedBatch::batch`]. Only producers and
//! consumers decode batches. Decoding a record costs far more than copying its bytes,
//! so the broker never does it per record.

use alloc::string::String;
use alloc::vec::Vec;

use serde::de::{Error as _, Unexpected};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One record (message) in a partition log.
///
/// CBOR: `{"key"?: bytes, "value": bytes, "timestamp_ms": u64, "headers"?: [Header, ...]}`
/// (`headers` omitted when empty, like `key` when `None`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The key partitioning and compaction use, if any.
    #[serde(default, with = "serde_bytes", skip_serializing_if = "Option::is_none")]
    pub key: Option<Vec<u8>>,
    /// The payload.
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    /// When the producer made it, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// Application headers, in order (names may repeat).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[serde(deserialize_with = "super::array_only::array_only")]
    pub headers: Vec<Header>,
}

/// A record header: a name and a value.
///
/// CBOR: `{"key": text, "value": bytes}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// The header's name.
    pub key: String,
    /// Its value.
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
}

/// Records a producer sends together; its encoding is what [`ProduceRequest::batch`] and
/// [`FetchedBatch::batch`] carry, and what the broker stores, as opaque bytes.
///
/// CBOR: `{"records": [Record, ...]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordBatch {
    /// The records, in offset order.
    #[serde(deserialize_with = "super::array_only::array_only")]
    pub records: Vec<Record>,
}

/// How many replicas must have a produced batch before the producer is answered.
///
/// CBOR: an integer, Kafka's numbers: `0` (None), `1` (Leader), `-1` (All). Any other
/// number is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Acks {
    /// No answer at all: the request goes as a CoAP NON message.
    None,
    /// Answer once the leader has written the batch.
    Leader,
    /// Answer once every in-sync replica has the batch (it is committed).
    All,
}

impl Acks {
    /// The number on the wire: 0, 1 or -1.
    pub const fn code(self) -> i8 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }

    /// The setting a wire number stands for, if any.
    pub const fn from_code(code: i8) -> Option<Acks> {
        match code {
            0 => Some(Acks::None),
            1 => Some(Acks::Leader),
            -1 => Some(Acks::All),
            _ => None,
        }
    }
}

impl Serialize for Acks {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_i8(self.code())
    }
}

impl<'de> Deserialize<'de> for Acks {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let code = i8::deserialize(deserializer)?;
        Acks::from_code(code).ok_or_else(|| {
            D::Error::invalid_value(Unexpected::Signed(code.into()), &"acks 0, 1 or -1")
        })
    }
}

/// Body of a produce to a partition leader: one encoded [`RecordBatch`].
///
/// CBOR: `{"topic": text, "partition": u32, "acks": 0|1|-1, "producer_id"?: u64,
/// "base_sequence"?: u32, "gapless"?: bool, "leader_epoch"?: u32, "if_log_end"?: u64,
/// "batch": bytes}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProduceRequest {
    /// The topic.
    pub topic: String,
    /// The partition, whose leader this broker should be.
    pub partition: u32,
    /// When to answer.
    pub acks: Acks,
    /// The idempotent producer's id, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub producer_id: Option<u64>,
    /// Sequence number of the batch's first record, for an idempotent producer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_sequence: Option<u32>,
    /// The producer numbers its records without gaps, from 0 (as Kafka's idempotent
    /// producer does, so it may keep several batches in flight): a batch that does not
    /// start where its last stored batch ended (or at 0, for a producer the partition does
    /// not know) is refused with `out_of_order_sequence`, to be sent again after the
    /// earlier ones. Without it (a device's own numbering may skip), any later sequence
    /// is taken.
    #[serde(default, skip_serializing_if = "core::ops::Not::not")]
    pub gapless: bool,
    /// The leader epoch the producer believes current; a broker with another epoch
    /// refuses the batch (fencing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_epoch: Option<u32>,
    /// Append only if the partition's log ends at this offset now (a conditional
    /// publication: the check and the append are one step at the leader); refused with
    /// `version_mismatch` (4.12) otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub if_log_end: Option<u64>,
    /// An encoded [`RecordBatch`], opaque to the broker.
    #[serde(with = "serde_bytes")]
    pub batch: Vec<u8>,
}

/// Body of the answer to a produce (acks 1 or all).
///
/// CBOR: `{"base_offset": u64, "record_count": u32, "leader_epoch": u32}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProduceResponse {
    /// Offset given to the batch's first record.
    pub base_offset: u64,
    /// How many records the batch held.
    pub record_count: u32,
    /// The leader epoch the batch was written in.
    pub leader_epoch: u32,
}

/// Body of a fetch, by a consumer or by a follower replicating.
///
/// CBOR: `{"topic": text, "partition": u32, "offset": u64, "max_bytes": u32,
/// "leader_epoch"?: u32, "replica"?: u32}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchRequest {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// First offset wanted.
    pub offset: u64,
    /// Answer with at most about this many bytes of batches (at least one batch, if any).
    pub max_bytes: u32,
    /// The leader epoch the fetcher believes current (fencing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_epoch: Option<u32>,
    /// The fetching follower's broker id; `None` (omitted) for a consumer, which may read
    /// only up to the high watermark.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<u32>,
}

/// One stored batch as a fetch returns it.
///
/// CBOR: `{"base_offset": u64, "batch": bytes}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchedBatch {
    /// Offset of the batch's first record.
    pub base_offset: u64,
    /// The encoded [`RecordBatch`], exactly as produced.
    #[serde(with = "serde_bytes")]
    pub batch: Vec<u8>,
}

/// Body of the answer to a fetch (and of Observe notifications on a partition).
///
/// CBOR: `{"high_watermark": u64, "log_end_offset": u64, "batches": [FetchedBatch, ...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchResponse {
    /// Offset after the last committed record: consumers read below it.
    pub high_watermark: u64,
    /// Offset after the last record in the leader's log.
    pub log_end_offset: u64,
    /// The batches, in offset order (may be empty).
    #[serde(deserialize_with = "super::array_only::array_only")]
    pub batches: Vec<FetchedBatch>,
}

/// Body of a follower's fetch from a leader: every partition the follower replicates
/// from that leader, in one CoAP exchange (`POST /replica`).
///
/// The leader holds the request up to `max_wait_ms` while none of the partitions has
/// anything new (a long poll), so a follower learns of an append at once without polling.
/// The offset a follower asks for is its log end offset: the leader takes it as the
/// follower's progress (for the high watermark and the in-sync set).
///
/// CBOR: `{"replica": u32, "max_wait_ms": u32, "max_bytes": u32,
/// "partitions": [ReplicaFetchPartition, ...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaFetchRequest {
    /// The fetching follower's broker id.
    pub replica: u32,
    /// How long the leader may hold the request while nothing is new.
    pub max_wait_ms: u32,
    /// Answer with at most about this many bytes of batches in all (at least one batch
    /// if any partition has one).
    pub max_bytes: u32,
    /// The partitions, each with the follower's position.
    #[serde(deserialize_with = "super::array_only::array_only")]
    pub partitions: Vec<ReplicaFetchPartition>,
}

/// One partition in a [`ReplicaFetchRequest`].
///
/// CBOR: `{"topic": text, "partition": u32, "offset": u64, "leader_epoch": u32,
/// "last_fetched_epoch"?: u32}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaFetchPartition {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// The follower's log end offset: the first offset it wants.
    pub offset: u64,
    /// The leader epoch the follower believes current (fencing both ways: an older one
    /// is refused, a newer one tells the leader it has been deposed).
    pub leader_epoch: u32,
    /// The leader epoch of the follower's last batch (`None`, omitted, when its log is
    /// empty): the leader checks that the follower's log does not diverge from its own
    /// there (leader-epoch based truncation, as Kafka's KIP-320).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_fetched_epoch: Option<u32>,
    /// The follower's high watermark (`None`, omitted, from a follower that does not
    /// say): a leader whose own is higher does not hold the fetch long, so the follower
    /// learns of a commit soon even when nothing more is written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub high_watermark: Option<u64>,
}

/// Body of the answer to a [`ReplicaFetchRequest`].
///
/// CBOR: `{"partitions": [ReplicaPartitionData, ...]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaFetchResponse {
    /// One entry per partition asked for, in the same order.
    #[serde(deserialize_with = "super::array_only::array_only")]
    pub partitions: Vec<ReplicaPartitionData>,
}

/// Where a follower's log diverges from its leader's: the largest leader epoch the
/// leader has at or below the follower's last one, and the offset where that epoch ends
/// in the leader's log. The follower truncates to the smaller of this and its own end of
/// that epoch, then fetches again.
///
/// CBOR: `{"epoch": u32, "end_offset": u64}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochEndOffset {
    /// The epoch.
    pub epoch: u32,
    /// The offset after that epoch's last record in the leader's log.
    pub end_offset: u64,
}

/// One partition's part of a [`ReplicaFetchResponse`].
///
/// CBOR: `{"topic": text, "partition": u32, "error"?: ErrorKind, "high_watermark": u64,
/// "log_start_offset": u64, "log_end_offset": u64, "diverging"?: EpochEndOffset,
/// "batches": [ReplicaBatch, ...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaPartitionData {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// Why this partition could not be served (`not_leader`, `fenced_epoch`, ...);
    /// the other fields are then zero and empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<super::ErrorKind>,
    /// The leader's high watermark.
    pub high_watermark: u64,
    /// The leader's log start offset (a follower below it must start over from there).
    pub log_start_offset: u64,
    /// The leader's log end offset.
    pub log_end_offset: u64,
    /// Set when the follower's log diverges from the leader's: truncate, then fetch again
    /// (no batches come with it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diverging: Option<EpochEndOffset>,
    /// Batches from the offset asked for, in offset order.
    #[serde(deserialize_with = "super::array_only::array_only")]
    pub batches: Vec<ReplicaBatch>,
}

/// A stored batch with everything a follower needs to store an identical copy.
///
/// CBOR: `{"base_offset": u64, "record_count": u32, "leader_epoch": u32,
/// "max_timestamp_ms": u64, "producer_id"?: u64, "base_sequence"?: u32, "batch": bytes}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaBatch {
    /// Offset of the batch's first record.
    pub base_offset: u64,
    /// Records in the batch.
    pub record_count: u32,
    /// The leader epoch it was written in.
    pub leader_epoch: u32,
    /// Its newest record's timestamp (retention uses it).
    pub max_timestamp_ms: u64,
    /// The idempotent producer that sent it, if any (a new leader keeps deduplicating).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub producer_id: Option<u64>,
    /// That producer's sequence number for the batch's first record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_sequence: Option<u32>,
    /// The encoded [`RecordBatch`], exactly as produced.
    #[serde(with = "serde_bytes")]
    pub batch: Vec<u8>,
}

/// Where one partition lives.
///
/// CBOR: `{"partition": u32, "leader"?: u32, "leader_epoch": u32, "replicas": [u32, ...],
/// "isr": [u32, ...], "elr"?: [u32, ...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionMetadata {
    /// The partition's number.
    pub partition: u32,
    /// Broker id of its leader; `None` (omitted) while it has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<u32>,
    /// The current leader epoch.
    pub leader_epoch: u32,
    /// Broker ids of all its replicas, the preferred leader first.
    #[serde(deserialize_with = "super::array_only::array_only")]
    pub replicas: Vec<u32>,
    /// Broker ids of the in-sync replicas.
    #[serde(deserialize_with = "super::array_only::array_only")]
    pub isr: Vec<u32>,
    /// Eligible leader replicas (Kafka's KIP-966): replicas that left the ISR while it fell
    /// below the topic's minimum in-sync replicas. Every record acknowledged with acks=all
    /// reached them (none is acknowledged while the ISR is below the minimum), so the
    /// controller may elect one when no in-sync replica is left. Emptied whenever the ISR
    /// grows again; omitted when empty.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "super::array_only::array_only"
    )]
    pub elr: Vec<u32>,
}

/// One topic's partitions.
///
/// CBOR: `{"topic": text, "partitions": [PartitionMetadata, ...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMetadata {
    /// The topic's name.
    pub topic: String,
    /// Its partitions, by number.
    #[serde(deserialize_with = "super::array_only::array_only")]
    pub partitions: Vec<PartitionMetadata>,
}

/// A live broker.
///
/// CBOR: `{"id": u32, "addr": text, "host": text, "rack"?: text}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerInfo {
    /// The broker's id.
    pub id: u32,
    /// Its CoAP endpoint, `ip:port`.
    pub addr: String,
    /// The machine it runs on: replicas of a partition go on different hosts.
    pub host: String,
    /// The rack (or site) it is in, if known: replicas spread across racks too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rack: Option<String>,
}

/// A topic's configuration, as the znode `/topics/{topic}` holds it.
///
/// CBOR: `{"partitions": 3, "replication_factor": 1, "min_insync_replicas"?: 2}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicConfig {
    /// How many partitions.
    pub partitions: u32,
    /// How many copies of each partition, on different brokers.
    pub replication_factor: u32,
    /// An acks=all produce is refused while fewer replicas than this are in sync
    /// (`None`, omitted: [`TopicConfig::DEFAULT_MIN_INSYNC`] capped at the replication
    /// factor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_insync_replicas: Option<u32>,
}

impl TopicConfig {
    /// The minimum in-sync replicas when a topic does not say: 2, so an acknowledged
    /// acks=all record is on two machines (capped at the replication factor).
    pub const DEFAULT_MIN_INSYNC: u32 = 2;
    /// The most partitions a topic may have. Every partition is a znode, a log
    /// directory on each replica and a watch per replica; a gateway-class cluster is
    /// sized for hundreds, and one request must not be able to create tens of thousands.
    pub const MAX_PARTITIONS: u32 = 1024;
    /// The most copies of a partition.
    pub const MAX_REPLICATION_FACTOR: u32 = 16;

    /// Checks the configuration's numbers; the error names the limit broken.
    pub fn validate(&self) -> Result<(), alloc::string::String> {
        use alloc::format;
        if !(1..=Self::MAX_PARTITIONS).contains(&self.partitions) {
            return Err(format!(
                "{} partitions: a topic has 1 to {} partitions",
                self.partitions,
                Self::MAX_PARTITIONS
            ));
        }
        if !(1..=Self::MAX_REPLICATION_FACTOR).contains(&self.replication_factor) {
            return Err(format!(
                "replication factor {}: it must be 1 to {}",
                self.replication_factor,
                Self::MAX_REPLICATION_FACTOR
            ));
        }
        if self
            .min_insync_replicas
            .is_some_and(|m| m == 0 || m > self.replication_factor)
        {
            return Err(format!(
                "min in-sync replicas must be between 1 and the replication factor {}",
                self.replication_factor
            ));
        }
        Ok(())
    }

    /// The minimum in-sync replicas in force for this topic.
    pub fn min_insync(&self) -> u32 {
        self.min_insync_replicas
            .unwrap_or(Self::DEFAULT_MIN_INSYNC)
            .clamp(1, self.replication_factor.max(1))
    }
}

/// How many records an encoded [`RecordBatch`] holds, read from its CBOR header alone
/// (after a linear well-formedness check), so a broker can count records without
/// decoding them. The batch must be `{"records": [...]}` with a definite-length array,
/// as [`encode`](super::encode) writes it.
pub fn batch_record_count(batch: &[u8]) -> Result<u32, super::DecodeError> {
    super::scan::check(batch)?;
    let invalid = |reason: &str| super::DecodeError::Invalid {
        reason: reason.into(),
    };
    // a1 = map(1); 67 "records" = text(7); then the array header.
    let rest = batch.strip_prefix(b"\xa1\x67records").ok_or(invalid(
        "a record batch must be a map holding only \"records\"",
    ))?;
    let (&head, tail) = rest
        .split_first()
        .ok_or(invalid("truncated record batch"))?;
    if head >> 5 != 4 {
        return Err(invalid("\"records\" must be an array"));
    }
    let count = match head & 0x1f {
        n @ 0..=23 => u64::from(n),
        24 => u64::from(*tail.first().ok_or(invalid("truncated record batch"))?),
        25 => u64::from(u16::from_be_bytes(
            tail.get(..2)
                .and_then(|b| b.try_into().ok())
                .ok_or(invalid("truncated record batch"))?,
        )),
        26 => u64::from(u32::from_be_bytes(
            tail.get(..4)
                .and_then(|b| b.try_into().ok())
                .ok_or(invalid("truncated record batch"))?,
        )),
        _ => return Err(invalid("\"records\" must be a definite-length array")),
    };
    u32::try_from(count).map_err(|_| invalid("too many records in one batch"))
}

/// The cluster's metadata as the zookeeper gives it to clients looking for leaders.
///
/// CBOR: `{"brokers": [BrokerInfo, ...], "topics": [TopicMetadata, ...]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataResponse {
    /// The live brokers.
    #[serde(deserialize_with = "super::array_only::array_only")]
    pub brokers: Vec<BrokerInfo>,
    /// The topics asked about (or all of them).
    #[serde(deserialize_with = "super::array_only::array_only")]
    pub topics: Vec<TopicMetadata>,
}
