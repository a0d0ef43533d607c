//! The server half: duplicate detection, piggybacked and separate responses, Block1
//! reassembly, Block2 slicing, observers and notifications, `/.well-known/core`.

use super::secure::{Protection, Refusal};
use super::{block_option, Engine, Event, IncomingId, IncomingRequest, PeerAddress, Purpose};
use crate::coap::dedup::Seen;
use crate::coap::encode::encode;
use crate::coap::Packet;
use crate::coap::{link_format, option, BlockValue, Code, Method, Request, Response};
use crate::coap::{observe::SEQUENCE_MODULUS, CONTENT_FORMAT_LINK_FORMAT};
use crate::oscore;
use crate::Instant;
use alloc::{boxed::Box, string::String, vec::Vec};
use coap_lite::MessageType;

/// What a server holds on behalf of its peers ([`Engine::held`]); each is bounded by a
/// [`Config`](crate::coap::Config) limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    /// Observers registered (`max_observers`).
    pub observers: usize,
    /// Requests received and not yet answered (`max_pending_requests`).
    pub pending_requests: usize,
    /// Bytes of Block2 bodies kept for follow-up blocks (`max_cached_body_bytes`).
    pub cached_body_bytes: usize,
    /// Bytes of partly received Block1 bodies (`max_upload_bytes`).
    pub upload_bytes: usize,
    /// OSCORE contexts kept ([`ServerSecurity`](super::ServerSecurity)'s `max_contexts`).
    pub oscore_contexts: usize,
}

/// A request received and not yet answered.
pub(super) struct Incoming<A> {
    peer: A,
    mid: u16,
    token: Vec<u8>,
    con: bool,
    /// An empty ACK went out: the response must come as a separate CON.
    acked: bool,
    method: Code,
    key: String,
    /// Block1 of the request's last block, echoed in the response.
    block1: Option<BlockValue>,
    /// The Block2 block the client asked for.
    block2: Option<BlockValue>,
    /// GET with Observe: 0: register the observer if the response is a success.
    register_observer: bool,
    /// It came protected with OSCORE: its answers are protected in the same context.
    protection: Option<Protection>,
    /// A plain request to a server with security on, from an address not validated
    /// by an Echo round trip: its answer may be at most this many bytes (RFC 7252
    /// §11.3: three times the request).
    budget: Option<usize>,
    /// The largest payload its answer may carry in one datagram: the block size, or
    /// what the requester declared with [`option::MAX_PAYLOAD`] (up to our own
    /// `max_payload`).
    max_payload: usize,
    /// The Accept option: a success in another Content-Format becomes 4.06.
    accept: Option<u32>,
    /// The ETag options of a GET (RFC 7252 §5.10.6, validation): a 2.05 whose ETag is
    /// one of them becomes 2.03 Valid with that ETag and no payload.
    etags: Vec<Vec<u8>>,
    /// The response is already the block to send (served from the Block2 cache).
    sliced: bool,
}

/// One observer of one resource.
pub(super) struct Observer {
    key: String,
    last_con: Instant,
    /// The message ID of a CON notification awaiting its ACK.
    pub(super) con_in_flight: Option<u16>,
    /// The message ID of the last notification, so a Reset to it can be recognised.
    pub(super) last_mid: Option<u16>,
    /// The registration came protected: notifications are protected in its context.
    protection: Option<Protection>,
    /// The largest notification payload sent in one datagram to this observer.
    max_payload: usize,
    /// The Content-Format of the response that registered it: every notification must
    /// have it (RFC 7641 §4.2).
    content_format: Option<u16>,
}

/// How many block-wise transfers a server keeps per kind before purging expired ones.
const BLOCK_STATE_SOFT_LIMIT: usize = 256;
/// Max-Age of a 5.03 for a server at one of its limits: when to try again, in seconds.
const BUSY_RETRY_S: u32 = 2;

/// The ETag of a block-wise representation that came without one: a 64-bit FNV-1a
/// hash of the body (not a security measure: it tells versions apart).
fn etag_of(body: &[u8]) -> [u8; 8] {
    crate::coap::dedup::fingerprint(body).to_be_bytes()
}

/// A 5.03 for a server at one of its limits, with Max-Age (RFC 7252 §5.9.3.4).
fn busy(reason: &str) -> Response {
    Response::error(Code::SERVICE_UNAVAILABLE, reason)
        .with_option(option::MAX_AGE, option::encode_uint(BUSY_RETRY_S))
}

impl<A: PeerAddress> Engine<A> {
    /// Answers a request received as [`Event::Request`]. Large bodies go block-wise; a
    /// success answering `GET` with Observe registers the observer. Answering an unknown
    /// or already answered id does nothing and returns `false`.
    pub fn respond(&mut self, now: Instant, id: IncomingId, response: Response) -> bool {
        self.tick(now);
        let Some(incoming) = self.incoming.remove(&id) else {
            return false;
        };
        self.answer(now, incoming, response);
        self.drop_settled_piggyback_deadlines();
        true
    }

    /// Ends a received request without a response: for a NON request (a fire-and-forget
    /// publish) nothing is sent; a CON request still gets its empty ACK, as RFC 7252
    /// requires. Returns `false` for an unknown or already answered id.
    pub fn discard(&mut self, now: Instant, id: IncomingId) -> bool {
        self.tick(now);
        let Some(incoming) = self.incoming.remove(&id) else {
            return false;
        };
        let (peer, mid) = (incoming.peer, incoming.mid);
        if incoming.con && !incoming.acked {
            let ack = Self::empty_message(MessageType::Acknowledgement, mid);
            self.dedup
                .update(peer, mid, Seen::Answered(Some(ack.clone())));
            self.transmit(peer, ack);
        } else {
            self.dedup.update(peer, mid, Seen::Answered(None));
        }
        self.drop_settled_piggyback_deadlines();
        true
    }

    /// Acknowledges a received CON request now with an empty ACK, its response to follow
    /// as a separate CON (RFC 7252 §5.2.2), instead of when the piggyback window ends:
    /// for a handler that knows it will hold the request long (a long poll), so the
    /// server does not wake again at that deadline only to send the ACK. Returns `false`
    /// for an unknown or answered id, a NON request, or one acknowledged already.
    pub fn acknowledge(&mut self, now: Instant, id: IncomingId) -> bool {
        self.tick(now);
        let pending = self
            .incoming
            .get(&id)
            .is_some_and(|incoming| incoming.con && !incoming.acked);
        if pending {
            self.acknowledge_slow_request(id);
            self.drop_settled_piggyback_deadlines();
        }
        pending
    }

    /// Sends `response` as a notification to every observer of `resource` (a request's
    /// [`Request::resource_key`]) and returns how many there were. A non-success
    /// response ends the observations (RFC 7641 §3.2). Notifications go NON, and CON at
    /// least every `observe_con_interval`, so observers that left are found and removed.
    pub fn notify(&mut self, now: Instant, resource: &str, response: Response) -> usize {
        self.tick(now);
        let Some(targets) = self.observed.get(resource) else {
            return 0;
        };
        let targets: Vec<(A, Vec<u8>)> = targets.iter().cloned().collect();
        self.observe_seq = (self.observe_seq + 1) % SEQUENCE_MODULUS;
        let seq = self.observe_seq;
        let failure = !response.code().is_success();
        for (peer, token) in &targets {
            let Some((limit, registered_format)) = self
                .observers
                .get(&(*peer, token.clone()))
                .map(|o| (o.max_payload, o.content_format))
            else {
                continue;
            };
            // RFC 7641 §4.2: a notification has the Content-Format of the registration's
            // response; a server that cannot keep to it sends 4.06 and removes the
            // observer.
            let format_changed = !failure && response.content_format() != registered_format;
            let ends = failure || format_changed;
            let mut message = if format_changed {
                Response::error(
                    Code::NOT_ACCEPTABLE,
                    "the representation changed Content-Format",
                )
            } else {
                response.clone()
            };
            if !ends {
                message.set_uint_option(option::OBSERVE, seq);
            }
            let message = self.first_block(now, (*peer, resource, token), message, limit);
            let Some(observer) = self.observers.get_mut(&(*peer, token.clone())) else {
                continue;
            };
            let in_flight = observer.con_in_flight.take();
            let con = ends
                || in_flight.is_some()
                || now >= observer.last_con + self.config.observe_con_interval;
            if con {
                observer.last_con = now;
            }
            let mid = self.next_message_id();
            let observer = self
                .observers
                .get_mut(&(*peer, token.clone()))
                .expect("present");
            observer.last_mid = Some(mid);
            if con {
                observer.con_in_flight = Some(mid);
            }
            // RFC 7641 §4.5.2: a newer notification replaces one still in transit, and
            // keeps its retransmission counter and timeout: an observer that never
            // acknowledges is dropped however often the resource changes (§4.5).
            let carried = in_flight.and_then(|old| self.take_unacked(*peer, old));
            let mut packet = message.into_packet();
            let key = (*peer, token.clone());
            if let Some(mut protection) = self
                .observers
                .get_mut(&key)
                .and_then(|o| o.protection.take())
            {
                packet = self.protect_answer(&mut protection, packet, true);
                if let Some(observer) = self.observers.get_mut(&key) {
                    observer.protection = Some(protection);
                }
            }
            if con {
                let bytes = Self::encode(packet, MessageType::Confirmable, mid, token);
                let purpose = Purpose::Notification {
                    token: token.clone(),
                };
                match carried {
                    Some(old) => self.resend_confirmable(*peer, mid, bytes, purpose, old),
                    None => self.send_confirmable(now, *peer, mid, bytes, purpose),
                }
            } else {
                let bytes = Self::encode(packet, MessageType::NonConfirmable, mid, token);
                self.transmit(*peer, bytes);
            }
            if ends {
                self.remove_observer(*peer, token);
            }
        }
        targets.len()
    }

    /// What the server holds on behalf of its peers now, against its limits.
    pub fn held(&self) -> Held {
        Held {
            observers: self.observers.len(),
            pending_requests: self.incoming.len(),
            cached_body_bytes: self.downloads.bytes(),
            upload_bytes: self.uploads.bytes(),
            oscore_contexts: self
                .server_security
                .as_ref()
                .map_or(0, |s| s.context_count()),
        }
    }

    /// How many observers `resource` has.
    pub fn observer_count(&self, resource: &str) -> usize {
        self.observed.get(resource).map_or(0, |s| s.len())
    }

    /// Requests received and not yet answered.
    pub fn pending_incoming(&self) -> usize {
        self.incoming.len()
    }

    pub(super) fn remove_observer(&mut self, peer: A, token: &[u8]) {
        let Some(observer) = self.observers.remove(&(peer, token.to_vec())) else {
            return;
        };
        if let Some(mid) = observer.con_in_flight {
            self.take_unacked(peer, mid);
        }
        if let Some(set) = self.observed.get_mut(&observer.key) {
            set.remove(&(peer, token.to_vec()));
            if set.is_empty() {
                self.observed.remove(&observer.key);
            }
        }
    }

    pub(super) fn on_request(
        &mut self,
        now: Instant,
        peer: A,
        packet: Packet,
        fingerprint: u64,
        len: usize,
    ) {
        let mid = packet.header.message_id;
        let con = packet.header.get_type() == MessageType::Confirmable;
        if let Some(seen) = self.dedup.get(now, peer, mid, fingerprint) {
            self.stats.duplicates += 1;
            match seen.clone() {
                Seen::Answered(Some(bytes)) => self.transmit(peer, bytes),
                Seen::Answered(None) => {}
                Seen::InProgress(id) => {
                    // The handler is still running and the client is retrying: acknowledge
                    // now (again, if our empty ACK was lost: RFC 7252 §4.5 acknowledges
                    // each copy); the response follows as a separate CON.
                    let acked = self.incoming.get(&IncomingId(id)).is_some_and(|i| i.acked);
                    if con && acked {
                        self.acknowledge_again(IncomingId(id));
                    } else if con {
                        self.acknowledge_slow_request(IncomingId(id));
                    }
                }
            }
            return;
        }
        let id = IncomingId(self.next_id());
        let expires = now + self.config.exchange_lifetime;
        let key = (peer, mid, fingerprint);
        self.dedup.insert(now, expires, key, Seen::InProgress(id.0));
        let at_limit = self.incoming.len() >= self.config.max_pending_requests;

        let token = packet.get_token().to_vec();
        let verified = self
            .combined_edhoc(now, peer, packet)
            .and_then(|packet| self.verify_request(packet));
        let (packet, protection, identity) = match verified {
            Ok(verified) => verified,
            Err(answer) => {
                let (kind, answer_mid) = if con {
                    (MessageType::Acknowledgement, mid)
                } else {
                    (MessageType::NonConfirmable, self.next_message_id())
                };
                let bytes = Self::encode(answer, kind, answer_mid, &token);
                self.dedup
                    .update(peer, mid, Seen::Answered(Some(bytes.clone())));
                self.transmit(peer, bytes);
                return;
            }
        };
        let code = Code(packet.header.code.into());
        let mut request = Request::from_packet(packet, con);
        let mut incoming = Box::new(Incoming {
            peer,
            mid,
            token,
            con,
            acked: false,
            method: code,
            key: request.resource_key(),
            block1: None,
            block2: None,
            register_observer: false,
            budget: None,
            protection,
            max_payload: self.config.block_size,
            accept: None,
            etags: Vec::new(),
            sliced: false,
        });
        if incoming.protection.is_none() {
            if let Some(security) = &self.server_security {
                let expected = security.address_echo(&peer);
                let echoed = request
                    .option(super::secure::ECHO)
                    .is_some_and(|v| v == expected.as_slice());
                if !echoed {
                    incoming.budget = Some(3 * len);
                }
            }
        }

        if at_limit {
            return self.answer(now, incoming, busy("too many requests in progress"));
        }
        // RFC 7252 §5.4.1: an unrecognised critical option makes the request fail.
        let unknown_critical = request
            .packet()
            .options()
            .map(|(n, _)| *n)
            .find(|n| option::is_critical(*n) && !option::is_known(*n));
        if let Some(number) = unknown_critical {
            let reason = alloc::format!("unsupported critical option {number}");
            return self.answer(now, incoming, Response::error(Code::BAD_OPTION, &reason));
        }
        // RFC 7252 §5.4.3, §5.4.5: a critical option repeated or with a value of invalid
        // length fails the request; such elective options are ignored.
        let lengths = request
            .packet()
            .options()
            .map(|(n, values)| (*n, values.iter().map(Vec::len)));
        match option::check(lengths) {
            Err(number) => {
                let reason = alloc::format!("option {number} repeated or of invalid length");
                return self.answer(now, incoming, Response::error(Code::BAD_OPTION, &reason));
            }
            Ok(drop) => {
                for (number, keep) in drop {
                    let kept: Vec<Vec<u8>> = request
                        .options(number)
                        .take(keep.unwrap_or(0))
                        .map(<[u8]>::to_vec)
                        .collect();
                    request.remove_option(number);
                    for value in kept {
                        request.add_option(number, value);
                    }
                }
            }
        }
        // RFC 7252 §5.7.2: we are no proxy.
        if request.option(option::PROXY_URI).is_some()
            || request.option(option::PROXY_SCHEME).is_some()
        {
            return self.answer(
                now,
                incoming,
                Response::error(Code::PROXYING_NOT_SUPPORTED, "this endpoint is not a proxy"),
            );
        }
        incoming.accept = request.uint_option(option::ACCEPT);
        if code == Code::GET {
            incoming.etags = request.options(option::ETAG).map(<[u8]>::to_vec).collect();
        }
        incoming.max_payload = match request.uint_option(option::MAX_PAYLOAD) {
            Some(asked) => (asked as usize)
                .min(self.config.max_payload)
                .max(self.config.block_size),
            None => self.config.block_size,
        };
        let Some(method) = Method::from_code(code) else {
            let reason = alloc::format!("method code {code} is not supported");
            return self.answer(
                now,
                incoming,
                Response::error(Code::METHOD_NOT_ALLOWED, &reason),
            );
        };
        // RFC 7959 §2.2: szx 7 is reserved (4.00), except BERT follow-ups from a requester
        // that declared larger datagrams (see `block_plan`); never in Block1.
        let bert_ok = incoming.max_payload > self.config.block_size;
        let (Ok(block1), Ok(block2)) = (
            block_option(request.option(option::BLOCK1)).and_then(|b| match b {
                Some(b) if b.szx == BlockValue::BERT => Err(()),
                b => Ok(b),
            }),
            block_option(request.option(option::BLOCK2)).and_then(|b| match b {
                Some(b) if b.szx == BlockValue::BERT && !bert_ok => Err(()),
                b => Ok(b),
            }),
        ) else {
            return self.answer(
                now,
                incoming,
                Response::error(Code::BAD_REQUEST, "invalid Block option"),
            );
        };
        incoming.block2 = block2;

        // RFC 7959 §2.9.3: a body larger than we take, whole or announced by Size1 in
        // its first block, gets 4.13 with the largest size we take.
        let announced = match block1 {
            Some(b) if b.num == 0 => request.uint_option(option::SIZE1).unwrap_or(0) as usize,
            _ => 0,
        };
        if request.payload().len().max(announced) > self.config.max_body_size {
            return self.answer(now, incoming, self.too_large());
        }

        if let Some(block) = block1 {
            match self.receive_block(now, &incoming, &mut request, block) {
                Ok(None) => {}
                Ok(Some(done)) => incoming.block1 = Some(done),
                Err(response) => return self.answer(now, incoming, response),
            }
            if incoming.block1.is_none() {
                let ack = BlockValue {
                    more: true,
                    ..block
                };
                let response =
                    Response::new(Code::CONTINUE).with_option(option::BLOCK1, ack.encode());
                return self.answer(now, incoming, response);
            }
        }

        if let Some(block) = block2.filter(|b| b.num > 0) {
            let (key, token) = (&incoming.key, &incoming.token);
            if let Some(part) =
                self.cached_block(now, peer, key, token, block, incoming.max_payload)
            {
                incoming.sliced = true;
                return self.answer(now, incoming, part);
            }
            if method != Method::Get {
                // The body is no longer kept (the byte budget let it go), and a follow-up
                // carries no request payload (RFC 7959 §2.4): the handler cannot make it
                // again from this request. The client has to send the whole request again.
                let response = Response::error(
                    Code::REQUEST_ENTITY_INCOMPLETE,
                    "the rest of this response is no longer kept: send the request again",
                );
                return self.answer(now, incoming, response);
            }
        }

        #[cfg(feature = "edhoc")]
        if incoming.key == crate::edhoc::WELL_KNOWN_EDHOC && self.edhoc.is_some() {
            let response = self.edhoc_request(now, peer, method, request.payload());
            return self.answer(now, incoming, response);
        }

        if method == Method::Get
            && incoming.key.starts_with(".well-known/core")
            && !self.links.is_empty()
        {
            let response = self.well_known_core(&request);
            return self.answer(now, incoming, response);
        }

        if matches!(method, Method::Get | Method::Fetch) {
            match request.observe() {
                Some(0) => incoming.register_observer = true,
                Some(1) => self.remove_observer(peer, &incoming.token),
                _ => {}
            }
        }

        self.incoming.insert(id, incoming);
        if con {
            let deadline = now + self.config.piggyback_window;
            self.piggyback_deadlines.push_back((deadline, id));
        }
        self.events.push_back(Event::Request(IncomingRequest {
            id,
            peer,
            identity,
            request,
        }));
    }

    /// Adds a Block1 block to its upload. `Ok(Some(block))` when the body is complete
    /// (and now the request's payload), `Ok(None)` when more blocks are expected, `Err`
    /// with the error response otherwise.
    fn receive_block(
        &mut self,
        now: Instant,
        incoming: &Incoming<A>,
        request: &mut Request,
        block: BlockValue,
    ) -> Result<Option<BlockValue>, Response> {
        let tag = request.option(option::REQUEST_TAG).unwrap_or(&[]).to_vec();
        let key = (incoming.peer, incoming.method, incoming.key.clone(), tag);
        let expires = now + self.config.block_lifetime;
        if block.num == 0 {
            if self.uploads.len() >= BLOCK_STATE_SOFT_LIMIT {
                self.uploads.purge(now);
            }
            self.uploads.remove(&key);
            if !self.uploads.has_room(request.payload().len()) {
                return Err(busy(
                    "too many block-wise uploads in progress: try again later",
                ));
            }
            self.uploads
                .insert_evicting(key.clone(), Vec::new(), 0, expires);
        }
        let Some(received) = self.uploads.get(&key, now).map(Vec::len) else {
            return Err(Response::error(
                Code::REQUEST_ENTITY_INCOMPLETE,
                "no block-wise transfer in progress for this resource: start at block 0",
            ));
        };
        if block.offset() != received || (block.more && request.payload().len() != block.size()) {
            self.uploads.remove(&key);
            return Err(Response::error(
                Code::REQUEST_ENTITY_INCOMPLETE,
                "block out of sequence: start again at block 0",
            ));
        }
        if received + request.payload().len() > self.config.max_body_size {
            self.uploads.remove(&key);
            return Err(self.too_large());
        }
        if !self.uploads.has_room(request.payload().len()) {
            self.uploads.remove(&key);
            return Err(busy(
                "too many block-wise uploads in progress: try again later",
            ));
        }
        let chunk = request.payload();
        self.uploads.update(&key, expires, |body| {
            body.extend_from_slice(chunk);
            (chunk.len(), ())
        });
        if block.more {
            return Ok(None);
        }
        let body = self.uploads.remove(&key).unwrap_or_default();
        request.set_payload(body);
        request.remove_option(option::BLOCK1);
        request.remove_option(option::SIZE1);
        Ok(Some(block))
    }

    /// 4.13 with Size1: the largest request body we take (RFC 7959 §2.9.3).
    fn too_large(&self) -> Response {
        let max = u32::try_from(self.config.max_body_size).unwrap_or(u32::MAX);
        Response::error(Code::REQUEST_ENTITY_TOO_LARGE, "request body too large")
            .with_option(option::SIZE1, option::encode_uint(max))
    }

    /// Block `wanted` of the body cached for this peer and resource: the transfer with
    /// this token, or else the latest one to this peer for this resource (clients may
    /// use a new token for every block, RFC 7959 §2.4). `None` when nothing is cached:
    /// the application produces the body again (with another ETag if it changed).
    fn cached_block(
        &mut self,
        now: Instant,
        peer: A,
        key: &str,
        token: &[u8],
        wanted: BlockValue,
        max_payload: usize,
    ) -> Option<Response> {
        let mut transfer = (peer, String::from(key), token.to_vec());
        if self.downloads.get(&transfer, now).is_none() {
            let index = (peer, String::from(key));
            let latest = self.latest_download.get(&index)?.clone();
            transfer.2 = latest;
            if self.downloads.get(&transfer, now).is_none() {
                self.latest_download.remove(&index);
                return None;
            }
        }
        let (wanted, len) = self.block_plan(wanted, max_payload);
        let whole = self.downloads.get(&transfer, now)?;
        let Some((block, chunk)) = wanted.slice_len(whole.payload(), len) else {
            return Some(Response::error(
                Code::BAD_OPTION,
                "Block2 asks for a block past the end of the body",
            ));
        };
        let mut part = whole.without_payload().with_payload(chunk.to_vec());
        part.set_option(option::BLOCK2, block.encode());
        if block.more {
            let expires = now + self.config.block_lifetime;
            self.downloads.touch(&transfer, expires);
        } else {
            self.forget_download(&transfer);
        }
        Some(part)
    }

    /// Drops a cached Block2 body, and the index entry naming it.
    fn forget_download(&mut self, transfer: &(A, String, Vec<u8>)) {
        self.downloads.remove(transfer);
        let index = (transfer.0, transfer.1.clone());
        if self.latest_download.get(&index) == Some(&transfer.2) {
            self.latest_download.remove(&index);
        }
    }

    fn well_known_core(&self, request: &Request) -> Response {
        let filters: Vec<&str> = request.queries().collect();
        let body = link_format::write(&self.links, &filters);
        Response::content(body.into_bytes()).with_content_format(CONTENT_FORMAT_LINK_FORMAT)
    }

    /// Sends the answer to a request: registers an observer, echoes Block1, slices Block2,
    /// and picks piggybacked ACK, separate CON, or NON.
    fn answer(&mut self, now: Instant, mut incoming: Box<Incoming<A>>, mut response: Response) {
        let peer = incoming.peer;
        let registered = incoming.register_observer
            && response.code().is_success()
            && self.add_observer(
                now,
                peer,
                &incoming.token,
                &incoming.key,
                incoming.max_payload,
                response.content_format(),
            );
        if registered {
            response.set_uint_option(option::OBSERVE, self.observe_seq);
        }
        if let Some(block) = incoming.block1 {
            response.set_option(option::BLOCK1, block.encode());
        }
        if let Some(accept) = incoming.accept {
            let other = response
                .content_format()
                .is_some_and(|format| u32::from(format) != accept);
            if response.code().is_success() && other {
                // RFC 7252 §5.10.4: the resource has no representation in that format.
                if registered {
                    self.remove_observer(peer, &incoming.token);
                }
                let reason = alloc::format!("no representation in Content-Format {accept}");
                response = Response::error(Code::NOT_ACCEPTABLE, &reason);
                incoming.block2 = None;
            }
        }
        if let Some(valid) = Self::validated(&incoming, &response) {
            response = valid;
            incoming.block2 = None;
        }
        let transfer = (peer, incoming.key.as_str(), incoming.token.as_slice());
        let response = match incoming.block2 {
            _ if incoming.sliced => response,
            Some(block) => self.block_of(now, transfer, response, block, incoming.max_payload),
            None => self.first_block(now, transfer, response, incoming.max_payload),
        };
        let mut packet = response.into_packet();
        if let Some(budget) = incoming.budget {
            packet = self.within_budget(peer, packet, budget, incoming.token.len());
        }
        if let Some(protection) = incoming.protection.as_mut() {
            packet = self.protect_answer(protection, packet, false);
            if registered {
                if let Some(observer) = self.observers.get_mut(&(peer, incoming.token.clone())) {
                    observer.protection = incoming.protection.take();
                }
            }
        }
        let mid = incoming.mid;
        if incoming.con && !incoming.acked {
            let bytes = Self::encode(packet, MessageType::Acknowledgement, mid, &incoming.token);
            self.dedup
                .update(peer, mid, Seen::Answered(Some(bytes.clone())));
            self.transmit(peer, bytes);
        } else if incoming.con {
            let ack = Self::empty_message(MessageType::Acknowledgement, mid);
            self.dedup.update(peer, mid, Seen::Answered(Some(ack)));
            let own_mid = self.next_message_id();
            let bytes = Self::encode(packet, MessageType::Confirmable, own_mid, &incoming.token);
            self.send_confirmable(now, peer, own_mid, bytes, Purpose::SeparateResponse);
        } else {
            let own_mid = self.next_message_id();
            let bytes = Self::encode(
                packet,
                MessageType::NonConfirmable,
                own_mid,
                &incoming.token,
            );
            self.dedup
                .update(peer, mid, Seen::Answered(Some(bytes.clone())));
            self.transmit(peer, bytes);
        }
    }

    /// RFC 7252 §5.10.6.2: a 2.05 answering a GET that named its ETag becomes 2.03
    /// Valid, with the ETag (and Observe and Max-Age, if any) and without the payload.
    /// Only for a whole representation or its first block.
    fn validated(incoming: &Incoming<A>, response: &Response) -> Option<Response> {
        let first = incoming.block2.is_none_or(|b| b.num == 0);
        if incoming.sliced || !first || response.code() != Code::CONTENT {
            return None;
        }
        let etag = response.option(option::ETAG)?;
        if !incoming.etags.iter().any(|e| e.as_slice() == etag) {
            return None;
        }
        let mut valid = Response::new(Code::VALID).with_option(option::ETAG, etag.to_vec());
        for number in [option::OBSERVE, option::MAX_AGE] {
            if let Some(value) = response.option(number) {
                valid.set_option(number, value.to_vec());
            }
        }
        Some(valid)
    }

    /// Cuts a response larger than `limit` (the block size, or what the requester
    /// declared it accepts) to its first block (RFC 7959 §2.2), keeping the whole for
    /// the follow-up requests.
    fn first_block(
        &mut self,
        now: Instant,
        transfer: (A, &str, &[u8]),
        response: Response,
        limit: usize,
    ) -> Response {
        if response.payload().len() <= limit {
            return response;
        }
        let szx = BlockValue::szx_for_size(self.config.block_size);
        let first = BlockValue {
            num: 0,
            more: false,
            szx,
        };
        self.block_of(now, transfer, response, first, limit)
    }

    /// The block to send for `wanted`, and its length: our block size or the client's,
    /// whichever is smaller; or, to a requester that declared datagrams of
    /// `max_payload` bytes (above our 1024-byte blocks), a BERT block of as many
    /// 1024-byte units as fit (a Pehra peer: 1 MiB in 32 round trips, not 1024).
    fn block_plan(&self, wanted: BlockValue, max_payload: usize) -> (BlockValue, usize) {
        let our_szx = BlockValue::szx_for_size(self.config.block_size);
        if our_szx == 6 && wanted.szx >= 6 && max_payload >= 2 * 1024 {
            let block = BlockValue {
                szx: BlockValue::BERT,
                ..wanted
            };
            return (block, max_payload / 1024 * 1024);
        }
        let block = BlockValue {
            szx: wanted.szx.min(our_szx),
            ..wanted
        };
        (block, block.size())
    }

    /// The block `wanted` of a response (see [`Self::block_plan`]).
    fn block_of(
        &mut self,
        now: Instant,
        (peer, key, token): (A, &str, &[u8]),
        mut response: Response,
        wanted: BlockValue,
        max_payload: usize,
    ) -> Response {
        let (wanted, len) = self.block_plan(wanted, max_payload);
        if wanted.num == 0 && response.payload().len() <= len {
            return response;
        }
        if !response.code().is_success() {
            // An error answers the request as it is (RFC 7959 §2.2: Block2 describes a
            // representation; an error is none of the one being transferred).
            return response;
        }
        // RFC 7959 §2.4: every block of one representation carries its ETag, so a
        // client can tell when a later block comes from another version.
        if response.option(option::ETAG).is_none() {
            response.set_option(option::ETAG, etag_of(response.payload()).to_vec());
        }
        let whole = response.take_payload();
        let Some((block, chunk)) = wanted.slice_len(&whole, len) else {
            return Response::error(
                Code::BAD_OPTION,
                "Block2 asks for a block past the end of the body",
            );
        };
        let mut part = response.clone().with_payload(chunk.to_vec());
        part.set_option(option::BLOCK2, block.encode());
        if block.num == 0 {
            part.set_uint_option(option::SIZE2, whole.len() as u32);
        }
        let transfer = (peer, String::from(key), token.to_vec());
        if block.more {
            if self.downloads.len() >= BLOCK_STATE_SOFT_LIMIT {
                self.downloads.purge(now);
            }
            if self.latest_download.len() >= self.downloads.len() + BLOCK_STATE_SOFT_LIMIT {
                // Bodies evicted by the byte budget leave their index entries behind.
                let downloads = &self.downloads;
                self.latest_download
                    .retain(|(p, k), t| downloads.contains(&(*p, k.clone(), t.clone())));
            }
            response.remove_option(option::OBSERVE);
            let weight = whole.len();
            response.set_payload(whole);
            let expires = now + self.config.block_lifetime;
            // Bounded by bytes: the least recently used transfers are forgotten first
            // (their next block is produced again by the application).
            self.downloads
                .insert_evicting(transfer.clone(), response, weight, expires);
            self.latest_download
                .insert((peer, String::from(key)), transfer.2);
        } else {
            self.forget_download(&transfer);
        }
        part
    }

    /// Registers an observer; `false` (not registered: the response goes without
    /// Observe, RFC 7641 §4.1) when the server or this peer is at its observer limit.
    fn add_observer(
        &mut self,
        now: Instant,
        peer: A,
        token: &[u8],
        key: &str,
        max_payload: usize,
        content_format: Option<u16>,
    ) -> bool {
        self.remove_observer(peer, token);
        let of_peer = self
            .observers
            .range((peer, Vec::new())..)
            .take_while(|((p, _), _)| *p == peer)
            .take(self.config.max_observers_per_peer)
            .count();
        if of_peer >= self.config.max_observers_per_peer
            || self.observers.len() >= self.config.max_observers
        {
            #[cfg(feature = "std")]
            tracing::debug!(
                ?peer,
                of_peer,
                total = self.observers.len(),
                "observer limit: not registered"
            );
            return false;
        }
        self.observers.insert(
            (peer, token.to_vec()),
            Observer {
                key: String::from(key),
                last_con: now,
                con_in_flight: None,
                last_mid: None,
                protection: None,
                max_payload,
                content_format,
            },
        );
        self.observed
            .entry(String::from(key))
            .or_default()
            .insert((peer, token.to_vec()));
        true
    }

    /// Answers a request to `/.well-known/edhoc` (RFC 9528 Appendix A.2) with the
    /// responder: message_2, an installed OSCORE context (2.04, no message_4), 5.03 at
    /// a limit, or an EDHOC error message (4.00; 4.01 for an unknown credential).
    #[cfg(feature = "edhoc")]
    fn edhoc_request(&mut self, now: Instant, peer: A, method: Method, payload: &[u8]) -> Response {
        use crate::edhoc::{Outcome, CONTENT_FORMAT_EDHOC};
        if method != Method::Post {
            return Response::error(Code::METHOD_NOT_ALLOWED, "EDHOC takes POST");
        }
        let (Some(responder), Some(security)) =
            (self.edhoc.as_mut(), self.server_security.as_mut())
        else {
            return Response::error(Code::NOT_FOUND, "EDHOC is off");
        };
        match responder.handle(now, peer, payload, |kid| security.kid_taken(kid)) {
            Outcome::Message2(message_2) => Response::new(Code::CHANGED)
                .with_payload(message_2)
                .with_content_format(CONTENT_FORMAT_EDHOC),
            Outcome::Established {
                identity,
                keys,
                message_4,
            } => {
                #[cfg(feature = "std")]
                tracing::info!(?peer, identity = %identity.name, role = identity.role.name(), c_r = ?keys.recipient_id, "EDHOC: OSCORE context established");
                match security.install_edhoc(identity, &keys) {
                    Ok(()) => Response::new(Code::CHANGED)
                        .with_payload(message_4)
                        .with_content_format(CONTENT_FORMAT_EDHOC),
                    Err(_) => Response::error(Code::INTERNAL_SERVER_ERROR, "no OSCORE context"),
                }
            }
            Outcome::Busy(reason) => {
                #[cfg(feature = "std")]
                tracing::debug!(?peer, reason, "EDHOC: refused at a limit");
                busy(reason)
            }
            Outcome::Refused {
                code,
                message,
                reason,
            } => edhoc_refused(&peer, code, message, &reason, "EDHOC refused"),
        }
    }

    /// An EDHOC + OSCORE request (RFC 9668: an EDHOC option, and message_3 before the
    /// OSCORE payload) has its message_3 handled by the responder first: the context it
    /// yields is installed and the request goes on as a plain OSCORE request in it (the
    /// EDHOC option removed, the payload what follows message_3). A refusal is answered
    /// unprotected with the EDHOC error message (§3.3.1). Any other request passes as it
    /// is.
    #[cfg(feature = "edhoc")]
    fn combined_edhoc(
        &mut self,
        now: Instant,
        peer: A,
        mut packet: Packet,
    ) -> Result<Packet, Packet> {
        use crate::edhoc::Outcome;
        let edhoc_option = coap_lite::CoapOption::Unknown(crate::edhoc::EDHOC_OPTION);
        if packet.get_option(edhoc_option).is_none() {
            return Ok(packet);
        }
        let refuse = |code: Code, message: &str| Err(Response::error(code, message).into_packet());
        let (Some(responder), Some(security)) =
            (self.edhoc.as_mut(), self.server_security.as_mut())
        else {
            return refuse(Code::BAD_OPTION, "EDHOC is off");
        };
        let Some(c_r) = oscore::oscore_option(&packet).ok().and_then(|o| o.kid) else {
            return refuse(
                Code::BAD_REQUEST,
                "an EDHOC + OSCORE request without an OSCORE kid",
            );
        };
        let Some(split) = crate::edhoc::bstr_item_len(&packet.payload) else {
            return refuse(
                Code::BAD_REQUEST,
                "an EDHOC + OSCORE request without message_3",
            );
        };
        match responder.handle_combined(now, peer, &c_r, &packet.payload[..split]) {
            Outcome::Established { identity, keys, .. } => {
                #[cfg(feature = "std")]
                tracing::info!(?peer, identity = %identity.name, role = identity.role.name(), c_r = ?keys.recipient_id, "EDHOC (combined with OSCORE): context established");
                if security.install_edhoc(identity, &keys).is_err() {
                    return refuse(Code::INTERNAL_SERVER_ERROR, "no OSCORE context");
                }
                packet.clear_option(edhoc_option);
                packet.payload.drain(..split);
                Ok(packet)
            }
            Outcome::Refused {
                code,
                message,
                reason,
            } => Err(edhoc_refused(
                &peer,
                code,
                message,
                &reason,
                "EDHOC (combined with OSCORE) refused",
            )
            .into_packet()),
            Outcome::Busy(reason) => Err(busy(reason).into_packet()),
            Outcome::Message2(_) => {
                refuse(Code::BAD_REQUEST, "message_1 in an EDHOC + OSCORE request")
            }
        }
    }

    /// Without EDHOC, a request passes as it is (an EDHOC option, critical and unknown,
    /// gets 4.02 later).
    #[cfg(not(feature = "edhoc"))]
    fn combined_edhoc(
        &mut self,
        _now: Instant,
        _peer: A,
        packet: Packet,
    ) -> Result<Packet, Packet> {
        Ok(packet)
    }

    /// Verifies a request that came protected (OSCORE): the inner request, how to protect
    /// its answers and who sent it; or the answer that ends it here (verification failed,
    /// or an Echo round trip is needed first). A plain request passes unchanged; so does
    /// a protected one when this engine has no server security (its OSCORE option, an
    /// unknown critical option, then gets 4.02).
    #[allow(clippy::type_complexity)]
    fn verify_request(
        &mut self,
        packet: Packet,
    ) -> Result<
        (
            Packet,
            Option<Protection>,
            Option<crate::security::Identity>,
        ),
        Packet,
    > {
        if !oscore::is_protected(&packet) {
            return Ok((packet, None, None));
        }
        let Some(security) = self.server_security.as_mut() else {
            return Ok((packet, None, None));
        };
        match security.unprotect(&packet) {
            Ok(v) => Ok((v.packet, Some(v.protection), Some(v.identity))),
            Err(Refusal::Plain(answer)) | Err(Refusal::Echo(answer)) => Err(answer),
        }
    }

    /// An answer to a plain peer whose address is not validated, cut to `budget` bytes
    /// (RFC 7252 §11.3): an error too large loses its diagnostic (its code stays); a larger
    /// success becomes 4.01 with an Echo value for that address (RFC 9175 §2.4), which
    /// the client sends back with its request to get the whole answer.
    fn within_budget(
        &self,
        peer: A,
        mut packet: Packet,
        budget: usize,
        token_len: usize,
    ) -> Packet {
        // Header (4), token, options, the payload marker and the payload. Unlimited:
        // coap-lite's `to_bytes` refuses a packet over its own size limit, which an
        // answer in one large datagram (`max_payload` above the block size) is; its
        // error was counted as `usize::MAX` and the sum wrapped (a panic in a debug
        // build; in release a tiny size, and the whole answer went to an unvalidated
        // address).
        let size = |p: &Packet| (4 + token_len).saturating_add(encode(p).len() - 4);
        if size(&packet) <= budget {
            return packet;
        }
        let code = Code(packet.header.code.into());
        if code.class() >= 4 {
            // A cut CBOR diagnostic would not decode: the code alone says it.
            packet.payload.clear();
            packet.clear_option(coap_lite::CoapOption::ContentFormat);
            return packet;
        }
        let echo = match &self.server_security {
            Some(security) => security.address_echo(&peer),
            None => return packet,
        };
        Response::new(Code::UNAUTHORIZED)
            .with_option(super::secure::ECHO, echo.to_vec())
            .with_option(option::MAX_AGE, option::encode_uint(0))
            .into_packet()
    }

    /// Protects an answer in its request's context; an answer that cannot be protected
    /// becomes a plain 5.00 (it never goes out in the clear).
    fn protect_answer(
        &mut self,
        protection: &mut Protection,
        packet: Packet,
        fresh: bool,
    ) -> Packet {
        let Some(security) = self.server_security.as_mut() else {
            return packet;
        };
        security
            .protect(protection, packet, fresh)
            .unwrap_or_else(|e| e.error_response())
    }

    /// Drops the piggyback deadlines at the front of the queue whose request needs no
    /// empty ACK any more (answered, or already acknowledged), so that
    /// [`Engine::poll_timeout`] does not wake the driver for them: an idle server
    /// answering each request at once then has no timer left at all. Requests are
    /// mostly answered in order; one answered out of order is dropped once it reaches
    /// the front, or fires as a no-op.
    fn drop_settled_piggyback_deadlines(&mut self) {
        while let Some(&(_, id)) = self.piggyback_deadlines.front() {
            match self.incoming.get(&id) {
                Some(incoming) if !incoming.acked => return,
                _ => {
                    self.piggyback_deadlines.pop_front();
                }
            }
        }
    }

    /// A copy of a request acknowledged before: its empty ACK again (the first may have
    /// been lost, and the client would retransmit until it gave up).
    fn acknowledge_again(&mut self, id: IncomingId) {
        let Some(incoming) = self.incoming.get(&id) else {
            return;
        };
        let (peer, mid) = (incoming.peer, incoming.mid);
        let ack = Self::empty_message(MessageType::Acknowledgement, mid);
        self.transmit(peer, ack);
    }

    /// A handler is taking long (or the client retried): send an empty ACK so the
    /// client stops retransmitting; the response will go as a separate CON.
    pub(super) fn acknowledge_slow_request(&mut self, id: IncomingId) {
        let Some(incoming) = self.incoming.get_mut(&id) else {
            return;
        };
        if !incoming.con || incoming.acked {
            return;
        }
        incoming.acked = true;
        let (peer, mid) = (incoming.peer, incoming.mid);
        let ack = Self::empty_message(MessageType::Acknowledgement, mid);
        self.transmit(peer, ack);
    }
}

/// An answer carrying an EDHOC error message (`code`: 4.00, or 4.01 for an unknown
/// credential), Content-Format application/edhoc+cbor-seq.
#[cfg(feature = "edhoc")]
/// An EDHOC refusal, logged (`what`, with the peer and the reason) and answered with
/// its EDHOC error message.
#[cfg(feature = "edhoc")]
fn edhoc_refused<A: core::fmt::Debug>(
    peer: &A,
    code: u8,
    message: Vec<u8>,
    reason: &impl core::fmt::Display,
    what: &str,
) -> Response {
    #[cfg(feature = "std")]
    tracing::warn!(?peer, %reason, "{what}");
    #[cfg(not(feature = "std"))]
    let _ = (peer, reason, what);
    edhoc_error(code, message)
}

fn edhoc_error(code: u8, message: Vec<u8>) -> Response {
    Response::new(Code(code))
        .with_payload(message)
        .with_content_format(crate::edhoc::CONTENT_FORMAT_EDHOC)
}
