//! CoAP option numbers and the uint option encoding (RFC 7252 §3.2).

use alloc::vec::Vec;

pub use super::uint::{decode_uint, encode_uint};

/// If-Match (RFC 7252 §5.10.8.1).
pub const IF_MATCH: u16 = 1;
/// Uri-Host.
pub const URI_HOST: u16 = 3;
/// ETag.
pub const ETAG: u16 = 4;
/// If-None-Match.
pub const IF_NONE_MATCH: u16 = 5;
/// Observe (RFC 7641).
pub const OBSERVE: u16 = 6;
/// Uri-Port.
pub const URI_PORT: u16 = 7;
/// Location-Path.
pub const LOCATION_PATH: u16 = 8;
/// Uri-Path.
pub const URI_PATH: u16 = 11;
/// Content-Format.
pub const CONTENT_FORMAT: u16 = 12;
/// Max-Age.
pub const MAX_AGE: u16 = 14;
/// Uri-Query.
pub const URI_QUERY: u16 = 15;
/// Accept.
pub const ACCEPT: u16 = 17;
/// Location-Query.
pub const LOCATION_QUERY: u16 = 20;
/// Block2 (RFC 7959): the response body's block.
pub const BLOCK2: u16 = 23;
/// Block1 (RFC 7959): the request body's block.
pub const BLOCK1: u16 = 27;
/// Size2 (RFC 7959): the whole response body's size.
pub const SIZE2: u16 = 28;
/// Proxy-Uri.
pub const PROXY_URI: u16 = 35;
/// Proxy-Scheme.
pub const PROXY_SCHEME: u16 = 39;
/// Size1 (RFC 7959): the whole request body's size, or the largest acceptable.
pub const SIZE1: u16 = 60;
/// No-Response (RFC 7967).
pub const NO_RESPONSE: u16 = 258;
/// Request-Tag (RFC 9175): tells concurrent block-wise uploads of one client apart.
pub const REQUEST_TAG: u16 = 292;
/// Pehra-Max-Payload (an experimental-range option, RFC 7252 §12.2): the largest
/// payload the requester accepts in one datagram, as a uint. Elective (even) and
/// safe-to-forward with NoCacheKey (bits 1–4 of the number are 1110), so a server or a
/// proxy that does not know it ignores it. A Pehra engine adds it when its
/// [`Config::max_payload`](super::Config::max_payload) is larger than its block size;
/// a server answers such a request in one datagram up to that size (and its own
/// `max_payload`), and everyone else block-wise in blocks of its block size.
pub const MAX_PAYLOAD: u16 = 65020;

/// Options this engine understands. An unknown *critical* (odd-numbered) option in a
/// request is answered with 4.02 Bad Option, as RFC 7252 §5.4.1 requires.
pub fn is_known(number: u16) -> bool {
    matches!(
        number,
        IF_MATCH
            | URI_HOST
            | ETAG
            | IF_NONE_MATCH
            | OBSERVE
            | URI_PORT
            | LOCATION_PATH
            | URI_PATH
            | CONTENT_FORMAT
            | MAX_AGE
            | URI_QUERY
            | ACCEPT
            | LOCATION_QUERY
            | BLOCK2
            | BLOCK1
            | SIZE2
            | SIZE1
            | NO_RESPONSE
            | REQUEST_TAG
            | PROXY_URI
            | PROXY_SCHEME
            | MAX_PAYLOAD
    )
}

/// How an option may appear (RFC 7252 §5.4.5 and §5.10, RFC 7959 §2.1, RFC 7641 §2,
/// RFC 9175 §3.2): whether it may be repeated, and the range of its value's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Format {
    /// It may occur more than once.
    pub repeatable: bool,
    /// Shortest valid value, in bytes.
    pub min_len: usize,
    /// Longest valid value, in bytes.
    pub max_len: usize,
}

/// The format of a known option; `None` for one this engine does not know.
pub fn format(number: u16) -> Option<Format> {
    let (repeatable, min_len, max_len) = match number {
        IF_MATCH => (true, 0, 8),
        URI_HOST => (false, 1, 255),
        ETAG => (true, 1, 8),
        IF_NONE_MATCH => (false, 0, 0),
        OBSERVE => (false, 0, 3),
        URI_PORT => (false, 0, 2),
        LOCATION_PATH | URI_PATH | URI_QUERY | LOCATION_QUERY => (true, 0, 255),
        CONTENT_FORMAT | ACCEPT => (false, 0, 2),
        MAX_AGE | SIZE1 | SIZE2 | MAX_PAYLOAD => (false, 0, 4),
        BLOCK1 | BLOCK2 => (false, 0, 3),
        PROXY_URI => (false, 1, 1034),
        PROXY_SCHEME => (false, 1, 255),
        NO_RESPONSE => (false, 0, 1),
        REQUEST_TAG => (true, 0, 8),
        _ => return None,
    };
    Some(Format {
        repeatable,
        min_len,
        max_len,
    })
}

/// What RFC 7252 §5.4.1, §5.4.3 and §5.4.5 make of the options of a request, given as
/// (number, the lengths of its values) in any order: the first critical option that is repeated though
/// not repeatable, or has a value of invalid length (`Err`, answered 4.02 Bad Option);
/// otherwise the elective options to drop (`Ok`: each with how many of its first
/// values to keep, `None` to drop all of them).
pub fn check<L: IntoIterator<Item = usize>>(
    options: impl Iterator<Item = (u16, L)>,
) -> Result<Vec<(u16, Option<usize>)>, u16> {
    let mut drop = Vec::new();
    for (number, lengths) in options {
        let Some(format) = format(number) else {
            continue;
        };
        let (mut count, mut bad_len) = (0usize, false);
        for len in lengths {
            count += 1;
            bad_len |= len < format.min_len || len > format.max_len;
        }
        let repeated = !format.repeatable && count > 1;
        if !(bad_len || repeated) {
            continue;
        }
        if is_critical(number) {
            return Err(number);
        }
        if bad_len {
            drop.push((number, None));
        } else {
            // RFC 7252 §5.4.5: the values after the first are treated as unrecognised.
            drop.push((number, Some(1)));
        }
    }
    Ok(drop)
}

/// The registered name of an option (RFC 7252 §12.2 and the RFCs that add options).
pub fn name(number: u16) -> Option<&'static str> {
    Some(match number {
        IF_MATCH => "If-Match",
        URI_HOST => "Uri-Host",
        ETAG => "ETag",
        IF_NONE_MATCH => "If-None-Match",
        OBSERVE => "Observe",
        URI_PORT => "Uri-Port",
        LOCATION_PATH => "Location-Path",
        9 => "OSCORE",
        URI_PATH => "Uri-Path",
        CONTENT_FORMAT => "Content-Format",
        MAX_AGE => "Max-Age",
        URI_QUERY => "Uri-Query",
        ACCEPT => "Accept",
        LOCATION_QUERY => "Location-Query",
        BLOCK2 => "Block2",
        BLOCK1 => "Block1",
        SIZE2 => "Size2",
        PROXY_URI => "Proxy-Uri",
        PROXY_SCHEME => "Proxy-Scheme",
        SIZE1 => "Size1",
        252 => "Echo",
        NO_RESPONSE => "No-Response",
        REQUEST_TAG => "Request-Tag",
        MAX_PAYLOAD => "Pehra-Max-Payload",
        _ => return None,
    })
}

/// An option as a person reads it: `Observe: 1`, `Block2: 2/1/1024` (number, more
/// flag, size), `ETag: 0a1b2c3d`, `Uri-Path: ps`; an unknown one as `Option 65001: 0a`.
pub fn display(number: u16, value: &[u8]) -> alloc::string::String {
    use core::fmt::Write;
    let mut out = alloc::string::String::new();
    match name(number) {
        Some(name) => out.push_str(name),
        None => {
            let _ = write!(out, "Option {number}");
        }
    }
    out.push_str(": ");
    let text = matches!(
        number,
        URI_HOST | LOCATION_PATH | URI_PATH | URI_QUERY | LOCATION_QUERY | PROXY_URI | PROXY_SCHEME
    );
    let uint = matches!(
        number,
        OBSERVE
            | URI_PORT
            | CONTENT_FORMAT
            | MAX_AGE
            | ACCEPT
            | SIZE2
            | SIZE1
            | NO_RESPONSE
            | MAX_PAYLOAD
    );
    match core::str::from_utf8(value) {
        Ok(s) if text => out.push_str(s),
        _ if uint && value.len() <= 4 => {
            let _ = write!(out, "{}", decode_uint(value).unwrap_or(0));
        }
        _ if matches!(number, BLOCK1 | BLOCK2) => match super::BlockValue::decode(value) {
            Some(b) => {
                let _ = write!(out, "{}/{}/{}", b.num, u8::from(b.more), b.size());
            }
            None => hex(&mut out, value),
        },
        _ => hex(&mut out, value),
    }
    out
}

fn hex(out: &mut alloc::string::String, bytes: &[u8]) {
    use core::fmt::Write;
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
}

/// Whether an option number is critical (odd, RFC 7252 §5.4.1).
pub fn is_critical(number: u16) -> bool {
    number & 1 == 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn uint_round_trips_in_minimal_bytes() {
        assert_eq!(encode_uint(0), Vec::<u8>::new());
        assert_eq!(encode_uint(60), [60]);
        assert_eq!(encode_uint(0x1234), [0x12, 0x34]);
        assert_eq!(encode_uint(0x0100_0000), [1, 0, 0, 0]);
        for v in [0, 1, 255, 256, 65_535, 65_536, u32::MAX] {
            assert_eq!(decode_uint(&encode_uint(v)), Some(v));
        }
        assert_eq!(decode_uint(&[1, 2, 3, 4, 5]), None);
    }

    #[test]
    fn options_display_by_name() {
        assert_eq!(display(OBSERVE, &[1]), "Observe: 1");
        let block = super::super::BlockValue::new(2, true, 6).unwrap();
        assert_eq!(display(BLOCK2, &block.encode()), "Block2: 2/1/1024");
        assert_eq!(display(ETAG, &[0x0a, 0x1b]), "ETag: 0a1b");
        assert_eq!(display(CONTENT_FORMAT, &[60]), "Content-Format: 60");
        assert_eq!(display(URI_PATH, b"ps"), "Uri-Path: ps");
        assert_eq!(display(65001, &[0x0a]), "Option 65001: 0a");
    }

    #[test]
    fn check_refuses_bad_critical_options_and_drops_bad_elective_ones() {
        let (one, two, long) = (vec![1], vec![1, 1], vec![3]);
        assert_eq!(check([(ACCEPT, one.clone())].into_iter()), Ok(vec![]));
        assert_eq!(check([(ACCEPT, two.clone())].into_iter()), Err(ACCEPT));
        assert_eq!(check([(ACCEPT, long.clone())].into_iter()), Err(ACCEPT));
        assert_eq!(
            check([(CONTENT_FORMAT, two), (MAX_AGE, one)].into_iter()),
            Ok(vec![(CONTENT_FORMAT, Some(1))])
        );
        assert_eq!(
            check([(CONTENT_FORMAT, long)].into_iter()),
            Ok(vec![(CONTENT_FORMAT, None)])
        );
        assert_eq!(check([(URI_PATH, vec![1, 0, 9])].into_iter()), Ok(vec![]));
        assert!(!is_critical(MAX_PAYLOAD) && MAX_PAYLOAD & 0x1e == 0x1c);
    }
}
