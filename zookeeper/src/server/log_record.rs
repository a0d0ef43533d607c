//! The write-ahead log's record: an op with the time it was applied at, its CBOR
//! encoding, and an upper bound of that encoding's size known without encoding it.

use crate::tree::{Op, RequestId};
use serde::{Deserialize, Serialize};

/// A log record: the op with the time it was applied at (the zxid is the storage's),
/// and the numbered request it answers, if any (so that a replay remembers it as its
/// session's last request: at-most-once across restarts).
///
/// Generic over how it holds the op so that a write is logged from a borrowed op
/// (`LogRecord<&Op>`, no copy of its data) and read back as `LogRecord<Op>`: the two
/// encode the same.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct LogRecord<O = Op> {
    pub(super) time_ms: u64,
    pub(super) op: O,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) request: Option<RequestId>,
}

impl LogRecord<&Op> {
    /// The record's CBOR bytes, in a buffer sized by [`bound`] (one allocation, no
    /// regrowth for a large value).
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(bound(self.op) as usize);
        pehra_shared::wire::encode_into(self, &mut bytes).expect("log records always encode");
        bytes
    }
}

/// What a record's fields around its op may take at most: the map header, the keys
/// `time_ms`, `op` and `request` (31 bytes), a u64 (9), and the request's map with its
/// keys and two u64s (34).
const RECORD_OVERHEAD: u64 = 96;

/// What one op's fixed parts may take at most: the variant map and name (at most 17
/// bytes: `create_session`), the fields' map header, their keys (at most 40 bytes for
/// Create's five), the integers (9 bytes each, at most two), the booleans and options.
const OP_OVERHEAD: u64 = 96;

/// The most a text or byte string's CBOR header takes (a 64-bit length).
const STRING_HEADER: u64 = 9;

/// An upper bound of the encoded size of the record of `op` (whatever its time and
/// request), computed from the lengths of its strings: what a write must find room for
/// in the log's reservation, without encoding it first.
pub(super) fn bound(op: &Op) -> u64 {
    RECORD_OVERHEAD + op_bound(op)
}

fn op_bound(op: &Op) -> u64 {
    let string = |len: usize| len as u64 + STRING_HEADER;
    OP_OVERHEAD
        + match op {
            Op::CreateSession { owner, .. } => owner.as_ref().map_or(0, |o| string(o.len())),
            Op::CloseSession { .. } => 0,
            Op::Create { path, data, .. } | Op::SetData { path, data, .. } => {
                string(path.len()) + string(data.len())
            }
            Op::Delete { path, .. } | Op::Check { path, .. } => string(path.len()),
            Op::Multi { ops } => STRING_HEADER + ops.iter().map(op_bound).sum::<u64>(),
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The largest record of `op`: every integer at its widest, a request named.
    fn widest(op: &Op) -> u64 {
        LogRecord {
            time_ms: u64::MAX,
            op,
            request: Some(RequestId {
                session: u64::MAX,
                number: u64::MAX,
            }),
        }
        .encode()
        .len() as u64
    }

    fn ops(path: &str, data: Vec<u8>) -> Vec<Op> {
        vec![
            Op::CreateSession {
                session: u64::MAX,
                timeout_ms: u32::MAX,
                owner: Some(path.into()),
            },
            Op::CreateSession {
                session: u64::MAX,
                timeout_ms: u32::MAX,
                owner: None,
            },
            Op::CloseSession { session: u64::MAX },
            Op::Create {
                path: path.into(),
                data: data.clone(),
                ephemeral: true,
                sequential: true,
                session: Some(u64::MAX),
            },
            Op::Delete {
                path: path.into(),
                version: Some(u32::MAX),
            },
            Op::SetData {
                path: path.into(),
                data: data.clone(),
                version: Some(u32::MAX),
            },
            Op::Check {
                path: path.into(),
                version: Some(u32::MAX),
            },
        ]
    }

    #[test]
    fn the_bound_holds_for_every_op_and_size() {
        for (path, len) in [
            ("/", 0),
            ("/a", 23),
            ("/znode/ünïcode", 24),
            ("/p", 255),
            ("/q", 256),
            ("/r", 65_535),
            ("/s", 65_536),
        ] {
            let all = ops(path, vec![0xa5; len]);
            for op in &all {
                assert!(
                    bound(op) >= widest(op),
                    "{op:?}: bound {} < {}",
                    bound(op),
                    widest(op)
                );
            }
            let multi = Op::Multi { ops: all.clone() };
            assert!(bound(&multi) >= widest(&multi), "multi of {len} bytes");
            let nested = Op::Multi {
                ops: vec![multi.clone(), Op::Multi { ops: vec![] }],
            };
            assert!(bound(&nested) >= widest(&nested), "nested multi");
        }
    }

    #[test]
    fn the_bound_is_close_for_a_large_value() {
        let op = Op::SetData {
            path: "/bench/s0".into(),
            data: vec![7; 1024],
            version: None,
        };
        let slack = bound(&op) - widest(&op);
        assert!(
            slack < 256,
            "the bound overshoots a 1 KiB write by {slack} bytes"
        );
    }

    #[test]
    fn a_borrowed_record_decodes_as_an_owned_one() {
        let op = Op::SetData {
            path: "/x".into(),
            data: vec![1, 2, 3],
            version: Some(4),
        };
        let request = Some(RequestId {
            session: 9,
            number: 10,
        });
        let bytes = LogRecord {
            time_ms: 5,
            op: &op,
            request,
        }
        .encode();
        let back: LogRecord = pehra_shared::wire::decode(&bytes).unwrap();
        assert_eq!((back.time_ms, back.op, back.request), (5, op, request));
    }
}
