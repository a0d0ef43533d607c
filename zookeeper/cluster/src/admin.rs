//! The PEHRA admin key: reading it, signing a [`ModeChange`] with it (the CLI's side)
//! and checking one: [`MODE_ROUTE`], the zookeeper's `POST /pehra/mode`, which
//! `pehra zookeeper` gives its server as an admin route (the zookeeper runs the rule in
//! one step of its core and writes what it returns).
//!
//! The MAC is HMAC-SHA256 under the key over `"pehra-mode-v1"`, `enabled` (one byte),
//! `issued_ms` (8 bytes, big-endian) and the 16-byte nonce.

use crate::{PEHRA, PEHRA_ADMIN};
use hmac::{Hmac, Mac};
use pehra_shared::api::{decode_request, error_response};
use pehra_shared::coap::Response;
use pehra_shared::wire::{self, AdminSwitch, ErrorKind, ModeChange};
use pehra_zookeeper::server::{AdminRequest, AdminRoute, AdminWrite};
use pehra_zookeeper::tree::Op;
use rand::TryRng;
use sha2::Sha256;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// The shortest admin key accepted, in bytes.
pub const MIN_KEY_LEN: usize = 16;

/// What the MAC's input starts with (the message's type and version).
const DOMAIN: &[u8] = b"pehra-mode-v1";

/// Why an admin key file could not be used.
#[derive(Debug, Error)]
pub enum AdminKeyError {
    /// The file could not be read.
    #[error("cannot read the admin key file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The key is too short to be safe.
    #[error(
        "the admin key in {path} is {len} bytes long (after trimming whitespace); \
         at least {MIN_KEY_LEN} are needed: generate one with e.g. `head -c 32 /dev/urandom | base64 > {path}`"
    )]
    TooShort {
        /// The file.
        path: PathBuf,
        /// The key's length.
        len: usize,
    },
}

/// Reads the admin key from `path`: the file's bytes with surrounding whitespace
/// trimmed; at least [`MIN_KEY_LEN`] bytes.
pub fn read_key_file(path: &Path) -> Result<Vec<u8>, AdminKeyError> {
    let bytes = std::fs::read(path).map_err(|source| AdminKeyError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let key = bytes.trim_ascii().to_vec();
    if key.len() < MIN_KEY_LEN {
        return Err(AdminKeyError::TooShort {
            path: path.to_path_buf(),
            len: key.len(),
        });
    }
    Ok(key)
}

fn mac_for(key: &[u8], enabled: bool, issued_ms: u64, nonce: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(DOMAIN);
    mac.update(&[u8::from(enabled)]);
    mac.update(&issued_ms.to_be_bytes());
    mac.update(nonce);
    mac
}

/// A [`ModeChange`] switching PEHRA on (`enabled`) or off, issued at `issued_ms` (ms
/// since the Unix epoch), with a fresh 16-byte nonce from the OS RNG, signed with `key`.
pub fn sign_mode_change(key: &[u8], enabled: bool, issued_ms: u64) -> ModeChange {
    let mut nonce = vec![0u8; 16];
    rand::rngs::SysRng
        .try_fill_bytes(&mut nonce)
        .expect("OS randomness");
    let mac = mac_for(key, enabled, issued_ms, &nonce)
        .finalize()
        .into_bytes()
        .to_vec();
    ModeChange {
        enabled,
        issued_ms,
        nonce,
        mac,
    }
}

/// Whether `change`'s MAC is right for `key` (compared in constant time). Freshness is
/// the caller's to check.
pub fn verify_mode_change(key: &[u8], change: &ModeChange) -> bool {
    mac_for(key, change.enabled, change.issued_ms, &change.nonce)
        .verify_slice(&change.mac)
        .is_ok()
}

/// How far in the future a mode change may be issued (clock skew allowance).
const MODE_CHANGE_MAX_FUTURE_MS: u64 = 5 * 60 * 1000;

/// PEHRA's mode switch, `POST /pehra/mode` (for `ServerConfig::admin_routes`): a signed
/// [`ModeChange`] checked by [`mode_change`].
pub const MODE_ROUTE: AdminRoute = AdminRoute {
    path: "pehra/mode",
    resource_type: "pehra.zk.mode",
    rule: mode_change,
};

/// Checks a [`ModeChange`] (signed with the zookeeper's admin key, not issued more than
/// 5 minutes ahead of its clock, newer than the last one accepted in `/pehra/admin`)
/// and writes it to `/pehra/admin` (creating `/pehra` first if needed). Every refusal
/// is 4.01 with the reason; nothing is written.
pub fn mode_change(input: &AdminRequest<'_>) -> Result<AdminWrite, Response> {
    let change: ModeChange = decode_request(input.request)?;
    let refuse = |message: &str| error_response(ErrorKind::Unauthorized, message);
    let Some(key) = input.key else {
        return Err(refuse(
            "PEHRA mode changes are disabled: this zookeeper has no admin key (start it with --admin-key FILE)",
        ));
    };
    if !verify_mode_change(key, &change) {
        tracing::warn!("pehra mode change refused: wrong MAC");
        return Err(refuse(
            "the mode change is not signed with this zookeeper's admin key",
        ));
    }
    let now = input.now_ms;
    if change.issued_ms > now.saturating_add(MODE_CHANGE_MAX_FUTURE_MS) {
        return Err(refuse(&format!(
            "the mode change is issued at {} ms, more than 5 minutes after the zookeeper's clock ({now} ms)",
            change.issued_ms
        )));
    }
    let last = input
        .tree
        .get(PEHRA_ADMIN)
        .and_then(|(data, _)| wire::decode::<AdminSwitch>(data).ok());
    if let Some(last) = last {
        if change.issued_ms <= last.issued_ms {
            tracing::warn!(
                issued_ms = change.issued_ms,
                last = last.issued_ms,
                "pehra mode change refused: replayed or stale"
            );
            return Err(refuse(&format!(
                "the mode change is not fresh: issued at {} ms, but the last accepted one was issued at {} ms (replayed?)",
                change.issued_ms, last.issued_ms
            )));
        }
    }
    let data = wire::encode(&AdminSwitch {
        enabled: change.enabled,
        issued_ms: change.issued_ms,
    })
    .expect("encodes");
    let create = |path: &str, data: Vec<u8>| Op::Create {
        path: path.into(),
        data,
        ephemeral: false,
        sequential: false,
        session: None,
    };
    let mut ops = Vec::new();
    if input.tree.get(PEHRA).is_none() {
        ops.push(create(PEHRA, Vec::new()));
    }
    ops.push(if input.tree.get(PEHRA_ADMIN).is_some() {
        Op::SetData {
            path: PEHRA_ADMIN.into(),
            data,
            version: None,
        }
    } else {
        create(PEHRA_ADMIN, data)
    });
    Ok(AdminWrite {
        ops,
        done: format!(
            "pehra mode changed by the admin: enabled {}, issued at {} ms",
            change.enabled, change.issued_ms
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_change_verifies_only_with_its_key_and_contents() {
        let key = b"0123456789abcdef0123".to_vec();
        let change = sign_mode_change(&key, true, 1_700_000_000_000);
        assert_eq!(change.nonce.len(), 16);
        assert_eq!(change.mac.len(), 32);
        assert!(verify_mode_change(&key, &change));
        assert!(!verify_mode_change(b"another key 0123456", &change));
        for tampered in [
            ModeChange {
                enabled: false,
                ..change.clone()
            },
            ModeChange {
                issued_ms: change.issued_ms + 1,
                ..change.clone()
            },
            ModeChange {
                nonce: vec![0; 16],
                ..change.clone()
            },
            ModeChange {
                mac: change.mac[..31].to_vec(),
                ..change.clone()
            },
        ] {
            assert!(!verify_mode_change(&key, &tampered), "{tampered:?}");
        }
        assert_ne!(
            sign_mode_change(&key, true, 1).nonce,
            sign_mode_change(&key, true, 1).nonce
        );
    }

    #[test]
    fn the_mac_is_hmac_sha256_over_the_documented_bytes() {
        let key = b"k".repeat(16);
        let change = sign_mode_change(&key, false, 0x0102030405060708);
        let mut input = b"pehra-mode-v1".to_vec();
        input.push(0);
        input.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        input.extend_from_slice(&change.nonce);
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
        mac.update(&input);
        assert_eq!(mac.finalize().into_bytes().to_vec(), change.mac);
    }

    #[test]
    fn key_files_are_trimmed_and_short_keys_refused() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good");
        std::fs::write(&good, "  0123456789abcdef\n").unwrap();
        assert_eq!(read_key_file(&good).unwrap(), b"0123456789abcdef");
        let short = dir.path().join("short");
        std::fs::write(&short, "0123456789abcde \n").unwrap();
        let e = read_key_file(&short).unwrap_err();
        assert!(matches!(e, AdminKeyError::TooShort { len: 15, .. }), "{e}");
        assert!(e.to_string().contains("at least 16"));
        assert!(matches!(
            read_key_file(&dir.path().join("missing")),
            Err(AdminKeyError::Read { .. })
        ));
    }
}
