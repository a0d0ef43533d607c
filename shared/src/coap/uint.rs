//! Unsigned integer option values (RFC 7252 §3.2): big-endian in the fewest bytes.

use alloc::vec::Vec;

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
