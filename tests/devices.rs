//! The device gateway routes (`docs/devices.md`) on real processes: a zookeeper and
//! brokers on loopback, a device played by a plain CoAP endpoint.
//!
//! Every wait is bounded; processes are killed by PID on drop.

mod common;

use common::TestCluster;
use pehra_broker::client::{partition_for_key, records_from, ClusterClient};
use pehra_cluster::{pehra_node_path, PEHRA_NODES, PEHRA_STATE};
use pehra_shared::api::{decode_response, response_error};
use pehra_shared::coap::{Code, Config, Request, Response, CONTENT_FORMAT_CBOR};
use pehra_shared::driver::{Endpoint, Router};
use pehra_shared::wire::{
    self, Acks, CheckIn, CheckInReply, DeviceReadings, DownlinkRequest, DownlinkResponse,
    ErrorKind, NodeRole, NodeStatus, PehraState, ProduceResponse, Record,
};
use pehra_zookeeper::Client;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A zookeeper and brokers `1..=n`; `sleepy`: the short PEHRA timers of
/// tests/pehra.rs (idle 500 ms, alarm 2 s), else the defaults (nobody sleeps).
fn start_cluster(name: &str, n: u32, sleepy: bool) -> TestCluster {
    let mut builder = TestCluster::builder(name)
        .zookeeper_flags(&["--pehra-term-ms", "60000", "--pehra-handover-ms", "10000"])
        .broker_flags(&[
            "--session-timeout-ms",
            "1500",
            "--replica-lag-ms",
            "2000",
            "--controlled-shutdown-timeout-ms",
            "3000",
        ]);
    if sleepy {
        builder = builder.broker_flags(&[
            "--idle-before-sleep-ms",
            "500",
            "--alarm-interval-ms",
            "2000",
        ]);
    }
    builder.start(n)
}

/// The PEHRA state and every node's status.
async fn view(zk: &Client) -> Option<(PehraState, BTreeMap<String, NodeStatus>)> {
    let (data, _) = zk.get_data(PEHRA_STATE).await.ok()?;
    let state: PehraState = wire::decode(&data).ok()?;
    let mut nodes = BTreeMap::new();
    if let Ok((names, _)) = zk.get_children(PEHRA_NODES).await {
        for name in names {
            if let Ok((data, _)) = zk.get_data(&pehra_node_path(&name)).await {
                if let Ok(s) = wire::decode::<NodeStatus>(&data) {
                    nodes.insert(name, s);
                }
            }
        }
    }
    Some((state, nodes))
}

/// Waits (polling every 50 ms, up to `limit`) for `ok`.
async fn wait_for(
    zk: &Client,
    limit: Duration,
    what: &str,
    mut ok: impl FnMut(&PehraState, &BTreeMap<String, NodeStatus>) -> bool,
) -> (PehraState, BTreeMap<String, NodeStatus>) {
    let deadline = Instant::now() + limit;
    loop {
        if let Some((state, nodes)) = view(zk).await {
            if ok(&state, &nodes) {
                return (state, nodes);
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {limit:?} waiting for {what}: {state:?} {nodes:#?}"
            );
        } else {
            assert!(Instant::now() < deadline, "timed out: no {PEHRA_STATE}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The Pehredar in office (its status says so).
fn pehredar(state: &PehraState, nodes: &BTreeMap<String, NodeStatus>) -> Option<String> {
    let name = &state.term.as_ref()?.pehredar;
    (state.next.is_none() && nodes.get(name)?.role == NodeRole::Pehredar).then(|| name.clone())
}

fn broker_id(node: &str) -> u32 {
    node.strip_prefix("broker-").unwrap().parse().unwrap()
}

/// A device: a CoAP endpoint of its own.
struct Device {
    endpoint: Endpoint,
}

impl Device {
    async fn new() -> Device {
        let endpoint = Endpoint::bind(
            "127.0.0.1:0".parse().unwrap(),
            Config::default(),
            Router::new(),
        )
        .await
        .unwrap();
        Device { endpoint }
    }

    async fn post_raw(&self, to: SocketAddr, path: &str, body: Vec<u8>) -> Response {
        let request = Request::post(path)
            .with_payload(body)
            .with_content_format(CONTENT_FORMAT_CBOR);
        tokio::time::timeout(
            Duration::from_secs(40),
            self.endpoint.handle().request(to, request),
        )
        .await
        .expect("answered in time")
        .expect("answered")
    }

    async fn post<T: serde::Serialize>(&self, to: SocketAddr, path: &str, body: &T) -> Response {
        self.post_raw(to, path, wire::encode(body).unwrap()).await
    }

    /// Publishes readings (the answer must be 2.04).
    async fn publish(
        &self,
        to: SocketAddr,
        node: &str,
        readings: &DeviceReadings,
    ) -> ProduceResponse {
        self.post_changed(to, &format!("dev/{node}/readings"), readings)
            .await
    }

    async fn checkin(&self, to: SocketAddr, node: &str) -> CheckInReply {
        self.post_changed(to, "dev/checkin", &checkin(node)).await
    }

    /// POSTs `body`; the answer must be 2.04, and its body a `R`.
    async fn post_changed<T: serde::Serialize, R: serde::de::DeserializeOwned>(
        &self,
        to: SocketAddr,
        path: &str,
        body: &T,
    ) -> R {
        let response = self.post(to, path, body).await;
        assert_eq!(
            response.code(),
            Code::CHANGED,
            "{:?}",
            response_error(&response)
        );
        decode_response(&response).unwrap()
    }

    async fn downlink(&self, to: SocketAddr, node: &str, from: Option<u64>) -> DownlinkResponse {
        let request = DownlinkRequest {
            from,
            max_bytes: 900,
        };
        let response = self
            .post(to, &format!("dev/{node}/downlink"), &request)
            .await;
        assert_eq!(
            response.code(),
            Code::CONTENT,
            "{:?}",
            response_error(&response)
        );
        decode_response(&response).unwrap()
    }
}

fn checkin(node: &str) -> CheckIn {
    CheckIn {
        node: node.into(),
        role: NodeRole::Dormant,
        mains_powered: false,
        next_alarm_ms: None,
        traffic_waiting: false,
        health: None,
    }
}

fn record(value: &[u8]) -> Record {
    Record {
        key: None,
        value: value.to_vec(),
        timestamp_ms: 0,
        headers: Vec::new(),
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Check-in (the Pehredar's name and address, the gateway's clock, pending downlink),
/// readings (keyed, in order, acks all), downlink (created on first use, fetched,
/// acknowledged, capped), and the answers to bad input.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_check_in_publish_and_collect_their_downlink() {
    let c = start_cluster("devices", 3, false);
    let zk = c.zk().await;
    let (state, nodes) = wait_for(&zk, Duration::from_secs(20), "a Pehredar", |s, n| {
        pehredar(s, n).is_some()
    })
    .await;
    let p = pehredar(&state, &nodes).unwrap();
    let p_id = broker_id(&p);
    let other = (1..=3).find(|id| *id != p_id).unwrap();
    let device = Device::new().await;
    let core = device
        .endpoint
        .handle()
        .request(c.addr(other), Request::get(".well-known/core"))
        .await
        .unwrap();
    let core = String::from_utf8_lossy(core.payload()).into_owned();
    assert!(core.contains("</dev/checkin>"), "{core}");
    assert!(core.contains("</dev>"), "{core}");

    // Check-in, at another broker and at the Pehredar itself.
    for gateway in [other, p_id] {
        let before = now_ms();
        let reply = device.checkin(c.addr(gateway), "dev-1").await;
        let after = now_ms();
        assert_eq!(reply.pehredar.as_deref(), Some(p.as_str()), "{reply:?}");
        assert_eq!(
            reply.pehredar_addr.as_deref(),
            Some(c.addr(p_id).to_string().as_str()),
            "{reply:?}"
        );
        let gateway_ms = reply.gateway_ms.expect("the gateway's clock");
        assert!((before..=after).contains(&gateway_ms), "{reply:?}");
        assert_eq!(reply.pending, 0, "no downlink topic yet");
    }

    // Readings, acks all, keyed by the node, in order.
    let client = ClusterClient::connect(c.zk_addr).await.unwrap();
    client.create_topic("readings", 3, 3).await.unwrap();
    client
        .wait_for_leaders("readings", Duration::from_secs(20))
        .await
        .unwrap();
    let mut base = None;
    let mut last_answer = None;
    // The second batch is sent twice (a device that lost the answer repeats it): with
    // its sequence number it is stored once.
    for (first_seq, batch) in [
        (0, &["r0", "r1", "r2"][..]),
        (3, &["r3", "r4"][..]),
        (3, &["r3", "r4"][..]),
    ] {
        let readings = DeviceReadings {
            topic: "readings".into(),
            acks: Acks::All,
            records: batch.iter().map(|v| record(v.as_bytes())).collect(),
            first_seq: Some(first_seq),
            incarnation: 0,
        };
        let answer = device.publish(c.addr(other), "dev-1", &readings).await;
        assert_eq!(answer.record_count as usize, batch.len());
        base.get_or_insert(answer.base_offset);
        if first_seq == 3 {
            if let Some(earlier) = last_answer.replace(answer.base_offset) {
                assert_eq!(
                    answer.base_offset, earlier,
                    "the repeat got the first answer"
                );
            }
        }
    }
    let partition = partition_for_key(b"dev-1", 3);
    let base = base.unwrap();
    let fetched = client
        .fetch("readings", partition, base, 64 * 1024)
        .await
        .unwrap();
    let got = records_from(&fetched, base).unwrap();
    let values: Vec<&[u8]> = got.iter().map(|(_, r)| r.value.as_slice()).collect();
    assert_eq!(
        values,
        [&b"r0"[..], b"r1", b"r2", b"r3", b"r4"],
        "in order on partition {partition}"
    );
    for (offset, (o, r)) in (base..).zip(&got) {
        assert_eq!(*o, offset);
        assert_eq!(r.key.as_deref(), Some(&b"dev-1"[..]));
        assert!(
            r.timestamp_ms > 0,
            "the gateway stamps records without a time"
        );
    }

    // Downlink: the first request creates the topic and finds nothing.
    let first = device.downlink(c.addr(other), "dev-1", None).await;
    assert_eq!(
        (first.records.len(), first.next, first.pending),
        (0, 0, 0),
        "{first:?}"
    );
    client
        .wait_for_leaders("downlink.dev-1", Duration::from_secs(20))
        .await
        .unwrap();
    let meta = client.refresh().await.unwrap();
    assert_eq!(meta.topics["downlink.dev-1"].config.partitions, 1);
    assert_eq!(meta.topics["downlink.dev-1"].config.replication_factor, 3);
    let commands: Vec<Record> = ["set-interval 30", "reboot", "led on"]
        .iter()
        .map(|v| record(v.as_bytes()))
        .collect();
    client
        .produce("downlink.dev-1", 0, &commands, Acks::All, None)
        .await
        .unwrap();
    assert_eq!(device.checkin(c.addr(other), "dev-1").await.pending, 3);
    let got = device.downlink(c.addr(p_id), "dev-1", None).await;
    let offsets: Vec<u64> = got.records.iter().map(|(o, _)| *o).collect();
    assert_eq!(offsets, [0, 1, 2]);
    assert_eq!(got.records[1].1.value, b"reboot");
    assert_eq!((got.next, got.pending), (3, 0));
    // Not acknowledged yet: still waiting as far as the gateway knows.
    assert_eq!(device.checkin(c.addr(other), "dev-1").await.pending, 3);
    let again = device
        .downlink(c.addr(other), "dev-1", Some(got.next))
        .await;
    assert!(again.records.is_empty(), "{again:?}");
    assert_eq!((again.next, again.pending), (3, 0));
    assert_eq!(
        client
            .committed_offset("dev.dev-1", "downlink.dev-1", 0)
            .await
            .unwrap(),
        Some(3)
    );
    assert_eq!(device.checkin(c.addr(p_id), "dev-1").await.pending, 0);
    // Big records: one answer stays within 900 bytes (but holds at least one).
    let big: Vec<Record> = (0..3).map(|_| record(&[b'x'; 500])).collect();
    client
        .produce("downlink.dev-1", 0, &big, Acks::All, None)
        .await
        .unwrap();
    let one = device.downlink(c.addr(other), "dev-1", None).await;
    assert_eq!(one.records.len(), 1, "{:?}", one.next);
    assert_eq!((one.next, one.pending), (4, 2));
    let rest = device
        .downlink(c.addr(other), "dev-1", Some(one.next))
        .await;
    assert_eq!((rest.records[0].0, rest.next, rest.pending), (4, 5, 1));

    // Bad input.
    let expect = |response: Response, code: Code, what: &str| {
        assert_eq!(
            response.code(),
            code,
            "{what}: {:?}",
            response_error(&response)
        );
        let body = response_error(&response);
        assert!(!body.message.is_empty(), "{what}: a message");
        body
    };
    let gw = c.addr(other);
    let bad = device.post(gw, "dev/checkin", &checkin("bad name!")).await;
    expect(bad, Code::BAD_REQUEST, "bad name at check-in");
    let long = "x".repeat(65);
    let bad = device.post(gw, "dev/checkin", &checkin(&long)).await;
    expect(bad, Code::BAD_REQUEST, "too long a name at check-in");
    let readings = |topic: &str, records: Vec<Record>| DeviceReadings {
        first_seq: None,
        incarnation: 0,
        topic: topic.into(),
        acks: Acks::Leader,
        records,
    };
    let bad = device
        .post(
            gw,
            &format!("dev/{long}/readings"),
            &readings("readings", vec![record(b"x")]),
        )
        .await;
    expect(bad, Code::BAD_REQUEST, "bad name for readings");
    let bad = device
        .post(gw, "dev/dev-1/readings", &readings("readings", vec![]))
        .await;
    let body = expect(bad, Code::BAD_REQUEST, "empty readings");
    assert_eq!(body.error, ErrorKind::Malformed);
    let bad = device
        .post(
            gw,
            "dev/dev-1/readings",
            &readings("no-such-topic", vec![record(b"x")]),
        )
        .await;
    expect(bad, Code::NOT_FOUND, "unknown topic");
    let bad = device
        .post(
            gw,
            "dev/dev-1/readings",
            &readings("bad topic", vec![record(b"x")]),
        )
        .await;
    expect(bad, Code::BAD_REQUEST, "bad topic name");
    let beyond = DownlinkRequest {
        from: Some(1000),
        max_bytes: 900,
    };
    let bad = device.post(gw, "dev/dev-1/downlink", &beyond).await;
    expect(bad, Code::BAD_REQUEST, "from past the end");
    let bad = device
        .post(gw, &format!("dev/{long}/downlink"), &beyond)
        .await;
    expect(bad, Code::BAD_REQUEST, "bad name for downlink");
    for path in ["dev/checkin", "dev/dev-1/readings", "dev/dev-1/downlink"] {
        let bad = device.post_raw(gw, path, vec![0xff, 0x00, 0x13]).await;
        expect(bad, Code::BAD_REQUEST, path);
    }
    // Nothing was committed by the bad requests.
    assert_eq!(
        client
            .committed_offset("dev.dev-1", "downlink.dev-1", 0)
            .await
            .unwrap(),
        Some(4)
    );
}

/// A check-in is not traffic: checking in at the Pehredar and at a dormant broker of a
/// sleeping cluster wakes nobody. Readings are: they wake it and are acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_checkin_does_not_wake_a_sleeping_cluster() {
    let c = start_cluster("devices-asleep", 3, true);
    let zk = c.zk().await;
    let client = ClusterClient::connect(c.zk_addr).await.unwrap();
    client.create_topic("readings", 1, 3).await.unwrap();
    client
        .wait_for_leaders("readings", Duration::from_secs(20))
        .await
        .unwrap();
    let asleep = |s: &PehraState, n: &BTreeMap<String, NodeStatus>| {
        pehredar(s, n).is_some_and(|p| {
            !s.traffic_awake
                && n.len() == 3
                && n.values()
                    .all(|st| st.node == p || st.role == NodeRole::Dormant)
        })
    };
    let (state, nodes) = wait_for(&zk, Duration::from_secs(30), "all asleep", asleep).await;
    let p = pehredar(&state, &nodes).unwrap();
    let sleeper = nodes.keys().find(|n| **n != p).unwrap().clone();
    let device = Device::new().await;
    for _ in 0..3 {
        for gateway in [broker_id(&p), broker_id(&sleeper)] {
            let reply = device.checkin(c.addr(gateway), "dev-7").await;
            assert_eq!(reply.pehredar.as_deref(), Some(p.as_str()));
            assert_eq!(
                reply.pehredar_addr.as_deref(),
                Some(c.addr(broker_id(&p)).to_string().as_str())
            );
            assert!(
                matches!(
                    reply.directive,
                    pehra_shared::wire::Directive::SleepUntil { .. }
                ),
                "{reply:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Still asleep a while later (longer than the idle period), the same generation.
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        let (now, n) = view(&zk).await.unwrap();
        assert_eq!(now.wake_generation, state.wake_generation, "{now:?}");
        assert!(!now.traffic_awake, "{now:?}");
        assert_eq!(pehredar(&now, &n).as_deref(), Some(p.as_str()));
        for (name, status) in &n {
            if *name != p {
                assert_eq!(status.role, NodeRole::Dormant, "{name}: {status:?}");
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Readings are traffic: the cluster wakes and the produce is acknowledged.
    let readings = DeviceReadings {
        topic: "readings".into(),
        acks: Acks::All,
        records: vec![record(b"woken")],
        first_seq: None,
        incarnation: 0,
    };
    let answer = device
        .publish(c.addr(broker_id(&sleeper)), "dev-7", &readings)
        .await;
    let fetched = client
        .fetch("readings", 0, answer.base_offset, 64 * 1024)
        .await
        .unwrap();
    let got = records_from(&fetched, answer.base_offset).unwrap();
    assert_eq!(got[0].1.value, b"woken");
    wait_for(&zk, Duration::from_secs(10), "a wake-up", |s, _| {
        s.wake_generation > state.wake_generation
    })
    .await;
}
