//! The cluster controller against a real in-process zookeeper: fake brokers are just
//! ephemeral registrations, each from its own client, so a broker "dies" when its
//! session is closed.
//!
//! No sleeps: every wait is on a watch, bounded by a timeout.

use pehra_cluster::{
    self as cluster, rebalance, Controller, ControllerConfig, RebalanceEvent, RebalanceOptions,
};
use pehra_shared::wire::{self, BrokerInfo, PartitionMetadata, TopicConfig};
use pehra_zookeeper::server::ZkMetrics;
use pehra_zookeeper::{Client, ClientOptions, CreateMode, Server, ServerConfig, WatchEvent};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// The fake brokers' session timeout (the server's minimum).
const SESSION: Duration = Duration::from_secs(1);

struct Zk {
    server: Server,
    addr: SocketAddr,
    metrics: ZkMetrics,
    _dir: tempfile::TempDir,
}

impl Zk {
    async fn start() -> Zk {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().to_path_buf());
        cfg.min_session_timeout = SESSION;
        let metrics = cfg.metrics.clone();
        let server = Server::start(cfg).await.expect("server starts");
        let addr = server.local_addr();
        Zk {
            server,
            addr,
            metrics,
            _dir: dir,
        }
    }

    async fn client(&self) -> Client {
        let options = ClientOptions {
            session_timeout: SESSION,
            ..Default::default()
        };
        Client::connect(self.addr, options).await.expect("connect")
    }

    /// Runs a controller until the returned guard is dropped.
    fn controller(&self, config: ControllerConfig) -> Abort {
        Abort(tokio::spawn(Controller::run_with(self.addr, config)))
    }

    /// A fake broker: its own session and registration, on host `h{id}`.
    async fn broker(&self, id: u32) -> Client {
        let client = self.client().await;
        cluster::ensure_path(&client, cluster::BROKERS)
            .await
            .expect("brokers path");
        let info = BrokerInfo {
            id,
            addr: format!("127.0.0.1:{}", 6000 + id),
            host: format!("h{id}"),
            rack: None,
        };
        client
            .create(
                &cluster::broker_path(id),
                &wire::encode(&info).unwrap(),
                CreateMode::Ephemeral,
            )
            .await
            .expect("register");
        client
    }

    async fn stop(self) {
        self.server.shutdown().await.expect("clean shutdown");
    }
}

struct Abort(tokio::task::JoinHandle<Result<(), pehra_zookeeper::ZkError>>);

impl Drop for Abort {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs `f`, failing the test if it takes longer than `secs`.
async fn within<T>(secs: u64, what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(secs), f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {secs} s: {what}"),
    }
}

async fn create_topic(client: &Client, topic: &str, partitions: u32, replication_factor: u32) {
    cluster::ensure_path(client, cluster::TOPICS)
        .await
        .expect("topics path");
    let config = TopicConfig {
        partitions,
        replication_factor,
        min_insync_replicas: None,
    };
    client
        .create(
            &cluster::topic_path(topic),
            &wire::encode(&config).unwrap(),
            CreateMode::Persistent,
        )
        .await
        .expect("create topic");
}

/// Waits (on children watches) until `path` exists; its root-most ancestors must.
async fn wait_exists(client: &Client, path: &str) {
    let (parent, name) = path.rsplit_once('/').expect("absolute path");
    if !parent.is_empty() && client.exists(parent).await.expect("exists").is_none() {
        Box::pin(wait_exists(client, parent)).await;
    }
    let parent = if parent.is_empty() { "/" } else { parent };
    let mut watch = client.watch_children(parent).await.expect("watch");
    loop {
        match watch.next().await {
            Some(Ok(WatchEvent::Children(c))) if c.children.iter().any(|c| c == name) => return,
            Some(Ok(_)) => {}
            other => panic!("watch of {parent} ended: {other:?}"),
        }
    }
}

/// Waits until partition `topic/p` satisfies `pred`; returns that state.
async fn wait_state(
    client: &Client,
    topic: &str,
    p: u32,
    what: &str,
    pred: impl Fn(&PartitionMetadata) -> bool,
) -> PartitionMetadata {
    let path = cluster::partition_path(topic, p);
    within(10, what, async {
        wait_exists(client, &path).await;
        let mut watch = client.watch_data(&path).await.expect("watch");
        loop {
            match watch.next().await {
                Some(Ok(WatchEvent::Data(node))) => {
                    let meta: PartitionMetadata = wire::decode(&node.data).expect("decodes");
                    if pred(&meta) {
                        return meta;
                    }
                }
                other => panic!("watch of {path} ended: {other:?}"),
            }
        }
    })
    .await
}

async fn state(client: &Client, topic: &str, p: u32) -> (PartitionMetadata, u32) {
    let (data, stat) = client
        .get_data(&cluster::partition_path(topic, p))
        .await
        .expect("read partition");
    (wire::decode(&data).expect("decodes"), stat.version)
}

fn set(ids: &[u32]) -> BTreeSet<u32> {
    ids.iter().copied().collect()
}

#[tokio::test]
async fn leaders_fail_over_within_the_isr_and_go_offline_without_it() {
    let zk = Zk::start().await;
    let _controller = zk.controller(ControllerConfig::default());
    let admin = zk.client().await;
    let mut brokers = BTreeMap::new();
    for id in 1..=3 {
        brokers.insert(id, zk.broker(id).await);
    }
    create_topic(&admin, "t", 1, 3).await;
    let first = wait_state(&admin, "t", 0, "assignment", |_| true).await;
    assert_eq!(first.replicas, [1, 2, 3]);
    assert_eq!((first.leader, first.leader_epoch), (Some(1), 0));
    assert_eq!(first.isr, [1, 2, 3]);

    // The leader dies: a new leader from the ISR, epoch + 1, the dead one out of the ISR.
    brokers.remove(&1).unwrap().close().await.expect("close");
    let second = wait_state(&admin, "t", 0, "failover", |m| m.leader != Some(1)).await;
    assert!(matches!(second.leader, Some(2 | 3)), "{second:?}");
    assert_eq!(second.leader_epoch, 1);
    assert_eq!(set(&second.isr), set(&[2, 3]));
    assert_eq!(second.replicas, [1, 2, 3]);

    // Every in-sync replica dies: no leader, the ISR still names who has the data.
    for (_, b) in std::mem::take(&mut brokers) {
        b.close().await.expect("close");
    }
    let offline = wait_state(&admin, "t", 0, "offline", |m| m.leader.is_none()).await;
    assert!(!offline.isr.is_empty());
    assert!(set(&offline.isr).is_subset(&set(&[2, 3])), "{offline:?}");
    assert!(offline.leader_epoch >= 2);

    // One of them returns: elected.
    let back = offline.isr[0];
    let _back = zk.broker(back).await;
    let elected = wait_state(&admin, "t", 0, "re-election", |m| m.leader.is_some()).await;
    assert_eq!(elected.leader, Some(back));
    assert_eq!(elected.leader_epoch, offline.leader_epoch + 1);
    assert_eq!(elected.isr, [back]);
    zk.stop().await;
}

#[tokio::test]
async fn controlled_shutdown_moves_leadership_and_leaves_the_isr() {
    let zk = Zk::start().await;
    let _controller = zk.controller(ControllerConfig::default());
    let admin = zk.client().await;
    let mut brokers = BTreeMap::new();
    for id in 1..=3 {
        brokers.insert(id, zk.broker(id).await);
    }
    create_topic(&admin, "s", 2, 3).await;
    let p0 = wait_state(&admin, "s", 0, "assignment", |_| true).await;
    let p1 = wait_state(&admin, "s", 1, "assignment", |_| true).await;
    assert_eq!((p0.leader, p1.leader), (Some(1), Some(2)));

    // Broker 1 asks to leave, with its own session (which it keeps meanwhile).
    brokers[&1]
        .create(&cluster::shutdown_path(1), b"", CreateMode::Ephemeral)
        .await
        .expect("request shutdown");
    let p0 = wait_state(&admin, "s", 0, "leadership moved", |m| m.leader != Some(1)).await;
    assert!(matches!(p0.leader, Some(2 | 3)), "{p0:?}");
    assert_eq!(p0.leader_epoch, 1);
    assert_eq!(set(&p0.isr), set(&[2, 3]));
    let p1 = wait_state(&admin, "s", 1, "follower out of the ISR", |m| {
        !m.isr.contains(&1)
    })
    .await;
    assert_eq!(
        (p1.leader, p1.leader_epoch),
        (Some(2), 0),
        "its leader stays"
    );
    assert_eq!(set(&p1.isr), set(&[2, 3]));

    // The broker goes; its request goes with its session.
    brokers.remove(&1).unwrap().close().await.expect("close");
    let (left, _) = admin.get_children(cluster::SHUTDOWN).await.expect("ls");
    assert!(left.is_empty(), "{left:?}");
    zk.stop().await;
}

#[tokio::test]
async fn a_broker_dead_too_long_is_replaced_one_back_in_time_is_not() {
    let zk = Zk::start().await;
    let _controller = zk.controller(ControllerConfig {
        unclean_election: false,
        replace_dead_after: Some(Duration::from_secs(2)),
    });
    let (admin, mut brokers) = four_brokers_and_topic_r(&zk).await;

    // 2 dies and returns before its 2 s are up: it stays a replica.
    brokers.remove(&2).unwrap().close().await.expect("close");
    let shrunk = wait_state(&admin, "r", 0, "isr shrink", |m| !m.isr.contains(&2)).await;
    assert_eq!(shrunk.isr, [1, 3]);
    brokers.insert(2, zk.broker(2).await);

    // 3 dies for good: after 2 s the free broker 4 takes its place (not in the ISR).
    brokers.remove(&3).unwrap().close().await.expect("close");
    let replaced = wait_state(&admin, "r", 0, "replacement", |m| !m.replicas.contains(&3)).await;
    assert_eq!(
        replaced.replicas,
        [1, 2, 4],
        "2 came back in time and stays"
    );
    assert_eq!(replaced.isr, [1]);
    assert_eq!((replaced.leader, replaced.leader_epoch), (Some(1), 0));
    zk.stop().await;
}

#[tokio::test]
async fn a_restarted_controller_keeps_the_clock_of_a_dead_broker() {
    let zk = Zk::start().await;
    let config = ControllerConfig {
        unclean_election: false,
        replace_dead_after: Some(Duration::from_secs(60)),
    };
    let controller = zk.controller(config.clone());
    let (admin, mut brokers) = four_brokers_and_topic_r(&zk).await;

    // 3 dies: the controller records since when.
    brokers.remove(&3).unwrap().close().await.expect("close");
    let record = cluster::absent_path(3);
    within(10, "the absence recorded", wait_exists(&admin, &record)).await;
    // The controller stops; meanwhile an hour goes by (the record says so).
    drop(controller);
    let an_hour_ago = cluster::unix_ms() - 3_600_000;
    admin
        .set_data(&record, an_hour_ago.to_string().as_bytes(), None)
        .await
        .expect("backdate");
    // A new controller knows 3 has been gone for an hour, more than its 60 s: it
    // replaces it at once (with its clock restarted it would wait a minute).
    let _controller = zk.controller(config);
    let replaced = wait_state(&admin, "r", 0, "replacement", |m| !m.replicas.contains(&3)).await;
    assert_eq!(replaced.replicas, [1, 2, 4]);
    // 3 is named nowhere now: its record goes.
    within(10, "the record deleted", async {
        let mut watch = admin.watch_data(&record).await.expect("watch");
        loop {
            match watch.next().await {
                Some(Ok(WatchEvent::Deleted)) | None => return,
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("watch of {record}: {e}"),
            }
        }
    })
    .await;
    zk.stop().await;
}

/// Fake brokers 1..=4 and topic `r` (1 partition, 3 replicas) assigned to 1, 2, 3; an
/// admin client, and the brokers' clients by id.
async fn four_brokers_and_topic_r(zk: &Zk) -> (Client, BTreeMap<u32, Client>) {
    let admin = zk.client().await;
    let mut brokers = BTreeMap::new();
    for id in 1..=4 {
        brokers.insert(id, zk.broker(id).await);
    }
    create_topic(&admin, "r", 1, 3).await;
    let first = wait_state(&admin, "r", 0, "assignment", |_| true).await;
    assert_eq!(first.replicas, [1, 2, 3]);
    (admin, brokers)
}

/// Plays the partition leaders' part: whenever a partition names a replica that is not
/// in its ISR, adds it (conditionally), as a leader does once the follower caught up.
async fn simulate_catch_up(zk: &Zk, topic: &'static str, partitions: u32) -> Vec<Abort> {
    let client = Arc::new(zk.client().await);
    let mut tasks = Vec::new();
    for p in 0..partitions {
        let client = client.clone();
        tasks.push(Abort(tokio::spawn(async move {
            let path = cluster::partition_path(topic, p);
            let mut watch = client.watch_data(&path).await?;
            while let Some(Ok(WatchEvent::Data(node))) = watch.next().await {
                let mut meta: PartitionMetadata = wire::decode(&node.data).expect("decodes");
                let missing: Vec<u32> = meta
                    .replicas
                    .iter()
                    .copied()
                    .filter(|b| !meta.isr.contains(b))
                    .collect();
                if missing.is_empty() {
                    continue;
                }
                meta.isr.extend(missing);
                // A mismatch means someone else wrote: the watch brings the new state.
                let _ = client
                    .set_data(
                        &path,
                        &wire::encode(&meta).unwrap(),
                        Some(node.stat.version),
                    )
                    .await;
            }
            Ok(())
        })));
    }
    tasks
}

#[tokio::test]
async fn rebalance_gives_a_new_broker_its_share() {
    let zk = Zk::start().await;
    let _controller = zk.controller(ControllerConfig::default());
    let admin = zk.client().await;
    let mut brokers = Vec::new();
    for id in 1..=3 {
        brokers.push(zk.broker(id).await);
    }
    create_topic(&admin, "b", 4, 3).await;
    for p in 0..4 {
        wait_state(&admin, "b", p, "assignment", |_| true).await;
    }
    brokers.push(zk.broker(4).await);
    let before: Vec<_> = states(&admin, "b", 4).await;

    // Targets among brokers 1-4: p0 [1,2,3] (as now), p1 [2,3,4], p2 [3,4,1], p3 [4,1,2].
    let mut lines = Vec::new();
    let dry = rebalance(
        &admin,
        RebalanceOptions {
            dry_run: true,
            ..Default::default()
        },
        |e| lines.push(e.to_string()),
    )
    .await
    .expect("dry run");
    assert_eq!(dry.moved.len(), 3, "{lines:?}");
    assert_eq!((dry.balanced, dry.timed_out.clone()), (1, None));
    assert!(lines.contains(&"b/1: would move replicas 2,3,1 -> 2,3,4".to_string()));
    assert_eq!(
        states(&admin, "b", 4).await,
        before,
        "a dry run writes nothing"
    );

    // Nobody catches up: the first partition to move times out with extra replicas.
    let mut lines = Vec::new();
    let stuck = rebalance(
        &admin,
        RebalanceOptions {
            timeout: Duration::from_millis(300),
            dry_run: false,
        },
        |e| lines.push(e.to_string()),
    )
    .await
    .expect("rebalance");
    assert_eq!(stuck.timed_out, Some(("b".to_string(), 1)));
    assert_eq!(lines[0], "b/1: copying to broker 4 (isr 2,3,1)…");
    assert!(
        lines[1].starts_with("b/1: timed out waiting for broker 4"),
        "{lines:?}"
    );
    assert_eq!(lines.len(), 2, "it stops there: {lines:?}");
    let (p1, _) = state(&admin, "b", 1).await;
    assert_eq!(p1.replicas, [2, 3, 4, 1], "new replica added, old one kept");
    assert_eq!((p1.leader, p1.leader_epoch), (Some(2), 0));
    assert_eq!(p1.isr, [2, 3, 1]);

    // With leaders letting followers catch up, it completes.
    let _leaders = simulate_catch_up(&zk, "b", 4).await;
    let mut events = Vec::new();
    let report = within(
        20,
        "rebalance",
        rebalance(
            &admin,
            RebalanceOptions {
                timeout: Duration::from_secs(10),
                dry_run: false,
            },
            |e| events.push(e.clone()),
        ),
    )
    .await
    .expect("rebalance");
    assert_eq!(report.timed_out, None, "{events:?}");
    assert_eq!(report.moved.len(), 3, "{events:?}");
    let targets = [[1, 2, 3], [2, 3, 4], [3, 4, 1], [4, 1, 2]];
    for (p, target) in targets.iter().enumerate() {
        let (m, _) = state(&admin, "b", p as u32).await;
        assert_eq!(m.replicas, target, "partition {p}");
        assert_eq!(m.leader, Some(target[0]), "partition {p}");
        assert_eq!(set(&m.isr), set(target), "partition {p}");
    }
    let (p3, _) = state(&admin, "b", 3).await;
    assert_eq!(p3.leader_epoch, 1, "leadership moved from 1 to 4");
    assert!(events.iter().any(|e| matches!(e,
        RebalanceEvent::Moved { partition: 3, replicas, leader: Some(4), .. } if replicas == &[4, 1, 2])));

    // Balanced now; a leader off its preferred replica is moved back.
    let (mut p0, version) = state(&admin, "b", 0).await;
    p0.leader = Some(2);
    p0.leader_epoch += 1;
    admin
        .set_data(
            &cluster::partition_path("b", 0),
            &wire::encode(&p0).unwrap(),
            Some(version),
        )
        .await
        .expect("move leader away");
    let again = rebalance(&admin, RebalanceOptions::default(), |_| {})
        .await
        .expect("rebalance");
    assert_eq!((again.balanced, again.moved.len()), (4, 0));
    assert_eq!(again.leaders_moved, 1);
    let (p0_after, _) = state(&admin, "b", 0).await;
    assert_eq!(p0_after.leader, Some(1));
    assert_eq!(p0_after.leader_epoch, p0.leader_epoch + 1);
    zk.stop().await;
}

/// Every partition's state, in order.
async fn states(client: &Client, topic: &str, partitions: u32) -> Vec<PartitionMetadata> {
    let mut out = Vec::new();
    for p in 0..partitions {
        out.push(state(client, topic, p).await.0);
    }
    out
}

/// Publishes `broker`'s PEHRA status with Node Health Index `nhi`, as its PEHRA driver
/// does (created, or replaced).
async fn publish_health(client: &Client, broker: u32, nhi: u16) {
    let node = format!("broker-{broker}");
    let status = wire::NodeStatus {
        node: node.clone(),
        addr: format!("127.0.0.1:{}", 6000 + broker),
        role: wire::NodeRole::Awake,
        candidate: true,
        stay_awake: true,
        idle: false,
        next_alarm_ms: None,
        office: None,
        wake_generation: 0,
        since_ms: 0,
        nhi: Some(nhi),
        lease_ms: None,
        rtt_ms: None,
    };
    let data = wire::encode(&status).unwrap();
    let path = cluster::pehra_node_path(&node);
    cluster::ensure_path(client, cluster::PEHRA_NODES)
        .await
        .expect("nodes path");
    match client.set_data(&path, &data, None).await {
        Ok(_) => {}
        Err(_) => {
            client
                .create(&path, &data, CreateMode::Ephemeral)
                .await
                .expect("status");
        }
    }
}

/// Reads the controller's drivers have made of the zookeeper so far.
fn reads(zk: &Zk) -> u64 {
    zk.metrics.requests_taken("get_data") + zk.metrics.requests_taken("get_children")
}

/// Two healthy fake brokers and `topic` (one partition on both) with a leader and both
/// in sync, the warm-handover driver started: the brokers, an admin client and the
/// partition.
async fn healthy_pair(zk: &Zk, topic: &str) -> ([Client; 2], Client, PartitionMetadata) {
    let brokers = [zk.broker(1).await, zk.broker(2).await];
    publish_health(&brokers[0], 1, 900).await;
    publish_health(&brokers[1], 2, 900).await;
    let admin = zk.client().await;
    create_topic(&admin, topic, 1, 2).await;
    let meta = wait_state(&admin, topic, 0, "a leader and both in sync", |m| {
        m.leader.is_some() && m.isr.len() == 2
    })
    .await;
    wait_exists(&admin, cluster::HANDOVERS).await;
    (brokers, admin, meta)
}

/// With nothing to do, the controller and its warm-handover driver read nothing: they
/// wait on watches (a safety resync every 5 minutes). The warm driver read 7 znodes of its
/// own zookeeper every second (issue 19: an idle zookeeper's wake-ups). The sleeps are
/// the thing under test: time passing without work.
#[tokio::test]
async fn an_idle_controller_reads_nothing() {
    let zk = Zk::start().await;
    let _controller = zk.controller(ControllerConfig::default());
    let (brokers, _admin, _) = healthy_pair(&zk, "idle").await;
    // The drivers' first passes and the watches' first notifications.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = reads(&zk);
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let idle_reads = reads(&zk) - before;
    assert_eq!(idle_reads, 0, "znode reads in 3.5 s of an idle cluster");
    drop(brokers);
    zk.stop().await;
}

/// A leader whose published health falls to Critical gets a handover order at once:
/// the warm driver is woken by the status change (a watch), not by a poll.
#[tokio::test]
async fn a_leaders_health_falling_orders_a_handover_at_once() {
    let zk = Zk::start().await;
    let _controller = zk.controller(ControllerConfig::default());
    let (brokers, admin, meta) = healthy_pair(&zk, "sick").await;
    let leader = meta.leader.expect("a leader");
    let index = usize::try_from(leader - 1).unwrap();
    publish_health(&brokers[index], leader, 100).await;
    within(
        5,
        "a handover order for the partition",
        wait_exists(&admin, &cluster::handover_path("sick", 0)),
    )
    .await;
    drop(brokers);
    zk.stop().await;
}
