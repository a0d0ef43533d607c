//! A damaged or incomplete replica must not spread its loss (the findings from outside):
//! three brokers, acks=all records, everything stopped (the zookeeper first, so the
//! partition's state still names all three in sync), then one replica damaged (a byte
//! flipped in the middle of its *active* segment) or cut short (its log loses its second
//! half, as a lying disk or an old backup would leave it), the zookeeper and that broker
//! restarted first, then the others.
//!
//! Before, the damaged copy took the bad CRC for a torn tail, cut everything after it,
//! came back first and led, and the healthy replicas truncated to match: half of the
//! acknowledged records were gone everywhere. The short copy did the same. Now the
//! damage is kept and recorded, the replica reports that it may not lead (it lacks
//! acknowledged records), the partition stays offline while it is the only one back
//! (`pehra cluster status` says why), a complete replica is elected once one returns,
//! the bad replica heals from it (fetching what it lacks again), and every replica ends
//! with every record.

mod common;

use common::{TestCluster, Zookeeper};
use pehra_broker::client::ClusterClient;
use pehra_broker::log::{LogConfig, PartitionLog};
use pehra_cluster as cluster;
use pehra_shared::wire::{self, Acks, PartitionMetadata, Record};
use pehra_zookeeper::WatchEvent;
use std::path::Path;
use std::sync::{Arc, Mutex};
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

/// What happens to the chosen replica while everything is down.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// One byte flipped in the middle of its active segment.
    FlippedByte,
    /// Its log loses its second half (it comes back behind the high watermark it knew).
    CutShort,
}

/// Every leader the partition znode names from now on, as a watch sees it.
async fn record_leaders(c: &TestCluster) -> Arc<Mutex<Vec<Option<u32>>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let zk = c.zk().await;
    let mut watch = zk
        .watch_data(&cluster::partition_path(TOPIC, 0))
        .await
        .unwrap();
    let out = seen.clone();
    tokio::spawn(async move {
        let _zk = zk;
        while let Some(Ok(WatchEvent::Data(node))) = watch.next().await {
            if let Ok(meta) = wire::decode::<PartitionMetadata>(&node.data) {
                out.lock().unwrap().push(meta.leader);
            }
        }
    });
    seen
}

/// Whether broker `id` reports that its replica may not lead.
async fn reports_ineligible(c: &TestCluster, id: u32) -> Option<String> {
    let reasons = cluster::recovering_reasons(&c.zk().await).await.unwrap();
    reasons
        .get(&cluster::recovering_name(id, Some((TOPIC, 0))))
        .cloned()
}

async fn a_bad_replica_never_leads_while_a_complete_one_exists(fault: Fault) {
    let mut c = TestCluster::builder(&format!("corrupt-{fault:?}"))
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
    drop(client);
    let bad = state(&c).await.leader.unwrap();
    let bad_dir = c.dir.path().join(format!("broker-{bad}/{TOPIC}-0"));
    // Its checkpoint has caught up with the last acknowledged record (the flusher writes
    // it after the high watermark moves).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::fs::read_to_string(bad_dir.join("high-watermark")).ok()
        != Some(format!("pehra-hw 1 {RECORDS}\n"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint of the high watermark"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Everything stops, the zookeeper first: its state still says all three are in sync.
    wait_for(&c, "all in sync before the stop", |s| s.isr.len() == 3).await;
    c.zookeeper.take().unwrap().kill();
    for id in 1..=3 {
        c.kill_broker(id);
    }
    let segment = bad_dir.join(format!("{:020}.log", 0));
    let mut bytes = std::fs::read(&segment).unwrap();
    match fault {
        Fault::FlippedByte => {
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0x5a;
        }
        Fault::CutShort => bytes.truncate(bytes.len() / 2),
    }
    std::fs::write(&segment, &bytes).unwrap();

    // The zookeeper and the bad replica come back first: the old sessions expire, and
    // the bad replica is the only one in sync that is alive.
    c.zookeeper = Some(Zookeeper::start(&c.dir.path().join("zookeeper"), c.zk_addr));
    c.start_broker(bad);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let why = loop {
        if let Some(why) = reports_ineligible(&c, bad).await {
            break why;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "broker {bad} never said it may not lead"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    match fault {
        Fault::FlippedByte => assert!(why.starts_with("damaged"), "{why}"),
        Fault::CutShort => assert!(why.starts_with("behind"), "{why}"),
    }
    let leaders = record_leaders(&c).await;
    wait_for(&c, "offline, all three still in sync", |s| {
        s.leader.is_none() && s.isr.len() == 3
    })
    .await;
    let (code, out, err) =
        common::pehra(&["cluster", "status", "--zookeeper", &c.zk_addr.to_string()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("partition 0: broker {bad} may not lead: {why}"))
            && out.contains("partition 0: OFFLINE: the live in-sync replicas")
            && out.contains("--unclean-leader-election"),
        "{out}"
    );

    // A complete replica comes back: it leads; then the third; the bad one heals.
    let good: Vec<u32> = (1..=3).filter(|&id| id != bad).collect();
    c.start_broker(good[0]);
    wait_for(&c, "the complete replica leads", |s| {
        s.leader == Some(good[0])
    })
    .await;
    c.start_broker(good[1]);
    wait_for(&c, "all back in sync", |s| s.isr.len() == 3).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while reports_ineligible(&c, bad).await.is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "broker {bad} never caught up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !leaders.lock().unwrap().contains(&Some(bad)),
        "the bad replica {bad} led: {:?}",
        leaders.lock().unwrap()
    );
    for id in 1..=3 {
        c.kill_broker(id);
    }
    for id in 1..=3 {
        let (end, readable, damaged) = replica(&c.dir.path().join(format!("broker-{id}")));
        assert_eq!(end, RECORDS, "broker {id}'s log end");
        assert_eq!(readable as u64, RECORDS, "broker {id} has every record");
        assert!(!damaged, "broker {id} has no damage left");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_with_a_flipped_byte_never_leads_heals_and_nothing_is_lost() {
    a_bad_replica_never_leads_while_a_complete_one_exists(Fault::FlippedByte).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_restarted_behind_its_high_watermark_never_leads_and_nothing_is_lost() {
    a_bad_replica_never_leads_while_a_complete_one_exists(Fault::CutShort).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_the_scrub_finds_under_a_running_leader_moves_leadership_and_heals() {
    let c = TestCluster::builder("corrupt-scrub")
        .broker_flags(&[
            "--session-timeout-ms",
            "1500",
            "--replica-lag-ms",
            "3000",
            "--stay-awake",
            "--scrub-bytes-per-sec",
            "1048576",
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
    let before = state(&c).await;
    let bad = before.leader.unwrap();
    // A bit rots under the running leader (through the page cache, as the scrub reads).
    let segment = c
        .dir
        .path()
        .join(format!("broker-{bad}/{TOPIC}-0/{:020}.log", 0));
    {
        use std::os::unix::fs::FileExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&segment)
            .unwrap();
        let middle = file.metadata().unwrap().len() / 2;
        let mut byte = [0u8];
        file.read_exact_at(&mut byte, middle).unwrap();
        file.write_all_at(&[byte[0] ^ 0x5a], middle).unwrap();
    }
    // The scrub finds it; the replica reports it (briefly: it may heal within
    // milliseconds); a complete replica takes over.
    wait_for(&c, "leadership moved to a complete replica", |s| {
        s.leader.is_some_and(|l| l != bad) && s.leader_epoch > before.leader_epoch
    })
    .await;
    // It heals as a follower and rejoins.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while reports_ineligible(&c, bad).await.is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "broker {bad} never healed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_for(&c, "all back in sync", |s| s.isr.len() == 3).await;
    let mut c = c;
    for id in 1..=3 {
        c.kill_broker(id);
    }
    for id in 1..=3 {
        let (end, readable, damaged) = replica(&c.dir.path().join(format!("broker-{id}")));
        assert_eq!(end, RECORDS, "broker {id}'s log end");
        assert_eq!(readable as u64, RECORDS, "broker {id} has every record");
        assert!(!damaged, "broker {id} has no damage left");
    }
}
