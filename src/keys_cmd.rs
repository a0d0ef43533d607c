//! `pehra keys`: the operator's key registry and every principal's credential file.
//!
//! A keys directory (mode 0700) holds `registry.json`, every identity with its identity
//! key (the operator keeps it offline: whoever has it can be anyone), and one
//! `NAME.cred` per identity that is not revoked ([`Credentials`], mode 0600). A server's
//! file (the zookeeper's, a broker's) also lists its peers: the pairwise secret of every
//! other identity that is not revoked, derived for that server's key ID. So adding,
//! revoking or rotating an identity rewrites every server's file, and the operator
//! copies them out; clients, devices and admins only ever need their own file.
//!
//! An **EDHOC identity** (`pehra keys add DIR NAME --role device --edhoc`) has no
//! identity key and shares no secret with anyone: it gets a static P-256 key pair, its
//! file holds the private key and the servers' public EDHOC credentials, and the
//! registry keeps only its public credential, which every server's file lists. It
//! runs EDHOC (RFC 9528) with a server to get an OSCORE context, and is then
//! authorized by its name and role like any other identity. Its private key exists
//! only in its file: `add` and `rotate` write it, later commands only refresh that
//! file's list of servers while it is still in the keys directory.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use pehra_shared::edhoc::StaticKey;
use pehra_shared::security::credentials::{
    from_hex, to_hex, write_private_file, Credentials, EdhocPeer,
};
use pehra_shared::security::{kid, pairwise_secret, Identity, KeyTable, PeerKey, Role, KEY_LEN};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Arguments of `pehra keys`.
#[derive(Args)]
#[command(
    after_help = "The keys directory is the registry of every identity key: keep it on the \
    operator's machine, offline, and copy out only the .cred files, each to where its \
    principal runs. Servers (the zookeeper, brokers) must be given their file again after \
    every add, revoke or rotate: it lists the secrets of everyone who may talk to them."
)]
pub struct KeysArgs {
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a keys directory: the zookeeper, brokers 1..N, and the named clients,
    /// devices and admins, each with a new identity key and credential file.
    Init {
        /// The directory to create (it must not hold a registry yet).
        dir: PathBuf,
        /// How many brokers (broker-1 .. broker-N).
        #[arg(long, default_value_t = 3)]
        brokers: u32,
        /// Client names, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "client")]
        clients: Vec<String>,
        /// Device names, comma-separated (none by default).
        #[arg(long, value_delimiter = ',')]
        devices: Vec<String>,
        /// Admin names, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "admin")]
        admins: Vec<String>,
    },
    /// Add an identity and rewrite every server's credentials to let it in.
    #[command(
        after_help = "A broker is named broker-N, N its broker id (--number, if given, \
        must agree). Other roles get the next free number unless --number says otherwise; \
        numbers, like names, are never reused, not even after a revocation."
    )]
    Add {
        /// The keys directory.
        dir: PathBuf,
        /// The new identity's name: 1 to 64 of letters, digits, '.', '_' and '-'.
        name: String,
        /// zookeeper, broker, client, device or admin.
        #[arg(long)]
        role: Role,
        /// Its number (the rest of its OSCORE key ID).
        #[arg(long)]
        number: Option<u32>,
        /// An EDHOC identity (clients, devices and admins): a static key pair instead of
        /// an identity key; servers keep only its public credential, and it runs EDHOC
        /// to get its OSCORE contexts.
        #[arg(long)]
        edhoc: bool,
    },
    /// Revoke an identity: it is marked revoked, its credential file removed, and every
    /// server's credentials rewritten without it.
    #[command(
        after_help = "It is locked out of each server as soon as that server has its \
        new file (restart it: a server reads its credentials at start). A revoked name and number are never given out \
        again."
    )]
    Revoke {
        /// The keys directory.
        dir: PathBuf,
        /// Who.
        name: String,
    },
    /// Give an identity a new identity key: its credential file and every server's are
    /// rewritten (the old key stops working at each server that has its new file).
    Rotate {
        /// The keys directory.
        dir: PathBuf,
        /// Who.
        name: String,
    },
    /// List the identities (no secrets).
    List {
        /// The keys directory.
        dir: PathBuf,
    },
}

/// `pehra keys ...`.
pub fn run(args: KeysArgs) -> Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match args.command {
        KeysCommand::Init {
            dir,
            brokers,
            clients,
            devices,
            admins,
        } => init(&mut out, &dir, brokers, &clients, &devices, &admins)?,
        KeysCommand::Add {
            dir,
            name,
            role,
            number,
            edhoc,
        } => {
            let mut registry = Registry::load(&dir)?;
            let (entry, static_key) = if edhoc {
                let (entry, key) = registry.add_edhoc(&name, role, number)?;
                (entry, Some(key))
            } else {
                (registry.add(&name, role, number)?, None)
            };
            registry.save(&dir)?;
            let kind = if edhoc { " (EDHOC)" } else { "" };
            writeln!(
                out,
                "added {} {name}{kind} (key ID {})",
                role.name(),
                entry.kid
            )?;
            if let Some(key) = static_key {
                registry.save_edhoc_credentials(&dir, &entry, key)?;
            }
            let written = write_credentials(&dir, &registry, Which::ServersAnd(&name))?;
            report(&mut out, &dir, &registry, &written)?;
        }
        KeysCommand::Revoke { dir, name } => {
            let mut registry = Registry::load(&dir)?;
            let entry = registry.entry_mut(&name)?;
            entry.revoked = true;
            let role = entry.role;
            registry.save(&dir)?;
            writeln!(out, "revoked {} {name}", role.name())?;
            let file = cred_path(&dir, &name);
            match std::fs::remove_file(&file) {
                Ok(()) => writeln!(out, "removed {}", file.display())?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("removing {}", file.display())),
            }
            let written = write_credentials(&dir, &registry, Which::Servers)?;
            report(&mut out, &dir, &registry, &written)?;
            writeln!(
                out,
                "{name} is locked out of each server once that server has its new file; \
                 destroy every other copy of {name}.cred"
            )?;
        }
        KeysCommand::Rotate { dir, name } => {
            let mut registry = Registry::load(&dir)?;
            let entry = registry.entry_mut(&name)?;
            let role = entry.role;
            if entry.edhoc_cred.is_some() {
                let key = new_static_key(entry)?;
                entry.edhoc_cred = Some(to_hex(key.ccs()));
                let entry = entry.clone();
                registry.save(&dir)?;
                writeln!(out, "new EDHOC key pair for {} {name}", role.name())?;
                registry.save_edhoc_credentials(&dir, &entry, key)?;
            } else {
                entry.identity_key = Some(to_hex(&new_key()?));
                registry.save(&dir)?;
                writeln!(out, "new identity key for {} {name}", role.name())?;
            }
            let written = write_credentials(&dir, &registry, Which::ServersAnd(&name))?;
            report(&mut out, &dir, &registry, &written)?;
            writeln!(
                out,
                "until both {name} and a server have their new files, that server refuses {name}"
            )?;
        }
        KeysCommand::List { dir } => {
            let registry = Registry::load(&dir)?;
            writeln!(
                out,
                "{:<24} {:<10} {:>10}  {:<12} status",
                "name", "role", "number", "key ID"
            )?;
            for e in &registry.identities {
                let status = if e.revoked {
                    "revoked".to_string()
                } else if e.edhoc_cred.is_some() {
                    "active, EDHOC".to_string()
                } else if is_server(e.role) {
                    let peers = registry.peers_of(e)?.len();
                    format!("active, {peers} peers")
                } else {
                    "active".to_string()
                };
                writeln!(
                    out,
                    "{:<24} {:<10} {:>10}  {:<12} {status}",
                    e.name,
                    e.role.name(),
                    e.number,
                    e.kid
                )?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn init(
    out: &mut impl Write,
    dir: &Path,
    brokers: u32,
    clients: &[String],
    devices: &[String],
    admins: &[String],
) -> Result<()> {
    if dir.join(REGISTRY).exists() {
        bail!(
            "{} exists: {} is already a keys directory (use pehra keys add)",
            dir.join(REGISTRY).display(),
            dir.display()
        );
    }
    let mut registry = Registry {
        version: 1,
        identities: Vec::new(),
    };
    registry.add("zookeeper", Role::Zookeeper, Some(0))?;
    for id in 1..=brokers {
        registry.add(&format!("broker-{id}"), Role::Broker, Some(id))?;
    }
    for (names, role) in [
        (clients, Role::Client),
        (devices, Role::Device),
        (admins, Role::Admin),
    ] {
        for name in names.iter().filter(|n| !n.is_empty()) {
            registry.add(name, role, None)?;
        }
    }
    create_private_dir(dir)?;
    writeln!(
        out,
        "created {} (mode 0700): keep it offline, it holds every identity key",
        dir.display()
    )?;
    registry.save(dir)?;
    let written = write_credentials(dir, &registry, Which::All)?;
    report(out, dir, &registry, &written)?;
    Ok(())
}

const REGISTRY: &str = "registry.json";

/// `registry.json`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Registry {
    version: u32,
    identities: Vec<Entry>,
}

/// One identity in the registry.
#[derive(Serialize, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    #[serde(with = "role_name")]
    role: Role,
    number: u32,
    /// The OSCORE key ID, hex.
    kid: String,
    /// The identity key, hex (none for an EDHOC identity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    identity_key: Option<String>,
    /// An EDHOC identity's public CCS credential, hex (its private key is only in its
    /// credential file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    edhoc_cred: Option<String>,
    #[serde(default)]
    revoked: bool,
}

mod role_name {
    use pehra_shared::security::Role;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(role: &Role, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(role.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Role, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

impl Entry {
    fn identity(&self) -> Result<Identity> {
        Ok(Identity {
            name: self.name.clone(),
            role: self.role,
            kid: from_hex(&self.kid)
                .with_context(|| format!("{REGISTRY}: {}: bad key ID", self.name))?,
        })
    }

    fn key(&self) -> Result<[u8; KEY_LEN]> {
        self.identity_key
            .as_deref()
            .and_then(from_hex)
            .and_then(|k| <[u8; KEY_LEN]>::try_from(k).ok())
            .with_context(|| format!("{REGISTRY}: {}: bad identity key", self.name))
    }

    /// An EDHOC identity's public credential, `None` for others.
    fn edhoc_ccs(&self) -> Result<Option<Vec<u8>>> {
        let Some(hex) = &self.edhoc_cred else {
            return Ok(None);
        };
        let ccs = from_hex(hex)
            .with_context(|| format!("{REGISTRY}: {}: bad EDHOC credential", self.name))?;
        pehra_shared::edhoc::parse_credential(&ccs)
            .with_context(|| format!("{REGISTRY}: {}: bad EDHOC credential", self.name))?;
        Ok(Some(ccs))
    }

    /// The entry's key material is well-formed: an identity key, or (not a server) an
    /// EDHOC credential, not both.
    fn check(&self) -> Result<()> {
        self.identity()?;
        match (&self.identity_key, &self.edhoc_cred) {
            (Some(_), None) => self.key().map(drop),
            (None, Some(_)) if !is_server(self.role) => self.edhoc_ccs().map(drop),
            _ => bail!(
                "{REGISTRY}: {}: needs an identity key{}",
                self.name,
                if is_server(self.role) {
                    ""
                } else {
                    " or an EDHOC credential, not both"
                }
            ),
        }
    }
}

fn is_server(role: Role) -> bool {
    matches!(role, Role::Zookeeper | Role::Broker)
}

impl Registry {
    fn load(dir: &Path) -> Result<Registry> {
        let path = dir.join(REGISTRY);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "{} is not a keys directory (no {REGISTRY}): create one with pehra keys init {}",
                dir.display(),
                dir.display()
            ),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let registry: Registry = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{} is not a valid registry: {e}", path.display()))?;
        for entry in &registry.identities {
            entry.check()?;
        }
        Ok(registry)
    }

    fn save(&self, dir: &Path) -> Result<()> {
        let path = dir.join(REGISTRY);
        let mut json = serde_json::to_string_pretty(self).expect("serializes");
        json.push('\n');
        write_private_file(&path, json.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    }

    fn entry_mut(&mut self, name: &str) -> Result<&mut Entry> {
        let entry = self
            .identities
            .iter_mut()
            .find(|e| e.name == name)
            .with_context(|| format!("no identity named {name:?} (see pehra keys list)"))?;
        if entry.revoked {
            bail!("{name} is revoked");
        }
        Ok(entry)
    }

    /// Adds a new EDHOC identity with a fresh static key pair; returns it with its
    /// private key (which the registry does not keep).
    fn add_edhoc(
        &mut self,
        name: &str,
        role: Role,
        number: Option<u32>,
    ) -> Result<(Entry, StaticKey)> {
        if is_server(role) {
            bail!(
                "a {} cannot be an EDHOC identity (servers have identity keys)",
                role.name()
            );
        }
        let mut entry = self.add(name, role, number)?;
        let key = new_static_key(&entry)?;
        entry.identity_key = None;
        entry.edhoc_cred = Some(to_hex(key.ccs()));
        *self.identities.last_mut().expect("add pushed the entry") = entry.clone();
        Ok((entry, key))
    }

    /// The servers' EDHOC credentials (derived from their identity keys), for EDHOC
    /// identities' files.
    fn edhoc_servers(&self) -> Result<Vec<EdhocPeer>> {
        self.identities
            .iter()
            .filter(|e| is_server(e.role) && !e.revoked)
            .map(|e| {
                let identity = e.identity()?;
                let key = StaticKey::derive(&e.key()?, &identity.kid, &identity.name);
                Ok(EdhocPeer {
                    identity,
                    ccs: key.ccs().to_vec(),
                })
            })
            .collect()
    }

    /// The EDHOC identities a server lists (not revoked).
    fn edhoc_peers(&self) -> Result<Vec<EdhocPeer>> {
        let mut peers = Vec::new();
        for e in &self.identities {
            if e.revoked {
                continue;
            }
            if let Some(ccs) = e.edhoc_ccs()? {
                peers.push(EdhocPeer {
                    identity: e.identity()?,
                    ccs,
                });
            }
        }
        Ok(peers)
    }

    /// Writes an EDHOC identity's credential file: its private key and the servers'
    /// credentials.
    fn save_edhoc_credentials(&self, dir: &Path, entry: &Entry, key: StaticKey) -> Result<()> {
        Credentials::new_edhoc(entry.identity()?, key, self.edhoc_servers()?)
            .save(cred_path(dir, &entry.name))?;
        Ok(())
    }

    /// Adds a new identity with a fresh key.
    fn add(&mut self, name: &str, role: Role, number: Option<u32>) -> Result<Entry> {
        check_name(name)?;
        if let Some(e) = self.identities.iter().find(|e| e.name == name) {
            let revoked = if e.revoked { " (revoked)" } else { "" };
            bail!("the name {name} is taken by a {}{revoked}", e.role.name());
        }
        let number = match role {
            Role::Broker => {
                let id = name
                    .strip_prefix("broker-")
                    .and_then(|id| id.parse::<u32>().ok())
                    .filter(|id| format!("broker-{id}") == name)
                    .with_context(|| {
                        format!("a broker is named broker-N, N its broker id (not {name:?})")
                    })?;
                if number.is_some_and(|n| n != id) {
                    bail!(
                        "{name} has broker id {id}, not --number {}",
                        number.unwrap()
                    );
                }
                id
            }
            Role::Zookeeper => number.unwrap_or(0),
            _ => number.unwrap_or_else(|| {
                self.identities
                    .iter()
                    .filter(|e| e.role == role)
                    .map(|e| e.number.saturating_add(1))
                    .max()
                    .unwrap_or(1)
            }),
        };
        if let Some(e) = self
            .identities
            .iter()
            .find(|e| e.role == role && e.number == number)
        {
            let revoked = if e.revoked { ", revoked" } else { "" };
            bail!(
                "{} number {number} is taken by {}{revoked} (choose another --number)",
                role.name(),
                e.name
            );
        }
        let entry = Entry {
            name: name.to_string(),
            role,
            number,
            kid: to_hex(&kid(role, number)),
            identity_key: Some(to_hex(&new_key()?)),
            edhoc_cred: None,
            revoked: false,
        };
        self.identities.push(entry.clone());
        Ok(entry)
    }

    /// A server's peers: every other identity not revoked, with the pairwise secret it
    /// derives for this server's key ID.
    fn peers_of(&self, server: &Entry) -> Result<KeyTable> {
        let server_kid = server.identity()?.kid;
        let mut table = KeyTable::new();
        for e in &self.identities {
            if e.revoked || e.name == server.name || e.edhoc_cred.is_some() {
                continue;
            }
            table.insert(PeerKey {
                identity: e.identity()?,
                secret: pairwise_secret(&e.key()?, &server_kid),
            });
        }
        Ok(table)
    }

    fn credentials(&self, entry: &Entry) -> Result<Credentials> {
        if !is_server(entry.role) {
            return Ok(Credentials::new(entry.identity()?, entry.key()?, None));
        }
        let peers = Some(self.peers_of(entry)?);
        Ok(Credentials::new(entry.identity()?, entry.key()?, peers)
            .with_edhoc_peers(self.edhoc_peers()?))
    }
}

/// Which credential files to (re)write.
#[derive(Clone, Copy)]
enum Which<'a> {
    /// Everyone's.
    All,
    /// The servers' (their peers changed).
    Servers,
    /// The servers' and this identity's.
    ServersAnd(&'a str),
}

/// Writes the credential files `which` says, of identities not revoked; returns the
/// names written.
fn write_credentials(dir: &Path, registry: &Registry, which: Which<'_>) -> Result<Vec<String>> {
    let mut written = Vec::new();
    for entry in &registry.identities {
        let wanted = match which {
            Which::All => true,
            Which::Servers => is_server(entry.role),
            Which::ServersAnd(name) => is_server(entry.role) || entry.name == name,
        };
        if entry.revoked {
            continue;
        }
        if entry.edhoc_cred.is_some() {
            // Its private key is only in its file: refresh the servers it lists, if
            // the file is still here (the servers may have changed).
            let path = cred_path(dir, &entry.name);
            if path.exists() {
                let old = Credentials::load(&path)?;
                let key = old.edhoc_key().cloned().with_context(|| {
                    format!("{} is not an EDHOC credential file", path.display())
                })?;
                let new = Credentials::new_edhoc(entry.identity()?, key, registry.edhoc_servers()?);
                let just_made = matches!(which, Which::ServersAnd(n) if n == entry.name);
                if new.to_json() != old.to_json() {
                    new.save(&path)?;
                    written.push(entry.name.clone());
                } else if just_made {
                    written.push(entry.name.clone());
                }
            }
            continue;
        }
        if !wanted {
            continue;
        }
        registry
            .credentials(entry)?
            .save(cred_path(dir, &entry.name))?;
        written.push(entry.name.clone());
    }
    Ok(written)
}

/// What was written and where each file goes.
fn report(out: &mut impl Write, dir: &Path, registry: &Registry, written: &[String]) -> Result<()> {
    writeln!(out, "wrote {}", dir.join(REGISTRY).display())?;
    for name in written {
        let entry = registry
            .identities
            .iter()
            .find(|e| &e.name == name)
            .expect("written from the registry");
        let file = cred_path(dir, name);
        let file = file.display();
        let todo = match entry.role {
            Role::Zookeeper => {
                format!("copy {name}.cred to the zookeeper's machine and restart it")
            }
            Role::Broker => format!(
                "copy {name}.cred to broker {}'s machine and restart it",
                entry.number
            ),
            Role::Client => format!("copy {name}.cred to where client {name} runs"),
            Role::Device => format!("provision device {name} with {name}.cred (when flashing it)"),
            Role::Admin => format!("give {name}.cred to admin {name}"),
        };
        writeln!(out, "wrote {file}: {todo}")?;
    }
    Ok(())
}

fn cred_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.cred"))
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 64
        || name == "."
        || name == ".."
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        bail!("invalid name {name:?}: 1 to 64 of letters, digits, '.', '_' and '-'");
    }
    if name == "registry" {
        bail!("invalid name \"registry\": reserved");
    }
    Ok(())
}

/// A new identity key from the operating system's random source.
fn new_key() -> Result<[u8; KEY_LEN]> {
    let mut key = [0u8; KEY_LEN];
    getrandom::fill(&mut key)
        .map_err(|e| anyhow::anyhow!("the system's random source failed for a new key: {e}"))?;
    Ok(key)
}

/// A new static key pair for `entry`, from the operating system's random source.
fn new_static_key(entry: &Entry) -> Result<StaticKey> {
    let identity = entry.identity()?;
    loop {
        // A P-256 scalar: nearly every 32 random bytes are one.
        if let Some(key) = StaticKey::from_private(new_key()?, &identity.kid, &identity.name) {
            return Ok(key);
        }
    }
}

/// Creates `dir` (and parents) mode 0700; an existing one is narrowed to 0700.
fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot set the permissions of {}", dir.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        let mut r = Registry {
            version: 1,
            identities: Vec::new(),
        };
        r.add("zookeeper", Role::Zookeeper, None).unwrap();
        assert_eq!(r.add("broker-2", Role::Broker, None).unwrap().kid, "0102");
        assert!(r.add("broker-x", Role::Broker, None).is_err());
        assert!(r.add("broker-02", Role::Broker, None).is_err());
        assert!(r.add("broker-3", Role::Broker, Some(4)).is_err());
        assert_eq!(r.add("alice", Role::Client, None).unwrap().number, 1);
        assert_eq!(r.add("bob", Role::Client, None).unwrap().number, 2);
        assert_eq!(r.add("s1", Role::Device, None).unwrap().number, 1);
        let e = r
            .add("carol", Role::Client, Some(2))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("client number 2 is taken by bob"), "{e}");
        let e = r
            .add("alice", Role::Device, None)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("taken by a client"), "{e}");
        assert!(r.add("a/b", Role::Client, None).is_err());
        assert!(r.add("", Role::Client, None).is_err());
        assert!(r.add("registry", Role::Client, None).is_err());
        // peers: everyone else
        let broker = r.identities[1].clone();
        let peers = r.peers_of(&broker).unwrap();
        assert_eq!(peers.len(), r.identities.len() - 1);
        assert!(peers.get(&kid(Role::Broker, 2)).is_none());
    }
}
