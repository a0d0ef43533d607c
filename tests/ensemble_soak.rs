//! Issue 16: the zookeeper ensemble under repeated crashes and pauses, on real processes.
//!
//! Three `pehra zookeeper` members, three brokers given every member, an idempotent
//! acks=all producer, session clients reading and writing registers (the workload of
//! tests/linearizability) and a client creating znodes, all running while, round after
//! round, a member is SIGKILLed or SIGSTOPped (the leader and a follower in turn) and,
//! while it is down, the broker leading the partition is SIGKILLed too, so the
//! controller must fail the partition over on whichever member leads the ensemble then.
//!
//! Every round waits for progress of every workload (writes acknowledged, records
//! acknowledged, the partition led by another broker) before it heals the fault, and for
//! the healed member to catch up before the next. At the end: every acknowledged record
//! is in the partition exactly once and in order, every acknowledged znode is on every
//! member, and each register's history (failed writes as "may have happened") is
//! linearizable.
//!
//! `PEHRA_SOAK_ROUNDS` sets the number of rounds (4 here: each fault once);
//! `bench/ensemble-soak.sh` runs many more and docs/ensemble.md keeps its last result.

mod common;
#[allow(dead_code)]
mod linearizability;

use common::ensemble::{status_of, Ensemble};
use common::producer::{check_log, Producer};
use common::{free_udp_ports, spawn_ready};
use linearizability::{is_linearizable, never_returned, Action, Op};
use pehra_broker::client::ClusterClient;
use pehra_cluster as cluster;
use pehra_shared::coap::Config;
use pehra_shared::wire::{self, ErrorKind, PartitionMetadata, TopicConfig};
use pehra_zookeeper::{Client, ClientOptions, CreateMode, SessionState, ZkError};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

const TOPIC: &str = "soak";
/// Registers per round, and clients writing them.
const KEYS: usize = 3;
const CLIENTS: usize = 3;
/// The most operations recorded on one register (the checker holds 128).
const OPS_PER_KEY: usize = 110;
/// How long one wait for progress may take before the test fails.
const PROGRESS: Duration = Duration::from_secs(60);
const BROKER_FLAGS: &[&str] = &[
    "--session-timeout-ms",
    "4000",
    "--replica-lag-ms",
    "2000",
    "--ack-timeout-ms",
    "2000",
];

/// What a round does to one member.
#[derive(Debug, Clone, Copy)]
enum Fault {
    KillLeader,
    PauseLeader,
    KillFollower,
    PauseFollower,
}

impl Fault {
    fn of_round(round: usize) -> Fault {
        [
            Fault::KillLeader,
            Fault::PauseLeader,
            Fault::KillFollower,
            Fault::PauseFollower,
        ][round % 4]
    }

    fn on_leader(self) -> bool {
        matches!(self, Fault::KillLeader | Fault::PauseLeader)
    }

    fn kills(self) -> bool {
        matches!(self, Fault::KillLeader | Fault::KillFollower)
    }
}

/// The ensemble and three brokers, each broker given every member.
struct Soak {
    ensemble: Ensemble,
    brokers: Vec<Option<Child>>,
    broker_addrs: Vec<SocketAddr>,
}

impl Soak {
    fn start() -> Soak {
        let ensemble = Ensemble::start("ensemble-soak");
        let first = free_udp_ports(3);
        let broker_addrs = (0..3)
            .map(|i| format!("127.0.0.1:{}", first + i).parse().unwrap())
            .collect();
        let mut soak = Soak {
            ensemble,
            brokers: vec![None, None, None],
            broker_addrs,
        };
        for id in 1..=3 {
            soak.start_broker(id);
        }
        soak
    }

    fn members(&self) -> String {
        let addrs: Vec<String> = self.ensemble.addrs.iter().map(|a| a.to_string()).collect();
        addrs.join(",")
    }

    fn start_broker(&mut self, id: u32) {
        let i = id as usize - 1;
        let dir = self.ensemble.dir.path().join(format!("broker-{id}"));
        let mut args: Vec<String> = vec![
            "broker".into(),
            "--id".into(),
            id.to_string(),
            "--listen".into(),
            self.broker_addrs[i].to_string(),
            "--zookeeper".into(),
            self.members(),
            "--data-dir".into(),
            dir.display().to_string(),
        ];
        args.extend(BROKER_FLAGS.iter().map(|a| a.to_string()));
        self.brokers[i] = Some(spawn_ready(&args, "listening on").0);
    }

    fn kill_broker(&mut self, id: u32) {
        let mut child = self.brokers[id as usize - 1].take().expect("running");
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Soak {
    fn drop(&mut self) {
        for child in self.brokers.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The ensemble's leader, as a majority of the running members sees it (waits, bounded,
/// until they agree on one).
async fn leader_of(ensemble: &Ensemble) -> SocketAddr {
    let deadline = Instant::now() + PROGRESS;
    loop {
        let mut seen = BTreeMap::new();
        for (i, addr) in ensemble.addrs.iter().enumerate() {
            if ensemble.members[i].is_none() {
                continue;
            }
            let status = tokio::time::timeout(Duration::from_secs(2), status_of(*addr)).await;
            if let Ok(status) = status {
                if let Some(leader) = status.leader {
                    *seen.entry(leader).or_insert(0) += 1;
                }
            }
        }
        if let Some((&leader, _)) = seen.iter().find(|(_, n)| **n >= 2) {
            return ensemble.addrs[leader as usize - 1];
        }
        assert!(
            Instant::now() < deadline,
            "the members agree on no leader: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the member at `addr` answers a `sync` (it reached the leader's commit
/// point and applied it): a healed member has caught up.
async fn caught_up(addr: SocketAddr) {
    let client = Client::without_session(addr, Config::default())
        .await
        .unwrap();
    let deadline = Instant::now() + PROGRESS;
    while let Err(e) = client.sync().await {
        if Instant::now() > deadline {
            let status = tokio::time::timeout(Duration::from_secs(2), status_of(addr)).await;
            panic!("{addr} does not catch up: {e}; its status: {status:?}");
        }
        // Not yet told who leads (a restarted member): asked again a Raft tick later.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The broker leading partition 0 (waits, bounded, for one).
async fn partition_leader(client: &ClusterClient) -> u32 {
    let path = cluster::partition_path(TOPIC, 0);
    let deadline = Instant::now() + PROGRESS;
    loop {
        if let Ok((data, _)) = client.zookeeper().get_data(&path).await {
            let meta: PartitionMetadata = wire::decode(&data).unwrap();
            if let Some(leader) = meta.leader {
                return leader;
            }
        }
        assert!(Instant::now() < deadline, "partition 0 gets no leader");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The register workload with its history, and the znode creator with what it had
/// acknowledged.
struct Workloads {
    /// Each register's history.
    history: Arc<Mutex<BTreeMap<String, Vec<Op>>>>,
    /// Register operations completed (answered) so far.
    ops: watch::Receiver<usize>,
    /// Znodes whose create was acknowledged.
    created: Arc<Mutex<BTreeSet<String>>>,
    creates: watch::Receiver<usize>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Register `k` of generation `generation`: when one of a generation's registers holds
/// [`OPS_PER_KEY`] operations, the clients move on to a new generation.
fn register(generation: usize, k: usize) -> String {
    format!("/soak-g{generation}-{k}")
}

async fn session(members: &[SocketAddr]) -> Client {
    let options = ClientOptions {
        session_timeout: Duration::from_secs(10),
        ..ClientOptions::default()
    };
    Client::connect_any(members, options)
        .await
        .expect("a session from the ensemble")
}

impl Workloads {
    async fn start(members: &[SocketAddr]) -> Workloads {
        let setup = session(members).await;
        setup
            .create("/soak-acked", b"", CreateMode::Persistent)
            .await
            .unwrap();
        create_registers(&setup, 0).await;
        setup.close().await.ok();
        let history: Arc<Mutex<BTreeMap<String, Vec<Op>>>> = Arc::default();
        let (ops_tx, ops) = watch::channel(0usize);
        let ops_tx = Arc::new(ops_tx);
        let generation = Arc::new(watch::channel(0usize).0);
        let advance = Arc::new(tokio::sync::Mutex::new(()));
        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        for client in 0..CLIENTS {
            let client = RegisterClient {
                id: client,
                client: session(members).await,
                history: history.clone(),
                ops: ops_tx.clone(),
                generation: generation.clone(),
                advance: advance.clone(),
                stop: stop_rx.clone(),
                rng: 0x2545_f491_4f6c_dd1d ^ (client as u64 + 1).wrapping_mul(0x9e37_79b9),
                last_seen_version: 0,
            };
            tasks.push(tokio::spawn(client.run()));
        }
        let created: Arc<Mutex<BTreeSet<String>>> = Arc::default();
        let (creates_tx, creates) = watch::channel(0usize);
        tasks.push(tokio::spawn(create_znodes(
            session(members).await,
            created.clone(),
            creates_tx,
            stop_rx,
        )));
        Workloads {
            history,
            ops,
            created,
            creates,
            stop,
            tasks,
        }
    }

    /// Waits (bounded) until `n` more register operations and `creates` more creates are
    /// acknowledged.
    async fn progress(&mut self, n: usize, creates: usize, during: &str) {
        for (rx, n, what) in [
            (&mut self.ops, n, "register operations"),
            (&mut self.creates, creates, "creates"),
        ] {
            let start = *rx.borrow_and_update();
            let waited = tokio::time::timeout(PROGRESS, rx.wait_for(|c| *c >= start + n)).await;
            assert!(waited.is_ok(), "{what} stalled {during} at {start}");
        }
    }

    async fn finish(self) -> (BTreeMap<String, Vec<Op>>, BTreeSet<String>) {
        self.stop.send_replace(true);
        for task in self.tasks {
            tokio::time::timeout(PROGRESS, task)
                .await
                .expect("a workload stops")
                .unwrap();
        }
        let history = std::mem::take(&mut *self.history.lock().unwrap());
        let created = std::mem::take(&mut *self.created.lock().unwrap());
        (history, created)
    }
}

/// Creates the registers of `generation`, each at "0" (trying again until each exists:
/// a session's creates are numbered, so a retry is not applied twice).
async fn create_registers(client: &Client, generation: usize) {
    for k in 0..KEYS {
        let path = register(generation, k);
        let deadline = Instant::now() + PROGRESS;
        loop {
            match client.create(&path, b"0", CreateMode::Persistent).await {
                Ok(_)
                | Err(ZkError::Server {
                    kind: ErrorKind::NodeExists,
                    ..
                }) => break,
                Err(e) => assert!(Instant::now() < deadline, "create {path}: {e}"),
            }
        }
    }
}

/// One session client of the register workload.
struct RegisterClient {
    id: usize,
    client: Client,
    history: Arc<Mutex<BTreeMap<String, Vec<Op>>>>,
    ops: Arc<watch::Sender<usize>>,
    /// The generation of registers in use.
    generation: Arc<watch::Sender<usize>>,
    /// Held by the client that creates the next generation.
    advance: Arc<tokio::sync::Mutex<()>>,
    stop: watch::Receiver<bool>,
    rng: u64,
    last_seen_version: u32,
}

impl RegisterClient {
    fn next(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    async fn run(mut self) {
        let mut i = 0u64;
        while !*self.stop.borrow() {
            if *self.client.session_state().borrow() == SessionState::Expired {
                panic!("client {}: its session expired", self.id);
            }
            let generation = *self.generation.borrow();
            let key = register(generation, self.next() as usize % KEYS);
            let full = self
                .history
                .lock()
                .unwrap()
                .get(&key)
                .is_some_and(|ops| ops.len() >= OPS_PER_KEY);
            if full {
                let _advancing = self.advance.lock().await;
                if *self.generation.borrow() == generation {
                    create_registers(&self.client, generation + 1).await;
                    self.generation.send_replace(generation + 1);
                }
                continue;
            }
            i += 1;
            let value = (self.id as u64 + 1) * 1_000_000 + i;
            let call = Instant::now();
            if let Some(op) = self.operate(&key, value, call).await {
                let mut history = self.history.lock().unwrap();
                history.entry(key).or_default().push(op);
                self.ops.send_modify(|n| *n += 1);
            }
        }
        self.client.close().await.ok();
    }

    /// One operation on `key`: a read after a sync (a member answers reads from its own
    /// tree, which may be behind), a write, or a compare-and-set. `None` for a read that
    /// failed (it changed nothing).
    async fn operate(&mut self, key: &str, value: u64, call: Instant) -> Option<Op> {
        let action = match self.next() % 3 {
            0 => {
                self.client.sync().await.ok()?;
                let (data, stat) = self.client.get_data(key).await.ok()?;
                self.last_seen_version = stat.version;
                Action::Read {
                    value: linearizability::parse(&data),
                    version: stat.version,
                }
            }
            1 => match self
                .client
                .set_data(key, value.to_string().as_bytes(), None)
                .await
            {
                Ok(stat) => Action::Write {
                    value,
                    new_version: stat.version,
                },
                Err(e) => return Some(self.lost(call, value, None, e)),
            },
            _ => {
                let expected = self.last_seen_version + (self.next() % 2) as u32;
                match self
                    .client
                    .set_data(key, value.to_string().as_bytes(), Some(expected))
                    .await
                {
                    Ok(stat) => Action::Cas {
                        value,
                        expected,
                        outcome: Ok(stat.version),
                    },
                    Err(ZkError::Server {
                        kind: ErrorKind::VersionMismatch,
                        message,
                    }) => Action::Cas {
                        value,
                        expected,
                        outcome: Err(linearizability::actual_version(&message)),
                    },
                    Err(e) => return Some(self.lost(call, value, Some(expected), e)),
                }
            }
        };
        Some(Op {
            client: self.id,
            call,
            ret: Instant::now(),
            action,
        })
    }

    /// A write that failed without an answer may still have happened.
    fn lost(&self, call: Instant, value: u64, expected: Option<u32>, error: ZkError) -> Op {
        eprintln!("client {}: a write's outcome is unknown: {error}", self.id);
        Op {
            client: self.id,
            call,
            ret: never_returned(call),
            action: Action::Lost { value, expected },
        }
    }
}

/// Creates `/soak-acked/n` one after another, keeping the names acknowledged.
async fn create_znodes(
    client: Client,
    created: Arc<Mutex<BTreeSet<String>>>,
    count: watch::Sender<usize>,
    stop: watch::Receiver<bool>,
) {
    let mut n = 0u64;
    while !*stop.borrow() {
        n += 1;
        let path = format!("/soak-acked/{n}");
        match client.create(&path, b"x", CreateMode::Persistent).await {
            Ok(_) => {
                let mut created = created.lock().unwrap();
                created.insert(n.to_string());
                count.send_replace(created.len());
            }
            Err(e) => eprintln!("create {path}: outcome unknown: {e}"),
        }
    }
    client.close().await.ok();
}

/// Every acknowledged znode is on the member at `addr` (read after a sync).
async fn has_every_znode(addr: SocketAddr, created: &BTreeSet<String>) {
    let client = Client::without_session(addr, Config::default())
        .await
        .unwrap();
    client.sync().await.expect("sync");
    let (children, _) = client.get_children("/soak-acked").await.unwrap();
    let have: BTreeSet<String> = children.into_iter().collect();
    let missing: Vec<_> = created.difference(&have).collect();
    assert!(
        missing.is_empty(),
        "{addr} lacks acknowledged znodes {missing:?}"
    );
}

fn rounds() -> usize {
    std::env::var("PEHRA_SOAK_ROUNDS")
        .ok()
        .map(|r| r.parse().expect("PEHRA_SOAK_ROUNDS: a number"))
        .unwrap_or(4)
}

#[test]
fn the_ensemble_keeps_everything_acknowledged_through_crashes_and_pauses() {
    let rounds = rounds();
    let mut soak = Soak::start();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Bounded: every round waits at most a few PROGRESS periods.
    let limit = Duration::from_secs(120 + 240 * rounds as u64);
    runtime.block_on(async {
        tokio::time::timeout(limit, soak_rounds(&mut soak, rounds))
            .await
            .expect("the soak took too long");
    });
}

async fn soak_rounds(soak: &mut Soak, rounds: usize) {
    let members = soak.ensemble.addrs.clone();
    let client = Arc::new(
        ClusterClient::connect_members(&members, None)
            .await
            .unwrap(),
    );
    client
        .create_topic_with(
            TOPIC,
            TopicConfig {
                partitions: 1,
                replication_factor: 3,
                min_insync_replicas: Some(2),
            },
        )
        .await
        .unwrap();
    client
        .wait_for_leaders(TOPIC, Duration::from_secs(30))
        .await
        .unwrap();
    let mut producer = Producer::start(client.clone(), TOPIC);
    let mut workloads = Workloads::start(&members).await;
    producer.wait_for_more(5).await;
    workloads.progress(10, 2, "at the start").await;

    for round in 0..rounds {
        let fault = Fault::of_round(round);
        let leader = leader_of(&soak.ensemble).await;
        let victim = if fault.on_leader() {
            leader
        } else {
            *members.iter().find(|a| **a != leader).unwrap()
        };
        eprintln!("round {round}: {fault:?} on {victim} (leader {leader})");
        if fault.kills() {
            soak.ensemble.kill(victim);
        } else {
            soak.ensemble.signal(victim, "STOP");
        }
        let during = format!("in round {round} ({fault:?})");
        workloads.progress(10, 2, &during).await;
        producer.wait_for_more(5).await;

        // The partition's leader dies too: the controller, on whichever member leads
        // now, must move the partition to another broker.
        let broker = partition_leader(&client).await;
        soak.kill_broker(broker);
        let moved = Instant::now();
        loop {
            let now = partition_leader(&client).await;
            if now != broker {
                break;
            }
            assert!(
                moved.elapsed() < PROGRESS,
                "{during}: partition 0 stays on the dead broker {broker}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        producer.wait_for_more(5).await;
        soak.start_broker(broker);

        if fault.kills() {
            soak.ensemble.restart(victim);
        } else {
            soak.ensemble.signal(victim, "CONT");
        }
        caught_up(victim).await;
        workloads
            .progress(5, 1, &format!("after round {round}"))
            .await;
    }

    let (acked, client) = producer.finish().await;
    let (history, created) = workloads.finish().await;
    eprintln!(
        "{rounds} rounds: {} records, {} znodes, {} register operations acknowledged; \
         {} produce errors (sent again)",
        acked.records.len(),
        created.len(),
        history.values().map(Vec::len).sum::<usize>(),
        acked.errors.len()
    );
    check_log(&client, TOPIC, &acked).await;
    for addr in &members {
        has_every_znode(*addr, &created).await;
    }
    for (key, ops) in &history {
        assert!(
            is_linearizable(ops),
            "the history of {key} is not linearizable: {ops:#?}"
        );
    }
}
