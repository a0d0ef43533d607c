//! Turning OSCORE on for endpoints from a credentials file: a server verifies requests
//! with its key table and keeps its sequence ceiling in its data directory; a client
//! protects its requests to each server it talks to. An EDHOC identity's client runs
//! EDHOC (RFC 9528) with each server first and speaks OSCORE in the context it yields;
//! a server whose credentials list EDHOC identities answers `/.well-known/edhoc`.

use super::Handle;
use crate::coap::{client_id_context, ServerSecurity};
use crate::edhoc::{self, ResponderConfig};
use crate::oscore::{ContextParams, SecurityContext};
use crate::security::acl::Policy;
use crate::security::credentials::Credentials;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::string::ToString;
use std::vec::Vec;

/// The file in a server's data directory that holds its OSCORE sequence ceiling.
pub const CEILING_FILE: &str = "oscore-ceiling";

/// Verifies OSCORE requests on `handle`'s endpoint from now on, with the key ID and key
/// table of `credentials` (a server's); the sequence ceiling lives in
/// `data_dir/oscore-ceiling`, written (and fsynced) before any datagram that relies on
/// it is sent, and read back as the floor at the next start.
pub async fn secure_server(
    handle: &Handle,
    credentials: &Credentials,
    data_dir: &Path,
) -> io::Result<()> {
    let keys = server_key_table(credentials)?;
    let path = data_dir.join(CEILING_FILE);
    let floor = read_ceiling(&path)?;
    let mut security = ServerSecurity::new(credentials.identity().kid.clone(), keys, floor);
    security.edhoc = edhoc_responder(credentials)?;
    handle
        .set_server_security(
            security,
            std::boxed::Box::new(move |c| store_ceiling(&path, c)),
        )
        .await
        .map_err(|e| io::Error::other(e.to_string()))
}

/// Installs the key table of `credentials` (a server's file made again by `pehra keys`
/// after an identity was added, rotated or revoked) on `handle`'s secured endpoint:
/// revoked and rotated-away peers are refused from their next request on. The server's
/// own identity cannot change this way (its key ID names it in every context): that
/// needs a restart. Returns how many peers the new table holds.
pub async fn reload_server_keys(
    handle: &Handle,
    running_kid: &[u8],
    credentials: &Credentials,
) -> io::Result<usize> {
    if credentials.identity().kid != running_kid {
        return Err(io::Error::other(std::format!(
            "the new credentials are {}'s, another identity than the running server's: restart it to change identity",
            credentials.identity().name
        )));
    }
    let keys = server_key_table(credentials)?;
    let edhoc = edhoc_responder(credentials)?;
    let peers = keys.iter().count() + edhoc.as_ref().map_or(0, |e| e.peers.len());
    match handle.set_server_keys(keys, edhoc).await {
        Ok(true) => Ok(peers),
        Ok(false) => Err(io::Error::other(
            "this server runs without OSCORE: start it with --credentials to use keys",
        )),
        Err(e) => Err(io::Error::other(e.to_string())),
    }
}

/// The peers a server with `credentials` accepts: its key table, and itself under its
/// service key ID (its own services, the zookeeper's controller, talk to it in its name
/// ([`service_credentials`])).
fn server_key_table(credentials: &Credentials) -> io::Result<crate::security::KeyTable> {
    let mut keys = credentials.key_table().ok_or_else(|| {
        io::Error::other(std::format!(
            "the credentials of {} hold no key table: they are not a server's (pehra keys makes the zookeeper's and each broker's)",
            credentials.identity().name
        ))
    })?;
    let own = credentials.identity();
    keys.insert(crate::security::PeerKey {
        identity: crate::security::Identity {
            kid: crate::security::service_kid(&own.kid),
            ..own.clone()
        },
        secret: crate::security::pairwise_secret(credentials.identity_key(), &own.kid),
    });
    Ok(keys)
}

/// A server's ACL policy as it stands now: read by the router's guard on every request,
/// replaced whole when the operator reloads it.
#[derive(Debug)]
pub struct PolicyCell(std::sync::RwLock<std::sync::Arc<Policy>>);

impl PolicyCell {
    /// A cell holding `policy`.
    pub fn new(policy: std::sync::Arc<Policy>) -> Self {
        PolicyCell(std::sync::RwLock::new(policy))
    }

    /// The policy in force.
    pub fn current(&self) -> std::sync::Arc<Policy> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Puts `policy` in force for every request from now on.
    pub fn replace(&self, policy: std::sync::Arc<Policy>) {
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = policy;
    }
}

/// The EDHOC responder of a server whose credentials list EDHOC identities: its static
/// key derived from its identity key, the identities' credentials. `None` when it
/// lists none (then `/.well-known/edhoc` is not served).
fn edhoc_responder(credentials: &Credentials) -> io::Result<Option<ResponderConfig>> {
    if credentials.edhoc_peers().is_empty() {
        return Ok(None);
    }
    let key = credentials
        .server_edhoc_key()
        .ok_or_else(|| io::Error::other("a server's credentials need an identity key"))?;
    let peers = credentials
        .edhoc_peers()
        .iter()
        .map(|peer| {
            let credential = edhoc::parse_credential(&peer.ccs)
                .map_err(|e| io::Error::other(std::format!("{}: {e}", peer.identity.name)))?;
            Ok(edhoc::KnownPeer {
                identity: peer.identity.clone(),
                credential,
            })
        })
        .collect::<io::Result<Vec<_>>>()?;
    Ok(Some(ResponderConfig {
        key,
        peers,
        limits: edhoc::Limits::default(),
    }))
}

/// The credentials a server's own in-process services use towards it: its identity and
/// key, under its service key ID (OSCORE needs sender and recipient IDs to differ).
pub fn service_credentials(server: &Credentials) -> Credentials {
    let identity = crate::security::Identity {
        kid: crate::security::service_kid(&server.identity().kid),
        ..server.identity().clone()
    };
    Credentials::new(identity, *server.identity_key(), None)
}

/// Protects every request `handle`'s endpoint sends to `peer` (the server whose key ID
/// is `server_kid`) with a context derived from `credentials`, in an ID Context drawn at
/// random now (so nothing needs storing: a restarted client speaks in new contexts).
pub async fn secure_client(
    handle: &Handle,
    credentials: &Credentials,
    peer: SocketAddr,
    server_kid: &[u8],
) -> io::Result<()> {
    let context = match credentials.edhoc_key() {
        Some(_) => edhoc_context(handle, credentials, peer, server_kid).await?,
        None => client_context(credentials, server_kid)?,
    };
    handle
        .secure_peer(peer, context)
        .await
        .map_err(|e| io::Error::other(e.to_string()))
}

/// The client context of `credentials` towards the server with key ID `server_kid`. A
/// server talking to itself (a broker's pub-sub client producing to its own partitions)
/// speaks under its service key ID ([`service_credentials`]).
pub fn client_context(credentials: &Credentials, server_kid: &[u8]) -> io::Result<SecurityContext> {
    if credentials.edhoc_key().is_some() {
        return Err(io::Error::other(
            "EDHOC credentials have no pre-shared secret: their context comes from EDHOC (edhoc_context)",
        ));
    }
    if credentials.identity().kid == server_kid {
        return client_context(&service_credentials(credentials), server_kid);
    }
    let secret = credentials.secret_for(server_kid);
    let mut random = [0u8; 8];
    rand::TryRng::try_fill_bytes(&mut rand::rngs::SysRng, &mut random)
        .map_err(|e| io::Error::other(e.to_string()))?;
    let id_context = client_id_context(u64::from_be_bytes(random));
    let params = ContextParams {
        master_secret: &secret,
        master_salt: &[],
        id_context: Some(&id_context),
        sender_id: &credentials.identity().kid,
        recipient_id: server_kid,
    };
    SecurityContext::new(&params, None).map_err(|e| io::Error::other(e.to_string()))
}

/// Runs EDHOC as initiator with the server at `peer` (key ID `server_kid`, whose
/// credential `credentials` must list) over `POST /.well-known/edhoc`: message_1,
/// message_2, message_3; the OSCORE context it yields (RFC 9528 Appendix A).
pub async fn edhoc_context(
    handle: &Handle,
    credentials: &Credentials,
    peer: SocketAddr,
    server_kid: &[u8],
) -> io::Result<SecurityContext> {
    let who = &credentials.identity().name;
    let key = credentials.edhoc_key().ok_or_else(|| {
        io::Error::other(std::format!("the credentials of {who} hold no EDHOC key"))
    })?;
    let server = credentials
        .edhoc_peers()
        .iter()
        .find(|s| s.identity.kid == server_kid)
        .ok_or_else(|| {
            io::Error::other(std::format!(
                "the EDHOC credentials of {who} know no server with key ID {} (a server added later: get a new file from pehra keys)",
                crate::security::credentials::to_hex(server_kid)
            ))
        })?;
    let mut seed = [0u8; 32];
    rand::TryRng::try_fill_bytes(&mut rand::rngs::SysRng, &mut seed)
        .map_err(|e| io::Error::other(e.to_string()))?;
    let failed = |e: edhoc::EdhocError| {
        io::Error::other(std::format!(
            "EDHOC with {} at {peer}: {e}",
            server.identity.name
        ))
    };
    let (initiator, message_1) =
        edhoc::Initiator::start(key.clone(), &server.ccs, seed).map_err(failed)?;
    let message_2 = edhoc_post(handle, peer, message_1).await?;
    let message_2 = answer_of(message_2).map_err(failed)?;
    let (message_3, keys) = initiator.finish(&message_2).map_err(failed)?;
    let done = edhoc_post(handle, peer, message_3).await?;
    answer_of(done).map_err(failed)?;
    SecurityContext::new(&keys.context_params(), None).map_err(|e| io::Error::other(e.to_string()))
}

/// One EDHOC request (plain CoAP: OSCORE comes after).
async fn edhoc_post(
    handle: &Handle,
    peer: SocketAddr,
    payload: Vec<u8>,
) -> io::Result<crate::coap::Response> {
    let request = crate::coap::Request::post(edhoc::WELL_KNOWN_EDHOC)
        .with_payload(payload)
        .with_content_format(edhoc::CONTENT_FORMAT_CID_EDHOC);
    handle
        .request(peer, request)
        .await
        .map_err(|e| io::Error::other(std::format!("EDHOC with {peer}: {e}")))
}

/// The payload of a 2.04 answer to an EDHOC request; the EDHOC error or CoAP code of
/// any other.
fn answer_of(response: crate::coap::Response) -> Result<Vec<u8>, edhoc::EdhocError> {
    if response.code() == crate::coap::Code::CHANGED {
        return Ok(response.payload().to_vec());
    }
    Err(match edhoc::parse_error_message(response.payload()) {
        Some((code, info)) => edhoc::EdhocError::Peer { code, info },
        None => edhoc::EdhocError::Peer {
            code: 0,
            info: std::format!(
                "answered {} {}",
                response.code(),
                std::string::String::from_utf8_lossy(response.payload())
            ),
        },
    })
}

/// The stored ceiling, 0 if none was stored yet.
fn read_ceiling(path: &Path) -> io::Result<u64> {
    match std::fs::read_to_string(path) {
        Ok(text) => text.trim().parse().map_err(|_| {
            io::Error::other(std::format!(
                "{}: not a number; it holds the OSCORE sequence ceiling (remove it only with the key table rotated)",
                path.display()
            ))
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => fresh_floor(),
        Err(e) => Err(e),
    }
}

/// The lowest a fresh floor is: what a server that started at 0 could have used stays
/// below it.
const FRESH_FLOOR_MIN: u64 = 1 << 32;
/// A fresh floor is below this, which leaves at least 2^39 numbers before OSCORE's
/// limit of 2^40 − 1.
const FRESH_FLOOR_MAX: u64 = 1 << 39;

/// Where a server's own sequence numbers start when its data directory holds no
/// ceiling: a random point in [2^32, 2^39), not 0. A first start cannot be told from a
/// start on an emptied directory (a replaced disk, a zookeeper member whose data was
/// lost), whose clients may still hold the contexts it used before: starting at 0 again
/// would use nonces a second time. Two such starts overlap only if one used more
/// numbers than the random distance between them (about one in 2^18 for a server
/// that sent a million messages of its own). The price: its own Partial IVs
/// (notifications, Echo answers) take 5 bytes instead of 1 to 4.
fn fresh_floor() -> io::Result<u64> {
    let seed = super::socket::seed32()?;
    let random = u64::from_be_bytes(seed[..8].try_into().expect("8 bytes"));
    Ok(FRESH_FLOOR_MIN + random % (FRESH_FLOOR_MAX - FRESH_FLOOR_MIN))
}

/// Writes the ceiling durably: a temporary file, fsync, rename, fsync of the directory.
fn store_ceiling(path: &Path, ceiling: u64) -> io::Result<()> {
    let tmp: PathBuf = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(std::format!("{ceiling}\n").as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_without_a_stored_ceiling_starts_at_a_random_high_floor() {
        let dir = std::env::temp_dir().join(std::format!("pehra-ceiling-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(CEILING_FILE);
        let _ = std::fs::remove_file(&path);
        let floors: Vec<u64> = (0..4).map(|_| read_ceiling(&path).unwrap()).collect();
        for floor in &floors {
            assert!(
                (FRESH_FLOOR_MIN..FRESH_FLOOR_MAX).contains(floor),
                "{floor}: numbers a start at 0 used, or too near the limit"
            );
        }
        assert!(
            floors.windows(2).any(|w| w[0] != w[1]),
            "random: {floors:?}"
        );
        // A stored ceiling is the floor.
        store_ceiling(&path, 4096).unwrap();
        assert_eq!(read_ceiling(&path).unwrap(), 4096);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
