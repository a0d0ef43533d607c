//! The one producer (`pehra_broker::client::producer`) against a real zookeeper and
//! broker on loopback: pipelined gapless batches, some arriving early and some twice, are
//! stored exactly once and in order.

mod common;

use common::{free_udp_port, BrokerProcess, TempDir, Zookeeper};
use pehra_broker::client::producer::{send_in_order, Numbered, Producer};
use pehra_broker::client::{records_from, ClientError, ClusterClient};
use pehra_shared::wire::{self, Acks, ErrorKind, ProduceRequest, Record, RecordBatch};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

const TOPIC: &str = "pipelined";

fn record(value: String) -> Record {
    Record {
        key: None,
        value: value.into_bytes(),
        timestamp_ms: 1,
        headers: Vec::new(),
    }
}

/// Gapless batches of `counts` records from producer `id`, numbered from `first`; the
/// records' values are their sequence numbers.
fn numbered(id: u64, first: u32, counts: &[u32]) -> Vec<Numbered> {
    let mut base = first;
    counts
        .iter()
        .map(|&count| {
            let records = (base..base + count)
                .map(|s| record(format!("s{s}")))
                .collect();
            let request = ProduceRequest {
                topic: TOPIC.into(),
                partition: 0,
                acks: Acks::All,
                producer_id: Some(id),
                base_sequence: Some(base),
                gapless: true,
                leader_epoch: None,
                if_log_end: None,
                batch: wire::encode(&RecordBatch { records }).unwrap(),
            };
            base += count;
            Numbered {
                request,
                records: count as usize,
            }
        })
        .collect()
}

/// Every record of partition 0, as (offset, value).
async fn stored(client: &ClusterClient) -> Vec<(u64, String)> {
    let fetched = client.fetch(TOPIC, 0, 0, 1 << 20).await.unwrap();
    records_from(&fetched, 0)
        .unwrap()
        .into_iter()
        .map(|(offset, r)| (offset, String::from_utf8(r.value).unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_batches_with_repeats_are_stored_exactly_once_in_order() {
    let dir = TempDir::new("producer-pipelined");
    let zk = Zookeeper::start_fresh(&dir.path().join("zookeeper"));
    let addr: SocketAddr = format!("127.0.0.1:{}", free_udp_port()).parse().unwrap();
    let _broker = BrokerProcess::start(1, addr, &dir.path().join("broker-1"), zk.addr);
    let client = Arc::new(ClusterClient::connect(zk.addr).await.unwrap());
    client.create_topic(TOPIC, 1, 1).await.unwrap();
    client
        .wait_for_leaders(TOPIC, Duration::from_secs(20))
        .await
        .unwrap();

    // A batch that arrives before the one it follows is refused, not stored early.
    let batches = numbered(41, 0, &[2, 3]);
    let early = client.produce_request(&batches[1].request).await;
    assert!(
        matches!(
            early,
            Err(ClientError::Broker {
                kind: ErrorKind::OutOfOrderSequence,
                ..
            })
        ),
        "{early:?}"
    );
    let first = client
        .produce_request(&batches[0].request)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((first.base_offset, first.record_count), (0, 2));
    let second = client
        .produce_request(&batches[1].request)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((second.base_offset, second.record_count), (2, 3));
    // A repeat of the batch before the last (still in the leader's window) gets its place.
    let again = client
        .produce_request(&batches[0].request)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again, first);

    // Pipelined: eight batches, five in flight, each sent twice (a retry whose first
    // answer was lost); the pipeline sends a refused one again after the one before.
    let send = {
        let client = client.clone();
        move |request: ProduceRequest| {
            let client = client.clone();
            async move {
                let once = client.produce_request(&request).await;
                let twice = client.produce_request(&request).await;
                if let (Ok(a), Ok(b)) = (&once, &twice) {
                    assert_eq!(a, b, "a repeat is answered with the first place");
                }
                twice
            }
        }
    };
    let counts = [1, 4, 2, 3, 1, 5, 2, 2];
    let results = send_in_order(send, numbered(41, 5, &counts)).await;
    let mut offset = 5;
    for ((of, result), count) in results.into_iter().zip(counts) {
        let place = result.unwrap().unwrap();
        assert_eq!(
            (place.base_offset, place.record_count),
            (offset, count),
            "{of:?}"
        );
        offset += u64::from(count);
    }

    // The producer itself, with batches of 3: another 20 records.
    let producer = Producer::new(TOPIC, Acks::All, 3);
    let records = (0..20).map(|i| record(format!("p{i}"))).collect();
    for sent in producer.send(&client, records).await.unwrap() {
        sent.result.unwrap();
    }

    let expected: Vec<(u64, String)> = (0..25)
        .map(|s| format!("s{s}"))
        .chain((0..20).map(|i| format!("p{i}")))
        .enumerate()
        .map(|(offset, value)| (offset as u64, value))
        .collect();
    assert_eq!(
        stored(&client).await,
        expected,
        "no duplicate, no gap, in order"
    );
}
