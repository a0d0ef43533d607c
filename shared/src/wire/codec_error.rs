//! The errors of encoding and decoding wire messages.

use alloc::string::String;

/// A value could not be written as CBOR.
///
/// This cannot happen for the message types of [`crate::wire`] (they hold only integers,
/// strings, bytes, sequences and enums, and the output is a growable `Vec`); it exists
/// so that [`encode`] never panics if handed some other `Serialize` type whose
/// implementation fails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot encode as CBOR: {reason}")]
pub struct EncodeError {
    /// What went wrong, as the serializer said it.
    pub reason: String,
}

/// Why a payload could not be decoded into the expected message.
///
/// Its `Display` text is written for a human at the other end: a server sends it as the
/// body of a CoAP 4.00 (Bad Request) response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The payload is empty: a message is one CBOR item, at least one byte.
    #[error("the payload is empty: expected one CBOR item")]
    Empty,
    /// The payload ends before the CBOR item does.
    #[error("the CBOR payload ends early: the item at byte {offset} is incomplete")]
    Truncated {
        /// Byte offset of the item (or item head) that is cut off.
        offset: usize,
    },
    /// A length or count in the payload claims more than the payload holds.
    #[error(
        "the {what} at byte {offset} declares length {declared}, \
         but only {remaining} byte(s) of the payload remain"
    )]
    LengthExceedsInput {
        /// Which kind of item: "byte string", "text string", "array" or "map".
        what: &'static str,
        /// Byte offset of the item's head.
        offset: usize,
        /// The length (bytes, items or pairs) the head declares.
        declared: u64,
        /// Bytes left in the payload after the head.
        remaining: usize,
    },
    /// The bytes are not well-formed CBOR.
    #[error("not well-formed CBOR at byte {offset}: {what}")]
    Malformed {
        /// Byte offset of the offending byte.
        offset: usize,
        /// What is wrong there.
        what: &'static str,
    },
    /// Arrays, maps and tags are nested deeper than [`MAX_DEPTH`](super::MAX_DEPTH).
    #[error("the CBOR payload is nested deeper than {max} levels")]
    TooDeep {
        /// The nesting limit.
        max: usize,
    },
    /// Bytes follow the complete CBOR item: a message is exactly one item.
    #[error("{count} unexpected byte(s) after the CBOR item, from byte {offset}")]
    TrailingBytes {
        /// Byte offset where the extra bytes start.
        offset: usize,
        /// How many extra bytes there are.
        count: usize,
    },
    /// Well-formed CBOR, but not the expected message: a missing field, a wrong type, an
    /// unknown enum variant, a number out of range, a text string that is not UTF-8.
    #[error("invalid message: {reason}")]
    Invalid {
        /// What serde found wrong, e.g. "missing field `topic`".
        reason: String,
    },
}
