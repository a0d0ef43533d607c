//! Property tests: random bytes never panic the decoder, truncated messages never
//! decode, and random values survive a round trip.

use alloc::string::String;
use alloc::vec::Vec;

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

use super::samples::cases;
use crate::wire::*;

/// Every proper prefix of every sample fails to decode (and does not panic); the whole
/// encoding decodes.
#[test]
fn every_truncation_of_every_message_is_an_error() {
    for case in cases() {
        for len in 0..case.bytes.len() {
            assert!(
                (case.decode)(&case.bytes[..len]).is_err(),
                "{} decoded from {len} of {} bytes",
                case.name,
                case.bytes.len()
            );
        }
        assert_eq!((case.decode)(&case.bytes), Ok(()), "{}", case.name);
    }
}

fn health() -> impl Strategy<Value = NodeHealth> {
    (
        any::<u16>(),
        any::<u16>(),
        any::<u16>(),
        any::<u32>(),
        option::of(any::<u16>()),
        any::<u32>(),
    )
        .prop_map(|(cpu, mem, disk, rtt_ms, battery, failures)| NodeHealth {
            cpu_permille: cpu,
            memory_permille: mem,
            disk_io_permille: disk,
            rtt_ms,
            battery_permille: battery,
            failures,
        })
}

fn stat() -> impl Strategy<Value = Stat> {
    (
        (
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
        ),
        (any::<u32>(), any::<u32>(), option::of(any::<u64>())),
        (any::<u32>(), any::<u32>()),
    )
        .prop_map(
            |((czxid, mzxid, pzxid, ctime_ms, mtime_ms), (version, cversion, owner), (len, n))| {
                Stat {
                    czxid,
                    mzxid,
                    pzxid,
                    ctime_ms,
                    mtime_ms,
                    version,
                    cversion,
                    ephemeral_owner: owner,
                    data_length: len,
                    num_children: n,
                }
            },
        )
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..max)
}

fn text() -> impl Strategy<Value = String> {
    // Any Unicode, not just ASCII: text strings must survive intact.
    ".{0,12}"
}

fn record() -> impl Strategy<Value = Record> {
    (
        option::of(bytes(16)),
        bytes(64),
        any::<u64>(),
        vec(
            (text(), bytes(8)).prop_map(|(key, value)| Header { key, value }),
            0..3,
        ),
    )
        .prop_map(|(key, value, timestamp_ms, headers)| Record {
            key,
            value,
            timestamp_ms,
            headers,
        })
}

fn acks() -> impl Strategy<Value = Acks> {
    prop_oneof![Just(Acks::None), Just(Acks::Leader), Just(Acks::All)]
}

fn produce() -> impl Strategy<Value = ProduceRequest> {
    (
        text(),
        any::<u32>(),
        acks(),
        option::of(any::<u64>()),
        option::of(any::<u32>()),
        option::of(any::<u32>()),
        vec(record(), 0..4),
    )
        .prop_map(
            |(topic, partition, acks, producer_id, base_sequence, leader_epoch, records)| {
                ProduceRequest {
                    topic,
                    partition,
                    acks,
                    producer_id,
                    base_sequence,
                    gapless: false,
                    leader_epoch,
                    if_log_end: None,
                    batch: encode(&RecordBatch { records }).expect("encode batch"),
                }
            },
        )
}

fn round_trips<T>(value: &T) -> Result<(), TestCaseError>
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + core::fmt::Debug,
{
    let bytes = encode(value).map_err(|e| TestCaseError::fail(alloc::format!("{e}")))?;
    prop_assert_eq!(&decode::<T>(&bytes).expect("decode"), value);
    Ok(())
}

proptest! {
    /// Random bytes, as every message type: Ok or Err, never a panic.
    #[test]
    fn random_bytes_never_panic(input in bytes(256)) {
        for case in cases() {
            let _ = (case.decode)(&input);
        }
    }

    /// A valid message with a few bytes overwritten, as every message type: deeper
    /// into the decoder than pure noise gets, and still never a panic.
    #[test]
    fn corrupted_messages_never_panic(
        pick in any::<prop::sample::Index>(),
        edits in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let all = cases();
        let mut input = all[pick.index(all.len())].bytes.clone();
        for (at, byte) in edits {
            let i = at.index(input.len());
            input[i] = byte;
        }
        for case in &all {
            let _ = (case.decode)(&input);
        }
    }

    #[test]
    fn node_health_round_trips(value in health()) {
        round_trips(&value)?;
    }

    #[test]
    fn stat_round_trips(value in stat()) {
        round_trips(&value)?;
    }

    #[test]
    fn record_round_trips(value in record()) {
        round_trips(&value)?;
    }

    #[test]
    fn produce_request_round_trips(value in produce()) {
        round_trips(&value)?;
        let batch: RecordBatch = decode(&value.batch).expect("decode batch");
        prop_assert_eq!(encode(&batch).expect("encode batch"), value.batch);
    }

    /// Every proper prefix of a random record batch is an error.
    #[test]
    fn truncated_record_batches_are_errors(records in vec(record(), 1..4)) {
        let bytes = encode(&RecordBatch { records }).expect("encode");
        for len in 0..bytes.len() {
            prop_assert!(decode::<RecordBatch>(&bytes[..len]).is_err());
        }
    }
}
