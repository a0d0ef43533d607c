//! The responder's side: a bounded table of half-open sessions, fed with the payloads
//! of `POST /.well-known/edhoc` and the time.
//!
//! The endpoint is reachable by anyone, so every session costs a bounded amount: at
//! most [`Limits::max_sessions`] half-open sessions at once and
//! [`Limits::max_per_peer`] per address, each forgotten after [`Limits::timeout`]. A
//! message_1 beyond a limit is refused before any cryptography (a P-256 key pair and
//! two ECDH each cost about a millisecond). A session ends with its message_3, whatever
//! it holds, so a replayed message_3 finds nothing. message_2 is about 45 bytes for a
//! message_1 of about 40, well inside the threefold limit of RFC 7252 §11.3. The answer
//! to message_3 carries message_4 (9 bytes), for initiators that wait for it.

use super::{
    bstr_item_len, check_message_1, conn_id_item_ok, error_message, guarded, referenced_kid,
    Crypto, EdhocError, Established, KnownPeer, StaticKey, C_R_PREFIX, ERR_UNKNOWN_CREDENTIAL,
    ERR_UNSPECIFIED,
};
use crate::{Duration, Instant};
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use lakers::{
    ConnId, CredentialTransfer, EDHOCMethod, EdhocMessageBuffer, EdhocResponder,
    EdhocResponderWaitM3,
};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// How many half-open sessions a responder keeps, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Half-open sessions at once, from everyone.
    pub max_sessions: usize,
    /// Half-open sessions at once from one address.
    pub max_per_peer: usize,
    /// How long a session waits for its message_3.
    pub timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_sessions: 64,
            max_per_peer: 2,
            timeout: Duration::from_secs(30),
        }
    }
}

/// What to answer a request to the EDHOC resource.
#[derive(Debug)]
pub enum Outcome {
    /// 2.04 Changed with this message_2 (Content-Format application/edhoc+cbor-seq).
    Message2(Vec<u8>),
    /// EDHOC succeeded: install the context, bound to `identity`, then answer 2.04
    /// Changed with message_4.
    Established {
        /// Who the initiator is (its registered credential's identity).
        identity: crate::security::Identity,
        /// The OSCORE parameters, this server's side.
        keys: Established,
        /// message_4, the answer's payload.
        message_4: Vec<u8>,
    },
    /// A limit is reached: 5.03 Service Unavailable, nothing was kept.
    Busy(&'static str),
    /// Refused: answer with `code` (a CoAP response code, 4.00 or 4.01) and the EDHOC
    /// error message `message`; `reason` is for the log.
    Refused {
        /// The CoAP response code, as a byte (class << 5 | detail).
        code: u8,
        /// The EDHOC error message (the response payload).
        message: Vec<u8>,
        /// Why, for the log.
        reason: EdhocError,
    },
}

const BAD_REQUEST: u8 = 4 << 5;
const UNAUTHORIZED: u8 = (4 << 5) | 1;

fn refused(code: u8, reason: EdhocError) -> Outcome {
    let message = match &reason {
        EdhocError::UnknownCredential(_) => error_message(ERR_UNKNOWN_CREDENTIAL, ""),
        other => error_message(ERR_UNSPECIFIED, &alloc::format!("{other}")),
    };
    Outcome::Refused {
        code,
        message,
        reason,
    }
}

struct Session<A> {
    peer: A,
    expires: Instant,
    state: EdhocResponderWaitM3<Crypto>,
    c_i: Vec<u8>,
}

/// A server's EDHOC responder: its static key, the initiators it knows by key ID, and
/// the half-open sessions by connection identifier C_R.
pub struct Responder<A> {
    key: StaticKey,
    peers: BTreeMap<Vec<u8>, KnownPeer>,
    limits: Limits,
    rng: ChaCha20Rng,
    sessions: BTreeMap<Vec<u8>, Session<A>>,
    per_peer: BTreeMap<A, usize>,
}

impl<A> core::fmt::Debug for Responder<A> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Responder")
            .field("key", &self.key)
            .field("peers", &self.peers.len())
            .field("sessions", &self.sessions.len())
            .finish_non_exhaustive()
    }
}

impl<A: Copy + Ord> Responder<A> {
    /// A responder with static key `key`, that accepts the initiators `peers` (by their
    /// credentials' key IDs), keeps sessions within `limits`, and draws its ephemeral
    /// keys and connection identifiers from a generator seeded with `seed` (32 random
    /// bytes from the caller).
    pub fn new(
        key: StaticKey,
        peers: impl IntoIterator<Item = KnownPeer>,
        limits: Limits,
        seed: [u8; 32],
    ) -> Self {
        let peers = peers
            .into_iter()
            .filter_map(|p| Some((p.credential.kid?.as_slice().to_vec(), p)))
            .collect();
        Responder {
            key,
            peers,
            limits,
            rng: ChaCha20Rng::from_seed(seed),
            sessions: BTreeMap::new(),
            per_peer: BTreeMap::new(),
        }
    }

    /// How many half-open sessions are kept.
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// How many initiators it knows.
    pub fn known_peers(&self) -> usize {
        self.peers.len()
    }

    /// Handles the payload of a `POST /.well-known/edhoc` from `peer` at `now`:
    /// `true` and message_1, or C_R and message_3 (RFC 9528 Appendix A.2).
    /// `taken(c_r)` says whether an OSCORE Recipient ID is in use already (a C_R
    /// must not be).
    pub fn handle(
        &mut self,
        now: Instant,
        peer: A,
        payload: &[u8],
        taken: impl Fn(&[u8]) -> bool,
    ) -> Outcome {
        self.expire(now);
        guarded(|| match payload.split_first() {
            Some((0xf5, message_1)) => self.message_1(now, peer, message_1, taken),
            Some(_) => self.message_3(peer, payload),
            None => refused(BAD_REQUEST, EdhocError::Malformed("empty payload")),
        })
        .unwrap_or_else(|| refused(BAD_REQUEST, EdhocError::Malformed("lakers gave up on it")))
    }

    /// Forgets the sessions whose time is up.
    pub fn expire(&mut self, now: Instant) {
        let expired: Vec<Vec<u8>> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.expires <= now)
            .map(|(c_r, _)| c_r.clone())
            .collect();
        for c_r in expired {
            self.remove(&c_r);
        }
    }

    /// The earliest time a session expires, for the caller's timer.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.sessions.values().map(|s| s.expires).min()
    }

    fn remove(&mut self, c_r: &[u8]) -> Option<Session<A>> {
        let session = self.sessions.remove(c_r)?;
        if let Some(count) = self.per_peer.get_mut(&session.peer) {
            *count -= 1;
            if *count == 0 {
                self.per_peer.remove(&session.peer);
            }
        }
        Some(session)
    }

    fn message_1(
        &mut self,
        now: Instant,
        peer: A,
        message_1: &[u8],
        taken: impl Fn(&[u8]) -> bool,
    ) -> Outcome {
        if self.per_peer.get(&peer).copied().unwrap_or(0) >= self.limits.max_per_peer.max(1) {
            return Outcome::Busy("too many EDHOC sessions from this address");
        }
        if self.sessions.len() >= self.limits.max_sessions.max(1) {
            return Outcome::Busy("too many EDHOC sessions in progress");
        }
        let Ok(buffer) = EdhocMessageBuffer::new_from_slice(message_1) else {
            return refused(BAD_REQUEST, EdhocError::Malformed("message_1 too long"));
        };
        // Checked before lakers sees it (it panics on a bad point or a long C_I).
        if let Err(e) = check_message_1(message_1) {
            return refused(BAD_REQUEST, e);
        }
        let crypto = Crypto::new(ChaCha20Rng::from_seed(self.seed()));
        let responder = EdhocResponder::new(
            crypto,
            EDHOCMethod::StatStat,
            *self.key.private(),
            self.key.credential(),
        );
        let (processed, c_i, _ead_1) = match responder.process_message_1(&buffer) {
            Ok(v) => v,
            Err(e) => return refused(BAD_REQUEST, e.into()),
        };
        let c_i = c_i.as_slice().to_vec();
        if c_i.len() > crate::oscore::MAX_ID_LEN {
            return refused(
                BAD_REQUEST,
                EdhocError::Malformed("C_I longer than 7 bytes"),
            );
        }
        let c_r = loop {
            let mut c_r = [C_R_PREFIX, 0, 0, 0, 0];
            self.rng.fill_bytes(&mut c_r[1..]);
            if !self.sessions.contains_key(&c_r[..]) && !taken(&c_r) && c_r[..] != c_i[..] {
                break c_r;
            }
        };
        let conn_id = ConnId::from_slice(&c_r).expect("5 bytes fit a lakers ConnId");
        let (state, message_2) = match processed.prepare_message_2(
            CredentialTransfer::ByReference,
            Some(conn_id),
            &None,
        ) {
            Ok(v) => v,
            Err(e) => return refused(BAD_REQUEST, e.into()),
        };
        self.sessions.insert(
            c_r.to_vec(),
            Session {
                peer,
                expires: now + self.limits.timeout,
                state,
                c_i,
            },
        );
        *self.per_peer.entry(peer).or_default() += 1;
        Outcome::Message2(message_2.as_slice().to_vec())
    }

    fn message_3(&mut self, peer: A, payload: &[u8]) -> Outcome {
        // lakers panics on a byte string C_R longer than it holds.
        if !payload.first().is_some_and(|&b| conn_id_item_ok(b)) {
            return refused(
                BAD_REQUEST,
                EdhocError::Malformed("no C_R before message_3"),
            );
        }
        let mut decoder = lakers::CBORDecoder::new(payload);
        let Ok(c_r) = ConnId::from_decoder(&mut decoder) else {
            return refused(
                BAD_REQUEST,
                EdhocError::Malformed("no C_R before message_3"),
            );
        };
        let message_3 = &payload[decoder.position()..];
        self.verify_message_3(peer, c_r.as_slice(), message_3)
    }

    /// Handles the EDHOC part of an EDHOC + OSCORE request (RFC 9668 §3.3) from `peer`
    /// at `now`: `c_r` is the request's OSCORE kid (the initiator's Sender ID is C_R) and
    /// `message_3` the CBOR byte string its payload starts with. An
    /// [`Outcome::Established`] means: install the context, then verify the OSCORE
    /// request in it (no message_4 is sent: the OSCORE response confirms the keys).
    pub fn handle_combined(
        &mut self,
        now: Instant,
        peer: A,
        c_r: &[u8],
        message_3: &[u8],
    ) -> Outcome {
        self.expire(now);
        guarded(|| self.verify_message_3(peer, c_r, message_3))
            .unwrap_or_else(|| refused(BAD_REQUEST, EdhocError::Malformed("lakers gave up on it")))
    }

    /// message_3 of the session `c_r` from `peer`: the initiator's credential checked
    /// against the known peers, the OSCORE parameters exported.
    fn verify_message_3(&mut self, peer: A, c_r: &[u8], message_3: &[u8]) -> Outcome {
        let c_r = c_r.to_vec();
        match self.sessions.get(&c_r) {
            Some(session) if session.peer == peer => {}
            // Unknown, expired, done, or another address's: nothing is kept for it.
            _ => {
                return refused(
                    BAD_REQUEST,
                    EdhocError::Malformed("no EDHOC session with this C_R"),
                )
            }
        }
        let session = self.remove(&c_r).expect("checked above");
        // lakers' message_3 decoder trusts the CBOR length and the tag's presence.
        let well_formed = bstr_item_len(message_3)
            .is_some_and(|len| len == message_3.len() && len > 2 + lakers::AES_CCM_TAG_LEN);
        let buffer = match EdhocMessageBuffer::new_from_slice(message_3) {
            Ok(buffer) if well_formed => buffer,
            _ => return refused(BAD_REQUEST, EdhocError::Malformed("message_3")),
        };
        let (processing, id_cred_i, _ead_3) = match session.state.parse_message_3(&buffer) {
            Ok(v) => v,
            Err(e) => return refused(BAD_REQUEST, e.into()),
        };
        let Some(kid) = referenced_kid(&id_cred_i) else {
            return refused(
                UNAUTHORIZED,
                EdhocError::UnknownCredential(id_cred_i.as_full_value().to_vec()),
            );
        };
        let Some(known) = self.peers.get(&kid) else {
            return refused(UNAUTHORIZED, EdhocError::UnknownCredential(kid));
        };
        let identity = known.identity.clone();
        let credential = match lakers::credential_check_or_fetch(Some(known.credential), id_cred_i)
        {
            Ok(c) => c,
            Err(_) => return refused(UNAUTHORIZED, EdhocError::UnknownCredential(kid)),
        };
        let (processed, _prk_out) = match processing.verify_message_3(credential) {
            Ok(v) => v,
            Err(e) => return refused(UNAUTHORIZED, e.into()),
        };
        // message_4 (key confirmation; RFC 9528 Appendix A.2 lets the responder send
        // it in the answer to message_3): initiators such as aiocoap's that do not
        // send message_3 with their first OSCORE request wait for it.
        let (mut done, message_4) = match processed.prepare_message_4(&None) {
            Ok(v) => v,
            Err(e) => return refused(BAD_REQUEST, e.into()),
        };
        let keys = Established::export(
            |label, len| done.edhoc_exporter(label, &[], len),
            &session.c_i,
            &c_r,
        );
        Outcome::Established {
            identity,
            keys,
            message_4: message_4.as_slice().to_vec(),
        }
    }

    fn seed(&mut self) -> [u8; 32] {
        let mut seed = [0u8; 32];
        self.rng.fill_bytes(&mut seed);
        seed
    }
}
