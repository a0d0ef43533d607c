//! The mini-zookeeper service: CoAP routes in front of one core task that owns the data
//! tree, orders every request, commits writes to the log in groups, and notifies
//! watchers.
//!
//! Ordering and durability: the core takes requests in arrival order. Writes are applied
//! to the tree and appended to the log as one batch; while a batch is being made durable
//! nothing else is processed, and a read is answered only when no write ahead of it is
//! waiting for the disk. So a read never sees a write that a crash could still lose, a
//! write is acknowledged only once it is on disk, and everything happens in one total
//! order (zxid): linearizable.

mod access;
mod core;
mod group_commit;
mod log_record;
mod metrics;
mod probe;
mod routes;
pub mod security_updates;
mod sessions;

use crate::storage::{Storage, StorageError};
use crate::tree::DataTree;
use log_record::LogRecord;
use pehra_shared::coap::Config as CoapConfig;
use pehra_shared::driver::Endpoint;
use pehra_storage::data_dir::{self, DataDirError, DataDirLock};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::sync::mpsc;

pub(crate) use self::core::Job;
pub use self::metrics::{RequestLabels, ZkMetrics};
pub use self::sessions::SessionLeaseConfig;

/// How a zookeeper is set up.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// UDP address to serve CoAP on.
    pub listen: SocketAddr,
    /// Where the log and snapshots live.
    pub data_dir: PathBuf,
    /// Session timeouts asked for are clamped to this range.
    pub min_session_timeout: Duration,
    /// See `min_session_timeout`.
    pub max_session_timeout: Duration,
    /// The longest sleep one heartbeat may stretch a lease over (PEHRA
    /// `Heartbeat.sleep_ms` is capped to this).
    pub max_sleep: Duration,
    /// The adaptive lease of sessions whose nodes report their health (seed 002).
    pub session_lease: SessionLeaseConfig,
    /// Write a snapshot once this many bytes were logged since the last one.
    pub snapshot_after_bytes: u64,
    /// CoAP transmission parameters.
    pub coap: CoapConfig,
    /// The admin key the [`AdminRoute`]s' rules check requests against (PEHRA's mode
    /// switch: `pehra_cluster::admin`, which refuses every change, 4.01, without one).
    pub admin_key: Option<Vec<u8>>,
    /// How recovery treats a damaged write-ahead log: by default it refuses to start on
    /// damage followed by valid records (see
    /// [`RecoveryOptions`](crate::storage::RecoveryOptions)).
    pub recovery: crate::storage::RecoveryOptions,
    /// OSCORE and ACLs: with them, every request must be protected and allowed; without
    /// them (an insecure zookeeper, for experiments on loopback) anyone may do anything.
    pub security: Option<Security>,
    /// Where it counts (requests, sessions, znodes, the log): register it to serve it.
    pub metrics: ZkMetrics,
    /// A member of an ensemble (see [`crate::ensemble`]); `None`: alone, as always.
    pub ensemble: Option<crate::ensemble::EnsembleConfig>,
    /// Newer credentials and ACL policies while it runs (the binary sends one on
    /// SIGHUP); see [`security_updates`].
    pub security_updates: Option<security_updates::SecurityUpdates>,
    /// What a broker may write, beyond what the ACL policy lets it (see
    /// [`BrokerWriteRule`]). `pehra zookeeper` sets the cluster's rule
    /// (`pehra_cluster::broker_writes::check`); `None`: the ACL policy alone decides.
    pub broker_writes: Option<BrokerWriteRule>,
    /// Signed administrative writes it serves (see [`AdminRoute`]); `pehra zookeeper`
    /// serves PEHRA's mode switch. Their key is [`admin_key`](Self::admin_key).
    pub admin_routes: Vec<AdminRoute>,
}

/// A rule for the writes of a broker (a request whose identity is `broker-{id}`): given
/// the broker's id, the path, the znode's data as it stands (`None`: absent) and the data
/// written, `Err` with the reason refuses it (4.03). The core applies it to every
/// set-data, alone or in a multi, in the same step as the write, so it judges the tree as
/// the write would change it. The ACL policy can say "brokers may write partition
/// states" but not "only the partition's leader": the rule says the rest. It is the
/// cluster's layout, so it comes from the cluster crate.
pub type BrokerWriteRule =
    fn(broker: u32, path: &str, current: Option<&[u8]>, new: &[u8]) -> Result<(), String>;

/// A signed administrative write served at `POST /{path}` (PEHRA's `pehra/mode` is one,
/// `pehra_cluster::admin::MODE_ROUTE`). Its rule is the application's: the zookeeper
/// only runs it in one step of its core, on the tree as it stands, and applies the ops it
/// returns in one multi through the ordinary write path (logged, made durable, watches
/// fired), so no other write comes between the rule's check and the write.
#[derive(Debug, Clone, Copy)]
pub struct AdminRoute {
    /// Its URI path, without the leading `/`.
    pub path: &'static str,
    /// Its resource type in `/.well-known/core`.
    pub resource_type: &'static str,
    /// The check and the write.
    pub rule: AdminRule,
}

/// What an [`AdminRoute`] does with a request: the ops to apply (and a line for the
/// log), or the refusal to answer with.
pub type AdminRule = fn(&AdminRequest<'_>) -> Result<AdminWrite, pehra_shared::coap::Response>;

/// What an [`AdminRule`] is given.
pub struct AdminRequest<'a> {
    /// The zookeeper's admin key (`--admin-key`), if it has one.
    pub key: Option<&'a [u8]>,
    /// The request (its body is the rule's to decode).
    pub request: &'a pehra_shared::coap::Request,
    /// Now, in ms since the Unix epoch.
    pub now_ms: u64,
    /// The tree as it stands in this step.
    pub tree: &'a DataTree,
}

/// What an [`AdminRule`] writes.
#[derive(Debug)]
pub struct AdminWrite {
    /// Applied in one multi.
    pub ops: Vec<crate::tree::Op>,
    /// Logged (at info) once they are applied.
    pub done: String,
}

/// A zookeeper's (or a broker's) security: its credentials (identity, key table) and the
/// ACL policy requests are checked against.
#[derive(Debug, Clone)]
pub struct Security {
    /// Its own credentials, with the key table of everyone who may talk to it.
    pub credentials: std::sync::Arc<pehra_shared::security::credentials::Credentials>,
    /// Who may do what.
    pub policy: std::sync::Arc<pehra_shared::security::acl::Policy>,
}

impl ServerConfig {
    /// Defaults for a server on `listen` keeping its data in `data_dir`.
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> Self {
        ServerConfig {
            listen,
            data_dir,
            min_session_timeout: Duration::from_millis(1_000),
            max_session_timeout: Duration::from_secs(60),
            max_sleep: Duration::from_secs(3600),
            session_lease: SessionLeaseConfig::default(),
            snapshot_after_bytes: 64 * 1024 * 1024,
            coap: CoapConfig {
                nstart: 16,
                // A 1 KiB znode and its envelope in one datagram to Pehra's own clients,
                // which declare it (a standard client still gets 1 KiB blocks): block-wise
                // doubled the round trips of every such read and write.
                max_payload: pehra_shared::coap::PEER_MAX_PAYLOAD,
                // A broker watches every partition znode it holds a replica of through
                // one socket, so one peer may hold many watches; every peer together
                // still has a ceiling.
                max_observers_per_peer: 4096,
                max_observers: 32 * 1024,
                // Every watch notification is confirmable: a NON one lost while a broker
                // is cut off was lost for good (the znode does not change again), and the
                // broker kept a partition it no longer led, or never took one it did
                // (simulation seeds 1043, 1065). A CON one is retransmitted for
                // MAX_TRANSMIT_WAIT (93 s), longer than the longest session timeout
                // (60 s): a notification reaches its watcher, or its session expires and
                // the watcher starts over. Znodes change seldom; the ACK costs little.
                observe_con_interval: Duration::ZERO,
                ..CoapConfig::default()
            },
            admin_key: None,
            security: None,
            security_updates: None,
            broker_writes: None,
            admin_routes: Vec::new(),
            recovery: crate::storage::RecoveryOptions::default(),
            metrics: ZkMetrics::default(),
            ensemble: None,
        }
    }
}

/// Why a zookeeper could not start or had to stop.
#[derive(Debug, Error)]
pub enum ServerError {
    /// OSCORE could not be set up (credentials without a key table, an unreadable
    /// sequence ceiling).
    #[error("security: {0}")]
    Security(std::io::Error),
    /// The data directory is in use by another process, or cannot be written.
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    /// The data directory could not be read or written.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The log holds something the tree refuses: the data directory is damaged.
    #[error("the log cannot be replayed at zxid {zxid}: {reason}")]
    Replay {
        /// The record.
        zxid: u64,
        /// Why.
        reason: String,
    },
    /// The ensemble's Raft log or configuration is unusable.
    #[error("raft: {0}")]
    Raft(String),
    /// The thread writing the log stopped.
    #[error("the log writer stopped unexpectedly")]
    LogThreadGone,
    /// The UDP socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A running zookeeper.
pub struct Server {
    endpoint: Endpoint,
    core: tokio::task::JoinHandle<Result<(), ServerError>>,
    jobs: mpsc::UnboundedSender<Job>,
    recovered: Recovered,
    /// Whether it leads its ensemble (always, alone).
    leading: tokio::sync::watch::Receiver<bool>,
    /// The data directory is ours while we run.
    _lock: DataDirLock,
}

/// What was found on disk at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recovered {
    /// The last zxid recovered.
    pub zxid: u64,
    /// Log records replayed on top of the snapshot.
    pub replayed: usize,
    /// Bytes of a torn log tail that were cut.
    pub truncated_bytes: u64,
    /// Znodes in the tree (the root included).
    pub nodes: usize,
    /// Sessions carried over (each gets a fresh lease).
    pub sessions: usize,
}

impl Server {
    /// Claims the data directory (refused at once if another process uses it or it
    /// cannot be written), recovers it and starts serving.
    pub async fn start(config: ServerConfig) -> Result<Server, ServerError> {
        let dir = config.data_dir.clone();
        // An exclusive `flock` on `LOCK`, with the holder's PID in it.
        let lock = data_dir::claim(&dir)?;
        let options = config.recovery.clone();
        let (storage, tree, recovered) =
            pehra_shared::driver::blocking::run(move || recover(&dir, &options))
                .await
                .expect("recovery task panicked")?;
        let raft = match &config.ensemble {
            Some(ensemble) => {
                let dir = config.data_dir.join("raft");
                let (log, restored) = pehra_shared::driver::blocking::run(move || {
                    crate::ensemble::log::RaftLog::open(&dir)
                })
                .await
                .expect("raft log recovery panicked")
                .map_err(|e| ServerError::Raft(e.to_string()))?;
                let (mut log, restored) = (log, restored);
                // The membership the log holds wins over `--peers`, which only starts
                // an ensemble (or, with `--join`, says where it is).
                let membership = match &restored.membership {
                    Some(membership) => membership.clone(),
                    None => crate::ensemble::Membership {
                        voters: if ensemble.join {
                            Vec::new()
                        } else {
                            ensemble.members.keys().copied().collect()
                        },
                        learners: Vec::new(),
                        addrs: ensemble
                            .members
                            .iter()
                            .map(|(id, addr)| (*id, addr.to_string()))
                            .collect(),
                    },
                };
                log.set_membership(&membership)
                    .map_err(|e| ServerError::Raft(e.to_string()))?;
                let mut ensemble = ensemble.clone();
                for (id, addr) in &membership.addrs {
                    match std::net::ToSocketAddrs::to_socket_addrs(addr.as_str())
                        .ok()
                        .and_then(|mut a| a.next())
                    {
                        Some(addr) => {
                            ensemble.members.insert(*id, addr);
                        }
                        None => {
                            return Err(ServerError::Raft(format!(
                                "member {id}'s address {addr} (from the raft log) does not resolve"
                            )))
                        }
                    }
                }
                let member = crate::ensemble::member::Member::with_learners(
                    ensemble.id,
                    &membership.voters,
                    &membership.learners,
                    restored,
                )
                .map_err(|e| ServerError::Raft(e.to_string()))?
                .compacting_every(ensemble.compact_every);
                // Tells the leader if this process started on an empty log (see
                // `Member::with_incarnation`).
                let seed = pehra_shared::driver::socket::seed32()
                    .map_err(|e| ServerError::Raft(format!("no randomness: {e}")))?;
                let incarnation = u64::from_be_bytes(seed[..8].try_into().expect("8 bytes"));
                let member = member.with_incarnation(incarnation.max(1));
                Some((log, member, ensemble, membership))
            }
            None => None,
        };
        let (jobs_tx, jobs_rx) = mpsc::unbounded_channel();
        let mut router = routes::router(jobs_tx.clone(), &config.admin_routes);
        let (inbox_tx, inbox_rx) = mpsc::unbounded_channel();
        let (status_tx, status_rx) = mpsc::unbounded_channel();
        let (transfer_tx, transfer_rx) = mpsc::unbounded_channel();
        let offered = crate::ensemble::snapshot::Offered::default();
        let (membership_tx, membership_rx) = mpsc::unbounded_channel();
        if raft.is_some() {
            router = router.route_deferred(
                pehra_shared::coap::Method::Post,
                crate::ensemble::MEMBERS_PATH,
                move |incoming, responder| {
                    let asked: crate::ensemble::MembershipRequest =
                        match pehra_shared::api::decode_request(&incoming.request) {
                            Ok(asked) => asked,
                            Err(refused) => return responder.respond(refused),
                        };
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    let _ = membership_tx.send((asked.into(), tx));
                    tokio::spawn(async move {
                        if let Ok(answer) = rx.await {
                            responder.respond(membership_response(answer));
                        }
                    });
                },
            );
            let served = offered.clone();
            router = router.route_deferred(
                pehra_shared::coap::Method::Post,
                crate::ensemble::snapshot::SNAPSHOT_PATH,
                move |incoming, responder| {
                    responder.respond(match pehra_shared::api::decode_request(&incoming.request) {
                        Ok(asked) => served.answer(asked, tokio::time::Instant::now()),
                        Err(refused) => refused,
                    });
                },
            );
            router = router.route_deferred(
                pehra_shared::coap::Method::Get,
                crate::ensemble::STATUS_PATH,
                move |_incoming, responder| {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    let _ = status_tx.send(tx);
                    tokio::spawn(async move {
                        if let Ok(status) = rx.await {
                            responder.respond(pehra_shared::api::cbor_response(
                                pehra_shared::coap::Code::CONTENT,
                                &status,
                            ));
                        }
                    });
                },
            );
            router = router.route_deferred(
                pehra_shared::coap::Method::Post,
                crate::ensemble::STATUS_PATH,
                move |incoming, responder| {
                    let asked: crate::ensemble::TransferRequest =
                        match pehra_shared::api::decode_request(&incoming.request) {
                            Ok(asked) => asked,
                            Err(refused) => return responder.respond(refused),
                        };
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    let _ = transfer_tx.send((asked.to, tx));
                    tokio::spawn(async move {
                        if let Ok(answer) = rx.await {
                            responder.respond(transfer_response(answer));
                        }
                    });
                },
            );
            router = router.route_deferred(
                pehra_shared::coap::Method::Post,
                crate::ensemble::RAFT_PATH,
                move |incoming, responder| {
                    let lease = crate::ensemble::lease::from_queries(incoming.request.queries());
                    let _ = inbox_tx.send((incoming.request.payload().to_vec(), lease));
                    responder.respond(pehra_shared::coap::Response::new(
                        pehra_shared::coap::Code::CHANGED,
                    ));
                },
            );
        }
        let policy = config.security.as_ref().map(|security| {
            Arc::new(pehra_shared::driver::security::PolicyCell::new(
                security.policy.clone(),
            ))
        });
        if let Some(policy) = &policy {
            router = router.guard(access::guard(policy.clone()));
        }
        let endpoint = Endpoint::bind(config.listen, config.coap.clone(), router)
            .await
            .map_err(|source| ServerError::Bind {
                addr: config.listen,
                source,
            })?;
        if let Some(security) = &config.security {
            pehra_shared::driver::security::secure_server(
                &endpoint.handle(),
                &security.credentials,
                &config.data_dir,
            )
            .await
            .map_err(ServerError::Security)?;
            if let (Some(updates), Some(policy)) = (config.security_updates.clone(), &policy) {
                security_updates::follow(
                    updates,
                    endpoint.handle(),
                    policy.clone(),
                    security.credentials.identity().kid.clone(),
                    "zookeeper",
                );
            }
        }
        let (leading_tx, leading) = tokio::sync::watch::channel(false);
        let replication = match raft {
            Some((log, member, ensemble, membership)) => {
                let (proposals_tx, proposals_rx) = mpsc::unbounded_channel();
                let raft_endpoint = Endpoint::bind(
                    pehra_shared::driver::any_local_for(config.listen),
                    crate::ensemble::driver::raft_endpoint_config(),
                    pehra_shared::driver::Router::new(),
                )
                .await
                .map_err(|source| ServerError::Bind {
                    addr: config.listen,
                    source,
                })?;
                if let Some(security) = &config.security {
                    // Raft to the other members goes protected too, in the zookeeper's
                    // name (each member holds the zookeeper's credentials).
                    for (id, peer) in &ensemble.members {
                        if *id == ensemble.id {
                            continue;
                        }
                        pehra_shared::driver::security::secure_client(
                            &raft_endpoint.handle(),
                            &security.credentials,
                            *peer,
                            &security.credentials.identity().kid,
                        )
                        .await
                        .map_err(|e| {
                            ServerError::Security(std::io::Error::other(format!(
                                "member {id}: {e}"
                            )))
                        })?;
                    }
                }
                let driver = crate::ensemble::driver::Driver {
                    member,
                    log,
                    config: ensemble.clone(),
                    endpoint: raft_endpoint,
                    out: Default::default(),
                    status: status_rx,
                    transfers: transfer_rx,
                    inbox: inbox_rx,
                    proposals: proposals_rx,
                    core: jobs_tx.clone(),
                    offered,
                    memberships: membership_rx,
                    voters: membership.voters,
                    learners: membership.learners,
                    changing: None,
                    pulled_addrs: None,
                    credentials: config.security.as_ref().map(|s| s.credentials.clone()),
                    lease: crate::ensemble::lease::LeaderLease::new(
                        ensemble.health.nhi,
                        ensemble.lease,
                    ),
                    heartbeat_rtts: None,
                    member_rtts: Default::default(),
                };
                tokio::spawn(driver.run());
                Some(core::Replication::new(
                    ensemble.id,
                    proposals_tx,
                    leading_tx,
                ))
            }
            None => {
                leading_tx.send_replace(true);
                None
            }
        };
        let core = core::Core::new(
            config,
            tree,
            storage,
            endpoint.handle(),
            jobs_rx,
            replication,
        );
        let core = tokio::spawn(core.run());
        Ok(Server {
            endpoint,
            core,
            jobs: jobs_tx,
            recovered,
            leading,
            _lock: lock,
        })
    }

    /// The address it serves on.
    pub fn local_addr(&self) -> SocketAddr {
        self.endpoint.local_addr()
    }

    /// Its CoAP endpoint (for its counters: `Handle::stats`).
    pub fn coap_handle(&self) -> pehra_shared::driver::Handle {
        self.endpoint.handle()
    }

    /// Whether this zookeeper leads its ensemble (always `true` alone): what runs on the
    /// leader only (the cluster controller, the PEHRA coordinator) follows it.
    pub fn leadership(&self) -> tokio::sync::watch::Receiver<bool> {
        self.leading.clone()
    }

    /// What recovery found.
    pub fn recovered(&self) -> Recovered {
        self.recovered
    }

    /// Runs until the core stops (a storage failure) and returns why.
    pub async fn wait(&mut self) -> Result<(), ServerError> {
        (&mut self.core).await.expect("zookeeper core panicked")
    }

    /// Stops: writes in progress are finished (made durable and answered), then the
    /// socket closes.
    pub async fn shutdown(self) -> Result<(), ServerError> {
        let _ = self.jobs.send(Job::Shutdown);
        let result = self.core.await.expect("zookeeper core panicked");
        self.endpoint.shutdown().await;
        result
    }
}

/// Opens the storage and rebuilds the tree from the snapshot and the log.
fn recover(
    dir: &std::path::Path,
    options: &crate::storage::RecoveryOptions,
) -> Result<(Storage, DataTree, Recovered), ServerError> {
    let (storage, recovery) = Storage::open_with(dir, options)?;
    let mut tree = match &recovery.snapshot {
        Some((zxid, bytes)) => {
            pehra_shared::wire::decode::<DataTree>(bytes).map_err(|e| ServerError::Replay {
                zxid: *zxid,
                reason: format!("snapshot does not decode: {e}"),
            })?
        }
        None => DataTree::default(),
    };
    for (zxid, payload) in &recovery.records {
        if payload.is_empty() {
            // A placeholder for a zxid cut on request (see `Storage::open_with`).
            tree.skip_zxid(*zxid);
            continue;
        }
        let record: LogRecord =
            pehra_shared::wire::decode(payload).map_err(|e| ServerError::Replay {
                zxid: *zxid,
                reason: format!("record does not decode: {e}"),
            })?;
        tree.apply_request(*zxid, record.time_ms, &record.op, record.request)
            .map_err(|e| ServerError::Replay {
                zxid: *zxid,
                reason: e.to_string(),
            })?;
    }
    let recovered = Recovered {
        zxid: tree.last_zxid(),
        replayed: recovery.records.len(),
        truncated_bytes: recovery.truncated_bytes,
        nodes: tree.node_count(),
        sessions: tree.sessions().len(),
    };
    Ok((storage, tree, recovered))
}

/// The answer to `POST /ensemble`: 2.04 with the handover started, 4.03 `not_leader` on
/// a follower (a client with the member list asks the next member), 4.00 for a member
/// that is not another one of the ensemble.
fn membership_response(
    answer: Result<crate::ensemble::MembershipChanged, crate::ensemble::driver::MembershipRefusal>,
) -> pehra_shared::coap::Response {
    use crate::ensemble::driver::MembershipRefusal;
    use crate::ensemble::member::MembershipError;
    use pehra_shared::api::{cbor_response, error_response};
    use pehra_shared::wire::ErrorKind;
    match answer {
        Ok(changed) => cbor_response(pehra_shared::coap::Code::CHANGED, &changed),
        Err(e @ MembershipRefusal::Refused(MembershipError::NotLeader)) => {
            error_response(ErrorKind::NotLeader, &e.to_string())
        }
        Err(e @ MembershipRefusal::NotApplied(_))
        | Err(e @ MembershipRefusal::Refused(MembershipError::Pending)) => {
            error_response(ErrorKind::Busy, &e.to_string())
        }
        Err(e) => error_response(ErrorKind::Malformed, &e.to_string()),
    }
}

fn transfer_response(
    answer: Result<crate::ensemble::TransferStarted, crate::ensemble::member::TransferError>,
) -> pehra_shared::coap::Response {
    use crate::ensemble::member::TransferError;
    use pehra_shared::api::{cbor_response, error_response};
    use pehra_shared::wire::ErrorKind;
    match answer {
        Ok(started) => cbor_response(pehra_shared::coap::Code::CHANGED, &started),
        Err(e @ TransferError::NotLeader) => error_response(ErrorKind::NotLeader, &e.to_string()),
        Err(e) => error_response(ErrorKind::Malformed, &e.to_string()),
    }
}
