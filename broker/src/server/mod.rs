//! The broker: registers with the zookeeper, holds replicas of the partitions the
//! controller gives it, leads some and follows the others, and serves produce, fetch,
//! replication and partition observation over CoAP.
//!
//! It is the driver of the partitions' replica state machines
//! ([`crate::replica::PartitionReplica`]: every replication decision is made there): it
//! decodes requests, feeds them to the machine with the time, and carries out what the
//! machine asks (answers, zookeeper writes, wake-ups). Its modules:
//!
//! - `partition`: a replica as the server holds it, and the running of its actions.
//! - `assignment`: following the partition znodes.
//! - `produce`, `fetch`: what producers and consumers call.
//! - `replica`: the leader's side of replication: followers' fetches, in-sync set writes,
//!   epoch checks, the timer of the replica machines.
//! - `fetcher`: the follower's side: one long-polling fetch loop per leader.
//! - `eligibility`: which replicas may lead (reported to the controller), and
//!   `hw_checkpoint`, the high watermarks it rests on.

use crate::log::{FlushPolicy, LogConfig};
use pehra_cluster::{self as cluster, BROKERS, TOPICS};
use pehra_shared::api::{cbor_response, error_response};
use pehra_shared::coap::{
    link_format::Link, Code, Config as CoapConfig, Method, Request, Response,
};
use pehra_shared::driver::{Endpoint, Handle, Incoming, Responder, Router};
use pehra_shared::wire::{self, BrokerInfo, ErrorKind};
use std::sync::atomic::{AtomicBool, Ordering};

mod access;
mod assignment;
mod devices;
mod eligibility;
mod fetch;
mod fetcher;
mod handover;
mod hw_checkpoint;
mod maintenance;
pub mod metrics;
mod partition;
pub mod pehra;
mod produce;
mod replica;
mod replica_actions;

use parking_lot::{Mutex, RwLock};
pub(crate) use partition::Partition;
use partition::PartitionKey;
use pehra_zookeeper::{Client, ClientOptions, CreateMode, SessionState, ZkError};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use thiserror::Error;

/// How a broker is set up.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Its id in the cluster.
    pub id: u32,
    /// UDP address to serve CoAP on.
    pub listen: SocketAddr,
    /// The zookeeper: its address, or every member of an ensemble (the session moves
    /// to another member when one fails).
    pub zookeeper: Vec<SocketAddr>,
    /// Where partition logs live (one directory per partition).
    pub data_dir: PathBuf,
    /// The machine it runs on (replicas of a partition repel across hosts).
    pub host: String,
    /// Its rack, if known.
    pub rack: Option<String>,
    /// Partition log settings.
    pub log: LogConfig,
    /// How often written records are fsynced (besides the log's own flush policy).
    pub flush_interval: Duration,
    /// How often retention (age and size) is applied to every partition.
    pub retention_check: Duration,
    /// How many bytes of its partition logs the broker checks per second in the
    /// background (every batch's CRC, round the logs, [`PartitionLog::scrub_step`]): damage
    /// in records nobody reads is found, reported and healed. 0 (the default for now): no
    /// scrub.
    ///
    /// [`PartitionLog::scrub_step`]: crate::log::PartitionLog::scrub_step
    pub scrub_bytes_per_sec: u64,
    /// The zookeeper session timeout.
    pub session_timeout: Duration,
    /// How long to wait for an earlier registration of this id to expire (a restart
    /// after a crash) before deciding another live broker has the id.
    pub registration_wait: Duration,
    /// CoAP parameters.
    pub coap: CoapConfig,
    /// An in-sync follower that has not caught up with the leader for this long leaves
    /// the in-sync set.
    pub replica_lag: Duration,
    /// How long an acks=all produce waits for the in-sync replicas before a 5.03.
    pub ack_timeout: Duration,
    /// Most batch bytes in one replica fetch answer (keep it under the CoAP
    /// `max_payload` so an answer is one datagram).
    pub replica_fetch_bytes: usize,
    /// How long a controlled shutdown waits for the controller to move leadership away.
    pub controlled_shutdown_timeout: Duration,
    /// PEHRA: participation, sleep timers and hooks.
    pub pehra: pehra::PehraConfig,
    /// The commands a rolling-maintenance order may ask for, by name
    /// (`--maintenance-command NAME=CMD`). An order names one; the command itself is
    /// configured here, on the broker's own machine, and never read from the network.
    pub maintenance_commands: BTreeMap<String, String>,
    /// OSCORE and ACLs (the broker's credentials and the policy); `None` serves plain
    /// CoAP to anyone (an insecure cluster on loopback).
    /// Newer credentials and ACL policies while it runs (the binary sends one on
    /// SIGHUP; see [`pehra_zookeeper::server::security_updates`]).
    pub security_updates: Option<pehra_zookeeper::server::security_updates::SecurityUpdates>,
    pub security: Option<pehra_zookeeper::Security>,
    /// With security on, still serve the device gateway routes (`/dev/*`) to plain CoAP
    /// devices: the firmware does not speak OSCORE yet. Anyone on the network can then
    /// publish readings and read downlink through them (nothing else).
    pub insecure_device_routes: bool,
    /// Let a follower cut records below the high watermark it knows when its leader's log
    /// ends before them. Only ever needed after an operator forced an unclean election
    /// (`pehra zookeeper --unclean-leader-election`): the new leader lacks acknowledged
    /// records, and the other replicas refuse to drop theirs without this.
    pub allow_truncation_below_hw: bool,
    /// Where it counts (per-topic traffic, latencies, partition health, PEHRA); shared
    /// by the restarts of one broker process.
    pub metrics: crate::metrics::BrokerMetrics,
}

impl BrokerConfig {
    /// Defaults for broker `id` (one zookeeper; set [`BrokerConfig::zookeeper`] to
    /// every member of an ensemble).
    pub fn new(id: u32, listen: SocketAddr, zookeeper: SocketAddr, data_dir: PathBuf) -> Self {
        BrokerConfig {
            id,
            listen,
            zookeeper: vec![zookeeper],
            data_dir,
            host: hostname(),
            rack: None,
            log: LogConfig {
                flush: FlushPolicy::Never,
                ..LogConfig::default()
            },
            flush_interval: Duration::from_millis(200),
            retention_check: Duration::from_secs(60),
            scrub_bytes_per_sec: 0,
            session_timeout: Duration::from_secs(6),
            registration_wait: Duration::from_secs(30),
            coap: CoapConfig {
                nstart: 16,
                max_payload: BROKER_MAX_PAYLOAD,
                ..CoapConfig::default()
            },
            replica_lag: Duration::from_secs(5),
            ack_timeout: Duration::from_secs(2),
            replica_fetch_bytes: BROKER_MAX_PAYLOAD - 4 * 1024,
            controlled_shutdown_timeout: Duration::from_secs(10),
            pehra: pehra::PehraConfig::default(),
            maintenance_commands: BTreeMap::new(),
            security: None,
            security_updates: None,
            insecure_device_routes: false,
            allow_truncation_below_hw: false,
            metrics: crate::metrics::BrokerMetrics::default(),
        }
    }
}

pub use crate::limits::BROKER_MAX_PAYLOAD;

/// This machine's name (for replica placement), or `localhost`.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Why a broker could not start or had to stop.
#[derive(Debug, Error)]
pub enum BrokerError {
    /// OSCORE could not be set up (credentials without a key table, an unreadable
    /// sequence ceiling).
    #[error("security: {0}")]
    Security(String),
    /// The socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The zookeeper refused or could not be reached.
    #[error("zookeeper: {0}")]
    Zookeeper(#[from] ZkError),
    /// The data directory is in use by another process, or cannot be written.
    #[error(transparent)]
    DataDir(#[from] pehra_storage::data_dir::DataDirError),
    /// Another live broker has this id: it answers at its registered address, or its
    /// registration did not expire within [`BrokerConfig::registration_wait`].
    #[error("broker id {id} is already registered by a live broker at {addr}")]
    IdInUse {
        /// The id.
        id: u32,
        /// The address that registration names.
        addr: String,
    },
    /// The pub-sub interface could not reach the cluster.
    #[error("pub-sub: {0}")]
    PubSub(String),
    /// The zookeeper session was lost: the broker must rejoin.
    #[error("the zookeeper session expired; the broker stopped serving")]
    SessionLost,
    /// A maintenance order asks for a restart in place (leadership has moved away):
    /// call [`Broker::restart_in_place`].
    #[error("maintenance: the broker is to restart in place")]
    RestartRequested,
}

/// Everything the request handlers and background tasks share.
pub(crate) struct State {
    id: u32,
    data_dir: PathBuf,
    log_config: LogConfig,
    replica_lag: Duration,
    ack_timeout: Duration,
    replica_fetch_bytes: usize,
    partitions: RwLock<BTreeMap<PartitionKey, Arc<Mutex<Partition>>>>,
    fetchers: Mutex<fetcher::Fetchers>,
    /// Wakes replica fetches held while nothing was new.
    appended: tokio::sync::Notify,
    /// Signalled after every assignment change was applied.
    assignment_applied: tokio::sync::Notify,
    /// Signalled whenever a partition's high watermark moved (a warm handover's
    /// pre-sync waits on it).
    hw_moved: tokio::sync::Notify,
    /// An in-sync set change finished: the ISR upkeep looks again.
    isr_recheck: tokio::sync::Notify,
    /// When the in-sync set upkeep wakes next, in microseconds of the replica clock
    /// (`u64::MAX`: not before an event).
    isr_wake_at: std::sync::atomic::AtomicU64,
    /// Something was appended that is not flushed yet (a permit wakes the flusher).
    unflushed: tokio::sync::Notify,
    /// A controlled shutdown began: follow no partition any more.
    leaving: AtomicBool,
    handle: OnceLock<Handle>,
    zk: OnceLock<Arc<Client>>,
    pubsub: OnceLock<Arc<crate::pubsub::PubSub>>,
    /// PEHRA: `true` while dormant (periodic work and fetchers paused).
    asleep: tokio::sync::watch::Sender<bool>,
    /// PEHRA: while dormant, when its alarm rings (ms since the Unix epoch; 0: none).
    alarm_ms: tokio::sync::watch::Sender<u64>,
    /// The follower fetch each peer has held here now (`replica::replica_fetch`): a newer
    /// one from the same peer ends it.
    held_fetches: Mutex<std::collections::HashMap<SocketAddr, Arc<tokio::sync::Notify>>>,
    /// Re-apply the assignment (restart the fetchers after a wake).
    reassign: tokio::sync::Notify,
    /// The PEHRA node, once started.
    pehra: OnceLock<Arc<pehra::Pehra>>,
    /// Set by the maintenance agent: leadership moved, restart in place now.
    restart: tokio::sync::watch::Sender<bool>,
    /// The Pehredar's address, for device check-ins.
    pehredar_cache: devices::PehredarCache,
    /// Its own credentials (OSCORE towards the zookeeper and the other brokers).
    credentials: Option<Arc<pehra_shared::security::credentials::Credentials>>,
    /// The brokers' addresses its requests are protected to already.
    secured_peers: Mutex<std::collections::BTreeSet<SocketAddr>>,
    /// The high watermarks last made durable ([`hw_checkpoint`]), by partition.
    hw_checkpoint: Mutex<BTreeMap<PartitionKey, u64>>,
    /// Set once the first assignment was applied (every assigned log opened or failed).
    logs_opened: AtomicBool,
    /// Assigned partitions whose log could not be opened, with the error.
    open_failures: Mutex<BTreeMap<PartitionKey, String>>,
    /// Partitions whose leader epoch was seen going back, with the last epoch their log
    /// held then: until an epoch above it is assigned, an epoch at or below it is an
    /// old term's number again (`assignment::apply_assignment`).
    epoch_floors: Mutex<BTreeMap<PartitionKey, u32>>,
    /// A replica may have become eligible to lead, or stopped being: report it.
    eligibility_changed: tokio::sync::Notify,
    /// See [`BrokerConfig::allow_truncation_below_hw`].
    allow_truncation_below_hw: bool,
    /// What the request handlers count (served by `--metrics-listen`).
    pub(crate) metrics: crate::metrics::Metrics,
}

impl State {
    /// Whether PEHRA put it to sleep.
    pub(crate) fn is_asleep(&self) -> bool {
        *self.asleep.borrow()
    }

    /// Its zookeeper client, once connected.
    pub(crate) fn zk_client(&self) -> Option<Arc<Client>> {
        self.zk.get().cloned()
    }

    /// The settings of its partition replicas' state machines.
    pub(crate) fn replica_config(&self) -> crate::replica::ReplicaConfig {
        crate::replica::ReplicaConfig {
            me: self.id,
            replica_lag: self.replica_lag,
            ack_timeout: self.ack_timeout,
            allow_truncation_below_hw: self.allow_truncation_below_hw,
        }
    }

    /// The partitions it leads, with their high watermarks.
    pub(crate) fn led_high_watermarks(&self) -> Vec<(String, u32, u64)> {
        self.partitions
            .read()
            .iter()
            .filter_map(|(key, p)| {
                let p = p.lock();
                p.replica
                    .leads()
                    .then(|| (key.0.clone(), key.1, p.replica.high_watermark()))
            })
            .collect()
    }

    /// Its partitions counted by health (for the metrics, at scrape time).
    pub(crate) fn partition_health(&self) -> crate::metrics::PartitionHealth {
        let mut health = crate::metrics::PartitionHealth::default();
        for p in self.partitions.read().values() {
            let p = p.lock();
            health.replicas += 1;
            if p.replica.meta().leader.is_none() {
                health.offline += 1;
            }
            if p.replica.leads() {
                health.led += 1;
                if p.replica.meta().isr.len() < p.replica.meta().replicas.len() {
                    health.under_replicated += 1;
                }
                if p.replica.meta().isr.len() < p.replica.min_insync() as usize {
                    health.under_min_isr += 1;
                }
            }
        }
        health
    }

    /// Tells the partition's observers that its committed records now end at `hw` (and
    /// its log at `end`). It takes no lock.
    fn notify_partition(&self, topic: &str, partition: u32, hw: u64, end: u64) {
        // The high watermark moved: the flusher checkpoints it.
        self.unflushed.notify_one();
        self.hw_moved.notify_waiters();
        if let Some(handle) = self.handle.get() {
            let tick = cbor_response(Code::CONTENT, &fetch::tick(hw, end));
            handle.notify_detached(&format!("p/{topic}/{partition}"), tick);
        }
    }
}

/// A running broker.
pub struct Broker {
    endpoint: Endpoint,
    zk: Arc<Client>,
    state: Arc<State>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    id: u32,
    controlled_shutdown_timeout: Duration,
    /// The data directory is ours while we run.
    _data_dir: pehra_storage::data_dir::DataDirLock,
}

impl Broker {
    /// Claims the data directory (refused at once if another process uses it or it
    /// cannot be written), binds, registers with the zookeeper as `/brokers/ids/{id}`,
    /// and starts holding the partition replicas the controller gives it.
    pub async fn start(config: BrokerConfig) -> Result<Broker, BrokerError> {
        let data_dir = pehra_storage::data_dir::claim(&config.data_dir)?;
        let state = Arc::new(State {
            id: config.id,
            data_dir: config.data_dir.clone(),
            log_config: config.log.clone(),
            replica_lag: config.replica_lag,
            ack_timeout: config.ack_timeout,
            replica_fetch_bytes: config.replica_fetch_bytes.max(1024),
            partitions: RwLock::default(),
            fetchers: Mutex::default(),
            appended: tokio::sync::Notify::new(),
            isr_recheck: tokio::sync::Notify::new(),
            isr_wake_at: std::sync::atomic::AtomicU64::new(u64::MAX),
            unflushed: tokio::sync::Notify::new(),
            assignment_applied: tokio::sync::Notify::new(),
            hw_moved: tokio::sync::Notify::new(),
            leaving: AtomicBool::new(false),
            handle: OnceLock::new(),
            zk: OnceLock::new(),
            pubsub: OnceLock::new(),
            asleep: tokio::sync::watch::channel(false).0,
            alarm_ms: tokio::sync::watch::channel(0).0,
            held_fetches: Mutex::default(),
            reassign: tokio::sync::Notify::new(),
            pehra: OnceLock::new(),
            restart: tokio::sync::watch::channel(false).0,
            pehredar_cache: devices::PehredarCache::default(),
            credentials: config.security.as_ref().map(|s| s.credentials.clone()),
            secured_peers: Mutex::default(),
            hw_checkpoint: Mutex::default(),
            logs_opened: AtomicBool::new(false),
            open_failures: Mutex::default(),
            epoch_floors: Mutex::default(),
            eligibility_changed: tokio::sync::Notify::new(),
            allow_truncation_below_hw: config.allow_truncation_below_hw,
            metrics: config.metrics.counters.clone(),
        });
        config.metrics.attach(&state);
        let mut routes = router(state.clone());
        let policy = config.security.as_ref().map(|security| {
            Arc::new(pehra_shared::driver::security::PolicyCell::new(
                security.policy.clone(),
            ))
        });
        if let Some(policy) = &policy {
            routes = routes.guard(access::guard(policy.clone(), config.insecure_device_routes));
        }
        let endpoint = Endpoint::bind(config.listen, config.coap.clone(), routes)
            .await
            .map_err(|source| BrokerError::Bind {
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
            .map_err(|e| BrokerError::Security(e.to_string()))?;
            if let (Some(updates), Some(policy)) = (config.security_updates.clone(), &policy) {
                pehra_zookeeper::server::security_updates::follow(
                    updates,
                    endpoint.handle(),
                    policy.clone(),
                    security.credentials.identity().kid.clone(),
                    "broker",
                );
            }
        }
        let _ = state.handle.set(endpoint.handle());
        let options = ClientOptions {
            session_timeout: config.session_timeout,
            credentials: state.credentials.clone(),
            ..ClientOptions::default()
        };
        let zk = Arc::new(Client::connect_any(&config.zookeeper, options).await?);
        let _ = state.zk.set(zk.clone());
        cluster::ensure_path(&zk, BROKERS).await?;
        cluster::ensure_path(&zk, TOPICS).await?;
        eligibility::prepare(&zk).await?;
        let info = BrokerInfo {
            id: config.id,
            addr: advertised(endpoint.local_addr(), &config.zookeeper).to_string(),
            host: config.host.clone(),
            rack: config.rack.clone(),
        };
        // Over the session client: the forwarding client's watches (topics, the epochs of
        // the partitions it forwarded to) are kept by the session, not polled.
        let cluster = crate::client::ClusterClient::over_zookeeper(
            zk.clone(),
            zk.server(),
            state.credentials.clone(),
        )
        .await
        .map_err(|e| BrokerError::PubSub(e.to_string()))?;
        let _ = state
            .pubsub
            .set(crate::pubsub::PubSub::new(cluster, endpoint.handle()));
        register(&zk, &endpoint.handle(), &info, config.registration_wait).await?;
        tracing::info!(id = config.id, addr = %info.addr, "broker registered");
        let tasks = vec![
            tokio::spawn(assignment::follow_assignments(zk.clone(), state.clone())),
            tokio::spawn(eligibility::publish(zk.clone(), state.clone())),
            tokio::spawn(handover::follow(
                zk.clone(),
                state.clone(),
                produce::produce,
            )),
            tokio::spawn(flush_after_writes(state.clone(), config.flush_interval)),
            tokio::spawn(retain_periodically(state.clone(), config.retention_check)),
            tokio::spawn(scrub_periodically(
                state.clone(),
                config.scrub_bytes_per_sec,
            )),
            tokio::spawn(replica::maintain_isr(state.clone())),
            tokio::spawn(follow_topics(state.clone())),
            tokio::spawn(pehra::start(
                state.clone(),
                zk.clone(),
                config.pehra.clone(),
                info.addr.clone(),
            )),
            tokio::spawn(maintenance::run(
                zk.clone(),
                state.clone(),
                config.controlled_shutdown_timeout,
                config.maintenance_commands.clone(),
            )),
        ];
        Ok(Broker {
            endpoint,
            zk,
            state,
            tasks,
            id: config.id,
            controlled_shutdown_timeout: config.controlled_shutdown_timeout,
            _data_dir: data_dir,
        })
    }

    /// The address it serves on.
    pub fn local_addr(&self) -> SocketAddr {
        self.endpoint.local_addr()
    }

    /// Its CoAP endpoint (for its counters: [`Handle::stats`]).
    pub fn coap_handle(&self) -> Handle {
        self.endpoint.handle()
    }

    /// The partitions it leads now.
    pub fn led_partitions(&self) -> Vec<(String, u32)> {
        let mut keys: Vec<_> = self
            .state
            .partitions
            .read()
            .iter()
            .filter(|(_, p)| p.lock().replica.leads())
            .map(|(k, _)| k.clone())
            .collect();
        keys.sort();
        keys
    }

    /// Waits until the zookeeper session is lost (then the broker must rejoin), or a
    /// maintenance order asks for a restart in place
    /// ([`BrokerError::RestartRequested`]: then call [`Broker::restart_in_place`]).
    pub async fn wait(&self) -> BrokerError {
        let mut state = self.zk.session_state();
        let mut restart = self.state.restart.subscribe();
        tokio::select! {
            _ = state.wait_for(|s| matches!(s, SessionState::Expired | SessionState::Closed)) => {
                BrokerError::SessionLost
            }
            Ok(_) = restart.wait_for(|r| *r) => BrokerError::RestartRequested,
        }
    }

    /// Leaves the cluster explicitly (seed 003), without clients seeing errors: stops
    /// following, asks the controller to move leadership of every partition it leads to
    /// another in-sync replica (`/admin/shutdown/{id}`), waits for that (up to
    /// `controlled_shutdown_timeout`), then flushes every partition and closes the
    /// zookeeper session, so the registration goes at once.
    pub async fn shutdown(self) {
        self.state.leaving.store(true, Ordering::SeqCst);
        self.state.fetchers.lock().clear();
        // Bounded as a whole: with the zookeeper unreachable every call would wait out
        // CoAP retransmissions.
        let limit = self.controlled_shutdown_timeout;
        match tokio::time::timeout(limit, self.move_leadership_away()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(id = self.id, error = %e, "controlled shutdown: leadership not moved; leaving anyway")
            }
            Err(_) => {
                tracing::warn!(
                    id = self.id,
                    ?limit,
                    "controlled shutdown: the zookeeper did not answer in time; leaving anyway"
                )
            }
        }
        self.stop(true).await;
    }

    /// Stops at once without asking for leadership to move (after the session was lost,
    /// or to simulate a crash in tests): steps down everywhere and flushes.
    pub async fn abandon(self) {
        self.stop(false).await;
    }

    async fn move_leadership_away(&self) -> Result<(), BrokerError> {
        move_leadership_away(&self.zk, &self.state, self.controlled_shutdown_timeout).await
    }

    /// Restarts in place after a maintenance order ([`BrokerError::RestartRequested`]):
    /// stops as a controlled shutdown does once leadership has moved (every partition
    /// flushed, the zookeeper session closed) and re-executes this program with the same
    /// arguments, so the process keeps its PID. Returns only if the exec failed, after
    /// setting the maintenance order `failed` with the error.
    pub async fn restart_in_place(self) -> std::io::Error {
        let id = self.id;
        let zookeeper = self.zk.server();
        let credentials = self.state.credentials.clone();
        self.stop(true).await;
        tracing::info!(id, "maintenance: re-executing the broker in place");
        let error = maintenance::exec_self();
        tracing::error!(id, error = %error, "maintenance: cannot re-execute the broker");
        maintenance::report_restart_failure(zookeeper, credentials, id, &error).await;
        error
    }

    async fn stop(self, close_session: bool) {
        for task in &self.tasks {
            task.abort();
        }
        self.state.fetchers.lock().clear();
        for p in self.state.partitions.read().values() {
            p.lock().replica.step_down("the broker is stopping");
        }
        flush_all(&self.state);
        if close_session {
            // Other tasks may still hold the client: end the session through it, so the
            // registration goes at once (an explicit leave, not a crash).
            match tokio::time::timeout(Duration::from_secs(2), self.zk.end_session()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "closing the zookeeper session"),
                Err(_) => {
                    tracing::warn!("closing the zookeeper session: no answer; it will expire")
                }
            }
        }
        self.endpoint.shutdown().await;
        tracing::info!(id = self.id, "broker stopped");
    }
}

/// Creates the broker's ephemeral registration. One already there is either this
/// broker's from a previous life (a crash: its session has not expired yet) or another
/// live broker's with the same id. A registration naming another address (or host) is
/// probed there: if something answers, the id is taken and the start fails at once;
/// otherwise (and for our own address) it is waited out, up to `wait`. A registration
/// that outlives that belongs to another live broker with our id too.
async fn register(
    zk: &Client,
    handle: &Handle,
    info: &BrokerInfo,
    wait: Duration,
) -> Result<(), BrokerError> {
    let path = cluster::broker_path(info.id);
    let data = wire::encode(info).expect("encodes");
    let deadline = tokio::time::Instant::now() + wait;
    // With the registration, in one multi, the report that none of its replicas may lead
    // yet: the controller, which reads the registrations before the reports, never sees
    // this broker live without it (it goes once the logs are open and checked).
    let (marker, reason) = eligibility::starting_marker(info.id);
    let ops = vec![
        wire::MultiOp::Create {
            path: marker.clone(),
            data: reason,
            ephemeral: true,
            sequential: false,
        },
        wire::MultiOp::Create {
            path: path.clone(),
            data: data.clone(),
            ephemeral: true,
            sequential: false,
        },
    ];
    loop {
        match zk.multi(ops.clone()).await {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == Some(ErrorKind::NodeExists) => {
                // A report left without its registration can only be a previous life's
                // whose session is ending: it goes with it; do not spin meanwhile.
                if matches!(zk.exists(&path).await, Ok(None)) {
                    let _ = zk.delete(&marker, None).await;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
            Err(e) => return Err(e.into()),
        }
        let mut watch = zk.watch_data(&path).await?;
        // The watch's first event is the registration as it is now.
        let holder = match watch.next().await {
            Some(Ok(pehra_zookeeper::WatchEvent::Data(node))) => {
                wire::decode::<BrokerInfo>(&node.data).ok()
            }
            _ => continue, // gone meanwhile: try again
        };
        let holder_addr = holder
            .as_ref()
            .map_or_else(|| "an unknown address".to_string(), |h| h.addr.clone());
        let in_use = || BrokerError::IdInUse {
            id: info.id,
            addr: holder_addr.clone(),
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(in_use());
        }
        let ours = holder
            .as_ref()
            .is_some_and(|h| h.addr == info.addr && h.host == info.host);
        let waiting = || {
            tracing::warn!(
                id = info.id,
                holder = %holder_addr,
                "broker id already registered: waiting for that session to expire"
            )
        };
        let gone = async {
            while let Some(event) = watch.next().await {
                if matches!(event, Ok(pehra_zookeeper::WatchEvent::Deleted) | Err(_)) {
                    return;
                }
            }
        };
        // Another address: whether a live process answers there (a paused or dead one
        // does not, and its registration expires with its session).
        let probed = holder
            .as_ref()
            .filter(|_| !ours)
            .and_then(|h| h.addr.parse::<SocketAddr>().ok());
        let answers = async {
            if let Some(addr) = probed {
                let ping = handle.request(addr, Request::get(".well-known/core"));
                tokio::pin!(ping);
                match tokio::time::timeout(Duration::from_secs(1), &mut ping).await {
                    Ok(Ok(_)) => return,
                    Ok(Err(_)) => waiting(),
                    Err(_) => {
                        // No answer yet (paused, or gone): wait, and keep listening.
                        waiting();
                        if ping.await.is_ok() {
                            return;
                        }
                    }
                }
            } else {
                waiting();
            }
            std::future::pending().await
        };
        tokio::select! {
            gone = tokio::time::timeout_at(deadline, gone) => {
                if gone.is_err() {
                    return Err(in_use());
                }
            }
            () = answers => return Err(in_use()),
        }
    }
}

/// The controlled-shutdown step: asks the controller to move leadership of every
/// partition this broker leads to another in-sync replica (the ephemeral
/// `/admin/shutdown/{id}`) and waits until no partition led here has another in-sync
/// replica, up to `timeout`. Also used by the maintenance agent.
pub(crate) async fn move_leadership_away(
    zk: &Client,
    state: &State,
    timeout: Duration,
) -> Result<(), BrokerError> {
    let id = state.id;
    let path = cluster::shutdown_path(id);
    cluster::ensure_path(zk, cluster::SHUTDOWN).await?;
    match zk.create(&path, b"", CreateMode::Ephemeral).await {
        Ok(_) => {}
        Err(e) if e.kind() == Some(ErrorKind::NodeExists) => {}
        Err(e) => return Err(e.into()),
    }
    tracing::info!(
        id,
        "controlled shutdown: asked the controller to move leadership"
    );
    let movable = |state: &State| {
        state
            .partitions
            .read()
            .iter()
            .filter(|(_, p)| {
                let p = p.lock();
                p.replica.meta().leader == Some(state.id)
                    && p.replica.meta().isr.iter().any(|&r| r != state.id)
            })
            .count()
    };
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let applied = state.assignment_applied.notified();
        tokio::pin!(applied);
        applied.as_mut().enable();
        let left = movable(state);
        if left == 0 {
            tracing::info!(
                id,
                "controlled shutdown: no partition led here has another in-sync replica"
            );
            return Ok(());
        }
        if tokio::time::timeout_at(deadline, applied).await.is_err() {
            tracing::warn!(
                id,
                left,
                "controlled shutdown: timed out waiting for leadership to move"
            );
            return Ok(());
        }
    }
}

/// The address other machines reach us at: the bound one, with an unspecified IP
/// replaced by the one we reach the zookeeper from.
fn advertised(local: SocketAddr, zookeepers: &[SocketAddr]) -> SocketAddr {
    if !local.ip().is_unspecified() {
        return local;
    }
    let Some(&zookeeper) = zookeepers.first() else {
        return local;
    };
    let ip = std::net::UdpSocket::bind(pehra_shared::driver::any_local_for(zookeeper))
        .and_then(|s| {
            s.connect(zookeeper)?;
            s.local_addr()
        })
        .map(|a| a.ip())
        .unwrap_or(zookeeper.ip());
    SocketAddr::new(ip, local.port())
}

/// Flushes at most `every` after the first write not flushed yet (the flush interval);
/// an idle broker does not wake for it.
async fn flush_after_writes(state: Arc<State>, every: Duration) {
    loop {
        state.unflushed.notified().await;
        // Writes of the next `every` go in the same flush.
        tokio::time::sleep(every).await;
        pehra::awake(&state).await;
        if !needs_flush(&state) && !hw_checkpoint_stale(&state) {
            continue;
        }
        let state = state.clone();
        let _ = pehra_shared::driver::blocking::run(move || flush_all(&state)).await;
    }
}

/// Keeps the topics the Pehredar's forwarding knows current (`ClusterClient::follow_topics`),
/// so that holding a produce for a new topic reads nothing from the zookeeper; started
/// again a second after its watch ends.
async fn follow_topics(state: Arc<State>) {
    let Some(pubsub) = state.pubsub.get().cloned() else {
        return;
    };
    loop {
        if let Err(e) = pubsub.cluster().follow_topics().await {
            tracing::debug!(error = %e, "following the topics");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn retain_periodically(state: Arc<State>, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        pehra::awake(&state).await;
        let state = state.clone();
        let now_ms = now_ms();
        let _ = pehra_shared::driver::blocking::run(move || {
            let partitions: Vec<_> = state.partitions.read().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            for ((topic, partition), p) in partitions {
                match p.lock().replica.log_mut().apply_retention(now_ms) {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(%topic, partition, segments = n, "retention deleted old segments"),
                    Err(e) => tracing::warn!(%topic, partition, error = %e, "applying retention"),
                }
            }
        })
        .await;
    }
}

/// Checks `per_sec` bytes of the partition logs every second, round the partitions, and
/// reports damage it finds (the replica may not lead until it is healed).
async fn scrub_periodically(state: Arc<State>, per_sec: u64) {
    if per_sec == 0 {
        return;
    }
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next = 0usize;
    loop {
        ticker.tick().await;
        pehra::awake(&state).await;
        let state = state.clone();
        let scrubbed = pehra_shared::driver::blocking::run(move || {
            let mut partitions: Vec<_> = state
                .partitions
                .read()
                .iter()
                .map(|(k, p)| (k.clone(), p.clone()))
                .collect();
            partitions.sort_by(|a, b| a.0.cmp(&b.0));
            // One step per partition at most, round the partitions from where the last
            // tick stopped; a partition whose pass is not complete used the budget up and
            // goes on at the next tick.
            let mut budget = per_sec;
            let mut found = 0;
            for _ in 0..partitions.len() {
                if budget == 0 {
                    break;
                }
                let ((topic, partition), p) = &partitions[next % partitions.len()];
                let step = p.lock().replica.log_mut().scrub_step(budget);
                match step {
                    Ok(progress) => {
                        budget = budget.saturating_sub(progress.bytes_checked);
                        found += progress.found;
                        if !progress.pass_complete && progress.bytes_checked > 0 {
                            break;
                        }
                    }
                    Err(e) => tracing::warn!(%topic, partition, error = %e, "scrubbing"),
                }
                next = next.wrapping_add(1);
            }
            if found > 0 {
                state.eligibility_changed.notify_one();
            }
            next
        })
        .await;
        if let Ok(n) = scrubbed {
            next = n;
        }
    }
}

/// Whether any partition has records written but not yet flushed.
fn needs_flush(state: &State) -> bool {
    // A partition busy right now (locked) may well have something to flush.
    state.partitions.read().values().any(|p| {
        p.try_lock()
            .is_none_or(|p| p.replica.log().flushed_offset() < p.replica.log().log_end_offset())
    })
}

fn flush_all(state: &State) {
    let partitions: Vec<_> = state
        .partitions
        .read()
        .iter()
        .map(|(k, p)| (k.clone(), p.clone()))
        .collect();
    let mut hws = Vec::with_capacity(partitions.len());
    for (key, p) in partitions {
        let mut p = p.lock();
        if p.replica.log().flushed_offset() < p.replica.log().log_end_offset() {
            if let Err(e) = p.replica.log_mut().flush() {
                tracing::error!(error = %e, "flushing a partition log");
            }
        }
        hws.push((key, p.replica.durable_hw()));
    }
    checkpoint_high_watermarks(state, hws);
}

/// Makes the high watermarks `hws` durable in their partitions' checkpoints, where they
/// moved.
fn checkpoint_high_watermarks(state: &State, hws: Vec<(PartitionKey, u64)>) {
    let mut checkpoint = state.hw_checkpoint.lock();
    for (key, hw) in hws {
        if checkpoint.get(&key) == Some(&hw) {
            continue;
        }
        let dir = assignment::partition_dir(state, &key);
        match hw_checkpoint::store(&dir, hw) {
            Ok(()) => {
                checkpoint.insert(key, hw);
            }
            Err(e) => tracing::error!(error = %e, "writing the high-watermark checkpoint"),
        }
    }
}

/// Whether a partition's high watermark moved past what the checkpoint holds.
fn hw_checkpoint_stale(state: &State) -> bool {
    let checkpoint = state.hw_checkpoint.lock();
    state.partitions.read().iter().any(|(k, p)| {
        p.try_lock()
            .is_some_and(|p| checkpoint.get(k).copied() != Some(p.replica.durable_hw()))
    })
}

/// The CoAP resources of a broker.
fn router(state: Arc<State>) -> Router {
    let (produce_state, fetch_state, observe_state) = (state.clone(), state.clone(), state.clone());
    let (replica_state, checkin_state, wake_state) = (state.clone(), state.clone(), state.clone());
    let (dev_checkin, dev_readings, dev_downlink) = (state.clone(), state.clone(), state.clone());
    let pubsub = move |incoming: Incoming, responder: Responder| match state.pubsub.get() {
        Some(ps) => {
            pehra::traffic(&state);
            tokio::spawn(ps.clone().handle(incoming, responder));
        }
        None => responder.respond(error_response(ErrorKind::Busy, "the broker is starting")),
    };
    let pubsub = std::sync::Arc::new(pubsub);
    let ps = |p: &std::sync::Arc<_>| {
        let p: std::sync::Arc<dyn Fn(Incoming, Responder) + Send + Sync> =
            std::sync::Arc::clone(p) as _;
        move |i, r| p(i, r)
    };
    Router::new()
        .route_deferred(Method::Get, "ps", ps(&pubsub))
        .route_deferred(Method::Post, "ps", ps(&pubsub))
        .route_deferred(Method::Fetch, "ps", ps(&pubsub))
        .route_deferred(Method::Get, "ps/*", ps(&pubsub))
        .route_deferred(Method::Fetch, "ps/*", ps(&pubsub))
        .route_deferred(Method::Post, "ps/*", ps(&pubsub))
        .route_deferred(Method::Put, "ps/*", ps(&pubsub))
        .route_deferred(Method::IPatch, "ps/*", ps(&pubsub))
        .route_deferred(Method::Delete, "ps/*", ps(&pubsub))
        .link(
            Link::new("ps")
                .attr("rt", crate::pubsub::RT_COLLECTION)
                .attr("ct", "40"),
        )
        .route_deferred(Method::Post, "produce", move |incoming, responder| {
            pehra::traffic(&produce_state);
            produce::produce(&produce_state, incoming, responder)
        })
        .route(Method::Post, "fetch", move |incoming| {
            pehra::traffic(&fetch_state);
            let response = fetch::fetch(&fetch_state, &incoming);
            async move { response }
        })
        .route(Method::Get, "p/{topic}/{partition}", move |incoming| {
            let response = fetch::partition_state(&observe_state, &incoming);
            async move { response }
        })
        .route(Method::Post, pehra::WAKE_PATH, move |_incoming| {
            let response = pehra::woken(&wake_state);
            async move { response }
        })
        .route(Method::Post, "pehra/checkin", move |incoming| {
            let response = pehra::checkin(&checkin_state, &incoming);
            async move { response }
        })
        .route_deferred(Method::Post, "dev/checkin", move |incoming, responder| {
            devices::handle(&dev_checkin, devices::Route::CheckIn, incoming, responder)
        })
        .route_deferred(
            Method::Post,
            "dev/{node}/readings",
            move |incoming, responder| {
                devices::handle(&dev_readings, devices::Route::Readings, incoming, responder)
            },
        )
        .route_deferred(
            Method::Post,
            "dev/{node}/downlink",
            move |incoming, responder| {
                devices::handle(&dev_downlink, devices::Route::Downlink, incoming, responder)
            },
        )
        .link(
            Link::new("dev/checkin")
                .attr("rt", "pehra.dev.checkin")
                .attr("ct", "60"),
        )
        .link(Link::new("dev").attr("rt", "pehra.dev").attr("ct", "60"))
        .route_deferred(Method::Post, "replica", move |incoming, responder| {
            replica::replica_fetch(replica_state.clone(), incoming, responder)
        })
        .link(
            Link::new("produce")
                .attr("rt", "pehra.produce")
                .attr("ct", "60"),
        )
        .link(
            Link::new("fetch")
                .attr("rt", "pehra.fetch")
                .attr("ct", "60"),
        )
        .link(
            Link::new("p")
                .attr("rt", "pehra.partition")
                .attr("ct", "60")
                .flag("obs"),
        )
}

/// The partition if this broker leads it, else the `not_leader` answer.
fn lookup_leader(
    state: &State,
    topic: &str,
    partition: u32,
) -> Result<Arc<Mutex<Partition>>, Response> {
    lookup_any(state, topic, partition)
        .filter(|p| p.lock().replica.leads())
        .ok_or_else(|| {
            error_response(
                ErrorKind::NotLeader,
                &format!(
                    "broker {} does not lead {topic}/{partition}: ask the zookeeper for the leader",
                    state.id
                ),
            )
        })
}

/// This broker's replica of the partition, whatever its role.
fn lookup_any(state: &State, topic: &str, partition: u32) -> Option<Arc<Mutex<Partition>>> {
    state
        .partitions
        .read()
        .get(&(topic, partition) as &dyn partition::PartitionName)
        .cloned()
}

/// Milliseconds since the Unix epoch (the drivers' one wall clock).
fn now_ms() -> u64 {
    pehra_shared::driver::clock::unix_ms()
}
