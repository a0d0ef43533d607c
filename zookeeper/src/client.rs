//! The async client library: ZooKeeper's API over CoAP, with the session kept alive in
//! the background.
//!
//! A client's requests take effect in the order it makes them: they go one at a time
//! (the next is sent when the previous is answered), which is ZooKeeper's FIFO client
//! order without relying on datagram order.

use crate::uri::{children_uri, znode_uri};
use pehra_shared::api::{decode_response, response_error, version_tag};
use pehra_shared::coap::{option, Code, Config, Method, Request, Response, CONTENT_FORMAT_CBOR};
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
}

impl ZkError {
    /// The refusal kind, if the zookeeper refused.
    pub fn kind(&self) -> Option<ErrorKind> {
        match self {
            ZkError::Server { kind, .. } => Some(*kind),
            ZkError::SessionExpired => Some(ErrorKind::SessionExpired),
            ZkError::Unreachable { .. } | ZkError::Socket(_) => None,
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
pub struct Watch {
    observation: Observation,
    server: SocketAddr,
    children: bool,
    done: bool,
}

impl Watch {
    /// The next event; `None` after [`WatchEvent::Deleted`] or an error.
    pub async fn next(&mut self) -> Option<Result<WatchEvent, ZkError>> {
        if self.done {
            return None;
        }
        let item = self.observation.next().await?;
        let event = match item {
            Err(source) => {
                self.done = true;
                return Some(Err(ZkError::Unreachable {
                    addr: self.server,
                    source,
                }));
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
        if event.is_err() {
            self.done = true;
        }
        Some(event)
    }
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
    state: watch::Sender<SessionState>,
    /// `true` while the node is dormant ([`Client::sleep`]): the keepalive sends
    /// nothing and arms no timer until [`Client::wake`].
    paused: watch::Sender<bool>,
    /// Held while a heartbeat is out, so a routine heartbeat cannot land after the
    /// stretched one and shorten the lease again.
    beat: Mutex<()>,
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
    /// applied); a request that times out is not resent (it may have been applied: the
    /// caller decides), but the next request goes to the next member.
    pub async fn without_session_any(
        servers: &[SocketAddr],
        coap: Config,
        credentials: Option<&Credentials>,
    ) -> Result<Client, ZkError> {
        if servers.is_empty() {
            return Err(ZkError::Socket("no zookeeper address given".into()));
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
                .map_err(|e| ZkError::Socket(e.to_string()))?;
            }
            members.push((server, endpoint));
        }
        let (state, _) = watch::channel(SessionState::None);
        let (paused, _) = watch::channel(false);
        Ok(Client {
            inner: Arc::new(Inner {
                members,
                current: Default::default(),
                order: Mutex::new(()),
                session: None,
                state,
                paused,
                beat: Mutex::new(()),
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
            health: wire::NodeHealth::default(),
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
        let body = CreateRequest {
            data: data.to_vec(),
            ephemeral,
            sequential,
            session: self.inner.session,
        };
        let created: CreateResponse = self
            .call(cbor_request(Method::Post, &znode_uri(path), &body))
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
        let body = SetDataRequest {
            data: data.to_vec(),
            version,
            session: self.inner.session,
        };
        self.call(cbor_request(Method::Put, &znode_uri(path), &body))
            .await
    }

    /// Deletes a childless znode if it is at `version` (any version if `None`).
    pub async fn delete(&self, path: &str, version: Option<u32>) -> Result<(), ZkError> {
        check_path(path)?;
        let mut request = Request::delete(&znode_uri(path));
        if let Some(v) = version {
            request = request.with_option(option::IF_MATCH, version_tag(v));
        }
        self.call_empty(request).await
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
        let (server, endpoint) = self.inner.member();
        let observation = endpoint
            .handle()
            .observe(server, request)
            .await
            .map_err(|source| self.unreachable(source))?;
        Ok(Watch {
            observation,
            server,
            children,
            done: false,
        })
    }

    /// Applies all of `ops` or none; one result per op.
    pub async fn multi(&self, ops: Vec<MultiOp>) -> Result<Vec<MultiResult>, ZkError> {
        let body = MultiRequest {
            ops,
            session: self.inner.session,
        };
        let response: MultiResponse = self
            .call(cbor_request(Method::Post, "multi", &body))
            .await?;
        Ok(response.results)
    }

    /// Sends the admin's signed PEHRA mode change (`POST /pehra/mode`, see
    /// [`crate::admin::sign_mode_change`]). Refused with [`ErrorKind::Unauthorized`] when
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

    /// The address of the zookeeper (the ensemble member) requests go to now.
    pub fn server(&self) -> SocketAddr {
        self.inner.server()
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

    async fn send(&self, request: Request) -> Result<Response, ZkError> {
        let _order = self.inner.order.lock().await;
        self.inner
            .request(request)
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

/// How many times a request goes round the members while none takes it (no leader yet,
/// or none reachable), and the pause between rounds.
const ROUNDS: u32 = 40;
const ROUND_PAUSE: Duration = Duration::from_millis(250);

impl Inner {
    /// The member requests go to now, with its endpoint.
    fn member(&self) -> (SocketAddr, &Endpoint) {
        let i = self.current.load(std::sync::atomic::Ordering::Relaxed) % self.members.len();
        let (addr, endpoint) = &self.members[i];
        (*addr, endpoint)
    }

    fn server(&self) -> SocketAddr {
        self.member().0
    }

    /// Moves on to the next member.
    fn next_member(&self) {
        self.current
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Sends `request` to the current member; with an ensemble, on to the next member
    /// while the current one has nothing listening or is not the leader (neither applied
    /// it), pausing between rounds, until one takes it.
    async fn request(&self, request: Request) -> Result<Response, driver::Error> {
        let n = self.members.len();
        let mut round = 0;
        let mut tried = 0;
        loop {
            let (addr, endpoint) = self.member();
            let result = endpoint.handle().request(addr, request.clone()).await;
            let retry = n > 1
                && match &result {
                    Err(driver::Error::Refused { .. }) => true,
                    Ok(response) => {
                        !response.code().is_success()
                            && response_error(response).error == ErrorKind::NotLeader
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
            tried += 1;
            if tried % n == 0 {
                round += 1;
                if round >= ROUNDS {
                    return result;
                }
                tokio::time::sleep(ROUND_PAUSE).await;
            }
        }
    }
}

/// Heartbeats every `period` (a third of the timeout). The session is reported expired
/// when the zookeeper says so, or when no heartbeat got through for a whole timeout.
/// While paused ([`Client::sleep`]) it waits, with no timer, for the wake; the time
/// asleep does not count against the zookeeper.
async fn keepalive(inner: Arc<Inner>, session: u64, period: Duration) {
    let path = format!("session/{session}/hb");
    let mut paused = inner.paused.subscribe();
    let mut last_ok = tokio::time::Instant::now();
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = paused.wait_for(|p| *p) => {}
        }
        if *paused.borrow_and_update() {
            if paused.wait_for(|p| !*p).await.is_err() {
                return;
            }
            // Client::wake heartbeated just now.
            last_ok = tokio::time::Instant::now();
            ticker.reset();
            continue;
        }
        let result = {
            let _beat = inner.beat.lock().await;
            if *inner.paused.borrow() {
                continue;
            }
            inner.request(Request::post(&path)).await
        };
        match result {
            Ok(response)
                if response.code().is_success()
                    && wire::decode::<HeartbeatAck>(response.payload()).is_ok() =>
            {
                last_ok = tokio::time::Instant::now();
            }
            Ok(response) if response_error(&response).error == ErrorKind::SessionExpired => {
                inner.state.send_replace(SessionState::Expired);
                return;
            }
            _ if last_ok.elapsed() > period * 3 => {
                tracing::warn!(
                    session = format_args!("{session:#x}"),
                    "zookeeper unreachable for a whole session timeout"
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
