//! The pub-sub interface (draft-ietf-core-coap-pubsub) with independent CoAP clients:
//! libcoap creates a topic and publishes through one broker, aiocoap subscribes through
//! another, and `pehra consume` reads the same records.

mod common;

use common::provision::{self, python};
use common::{aiocoap, free_udp_port, pehra, BrokerProcess, TempDir, TestCluster, Zookeeper};
use pehra_broker::client::ClusterClient;
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

fn coap_client(args: &[&str]) -> (bool, String) {
    provision::libcoap();
    let child = Command::new("coap-client-notls")
        .args(["-B", "10"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("coap-client-notls (apt-get install libcoap3-bin)");
    let out =
        common::wait_bounded(child, Duration::from_secs(20)).expect("coap-client-notls finished");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim_end().to_string(),
    )
}

#[test]
fn libcoap_publishes_aiocoap_subscribes_pehra_consumes() {
    let dir = TempDir::new("pubsub");
    let zk = Zookeeper::start_fresh(&dir.path().join("zk"));
    let addr = |_: u32| -> SocketAddr { format!("127.0.0.1:{}", free_udp_port()).parse().unwrap() };
    let b1 = BrokerProcess::start(1, addr(1), &dir.path().join("b1"), zk.addr);
    let b2 = BrokerProcess::start(2, addr(2), &dir.path().join("b2"), zk.addr);

    // Discovery advertises the collection.
    let (ok, core) = coap_client(&[&format!("coap://{}/.well-known/core", b1.addr)]);
    assert!(ok && core.contains(r#"</ps>;rt="core.ps.coll""#), "{core}");

    // libcoap creates the topic: POST /ps with the CBOR configuration {"topic-name": "room"}.
    let config = dir.path().join("topic.cbor");
    std::fs::write(&config, b"\xa1\x6atopic-name\x64room").unwrap();
    let (ok, created) = coap_client(&[
        "-m",
        "post",
        "-t",
        "60",
        "-f",
        config.to_str().unwrap(),
        &format!("coap://{}/ps", b1.addr),
    ]);
    assert!(ok, "{created}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = ClusterClient::connect(zk.addr).await.unwrap();
        client
            .wait_for_leaders("room", Duration::from_secs(20))
            .await
            .unwrap();
    });
    let (_, listing) = coap_client(&[&format!("coap://{}/ps", b2.addr)]);
    assert!(
        listing.contains(r#"</ps/room>;rt="core.ps.conf""#),
        "{listing}"
    );

    // The topic is HALF CREATED until its first publication (draft -21 §3.1): a
    // subscription is 4.04 until then. libcoap publishes a first value.
    let (ok, out) = coap_client(&[
        "-m",
        "put",
        "-t",
        "0",
        "-e",
        "21.0",
        &format!("coap://{}/ps/data/room", b1.addr),
    ]);
    assert!(ok, "{out}");

    // aiocoap subscribes through broker 2.
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/aiocoap_subscribe.py");
    let mut subscriber = Command::new(python())
        .arg(script)
        .arg(b2.addr.to_string())
        .args(["room", "3"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(subscriber.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "observing");

    // libcoap publishes through broker 1, one value at a time: each is seen before the next.
    for value in ["21.5", "21.7", "22.0"] {
        let (ok, out) = coap_client(&[
            "-m",
            "put",
            "-t",
            "0",
            "-e",
            value,
            &format!("coap://{}/ps/data/room", b1.addr),
        ]);
        assert!(ok, "{out}");
        assert_eq!(
            lines.next().unwrap().unwrap(),
            value,
            "aiocoap got the publication"
        );
    }
    let out = common::wait_bounded(subscriber, Duration::from_secs(20)).unwrap();
    assert!(out.status.success());

    // The latest value, by plain GET, and the same records through pehra consume.
    let (_, latest) = coap_client(&[&format!("coap://{}/ps/data/room", b1.addr)]);
    assert_eq!(latest, "22.0");
    let (code, consumed, err) = pehra(&[
        "consume",
        "room",
        "--from-beginning",
        "--zookeeper",
        &zk.addr.to_string(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(consumed, "21.0\n21.5\n21.7\n22.0\n");
}

/// Creates topic `name` through `/ps` on `broker` and waits until it has its leaders.
fn create_topic(c: &TestCluster, broker: u32, name: &str) {
    let created = aiocoap::request(json!({"method": "POST",
        "uri": format!("coap://{}/ps", c.addr(broker)), "content_format": 60,
        "payload_diag": format!("{{0: \"{name}\", 2: \"core.ps.data\"}}")}));
    assert_eq!(aiocoap::code(&created), "2.01", "{created}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = ClusterClient::connect(c.zk_addr).await.unwrap();
        client
            .wait_for_leaders(name, Duration::from_secs(20))
            .await
            .unwrap();
    });
}

fn publish(c: &TestCluster, broker: u32, topic: &str, value: &str) -> String {
    let answer = aiocoap::request(json!({"method": "PUT",
        "uri": format!("coap://{}/ps/data/{topic}", c.addr(broker)),
        "content_format": 0, "payload": value}));
    aiocoap::code(&answer).to_string()
}

#[test]
fn deleting_a_topic_ends_every_subscription_and_refuses_later_publications() {
    let c = TestCluster::builder("ps-delete").start(2);
    create_topic(&c, 1, "room");
    assert_eq!(publish(&c, 1, "room", "1"), "2.01", "the first publication");
    let data = |b: u32| format!("coap://{}/ps/data/room", c.addr(b));
    let (mut on1, first) = aiocoap::Observer::start(&data(1));
    assert_eq!(first, "first 2.05 1");
    let (mut on2, first) = aiocoap::Observer::start(&data(2));
    assert_eq!(first, "first 2.05 1");
    assert_eq!(publish(&c, 2, "room", "2"), "2.04");
    assert_eq!(on1.next().as_deref(), Some("notification 2.05 2"));
    assert_eq!(on2.next().as_deref(), Some("notification 2.05 2"));

    // `pehra topic delete`: every subscriber, on either broker, gets a final 4.04 (it
    // was still observing 30 s later).
    let (status, _, err) = common::pehra(&[
        "topic",
        "delete",
        "room",
        "--zookeeper",
        &c.zk_addr.to_string(),
    ]);
    assert_eq!(status, 0, "{err}");
    assert_eq!(on1.next().as_deref(), Some("ended 4.04"));
    assert_eq!(on2.next().as_deref(), Some("ended 4.04"));

    // Publications after the delete: 4.04 at once, on both brokers (they were answered
    // 2.04 and lost, or never answered).
    for b in [1, 2, 1, 2] {
        assert_eq!(publish(&c, b, "room", "late"), "4.04", "through broker {b}");
    }
    let r = aiocoap::requests(&json!([
        {"method": "GET", "uri": data(2)},
        {"method": "GET", "uri": format!("coap://{}/ps/room", c.addr(1))},
    ]));
    assert_eq!(aiocoap::code(&r[0]), "4.04");
    assert_eq!(aiocoap::code(&r[1]), "4.04");

    // A new topic of the same name starts HALF CREATED, with nothing of the old one.
    create_topic(&c, 2, "room");
    let got = aiocoap::request(json!({"method": "GET", "uri": data(1)}));
    assert_eq!(aiocoap::code(&got), "4.04", "{got}");
    assert_eq!(publish(&c, 1, "room", "new"), "2.01");
}

#[test]
fn deleting_topic_data_or_the_topic_through_ps_ends_observations() {
    let c = TestCluster::builder("ps-delete-data").start(1);
    create_topic(&c, 1, "room");
    let data = format!("coap://{}/ps/data/room", c.addr(1));
    assert_eq!(publish(&c, 1, "room", "1"), "2.01");
    let (mut observer, first) = aiocoap::Observer::start(&data);
    assert_eq!(first, "first 2.05 1");

    // DELETE of the topic-data resource: back to HALF CREATED (draft -21 §3.2.4).
    let r = aiocoap::requests(&json!([
        {"method": "DELETE", "uri": data},
        {"method": "GET", "uri": data},
        {"method": "DELETE", "uri": data},
    ]));
    let codes: Vec<&str> = r.iter().map(aiocoap::code).collect();
    assert_eq!(codes, ["2.02", "4.04", "4.04"], "{r:#?}");
    assert_eq!(observer.next().as_deref(), Some("ended 4.04"));
    assert_eq!(publish(&c, 1, "room", "2"), "2.01", "FULLY CREATED again");
    assert_eq!(publish(&c, 1, "room", "3"), "2.04");

    // DELETE of the topic (draft -21 §2.5.5).
    let (mut observer, first) = aiocoap::Observer::start(&data);
    assert_eq!(first, "first 2.05 3");
    let topic = format!("coap://{}/ps/room", c.addr(1));
    let r = aiocoap::requests(&json!([
        {"method": "DELETE", "uri": topic},
        {"method": "DELETE", "uri": topic},
    ]));
    let codes: Vec<&str> = r.iter().map(aiocoap::code).collect();
    assert_eq!(codes, ["2.02", "4.04"], "{r:#?}");
    assert_eq!(observer.next().as_deref(), Some("ended 4.04"));
    assert_eq!(publish(&c, 1, "room", "4"), "4.04");
}

#[test]
fn publications_racing_a_delete_are_answered_and_none_after_it_succeeds() {
    let c = TestCluster::builder("ps-delete-race").start(2);
    create_topic(&c, 1, "room");
    let uri = format!("coap://{}/ps/data/room", c.addr(2));
    let puts: Vec<serde_json::Value> = (0..60)
        .map(|i| json!({"method": "PUT", "uri": uri, "payload": i.to_string()}))
        .collect();
    // One aiocoap process publishing one value after the other (each bounded by 20 s:
    // a publication left unanswered fails it), its answers read as they come.
    let mut publisher = Command::new(aiocoap::python())
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/aiocoap_requests.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = publisher.stdin.take().unwrap();
        stdin
            .write_all(serde_json::Value::Array(puts).to_string().as_bytes())
            .unwrap();
    }
    let mut answers = BufReader::new(publisher.stdout.take().unwrap()).lines();
    let mut codes = Vec::new();
    for _ in 0..10 {
        let line = answers.next().expect("an answer").unwrap();
        let answer: serde_json::Value = serde_json::from_str(&line).unwrap();
        codes.push(aiocoap::code(&answer).to_string());
    }
    // Deleted while the publisher goes on.
    let (status, _, err) = pehra(&[
        "topic",
        "delete",
        "room",
        "--zookeeper",
        &c.zk_addr.to_string(),
    ]);
    assert_eq!(status, 0, "{err}");
    for line in answers {
        let answer: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        codes.push(aiocoap::code(&answer).to_string());
    }
    let status = common::wait_bounded(publisher, Duration::from_secs(30)).expect("finished");
    assert!(status.status.success(), "a publication was not answered");
    assert_eq!(codes.len(), 60, "{codes:?}");
    assert_eq!(codes[0], "2.01", "{codes:?}");
    // 2.04 until the delete, then 4.04 only: once refused, never stored again.
    let first_refusal = codes
        .iter()
        .position(|c| c == "4.04")
        .expect("refused after the delete");
    assert!(
        codes[1..first_refusal].iter().all(|c| c == "2.04"),
        "{codes:?}"
    );
    assert!(
        codes[first_refusal..].iter().all(|c| c == "4.04"),
        "{codes:?}"
    );
}
