//! The async client library: ZooKeeper's API over CoAP, with the session kept alive in
//! the background.
//!
//! A client's requests take effect in the order it makes them: they go one at a time
//! (the next is sent when the previous is answered), which is ZooKeeper's FIFO client
//! order without relying on datagram order.

use crate::uri::{children_uri, znode_uri};
use pehra_shared::api::{decode_response, response_error, version_tag};
use pehra_shared::coap::{
    option, Code, Config, ExchangeError, Method, Request, Response, CONTENT_FORMAT_CBOR,
};
use pehra_shared::driver::{self, Endpoint, Observation};
use pehra_shared::security::credentials::Credentials;
use pehra_shared::wire::{
    self, Children, CreateRequest, CreateResponse, ErrorBody, ErrorKind, HeartbeatAck, MultiOp,
    MultiRequest, MultiResponse, MultiResult, NodeData, SessionOpen, SessionOpened, SetDataRequest,
    Stat, SyncResponse,
};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::sync::{watch, Mutex};

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ZkError {
    /// The zookeeper refused the request; the message says why (`node exists: /a`,
    /// `version mismatch: /a is at 3`).
    #[error("{message}")]
    Server {
        /// What kind of refusal.
        kind: ErrorKind,
        /// The zookeeper's reason.
        message: String,
    },
    /// The zookeeper did not answer (in time), or the client is shut down.
    #[error("zookeeper at {addr} unreachable: {source}")]
    Unreachable {
        /// Its address.
        addr: SocketAddr,
        /// Why.
        source: driver::Error,
    },
    /// The client's session has expired; open a new client.
    #[error("the session has expired")]
    SessionExpired,
    /// No UDP socket could be opened.
    #[error("cannot open a UDP socket: {0}")]
    Socket(String),
    /// The connection to a member could not be secured (OSCORE from the credentials; with
    /// EDHOC credentials, the handshake failed or the member did not answer it).
    #[error("cannot secure the connection to the zookeeper at {addr}: {reason}")]
    Secure {
        /// The member.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The client was given no zookeeper address.
    #[error("no zookeeper address given")]
    NoAddress,
}

impl ZkError {
    /// The refusal kind, if the zookeeper refused.
    pub fn kind(&self) -> Option<ErrorKind> {
        match self {
            ZkError::Server { kind, .. } => Some(*kind),
            ZkError::SessionExpired => Some(ErrorKind::SessionExpired),
            ZkError::Unreachable { .. }
            | ZkError::Socket(_)
            | ZkError::Secure { .. }
            | ZkError::NoAddress => None,
        }
    }
}

impl From<ErrorBody> for ZkError {
    fn from(body: ErrorBody) -> Self {
        ZkError::Server {
            kind: body.error,
            message: body.message,
        }
    }
}

/// How a znode is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CreateMode {
    /// Stays until deleted.
    #[default]
    Persistent,
    /// Deleted when the client's session ends.
    Ephemeral,
    /// Persistent, with a 10-digit sequence number appended to the name.
    PersistentSequential,
    /// Ephemeral and sequential.
    EphemeralSequential,
}

impl CreateMode {
    fn flags(self) -> (bool, bool) {
        match self {
            CreateMode::Persistent => (false, false),
            CreateMode::Ephemeral => (true, false),
            CreateMode::PersistentSequential => (false, true),
            CreateMode::EphemeralSequential => (true, true),
        }
    }
}

/// The state of the client's session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// No session (the client was made without one).
    None,
    /// Alive: heartbeats are answered.
    Alive,
    /// The zookeeper says the session is gone (expired, closed, or unknown after the
    /// zookeeper lost it). Ephemeral znodes of this session are gone.
    Expired,
    /// Closed by this client.
    Closed,
}

/// What a watch reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// The znode's data and stat now (the first event is the state when the watch began).
    Data(NodeData),
    /// The znode's children now.
    Children(Children),
    /// The znode was deleted (or did not exist): the watch is over.
    Deleted,
}

/// A stream of [`WatchEvent`]s for one znode. Dropping it ends the watch.
///
/// A watch outlives a restart of the zookeeper (or a move to another ensemble member):
/// its observation is held in the zookeeper's memory and lost then, so when the client's
/// session learns of another zookeeper incarnation ([`wire::HeartbeatAck::incarnation`])
/// the watch registers itself again, as ZooKeeper's clients do with SetWatches on
/// reconnect. The state the new registration reports is an event if it differs from the
/// last one reported (a change made while the watch was not registered is not missed);
/// the same state again is not reported. A client without a session hears no
/// heartbeats, so it cannot tell that the member restarted; but when the member it
/// observes is gone (nothing listens) and the client knows other members, the watch
/// registers again with the next one that takes it, as a read would go on to it.
pub struct Watch {
    observation: Observation,
    server: SocketAddr,
    children: bool,
    done: bool,
    /// What [`Watch::next`] needs to register the watch again.
    renew: Renew,
}

/// How a watch registers itself again after the zookeeper it observes restarted.
struct Renew {
    /// The client (not kept alive by its watches).
    client: std::sync::Weak<Inner>,
    /// The observing request.
    request: Request,
    /// The zookeeper the client's session hears from (member and incarnation).
    heard: watch::Receiver<Option<Incarnation>>,
    /// The one the watch was registered with (as last heard before registering).
    registered: Option<Incarnation>,
    /// The last event reported.
    last: Option<WatchEvent>,
    /// The next event is the first of a new registration: not reported if it is `last`.
    resumed: bool,
    /// The client was dropped: nothing to hear from any more.
    client_gone: bool,
    /// The observation failed (the zookeeper is gone): register again once the session
    /// hears from a zookeeper.
    lost: Option<ZkError>,
    /// The client has no session: no heartbeat tells that the member died or restarted,
    /// so the watch asks the member itself every [`WATCH_PROBE_EVERY`] of quiet.
    sessionless: bool,
    /// Without a session: the incarnation of the member process the watch registered
    /// with (asked just before registering; `None` if it did not say).
    process: Option<u64>,
}

/// How long a watch without a session waits without news before it asks its member
/// whether it is still there, and still the process it registered with
/// (`GET /incarnation`).
const WATCH_PROBE_EVERY: Duration = Duration::from_secs(5);

/// One zookeeper process: the member's address and the incarnation it reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Incarnation {
    member: SocketAddr,
    incarnation: u64,
}

/// Whether a watch registered with `registered` must register again now that the
/// client hears from `heard`: another process (a restart, another member) holds none
/// of its observations.
fn must_reregister(registered: Option<Incarnation>, heard: Option<Incarnation>) -> bool {
    heard.is_some() && heard != registered
}

impl Watch {
    /// The next event; `None` after [`WatchEvent::Deleted`] or an error.
    ///
    /// With a session, losing the zookeeper (nothing listens: it is down) is not an
    /// error: the watch waits until the session hears from a zookeeper again and then
    /// registers again; it ends with [`ZkError::SessionExpired`] if the session ends
    /// first.
    pub async fn next(&mut self) -> Option<Result<WatchEvent, ZkError>> {
        loop {
            if self.done {
                return None;
            }
            if let Some(lost) = self.renew.lost.take() {
                match self.resume(lost).await {
                    Ok(()) => continue,
                    Err(e) => {
                        self.done = true;
                        return Some(Err(e));
                    }
                }
            }
            let item = tokio::select! {
                item = self.observation.next() => item,
                changed = self.renew.heard.changed(), if !self.renew.client_gone => {
                    if changed.is_err() {
                        // The client is gone: no more registrations; this one goes on.
                        self.renew.client_gone = true;
                        continue;
                    }
                    let heard = *self.renew.heard.borrow_and_update();
                    if must_reregister(self.renew.registered, heard) {
                        self.reregister(heard).await;
                    }
                    continue;
                }
                _ = tokio::time::sleep(WATCH_PROBE_EVERY), if self.renew.sessionless => {
                    let source = match self.probe().await {
                        // The same process: the observation stands.
                        Ok(now) if now.is_none() || now == self.renew.process => continue,
                        // It restarted between two probes: its observation went with the
                        // old process. Register again (the first notification is the
                        // state now).
                        Ok(_) => {
                            let Some(error) = self.register_sessionless().await else {
                                continue;
                            };
                            if self.fail_over().await {
                                continue;
                            }
                            self.done = true;
                            return Some(Err(error));
                        }
                        Err(source) => {
                            if self.fail_over().await {
                                continue;
                            }
                            source
                        }
                    };
                    self.done = true;
                    return Some(Err(ZkError::Unreachable {
                        addr: self.server,
                        source,
                    }));
                }
            };
            let event = match item? {
                Err(source) => {
                    let error = ZkError::Unreachable {
                        addr: self.server,
                        source,
                    };
                    if self.renew.registered.is_some() && !self.renew.client_gone {
                        // A session that can tell when the zookeeper is back.
                        self.renew.lost = Some(error);
                        continue;
                    }
                    if self.fail_over().await {
                        continue;
                    }
                    self.done = true;
                    return Some(Err(error));
                }
                Ok(response) if response.code() == Code::NOT_FOUND => {
                    self.done = true;
                    Ok(WatchEvent::Deleted)
                }
                Ok(response) if self.children => decode_response::<Children>(&response)
                    .map(WatchEvent::Children)
                    .map_err(ZkError::from),
                Ok(response) => decode_response::<NodeData>(&response)
                    .map(WatchEvent::Data)
                    .map_err(ZkError::from),
            };
            let resumed = std::mem::take(&mut self.renew.resumed);
            match &event {
                Ok(e) if resumed && self.renew.last.as_ref() == Some(e) => continue,
                Ok(e) => self.renew.last = Some(e.clone()),
                Err(_) => self.done = true,
            }
            return Some(event);
        }
    }

    /// After the observation failed (`lost`): waits until the session hears from a
    /// zookeeper process (a heartbeat answered after this), then registers again. Fails
    /// with `lost` if the client is gone, or with [`ZkError::SessionExpired`] if the
    /// session ends first.
    async fn resume(&mut self, lost: ZkError) -> Result<(), ZkError> {
        let Some(inner) = self.renew.client.upgrade() else {
            return Err(lost);
        };
        let mut state = inner.state.subscribe();
        let mut beats = inner.beats.subscribe();
        drop(inner);
        let ended = |s: &SessionState| matches!(s, SessionState::Expired | SessionState::Closed);
        tokio::select! {
            r = beats.changed() => if r.is_err() {
                return Err(lost);
            },
            _ = state.wait_for(ended) => return Err(ZkError::SessionExpired),
        }
        let heard = *self.renew.heard.borrow_and_update();
        self.reregister(heard).await;
        Ok(())
    }

    /// Asks the observed member for its incarnation: an error if nothing listens there
    /// any more or it does not answer; `None` if it does not say (an older zookeeper).
    async fn probe(&self) -> Result<Option<u64>, driver::Error> {
        let Some(inner) = self.renew.client.upgrade() else {
            return Ok(None);
        };
        let Some((_, endpoint)) = inner.members.iter().find(|(a, _)| *a == self.server) else {
            return Ok(None);
        };
        incarnation_at(endpoint, self.server).await
    }

    /// Without a session: registers again with the member the client talks to now,
    /// noting its incarnation first (a restart after that is seen at the next probe);
    /// why not, if it did not take the registration.
    async fn register_sessionless(&mut self) -> Option<ZkError> {
        if let Some(inner) = self.renew.client.upgrade() {
            let (server, endpoint) = inner.member();
            self.renew.process = incarnation_at(endpoint, server).await.ok().flatten();
        }
        self.reregister(None).await;
        self.renew.lost.take()
    }

    /// A watch without a session whose member is gone: registers again with the next
    /// member that takes it (each other member once); `false` if none did, or the
    /// client knows no other member.
    async fn fail_over(&mut self) -> bool {
        let Some(inner) = self.renew.client.upgrade() else {
            return false;
        };
        let others = inner.members.len().saturating_sub(1);
        let mut failed = self.server;
        for _ in 0..others {
            if inner.server() == failed {
                inner.next_member();
            }
            let trying = inner.server();
            if self.register_sessionless().await.is_none() {
                return true;
            }
            failed = trying;
        }
        false
    }

    /// Registers the watch again with the member the client now talks to; if that
    /// fails, the watch waits for the next heartbeat answered ([`Watch::resume`]).
    async fn reregister(&mut self, heard: Option<Incarnation>) {
        let Some(inner) = self.renew.client.upgrade() else {
            return;
        };
        let _order = inner.order.lock().await;
        let (server, endpoint) = inner.member();
        tracing::debug!(
            %server,
            path = %self.renew.request.path(),
            "zookeeper restarted or moved: registering a watch again"
        );
        self.renew.registered = heard;
        self.renew.resumed = true;
        match endpoint
            .handle()
            .observe(server, self.renew.request.clone())
            .await
        {
            // The old observation is deregistered as it drops (a dead process ignores it).
            Ok(observation) => {
                self.observation = observation;
                self.server = server;
            }
            Err(source) => {
                self.renew.lost = Some(ZkError::Unreachable {
                    addr: server,
                    source,
                })
            }
        }
    }
}

/// A 4.04 from an ensemble resource: the zookeeper has none, it runs alone.
fn alone(error: ZkError) -> ZkError {
    if error.kind() != Some(ErrorKind::NotFound) {
        return error;
    }
    ZkError::Server {
        kind: ErrorKind::NotFound,
        message: "this zookeeper runs alone (started without --peers): it has no ensemble to \
                  change or hand over"
            .into(),
    }
}

/// The incarnation of the zookeeper process at `server` (`GET /incarnation`); `None`
/// if it does not say (an older zookeeper).
async fn incarnation_at(
    endpoint: &Endpoint,
    server: SocketAddr,
) -> Result<Option<u64>, driver::Error> {
    let response = endpoint
        .handle()
        .request(server, Request::get("incarnation"))
        .await?;
    Ok(decode_response::<u64>(&response).ok())
}

/// Options for [`Client::connect`].
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The session timeout asked for (the zookeeper clamps it).
    pub session_timeout: Duration,
    /// CoAP parameters of the client's endpoint.
    pub coap: Config,
    /// OSCORE: protect every request with these credentials (the zookeeper must know
    /// them); `None` speaks plain CoAP, which only an insecure zookeeper serves.
    pub credentials: Option<Arc<Credentials>>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            session_timeout: Duration::from_secs(10),
            coap: Config {
                ack_timeout: Duration::from_millis(500),
                max_retransmit: 6,
                // Requests up to this size in one datagram, and answers declared up to
                // it: a 1 KiB value is one round trip, not two blocks.
                max_payload: pehra_shared::coap::PEER_MAX_PAYLOAD,
                ..Config::default()
            },
            credentials: None,
        }
    }
}

struct Inner {
    /// Every member of the ensemble (one alone), each with a socket connected to it.
    members: Vec<(SocketAddr, Endpoint)>,
    /// The member requests go to (moved on when it fails or is not the leader).
    current: std::sync::atomic::AtomicUsize,
    /// Held while a request is out: one at a time, in order.
    order: Mutex<()>,
    session: Option<u64>,
    /// The number of the session's next write (taken under `order`, so the zookeeper
    /// sees them increasing): a retry of a write, to the same member after its restart
    /// or to another one, carries the same number and is never applied twice.
    next_request: std::sync::atomic::AtomicU64,
    state: watch::Sender<SessionState>,
    /// `true` while the node is dormant ([`Client::sleep`]): the keepalive sends
    /// nothing and arms no timer until [`Client::wake`].
    paused: watch::Sender<bool>,
    /// Held while a heartbeat is out, so a routine heartbeat cannot land after the
    /// stretched one and shorten the lease again.
    beat: Mutex<()>,
    /// The zookeeper process the session last heard from (session open, heartbeats):
    /// watches registered with another register again ([`Watch`]).
    heard: watch::Sender<Option<Incarnation>>,
    /// Bumped on every heartbeat answered: a watch whose observation failed registers
    /// again after the next one.
    beats: watch::Sender<u64>,
    /// The node's health, sent with every heartbeat once reported
    /// ([`Client::report_health`]): the zookeeper sizes the session's lease from it.
    health: parking_lot::Mutex<Option<wire::NodeHealth>>,
    /// The lease the last heartbeat was granted (`None`: none answered yet).
    granted: parking_lot::Mutex<Option<Duration>>,
    /// In an ensemble, how long a member may stay silent on a request before it counts
    /// as not answering (and a resendable request moves on): a paused member (SIGSTOP,
    /// a hung host) sends no ICMP refusal, and CoAP alone would wait its whole exchange
    /// lifetime, 45 s and more, far past a session's timeout. As ZooKeeper's client
    /// does with its read timeout.
    silence: Duration,
}

/// A connection to a zookeeper, usually with a session.
pub struct Client {
    inner: Arc<Inner>,
    keepalive: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("server", &self.inner.server())
            .field("session", &self.inner.session.map(|s| format!("{s:#x}")))
            .field("state", &*self.inner.state.borrow())
            .finish()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        // Without a close, the session expires after its timeout (like a crash).
        if let Some(k) = self.keepalive.take() {
            k.abort();
        }
    }
}

impl Client {
    /// Connects and opens a session, kept alive until [`Client::close`] or drop.
    pub async fn connect(server: SocketAddr, options: ClientOptions) -> Result<Client, ZkError> {
        Self::connect_any(&[server], options).await
    }

    /// [`Client::connect`] to an ensemble: requests go to one member and move to another
    /// when it is unreachable (nothing listens) or is not the leader for a write; the
    /// session stays the same (the ensemble keeps it) if the client comes back within its
    /// timeout. See [`Client::without_session_any`].
    pub async fn connect_any(
        members: &[SocketAddr],
        options: ClientOptions,
    ) -> Result<Client, ZkError> {
        let mut client =
            Self::without_session_any(members, options.coap, options.credentials.as_deref())
                .await?;
        let open = SessionOpen {
            timeout_ms: options.session_timeout.as_millis() as u32,
            node: None,
            health: None,
        };
        let opened: SessionOpened = client
            .call(cbor_request(Method::Post, "session", &open))
            .await?;
        let inner = Arc::get_mut(&mut client.inner).expect("not shared yet");
        inner.session = Some(opened.session);
        inner.silence = session_silence(Duration::from_millis(u64::from(opened.timeout_ms)));
        inner.heard_from(opened.incarnation);
        inner.state.send_replace(SessionState::Alive);
        let period = Duration::from_millis(u64::from(opened.timeout_ms)) / 3;
        client.keepalive = Some(tokio::spawn(keepalive(
            client.inner.clone(),
            opened.session,
            period,
        )));
        Ok(client)
    }

    /// A client without a session: it can do everything but create ephemeral znodes.
    ///
    /// Its socket is connected to the zookeeper, so a call fails at once
    /// ([`driver::Error::Refused`], "nothing listens on udp ADDR") when nothing listens
    /// there, rather than after a minute of retransmissions.
    pub async fn without_session(server: SocketAddr, coap: Config) -> Result<Client, ZkError> {
        Self::without_session_secured(server, coap, None).await
    }

    /// [`Client::without_session`], protecting every request with OSCORE when
    /// `credentials` are given.
    pub async fn without_session_secured(
        server: SocketAddr,
        coap: Config,
        credentials: Option<&Credentials>,
    ) -> Result<Client, ZkError> {
        Self::without_session_any(&[server], coap, credentials).await
    }

    /// [`Client::without_session_secured`] to any member of an ensemble (one socket
    /// connected to each). A request that finds nothing listening at a member, or a write
    /// that a member refuses as not the leader, is sent to the next member (neither was
    /// applied); a request that times out is sent on only if that is safe (a read, a
    /// sync, a heartbeat, a session's numbered write), otherwise the caller decides, and
    /// the next request goes to the next member.
    pub async fn without_session_any(
        servers: &[SocketAddr],
        coap: Config,
        credentials: Option<&Credentials>,
    ) -> Result<Client, ZkError> {
        if servers.is_empty() {
            return Err(ZkError::NoAddress);
        }
        let mut members = Vec::with_capacity(servers.len());
        for &server in servers {
            let endpoint = Endpoint::connect(server, coap.clone())
                .await
                .map_err(|e| ZkError::Socket(e.to_string()))?;
            if let Some(credentials) = credentials {
                pehra_shared::driver::security::secure_client(
                    &endpoint.handle(),
                    credentials,
                    server,
                    &pehra_shared::security::zookeeper_kid(),
                )
                .await
                .map_err(|e| ZkError::Secure {
                    addr: server,
                    reason: e.to_string(),
                })?;
            }
            members.push((server, endpoint));
        }
        let (state, _) = watch::channel(SessionState::None);
        let (paused, _) = watch::channel(false);
        let (heard, _) = watch::channel(None);
        let (beats, _) = watch::channel(0);
        Ok(Client {
            inner: Arc::new(Inner {
                members,
                current: Default::default(),
                order: Mutex::new(()),
                session: None,
                next_request: std::sync::atomic::AtomicU64::new(1),
                state,
                paused,
                beat: Mutex::new(()),
                heard,
                beats,
                health: Default::default(),
                granted: Default::default(),
                silence: SESSIONLESS_SILENCE,
            }),
            keepalive: None,
        })
    }

    /// The session id, if the client has one.
    pub fn session_id(&self) -> Option<u64> {
        self.inner.session
    }

    /// The session's state, as it changes (expiry is reported here).
    pub fn session_state(&self) -> watch::Receiver<SessionState> {
        self.inner.state.subscribe()
    }

    /// Reports the node's health: every heartbeat from now on carries it, and the
    /// zookeeper sizes the session's lease from it (seed 002's adaptive lease: an unwell
    /// node's session lives longer than its timeout; see `SessionLeaseConfig`). The
    /// keepalive follows a lease shorter than the timeout.
    pub fn report_health(&self, health: wire::NodeHealth) {
        *self.inner.health.lock() = Some(health);
    }

    /// The lease the zookeeper granted the session's last heartbeat (`None`: none
    /// answered yet): how long the session lives from that heartbeat without another.
    pub fn granted_lease(&self) -> Option<Duration> {
        *self.inner.granted.lock()
    }

    /// Goes dormant for `duration` (PEHRA sleepCycle): sends one heartbeat asking the
    /// zookeeper to stretch the lease over the sleep, then pauses the keepalive (it sends
    /// nothing and arms no timer) until [`Client::wake`]. Returns the lease granted,
    /// counted from now: the session expires if the client is not woken within it.
    ///
    /// On an error the keepalive is resumed as if [`Client::wake`] had been called.
    pub async fn sleep(&self, duration: Duration) -> Result<Duration, ZkError> {
        let Some(session) = self.inner.session else {
            return Err(ZkError::SessionExpired);
        };
        self.inner.paused.send_replace(true);
        let _beat = self.inner.beat.lock().await;
        let body = wire::Heartbeat {
            health: self.inner.reported_health().unwrap_or_default(),
            sleep_ms: Some(u32::try_from(duration.as_millis()).unwrap_or(u32::MAX)),
        };
        let result: Result<HeartbeatAck, ZkError> = self
            .call(cbor_request(
                Method::Post,
                &format!("session/{session}/hb"),
                &body,
            ))
            .await;
        match result {
            Ok(ack) => Ok(Duration::from_millis(u64::from(ack.lease_ms))),
            Err(e) => {
                self.inner.paused.send_replace(false);
                Err(e)
            }
        }
    }

    /// Ends a [`Client::sleep`]: heartbeats at once and resumes the normal keepalive.
    /// The time asleep does not count as the zookeeper being unreachable.
    pub async fn wake(&self) -> Result<(), ZkError> {
        let Some(session) = self.inner.session else {
            return Ok(());
        };
        let result = {
            let _beat = self.inner.beat.lock().await;
            self.call_empty(Request::post(&format!("session/{session}/hb")))
                .await
        };
        // Resume even if this heartbeat failed: the keepalive retries and reports.
        self.inner.paused.send_replace(false);
        result
    }

    /// Whether the client is dormant ([`Client::sleep`] without [`Client::wake`]).
    pub fn is_asleep(&self) -> bool {
        *self.inner.paused.borrow()
    }

    /// Creates a znode; returns its path (with the sequence number for sequential ones).
    pub async fn create(
        &self,
        path: &str,
        data: &[u8],
        mode: CreateMode,
    ) -> Result<String, ZkError> {
        check_path(path)?;
        let (ephemeral, sequential) = mode.flags();
        let created: CreateResponse = self
            .call_numbered(|request| {
                let body = CreateRequest {
                    data: data.to_vec(),
                    ephemeral,
                    sequential,
                    session: self.inner.session,
                    request,
                };
                cbor_request(Method::Post, &znode_uri(path), &body)
            })
            .await?;
        Ok(created.path)
    }

    /// A znode's data and stat.
    pub async fn get_data(&self, path: &str) -> Result<(Vec<u8>, Stat), ZkError> {
        check_path(path)?;
        let node: NodeData = self.call(Request::get(&znode_uri(path))).await?;
        Ok((node.data, node.stat))
    }

    /// A znode's stat, or `None` if it does not exist.
    pub async fn exists(&self, path: &str) -> Result<Option<Stat>, ZkError> {
        match self.get_data(path).await {
            Ok((_, stat)) => Ok(Some(stat)),
            Err(e) if e.kind() == Some(ErrorKind::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Replaces a znode's data if it is at `version` (any version if `None`).
    pub async fn set_data(
        &self,
        path: &str,
        data: &[u8],
        version: Option<u32>,
    ) -> Result<Stat, ZkError> {
        check_path(path)?;
        // The version goes in the body: a znode that is gone is then `not_found`, as
        // the recipes expect (an If-Match on an absent znode is 4.12, RFC 7252).
        self.call_numbered(|request| {
            let body = SetDataRequest {
                data: data.to_vec(),
                version,
                session: self.inner.session,
                request,
            };
            cbor_request(Method::Put, &znode_uri(path), &body)
        })
        .await
    }

    /// Deletes a childless znode if it is at `version` (any version if `None`).
    pub async fn delete(&self, path: &str, version: Option<u32>) -> Result<(), ZkError> {
        check_path(path)?;
        let response = self
            .send_numbered(|number| {
                let mut request = Request::delete(&znode_uri(path));
                if let (Some(session), Some(number)) = (self.inner.session, number) {
                    request = request
                        .with_query(&format!("session={session}"))
                        .with_query(&format!("request={number}"));
                }
                if let Some(v) = version {
                    request = request.with_option(option::IF_MATCH, version_tag(v));
                }
                request
            })
            .await?;
        if response.code().is_success() {
            Ok(())
        } else {
            Err(self.server_error(response_error(&response)))
        }
    }

    /// A znode's children, sorted, with its stat.
    pub async fn get_children(&self, path: &str) -> Result<(Vec<String>, Stat), ZkError> {
        check_path(path)?;
        let children: Children = self.call(Request::get(&children_uri(path))).await?;
        Ok((children.children, children.stat))
    }

    /// Watches a znode's data: an event now and on every change, until it is deleted.
    pub async fn watch_data(&self, path: &str) -> Result<Watch, ZkError> {
        check_path(path)?;
        self.watch(Request::get(&znode_uri(path)), false).await
    }

    /// Watches a znode's children.
    pub async fn watch_children(&self, path: &str) -> Result<Watch, ZkError> {
        check_path(path)?;
        self.watch(Request::get(&children_uri(path)), true).await
    }

    async fn watch(&self, request: Request, children: bool) -> Result<Watch, ZkError> {
        let _order = self.inner.order.lock().await;
        let mut heard = self.inner.heard.subscribe();
        // As heard before registering: a restart in between makes the next heartbeat
        // register again (at worst once too often, never once too few).
        let registered = *heard.borrow_and_update();
        let (server, endpoint) = self.inner.member();
        let sessionless = self.inner.session.is_none();
        // Likewise the process's incarnation, for a watch without a session.
        let process = if sessionless {
            incarnation_at(endpoint, server).await.ok().flatten()
        } else {
            None
        };
        let observation = endpoint
            .handle()
            .observe(server, request.clone())
            .await
            .map_err(|source| self.unreachable(source))?;
        Ok(Watch {
            observation,
            server,
            children,
            done: false,
            renew: Renew {
                client: Arc::downgrade(&self.inner),
                request,
                heard,
                registered,
                last: None,
                resumed: false,
                client_gone: false,
                lost: None,
                sessionless,
                process,
            },
        })
    }

    /// Applies all of `ops` or none; one result per op.
    pub async fn multi(&self, ops: Vec<MultiOp>) -> Result<Vec<MultiResult>, ZkError> {
        let response: MultiResponse = self
            .call_numbered(|request| {
                let body = MultiRequest {
                    ops,
                    session: self.inner.session,
                    request,
                };
                cbor_request(Method::Post, "multi", &body)
            })
            .await?;
        Ok(response.results)
    }

    /// Sends the admin's signed PEHRA mode change (`POST /pehra/mode`, signed with
    /// `pehra_cluster::admin::sign_mode_change`). Refused with [`ErrorKind::Unauthorized`] when
    /// the zookeeper has no admin key, the signature is wrong or the change is not fresh.
    pub async fn pehra_mode(&self, change: &pehra_shared::wire::ModeChange) -> Result<(), ZkError> {
        self.call_empty(cbor_request(Method::Post, "pehra/mode", change))
            .await
    }

    /// Waits until every write acknowledged before it is visible; returns the last zxid.
    pub async fn sync(&self) -> Result<u64, ZkError> {
        let synced: SyncResponse = self.call(Request::post("sync")).await?;
        Ok(synced.zxid)
    }

    /// Reports that the node whose session owns the ephemeral znode `path` (a broker's
    /// `/brokers/ids/N`) did not answer a request: the zookeeper pings it and, if it
    /// answers none of its pings within a second, expires its session at once instead
    /// of at the end of its lease (`POST /suspect/PATH`). Returns when the report is
    /// taken, not when the probe ends; a report while a probe runs changes nothing.
    pub async fn suspect(&self, path: &str) -> Result<(), ZkError> {
        check_path(path)?;
        self.call_empty(Request::post(&format!("suspect{path}")))
            .await
    }

    /// The current member's view of its ensemble (`GET /ensemble`); `None` from a
    /// zookeeper that is alone.
    pub async fn ensemble_status(
        &self,
    ) -> Result<Option<crate::ensemble::EnsembleStatus>, ZkError> {
        match self.call(Request::get(crate::ensemble::STATUS_PATH)).await {
            Ok(status) => Ok(Some(status)),
            Err(e) if e.kind() == Some(ErrorKind::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Asks the ensemble leader to hand its office over to `to` (or to the member whose
    /// log is furthest along): `POST /ensemble`, sent on to the next member while the
    /// current one is not the leader. Returns once the handover has started; it has
    /// completed when [`Client::ensemble_status`] names the new leader.
    pub async fn transfer_leadership(
        &self,
        to: Option<u64>,
    ) -> Result<crate::ensemble::TransferStarted, ZkError> {
        let asked = crate::ensemble::TransferRequest { to };
        self.call(cbor_request(
            Method::Post,
            crate::ensemble::STATUS_PATH,
            &asked,
        ))
        .await
        .map_err(alone)
    }

    /// Changes the ensemble's voters (`POST /ensemble/members`, admin only): sent on
    /// to the next member while the current one is not the leader. Returns the voters
    /// once the change is applied.
    pub async fn change_membership(
        &self,
        request: &crate::ensemble::MembershipRequest,
    ) -> Result<crate::ensemble::MembershipChanged, ZkError> {
        self.call(cbor_request(
            Method::Post,
            crate::ensemble::MEMBERS_PATH,
            request,
        ))
        .await
        .map_err(alone)
    }

    /// The address of the zookeeper (the ensemble member) requests go to now.
    pub fn server(&self) -> SocketAddr {
        self.inner.server()
    }

    /// The CoAP counters of the endpoint requests go out from now (datagrams sent and
    /// received, retransmissions): what the calls so far cost on the wire.
    pub async fn coap_stats(&self) -> Result<pehra_shared::coap::Stats, ZkError> {
        let (_, endpoint) = self.inner.member();
        endpoint
            .handle()
            .stats()
            .await
            .map_err(|source| self.unreachable(source))
    }

    /// Ends the session like [`Client::close`], through a shared reference (for a client
    /// other tasks still hold: their later calls fail as the session is gone). The
    /// keepalive stops when the last holder drops the client.
    pub async fn end_session(&self) -> Result<(), ZkError> {
        if let Some(session) = self.inner.session {
            self.call_empty(Request::delete(&format!("session/{session}")))
                .await?;
            self.inner.state.send_replace(SessionState::Closed);
        }
        Ok(())
    }

    /// Closes the session (its ephemeral znodes go at once).
    pub async fn close(mut self) -> Result<(), ZkError> {
        if let Some(k) = self.keepalive.take() {
            k.abort();
        }
        if let Some(session) = self.inner.session {
            self.call_empty(Request::delete(&format!("session/{session}")))
                .await?;
            self.inner.state.send_replace(SessionState::Closed);
        }
        Ok(())
    }

    async fn call<T: serde::de::DeserializeOwned>(&self, request: Request) -> Result<T, ZkError> {
        let response = self.send(request).await?;
        decode_response(&response).map_err(|e| self.server_error(e))
    }

    async fn call_empty(&self, request: Request) -> Result<(), ZkError> {
        let response = self.send(request).await?;
        if response.code().is_success() {
            Ok(())
        } else {
            Err(self.server_error(response_error(&response)))
        }
    }

    /// [`Client::call`] for a write: `build` gets the write's request number within the
    /// session (none without one).
    async fn call_numbered<T: serde::de::DeserializeOwned>(
        &self,
        build: impl FnOnce(Option<u64>) -> Request,
    ) -> Result<T, ZkError> {
        let response = self.send_numbered(build).await?;
        decode_response(&response).map_err(|e| self.server_error(e))
    }

    /// Numbers a write (under the order lock, so numbers reach the zookeeper
    /// increasing) and sends it.
    async fn send_numbered(
        &self,
        build: impl FnOnce(Option<u64>) -> Request,
    ) -> Result<Response, ZkError> {
        let _order = self.inner.order.lock().await;
        let number = self.inner.session.map(|_| {
            self.inner
                .next_request
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        });
        // A numbered write may be sent again to another member: never applied twice.
        self.inner
            .request(build(number), number.is_some())
            .await
            .map_err(|source| self.unreachable(source))
    }

    async fn send(&self, request: Request) -> Result<Response, ZkError> {
        // Reads, syncs and heartbeats change nothing twice: they may go to another member
        // after one does not answer. So may a session's open: if the silent member opened
        // one too, nobody holds it and it expires after its timeout (a ZooKeeper client
        // connecting to the next server does the same). A session's close may not.
        let resendable = request.method() == Some(Method::Get)
            || request.path() == "sync"
            || request.path().ends_with("/hb")
            || (request.method() == Some(Method::Post) && request.path() == "session");
        let _order = self.inner.order.lock().await;
        self.inner
            .request(request, resendable)
            .await
            .map_err(|source| self.unreachable(source))
    }

    fn server_error(&self, body: ErrorBody) -> ZkError {
        if body.error == ErrorKind::SessionExpired && self.inner.session.is_some() {
            self.inner.state.send_replace(SessionState::Expired);
        }
        body.into()
    }

    fn unreachable(&self, source: driver::Error) -> ZkError {
        ZkError::Unreachable {
            addr: self.inner.server(),
            source,
        }
    }
}

/// How long a member of an ensemble may stay silent on a request of a client without a
/// session (see `Inner::silence`).
const SESSIONLESS_SILENCE: Duration = Duration::from_secs(5);

/// How long a member may stay silent on a request of a session with `timeout`: a
/// third of it (the heartbeat period), so that a heartbeat that met a silent member
/// still reaches another one within the timeout; at least a second, so that a busy
/// member is not taken for a silent one.
fn session_silence(timeout: Duration) -> Duration {
    (timeout / 3).max(Duration::from_secs(1))
}

/// How many times a request goes round the members while none takes it (no leader yet,
/// or none reachable), and the pause between rounds.
const ROUNDS: u32 = 40;
const ROUND_PAUSE: Duration = Duration::from_millis(250);

impl Inner {
    /// The health last reported, if any.
    fn reported_health(&self) -> Option<wire::NodeHealth> {
        *self.health.lock()
    }

    /// The member requests go to now, with its endpoint.
    fn member(&self) -> (SocketAddr, &Endpoint) {
        let (addr, endpoint) = &self.members[self.current_index()];
        (*addr, endpoint)
    }

    fn server(&self) -> SocketAddr {
        self.member().0
    }

    /// The index of the member requests go to now.
    fn current_index(&self) -> usize {
        self.current.load(std::sync::atomic::Ordering::Relaxed) % self.members.len()
    }

    /// Records the incarnation the current member reported (none from an older
    /// zookeeper): a change wakes the watches, which register again.
    fn heard_from(&self, incarnation: Option<u64>) {
        let Some(incarnation) = incarnation else {
            return;
        };
        let now = Some(Incarnation {
            member: self.server(),
            incarnation,
        });
        self.heard.send_if_modified(|heard| {
            let changed = *heard != now;
            *heard = now;
            changed
        });
    }

    /// Moves on to the next member.
    fn next_member(&self) {
        self.current
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Sends `request` to the current member; with an ensemble, on to the next member
    /// while the current one has nothing listening or is not the leader (neither applied
    /// it), pausing between rounds, until one takes it. A member that does not answer at
    /// all (paused, cut off: the exchange times out) may have applied the request: it is
    /// sent on to the next member only if `resendable` (a read, or a numbered write,
    /// which the ensemble never applies twice); a member silent once is not asked again
    /// in that round (the next round asks it again: it may only have been slow), and the
    /// request fails once every member has been silent.
    async fn request(&self, request: Request, resendable: bool) -> Result<Response, driver::Error> {
        let n = self.members.len();
        let mut round = 0;
        let mut tried = 0;
        let mut silent = vec![false; n];
        let mut ever_silent = vec![false; n];
        loop {
            let at = self.current_index();
            let (addr, endpoint) = self.member();
            let handle = endpoint.handle();
            let attempt = handle.request(addr, request.clone());
            let result = if n > 1 {
                tokio::time::timeout(self.silence, attempt)
                    .await
                    .unwrap_or(Err(driver::Error::Exchange(ExchangeError::Timeout)))
            } else {
                attempt.await
            };
            let retry = n > 1
                && match &result {
                    Err(driver::Error::Refused { .. }) => true,
                    Ok(response) => {
                        !response.code().is_success()
                            && response_error(response).error == ErrorKind::NotLeader
                    }
                    Err(driver::Error::Exchange(_))
                        if resendable && ever_silent.iter().filter(|s| !**s).count() > 1 =>
                    {
                        tracing::debug!(%addr, "no answer from the member: sending to the next one");
                        silent[at] = true;
                        ever_silent[at] = true;
                        true
                    }
                    Err(driver::Error::Exchange(_)) => {
                        // Maybe applied: not resent, but the next request tries another.
                        self.next_member();
                        false
                    }
                    Err(_) => false,
                };
            if !retry {
                return result;
            }
            self.next_member();
            while silent[self.current_index()] {
                self.next_member();
            }
            tried += 1;
            if tried % n == 0 {
                silent.fill(false);
                round += 1;
                if round >= ROUNDS {
                    return result;
                }
                tokio::time::sleep(ROUND_PAUSE).await;
            }
        }
    }
}

/// Heartbeats every `period` (a third of the timeout), or a third of the lease granted
/// if that is shorter. The session is reported expired when the zookeeper says so, or
/// when no heartbeat got through for a whole lease (the last one granted; the timeout
/// before any). While paused ([`Client::sleep`])
/// it waits, with no timer, for the wake; the time asleep does not count against the
/// zookeeper. Each heartbeat carries the health last reported ([`Client::report_health`]).
async fn keepalive(inner: Arc<Inner>, session: u64, timeout_period: Duration) {
    let path = format!("session/{session}/hb");
    let mut paused = inner.paused.subscribe();
    let mut last_ok = tokio::time::Instant::now();
    let mut period = timeout_period;
    // How long the session lives without a heartbeat that gets through.
    let mut lease = timeout_period * 3;
    // The next heartbeat: the first at once. A kernel timer in the process
    // (`driver::clock::sleep_until`): one wake-up, where tokio's wheel took two or three.
    let mut next = tokio::time::Instant::now();
    loop {
        tokio::select! {
            () = driver::clock::sleep_until(next) => {
                // The cadence kept; after a late tick, a period from now (tokio's
                // `MissedTickBehavior::Delay`).
                let now = tokio::time::Instant::now();
                next = if next + period > now { next + period } else { now + period };
            }
            _ = paused.wait_for(|p| *p) => {}
        }
        if *paused.borrow_and_update() {
            if paused.wait_for(|p| !*p).await.is_err() {
                return;
            }
            // Client::wake heartbeated just now.
            last_ok = tokio::time::Instant::now();
            next = last_ok + period;
            continue;
        }
        let result = {
            let _beat = inner.beat.lock().await;
            if *inner.paused.borrow() {
                continue;
            }
            let request = match inner.reported_health() {
                Some(health) => cbor_request(
                    Method::Post,
                    &path,
                    &wire::Heartbeat {
                        health,
                        sleep_ms: None,
                    },
                ),
                None => Request::post(&path),
            };
            inner.request(request, true).await
        };
        let ack = result
            .as_ref()
            .ok()
            .filter(|r| r.code().is_success())
            .and_then(|r| wire::decode::<HeartbeatAck>(r.payload()).ok());
        match result {
            Ok(_) if ack.is_some() => {
                last_ok = tokio::time::Instant::now();
                let granted = ack
                    .as_ref()
                    .map(|a| Duration::from_millis(u64::from(a.lease_ms)));
                *inner.granted.lock() = granted;
                lease = granted.unwrap_or(timeout_period * 3);
                // A lease shorter than the timeout: heartbeat within it.
                let wanted = (lease / 3).min(timeout_period);
                if wanted != period && !wanted.is_zero() {
                    period = wanted;
                    next = tokio::time::Instant::now() + period;
                }
                inner.heard_from(ack.and_then(|a| a.incarnation));
                inner.beats.send_modify(|n| *n = n.wrapping_add(1));
            }
            Ok(response) if response_error(&response).error == ErrorKind::SessionExpired => {
                inner.state.send_replace(SessionState::Expired);
                return;
            }
            _ if last_ok.elapsed() > lease => {
                tracing::warn!(
                    session = format_args!("{session:#x}"),
                    "zookeeper unreachable for a whole session lease"
                );
                inner.state.send_replace(SessionState::Expired);
                return;
            }
            _ => {}
        }
    }
}

/// Refuses an invalid path before it is sent (the server would refuse it too).
fn check_path(path: &str) -> Result<(), ZkError> {
    crate::path::validate(path).map_err(|e| ZkError::Server {
        kind: ErrorKind::Malformed,
        message: e.to_string(),
    })
}

fn cbor_request<T: serde::Serialize>(method: Method, uri: &str, body: &T) -> Request {
    Request::new(method, uri)
        .with_payload(wire::encode(body).expect("wire types always encode"))
        .with_content_format(CONTENT_FORMAT_CBOR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watch_registers_again_for_another_process_only() {
        let a: SocketAddr = "127.0.0.1:2181".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2182".parse().unwrap();
        let at = |member, incarnation| {
            Some(Incarnation {
                member,
                incarnation,
            })
        };
        // Nothing heard (a zookeeper that tells no incarnation, or no session): never.
        assert!(!must_reregister(None, None));
        assert!(!must_reregister(at(a, 1), None));
        // The same process: no.
        assert!(!must_reregister(at(a, 1), at(a, 1)));
        // A restart, another member, or a registration before anything was heard: yes.
        assert!(must_reregister(at(a, 1), at(a, 2)));
        assert!(must_reregister(at(a, 1), at(b, 1)));
        assert!(must_reregister(None, at(a, 1)));
    }
}
