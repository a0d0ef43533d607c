//! The body of every error response, and the CoAP code each kind of error is sent with.

use alloc::string::String;

use serde::{Deserialize, Serialize};

/// Body of a CoAP error response (4.xx / 5.xx): what was wrong, for programs and people.
///
/// CBOR: `{"error": ErrorKind, "message": text, "retry_after_ms"?: u64}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What kind of error; it also picks the response code ([`ErrorKind::coap_code`]).
    pub error: ErrorKind,
    /// A human-readable explanation.
    pub message: String,
    /// When to try again, milliseconds from now (also sent as Max-Age on 5.03).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

impl ErrorBody {
    /// An error body with no retry hint.
    pub fn new(error: ErrorKind, message: impl Into<String>) -> Self {
        ErrorBody {
            error,
            message: message.into(),
            retry_after_ms: None,
        }
    }
}

/// The kinds of error Pehra reports.
///
/// CBOR: a text string, the variant name in `snake_case`: `"malformed"`, `"not_found"`,
/// `"not_enough_replicas"`, ...
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request could not be parsed (bad CBOR, a missing field): 4.00.
    Malformed,
    /// The sender is not allowed to do this (e.g. an unauthenticated mode change): 4.01.
    Unauthorized,
    /// No such resource, znode, topic or partition: 4.04.
    NotFound,
    /// The resource does not support the method: 4.05.
    MethodNotAllowed,
    /// The znode's version is not the one required (If-Match / `version`): 4.12.
    VersionMismatch,
    /// The payload or batch is larger than allowed: 4.13.
    TooLarge,
    /// The payload is not in a Content-Format the resource takes: 4.15.
    UnsupportedContentFormat,
    /// The server is overloaded; retry later: 5.03.
    Busy,
    /// The node is dormant (PEHRA) and will answer after waking; retry later: 5.03.
    Asleep,
    /// A znode already exists at that path: 4.09 (Conflict).
    NodeExists,
    /// The znode has children, so it cannot be deleted: 4.09 (Conflict).
    NotEmpty,
    /// The session has expired: the sender is "undead" and must open a new session and
    /// rejoin: 4.04, as for any resource that no longer exists.
    SessionExpired,
    /// This broker does not lead that partition: ask the zookeeper for metadata and go
    /// to the leader. 4.03 (Forbidden): repeating the same request here cannot succeed.
    NotLeader,
    /// The request names a leader epoch other than this broker's (a deposed leader or a
    /// stale client): 4.12 (Precondition Failed), the epoch being a precondition like
    /// a version.
    FencedEpoch,
    /// Too few in-sync replicas to accept an acks=all produce; retry later: 5.03.
    NotEnoughReplicas,
    /// A bug or an I/O failure on the server: 5.00.
    Internal,
    /// The sender is authenticated but not allowed to do this (an ACL, another
    /// identity's session): 4.03.
    Forbidden,
    /// A gapless producer's batch does not start where its last stored batch ended (an
    /// earlier batch it has in flight is not stored yet): retry it after the earlier
    /// ones, 5.03.
    OutOfOrderSequence,
}

impl ErrorKind {
    /// The CoAP response code to send this error with, as the code byte
    /// `(class << 5) | detail`: 4.04 is `0x84`, 5.03 is `0xA3`.
    pub const fn coap_code(&self) -> u8 {
        match self {
            ErrorKind::Malformed => 0x80,                        // 4.00 Bad Request
            ErrorKind::Unauthorized => 0x81,                     // 4.01 Unauthorized
            ErrorKind::NotLeader | ErrorKind::Forbidden => 0x83, // 4.03 Forbidden
            ErrorKind::NotFound | ErrorKind::SessionExpired => 0x84, // 4.04 Not Found
            ErrorKind::MethodNotAllowed => 0x85,                 // 4.05 Method Not Allowed
            ErrorKind::NodeExists | ErrorKind::NotEmpty => 0x89, // 4.09 Conflict
            ErrorKind::VersionMismatch | ErrorKind::FencedEpoch => 0x8C, // 4.12 Precondition Failed
            ErrorKind::TooLarge => 0x8D,                         // 4.13 Request Entity Too Large
            ErrorKind::UnsupportedContentFormat => 0x8F,         // 4.15 Unsupported Content-Format
            ErrorKind::Internal => 0xA0,                         // 5.00 Internal Server Error
            ErrorKind::Busy
            | ErrorKind::Asleep
            | ErrorKind::NotEnoughReplicas
            | ErrorKind::OutOfOrderSequence => 0xA3, // 5.03 Service Unavailable
        }
    }
}
