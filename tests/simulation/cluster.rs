//! The hosts of the simulated cluster (the zookeeper with the controller, the brokers)
//! and its clients (a producer, an epoch monitor, a consumer that reads everything back,
//! a zookeeper register workload), recording what they saw in a [`History`].

use crate::linearizability::{Action, Op};
use pehra_broker::client::ClusterClient;
use pehra_broker::{Broker, BrokerConfig};
use pehra_cluster::{Controller, ControllerConfig, PehraCoordinator, PehraCoordinatorConfig};
use pehra_shared::coap::Config;
use pehra_shared::pehra::coordinator::CoordinatorConfig;
use pehra_shared::wire::{Acks, ErrorKind, Record, TopicConfig};
use pehra_zookeeper::{
    Client, ClientOptions, CreateMode, Server, ServerConfig, SessionState, ZkError,
};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;
use tokio::time::{sleep, Instant};

/// The topic the producer writes.
pub const TOPIC: &str = "sim";
/// Its partitions.
pub const PARTITIONS: u32 = 2;
/// The zookeeper's port.
pub const ZK_PORT: u16 = 2181;
/// Broker `id` serves on this port plus `id`.
pub const BROKER_PORT_BASE: u16 = 9090;
/// The producer id of partition `p` is this plus `p`.
const PRODUCER_ID: u64 = 7_000;

/// What the clients saw.
#[derive(Debug, Default)]
pub struct History {
    /// Acknowledged records: (partition, sequence number) at offset, with the leader
    /// epoch of the answer.
    pub acked: Vec<Acked>,
    /// Failed produce attempts (retried).
    pub produce_errors: u64,
    /// The producer is done (no more records).
    pub producing_done: bool,
    /// Per partition: the leader epochs the monitor read from the zookeeper, in order.
    pub epochs: BTreeMap<u32, Vec<u32>>,
    /// Per partition: everything read back at the end, (offset, sequence number).
    pub read_back: Option<BTreeMap<u32, Vec<(u64, u64)>>>,
    /// Per partition: the last error reading it back.
    pub read_errors: BTreeMap<u32, String>,
    /// The zookeeper register workload: per znode, the operations whose outcome is known.
    pub zk_ops: BTreeMap<String, Vec<Op>>,
    /// Per znode, the call time of the first write whose outcome is unknown: the
    /// history is checked up to it.
    pub zk_cut: BTreeMap<String, std::time::Instant>,
    /// Events that make up the run's trace (for the replay check).
    pub trace: Vec<String>,
}

/// One acknowledged record.
#[derive(Debug, Clone, Copy)]
pub struct Acked {
    pub partition: u32,
    pub seq: u64,
    pub offset: u64,
    pub epoch: u32,
}

/// Shared between the clients of one run (turmoil runs everything on one thread).
pub type Shared = Rc<RefCell<History>>;

/// The zookeeper's host: the server and the cluster controller beside it, as
/// `pehra zookeeper` runs them.
pub async fn zookeeper(dir: PathBuf, own: SocketAddr) -> turmoil::Result {
    let listen: SocketAddr = (std::net::Ipv4Addr::UNSPECIFIED, ZK_PORT).into();
    let mut server = loop {
        match Server::start(sim_server_config(listen, dir.clone())).await {
            Ok(server) => break server,
            Err(e) => {
                tracing::warn!(error = %e, "sim: zookeeper start failed; again in 1 s");
                sleep(Duration::from_secs(1)).await;
            }
        }
    };
    let services = leader_services(own);
    let result = server.wait().await;
    services.iter().for_each(tokio::task::JoinHandle::abort);
    result.map_err(Into::into)
}

/// The cluster controller and the PEHRA coordinator, speaking to the zookeeper (member)
/// at `own`, each restarted a second after it stops, as `pehra zookeeper` runs them.
fn leader_services(own: SocketAddr) -> [tokio::task::JoinHandle<()>; 2] {
    let controller = tokio::task::spawn_local(async move {
        loop {
            let config = ControllerConfig {
                unclean_election: false,
                replace_dead_after: None,
            };
            if let Err(e) = Controller::run_secured(own, None, config).await {
                tracing::debug!(error = %e, "sim: controller stopped; restarting it");
            }
            sleep(Duration::from_secs(1)).await;
        }
    });
    let coordinator = tokio::task::spawn_local(async move {
        loop {
            if let Err(e) = PehraCoordinator::run_with(own, pehra_timing()).await {
                tracing::debug!(error = %e, "sim: pehra coordinator stopped; restarting it");
            }
            sleep(Duration::from_secs(1)).await;
        }
    });
    [controller, coordinator]
}

/// A zookeeper ensemble member's host (`SIM_ZOOKEEPERS=3`): the server with its Raft
/// (members on ports `ZK_PORT + id`, the log cut every 50 entries so that cuts happen
/// in a run), and, while it leads, the controller and the PEHRA coordinator speaking
/// to it alone (fenced by its term), as `pehra zookeeper --id --peers` runs them.
pub async fn zookeeper_member(
    id: u64,
    dir: PathBuf,
    members: BTreeMap<u64, SocketAddr>,
) -> turmoil::Result {
    let own = members[&id];
    let listen: SocketAddr = (std::net::Ipv4Addr::UNSPECIFIED, own.port()).into();
    let mut config = sim_server_config(listen, dir.clone());
    config.ensemble = Some(pehra_zookeeper::ensemble::EnsembleConfig {
        id,
        members,
        compact_every: 50,
        health: Default::default(),
        join: false,
        // A fixed lease: the real machine's load must not reach the simulation's
        // election timeouts (a replay must be the same).
        lease: pehra_shared::health::LeaseConfig {
            base_ms: 1_000,
            min_ms: 1_000,
            max_ms: 1_000,
            ..Default::default()
        },
    });
    let mut server = loop {
        match Server::start(config.clone()).await {
            Ok(server) => break server,
            Err(e) => {
                tracing::warn!(id, error = %e, "sim: zookeeper member start failed; again in 1 s");
                sleep(Duration::from_secs(1)).await;
            }
        }
    };
    let mut leadership = server.leadership();
    let supervisor = tokio::task::spawn_local(async move {
        loop {
            while !*leadership.borrow_and_update() {
                if leadership.changed().await.is_err() {
                    return;
                }
            }
            let services = leader_services(own);
            while *leadership.borrow_and_update() {
                if leadership.changed().await.is_err() {
                    break;
                }
            }
            services.iter().for_each(tokio::task::JoinHandle::abort);
        }
    });
    let result = server.wait().await;
    supervisor.abort();
    result.map_err(Into::into)
}

/// PEHRA's timing in the simulation: terms short enough that several are held, and
/// re-elected, in a run (the wall clock is simulated time, stepped by clock faults).
/// A zookeeper's configuration in the simulation: session leases fixed at the session
/// timeout (the brokers report the real machine's health; its load must not reach a
/// replay).
fn sim_server_config(listen: SocketAddr, dir: std::path::PathBuf) -> ServerConfig {
    let mut config = ServerConfig::new(listen, dir);
    config.broker_writes = Some(pehra_cluster::broker_writes::check);
    config.admin_routes.push(pehra_cluster::admin::MODE_ROUTE);
    config.session_lease.min_permille = 1000;
    config.session_lease.max_permille = 1000;
    config
}

fn pehra_timing() -> PehraCoordinatorConfig {
    PehraCoordinatorConfig {
        timing: CoordinatorConfig {
            term_ms: 8_000,
            handover_ms: 2_000,
            takeover_timeout_ms: 2_000,
            ..CoordinatorConfig::default()
        },
    }
}

/// A broker's host: started, and restarted as a new session when its session is lost,
/// as `pehra broker` does.
pub async fn broker(id: u32, dir: PathBuf, zk: Vec<SocketAddr>) -> turmoil::Result {
    let listen: SocketAddr = (
        std::net::Ipv4Addr::UNSPECIFIED,
        BROKER_PORT_BASE + id as u16,
    )
        .into();
    let mut config = BrokerConfig::new(id, listen, zk[0], dir);
    config.zookeeper = zk;
    config.host = format!("broker{id}");
    config.registration_wait = Duration::from_secs(15);
    // Brokers sleep in the calm between faults (a follower with nothing to replicate,
    // everyone once the producer is done) and are woken by traffic.
    config.pehra.idle_before_sleep = Duration::from_secs(3);
    config.pehra.alarm_interval = Duration::from_secs(5);
    loop {
        let broker = match Broker::start(config.clone()).await {
            Ok(broker) => broker,
            Err(e) => {
                tracing::warn!(id, error = %e, "sim: broker start failed; again in 1 s");
                sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let error = broker.wait().await;
        tracing::debug!(id, %error, "sim: broker rejoining");
        broker.abandon().await;
    }
}

/// Connects, retrying until the zookeeper (a member) answers.
async fn connect(zk: &[SocketAddr]) -> ClusterClient {
    loop {
        match ClusterClient::connect_members(zk, None).await {
            Ok(client) => return client,
            Err(_) => sleep(Duration::from_millis(500)).await,
        }
    }
}

/// The producer: creates the topic, then per partition sends numbered records one at a
/// time with acks=all under a fixed producer id, retrying a record (same sequence
/// number) until it is acknowledged, until `until` (simulated time since the start).
pub async fn producer(
    history: Shared,
    zk: Vec<SocketAddr>,
    start: Instant,
    until: Duration,
) -> turmoil::Result {
    let client = Rc::new(connect(&zk).await);
    let config = TopicConfig {
        partitions: PARTITIONS,
        replication_factor: 3,
        min_insync_replicas: Some(2),
    };
    loop {
        match client.create_topic_with(TOPIC, config).await {
            Ok(()) => break,
            Err(e) if e.to_string().contains("exists") => break,
            Err(e) => {
                tracing::debug!(error = %e, "sim: create topic");
                sleep(Duration::from_millis(500)).await;
            }
        }
    }
    let mut tasks = Vec::new();
    for partition in 0..PARTITIONS {
        let (client, history) = (client.clone(), history.clone());
        tasks.push(tokio::task::spawn_local(async move {
            let mut seq = 0u64;
            'records: while start.elapsed() < until {
                let record = Record {
                    key: None,
                    value: seq.to_string().into_bytes(),
                    timestamp_ms: 0,
                    headers: Vec::new(),
                };
                let producer = Some((PRODUCER_ID + u64::from(partition), seq as u32));
                loop {
                    match client
                        .produce(
                            TOPIC,
                            partition,
                            std::slice::from_ref(&record),
                            Acks::All,
                            producer,
                        )
                        .await
                    {
                        Ok(Some(answer)) => {
                            let mut h = history.borrow_mut();
                            h.acked.push(Acked {
                                partition,
                                seq,
                                offset: answer.base_offset,
                                epoch: answer.leader_epoch,
                            });
                            let at = start.elapsed().as_millis();
                            h.trace.push(format!(
                                "{at} ack {partition}/{seq}@{}e{}",
                                answer.base_offset, answer.leader_epoch
                            ));
                            break;
                        }
                        Ok(None) => unreachable!("acks=all answers"),
                        Err(e) => {
                            {
                                let mut h = history.borrow_mut();
                                h.produce_errors += 1;
                                let at = start.elapsed().as_millis();
                                h.trace.push(format!("{at} err {partition}/{seq}: {e}"));
                            }
                            // Past the end, an unacknowledged record is left unknown.
                            if start.elapsed() > until {
                                break 'records;
                            }
                            sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
                seq += 1;
                sleep(Duration::from_millis(20)).await;
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    history.borrow_mut().producing_done = true;
    Ok(())
}

/// Reads every partition's leader epoch from the zookeeper every 250 ms until the
/// producer is done.
pub async fn epoch_monitor(history: Shared, zk: Vec<SocketAddr>) -> turmoil::Result {
    let client = connect(&zk).await;
    while !history.borrow().producing_done {
        if let Ok(metadata) = client.refresh().await {
            if let Some(topic) = metadata.topics.get(TOPIC) {
                let mut h = history.borrow_mut();
                for (p, m) in &topic.partitions {
                    let seen = h.epochs.entry(*p).or_default();
                    if seen.last() != Some(&m.leader_epoch) {
                        seen.push(m.leader_epoch);
                    }
                }
            }
        }
        sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}

/// Once the producer is done (and the faults are over), reads every partition back
/// from offset 0 until it holds every acknowledged record, or `patience` has passed.
pub async fn consumer(history: Shared, zk: Vec<SocketAddr>, patience: Duration) -> turmoil::Result {
    while !history.borrow().producing_done {
        sleep(Duration::from_millis(200)).await;
    }
    let client = connect(&zk).await;
    let deadline = Instant::now() + patience;
    let mut read = BTreeMap::new();
    for partition in 0..PARTITIONS {
        let want = history
            .borrow()
            .acked
            .iter()
            .filter(|a| a.partition == partition)
            .map(|a| a.offset + 1)
            .max()
            .unwrap_or(0);
        let mut records: Vec<(u64, u64)> = Vec::new();
        let mut next = 0u64;
        loop {
            match client.fetch(TOPIC, partition, next, 64 * 1024).await {
                Ok(answer) => match pehra_broker::client::records_from(&answer, next) {
                    Ok(got) => {
                        for (offset, record) in got {
                            let seq = std::str::from_utf8(&record.value)
                                .ok()
                                .and_then(|s| s.parse().ok())
                                .unwrap_or(u64::MAX);
                            records.push((offset, seq));
                            next = offset + 1;
                        }
                        if next >= want && next >= answer.high_watermark {
                            break;
                        }
                        if answer.batches.is_empty() {
                            sleep(Duration::from_millis(200)).await;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(partition, error = %e, "sim: a fetched batch does not decode");
                        sleep(Duration::from_millis(200)).await;
                    }
                },
                Err(e) => {
                    history
                        .borrow_mut()
                        .read_errors
                        .insert(partition, e.to_string());
                    sleep(Duration::from_millis(200)).await
                }
            }
            if Instant::now() > deadline {
                break;
            }
        }
        read.insert(partition, records);
    }
    history.borrow_mut().read_back = Some(read);
    Ok(())
}

/// The zookeeper register workload of tests/linearizability (reads, writes, compare and
/// set on a few znodes by a few clients) under the faults. An operation that failed
/// without an answer may still have happened: a failed read is dropped, and a failed
/// write cuts its znode's history at its call (only what returned before is checked).
pub async fn zk_registers(
    history: Shared,
    zk: Vec<SocketAddr>,
    seed: u64,
    until: Duration,
) -> turmoil::Result {
    const KEYS: usize = 4;
    const CLIENTS: usize = 3;
    let start = Instant::now();
    // Times as std Instants (what the checker takes), on the simulated clock.
    let base = std::time::Instant::now();
    let at = move || base + start.elapsed();
    let setup = loop {
        if let Ok(c) = Client::without_session_any(&zk, Config::default(), None).await {
            break c;
        }
        sleep(Duration::from_millis(500)).await;
    };
    for k in 0..KEYS {
        loop {
            match setup
                .create(&format!("/lin{k}"), b"0", CreateMode::Persistent)
                .await
            {
                Ok(_) => break,
                Err(ZkError::Server {
                    kind: ErrorKind::NodeExists,
                    ..
                }) => break,
                Err(_) => sleep(Duration::from_millis(200)).await,
            }
        }
    }
    let mut tasks = Vec::new();
    // In an ensemble a member answers reads from its own tree, which may be behind:
    // sequentially consistent, not linearizable. A read there goes after a `sync`
    // (Raft's ReadIndex), as an application that needs the latest value does.
    let ensemble = zk.len() > 1;
    for client in 0..CLIENTS {
        let history = history.clone();
        let zk = zk.clone();
        tasks.push(tokio::task::spawn_local(async move {
            // With a session, as a client of a real application: its writes are numbered,
            // so a retry (the zookeeper restarted after applying a write but before the
            // answer left, seed 1025) is never applied twice. A session that expired
            // while the zookeeper was away is replaced.
            let connect = || async {
                loop {
                    if let Ok(c) = Client::connect_any(&zk, ClientOptions::default()).await {
                        break c;
                    }
                    sleep(Duration::from_millis(500)).await;
                }
            };
            let mut c = connect().await;
            let mut rng = crate::simulation::rng::Rng::new(seed ^ ((client as u64 + 1) * 0x9e37));
            let mut last_seen_version = 0u32;
            let mut i = 0u64;
            while start.elapsed() < until {
                if *c.session_state().borrow() == SessionState::Expired {
                    c = connect().await;
                }
                i += 1;
                let key = format!("/lin{}", rng.below(KEYS as u64));
                let value = (client as u64 + 1) * 1_000_000 + i;
                let call = at();
                let synced = !ensemble || c.sync().await.is_ok();
                let action = match rng.below(3) {
                    0 if !synced => None,
                    0 => match c.get_data(&key).await {
                        Ok((data, stat)) => {
                            last_seen_version = stat.version;
                            Some(Action::Read {
                                value: parse(&data),
                                version: stat.version,
                            })
                        }
                        Err(_) => None,
                    },
                    1 => match c.set_data(&key, value.to_string().as_bytes(), None).await {
                        Ok(stat) => Some(Action::Write {
                            value,
                            new_version: stat.version,
                        }),
                        Err(_) => {
                            cut(&history, &key, call);
                            None
                        }
                    },
                    _ => {
                        let expected = last_seen_version + rng.below(2) as u32;
                        match c
                            .set_data(&key, value.to_string().as_bytes(), Some(expected))
                            .await
                        {
                            Ok(stat) => Some(Action::Cas {
                                value,
                                expected,
                                outcome: Ok(stat.version),
                            }),
                            Err(ZkError::Server {
                                kind: ErrorKind::VersionMismatch,
                                message,
                            }) => Some(Action::Cas {
                                value,
                                expected,
                                outcome: Err(actual_version(&message)),
                            }),
                            Err(_) => {
                                cut(&history, &key, call);
                                None
                            }
                        }
                    }
                };
                match action {
                    Some(action) => history
                        .borrow_mut()
                        .zk_ops
                        .entry(key)
                        .or_default()
                        .push(Op {
                            client,
                            call,
                            ret: at(),
                            action,
                        }),
                    None => sleep(Duration::from_millis(100)).await,
                }
                sleep(Duration::from_millis(rng.range(50, 400))).await;
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    Ok(())
}

fn cut(history: &Shared, key: &str, call: std::time::Instant) {
    let mut h = history.borrow_mut();
    let cut = h.zk_cut.entry(key.to_string()).or_insert(call);
    if call < *cut {
        *cut = call;
    }
}

fn parse(data: &[u8]) -> u64 {
    std::str::from_utf8(data)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The version in a version-mismatch message ("... is at version N").
fn actual_version(message: &str) -> u32 {
    message
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(u32::MAX)
}
