//! The client half: sending requests, NSTART, matching responses, block-wise bodies
//! in both directions, and observations.

#[cfg(any(feature = "oscore", test))]
use super::secure::ECHO;
use super::{block_option, Engine, Event, ExchangeError, PeerAddress, Purpose, RequestId, Timer};
use crate::coap::dedup::Seen;
use crate::coap::Packet;
use crate::coap::{observe, option, BlockValue, Code, Method, Request, Response};
#[cfg(any(feature = "oscore", test))]
use crate::oscore::{self, RequestBinding};
use crate::Instant;
use alloc::vec::Vec;
use coap_lite::MessageType;
use rand::Rng;

/// How many times a block-wise download starts over when the body changes under it.
const MAX_DOWNLOAD_RESTARTS: u8 = 4;

/// One request of ours, from `request()` to its final response or failure.
pub(super) struct Exchange<A> {
    peer: A,
    pub(super) token: Vec<u8>,
    request: Request,
    /// Whether it asked to observe.
    observe: bool,
    /// Counts against NSTART until the first ACK or response.
    outstanding: bool,
    /// The message ID of our CON awaiting its ACK.
    unacked_mid: Option<u16>,
    /// The response deadline, when one is armed.
    deadline: Option<Instant>,
    /// Block1: the block of the request body to send next (`None`: body fits one message).
    upload: Option<BlockValue>,
    /// Block2: the response body so far, and the block asked for next.
    download: Vec<u8>,
    next_block: Option<BlockValue>,
    /// The Observe number of the notification whose body is being fetched block-wise.
    download_observe: Option<u32>,
    /// The ETag of the body being fetched block-wise (from its first block).
    download_etag: Option<Vec<u8>>,
    /// How many times the block-wise download started over because the body changed.
    restarts: u8,
    /// The last fresh notification (sequence number, arrival time).
    last_notification: Option<(u32, Instant)>,
    /// OSCORE: what binds answers to the protected messages sent (the observing request
    /// first, kept for the observation's notifications; then the latest message).
    #[cfg(any(feature = "oscore", test))]
    bindings: Vec<RequestBinding>,
    /// OSCORE: the request was repeated with the server's Echo value already.
    #[cfg(any(feature = "oscore", test))]
    echoed: bool,
}

impl<A: PeerAddress> Engine<A> {
    /// Sends `request` to `peer` (or queues it while NSTART exchanges are outstanding
    /// towards that peer). Its outcome arrives as [`Event::Response`],
    /// [`Event::Notification`]s (if it observes) or [`Event::Failed`].
    pub fn request(&mut self, now: Instant, peer: A, request: Request) -> RequestId {
        self.tick(now);
        let token = self.fresh_token();
        self.request_with_token(now, peer, request, token)
    }

    /// Ends an observation explicitly (RFC 7641 §3.6): forgets it as [`Self::cancel`]
    /// does, and sends the server the observing request again, with the same token and
    /// Observe = 1, so that the server drops the observer at once instead of at its next
    /// notification. That GET is a request of its own, whose response comes as
    /// [`Event::Response`] (or [`Event::Failed`]) for the id returned; a caller may
    /// ignore it. `None`, and nothing sent, for an unknown id or one that does not
    /// observe.
    pub fn deregister(&mut self, now: Instant, id: RequestId) -> Option<RequestId> {
        self.tick(now);
        if !self.exchanges.get(&id)?.observe {
            return None;
        }
        let observation = self.remove_exchange(id)?;
        let mut request = observation.request;
        request.set_option(option::OBSERVE, option::encode_uint(1));
        Some(self.request_with_token(now, observation.peer, request, observation.token))
    }

    fn request_with_token(
        &mut self,
        now: Instant,
        peer: A,
        request: Request,
        token: Vec<u8>,
    ) -> RequestId {
        let id = RequestId(self.next_id());
        let block_size = self.config.block_size;
        let upload = (request.payload().len() > self.config.max_payload.max(block_size))
            .then(|| BlockValue::new(0, true, BlockValue::szx_for_size(block_size)))
            .flatten();
        let mut request = request;
        if self.config.max_payload > block_size && request.option(option::MAX_PAYLOAD).is_none() {
            // Tell the server we take large datagrams; a server that does not know the
            // option answers block-wise as to anyone.
            let max = u32::try_from(self.config.max_payload).unwrap_or(u32::MAX);
            request.set_uint_option(option::MAX_PAYLOAD, max);
        }
        if upload.is_some() {
            // RFC 9175: every block of this upload carries the same Request-Tag, so the
            // server keeps it apart from our other uploads to the same resource.
            let tag = self.rng.next_u32().to_be_bytes();
            request.set_option(option::REQUEST_TAG, tag.to_vec());
        }
        let exchange = Exchange {
            peer,
            token: token.clone(),
            observe: request.observe() == Some(0),
            request,
            outstanding: false,
            unacked_mid: None,
            deadline: None,
            upload,
            download: Vec::new(),
            next_block: None,
            download_observe: None,
            download_etag: None,
            restarts: 0,
            last_notification: None,
            #[cfg(any(feature = "oscore", test))]
            bindings: Vec::new(),
            #[cfg(any(feature = "oscore", test))]
            echoed: false,
        };
        self.exchanges.insert(id, exchange);
        self.tokens.insert(token, id);
        if self.outstanding.get(&peer).copied().unwrap_or(0) < self.config.nstart {
            self.start(now, id);
        } else {
            self.queued.entry(peer).or_default().push_back(id);
        }
        id
    }

    /// Sends `request` once as NON and forgets it: no exchange is kept, no response is
    /// waited for (a response that comes anyway is answered with Reset). For
    /// fire-and-forget publishes (`acks=0`).
    pub fn send_non(&mut self, now: Instant, peer: A, request: Request) {
        self.tick(now);
        let mid = self.next_message_id();
        let token = self.fresh_token();
        #[allow(unused_mut)]
        let mut packet = request.packet().clone();
        #[cfg(any(feature = "oscore", test))]
        if let Some(client) = self.client_security.get_mut(&peer) {
            match client.ctx.protect_request(&packet) {
                Ok(protected) => packet = protected.packet,
                Err(_) => return, // sequence numbers exhausted: nothing goes out in the clear
            }
            #[cfg(feature = "edhoc")]
            if let Some(message_3) = client.edhoc_message_3.as_ref() {
                combine_edhoc(&mut packet, message_3);
            }
        }
        let bytes = Self::encode(packet, MessageType::NonConfirmable, mid, &token);
        self.transmit(peer, bytes);
    }

    /// Forgets a request of ours: no event will come for it. Notifications that still
    /// arrive for a cancelled observation are answered with Reset, which ends it at the
    /// server (RFC 7641 §3.6). Returns whether it was known.
    pub fn cancel(&mut self, id: RequestId) -> bool {
        #[cfg(any(feature = "server", test))]
        if self.cancel_ping(id) {
            return true;
        }
        self.remove_exchange(id).is_some()
    }

    /// The network says nothing listens at `peer` (an ICMP port unreachable, which a
    /// socket connected to it reports): every request of ours to it, in flight, queued
    /// behind NSTART or observing, fails at once with [`ExchangeError::Unreachable`]
    /// instead of waiting out its retransmissions. Nothing else changes (requests from
    /// that peer, observers it has here); a later request to it is sent as usual.
    /// Returns how many failed.
    pub fn peer_unreachable(&mut self, now: Instant, peer: A) -> usize {
        self.tick(now);
        // The queued ones first: failing one in flight would start them.
        self.queued.remove(&peer);
        let mut ids: Vec<(bool, RequestId)> = self
            .exchanges
            .iter()
            .filter(|(_, e)| e.peer == peer)
            .map(|(id, e)| (e.outstanding, *id))
            .collect();
        ids.sort();
        for &(_, id) in &ids {
            self.fail(id, ExchangeError::Unreachable);
        }
        ids.len()
    }

    /// Requests of ours not yet finished (observations included).
    pub fn pending_requests(&self) -> usize {
        self.exchanges.len()
    }

    fn fresh_token(&mut self) -> Vec<u8> {
        let len = usize::from(self.config.token_len.clamp(1, 8));
        loop {
            let token = self.rng.next_u64().to_be_bytes()[..len].to_vec();
            if !self.tokens.contains_key(&token) {
                return token;
            }
        }
    }

    fn start(&mut self, now: Instant, id: RequestId) {
        let Some(exchange) = self.exchanges.get_mut(&id) else {
            return;
        };
        exchange.outstanding = true;
        *self.outstanding.entry(exchange.peer).or_default() += 1;
        self.send_exchange_message(now, id);
    }

    /// Sends the exchange's next message: the request, its next Block1 block, or a
    /// follow-up asking for the next Block2 block.
    fn send_exchange_message(&mut self, now: Instant, id: RequestId) {
        let mid = self.next_message_id();
        let Some(exchange) = self.exchanges.get_mut(&id) else {
            return;
        };
        let mut message = exchange.request.clone();
        if let Some(block) = exchange.next_block {
            // RFC 7959 §2.4: follow-ups carry no body and do not re-register an observation.
            message.set_payload(Vec::new());
            message.remove_option(option::OBSERVE);
            message.remove_option(option::BLOCK1);
            message.set_option(option::BLOCK2, block.encode());
        } else if let Some(block) = exchange.upload {
            let body = exchange.request.payload();
            let Some((block, chunk)) = block.slice(body) else {
                return self.fail(id, ExchangeError::BlockMismatch);
            };
            let chunk = chunk.to_vec();
            if block.num == 0 {
                message.set_uint_option(option::SIZE1, body.len() as u32);
            }
            message.set_payload(chunk);
            message.set_option(option::BLOCK1, block.encode());
        }
        let confirmable = message.is_confirmable();
        let kind = if confirmable {
            MessageType::Confirmable
        } else {
            MessageType::NonConfirmable
        };
        let (peer, token) = (exchange.peer, exchange.token.clone());
        let mut packet = message.packet().clone();
        packet.header.set_type(kind);
        #[cfg(any(feature = "oscore", test))]
        if let Some(client) = self.client_security.get_mut(&peer) {
            match client.ctx.protect_request(&packet) {
                Ok(protected) => {
                    packet = protected.packet;
                    // RFC 9668: message_3 rides on the request (the first block of a
                    // block-wise one) until the context is confirmed.
                    #[cfg(feature = "edhoc")]
                    if let Some(message_3) = client.edhoc_message_3.as_ref() {
                        if exchange.next_block.is_none()
                            && exchange.upload.is_none_or(|b| b.num == 0)
                        {
                            combine_edhoc(&mut packet, message_3);
                        }
                    }
                    // Keep the observing request's binding for the notifications.
                    if !(exchange.observe && exchange.bindings.len() == 1) {
                        exchange.bindings.truncate(usize::from(exchange.observe));
                    }
                    if exchange.bindings.len() > 1 {
                        exchange.bindings.pop();
                    }
                    exchange.bindings.push(protected.binding);
                }
                Err(_) => return self.fail(id, ExchangeError::Unprotected),
            }
        }
        let bytes = Self::encode(packet, kind, mid, &token);
        if confirmable {
            exchange.unacked_mid = Some(mid);
            self.send_confirmable(now, peer, mid, bytes, Purpose::Request(id));
        } else {
            self.arm_response_deadline(now, id);
            self.transmit(peer, bytes);
        }
    }

    fn arm_response_deadline(&mut self, now: Instant, id: RequestId) {
        let deadline = now + self.config.response_timeout;
        let Some(exchange) = self.exchanges.get_mut(&id) else {
            return;
        };
        if let Some(old) = exchange.deadline.replace(deadline) {
            self.timers.remove(&(old, Timer::ResponseDeadline(id)));
        }
        self.timers.insert((deadline, Timer::ResponseDeadline(id)));
    }

    fn disarm_response_deadline(&mut self, id: RequestId) {
        if let Some(exchange) = self.exchanges.get_mut(&id) {
            if let Some(old) = exchange.deadline.take() {
                self.timers.remove(&(old, Timer::ResponseDeadline(id)));
            }
        }
    }

    /// Our request got an empty ACK: the response will come separately.
    pub(super) fn on_request_acknowledged(&mut self, now: Instant, id: RequestId) {
        if let Some(exchange) = self.exchanges.get_mut(&id) {
            exchange.unacked_mid = None;
        }
        self.release(now, id);
        self.arm_response_deadline(now, id);
    }

    /// The exchange no longer counts against NSTART; start queued ones.
    fn release(&mut self, now: Instant, id: RequestId) {
        let Some(exchange) = self.exchanges.get_mut(&id) else {
            return;
        };
        if !core::mem::replace(&mut exchange.outstanding, false) {
            return;
        }
        let peer = exchange.peer;
        self.release_peer(now, peer);
    }

    fn release_peer(&mut self, now: Instant, peer: A) {
        if let Some(count) = self.outstanding.get_mut(&peer) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.outstanding.remove(&peer);
            }
        }
        while self.outstanding.get(&peer).copied().unwrap_or(0) < self.config.nstart {
            let Some(queue) = self.queued.get_mut(&peer) else {
                break;
            };
            let next = queue.pop_front();
            if queue.is_empty() {
                self.queued.remove(&peer);
            }
            match next {
                Some(next) if self.exchanges.contains_key(&next) => self.start(now, next),
                Some(_) => {}
                None => break,
            }
        }
    }

    pub(super) fn on_piggybacked_response(&mut self, now: Instant, peer: A, packet: Packet) {
        let mid = packet.header.message_id;
        let Some(Purpose::Request(id)) = self.unacked.get(&(peer, mid)).map(|u| u.purpose.clone())
        else {
            return;
        };
        let token_matches = self
            .exchanges
            .get(&id)
            .is_some_and(|e| e.token == packet.get_token());
        if !token_matches {
            return;
        }
        self.take_unacked(peer, mid);
        if let Some(exchange) = self.exchanges.get_mut(&id) {
            exchange.unacked_mid = None;
        }
        self.on_response(now, id, packet);
    }

    /// A CON or NON response or notification (not piggybacked).
    pub(super) fn on_separate_response(
        &mut self,
        now: Instant,
        peer: A,
        packet: Packet,
        fingerprint: u64,
    ) {
        let mid = packet.header.message_id;
        let con = packet.header.get_type() == MessageType::Confirmable;
        if let Some(seen) = self.dedup.get(now, peer, mid, fingerprint) {
            self.stats.duplicates += 1;
            if let Seen::Answered(Some(bytes)) = seen {
                let bytes = bytes.clone();
                self.transmit(peer, bytes);
            }
            return;
        }
        let id = self
            .tokens
            .get(packet.get_token())
            .copied()
            .filter(|id| self.exchanges.get(id).is_some_and(|e| e.peer == peer));
        let expires = now + self.config.exchange_lifetime;
        let Some(id) = id else {
            // Nobody waits for this: tell the sender (this also ends a stale observation).
            let rst = Self::empty_message(MessageType::Reset, mid);
            self.stats.resets_sent += 1;
            let key = (peer, mid, fingerprint);
            self.dedup
                .insert(now, expires, key, Seen::Answered(Some(rst.clone())));
            self.transmit(peer, rst);
            return;
        };
        let answer = con.then(|| Self::empty_message(MessageType::Acknowledgement, mid));
        let key = (peer, mid, fingerprint);
        self.dedup
            .insert(now, expires, key, Seen::Answered(answer.clone()));
        if let Some(ack) = answer {
            self.transmit(peer, ack);
        }
        // A separate response also acknowledges our request implicitly (RFC 7252 §5.2.2).
        if let Some(unacked_mid) = self
            .exchanges
            .get_mut(&id)
            .and_then(|e| e.unacked_mid.take())
        {
            self.take_unacked(peer, unacked_mid);
        }
        self.on_response(now, id, packet);
    }

    #[cfg(any(feature = "oscore", test))]
    /// Verifies an answer to a protected exchange in its context: the inner response.
    /// An unprotected *error* answer passes (a server that could not verify us can only
    /// answer in the clear, RFC 8613 §8.2); anything else unprotected or not verifying
    /// is [`ExchangeError::Unprotected`].
    fn verify_response(&mut self, id: RequestId, packet: Packet) -> Result<Packet, ExchangeError> {
        let Some(exchange) = self.exchanges.get_mut(&id) else {
            return Ok(packet);
        };
        if exchange.bindings.is_empty() {
            return Ok(packet);
        }
        if !oscore::is_protected(&packet) {
            let code = Code(packet.header.code.into());
            return if code.class() >= 4 {
                Ok(packet)
            } else {
                Err(ExchangeError::Unprotected)
            };
        }
        let client = self
            .client_security
            .get_mut(&exchange.peer)
            .ok_or(ExchangeError::Unprotected)?;
        for binding in exchange.bindings.iter_mut().rev() {
            if let Ok(verified) = client.ctx.unprotect_response(binding, &packet) {
                // The server has the context: message_3 need not go again.
                client.edhoc_message_3 = None;
                return Ok(verified.packet);
            }
        }
        Err(ExchangeError::Unprotected)
    }

    /// A response to one of our exchanges, however it came.
    fn on_response(&mut self, now: Instant, id: RequestId, packet: Packet) {
        self.release(now, id);
        self.disarm_response_deadline(id);
        #[cfg(any(feature = "oscore", test))]
        let packet = match self.verify_response(id, packet) {
            Ok(packet) => packet,
            Err(error) => return self.fail(id, error),
        };
        let response = Response::from_packet(packet);
        let code = response.code();
        let Some(exchange) = self.exchanges.get_mut(&id) else {
            return;
        };

        // OSCORE after the server's restart (RFC 8613 Appendix B.1.2): it asks for the
        // request again with its Echo value, once.
        #[cfg(any(feature = "oscore", test))]
        if code == Code::UNAUTHORIZED && !exchange.bindings.is_empty() && !exchange.echoed {
            if let Some(echo) = response.option(ECHO) {
                exchange.echoed = true;
                exchange.request.set_option(ECHO, echo.to_vec());
                return self.send_exchange_message(now, id);
            }
        }

        // Block1: the server wants the next block of our request body.
        if let Some(sent) = exchange.upload {
            if code == Code::CONTINUE && sent.more {
                let theirs = block_option(response.option(option::BLOCK1)).ok().flatten();
                let szx = theirs.map_or(sent.szx, |b| b.szx.min(sent.szx));
                let next_offset = sent.offset() + sent.size();
                let size = 1usize << (szx + 4);
                exchange.upload = BlockValue::new((next_offset / size) as u32, true, szx);
                return self.send_exchange_message(now, id);
            }
            exchange.upload = None;
        }

        let asked_for_more = exchange.next_block.is_some_and(|b| b.num > 0);
        if asked_for_more && code == Code::REQUEST_ENTITY_INCOMPLETE {
            // The server no longer has the rest of the body of a request it cannot make
            // again from a follow-up (a POST or FETCH: follow-ups carry no payload): it
            // asks for the whole request again. A few times.
            if exchange.restarts >= MAX_DOWNLOAD_RESTARTS {
                return self.fail(id, ExchangeError::BlockMismatch);
            }
            exchange.restarts += 1;
            exchange.download.clear();
            exchange.next_block = None;
            return self.send_exchange_message(now, id);
        }

        // Block2: more of the response body is to be fetched.
        let Ok(block2) = block_option(response.option(option::BLOCK2)) else {
            return self.fail(id, ExchangeError::BlockMismatch);
        };
        let mut response = response;
        if let Some(block) = block2 {
            let etag = response.option(option::ETAG).map(<[u8]>::to_vec);
            if block.num == 0 {
                exchange.download.clear();
                exchange.download_etag = etag;
                if let Some(seq) = response.observe() {
                    exchange.download_observe = Some(seq);
                }
            } else if code.is_success() && etag != exchange.download_etag {
                // RFC 7959 §2.4: this block is of another version of the body (it
                // changed, and the server no longer had ours): start over, a few times.
                let method = exchange.request.method();
                let safe = exchange.download_observe.is_some()
                    || matches!(method, Some(Method::Get | Method::Fetch));
                if !safe || exchange.restarts >= MAX_DOWNLOAD_RESTARTS {
                    return self.fail(id, ExchangeError::BlockMismatch);
                }
                exchange.restarts += 1;
                exchange.download.clear();
                exchange.next_block = BlockValue::new(0, false, block.szx);
                return self.send_exchange_message(now, id);
            }
            if block.offset() != exchange.download.len() {
                return self.fail(id, ExchangeError::BlockMismatch);
            }
            exchange.download.extend_from_slice(response.payload());
            if block.more && code.is_success() {
                // BERT (from a server we told our larger datagram size): as many
                // 1024-byte units as came.
                let units = match block.szx {
                    BlockValue::BERT if response.payload().len().is_multiple_of(1024) => {
                        (response.payload().len() / 1024) as u32
                    }
                    BlockValue::BERT => 0,
                    _ => 1,
                };
                exchange.next_block = (units > 0)
                    .then(|| BlockValue::new(block.num + units, false, block.szx))
                    .flatten();
                if exchange.next_block.is_none() {
                    return self.fail(id, ExchangeError::BlockMismatch);
                }
                return self.send_exchange_message(now, id);
            }
            exchange.next_block = None;
            response.set_payload(core::mem::take(&mut exchange.download));
            response.remove_option(option::BLOCK2);
            if let Some(seq) = exchange.download_observe.take() {
                response.set_uint_option(option::OBSERVE, seq);
            }
        }

        let observe_number = response.observe();
        let observing = exchange.observe && code.is_success() && observe_number.is_some();
        if !observing {
            self.remove_exchange(id);
            self.events.push_back(Event::Response { id, response });
            return;
        }
        let seq = observe_number.unwrap_or(0);
        let fresh = exchange
            .last_notification
            .is_none_or(|(v1, t1)| observe::is_fresh(v1, t1, seq, now));
        if fresh {
            exchange.last_notification = Some((seq, now));
            self.events.push_back(Event::Notification { id, response });
        }
    }

    /// Ends an exchange with an error event.
    pub(super) fn fail(&mut self, id: RequestId, error: ExchangeError) {
        if self.remove_exchange(id).is_some() {
            if matches!(error, ExchangeError::Timeout) {
                self.stats.timeouts += 1;
            }
            self.events.push_back(Event::Failed { id, error });
        }
    }

    /// Drops every trace of an exchange: token, timers, retransmission, NSTART slot.
    fn remove_exchange(&mut self, id: RequestId) -> Option<Exchange<A>> {
        let exchange = self.exchanges.remove(&id)?;
        self.tokens.remove(&exchange.token);
        if let Some(deadline) = exchange.deadline {
            self.timers.remove(&(deadline, Timer::ResponseDeadline(id)));
        }
        if let Some(mid) = exchange.unacked_mid {
            self.take_unacked(exchange.peer, mid);
        }
        if exchange.outstanding {
            // No `now` here: queued requests start with the time of the last call, which
            // only shifts their first retransmission deadline by the same amount.
            let now = self.last_now();
            self.release_peer(now, exchange.peer);
        }
        Some(exchange)
    }

    /// The latest instant the engine has seen in a timer (for work started from a
    /// removal that has no `now` of its own).
    fn last_now(&self) -> Instant {
        self.clock
    }
}

/// Makes a protected request RFC 9668's combined EDHOC + OSCORE request: the EDHOC option
/// (empty, Class U) and message_3 (a CBOR byte string) ahead of the OSCORE ciphertext.
#[cfg(feature = "edhoc")]
fn combine_edhoc(packet: &mut Packet, message_3: &[u8]) {
    packet.add_option(
        coap_lite::CoapOption::Unknown(crate::edhoc::EDHOC_OPTION),
        Vec::new(),
    );
    let mut payload = Vec::with_capacity(message_3.len() + packet.payload.len());
    payload.extend_from_slice(message_3);
    payload.append(&mut packet.payload);
    packet.payload = payload;
}
