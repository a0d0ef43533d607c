//! The core task: one owner of the tree, the order of all requests, group commit, leases
//! and watches.

mod replication;

pub(crate) use self::replication::Replication;
use super::group_commit::GroupCommit;
use super::probe::{ProbeAction, ProbeConfig, Prober, Report};
use super::sessions::Leases;
use super::{AdminRequest, AdminRoute, LogRecord, ServerConfig, ServerError};
use crate::storage::{Room, Storage, StorageError};
use crate::tree::{Change, DataTree, Op, Outcome, RequestId, Seen, TreeError};
use pehra_shared::api::{cbor_response, error_response, version_tag};
use pehra_shared::coap::conditions::{ConditionFailed, Conditions, Current};
use pehra_shared::coap::{option, Code, Response};
use pehra_shared::driver::{Handle, Responder};
use pehra_shared::wire::{
    self, Children, CreateResponse, ErrorKind, HeartbeatAck, MultiResponse, MultiResult, NodeData,
    SessionOpened, SyncResponse,
};
use rand::{Rng, SeedableRng};
use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Disk space the log reserves ahead of its writes (see [`Storage::reserve`]).
const LOG_RESERVE: u64 = 8 << 20;
/// Of the reserved room, what only session closes and expiries may use: with the disk
/// full, sessions still end and their ephemerals go.
const CLOSE_HEADROOM: u64 = 256 << 10;
/// With the disk full, how often the log tries to reserve space again.
const FULL_RETRY: Duration = Duration::from_secs(1);
/// How long a member being stopped waits for its proposal in flight to commit before it
/// answers it "maybe applied" and stops (without a quorum it never would).
const STOP_COMMIT_WAIT: Duration = Duration::from_secs(2);

/// A request for the core, from a route.
pub(crate) enum Job {
    /// Read a znode's data and stat.
    GetData {
        /// Path.
        path: String,
        /// The read registers a watch (Observe).
        observe: bool,
        /// Where to answer.
        responder: Responder,
    },
    /// Read a znode's children.
    GetChildren {
        /// Path.
        path: String,
        /// The read registers a watch (Observe).
        observe: bool,
        /// Where to answer.
        responder: Responder,
    },
    /// Answer once every earlier write is durable, with the last zxid.
    Sync {
        /// Where to answer.
        responder: Responder,
    },
    /// Answer at once with this process's incarnation (a watch without a session asks,
    /// to notice a restart that took its observation).
    Incarnation {
        /// Where to answer.
        responder: Responder,
    },
    /// Open a session with this requested timeout.
    OpenSession {
        /// Requested timeout.
        timeout_ms: u32,
        /// Who asks (OSCORE identity), recorded as the session's owner.
        identity: Option<String>,
        /// Where it comes from (where a probe of the session pings until it heartbeats).
        peer: std::net::SocketAddr,
        /// Where to answer.
        responder: Responder,
    },
    /// Renew a session's lease.
    Heartbeat {
        /// The session.
        session: u64,
        /// Who asks: must be the session's owner.
        identity: Option<String>,
        /// Where it comes from (where a probe of the session pings).
        peer: std::net::SocketAddr,
        /// The node goes dormant for this long (PEHRA): stretch this one lease.
        sleep_ms: Option<u32>,
        /// The node's health, if it reports it: the session's adaptive lease.
        health: Option<pehra_shared::wire::NodeHealth>,
        /// Where to answer.
        responder: Responder,
    },
    /// A client got no answer from the node whose session owns the ephemeral znode
    /// `path`: probe it ([`super::probe`]).
    Suspect {
        /// The ephemeral znode.
        path: String,
        /// Where to answer (at once).
        responder: Responder,
    },
    /// Apply a change to the tree.
    Write {
        /// The change.
        op: Op,
        /// A session the request speaks for (renewed, and required to be alive).
        session: Option<u64>,
        /// Its number within that session: a retry of an applied one is answered with
        /// what it did, not applied again.
        request: Option<RequestId>,
        /// Who asks: must own the session the write speaks for or closes.
        identity: Option<String>,
        /// The broker id of who asks, if a broker: what it may change in the cluster
        /// state is checked ([`ServerConfig::broker_writes`]).
        broker: Option<u32>,
        /// If-Match / If-None-Match of the request, evaluated against the target znode
        /// (its ETag is its data version) in the same step as the write.
        conditions: Conditions,
        /// Where to answer.
        responder: Responder,
    },
    /// A signed administrative write ([`AdminRoute`]): its rule checks it on the tree as
    /// it stands and says what to write, in one step of the core.
    Admin {
        /// Which route, with its rule.
        route: AdminRoute,
        /// The request.
        request: pehra_shared::coap::Request,
        /// Where to answer.
        responder: Responder,
    },
    /// A session's lease ran out: close it (queued like a write, after earlier requests).
    Expire {
        /// The session.
        session: u64,
    },
    /// An event of the ensemble's Raft driver (see [`replication`]).
    Ensemble(crate::ensemble::messages::Event),
    /// Stop after the current batch.
    Shutdown,
}

/// Whether a write's log record fits the reserved disk space.
enum Fit {
    Yes,
    /// Not now: once the batch in flight is durable, more is reserved.
    Wait,
    /// Not while the disk is full.
    Full,
}

/// An answer held until its batch is durable.
struct Held {
    responder: Option<Responder>,
    response: Response,
}

/// Work for the log thread.
enum LogJob {
    Append(Vec<(u64, Vec<u8>)>),
    /// Snapshot this copy of the tree (taken when everything up to its zxid was
    /// durable). Encoded and written on a thread of its own.
    Snapshot(Box<DataTree>),
    /// The snapshot file at this zxid is written: take it into use.
    SnapshotWritten(u64),
    /// Rebuild the tree from the snapshot and the log (an ensemble member whose
    /// uncommitted batch is void).
    Reload(std::sync::mpsc::Sender<Result<DataTree, ServerError>>),
    /// Start over from another member's tree, encoded, at this zxid (an ensemble member
    /// that lost its data): written as a snapshot, the log continuing after it.
    Restart(
        u64,
        Vec<u8>,
        std::sync::mpsc::Sender<Result<(), StorageError>>,
    ),
}

pub(super) struct Core {
    config: ServerConfig,
    tree: DataTree,
    handle: Handle,
    jobs: mpsc::UnboundedReceiver<Job>,
    queue: VecDeque<Job>,
    leases: Leases,
    /// Probes of sessions whose nodes a client reported unanswering.
    prober: Prober,
    /// Sessions whose node answered a probe's ping (sent by the ping tasks).
    pong_tx: mpsc::UnboundedSender<u64>,
    pongs: mpsc::UnboundedReceiver<u64>,
    /// Sessions whose close is applied but maybe not yet durable, or expired: no
    /// heartbeat may revive them.
    closing: BTreeSet<u64>,
    rng: rand::rngs::StdRng,
    /// This process's incarnation, drawn at start and told to clients in session opens
    /// and heartbeat answers: watches (observations) do not survive a restart, and a
    /// client that sees a new incarnation registers its watches again.
    incarnation: u64,
    /// The batch being built: log records, held answers, changes to notify.
    records: Vec<(u64, Vec<u8>)>,
    held: Vec<Held>,
    changes: Vec<Change>,
    /// The batch being made durable.
    in_flight: Option<(Vec<Held>, Vec<Change>)>,
    /// When a batch goes to the disk (group commit), and when the one in flight went.
    commit: GroupCommit,
    flushed_at: Instant,
    log_tx: LogQueue,
    log_done: mpsc::UnboundedReceiver<Result<Room, StorageError>>,
    /// Bytes of records that can still be appended into reserved disk space.
    room: u64,
    /// Why the log could not reserve more space (the disk is full), if so: writes that do
    /// not fit the room are refused with this reason until space returns.
    full: Option<String>,
    /// Expiries that found no room: logged once space returns (the sessions stay closed
    /// meanwhile).
    stalled_expiries: Vec<u64>,
    /// With the disk full: when to try reserving space again.
    full_retry_at: Instant,
    /// A snapshot is being written (one at a time).
    snapshotting: Arc<AtomicBool>,
    log_bytes: u64,
    shutting_down: bool,
    /// Stopping with a proposal in flight: when to stop waiting for its commit.
    stop_by: Option<Instant>,
    /// Resources someone has observed: only these are notified (building the state of
    /// a big parent for nobody would cost more than the write).
    watched: BTreeSet<String>,
    /// In an ensemble: proposing, applying committed entries, the role.
    replication: Option<Replication>,
}

impl Core {
    pub(super) fn new(
        config: ServerConfig,
        tree: DataTree,
        mut storage: Storage,
        handle: Handle,
        jobs: mpsc::UnboundedReceiver<Job>,
        replication: Option<Replication>,
    ) -> Core {
        let room = storage.reserve(LOG_RESERVE);
        if let Some(why) = &room.full {
            tracing::error!("zookeeper storage full: {why}; refusing writes until space returns");
        }
        let (done_tx, log_done) = mpsc::unbounded_channel();
        let snapshotting = Arc::new(AtomicBool::new(false));
        let log_tx = LogQueue::start(storage, done_tx, snapshotting.clone());
        let mut leases = Leases::default();
        let now = Instant::now();
        // In an ensemble, leases start when this member becomes the leader.
        let sessions = if replication.is_none() {
            tree.sessions().iter().collect()
        } else {
            Vec::new()
        };
        for (session, state) in sessions {
            leases.renew(
                *session,
                now,
                Duration::from_millis(u64::from(state.timeout_ms)),
            );
        }
        let seed = pehra_shared::driver::socket::seed32().expect("OS randomness");
        let mut rng = rand::rngs::StdRng::from_seed(seed);
        let incarnation = rng.next_u64();
        let (pong_tx, pongs) = mpsc::unbounded_channel();
        Core {
            config,
            tree,
            handle,
            jobs,
            queue: VecDeque::new(),
            leases,
            prober: Prober::new(ProbeConfig::default()),
            pong_tx,
            pongs,
            closing: BTreeSet::new(),
            rng,
            incarnation,
            records: Vec::new(),
            held: Vec::new(),
            changes: Vec::new(),
            in_flight: None,
            commit: GroupCommit::default(),
            flushed_at: Instant::now(),
            log_tx,
            log_done,
            room: room.bytes,
            full: room.full,
            stalled_expiries: Vec::new(),
            full_retry_at: Instant::now() + FULL_RETRY,
            snapshotting,
            log_bytes: 0,
            shutting_down: false,
            stop_by: None,
            watched: BTreeSet::new(),
            replication,
        }
    }

    pub(super) async fn run(mut self) -> Result<(), ServerError> {
        loop {
            self.apply_committed();
            self.report_durable();
            self.install_snapshot();
            self.offer_snapshot();
            self.process_queue();
            self.run_probes();
            self.flush_batch();
            self.update_gauges();
            if self.shutting_down {
                if self.in_flight.is_none() && self.records.is_empty() {
                    return Ok(());
                }
                if self.awaiting_commit() {
                    // The commit comes as an ensemble event (a job): keep taking those,
                    // for a while.
                    let by = *self
                        .stop_by
                        .get_or_insert_with(|| Instant::now() + STOP_COMMIT_WAIT);
                    if Instant::now() >= by {
                        self.abandon_proposal();
                        return Ok(());
                    }
                }
            }
            let expiry = self.leases.poll_timeout();
            tokio::select! {
                job = self.jobs.recv(), if !self.shutting_down || self.awaiting_commit() => match job {
                    Some(job) => {
                        self.accept(job);
                        while let Ok(job) = self.jobs.try_recv() {
                            self.accept(job);
                        }
                    }
                    None => self.shutting_down = true,
                },
                done = self.log_done.recv(), if self.in_flight.is_some() => match done {
                    Some(Ok(room)) => {
                        self.set_room(room);
                        self.on_durable();
                    }
                    Some(Err(e)) => return Err(self.fail(e)),
                    None => return Err(ServerError::LogThreadGone),
                },
                _ = sleep_until(expiry), if expiry.is_some() => self.expire_sessions(),
                _ = sleep_until(self.prober.poll_timeout()), if self.prober.poll_timeout().is_some() => {
                    self.prober.handle_timeout(Instant::now());
                    // An expiry goes on the queue, which the loop's top runs next (after
                    // `process_queue`, it would wait for the next job to come).
                    self.run_probes();
                }
                Some(session) = self.pongs.recv() => {
                    if self.prober.handle_alive(Instant::now(), session) {
                        self.config.metrics.probes_answered.inc();
                    }
                }
                _ = sleep_until(self.stop_by), if self.stop_by.is_some() => {}
                // A batch waiting for more writes goes now (flush_batch, at the top).
                _ = sleep_until(self.commit.deadline()),
                    if self.in_flight.is_none() && self.commit.deadline().is_some() => {}
                _ = tokio::time::sleep_until(self.full_retry_at),
                    if self.full.is_some() && self.in_flight.is_none() && self.held.is_empty() =>
                {
                    self.full_retry_at = Instant::now() + FULL_RETRY;
                    // An empty batch: the log thread tries to reserve space again.
                    if self.log_tx.send(LogJob::Append(Vec::new())).is_ok() {
                        self.in_flight = Some((Vec::new(), Vec::new()));
                    }
                }
            }
        }
    }

    /// The gauges of the metrics, from the tree (cheap: lengths and a number).
    fn update_gauges(&self) {
        let m = &self.config.metrics;
        m.sessions.set(self.tree.sessions().len() as i64);
        m.znodes.set(self.tree.node_count() as i64);
        m.watches.set(self.watched.len() as i64);
        m.zxid.set(self.tree.last_zxid() as i64);
        m.wal_bytes_since_snapshot.set(self.log_bytes as i64);
    }

    fn accept(&mut self, job: Job) {
        match job {
            Job::Shutdown => self.shutting_down = true,
            Job::Ensemble(event) => self.on_ensemble(event),
            Job::Incarnation { responder } => {
                responder.respond(cbor_response(Code::CONTENT, &self.incarnation));
            }
            // Stopping (and only waiting for a commit): nothing new is taken; its asker
            // hears nothing and tries another member.
            _ if self.shutting_down => {}
            job => self.queue.push_back(job),
        }
    }

    /// Takes jobs in order: reads and heartbeats are answered while nothing is waiting
    /// for the disk; writes join the batch. Stops at a read that would see writes not
    /// yet durable.
    fn process_queue(&mut self) {
        if self.in_flight.is_some() {
            return;
        }
        while let Some(job) = self.queue.front() {
            let is_write = matches!(
                job,
                Job::Write { .. }
                    | Job::OpenSession { .. }
                    | Job::Expire { .. }
                    | Job::Admin { .. }
            );
            let batch_open = !self.held.is_empty();
            if !is_write && batch_open {
                return;
            }
            if is_write {
                match self.fits(job) {
                    Fit::Yes => {}
                    // The batch's sync reserves more: wait for it.
                    Fit::Wait if batch_open => return,
                    Fit::Wait | Fit::Full => {
                        let job = self.queue.pop_front().expect("front exists");
                        self.refuse_for_space(job);
                        continue;
                    }
                }
            }
            let job = self.queue.pop_front().expect("front exists");
            let Some(job) = self.refuse_unless_leader(job) else {
                continue;
            };
            self.config.metrics.request(job_kind(&job));
            match job {
                Job::GetData {
                    path,
                    observe,
                    responder,
                } => {
                    if observe {
                        self.watched.insert(resource_key(&path, false));
                    }
                    responder.respond(self.get_data(&path))
                }
                Job::GetChildren {
                    path,
                    observe,
                    responder,
                } => {
                    if observe {
                        self.watched.insert(resource_key(&path, true));
                    }
                    responder.respond(self.get_children(&path))
                }
                Job::Incarnation { responder } => {
                    responder.respond(cbor_response(Code::CONTENT, &self.incarnation));
                }
                Job::Sync { responder } => responder.respond(cbor_response(
                    Code::CONTENT,
                    &SyncResponse {
                        zxid: self.tree.last_zxid(),
                    },
                )),
                Job::Heartbeat {
                    session,
                    identity,
                    peer,
                    sleep_ms,
                    health,
                    responder,
                } => responder.respond(match self.not_owner(session, identity.as_deref()) {
                    Some(refusal) => refusal,
                    None => {
                        let answer = self.heartbeat(session, sleep_ms, health);
                        if answer.code().is_success() {
                            self.leases.heard(session, peer);
                            if self.prober.handle_alive(Instant::now(), session) {
                                self.config.metrics.probes_answered.inc();
                            }
                        }
                        answer
                    }
                }),
                Job::Suspect { path, responder } => responder.respond(self.suspect(&path)),
                Job::OpenSession {
                    timeout_ms,
                    identity,
                    peer,
                    responder,
                } => self.open_session(timeout_ms, identity, peer, responder),
                Job::Write {
                    op,
                    session,
                    request,
                    identity,
                    broker,
                    conditions,
                    responder,
                } => {
                    let speaks_for = match op {
                        Op::CloseSession { session } => Some(session),
                        _ => session.or(op.session()),
                    };
                    let refusal = speaks_for
                        .and_then(|s| self.not_owner(s, identity.as_deref()))
                        .or_else(|| self.already_applied(request))
                        .or_else(|| broker.and_then(|b| self.broker_may_not(b, &op)))
                        .or_else(|| self.condition_failed(&op, &conditions));
                    match refusal {
                        Some(refusal) => self.hold(Some(responder), refusal),
                        None => self.write(op, session, request, Some(responder)),
                    }
                }
                Job::Expire { session } => {
                    self.prober.forget(session);
                    self.config.metrics.expired_sessions.inc();
                    self.write(Op::CloseSession { session }, None, None, None)
                }
                Job::Admin {
                    route,
                    request,
                    responder,
                } => self.admin(route, &request, responder),
                Job::Ensemble(event) => self.on_ensemble(event),
                Job::Shutdown => self.shutting_down = true,
            }
        }
    }

    /// Whether a write job's log record fits the reserved room (estimated before it is
    /// applied, so a refusal changes nothing). Session closes and expiries may use the
    /// headroom the others leave.
    fn fits(&self, job: &Job) -> Fit {
        if self.room == u64::MAX {
            return Fit::Yes;
        }
        let record = |op: &Op| super::log_record::bound(op) + 16;
        let (need, closes) = match job {
            Job::Write { op, .. } => (record(op), matches!(op, Op::CloseSession { .. })),
            Job::Expire { session } => (record(&Op::CloseSession { session: *session }), true),
            Job::OpenSession { identity, .. } => (
                record(&Op::CreateSession {
                    session: u64::MAX,
                    timeout_ms: u32::MAX,
                    owner: identity.clone(),
                }),
                false,
            ),
            Job::Admin { .. } => (4096, false),
            _ => return Fit::Yes,
        };
        let headroom = if closes { 0 } else { CLOSE_HEADROOM };
        if need.saturating_add(headroom) <= self.room {
            Fit::Yes
        } else if self.full.is_none() && need > LOG_RESERVE {
            // Larger than any reservation: written unreserved, as before.
            Fit::Yes
        } else if self.full.is_none() {
            Fit::Wait
        } else {
            Fit::Full
        }
    }

    /// Answers a write that does not fit the room with the disk full: 5.03 with the
    /// reason; an expiry waits for space (its session stays closed meanwhile).
    fn refuse_for_space(&mut self, job: Job) {
        let why = self
            .full
            .clone()
            .unwrap_or_else(|| "no disk space reserved".into());
        let refusal = || {
            error_response(
                ErrorKind::Busy,
                &format!(
                    "zookeeper storage full: {why}; writes are refused until space is freed \
                     (reads and sessions go on)"
                ),
            )
        };
        match job {
            Job::Write { responder, .. }
            | Job::OpenSession { responder, .. }
            | Job::Admin { responder, .. } => self.hold(Some(responder), refusal()),
            Job::Expire { session } => self.stalled_expiries.push(session),
            _ => {}
        }
    }

    /// Takes the log's report of its reserved room.
    fn set_room(&mut self, room: Room) {
        match (&self.full, &room.full) {
            (None, Some(why)) => tracing::error!(
                "zookeeper storage full: {why}; refusing writes until space returns (reads and \
                 sessions go on)"
            ),
            (Some(_), None) => {
                tracing::info!("zookeeper storage has space again: writes are taken")
            }
            _ => {}
        }
        if self.full.is_none() && room.full.is_some() {
            self.full_retry_at = Instant::now() + FULL_RETRY;
        }
        self.room = room.bytes;
        self.full = room.full;
        if self.room > CLOSE_HEADROOM && !self.stalled_expiries.is_empty() {
            for session in std::mem::take(&mut self.stalled_expiries) {
                self.queue.push_back(Job::Expire { session });
            }
        }
    }

    fn get_data(&self, path: &str) -> Response {
        if let Err(e) = crate::path::validate(path) {
            return error_response(ErrorKind::Malformed, &e.to_string());
        }
        match self.tree.get(path) {
            Some((data, stat)) => node_data_response(data, stat),
            None => error_response(ErrorKind::NotFound, &format!("no node: {path}")),
        }
    }

    fn get_children(&self, path: &str) -> Response {
        if let Err(e) = crate::path::validate(path) {
            return error_response(ErrorKind::Malformed, &e.to_string());
        }
        match self.tree.children(path) {
            Some((children, stat)) => cbor_response(
                Code::CONTENT,
                &Children {
                    children,
                    stat: *stat,
                },
            ),
            None => error_response(ErrorKind::NotFound, &format!("no node: {path}")),
        }
    }

    /// The timeout of a live session; `None` if it is closed, closing, or its lease has
    /// run out (then its expiry is queued now).
    fn session_timeout(&mut self, session: u64) -> Option<Duration> {
        if self.closing.contains(&session) {
            return None;
        }
        if self.leases.has_lapsed(session, Instant::now()) {
            self.leases.remove(session);
            self.closing.insert(session);
            self.queue.push_back(Job::Expire { session });
            return None;
        }
        self.tree
            .sessions()
            .get(&session)
            .map(|s| Duration::from_millis(u64::from(s.timeout_ms)))
    }

    /// Renews a session's lease for its timeout (or, if its node reports its health,
    /// its adaptive lease: [`super::sessions`]), stretched by the node's announced sleep
    /// (capped by `max_sleep`) if it goes dormant.
    fn heartbeat(
        &mut self,
        session: u64,
        sleep_ms: Option<u32>,
        health: Option<pehra_shared::wire::NodeHealth>,
    ) -> Response {
        match self.session_timeout(session) {
            Some(timeout) => {
                let sleep = sleep_ms
                    .map(|ms| Duration::from_millis(u64::from(ms)).min(self.config.max_sleep))
                    .unwrap_or_default();
                let renewal = match &health {
                    Some(health) => {
                        self.leases
                            .adapt(session, timeout, health, &self.config.session_lease)
                    }
                    None => self.leases.lease_for(session, timeout),
                };
                let lease = renewal + sleep;
                self.leases.renew(session, Instant::now(), lease);
                self.config.metrics.lease_granted(lease, !sleep.is_zero());
                if !sleep.is_zero() {
                    tracing::debug!(
                        session,
                        sleep_ms = sleep.as_millis() as u64,
                        "lease stretched for a dormant node"
                    );
                }
                cbor_response(
                    Code::CHANGED,
                    &HeartbeatAck {
                        lease_ms: u32::try_from(lease.as_millis()).unwrap_or(u32::MAX),
                        directives: Vec::new(),
                        incarnation: Some(self.incarnation),
                    },
                )
            }
            None => session_expired(session),
        }
    }

    /// The refusal (4.12) if the request's conditions do not hold for the znode `op`
    /// writes: its ETag is its data version. Evaluated in the step that applies the
    /// write, so no other write comes between. A request without a znode (a multi, a
    /// session) targets a resource that exists and has no ETag.
    fn condition_failed(&self, op: &Op, conditions: &Conditions) -> Option<Response> {
        if conditions.is_empty() {
            return None;
        }
        let path = match op {
            Op::Create { path, .. } | Op::SetData { path, .. } | Op::Delete { path, .. } => {
                Some(path.as_str())
            }
            _ => None,
        };
        let stat = path.and_then(|p| self.tree.get(p)).map(|(_, stat)| *stat);
        let tag = stat.map(|s| version_tag(s.version));
        let current = match (path, &tag) {
            (Some(_), None) => Current::Absent,
            (Some(_), Some(tag)) => Current::Present(Some(tag)),
            (None, _) => Current::Present(None),
        };
        let failed = conditions.check(current).err()?;
        let message = match (failed, path, stat) {
            (ConditionFailed::IfMatch, Some(p), Some(stat)) => {
                format!("version mismatch: {p} is at {} (If-Match)", stat.version)
            }
            (_, Some(p), None) => format!("precondition failed: {failed}; {p} does not exist"),
            (_, Some(p), Some(_)) => format!("precondition failed: {failed}; {p} exists"),
            (_, None, _) => format!("precondition failed: {failed}; this resource has no ETag"),
        };
        Some(error_response(ErrorKind::VersionMismatch, &message))
    }

    /// The refusal (4.03) if `session` belongs to another identity than `identity`. A
    /// session id is not a capability: it is public (the owner of every ephemeral
    /// znode), so only the identity that opened a session may renew, close or use it.
    fn not_owner(&self, session: u64, identity: Option<&str>) -> Option<Response> {
        let owner = self.tree.sessions().get(&session)?.owner.as_deref()?;
        if identity == Some(owner) {
            return None;
        }
        tracing::warn!(
            session,
            owner,
            caller = identity.unwrap_or("(unauthenticated)"),
            "refused: a session used by another identity than its owner"
        );
        Some(error_response(
            ErrorKind::Forbidden,
            &format!(
                "session 0x{session:x} belongs to {owner}, not to {}",
                identity.unwrap_or("an unauthenticated caller")
            ),
        ))
    }

    fn open_session(
        &mut self,
        timeout_ms: u32,
        owner: Option<String>,
        peer: std::net::SocketAddr,
        responder: Responder,
    ) {
        let timeout = Duration::from_millis(u64::from(timeout_ms)).clamp(
            self.config.min_session_timeout,
            self.config.max_session_timeout,
        );
        let timeout_ms = timeout.as_millis() as u32;
        let session = loop {
            let id = self.rng.next_u64() >> 1;
            if id != 0 && !self.tree.sessions().contains_key(&id) {
                break id;
            }
        };
        self.leases.renew(session, Instant::now(), timeout);
        self.leases.heard(session, peer);
        let op = Op::CreateSession {
            session,
            timeout_ms,
            owner,
        };
        let (zxid, time_ms) = (self.tree.last_zxid() + 1, now_ms());
        match self.tree.apply(zxid, time_ms, &op) {
            Ok(_) => {
                self.log(zxid, time_ms, &op);
                let response = cbor_response(
                    Code::CREATED,
                    &SessionOpened {
                        session,
                        timeout_ms,
                        incarnation: Some(self.incarnation),
                    },
                );
                self.hold(Some(responder), response);
            }
            Err(e) => self.hold(Some(responder), tree_error_response(&e)),
        }
    }

    /// The answer to a numbered request its session already had applied (a retry whose
    /// first answer was lost: the zookeeper restarted, or the client moved to another
    /// member): what the first one did, and nothing applied again. A number below the
    /// session's last is refused (4.00): the client has moved past it, so it is a stale
    /// or replayed datagram. Checked before the conditions: a retried compare-and-set
    /// that succeeded must not be answered "version mismatch".
    fn already_applied(&self, request: Option<RequestId>) -> Option<Response> {
        let request = request?;
        match self.tree.seen(request) {
            Seen::New => None,
            Seen::Applied(outcome) => {
                tracing::debug!(
                    session = request.session,
                    number = request.number,
                    "a retried request answered from the session's last one"
                );
                self.config.metrics.request("retry_answered");
                Some(outcome_response(outcome))
            }
            Seen::Stale { last } => Some(error_response(
                ErrorKind::Malformed,
                &format!(
                    "request {} of session 0x{:x} is older than its last applied one ({last}): a stale retry",
                    request.number, request.session
                ),
            )),
        }
    }

    /// The refusal (4.03) if broker `broker` may not make this change to the cluster state
    /// ([`ServerConfig::broker_writes`]), judged on the tree as it stands in this step.
    fn broker_may_not(&self, broker: u32, op: &Op) -> Option<Response> {
        let rule = self.config.broker_writes?;
        let sets: Vec<(&str, &[u8])> = match op {
            Op::SetData { path, data, .. } => vec![(path.as_str(), data.as_slice())],
            Op::Multi { ops } => ops
                .iter()
                .filter_map(|op| match op {
                    Op::SetData { path, data, .. } => Some((path.as_str(), data.as_slice())),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        for (path, data) in sets {
            let current = self.tree.get(path).map(|(d, _)| d);
            if let Err(why) = rule(broker, path, current, data) {
                tracing::warn!(broker, path, reason = %why, "refused: a broker's write to the cluster state");
                return Some(error_response(ErrorKind::Forbidden, &why));
            }
        }
        None
    }

    /// Applies a write and adds it to the batch (its answer waits for the disk, a
    /// refusal too, so answers keep the order of the requests).
    fn write(
        &mut self,
        op: Op,
        session: Option<u64>,
        request: Option<RequestId>,
        responder: Option<Responder>,
    ) {
        if let Some(session) = session.or(op.session()) {
            match self.session_timeout(session) {
                Some(timeout) => {
                    let lease = self.leases.lease_for(session, timeout);
                    self.leases.extend(session, Instant::now(), lease)
                }
                None => return self.hold(responder, session_expired(session)),
            }
        }
        if let Op::CloseSession { session } = op {
            self.closing.insert(session);
            self.leases.remove(session);
            self.prober.forget(session);
        }
        let (zxid, time_ms) = (self.tree.last_zxid() + 1, now_ms());
        let response = match self.tree.apply_request(zxid, time_ms, &op, request) {
            Ok((outcome, changes)) => {
                self.log_request(zxid, time_ms, &op, request);
                self.changes.extend(changes);
                outcome_response(&outcome)
            }
            Err(e) => tree_error_response(&e),
        };
        self.hold(responder, response);
    }

    /// Runs an admin route's rule on the tree as it stands and applies what it writes
    /// through the ordinary write path, all in this one step, so no other write comes
    /// between the check and the write.
    fn admin(
        &mut self,
        route: AdminRoute,
        request: &pehra_shared::coap::Request,
        responder: Responder,
    ) {
        let judged = (route.rule)(&AdminRequest {
            key: self.config.admin_key.as_deref(),
            request,
            now_ms: now_ms(),
            tree: &self.tree,
        });
        let write = match judged {
            Ok(write) => write,
            Err(refusal) => {
                tracing::warn!(route = route.path, code = %refusal.code(), "admin write refused");
                return self.hold(Some(responder), refusal);
            }
        };
        let op = Op::Multi { ops: write.ops };
        let (zxid, time_ms) = (self.tree.last_zxid() + 1, now_ms());
        let response = match self.tree.apply(zxid, time_ms, &op) {
            Ok((_, changes)) => {
                self.log(zxid, time_ms, &op);
                self.changes.extend(changes);
                tracing::info!(route = route.path, "{}", write.done);
                Response::new(Code::CHANGED)
            }
            Err(e) => tree_error_response(&e),
        };
        self.hold(Some(responder), response);
    }

    fn log(&mut self, zxid: u64, time_ms: u64, op: &Op) {
        self.log_request(zxid, time_ms, op, None)
    }

    fn log_request(&mut self, zxid: u64, time_ms: u64, op: &Op, request: Option<RequestId>) {
        let bytes = LogRecord {
            time_ms,
            op,
            request,
        }
        .encode();
        self.log_bytes += bytes.len() as u64;
        if self.room != u64::MAX {
            self.room = self.room.saturating_sub(bytes.len() as u64 + 16);
        }
        self.config.metrics.wal_bytes.inc_by(bytes.len() as u64);
        self.records.push((zxid, bytes));
    }

    fn hold(&mut self, responder: Option<Responder>, response: Response) {
        self.held.push(Held {
            responder,
            response,
        });
    }

    /// Sends the batch to the log thread, or answers it at once if nothing in it needs
    /// the disk (only refusals).
    fn flush_batch(&mut self) {
        if self.in_flight.is_some() || self.held.is_empty() {
            return;
        }
        if !self.records.is_empty()
            && !self.shutting_down
            && !self.commit.flush_now(Instant::now(), self.held.len())
        {
            return; // waits for more writes, until commit.deadline()
        }
        let held = std::mem::take(&mut self.held);
        let changes = std::mem::take(&mut self.changes);
        if self.records.is_empty() {
            answer(held);
            return;
        }
        if self.propose() {
            // Answered once committed (see `replication`).
            self.in_flight = Some((held, changes));
            return;
        }
        let records = std::mem::take(&mut self.records);
        if self.log_tx.send(LogJob::Append(records)).is_err() {
            tracing::error!("the log thread is gone");
        }
        self.flushed_at = Instant::now();
        self.in_flight = Some((held, changes));
    }

    /// The batch is on disk: answer it, then tell the watchers (in that order, through
    /// the same endpoint, so an observer registered by an answer sees the change).
    fn on_durable(&mut self) {
        let Some((held, changes)) = self.in_flight.take() else {
            return;
        };
        self.commit
            .on_durable(held.len(), self.flushed_at.elapsed());
        answer(held);
        self.notify(changes);
        // Nothing is applied while a batch is in flight, so the tree is exactly what is
        // on disk: a snapshot of it is never ahead of the log.
        debug_assert!(self.records.is_empty());
        if self.log_bytes >= self.config.snapshot_after_bytes
            && !self.snapshotting.swap(true, Ordering::AcqRel)
        {
            // A copy of the tree is all the core pays; encoding and writing happen on a
            // snapshot thread while the core and the log go on.
            let _ = self
                .log_tx
                .send(LogJob::Snapshot(Box::new(self.tree.clone())));
            self.log_bytes = 0;
        }
    }

    /// Notifies each touched znode's data observers and each touched parent's children
    /// observers once per batch, with the state now on disk.
    fn notify(&mut self, changes: Vec<Change>) {
        let mut data_paths = BTreeSet::new();
        let mut child_paths = BTreeSet::new();
        for change in changes {
            match change {
                Change::Created(p) | Change::DataChanged(p) => {
                    data_paths.insert(p);
                }
                Change::Deleted(p) => {
                    data_paths.insert(p.clone());
                    child_paths.insert(p);
                }
                Change::ChildrenChanged(p) => {
                    child_paths.insert(p);
                }
            }
        }
        for (paths, children) in [(data_paths, false), (child_paths, true)] {
            for path in paths {
                let key = resource_key(&path, children);
                if !self.watched.contains(&key) {
                    continue;
                }
                let state = if children {
                    self.get_children(&path)
                } else {
                    self.get_data(&path)
                };
                if !state.code().is_success() {
                    // Deleted: the 4.04 ends every observation of it.
                    self.watched.remove(&key);
                }
                self.handle.notify_detached(&key, state);
            }
        }
    }

    /// A client reports the node owning the ephemeral znode `path` unanswering: probe
    /// its session (2.04 at once; 4.04 no such znode, 4.00 not an ephemeral one).
    fn suspect(&mut self, path: &str) -> Response {
        let Some((_, stat)) = self.tree.get(path) else {
            return error_response(ErrorKind::NotFound, &format!("no node: {path}"));
        };
        let Some(session) = stat.ephemeral_owner else {
            return error_response(
                ErrorKind::Malformed,
                &format!("{path} is not an ephemeral znode: no session to probe"),
            );
        };
        // A session with no address yet, or ending: its lease decides alone.
        let addr = self
            .leases
            .address(session)
            .filter(|_| !self.closing.contains(&session));
        let report = addr.map(|addr| self.prober.handle_suspect(Instant::now(), session, addr));
        if report == Some(Report::Probing) {
            tracing::info!(
                session = format_args!("{session:#x}"),
                path,
                "probing a node reported unanswering"
            );
        }
        Response::new(Code::CHANGED)
    }

    /// Carries out the prober's actions: pings (each in a task of its own, reporting an
    /// answer back) and expiries of sessions whose node answered none.
    fn run_probes(&mut self) {
        while let Some(action) = self.prober.poll_action() {
            match action {
                ProbeAction::Ping { session, addr } => {
                    let (handle, pongs) = (self.handle.clone(), self.pong_tx.clone());
                    let wait = self.prober.window();
                    tokio::spawn(async move {
                        if let Ok(Ok(())) = tokio::time::timeout(wait, handle.ping(addr)).await {
                            let _ = pongs.send(session);
                        }
                    });
                }
                ProbeAction::Expire { session } => {
                    if self.tree.sessions().contains_key(&session)
                        && !self.closing.contains(&session)
                    {
                        tracing::info!(
                            session = format_args!("{session:#x}"),
                            "session expired: its node answered no probe"
                        );
                        self.config.metrics.probe_expiries.inc();
                        self.leases.remove(session);
                        self.closing.insert(session);
                        self.queue.push_back(Job::Expire { session });
                    }
                }
            }
        }
    }

    fn expire_sessions(&mut self) {
        for session in self.leases.expire(Instant::now()) {
            if self.tree.sessions().contains_key(&session) && !self.closing.contains(&session) {
                tracing::info!(session = format_args!("{session:#x}"), "session expired");
                // Expiry goes through the queue like any write, after what arrived before.
                self.closing.insert(session);
                self.queue.push_back(Job::Expire { session });
            }
        }
    }

    fn fail(&mut self, error: StorageError) -> ServerError {
        tracing::error!(error = %error, "storage failed: the zookeeper stops");
        if let Some((held, _)) = self.in_flight.take() {
            for h in held {
                if let Some(r) = h.responder {
                    r.respond(error_response(
                        ErrorKind::Internal,
                        "storage failure: not stored",
                    ));
                }
            }
        }
        ServerError::Storage(error)
    }
}

fn answer(held: Vec<Held>) {
    for h in held {
        if let Some(r) = h.responder {
            r.respond(h.response);
        }
    }
}

/// Where the core's log jobs go: the log thread, or, in a simulation
/// ([`pehra_shared::driver::blocking::is_inline`]), a worker that does each job at once
/// (its results come back through the same channel, so the core cannot tell).
enum LogQueue {
    /// A thread of its own (`zk-log`): appends and fsyncs never stall the core.
    Thread(std::sync::mpsc::Sender<LogJob>),
    /// Each job done when it is sent; `None` once the worker stopped (a failed write).
    Inline(Option<Box<LogWorker>>),
}

impl LogQueue {
    fn start(
        storage: Storage,
        done: mpsc::UnboundedSender<Result<Room, StorageError>>,
        snapshotting: Arc<AtomicBool>,
    ) -> LogQueue {
        if pehra_shared::driver::blocking::is_inline() {
            return LogQueue::Inline(Some(Box::new(LogWorker {
                storage,
                own: None,
                done,
                snapshotting,
            })));
        }
        let (tx, jobs) = std::sync::mpsc::channel();
        let mut worker = LogWorker {
            storage,
            own: Some(tx.clone()),
            done,
            snapshotting,
        };
        std::thread::Builder::new()
            .name("zk-log".into())
            .spawn(move || {
                for job in jobs {
                    if !worker.handle(job) {
                        return;
                    }
                }
            })
            .expect("spawn the log thread");
        LogQueue::Thread(tx)
    }

    /// Hands `job` over; `Err` once the worker has stopped.
    fn send(&mut self, job: LogJob) -> Result<(), LogGone> {
        match self {
            LogQueue::Thread(tx) => tx.send(job).map_err(|_| LogGone),
            LogQueue::Inline(worker) => {
                let running = worker.as_mut().ok_or(LogGone)?;
                if !running.handle(job) {
                    *worker = None;
                }
                Ok(())
            }
        }
    }
}

/// The log worker stopped (its storage failed).
#[derive(Debug)]
struct LogGone;

/// The write-ahead log's worker: appends and syncs batches, takes snapshots into use,
/// reloads the tree.
struct LogWorker {
    storage: Storage,
    /// Its own queue, for a snapshot thread to report back on (`None`: inline, the
    /// snapshot is written at once).
    own: Option<std::sync::mpsc::Sender<LogJob>>,
    done: mpsc::UnboundedSender<Result<Room, StorageError>>,
    snapshotting: Arc<AtomicBool>,
}

impl LogWorker {
    /// Does one job; `false` if the worker must stop.
    fn handle(&mut self, job: LogJob) -> bool {
        let storage = &mut self.storage;
        match job {
            LogJob::Append(records) => {
                let result = records
                    .iter()
                    .try_for_each(|(zxid, bytes)| storage.append(*zxid, bytes))
                    .and_then(|()| storage.sync())
                    .map(|()| storage.reserve(LOG_RESERVE));
                let failed = result.is_err();
                if self.done.send(result).is_err() || failed {
                    return false;
                }
            }
            LogJob::Snapshot(tree) => {
                let writer = storage.snapshot_writer();
                let write = move || {
                    let zxid = tree.last_zxid();
                    wire::encode(&*tree)
                        .map_err(|e| e.to_string())
                        .and_then(|bytes| writer.write(zxid, &bytes).map_err(|e| e.to_string()))
                        .map(|()| zxid)
                };
                let Some(own) = self.own.clone() else {
                    return match write() {
                        Ok(zxid) => self.handle(LogJob::SnapshotWritten(zxid)),
                        Err(e) => {
                            tracing::error!(error = %e, "snapshot failed; the log keeps everything");
                            self.snapshotting.store(false, Ordering::Release);
                            true
                        }
                    };
                };
                let flag = self.snapshotting.clone();
                let spawned = std::thread::Builder::new()
                    .name("zk-snapshot".into())
                    .spawn(move || match write() {
                        Ok(zxid) => {
                            let _ = own.send(LogJob::SnapshotWritten(zxid));
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "snapshot failed; the log keeps everything");
                            flag.store(false, Ordering::Release);
                        }
                    });
                if spawned.is_err() {
                    self.snapshotting.store(false, Ordering::Release);
                }
            }
            LogJob::Reload(reply) => {
                let dir = storage.dir().to_path_buf();
                // The log is synced after every batch: nothing buffered is lost here.
                let reloaded = super::recover(&dir, &Default::default());
                let _ = reply.send(reloaded.map(|(reopened, tree, _)| {
                    *storage = reopened;
                    tree
                }));
            }
            LogJob::Restart(zxid, tree, reply) => {
                let restarted = storage
                    .restart_from_snapshot(zxid, &tree)
                    .map(|()| drop(storage.reserve(LOG_RESERVE)));
                let _ = reply.send(restarted);
            }
            LogJob::SnapshotWritten(zxid) => {
                if let Err(e) = storage.install_snapshot(zxid) {
                    tracing::error!(error = %e, "cannot take the snapshot into use; the log keeps everything");
                }
                // The next records go to a new segment: reserve its space now.
                if let Some(why) = storage.reserve(LOG_RESERVE).full {
                    tracing::error!("zookeeper storage full after a snapshot: {why}");
                }
                self.snapshotting.store(false, Ordering::Release);
            }
        }
        true
    }
}

/// The Observe resource key of a znode's data (`z/a/b`) or children (`z/a/b?children`).
fn resource_key(path: &str, children: bool) -> String {
    if children {
        crate::uri::children_uri(path)
    } else {
        crate::uri::znode_uri(path)
    }
}

fn node_data_response(data: &[u8], stat: &pehra_shared::wire::Stat) -> Response {
    cbor_response(
        Code::CONTENT,
        &NodeData {
            data: data.to_vec(),
            stat: *stat,
        },
    )
    .with_option(option::ETAG, version_tag(stat.version))
}

fn outcome_response(outcome: &Outcome) -> Response {
    match outcome {
        Outcome::Created { path, stat } => {
            let mut response = cbor_response(
                Code::CREATED,
                &CreateResponse {
                    path: path.clone(),
                    stat: *stat,
                },
            );
            response.add_option(option::LOCATION_PATH, b"z".to_vec());
            for segment in path.split('/').filter(|s| !s.is_empty()) {
                response.add_option(option::LOCATION_PATH, segment.as_bytes().to_vec());
            }
            response
        }
        Outcome::DataSet { stat } => {
            cbor_response(Code::CHANGED, stat).with_option(option::ETAG, version_tag(stat.version))
        }
        Outcome::Deleted | Outcome::SessionClosed { .. } => Response::new(Code::DELETED),
        Outcome::SessionCreated | Outcome::Checked => Response::new(Code::CHANGED),
        Outcome::Multi(outcomes) => cbor_response(
            Code::CHANGED,
            &MultiResponse {
                results: outcomes
                    .iter()
                    .map(|o| match o {
                        Outcome::Created { path, .. } => MultiResult::Create { path: path.clone() },
                        Outcome::DataSet { stat } => MultiResult::SetData { stat: *stat },
                        Outcome::Deleted => MultiResult::Delete,
                        _ => MultiResult::Check,
                    })
                    .collect(),
            },
        ),
    }
}

fn tree_error_response(error: &TreeError) -> Response {
    error_response(error.kind(), &error.to_string())
}

fn session_expired(session: u64) -> Response {
    error_response(
        ErrorKind::SessionExpired,
        &format!("session {session:#x} has expired or does not exist: open a new one"),
    )
}

use pehra_shared::driver::clock::unix_ms as now_ms;

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The `kind` label of a job in the request counter.
fn job_kind(job: &Job) -> &'static str {
    match job {
        Job::GetData { .. } => "get_data",
        Job::GetChildren { .. } => "get_children",
        Job::Sync { .. } => "sync",
        Job::Incarnation { .. } => "incarnation",
        Job::Heartbeat { .. } => "heartbeat",
        Job::Suspect { .. } => "suspect",
        Job::OpenSession { .. } => "open_session",
        Job::Write { .. } => "write",
        Job::Expire { .. } => "expire",
        Job::Admin { .. } => "admin",
        Job::Ensemble(_) => "ensemble",
        Job::Shutdown => "shutdown",
    }
}
