//! CBOR encoding and decoding of wire messages, and their errors.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
#[cfg(feature = "std")]
use core::fmt::Debug;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::scan;

/// CoAP Content-Format of every Pehra payload: `application/cbor` (RFC 7049 / RFC 8949).
pub const CONTENT_FORMAT_CBOR: u16 = 60;

/// Bytes of stack ciborium may use as scratch space while decoding.
///
/// ciborium copies byte and text strings through this buffer in chunks. Its default is
/// 4 KiB on the stack, which is a lot for a microcontroller task; 512 bytes costs a few
/// more loop turns on large record batches and nothing else (every map key Pehra uses is
/// far shorter; an unknown key longer than this is rejected, by the no-std decoder too).
pub(super) const SCRATCH_LEN: usize = 512;

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

/// Encodes `value` as one CBOR item (see the encoding rules in [`crate::wire`]).
///
/// Never fails for the message types of [`crate::wire`]; the `Result` is for foreign
/// `Serialize` implementations that fail.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::new();
    encode_into(value, &mut out)?;
    Ok(out)
}

/// Appends the CBOR encoding of `value` to `out`, to reuse one buffer for many messages.
///
/// On error, `out` is left as it was.
pub fn encode_into<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let start = out.len();
    ciborium::into_writer(value, &mut *out).map_err(|e| {
        out.truncate(start);
        EncodeError {
            reason: match e {
                ciborium::ser::Error::Io(io) => format!("write failed: {io:?}"),
                ciborium::ser::Error::Value(msg) => msg,
            },
        }
    })
}

/// Decodes `bytes`, which must be exactly one CBOR item, as a `T`.
///
/// The bytes are first checked to be well-formed, complete, no deeper than
/// [`MAX_DEPTH`](super::MAX_DEPTH) and free of trailing bytes, so hostile input is
/// rejected cheaply before it reaches serde. Unknown map keys are ignored; missing
/// optional fields decode as `None`.
///
/// Without feature `std` (devices) the bytes are decoded by [`super::lite`], whose
/// errors carry no message ([`DecodeError::Invalid`] says only that the message is not
/// the expected one): ciborium's messages would link core's float formatting into
/// every firmware (~10 KiB of flash). The values and the bytes accepted are the same.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    scan::check(bytes)?;
    #[cfg(not(feature = "std"))]
    {
        super::lite::from_slice(bytes).map_err(|_| DecodeError::Invalid {
            reason: String::from("well-formed CBOR, but not the expected message"),
        })
    }
    #[cfg(feature = "std")]
    {
        let mut scratch = [0u8; SCRATCH_LEN];
        ciborium::from_reader_with_buffer(bytes, &mut scratch).map_err(from_ciborium)
    }
}

/// [`decode`] as it is without feature `std` (the well-formedness check, then the
/// small no-std deserializer), whatever the features: for the fuzz target that checks it
/// accepts the same bytes and makes the same values as ciborium. Not an API.
#[doc(hidden)]
pub fn decode_lite<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    scan::check(bytes)?;
    super::lite::from_slice(bytes).map_err(|_| DecodeError::Invalid {
        reason: String::from("well-formed CBOR, but not the expected message"),
    })
}

#[cfg(feature = "std")]
/// Maps ciborium's error (whose I/O type differs with and without `std`) to ours.
fn from_ciborium<E: Debug>(e: ciborium::de::Error<E>) -> DecodeError {
    match e {
        // The scan has already seen every byte the item needs, so running out of input
        // here would be a disagreement between the scan and ciborium; say what it means.
        ciborium::de::Error::Io(_) => DecodeError::Truncated { offset: 0 },
        ciborium::de::Error::Syntax(offset) => DecodeError::Malformed {
            offset,
            what: "syntax error",
        },
        ciborium::de::Error::Semantic(Some(offset), reason) => DecodeError::Invalid {
            reason: format!("{reason} (at byte {offset})"),
        },
        ciborium::de::Error::Semantic(None, reason) => DecodeError::Invalid { reason },
        ciborium::de::Error::RecursionLimitExceeded => DecodeError::TooDeep {
            max: super::MAX_DEPTH,
        },
    }
}
