//! CoAP option numbers and the uint option encoding (RFC 7252 §3.2).

use alloc::vec::Vec;

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
    )
}

/// Whether an option number is critical (odd, RFC 7252 §5.4.1).
pub fn is_critical(number: u16) -> bool {
    number & 1 == 1
}

/// Encodes an unsigned integer option value in the fewest bytes (zero is empty).
pub fn encode_uint(value: u32) -> Vec<u8> {
    let bytes = value.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    bytes[skip..].to_vec()
}

/// Decodes an unsigned integer option value; `None` if it is longer than four bytes.
pub fn decode_uint(bytes: &[u8]) -> Option<u32> {
    if bytes.len() > 4 {
        return None;
    }
    Some(bytes.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
