//! Twenty simulated devices (`pehra device-sim`, the firmware's node loop on the host)
//! against a real local cluster: every reading they published is consumable, every
//! downlink record reaches its device (and is committed), and the devices spend most of
//! the time asleep.

mod common;

use common::{free_udp_port, pehra, BrokerProcess, TempDir, Zookeeper};
use pehra_broker::client::{records_from, ClusterClient};
use pehra_cluster as cluster;
use pehra_shared::wire::{Acks, Record};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

const DEVICES: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_devices_publish_collect_their_downlink_and_mostly_sleep() {
    let dir = TempDir::new("device-sim");
    let zk = Zookeeper::start_fresh(&dir.path().join("zookeeper"));
    let mut brokers = Vec::new();
    for id in 1..=3u32 {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_udp_port()).parse().unwrap();
        brokers.push(BrokerProcess::start_with(
            id,
            addr,
            &dir.path().join(format!("broker-{id}")),
            zk.addr,
            &[
                "--idle-before-sleep-ms",
                "500",
                "--alarm-interval-ms",
                "2000",
            ],
        ));
    }
    let client = ClusterClient::connect(zk.addr).await.unwrap();
    client.create_topic("readings", 3, 3).await.unwrap();
    client
        .wait_for_leaders("readings", Duration::from_secs(20))
        .await
        .unwrap();
    // One downlink record waits for every device.
    let names: Vec<String> = (1..=DEVICES).map(|i| format!("dev-{i:04}")).collect();
    for name in &names {
        let topic = format!("downlink.{name}");
        client.create_topic(&topic, 1, 3).await.unwrap();
        client
            .wait_for_leaders(&topic, Duration::from_secs(20))
            .await
            .unwrap();
        let record = Record {
            key: None,
            value: format!("hello {name}").into_bytes(),
            timestamp_ms: 0,
            headers: Vec::new(),
        };
        client
            .produce(&topic, 0, &[record], Acks::All, None)
            .await
            .unwrap();
    }

    let zk_arg = zk.addr.to_string();
    let data = dir.path().join("devices");
    let count = DEVICES.to_string();
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        pehra(&[
            "device-sim",
            "--zookeeper",
            &zk_arg,
            "--count",
            &count,
            "--interval",
            "2",
            "--acks",
            "all",
            "--duration",
            "12",
            "--data-dir",
            data.to_str().unwrap(),
        ])
    })
    .await
    .unwrap();
    let all = format!("{out}{err}").replace('\r', "\n");
    assert_eq!(code, 0, "{all}");
    let last = all
        .lines()
        .rfind(|l| l.contains("readings published"))
        .unwrap_or_else(|| panic!("no live line:\n{all}"));
    let field = |name: &str| -> u64 {
        let rest = &last[last
            .find(name)
            .unwrap_or_else(|| panic!("{name} in {last}"))
            + name.len()..];
        rest.split_whitespace().next().unwrap().parse().unwrap()
    };
    let published = field("readings published");
    let downlink = field("downlink");
    assert!(published >= DEVICES as u64, "{last}");
    assert_eq!(
        downlink, DEVICES as u64,
        "every device got its record: {last}"
    );

    // Every published reading is in the topic, each device's in order, none twice.
    let meta = client.refresh().await.unwrap();
    let mut by_device: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut total = 0u64;
    for partition in meta.topics["readings"].partitions.keys() {
        let mut from = 0;
        loop {
            let fetched = client
                .fetch("readings", *partition, from, 64 * 1024)
                .await
                .unwrap();
            let records = records_from(&fetched, from).unwrap();
            let Some((last_offset, _)) = records.last() else {
                break;
            };
            from = last_offset + 1;
            for (_, r) in records {
                total += 1;
                let key = String::from_utf8(r.key.unwrap_or_default()).unwrap();
                by_device
                    .entry(key)
                    .or_default()
                    .push(String::from_utf8(r.value).unwrap());
            }
        }
    }
    assert_eq!(
        total, published,
        "every acknowledged reading is stored once"
    );
    assert_eq!(
        by_device.keys().cloned().collect::<Vec<_>>(),
        names,
        "every device published"
    );
    for (device, values) in &by_device {
        let mut unique = values.clone();
        unique.dedup();
        assert_eq!(&unique, values, "{device}: a reading stored twice");
    }

    // The downlink was acknowledged: each device committed past its record.
    for name in &names {
        let path = cluster::offset_path(&format!("dev.{name}"), &format!("downlink.{name}"), 0);
        let committed = client.zookeeper().get_data(&path).await;
        let (data, _) = committed.unwrap_or_else(|e| panic!("{name}: no committed offset ({e})"));
        assert_eq!(String::from_utf8(data).unwrap().trim(), "1", "{name}");
    }

    // Mostly asleep.
    let sleep_line = all
        .lines()
        .find(|l| l.contains("time per state"))
        .unwrap_or_else(|| panic!("no energy report:\n{all}"));
    let sleep: f64 = sleep_line
        .split("sleep ")
        .nth(1)
        .and_then(|s| s.split('%').next())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("{sleep_line}"));
    assert!(
        sleep > 50.0,
        "devices asleep only {sleep}% of the time:\n{sleep_line}\n{last}"
    );
    drop(brokers);
}
