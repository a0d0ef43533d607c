//! Who is who in a Pehra cluster: identities, their OSCORE key IDs, and the pairwise
//! master secrets their OSCORE contexts are derived from.
//!
//! Every principal (the zookeeper, each broker, each client or tool, each device, each
//! admin) has an [`Identity`] and a 32-byte *identity key*, made by `pehra keys`. It
//! never talks with that key directly: towards a server whose key ID is `S` it uses the
//! *pairwise secret* [`pairwise_secret`]`(identity key, S)` as the OSCORE Master Secret
//! (HKDF-SHA256). A server is given only the pairwise secrets meant for it (its
//! [`KeyTable`]), so a stolen broker cannot speak to the zookeeper or another broker in
//! anyone's name but its own; a client can derive the secret for a broker added later
//! without being given a new file.
//!
//! Key IDs are short, as OSCORE wants (at most 7 bytes, all in the nonce): a role byte
//! ([`Role::kid_prefix`]) and the identity's number, big-endian, without leading zeros.

pub mod acl;
#[cfg(feature = "std")]
pub mod credentials;

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use hkdf::Hkdf;
use sha2::Sha256;

/// The length of identity keys and pairwise secrets.
pub const KEY_LEN: usize = 32;

/// What a principal is, which decides what it may do by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// The zookeeper (the coordination service and the cluster controller).
    Zookeeper,
    /// A broker.
    Broker,
    /// A client: tools and applications that produce, consume and create topics.
    Client,
    /// A device: publishes its readings and reads its downlink.
    Device,
    /// An admin: everything, including PEHRA mode changes and cluster maintenance.
    Admin,
}

impl Role {
    /// The first byte of key IDs of this role.
    pub fn kid_prefix(self) -> u8 {
        match self {
            Role::Zookeeper => 0x00,
            Role::Broker => 0x01,
            Role::Client => 0x02,
            Role::Device => 0x03,
            Role::Admin => 0x04,
        }
    }

    /// The role a key ID's first byte names.
    pub fn from_kid(kid: &[u8]) -> Option<Role> {
        Some(match kid.first()? {
            0x00 => Role::Zookeeper,
            0x01 => Role::Broker,
            0x02 => Role::Client,
            0x03 => Role::Device,
            0x04 => Role::Admin,
            _ => return None,
        })
    }

    /// The role's name as files and ACLs write it.
    pub fn name(self) -> &'static str {
        match self {
            Role::Zookeeper => "zookeeper",
            Role::Broker => "broker",
            Role::Client => "client",
            Role::Device => "device",
            Role::Admin => "admin",
        }
    }
}

/// The key ID of identity number `number` of `role`: the role byte and the number
/// big-endian without leading zero bytes (zookeeper 0 is `[0x00]`, broker 3 is
/// `[0x01, 0x03]`).
pub fn kid(role: Role, number: u32) -> Vec<u8> {
    let mut kid = alloc::vec![role.kid_prefix()];
    let bytes = number.to_be_bytes();
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    kid.extend_from_slice(&bytes[first..]);
    kid
}

/// The key ID of broker `id` (so a client finds a broker's from its id alone).
pub fn broker_kid(id: u32) -> Vec<u8> {
    kid(Role::Broker, id)
}

/// The key ID of the zookeeper (member 0 of a one-member ensemble).
pub fn zookeeper_kid() -> Vec<u8> {
    kid(Role::Zookeeper, 0)
}

/// The key ID a server's own in-process services (the zookeeper's controller and PEHRA
/// coordinator) use towards it: OSCORE needs the two ends' IDs to differ, so they speak
/// as `0x05` followed by the server's key ID, with the server's identity.
pub fn service_kid(server_kid: &[u8]) -> Vec<u8> {
    let mut kid = alloc::vec![0x05];
    kid.extend_from_slice(server_kid);
    kid
}

/// An authenticated principal: what a server knows of the sender of a verified request.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Identity {
    /// Its name (`broker-2`, `alice`, `sensor-17`).
    pub name: String,
    /// Its role.
    pub role: Role,
    /// Its OSCORE key ID.
    pub kid: Vec<u8>,
}

impl Identity {
    /// The broker id of a broker (`broker-2` → 2); `None` for any other role.
    pub fn broker_id(&self) -> Option<u32> {
        if self.role != Role::Broker {
            return None;
        }
        self.name.rsplit_once('-')?.1.parse().ok()
    }
}

/// The OSCORE Master Secret between the principal holding `identity_key` and the server
/// whose key ID is `server_kid`: HKDF-SHA256 with salt `pehra pairwise v1`, the identity
/// key as input keying material and the server's key ID as info.
pub fn pairwise_secret(identity_key: &[u8; KEY_LEN], server_kid: &[u8]) -> [u8; KEY_LEN] {
    let hkdf = Hkdf::<Sha256>::new(Some(b"pehra pairwise v1"), identity_key);
    let mut out = [0u8; KEY_LEN];
    hkdf.expand(server_kid, &mut out)
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    out
}

/// A peer a server knows: who it is and the pairwise secret it shares with this server.
#[derive(Clone, PartialEq, Eq)]
pub struct PeerKey {
    /// Who.
    pub identity: Identity,
    /// The OSCORE Master Secret for this server ([`pairwise_secret`]).
    pub secret: [u8; KEY_LEN],
}

impl core::fmt::Debug for PeerKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PeerKey")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

/// What a server holds: its own identity and the peers that may talk to it, by key ID.
#[derive(Debug, Clone, Default)]
pub struct KeyTable {
    peers: BTreeMap<Vec<u8>, PeerKey>,
}

impl KeyTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a peer.
    pub fn insert(&mut self, peer: PeerKey) {
        self.peers.insert(peer.identity.kid.clone(), peer);
    }

    /// Removes a peer (revocation); returns it.
    pub fn remove(&mut self, kid: &[u8]) -> Option<PeerKey> {
        self.peers.remove(kid)
    }

    /// The peer with key ID `kid`.
    pub fn get(&self, kid: &[u8]) -> Option<&PeerKey> {
        self.peers.get(kid)
    }

    /// How many peers.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Every peer, by key ID.
    pub fn iter(&self) -> impl Iterator<Item = &PeerKey> {
        self.peers.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids_are_short_and_name_their_role() {
        assert_eq!(zookeeper_kid(), [0x00]);
        assert_eq!(broker_kid(3), [0x01, 0x03]);
        assert_eq!(kid(Role::Device, 0x0102_0304), [0x03, 1, 2, 3, 4]);
        assert_eq!(kid(Role::Client, 256), [0x02, 1, 0]);
        for role in [
            Role::Zookeeper,
            Role::Broker,
            Role::Client,
            Role::Device,
            Role::Admin,
        ] {
            let k = kid(role, u32::MAX);
            assert!(k.len() <= crate::oscore::MAX_ID_LEN);
            assert_eq!(Role::from_kid(&k), Some(role));
        }
        assert_eq!(Role::from_kid(&[0x7f]), None);
    }

    #[test]
    fn pairwise_secrets_differ_per_server_and_per_identity() {
        let a = [1u8; KEY_LEN];
        let b = [2u8; KEY_LEN];
        let to_zk = pairwise_secret(&a, &zookeeper_kid());
        assert_eq!(
            to_zk,
            pairwise_secret(&a, &zookeeper_kid()),
            "deterministic"
        );
        assert_ne!(to_zk, pairwise_secret(&a, &broker_kid(1)));
        assert_ne!(to_zk, pairwise_secret(&b, &zookeeper_kid()));
        assert_ne!(&to_zk, &a, "never the identity key itself");
    }
}
