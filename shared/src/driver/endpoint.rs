//! The endpoint task: owns the socket and the engine, and talks to the application
//! through a command channel.

use super::handle::{CeilingStore, Command, Handle};
use super::router::{Dispatch, ResponseFuture, Router};
use super::socket::{self, DynSocket, Socket};
use super::Error;
use crate::coap::{Config, Engine, Event, ExchangeError, IncomingId, RequestId, Response};
use crate::Instant;
use std::boxed::Box;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::task::{Context, Poll, Waker};
use std::{vec, vec::Vec};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// How many datagrams are read in one go before the engine's output is flushed.
const RECEIVE_BATCH: usize = 64;

/// Who waits for the outcome of one of our requests.
enum Waiter {
    Once(oneshot::Sender<Result<Response, Error>>),
    Stream(mpsc::UnboundedSender<Result<Response, Error>>),
    Ping(oneshot::Sender<Result<(), Error>>),
}

/// A CoAP endpoint on one UDP socket: a server for its [`Router`] and a client for
/// its [`Handle`]s. Dropping it stops it.
pub struct Endpoint {
    handle: Handle,
    local_addr: SocketAddr,
    task: Option<JoinHandle<()>>,
}

impl Endpoint {
    /// Binds `addr` and starts serving `router` (an empty router for a pure client).
    pub async fn bind(addr: SocketAddr, config: Config, router: Router) -> std::io::Result<Self> {
        if let Some(socket) = socket::from_factory(addr, None) {
            let socket = socket.await?;
            return Self::start(socket, config, router, None);
        }
        let socket = UdpSocket::bind(addr).await?;
        Self::from_socket(socket, config, router)
    }

    /// A client endpoint for one peer: binds an ephemeral port and connects the socket
    /// to `peer`, so that the kernel reports an ICMP port unreachable from it. Then every
    /// request to `peer` fails at once with [`Error::Refused`] instead of waiting out its
    /// retransmissions (about a minute). A connected socket hears nobody else, so this is
    /// for clients of a single server only, never for a server.
    pub async fn connect(peer: SocketAddr, config: Config) -> std::io::Result<Self> {
        if let Some(socket) = socket::from_factory(super::any_local_for(peer), Some(peer)) {
            let socket: Box<dyn DynSocket> = socket.await?;
            return Self::start(socket, config, Router::new(), Some(peer));
        }
        let socket = UdpSocket::bind(super::any_local_for(peer)).await?;
        socket.connect(peer).await?;
        Self::start(socket, config, Router::new(), Some(peer))
    }

    /// Starts an endpoint on an already bound socket.
    pub fn from_socket(socket: UdpSocket, config: Config, router: Router) -> std::io::Result<Self> {
        Self::start(socket, config, router, None)
    }

    fn start<S: Socket>(
        socket: S,
        config: Config,
        router: Router,
        connected: Option<SocketAddr>,
    ) -> std::io::Result<Self> {
        let local_addr = socket.local_addr()?;
        let seed = socket::seed32()?;
        let mut engine = Engine::new(config, seed);
        engine.set_links(router.links());
        let (tx, rx) = mpsc::unbounded_channel();
        let driver = Driver {
            socket,
            engine,
            router,
            rx,
            tx: tx.clone(),
            base: tokio::time::Instant::now(),
            waiting: BTreeMap::new(),
            sent_waiters: Vec::new(),
            ceiling_store: None,
            connected,
        };
        let task = tokio::spawn(driver.run());
        Ok(Endpoint {
            handle: Handle { tx },
            local_addr,
            task: Some(task),
        })
    }

    /// The address the socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A cloneable handle for requests and notifications.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Stops the endpoint and waits until its socket is closed.
    pub async fn shutdown(mut self) {
        let _ = self.handle.tx.send(Command::Shutdown);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

struct Driver<S> {
    socket: S,
    engine: Engine<SocketAddr>,
    router: Router,
    rx: mpsc::UnboundedReceiver<Command>,
    tx: mpsc::UnboundedSender<Command>,
    base: tokio::time::Instant,
    waiting: BTreeMap<RequestId, Waiter>,
    /// Told once everything queued before them is on the socket.
    sent_waiters: Vec<oneshot::Sender<()>>,
    /// Stores the OSCORE sequence ceiling (servers with security).
    ceiling_store: Option<CeilingStore>,
    /// The peer the socket is connected to ([`Endpoint::connect`]): the kernel reports
    /// its ICMP port unreachable as `ECONNREFUSED` on the next receive or send.
    connected: Option<SocketAddr>,
}

impl<S: Socket> Driver<S> {
    fn now(&self) -> Instant {
        Instant::from_micros(self.base.elapsed().as_micros() as u64)
    }

    async fn run(mut self) {
        let mut buf = vec![0u8; 65_536];
        loop {
            self.flush().await;
            let deadline = self
                .engine
                .poll_timeout()
                .map(|t| self.base + std::time::Duration::from_micros(t.as_micros()));
            tokio::select! {
                biased;
                command = self.rx.recv() => {
                    let Some(command) = command else { return };
                    // Stopping: what was answered before the stop still goes out (a
                    // server's last answers, given just before `shutdown`).
                    if !self.apply(command) {
                        self.flush().await;
                        return;
                    }
                    while let Ok(command) = self.rx.try_recv() {
                        if !self.apply(command) {
                            self.flush().await;
                            return;
                        }
                    }
                }
                received = self.socket.recv_from(&mut buf) => {
                    match received {
                        Ok((n, peer)) => {
                            let now = self.now();
                            self.engine.handle_datagram(now, peer, &buf[..n]);
                            for _ in 1..RECEIVE_BATCH {
                                let Ok((n, peer)) = self.socket.try_recv_from(&mut buf) else { break };
                                self.engine.handle_datagram(now, peer, &buf[..n]);
                            }
                        }
                        Err(e) => self.on_socket_error(&e, "UDP receive failed"),
                    }
                }
                _ = sleep_until(deadline), if deadline.is_some() => {
                    self.cancel_abandoned();
                    let now = self.now();
                    self.engine.handle_timeout(now);
                }
            }
        }
    }

    /// A receive or send failed. On a connected socket, `ECONNREFUSED` is the peer's ICMP
    /// port unreachable: its requests fail now. Anything else is only logged (and a server
    /// never fails on what a client's network says).
    fn on_socket_error(&mut self, error: &std::io::Error, what: &str) {
        match self.connected {
            Some(peer) if error.kind() == std::io::ErrorKind::ConnectionRefused => {
                let now = self.now();
                let failed = self.engine.peer_unreachable(now, peer);
                tracing::debug!(%peer, failed, "nothing listens at the peer (ICMP port unreachable)");
            }
            _ => tracing::debug!(error = %error, "{what}"),
        }
    }

    /// Cancels the requests whose callers stopped waiting (a timeout around
    /// [`Handle::request`] dropped its future), before their next retransmission: an
    /// answer nobody awaits is not worth the traffic.
    fn cancel_abandoned(&mut self) {
        let abandoned: Vec<RequestId> = self
            .waiting
            .iter()
            .filter(|(_, w)| match w {
                Waiter::Once(reply) => reply.is_closed(),
                Waiter::Ping(reply) => reply.is_closed(),
                Waiter::Stream(_) => false,
            })
            .map(|(id, _)| *id)
            .collect();
        for id in abandoned {
            self.engine.cancel(id);
            self.waiting.remove(&id);
        }
    }

    /// Applies a command; false on shutdown.
    fn apply(&mut self, command: Command) -> bool {
        let now = self.now();
        match command {
            Command::Request {
                peer,
                request,
                reply,
            } => {
                let id = self.engine.request(now, peer, request);
                self.waiting.insert(id, Waiter::Once(reply));
            }
            Command::Observe {
                peer,
                request,
                sink,
                started,
            } => {
                let id = self.engine.request(now, peer, request);
                self.waiting.insert(id, Waiter::Stream(sink));
                let _ = started.send(id);
            }
            Command::Ping { peer, reply } => {
                let id = self.engine.ping(now, peer);
                self.waiting.insert(id, Waiter::Ping(reply));
            }
            Command::Deregister(id) => {
                self.waiting.remove(&id);
                // The deregistering GET's own answer has no waiter: it is dropped.
                if self.engine.deregister(now, id).is_none() {
                    self.engine.cancel(id);
                }
            }
            Command::Respond { id, response } => {
                self.engine.respond(now, id, response);
            }
            Command::SendNon {
                peer,
                request,
                sent,
            } => {
                self.engine.send_non(now, peer, request);
                self.sent_waiters.push(sent);
            }
            Command::Discard(id) => {
                self.engine.discard(now, id);
            }
            Command::Acknowledge(id) => {
                self.engine.acknowledge(now, id);
            }
            Command::Notify {
                resource,
                response,
                reply,
            } => {
                let _ = reply.send(self.engine.notify(now, &resource, response));
            }
            Command::Stats(reply) => {
                let _ = reply.send(self.engine.stats().clone());
            }
            Command::ObserverCount(resource, reply) => {
                let _ = reply.send(self.engine.observer_count(&resource));
            }
            Command::SecurePeer {
                peer,
                context,
                done,
            } => {
                self.engine.secure_peer(peer, *context);
                let _ = done.send(());
            }
            Command::ServerSecurity {
                security,
                store,
                done,
            } => {
                self.engine.set_server_security(*security);
                self.ceiling_store = Some(store);
                let _ = done.send(());
            }
            Command::ServerKeys { keys, edhoc, done } => {
                let secured = self.engine.set_server_keys(keys);
                let _ = done.send(secured && self.engine.set_server_edhoc(edhoc.map(|e| *e)));
            }
            Command::Shutdown => return false,
        }
        true
    }

    /// Stores the engine's OSCORE sequence ceiling if one is due; `false` if it could
    /// not be stored, and then nothing may be sent that relies on it.
    fn store_ceiling(&mut self) -> bool {
        let Some(ceiling) = self.engine.poll_persist() else {
            return true;
        };
        let Some(store) = self.ceiling_store.as_mut() else {
            return true;
        };
        match store(ceiling) {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, ceiling, "cannot store the OSCORE sequence ceiling: answers that need it are dropped");
                false
            }
        }
    }

    /// Sends what the engine has to send and hands its events out, until both are empty
    /// (a handler that answers at once produces more to send).
    async fn flush(&mut self) {
        loop {
            let mut idle = true;
            if !self.store_ceiling() {
                while self.engine.poll_transmit().is_some() {}
            }
            while let Some(transmit) = self.engine.poll_transmit() {
                idle = false;
                let sent = match self.socket.try_send_to(&transmit.bytes, transmit.peer) {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        self.socket.send_to(&transmit.bytes, transmit.peer).await
                    }
                    other => other,
                };
                if let Err(e) = sent {
                    tracing::debug!(peer = %transmit.peer, error = %e, "UDP send failed");
                    self.on_socket_error(&e, "UDP send failed");
                }
            }
            while let Some(event) = self.engine.poll_event() {
                idle = false;
                self.on_event(event);
            }
            if idle {
                for sent in self.sent_waiters.drain(..) {
                    let _ = sent.send(());
                }
                return;
            }
        }
    }

    fn on_event(&mut self, event: Event<SocketAddr>) {
        match event {
            Event::Request(incoming) => {
                let handle = Handle {
                    tx: self.tx.clone(),
                };
                match self.router.dispatch(
                    incoming.id,
                    &handle,
                    incoming.peer,
                    incoming.identity,
                    incoming.request,
                ) {
                    Dispatch::Future(future) => self.run_handler(incoming.id, future),
                    Dispatch::Deferred => {}
                    Dispatch::Answer(response) => {
                        let now = self.now();
                        self.engine.respond(now, incoming.id, response);
                    }
                }
            }
            Event::Response { id, response } => match self.waiting.remove(&id) {
                Some(Waiter::Once(reply)) => {
                    let _ = reply.send(Ok(response));
                }
                Some(Waiter::Stream(sink)) => {
                    let _ = sink.send(Ok(response));
                }
                Some(Waiter::Ping(_)) | None => {}
            },
            Event::Pong { id } => {
                if let Some(Waiter::Ping(reply)) = self.waiting.remove(&id) {
                    let _ = reply.send(Ok(()));
                }
            }
            Event::Notification { id, response } => {
                if let Some(Waiter::Stream(sink)) = self.waiting.get(&id) {
                    if sink.send(Ok(response)).is_err() {
                        self.waiting.remove(&id);
                        self.engine.cancel(id);
                    }
                }
            }
            Event::Failed { id, error } => {
                let error = match (error, self.connected) {
                    (ExchangeError::Unreachable, Some(peer)) => Error::Refused { peer },
                    (error, _) => error.into(),
                };
                match self.waiting.remove(&id) {
                    Some(Waiter::Once(reply)) => {
                        let _ = reply.send(Err(error));
                    }
                    Some(Waiter::Stream(sink)) => {
                        let _ = sink.send(Err(error));
                    }
                    Some(Waiter::Ping(reply)) => {
                        let _ = reply.send(Err(error));
                    }
                    None => {}
                }
            }
        }
    }

    /// Runs a handler: polled once right here (most answer at once, and then the
    /// response is piggybacked without a task or a channel hop); a handler that has to
    /// wait continues in its own task and answers through the command channel.
    fn run_handler(&mut self, id: IncomingId, mut future: ResponseFuture) {
        let mut cx = Context::from_waker(Waker::noop());
        match future.as_mut().poll(&mut cx) {
            Poll::Ready(response) => {
                let now = self.now();
                self.engine.respond(now, id, response);
            }
            Poll::Pending => {
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    let response = future.await;
                    let _ = tx.send(Command::Respond { id, response });
                });
            }
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
