//! OSCORE (RFC 8613) inside the engine: between parsing a datagram and the rest of the
//! exchange logic, so that duplicate detection works on the protected messages (a
//! retransmission gets the same protected answer) and everything after it — block-wise
//! transfers, observations, the application — sees the inner messages.
//!
//! **Server side** ([`ServerSecurity`]): a request with an OSCORE option is verified in
//! the context its kid (and kid context) names, derived on first use from the pairwise
//! secret in the server's [`KeyTable`]; the application gets the inner request and the
//! sender's [`Identity`]; every answer to it (piggybacked, separate, each Block2 block,
//! each notification) is protected in the same context. Contexts are kept in a bounded
//! set (least recently used first out) and derived again when needed.
//!
//! Two things make restarts safe without writing anything per context:
//! - **Replays** (Appendix B.1.2 with Echo, RFC 9175): a context derived since this start
//!   does not know which Partial IVs it accepted before. Its first request is answered
//!   4.01 with an Echo option (protected, with a fresh Partial IV) and not acted on; the
//!   client repeats it with that Echo value, which proves the repeat was made after this
//!   start, and the replay window starts at its Partial IV.
//! - **Nonces of the server's own Partial IVs** (notifications, the Echo answers): every
//!   context's sender sequence starts at one server-wide floor, above every number any
//!   context used before this start. The engine keeps a ceiling above every number used
//!   and asks the driver to store it ([`super::Engine::poll_persist`]) before it sends a
//!   message numbered at or past the last stored one; the stored ceiling is the next
//!   start's floor.
//!
//! **Client side**: [`super::Engine::secure_peer`] gives a peer a context; every request
//! to it is protected and its responses must verify in the same exchange. A client
//! derives its contexts with a random ID Context of its own at each start (see
//! [`client_id_context`]), so it never needs to store a sequence number: a restarted
//! client speaks in new contexts.

#[cfg(any(feature = "server", test))]
use crate::coap::option;
#[cfg(any(feature = "server", test))]
use crate::coap::Packet;
#[cfg(any(feature = "oscore", test))]
use crate::oscore::SecurityContext;
#[cfg(any(feature = "server", test))]
use crate::oscore::{
    self, ContextParams, OscoreError, ReplayWindow, RequestBinding, ResponseNonce,
};
#[cfg(any(feature = "server", test))]
use crate::security::{Identity, KeyTable};
#[cfg(any(feature = "server", test))]
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
#[cfg(any(feature = "server", test))]
use coap_lite::{CoapOption, MessageClass, ResponseType};

/// The Echo option (RFC 9175).
pub const ECHO: u16 = 252;

#[cfg(any(feature = "server", test))]
/// A context's key: the peer's Sender ID (the kid of its requests) and the ID Context.
pub(super) type ContextKey = (Vec<u8>, Option<Vec<u8>>);

#[cfg(any(feature = "server", test))]
/// How a server verifies requests and protects its answers.
#[derive(Debug, Clone)]
pub struct ServerSecurity {
    /// This server's key ID: its Sender ID in every context.
    pub kid: Vec<u8>,
    /// Who may talk to it, with the pairwise secrets.
    pub keys: KeyTable,
    /// Every sender sequence number any context used before this start is below this:
    /// the last value stored from [`super::Engine::poll_persist`] (0 the first time).
    pub sequence_floor: u64,
    /// How far past the numbers in use a stored ceiling reaches (numbers skipped at a
    /// restart against stores made).
    pub persist_interval: u64,
    /// Most contexts kept at once; the least recently used is dropped beyond it (and
    /// derived again, with an Echo round trip, if its peer comes back; one made by
    /// EDHOC cannot be, and its peer runs EDHOC again).
    pub max_contexts: usize,
    /// EDHOC (RFC 9528) for peers with only a long-term key: the engine answers
    /// `POST /.well-known/edhoc` itself and installs the context it yields, bound to
    /// the identity of the initiator's registered credential. `None`: 4.04 there.
    #[cfg(feature = "edhoc")]
    pub edhoc: Option<crate::edhoc::ResponderConfig>,
}

#[cfg(any(feature = "server", test))]
impl ServerSecurity {
    /// Defaults for a server with key ID `kid` and peers `keys`, starting above
    /// `sequence_floor`.
    pub fn new(kid: Vec<u8>, keys: KeyTable, sequence_floor: u64) -> Self {
        ServerSecurity {
            kid,
            keys,
            sequence_floor,
            persist_interval: 4096,
            max_contexts: 4096,
            #[cfg(feature = "edhoc")]
            edhoc: None,
        }
    }
}

#[cfg(any(feature = "server", test))]
/// One context of a server.
struct ServerContext {
    ctx: SecurityContext,
    identity: Identity,
    /// Its replay window is sound: a request with this start's Echo value was accepted.
    fresh: bool,
    /// Recency rank, for dropping the least recently used.
    rank: u64,
}

#[cfg(any(feature = "server", test))]
/// What a server's engine keeps for OSCORE.
pub(super) struct ServerState {
    config: ServerSecurity,
    contexts: BTreeMap<ContextKey, ServerContext>,
    by_rank: BTreeMap<u64, ContextKey>,
    next_rank: u64,
    /// This start's Echo value.
    echo: [u8; 8],
    /// No context uses a sender sequence number at or past this.
    ceiling: u64,
    /// Above every sender sequence number any context of this start has used: where a
    /// context derived now (new, or again after it was dropped for room) starts, so no
    /// Partial IV repeats under one key.
    high: u64,
    /// A new ceiling the driver must store before sending anything else.
    persist: Option<u64>,
    /// Keys the Echo values that validate a plain peer's address (RFC 9175 §2.4).
    address_key: [u8; 32],
}

#[cfg(any(feature = "server", test))]
/// How the server protects the answers to one verified request.
#[derive(Debug, Clone)]
pub(super) struct Protection {
    pub(super) key: ContextKey,
    pub(super) binding: RequestBinding,
}

#[cfg(any(feature = "server", test))]
/// A request that verified.
pub(super) struct Verified {
    /// The inner request (the outer header: type, message ID, token).
    pub(super) packet: Packet,
    pub(super) protection: Protection,
    pub(super) identity: Identity,
}

#[cfg(any(feature = "server", test))]
/// Why a protected request does not reach the application, and what to answer.
pub(super) enum Refusal {
    /// Verification failed: this unprotected error answer (RFC 8613 §8.2).
    Plain(Packet),
    /// It verified, but its context's replay window is not sound yet: answer with this
    /// (a protected 4.01 with Echo) and drop the request.
    Echo(Packet),
}

#[cfg(any(feature = "server", test))]
impl ServerState {
    pub(super) fn new(config: ServerSecurity, echo: [u8; 8], address_key: [u8; 32]) -> Self {
        let ceiling = config.sequence_floor;
        ServerState {
            config,
            contexts: BTreeMap::new(),
            by_rank: BTreeMap::new(),
            next_rank: 0,
            echo,
            ceiling,
            high: ceiling,
            persist: None,
            address_key,
        }
    }

    /// The Echo value that proves a plain client can receive at `peer` (RFC 9175
    /// §2.4, against amplification, RFC 7252 §11.3): HMAC-SHA256 of the address under
    /// a key of this start, 8 bytes. A value for one address is worthless from another.
    pub(super) fn address_echo(&self, peer: &impl core::hash::Hash) -> [u8; 8] {
        use hmac::Mac;
        struct Bytes(Vec<u8>);
        impl core::hash::Hasher for Bytes {
            fn finish(&self) -> u64 {
                0
            }
            fn write(&mut self, bytes: &[u8]) {
                self.0.extend_from_slice(bytes);
            }
        }
        let mut bytes = Bytes(Vec::new());
        peer.hash(&mut bytes);
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.address_key)
            .expect("HMAC takes any key length");
        mac.update(&bytes.0);
        let tag = mac.finalize().into_bytes();
        let mut echo = [0u8; 8];
        echo.copy_from_slice(&tag[..8]);
        echo
    }

    /// Takes the ceiling to store, if one is due.
    pub(super) fn take_persist(&mut self) -> Option<u64> {
        self.persist.take()
    }

    /// Installs a new key table; drops the kept contexts it no longer vouches for (the
    /// identity is gone, or its secret or identity changed).
    pub(super) fn replace_keys(&mut self, keys: KeyTable) {
        let stale: Vec<ContextKey> = self
            .contexts
            .iter()
            // Contexts of pre-provisioned peers only (EDHOC's are judged by
            // `replace_edhoc_peers`).
            .filter(|(key, _)| self.config.keys.get(&key.0).is_some() || keys.get(&key.0).is_some())
            .filter(|(key, kept)| {
                keys.get(&key.0).is_none_or(|peer| {
                    peer.identity != kept.identity
                        || self
                            .config
                            .keys
                            .get(&key.0)
                            .is_none_or(|old| old.secret != peer.secret)
                })
            })
            .map(|(key, _)| key.clone())
            .collect();
        for key in stale {
            if let Some(dropped) = self.contexts.remove(&key) {
                self.by_rank.remove(&dropped.rank);
            }
        }
        self.config.keys = keys;
    }

    /// Installs a new EDHOC configuration (or none) and drops the contexts EDHOC made
    /// with identities it no longer lists (revoked, or moved to another key).
    #[cfg(feature = "edhoc")]
    pub(super) fn replace_edhoc_peers(&mut self, edhoc: Option<crate::edhoc::ResponderConfig>) {
        let listed = |identity: &Identity| {
            edhoc
                .as_ref()
                .is_some_and(|c| c.peers.iter().any(|p| &p.identity == identity))
        };
        let stale: Vec<ContextKey> = self
            .contexts
            .iter()
            .filter(|(key, kept)| self.config.keys.get(&key.0).is_none() && !listed(&kept.identity))
            .map(|(key, _)| key.clone())
            .collect();
        for key in stale {
            if let Some(dropped) = self.contexts.remove(&key) {
                self.by_rank.remove(&dropped.rank);
            }
        }
        self.config.edhoc = edhoc;
    }

    /// How many contexts are kept (at most `max_contexts`).
    pub(super) fn context_count(&self) -> usize {
        self.contexts.len()
    }

    /// Verifies a request that carries an OSCORE option.
    pub(super) fn unprotect(&mut self, outer: &Packet) -> Result<Verified, Refusal> {
        let refuse = |e: OscoreError| Refusal::Plain(e.error_response());
        let option = oscore::oscore_option(outer).map_err(refuse)?;
        let kid = option
            .kid
            .clone()
            .ok_or(refuse(OscoreError::MissingContext))?;
        let key: ContextKey = (kid, option.kid_context.clone());
        let echo = self.echo;
        let context = self.context(&key).map_err(refuse)?;
        let verified = context.ctx.unprotect_request(outer).map_err(refuse)?;
        let identity = context.identity.clone();
        let mut protection = Protection {
            key,
            binding: verified.binding,
        };
        let mut inner = verified.packet;
        if !context.fresh {
            let echoed = inner
                .get_option(CoapOption::Unknown(ECHO))
                .and_then(|v| v.first())
                .is_some_and(|v| v.as_slice() == echo);
            if !echoed {
                // Not acted on; its Partial IV may come again in the repeat's place.
                context.ctx.set_replay_window(ReplayWindow::new(None));
                let answer = self.echo_answer(inner.header.message_id, &mut protection);
                return Err(Refusal::Echo(answer));
            }
            let piv = oscore::decode_partial_iv(protection.binding.request_piv());
            context.ctx.set_replay_window(ReplayWindow::fresh_from(piv));
            context.fresh = true;
        }
        inner.clear_option(CoapOption::Unknown(ECHO));
        Ok(Verified {
            packet: inner,
            protection,
            identity,
        })
    }

    /// The protected 4.01 with this start's Echo value.
    fn echo_answer(&mut self, mid: u16, protection: &mut Protection) -> Packet {
        let mut answer = Packet::new();
        answer.header.message_id = mid;
        answer.header.code = MessageClass::Response(ResponseType::Unauthorized);
        answer.add_option(CoapOption::Unknown(ECHO), self.echo.to_vec());
        answer.add_option(CoapOption::MaxAge, option::encode_uint(0));
        self.protect(protection, answer, true)
            .unwrap_or_else(|e| e.error_response())
    }

    /// Protects an answer to a verified request. `fresh`: with a Partial IV of our own
    /// (required once the request's nonce was used, and for answers to a request that
    /// may be a replay).
    pub(super) fn protect(
        &mut self,
        protection: &mut Protection,
        inner: Packet,
        fresh: bool,
    ) -> Result<Packet, OscoreError> {
        let ceiling = self.ceiling;
        let interval = self.config.persist_interval.max(1);
        let context = self.context(&protection.key)?;
        let nonce = if fresh || protection.binding.request_nonce_used() {
            ResponseNonce::Fresh
        } else {
            ResponseNonce::FromRequest
        };
        let protected = context
            .ctx
            .protect_response(&mut protection.binding, &inner, nonce)?;
        let next = context.ctx.next_sequence_number();
        self.high = self.high.max(next);
        if next >= ceiling {
            // Stored before this message goes out (the driver stores first).
            self.ceiling = next.saturating_add(interval);
            self.persist = Some(self.ceiling);
        }
        Ok(protected.packet)
    }

    /// The context `key` names, derived (and kept) if it is not kept now; made the most
    /// recently used.
    fn context(&mut self, key: &ContextKey) -> Result<&mut ServerContext, OscoreError> {
        if !self.contexts.contains_key(key) {
            let peer = self
                .config
                .keys
                .get(&key.0)
                .ok_or(OscoreError::UnknownKid)?;
            let params = ContextParams {
                master_secret: &peer.secret,
                master_salt: &[],
                id_context: key.1.as_deref(),
                sender_id: &self.config.kid,
                recipient_id: &key.0,
            };
            let mut ctx = SecurityContext::new(&params, None)?;
            ctx.set_sender_sequence(self.high);
            let identity = peer.identity.clone();
            self.insert(key.clone(), ctx, identity, false);
        }
        let rank = self.next_rank;
        self.next_rank += 1;
        let context = self.contexts.get_mut(key).expect("inserted above");
        self.by_rank.remove(&context.rank);
        context.rank = rank;
        self.by_rank.insert(rank, key.clone());
        Ok(context)
    }

    /// Keeps a context, dropping the least recently used beyond `max_contexts` (it is
    /// made the most recently used by the caller, [`Self::context`]).
    fn insert(&mut self, key: ContextKey, ctx: SecurityContext, identity: Identity, fresh: bool) {
        if let Some(old) = self.contexts.remove(&key) {
            self.by_rank.remove(&old.rank);
        }
        while self.contexts.len() >= self.config.max_contexts.max(1) {
            let Some((_, oldest)) = self.by_rank.pop_first() else {
                break;
            };
            self.contexts.remove(&oldest);
        }
        let rank = self.next_rank;
        self.next_rank += 1;
        self.by_rank.insert(rank, key.clone());
        self.contexts.insert(
            key,
            ServerContext {
                ctx,
                identity,
                fresh,
                rank,
            },
        );
    }

    /// Whether a context with Recipient ID `kid` is kept, or could be derived (a
    /// pre-provisioned peer's): an EDHOC connection identifier must be neither.
    #[cfg(feature = "edhoc")]
    pub(super) fn kid_taken(&self, kid: &[u8]) -> bool {
        self.config.keys.get(kid).is_some()
            || self
                .contexts
                .range((kid.to_vec(), None)..)
                .next()
                .is_some_and(|((k, _), _)| k.as_slice() == kid)
    }

    /// Installs the context EDHOC established with `identity` (RFC 9528 Appendix
    /// A.1): keyed by its Recipient ID (C_R) with no ID Context, and fresh: its keys
    /// are new, so no request in it can be a replay from before (no Echo round trip).
    #[cfg(feature = "edhoc")]
    pub(super) fn install_edhoc(
        &mut self,
        identity: Identity,
        keys: &crate::edhoc::Established,
    ) -> Result<(), OscoreError> {
        let ctx = SecurityContext::new(&keys.context_params(), None)?;
        let key: ContextKey = (keys.recipient_id.clone(), None);
        self.insert(key, ctx, identity, true);
        Ok(())
    }
}

/// A client's context towards one server.
#[cfg(any(feature = "oscore", test))]
pub(super) struct ClientContext {
    pub(super) ctx: SecurityContext,
    /// EDHOC's message_3, to go with the next request in this context (RFC 9668's
    /// combined EDHOC + OSCORE request) until an answer verifies in it.
    pub(super) edhoc_message_3: Option<Vec<u8>>,
}

/// A random ID Context for a client's contexts, drawn at each start from `random`
/// (8 bytes): contexts that exist for this run only, so a client never stores a
/// sequence number and never reuses a nonce after a restart. The server derives the
/// same context from the kid context every request carries.
pub fn client_id_context(random: u64) -> Vec<u8> {
    random.to_be_bytes().to_vec()
}
