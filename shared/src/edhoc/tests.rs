use super::*;
use crate::oscore::SecurityContext;
use crate::security::{kid, zookeeper_kid, Role};
use crate::{Duration, Instant};

fn alice_key() -> StaticKey {
    StaticKey::derive(&[1; 32], &kid(Role::Client, 7), "alice")
}

fn server_key() -> StaticKey {
    StaticKey::derive(&[2; 32], &zookeeper_kid(), "zookeeper")
}

fn alice() -> KnownPeer {
    KnownPeer {
        identity: Identity {
            name: "alice".into(),
            role: Role::Client,
            kid: kid(Role::Client, 7),
        },
        credential: alice_key().credential(),
    }
}

fn responder(limits: Limits) -> Responder<u32> {
    Responder::new(server_key(), [alice()], limits, [9; 32])
}

fn t(ms: u64) -> Instant {
    Instant::from_millis(ms)
}

fn nobody(_: &[u8]) -> bool {
    false
}

#[test]
fn a_handshake_gives_both_ends_one_oscore_context() {
    let mut r = responder(Limits::default());
    let (initiator, m1) = Initiator::start(alice_key(), server_key().ccs(), [3; 32]).unwrap();
    assert_eq!(m1[0], 0xf5);
    let Outcome::Message2(m2) = r.handle(t(0), 1, &m1, nobody) else {
        panic!("no message_2");
    };
    // RFC 7252 §11.3: message_2 is well within three times message_1.
    assert!(m2.len() <= 2 * m1.len(), "{} vs {}", m2.len(), m1.len());
    assert_eq!(r.sessions(), 1);
    let (m3, client) = initiator.finish(&m2).unwrap();
    let Outcome::Established { identity, keys, .. } = r.handle(t(5), 1, &m3, nobody) else {
        panic!("not established");
    };
    assert_eq!(identity.name, "alice");
    assert_eq!(r.sessions(), 0);
    assert_eq!(keys.master_secret, client.master_secret);
    assert_eq!(keys.master_salt, client.master_salt);
    assert_eq!(keys.sender_id, client.recipient_id);
    assert_eq!(keys.recipient_id, client.sender_id);
    assert_eq!(keys.recipient_id[0], C_R_PREFIX);
    let a = SecurityContext::new(&client.context_params(), None).unwrap();
    let b = SecurityContext::new(&keys.context_params(), None).unwrap();
    assert_eq!(a.sender_key(), b.recipient_key());
    assert_eq!(a.common_iv(), b.common_iv());

    // A replayed message_3 finds no session and keeps nothing.
    let Outcome::Refused { code, .. } = r.handle(t(6), 1, &m3, nobody) else {
        panic!("a replay was accepted");
    };
    assert_eq!(code, 4 << 5);
    assert_eq!(r.sessions(), 0);
}

#[test]
fn an_unknown_credential_is_refused_with_an_edhoc_error() {
    let mut r = responder(Limits::default());
    let mallory = StaticKey::derive(&[5; 32], &kid(Role::Client, 8), "mallory");
    let (initiator, m1) = Initiator::start(mallory, server_key().ccs(), [4; 32]).unwrap();
    let Outcome::Message2(m2) = r.handle(t(0), 1, &m1, nobody) else {
        panic!("no message_2");
    };
    let (m3, _) = initiator.finish(&m2).unwrap();
    let Outcome::Refused {
        code,
        message,
        reason,
    } = r.handle(t(1), 1, &m3, nobody)
    else {
        panic!("mallory got in");
    };
    assert_eq!(code, (4 << 5) | 1);
    assert_eq!(reason, EdhocError::UnknownCredential(kid(Role::Client, 8)));
    assert_eq!(
        parse_error_message(&message).unwrap().0,
        ERR_UNKNOWN_CREDENTIAL
    );
    assert_eq!(r.sessions(), 0);
}

#[test]
fn the_initiator_refuses_a_responder_it_did_not_mean() {
    let mut r = responder(Limits::default());
    let other = StaticKey::derive(&[6; 32], &crate::security::broker_kid(1), "broker-1");
    let (initiator, m1) = Initiator::start(alice_key(), other.ccs(), [3; 32]).unwrap();
    let Outcome::Message2(m2) = r.handle(t(0), 1, &m1, nobody) else {
        panic!("no message_2");
    };
    assert!(initiator.finish(&m2).is_err());
}

#[test]
fn half_open_sessions_are_bounded_per_peer_and_globally_and_time_out() {
    let limits = Limits {
        max_sessions: 4,
        max_per_peer: 2,
        timeout: Duration::from_secs(10),
    };
    let mut r = responder(limits);
    let m1 = |seed: u8| {
        Initiator::start(alice_key(), server_key().ccs(), [seed; 32])
            .unwrap()
            .1
    };
    // One address: two sessions, then refusals that keep nothing.
    for i in 0..10u8 {
        let outcome = r.handle(t(0), 1, &m1(i), nobody);
        match i {
            0 | 1 => assert!(matches!(outcome, Outcome::Message2(_))),
            _ => assert!(matches!(outcome, Outcome::Busy(_)), "{outcome:?}"),
        }
    }
    assert_eq!(r.sessions(), 2);
    // A flood from many addresses fills the table and no further.
    for peer in 2..1000u32 {
        r.handle(t(1), peer, &m1(peer as u8), nobody);
    }
    assert_eq!(r.sessions(), 4);
    // Time passes: every session is forgotten, and a newcomer gets in.
    assert_eq!(r.next_expiry(), Some(t(10_000)));
    assert!(matches!(
        r.handle(t(11_001), 5000, &m1(1), nobody),
        Outcome::Message2(_)
    ));
    assert_eq!(r.sessions(), 1);
}

#[test]
fn hostile_bytes_are_refused_without_panics_or_state() {
    let mut r = responder(Limits::default());
    // G_X not a point (x = p, beyond the field): lakers would panic.
    let mut m1 = Initiator::start(alice_key(), server_key().ccs(), [3; 32])
        .unwrap()
        .1;
    let start = m1.iter().position(|&b| b == 0x58).unwrap() + 2;
    m1[start..start + 32].fill(0xff);
    assert!(matches!(
        r.handle(t(0), 1, &m1, nobody),
        Outcome::Refused { .. }
    ));
    assert_eq!(r.sessions(), 0);
    for bad in [&[][..], &[0xf5], &[0xf5, 0x03], &[0x00], &[0xff; 300]] {
        assert!(matches!(
            r.handle(t(0), 1, bad, nobody),
            Outcome::Refused { .. }
        ));
    }
    // message_3 whose CBOR length lies (lakers would index out of bounds).
    let (_, m1) = Initiator::start(alice_key(), server_key().ccs(), [3; 32]).unwrap();
    for (i, tail) in [&[0x58, 0xff, 1, 2][..], &[0x43, 1, 2, 3], &[0x41], &[0x58]]
        .into_iter()
        .enumerate()
    {
        let peer = 100 + i as u32;
        let Outcome::Message2(m2) = r.handle(t(0), peer, &m1, nobody) else {
            panic!("no message_2");
        };
        // The C_R is at the end of plaintext_2, encrypted: take it from a real run.
        let (m3, _) = Initiator::start(alice_key(), server_key().ccs(), [3; 32])
            .unwrap()
            .0
            .finish(&m2)
            .unwrap();
        let c_r_len = m3.len() - bstr_len_from_end(&m3);
        let mut bad = m3[..c_r_len].to_vec();
        bad.extend_from_slice(tail);
        assert!(matches!(
            r.handle(t(0), peer, &bad, nobody),
            Outcome::Refused { .. }
        ));
    }
    assert_eq!(r.sessions(), 0);
}

/// The length of message_3 at the end of a C_R ‖ message_3 payload (C_R is 6 bytes
/// here: 0x45 and five bytes).
fn bstr_len_from_end(payload: &[u8]) -> usize {
    payload.len() - 6
}

#[test]
fn error_messages_round_trip() {
    let m = error_message(ERR_UNSPECIFIED, "no");
    assert_eq!(parse_error_message(&m), Some((1, "no".into())));
    assert_eq!(
        parse_error_message(&error_message(ERR_UNKNOWN_CREDENTIAL, "")).map(|e| e.0),
        Some(3)
    );
    assert_eq!(parse_error_message(&[0x58, 0x01, 0x00]), None);
}

#[test]
fn static_keys_are_deterministic_and_round_trip_through_parts() {
    let a = alice_key();
    assert_eq!(a.ccs(), alice_key().ccs());
    assert_eq!(a.kid(), kid(Role::Client, 7));
    let b = StaticKey::from_parts(*a.private(), a.ccs()).unwrap();
    assert_eq!(b.ccs(), a.ccs());
    assert!(StaticKey::from_parts(*server_key().private(), a.ccs()).is_err());
    assert!(StaticKey::from_private([0; 32], &[1], "x").is_none());
}

mod arbitrary_input {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Whatever follows `true` or a live session's C_R, the responder neither
        /// panics nor keeps a session for it.
        #[test]
        fn never_panics_never_keeps_garbage(
            tail in proptest::collection::vec(any::<u8>(), 0..200),
            first in prop_oneof![Just(0xf5u8), any::<u8>()],
        ) {
            let mut r = responder(Limits::default());
            // A live session from peer 1, to aim message_3 garbage at.
            let (initiator, m1) =
                Initiator::start(alice_key(), server_key().ccs(), [3; 32]).unwrap();
            let Outcome::Message2(m2) = r.handle(t(0), 1, &m1, nobody) else {
                panic!("no message_2");
            };
            // C_R is the first item of the message_3 request: 0x45 and five bytes.
            let (m3, _) = initiator.finish(&m2).unwrap();
            let mut payload = m3[..6].to_vec();
            payload.extend_from_slice(&tail);
            let outcome = r.handle(t(1), 1, &payload, nobody);
            prop_assert!(matches!(outcome, Outcome::Refused { .. }), "{:?}", outcome);
            prop_assert_eq!(r.sessions(), 0);
            let mut payload = alloc::vec![first];
            payload.extend_from_slice(&tail);
            match r.handle(t(2), 2, &payload, nobody) {
                Outcome::Message2(_) => prop_assert_eq!(r.sessions(), 1),
                _ => prop_assert_eq!(r.sessions(), 0),
            }
        }
    }
}
