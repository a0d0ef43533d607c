//! CBOR encoding and decoding of wire messages.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
#[cfg(feature = "std")]
use core::fmt::Debug;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::codec_error::{DecodeError, EncodeError};
use super::scan;

/// CoAP Content-Format of every Pehra payload: `application/cbor` (RFC 7049 / RFC 8949).
pub const CONTENT_FORMAT_CBOR: u16 = 60;

/// Encodes `value` as one CBOR item (see the encoding rules in [`crate::wire`]).
///
/// Never fails for the message types of [`crate::wire`]; the `Result` is for foreign
/// `Serialize` implementations that fail.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, EncodeError> {
    // On gateways most messages (answers, requests without a batch) fit: no regrowth
    // from 8 bytes up. The firmware keeps the smaller code of `Vec::new` (this function is
    // instantiated per message type; its few messages a cycle do not matter).
    #[cfg(feature = "std")]
    let mut out = Vec::with_capacity(ENCODE_CAPACITY);
    #[cfg(not(feature = "std"))]
    let mut out = Vec::new();
    encode_into(value, &mut out)?;
    Ok(out)
}

/// What [`encode`] reserves up front (on gateways).
#[cfg(feature = "std")]
const ENCODE_CAPACITY: usize = 128;

/// Appends the CBOR encoding of `value` to `out`, to reuse one buffer for many messages.
///
/// On error, `out` is left as it was.
///
/// On gateways (feature `std`) the small serializer of [`super::lite_ser`] writes it, in a
/// fraction of ciborium's instructions and to the same bytes; what it refuses (floats,
/// integers past 64 bits, tags, a value's own error) ciborium encodes again from the
/// start. The firmware has ciborium's serializer only.
pub fn encode_into<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let start = out.len();
    #[cfg(feature = "std")]
    {
        if super::lite_ser::encode_into(value, out).is_ok() {
            return Ok(());
        }
        out.truncate(start);
    }
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
/// The bytes are decoded by [`super::lite`], a small deserializer over the slice: the
/// same bytes accepted and the same values as ciborium's (the `cbor_wire` fuzz target
/// checks it), in about half the instructions, and without ciborium's messages, which
/// would link core's float formatting into every firmware (~10 KiB of flash). Its errors
/// say nothing, so on gateways (feature `std`) a message it refuses is decoded again by
/// ciborium, for the error that names what is wrong: the cost falls on bad input only.
/// Without `std` the error is only [`DecodeError::Invalid`].
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    scan::check(bytes)?;
    match super::lite::from_slice(bytes) {
        Ok(value) => Ok(value),
        #[cfg(not(feature = "std"))]
        Err(_) => Err(DecodeError::Invalid {
            reason: String::from("well-formed CBOR, but not the expected message"),
        }),
        #[cfg(feature = "std")]
        Err(_) => ciborium_from_slice(bytes),
    }
}

/// ciborium's decoding of bytes that passed the scan.
#[cfg(feature = "std")]
fn ciborium_from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    let mut scratch = [0u8; scan::SCRATCH_LEN];
    ciborium::from_reader_with_buffer(bytes, &mut scratch).map_err(from_ciborium)
}

/// [`decode`] through ciborium alone: for the fuzz target that checks the two decoders
/// agree. Not an API.
#[cfg(feature = "std")]
#[doc(hidden)]
pub fn decode_ciborium<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    scan::check(bytes)?;
    ciborium_from_slice(bytes)
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
