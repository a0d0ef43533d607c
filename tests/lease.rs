//! Seed 002 on real processes: the Pehredar's adaptive lease reaches the sleepers and
//! bounds their sleep, and the Pehredar is drawn at random among the healthy candidates.
//! Health is injected with `--health-file` (so the test machine's own load does not
//! decide the outcome). Every wait is for a state the zookeeper shows, bounded in time.

mod common;

use common::TestCluster;
use pehra_cluster::{pehra_node_path, PEHRA_NODES, PEHRA_STATE, PEHRA_TERMS};
use pehra_shared::wire::{self, NodeRole, NodeStatus, PehraState, TermRecord};
use pehra_zookeeper::Client;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

async fn statuses(zk: &Client) -> BTreeMap<String, NodeStatus> {
    let mut out = BTreeMap::new();
    let Ok((names, _)) = zk.get_children(PEHRA_NODES).await else {
        return out;
    };
    for name in names {
        if let Ok((data, _)) = zk.get_data(&pehra_node_path(&name)).await {
            if let Ok(s) = wire::decode::<NodeStatus>(&data) {
                out.insert(name, s);
            }
        }
    }
    out
}

async fn state(zk: &Client) -> Option<PehraState> {
    let (data, _) = zk.get_data(PEHRA_STATE).await.ok()?;
    wire::decode(&data).ok()
}

async fn term_records(zk: &Client) -> Vec<TermRecord> {
    let Ok((names, _)) = zk.get_children(PEHRA_TERMS).await else {
        return Vec::new();
    };
    let mut records = Vec::new();
    for name in names {
        if let Ok((data, _)) = zk.get_data(&format!("{PEHRA_TERMS}/{name}")).await {
            records.push(wire::decode::<TermRecord>(&data).unwrap());
        }
    }
    records.sort_by_key(|r| r.term.number);
    records
}

/// Brokers 1 and 2 report excellent health, broker 3 critical; the lease is based on
/// 1 s (alarm 2 s) without a network stability part, so an excellent Pehredar gives
/// 900 ms. Terms of 5 s, so that several elections happen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_critical_broker_is_never_elected_and_sleepers_check_in_within_the_lease() {
    let builder = TestCluster::builder("lease-health");
    let healthy = builder.dir().join("healthy.txt");
    let critical = builder.dir().join("critical.txt");
    std::fs::write(&healthy, "cpu=0\nmemory=100\n").unwrap();
    std::fs::write(
        &critical,
        "cpu=1000\nmemory=1000\ndisk_io=1000\nfailures=5\n",
    )
    .unwrap();
    let (healthy, critical) = (
        healthy.to_str().unwrap().to_string(),
        critical.to_str().unwrap().to_string(),
    );
    let c = builder
        .zookeeper_flags(&[
            "--pehra-term-ms",
            "5000",
            "--pehra-handover-ms",
            "800",
            "--pehra-takeover-timeout-ms",
            "3000",
        ])
        .broker_flags(&[
            "--session-timeout-ms",
            "1500",
            "--replica-lag-ms",
            "2000",
            "--idle-before-sleep-ms",
            "300",
            "--alarm-interval-ms",
            "2000",
            "--lease-base-ms",
            "1000",
            "--lease-min-ms",
            "500",
            "--lease-jitter-factor-per-ms",
            "0",
        ])
        .flags_of(1, &["--health-file", &healthy])
        .flags_of(2, &["--health-file", &healthy])
        .flags_of(3, &["--health-file", &critical])
        .start(3);
    let zk = c.zk().await;

    // A sleeper that checks in and sleeps on moves its alarm by the Pehredar's lease
    // (900 ms: excellent, idle), not by its 2 s alarm interval.
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut last_alarm: BTreeMap<String, u64> = BTreeMap::new();
    let mut gaps: Vec<u64> = Vec::new();
    let mut pehredar_leases = BTreeMap::new();
    loop {
        assert!(
            Instant::now() < deadline,
            "timed out: alarm gaps {gaps:?}, Pehredar leases {pehredar_leases:?}, terms {:?}",
            term_records(&zk).await
        );
        let nodes = statuses(&zk).await;
        for s in nodes.values() {
            // Each node's health index is in its status.
            assert!(s.nhi.is_some(), "{s:?}");
            if s.role == NodeRole::Pehredar {
                *pehredar_leases
                    .entry((s.node.clone(), s.lease_ms))
                    .or_insert(0) += 1;
            }
            match (s.role, s.next_alarm_ms) {
                (NodeRole::Dormant, Some(alarm)) => {
                    if let Some(before) = last_alarm.insert(s.node.clone(), alarm) {
                        if alarm != before {
                            gaps.push(alarm - before);
                        }
                    }
                }
                _ => {
                    last_alarm.remove(&s.node);
                }
            }
        }
        let records = term_records(&zk).await;
        if records.len() >= 5 && gaps.len() >= 4 {
            for r in &records {
                assert_ne!(r.term.pehredar, "broker-3", "critical elected: {records:?}");
                assert!(
                    !r.candidates.iter().any(|c| c == "broker-3"),
                    "the pool held the critical broker: {r:?}"
                );
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A check-in's round trip plus the driver's reaction, on loopback: well under 300 ms.
    assert!(
        gaps.iter().all(|g| *g < 900 + 300),
        "alarms moved by more than the lease: {gaps:?}"
    );
    for (node, lease) in pehredar_leases.keys() {
        assert_ne!(node, "broker-3");
        assert_eq!(*lease, Some(900), "{node} in office gives 1 s × (1 − 0.1)");
    }
    let s = state(&zk).await.expect("state");
    assert!(s.known.iter().any(|k| k == "broker-3"), "a known candidate");
}
