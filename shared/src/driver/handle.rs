//! The application's side of an endpoint: the [`Handle`] that sends requests and
//! notifications, and the commands it sends to the endpoint task.

use super::Error;
use crate::coap::{IncomingId, Request, RequestId, Response, ServerSecurity, Stats};
use crate::oscore::SecurityContext;
use std::boxed::Box;
use std::net::SocketAddr;
use std::string::String;
use tokio::sync::{mpsc, oneshot};

pub(crate) enum Command {
    Request {
        peer: SocketAddr,
        request: Request,
        reply: oneshot::Sender<Result<Response, Error>>,
    },
    Observe {
        peer: SocketAddr,
        request: Request,
        sink: mpsc::UnboundedSender<Result<Response, Error>>,
        started: oneshot::Sender<RequestId>,
    },
    /// A CoAP ping ([`crate::coap::Engine::ping`]).
    Ping {
        peer: SocketAddr,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    /// An observation dropped: deregistered at the server (or cancelled, if it ended).
    Deregister(RequestId),
    SendNon {
        peer: SocketAddr,
        request: Request,
        sent: oneshot::Sender<()>,
    },
    Discard(IncomingId),
    /// Acknowledge a request now, its response to follow separately.
    Acknowledge(IncomingId),
    Respond {
        id: IncomingId,
        response: Response,
    },
    Notify {
        resource: String,
        response: Response,
        reply: oneshot::Sender<usize>,
    },
    Stats(oneshot::Sender<Stats>),
    ObserverCount(String, oneshot::Sender<usize>),
    SecurePeer {
        peer: SocketAddr,
        context: Box<SecurityContext>,
        done: oneshot::Sender<()>,
    },
    /// Replace a secured server's key table ([`Engine::set_server_keys`]).
    ServerKeys {
        keys: crate::security::KeyTable,
        edhoc: Option<Box<crate::edhoc::ResponderConfig>>,
        done: oneshot::Sender<bool>,
    },
    ServerSecurity {
        security: Box<ServerSecurity>,
        store: CeilingStore,
        done: oneshot::Sender<()>,
    },
    Shutdown,
}

/// Stores a server's OSCORE sequence ceiling durably (see [`Handle::set_server_security`]).
pub type CeilingStore = Box<dyn FnMut(u64) -> std::io::Result<()> + Send>;

/// Sends requests and notifications through an [`Endpoint`]. Cheap to clone.
#[derive(Clone)]
pub struct Handle {
    pub(super) tx: mpsc::UnboundedSender<Command>,
}

impl Handle {
    /// Sends a request and waits for its final response (reassembled if block-wise).
    pub async fn request(&self, peer: SocketAddr, request: Request) -> Result<Response, Error> {
        let (reply, response) = oneshot::channel();
        self.send(Command::Request {
            peer,
            request,
            reply,
        })?;
        response.await.map_err(|_| Error::Closed)?
    }

    /// Sends a CoAP ping (an empty CON, RFC 7252 §4.3) and waits until `peer` answers it
    /// (`Ok`) or its retransmissions run out. Drop the future to stop waiting sooner: the
    /// ping is then cancelled.
    pub async fn ping(&self, peer: SocketAddr) -> Result<(), Error> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Ping { peer, reply })?;
        answer.await.map_err(|_| Error::Closed)?
    }

    /// Sends `request` once as NON without waiting for any response; returns when the
    /// datagram is on the socket (so a process may exit right after).
    pub async fn send_non(&self, peer: SocketAddr, request: Request) -> Result<(), Error> {
        let (sent, done) = oneshot::channel();
        self.send(Command::SendNon {
            peer,
            request: request.non_confirmable(),
            sent,
        })?;
        done.await.map_err(|_| Error::Closed)
    }

    /// Observes a resource (the request gets Observe: 0). The returned stream yields
    /// each fresh notification, the first response included.
    pub async fn observe(&self, peer: SocketAddr, request: Request) -> Result<Observation, Error> {
        let (sink, notifications) = mpsc::unbounded_channel();
        let (started, id) = oneshot::channel();
        self.send(Command::Observe {
            peer,
            request: request.with_observe(),
            sink,
            started,
        })?;
        let id = id.await.map_err(|_| Error::Closed)?;
        Ok(Observation {
            id,
            notifications,
            handle: self.clone(),
        })
    }

    /// Notifies every observer of `resource` (see
    /// [`Engine::notify`](crate::coap::Engine::notify)); returns how many there were.
    pub async fn notify(&self, resource: &str, response: Response) -> Result<usize, Error> {
        let (reply, count) = oneshot::channel();
        self.send(Command::Notify {
            resource: resource.into(),
            response,
            reply,
        })?;
        count.await.map_err(|_| Error::Closed)
    }

    /// The engine's counters.
    pub async fn stats(&self) -> Result<Stats, Error> {
        let (reply, stats) = oneshot::channel();
        self.send(Command::Stats(reply))?;
        stats.await.map_err(|_| Error::Closed)
    }

    /// How many observers `resource` has.
    pub async fn observer_count(&self, resource: &str) -> Result<usize, Error> {
        let (reply, count) = oneshot::channel();
        self.send(Command::ObserverCount(resource.into(), reply))?;
        count.await.map_err(|_| Error::Closed)
    }

    /// Answers a request taken by a deferred route (see [`Responder`](super::Responder)).
    /// Protects every request to `peer` with OSCORE `context` from now on, and accepts
    /// only answers that verify in it (see [`Engine::secure_peer`]).
    pub async fn secure_peer(
        &self,
        peer: SocketAddr,
        context: SecurityContext,
    ) -> Result<(), Error> {
        let (done, ready) = oneshot::channel();
        self.send(Command::SecurePeer {
            peer,
            context: Box::new(context),
            done,
        })?;
        ready.await.map_err(|_| Error::Closed)
    }

    /// Verifies OSCORE requests and protects their answers from now on (see
    /// [`Engine::set_server_security`]); `store` writes the sequence ceiling durably and
    /// runs before any datagram that relies on it is sent.
    pub async fn set_server_security(
        &self,
        security: ServerSecurity,
        store: CeilingStore,
    ) -> Result<(), Error> {
        let (done, ready) = oneshot::channel();
        self.send(Command::ServerSecurity {
            security: Box::new(security),
            store,
            done,
        })?;
        ready.await.map_err(|_| Error::Closed)
    }

    /// Replaces the key table and the EDHOC identities of a secured server (see
    /// [`Engine::set_server_keys`], [`Engine::set_server_edhoc`]): revoked peers are
    /// refused from their next request on. `Ok(false)` if this
    /// endpoint verifies no OSCORE.
    pub async fn set_server_keys(
        &self,
        keys: crate::security::KeyTable,
        edhoc: Option<crate::edhoc::ResponderConfig>,
    ) -> Result<bool, Error> {
        let (done, ready) = oneshot::channel();
        let edhoc = edhoc.map(Box::new);
        self.send(Command::ServerKeys { keys, edhoc, done })?;
        ready.await.map_err(|_| Error::Closed)
    }

    pub(crate) fn respond(&self, id: IncomingId, response: Response) {
        let _ = self.send(Command::Respond { id, response });
    }

    /// Ends a request taken by a deferred route without answering it.
    pub(crate) fn discard(&self, id: IncomingId) {
        let _ = self.send(Command::Discard(id));
    }

    /// Acknowledges a request taken by a deferred route now (its answer follows later).
    pub(crate) fn acknowledge(&self, id: IncomingId) {
        let _ = self.send(Command::Acknowledge(id));
    }

    /// Notifies every observer of `resource` without waiting to hear how many there
    /// were. Ordered with this endpoint's other answers and notifications.
    pub fn notify_detached(&self, resource: &str, response: Response) {
        let (reply, _) = oneshot::channel();
        let _ = self.send(Command::Notify {
            resource: resource.into(),
            response,
            reply,
        });
    }

    /// A handle not connected to a running endpoint, and the receiving end of its
    /// commands (for tests).
    #[cfg(test)]
    pub(crate) fn detached() -> (Handle, mpsc::UnboundedReceiver<Command>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Handle { tx }, rx)
    }

    fn send(&self, command: Command) -> Result<(), Error> {
        self.tx.send(command).map_err(|_| Error::Closed)
    }
}

/// A running observation. Dropping it deregisters it: the server is sent the observing
/// GET again with Observe = 1 (RFC 7641 §3.6) and drops the observer at once; a
/// notification that crosses it is answered with Reset, which does the same.
pub struct Observation {
    id: RequestId,
    notifications: mpsc::UnboundedReceiver<Result<Response, Error>>,
    handle: Handle,
}

impl Observation {
    /// The next notification; `None` once the observation has ended (after a final
    /// non-notification response or an error, which are yielded first).
    pub async fn next(&mut self) -> Option<Result<Response, Error>> {
        self.notifications.recv().await
    }
}

impl Drop for Observation {
    fn drop(&mut self) {
        let _ = self.handle.send(Command::Deregister(self.id));
    }
}
