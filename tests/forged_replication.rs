//! Replication must trust only what it can check: forged `POST /replica` fetches, sent
//! from a plain socket as an attacker on the LAN would, against a zookeeper and three
//! brokers on loopback. A forged leader epoch never fences a leader (it is checked with
//! the zookeeper first), and a fetch offset past the leader's log end is never taken as
//! a follower's progress (it would acknowledge acks=all records no follower has).

mod common;

use common::{unsafe_kill, TestCluster};
use pehra_broker::client::ClusterClient;
use pehra_cluster as cluster;
use pehra_shared::coap::{Code, Config, Method, Request, Response, CONTENT_FORMAT_CBOR};
use pehra_shared::driver::{Endpoint, Router};
use pehra_shared::wire::{
    self, Acks, PartitionMetadata, ProduceRequest, Record, RecordBatch, ReplicaFetchPartition,
    ReplicaFetchRequest,
};
use std::net::SocketAddr;
use std::time::Duration;

const TOPIC: &str = "forged";

/// Three brokers with long sessions and replica lag, so nothing but the forged fetches
/// changes the partition's state during a test; acks=all gives up after 2 s.
fn start_cluster(name: &str) -> TestCluster {
    TestCluster::builder(name)
        .broker_flags(&[
            "--session-timeout-ms",
            "30000",
            "--replica-lag-ms",
            "20000",
            "--ack-timeout-ms",
            "2000",
            "--stay-awake",
        ])
        .start(3)
}

/// Creates the topic (one partition on all three brokers) and waits until all three are
/// in sync; returns the partition's state.
async fn topic_in_sync(c: &TestCluster) -> PartitionMetadata {
    let client = ClusterClient::connect(c.zk_addr).await.unwrap();
    client.create_topic(TOPIC, 1, 3).await.unwrap();
    client
        .wait_for_leaders(TOPIC, Duration::from_secs(20))
        .await
        .unwrap();
    let zk = c.zk().await;
    // Generous: in a local CI run right after the fuzz, cross and package builds the third
    // replica once took over 20 s to join (probably a disk still writing back their
    // output, so every fdatasync slow: not measured); alone it takes well under one.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (data, _) = zk
            .get_data(&cluster::partition_path(TOPIC, 0))
            .await
            .unwrap();
        let meta: PartitionMetadata = wire::decode(&data).unwrap();
        if meta.isr.len() == 3 {
            return meta;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not in sync: {meta:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A plain CoAP client socket, as an attacker has.
async fn attacker() -> Endpoint {
    Endpoint::bind(
        "127.0.0.1:0".parse().unwrap(),
        Config::default(),
        Router::new(),
    )
    .await
    .unwrap()
}

async fn post(from: &Endpoint, to: SocketAddr, path: &str, body: Vec<u8>) -> Response {
    let request = Request::new(Method::Post, path)
        .with_payload(body)
        .with_content_format(CONTENT_FORMAT_CBOR);
    tokio::time::timeout(Duration::from_secs(10), from.handle().request(to, request))
        .await
        .expect("an answer in time")
        .expect("an answer")
}

/// A replica fetch in `replica`'s name.
fn forged_fetch(replica: u32, leader_epoch: u32, offset: u64) -> Vec<u8> {
    wire::encode(&ReplicaFetchRequest {
        replica,
        max_wait_ms: 0,
        max_bytes: 1024,
        partitions: vec![ReplicaFetchPartition {
            topic: TOPIC.into(),
            partition: 0,
            offset,
            leader_epoch,
            last_fetched_epoch: None,
            high_watermark: None,
        }],
    })
    .unwrap()
}

/// A replica fetch in `replica`'s name from the log's end, asking to be held `max_wait_ms`.
fn held_fetch(replica: u32, leader_epoch: u32, max_wait_ms: u32) -> Vec<u8> {
    wire::encode(&ReplicaFetchRequest {
        replica,
        max_wait_ms,
        max_bytes: 1024,
        partitions: vec![ReplicaFetchPartition {
            topic: TOPIC.into(),
            partition: 0,
            offset: 0,
            leader_epoch,
            last_fetched_epoch: None,
            high_watermark: Some(0),
        }],
    })
    .unwrap()
}

/// A leader holds an idle follower's fetch up to 30 s; a socket gets one such fetch held
/// at a time: a newer fetch from it ends the older at once (so no peer can pile up held
/// fetches, and a follower that sent its fetch again frees the one it gave up on).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_has_one_fetch_held_at_a_time() {
    let c = start_cluster("forged-held");
    let meta = topic_in_sync(&c).await;
    let leader = meta.leader.unwrap();
    let follower = *meta.replicas.iter().find(|&&r| r != leader).unwrap();
    // Two requests in flight to one peer at once.
    let socket = Endpoint::bind(
        "127.0.0.1:0".parse().unwrap(),
        Config {
            nstart: 2,
            ..Config::default()
        },
        Router::new(),
    )
    .await
    .unwrap();
    let to = c.addr(leader);
    let started = tokio::time::Instant::now();
    // Polled in order, so sent in order: the first is held (nothing new, 60 s asked),
    // the second asks for no wait and ends it.
    let (first, second) = tokio::join!(
        post(
            &socket,
            to,
            "replica",
            held_fetch(follower, meta.leader_epoch, 60_000)
        ),
        post(
            &socket,
            to,
            "replica",
            held_fetch(follower, meta.leader_epoch, 0)
        ),
    );
    assert_eq!(
        (first.code(), second.code()),
        (Code::CONTENT, Code::CONTENT)
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the older fetch was held {:?}",
        started.elapsed()
    );
}

/// One acks=all produce of one record, sent straight to `leader` (no retries).
async fn produce_once(from: &Endpoint, leader: SocketAddr) -> Response {
    let batch = wire::encode(&RecordBatch {
        records: vec![Record {
            key: None,
            value: b"must-be-replicated".to_vec(),
            timestamp_ms: 0,
            headers: Vec::new(),
        }],
    })
    .unwrap();
    let request = ProduceRequest {
        topic: TOPIC.into(),
        partition: 0,
        acks: Acks::All,
        producer_id: None,
        base_sequence: None,
        gapless: false,
        leader_epoch: None,
        if_log_end: None,
        batch,
    };
    post(from, leader, "produce", wire::encode(&request).unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_newer_leader_epoch_does_not_fence_the_leader() {
    let c = start_cluster("forged-epoch");
    let before = topic_in_sync(&c).await;
    let leader = before.leader.unwrap();
    let follower = *before.replicas.iter().find(|&&r| r != leader).unwrap();
    let socket = attacker().await;
    // One datagram per broker, as found from outside: every leader stopped for 150 s.
    for id in 1..=3 {
        post(
            &socket,
            c.addr(id),
            "replica",
            forged_fetch(follower, u32::MAX, 0),
        )
        .await;
    }
    // The leader still takes writes, acknowledged by every in-sync replica.
    let answer = produce_once(&socket, c.addr(leader)).await;
    assert_eq!(
        answer.code(),
        Code::CHANGED,
        "{:?}",
        String::from_utf8_lossy(answer.payload())
    );
    // And again after the check with the zookeeper is surely over.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let answer = produce_once(&socket, c.addr(leader)).await;
    assert_eq!(answer.code(), Code::CHANGED);
    let zk = c.zk().await;
    let (data, _) = zk
        .get_data(&cluster::partition_path(TOPIC, 0))
        .await
        .unwrap();
    let after: PartitionMetadata = wire::decode(&data).unwrap();
    assert_eq!(
        (after.leader, after.leader_epoch),
        (before.leader, before.leader_epoch)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_offset_past_the_log_end_acknowledges_nothing() {
    let c = start_cluster("forged-offset");
    let meta = topic_in_sync(&c).await;
    let leader = meta.leader.unwrap();
    let followers: Vec<u32> = meta
        .replicas
        .iter()
        .copied()
        .filter(|&r| r != leader)
        .collect();
    for &f in &followers {
        unsafe_kill(c.pid(f), "STOP");
    }
    let socket = attacker().await;
    // While an acks=all produce waits for its replicas, both followers "have" everything
    // the leader will ever write, again and again, as the attacker repeats it.
    let produce = produce_once(&socket, c.addr(leader));
    tokio::pin!(produce);
    let mut forging = tokio::time::interval(Duration::from_millis(50));
    let answer = loop {
        tokio::select! {
            answer = &mut produce => break answer,
            _ = forging.tick() => {
                for &f in &followers {
                    let fetch = forged_fetch(f, meta.leader_epoch, u64::MAX);
                    let refused = post(&socket, c.addr(leader), "replica", fetch).await;
                    assert_eq!(refused.code(), Code::CONTENT);
                }
            }
        }
    };
    for &f in &followers {
        unsafe_kill(c.pid(f), "CONT");
    }
    assert_ne!(
        answer.code(),
        Code::CHANGED,
        "acknowledged a record only the leader has"
    );
    assert_eq!(
        answer.code(),
        Code::SERVICE_UNAVAILABLE,
        "{:?}",
        String::from_utf8_lossy(answer.payload())
    );
}
