//! OSCORE on a device (RFC 8613, `docs/security.md`): which context protects the
//! requests to each gateway, and how its sender sequence numbers survive a reset.
//!
//! A device holds its identity (key ID and 32-byte identity key, from `pehra keys`,
//! compiled in). Towards broker N it uses the pairwise secret
//! `pairwise_secret(identity key, broker_kid(N))` as Master Secret, with an 8-byte ID
//! Context of its own ([`pehra_shared::coap::client_id_context`]). It learns which
//! broker serves at an address from its configuration (`N@ip:port`) and from check-in
//! replies (the Pehredar's name `broker-N` and address).
//!
//! **ID Context and sequence numbers.** At a cold start the ID Context is drawn at
//! random: the contexts are new, nothing needs storing, and the broker's first answer
//! in each is an Echo round trip (RFC 8613 Appendix B.1.2). A device whose storage
//! survives its sleep (RTC memory across an ESP32-C3 deep sleep) keeps the ID Context
//! and a *claim* on sequence numbers ([`OscoreResume`]): after a reset it derives the
//! same contexts, starting at the claim, so the broker's contexts (and their replay
//! windows) go on and no Echo round trip is needed. The claim is always above every
//! number used: it is raised ([`Claim::needs_raise`]) and stored *before* a request
//! could use a number at or past it, so a reset at any point (a watchdog in the middle
//! of a cycle included) never reuses a nonce.
//!
//! **EDHOC identities** (feature `edhoc`, `pehra keys add DIR NAME --role device
//! --edhoc`): the device holds a static P-256 key pair and the brokers' public
//! credentials, no secret shared with anyone. Before its first request to a broker it
//! runs EDHOC (RFC 9528, method 3, suite 2) over `POST /.well-known/edhoc` and speaks
//! OSCORE in the context EDHOC exports ([`EdhocSession`]). A storage that survives the
//! sleep keeps the sessions, so a wake does not pay the handshake again; the same claim
//! covers their sequence numbers. A broker that lost the context (a restart) answers
//! 4.01 "Security context not found": the session is forgotten and EDHOC runs again.

use alloc::vec::Vec;
use core::net::SocketAddr;

use pehra_shared::coap::client_id_context;
use pehra_shared::oscore::{ContextParams, OscoreError, SecurityContext};
use pehra_shared::security::{broker_kid, pairwise_secret, KEY_LEN};
use serde::{Deserialize, Serialize};

/// How far a claim reaches past the numbers in use: stores per claim against numbers
/// skipped at a reset. A cycle uses a handful (check-in, publish, downlink, an Echo
/// repeat, Block1 blocks).
pub const CLAIM_STEP: u64 = 64;

/// The most numbers one request may use (its Block1 blocks and an Echo repeat): a
/// claim is raised when fewer than this many are left.
pub const CLAIM_MARGIN: u64 = 16;

/// How a device proves who it is: a pre-shared identity key, or (feature `edhoc`) a
/// static key pair and EDHOC.
#[derive(Debug, Clone)]
pub enum DeviceIdentity {
    /// An identity key shared with the cluster: a pairwise OSCORE secret per broker,
    /// nothing exchanged before the first request.
    Shared(DeviceKeys),
    /// A static key pair only: an OSCORE context per broker from EDHOC.
    /// (Boxed: the credentials are large beside a pre-shared key.)
    #[cfg(feature = "edhoc")]
    Edhoc(alloc::boxed::Box<EdhocKeys>),
}

impl From<DeviceKeys> for DeviceIdentity {
    fn from(keys: DeviceKeys) -> Self {
        DeviceIdentity::Shared(keys)
    }
}

#[cfg(feature = "edhoc")]
impl From<EdhocKeys> for DeviceIdentity {
    fn from(keys: EdhocKeys) -> Self {
        DeviceIdentity::Edhoc(alloc::boxed::Box::new(keys))
    }
}

/// An EDHOC identity, as `pehra keys add … --edhoc` made it (its `NAME.cred`: `"edhoc":
/// {"private_key", "cred"}` and `"edhoc_peers"`).
#[cfg(feature = "edhoc")]
#[derive(Debug, Clone)]
pub struct EdhocKeys {
    /// The device's static key pair and CCS (its key ID is its OSCORE-style `03…`).
    pub key: pehra_shared::edhoc::StaticKey,
    /// The servers' CCS credentials, by key ID (`edhoc_peers`).
    pub servers: Vec<(Vec<u8>, Vec<u8>)>,
}

#[cfg(feature = "edhoc")]
impl EdhocKeys {
    /// The keys from their hex forms: the private key and CCS (`"edhoc"`), and each
    /// server's key ID and CCS (`"edhoc_peers"`). `None` if any is not hex, or the
    /// private key does not belong to the CCS.
    pub fn from_hex(private_key: &str, cred: &str, servers: &[(&str, &str)]) -> Option<Self> {
        let private = hex(private_key)?.try_into().ok()?;
        let key = pehra_shared::edhoc::StaticKey::from_parts(private, &hex(cred)?).ok()?;
        let servers = servers
            .iter()
            .map(|(kid, ccs)| Some((hex(kid)?, hex(ccs)?)))
            .collect::<Option<Vec<_>>>()?;
        Some(EdhocKeys { key, servers })
    }

    /// The CCS of the server with key ID `kid`.
    pub fn server(&self, kid: &[u8]) -> Option<&[u8]> {
        self.servers
            .iter()
            .find(|(k, _)| k == kid)
            .map(|(_, ccs)| ccs.as_slice())
    }
}

/// An OSCORE context EDHOC made with one broker, as a device keeps it across a reset
/// (the secrets stay on the device: RTC memory or its own flash).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdhocSession {
    /// The broker's id.
    pub broker: u32,
    /// The OSCORE Master Secret EDHOC exported.
    pub master_secret: [u8; 16],
    /// The OSCORE Master Salt EDHOC exported.
    pub master_salt: [u8; 8],
    /// The device's Sender ID (the broker's connection identifier C_R).
    pub sender_id: Vec<u8>,
    /// The device's Recipient ID (its own C_I).
    pub recipient_id: Vec<u8>,
}

impl core::fmt::Debug for EdhocSession {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("EdhocSession")
            .field("broker", &self.broker)
            .field("sender_id", &self.sender_id)
            .finish_non_exhaustive()
    }
}

/// A device's identity, as `pehra keys` made it (its `NAME.cred`).
#[derive(Clone, PartialEq, Eq)]
pub struct DeviceKeys {
    /// Its OSCORE key ID (`03` + its number).
    pub kid: Vec<u8>,
    /// Its identity key.
    pub identity_key: [u8; KEY_LEN],
}

impl core::fmt::Debug for DeviceKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DeviceKeys")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl DeviceKeys {
    /// The keys from their hex forms (as a credential file writes them: `"kid"`,
    /// `"identity_key"`); `None` if either is not hex, the key is not 32 bytes or the
    /// key ID is empty or longer than OSCORE allows.
    pub fn from_hex(kid: &str, identity_key: &str) -> Option<DeviceKeys> {
        let kid = hex(kid)?;
        if kid.is_empty() || kid.len() > pehra_shared::oscore::MAX_ID_LEN {
            return None;
        }
        let identity_key = hex(identity_key)?.try_into().ok()?;
        Some(DeviceKeys { kid, identity_key })
    }
}

fn hex(text: &str) -> Option<Vec<u8>> {
    let text = text.trim().as_bytes();
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    text.chunks(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

/// The broker id in a broker's name (`broker-3` is 3).
pub fn broker_id(name: &str) -> Option<u32> {
    name.strip_prefix("broker-")?.parse().ok()
}

/// A configured gateway `N@ADDR` split into broker id `N` and `ADDR` (without `N@`: no
/// id, `ADDR` whole). The boards' `PEHRA_GATEWAY` lists take this form; an item without
/// an id is taken to be broker `position + 1`.
pub fn split_broker(item: &str) -> (Option<u32>, &str) {
    match item.split_once('@') {
        Some((id, addr)) => match id.trim().parse() {
            Ok(id) => (Some(id), addr.trim()),
            Err(_) => (None, item),
        },
        None => (None, item),
    }
}

/// What a device keeps of OSCORE across a reset: its ID Context and a claim on sender
/// sequence numbers (every number used is below it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct OscoreResume {
    /// The ID Context, as [`client_id_context`]'s argument.
    pub id_context: u64,
    /// Every sender sequence number used is below this.
    pub claim: u64,
}

/// The claim on sender sequence numbers (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    /// Every number used (or about to be) is below this; it is stored.
    pub claimed: u64,
}

impl Claim {
    /// A claim after a start at `first` (the first number the contexts will use): it
    /// must be stored before anything is sent.
    pub fn starting_at(first: u64) -> Claim {
        Claim {
            claimed: first.saturating_add(CLAIM_STEP),
        }
    }

    /// Whether a request that may use numbers from `next` on needs the claim raised
    /// (and stored) first; raises it if so.
    pub fn needs_raise(&mut self, next: u64) -> bool {
        if next.saturating_add(CLAIM_MARGIN) <= self.claimed {
            return false;
        }
        self.claimed = next.saturating_add(CLAIM_STEP);
        true
    }
}

/// A device's OSCORE state: its keys, ID Context, where each broker serves, the
/// contexts EDHOC made and the claim on sequence numbers.
#[derive(Debug)]
pub struct DeviceSecurity {
    identity: DeviceIdentity,
    /// Contexts EDHOC made, one per broker (EDHOC identities only).
    #[cfg(feature = "edhoc")]
    sessions: Vec<EdhocSession>,
    /// Draws each EDHOC run's ephemeral key and connection identifier (seeded at boot
    /// from the board's randomness: a new seed each boot).
    #[cfg(feature = "edhoc")]
    edhoc_rng: rand::rngs::StdRng,
    id_context: u64,
    /// The first sender sequence number of a context derived now.
    first_sequence: u64,
    brokers: Vec<(SocketAddr, u32)>,
    claim: Claim,
    /// The claim in memory is not stored yet.
    unstored: bool,
}

impl DeviceSecurity {
    /// A device's security as `identity`, brokers at the addresses `brokers` names, going
    /// on from `resume` (what storage kept) or, without it, in the ID Context `random`.
    pub fn new(
        identity: impl Into<DeviceIdentity>,
        brokers: Vec<(SocketAddr, u32)>,
        resume: Option<OscoreResume>,
        random: u64,
    ) -> Self {
        let (id_context, first_sequence) = match resume {
            Some(r) => (r.id_context, r.claim),
            None => (random, 0),
        };
        DeviceSecurity {
            identity: identity.into(),
            #[cfg(feature = "edhoc")]
            sessions: Vec::new(),
            #[cfg(feature = "edhoc")]
            edhoc_rng: rand::SeedableRng::seed_from_u64(random),
            id_context,
            first_sequence,
            brokers,
            claim: Claim::starting_at(first_sequence),
            unstored: true,
        }
    }

    /// What to store now (before the first request, and whenever
    /// [`Self::before_request`] says).
    pub fn resume(&self) -> OscoreResume {
        OscoreResume {
            id_context: self.id_context,
            claim: self.claim.claimed,
        }
    }

    /// Broker `id` serves at `addr` (from a check-in reply naming the Pehredar); `true`
    /// if that is news (a context for `addr` must be derived again).
    pub fn learn(&mut self, addr: SocketAddr, id: u32) -> bool {
        match self.brokers.iter_mut().find(|(a, _)| *a == addr) {
            Some(entry) if entry.1 == id => false,
            Some(entry) => {
                entry.1 = id;
                true
            }
            None => {
                self.brokers.push((addr, id));
                true
            }
        }
    }

    /// The broker serving at `addr`, if known.
    pub fn broker_at(&self, addr: SocketAddr) -> Option<u32> {
        self.brokers
            .iter()
            .find(|(a, _)| *a == addr)
            .map(|&(_, id)| id)
    }

    /// The context towards the broker at `addr` (derived now), if the broker is known
    /// (and, for an EDHOC identity, a session with it exists: see
    /// [`Self::needs_handshake`]).
    pub fn context_for(&self, addr: SocketAddr) -> Option<Result<SecurityContext, OscoreError>> {
        let id = self.broker_at(addr)?;
        let context = match &self.identity {
            DeviceIdentity::Shared(keys) => {
                let broker = broker_kid(id);
                let secret = pairwise_secret(&keys.identity_key, &broker);
                let id_context = client_id_context(self.id_context);
                let params = ContextParams {
                    master_secret: &secret,
                    master_salt: &[],
                    id_context: Some(&id_context),
                    sender_id: &keys.kid,
                    recipient_id: &broker,
                };
                SecurityContext::new(&params, None)
            }
            #[cfg(feature = "edhoc")]
            DeviceIdentity::Edhoc(_) => {
                let session = self.sessions.iter().find(|s| s.broker == id)?;
                SecurityContext::new(
                    &ContextParams {
                        master_secret: &session.master_secret,
                        master_salt: &session.master_salt,
                        id_context: None,
                        sender_id: &session.sender_id,
                        recipient_id: &session.recipient_id,
                    },
                    None,
                )
            }
        };
        Some(context.map(|mut ctx| {
            ctx.set_sender_sequence(self.first_sequence);
            ctx
        }))
    }

    /// The contexts EDHOC made (what storage keeps of them).
    #[cfg(feature = "edhoc")]
    pub fn sessions(&self) -> &[EdhocSession] {
        &self.sessions
    }

    /// Takes up the EDHOC sessions storage kept (those of brokers it still names are
    /// used; the claim covers their numbers as any other context's).
    #[cfg(feature = "edhoc")]
    pub fn restore_sessions(&mut self, sessions: Vec<EdhocSession>) {
        self.sessions = sessions;
    }

    /// The broker at `addr` lost its context with us (it answered 4.01 "Security
    /// context not found": a restart): forgets our EDHOC session with it, so that the
    /// next request runs EDHOC again. `false` if there was none (a pre-shared context
    /// is derived again by both sides; nothing to forget).
    #[cfg(feature = "edhoc")]
    pub fn forget_session(&mut self, addr: SocketAddr) -> bool {
        let Some(id) = self.broker_at(addr) else {
            return false;
        };
        let before = self.sessions.len();
        self.sessions.retain(|s| s.broker != id);
        before != self.sessions.len()
    }

    /// Whether a request to `addr` needs EDHOC first: an EDHOC identity, the broker
    /// there known and no session with it.
    #[cfg(feature = "edhoc")]
    pub fn needs_handshake(&self, addr: SocketAddr) -> bool {
        match &self.identity {
            DeviceIdentity::Shared(_) => false,
            DeviceIdentity::Edhoc(_) => self
                .broker_at(addr)
                .is_some_and(|id| !self.sessions.iter().any(|s| s.broker == id)),
        }
    }

    /// Starts EDHOC with the broker at `addr`: the initiator and message_1's request
    /// payload. `None` if no handshake is needed or possible (a pre-shared identity, an
    /// unknown broker, or one whose credential the device was not given).
    #[cfg(feature = "edhoc")]
    pub fn start_handshake(
        &mut self,
        addr: SocketAddr,
    ) -> Option<(pehra_shared::edhoc::Initiator, Vec<u8>)> {
        let DeviceIdentity::Edhoc(keys) = &self.identity else {
            return None;
        };
        let ccs = keys.server(&broker_kid(self.broker_at(addr)?))?;
        let mut seed = [0u8; 32];
        rand::Rng::fill_bytes(&mut self.edhoc_rng, &mut seed);
        pehra_shared::edhoc::Initiator::start(keys.key.clone(), ccs, seed).ok()
    }

    /// EDHOC with the broker at `addr` completed with `keys`: its session (replacing an
    /// older one); stored with the next claim.
    #[cfg(feature = "edhoc")]
    pub fn handshake_done(&mut self, addr: SocketAddr, keys: pehra_shared::edhoc::Established) {
        let Some(broker) = self.broker_at(addr) else {
            return;
        };
        self.sessions.retain(|s| s.broker != broker);
        self.sessions.push(EdhocSession {
            broker,
            master_secret: keys.master_secret,
            master_salt: keys.master_salt,
            sender_id: keys.sender_id,
            recipient_id: keys.recipient_id,
        });
        self.unstored = true;
    }

    /// Seeds the generator of EDHOC's ephemeral keys (at boot, from the board's
    /// randomness).
    #[cfg(feature = "edhoc")]
    pub fn seed_handshakes(&mut self, seed: [u8; 32]) {
        self.edhoc_rng = rand::SeedableRng::from_seed(seed);
    }

    /// A request is about to go out in a context whose next sequence number is `next`:
    /// `true` if the claim was raised (or never stored) and must be stored first; no
    /// request may go out until it is ([`Self::claim_stored`]). (Each broker's context
    /// has keys of its own, so the contexts may use the same numbers; one claim above
    /// all of them is what a reset needs.)
    pub fn before_request(&mut self, next: u64) -> bool {
        if self.claim.needs_raise(next) {
            self.unstored = true;
        }
        self.unstored
    }

    /// [`Self::resume`] was stored (after a start, or after [`Self::before_request`]
    /// said so): requests may use numbers up to the claim's margin.
    pub fn claim_stored(&mut self) {
        self.unstored = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::{format, vec};
    use pehra_shared::security::{kid, Role};

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 2, 2], port))
    }

    fn keys() -> DeviceKeys {
        DeviceKeys {
            kid: kid(Role::Device, 1),
            identity_key: [7; 32],
        }
    }

    #[test]
    fn keys_come_from_a_credential_files_hex() {
        let k = DeviceKeys::from_hex("0301", &"07".repeat(32)).unwrap();
        assert_eq!(k, keys());
        assert_eq!(DeviceKeys::from_hex("0301", "0707"), None, "short key");
        assert_eq!(DeviceKeys::from_hex("", &"07".repeat(32)), None, "no kid");
        assert_eq!(DeviceKeys::from_hex("03x1", &"07".repeat(32)), None);
        assert_eq!(
            DeviceKeys::from_hex("0301020304050607", &"07".repeat(32)),
            None
        );
        assert!(
            !format!("{k:?}").contains("0707"),
            "the key stays out of Debug"
        );
    }

    #[test]
    fn gateways_may_name_their_broker() {
        assert_eq!(split_broker("2@10.0.0.1:5683"), (Some(2), "10.0.0.1:5683"));
        assert_eq!(split_broker("[fd00::1]:5683"), (None, "[fd00::1]:5683"));
        assert_eq!(split_broker("x@1.2.3.4:1"), (None, "x@1.2.3.4:1"));
    }

    #[test]
    fn broker_names_give_their_ids() {
        assert_eq!(broker_id("broker-3"), Some(3));
        assert_eq!(broker_id("broker-x"), None);
        assert_eq!(broker_id("zookeeper"), None);
    }

    #[test]
    fn the_claim_is_raised_before_a_request_could_reach_it() {
        let mut c = Claim::starting_at(0);
        assert_eq!(c.claimed, CLAIM_STEP);
        assert!(!c.needs_raise(0));
        assert!(!c.needs_raise(CLAIM_STEP - CLAIM_MARGIN));
        assert!(c.needs_raise(CLAIM_STEP - CLAIM_MARGIN + 1));
        assert_eq!(c.claimed, 2 * CLAIM_STEP - CLAIM_MARGIN + 1);
        // Whatever is used below the margin, the stored claim stays above it.
        for next in 0..1000 {
            c.needs_raise(next);
            assert!(next + CLAIM_MARGIN <= c.claimed);
        }
    }

    #[test]
    fn contexts_match_the_brokers_and_resume_above_the_claim() {
        let mut s = DeviceSecurity::new(keys(), vec![(addr(5683), 1)], None, 42);
        assert!(s.context_for(addr(5684)).is_none(), "unknown broker");
        let ctx = s.context_for(addr(5683)).unwrap().unwrap();
        assert_eq!(ctx.recipient_id(), broker_kid(1));
        assert_eq!(ctx.sender_id(), kid(Role::Device, 1));
        assert_eq!(ctx.id_context(), Some(&42u64.to_be_bytes()[..]));
        assert_eq!(ctx.next_sequence_number(), 0);
        assert!(s.learn(addr(5684), 2));
        assert!(!s.learn(addr(5684), 2), "known already");
        assert_eq!(
            s.context_for(addr(5684)).unwrap().unwrap().recipient_id(),
            broker_kid(2)
        );
        // The broker derives the same keys from the device's pairwise secret.
        let theirs = SecurityContext::new(
            &ContextParams {
                master_secret: &pairwise_secret(&[7; 32], &broker_kid(1)),
                master_salt: &[],
                id_context: Some(&42u64.to_be_bytes()),
                sender_id: &broker_kid(1),
                recipient_id: &kid(Role::Device, 1),
            },
            None,
        )
        .unwrap();
        assert_eq!(theirs.recipient_key(), ctx.sender_key());

        assert!(s.before_request(0), "not stored yet");
        s.claim_stored();
        assert!(!s.before_request(0));
        assert!(s.before_request(CLAIM_STEP), "raised");
        assert!(s.before_request(CLAIM_STEP), "until stored");
        s.claim_stored();
        assert!(!s.before_request(CLAIM_STEP));
        let s = DeviceSecurity::new(keys(), vec![(addr(5683), 1)], None, 42);
        let stored = s.resume();
        assert_eq!(
            stored,
            OscoreResume {
                id_context: 42,
                claim: CLAIM_STEP
            }
        );
        // After a reset: the same ID Context, numbers from the claim on.
        let again = DeviceSecurity::new(keys(), vec![(addr(5683), 1)], Some(stored), 7);
        let ctx = again.context_for(addr(5683)).unwrap().unwrap();
        assert_eq!(ctx.id_context(), Some(&42u64.to_be_bytes()[..]));
        assert_eq!(ctx.next_sequence_number(), CLAIM_STEP);
        assert_eq!(again.resume().claim, 2 * CLAIM_STEP);
    }
}
