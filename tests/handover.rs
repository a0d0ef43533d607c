//! Warm (predictive) handover of a partition leader on real processes (seed 002): a
//! zookeeper and three brokers on loopback, each reading its health from a file, and
//! an idempotent producer with acks=all running throughout.
//!
//! - An operator's handover (`pehra cluster handover`) moves the leadership with no
//!   produce refused or sent again for an error, and loses nothing.
//! - A leader whose health turns Critical (its health file) hands over by itself.
//! - A candidate SIGKILLed during the pre-sync rolls the handover back: the leader
//!   keeps leading, the ordinary election drops the dead candidate from the in-sync
//!   set, and every acknowledged record is there.

mod common;

use common::producer::{check_log, Producer};
use common::{pehra, unsafe_kill, TestCluster};
use pehra_broker::client::{ClusterClient, RetryStats};
use pehra_cluster::handover::{HandoverOrder, HandoverReason};
use pehra_cluster::{self as cluster, warm, HANDOVERS};
use pehra_shared::wire::{self, PartitionMetadata};
use pehra_zookeeper::{Client, CreateMode};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const TOPIC: &str = "orders";
const HEALTHY: &str = "cpu=100\nmemory=100\ndisk_io=0\nrtt_ms=1\nfailures=0\n";
/// Index 300: Critical.
const CRITICAL: &str = "cpu=1000\nmemory=1000\ndisk_io=1000\nrtt_ms=1\nfailures=5\n";

fn health_file(dir: &Path, id: u32) -> std::path::PathBuf {
    dir.join(format!("health-{id}"))
}

/// Three brokers, healthy, awake, with short sessions.
fn start_cluster(name: &str) -> TestCluster {
    let mut builder = TestCluster::builder(name).broker_flags(&[
        "--session-timeout-ms",
        "1500",
        "--replica-lag-ms",
        "2000",
        "--ack-timeout-ms",
        "2000",
        "--stay-awake",
    ]);
    for id in 1..=3 {
        let file = health_file(builder.dir(), id);
        std::fs::write(&file, HEALTHY).unwrap();
        builder = builder.flags_of(id, &["--health-file", file.to_str().unwrap()]);
    }
    builder.start(3)
}

async fn partition(zk: &Client) -> PartitionMetadata {
    let (data, _) = zk
        .get_data(&cluster::partition_path(TOPIC, 0))
        .await
        .unwrap();
    wire::decode(&data).unwrap()
}

/// Waits (bounded, on a watch of the partition znode) until `what` holds.
async fn wait_for_partition(
    zk: &Client,
    why: &str,
    what: impl Fn(&PartitionMetadata) -> bool,
) -> PartitionMetadata {
    let path = cluster::partition_path(TOPIC, 0);
    let mut w = zk.watch_data(&path).await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let m = partition(zk).await;
            if what(&m) {
                return m;
            }
            w.next().await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("waiting for {why}"))
}

/// Creates the topic (one partition on all three) and waits until all are in sync.
async fn create_topic(c: &TestCluster) -> (Arc<ClusterClient>, Client) {
    let zk = c.zk().await;
    let client = Arc::new(ClusterClient::connect(c.zk_addr).await.unwrap());
    client.create_topic(TOPIC, 1, 3).await.unwrap();
    client
        .wait_for_leaders(TOPIC, Duration::from_secs(30))
        .await
        .unwrap();
    wait_for_partition(&zk, "all three in sync", |m| m.isr.len() == 3).await;
    (client, zk)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Retries for an error (a refusal or no answer): none in a warm handover. (A request
/// abandoned because the zookeeper said the leader moved is sent on at once, with no
/// error: `leader_moved`, not counted.)
fn error_retries(s: RetryStats) -> u64 {
    s.not_leader + s.unavailable + s.no_leader + s.no_answer
}

#[test]
fn an_operator_handover_under_acks_all_load_refuses_nothing_and_loses_nothing() {
    let c = start_cluster("handover-operator");
    runtime().block_on(async {
        let (client, zk) = create_topic(&c).await;
        let mut producer = Producer::start(client.clone(), TOPIC);
        producer.wait_for_more(30).await;
        let before = partition(&zk).await;
        let retries_before = error_retries(client.retry_stats());
        let zk_addr = c.zk_addr.to_string();
        let (code, out, err) = tokio::task::spawn_blocking(move || {
            pehra(&["cluster", "handover", TOPIC, "0", "--zookeeper", &zk_addr])
        })
        .await
        .unwrap();
        assert_eq!(code, 0, "handover failed: {out} {err}");
        assert!(out.contains("completed"), "{out}");
        let after = partition(&zk).await;
        assert_ne!(after.leader, before.leader, "the leadership moved");
        assert_eq!(after.leader_epoch, before.leader_epoch + 1);
        producer.wait_for_more(30).await;
        let (acked, _) = producer.finish().await;
        assert!(
            acked.errors.is_empty(),
            "produce errors: {:?}",
            acked.errors
        );
        assert_eq!(
            error_retries(client.retry_stats()),
            retries_before,
            "a produce was refused or unanswered during the handover: {:?}",
            client.retry_stats()
        );
        check_log(&client, TOPIC, &acked).await;
        let stats = warm::read_stats(&zk).await.unwrap();
        assert_eq!((stats.completed, stats.rolled_back), (1, 0));
        let (code, status, _) =
            pehra(&["cluster", "status", "--zookeeper", &c.zk_addr.to_string()]);
        assert_eq!(code, 0);
        assert!(
            status.contains("warm handovers: 1 completed, 0 rolled back"),
            "{status}"
        );
    });
}

#[test]
fn a_leader_whose_health_turns_critical_hands_over() {
    let c = start_cluster("handover-health");
    runtime().block_on(async {
        let (client, zk) = create_topic(&c).await;
        let mut producer = Producer::start(client.clone(), TOPIC);
        producer.wait_for_more(10).await;
        let before = partition(&zk).await;
        let sick = before.leader.unwrap();
        std::fs::write(health_file(c.dir.path(), sick), CRITICAL).unwrap();
        let after = wait_for_partition(&zk, "the sick leader to hand over", |m| {
            m.leader.is_some_and(|l| l != sick)
        })
        .await;
        assert_eq!(after.leader_epoch, before.leader_epoch + 1, "one step");
        assert!(after.isr.contains(&sick), "the old leader follows, in sync");
        producer.wait_for_more(10).await;
        let (acked, _) = producer.finish().await;
        assert!(
            acked.errors.is_empty(),
            "produce errors: {:?}",
            acked.errors
        );
        check_log(&client, TOPIC, &acked).await;
        let stats = warm::read_stats(&zk).await.unwrap();
        let last = stats.last.expect("an outcome");
        assert_eq!(
            (last.reason, last.outcome.as_str(), last.from),
            (HandoverReason::Health, "completed", Some(sick))
        );
    });
}

#[test]
fn a_candidate_killed_mid_pre_sync_rolls_back_to_the_ordinary_election() {
    let mut c = start_cluster("handover-rollback");
    runtime().block_on(async {
        let (client, zk) = create_topic(&c).await;
        let mut producer = Producer::start(client.clone(), TOPIC);
        producer.wait_for_more(20).await;
        let before = partition(&zk).await;
        let leader = before.leader.unwrap();
        let candidate = *before.isr.iter().find(|&&b| b != leader).unwrap();
        // Paused, the candidate cannot catch up: the pre-sync waits for it.
        unsafe_kill(c.pid(candidate), "STOP");
        let order = HandoverOrder {
            reason: HandoverReason::Operator,
            to: Some(candidate),
            presync: None,
            ready_log_end: None,
        };
        let path = cluster::handover_path(TOPIC, 0);
        let mut w = zk.watch_data(&path).await;
        zk.create(
            &path,
            &wire::encode(&order).unwrap(),
            CreateMode::Persistent,
        )
        .await
        .unwrap();
        if w.is_err() {
            w = zk.watch_data(&path).await;
        }
        let mut w = w.unwrap();
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let (data, _) = zk.get_data(&path).await.unwrap();
                let o: HandoverOrder = wire::decode(&data).unwrap();
                if o.presync.is_some_and(|p| p.candidate == candidate) {
                    return;
                }
                w.next().await;
            }
        })
        .await
        .expect("the pre-sync starts");
        // Killed mid pre-sync.
        unsafe_kill(c.pid(candidate), "KILL");
        c.kill_broker(candidate);
        tokio::time::timeout(Duration::from_secs(20), async {
            let mut orders = zk.watch_children(HANDOVERS).await.unwrap();
            while zk.get_data(&path).await.is_ok() {
                orders.next().await;
            }
        })
        .await
        .expect("the handover ends");
        let stats = warm::read_stats(&zk).await.unwrap();
        assert_eq!((stats.completed, stats.rolled_back), (0, 1));
        let last = stats.last.unwrap();
        assert!(last.outcome.starts_with("rolled back"), "{}", last.outcome);
        // The ordinary election: the living leader stays, the dead candidate leaves the
        // in-sync set.
        let after = wait_for_partition(&zk, "the candidate out of the ISR", |m| {
            !m.isr.contains(&candidate)
        })
        .await;
        assert_eq!(after.leader, Some(leader));
        producer.wait_for_more(20).await;
        let (acked, _) = producer.finish().await;
        check_log(&client, TOPIC, &acked).await;
    });
}
