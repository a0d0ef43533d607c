//! The OSCORE option (RFC 8613 §2, §6.1), the Partial IV encoding (§5), and which CoAP
//! options travel inside the ciphertext and which stay outside (§4.1, Figure 5).

use super::error::OscoreError;
use crate::coap::option as num;
use alloc::vec::Vec;

/// The OSCORE option number.
pub const OSCORE: u16 = 9;

/// The largest sender sequence number, 2^40 − 1 (§7.2.1): it fits a 5-byte Partial IV.
pub const MAX_SEQUENCE_NUMBER: u64 = (1 << 40) - 1;

/// Flag bit: a kid context is present.
const FLAG_KID_CONTEXT: u8 = 0x10;
/// Flag bit: a kid is present.
const FLAG_KID: u8 = 0x08;
/// The Partial IV length bits.
const PIV_LEN_MASK: u8 = 0x07;
/// Reserved flag bits: set ones make the option malformed.
const FLAG_RESERVED: u8 = 0xE0;

/// The decoded value of an OSCORE option: the compressed COSE object's header fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OscoreOption {
    /// The Partial IV, as on the wire (1 to 5 bytes, no leading zero bytes).
    pub partial_iv: Option<Vec<u8>>,
    /// The kid (the sender's Sender ID); may be present and empty.
    pub kid: Option<Vec<u8>>,
    /// The kid context (the ID Context).
    pub kid_context: Option<Vec<u8>>,
}

impl OscoreOption {
    /// Encodes the option value (§6.1); all flags zero is the empty value (§2).
    pub fn encode(&self) -> Vec<u8> {
        let piv = self.partial_iv.as_deref().unwrap_or(&[]);
        let mut flags = piv.len() as u8 & PIV_LEN_MASK;
        if self.kid.is_some() {
            flags |= FLAG_KID;
        }
        if self.kid_context.is_some() {
            flags |= FLAG_KID_CONTEXT;
        }
        if flags == 0 {
            return Vec::new();
        }
        let mut value = Vec::with_capacity(
            2 + piv.len()
                + self.kid_context.as_ref().map_or(0, Vec::len)
                + self.kid.as_ref().map_or(0, Vec::len),
        );
        value.push(flags);
        value.extend_from_slice(piv);
        if let Some(ctx) = &self.kid_context {
            value.push(ctx.len() as u8);
            value.extend_from_slice(ctx);
        }
        if let Some(kid) = &self.kid {
            value.extend_from_slice(kid);
        }
        value
    }

    /// Decodes an option value. Reserved bits, the reserved Partial IV lengths 6 and 7,
    /// a non-minimal Partial IV, fields running past the end and a non-empty value whose
    /// flags are all zero are [`OscoreError::MalformedOption`].
    pub fn decode(value: &[u8]) -> Result<Self, OscoreError> {
        let Some((&flags, mut rest)) = value.split_first() else {
            return Ok(OscoreOption::default());
        };
        if flags & FLAG_RESERVED != 0 || flags == 0 {
            return Err(OscoreError::MalformedOption);
        }
        let piv_len = usize::from(flags & PIV_LEN_MASK);
        if piv_len > 5 {
            return Err(OscoreError::MalformedOption);
        }
        let partial_iv = if piv_len > 0 {
            let (piv, tail) = split(rest, piv_len)?;
            if piv.len() > 1 && piv[0] == 0 {
                return Err(OscoreError::MalformedOption);
            }
            rest = tail;
            Some(piv.to_vec())
        } else {
            None
        };
        let kid_context = if flags & FLAG_KID_CONTEXT != 0 {
            let (len, tail) = split(rest, 1)?;
            let (ctx, tail) = split(tail, usize::from(len[0]))?;
            rest = tail;
            Some(ctx.to_vec())
        } else {
            None
        };
        let kid = if flags & FLAG_KID != 0 {
            Some(rest.to_vec())
        } else if !rest.is_empty() {
            return Err(OscoreError::MalformedOption);
        } else {
            None
        };
        Ok(OscoreOption {
            partial_iv,
            kid,
            kid_context,
        })
    }
}

/// Splits `n` bytes off the front, or fails as a malformed option.
fn split(bytes: &[u8], n: usize) -> Result<(&[u8], &[u8]), OscoreError> {
    if bytes.len() < n {
        return Err(OscoreError::MalformedOption);
    }
    Ok(bytes.split_at(n))
}

/// A sequence number as a Partial IV: big-endian without leading zero bytes, and 0 as
/// `[0]` (§5).
pub fn encode_partial_iv(sequence: u64) -> Vec<u8> {
    debug_assert!(sequence <= MAX_SEQUENCE_NUMBER);
    let bytes = sequence.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count().min(7);
    bytes[skip..].to_vec()
}

/// A Partial IV's value (the option decoder has checked it is 1 to 5 bytes).
pub fn decode_partial_iv(piv: &[u8]) -> u64 {
    piv.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
}

/// How an option of the original message is carried in the OSCORE message (§4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// Class E: inside the ciphertext only.
    Inner,
    /// Class U: in the outer message only (proxies need it).
    Outer,
    /// Inner, and a copy outer (Observe, §4.1.3.5).
    Both,
}

/// The class of an option of the original message, for a sender. Unknown options are
/// Inner (§4.1). No-Response is Inner; the client copies value 26 outside too, which is
/// the only outer value §4.1.3.6 allows. Max-Age and the Block options of the original
/// message are Inner (its own end-to-end fragmentation, §4.1.3.4.1); outer Block options
/// are a proxy's (or the engine's, after protection) business.
pub(crate) fn class_of(number: u16, value: &[u8], is_request: bool) -> Class {
    match number {
        num::URI_HOST | num::URI_PORT | num::PROXY_SCHEME | num::PROXY_URI => Class::Outer,
        num::OBSERVE => Class::Both,
        num::NO_RESPONSE if is_request && value == [26] => Class::Both,
        _ => Class::Inner,
    }
}

/// Whether a receiver keeps an outer option of an OSCORE message (Class U without an E
/// mark in Figure 5). Everything else outside is discarded (§8.2 and §8.4 step 1): the
/// code, outer Observe, outer Block / Size options already handled block-wise, outer
/// Max-Age and No-Response, and the OSCORE option itself.
pub(crate) fn keep_outer(number: u16) -> bool {
    matches!(
        number,
        num::URI_HOST | num::URI_PORT | num::PROXY_SCHEME | num::PROXY_URI
    )
}
