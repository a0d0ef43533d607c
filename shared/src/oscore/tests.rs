//! RFC 8613 Appendix C vectors, protocol behaviour and restart properties.

use super::cose;
use super::*;
use crate::coap::Packet;
use crate::coap::{option as num, Code};
use alloc::{string::String, vec, vec::Vec};
use coap_lite::{CoapOption, MessageClass, MessageType};
use proptest::prelude::*;

const SECRET: &str = "0102030405060708090a0b0c0d0e0f10";
const SALT: &str = "9e7ca92223786340";
const ID_CONTEXT: &str = "37cbf3210017a2d3";

fn h(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

fn params<'a>(
    secret: &'a [u8],
    salt: &'a [u8],
    id_context: Option<&'a [u8]>,
    sender: &'a [u8],
    recipient: &'a [u8],
) -> ContextParams<'a> {
    ContextParams {
        master_secret: secret,
        master_salt: salt,
        id_context,
        sender_id: sender,
        recipient_id: recipient,
    }
}

/// A context whose next sender sequence number is `next` (a restore with K = `next`
/// from a stored 0), as the C.4–C.6 vectors need 20.
fn at_sequence(p: &ContextParams<'_>, next: u64) -> SecurityContext {
    let persistence = Persistence {
        sequence_interval: next,
        sequence_margin: 0,
        replay_interval: 32,
    };
    let stored = PersistedState {
        sender_sequence: Some(0),
        replay_high_water: None,
    };
    let ctx = SecurityContext::restore(p, &stored, persistence).unwrap();
    assert_eq!(ctx.next_sequence_number(), next);
    ctx
}

fn packet(hex: &str) -> Packet {
    Packet::from_bytes(&h(hex)).unwrap()
}

fn bytes(p: &Packet) -> String {
    hex::encode(p.to_bytes().unwrap())
}

// ---------------------------------------------------------------- C.1 – C.3: derivation

struct Derivation {
    salt: &'static str,
    id_context: Option<&'static str>,
    sender_id: &'static str,
    recipient_id: &'static str,
    info_sender: &'static str,
    info_recipient: &'static str,
    info_iv: &'static str,
    sender_key: &'static str,
    recipient_key: &'static str,
    common_iv: &'static str,
    sender_nonce: &'static str,
    recipient_nonce: &'static str,
}

fn check_derivation(v: &Derivation) {
    let (secret, salt) = (h(SECRET), h(v.salt));
    let id_context = v.id_context.map(h);
    let (sender, recipient) = (h(v.sender_id), h(v.recipient_id));
    let ctx = SecurityContext::new(
        &params(&secret, &salt, id_context.as_deref(), &sender, &recipient),
        None,
    )
    .unwrap();
    let info =
        |id: &[u8], kind, len| hex::encode(cose::kdf_info(id, id_context.as_deref(), kind, len));
    assert_eq!(info(&sender, "Key", 16), v.info_sender);
    assert_eq!(info(&recipient, "Key", 16), v.info_recipient);
    assert_eq!(info(&[], "IV", 13), v.info_iv);
    assert_eq!(hex::encode(ctx.sender_key()), v.sender_key);
    assert_eq!(hex::encode(ctx.recipient_key()), v.recipient_key);
    assert_eq!(hex::encode(ctx.common_iv()), v.common_iv);
    assert_eq!(hex::encode(ctx.sender_nonce(0)), v.sender_nonce);
    assert_eq!(hex::encode(ctx.recipient_nonce(0)), v.recipient_nonce);
}

#[test]
fn c1_1_client_derivation_with_master_salt() {
    check_derivation(&Derivation {
        salt: SALT,
        id_context: None,
        sender_id: "",
        recipient_id: "01",
        info_sender: "8540f60a634b657910",
        info_recipient: "854101f60a634b657910",
        info_iv: "8540f60a6249560d",
        sender_key: "f0910ed7295e6ad4b54fc793154302ff",
        recipient_key: "ffb14e093c94c9cac9471648b4f98710",
        common_iv: "4622d4dd6d944168eefb54987c",
        sender_nonce: "4622d4dd6d944168eefb54987c",
        recipient_nonce: "4722d4dd6d944169eefb54987c",
    });
}

#[test]
fn c1_2_server_derivation_with_master_salt() {
    check_derivation(&Derivation {
        salt: SALT,
        id_context: None,
        sender_id: "01",
        recipient_id: "",
        info_sender: "854101f60a634b657910",
        info_recipient: "8540f60a634b657910",
        info_iv: "8540f60a6249560d",
        sender_key: "ffb14e093c94c9cac9471648b4f98710",
        recipient_key: "f0910ed7295e6ad4b54fc793154302ff",
        common_iv: "4622d4dd6d944168eefb54987c",
        sender_nonce: "4722d4dd6d944169eefb54987c",
        recipient_nonce: "4622d4dd6d944168eefb54987c",
    });
}

#[test]
fn c2_1_client_derivation_without_master_salt() {
    check_derivation(&Derivation {
        salt: "",
        id_context: None,
        sender_id: "00",
        recipient_id: "01",
        info_sender: "854100f60a634b657910",
        info_recipient: "854101f60a634b657910",
        info_iv: "8540f60a6249560d",
        sender_key: "321b26943253c7ffb6003b0b64d74041",
        recipient_key: "e57b5635815177cd679ab4bcec9d7dda",
        common_iv: "be35ae297d2dace910c52e99f9",
        sender_nonce: "bf35ae297d2dace910c52e99f9",
        recipient_nonce: "bf35ae297d2dace810c52e99f9",
    });
}

#[test]
fn c2_2_server_derivation_without_master_salt() {
    check_derivation(&Derivation {
        salt: "",
        id_context: None,
        sender_id: "01",
        recipient_id: "00",
        info_sender: "854101f60a634b657910",
        info_recipient: "854100f60a634b657910",
        info_iv: "8540f60a6249560d",
        sender_key: "e57b5635815177cd679ab4bcec9d7dda",
        recipient_key: "321b26943253c7ffb6003b0b64d74041",
        common_iv: "be35ae297d2dace910c52e99f9",
        sender_nonce: "bf35ae297d2dace810c52e99f9",
        recipient_nonce: "bf35ae297d2dace910c52e99f9",
    });
}

#[test]
fn c3_1_client_derivation_with_id_context() {
    check_derivation(&Derivation {
        salt: SALT,
        id_context: Some(ID_CONTEXT),
        sender_id: "",
        recipient_id: "01",
        info_sender: "85404837cbf3210017a2d30a634b657910",
        info_recipient: "8541014837cbf3210017a2d30a634b657910",
        info_iv: "85404837cbf3210017a2d30a6249560d",
        sender_key: "af2a1300a5e95788b356336eeecd2b92",
        recipient_key: "e39a0c7c77b43f03b4b39ab9a268699f",
        common_iv: "2ca58fb85ff1b81c0b7181b85e",
        sender_nonce: "2ca58fb85ff1b81c0b7181b85e",
        recipient_nonce: "2da58fb85ff1b81d0b7181b85e",
    });
}

#[test]
fn c3_2_server_derivation_with_id_context() {
    check_derivation(&Derivation {
        salt: SALT,
        id_context: Some(ID_CONTEXT),
        sender_id: "01",
        recipient_id: "",
        info_sender: "8541014837cbf3210017a2d30a634b657910",
        info_recipient: "85404837cbf3210017a2d30a634b657910",
        info_iv: "85404837cbf3210017a2d30a6249560d",
        sender_key: "e39a0c7c77b43f03b4b39ab9a268699f",
        recipient_key: "af2a1300a5e95788b356336eeecd2b92",
        common_iv: "2ca58fb85ff1b81c0b7181b85e",
        sender_nonce: "2da58fb85ff1b81d0b7181b85e",
        recipient_nonce: "2ca58fb85ff1b81c0b7181b85e",
    });
}

#[test]
fn aad_example_of_section_5_4() {
    assert_eq!(
        hex::encode(cose::external_aad(&[0x00], &[0x25])),
        "498501810a4100412540"
    );
    assert_eq!(
        hex::encode(cose::enc_structure(&[0x00], &[0x25])),
        "8368456e63727970743040498501810a4100412540"
    );
}

// ---------------------------------------------------------------- C.4 – C.8: messages

const C4_REQUEST: &str = "44015d1f00003974396c6f63616c686f737483747631";
const C4_PROTECTED: &str = "44025d1f00003974396c6f63616c686f7374620914ff612f1092f1776f1c1668b3825e";
const C5_REQUEST: &str = "440171c30000b932396c6f63616c686f737483747631";
const C5_PROTECTED: &str =
    "440271c30000b932396c6f63616c686f737463091400ff4ed339a5a379b0b8bc731fffb0";
const C6_REQUEST: &str = "44012f8eef9bbf7a396c6f63616c686f737483747631";
const C6_PROTECTED: &str = "44022f8eef9bbf7a396c6f63616c686f73746b19140837cbf3210017a2d3ff\
                            72cd7273fd331ac45cffbe55c3";
const C7_RESPONSE: &str = "64455d1f00003974ff48656c6c6f20576f726c6421";
const C7_PROTECTED: &str = "64445d1f0000397490ffdbaad1e9a7e7b2a813d3c31524378303cdafae119106";
const C8_PROTECTED: &str = "64445d1f00003974920100ff4d4c13669384b67354b2b6175ff4b8658c666a6cf88e";

/// C.1's client and server (C.4, C.7, C.8), the client at sequence number 20.
fn c1_pair() -> (SecurityContext, SecurityContext) {
    let (secret, salt) = (h(SECRET), h(SALT));
    let client = at_sequence(&params(&secret, &salt, None, &[], &[1]), 20);
    let server = SecurityContext::new(&params(&secret, &salt, None, &[1], &[]), None).unwrap();
    (client, server)
}

/// Protects `request` with `client`, checks the bytes, verifies it with `server` and
/// checks the original comes back byte for byte.
fn check_request_vector(
    client: &mut SecurityContext,
    server: &mut SecurityContext,
    request: &str,
    protected: &str,
) -> (RequestBinding, RequestBinding) {
    let out = client.protect_request(&packet(request)).unwrap();
    assert_eq!(bytes(&out.packet), protected);
    let verified = server.unprotect_request(&packet(protected)).unwrap();
    assert_eq!(bytes(&verified.packet), request);
    assert_eq!(verified.binding.request_piv(), [0x14]);
    (out.binding, verified.binding)
}

#[test]
fn c4_request_with_master_salt() {
    let (mut client, mut server) = c1_pair();
    let (binding, _) = check_request_vector(&mut client, &mut server, C4_REQUEST, C4_PROTECTED);
    assert_eq!(binding.request_kid(), [0u8; 0]);
    assert_eq!(client.next_sequence_number(), 21);
}

#[test]
fn c5_request_without_master_salt() {
    let secret = h(SECRET);
    let mut client = at_sequence(&params(&secret, &[], None, &[0], &[1]), 20);
    let mut server = SecurityContext::new(&params(&secret, &[], None, &[1], &[0]), None).unwrap();
    let (binding, _) = check_request_vector(&mut client, &mut server, C5_REQUEST, C5_PROTECTED);
    assert_eq!(binding.request_kid(), [0]);
}

#[test]
fn c6_request_with_id_context() {
    let (secret, salt, ctx) = (h(SECRET), h(SALT), h(ID_CONTEXT));
    let mut client = at_sequence(&params(&secret, &salt, Some(&ctx), &[], &[1]), 20);
    let mut server =
        SecurityContext::new(&params(&secret, &salt, Some(&ctx), &[1], &[]), None).unwrap();
    check_request_vector(&mut client, &mut server, C6_REQUEST, C6_PROTECTED);
}

#[test]
fn c7_response_reusing_the_request_nonce() {
    let (mut client, mut server) = c1_pair();
    let (mut client_binding, mut server_binding) =
        check_request_vector(&mut client, &mut server, C4_REQUEST, C4_PROTECTED);
    let out = server
        .protect_response(
            &mut server_binding,
            &packet(C7_RESPONSE),
            ResponseNonce::FromRequest,
        )
        .unwrap();
    assert_eq!(bytes(&out.packet), C7_PROTECTED);
    assert_eq!(out.persist, None);
    let verified = client
        .unprotect_response(&mut client_binding, &packet(C7_PROTECTED))
        .unwrap();
    assert_eq!(bytes(&verified.packet), C7_RESPONSE);
    assert_eq!(verified.partial_iv, None);
}

#[test]
fn c8_response_with_its_own_partial_iv() {
    let (mut client, mut server) = c1_pair();
    let (mut client_binding, mut server_binding) =
        check_request_vector(&mut client, &mut server, C4_REQUEST, C4_PROTECTED);
    let out = server
        .protect_response(
            &mut server_binding,
            &packet(C7_RESPONSE),
            ResponseNonce::Fresh,
        )
        .unwrap();
    assert_eq!(bytes(&out.packet), C8_PROTECTED);
    assert_eq!(server.next_sequence_number(), 1);
    let verified = client
        .unprotect_response(&mut client_binding, &packet(C8_PROTECTED))
        .unwrap();
    assert_eq!(bytes(&verified.packet), C7_RESPONSE);
    assert_eq!(verified.partial_iv, Some(0));
}

// ---------------------------------------------------------------- round trips

/// A client (sender 0x01) and server (sender 0x02) sharing a fresh context.
fn pair_with(secret: &[u8]) -> (SecurityContext, SecurityContext) {
    let salt = h(SALT);
    let client = SecurityContext::new(&params(secret, &salt, None, &[1], &[2]), None).unwrap();
    let server = SecurityContext::new(&params(&h(SECRET), &salt, None, &[2], &[1]), None).unwrap();
    (client, server)
}

fn pair() -> (SecurityContext, SecurityContext) {
    pair_with(&h(SECRET))
}

fn request(code: Code, path: &str) -> Packet {
    let mut p = Packet::new();
    p.header.set_type(MessageType::Confirmable);
    p.header.message_id = 0x1234;
    p.header.code = MessageClass::from(code.0);
    p.set_token(vec![0xA1, 0xB2]);
    p.add_option(CoapOption::from(num::URI_HOST), b"device.local".to_vec());
    for segment in path.split('/') {
        p.add_option(CoapOption::from(num::URI_PATH), segment.as_bytes().to_vec());
    }
    p
}

fn response(code: Code, payload: &[u8]) -> Packet {
    let mut p = Packet::new();
    p.header.set_type(MessageType::Acknowledgement);
    p.header.message_id = 0x1234;
    p.header.code = MessageClass::from(code.0);
    p.set_token(vec![0xA1, 0xB2]);
    p.payload = payload.to_vec();
    p
}

fn option_values(p: &Packet, number: u16) -> Vec<Vec<u8>> {
    p.get_option(CoapOption::from(number))
        .map(|l| l.iter().cloned().collect())
        .unwrap_or_default()
}

#[test]
fn get_round_trip_hides_path_and_code_but_not_host() {
    let (mut client, mut server) = pair();
    let original = request(Code::GET, "sensors/temp");
    let sent = client.protect_request(&original).unwrap();
    let outer = &sent.packet;
    assert_eq!(u8::from(outer.header.code), Code::POST.0);
    assert!(option_values(outer, num::URI_PATH).is_empty());
    assert_eq!(
        option_values(outer, num::URI_HOST),
        [b"device.local".to_vec()]
    );
    assert!(!outer.payload.windows(4).any(|w| w == b"temp"));
    assert_eq!(outer.get_token(), original.get_token());
    assert_eq!(outer.header.message_id, original.header.message_id);

    let got = server.unprotect_request(outer).unwrap();
    assert_eq!(got.packet, original);
    let mut binding = got.binding;

    let reply = response(Code::CONTENT, b"21.5");
    let sent_reply = server
        .protect_response(&mut binding, &reply, ResponseNonce::FromRequest)
        .unwrap();
    assert_eq!(u8::from(sent_reply.packet.header.code), Code::CHANGED.0);
    let mut client_binding = sent.binding;
    let got_reply = client
        .unprotect_response(&mut client_binding, &sent_reply.packet)
        .unwrap();
    assert_eq!(got_reply.packet, reply);
}

#[test]
fn post_round_trip_with_payload_query_and_content_format() {
    let (mut client, mut server) = pair();
    let mut original = request(Code::POST, "topics/t1");
    original.add_option(CoapOption::from(num::CONTENT_FORMAT), vec![60]);
    original.add_option(CoapOption::from(num::URI_QUERY), b"k=v".to_vec());
    original.add_option(CoapOption::from(num::NO_RESPONSE), vec![26]);
    original.payload = b"\xa1\x01\x02 a body".to_vec();
    let sent = client.protect_request(&original).unwrap();
    // No-Response 26 is copied outside (RFC 8613 §4.1.3.6), the rest stays inside.
    assert_eq!(option_values(&sent.packet, num::NO_RESPONSE), [vec![26]]);
    assert!(option_values(&sent.packet, num::CONTENT_FORMAT).is_empty());
    let got = server.unprotect_request(&sent.packet).unwrap();
    assert_eq!(got.packet, original);
    let mut binding = got.binding;
    let reply = response(Code::CHANGED, b"");
    let out = server
        .protect_response(&mut binding, &reply, ResponseNonce::Fresh)
        .unwrap();
    let mut client_binding = sent.binding;
    let back = client
        .unprotect_response(&mut client_binding, &out.packet)
        .unwrap();
    assert_eq!(back.packet, reply);
    assert_eq!(back.partial_iv, Some(0));
}

#[test]
fn observe_registration_and_notifications() {
    let (mut client, mut server) = pair();
    let mut original = request(Code::GET, "temp");
    original.add_option(CoapOption::from(num::OBSERVE), vec![]);
    let sent = client.protect_request(&original).unwrap();
    assert_eq!(u8::from(sent.packet.header.code), Code::FETCH.0);
    assert_eq!(
        option_values(&sent.packet, num::OBSERVE),
        [Vec::<u8>::new()]
    );
    assert!(sent.binding.is_observe());
    let mut client_binding = sent.binding;

    let got = server.unprotect_request(&sent.packet).unwrap();
    assert_eq!(got.packet, original);
    assert!(got.binding.is_observe());
    let mut server_binding = got.binding;

    let notification = |seq: u32, body: &[u8]| {
        let mut p = response(Code::CONTENT, body);
        p.add_option(CoapOption::from(num::OBSERVE), num::encode_uint(seq));
        p
    };
    // The first notification may reuse the request nonce; later ones may not.
    let first = server
        .protect_response(
            &mut server_binding,
            &notification(7, b"1"),
            ResponseNonce::FromRequest,
        )
        .unwrap();
    assert_eq!(u8::from(first.packet.header.code), Code::CONTENT.0);
    assert_eq!(option_values(&first.packet, num::OBSERVE), [vec![7]]);
    assert_eq!(
        server.protect_response(
            &mut server_binding,
            &notification(8, b"2"),
            ResponseNonce::FromRequest
        ),
        Err(OscoreError::NonceReuse)
    );
    let n1 = server
        .protect_response(
            &mut server_binding,
            &notification(8, b"2"),
            ResponseNonce::Fresh,
        )
        .unwrap();
    let n2 = server
        .protect_response(
            &mut server_binding,
            &notification(9, b"3"),
            ResponseNonce::Fresh,
        )
        .unwrap();
    let n3 = server
        .protect_response(
            &mut server_binding,
            &notification(10, b"4"),
            ResponseNonce::Fresh,
        )
        .unwrap();

    let got_first = client
        .unprotect_response(&mut client_binding, &first.packet)
        .unwrap();
    assert_eq!(got_first.packet.payload, b"1");
    assert_eq!(got_first.partial_iv, None);
    // n2 overtakes n1: n1 is then older than the Notification Number and refused.
    let got_n2 = client
        .unprotect_response(&mut client_binding, &n2.packet)
        .unwrap();
    assert_eq!(got_n2.packet.payload, b"3");
    assert_eq!(client_binding.notification_number(), Some(1));
    // The Observe value is the Partial IV's low bytes (1), not the outer 9.
    assert_eq!(option_values(&got_n2.packet, num::OBSERVE), [vec![1]]);
    assert_eq!(
        client.unprotect_response(&mut client_binding, &n1.packet),
        Err(OscoreError::Replayed)
    );
    assert_eq!(
        client.unprotect_response(&mut client_binding, &n2.packet),
        Err(OscoreError::Replayed)
    );
    assert_eq!(
        client.unprotect_response(&mut client_binding, &first.packet),
        Err(OscoreError::Replayed)
    );
    let got_n3 = client
        .unprotect_response(&mut client_binding, &n3.packet)
        .unwrap();
    assert_eq!(got_n3.packet.payload, b"4");
    assert_eq!(client_binding.notification_number(), Some(2));
}

#[test]
fn a_response_to_a_plain_request_is_accepted_once_and_without_observe() {
    let (mut client, mut server) = pair();
    let sent = client.protect_request(&request(Code::GET, "a")).unwrap();
    let mut server_binding = server.unprotect_request(&sent.packet).unwrap().binding;
    let reply = server
        .protect_response(
            &mut server_binding,
            &response(Code::CONTENT, b"x"),
            ResponseNonce::FromRequest,
        )
        .unwrap();
    let mut notification = response(Code::CONTENT, b"y");
    notification.add_option(CoapOption::from(num::OBSERVE), vec![3]);
    let sneaky = server
        .protect_response(&mut server_binding, &notification, ResponseNonce::Fresh)
        .unwrap();

    let mut binding = sent.binding.clone();
    assert_eq!(
        client.unprotect_response(&mut binding, &sneaky.packet),
        Err(OscoreError::UnexpectedObserve)
    );
    let _ = client
        .unprotect_response(&mut binding, &reply.packet)
        .unwrap();
    assert_eq!(
        client.unprotect_response(&mut binding, &reply.packet),
        Err(OscoreError::Replayed)
    );
}

#[test]
fn proxy_uri_is_split_into_outer_scheme_and_host_and_inner_path_and_query() {
    let (mut client, mut server) = pair();
    let mut original = Packet::new();
    original.header.code = MessageClass::from(Code::GET.0);
    original.add_option(
        CoapOption::from(num::PROXY_URI),
        b"coap://example.com/res%20x/y?q=1&r".to_vec(),
    );
    let sent = client.protect_request(&original).unwrap();
    assert_eq!(
        option_values(&sent.packet, num::PROXY_URI),
        [b"coap://example.com".to_vec()]
    );
    let got = server.unprotect_request(&sent.packet).unwrap().packet;
    assert_eq!(
        option_values(&got, num::URI_PATH),
        [b"res x".to_vec(), b"y".to_vec()]
    );
    assert_eq!(
        option_values(&got, num::URI_QUERY),
        [b"q=1".to_vec(), b"r".to_vec()]
    );
    original.clear_option(CoapOption::from(num::PROXY_URI));
    original.add_option(CoapOption::from(num::PROXY_URI), b"no-scheme".to_vec());
    assert!(matches!(
        client.protect_request(&original),
        Err(OscoreError::InvalidMessage(_))
    ));
}

#[test]
fn outer_block_and_observe_options_are_discarded_on_receipt() {
    let (mut client, mut server) = pair();
    let original = request(Code::PUT, "fw");
    let mut sent = client.protect_request(&original).unwrap().packet;
    // A proxy fragmenting the OSCORE message would add these; §8.2 step 1 drops them.
    sent.add_option(CoapOption::from(num::BLOCK1), vec![0x0E]);
    sent.add_option(CoapOption::from(num::SIZE1), vec![0x40]);
    assert_eq!(server.unprotect_request(&sent).unwrap().packet, original);
}

#[test]
fn nested_oscore_and_wrong_codes_are_refused() {
    let (mut client, mut server) = pair();
    let sent = client.protect_request(&request(Code::GET, "a")).unwrap();
    assert!(matches!(
        client.protect_request(&sent.packet),
        Err(OscoreError::InvalidMessage(_))
    ));
    assert!(matches!(
        client.protect_request(&response(Code::CONTENT, b"")),
        Err(OscoreError::InvalidMessage(_))
    ));
    let mut binding = server.unprotect_request(&sent.packet).unwrap().binding;
    assert!(matches!(
        server.protect_response(&mut binding, &request(Code::GET, "a"), ResponseNonce::Fresh),
        Err(OscoreError::InvalidMessage(_))
    ));
    // A client binding cannot protect a response, nor a server binding verify one.
    let mut client_binding = sent.binding;
    assert_eq!(
        server.protect_response(
            &mut client_binding,
            &response(Code::CONTENT, b""),
            ResponseNonce::Fresh
        ),
        Err(OscoreError::MissingContext)
    );
    assert_eq!(
        server.unprotect_request(&request(Code::GET, "plain")),
        Err(OscoreError::NotProtected)
    );
}

// ---------------------------------------------------------------- replay

#[test]
fn the_same_request_twice_is_a_replay() {
    let (mut client, mut server) = pair();
    let sent = client.protect_request(&request(Code::POST, "a")).unwrap();
    let _ = server.unprotect_request(&sent.packet).unwrap();
    assert_eq!(
        server.unprotect_request(&sent.packet),
        Err(OscoreError::Replayed)
    );
}

#[test]
fn out_of_order_within_the_window_is_accepted_and_older_is_too_old() {
    let (mut client, mut server) = pair();
    let sent: Vec<Packet> = (0..100)
        .map(|_| {
            client
                .protect_request(&request(Code::POST, "a"))
                .unwrap()
                .packet
        })
        .collect();
    let _ = server.unprotect_request(&sent[99]).unwrap();
    // 99 - 63 = 36 is the oldest still in the window.
    let _ = server.unprotect_request(&sent[50]).unwrap();
    let _ = server.unprotect_request(&sent[36]).unwrap();
    assert_eq!(
        server.unprotect_request(&sent[35]),
        Err(OscoreError::TooOld)
    );
    assert_eq!(server.unprotect_request(&sent[0]), Err(OscoreError::TooOld));
    assert_eq!(
        server.unprotect_request(&sent[50]),
        Err(OscoreError::Replayed)
    );
    let _ = server.unprotect_request(&sent[98]).unwrap();
    assert_eq!(server.replay_window().highest(), Some(99));
}

#[test]
fn a_forged_message_does_not_move_the_window() {
    let (mut client, mut server) = pair();
    let first = client
        .protect_request(&request(Code::POST, "a"))
        .unwrap()
        .packet;
    // Claim sequence number 1000 with a bogus tag: refused, and 0 is still fresh.
    let mut forged = first.clone();
    forged.clear_option(CoapOption::from(OSCORE));
    let option = OscoreOption {
        partial_iv: Some(encode_partial_iv(1000)),
        kid: Some(vec![1]),
        kid_context: None,
    };
    forged.add_option(CoapOption::from(OSCORE), option.encode());
    assert_eq!(
        server.unprotect_request(&forged),
        Err(OscoreError::DecryptFailed)
    );
    assert_eq!(server.replay_window().highest(), None);
    let _ = server.unprotect_request(&first).unwrap();
}

proptest! {
    /// Any arrival order: each sequence number is accepted at most once, and every refusal
    /// is a replay or a too-old number, never a number the window would still take.
    #[test]
    fn the_window_accepts_each_number_at_most_once(order in proptest::collection::vec(0u64..150, 1..200)) {
        let mut window = ReplayWindow::new(None);
        let mut accepted = alloc::collections::BTreeSet::new();
        for piv in order {
            match window.accept(piv) {
                Ok(_) => prop_assert!(accepted.insert(piv), "{} accepted twice", piv),
                Err(OscoreError::Replayed) => prop_assert!(accepted.contains(&piv)),
                Err(OscoreError::TooOld) => {
                    prop_assert!(piv + WINDOW_SIZE <= window.highest().unwrap())
                }
                Err(e) => prop_assert!(false, "unexpected {:?}", e),
            }
        }
    }
}

// ---------------------------------------------------------------- tampering

fn tampered(mut p: Packet, f: impl FnOnce(&mut Packet)) -> Packet {
    f(&mut p);
    p
}

#[test]
fn a_flipped_bit_anywhere_protected_is_refused() {
    let (mut client, mut server) = pair();
    let sent = client
        .protect_request(&request(Code::POST, "a"))
        .unwrap()
        .packet;
    let len = sent.payload.len();
    for i in 0..len {
        // Ciphertext bytes first, the last 8 are the tag.
        let bad = tampered(sent.clone(), |p| p.payload[i] ^= 0x01);
        assert_eq!(
            server.unprotect_request(&bad),
            Err(OscoreError::DecryptFailed),
            "byte {i}"
        );
    }
    // The Partial IV in the option is authenticated through the nonce.
    let bad_piv = tampered(sent.clone(), |p| {
        let mut v = p
            .get_first_option(CoapOption::from(OSCORE))
            .unwrap()
            .clone();
        v[1] ^= 0x01;
        p.clear_option(CoapOption::from(OSCORE));
        p.add_option(CoapOption::from(OSCORE), v);
    });
    assert_eq!(
        server.unprotect_request(&bad_piv),
        Err(OscoreError::DecryptFailed)
    );
    // Another kid names no context here.
    let bad_kid = tampered(sent.clone(), |p| {
        let mut v = p
            .get_first_option(CoapOption::from(OSCORE))
            .unwrap()
            .clone();
        *v.last_mut().unwrap() ^= 0x01;
        p.clear_option(CoapOption::from(OSCORE));
        p.add_option(CoapOption::from(OSCORE), v);
    });
    assert_eq!(
        server.unprotect_request(&bad_kid),
        Err(OscoreError::UnknownKid)
    );
    // Reserved flag bits make the option malformed.
    let bad_flags = tampered(sent.clone(), |p| {
        let mut v = p
            .get_first_option(CoapOption::from(OSCORE))
            .unwrap()
            .clone();
        v[0] |= 0x80;
        p.clear_option(CoapOption::from(OSCORE));
        p.add_option(CoapOption::from(OSCORE), v);
    });
    assert_eq!(
        server.unprotect_request(&bad_flags),
        Err(OscoreError::MalformedOption)
    );
    // None of that moved the window: the genuine message still goes through.
    let _ = server.unprotect_request(&sent).unwrap();
}

#[test]
fn a_tampered_response_is_refused_and_changes_nothing() {
    let (mut client, mut server) = pair();
    let sent = client.protect_request(&request(Code::GET, "a")).unwrap();
    let mut server_binding = server.unprotect_request(&sent.packet).unwrap().binding;
    let reply = server
        .protect_response(
            &mut server_binding,
            &response(Code::CONTENT, b"ok"),
            ResponseNonce::FromRequest,
        )
        .unwrap()
        .packet;
    let mut binding = sent.binding;
    let bad = tampered(reply.clone(), |p| *p.payload.last_mut().unwrap() ^= 0x80);
    assert_eq!(
        client.unprotect_response(&mut binding, &bad),
        Err(OscoreError::DecryptFailed)
    );
    assert!(!binding.request_nonce_used());
    let _ = client.unprotect_response(&mut binding, &reply).unwrap();
}

#[test]
fn a_response_bound_to_another_request_is_refused() {
    let (mut client, mut server) = pair();
    let a = client.protect_request(&request(Code::GET, "a")).unwrap();
    let b = client.protect_request(&request(Code::GET, "b")).unwrap();
    let mut server_a = server.unprotect_request(&a.packet).unwrap().binding;
    let _ = server.unprotect_request(&b.packet).unwrap();
    let reply_a = server
        .protect_response(
            &mut server_a,
            &response(Code::CONTENT, b"a"),
            ResponseNonce::Fresh,
        )
        .unwrap()
        .packet;
    let mut binding_b = b.binding;
    assert_eq!(
        client.unprotect_response(&mut binding_b, &reply_a),
        Err(OscoreError::DecryptFailed)
    );
}

#[test]
fn a_different_master_secret_does_not_verify() {
    let (mut client, mut server) = pair_with(&h("0102030405060708090a0b0c0d0e0f11"));
    let sent = client.protect_request(&request(Code::GET, "a")).unwrap();
    assert_eq!(
        server.unprotect_request(&sent.packet),
        Err(OscoreError::DecryptFailed)
    );
}

// ---------------------------------------------------------------- option, errors, store

#[test]
fn oscore_option_round_trips_and_rejects_malformed_values() {
    let full = OscoreOption {
        partial_iv: Some(vec![0x01, 0x02]),
        kid: Some(vec![0xAA]),
        kid_context: Some(vec![0x37, 0xcb]),
    };
    assert_eq!(hex::encode(full.encode()), "1a01020237cbaa");
    assert_eq!(OscoreOption::decode(&full.encode()).unwrap(), full);
    assert_eq!(OscoreOption::default().encode(), Vec::<u8>::new());
    assert_eq!(OscoreOption::decode(&[]).unwrap(), OscoreOption::default());
    for bad in [
        &[0x00][..],               // all flags zero must be the empty value
        &[0x20],                   // reserved bit
        &[0x06, 1, 2, 3, 4, 5, 6], // Partial IV length 6 is reserved
        &[0x02, 0x01],             // Partial IV past the end
        &[0x02, 0x00, 0x05],       // leading zero byte in the Partial IV
        &[0x11, 0x01, 0x05, 1],    // kid context past the end
        &[0x01, 0x01, 0x05],       // bytes left over without the kid flag
    ] {
        assert_eq!(
            OscoreOption::decode(bad),
            Err(OscoreError::MalformedOption),
            "{bad:02x?}"
        );
    }
    assert_eq!(encode_partial_iv(0), [0]);
    assert_eq!(encode_partial_iv(0x0102), [1, 2]);
    assert_eq!(encode_partial_iv(MAX_SEQUENCE_NUMBER), [0xFF; 5]);
    assert_eq!(decode_partial_iv(&[1, 2]), 0x0102);
}

#[test]
fn errors_map_to_the_codes_of_rfc_8613() {
    assert_eq!(OscoreError::MalformedOption.code(), Code::BAD_OPTION);
    assert_eq!(OscoreError::UnknownKid.code(), Code::UNAUTHORIZED);
    assert_eq!(OscoreError::Replayed.code(), Code::UNAUTHORIZED);
    assert_eq!(OscoreError::TooOld.code(), Code::UNAUTHORIZED);
    assert_eq!(OscoreError::DecryptFailed.code(), Code::BAD_REQUEST);
    assert_eq!(
        OscoreError::SequenceExhausted.code(),
        Code::INTERNAL_SERVER_ERROR
    );
    let answer = OscoreError::Replayed.error_response();
    assert_eq!(u8::from(answer.header.code), Code::UNAUTHORIZED.0);
    assert_eq!(answer.payload, b"Replay detected");
    assert_eq!(option_values(&answer, num::MAX_AGE), [Vec::<u8>::new()]);
    assert_eq!(
        OscoreError::UnknownKid.diagnostic(),
        "Security context not found"
    );
    assert_eq!(OscoreError::DecryptFailed.diagnostic(), "Decryption failed");
}

#[test]
fn invalid_parameters_are_refused() {
    let secret = h(SECRET);
    let long = [0u8; 8];
    for p in [
        params(&secret, &[], None, &long, &[1]),
        params(&secret, &[], None, &[1], &long),
        params(&secret, &[], None, &[1], &[1]),
    ] {
        assert!(matches!(
            SecurityContext::new(&p, None),
            Err(OscoreError::InvalidParameters(_))
        ));
    }
}

#[test]
fn the_store_finds_contexts_by_kid_and_kid_context() {
    let (secret, salt, id_ctx) = (h(SECRET), h(SALT), h(ID_CONTEXT));
    let mut store = ContextStore::new();
    store.insert(SecurityContext::new(&params(&secret, &salt, None, &[1], &[]), None).unwrap());
    store.insert(
        SecurityContext::new(&params(&secret, &salt, Some(&id_ctx), &[1], &[]), None).unwrap(),
    );
    store.insert(SecurityContext::new(&params(&secret, &salt, None, &[9], &[7]), None).unwrap());
    assert_eq!(store.len(), 3);

    // C.4 (no kid context) and C.6 (kid context) both reach their own context.
    let c4 = store.unprotect_request(&packet(C4_PROTECTED)).unwrap();
    assert_eq!(c4.binding.id_context(), None);
    let c6 = store.unprotect_request(&packet(C6_PROTECTED)).unwrap();
    assert_eq!(c6.binding.id_context(), Some(&id_ctx[..]));
    let mut binding = c6.binding;
    let out = store
        .protect_response(
            &mut binding,
            &packet(C7_RESPONSE),
            ResponseNonce::FromRequest,
        )
        .unwrap();
    assert!(is_protected(&out.packet));

    // A kid alone that fits one context only finds it; an unknown kid finds nothing.
    assert_eq!(store.lookup(&[7], None).unwrap().sender_id(), [9]);
    assert_eq!(
        store.lookup(&[8], None).err(),
        Some(OscoreError::UnknownKid)
    );
    assert_eq!(
        store.lookup(&[], Some(&[1, 2])).err(),
        Some(OscoreError::UnknownKid)
    );
    let unknown = tampered(packet(C5_PROTECTED), |_| {});
    assert_eq!(
        store.unprotect_request(&unknown).err(),
        Some(OscoreError::UnknownKid)
    );

    // Once the context is gone, its bindings fail cleanly.
    store.remove(&[], Some(&id_ctx));
    assert_eq!(
        store
            .protect_response(&mut binding, &packet(C7_RESPONSE), ResponseNonce::Fresh)
            .err(),
        Some(OscoreError::MissingContext)
    );
}

// ---------------------------------------------------------------- sequence numbers, restarts

#[test]
fn the_sequence_number_stops_at_2_pow_40_minus_1() {
    let secret = h(SECRET);
    let p = params(&secret, &[], None, &[1], &[2]);
    let persistence = Persistence {
        sequence_interval: 1,
        sequence_margin: 0,
        replay_interval: 1,
    };
    let stored = PersistedState {
        sender_sequence: Some(MAX_SEQUENCE_NUMBER - 1),
        replay_high_water: None,
    };
    let mut ctx = SecurityContext::restore(&p, &stored, persistence).unwrap();
    let last = ctx.protect_request(&request(Code::GET, "a")).unwrap();
    assert_eq!(
        last.persist,
        Some(Persist::SenderSequence(MAX_SEQUENCE_NUMBER))
    );
    assert_eq!(
        ctx.protect_request(&request(Code::GET, "a")),
        Err(OscoreError::SequenceExhausted)
    );
    let mut server = SecurityContext::new(&params(&secret, &[], None, &[2], &[1]), None).unwrap();
    let got = server.unprotect_request(&last.packet).unwrap();
    assert_eq!(got.binding.request_piv(), [0xFF; 5]);
}

#[test]
fn the_sender_asks_to_store_every_k_numbers_and_resumes_past_them() {
    let secret = h(SECRET);
    let p = params(&secret, &[], None, &[1], &[2]);
    let persistence = Persistence {
        sequence_interval: 4,
        sequence_margin: 2,
        replay_interval: 8,
    };
    let mut ctx = SecurityContext::new(&p, Some(persistence)).unwrap();
    let asks: Vec<Option<Persist>> = (0..9)
        .map(|_| {
            ctx.protect_request(&request(Code::GET, "a"))
                .unwrap()
                .persist
        })
        .collect();
    let at = |n| Some(Persist::SenderSequence(n));
    assert_eq!(
        asks,
        [at(0), None, None, None, at(4), None, None, None, at(8)]
    );

    // Restart with 8 stored: resume at 8 + K + F = 14, and store 14 before using it.
    let stored = PersistedState {
        sender_sequence: Some(8),
        replay_high_water: None,
    };
    let mut again = SecurityContext::restore(&p, &stored, persistence).unwrap();
    assert_eq!(again.next_sequence_number(), 14);
    let first = again.protect_request(&request(Code::GET, "a")).unwrap();
    assert_eq!(first.persist, at(14));
    assert_eq!(first.binding.request_piv(), [14]);
    assert_eq!(
        again
            .protect_request(&request(Code::GET, "a"))
            .unwrap()
            .persist,
        None
    );
    assert_eq!(
        again
            .protect_request(&request(Code::GET, "a"))
            .unwrap()
            .persist,
        at(16)
    );
}

#[test]
fn the_recipient_stores_its_high_water_mark_and_refuses_below_it_after_a_restart() {
    let secret = h(SECRET);
    let persistence = Persistence {
        sequence_interval: 100,
        sequence_margin: 0,
        replay_interval: 8,
    };
    let client_params = params(&secret, &[], None, &[1], &[2]);
    let server_params = params(&secret, &[], None, &[2], &[1]);
    let mut client = SecurityContext::new(&client_params, None).unwrap();
    let mut server = SecurityContext::new(&server_params, Some(persistence)).unwrap();
    let sent: Vec<Packet> = (0..40)
        .map(|_| {
            client
                .protect_request(&request(Code::POST, "a"))
                .unwrap()
                .packet
        })
        .collect();
    let mut stored = PersistedState::default();
    let mut asks = Vec::new();
    for (i, p) in sent.iter().enumerate().take(12) {
        if let Some(Persist::ReplayHighWater(h)) = server.unprotect_request(p).unwrap().persist {
            stored.replay_high_water = Some(h);
            asks.push(i as u64);
        }
    }
    assert_eq!(asks, [0, 8]);

    // Restart: 8 stored, so everything below 8 + 8 = 16 may have been seen: refused.
    let mut restarted = SecurityContext::restore(&server_params, &stored, persistence).unwrap();
    for old in [&sent[0], &sent[11], &sent[15]] {
        assert_eq!(restarted.unprotect_request(old), Err(OscoreError::TooOld));
    }
    let fresh = restarted.unprotect_request(&sent[16]).unwrap();
    assert_eq!(fresh.persist, Some(Persist::ReplayHighWater(16)));
    let _ = restarted.unprotect_request(&sent[20]).unwrap();
}

/// One endpoint's life across restarts: sends `counts[i]` messages in life i, storing
/// every requested value before sending, and crashing either right after a send or
/// between being asked to store and storing (`lose_last_store`).
fn sent_sequence_numbers(k: u64, f: u64, counts: &[usize], lose_last_store: &[bool]) -> Vec<u64> {
    let secret = h(SECRET);
    let p = params(&secret, &[], None, &[1], &[2]);
    let persistence = Persistence {
        sequence_interval: k,
        sequence_margin: f,
        replay_interval: 1,
    };
    let mut stored = PersistedState::default();
    let mut sent = Vec::new();
    for (life, &count) in counts.iter().enumerate() {
        let mut ctx = if life == 0 {
            SecurityContext::new(&p, Some(persistence)).unwrap()
        } else {
            SecurityContext::restore(&p, &stored, persistence).unwrap()
        };
        for _ in 0..count {
            let out = ctx.protect_request(&request(Code::GET, "a")).unwrap();
            if let Some(Persist::SenderSequence(v)) = out.persist {
                if lose_last_store.get(life).copied().unwrap_or(false) {
                    break; // crashed before the store: the message never left
                }
                stored.sender_sequence = Some(v);
            }
            sent.push(decode_partial_iv(out.binding.request_piv()));
        }
    }
    sent
}

proptest! {
    /// Whatever K, F, the number of messages per life and where the crashes fall, no
    /// sequence number (hence no nonce) goes out twice.
    #[test]
    fn a_restored_sender_never_reuses_a_nonce(
        k in 1u64..20,
        f in 0u64..3,
        counts in proptest::collection::vec(0usize..60, 1..6),
        lose in proptest::collection::vec(any::<bool>(), 0..6),
    ) {
        let sent = sent_sequence_numbers(k, f, &counts, &lose);
        let mut seen = alloc::collections::BTreeSet::new();
        for n in sent {
            prop_assert!(seen.insert(n), "sequence number {} sent twice", n);
        }
    }

    /// Whatever arrives in which life, a restored recipient never accepts a Partial IV
    /// that was acted upon before a restart.
    #[test]
    fn a_restored_recipient_never_accepts_a_replay(
        interval in 1u64..20,
        lives in proptest::collection::vec(proptest::collection::vec(0u64..120, 0..40), 1..5),
    ) {
        let persistence = Persistence { sequence_interval: 1, sequence_margin: 0, replay_interval: interval };
        let mut stored: Option<u64> = None;
        let mut acted = alloc::collections::BTreeSet::new();
        for (life, arrivals) in lives.iter().enumerate() {
            let mut window = if life == 0 {
                ReplayWindow::new(Some(&persistence))
            } else {
                ReplayWindow::restore(stored, &persistence)
            };
            for &piv in arrivals {
                if let Ok(persist) = window.accept(piv) {
                    prop_assert!(acted.insert(piv), "{} accepted again", piv);
                    if let Some(Persist::ReplayHighWater(h)) = persist {
                        stored = Some(h);
                    }
                }
            }
        }
    }
}
