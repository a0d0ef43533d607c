//! Every CBOR wire decoder: `wire::decode::<T>` for every message type of
//! `pehra_shared::wire` (the small slice decoder, with ciborium again for the message of
//! an error on gateways), the small decoder alone (`decode_lite`, what devices run)
//! against ciborium's (`decode_ciborium`), the device's hand codec (`decode_by_hand`
//! against `decode_lite`, `encode_by_hand` against `encode`), and `batch_record_count`.
//!
//! Invariants: nothing panics; both decoders accept the same bytes and make the same
//! value; whatever decodes re-encodes to bytes that decode to the same value
//! (`decode(encode(x)) == x`); a batch whose records are counted from its header holds
//! that many records when it decodes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pehra_shared::wire::{self, *};

fn check<T>(bytes: &[u8])
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + core::fmt::Debug,
{
    let full = wire::decode_ciborium::<T>(bytes);
    let lite = wire::decode_lite::<T>(bytes);
    let gateway = wire::decode::<T>(bytes);
    assert_eq!(
        gateway.as_ref().ok(),
        full.as_ref().ok(),
        "decode differs from ciborium on {bytes:02x?}"
    );
    match (&full, &lite) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "the two decoders disagree on {bytes:02x?}"),
        (Err(_), Err(_)) => {}
        _ => panic!(
            "{}: ciborium {:?}, lite {:?} for {bytes:02x?}",
            core::any::type_name::<T>(),
            full.as_ref().map(|_| ()),
            lite.as_ref().map(|_| ())
        ),
    }
    if let Ok(value) = full {
        let encoded = wire::encode(&value).expect("a decoded message encodes");
        let again: T = wire::decode(&encoded).expect("an encoded message decodes");
        assert_eq!(
            again,
            value,
            "round trip changed {}",
            core::any::type_name::<T>()
        );
        let again: T = wire::decode_lite(&encoded).expect("an encoded message decodes (lite)");
        assert_eq!(again, value);
    }
}

/// The device's hand codec (`wire::decode_by_hand`, `wire::encode_by_hand`): the answers
/// it decodes are exactly `decode_lite`'s (the same bytes accepted, the same values).
fn hand_decode<T>(bytes: &[u8])
where
    T: HandDecode + serde::de::DeserializeOwned + PartialEq + core::fmt::Debug,
{
    assert_eq!(
        wire::decode_by_hand::<T>(bytes),
        wire::decode_lite::<T>(bytes).ok(),
        "{}: the hand decoder and lite disagree on {bytes:02x?}",
        core::any::type_name::<T>()
    );
}

/// ... and the requests it writes are `wire::encode`'s bytes, for whatever decodes.
fn hand_encode<T>(bytes: &[u8])
where
    T: HandEncode + serde::Serialize + serde::de::DeserializeOwned + core::fmt::Debug,
{
    if let Ok(value) = wire::decode::<T>(bytes) {
        assert_eq!(
            wire::encode_by_hand(&value),
            wire::encode(&value).expect("a decoded message encodes"),
            "the hand encoder differs on {value:?}"
        );
    }
}

macro_rules! all {
    ($bytes:expr; $($t:ty),* $(,)?) => {{
        const TYPES: &[fn(&[u8])] = &[$(check::<$t>),*];
        TYPES
    }};
}

fuzz_target!(|data: &[u8]| {
    let types = all![data;
        // device.rs
        DeviceReadings, DownlinkRequest, DownlinkResponse,
        // error.rs, health.rs
        ErrorBody, ErrorKind, NodeHealth,
        // log.rs
        Record, Header, RecordBatch, Acks, ProduceRequest, ProduceResponse, FetchRequest,
        FetchedBatch, FetchResponse, ReplicaFetchRequest, ReplicaFetchPartition,
        ReplicaFetchResponse, EpochEndOffset, ReplicaPartitionData, ReplicaBatch,
        PartitionMetadata, TopicMetadata, BrokerInfo, TopicConfig, MetadataResponse,
        // pehra.rs
        NodeRole, CheckIn, CheckInReply, Term, WakeReason, Wake, ElectionResult, ModeChange,
        AdminSwitch, PehraState, NodeStatus, PehraRequest, TermRecord, Maintenance,
        MaintenanceState,
        // session.rs
        SessionOpen, SessionOpened, Heartbeat, HeartbeatAck, Directive,
        // znode.rs
        CreateRequest, CreateResponse, Stat, NodeData, SetDataRequest, Children, MultiOp,
        MultiRequest, MultiResult, MultiResponse, SyncResponse, WatchEventKind, WatchEvent,
    ];
    // The first byte picks one type (so the fuzzer can specialise), the rest is the item;
    // the whole input is also tried as every type.
    if let Some((&pick, rest)) = data.split_first() {
        types[pick as usize % types.len()](rest);
    }
    for f in types {
        f(data);
    }
    hand_decode::<CheckInReply>(data);
    hand_decode::<ProduceResponse>(data);
    hand_decode::<DownlinkResponse>(data);
    hand_encode::<CheckIn>(data);
    hand_encode::<DeviceReadings>(data);
    hand_encode::<DownlinkRequest>(data);
    if let Ok(n) = wire::batch_record_count(data) {
        if let Ok(batch) = wire::decode::<RecordBatch>(data) {
            assert_eq!(
                batch.records.len(),
                n as usize,
                "counted {n} records in {data:02x?}"
            );
        }
    }
    let _ = wire::is_maintenance_command_name(&String::from_utf8_lossy(data));
    if let Ok(config) = wire::decode::<TopicConfig>(data) {
        if config.validate().is_ok() {
            let m = config.min_insync();
            assert!(m >= 1 && m <= config.replication_factor);
        }
    }
});
