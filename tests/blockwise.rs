//! Block-wise transfer (RFC 7959) with standard CoAP clients against a real broker and
//! zookeeper on loopback: libcoap's `coap-client-notls` and aiocoap read large
//! publications whole, by GET and by Observe; a publication landing during a block-wise
//! GET never yields a spliced body; a 1 MiB value goes up and down through libcoap; the
//! zookeeper answers 4.06 to an Accept it cannot produce.

mod common;

use common::{free_udp_port, BrokerProcess, TempDir, Zookeeper};
use pehra_broker::client::ClusterClient;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

fn python() -> PathBuf {
    common::provision::python()
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/aiocoap_blockwise.py")
}

/// Runs `coap-client-notls ARGS` (bounded by `limit`); returns (success, stdout and
/// then stderr, where libcoap writes error answers).
fn coap_client(args: &[&str], limit: Duration) -> (bool, Vec<u8>) {
    common::provision::libcoap();
    let child = Command::new("coap-client-notls")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("coap-client-notls (apt-get install libcoap3-bin)");
    let out = common::wait_bounded(child, limit).expect("coap-client-notls finished in time");
    let mut text = out.stdout;
    text.extend_from_slice(&out.stderr);
    (out.status.success(), text)
}

/// Runs the aiocoap script (bounded); returns its standard output.
fn aiocoap(args: &[&str]) -> String {
    let child = Command::new(python())
        .arg(script())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = common::wait_bounded(child, Duration::from_secs(30)).expect("aiocoap finished");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "aiocoap failed: {stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A zookeeper and one broker (plain CoAP on loopback), with topic `topic` created
/// through the pub-sub interface and led.
struct Setup {
    _zk: Zookeeper,
    broker: BrokerProcess,
    /// Last: removed once the processes above are stopped (fields drop in order;
    /// removed first, the brokers still running wrote into it again and left it).
    dir: TempDir,
}

impl Setup {
    fn start(name: &str, topic: &str) -> Setup {
        let dir = TempDir::new(name);
        let zk = Zookeeper::start_fresh(&dir.path().join("zk"));
        let addr: SocketAddr = format!("127.0.0.1:{}", free_udp_port()).parse().unwrap();
        let broker = BrokerProcess::start(1, addr, &dir.path().join("b1"), zk.addr);
        let config = dir.path().join("topic.cbor");
        let mut cbor = vec![0xa1, 0x6a];
        cbor.extend_from_slice(b"topic-name");
        cbor.push(0x60 + topic.len() as u8);
        cbor.extend_from_slice(topic.as_bytes());
        std::fs::write(&config, cbor).unwrap();
        let ps = format!("coap://{addr}/ps");
        let (ok, _) = coap_client(
            &[
                "-m",
                "post",
                "-t",
                "60",
                "-f",
                config.to_str().unwrap(),
                &ps,
            ],
            Duration::from_secs(20),
        );
        assert!(ok, "topic created");
        let zk_addr = zk.addr;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let client = ClusterClient::connect(zk_addr).await.unwrap();
            client
                .wait_for_leaders(topic, Duration::from_secs(20))
                .await
                .unwrap();
        });
        Setup {
            dir,
            _zk: zk,
            broker,
        }
    }

    fn data_uri(&self, topic: &str) -> String {
        format!("coap://{}/ps/data/{topic}", self.broker.addr)
    }

    fn file(&self, name: &str, body: &[u8]) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, body).unwrap();
        path
    }

    /// Publishes `body` with libcoap (block-wise up, as libcoap does by itself).
    fn publish(&self, topic: &str, body: &[u8]) {
        let file = self.file("publication", body);
        let (ok, out) = coap_client(
            &[
                "-B",
                "30",
                "-m",
                "put",
                "-f",
                file.to_str().unwrap(),
                &self.data_uri(topic),
            ],
            Duration::from_secs(40),
        );
        assert!(ok, "published: {}", String::from_utf8_lossy(&out));
    }
}

/// 20 KB of text that is different at every offset (a splice or a gap shows).
fn text(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| b'a' + ((i / 7 + usize::from(seed)) % 26) as u8)
        .collect()
}

fn read_file(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_default()
}

#[test]
fn a_20_kb_publication_arrives_whole_through_libcoap_and_aiocoap_by_get_and_observe() {
    let setup = Setup::start("blockwise-20k", "big");
    let uri = setup.data_uri("big");
    let first = text(20_000, 0);
    setup.publish("big", &first);

    // Plain GET: libcoap without -b, and aiocoap, both left to block-wise on their own.
    let out = setup.dir.path().join("libcoap-get");
    let (ok, _) = coap_client(
        &["-B", "10", "-o", out.to_str().unwrap(), &uri],
        Duration::from_secs(20),
    );
    assert!(ok);
    assert_eq!(read_file(&out), first, "libcoap GET whole");
    let out = setup.dir.path().join("aiocoap-get");
    let code = aiocoap(&[
        "get",
        &setup.broker.addr.to_string(),
        "ps/data/big",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code.trim(), "2.05 Content");
    assert_eq!(read_file(&out), first, "aiocoap GET whole");

    // Observe with libcoap: it writes each representation to stdout as it completes.
    let mut observer = Command::new("coap-client-notls")
        .args(["-B", "20", "-s", "20", &uri])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = observer.stdout.take().unwrap();
    let mut seen = vec![0u8; first.len()];
    stdout.read_exact(&mut seen).unwrap();
    assert_eq!(seen, first, "libcoap's first response whole");
    let second = text(20_000, 1);
    setup.publish("big", &second);
    let mut notified = vec![0u8; second.len()];
    stdout.read_exact(&mut notified).unwrap();
    common::unsafe_kill(observer.id(), "KILL");
    let _ = observer.wait();
    assert_eq!(notified, second, "libcoap's notification whole");

    // Observe with aiocoap.
    let out = setup.dir.path().join("aiocoap-observe");
    let mut subscriber = Command::new(python())
        .arg(script())
        .args([
            "observe",
            &setup.broker.addr.to_string(),
            "ps/data/big",
            "1",
            out.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(subscriber.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut lines, &mut line).unwrap();
    assert_eq!(line.trim(), "observing");
    let third = text(20_000, 2);
    setup.publish("big", &third);
    let done = common::wait_bounded(subscriber, Duration::from_secs(30)).expect("finished");
    assert!(done.status.success());
    assert_eq!(read_file(&out), third, "aiocoap's notification whole");
}

#[test]
fn a_publication_during_a_block_wise_get_never_splices_the_body() {
    let setup = Setup::start("blockwise-midway", "mid");
    setup.publish("mid", &vec![b'A'; 20_000]);
    // aiocoap reads block 0, publishes 'B's, then reads the other blocks, each with
    // its own token.
    let out = aiocoap(&["midway", &setup.broker.addr.to_string(), "mid"]);
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let etags = report["etags"].as_array().unwrap();
    assert!(
        etags[0].is_string(),
        "an ETag on the block-wise body: {out}"
    );
    assert!(etags.iter().all(|e| e == &etags[0]), "one version: {out}");
    assert_eq!(report["letters"], serde_json::json!(["A"]), "{out}");
    assert_eq!(report["len"], 20_000);
}

#[test]
fn a_1_mib_value_goes_up_and_down_through_libcoap_in_1_kib_blocks() {
    let setup = Setup::start("blockwise-1m", "mib");
    let value: Vec<u8> = (0..1 << 20).map(|i| (i * 7 % 251) as u8).collect();
    let file = setup.file("value", &value);
    let uri = setup.data_uri("mib");
    let (ok, _) = coap_client(
        &[
            "-B",
            "60",
            "-b",
            "1024",
            "-m",
            "put",
            "-f",
            file.to_str().unwrap(),
            &uri,
        ],
        Duration::from_secs(60),
    );
    assert!(ok, "published");
    let out = setup.dir.path().join("read");
    let (ok, _) = coap_client(
        &["-B", "60", "-b", "1024", "-o", out.to_str().unwrap(), &uri],
        Duration::from_secs(60),
    );
    assert!(ok);
    let read = read_file(&out);
    assert_eq!(read.len(), value.len(), "complete");
    assert!(read == value, "byte-exact");
}

#[test]
fn the_zookeeper_answers_4_06_to_an_accept_it_cannot_produce() {
    let dir = TempDir::new("blockwise-accept");
    let zk = Zookeeper::start_fresh(&dir.path().join("zk"));
    let uri = format!("coap://{}/z/", zk.addr);
    let (_, text) = coap_client(&["-B", "10", "-A", "0", &uri], Duration::from_secs(20));
    assert!(
        String::from_utf8_lossy(&text).starts_with("4.06"),
        "{}",
        String::from_utf8_lossy(&text)
    );
    let (ok, cbor) = coap_client(&["-B", "10", "-A", "60", &uri], Duration::from_secs(20));
    assert!(
        ok && cbor.first().is_some_and(|b| b >> 5 == 5),
        "a CBOR map"
    );
}

#[test]
fn a_publication_too_large_to_store_gets_4_13_with_size1_not_5_03() {
    let setup = Setup::start("blockwise-413", "huge");
    let file = setup.file("huge", &vec![b'x'; 2 * 1024 * 1024]);
    let (ok, out) = coap_client(
        &[
            "-B",
            "60",
            "-b",
            "1024",
            "-m",
            "put",
            "-f",
            file.to_str().unwrap(),
            &setup.data_uri("huge"),
        ],
        Duration::from_secs(60),
    );
    let out = String::from_utf8_lossy(&out);
    assert!(!ok || out.contains("4.13"), "{out}");
    assert!(out.contains("4.13"), "4.13 Request Entity Too Large: {out}");
}
