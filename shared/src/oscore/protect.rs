//! Protecting and verifying messages (RFC 8613 §4, §5.3, §8): the original CoAP message
//! in, the OSCORE message out, and back.
//!
//! Everything works on `coap_lite::Packet`s. The outer message keeps the original's type,
//! message ID and token; its code is POST (FETCH with Observe) for requests and 2.04
//! Changed (2.05 Content with Observe) for responses; its options are the Class U ones
//! plus the OSCORE option; its payload is the ciphertext. The plaintext (code, Class E
//! options, payload) is laid out with coap-lite's own option encoder.

use super::context::SecurityContext;
use super::cose;
use super::error::OscoreError;
use super::option::{
    class_of, decode_partial_iv, encode_partial_iv, keep_outer, Class, OscoreOption, OSCORE,
};
use super::sequence::Persist;
use crate::coap::Packet;
use crate::coap::{option as num, Code};
use alloc::{string::String, vec::Vec};
use coap_lite::{CoapOption, MessageClass};

/// What ties a response to its request (§7.1, §8): the request's kid and Partial IV (in
/// every response's AAD, and the response nonce when it has no Partial IV of its own),
/// the context, and the Observe bookkeeping. The caller keeps it with the exchange (by
/// token) for as long as responses may come: one response, or a whole observation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestBinding {
    pub(crate) request_kid: Vec<u8>,
    pub(crate) request_piv: Vec<u8>,
    /// The context: its Recipient ID and ID Context (the [`super::ContextStore`] key).
    pub(crate) recipient_id: Vec<u8>,
    pub(crate) id_context: Option<Vec<u8>>,
    /// Made by this endpoint as client ([`SecurityContext::protect_request`]).
    pub(crate) client: bool,
    /// The request registered an observation (inner Observe 0).
    pub(crate) observe: bool,
    /// A response without Partial IV has used the request nonce.
    pub(crate) request_nonce_used: bool,
    /// Client: the largest Partial IV of a verified notification (§7.4.1).
    pub(crate) notification_number: Option<u64>,
    /// Client: notifications verified so far (the Observe value the next one is given).
    pub(crate) notifications: u32,
    /// Client: a final (non-notification) response was accepted.
    pub(crate) done: bool,
}

impl RequestBinding {
    /// The request's kid: the requester's Sender ID.
    pub fn request_kid(&self) -> &[u8] {
        &self.request_kid
    }
    /// The request's Partial IV, as on the wire.
    pub fn request_piv(&self) -> &[u8] {
        &self.request_piv
    }
    /// The Recipient ID of the context the exchange runs in.
    pub fn recipient_id(&self) -> &[u8] {
        &self.recipient_id
    }
    /// The ID Context of the context the exchange runs in.
    pub fn id_context(&self) -> Option<&[u8]> {
        self.id_context.as_deref()
    }
    /// Whether the request registered an observation.
    pub fn is_observe(&self) -> bool {
        self.observe
    }
    /// Client side: the Notification Number (largest verified notification Partial IV).
    pub fn notification_number(&self) -> Option<u64> {
        self.notification_number
    }
    /// Whether a response without its own Partial IV (using the request nonce) was
    /// protected or accepted already.
    pub fn request_nonce_used(&self) -> bool {
        self.request_nonce_used
    }

    /// Whether `ctx` is the context this binding was made in, on this side.
    fn matches(&self, ctx: &SecurityContext, client: bool) -> bool {
        self.client == client
            && self.recipient_id == ctx.recipient_id
            && self.id_context == ctx.id_context
    }
}

/// Which nonce a response is protected with (§8.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseNonce {
    /// The request's nonce, no Partial IV in the response: the usual single response
    /// (and at most one response per request, e.g. the first notification).
    FromRequest,
    /// A fresh sender sequence number, sent as the response's Partial IV: required for
    /// every notification but the first (§4.1.3.5.2).
    Fresh,
}

/// A protected request and what to keep for its responses.
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub struct ProtectedRequest {
    /// The OSCORE message to send.
    pub packet: Packet,
    /// Keep with the exchange; needed to verify the response(s).
    pub binding: RequestBinding,
    /// Store this before sending `packet` (Appendix B.1.1).
    pub persist: Option<Persist>,
}

/// A verified request and what to keep for protecting its response(s).
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub struct VerifiedRequest {
    /// The original request (outer Class U options kept, OSCORE option gone).
    pub packet: Packet,
    /// Keep with the exchange; needed to protect the response(s).
    pub binding: RequestBinding,
    /// Store this before acting on `packet` (replay high-water mark).
    pub persist: Option<Persist>,
}

/// A protected response.
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub struct ProtectedResponse {
    /// The OSCORE message to send.
    pub packet: Packet,
    /// Store this before sending `packet` (only when it carries a fresh Partial IV).
    pub persist: Option<Persist>,
}

/// A verified response.
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub struct VerifiedResponse {
    /// The original response. For a notification, its Observe value is the number of
    /// notifications verified before it in this observation (0 for the first), so that
    /// RFC 7641's ordering by Observe value agrees with OSCORE's by Partial IV (§7.4.1),
    /// which has already refused any notification not newer than every one before.
    pub packet: Packet,
    /// The response's own Partial IV, if it had one.
    pub partial_iv: Option<u64>,
}

/// Whether a message carries an OSCORE option.
pub fn is_protected(packet: &Packet) -> bool {
    packet.get_option(CoapOption::from(OSCORE)).is_some()
}

/// The decoded OSCORE option of a message: [`OscoreError::NotProtected`] without one,
/// [`OscoreError::MalformedOption`] for a bad or repeated one.
pub fn oscore_option(packet: &Packet) -> Result<OscoreOption, OscoreError> {
    let values = packet
        .get_option(CoapOption::from(OSCORE))
        .ok_or(OscoreError::NotProtected)?;
    if values.len() != 1 {
        return Err(OscoreError::MalformedOption);
    }
    OscoreOption::decode(values.first().map_or(&[][..], Vec::as_slice))
}

impl SecurityContext {
    /// Protects a request (§8.1) with the next sender sequence number.
    pub fn protect_request(&mut self, request: &Packet) -> Result<ProtectedRequest, OscoreError> {
        let code = u8::from(request.header.code);
        if !Code(code).is_request() {
            return Err(OscoreError::InvalidMessage("not a request"));
        }
        let split = Split::of(request, true)?;
        let plaintext = encode_plaintext(code, &split.inner, &request.payload);
        let (sequence, persist) = self.sequence.take()?;
        let piv = encode_partial_iv(sequence);
        let nonce = cose::nonce(&self.common_iv, &self.sender_id, &piv);
        let aad = cose::enc_structure(&self.sender_id, &piv);
        let ciphertext = cose::encrypt(&self.sender_key, &nonce, &aad, plaintext);
        let option = OscoreOption {
            partial_iv: Some(piv.clone()),
            kid: Some(self.sender_id.clone()),
            kid_context: self.id_context.clone(),
        };
        let outer_code = if split.observe.is_some() {
            Code::FETCH
        } else {
            Code::POST
        };
        let packet = outer_message(request, outer_code, split.outer, &option, ciphertext);
        let binding = RequestBinding {
            request_kid: self.sender_id.clone(),
            request_piv: piv,
            recipient_id: self.recipient_id.clone(),
            id_context: self.id_context.clone(),
            client: true,
            observe: split.observe == Some(0),
            request_nonce_used: false,
            notification_number: None,
            notifications: 0,
            done: false,
        };
        Ok(ProtectedRequest {
            packet,
            binding,
            persist,
        })
    }

    /// Verifies a request (§8.2): kid and kid context must name this context, the Partial
    /// IV must pass the replay window, the tag must verify; only then is the window
    /// updated. On error, [`OscoreError::error_response`] is the answer RFC 8613 allows.
    pub fn unprotect_request(&mut self, outer: &Packet) -> Result<VerifiedRequest, OscoreError> {
        let option = oscore_option(outer)?;
        let (Some(piv), Some(kid)) = (option.partial_iv, option.kid) else {
            return Err(OscoreError::MalformedOption);
        };
        if !Code(u8::from(outer.header.code)).is_request() || outer.payload.is_empty() {
            return Err(OscoreError::MalformedOption);
        }
        if kid != self.recipient_id
            || option
                .kid_context
                .is_some_and(|c| Some(c) != self.id_context)
        {
            return Err(OscoreError::UnknownKid);
        }
        let sequence = decode_partial_iv(&piv);
        self.replay.check(sequence)?;
        let nonce = cose::nonce(&self.common_iv, &kid, &piv);
        let aad = cose::enc_structure(&kid, &piv);
        let plaintext = cose::decrypt(&self.recipient_key, &nonce, &aad, &outer.payload)?;
        // The tag verified: the Partial IV is the peer's and is used up, even if the
        // plaintext turns out malformed below.
        let persist = self.replay.accept(sequence)?;
        let (code, inner) = decode_plaintext(&plaintext)?;
        if !Code(code).is_request() {
            return Err(OscoreError::MalformedPlaintext);
        }
        let observe = inner
            .get_first_option(CoapOption::from(num::OBSERVE))
            .is_some_and(|v| v.iter().all(|b| *b == 0));
        let packet = inner_message(outer, code, inner);
        let binding = RequestBinding {
            request_kid: kid,
            request_piv: piv,
            recipient_id: self.recipient_id.clone(),
            id_context: self.id_context.clone(),
            client: false,
            observe,
            request_nonce_used: false,
            notification_number: None,
            notifications: 0,
            done: false,
        };
        Ok(VerifiedRequest {
            packet,
            binding,
            persist,
        })
    }

    /// Protects a response to the request `binding` came from (§8.3, §8.3.1), with the
    /// request's nonce or a fresh Partial IV. An Observe option in `response` makes it a
    /// notification: inner Observe empty, outer Observe the original value, outer code
    /// 2.05. The request nonce serves one response only ([`OscoreError::NonceReuse`]).
    pub fn protect_response(
        &mut self,
        binding: &mut RequestBinding,
        response: &Packet,
        nonce: ResponseNonce,
    ) -> Result<ProtectedResponse, OscoreError> {
        if !binding.matches(self, false) {
            return Err(OscoreError::MissingContext);
        }
        let code = u8::from(response.header.code);
        if !Code(code).is_response() {
            return Err(OscoreError::InvalidMessage("not a response"));
        }
        let split = Split::of(response, false)?;
        let plaintext = encode_plaintext(code, &split.inner, &response.payload);
        let (piv, nonce, persist) = match nonce {
            ResponseNonce::FromRequest if binding.request_nonce_used => {
                return Err(OscoreError::NonceReuse)
            }
            ResponseNonce::FromRequest => {
                let nonce =
                    cose::nonce(&self.common_iv, &binding.request_kid, &binding.request_piv);
                (None, nonce, None)
            }
            ResponseNonce::Fresh => {
                let (sequence, persist) = self.sequence.take()?;
                let piv = encode_partial_iv(sequence);
                let nonce = cose::nonce(&self.common_iv, &self.sender_id, &piv);
                (Some(piv), nonce, persist)
            }
        };
        let aad = cose::enc_structure(&binding.request_kid, &binding.request_piv);
        let ciphertext = cose::encrypt(&self.sender_key, &nonce, &aad, plaintext);
        if piv.is_none() {
            binding.request_nonce_used = true;
        }
        let option = OscoreOption {
            partial_iv: piv,
            kid: None,
            kid_context: None,
        };
        let outer_code = if split.observe.is_some() {
            Code::CONTENT
        } else {
            Code::CHANGED
        };
        let packet = outer_message(response, outer_code, split.outer, &option, ciphertext);
        Ok(ProtectedResponse { packet, persist })
    }

    /// Verifies a response to the request `binding` came from (§8.4, §8.4.2). Responses
    /// are bound to the request, so there is no replay window: a request takes one
    /// response, or for an observation one notification without Partial IV and then only
    /// notifications whose Partial IV is above the Notification Number (the stricter
    /// ordering §7.4.1 allows). Nothing in `binding` changes unless the tag verifies.
    pub fn unprotect_response(
        &mut self,
        binding: &mut RequestBinding,
        outer: &Packet,
    ) -> Result<VerifiedResponse, OscoreError> {
        if !binding.matches(self, true) {
            return Err(OscoreError::MissingContext);
        }
        let option = oscore_option(outer)?;
        if !Code(u8::from(outer.header.code)).is_response() || outer.payload.is_empty() {
            return Err(OscoreError::MalformedOption);
        }
        if binding.done {
            return Err(OscoreError::Replayed);
        }
        let sequence = option.partial_iv.as_deref().map(decode_partial_iv);
        let nonce = match &option.partial_iv {
            Some(piv) => cose::nonce(&self.common_iv, &self.recipient_id, piv),
            None if binding.request_nonce_used => return Err(OscoreError::Replayed),
            None => cose::nonce(&self.common_iv, &binding.request_kid, &binding.request_piv),
        };
        let aad = cose::enc_structure(&binding.request_kid, &binding.request_piv);
        let plaintext = cose::decrypt(&self.recipient_key, &nonce, &aad, &outer.payload)?;
        let (code, mut inner) = decode_plaintext(&plaintext)?;
        if !Code(code).is_response() {
            return Err(OscoreError::MalformedPlaintext);
        }
        let notification = inner.get_option(CoapOption::from(num::OBSERVE)).is_some();
        if notification {
            if !binding.observe {
                return Err(OscoreError::UnexpectedObserve);
            }
            // §7.4.1: only notifications newer than every one before; the one without
            // Partial IV counts as the oldest of all.
            match (sequence, binding.notification_number) {
                (Some(s), Some(n)) if s <= n => return Err(OscoreError::Replayed),
                (None, Some(_)) => return Err(OscoreError::Replayed),
                _ => {}
            }
            if let Some(s) = sequence {
                binding.notification_number = Some(s);
            }
            // The order was checked just above, by Partial IV; RFC 7641's by Observe
            // value must agree: the first notification without a Partial IV carries the
            // server's Observe counter and the ones after it Partial IVs, which start
            // anywhere (a server's own numbers start at a random point, see
            // `driver::security`), so a value derived from either could look older.
            let value = binding.notifications & 0x00FF_FFFF;
            binding.notifications = binding.notifications.wrapping_add(1);
            inner.clear_option(CoapOption::from(num::OBSERVE));
            inner.add_option(CoapOption::from(num::OBSERVE), num::encode_uint(value));
        } else {
            binding.done = true;
        }
        if sequence.is_none() {
            binding.request_nonce_used = true;
        }
        Ok(VerifiedResponse {
            packet: inner_message(outer, code, inner),
            partial_iv: sequence,
        })
    }
}

/// An original message's options, sorted into inner and outer (§4.1).
struct Split {
    /// Class E options (and the inner copies of Class E+U ones), with no header.
    inner: Packet,
    /// Class U options (and outer copies), in order.
    outer: Vec<(u16, Vec<u8>)>,
    /// The original Observe value, if any.
    observe: Option<u32>,
}

impl Split {
    fn of(message: &Packet, is_request: bool) -> Result<Split, OscoreError> {
        let mut split = Split {
            inner: Packet::new(),
            outer: Vec::new(),
            observe: None,
        };
        for (&number, values) in message.options() {
            for value in values {
                split.add(number, value, is_request)?;
            }
        }
        Ok(split)
    }

    fn add(&mut self, number: u16, value: &[u8], is_request: bool) -> Result<(), OscoreError> {
        if number == OSCORE {
            // §4.1.3.7: no nested OSCORE.
            return Err(OscoreError::InvalidMessage("already has an OSCORE option"));
        }
        if number == num::PROXY_URI && is_request {
            return self.add_proxy_uri(value);
        }
        if number == num::OBSERVE {
            self.observe = Some(num::decode_uint(value).ok_or(OscoreError::InvalidMessage(
                "Observe value longer than 3 bytes",
            ))?);
        }
        match class_of(number, value, is_request) {
            Class::Inner => self.inner_add(number, value.to_vec()),
            Class::Outer => self.outer.push((number, value.to_vec())),
            Class::Both => {
                // §4.1.3.5.2: a notification's inner Observe is empty.
                let inner = if number == num::OBSERVE && !is_request {
                    Vec::new()
                } else {
                    value.to_vec()
                };
                self.inner_add(number, inner);
                self.outer.push((number, value.to_vec()));
            }
        }
        Ok(())
    }

    fn inner_add(&mut self, number: u16, value: Vec<u8>) {
        self.inner.add_option(CoapOption::from(number), value);
    }

    /// §4.1.3.3: Proxy-Uri is split; its path and query go inside, the rest
    /// (`scheme://authority`) stays outside as Proxy-Uri.
    fn add_proxy_uri(&mut self, value: &[u8]) -> Result<(), OscoreError> {
        let bad = OscoreError::InvalidMessage("Proxy-Uri does not parse");
        let uri = core::str::from_utf8(value).map_err(|_| bad)?;
        // `split_once("://")`, without the two-way string searcher (0.3 KiB of a
        // firmware, which never sends a Proxy-Uri).
        let at = value.windows(3).position(|w| w == b"://").ok_or(bad)?;
        let (scheme, rest) = (&uri[..at], &uri[at + 3..]);
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path_query) = rest.split_at(end);
        if scheme.is_empty() || authority.is_empty() || path_query.contains('#') {
            return Err(bad);
        }
        let (path, query) = match path_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_query, None),
        };
        if !path.is_empty() && path != "/" {
            for segment in path[1..].split('/') {
                let decoded = percent_decode(segment).ok_or(bad)?;
                self.inner_add(num::URI_PATH, decoded);
            }
        }
        for argument in query.into_iter().flat_map(|q| q.split('&')) {
            let decoded = percent_decode(argument).ok_or(bad)?;
            self.inner_add(num::URI_QUERY, decoded);
        }
        let mut outer = String::with_capacity(scheme.len() + 3 + authority.len());
        outer.push_str(scheme);
        outer.push_str("://");
        outer.push_str(authority);
        self.outer.push((num::PROXY_URI, outer.into_bytes()));
        Ok(())
    }
}

/// Percent-decodes a URI component (RFC 3986 §2.1); `None` for a broken escape.
fn percent_decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = core::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

/// The plaintext of §5.3: code, Class E options, and the payload after 0xFF if any.
fn encode_plaintext(code: u8, inner: &Packet, payload: &[u8]) -> Vec<u8> {
    crate::coap::encode::encode_plaintext(code, inner, payload)
}

/// Splits a plaintext into its code and a packet holding its options and payload.
fn decode_plaintext(plaintext: &[u8]) -> Result<(u8, Packet), OscoreError> {
    let (&code, rest) = plaintext
        .split_first()
        .ok_or(OscoreError::MalformedPlaintext)?;
    // Parsed as a message with a bare header (version 1, no token) and this code.
    let mut message = Vec::with_capacity(plaintext.len() + 3);
    message.extend_from_slice(&[0x40, code, 0, 0]);
    message.extend_from_slice(rest);
    let packet = Packet::from_bytes(&message).map_err(|_| OscoreError::MalformedPlaintext)?;
    if is_protected(&packet) {
        return Err(OscoreError::MalformedPlaintext);
    }
    Ok((code, packet))
}

/// The OSCORE message: the original's header and token, the outer code and options, the
/// OSCORE option, the ciphertext as payload.
fn outer_message(
    original: &Packet,
    code: Code,
    outer: Vec<(u16, Vec<u8>)>,
    option: &OscoreOption,
    ciphertext: Vec<u8>,
) -> Packet {
    let mut packet = Packet::new();
    packet.header = original.header.clone();
    packet.header.code = MessageClass::from(code.0);
    packet.set_token(original.get_token().to_vec());
    for (number, value) in outer {
        packet.add_option(CoapOption::from(number), value);
    }
    packet.add_option(CoapOption::from(OSCORE), option.encode());
    packet.payload = ciphertext;
    packet
}

/// The original message back: the OSCORE message's header and token, the decrypted code,
/// the outer options a receiver keeps, then the inner options and payload.
fn inner_message(outer: &Packet, code: u8, inner: Packet) -> Packet {
    let mut packet = Packet::new();
    packet.header = outer.header.clone();
    packet.header.code = MessageClass::from(code);
    packet.set_token(outer.get_token().to_vec());
    for (&number, values) in outer.options() {
        if keep_outer(number) {
            for value in values {
                packet.add_option(CoapOption::from(number), value.clone());
            }
        }
    }
    for (&number, values) in inner.options() {
        for value in values {
            packet.add_option(CoapOption::from(number), value.clone());
        }
    }
    packet.payload = inner.payload;
    packet
}
