//! A non-recursive well-formedness check of one CBOR item, run before serde sees the bytes.
//!
//! ciborium on its own copes with most bad input, but two things are not acceptable on a
//! microcontroller with a small heap and stack (see the hostile-input tests):
//!
//! * serde pre-allocates a `Vec` from the count an array head *claims*, up to 1 MiB, so a
//!   five-byte datagram can ask for a megabyte before anything fails;
//! * ciborium allows 256 levels of nesting, recursing once per level, which is far more
//!   stack than a firmware task has.
//!
//! [`check`] walks the item head by head with a fixed-size stack, so every declared length
//! is proven by bytes actually present, nesting is capped at [`MAX_DEPTH`], and a
//! truncated or padded payload is refused before decoding starts.

use super::codec_error::DecodeError;

/// The deepest nesting of arrays, maps and tags [`decode`](super::decode) accepts.
///
/// Pehra's deepest message (a [`MetadataResponse`](super::MetadataResponse): topics →
/// topic → partitions → partition → replicas) nests 6 levels; the rest is headroom for
/// fields a newer peer may add.
pub const MAX_DEPTH: usize = 16;

/// Bytes of stack ciborium may use as scratch space while decoding.
///
/// ciborium copies byte and text strings through this buffer in chunks. Its default is
/// 4 KiB on the stack, which is a lot for a microcontroller task; 512 bytes costs a few
/// more loop turns on large record batches and nothing else (every map key Pehra uses is
/// far shorter; an unknown key longer than this is rejected, by the no-std decoder too).
pub(super) const SCRATCH_LEN: usize = 512;

/// An open container: how many more items it holds before it is complete.
#[derive(Clone, Copy)]
enum Frame {
    /// A definite-length array or map (a map counts keys and values), or a tag (1 item).
    Definite(u64),
    /// An indefinite-length array: items until a break byte.
    IndefiniteArray,
    /// An indefinite-length map: items until a break byte; `odd` after a key.
    IndefiniteMap {
        /// A key has been read and its value has not.
        odd: bool,
    },
}

/// The argument of an item head.
enum Arg {
    /// A number: a value, a length or a count.
    Value(u64),
    /// Additional information 31: indefinite length, or the break byte in major type 7.
    Indefinite,
}

/// Checks that `bytes` is exactly one well-formed CBOR item, no deeper than
/// [`MAX_DEPTH`], whose every declared length fits in the bytes that follow it.
///
/// Text strings are not checked for UTF-8 here; the decoder does that.
pub(crate) fn check(bytes: &[u8]) -> Result<(), DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    let mut stack = [Frame::Definite(0); MAX_DEPTH];
    let mut depth = 0usize;
    let mut pos = 0usize;

    loop {
        let start = pos;
        let (major, arg) = head(bytes, &mut pos)?;
        let remaining = bytes.len() - pos;
        // Whether this head completed an item (true) or opened a container (false).
        let complete = match (major, arg) {
            (0 | 1, Arg::Value(_)) => true,
            (0 | 1 | 6, Arg::Indefinite) => {
                return Err(DecodeError::Malformed {
                    offset: start,
                    what: "indefinite length on an integer or tag",
                })
            }
            (2 | 3, Arg::Value(len)) => {
                pos += fits(start, major, len, remaining, remaining)?;
                true
            }
            (2 | 3, Arg::Indefinite) => {
                pos = indefinite_string(bytes, major, pos)?;
                true
            }
            (4, Arg::Value(0)) | (5, Arg::Value(0)) => true,
            (4, Arg::Value(count)) => {
                fits(start, major, count, remaining, remaining)?;
                push(&mut stack, &mut depth, Frame::Definite(count))?;
                false
            }
            (5, Arg::Value(pairs)) => {
                fits(start, major, pairs, remaining / 2, remaining)?;
                push(&mut stack, &mut depth, Frame::Definite(pairs * 2))?;
                false
            }
            (4, Arg::Indefinite) => {
                push(&mut stack, &mut depth, Frame::IndefiniteArray)?;
                false
            }
            (5, Arg::Indefinite) => {
                push(&mut stack, &mut depth, Frame::IndefiniteMap { odd: false })?;
                false
            }
            // Bignums: no Pehra message holds one, and ciborium reads them as integers
            // (refusing tag 3 on an integer) where the no-std decoder skips the tag, so
            // the two decoders would disagree (found by the cbor_wire fuzz target).
            (6, Arg::Value(2 | 3)) => {
                return Err(DecodeError::Malformed {
                    offset: start,
                    what: "bignum tag (2 or 3)",
                })
            }
            (6, Arg::Value(_)) => {
                push(&mut stack, &mut depth, Frame::Definite(1))?;
                false
            }
            (7, Arg::Value(simple)) => {
                if bytes[start] == 0xf8 && simple < 32 {
                    return Err(DecodeError::Malformed {
                        offset: start,
                        what: "two-byte simple value below 32",
                    });
                }
                true
            }
            (7, Arg::Indefinite) => {
                // A break byte: it may only close an indefinite-length container.
                match depth.checked_sub(1).map(|top| stack[top]) {
                    Some(Frame::IndefiniteArray) | Some(Frame::IndefiniteMap { odd: false }) => {
                        depth -= 1;
                        true
                    }
                    Some(Frame::IndefiniteMap { odd: true }) => {
                        return Err(DecodeError::Malformed {
                            offset: start,
                            what: "break after a map key with no value",
                        })
                    }
                    _ => {
                        return Err(DecodeError::Malformed {
                            offset: start,
                            what: "break byte outside an indefinite-length container",
                        })
                    }
                }
            }
            _ => unreachable_major(start)?,
        };

        if complete && finish_item(&mut stack, &mut depth) {
            return if pos == bytes.len() {
                Ok(())
            } else {
                Err(DecodeError::TrailingBytes {
                    offset: pos,
                    count: bytes.len() - pos,
                })
            };
        }
    }
}

/// Records that an item is complete, closing every container it completes in turn.
/// Returns true when the top-level item is complete.
fn finish_item(stack: &mut [Frame; MAX_DEPTH], depth: &mut usize) -> bool {
    loop {
        let Some(top) = depth.checked_sub(1) else {
            return true;
        };
        match &mut stack[top] {
            Frame::Definite(left) => {
                *left -= 1;
                if *left > 0 {
                    return false;
                }
                *depth = top;
            }
            Frame::IndefiniteArray => return false,
            Frame::IndefiniteMap { odd } => {
                *odd = !*odd;
                return false;
            }
        }
    }
}

/// Opens a container, refusing to go deeper than [`MAX_DEPTH`].
fn push(
    stack: &mut [Frame; MAX_DEPTH],
    depth: &mut usize,
    frame: Frame,
) -> Result<(), DecodeError> {
    let slot = stack
        .get_mut(*depth)
        .ok_or(DecodeError::TooDeep { max: MAX_DEPTH })?;
    *slot = frame;
    *depth += 1;
    Ok(())
}

/// Checks that a length declared by the head at `start` fits in the `room` left (bytes
/// for strings; for arrays and maps, the most items or pairs the `remaining` bytes could
/// hold, since every item takes at least one byte). Returns the length as a `usize`.
fn fits(
    start: usize,
    major: u8,
    declared: u64,
    room: usize,
    remaining: usize,
) -> Result<usize, DecodeError> {
    match usize::try_from(declared) {
        Ok(len) if len <= room => Ok(len),
        _ => Err(DecodeError::LengthExceedsInput {
            what: match major {
                2 => "byte string",
                3 => "text string",
                4 => "array",
                _ => "map",
            },
            offset: start,
            declared,
            remaining,
        }),
    }
}

/// Skips the chunks of an indefinite-length byte or text string whose head ended at
/// `pos`; returns the position after its break byte.
fn indefinite_string(bytes: &[u8], major: u8, mut pos: usize) -> Result<usize, DecodeError> {
    loop {
        let start = pos;
        if bytes.get(pos) == Some(&0xff) {
            return Ok(pos + 1);
        }
        match head(bytes, &mut pos)? {
            (m, Arg::Value(len)) if m == major => {
                let remaining = bytes.len() - pos;
                pos += fits(start, major, len, remaining, remaining)?;
            }
            _ => {
                return Err(DecodeError::Malformed {
                    offset: start,
                    what: "a chunk of an indefinite-length string is not a definite string of the same type",
                })
            }
        }
    }
}

/// Reads one item head at `pos` (advancing it): the major type and the argument.
fn head(bytes: &[u8], pos: &mut usize) -> Result<(u8, Arg), DecodeError> {
    let start = *pos;
    let initial = *bytes
        .get(start)
        .ok_or(DecodeError::Truncated { offset: start })?;
    let major = initial >> 5;
    let extra = match initial & 0x1f {
        info @ 0..=23 => {
            *pos += 1;
            return Ok((major, Arg::Value(u64::from(info))));
        }
        24 => 1,
        25 => 2,
        26 => 4,
        27 => 8,
        28..=30 => {
            return Err(DecodeError::Malformed {
                offset: start,
                what: "reserved additional information (28-30)",
            })
        }
        _ => {
            *pos += 1;
            return Ok((major, Arg::Indefinite));
        }
    };
    let arg_bytes = bytes
        .get(start + 1..start + 1 + extra)
        .ok_or(DecodeError::Truncated { offset: start })?;
    *pos = start + 1 + extra;
    let value = arg_bytes
        .iter()
        .fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
    Ok((major, Arg::Value(value)))
}

/// A major type is three bits, so every value is matched above; this keeps the `match`
/// total without a panic.
fn unreachable_major(offset: usize) -> Result<bool, DecodeError> {
    Err(DecodeError::Malformed {
        offset,
        what: "unknown major type",
    })
}
