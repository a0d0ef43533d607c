//! The broker: registers with the zookeeper, opens the partitions it leads, and serves
//! produce, fetch and partition observation over CoAP.

use crate::log::{FlushPolicy, LogConfig, LogError, PartitionLog};
use pehra_shared::api::{cbor_response, decode_request, error_response};
use pehra_shared::coap::{link_format::Link, Code, Config as CoapConfig, Method, Response};
use pehra_shared::driver::{Endpoint, Handle, Incoming, Responder, Router};
use pehra_shared::wire::{
    self, Acks, BrokerInfo, ErrorKind, FetchRequest, FetchResponse, FetchedBatch,
    PartitionMetadata, ProduceRequest, ProduceResponse,
};
use pehra_zookeeper::cluster::{self, BROKERS, TOPICS};
use pehra_zookeeper::{Client, ClientOptions, CreateMode, SessionState, ZkError};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;
use thiserror::Error;
use tokio::sync::mpsc;

/// How a broker is set up.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Its id in the cluster.
    pub id: u32,
    /// UDP address to serve CoAP on.
    pub listen: SocketAddr,
    /// The zookeeper.
    pub zookeeper: SocketAddr,
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
    /// The zookeeper session timeout.
    pub session_timeout: Duration,
    /// How long to wait for an earlier registration of this id to expire (a restart
    /// after a crash) before deciding another live broker has the id.
    pub registration_wait: Duration,
    /// CoAP parameters.
    pub coap: CoapConfig,
}

impl BrokerConfig {
    /// Defaults for broker `id`.
    pub fn new(id: u32, listen: SocketAddr, zookeeper: SocketAddr, data_dir: PathBuf) -> Self {
        BrokerConfig {
            id,
            listen,
            zookeeper,
            data_dir,
            host: hostname(),
            rack: None,
            log: LogConfig {
                flush: FlushPolicy::Never,
                ..LogConfig::default()
            },
            flush_interval: Duration::from_millis(200),
            retention_check: Duration::from_secs(60),
            session_timeout: Duration::from_secs(6),
            registration_wait: Duration::from_secs(30),
            coap: CoapConfig {
                nstart: 16,
                ..CoapConfig::default()
            },
        }
    }
}

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
    /// Another live broker has this id.
    #[error("broker id {0} is registered by another live broker (it did not expire in time)")]
    IdInUse(u32),
    /// The pub-sub interface could not reach the cluster.
    #[error("pub-sub: {0}")]
    PubSub(String),
    /// The zookeeper session was lost: the broker must rejoin.
    #[error("the zookeeper session expired; the broker stopped serving")]
    SessionLost,
}

/// One partition this broker leads.
struct Partition {
    log: PartitionLog,
    meta: PartitionMetadata,
    /// The last batch per idempotent producer: (base sequence, what it was answered).
    producers: HashMap<u64, (u32, ProduceResponse)>,
}

type PartitionKey = (String, u32);

struct State {
    id: u32,
    data_dir: PathBuf,
    log_config: LogConfig,
    partitions: RwLock<HashMap<PartitionKey, Arc<Mutex<Partition>>>>,
    handle: OnceLock<Handle>,
    pubsub: OnceLock<Arc<crate::pubsub::PubSub>>,
}

/// A running broker.
pub struct Broker {
    endpoint: Endpoint,
    zk: Arc<Client>,
    state: Arc<State>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    id: u32,
}

impl Broker {
    /// Binds, registers with the zookeeper as `/brokers/ids/{id}`, and starts serving the
    /// partitions the controller gives it to lead.
    pub async fn start(config: BrokerConfig) -> Result<Broker, BrokerError> {
        let state = Arc::new(State {
            id: config.id,
            data_dir: config.data_dir.clone(),
            log_config: config.log.clone(),
            partitions: RwLock::default(),
            handle: OnceLock::new(),
            pubsub: OnceLock::new(),
        });
        let endpoint = Endpoint::bind(config.listen, config.coap.clone(), router(state.clone()))
            .await
            .map_err(|source| BrokerError::Bind {
                addr: config.listen,
                source,
            })?;
        let _ = state.handle.set(endpoint.handle());
        let options = ClientOptions {
            session_timeout: config.session_timeout,
            ..ClientOptions::default()
        };
        let zk = Arc::new(Client::connect(config.zookeeper, options).await?);
        cluster::ensure_path(&zk, BROKERS).await?;
        cluster::ensure_path(&zk, TOPICS).await?;
        let info = BrokerInfo {
            id: config.id,
            addr: advertised(endpoint.local_addr(), config.zookeeper).to_string(),
            host: config.host.clone(),
            rack: config.rack.clone(),
        };
        let cluster = crate::client::ClusterClient::connect(config.zookeeper)
            .await
            .map_err(|e| BrokerError::PubSub(e.to_string()))?;
        let _ = state
            .pubsub
            .set(crate::pubsub::PubSub::new(cluster, endpoint.handle()));
        register(&zk, &info, config.registration_wait).await?;
        tracing::info!(id = config.id, addr = %info.addr, "broker registered");
        let tasks = vec![
            tokio::spawn(follow_assignments(zk.clone(), state.clone())),
            tokio::spawn(flush_periodically(state.clone(), config.flush_interval)),
            tokio::spawn(retain_periodically(state.clone(), config.retention_check)),
        ];
        Ok(Broker {
            endpoint,
            zk,
            state,
            tasks,
            id: config.id,
        })
    }

    /// The address it serves on.
    pub fn local_addr(&self) -> SocketAddr {
        self.endpoint.local_addr()
    }

    /// The partitions it leads now.
    pub fn led_partitions(&self) -> Vec<(String, u32)> {
        let mut keys: Vec<_> = self
            .state
            .partitions
            .read()
            .expect("lock")
            .keys()
            .cloned()
            .collect();
        keys.sort();
        keys
    }

    /// Waits until the zookeeper session is lost (then the broker must rejoin).
    pub async fn wait(&self) -> BrokerError {
        let mut state = self.zk.session_state();
        let _ = state
            .wait_for(|s| matches!(s, SessionState::Expired | SessionState::Closed))
            .await;
        BrokerError::SessionLost
    }

    /// Leaves the cluster explicitly (seed 003): flushes every partition and closes the
    /// zookeeper session, so the registration goes at once and a controlled shutdown is
    /// told apart from a crash.
    pub async fn shutdown(self) {
        for task in &self.tasks {
            task.abort();
        }
        flush_all(&self.state);
        if let Ok(zk) = Arc::try_unwrap(self.zk) {
            if let Err(e) = zk.close().await {
                tracing::warn!(error = %e, "closing the zookeeper session");
            }
        }
        self.endpoint.shutdown().await;
        tracing::info!(id = self.id, "broker stopped");
    }
}

/// Creates `/brokers/ids/{id}`. If it exists, it may belong to this broker's previous
/// life (a crash: its session has not expired yet), so wait for it to go, up to `wait`;
/// a registration that outlives that belongs to another live broker with our id.
async fn register(zk: &Client, info: &BrokerInfo, wait: Duration) -> Result<(), BrokerError> {
    let path = cluster::broker_path(info.id);
    let data = wire::encode(info).expect("encodes");
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match zk.create(&path, &data, CreateMode::Ephemeral).await {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == Some(ErrorKind::NodeExists) => {}
            Err(e) => return Err(e.into()),
        }
        tracing::warn!(
            id = info.id,
            "broker id already registered: waiting for that session to expire"
        );
        let mut watch = zk.watch_data(&path).await?;
        let gone = tokio::time::timeout_at(deadline, async {
            while let Some(event) = watch.next().await {
                if matches!(event, Ok(pehra_zookeeper::WatchEvent::Deleted) | Err(_)) {
                    return;
                }
            }
        })
        .await;
        if gone.is_err() {
            return Err(BrokerError::IdInUse(info.id));
        }
    }
}

/// The address other machines reach us at: the bound one, with an unspecified IP
/// replaced by the one we reach the zookeeper from.
fn advertised(local: SocketAddr, zookeeper: SocketAddr) -> SocketAddr {
    if !local.ip().is_unspecified() {
        return local;
    }
    let ip = std::net::UdpSocket::bind(if zookeeper.is_ipv6() {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    })
    .and_then(|s| {
        s.connect(zookeeper)?;
        s.local_addr()
    })
    .map(|a| a.ip())
    .unwrap_or(zookeeper.ip());
    SocketAddr::new(ip, local.port())
}

/// Keeps the set of open partitions equal to the partitions the controller says this
/// broker leads, re-reading the assignment whenever a watched znode changes.
async fn follow_assignments(zk: Arc<Client>, state: Arc<State>) {
    let (changed_tx, mut changed) = mpsc::unbounded_channel::<()>();
    let watched: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    loop {
        match read_assignment(&zk, state.id).await {
            Ok((leading, paths)) => {
                apply_assignment(&state, leading).await;
                for (path, children) in paths {
                    watch_for_changes(&zk, path, children, &watched, &changed_tx).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading partition assignments"),
        }
        if changed.recv().await.is_none() {
            return;
        }
        while changed.try_recv().is_ok() {}
    }
}

/// The partitions `id` leads, and the znodes to watch for changes (path, children?).
async fn read_assignment(
    zk: &Client,
    id: u32,
) -> Result<
    (
        BTreeMap<PartitionKey, PartitionMetadata>,
        Vec<(String, bool)>,
    ),
    ZkError,
> {
    let mut leading = BTreeMap::new();
    let mut paths = vec![(TOPICS.to_string(), true)];
    let (topics, _) = zk.get_children(TOPICS).await?;
    for topic in topics {
        let parent = cluster::partitions_path(&topic);
        paths.push((parent.clone(), true));
        let partitions = match zk.get_children(&parent).await {
            Ok((p, _)) => p,
            Err(e) if e.kind() == Some(ErrorKind::NotFound) => {
                paths.push((cluster::topic_path(&topic), false));
                continue;
            }
            Err(e) => return Err(e),
        };
        for p in partitions {
            let Ok(partition) = p.parse::<u32>() else {
                continue;
            };
            let path = cluster::partition_path(&topic, partition);
            paths.push((path.clone(), false));
            let Ok((data, _)) = zk.get_data(&path).await else {
                continue;
            };
            let Ok(meta) = wire::decode::<PartitionMetadata>(&data) else {
                continue;
            };
            if meta.leader == Some(id) {
                leading.insert((topic.clone(), partition), meta);
            }
        }
    }
    Ok((leading, paths))
}

async fn watch_for_changes(
    zk: &Client,
    path: String,
    children: bool,
    watched: &Arc<Mutex<BTreeSet<String>>>,
    changed: &mpsc::UnboundedSender<()>,
) {
    if !watched.lock().expect("lock").insert(path.clone()) {
        return;
    }
    let watch = if children {
        zk.watch_children(&path).await
    } else {
        zk.watch_data(&path).await
    };
    let Ok(mut watch) = watch else {
        watched.lock().expect("lock").remove(&path);
        return;
    };
    let (watched, changed) = (watched.clone(), changed.clone());
    tokio::spawn(async move {
        // Every event triggers a re-read, the first (the state at registration) too: the
        // znode may have changed between our read and this watch.
        while let Some(event) = watch.next().await {
            if changed.send(()).is_err() || event.is_err() {
                break;
            }
        }
        watched.lock().expect("lock").remove(&path);
        let _ = changed.send(());
    });
}

async fn apply_assignment(state: &Arc<State>, leading: BTreeMap<PartitionKey, PartitionMetadata>) {
    let open: BTreeSet<PartitionKey> = state
        .partitions
        .read()
        .expect("lock")
        .keys()
        .cloned()
        .collect();
    for (key, meta) in &leading {
        if let Some(p) = state.partitions.read().expect("lock").get(key) {
            p.lock().expect("lock").meta = meta.clone();
            continue;
        }
        let dir = state.data_dir.join(format!("{}-{}", key.0, key.1));
        let config = state.log_config.clone();
        let opened = tokio::task::spawn_blocking(move || PartitionLog::open(&dir, config))
            .await
            .expect("open task");
        match opened {
            Ok((log, recovery)) => {
                tracing::info!(
                    topic = %key.0, partition = key.1,
                    start = recovery.log_start_offset, end = recovery.log_end_offset,
                    cut = recovery.truncated_bytes, "leading partition"
                );
                let partition = Partition {
                    log,
                    meta: meta.clone(),
                    producers: HashMap::new(),
                };
                state
                    .partitions
                    .write()
                    .expect("lock")
                    .insert(key.clone(), Arc::new(Mutex::new(partition)));
            }
            Err(e) => {
                tracing::error!(topic = %key.0, partition = key.1, error = %e, "cannot open the partition log")
            }
        }
    }
    for key in open.difference(&leading.keys().cloned().collect()) {
        if let Some(p) = state.partitions.write().expect("lock").remove(key) {
            if let Err(e) = p.lock().expect("lock").log.flush() {
                tracing::warn!(error = %e, "flushing a partition no longer led");
            }
            tracing::info!(topic = %key.0, partition = key.1, "no longer leading partition");
        }
    }
}

async fn flush_periodically(state: Arc<State>, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    loop {
        ticker.tick().await;
        let state = state.clone();
        let _ = tokio::task::spawn_blocking(move || flush_all(&state)).await;
    }
}

async fn retain_periodically(state: Arc<State>, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    loop {
        ticker.tick().await;
        let state = state.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            let partitions: Vec<_> = state.partitions.read().expect("lock").iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            for ((topic, partition), p) in partitions {
                match p.lock().expect("lock").log.apply_retention(now_ms) {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(%topic, partition, segments = n, "retention deleted old segments"),
                    Err(e) => tracing::warn!(%topic, partition, error = %e, "applying retention"),
                }
            }
        })
        .await;
    }
}

fn flush_all(state: &State) {
    let partitions: Vec<_> = state
        .partitions
        .read()
        .expect("lock")
        .values()
        .cloned()
        .collect();
    for p in partitions {
        let mut p = p.lock().expect("lock");
        if p.log.flushed_offset() < p.log.log_end_offset() {
            if let Err(e) = p.log.flush() {
                tracing::error!(error = %e, "flushing a partition log");
            }
        }
    }
}

/// The CoAP resources of a broker.
fn router(state: Arc<State>) -> Router {
    let (produce_state, fetch_state, observe_state) = (state.clone(), state.clone(), state.clone());
    let pubsub = move |incoming: Incoming, responder: Responder| match state.pubsub.get() {
        Some(ps) => {
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
        .route_deferred(Method::Get, "ps/*", ps(&pubsub))
        .route_deferred(Method::Put, "ps/*", ps(&pubsub))
        .route_deferred(Method::Delete, "ps/*", ps(&pubsub))
        .link(
            Link::new("ps")
                .attr("rt", crate::pubsub::RT_COLLECTION)
                .attr("ct", "40"),
        )
        .route_deferred(Method::Post, "produce", move |incoming, responder| {
            produce(&produce_state, incoming, responder)
        })
        .route(Method::Post, "fetch", move |incoming| {
            let response = fetch(&fetch_state, &incoming);
            async move { response }
        })
        .route(Method::Get, "p/{topic}/{partition}", move |incoming| {
            let response = partition_state(&observe_state, &incoming);
            async move { response }
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

fn lookup(state: &State, topic: &str, partition: u32) -> Result<Arc<Mutex<Partition>>, Response> {
    state
        .partitions
        .read()
        .expect("lock")
        .get(&(topic.to_string(), partition))
        .cloned()
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

/// The Observe resource of a partition: notified after every append.
fn partition_resource(topic: &str, partition: u32) -> String {
    format!("p/{topic}/{partition}")
}

fn produce(state: &State, incoming: Incoming, responder: Responder) {
    let result = append(state, &incoming);
    match result {
        Ok((request, response, log_end)) => {
            if let Some(handle) = state.handle.get() {
                let tick = cbor_response(Code::CONTENT, &tick(log_end));
                handle
                    .notify_detached(&partition_resource(&request.topic, request.partition), tick);
            }
            if request.acks == Acks::None {
                responder.discard();
            } else {
                responder.respond(cbor_response(Code::CHANGED, &response));
            }
        }
        Err(response) => responder.respond(response),
    }
}

fn append(
    state: &State,
    incoming: &Incoming,
) -> Result<(ProduceRequest, ProduceResponse, u64), Response> {
    let request: ProduceRequest = decode_request(&incoming.request)?;
    let count = wire::batch_record_count(&request.batch)
        .map_err(|e| error_response(ErrorKind::Malformed, &format!("bad record batch: {e}")))?;
    if count == 0 {
        return Err(error_response(
            ErrorKind::Malformed,
            "a record batch must hold at least one record",
        ));
    }
    let partition = lookup(state, &request.topic, request.partition)?;
    let mut p = partition.lock().expect("lock");
    if request.acks == Acks::All && p.meta.replicas.len() > 1 {
        return Err(error_response(
            ErrorKind::NotEnoughReplicas,
            "acks=all needs replication, which this broker does not do yet: use acks=1",
        ));
    }
    if let Some(epoch) = request.leader_epoch {
        if epoch != p.meta.leader_epoch {
            return Err(error_response(
                ErrorKind::FencedEpoch,
                &format!(
                    "leader epoch {epoch} is not the current {}",
                    p.meta.leader_epoch
                ),
            ));
        }
    }
    // Idempotent producer: the same batch sent again gets the same answer, not a copy.
    if let (Some(producer), Some(sequence)) = (request.producer_id, request.base_sequence) {
        if let Some((last, answer)) = p.producers.get(&producer) {
            if *last == sequence {
                let log_end = p.log.log_end_offset();
                return Ok((request, *answer, log_end));
            }
        }
    }
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let epoch = p.meta.leader_epoch;
    let info = p
        .log
        .append(&request.batch, count, now_ms, epoch)
        .map_err(|e| error_response(ErrorKind::Internal, &format!("append failed: {e}")))?;
    let response = ProduceResponse {
        base_offset: info.base_offset,
        record_count: count,
        leader_epoch: epoch,
    };
    if let (Some(producer), Some(sequence)) = (request.producer_id, request.base_sequence) {
        p.producers.insert(producer, (sequence, response));
    }
    Ok((request, response, info.log_end_offset))
}

fn tick(log_end_offset: u64) -> FetchResponse {
    FetchResponse {
        high_watermark: log_end_offset,
        log_end_offset,
        batches: Vec::new(),
    }
}

fn fetch(state: &State, incoming: &Incoming) -> Response {
    let request: FetchRequest = match decode_request(&incoming.request) {
        Ok(r) => r,
        Err(response) => return response,
    };
    let partition = match lookup(state, &request.topic, request.partition) {
        Ok(p) => p,
        Err(response) => return response,
    };
    let p = partition.lock().expect("lock");
    let (start, end) = (p.log.log_start_offset(), p.log.log_end_offset());
    if request.offset > end {
        return error_response(
            ErrorKind::Malformed,
            &format!(
                "offset {} is past the log end {end} of {}/{}",
                request.offset, request.topic, request.partition
            ),
        );
    }
    // Below the log start (retention removed it): read from the start.
    let offset = request.offset.max(start);
    let max_bytes = (request.max_bytes as usize).clamp(1, 4 * 1024 * 1024);
    match p.log.read(offset, max_bytes) {
        Ok(batches) => cbor_response(
            Code::CONTENT,
            &FetchResponse {
                high_watermark: end,
                log_end_offset: end,
                batches: batches
                    .into_iter()
                    .map(|b| FetchedBatch {
                        base_offset: b.base_offset,
                        batch: b.bytes,
                    })
                    .collect(),
            },
        ),
        Err(e) => error_response(log_error_kind(&e), &e.to_string()),
    }
}

fn log_error_kind(error: &LogError) -> ErrorKind {
    match error {
        LogError::OffsetOutOfRange { .. } => ErrorKind::Malformed,
        _ => ErrorKind::Internal,
    }
}

fn partition_state(state: &State, incoming: &Incoming) -> Response {
    let topic = incoming.params.get("topic").unwrap_or("");
    let Ok(partition) = incoming
        .params
        .get("partition")
        .unwrap_or("")
        .parse::<u32>()
    else {
        return error_response(ErrorKind::Malformed, "the partition must be a number");
    };
    match lookup(state, topic, partition) {
        Ok(p) => cbor_response(
            Code::CONTENT,
            &tick(p.lock().expect("lock").log.log_end_offset()),
        ),
        Err(response) => response,
    }
}
