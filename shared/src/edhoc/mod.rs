//! EDHOC (RFC 9528): an OSCORE security context from long-term keys alone, sans-IO.
//!
//! A principal with only a static P-256 key pair and its CCS credential (no pre-shared
//! secret with the server) runs EDHOC method 3 (static DH on both sides), cipher suite 2
//! (AES-CCM-16-64-128, SHA-256, P-256), credentials referenced by key ID, over
//! `POST /.well-known/edhoc` as RFC 9528 Appendix A.2 says; both ends then derive the
//! OSCORE Master Secret and Salt with the EDHOC exporter (Appendix A.1) and speak OSCORE.
//!
//! The protocol steps are the `lakers` crate's (no_std, formally-verified core, one of
//! the two implementations the LAKE working group tests against); this module wraps it
//! thinly and adds what a server exposed to anyone needs:
//! - [`Initiator`]: message_1 out, message_2 in, message_3 out, then the
//!   [`Established`] keys (the client side of `secure_client`).
//! - [`Responder`]: the server's table of half-open sessions, bounded globally and per
//!   peer and timed out, fed with request payloads and the time; it answers with
//!   message_2, an EDHOC error message, or [`Established`] keys bound to the
//!   [`Identity`] the initiator's credential is registered for.
//! - [`StaticKey`]: a static key pair and its CCS; [`StaticKey::derive`] makes a
//!   server's from its identity key, so `pehra keys` needs to store nothing new for it.
//!
//! Input is checked before lakers sees it: lakers 0.8 panics on a G_X that is not a
//! P-256 x-coordinate, on a connection identifier longer than 7 bytes (in message_1,
//! or before message_3), and on a message_3 whose CBOR length disagrees with its size.
//! With `std`, every lakers call is also run under `catch_unwind`, so a panic not yet
//! known refuses the message instead of ending the endpoint.

mod initiator;
mod responder;
#[cfg(test)]
mod tests;

pub use initiator::Initiator;
pub use responder::{Limits, Outcome, Responder};

use crate::security::Identity;
use alloc::vec::Vec;
use lakers::{Credential, EDHOCError};

/// The resource EDHOC runs on (RFC 9528 Appendix A.2), as a resource key.
pub const WELL_KNOWN_EDHOC: &str = ".well-known/edhoc";
/// Content-Format of EDHOC messages in responses: application/edhoc+cbor-seq.
pub const CONTENT_FORMAT_EDHOC: u16 = 64;

/// The EDHOC option (RFC 9668 §3.1): it marks an EDHOC + OSCORE request, whose payload
/// starts with message_3. Critical, Class U for OSCORE (outside the ciphertext).
pub const EDHOC_OPTION: u16 = 21;
/// Content-Format of EDHOC requests (a connection identifier or `true` first):
/// application/cid-edhoc+cbor-seq.
pub const CONTENT_FORMAT_CID_EDHOC: u16 = 65;
/// The only cipher suite used: 2 (AES-CCM-16-64-128, SHA-256, 8, P-256, ES256,
/// AES-CCM-16-64-128, SHA-256).
pub const CIPHER_SUITE: u8 = 2;
/// The first byte of the responder's connection identifiers (its OSCORE Recipient IDs):
/// no pre-provisioned key ID starts with it ([`crate::security::Role::kid_prefix`] and
/// [`crate::security::service_kid`] use 0x00 to 0x05).
pub const C_R_PREFIX: u8 = 0x06;
/// Length of the OSCORE Master Secret exported (RFC 9528 Appendix A.1: 16).
pub const MASTER_SECRET_LEN: usize = 16;
/// Length of the OSCORE Master Salt exported (RFC 9528 Appendix A.1: 8).
pub const MASTER_SALT_LEN: usize = 8;
/// EDHOC ERR_CODE 1: unspecified error.
pub const ERR_UNSPECIFIED: i16 = 1;
/// EDHOC ERR_CODE 3: unknown credential referenced.
pub const ERR_UNKNOWN_CREDENTIAL: i16 = 3;

/// The crypto backend lakers runs on: RustCrypto, with a ChaCha20 generator seeded by
/// the caller (a sans-IO module draws no randomness of its own).
pub(crate) type Crypto = lakers_crypto_rustcrypto::Crypto<rand_chacha::ChaCha20Rng>;

/// Why an EDHOC step failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EdhocError {
    /// A message is not what RFC 9528 describes (or more than lakers handles).
    #[error("malformed EDHOC message: {0}")]
    Malformed(&'static str),
    /// lakers refused it (a MAC did not verify, an unsupported method or suite ...).
    #[error("EDHOC failed: {0}")]
    Protocol(&'static str),
    /// The peer's credential is not one we know.
    #[error("unknown EDHOC credential (key ID {0:02x?})")]
    UnknownCredential(Vec<u8>),
    /// The peer answered with an EDHOC error message.
    #[error("the peer sent EDHOC error {code}: {info}")]
    Peer {
        /// Its ERR_CODE.
        code: i16,
        /// Its ERR_INFO, if a text.
        info: alloc::string::String,
    },
    /// A key or credential given to us is not valid.
    #[error("invalid EDHOC key material: {0}")]
    InvalidKey(&'static str),
}

impl From<EDHOCError> for EdhocError {
    fn from(e: EDHOCError) -> Self {
        EdhocError::Protocol(match e {
            EDHOCError::MacVerificationFailed => "a MAC did not verify",
            EDHOCError::UnsupportedMethod => "unsupported method",
            EDHOCError::UnsupportedCipherSuite => "unsupported cipher suite",
            EDHOCError::UnexpectedCredential => "unexpected credential",
            EDHOCError::ParsingError => "parsing failed",
            EDHOCError::CredentialTooLongError => "credential too long",
            EDHOCError::EADUnprocessable => "unprocessable EAD",
            _ => "other lakers error",
        })
    }
}

/// A static P-256 key pair and its CCS credential (RFC 9528 §3.5.2: a CWT Claims Set
/// with the COSE_Key in `cnf`, key ID in the COSE_Key). The private key never shows in
/// `Debug` output.
#[derive(Clone)]
pub struct StaticKey {
    private: [u8; 32],
    credential: Credential,
}

impl core::fmt::Debug for StaticKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("StaticKey")
            .field("kid", &self.kid())
            .finish_non_exhaustive()
    }
}

impl StaticKey {
    /// The key pair with private scalar `private` (big-endian), its CCS naming
    /// `subject` with key ID `kid`. `None` if `private` is not a valid scalar (zero or
    /// not below the group order) or the CCS would be too long for lakers.
    pub fn from_private(private: [u8; 32], kid: &[u8], subject: &str) -> Option<StaticKey> {
        let secret = p256::SecretKey::from_slice(&private).ok()?;
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        let point = secret.public_key().to_encoded_point(false);
        let ccs = ccs(subject, kid, point.x()?, point.y()?);
        let credential = Credential::parse_ccs(&ccs).ok()?;
        Some(StaticKey {
            private,
            credential,
        })
    }

    /// The key pair with the private key and CCS a credential file holds: the CCS
    /// must parse and carry the public key of `private`.
    pub fn from_parts(private: [u8; 32], ccs: &[u8]) -> Result<StaticKey, EdhocError> {
        let credential = parse_credential(ccs)?;
        let secret = p256::SecretKey::from_slice(&private)
            .map_err(|_| EdhocError::InvalidKey("the private key is not a P-256 scalar"))?;
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        let point = secret.public_key().to_encoded_point(false);
        if credential.public_key().as_ref().map(|k| &k[..]) != point.x().map(|x| &x[..]) {
            return Err(EdhocError::InvalidKey(
                "the credential does not hold the private key's public key",
            ));
        }
        Ok(StaticKey {
            private,
            credential,
        })
    }

    /// A key pair derived from a 32-byte secret `seed` (a server's identity key):
    /// HKDF-SHA256 with salt `pehra edhoc static v1`, info the key ID and a counter,
    /// the first output that is a valid scalar. The same seed gives the same pair, so
    /// `pehra keys` can hand the public credential to clients and the server can make
    /// its key pair at start from what its credentials already hold.
    pub fn derive(seed: &[u8; 32], kid: &[u8], subject: &str) -> StaticKey {
        let hkdf = hkdf::Hkdf::<sha2::Sha256>::new(Some(b"pehra edhoc static v1"), seed);
        for counter in 0u8..=255 {
            let mut info = kid.to_vec();
            info.push(counter);
            let mut private = [0u8; 32];
            hkdf.expand(&info, &mut private)
                .expect("32 bytes is a valid HKDF-SHA256 output length");
            if let Some(key) = StaticKey::from_private(private, kid, subject) {
                return key;
            }
        }
        unreachable!("256 HKDF outputs in a row are not P-256 scalars (probability 2^-8000)")
    }

    /// The private scalar (treat as secret).
    pub fn private(&self) -> &[u8; 32] {
        &self.private
    }

    /// The CCS, CBOR-encoded (public).
    pub fn ccs(&self) -> &[u8] {
        self.credential.bytes.as_slice()
    }

    /// The key ID the credential is referenced by.
    pub fn kid(&self) -> &[u8] {
        self.credential
            .kid
            .as_ref()
            .map(|k| k.as_slice())
            .unwrap_or(&[])
    }

    /// The credential, as lakers takes it.
    pub fn credential(&self) -> Credential {
        self.credential
    }
}

/// A CCS credential received from a file: parsed by lakers, with a key ID and a
/// public key (referenced by key ID in EDHOC messages).
pub fn parse_credential(ccs: &[u8]) -> Result<Credential, EdhocError> {
    let credential = Credential::parse_ccs(ccs)
        .map_err(|_| EdhocError::InvalidKey("not a CCS credential lakers understands"))?;
    if credential.kid.is_none() {
        return Err(EdhocError::InvalidKey("the credential has no key ID"));
    }
    if credential.public_key().is_none() {
        return Err(EdhocError::InvalidKey("the credential holds no P-256 key"));
    }
    Ok(credential)
}

/// The CCS `{2: subject, 8: {1: COSE_Key {1: 2 (EC2), 2: kid, -1: 1 (P-256), -2: x,
/// -3: y}}}`, deterministically encoded.
fn ccs(subject: &str, kid: &[u8], x: &[u8], y: &[u8]) -> Vec<u8> {
    use ciborium::value::{Integer, Value};
    let int = |i: i64| Value::Integer(Integer::from(i));
    let cose_key = Value::Map(alloc::vec![
        (int(1), int(2)),
        (int(2), Value::Bytes(kid.to_vec())),
        (int(-1), int(1)),
        (int(-2), Value::Bytes(x.to_vec())),
        (int(-3), Value::Bytes(y.to_vec())),
    ]);
    let claims = Value::Map(alloc::vec![
        (int(2), Value::Text(subject.into())),
        (int(8), Value::Map(alloc::vec![(int(1), cose_key)])),
    ]);
    let mut out = Vec::new();
    ciborium::into_writer(&claims, &mut out).expect("writing to a Vec cannot fail");
    out
}

/// A peer that may run EDHOC with a server: who it is and its credential.
#[derive(Debug, Clone)]
pub struct KnownPeer {
    /// The identity the OSCORE context is bound to (ACLs apply to it).
    pub identity: Identity,
    /// Its CCS credential.
    pub credential: Credential,
}

/// What a server's responder is made from ([`Responder::new`]; the engine makes it
/// when given server security with EDHOC on).
#[derive(Debug, Clone)]
pub struct ResponderConfig {
    /// The server's static key and credential.
    pub key: StaticKey,
    /// The initiators it accepts (the registry's EDHOC identities).
    pub peers: Vec<KnownPeer>,
    /// Bounds on half-open sessions.
    pub limits: Limits,
}

/// What both ends hold once EDHOC succeeded: the OSCORE parameters of RFC 9528
/// Appendix A.1. The secrets never show in `Debug` output.
#[derive(Clone)]
pub struct Established {
    /// The OSCORE Master Secret (EDHOC_Exporter(0, h'', 16)).
    pub master_secret: [u8; MASTER_SECRET_LEN],
    /// The OSCORE Master Salt (EDHOC_Exporter(1, h'', 8)).
    pub master_salt: [u8; MASTER_SALT_LEN],
    /// This end's OSCORE Sender ID (the peer's connection identifier).
    pub sender_id: Vec<u8>,
    /// This end's OSCORE Recipient ID (its own connection identifier).
    pub recipient_id: Vec<u8>,
}

impl core::fmt::Debug for Established {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Established")
            .field("sender_id", &self.sender_id)
            .field("recipient_id", &self.recipient_id)
            .finish_non_exhaustive()
    }
}

impl Established {
    /// The OSCORE context parameters (no ID Context).
    pub fn context_params(&self) -> crate::oscore::ContextParams<'_> {
        crate::oscore::ContextParams {
            master_secret: &self.master_secret,
            master_salt: &self.master_salt,
            id_context: None,
            sender_id: &self.sender_id,
            recipient_id: &self.recipient_id,
        }
    }

    fn export<F: FnMut(u8, usize) -> [u8; lakers::MAX_BUFFER_LEN]>(
        mut exporter: F,
        sender_id: &[u8],
        recipient_id: &[u8],
    ) -> Established {
        let mut master_secret = [0u8; MASTER_SECRET_LEN];
        master_secret.copy_from_slice(&exporter(0, MASTER_SECRET_LEN)[..MASTER_SECRET_LEN]);
        let mut master_salt = [0u8; MASTER_SALT_LEN];
        master_salt.copy_from_slice(&exporter(1, MASTER_SALT_LEN)[..MASTER_SALT_LEN]);
        Established {
            master_secret,
            master_salt,
            sender_id: sender_id.to_vec(),
            recipient_id: recipient_id.to_vec(),
        }
    }
}

/// An EDHOC error message (RFC 9528 §6): ERR_CODE, then ERR_INFO (a text for code 1,
/// `true` for code 3), as a CBOR sequence.
pub fn error_message(code: i16, info: &str) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(&code, &mut out).expect("writing to a Vec cannot fail");
    if code == ERR_UNKNOWN_CREDENTIAL {
        out.push(0xf5);
    } else {
        ciborium::into_writer(&info, &mut out).expect("writing to a Vec cannot fail");
    }
    out
}

/// The ERR_CODE and ERR_INFO text of an EDHOC error message, if `bytes` is one (its
/// first item an integer; messages 2 and 4 start with a byte string).
pub fn parse_error_message(bytes: &[u8]) -> Option<(i16, alloc::string::String)> {
    let mut reader = bytes;
    let code: ciborium::value::Value = ciborium::from_reader(&mut reader).ok()?;
    let code = i16::try_from(i128::from(code.as_integer()?)).ok()?;
    let info = ciborium::from_reader::<ciborium::value::Value, _>(&mut reader)
        .ok()
        .and_then(|v| v.into_text().ok())
        .unwrap_or_default();
    Some((code, info))
}

/// Runs `f`, turning a panic into `None` (with `std`; without it, a panic is a panic).
#[cfg(feature = "std")]
pub(crate) fn guarded<T>(f: impl FnOnce() -> T) -> Option<T> {
    std::panic::catch_unwind(core::panic::AssertUnwindSafe(f)).ok()
}

/// Runs `f` (without `std` there is no unwinding to catch).
#[cfg(not(feature = "std"))]
pub(crate) fn guarded<T>(f: impl FnOnce() -> T) -> Option<T> {
    Some(f())
}

/// Whether a CBOR item starting with `first` is a connection identifier lakers holds:
/// an integer -24..=23 or a byte string of at most 7 bytes.
pub(crate) fn conn_id_item_ok(first: u8) -> bool {
    matches!(first, 0x00..=0x17 | 0x20..=0x37 | 0x40..=0x47)
}

/// G_X of a message_1 whose items up to C_I lakers can parse without panicking: METHOD,
/// SUITES_I, G_X (32 bytes, a curve point), C_I (see [`conn_id_item_ok`]).
pub(crate) fn check_message_1(message_1: &[u8]) -> Result<[u8; 32], EdhocError> {
    let malformed = |_| EdhocError::Malformed("message_1");
    let mut decoder = lakers::CBORDecoder::new(message_1);
    decoder.u8().map_err(malformed)?;
    let (_, mut decoder) =
        lakers::parse_suites_i(decoder).map_err(|_| EdhocError::Malformed("SUITES_I"))?;
    let g_x: [u8; 32] = decoder
        .bytes_sized(32)
        .map_err(malformed)?
        .try_into()
        .map_err(|_| EdhocError::Malformed("G_X"))?;
    if !valid_public_key(&g_x) {
        return Err(EdhocError::Malformed("G_X is not a P-256 point"));
    }
    if !conn_id_item_ok(decoder.current().map_err(malformed)?) {
        return Err(EdhocError::Malformed("C_I"));
    }
    Ok(g_x)
}

/// Whether `g` is the x-coordinate of a P-256 point (lakers 0.8 panics on one that is
/// not; RFC 9528 §9.2 wants it checked).
pub(crate) fn valid_public_key(g: &[u8; 32]) -> bool {
    use p256::elliptic_curve::point::DecompressPoint;
    bool::from(p256::AffinePoint::decompress(g.into(), 0u8.into()).is_some())
}

/// The key ID an ID_CRED by reference names (`{4: h'…'}`, as lakers keeps it), or
/// `None` for a credential by value.
pub(crate) fn referenced_kid(id_cred: &lakers::IdCred) -> Option<Vec<u8>> {
    match id_cred.as_full_value() {
        [0xa1, 0x04, len @ 0x40..=0x57, kid @ ..] if usize::from(len - 0x40) == kid.len() => {
            Some(kid.to_vec())
        }
        _ => None,
    }
}

/// The length of the CBOR data item that starts `bytes` if it is a byte string lakers'
/// message_3 decoder handles (header 0x40..=0x58, at most one length byte), checked
/// against the buffer: `Some(total length)`.
pub(crate) fn bstr_item_len(bytes: &[u8]) -> Option<usize> {
    let (&first, rest) = bytes.split_first()?;
    let (header, len) = match first {
        0x40..=0x57 => (1, usize::from(first - 0x40)),
        0x58 => (2, usize::from(*rest.first()?)),
        _ => return None,
    };
    let total = header + len;
    (total <= bytes.len()).then_some(total)
}
