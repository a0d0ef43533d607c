//! A CoAP client over the shared sans-IO engine and a [`UdpSocket`]: one request at a
//! time, the engine's retransmissions, nothing else of its own.

#[cfg(feature = "edhoc")]
use alloc::vec::Vec;
use core::net::SocketAddr;

use pehra_shared::coap::{Config, Engine, Event, ExchangeError, Request, Response};
use pehra_shared::oscore::SecurityContext;
use pehra_shared::Instant;

use crate::hal::{Clock, UdpSocket};

/// Why a request got no response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientError {
    /// No answer in time (every retransmission), or the peer reset the exchange.
    Exchange(ExchangeError),
    /// The engine had nothing more to wait for, yet no outcome (should not happen).
    Lost,
}

/// Counters of the client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Datagrams sent (retransmissions included).
    pub datagrams_sent: u64,
    /// Bytes sent.
    pub bytes_sent: u64,
    /// Datagrams received.
    pub datagrams_received: u64,
    /// Bytes received.
    pub bytes_received: u64,
    /// Socket errors (sending or receiving).
    pub socket_errors: u64,
}

/// A CoAP client on one UDP socket.
pub struct CoapClient<U> {
    engine: Engine<SocketAddr>,
    socket: U,
    stats: ClientStats,
}

impl<U: UdpSocket> CoapClient<U> {
    /// A client with the engine's `config`, seeded with `seed` (message IDs, tokens).
    pub fn new(socket: U, config: Config, seed: [u8; 32]) -> Self {
        CoapClient {
            engine: Engine::new(config, seed),
            socket,
            stats: ClientStats::default(),
        }
    }

    /// The counters.
    pub fn stats(&self) -> ClientStats {
        self.stats
    }

    /// Protects every request to `peer` with `context` from now on (OSCORE; see
    /// [`Engine::secure_peer`]).
    pub fn secure_peer(&mut self, peer: SocketAddr, context: SecurityContext) {
        self.engine.secure_peer(peer, context);
    }

    /// Protects every request to `peer` with a context EDHOC just made, sending
    /// `message_3` with the next request (RFC 9668; see
    /// [`Engine::secure_peer_combined`]).
    #[cfg(feature = "edhoc")]
    pub fn secure_peer_combined(
        &mut self,
        peer: SocketAddr,
        context: SecurityContext,
        message_3: Vec<u8>,
    ) {
        self.engine.secure_peer_combined(peer, context, message_3);
    }

    /// Forgets the context towards `peer` (see [`Engine::unsecure_peer`]).
    pub fn unsecure_peer(&mut self, peer: &SocketAddr) {
        self.engine.unsecure_peer(peer);
    }

    /// Whether requests to `peer` are protected.
    pub fn is_secured(&self, peer: &SocketAddr) -> bool {
        self.engine.is_secured(peer)
    }

    /// The next sender sequence number towards `peer`, if it is secured.
    pub fn next_sequence(&self, peer: &SocketAddr) -> Option<u64> {
        self.engine.next_sequence(peer)
    }

    /// The socket.
    pub fn socket_mut(&mut self) -> &mut U {
        &mut self.socket
    }

    /// Sends `request` to `peer` and waits for its final response (retransmitting as the
    /// engine says). Datagrams from elsewhere, malformed ones and requests to us are
    /// handled (and dropped) by the engine.
    pub async fn request<C: Clock>(
        &mut self,
        clock: &mut C,
        peer: SocketAddr,
        request: Request,
    ) -> Result<Response, ClientError> {
        let id = self.engine.request(now(clock), peer, request);
        loop {
            self.flush().await;
            while let Some(event) = self.engine.poll_event() {
                match event {
                    Event::Response { id: got, response } if got == id => return Ok(response),
                    Event::Failed { id: got, error } if got == id => {
                        return Err(ClientError::Exchange(error))
                    }
                    Event::Request(incoming) => {
                        // A device serves nothing: end it without an answer.
                        self.engine.discard(now(clock), incoming.id);
                    }
                    _ => {}
                }
            }
            self.flush().await;
            let Some(deadline) = self.engine.poll_timeout() else {
                self.engine.cancel(id);
                return Err(ClientError::Lost);
            };
            let deadline_ms = deadline.as_micros().div_ceil(1000);
            // The datagram is handled where the socket holds it (no buffer of our own).
            let (engine, stats) = (&mut self.engine, &mut self.stats);
            let received = self.socket.recv_with(deadline_ms, |bytes, from| {
                stats.datagrams_received += 1;
                stats.bytes_received += bytes.len() as u64;
                engine.handle_datagram(now(clock), from, bytes);
            });
            match received.await {
                Ok(Some(())) => {}
                Ok(None) => self.engine.handle_timeout(now(clock)),
                Err(_) => {
                    self.stats.socket_errors += 1;
                    // Do not spin on a broken socket: wait out the deadline.
                    clock.sleep_until(deadline_ms).await;
                    self.engine.handle_timeout(now(clock));
                }
            }
        }
    }

    /// Sends `request` once as NON (no answer awaited).
    pub async fn send_non<C: Clock>(&mut self, clock: &mut C, peer: SocketAddr, request: Request) {
        self.engine.send_non(now(clock), peer, request);
        self.flush().await;
    }

    async fn flush(&mut self) {
        while let Some(t) = self.engine.poll_transmit() {
            self.stats.datagrams_sent += 1;
            self.stats.bytes_sent += t.bytes.len() as u64;
            if self.socket.send_to(&t.bytes, t.peer).await.is_err() {
                self.stats.socket_errors += 1;
            }
        }
    }
}

fn now<C: Clock>(clock: &C) -> Instant {
    Instant::from_millis(clock.now_ms())
}
