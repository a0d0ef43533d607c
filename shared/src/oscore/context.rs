//! The security context (RFC 8613 §3): the parameters both endpoints share, the keys and
//! Common IV derived from them, and the mutable sender sequence number and replay window.

use super::cose::{self, Key, Nonce, KEY_LEN, MAX_ID_LEN, NONCE_LEN};
use super::error::OscoreError;
use super::option::{encode_partial_iv, MAX_SEQUENCE_NUMBER};
use super::replay::ReplayWindow;
use super::sequence::{PersistedState, Persistence, SenderSequence};
use alloc::vec::Vec;
use core::fmt;

/// What a security context is derived from (§3.1, §3.2): shared out of band or by a key
/// establishment protocol.
#[derive(Clone, Copy)]
pub struct ContextParams<'a> {
    /// The Master Secret (16 bytes or more recommended).
    pub master_secret: &'a [u8],
    /// The Master Salt; empty when none (the RFC's default).
    pub master_salt: &'a [u8],
    /// The ID Context, if any (sent as 'kid context' by a client that wants the server
    /// to find the context by it).
    pub id_context: Option<&'a [u8]>,
    /// This endpoint's Sender ID (the peer's Recipient ID), at most 7 bytes.
    pub sender_id: &'a [u8],
    /// The peer's Sender ID (this endpoint's Recipient ID), at most 7 bytes.
    pub recipient_id: &'a [u8],
}

impl fmt::Debug for ContextParams<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContextParams")
            .field("id_context", &self.id_context)
            .field("sender_id", &self.sender_id)
            .field("recipient_id", &self.recipient_id)
            .finish_non_exhaustive()
    }
}

/// One OSCORE security context: the Common Context, this endpoint's Sender Context and
/// its Recipient Context for one peer. Protecting and verifying messages is in
/// [`SecurityContext::protect_request`] and its siblings.
///
/// The keys never show in `Debug` output.
#[derive(Clone)]
pub struct SecurityContext {
    pub(crate) sender_id: Vec<u8>,
    pub(crate) recipient_id: Vec<u8>,
    pub(crate) id_context: Option<Vec<u8>>,
    pub(crate) sender_key: Key,
    pub(crate) recipient_key: Key,
    pub(crate) common_iv: Nonce,
    pub(crate) sequence: SenderSequence,
    pub(crate) replay: ReplayWindow,
}

impl fmt::Debug for SecurityContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecurityContext")
            .field("sender_id", &self.sender_id)
            .field("recipient_id", &self.recipient_id)
            .field("id_context", &self.id_context)
            .field("next_sequence", &self.sequence.peek())
            .field("replay", &self.replay)
            .finish_non_exhaustive()
    }
}

impl SecurityContext {
    /// Derives a fresh context (sender sequence number 0, empty replay window, §3.2.2).
    /// With `persistence`, protecting and verifying report the values to store
    /// ([`super::Persist`]); without it nothing is reported, and a context lost at a
    /// restart must not be derived again from the same parameters (§7.5).
    pub fn new(
        params: &ContextParams<'_>,
        persistence: Option<Persistence>,
    ) -> Result<Self, OscoreError> {
        let mut ctx = Self::derive(params)?;
        ctx.sequence = SenderSequence::new(persistence.as_ref());
        ctx.replay = ReplayWindow::new(persistence.as_ref());
        Ok(ctx)
    }

    /// Derives the context again after a restart, from the same parameters and the
    /// values last stored for its [`super::Persist`] requests (Appendix B.1): the sender
    /// sequence number continues past anything it may have used, and the replay window
    /// refuses anything it may have accepted. `persistence` must be the one the context
    /// ran with.
    pub fn restore(
        params: &ContextParams<'_>,
        stored: &PersistedState,
        persistence: Persistence,
    ) -> Result<Self, OscoreError> {
        let mut ctx = Self::derive(params)?;
        ctx.sequence = SenderSequence::restore(stored.sender_sequence, &persistence);
        ctx.replay = ReplayWindow::restore(stored.replay_high_water, &persistence);
        Ok(ctx)
    }

    /// The keys and Common IV of §3.2.1.
    fn derive(p: &ContextParams<'_>) -> Result<Self, OscoreError> {
        if p.sender_id.len() > MAX_ID_LEN || p.recipient_id.len() > MAX_ID_LEN {
            return Err(OscoreError::InvalidParameters(
                "sender and recipient IDs are at most 7 bytes",
            ));
        }
        if p.sender_id == p.recipient_id {
            return Err(OscoreError::InvalidParameters(
                "sender and recipient IDs must differ",
            ));
        }
        if p.id_context.is_some_and(|c| c.len() > usize::from(u8::MAX)) {
            return Err(OscoreError::InvalidParameters(
                "an ID context sent as kid context is at most 255 bytes",
            ));
        }
        let derive = |id: &[u8], kind: &str, out: &mut [u8]| {
            let info = cose::kdf_info(id, p.id_context, kind, out.len());
            cose::hkdf(p.master_salt, p.master_secret, &info, out);
        };
        let mut sender_key = [0u8; KEY_LEN];
        let mut recipient_key = [0u8; KEY_LEN];
        let mut common_iv = [0u8; NONCE_LEN];
        derive(p.sender_id, "Key", &mut sender_key);
        derive(p.recipient_id, "Key", &mut recipient_key);
        derive(&[], "IV", &mut common_iv);
        Ok(SecurityContext {
            sender_id: p.sender_id.to_vec(),
            recipient_id: p.recipient_id.to_vec(),
            id_context: p.id_context.map(<[u8]>::to_vec),
            sender_key,
            recipient_key,
            common_iv,
            sequence: SenderSequence::new(None),
            replay: ReplayWindow::new(None),
        })
    }

    /// This endpoint's Sender ID.
    pub fn sender_id(&self) -> &[u8] {
        &self.sender_id
    }
    /// The peer's Sender ID (the kid its requests carry).
    pub fn recipient_id(&self) -> &[u8] {
        &self.recipient_id
    }
    /// The ID Context, if any.
    pub fn id_context(&self) -> Option<&[u8]> {
        self.id_context.as_deref()
    }
    /// The Sender Key (for test vectors and diagnostics; treat as secret).
    pub fn sender_key(&self) -> &[u8; KEY_LEN] {
        &self.sender_key
    }
    /// The Recipient Key (treat as secret).
    pub fn recipient_key(&self) -> &[u8; KEY_LEN] {
        &self.recipient_key
    }
    /// The Common IV.
    pub fn common_iv(&self) -> &[u8; NONCE_LEN] {
        &self.common_iv
    }
    /// The sender sequence number the next protected message will use.
    pub fn next_sequence_number(&self) -> u64 {
        self.sequence.peek()
    }
    /// Makes the next sender sequence number `next` and stops reporting it for storing
    /// (see [`SenderSequence::starting_at`]).
    pub fn set_sender_sequence(&mut self, next: u64) {
        self.sequence = SenderSequence::starting_at(next);
    }

    /// Replaces the replay window (see [`ReplayWindow::fresh_from`]).
    pub fn set_replay_window(&mut self, window: ReplayWindow) {
        self.replay = window;
    }

    /// The replay window of requests from the peer.
    pub fn replay_window(&self) -> &ReplayWindow {
        &self.replay
    }

    /// The AEAD nonce this endpoint uses with sender sequence number `sequence` (§5.2).
    ///
    /// # Panics
    /// If `sequence` is above [`super::MAX_SEQUENCE_NUMBER`].
    pub fn sender_nonce(&self, sequence: u64) -> [u8; NONCE_LEN] {
        assert!(
            sequence <= MAX_SEQUENCE_NUMBER,
            "sequence number above 2^40 - 1"
        );
        cose::nonce(
            &self.common_iv,
            &self.sender_id,
            &encode_partial_iv(sequence),
        )
    }
    /// The AEAD nonce of the peer's sender sequence number `sequence` (§5.2).
    ///
    /// # Panics
    /// If `sequence` is above [`super::MAX_SEQUENCE_NUMBER`].
    pub fn recipient_nonce(&self, sequence: u64) -> [u8; NONCE_LEN] {
        assert!(
            sequence <= MAX_SEQUENCE_NUMBER,
            "sequence number above 2^40 - 1"
        );
        cose::nonce(
            &self.common_iv,
            &self.recipient_id,
            &encode_partial_iv(sequence),
        )
    }
}
