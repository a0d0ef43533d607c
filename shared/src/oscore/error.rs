//! What can go wrong while protecting or verifying, and the CoAP error each failure maps
//! to (RFC 8613 §7.4, §8.2, §8.4).

use crate::coap::Packet;
use crate::coap::{option, Code};
use alloc::vec::Vec;
use coap_lite::{CoapOption, MessageClass};

/// An OSCORE failure. Verification failures say *what* failed, never where: a failed tag
/// is [`OscoreError::DecryptFailed`] whatever byte was changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OscoreError {
    /// The message carries no OSCORE option.
    #[error("message is not OSCORE-protected")]
    NotProtected,
    /// The OSCORE option (or the COSE object it compresses) does not decode: reserved
    /// flag bits, lengths past the end, a request without kid or Partial IV, no payload.
    #[error("failed to decode COSE")]
    MalformedOption,
    /// No security context has the request's kid (and kid context).
    #[error("security context not found")]
    UnknownKid,
    /// The context a request binding names is gone (removed from the store).
    #[error("security context of this exchange is gone")]
    MissingContext,
    /// The AEAD tag did not verify: wrong key, or a changed ciphertext, tag, Partial IV,
    /// kid or request binding.
    #[error("decryption failed")]
    DecryptFailed,
    /// The plaintext decrypted but is not a CoAP code, options and payload.
    #[error("decrypted plaintext is malformed")]
    MalformedPlaintext,
    /// The Partial IV was received before (replay window), or the response was already
    /// received (one response per request; notifications must be newer).
    #[error("replay detected")]
    Replayed,
    /// The Partial IV is below the replay window (or below the persisted high-water mark
    /// after a restart): it cannot be told apart from a replay, so it is refused.
    #[error("partial IV too old")]
    TooOld,
    /// The sender sequence number passed 2^40 − 1: this context must not protect again.
    #[error("sender sequence number exhausted")]
    SequenceExhausted,
    /// A response to a non-Observe request carries an inner Observe option (§8.4.2).
    #[error("unexpected Observe in response")]
    UnexpectedObserve,
    /// The request nonce was already used by a response: further responses (notifications)
    /// need their own Partial IV.
    #[error("request nonce already used")]
    NonceReuse,
    /// The message cannot be protected as given (already has an OSCORE option, an empty
    /// code, a Proxy-Uri that does not parse, a request code for a response, ...).
    #[error("message cannot be protected: {0}")]
    InvalidMessage(&'static str),
    /// Security context parameters violate RFC 8613 §3.3 (ID longer than 7 bytes, ...).
    #[error("invalid security context parameters: {0}")]
    InvalidParameters(&'static str),
}

impl OscoreError {
    /// The CoAP code a server answers a request with when verification fails this way
    /// (RFC 8613 §8.2, §7.4): 4.02 Bad Option for an undecodable COSE object, 4.01
    /// Unauthorized for an unknown context or a replay, 4.00 Bad Request for a failed
    /// decryption. Errors of the local side (the first three never reach a peer) are 5.00.
    pub fn code(&self) -> Code {
        match self {
            OscoreError::MalformedOption | OscoreError::NotProtected => Code::BAD_OPTION,
            OscoreError::UnknownKid
            | OscoreError::MissingContext
            | OscoreError::Replayed
            | OscoreError::TooOld => Code::UNAUTHORIZED,
            OscoreError::DecryptFailed
            | OscoreError::MalformedPlaintext
            | OscoreError::UnexpectedObserve => Code::BAD_REQUEST,
            OscoreError::SequenceExhausted
            | OscoreError::NonceReuse
            | OscoreError::InvalidMessage(_)
            | OscoreError::InvalidParameters(_) => Code::INTERNAL_SERVER_ERROR,
        }
    }

    /// The diagnostic payload RFC 8613 suggests for [`Self::code`] ("Failed to decode
    /// COSE", "Security context not found", "Replay detected", "Decryption failed").
    pub fn diagnostic(&self) -> &'static str {
        match self {
            OscoreError::MalformedOption | OscoreError::NotProtected => "Failed to decode COSE",
            OscoreError::UnknownKid | OscoreError::MissingContext => "Security context not found",
            OscoreError::Replayed | OscoreError::TooOld => "Replay detected",
            OscoreError::DecryptFailed
            | OscoreError::MalformedPlaintext
            | OscoreError::UnexpectedObserve => "Decryption failed",
            OscoreError::SequenceExhausted
            | OscoreError::NonceReuse
            | OscoreError::InvalidMessage(_)
            | OscoreError::InvalidParameters(_) => "OSCORE processing failed",
        }
    }

    /// The unprotected error response a server MAY send for a request that failed
    /// verification (§8.2): [`Self::code`], the [`Self::diagnostic`] payload and an Outer
    /// Max-Age of 0 so that no proxy caches it. The engine sets type, message ID and token.
    pub fn error_response(&self) -> Packet {
        let mut packet = Packet::new();
        packet.header.code = MessageClass::from(self.code().0);
        packet.add_option(CoapOption::from(option::MAX_AGE), Vec::new());
        packet.payload = self.diagnostic().as_bytes().to_vec();
        packet
    }
}
