//! Topic sizes are checked up front: the CLI and the pub-sub interface refuse a topic
//! over the limits with the limit named, a topic znode written around them (as any
//! client of the zookeeper can) is skipped by the controller instead of stopping it, and
//! a topic at the partition limit is created and deleted whole, and a delete racing the
//! controller's passes deletes the topic whole every time.

mod common;

use common::{pehra, TestCluster};
use pehra_broker::client::ClusterClient;
use pehra_cluster as cluster;
use pehra_shared::coap::{Code, Config, Method, Request, CONTENT_FORMAT_CBOR};
use pehra_shared::driver::{Endpoint, Router};
use pehra_shared::wire::{self, TopicConfig};
use pehra_zookeeper::CreateMode;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_over_the_limits_are_refused_up_front_and_never_stop_the_controller() {
    let c = TestCluster::builder("topic-limits").start(1);
    let z = c.zk_addr.to_string();
    // The CLI: one line naming the limit, nothing written.
    let (code, _, err) = pehra(&["topic", "create", "huge", "-p", "30000", "--zookeeper", &z]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("a topic has 1 to 1024 partitions"), "{err}");
    let (code, _, err) = pehra(&[
        "topic",
        "create",
        "copies",
        "--replication-factor",
        "100",
        "--zookeeper",
        &z,
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("it must be 1 to 16"), "{err}");
    let zk = c.zk().await;
    assert!(zk
        .exists(&cluster::topic_path("huge"))
        .await
        .unwrap()
        .is_none());

    // The pub-sub collection: a 4.00 that says why.
    let socket = Endpoint::bind(
        "127.0.0.1:0".parse().unwrap(),
        Config::default(),
        Router::new(),
    )
    .await
    .unwrap();
    let body = ciborium::Value::Map(vec![
        ("topic-name".into(), "huge-ps".into()),
        ("partitions".into(), 30_000.into()),
    ]);
    let mut bytes = Vec::new();
    ciborium::into_writer(&body, &mut bytes).unwrap();
    let request = Request::new(Method::Post, "ps")
        .with_payload(bytes)
        .with_content_format(CONTENT_FORMAT_CBOR);
    let answer = socket.handle().request(c.addr(1), request).await.unwrap();
    assert_eq!(answer.code(), Code::BAD_REQUEST);
    assert!(String::from_utf8_lossy(answer.payload()).contains("1 to 1024 partitions"));

    // Around the client: the znode itself. The controller skips it, and goes on serving
    // the next topic (it once looped on "request body too large" and stopped every
    // failover).
    cluster::ensure_path(&zk, cluster::TOPICS).await.unwrap();
    let forged = TopicConfig {
        partitions: 30_000,
        replication_factor: 1,
        min_insync_replicas: None,
    };
    zk.create(
        &cluster::topic_path("huge"),
        &wire::encode(&forged).unwrap(),
        CreateMode::Persistent,
    )
    .await
    .unwrap();
    let client = ClusterClient::connect(c.zk_addr).await.unwrap();
    client.create_topic("after", 2, 1).await.unwrap();
    client
        .wait_for_leaders("after", Duration::from_secs(20))
        .await
        .unwrap();
    let (children, _) = zk
        .get_children(&cluster::partitions_path("huge"))
        .await
        .unwrap_or_default();
    assert!(children.is_empty(), "{} partitions created", children.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_at_the_partition_limit_is_created_and_deleted_whole() {
    let c = TestCluster::builder("topic-at-limit").start(1);
    let client = ClusterClient::connect(c.zk_addr).await.unwrap();
    client
        .create_topic("wide", TopicConfig::MAX_PARTITIONS, 1)
        .await
        .unwrap();
    client
        .wait_for_leaders("wide", Duration::from_secs(60))
        .await
        .unwrap();
    let (code, out, err) = pehra(&[
        "topic",
        "delete",
        "wide",
        "--zookeeper",
        &c.zk_addr.to_string(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("deleted topic wide"), "{out}");
    let zk = c.zk().await;
    assert!(zk
        .exists(&cluster::topic_path("wide"))
        .await
        .unwrap()
        .is_none());
}

/// A topic delete while the controller is running passes (other topics come and go)
/// deletes the topic whole: the controller once re-created a deleted partitions parent
/// between the delete's steps, so the topic znode kept a child and the delete failed
/// ("node has children"), leaving a topic without partitions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_delete_racing_the_controller_deletes_the_topic_whole() {
    let c = TestCluster::builder("topic-delete-race").start(1);
    let client = std::sync::Arc::new(ClusterClient::connect(c.zk_addr).await.unwrap());
    // Churn: every create and delete of another topic is a controller pass that reads
    // every topic, the victim included.
    let churn = {
        let client = client.clone();
        tokio::spawn(async move {
            for i in 0u32.. {
                let name = format!("churn-{}", i % 4);
                let _ = client.create_topic(&name, 1, 1).await;
                let _ = client.delete_topic(&name).await;
            }
        })
    };
    let zk = c.zk().await;
    for round in 0..ROUNDS {
        client.create_topic("victim", 4, 1).await.unwrap();
        client
            .wait_for_leaders("victim", Duration::from_secs(20))
            .await
            .unwrap();
        if let Err(e) = client.delete_topic("victim").await {
            churn.abort();
            panic!("round {round}: delete failed: {e}");
        }
        assert!(
            zk.exists(&cluster::topic_path("victim"))
                .await
                .unwrap()
                .is_none(),
            "round {round}: the topic is still there"
        );
    }
    churn.abort();
}

/// Rounds of [`a_topic_delete_racing_the_controller_deletes_the_topic_whole`].
const ROUNDS: usize = 40;
