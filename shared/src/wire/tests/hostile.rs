//! Hostile input: lying length prefixes, deep nesting, malformed and padded items.
//!
//! What ciborium 0.2.2 does on its own (measured with a counting allocator, outside this
//! crate):
//! * a byte string head claiming 2^60 bytes followed by 3 bytes: `Err(Io(EOF))`, no
//!   allocation (it reads strings in scratch-sized chunks);
//! * an array head claiming 2^32 items: `Err(Io(EOF))`, but only after serde
//!   pre-allocated ~1 MiB for the `Vec` (serde caps its size hint at 1 MiB), from a
//!   ten-byte datagram;
//! * 10,000 nested arrays or tags in an ignored field: `Err(RecursionLimitExceeded)`
//!   after recursing 256 levels deep;
//! * bytes after the item: silently ignored.
//!
//! [`decode`] therefore checks the structure first (`scan.rs`); these tests pin that the
//! check refuses each case before ciborium runs.

use alloc::vec::Vec;
use core::iter::repeat_n;

use super::samples::cases;
use crate::wire::*;

fn h(hex: &str) -> Vec<u8> {
    hex::decode(hex).expect("test hex")
}

/// `{"zxid": 1, "x": <value>}`: a valid `SyncResponse` with an unknown field, the place
/// where serde skips whatever it is given.
fn sync_with_extra(value: &[u8]) -> Vec<u8> {
    let mut bytes = h("a2647a786964016178");
    bytes.extend_from_slice(value);
    bytes
}

#[test]
fn byte_string_claiming_2_pow_60_bytes() {
    let hostile = h("5b1000000000000000010203");
    let expected = Err(DecodeError::LengthExceedsInput {
        what: "byte string",
        offset: 0,
        declared: 1 << 60,
        remaining: 3,
    });
    assert_eq!(decode::<serde_bytes::ByteBuf>(&hostile), expected);
    // The same inside a message: {"data": <hostile>, ...}
    let mut create = h("a36464617461");
    create.extend_from_slice(&hostile);
    assert!(matches!(
        decode::<CreateRequest>(&create),
        Err(DecodeError::LengthExceedsInput { offset: 6, .. })
    ));
    // And a text string.
    assert!(matches!(
        decode::<WatchEvent>(&h("7b1000000000000000616263")),
        Err(DecodeError::LengthExceedsInput {
            what: "text string",
            ..
        })
    ));
}

#[test]
fn array_and_map_claiming_billions_of_items() {
    // {"children": [<2^32 items>...
    let children = h("a1686368696c6472656e9b000000010000000060");
    assert!(matches!(
        decode::<Children>(&children),
        Err(DecodeError::LengthExceedsInput {
            what: "array",
            offset: 10,
            declared: 0x1_0000_0000,
            remaining: 1,
        })
    ));
    // A map claiming 2^63 pairs (2^64 items: the count must not overflow).
    assert!(matches!(
        decode::<SyncResponse>(&h("bb80000000000000000000")),
        Err(DecodeError::LengthExceedsInput { what: "map", .. })
    ));
    // A map claiming more pairs than the bytes can hold (6 bytes: at most 3 pairs).
    assert!(matches!(
        decode::<SyncResponse>(&h("a4647a78696401")),
        Err(DecodeError::LengthExceedsInput { what: "map", .. })
    ));
}

#[test]
fn ten_thousand_nested_arrays() {
    let deep: Vec<u8> = repeat_n(0x81, 10_000).chain([0x00]).collect();
    assert_eq!(
        decode::<Children>(&deep),
        Err(DecodeError::TooDeep { max: MAX_DEPTH })
    );
    assert_eq!(
        decode::<SyncResponse>(&sync_with_extra(&deep)),
        Err(DecodeError::TooDeep { max: MAX_DEPTH })
    );
    // Indefinite-length arrays, never closed.
    let open: Vec<u8> = repeat_n(0x9f, 10_000).collect();
    assert_eq!(
        decode::<SyncResponse>(&sync_with_extra(&open)),
        Err(DecodeError::TooDeep { max: MAX_DEPTH })
    );
    // Maps nested in maps: {"a": {"a": ...}}
    let maps: Vec<u8> = repeat_n([0xa1, 0x61, 0x61], 10_000)
        .flatten()
        .chain([0x00])
        .collect();
    assert_eq!(
        decode::<SyncResponse>(&sync_with_extra(&maps)),
        Err(DecodeError::TooDeep { max: MAX_DEPTH })
    );
}

#[test]
fn ten_thousand_nested_tags() {
    let tags: Vec<u8> = repeat_n(0xc1, 10_000).chain([0x00]).collect();
    assert_eq!(
        decode::<SyncResponse>(&sync_with_extra(&tags)),
        Err(DecodeError::TooDeep { max: MAX_DEPTH })
    );
}

#[test]
fn nesting_up_to_the_limit_is_accepted() {
    // The SyncResponse map is level 1, so the extra field may nest MAX_DEPTH - 1 levels.
    let nested = |levels: usize| -> Vec<u8> {
        sync_with_extra(&repeat_n(0x81, levels).chain([0x00]).collect::<Vec<u8>>())
    };
    assert_eq!(
        decode::<SyncResponse>(&nested(MAX_DEPTH - 1)),
        Ok(SyncResponse { zxid: 1 })
    );
    assert_eq!(
        decode::<SyncResponse>(&nested(MAX_DEPTH)),
        Err(DecodeError::TooDeep { max: MAX_DEPTH })
    );
    // Empty containers open nothing.
    let empties: Vec<u8> = repeat_n(0x80, 100).collect();
    let mut array = h("9864");
    array.extend_from_slice(&empties);
    assert_eq!(
        decode::<SyncResponse>(&sync_with_extra(&array)),
        Ok(SyncResponse { zxid: 1 })
    );
}

#[test]
fn trailing_bytes_are_refused() {
    for case in cases() {
        let mut padded = case.bytes.clone();
        padded.push(0x00);
        assert_eq!(
            (case.decode)(&padded),
            Err(DecodeError::TrailingBytes {
                offset: case.bytes.len(),
                count: 1
            }),
            "{}",
            case.name
        );
    }
}

#[test]
fn empty_payload() {
    assert_eq!(decode::<SyncResponse>(&[]), Err(DecodeError::Empty));
}

/// Found by the `cbor_wire` fuzz target: `c3 01` (tag 3, "negative bignum", on the
/// integer 1) decoded as `Acks` 1 without `std` (the no-std decoder skips tags) and was
/// refused by ciborium, which reads tags 2 and 3 as bignums (and so also took `c2 41 05`
/// as 5 where the no-std decoder refused it). Bignum tags are refused before either
/// decoder sees them.
#[test]
fn bignum_tags_are_refused_by_both_decoders() {
    for hex in ["c301", "c24105", "c34100", "a1646e657874c24101"] {
        let bytes = h(hex);
        assert!(
            matches!(decode::<Acks>(&bytes), Err(DecodeError::Malformed { .. }))
                || matches!(decode::<u64>(&bytes), Err(DecodeError::Malformed { .. })),
            "{hex}"
        );
        assert!(decode_lite::<Acks>(&bytes).is_err(), "{hex} (lite)");
        assert!(decode_lite::<u64>(&bytes).is_err(), "{hex} (lite)");
        assert!(decode::<u64>(&bytes).is_err(), "{hex}");
    }
    // Other tags are still skipped by both.
    assert_eq!(decode::<u64>(&h("c101")), Ok(1));
    assert_eq!(decode_lite::<u64>(&h("c101")), Ok(1));
}

#[test]
fn malformed_items() {
    let malformed = [
        ("1c", "reserved additional information"),
        ("a1647a7869641f", "indefinite integer"),
        ("ff", "break at top level"),
        ("a1ff00", "break in a definite map"),
        ("bf647a786964ff", "break after a key"),
        ("5f6161ff", "text chunk in a byte string"),
        ("5f5f4161ffff", "nested indefinite chunk"),
        ("f800", "two-byte simple value below 32"),
        ("df00", "indefinite tag"),
    ];
    for (hex, what) in malformed {
        assert!(
            matches!(
                decode::<SyncResponse>(&h(hex)),
                Err(DecodeError::Malformed { .. })
            ),
            "{what}: {hex} gave {:?}",
            decode::<SyncResponse>(&h(hex))
        );
    }
    // Half an argument, an unclosed container, an unclosed indefinite string.
    for hex in ["1a0001", "a1647a786964", "bf", "5f4161"] {
        assert!(
            matches!(
                decode::<SyncResponse>(&h(hex)),
                Err(DecodeError::Truncated { .. })
            ),
            "{hex} gave {:?}",
            decode::<SyncResponse>(&h(hex))
        );
    }
}

#[test]
fn floats_and_simple_values_pass_the_scan() {
    // Well-formed floats and `undefined` in an ignored field pass the scan and serde.
    for hex in ["f93c00", "fa3f800000", "fb3ff0000000000000", "f7"] {
        assert!(
            matches!(
                decode::<SyncResponse>(&sync_with_extra(&h(hex))),
                Ok(SyncResponse { zxid: 1 })
            ),
            "{hex} gave {:?}",
            decode::<SyncResponse>(&sync_with_extra(&h(hex)))
        );
    }
}

#[test]
fn unassigned_simple_values_pass_the_scan_and_ciborium_refuses_them() {
    assert!(matches!(
        decode::<SyncResponse>(&sync_with_extra(&h("f820"))),
        Err(DecodeError::Invalid { .. })
    ));
}

#[test]
fn a_byte_string_is_no_record_list_for_either_decoder() {
    // `{"records": h''}`: ciborium took the empty byte string for an empty array, the
    // devices' decoder refused it (found by the cbor_wire fuzz target under ASan).
    let bytes = h("a1677265636f72647340");
    assert!(decode::<RecordBatch>(&bytes).is_err());
    assert!(decode_lite::<RecordBatch>(&bytes).is_err());
    // An array still decodes with both.
    let empty = h("a1677265636f72647380");
    assert_eq!(decode::<RecordBatch>(&empty), Ok(RecordBatch::default()));
    assert_eq!(
        decode_lite::<RecordBatch>(&empty),
        Ok(RecordBatch::default())
    );
}

#[test]
fn a_byte_string_is_no_list_of_numbers_for_either_decoder() {
    // `"isr": h'0102'`: serde let ciborium read the bytes as the numbers [1, 2], the
    // devices' decoder refused them. Every sequence field of the wire types takes a CBOR
    // array only (`array_only`).
    let meta = PartitionMetadata {
        partition: 0,
        leader: Some(1),
        leader_epoch: 3,
        replicas: Vec::from([1, 2]),
        isr: Vec::from([1, 2]),
        elr: Vec::new(),
    };
    let array = encode(&meta).unwrap();
    // "isr" (63 69 73 72), then [1, 2] (82 01 02): the same two numbers as bytes (42 01 02).
    let at = array
        .windows(7)
        .position(|w| w == h("63697372820102").as_slice())
        .expect("the isr entry");
    let mut bytes = array.clone();
    bytes[at + 4] = 0x42;
    assert!(decode::<PartitionMetadata>(&bytes).is_err());
    assert!(decode_lite::<PartitionMetadata>(&bytes).is_err());
    assert_eq!(decode::<PartitionMetadata>(&array), Ok(meta.clone()));
    assert_eq!(decode_lite::<PartitionMetadata>(&array), Ok(meta));
}

#[test]
fn the_eligible_leader_replicas_are_optional_on_the_wire() {
    let mut meta = PartitionMetadata {
        partition: 0,
        leader: None,
        leader_epoch: 3,
        replicas: Vec::from([1, 2, 3]),
        isr: Vec::from([3]),
        elr: Vec::new(),
    };
    // Empty: not written, so a znode written before the field existed reads the same.
    let without = encode(&meta).unwrap();
    assert!(!without.windows(4).any(|w| w == b"\x63elr"));
    meta.elr = Vec::from([1]);
    let with = encode(&meta).unwrap();
    assert!(with.windows(4).any(|w| w == b"\x63elr"));
    assert_eq!(decode::<PartitionMetadata>(&with), Ok(meta.clone()));
    assert_eq!(decode_lite::<PartitionMetadata>(&with), Ok(meta.clone()));
    meta.elr.clear();
    assert_eq!(decode::<PartitionMetadata>(&without), Ok(meta.clone()));
    assert_eq!(decode_lite::<PartitionMetadata>(&without), Ok(meta));
}
