//! Brokers end to end: a real zookeeper and real brokers on loopback, driven through the
//! `pehra` CLI and raw CoAP.

mod common;

use common::{free_udp_port, pehra, pehra_with_input, BrokerProcess, TempDir, Zookeeper};
use pehra_broker::client::{partition_for_key, ClusterClient};
use pehra_shared::api::response_error;
use pehra_shared::coap::{Code, Config, Request, CONTENT_FORMAT_CBOR};
use pehra_shared::driver::{Endpoint, Router};
use pehra_shared::wire::{
    self, Acks, ErrorKind, FetchRequest, ProduceRequest, Record, RecordBatch,
};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

struct Cluster {
    zk: Zookeeper,
    brokers: Vec<BrokerProcess>,
    /// Last: removed once the processes above are stopped (fields drop in order;
    /// removed first, the brokers still running wrote into it again and left it).
    dir: TempDir,
}

impl Cluster {
    fn start(name: &str, brokers: u32) -> Cluster {
        let dir = TempDir::new(name);
        let zk = Zookeeper::start_fresh(&dir.path().join("zookeeper"));
        let brokers = (1..=brokers)
            .map(|id| {
                let addr: SocketAddr = format!("127.0.0.1:{}", free_udp_port()).parse().unwrap();
                BrokerProcess::start(id, addr, &dir.path().join(format!("broker-{id}")), zk.addr)
            })
            .collect();
        Cluster { dir, zk, brokers }
    }

    fn z(&self) -> String {
        self.zk.addr.to_string()
    }

    /// Creates a topic through the CLI and waits until every partition has a leader.
    fn create_topic(&self, topic: &str, partitions: u32) {
        let (code, out, err) = pehra(&[
            "topic",
            "create",
            topic,
            "-p",
            &partitions.to_string(),
            "--zookeeper",
            &self.z(),
        ]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("created topic"), "{out}");
        self.wait_for_leaders(topic);
    }

    fn wait_for_leaders(&self, topic: &str) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let client = ClusterClient::connect(self.zk.addr).await.unwrap();
            client
                .wait_for_leaders(topic, Duration::from_secs(20))
                .await
                .unwrap();
        });
    }

    fn consume_json(&self, topic: &str) -> Vec<(u32, u64, String, String)> {
        let (code, out, err) = pehra(&[
            "consume",
            topic,
            "--from-beginning",
            "--format",
            "json",
            "--zookeeper",
            &self.z(),
        ]);
        assert_eq!(code, 0, "{err}");
        out.lines().map(parse_json_line).collect()
    }
}

/// Reads `{"partition":P,"offset":O,"key":"K","value":"V",...}` as written by `pehra consume`.
fn parse_json_line(line: &str) -> (u32, u64, String, String) {
    let field = |name: &str| -> String {
        let start = line
            .find(&format!("\"{name}\":"))
            .unwrap_or_else(|| panic!("{name} in {line}"))
            + name.len()
            + 3;
        let rest = &line[start..];
        if let Some(stripped) = rest.strip_prefix('"') {
            stripped[..stripped.find('"').unwrap()].to_string()
        } else {
            rest[..rest.find([',', '}']).unwrap()].to_string()
        }
    };
    (
        field("partition").parse().unwrap(),
        field("offset").parse().unwrap(),
        field("key"),
        field("value"),
    )
}

#[test]
fn ten_thousand_keyed_records_round_trip_once_and_in_order_per_key() {
    let cluster = Cluster::start("broker-e2e", 3);
    cluster.create_topic("readings", 3);
    let (_, status, _) = pehra(&["cluster", "status", "--zookeeper", &cluster.z()]);
    assert!(status.contains("brokers (3 alive)"), "{status}");
    assert!(status.contains("readings: 3 partitions"), "{status}");

    let mut input = String::new();
    let mut next_seq: BTreeMap<String, u32> = BTreeMap::new();
    for i in 0..10_000u32 {
        let key = format!("sensor-{}", i % 37);
        let seq = next_seq.entry(key.clone()).or_default();
        input.push_str(&format!("{key}\t{key}:{seq}\n"));
        *seq += 1;
    }
    let (code, _, err) = pehra_with_input(
        &[
            "produce",
            "readings",
            "--keyed-lines",
            "--zookeeper",
            &cluster.z(),
        ],
        input.as_bytes(),
    );
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("produced 10000 records"), "{err}");

    let records = cluster.consume_json("readings");
    assert_eq!(records.len(), 10_000, "every record exactly once");
    let mut seen: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    let mut offsets: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for (partition, offset, key, value) in &records {
        assert_eq!(
            *partition,
            partition_for_key(key.as_bytes(), 3),
            "{key} lives in one partition"
        );
        let (k, seq) = value.split_once(':').unwrap();
        assert_eq!(k, key);
        seen.entry(key.clone())
            .or_default()
            .push(seq.parse().unwrap());
        offsets.entry(*partition).or_default().push(*offset);
    }
    for (key, seqs) in &seen {
        let expected: Vec<u32> = (0..next_seq[key]).collect();
        assert_eq!(
            seqs, &expected,
            "{key}'s records in order, none missing or repeated"
        );
    }
    for (p, offs) in offsets {
        assert!(
            offs.windows(2).all(|w| w[1] == w[0] + 1),
            "partition {p} offsets contiguous"
        );
    }
    let _ = &cluster.brokers;
}

#[test]
fn a_crashed_broker_recovers_its_log_and_cuts_a_torn_tail() {
    let mut cluster = Cluster::start("broker-crash", 1);
    cluster.create_topic("t", 1);
    let lines: String = (0..1000).map(|i| format!("r{i}\n")).collect();
    assert_eq!(
        pehra_with_input(
            &[
                "produce",
                "t",
                "--zookeeper",
                &cluster.z(),
                "--batch",
                "100"
            ],
            lines.as_bytes()
        )
        .0,
        0
    );

    // Crash, with half a batch of garbage at the end of the segment (a torn write).
    let mut broker = cluster.brokers.pop().unwrap();
    let _ = broker.child.kill();
    let _ = broker.child.wait();
    let segment = cluster
        .dir
        .path()
        .join("broker-1/t-0/00000000000000000000.log");
    let mut bytes = std::fs::read(&segment).unwrap();
    let good_len = bytes.len();
    bytes.extend_from_slice(&[0x55, 0, 0, 0, 9, 9, 9, 9, 1, 2, 3]);
    std::fs::write(&segment, &bytes).unwrap();
    let restarted = BrokerProcess::start(broker.id, broker.addr, &broker.dir, broker.zookeeper);
    cluster.brokers.push(restarted);
    cluster.wait_for_leaders("t");

    let values: Vec<String> = cluster.consume_json("t").into_iter().map(|r| r.3).collect();
    let expected: Vec<String> = (0..1000).map(|i| format!("r{i}")).collect();
    assert_eq!(
        values, expected,
        "everything before the torn tail is served"
    );
    assert_eq!(
        std::fs::metadata(&segment).unwrap().len() as usize,
        good_len,
        "the torn tail was cut"
    );
    assert_eq!(
        pehra(&["produce", "t", "-m", "after", "--zookeeper", &cluster.z()]).0,
        0
    );
    assert_eq!(cluster.consume_json("t").last().unwrap().3, "after");
}

#[test]
fn a_deleted_topics_data_is_removed_and_a_new_topic_of_its_name_starts_empty() {
    let cluster = Cluster::start("broker-topic-delete", 1);
    cluster.create_topic("gone", 1);
    let produce = |value: &str| {
        let (code, _, err) = pehra(&["produce", "gone", "-m", value, "--zookeeper", &cluster.z()]);
        assert_eq!(code, 0, "{err}");
    };
    produce("old");
    let dir = cluster.brokers[0].dir.join("gone-0");
    assert!(dir.join("topic-id").exists(), "the replica names its topic");

    let (code, out, err) = pehra(&["topic", "delete", "gone", "--zookeeper", &cluster.z()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("deleted topic gone"), "{out}");
    // The broker hears of it through its watch and removes the replica's data (bounded).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while dir.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "{} is still there",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    cluster.create_topic("gone", 1);
    produce("new");
    let values: Vec<String> = cluster
        .consume_json("gone")
        .into_iter()
        .map(|(_, _, _, value)| value)
        .collect();
    assert_eq!(
        values,
        ["new"],
        "the old topic's record is not in the new one"
    );
}

#[test]
fn acks_zero_and_consumer_groups() {
    let cluster = Cluster::start("broker-acks0", 1);
    cluster.create_topic("fire", 1);
    let (code, _, err) = pehra(&[
        "produce",
        "fire",
        "--acks",
        "0",
        "-m",
        "a",
        "-m",
        "b",
        "--zookeeper",
        &cluster.z(),
    ]);
    assert_eq!(code, 0, "{err}");
    // acks=0 gets no answer: read until both arrived (bounded).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while cluster.consume_json("fire").len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "acks=0 records never arrived"
        );
    }
    // A group reads once, commits, and the next run starts after what it read.
    let group = |extra: &[&str]| {
        let mut args = vec![
            "consume",
            "fire",
            "--group",
            "g1",
            "--from-beginning",
            "--zookeeper",
        ];
        let z = cluster.z();
        args.push(Box::leak(z.into_boxed_str()));
        args.extend_from_slice(extra);
        pehra(&args).1
    };
    assert_eq!(group(&[]), "a\nb\n");
    assert_eq!(
        pehra(&["produce", "fire", "-m", "c", "--zookeeper", &cluster.z()]).0,
        0
    );
    assert_eq!(
        group(&[]),
        "c\n",
        "the group resumes at its committed offset"
    );
}

#[test]
fn consume_follow_prints_records_as_they_arrive() {
    use std::io::{BufRead, BufReader};
    let cluster = Cluster::start("broker-follow", 1);
    cluster.create_topic("live", 2);
    let mut follower = std::process::Command::new(env!("CARGO_BIN_EXE_pehra"))
        .args([
            "consume",
            "live",
            "--follow",
            "--max",
            "3",
            "--zookeeper",
            &cluster.z(),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follower.stdout.take().unwrap()).lines();
    let mut errors = BufReader::new(follower.stderr.take().unwrap()).lines();
    assert!(errors
        .next()
        .unwrap()
        .unwrap()
        .starts_with("following live (2 partitions)"));
    // Each value is printed before the next is produced: pushed, not polled.
    for value in ["first", "second", "third"] {
        assert_eq!(
            pehra(&[
                "produce",
                "live",
                "-k",
                "k",
                "-m",
                value,
                "--zookeeper",
                &cluster.z()
            ])
            .0,
            0
        );
        assert_eq!(lines.next().unwrap().unwrap(), value);
    }
    let out = common::wait_bounded(follower, Duration::from_secs(10)).expect("--max 3 ends it");
    assert!(out.status.success());
}

#[tokio::test]
async fn bad_input_to_a_broker_gets_clear_errors_and_harms_nothing() {
    let cluster = tokio::task::spawn_blocking(|| {
        let c = Cluster::start("broker-bad", 1);
        c.create_topic("t", 1);
        c
    })
    .await
    .unwrap();
    let broker = cluster.brokers[0].addr;
    let raw = Endpoint::bind(
        "127.0.0.1:0".parse().unwrap(),
        Config::default(),
        Router::new(),
    )
    .await
    .unwrap();
    let h = raw.handle();
    let cbor = |path: &str, body: Vec<u8>| {
        Request::post(path)
            .with_payload(body)
            .with_content_format(CONTENT_FORMAT_CBOR)
    };
    let batch = |n: usize| {
        wire::encode(&RecordBatch {
            records: (0..n)
                .map(|i| Record {
                    key: None,
                    value: vec![i as u8],
                    timestamp_ms: 0,
                    headers: vec![],
                })
                .collect(),
        })
        .unwrap()
    };
    let produce = |topic: &str, partition: u32, batch: Vec<u8>| {
        wire::encode(&ProduceRequest {
            topic: topic.into(),
            partition,
            acks: Acks::Leader,
            producer_id: None,
            base_sequence: None,
            gapless: false,
            leader_epoch: None,
            if_log_end: None,
            batch,
        })
        .unwrap()
    };
    let cases: Vec<(Request, Code, ErrorKind, &str)> = vec![
        (
            cbor("produce", b"\xa1\x61".to_vec()),
            Code::BAD_REQUEST,
            ErrorKind::Malformed,
            "malformed CBOR",
        ),
        (
            cbor("produce", produce("nope", 0, batch(1))),
            Code::FORBIDDEN,
            ErrorKind::NotLeader,
            "does not lead nope/0",
        ),
        (
            cbor("produce", produce("t", 7, batch(1))),
            Code::FORBIDDEN,
            ErrorKind::NotLeader,
            "does not lead t/7",
        ),
        (
            cbor("produce", produce("t", 0, b"\x01".to_vec())),
            Code::BAD_REQUEST,
            ErrorKind::Malformed,
            "bad record batch",
        ),
        (
            cbor("produce", produce("t", 0, batch(0))),
            Code::BAD_REQUEST,
            ErrorKind::Malformed,
            "at least one record",
        ),
        (
            cbor(
                "fetch",
                wire::encode(&FetchRequest {
                    topic: "t".into(),
                    partition: 0,
                    offset: 99,
                    max_bytes: 1000,
                    leader_epoch: None,
                    replica: None,
                })
                .unwrap(),
            ),
            Code::BAD_REQUEST,
            ErrorKind::Malformed,
            "past the log end",
        ),
        (
            Request::get("p/t/x"),
            Code::BAD_REQUEST,
            ErrorKind::Malformed,
            "must be a number",
        ),
        (
            Request::post("produce")
                .with_payload(*b"{}")
                .with_content_format(50),
            Code::UNSUPPORTED_CONTENT_FORMAT,
            ErrorKind::UnsupportedContentFormat,
            "Content-Format",
        ),
    ];
    for (request, code, kind, reason) in cases {
        let what = request.resource_key();
        let response = h.request(broker, request).await.unwrap();
        assert_eq!(response.code(), code, "{what}");
        let error = response_error(&response);
        assert_eq!(error.error, kind, "{what}");
        assert!(
            error.message.contains(reason),
            "{what}: {:?} should say {reason:?}",
            error.message
        );
    }
    // Still serving, and nothing was stored by the bad requests.
    let ok = h
        .request(broker, cbor("produce", produce("t", 0, batch(3))))
        .await
        .unwrap();
    assert_eq!(ok.code(), Code::CHANGED);
    let stored: wire::ProduceResponse = wire::decode(ok.payload()).unwrap();
    assert_eq!((stored.base_offset, stored.record_count), (0, 3));
    drop(cluster);
}
