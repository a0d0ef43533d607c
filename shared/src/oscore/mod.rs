//! OSCORE (RFC 8613): end-to-end protection of CoAP requests and responses, sans-IO.
//!
//! A [`SecurityContext`] is derived from a Master Secret, an optional Master Salt and ID
//! Context, and the two endpoints' IDs (HKDF-SHA256, §3.2). It protects a request
//! ([`SecurityContext::protect_request`]) into an OSCORE message — outer code POST (FETCH
//! with Observe), Class U options outside, the OSCORE option, the AES-CCM-16-64-128
//! ciphertext of code, Class E options and payload as payload — and verifies one
//! ([`SecurityContext::unprotect_request`]), which yields the original request and a
//! [`RequestBinding`]. The binding protects the response(s)
//! ([`SecurityContext::protect_response`], with the request's nonce or a fresh Partial IV
//! as notifications need) and, on the client, verifies them
//! ([`SecurityContext::unprotect_response`], with the Notification Number ordering of
//! §7.4.1). A server with many clients keeps its contexts in a [`ContextStore`], which
//! finds the one a request's kid and kid context name.
//!
//! Requests are replay-protected by a 64-entry sliding [`ReplayWindow`] (§7.4) that only
//! moves after the tag verified. Failures are [`OscoreError`]s; a server answers a failed
//! request with [`OscoreError::error_response`] (4.02, 4.01 or 4.00 as §8.2 says).
//!
//! # Restarts (Appendix B.1)
//!
//! Nothing here writes to flash. A context made with [`Persistence`] hands back, with a
//! protected or verified message, a [`Persist`] value when one is due: the caller stores
//! it for that context *before* sending the message (sender sequence number, B.1.1, every
//! K numbers) or *before acting on* the request (replay high-water mark). After a restart
//! [`SecurityContext::restore`] takes the last stored values: the sender sequence number
//! resumes at stored + K (+ F), past anything used, and the replay window refuses every
//! Partial IV up to stored + interval, which covers anything accepted. That is the simple
//! variant of B.1.2; the Echo round trip is not implemented (see [`ReplayWindow`]).
//!
//! # Scope and choices
//!
//! Only the mandatory algorithms: AES-CCM-16-64-128 (COSE 10) and HKDF-SHA256. No Class I
//! options (none are defined), no group OSCORE, no Appendix B.2 context re-derivation.
//! Block-wise: the original message's Block options are Inner (end-to-end fragmentation);
//! outer Block options of a received message are discarded as §8.2 step 1 says, after the
//! block-wise layer reassembled the OSCORE message.
//!
//! The cryptography is RustCrypto's (`aes`, `ccm`, `hkdf`, `sha2`; no_std). The protocol
//! layer — option classes, OSCORE option, AAD, nonces, replay, persistence — is written
//! here rather than taken from the `oscore` crate (0.1.x): that crate is young and has a
//! single author, and this one works directly on the `coap_lite::Packet`s the engine
//! already uses. The RFC 8613 Appendix C vectors pin it down (see the tests).

mod context;
mod cose;
mod error;
mod option;
mod protect;
mod replay;
mod sequence;
mod store;

#[cfg(test)]
mod tests;

pub use context::{ContextParams, SecurityContext};
pub use cose::{ALG_AES_CCM_16_64_128, KEY_LEN, MAX_ID_LEN, NONCE_LEN, TAG_LEN};
pub use error::OscoreError;
pub use option::{decode_partial_iv, encode_partial_iv, OscoreOption, MAX_SEQUENCE_NUMBER, OSCORE};
pub use protect::{
    is_protected, oscore_option, ProtectedRequest, ProtectedResponse, RequestBinding,
    ResponseNonce, VerifiedRequest, VerifiedResponse,
};
pub use replay::{ReplayWindow, WINDOW_SIZE};
pub use sequence::{Persist, PersistedState, Persistence, SenderSequence};
pub use store::ContextStore;
