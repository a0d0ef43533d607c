//! A flipped byte must not spread (the finding from outside): three brokers, acks=all
//! records, every broker stopped, one byte flipped in the middle of the leader's
//! *active* segment, that broker restarted first so that it leads again, then the
//! others. Before, it took the bad CRC for a torn tail, cut everything after it, led,
//! and the healthy replicas truncated to match: half of the acknowledged records were
//! gone everywhere. Now the damage is kept and recorded, nothing is cut, and the healthy
//! replicas keep every record.

mod common;

use common::TestCluster;
use pehra_broker::client::ClusterClient;
use pehra_broker::log::{LogConfig, PartitionLog};
use pehra_shared::wire::{self, Acks, PartitionMetadata, Record};
use pehra_zookeeper::cluster;
use std::path::Path;
use std::time::Duration;

const TOPIC: &str = "ledger";
const RECORDS: u64 = 600;

async fn state(c: &TestCluster) -> PartitionMetadata {
    let zk = c.zk().await;
    let (data, _) = zk
        .get_data(&cluster::partition_path(TOPIC, 0))
        .await
        .unwrap();
    wire::decode(&data).unwrap()
}

async fn wait_for(c: &TestCluster, what: &str, ok: impl Fn(&PartitionMetadata) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let s = state(c).await;
        if ok(&s) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: {s:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The records in a stopped broker's copy of the partition, and whether damage was
/// recorded.
fn replica(broker_dir: &Path) -> (u64, usize, bool) {
    let (log, _) =
        PartitionLog::open(&broker_dir.join(format!("{TOPIC}-0")), LogConfig::default()).unwrap();
    let mut readable = 0usize;
    let mut offset = 0;
    while offset < log.log_end_offset() {
        match log.read(offset, 1 << 20) {
            Ok(batches) if !batches.is_empty() => {
                for b in &batches {
                    readable += b.record_count as usize;
                }
                let last = batches.last().unwrap();
                offset = last.base_offset + u64::from(last.record_count);
            }
            _ => offset += 1, // a damaged offset: step over it
        }
    }
    (log.log_end_offset(), readable, !log.damage().is_empty())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_in_the_leaders_active_segment_loses_nothing_anywhere() {
    let mut c = TestCluster::builder("corrupt-active")
        .broker_flags(&[
            "--session-timeout-ms",
            "1500",
            "--replica-lag-ms",
            "3000",
            "--stay-awake",
        ])
        .start(3);
    let client = ClusterClient::connect(c.zk_addr).await.unwrap();
    client.create_topic(TOPIC, 1, 3).await.unwrap();
    client
        .wait_for_leaders(TOPIC, Duration::from_secs(20))
        .await
        .unwrap();
    wait_for(&c, "all in sync", |s| s.isr.len() == 3).await;
    for batch in 0..RECORDS / 10 {
        let records: Vec<Record> = (0..10)
            .map(|i| Record {
                key: None,
                value: format!("r{}", batch * 10 + i).into_bytes(),
                timestamp_ms: 0,
                headers: Vec::new(),
            })
            .collect();
        client
            .produce(TOPIC, 0, &records, Acks::All, Some((1, batch as u32 * 10)))
            .await
            .unwrap()
            .unwrap();
    }
    let leader = state(&c).await.leader.unwrap();
    for id in 1..=3 {
        c.kill_broker(id);
    }
    // One byte in the middle of the leader's only (active) segment.
    let segment = c
        .dir
        .path()
        .join(format!("broker-{leader}/{TOPIC}-0/{:020}.log", 0));
    let mut bytes = std::fs::read(&segment).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x5a;
    std::fs::write(&segment, &bytes).unwrap();

    // The damaged copy comes back first and leads; then the healthy ones follow it.
    c.start_broker(leader);
    wait_for(&c, "the damaged copy leads", |s| s.leader == Some(leader)).await;
    for id in (1..=3).filter(|&id| id != leader) {
        c.start_broker(id);
    }
    wait_for(&c, "all back in sync", |s| s.isr.len() == 3).await;
    for id in 1..=3 {
        c.kill_broker(id);
    }

    for id in 1..=3 {
        let (end, readable, damaged) = replica(&c.dir.path().join(format!("broker-{id}")));
        assert_eq!(end, RECORDS, "broker {id}'s log end");
        if id == leader {
            assert!(damaged, "broker {id}: the damage is recorded");
        } else {
            assert_eq!(readable as u64, RECORDS, "broker {id} kept every record");
            assert!(!damaged, "broker {id}");
        }
    }
}
