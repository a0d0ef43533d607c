//! The client side of the brokers: cluster metadata from the zookeeper (as the Python
//! clone did: ask the zookeeper who leads), producing to partition leaders, fetching,
//! topic administration and committed consumer offsets; [`producer`]: the one producer
//! (partitioner, batcher, sequence numbers, pipelining) every sender of records uses.

use parking_lot::Mutex;
use pehra_cluster::{self as cluster, TOPICS};
use pehra_shared::api::{decode_response, response_error};
use pehra_shared::coap::{Config, Method, Request, CONTENT_FORMAT_CBOR};
use pehra_shared::driver::{self, Endpoint, Observation, Router};
use pehra_shared::security::credentials::Credentials;
use pehra_shared::wire::{
    self, Acks, BrokerInfo, ErrorBody, ErrorKind, FetchRequest, FetchResponse, MultiOp, NodeRole,
    PartitionMetadata, ProduceRequest, ProduceResponse, Record, RecordBatch, TopicConfig,
};
use pehra_zookeeper::{Client, CreateMode, ZkError};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use thiserror::Error;

pub mod producer;

/// Why a client call failed.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The zookeeper refused or was unreachable.
    #[error(transparent)]
    Zookeeper(#[from] ZkError),
    /// A broker refused; the message says why.
    #[error("{message}")]
    Broker {
        /// What kind of refusal.
        kind: ErrorKind,
        /// The broker's reason.
        message: String,
    },
    /// A broker did not answer.
    #[error("broker at {addr} unreachable: {source}")]
    Unreachable {
        /// Its address.
        addr: SocketAddr,
        /// Why.
        source: driver::Error,
    },
    /// No such topic or partition, or it has no live leader now.
    #[error("{0}")]
    NoLeader(String),
    /// The topic does not exist (the metadata was just reloaded): deleted, or never
    /// created.
    #[error("no such topic: {0}")]
    NoSuchTopic(String),
    /// Bad input from the caller.
    #[error("{0}")]
    Invalid(String),
    /// A topic's replication factor is above the number of live brokers: its partitions
    /// could not all be placed now (see
    /// [`ClusterClient::create_topic_allowing_under_replicated`]).
    #[error(
        "replication factor {replication_factor} is above the {live} live brokers \
         (use --allow-under-replicated to create it anyway)"
    )]
    UnderReplicated {
        /// The replication factor asked for.
        replication_factor: u32,
        /// The brokers registered now.
        live: usize,
    },
    /// A request kept failing in ways worth retrying (no leader, leader moving, too few
    /// in-sync replicas) for the whole retry period.
    #[error("{what}: gave up after {after:?}; last: {last}")]
    GaveUp {
        /// The request.
        what: String,
        /// How long it was retried.
        after: std::time::Duration,
        /// The last failure.
        last: String,
    },
}

/// How long one request to a broker may take before the client looks for the leader
/// again (acks=all answers wait for replication: keep it above the broker's ack timeout).
pub const ATTEMPT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(4);

/// How long a request to a broker may go unanswered before the client reports the
/// broker to the zookeeper as unanswering ([`Client::suspect`]): the zookeeper pings it
/// and, if it answers none of its pings within a second, expires its session at once,
/// so a dead leader is replaced about a second after a client finds it silent instead
/// of at the end of its lease. A slow answer (an acks=all produce waiting for its
/// replicas) costs the broker only a ping or three.
pub const SUSPECT_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// How many partition znodes one multi deletes (about 40 bytes each).
const DELETES_PER_MULTI: usize = 256;

/// How many times a topic delete reads the topic again after a concurrent change.
const DELETE_TOPIC_ROUNDS: usize = 5;

/// How long a request is retried while the leader moves or too few replicas are in sync.
pub const RETRY_FOR: std::time::Duration = std::time::Duration::from_secs(30);

/// Errors a client retries after reloading the metadata.
fn retriable(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::NotLeader
            | ErrorKind::FencedEpoch
            | ErrorKind::NotEnoughReplicas
            | ErrorKind::Busy
            | ErrorKind::Asleep
    )
}

/// What [`ClusterClient::call_leader`] sends to a partition's leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LeaderCall {
    /// A produce: to the leader, or to the Pehredar while the leader sleeps.
    Produce,
    /// A produce the Pehredar held, to the leader itself, marked as held so that a
    /// broker that is not the leader either never forwards it again.
    Forward,
    /// A fetch.
    Fetch,
}

impl LeaderCall {
    /// The resource the request goes to.
    fn resource(self) -> &'static str {
        match self {
            LeaderCall::Produce => "produce",
            LeaderCall::Forward => "produce?held",
            LeaderCall::Fetch => "fetch",
        }
    }

    /// What the call is, in the error when retries run out.
    fn name(self) -> &'static str {
        match self {
            LeaderCall::Produce => "produce",
            LeaderCall::Forward => "forward",
            LeaderCall::Fetch => "fetch",
        }
    }
}

impl From<ErrorBody> for ClientError {
    fn from(body: ErrorBody) -> Self {
        ClientError::Broker {
            kind: body.error,
            message: body.message,
        }
    }
}

/// A topic as the zookeeper knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicState {
    /// Its configuration.
    pub config: TopicConfig,
    /// Its partitions that are assigned.
    pub partitions: BTreeMap<u32, PartitionMetadata>,
}

/// Brokers and topics, read from the zookeeper.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    /// Live brokers by id.
    pub brokers: BTreeMap<u32, BrokerInfo>,
    /// Topics by name.
    pub topics: BTreeMap<String, TopicState>,
    /// The PEHRA Pehredar in office, if it is a broker.
    pub pehredar: Option<u32>,
    /// The brokers that are dormant (PEHRA), by their status.
    pub dormant: BTreeSet<u32>,
}

impl Metadata {
    /// Reads the whole cluster state.
    pub async fn load(zk: &Client) -> Result<Metadata, ZkError> {
        let brokers = cluster::live_brokers(zk).await?;
        let mut topics = BTreeMap::new();
        let names = match zk.get_children(TOPICS).await {
            Ok((names, _)) => names,
            Err(e) if e.kind() == Some(ErrorKind::NotFound) => Vec::new(),
            Err(e) => return Err(e),
        };
        for name in names {
            if let Ok(Some(topic)) = Self::load_topic(zk, &name).await {
                topics.insert(name, topic);
            }
        }
        let (pehredar, dormant) = pehra_route(zk).await?;
        Ok(Metadata {
            brokers,
            topics,
            pehredar,
            dormant,
        })
    }

    /// Reads one topic: its configuration and its partitions (`None` if it is not there
    /// or does not decode; an error if the zookeeper could not be read).
    async fn load_topic(zk: &Client, name: &str) -> Result<Option<TopicState>, ZkError> {
        let data = match zk.get_data(&cluster::topic_path(name)).await {
            Ok((data, _)) => data,
            Err(e) if e.kind() == Some(ErrorKind::NotFound) => return Ok(None),
            Err(e) => return Err(e),
        };
        let Ok(config) = wire::decode::<TopicConfig>(&data) else {
            return Ok(None);
        };
        let mut partitions = BTreeMap::new();
        if let Ok((children, _)) = zk.get_children(&cluster::partitions_path(name)).await {
            for child in children {
                let Ok(p) = child.parse::<u32>() else {
                    continue;
                };
                if let Ok((data, _)) = zk.get_data(&cluster::partition_path(name, p)).await {
                    if let Ok(meta) = wire::decode::<PartitionMetadata>(&data) {
                        partitions.insert(p, meta);
                    }
                }
            }
        }
        Ok(Some(TopicState { config, partitions }))
    }

    /// Where a produce to the partition goes: its leader, or, while the leader sleeps
    /// (PEHRA), the Pehredar, which holds it, wakes the cluster and forwards it.
    pub fn produce_target(&self, topic: &str, partition: u32) -> Result<SocketAddr, ClientError> {
        let leader = self.leader(topic, partition)?;
        let leader_id = self
            .topics
            .get(topic)
            .and_then(|t| t.partitions.get(&partition))
            .and_then(|m| m.leader);
        let pehredar = self
            .pehredar
            .filter(|p| Some(*p) != leader_id && !self.dormant.contains(p))
            .and_then(|p| self.brokers.get(&p))
            .and_then(|b| b.addr.parse().ok());
        match (leader_id, pehredar) {
            (Some(l), Some(addr)) if self.dormant.contains(&l) => Ok(addr),
            _ => Ok(leader),
        }
    }

    /// The id of the live broker at `addr`, if any.
    pub fn broker_at(&self, addr: SocketAddr) -> Option<u32> {
        self.brokers
            .values()
            .find(|b| b.addr.parse() == Ok(addr))
            .map(|b| b.id)
    }

    /// The address of the live leader of a partition.
    pub fn leader(&self, topic: &str, partition: u32) -> Result<SocketAddr, ClientError> {
        let state = self
            .topics
            .get(topic)
            .ok_or_else(|| ClientError::NoLeader(format!("no such topic: {topic}")))?;
        let meta = state.partitions.get(&partition).ok_or_else(|| {
            ClientError::NoLeader(format!("{topic}/{partition} is not assigned (yet)"))
        })?;
        let leader = meta
            .leader
            .and_then(|id| self.brokers.get(&id))
            .ok_or_else(|| {
                ClientError::NoLeader(format!("{topic}/{partition} has no live leader"))
            })?;
        leader.addr.parse().map_err(|_| {
            ClientError::NoLeader(format!(
                "broker {} has a bad address {:?}",
                leader.id, leader.addr
            ))
        })
    }
}

/// The broker in office as Pehredar and the dormant brokers, from `/pehra` (nothing
/// when PEHRA has not started).
async fn pehra_route(zk: &Client) -> Result<(Option<u32>, BTreeSet<u32>), ZkError> {
    let pehredar = cluster::pehra_state(zk)
        .await?
        .and_then(|s| s.term)
        .and_then(|t| cluster::broker_id_of(&t.pehredar));
    if pehredar.is_none() {
        return Ok((None, BTreeSet::new()));
    }
    let dormant = cluster::pehra_statuses(zk)
        .await?
        .iter()
        .filter(|s| s.role == NodeRole::Dormant)
        .filter_map(|s| cluster::broker_id_of(&s.node))
        .collect();
    Ok((pehredar, dormant))
}

/// The znode with a topic's pub-sub properties (draft-ietf-core-coap-pubsub), a child
/// of its topic znode so it goes with the topic: `/topics/{topic}/pubsub`.
pub fn pubsub_properties_path(topic: &str) -> String {
    format!("{}/pubsub", cluster::topic_path(topic))
}

/// The partition a key goes to: FNV-1a of the key, modulo the partition count (stable
/// across processes and versions, so a key's records stay in order in one partition).
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    let hash = key.iter().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    });
    hash % partitions.max(1)
}

/// A connection to a cluster: a zookeeper client for metadata and a CoAP endpoint for
/// the brokers.
pub struct ClusterClient {
    /// Shared with the background metadata reads (see [`ClusterClient::call_leader`]).
    zk: Arc<Client>,
    endpoint: Endpoint,
    metadata: std::sync::Arc<Mutex<Metadata>>,
    /// OSCORE: this client's credentials, and the broker addresses secured already.
    credentials: Option<Arc<Credentials>>,
    secured: Mutex<BTreeSet<SocketAddr>>,
    /// Per partition used: the leader epoch as a zookeeper watch last reported it (kept
    /// up to date by a task that also refreshes `metadata`), so a request to a leader
    /// that lost its place is abandoned as soon as the controller moves it.
    epochs: Mutex<BTreeMap<(String, u32), tokio::sync::watch::Receiver<u32>>>,
    /// Why requests were sent again.
    retries: Mutex<RetryStats>,
}

/// How often a [`ClusterClient`] sent a request again, by cause.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryStats {
    /// The broker said it does not lead the partition (or the epoch moved on).
    pub not_leader: u64,
    /// The broker answered 5.03 (too few in-sync replicas, busy, asleep).
    pub unavailable: u64,
    /// The metadata named no live leader.
    pub no_leader: u64,
    /// No answer in time, or the broker was unreachable: the client waited out a
    /// dead or paused leader.
    pub no_answer: u64,
    /// A request was abandoned because the partition got a new leader meanwhile.
    pub leader_moved: u64,
    /// Brokers reported to the zookeeper as unanswering ([`SUSPECT_AFTER`]).
    pub suspected: u64,
}

impl RetryStats {
    /// What happened since `earlier` (counts taken from the same client before).
    pub fn since(&self, earlier: &RetryStats) -> RetryStats {
        RetryStats {
            not_leader: self.not_leader.saturating_sub(earlier.not_leader),
            unavailable: self.unavailable.saturating_sub(earlier.unavailable),
            no_leader: self.no_leader.saturating_sub(earlier.no_leader),
            no_answer: self.no_answer.saturating_sub(earlier.no_answer),
            leader_moved: self.leader_moved.saturating_sub(earlier.leader_moved),
            suspected: self.suspected.saturating_sub(earlier.suspected),
        }
    }
}

impl ClusterClient {
    /// Connects to the zookeeper at `zookeeper` and loads the metadata.
    pub async fn connect(zookeeper: SocketAddr) -> Result<ClusterClient, ClientError> {
        Self::connect_secured(zookeeper, None).await
    }

    /// [`ClusterClient::connect`], protecting every request (to the zookeeper and to
    /// each broker) with OSCORE when `credentials` are given.
    pub async fn connect_secured(
        zookeeper: SocketAddr,
        credentials: Option<Arc<Credentials>>,
    ) -> Result<ClusterClient, ClientError> {
        Self::connect_members(&[zookeeper], credentials).await
    }

    /// [`ClusterClient::connect_secured`] to a zookeeper ensemble: `zookeepers` lists its
    /// members (a single zookeeper is a list of one); requests move to another member
    /// when one is unreachable or not the leader for a write.
    pub async fn connect_members(
        zookeepers: &[SocketAddr],
        credentials: Option<Arc<Credentials>>,
    ) -> Result<ClusterClient, ClientError> {
        let Some(&first) = zookeepers.first() else {
            return Err(ClientError::Invalid("no zookeeper address given".into()));
        };
        let coap = Self::coap_config();
        let zk =
            Client::without_session_any(zookeepers, coap.clone(), credentials.as_deref()).await?;
        Self::start(Arc::new(zk), first, coap, credentials).await
    }

    /// A cluster client whose metadata reads and watches go through `zk`, a client the
    /// caller has already (a broker's session client: its watches are kept by the session
    /// and cost no polling, where a client without a session asks the zookeeper for its
    /// incarnation every 5 s per watch to notice a restart).
    pub async fn over_zookeeper(
        zk: Arc<Client>,
        zookeeper: SocketAddr,
        credentials: Option<Arc<Credentials>>,
    ) -> Result<ClusterClient, ClientError> {
        Self::start(zk, zookeeper, Self::coap_config(), credentials).await
    }

    /// The CoAP settings of a cluster client's endpoints.
    fn coap_config() -> Config {
        Config {
            nstart: 32,
            ack_timeout: std::time::Duration::from_millis(500),
            max_retransmit: 6,
            max_payload: crate::limits::BROKER_MAX_PAYLOAD,
            ..Config::default()
        }
    }

    /// Opens the brokers' endpoint (on a local address that reaches `zookeeper`) and
    /// loads the metadata through `zk`.
    async fn start(
        zk: Arc<Client>,
        zookeeper: SocketAddr,
        coap: Config,
        credentials: Option<Arc<Credentials>>,
    ) -> Result<ClusterClient, ClientError> {
        let local = pehra_shared::driver::any_local_for(zookeeper);
        let endpoint = Endpoint::bind(local, coap, Router::new())
            .await
            .map_err(|e| ClientError::Invalid(format!("cannot open a UDP socket: {e}")))?;
        let metadata = Metadata::load(&zk).await?;
        Ok(ClusterClient {
            zk,
            endpoint,
            metadata: std::sync::Arc::new(Mutex::new(metadata)),
            epochs: Mutex::default(),
            retries: Mutex::default(),
            credentials,
            secured: Mutex::default(),
        })
    }

    /// Protects the requests to the broker at `addr` with OSCORE (once per address), if
    /// this client has credentials; its broker id comes from the metadata.
    async fn secure(&self, addr: SocketAddr) -> Result<(), ClientError> {
        let Some(credentials) = &self.credentials else {
            return Ok(());
        };
        if self.secured.lock().contains(&addr) {
            return Ok(());
        }
        let id = self
            .metadata()
            .brokers
            .values()
            .find(|b| b.addr.parse::<SocketAddr>().ok() == Some(addr))
            .map(|b| b.id)
            .ok_or_else(|| ClientError::NoLeader(format!("no live broker is at {addr}")))?;
        pehra_shared::driver::security::secure_client(
            &self.endpoint.handle(),
            credentials,
            addr,
            &pehra_shared::security::broker_kid(id),
        )
        .await
        .map_err(|e| {
            ClientError::Invalid(format!("cannot secure the requests to broker {id}: {e}"))
        })?;
        self.secured.lock().insert(addr);
        Ok(())
    }

    /// The zookeeper client.
    pub fn zookeeper(&self) -> &Client {
        &self.zk
    }

    /// A receiver of the partition's leader epoch, kept current by a zookeeper watch
    /// (which also updates the cached metadata). Started at the first use.
    async fn epoch_watch(&self, topic: &str, partition: u32) -> tokio::sync::watch::Receiver<u32> {
        let key = (topic.to_string(), partition);
        if let Some(rx) = self.epochs.lock().get(&key) {
            if rx.has_changed().is_ok() {
                return rx.clone();
            }
        }
        let current = self
            .metadata()
            .topics
            .get(topic)
            .and_then(|t| t.partitions.get(&partition))
            .map_or(0, |m| m.leader_epoch);
        let (tx, rx) = tokio::sync::watch::channel(current);
        if let Ok(mut watch) = self
            .zk
            .watch_data(&cluster::partition_path(topic, partition))
            .await
        {
            let metadata = self.metadata.clone();
            tokio::spawn(async move {
                while let Some(Ok(pehra_zookeeper::WatchEvent::Data(node))) = watch.next().await {
                    let Ok(meta) = wire::decode::<PartitionMetadata>(&node.data) else {
                        continue;
                    };
                    let epoch = meta.leader_epoch;
                    if let Some(t) = metadata.lock().topics.get_mut(&key.0) {
                        t.partitions.insert(key.1, meta);
                    }
                    if tx.send(epoch).is_err() {
                        return;
                    }
                }
            });
        }
        self.epochs
            .lock()
            .insert((topic.to_string(), partition), rx.clone());
        rx
    }

    /// How often requests were sent again, by cause.
    pub fn retry_stats(&self) -> RetryStats {
        *self.retries.lock()
    }

    /// The metadata as last loaded.
    pub fn metadata(&self) -> Metadata {
        self.metadata.lock().clone()
    }

    /// Reloads the metadata from the zookeeper.
    pub async fn refresh(&self) -> Result<Metadata, ClientError> {
        let fresh = Metadata::load(&self.zk).await?;
        *self.metadata.lock() = fresh.clone();
        Ok(fresh)
    }

    /// Reloads one topic (its configuration and partitions) into the metadata and
    /// returns the metadata: a few reads where [`ClusterClient::refresh`] reads every
    /// topic, for a topic created since the metadata was loaded.
    /// A zookeeper that cannot be read is an error, not a topic gone.
    pub async fn refresh_topic(&self, topic: &str) -> Result<Metadata, ClientError> {
        let loaded = Metadata::load_topic(&self.zk, topic).await?;
        let mut metadata = self.metadata.lock();
        match loaded {
            Some(state) => metadata.topics.insert(topic.to_string(), state),
            None => metadata.topics.remove(topic),
        };
        Ok(metadata.clone())
    }

    /// Keeps the topics of the metadata current, for a client whose requests must not
    /// wait for a zookeeper read (the Pehredar, which forwards the produces it holds):
    /// watches `/topics` and loads each topic created since, again until the
    /// controller has given each of its partitions a leader (a read on the request's
    /// path waited for the zookeeper's fsync of the write the same request caused: the
    /// first produce to a new topic in a sleeping cluster took 10–15 ms instead of 2).
    /// Meant for a client made [`over_zookeeper`](Self::over_zookeeper) a session client
    /// (a watch of a client without one asks the zookeeper for its incarnation every few
    /// seconds, to notice a restart: wake-ups an idle broker must not pay). Runs until
    /// the watch ends.
    pub async fn follow_topics(&self) -> Result<(), ClientError> {
        /// How often a new topic is read again while a partition has no leader yet, and
        /// for how long at most.
        const UNTIL_LED: (std::time::Duration, u32) = (std::time::Duration::from_millis(100), 50);
        let mut watch = self.zk.watch_children(TOPICS).await?;
        while let Some(event) = watch.next().await {
            let names = match event {
                Ok(pehra_zookeeper::WatchEvent::Children(c)) => c.children,
                Ok(_) => continue,
                Err(e) => return Err(e.into()),
            };
            let known: BTreeSet<String> = self.metadata().topics.keys().cloned().collect();
            if names.iter().all(|n| known.contains(n)) {
                continue;
            }
            // The brokers too: this client may have loaded them before every broker had
            // registered, and a new topic's leaders are looked up among them.
            let brokers = cluster::live_brokers(&self.zk).await?;
            self.metadata.lock().brokers = brokers;
            for name in names.iter().filter(|n| !known.contains(*n)) {
                for _ in 0..UNTIL_LED.1 {
                    let meta = self.refresh_topic(name).await?;
                    let led = meta.topics.get(name).is_some_and(|t| {
                        t.partitions.len() as u32 == t.config.partitions
                            && t.partitions.values().all(|p| p.leader.is_some())
                    });
                    if led {
                        break;
                    }
                    tokio::time::sleep(UNTIL_LED.0).await;
                }
            }
        }
        Ok(())
    }

    /// The brokers registered now (`/brokers/ids`).
    pub async fn live_brokers(&self) -> Result<usize, ClientError> {
        match self.zk.get_children(cluster::BROKERS).await {
            Ok((ids, _)) => Ok(ids.len()),
            Err(e) if e.kind() == Some(ErrorKind::NotFound) => Ok(0),
            Err(e) => Err(e.into()),
        }
    }

    /// Creates a topic; the controller assigns its partitions to live brokers. Refused
    /// ([`ClientError::UnderReplicated`]) if the replication factor is above the brokers
    /// live now.
    pub async fn create_topic(
        &self,
        topic: &str,
        partitions: u32,
        replication_factor: u32,
    ) -> Result<(), ClientError> {
        let config = TopicConfig {
            partitions,
            replication_factor,
            min_insync_replicas: None,
        };
        self.create_topic_with(topic, config).await
    }

    /// Creates a topic with every setting given. Refused
    /// ([`ClientError::UnderReplicated`]) if the replication factor is above the brokers
    /// live now.
    pub async fn create_topic_with(
        &self,
        topic: &str,
        config: TopicConfig,
    ) -> Result<(), ClientError> {
        self.create(topic, config, false, None).await
    }

    /// Creates a topic with its pub-sub properties (`/ps`, draft-ietf-core-coap-pubsub)
    /// in one step: the topic znode and its [`pubsub_properties_path`] together, or
    /// neither. Refused like [`ClusterClient::create_topic_with`].
    pub async fn create_topic_with_properties(
        &self,
        topic: &str,
        config: TopicConfig,
        properties: Vec<u8>,
    ) -> Result<(), ClientError> {
        self.create(topic, config, false, Some(properties)).await
    }

    /// Creates a topic even if its replication factor is above the brokers live now
    /// (the caller says so: `pehra topic create --allow-under-replicated` warns): the
    /// controller assigns its partitions once enough brokers are live.
    pub async fn create_topic_allowing_under_replicated(
        &self,
        topic: &str,
        config: TopicConfig,
    ) -> Result<(), ClientError> {
        self.create(topic, config, true, None).await
    }

    async fn create(
        &self,
        topic: &str,
        config: TopicConfig,
        allow_under_replicated: bool,
        properties: Option<Vec<u8>>,
    ) -> Result<(), ClientError> {
        let replication_factor = config.replication_factor;
        cluster::validate_topic(topic).map_err(ClientError::Invalid)?;
        config.validate().map_err(ClientError::Invalid)?;
        if !allow_under_replicated {
            let live = self.live_brokers().await?;
            if replication_factor as usize > live {
                return Err(ClientError::UnderReplicated {
                    replication_factor,
                    live,
                });
            }
        }
        cluster::ensure_path(&self.zk, TOPICS).await?;
        let data = wire::encode(&config).expect("encodes");
        let created = match properties {
            None => self
                .zk
                .create(&cluster::topic_path(topic), &data, CreateMode::Persistent)
                .await
                .map(drop),
            Some(properties) => {
                let create = |path: String, data: Vec<u8>| MultiOp::Create {
                    path,
                    data,
                    ephemeral: false,
                    sequential: false,
                };
                self.zk
                    .multi(vec![
                        create(cluster::topic_path(topic), data),
                        create(pubsub_properties_path(topic), properties),
                    ])
                    .await
                    .map(drop)
            }
        };
        match created {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == Some(ErrorKind::NodeExists) => {
                Err(ClientError::Invalid(format!("topic exists: {topic}")))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Waits (bounded by `timeout`) until every partition of `topic` has a live leader
    /// that serves it.
    pub async fn wait_for_leaders(
        &self,
        topic: &str,
        timeout: std::time::Duration,
    ) -> Result<Metadata, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut watch = self
            .zk
            .watch_children(&cluster::partitions_path(topic))
            .await
            .ok();
        loop {
            // Checked here too: a wait that ends at once (below) never times out.
            if tokio::time::Instant::now() >= deadline {
                return Err(ClientError::NoLeader(format!(
                    "{topic} has no leader for every partition after {timeout:?}"
                )));
            }
            let meta = self.refresh().await?;
            let ready = meta.topics.get(topic).is_some_and(|t| {
                t.partitions.len() == t.config.partitions as usize
                    && (0..t.config.partitions).all(|p| meta.leader(topic, p).is_ok())
            });
            if ready && self.leaders_serve(topic, &meta, deadline).await {
                return Ok(meta);
            }
            // Wake on a change of the partitions, or re-check at a short interval for
            // brokers that register after the assignment.
            let mut watch_ended = false;
            let wake = async {
                match watch.as_mut() {
                    Some(w) => match w.next().await {
                        Some(Ok(_)) => {}
                        // The watch ended (its observation was dropped or failed): it
                        // would wake at once from now on, a busy loop. Fall back to the
                        // interval, and watch again below.
                        Some(Err(_)) | None => {
                            watch_ended = true;
                            std::future::pending::<()>().await
                        }
                    },
                    None => std::future::pending().await,
                }
            };
            if tokio::time::timeout_at(deadline, async {
                tokio::select! {
                    _ = wake => {}
                    _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
                }
            })
            .await
            .is_err()
            {
                return Err(ClientError::NoLeader(format!(
                    "{topic} has no leader for every partition after {timeout:?}"
                )));
            }
            if watch_ended {
                watch = None;
            }
            if watch.is_none() {
                watch = self
                    .zk
                    .watch_children(&cluster::partitions_path(topic))
                    .await
                    .ok();
            }
        }
    }

    /// Whether every partition's leader already serves it (the znode says who leads
    /// before that broker has opened the partition): asks each once for the partition's
    /// state, waiting for the answer up to `deadline`.
    async fn leaders_serve(
        &self,
        topic: &str,
        meta: &Metadata,
        deadline: tokio::time::Instant,
    ) -> bool {
        let Some(state) = meta.topics.get(topic) else {
            return false;
        };
        for p in 0..state.config.partitions {
            let Ok(leader) = meta.leader(topic, p) else {
                return false;
            };
            if let Err(e) = self.secure(leader).await {
                tracing::debug!(%topic, p, %leader, error = %e, "leader not reached securely");
                return false;
            }
            let handle = self.endpoint.handle();
            let probe = handle.request(leader, Request::get(&format!("p/{topic}/{p}")));
            match tokio::time::timeout_at(deadline, probe).await {
                Ok(Ok(response)) if response.code().is_success() => {}
                // `not_leader`: the broker has not opened the partition yet, or the
                // leadership moved since `meta` was read (the controller re-elected,
                // say). Asking the same broker again would wait forever in the second
                // case: the caller reads the metadata again first.
                Ok(Ok(response)) => {
                    let error = response_error(&response);
                    tracing::debug!(%topic, p, %leader, code = %response.code(), ?error, "the leader does not serve the partition (yet)");
                    return false;
                }
                Ok(Err(e)) => {
                    tracing::debug!(%topic, p, %leader, error = %e, "leader probe failed");
                    return false;
                }
                Err(_) => return false,
            }
        }
        true
    }

    /// Deletes a topic and its partition state (brokers close their logs).
    ///
    /// The topic znode goes in one transaction with the last of its children, so a
    /// child created meanwhile (the controller assigning a partition it had read the
    /// topic for) fails the transaction instead of leaving a half-deleted topic; then
    /// the delete goes round again.
    pub async fn delete_topic(&self, topic: &str) -> Result<(), ClientError> {
        let topic_node = cluster::topic_path(topic);
        let parent = cluster::partitions_path(topic);
        let properties = pubsub_properties_path(topic);
        let mut last = None;
        for round in 0..DELETE_TOPIC_ROUNDS {
            if self.zk.exists(&topic_node).await?.is_none() {
                return if round == 0 {
                    Err(ClientError::Invalid(format!("no such topic: {topic}")))
                } else {
                    Ok(())
                };
            }
            let (children, has_parent) = match self.zk.get_children(&parent).await {
                Ok((children, _)) => (children, true),
                Err(e) if e.kind() == Some(ErrorKind::NotFound) => (Vec::new(), false),
                Err(e) => return Err(e.into()),
            };
            let delete = |path: String| MultiOp::Delete {
                path,
                version: None,
            };
            let mut ops: Vec<MultiOp> = children
                .iter()
                .map(|c| delete(format!("{parent}/{c}")))
                .collect();
            if has_parent {
                ops.push(delete(parent.clone()));
            }
            if self.zk.exists(&properties).await?.is_some() {
                ops.push(delete(properties.clone()));
            }
            ops.push(delete(topic_node.clone()));
            // All but the last slice go first (no request is larger than the zookeeper
            // takes); the last slice holds the parent and the topic.
            let split = ops.len().saturating_sub(DELETES_PER_MULTI);
            let (early, final_slice) = ops.split_at(split);
            for slice in early.chunks(DELETES_PER_MULTI) {
                match self.zk.multi(slice.to_vec()).await {
                    Ok(_) => {}
                    Err(e) if e.kind() == Some(ErrorKind::NotFound) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            match self.zk.multi(final_slice.to_vec()).await {
                Ok(_) => return Ok(()),
                // A child appeared or went meanwhile: read again.
                Err(e) if matches!(e.kind(), Some(ErrorKind::NotEmpty | ErrorKind::NotFound)) => {
                    tracing::debug!(%topic, round, error = %e, "topic delete raced a change; again");
                    last = Some(e);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(last.expect("a round failed").into())
    }

    /// Sends one batch to a partition's leader. With `acks` none the batch goes NON and
    /// nothing is returned. A leader change is followed (metadata reloaded, sent again;
    /// the producer id and sequence make a repeat harmless).
    pub async fn produce(
        &self,
        topic: &str,
        partition: u32,
        records: &[Record],
        acks: Acks,
        producer: Option<(u64, u32)>,
    ) -> Result<Option<ProduceResponse>, ClientError> {
        self.produce_if(topic, partition, records, acks, producer, None)
            .await
    }

    /// [`ClusterClient::produce`], appended only if the partition's log ends at
    /// `if_log_end` when the leader appends (else a `version_mismatch` refusal).
    pub async fn produce_if(
        &self,
        topic: &str,
        partition: u32,
        records: &[Record],
        acks: Acks,
        producer: Option<(u64, u32)>,
        if_log_end: Option<u64>,
    ) -> Result<Option<ProduceResponse>, ClientError> {
        let batch = wire::encode(&RecordBatch {
            records: records.to_vec(),
        })
        .expect("encodes");
        let request = ProduceRequest {
            topic: topic.into(),
            partition,
            acks,
            producer_id: producer.map(|p| p.0),
            base_sequence: producer.map(|p| p.1),
            gapless: false,
            leader_epoch: None,
            if_log_end,
            batch,
        };
        self.produce_request(&request).await
    }

    /// Sends a produce request as it is (see [`ClusterClient::produce`]): what a
    /// [`Producer`](producer::Producer) sends.
    pub async fn produce_request(
        &self,
        request: &ProduceRequest,
    ) -> Result<Option<ProduceResponse>, ClientError> {
        let (topic, partition) = (request.topic.as_str(), request.partition);
        let body = wire::encode(request).expect("encodes");
        if request.acks == Acks::None {
            // Fire and forget: NON, nothing comes back.
            let leader = self.metadata().leader(topic, partition)?;
            self.secure(leader).await?;
            let coap = Request::new(Method::Post, "produce")
                .with_payload(body)
                .with_content_format(CONTENT_FORMAT_CBOR);
            self.endpoint
                .handle()
                .send_non(leader, coap)
                .await
                .map_err(|source| ClientError::Unreachable {
                    addr: leader,
                    source,
                })?;
            return Ok(None);
        }
        self.call_leader(topic, partition, LeaderCall::Produce, body)
            .await
            .map(Some)
    }

    /// Sends an encoded [`ProduceRequest`] to the partition's leader (never through the
    /// Pehredar), with [`ClusterClient::produce`]'s retries: the Pehredar forwards the
    /// produces it holds with this.
    pub async fn forward_produce(
        &self,
        topic: &str,
        partition: u32,
        body: Vec<u8>,
    ) -> Result<ProduceResponse, ClientError> {
        self.call_leader(topic, partition, LeaderCall::Forward, body)
            .await
    }

    /// Sends a CBOR request to a partition's leader and decodes the answer, following
    /// leader changes: on `not_leader`, `fenced_epoch`, a 5.03 (too few in-sync replicas,
    /// busy, asleep), no leader, or no answer within [`ATTEMPT_TIMEOUT`], the metadata is
    /// reloaded and the request sent again, for up to [`RETRY_FOR`] (a failover takes
    /// about one zookeeper session timeout). A produce carries its producer id and
    /// sequence, so a repeat is never stored twice. The last retriable failure (for the
    /// error when retries run out) is this call's own.
    async fn call_leader<T: serde::de::DeserializeOwned>(
        &self,
        topic: &str,
        partition: u32,
        call: LeaderCall,
        body: Vec<u8>,
    ) -> Result<T, ClientError> {
        let mut last_error: Option<String> = None;
        let deadline = tokio::time::Instant::now() + RETRY_FOR;
        let mut backoff = std::time::Duration::from_millis(50);
        let mut attempt = 0u32;
        loop {
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            if attempt > 0 {
                if tokio::time::Instant::now() + backoff >= deadline {
                    break;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(std::time::Duration::from_millis(500));
                if let Err(e) = self.refresh().await {
                    last_error = Some(e.to_string());
                    attempt += 1;
                    continue;
                }
            }
            attempt += 1;
            let target = match call {
                LeaderCall::Produce => self.metadata().produce_target(topic, partition),
                LeaderCall::Forward | LeaderCall::Fetch => self.metadata().leader(topic, partition),
            };
            let leader = match target {
                Ok(addr) => addr,
                // Just reloaded, and the topic is not there: it was deleted (or never
                // was); waiting would not bring it back.
                Err(ClientError::NoLeader(_))
                    if attempt > 1 && !self.metadata().topics.contains_key(topic) =>
                {
                    return Err(ClientError::NoSuchTopic(topic.into()));
                }
                Err(e @ ClientError::NoLeader(_)) => {
                    self.retries.lock().no_leader += 1;
                    last_error = Some(e.to_string());
                    continue;
                }
                Err(e) => return Err(e),
            };
            if let Err(e) = self.secure(leader).await {
                last_error = Some(e.to_string());
                continue;
            }
            let coap = Request::new(Method::Post, call.resource())
                .with_payload(body.clone())
                .with_content_format(CONTENT_FORMAT_CBOR);
            let mut epoch = self.epoch_watch(topic, partition).await;
            let asked_epoch = *epoch.borrow_and_update();
            let handle = self.endpoint.handle();
            let request = tokio::time::timeout(ATTEMPT_TIMEOUT, handle.request(leader, coap));
            let mut moved = std::pin::pin!(async {
                if epoch.wait_for(|e| *e != asked_epoch).await.is_err() {
                    // The epoch watch ended (the partition znode is gone: its topic is
                    // being deleted): only the answer counts. (This waited here for
                    // ever, after the answer's future was dropped: a publication to a
                    // topic deleted meanwhile was never answered.)
                    std::future::pending::<()>().await;
                }
            });
            let mut request = std::pin::pin!(request);
            let mut silent = std::pin::pin!(tokio::time::sleep(SUSPECT_AFTER));
            let mut reported = false;
            let answer = loop {
                tokio::select! {
                    answer = &mut request => break Some(answer),
                    () = &mut moved => break None,
                    () = &mut silent, if !reported => {
                        reported = true;
                        self.report_silent(leader);
                    }
                }
            };
            let Some(answer) = answer else {
                // The controller gave the partition a new leader: ask it at once.
                self.retries.lock().leader_moved += 1;
                attempt = 0;
                continue;
            };
            match answer {
                Ok(Ok(response)) if response.code().is_success() => {
                    let held = matches!(call, LeaderCall::Produce)
                        && self.metadata().leader(topic, partition).ok() != Some(leader);
                    if held {
                        // The Pehredar held it and woke the leader: re-read the metadata
                        // so that the next produce goes to the leader, not to a
                        // Pehredar that may hand its term over meanwhile. In the
                        // background: awaited here it added a whole metadata read to
                        // this produce's latency (the one that woke the cluster).
                        let (zk, metadata) = (self.zk.clone(), self.metadata.clone());
                        tokio::spawn(async move {
                            if let Ok(fresh) = Metadata::load(&zk).await {
                                *metadata.lock() = fresh;
                            }
                        });
                    }
                    return decode_response(&response).map_err(Into::into);
                }
                Ok(Ok(response)) => {
                    let error = response_error(&response);
                    if !retriable(error.error) {
                        return Err(error.into());
                    }
                    let mut retries = self.retries.lock();
                    match error.error {
                        ErrorKind::NotLeader | ErrorKind::FencedEpoch => retries.not_leader += 1,
                        _ => retries.unavailable += 1,
                    }
                    drop(retries);
                    last_error = Some(error.message.clone());
                }
                Ok(Err(source)) => {
                    self.retries.lock().no_answer += 1;
                    last_error = Some(format!("broker at {leader} unreachable: {source}"));
                }
                Err(_) => {
                    self.retries.lock().no_answer += 1;
                    last_error = Some(format!(
                        "broker at {leader} did not answer within {ATTEMPT_TIMEOUT:?}"
                    ));
                }
            }
        }
        Err(ClientError::GaveUp {
            what: format!("{} to {topic}/{partition}", call.name()),
            after: RETRY_FOR,
            last: last_error.unwrap_or_default(),
        })
    }

    /// Reports the broker at `addr` to the zookeeper as unanswering (in the background:
    /// the request goes on waiting). Nothing if the metadata names no broker there.
    fn report_silent(&self, addr: SocketAddr) {
        let Some(id) = self.metadata().broker_at(addr) else {
            return;
        };
        self.retries.lock().suspected += 1;
        let zk = self.zk.clone();
        tokio::spawn(async move {
            match zk.suspect(&cluster::broker_path(id)).await {
                Ok(()) => tracing::debug!(broker = id, %addr, "reported unanswering"),
                Err(e) => tracing::debug!(broker = id, error = %e, "reporting a silent broker"),
            }
        });
    }

    /// Fetches from `offset` (at most about `max_bytes`), from the partition's leader.
    pub async fn fetch(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: u32,
    ) -> Result<FetchResponse, ClientError> {
        let request = FetchRequest {
            topic: topic.into(),
            partition,
            offset,
            max_bytes,
            leader_epoch: None,
            replica: None,
        };
        let body = wire::encode(&request).expect("encodes");
        self.call_leader(topic, partition, LeaderCall::Fetch, body)
            .await
    }

    /// Observes a partition: a notification (its log end) after every append.
    pub async fn observe_partition(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<Observation, ClientError> {
        let leader = self.metadata().leader(topic, partition)?;
        self.secure(leader).await?;
        self.endpoint
            .handle()
            .observe(leader, Request::get(&format!("p/{topic}/{partition}")))
            .await
            .map_err(|source| ClientError::Unreachable {
                addr: leader,
                source,
            })
    }

    /// The offset a consumer group committed for a partition, if any.
    pub async fn committed_offset(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
    ) -> Result<Option<u64>, ClientError> {
        match self
            .zk
            .get_data(&cluster::offset_path(group, topic, partition))
            .await
        {
            Ok((data, _)) => Ok(std::str::from_utf8(&data).ok().and_then(|s| s.parse().ok())),
            Err(e) if e.kind() == Some(ErrorKind::NotFound) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Commits a consumer group's next offset for a partition (durably, in the zookeeper).
    pub async fn commit_offset(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
        offset: u64,
    ) -> Result<(), ClientError> {
        let path = cluster::offset_path(group, topic, partition);
        let value = offset.to_string();
        match self.zk.set_data(&path, value.as_bytes(), None).await {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == Some(ErrorKind::NotFound) => {
                let parent = &path[..path.rfind('/').expect("has a parent")];
                cluster::ensure_path(&self.zk, parent).await?;
                self.zk
                    .create(&path, value.as_bytes(), CreateMode::Persistent)
                    .await?;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Decodes the records of fetched batches, with their offsets, from `from` on.
pub fn records_from(
    response: &FetchResponse,
    from: u64,
) -> Result<Vec<(u64, Record)>, ClientError> {
    let mut out = Vec::new();
    for fetched in &response.batches {
        let batch: RecordBatch = wire::decode(&fetched.batch)
            .map_err(|e| ClientError::Invalid(format!("a stored batch does not decode: {e}")))?;
        for (i, record) in batch.records.into_iter().enumerate() {
            let offset = fetched.base_offset + i as u64;
            if offset >= from {
                out.push((offset, record));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_hash_stably_into_partitions() {
        assert_eq!(partition_for_key(b"", 3), 0x811c_9dc5 % 3);
        assert_eq!(
            partition_for_key(b"sensor-1", 3),
            partition_for_key(b"sensor-1", 3)
        );
        let spread: std::collections::BTreeSet<u32> = (0..100)
            .map(|i| partition_for_key(format!("k{i}").as_bytes(), 3))
            .collect();
        assert_eq!(spread.len(), 3, "keys spread over every partition");
        assert_eq!(partition_for_key(b"x", 0), 0, "no division by zero");
    }
}
