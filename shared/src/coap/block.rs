//! The Block1/Block2 option value of RFC 7959 §2.2.

use super::uint::{decode_uint, encode_uint};
use alloc::vec::Vec;

/// A Block1 or Block2 option value: block number, more flag and size exponent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockValue {
    /// The block number (up to 2^20 - 1).
    pub num: u32,
    /// More blocks follow.
    pub more: bool,
    /// Size exponent: the block size is `2^(szx + 4)` bytes, 16 to 1024; 7 is BERT
    /// (RFC 8323 §6): blocks of any multiple of 1024 bytes, numbered in 1024-byte units.
    /// RFC 7959 reserves 7 on UDP; Pehra uses it only towards peers that declared a
    /// larger datagram with [`MAX_PAYLOAD`](super::option::MAX_PAYLOAD).
    pub szx: u8,
}

impl BlockValue {
    /// The largest block number the option can carry.
    pub const MAX_NUM: u32 = (1 << 20) - 1;

    /// The BERT size exponent.
    pub const BERT: u8 = 7;

    /// A block value; `None` if the number or size exponent is out of range.
    pub fn new(num: u32, more: bool, szx: u8) -> Option<Self> {
        (num <= Self::MAX_NUM && szx <= Self::BERT).then_some(BlockValue { num, more, szx })
    }

    /// The size exponent for a block size in bytes (rounded down to a power of two,
    /// clamped to 16..=1024).
    pub fn szx_for_size(size: usize) -> u8 {
        let size = size.clamp(16, 1024);
        (usize::BITS - 1 - size.leading_zeros()) as u8 - 4
    }

    /// The block size in bytes (for BERT, the 1024-byte unit blocks are numbered in).
    pub fn size(self) -> usize {
        1 << (self.szx.min(6) + 4)
    }

    /// The byte offset of this block in the whole body.
    pub fn offset(self) -> usize {
        self.num as usize * self.size()
    }

    /// Decodes an option value (size exponent 7 is BERT). Over-long values are errors.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() > 3 {
            return None;
        }
        let value = decode_uint(bytes)?;
        Self::new(value >> 4, value & 0x8 != 0, (value & 0x7) as u8)
    }

    /// Encodes the option value.
    pub fn encode(self) -> Vec<u8> {
        encode_uint((self.num << 4) | (u32::from(self.more) << 3) | u32::from(self.szx))
    }

    /// The block of `body` this value names, and the value describing it (with the
    /// `more` flag set right). `None` if the block starts past the end of the body.
    pub fn slice(self, body: &[u8]) -> Option<(BlockValue, &[u8])> {
        self.slice_len(body, self.size())
    }

    /// Like [`Self::slice`], `len` bytes from this block's offset (BERT: a multiple of
    /// 1024).
    pub fn slice_len(self, body: &[u8], len: usize) -> Option<(BlockValue, &[u8])> {
        let start = self.offset();
        if start > body.len() || (start == body.len() && start != 0) {
            return None;
        }
        let end = start.saturating_add(len).min(body.len());
        let more = end < body.len();
        Some((BlockValue { more, ..self }, &body[start..end]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_as_rfc7959_examples() {
        // RFC 7959 figure 2: num 0, more, szx 6 = 0x0e; num 1 = 0x1e.
        assert_eq!(BlockValue::new(0, true, 6).unwrap().encode(), [0x0e]);
        assert_eq!(BlockValue::new(1, true, 6).unwrap().encode(), [0x1e]);
        assert_eq!(
            BlockValue::new(0, false, 0).unwrap().encode(),
            Vec::<u8>::new()
        );
        let big = BlockValue::new(BlockValue::MAX_NUM, true, 2).unwrap();
        assert_eq!(BlockValue::decode(&big.encode()), Some(big));
    }

    #[test]
    fn rejects_long_values_and_reads_bert() {
        assert_eq!(BlockValue::decode(&[1, 2, 3, 4]), None);
        assert_eq!(BlockValue::new(0, false, 8), None);
        // BERT: numbered in 1024-byte units.
        let bert = BlockValue::decode(&[0x27]).unwrap();
        assert_eq!((bert.num, bert.szx, bert.offset()), (2, 7, 2048));
        let body = [0u8; 5000];
        let (v, b) = bert.slice_len(&body, 2048).unwrap();
        assert_eq!((v.more, b.len()), (true, 2048));
    }

    #[test]
    fn slices_a_body_into_blocks() {
        let body: Vec<u8> = (0..40u8).collect();
        let first = BlockValue::new(0, false, 0).unwrap(); // 16 bytes
        let (v, b) = first.slice(&body).unwrap();
        assert!(v.more);
        assert_eq!(b, &body[..16]);
        let (v, b) = BlockValue::new(2, false, 0).unwrap().slice(&body).unwrap();
        assert!(!v.more);
        assert_eq!(b, &body[32..]);
        assert_eq!(BlockValue::new(3, false, 0).unwrap().slice(&body), None);
        assert_eq!(BlockValue::szx_for_size(1024), 6);
        assert_eq!(BlockValue::szx_for_size(1000), 5);
        assert_eq!(BlockValue::szx_for_size(1), 0);
    }
}
