//! Tests of the wire module: golden vectors, property tests, hostile input.

mod decoding;
mod golden;
mod hostile;
mod props;
mod samples;

use crate::wire::ErrorKind;

/// Every [`ErrorKind`], in declaration order.
const ALL_ERROR_KINDS: [ErrorKind; 18] = [
    ErrorKind::Malformed,
    ErrorKind::Unauthorized,
    ErrorKind::NotFound,
    ErrorKind::MethodNotAllowed,
    ErrorKind::VersionMismatch,
    ErrorKind::TooLarge,
    ErrorKind::UnsupportedContentFormat,
    ErrorKind::Busy,
    ErrorKind::Asleep,
    ErrorKind::NodeExists,
    ErrorKind::NotEmpty,
    ErrorKind::SessionExpired,
    ErrorKind::NotLeader,
    ErrorKind::FencedEpoch,
    ErrorKind::NotEnoughReplicas,
    ErrorKind::Internal,
    ErrorKind::Forbidden,
    ErrorKind::OutOfOrderSequence,
];
