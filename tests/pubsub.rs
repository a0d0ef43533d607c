//! The pub-sub interface (draft-ietf-core-coap-pubsub) with independent CoAP clients:
//! libcoap creates a topic and publishes through one broker, aiocoap subscribes through
//! another, and `pehra consume` reads the same records.

mod common;
#[path = "common/provision.rs"]
mod provision;

use common::{free_udp_port, pehra, BrokerProcess, TempDir, Zookeeper};
use pehra_broker::client::ClusterClient;
use provision::python;
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
    assert_eq!(consumed, "21.5\n21.7\n22.0\n");
}
