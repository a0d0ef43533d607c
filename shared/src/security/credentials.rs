//! Credential files: what `pehra keys` gives each principal, and what servers, tools
//! and the device simulator load (feature `std`).
//!
//! One JSON object, mode 0600 (a file group or others may read is refused):
//!
//! ```json
//! {
//!   "name": "broker-2",
//!   "role": "broker",
//!   "kid": "0102",
//!   "identity_key": "…64 hex digits…",
//!   "peers": [
//!     { "name": "alice", "role": "client", "kid": "0201", "secret": "…64 hex digits…" }
//!   ]
//! }
//! ```
//!
//! `peers` is a server's [`KeyTable`] (the zookeeper's, a broker's): the pairwise
//! secret every non-revoked identity shares with this server, derived for its key ID.
//! Clients, devices and admins have none; they derive what they need from their
//! identity key ([`Credentials::secret_for`]).
//!
//! **EDHOC identities** (a client, device or admin with only a long-term key, RFC
//! 9528) have no `identity_key`: their file holds their static P-256 key and its CCS
//! credential (`"edhoc": {"private_key": hex, "cred": hex}`), and in `edhoc_peers` the
//! public credentials of the servers they may run EDHOC with. A server's file lists
//! in `edhoc_peers` the public credentials of the EDHOC identities that may talk to it
//! (its own static key is derived from its identity key: [`Credentials::server_edhoc_key`]).
//!
//! ```json
//! {
//!   "name": "sensor-9", "role": "device", "kid": "0309",
//!   "edhoc": { "private_key": "…64 hex digits…", "cred": "a2026873656e736f722d39…" },
//!   "edhoc_peers": [ { "name": "zookeeper", "role": "zookeeper", "kid": "00", "cred": "…" } ]
//! }
//! ```

use super::{pairwise_secret, Identity, KeyTable, PeerKey, Role, KEY_LEN};
use crate::edhoc::StaticKey;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Why a credential file cannot be loaded or written; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// It cannot be read (missing, no permission, a directory).
    #[error("cannot read credentials {}: {source}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// It is not JSON.
    #[error("credentials {} are not JSON: {message}", path.display())]
    NotJson {
        /// The file.
        path: PathBuf,
        /// The parser's complaint, with line and column.
        message: String,
    },
    /// Group or others may read it.
    #[error(
        "credentials {} are readable by group or others (mode {mode:03o}): chmod 600 {}",
        path.display(),
        path.display()
    )]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A field is missing or wrong.
    #[error("credentials {}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Which field and why.
        message: String,
    },
    /// It cannot be written.
    #[error("cannot write credentials {}: {source}", path.display())]
    Unwritable {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// One principal's credentials: who it is, its identity key (or, for an EDHOC
/// identity, its static key), and (servers) its peers.
#[derive(Clone)]
pub struct Credentials {
    identity: Identity,
    identity_key: Option<[u8; KEY_LEN]>,
    peers: Option<KeyTable>,
    edhoc_key: Option<StaticKey>,
    edhoc_peers: Vec<EdhocPeer>,
}

/// A public EDHOC credential and whose it is: on a server, an EDHOC identity that may
/// talk to it; in an EDHOC identity's file, a server it may run EDHOC with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdhocPeer {
    /// Who (the credential's key ID is the identity's).
    pub identity: Identity,
    /// The CCS credential, CBOR (public).
    pub ccs: Vec<u8>,
}

impl core::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Credentials")
            .field("identity", &self.identity)
            .field("peers", &self.peers.as_ref().map(KeyTable::len))
            .field("edhoc", &self.edhoc_key.is_some())
            .field("edhoc_peers", &self.edhoc_peers.len())
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
struct FileForm {
    name: String,
    role: String,
    kid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    identity_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    peers: Option<Vec<PeerForm>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    edhoc: Option<EdhocForm>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    edhoc_peers: Vec<EdhocPeerForm>,
}

#[derive(Serialize, Deserialize)]
struct EdhocForm {
    private_key: String,
    cred: String,
}

#[derive(Serialize, Deserialize)]
struct EdhocPeerForm {
    name: String,
    role: String,
    kid: String,
    cred: String,
}

#[derive(Serialize, Deserialize)]
struct PeerForm {
    name: String,
    role: String,
    kid: String,
    secret: String,
}

impl Credentials {
    /// Credentials of `identity`; `peers` for a server.
    pub fn new(identity: Identity, identity_key: [u8; KEY_LEN], peers: Option<KeyTable>) -> Self {
        Credentials {
            identity,
            identity_key: Some(identity_key),
            peers,
            edhoc_key: None,
            edhoc_peers: Vec::new(),
        }
    }

    /// Credentials of an EDHOC identity (a client, device or admin with only a
    /// long-term key): its static key, and the servers' credentials it may run EDHOC
    /// with.
    pub fn new_edhoc(identity: Identity, key: StaticKey, servers: Vec<EdhocPeer>) -> Self {
        Credentials {
            identity,
            identity_key: None,
            peers: None,
            edhoc_key: Some(key),
            edhoc_peers: servers,
        }
    }

    /// The same credentials with `edhoc_peers` (a server's: the EDHOC identities that
    /// may talk to it).
    pub fn with_edhoc_peers(mut self, peers: Vec<EdhocPeer>) -> Self {
        self.edhoc_peers = peers;
        self
    }

    /// Reads and checks a credential file: mode 0600 (or stricter), JSON, every field
    /// there and well-formed (key IDs naming their role, 32-byte keys and secrets); a
    /// server's (zookeeper, broker) must have `peers`.
    pub fn load(path: impl AsRef<Path>) -> Result<Credentials, CredentialsError> {
        let path = path.as_ref();
        let unreadable = |source| CredentialsError::Unreadable {
            path: path.to_path_buf(),
            source,
        };
        let metadata = std::fs::metadata(path).map_err(unreadable)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = metadata.permissions().mode() & 0o777;
            if metadata.is_file() && mode & 0o077 != 0 {
                return Err(CredentialsError::Permissions {
                    path: path.to_path_buf(),
                    mode,
                });
            }
        }
        #[cfg(not(unix))]
        let _ = metadata;
        let text = std::fs::read_to_string(path).map_err(unreadable)?;
        Self::from_json(&text).map_err(|e| e.at(path))
    }

    /// Parses a credential file's contents (no permission check).
    fn from_json(text: &str) -> Result<Credentials, ParseFailure> {
        let form: FileForm = serde_json::from_str(text).map_err(|e| {
            use serde_json::error::Category;
            match e.classify() {
                Category::Data => ParseFailure::Invalid(e.to_string()),
                _ => ParseFailure::NotJson(e.to_string()),
            }
        })?;
        let invalid = ParseFailure::Invalid;
        let identity = identity_of(&form.name, &form.role, &form.kid).map_err(invalid)?;
        let server = matches!(identity.role, Role::Zookeeper | Role::Broker);
        let identity_key = match (&form.identity_key, &form.edhoc) {
            (Some(key), None) => Some(key_of(key, "identity_key").map_err(invalid)?),
            (None, Some(_)) if server => {
                return Err(invalid(alloc::format!(
                "a {} needs an \"identity_key\" (EDHOC identities are clients, devices and admins)",
                identity.role.name()
            )))
            }
            (None, Some(_)) => None,
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "both \"identity_key\" and \"edhoc\": an identity has one kind of key".into(),
                ))
            }
            (None, None) => return Err(invalid("missing field `identity_key`".into())),
        };
        let edhoc_key = match &form.edhoc {
            None => None,
            Some(edhoc) => {
                let private = key_of(&edhoc.private_key, "edhoc.private_key").map_err(invalid)?;
                let ccs = from_hex(&edhoc.cred)
                    .ok_or_else(|| invalid("\"edhoc.cred\" is not hex".into()))?;
                let key = StaticKey::from_parts(private, &ccs)
                    .map_err(|e| invalid(alloc::format!("\"edhoc\": {e}")))?;
                if key.kid() != identity.kid.as_slice() {
                    return Err(invalid(
                        "\"edhoc.cred\" has another key ID than \"kid\"".into(),
                    ));
                }
                Some(key)
            }
        };
        let mut edhoc_peers = Vec::new();
        for (i, peer) in form.edhoc_peers.iter().enumerate() {
            let at = |e: String| invalid(alloc::format!("edhoc_peers[{i}]: {e}"));
            let identity = identity_of(&peer.name, &peer.role, &peer.kid).map_err(at)?;
            let ccs = from_hex(&peer.cred).ok_or_else(|| at("\"cred\" is not hex".into()))?;
            let credential =
                crate::edhoc::parse_credential(&ccs).map_err(|e| at(alloc::format!("{e}")))?;
            if credential.kid.map(|k| k.as_slice().to_vec()) != Some(identity.kid.clone()) {
                return Err(at("\"cred\" has another key ID than \"kid\"".into()));
            }
            edhoc_peers.push(EdhocPeer { identity, ccs });
        }
        let peers = match form.peers {
            None if matches!(identity.role, Role::Zookeeper | Role::Broker) => {
                return Err(invalid(alloc::format!(
                    "a {}'s credentials need \"peers\" (made by pehra keys)",
                    identity.role.name()
                )))
            }
            None => None,
            Some(peers) => {
                let mut table = KeyTable::new();
                for (i, peer) in peers.iter().enumerate() {
                    let at = |e: String| invalid(alloc::format!("peers[{i}]: {e}"));
                    let identity = identity_of(&peer.name, &peer.role, &peer.kid).map_err(at)?;
                    let secret = key_of(&peer.secret, "secret").map_err(at)?;
                    if table.get(&identity.kid).is_some() {
                        return Err(at(alloc::format!("key ID {} twice", peer.kid)));
                    }
                    table.insert(PeerKey { identity, secret });
                }
                Some(table)
            }
        };
        Ok(Credentials {
            identity,
            identity_key,
            peers,
            edhoc_key,
            edhoc_peers,
        })
    }

    /// The file's contents (pretty JSON, keys and secrets in hex, peers by key ID).
    pub fn to_json(&self) -> String {
        let form = FileForm {
            name: self.identity.name.clone(),
            role: self.identity.role.name().to_string(),
            kid: to_hex(&self.identity.kid),
            identity_key: self.identity_key.as_ref().map(|k| to_hex(k)),
            edhoc: self.edhoc_key.as_ref().map(|key| EdhocForm {
                private_key: to_hex(key.private()),
                cred: to_hex(key.ccs()),
            }),
            edhoc_peers: self
                .edhoc_peers
                .iter()
                .map(|peer| EdhocPeerForm {
                    name: peer.identity.name.clone(),
                    role: peer.identity.role.name().to_string(),
                    kid: to_hex(&peer.identity.kid),
                    cred: to_hex(&peer.ccs),
                })
                .collect(),
            peers: self.peers.as_ref().map(|table| {
                table
                    .iter()
                    .map(|peer| PeerForm {
                        name: peer.identity.name.clone(),
                        role: peer.identity.role.name().to_string(),
                        kid: to_hex(&peer.identity.kid),
                        secret: to_hex(&peer.secret),
                    })
                    .collect()
            }),
        };
        let mut json = serde_json::to_string_pretty(&form).expect("strings serialize");
        json.push('\n');
        json
    }

    /// Writes them to `path` with [`write_private_file`] (0600, atomically).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), CredentialsError> {
        let path = path.as_ref();
        write_private_file(path, self.to_json().as_bytes()).map_err(|source| {
            CredentialsError::Unwritable {
                path: path.to_path_buf(),
                source,
            }
        })
    }

    /// Who they are for.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The 32-byte identity key (never sent; only pairwise secrets are derived from it).
    ///
    /// # Panics
    /// For an EDHOC identity's credentials, which have none ([`Credentials::edhoc_key`]
    /// is `Some`). Servers' credentials always have one.
    pub fn identity_key(&self) -> &[u8; KEY_LEN] {
        self.identity_key
            .as_ref()
            .expect("EDHOC credentials have no identity key (check Credentials::edhoc_key)")
    }

    /// The static key of an EDHOC identity (`None` for pre-provisioned ones).
    pub fn edhoc_key(&self) -> Option<&StaticKey> {
        self.edhoc_key.as_ref()
    }

    /// On a server, the EDHOC identities that may talk to it; for an EDHOC identity,
    /// the servers it may run EDHOC with.
    pub fn edhoc_peers(&self) -> &[EdhocPeer] {
        &self.edhoc_peers
    }

    /// A server's EDHOC static key, derived from its identity key
    /// ([`StaticKey::derive`]: `pehra keys` derives the same to give its public
    /// credential to EDHOC identities). `None` without an identity key.
    pub fn server_edhoc_key(&self) -> Option<StaticKey> {
        let key = self.identity_key.as_ref()?;
        Some(StaticKey::derive(
            key,
            &self.identity.kid,
            &self.identity.name,
        ))
    }

    /// A server's peers (`None` for clients, devices and admins).
    pub fn key_table(&self) -> Option<KeyTable> {
        self.peers.clone()
    }

    /// The OSCORE Master Secret towards the server whose key ID is `server_kid`
    /// ([`pairwise_secret`] of the identity key).
    ///
    /// # Panics
    /// For an EDHOC identity's credentials (see [`Credentials::identity_key`]).
    pub fn secret_for(&self, server_kid: &[u8]) -> [u8; KEY_LEN] {
        pairwise_secret(self.identity_key(), server_kid)
    }
}

/// A parse failure before the file's name is known.
enum ParseFailure {
    NotJson(String),
    Invalid(String),
}

impl ParseFailure {
    fn at(self, path: &Path) -> CredentialsError {
        let path = path.to_path_buf();
        match self {
            ParseFailure::NotJson(message) => CredentialsError::NotJson { path, message },
            ParseFailure::Invalid(message) => CredentialsError::Invalid { path, message },
        }
    }
}

fn identity_of(name: &str, role: &str, kid: &str) -> Result<Identity, String> {
    if name.is_empty() {
        return Err("\"name\" is empty".into());
    }
    let role: Role = role.parse().map_err(|e| alloc::format!("\"role\": {e}"))?;
    let kid = from_hex(kid).ok_or_else(|| alloc::format!("\"kid\" {kid:?} is not hex"))?;
    if kid.is_empty() || kid.len() > crate::oscore::MAX_ID_LEN {
        return Err(alloc::format!(
            "\"kid\" must be 1 to {} bytes",
            crate::oscore::MAX_ID_LEN
        ));
    }
    if Role::from_kid(&kid) != Some(role) {
        return Err(alloc::format!(
            "\"kid\" {} is not a {}'s key ID",
            to_hex(&kid),
            role.name()
        ));
    }
    Ok(Identity {
        name: name.to_string(),
        role,
        kid,
    })
}

fn key_of(hex: &str, field: &str) -> Result<[u8; KEY_LEN], String> {
    from_hex(hex)
        .and_then(|bytes| <[u8; KEY_LEN]>::try_from(bytes).ok())
        .ok_or_else(|| alloc::format!("\"{field}\" must be {} hex digits", KEY_LEN * 2))
}

/// Lowercase hex.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        hex.push(DIGITS[usize::from(b >> 4)] as char);
        hex.push(DIGITS[usize::from(b & 15)] as char);
    }
    hex
}

/// The bytes of hex text (either case), `None` if it is not.
pub fn from_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    hex.as_bytes()
        .chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

/// Writes a secret file: a temporary file beside it created mode 0600, written,
/// fsynced, renamed over `path`, then the directory fsynced. A reader sees the old
/// contents or the new, never part, and never a moment of wider permissions.
pub fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(alloc::format!(".tmp-{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let result = (|| {
        let mut file = options.open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)?;
        #[cfg(unix)]
        std::fs::File::open(dir)?.sync_all()?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::{broker_kid, kid, zookeeper_kid};
    use std::os::unix::fs::PermissionsExt;

    struct TempDir(PathBuf);
    impl TempDir {
        fn new(name: &str) -> TempDir {
            let dir = std::env::temp_dir()
                .join(alloc::format!("pehra-cred-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn alice() -> Credentials {
        Credentials::new(
            Identity {
                name: "alice".into(),
                role: Role::Client,
                kid: kid(Role::Client, 1),
            },
            [7; KEY_LEN],
            None,
        )
    }

    fn broker(alice: &Credentials) -> Credentials {
        let mut table = KeyTable::new();
        table.insert(PeerKey {
            identity: alice.identity().clone(),
            secret: alice.secret_for(&broker_kid(2)),
        });
        Credentials::new(
            Identity {
                name: "broker-2".into(),
                role: Role::Broker,
                kid: broker_kid(2),
            },
            [9; KEY_LEN],
            Some(table),
        )
    }

    #[test]
    fn a_round_trip_keeps_everything_and_writes_0600() {
        let dir = TempDir::new("round-trip");
        let alice = alice();
        let broker = broker(&alice);
        for creds in [&alice, &broker] {
            let path = dir.0.join(alloc::format!("{}.cred", creds.identity().name));
            creds.save(&path).unwrap();
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
            let loaded = Credentials::load(&path).unwrap();
            assert_eq!(loaded.identity(), creds.identity());
            assert_eq!(loaded.identity_key(), creds.identity_key());
            assert_eq!(loaded.to_json(), creds.to_json());
        }
        let loaded = Credentials::load(dir.0.join("broker-2.cred")).unwrap();
        let table = loaded.key_table().unwrap();
        let peer = table.get(&kid(Role::Client, 1)).unwrap();
        assert_eq!(peer.identity.name, "alice");
        // the broker holds exactly what alice derives for it
        assert_eq!(peer.secret, alice.secret_for(&broker_kid(2)));
        assert_ne!(peer.secret, alice.secret_for(&zookeeper_kid()));
        assert!(Credentials::load(dir.0.join("alice.cred"))
            .unwrap()
            .key_table()
            .is_none());
        // no temporary files left behind
        let names: Vec<_> = std::fs::read_dir(&dir.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        // rewriting replaces
        let mut other = alice.clone();
        other.identity_key = Some([8; KEY_LEN]);
        other.save(dir.0.join("alice.cred")).unwrap();
        assert_eq!(
            Credentials::load(dir.0.join("alice.cred"))
                .unwrap()
                .identity_key(),
            &[8; KEY_LEN]
        );
    }

    #[test]
    fn readable_files_are_refused_with_a_hint() {
        let dir = TempDir::new("perms");
        let path = dir.0.join("alice.cred");
        alice().save(&path).unwrap();
        for mode in [0o640, 0o604, 0o644] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = Credentials::load(&path).unwrap_err();
            assert!(matches!(e, CredentialsError::Permissions { .. }));
            let text = e.to_string();
            assert!(text.contains("chmod 600"), "{text}");
            assert!(text.contains(&path.display().to_string()), "{text}");
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        Credentials::load(&path).unwrap();
    }

    #[test]
    fn bad_files_say_which_and_why() {
        let dir = TempDir::new("bad");
        let write = |name: &str, text: &str| {
            let path = dir.0.join(name);
            write_private_file(&path, text.as_bytes()).unwrap();
            path
        };
        let e = Credentials::load(dir.0.join("missing.cred")).unwrap_err();
        assert!(matches!(e, CredentialsError::Unreadable { .. }));
        assert!(e.to_string().contains("missing.cred"), "{e}");

        let path = write("garbage.cred", "{ not json");
        let e = Credentials::load(&path).unwrap_err();
        assert!(matches!(e, CredentialsError::NotJson { .. }), "{e}");
        assert!(e.to_string().contains("garbage.cred"), "{e}");

        let path = write(
            "nokid.cred",
            r#"{"name":"a","role":"client","identity_key":"00"}"#,
        );
        let e = Credentials::load(&path).unwrap_err().to_string();
        assert!(
            e.contains("nokid.cred") && e.contains("missing field `kid`"),
            "{e}"
        );

        let key = "11".repeat(32);
        let path = write(
            "wrongkid.cred",
            &alloc::format!(
                r#"{{"name":"a","role":"client","kid":"0101","identity_key":"{key}"}}"#
            ),
        );
        let e = Credentials::load(&path).unwrap_err().to_string();
        assert!(e.contains("is not a client's key ID"), "{e}");

        let path = write(
            "shortkey.cred",
            r#"{"name":"a","role":"client","kid":"0201","identity_key":"1234"}"#,
        );
        let e = Credentials::load(&path).unwrap_err().to_string();
        assert!(e.contains("\"identity_key\" must be 64 hex digits"), "{e}");

        let path = write(
            "server.cred",
            &alloc::format!(
                r#"{{"name":"broker-1","role":"broker","kid":"0101","identity_key":"{key}"}}"#
            ),
        );
        let e = Credentials::load(&path).unwrap_err().to_string();
        assert!(e.contains("need \"peers\""), "{e}");

        let path = write(
            "badpeer.cred",
            &alloc::format!(
                r#"{{"name":"broker-1","role":"broker","kid":"0101","identity_key":"{key}",
                "peers":[{{"name":"a","role":"client","kid":"0201","secret":"zz"}}]}}"#
            ),
        );
        let e = Credentials::load(&path).unwrap_err().to_string();
        assert!(e.contains("peers[0]: \"secret\""), "{e}");
    }

    fn sensor() -> Credentials {
        let identity = Identity {
            name: "sensor-9".into(),
            role: Role::Device,
            kid: kid(Role::Device, 9),
        };
        let key = StaticKey::derive(&[3; KEY_LEN], &identity.kid, &identity.name);
        let zk = Identity {
            name: "zookeeper".into(),
            role: Role::Zookeeper,
            kid: zookeeper_kid(),
        };
        let zk_key = StaticKey::derive(&[4; KEY_LEN], &zk.kid, &zk.name);
        let server = EdhocPeer {
            identity: zk,
            ccs: zk_key.ccs().to_vec(),
        };
        Credentials::new_edhoc(identity, key, alloc::vec![server])
    }

    #[test]
    fn edhoc_credentials_round_trip_0600_and_have_no_identity_key() {
        let dir = TempDir::new("edhoc");
        let path = dir.0.join("sensor-9.cred");
        let sensor = sensor();
        sensor.save(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("identity_key"), "{text}");
        let loaded = Credentials::load(&path).unwrap();
        assert_eq!(loaded.to_json(), sensor.to_json());
        assert_eq!(
            loaded.edhoc_key().unwrap().ccs(),
            sensor.edhoc_key().unwrap().ccs()
        );
        assert_eq!(loaded.edhoc_peers()[0].identity.name, "zookeeper");
        assert!(loaded.server_edhoc_key().is_none());
        // The same permission check as every credential file.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            Credentials::load(&path).unwrap_err(),
            CredentialsError::Permissions { .. }
        ));
    }

    #[test]
    fn bad_edhoc_files_say_why() {
        let dir = TempDir::new("edhoc-bad");
        let good = sensor().to_json();
        let cases = [
            // another identity's credential
            (
                good.replace("\"kid\": \"0309\"", "\"kid\": \"0308\""),
                "another key ID",
            ),
            // a private key that is not the credential's
            (
                good.replace(
                    &to_hex(sensor().edhoc_key().unwrap().private()),
                    &to_hex(StaticKey::derive(&[8; KEY_LEN], &[3, 9], "x").private()),
                ),
                "does not hold the private key's public key",
            ),
            // a server cannot be an EDHOC identity
            (
                good.replace(
                    "\"role\": \"device\",\n  \"kid\": \"0309\"",
                    "\"role\": \"broker\",\n  \"kid\": \"0109\"",
                ),
                "needs an \"identity_key\"",
            ),
        ];
        for (i, (text, why)) in cases.iter().enumerate() {
            let path = dir.0.join(alloc::format!("{i}.cred"));
            write_private_file(&path, text.as_bytes()).unwrap();
            let e = Credentials::load(&path).unwrap_err().to_string();
            assert!(e.contains(why), "case {i}: {e}");
        }
    }

    #[test]
    fn hex() {
        assert_eq!(to_hex(&[0, 0xab, 0x10]), "00ab10");
        assert_eq!(from_hex("00AB10"), Some(alloc::vec![0, 0xab, 0x10]));
        assert_eq!(from_hex("0"), None);
        assert_eq!(from_hex("0g"), None);
        assert_eq!(from_hex(""), Some(alloc::vec![]));
    }
}
