//! How `decode` reads what peers may send: tolerated variations, refused values, the
//! error texts that go back in 4.00 bodies, and `encode`'s error path.

use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

use serde::{Serialize, Serializer};

use super::ALL_ERROR_KINDS;
use crate::wire::*;

fn h(hex: &str) -> Vec<u8> {
    hex::decode(hex).expect("test hex")
}

fn invalid_reason<T: serde::de::DeserializeOwned + core::fmt::Debug>(hex: &str) -> String {
    match decode::<T>(&h(hex)) {
        Err(DecodeError::Invalid { reason }) => reason,
        other => panic!("expected DecodeError::Invalid, got {other:?}"),
    }
}

#[test]
fn content_format_is_application_cbor() {
    assert_eq!(CONTENT_FORMAT_CBOR, 60);
}

#[test]
fn explicit_null_decodes_as_none() {
    // {"timeout_ms": 1, "node": null}
    let open: SessionOpen = decode(&h("a26a74696d656f75745f6d7301646e6f6465f6")).unwrap();
    assert_eq!(
        open,
        SessionOpen {
            timeout_ms: 1,
            node: None,
            health: None
        }
    );
}

#[test]
fn unknown_keys_are_ignored() {
    // {"zxid": 1, "future": [1, {"a": h'00'}]}
    let sync: SyncResponse = decode(&h("a2647a78696401666675747572658201a161614100")).unwrap();
    assert_eq!(sync, SyncResponse { zxid: 1 });
}

#[test]
fn key_order_does_not_matter() {
    // {"timeout_ms": 30000, "session": 5}
    let opened: SessionOpened =
        decode(&h("a26a74696d656f75745f6d731975306773657373696f6e05")).unwrap();
    assert_eq!(
        opened,
        SessionOpened {
            session: 5,
            timeout_ms: 30_000,
            incarnation: None
        }
    );
}

#[test]
fn indefinite_length_items_are_accepted() {
    // {_ "zxid": 1}
    let sync: SyncResponse = decode(&h("bf647a78696401ff")).unwrap();
    assert_eq!(sync, SyncResponse { zxid: 1 });
    // {"data": (_ h'61', h'62'), "ephemeral": false, "sequential": true}
    let create: CreateRequest = decode(&h(
        "a364646174615f41614162ff69657068656d6572616cf46a73657175656e7469616cf5",
    ))
    .unwrap();
    assert_eq!(
        create,
        CreateRequest {
            data: b"ab".to_vec(),
            ephemeral: false,
            sequential: true,
            session: None,
            request: None
        }
    );
    // {"children": [_ "a", (_ "b", "c")], "stat": {}} fails only for the missing stat
    // fields, after the indefinite array and string were read.
    let reason = invalid_reason::<Children>("a2686368696c6472656e9f61617f61626163ffff6473746174a0");
    // Without `std` (devices) the reason carries no serde message.
    assert!(
        !cfg!(feature = "std") || reason.contains("missing field `czxid`"),
        "{reason}"
    );
}

#[test]
fn missing_field_is_named() {
    let reason = invalid_reason::<SyncResponse>("a0");
    // Without `std` (devices) the reason carries no serde message.
    assert!(
        !cfg!(feature = "std") || reason.contains("missing field `zxid`"),
        "{reason}"
    );
}

#[test]
fn wrong_type_is_refused() {
    // {"zxid": "x"}
    invalid_reason::<SyncResponse>("a1647a7869646178");
}

#[test]
fn unknown_enum_variant_is_refused() {
    // "sleep_forever"
    let reason = invalid_reason::<Directive>("6d736c6565705f666f7265766572");
    // Without `std` (devices) the reason carries no serde message.
    assert!(
        !cfg!(feature = "std") || reason.contains("sleep_forever"),
        "{reason}"
    );
}

#[test]
fn acks_other_than_0_1_minus_1_are_refused() {
    assert_eq!(decode::<Acks>(&h("00")), Ok(Acks::None));
    assert_eq!(decode::<Acks>(&h("01")), Ok(Acks::Leader));
    assert_eq!(decode::<Acks>(&h("20")), Ok(Acks::All));
    for bad in ["02", "21", "1903e8", "3903e7", "6361636b"] {
        assert!(decode::<Acks>(&h(bad)).is_err(), "{bad}");
    }
    for acks in [Acks::None, Acks::Leader, Acks::All] {
        assert_eq!(Acks::from_code(acks.code()), Some(acks));
    }
}

#[test]
fn numbers_out_of_range_are_refused() {
    #[derive(Serialize)]
    struct WideHealth {
        cpu_permille: u32,
        memory_permille: u16,
        disk_io_permille: u16,
        rtt_ms: u32,
        failures: u32,
    }
    let bytes = encode(&WideHealth {
        cpu_permille: 70_000,
        memory_permille: 0,
        disk_io_permille: 0,
        rtt_ms: 0,
        failures: 0,
    })
    .unwrap();
    assert!(matches!(
        decode::<NodeHealth>(&bytes),
        Err(DecodeError::Invalid { .. })
    ));
    // A negative zxid.
    assert!(decode::<SyncResponse>(&h("a1647a78696420")).is_err());
}

#[test]
fn text_that_is_not_utf8_is_refused() {
    // {"kind": "created", "path": "\xff\xfe", "zxid": 1}
    let bytes = h("a3646b696e6467637265617465646470617468 62fffe 647a78696401"
        .replace(' ', "")
        .as_str());
    assert!(decode::<WatchEvent>(&bytes).is_err());
}

#[test]
fn error_texts_are_readable() {
    let cases: [(DecodeError, &str); 7] = [
        (
            DecodeError::Empty,
            "the payload is empty: expected one CBOR item",
        ),
        (
            DecodeError::Truncated { offset: 3 },
            "the CBOR payload ends early: the item at byte 3 is incomplete",
        ),
        (
            DecodeError::LengthExceedsInput {
                what: "byte string",
                offset: 0,
                declared: 1 << 60,
                remaining: 3,
            },
            "the byte string at byte 0 declares length 1152921504606846976, \
             but only 3 byte(s) of the payload remain",
        ),
        (
            DecodeError::Malformed {
                offset: 0,
                what: "reserved additional information (28-30)",
            },
            "not well-formed CBOR at byte 0: reserved additional information (28-30)",
        ),
        (
            DecodeError::TooDeep { max: MAX_DEPTH },
            "the CBOR payload is nested deeper than 16 levels",
        ),
        (
            DecodeError::TrailingBytes {
                offset: 8,
                count: 1,
            },
            "1 unexpected byte(s) after the CBOR item, from byte 8",
        ),
        (
            DecodeError::Invalid {
                reason: "missing field `zxid`".to_string(),
            },
            "invalid message: missing field `zxid`",
        ),
    ];
    for (error, text) in cases {
        assert_eq!(error.to_string(), text);
    }
}

#[test]
fn encode_into_appends_and_a_failing_serialize_leaves_the_buffer_alone() {
    struct Refuses;
    impl Serialize for Refuses {
        fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("not today"))
        }
    }
    let mut out = vec![0xaa];
    encode_into(&SyncResponse { zxid: 1 }, &mut out).unwrap();
    assert_eq!(out, h("aaa1647a78696401"));
    let error = encode_into(&[Refuses], &mut out).unwrap_err();
    assert_eq!(out, h("aaa1647a78696401"));
    assert_eq!(error.to_string(), "cannot encode as CBOR: not today");
    assert!(encode(&Refuses).is_err());
}

#[test]
fn error_kinds_map_to_coap_codes() {
    use ErrorKind::*;
    for kind in ALL_ERROR_KINDS {
        let expected = match kind {
            Malformed => 0x80,
            Unauthorized => 0x81,
            NotLeader | Forbidden => 0x83,
            NotFound | SessionExpired => 0x84,
            MethodNotAllowed => 0x85,
            NodeExists | NotEmpty => 0x89,
            VersionMismatch | FencedEpoch => 0x8C,
            TooLarge => 0x8D,
            UnsupportedContentFormat => 0x8F,
            Internal => 0xA0,
            Busy | Asleep | NotEnoughReplicas | OutOfOrderSequence => 0xA3,
        };
        assert_eq!(kind.coap_code(), expected, "{kind:?}");
        // Every code is a client (4.xx) or server (5.xx) error.
        assert!(matches!(kind.coap_code() >> 5, 4 | 5), "{kind:?}");
    }
}
