//! The initiator's side: message_1 out, message_2 in (checked against the credential
//! of the server it meant to reach), message_3 out, keys.

use super::{
    guarded, parse_error_message, valid_public_key, Crypto, EdhocError, Established, StaticKey,
};
use alloc::vec::Vec;
use lakers::{
    Credential, CredentialTransfer, EDHOCMethod, EDHOCSuite, EdhocInitiator, EdhocInitiatorWaitM2,
    EdhocMessageBuffer,
};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

/// One EDHOC run as initiator, towards a responder whose credential is known.
pub struct Initiator {
    state: EdhocInitiatorWaitM2<Crypto>,
    key: StaticKey,
    responder: Credential,
    c_i: Vec<u8>,
}

impl core::fmt::Debug for Initiator {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Initiator")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Initiator {
    /// Starts a run with static key `key` towards the responder with CCS
    /// `responder` (its ID_CRED_R must name it), drawing ephemeral keys and C_I from a
    /// generator seeded with `seed`: the initiator and the payload of the first
    /// request (`true`, then message_1).
    pub fn start(
        key: StaticKey,
        responder: &[u8],
        seed: [u8; 32],
    ) -> Result<(Initiator, Vec<u8>), EdhocError> {
        let responder = super::parse_credential(responder)?;
        let mut initiator = EdhocInitiator::new(
            Crypto::new(ChaCha20Rng::from_seed(seed)),
            EDHOCMethod::StatStat,
            EDHOCSuite::CipherSuite2,
        );
        initiator.set_identity(*key.private(), key.credential());
        let (state, message_1) = initiator.prepare_message_1(None, &None)?;
        let mut payload = alloc::vec![0xf5];
        payload.extend_from_slice(message_1.as_slice());
        // C_I is the last item of message_1 (no EAD_1 here).
        let (_, _, _, c_i, _) = lakers::parse_message_1(&message_1)?;
        let c_i = c_i.as_slice().to_vec();
        Ok((
            Initiator {
                state,
                key,
                responder,
                c_i,
            },
            payload,
        ))
    }

    /// Takes the response payload to message_1 (message_2, or an EDHOC error message):
    /// the payload of the second request (C_R, then message_3) and the keys, which are
    /// good once the responder answered that request with a success. Its message_4,
    /// if any, is not needed: the first OSCORE response that verifies confirms the keys
    /// (RFC 9528 §5.5.2 allows either).
    pub fn finish(self, message_2: &[u8]) -> Result<(Vec<u8>, Established), EdhocError> {
        let (message_3, keys) = self.finish_combined(message_2)?;
        let mut payload = ConnIdCbor::encode(&keys.sender_id);
        payload.extend_from_slice(&message_3);
        Ok((payload, keys))
    }

    /// [`Initiator::finish`] for RFC 9668's combined request: message_3 alone (its
    /// request is the first OSCORE request in the keys' context, whose kid is C_R:
    /// [`crate::coap::Engine::secure_peer_combined`]) and the keys.
    pub fn finish_combined(self, message_2: &[u8]) -> Result<(Vec<u8>, Established), EdhocError> {
        // A man in the middle chooses G_Y, so it can make plaintext_2 anything lakers
        // might panic on.
        guarded(|| self.finish_inner(message_2))
            .unwrap_or(Err(EdhocError::Malformed("lakers gave up on message_2")))
    }

    fn finish_inner(self, message_2: &[u8]) -> Result<(Vec<u8>, Established), EdhocError> {
        if let Some((code, info)) = parse_error_message(message_2) {
            return Err(EdhocError::Peer { code, info });
        }
        let buffer = EdhocMessageBuffer::new_from_slice(message_2)
            .map_err(|_| EdhocError::Malformed("message_2 too long"))?;
        // Checked before lakers sees it (it panics on a bad point).
        let (g_y, _) = lakers::parse_message_2(&buffer)?;
        if !valid_public_key(&g_y) {
            return Err(EdhocError::Malformed("G_Y is not a P-256 point"));
        }
        let (processing, c_r, id_cred_r, _ead_2) = self.state.parse_message_2(&buffer)?;
        let responder = lakers::credential_check_or_fetch(Some(self.responder), id_cred_r)
            .map_err(|_| EdhocError::Protocol("the responder is not the server expected"))?;
        let processed = processing.verify_message_2(responder)?;
        let (state, message_3, _prk_out) =
            processed.prepare_message_3(CredentialTransfer::ByReference, &None)?;
        let mut done = state.completed_without_message_4()?;
        let c_r = c_r.as_slice().to_vec();
        if c_r.len() > crate::oscore::MAX_ID_LEN || c_r == self.c_i {
            return Err(EdhocError::Malformed("C_R unusable as an OSCORE Sender ID"));
        }
        let keys = Established::export(
            |label, len| done.edhoc_exporter(label, &[], len),
            &c_r,
            &self.c_i,
        );
        Ok((message_3.as_slice().to_vec(), keys))
    }
}

/// C_R as the CBOR item that starts the message_3 request.
struct ConnIdCbor;

impl ConnIdCbor {
    fn encode(c_r: &[u8]) -> Vec<u8> {
        lakers::ConnId::from_slice(c_r)
            .map(|c| c.as_cbor().to_vec())
            .unwrap_or_default()
    }
}
