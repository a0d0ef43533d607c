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

/// A device's OSCORE state: its keys, ID Context, where each broker serves and the
/// claim on sequence numbers.
#[derive(Debug, Clone)]
pub struct DeviceSecurity {
    keys: DeviceKeys,
    id_context: u64,
    /// The first sender sequence number of a context derived now.
    first_sequence: u64,
    brokers: Vec<(SocketAddr, u32)>,
    claim: Claim,
    /// The claim in memory is not stored yet.
    unstored: bool,
}

impl DeviceSecurity {
    /// A device's security with `keys`, brokers at the addresses `brokers` names, going on
    /// from `resume` (what storage kept) or, without it, in the ID Context `random`.
    pub fn new(
        keys: DeviceKeys,
        brokers: Vec<(SocketAddr, u32)>,
        resume: Option<OscoreResume>,
        random: u64,
    ) -> Self {
        let (id_context, first_sequence) = match resume {
            Some(r) => (r.id_context, r.claim),
            None => (random, 0),
        };
        DeviceSecurity {
            keys,
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

    /// The context towards the broker at `addr` (derived now), if the broker is known.
    pub fn context_for(&self, addr: SocketAddr) -> Option<Result<SecurityContext, OscoreError>> {
        let broker = broker_kid(self.broker_at(addr)?);
        let secret = pairwise_secret(&self.keys.identity_key, &broker);
        let id_context = client_id_context(self.id_context);
        let params = ContextParams {
            master_secret: &secret,
            master_salt: &[],
            id_context: Some(&id_context),
            sender_id: &self.keys.kid,
            recipient_id: &broker,
        };
        Some(SecurityContext::new(&params, None).map(|mut ctx| {
            ctx.set_sender_sequence(self.first_sequence);
            ctx
        }))
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
