//! One sample value of every message type, shared by the golden and property tests.
//!
//! Samples use `Some` and non-empty values where they can, so the golden vectors show
//! every field; the golden tests add `None`/empty variants where omission matters.

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use crate::wire::*;

pub(super) fn s(text: &str) -> String {
    String::from(text)
}

pub(super) fn health() -> NodeHealth {
    NodeHealth {
        cpu_permille: 250,
        memory_permille: 600,
        disk_io_permille: 0,
        rtt_ms: 12,
        battery_permille: Some(875),
        failures: 1,
    }
}

pub(super) fn stat() -> Stat {
    Stat {
        czxid: 5,
        mzxid: 7,
        pzxid: 5,
        ctime_ms: 1_700_000_000_000,
        mtime_ms: 1_700_000_000_500,
        version: 2,
        cversion: 0,
        ephemeral_owner: Some(42),
        data_length: 3,
        num_children: 0,
    }
}

pub(super) fn term() -> Term {
    Term {
        number: 7,
        pehredar: s("gw-1"),
        started_ms: 1_700_000_000_000,
        ends_ms: 1_700_000_600_000,
    }
}

pub(super) fn record() -> Record {
    Record {
        key: Some(b"k1".to_vec()),
        value: b"hello".to_vec(),
        timestamp_ms: 1_700_000_000_000,
        headers: vec![Header {
            key: s("ct"),
            value: b"txt".to_vec(),
        }],
    }
}

pub(super) fn produce() -> ProduceRequest {
    ProduceRequest {
        topic: s("temps"),
        partition: 3,
        acks: Acks::All,
        producer_id: Some(9),
        base_sequence: Some(100),
        gapless: false,
        leader_epoch: Some(4),
        if_log_end: None,
        batch: vec![0xa1, 0x00, 0x01],
    }
}

pub(super) fn partition() -> PartitionMetadata {
    PartitionMetadata {
        partition: 0,
        leader: Some(1),
        leader_epoch: 3,
        replicas: vec![1, 2],
        isr: vec![1],
        elr: Vec::new(),
    }
}

pub(super) fn broker() -> BrokerInfo {
    BrokerInfo {
        id: 1,
        addr: s("10.0.0.1:5683"),
        host: s("pi-a"),
        rack: Some(s("r1")),
    }
}

pub(super) fn multi_ops() -> Vec<MultiOp> {
    vec![
        MultiOp::Create {
            path: s("/a"),
            data: b"x".to_vec(),
            ephemeral: true,
            sequential: false,
        },
        MultiOp::SetData {
            path: s("/b"),
            data: vec![],
            version: Some(1),
        },
        MultiOp::Delete {
            path: s("/c"),
            version: None,
        },
        MultiOp::Check {
            path: s("/d"),
            version: Some(0),
        },
    ]
}

pub(super) fn multi_results() -> Vec<MultiResult> {
    vec![
        MultiResult::Create { path: s("/a") },
        MultiResult::SetData {
            stat: Stat::default(),
        },
        MultiResult::Delete,
        MultiResult::Check,
        MultiResult::Error {
            error: ErrorKind::VersionMismatch,
        },
    ]
}

/// Decodes bytes as one particular message type, keeping only whether it worked.
pub(super) type Decoder = fn(&[u8]) -> Result<(), DecodeError>;

/// A valid encoding of one sample of a message type, and a decoder for that type.
pub(super) struct Case {
    /// The type's name.
    pub name: &'static str,
    /// A valid encoding of a sample value.
    pub bytes: Vec<u8>,
    /// Decodes bytes as that type.
    pub decode: Decoder,
}

macro_rules! case {
    ($ty:ty, $value:expr) => {
        Case {
            name: stringify!($ty),
            bytes: encode::<$ty>(&$value).expect("encode sample"),
            decode: |bytes: &[u8]| decode::<$ty>(bytes).map(|_| ()),
        }
    };
}

/// One case for every message type.
pub(super) fn cases() -> Vec<Case> {
    vec![
        case!(NodeHealth, health()),
        case!(
            SessionOpen,
            SessionOpen {
                timeout_ms: 30_000,
                node: Some(s("dev-7")),
                health: Some(health()),
            }
        ),
        case!(
            SessionOpened,
            SessionOpened {
                session: u64::MAX,
                timeout_ms: 30_000,
                incarnation: Some(u64::MAX),
            }
        ),
        case!(
            Heartbeat,
            Heartbeat {
                health: health(),
                sleep_ms: None
            }
        ),
        case!(
            HeartbeatAck,
            HeartbeatAck {
                lease_ms: 45_000,
                directives: vec![Directive::SleepUntil { at_ms: 1 }, Directive::Rejoin],
                incarnation: Some(7),
            }
        ),
        case!(Directive, Directive::SleepUntil { at_ms: 1_000 }),
        case!(
            CreateRequest,
            CreateRequest {
                data: b"cfg".to_vec(),
                ephemeral: true,
                sequential: false,
                session: Some(42),
                request: Some(7),
            }
        ),
        case!(
            CreateResponse,
            CreateResponse {
                path: s("/a"),
                stat: stat(),
            }
        ),
        case!(Stat, stat()),
        case!(
            NodeData,
            NodeData {
                data: b"cfg".to_vec(),
                stat: stat(),
            }
        ),
        case!(
            SetDataRequest,
            SetDataRequest {
                data: b"v".to_vec(),
                version: Some(1),
                session: Some(2),
                request: Some(3),
            }
        ),
        case!(
            Children,
            Children {
                children: vec![s("a")],
                stat: stat(),
            }
        ),
        case!(MultiOp, multi_ops()[0].clone()),
        case!(
            MultiRequest,
            MultiRequest {
                ops: multi_ops(),
                session: Some(1),
                request: Some(9),
            }
        ),
        case!(MultiResult, multi_results()[1].clone()),
        case!(
            MultiResponse,
            MultiResponse {
                results: multi_results(),
            }
        ),
        case!(SyncResponse, SyncResponse { zxid: 77 }),
        case!(WatchEventKind, WatchEventKind::ChildrenChanged),
        case!(
            WatchEvent,
            WatchEvent {
                kind: WatchEventKind::Deleted,
                path: s("/x"),
                zxid: 3,
            }
        ),
        case!(Record, record()),
        case!(Header, record().headers[0].clone()),
        case!(
            RecordBatch,
            RecordBatch {
                records: vec![record(), record()],
            }
        ),
        case!(Acks, Acks::All),
        case!(ProduceRequest, produce()),
        case!(
            ProduceResponse,
            ProduceResponse {
                base_offset: 1,
                record_count: 2,
                leader_epoch: 3,
            }
        ),
        case!(
            FetchRequest,
            FetchRequest {
                topic: s("t"),
                partition: 1,
                offset: 2,
                max_bytes: 3,
                leader_epoch: Some(4),
                replica: Some(5),
            }
        ),
        case!(
            FetchedBatch,
            FetchedBatch {
                base_offset: 1,
                batch: vec![1, 2],
            }
        ),
        case!(
            FetchResponse,
            FetchResponse {
                high_watermark: 1,
                log_end_offset: 2,
                batches: vec![FetchedBatch {
                    base_offset: 1,
                    batch: vec![1, 2],
                }],
            }
        ),
        case!(PartitionMetadata, partition()),
        case!(
            TopicMetadata,
            TopicMetadata {
                topic: s("t"),
                partitions: vec![partition()],
            }
        ),
        case!(BrokerInfo, broker()),
        case!(
            MetadataResponse,
            MetadataResponse {
                brokers: vec![broker()],
                topics: vec![TopicMetadata {
                    topic: s("t"),
                    partitions: vec![partition()],
                }],
            }
        ),
        case!(NodeRole, NodeRole::OptedOut),
        case!(
            CheckIn,
            CheckIn {
                node: s("n"),
                role: NodeRole::Dormant,
                mains_powered: false,
                next_alarm_ms: Some(5),
                traffic_waiting: true,
                health: Some(health()),
            }
        ),
        case!(
            CheckInReply,
            CheckInReply {
                pehredar: Some(s("p")),
                pehredar_addr: Some(s("10.0.2.2:5683")),
                gateway_ms: Some(1),
                term: Some(term()),
                directive: Directive::WakeNow,
                pending: 1,
                lease_ms: None,
            }
        ),
        case!(Term, term()),
        case!(WakeReason, WakeReason::PehredarLost),
        case!(
            Wake,
            Wake {
                reason: WakeReason::Election,
                term: 8,
            }
        ),
        case!(
            ElectionResult,
            ElectionResult {
                term: term(),
                candidates: vec![s("a"), s("b")],
            }
        ),
        case!(
            ModeChange,
            ModeChange {
                enabled: true,
                issued_ms: 1_700_000_000_000,
                nonce: vec![1; 16],
                mac: vec![2; 32],
            }
        ),
        case!(
            DeviceReadings,
            DeviceReadings {
                topic: s("readings"),
                acks: Acks::All,
                records: vec![record()],
                first_seq: Some(7),
                incarnation: 9,
            }
        ),
        case!(
            DownlinkRequest,
            DownlinkRequest {
                from: Some(3),
                max_bytes: 512,
            }
        ),
        case!(
            DownlinkResponse,
            DownlinkResponse {
                records: vec![(3, record())],
                next: 4,
                pending: 2,
            }
        ),
        case!(
            AdminSwitch,
            AdminSwitch {
                enabled: false,
                issued_ms: 3,
            }
        ),
        case!(
            PehraState,
            PehraState {
                enabled: true,
                traffic_awake: true,
                wake_generation: 9,
                wake_reason: Some(WakeReason::Traffic),
                term: Some(term()),
                next: Some(term()),
                temporary: false,
                next_temporary: false,
                known: vec![s("broker-1"), s("broker-2")],
            }
        ),
        case!(
            NodeStatus,
            NodeStatus {
                node: s("broker-1"),
                addr: s("127.0.0.1:5683"),
                role: NodeRole::Dormant,
                candidate: true,
                stay_awake: false,
                idle: true,
                next_alarm_ms: Some(1_700_000_060_000),
                office: Some(7),
                wake_generation: 9,
                since_ms: 1_700_000_000_000,
                nhi: None,
                lease_ms: None,
                rtt_ms: Some(3),
            }
        ),
        case!(
            PehraRequest,
            PehraRequest::WakeAll {
                from: s("broker-2"),
                reason: WakeReason::PehredarLost,
                term: 7,
            }
        ),
        case!(
            TermRecord,
            TermRecord {
                term: term(),
                candidates: vec![s("broker-1")],
                temporary: true,
            }
        ),
        case!(
            Maintenance,
            Maintenance {
                id: 1,
                command: Some(s("true")),
                state: MaintenanceState::Running,
                message: None,
            }
        ),
        case!(
            ErrorBody,
            ErrorBody {
                error: ErrorKind::Busy,
                message: s("busy"),
                retry_after_ms: Some(100),
            }
        ),
        case!(ErrorKind, ErrorKind::NotEnoughReplicas),
    ]
}
