//! EDHOC (RFC 9528) against real processes: a zookeeper and a broker started with
//! credentials from `pehra keys`, and a client identity that has only a long-term EDHOC
//! key (`pehra keys add --edhoc`). The CLI with that credential runs EDHOC with each
//! server, then works over OSCORE like any client; a credential the registry does not
//! hold is refused and changes nothing; a message_1 flood gets 5.03 once its address
//! holds its share of half-open sessions, and locks nobody else out; aiocoap's EDHOC
//! initiator (lakers-python) gets in with the same credential
//! (`tests/interop/aiocoap_edhoc.py`).

mod common;

use common::{pehra, TestCluster};
use pehra_broker::client::ClusterClient;
use pehra_shared::coap::{Code, Config, Request};
use pehra_shared::driver::{Endpoint, Router};
use pehra_shared::edhoc::{self, Initiator};
use pehra_shared::security::credentials::{write_private_file, Credentials};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[track_caller]
fn ok(args: &[&str]) -> String {
    let (code, out, err) = pehra(args);
    assert_eq!(code, 0, "pehra {args:?}: {err}");
    out
}

/// Keys in `DIR/keys`: a zookeeper, broker 1, the client `client`, and the EDHOC
/// client `edith` (added before the servers start, so their files list her); the
/// servers started with their credentials.
fn edhoc_cluster(name: &str) -> (TestCluster, PathBuf) {
    let builder = TestCluster::builder(name);
    let keys = builder.dir().join("keys");
    let k = keys.to_str().unwrap();
    ok(&["keys", "init", k, "--brokers", "1"]);
    let out = ok(&["keys", "add", k, "edith", "--role", "client", "--edhoc"]);
    assert!(out.contains("added client edith (EDHOC)"), "{out}");
    let cred = |name: &str| keys.join(format!("{name}.cred")).display().to_string();
    let cluster = builder
        .zookeeper_flags(&["--credentials", &cred("zookeeper")])
        .broker_flags(&["--session-timeout-ms", "3000"])
        .flags_of(1, &["--credentials", &cred("broker-1")])
        .start(1);
    (cluster, keys)
}

fn cred(keys: &Path, name: &str) -> String {
    keys.join(format!("{name}.cred")).display().to_string()
}

#[test]
fn a_cli_with_only_an_edhoc_key_creates_a_topic_produces_and_consumes() {
    let (c, keys) = edhoc_cluster("edhoc-cli");
    let edith = cred(&keys, "edith");
    let text = std::fs::read_to_string(&edith).unwrap();
    assert!(!text.contains("identity_key"), "no shared secret: {text}");
    let registry = std::fs::read_to_string(keys.join("registry.json")).unwrap();
    assert!(!registry.contains("private_key"), "{registry}");
    let z = c.zk_addr.to_string();

    let out = ok(&[
        "topic",
        "create",
        "notes",
        "--zookeeper",
        &z,
        "--credentials",
        &edith,
    ]);
    assert!(out.contains("created topic"), "{out}");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let creds = Arc::new(Credentials::load(&edith).unwrap());
            let client = ClusterClient::connect_secured(c.zk_addr, Some(creds))
                .await
                .unwrap();
            client
                .wait_for_leaders("notes", Duration::from_secs(20))
                .await
                .unwrap();
        });
    for value in ["first", "second"] {
        ok(&[
            "produce",
            "notes",
            "-m",
            value,
            "--zookeeper",
            &z,
            "--credentials",
            &edith,
        ]);
    }
    let out = ok(&[
        "consume",
        "notes",
        "--from-beginning",
        "--max",
        "2",
        "--zookeeper",
        &z,
        "--credentials",
        &edith,
    ]);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["first", "second"],
        "{out}"
    );

    // Without credentials the same cluster refuses her requests.
    let (code, _, err) = pehra(&["produce", "notes", "-m", "plain", "--zookeeper", &z]);
    assert_ne!(code, 0, "{err}");
}

#[test]
fn a_credential_the_registry_does_not_hold_is_refused_and_changes_nothing() {
    let (c, keys) = edhoc_cluster("edhoc-refused");
    let z = c.zk_addr.to_string();
    // Another keys directory makes EDHOC clients the cluster never heard of: one
    // with edith's key ID (0202) and another key, one with an unknown key ID.
    let other = c.dir.path().join("other");
    let o = other.to_str().unwrap();
    ok(&["keys", "init", o, "--brokers", "1"]);
    ok(&["keys", "add", o, "mallory", "--role", "client", "--edhoc"]);
    ok(&[
        "keys", "add", o, "trudy", "--role", "client", "--edhoc", "--number", "9",
    ]);
    // They know this cluster's servers' public credentials (those are not secret).
    let edith: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(cred(&keys, "edith")).unwrap()).unwrap();
    for (name, kid) in [("mallory", "0202"), ("trudy", "0209")] {
        let path = other.join(format!("{name}.cred"));
        let mut file: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(file["kid"], kid);
        file["edhoc_peers"] = edith["edhoc_peers"].clone();
        write_private_file(&path, file.to_string().as_bytes()).unwrap();
        let (code, out, err) = pehra(&[
            "topic",
            "create",
            &format!("by-{name}"),
            "--zookeeper",
            &z,
            "--credentials",
            path.to_str().unwrap(),
        ]);
        assert_ne!(code, 0, "{name} got in: {out}");
        // Trudy's key ID is unknown: ERR_CODE 3 (unknown credential referenced).
        // Mallory names edith's: her message_3's MAC does not verify with edith's key.
        let why = match name {
            "trudy" => "EDHOC error 3",
            _ => "a MAC did not verify",
        };
        assert!(err.contains(why), "{name}: {err}");
        // Said as what it is, naming the member (it used to read as a socket error).
        assert!(
            err.contains(&format!(
                "cannot secure the connection to the zookeeper at {z}"
            )),
            "{name}: {err}"
        );
    }
    let status = ok(&[
        "cluster",
        "status",
        "--zookeeper",
        &z,
        "--credentials",
        &cred(&keys, "edith"),
    ]);
    assert!(
        !status.contains("by-mallory") && !status.contains("by-trudy"),
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_1_flood_is_bounded_and_locks_nobody_else_out() {
    let (c, keys) = edhoc_cluster("edhoc-flood");
    let edith = Credentials::load(cred(&keys, "edith")).unwrap();
    let zookeeper = &edith.edhoc_peers()[0];
    assert_eq!(zookeeper.identity.name, "zookeeper");
    let flooder = Endpoint::bind(
        "127.0.0.1:0".parse().unwrap(),
        Config::default(),
        Router::new(),
    )
    .await
    .unwrap();
    let mut codes = Vec::new();
    for i in 0..20u8 {
        let (_, message_1) =
            Initiator::start(edith.edhoc_key().unwrap().clone(), &zookeeper.ccs, [i; 32]).unwrap();
        let request = Request::post(edhoc::WELL_KNOWN_EDHOC).with_payload(message_1);
        let answer = tokio::time::timeout(
            Duration::from_secs(10),
            flooder.handle().request(c.zk_addr, request),
        )
        .await
        .expect("an answer in time")
        .expect("an answer");
        codes.push(answer.code());
    }
    // Its share of half-open sessions (2), then 5.03 without any cryptography.
    assert_eq!(codes[..2], [Code::CHANGED, Code::CHANGED], "{codes:?}");
    assert!(
        codes[2..].iter().all(|c| *c == Code::SERVICE_UNAVAILABLE),
        "{codes:?}"
    );
    // A C_I longer than lakers holds (it panicked on it) is a 4.00, and the server
    // lives on.
    let (_, mut message_1) =
        Initiator::start(edith.edhoc_key().unwrap().clone(), &zookeeper.ccs, [99; 32]).unwrap();
    message_1.pop(); // C_I, one byte: no EAD_1
    message_1.push(0x54);
    message_1.extend_from_slice(&[0xAB; 20]);
    let other = Endpoint::bind(
        "127.0.0.1:0".parse().unwrap(),
        Config::default(),
        Router::new(),
    )
    .await
    .unwrap();
    let request = Request::post(edhoc::WELL_KNOWN_EDHOC).with_payload(message_1);
    let answer = other.handle().request(c.zk_addr, request).await.unwrap();
    assert_eq!(answer.code(), Code::BAD_REQUEST);
    // Someone else still gets in at once.
    let z = c.zk_addr.to_string();
    ok(&[
        "cluster",
        "status",
        "--zookeeper",
        &z,
        "--credentials",
        &cred(&keys, "edith"),
    ]);
}

#[test]
fn aiocoap_runs_edhoc_with_the_zookeeper_and_speaks_oscore_in_its_name() {
    let (c, keys) = edhoc_cluster("edhoc-aiocoap");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/aiocoap_edhoc.py");
    let child = std::process::Command::new(common::provision::python())
        .arg(script)
        .arg(c.zk_addr.port().to_string())
        .arg(cred(&keys, "edith"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python with aiocoap (tests/provision.sh)");
    let out =
        common::wait_bounded(child, Duration::from_secs(60)).expect("aiocoap finished in time");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Both ways: RFC 9668's combined request (aiocoap's default), and message_3 alone.
    for how in ["combined EDHOC + OSCORE request", "message_3 alone"] {
        assert!(
            stdout.contains(&format!("{how}: EDHOC + OSCORE GET /z/topics ok")),
            "{stdout}"
        );
    }
}

#[test]
fn a_device_with_only_an_edhoc_key_publishes_through_the_firmware_loop() {
    // The firmware's node loop on the host (`pehra device-sim`), device dev-0001 an
    // EDHOC identity: it runs EDHOC with broker 1, then checks in and publishes over
    // OSCORE, and its readings are in the topic under its name.
    let builder = TestCluster::builder("edhoc-device");
    let keys = builder.dir().join("keys");
    let k = keys.to_str().unwrap();
    ok(&["keys", "init", k, "--brokers", "1", "--clients", "tester"]);
    let out = ok(&["keys", "add", k, "dev-0001", "--role", "device", "--edhoc"]);
    assert!(out.contains("added device dev-0001 (EDHOC)"), "{out}");
    let text = std::fs::read_to_string(cred(&keys, "dev-0001")).unwrap();
    assert!(!text.contains("identity_key"), "no shared secret: {text}");
    let c = builder
        .zookeeper_flags(&["--credentials", &cred(&keys, "zookeeper")])
        .flags_of(
            1,
            &[
                "--credentials",
                &cred(&keys, "broker-1"),
                "--alarm-interval-ms",
                "1000",
            ],
        )
        .start(1);
    let z = c.zk_addr.to_string();
    let tester = cred(&keys, "tester");
    let cli = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--zookeeper", &z, "--credentials", &tester]);
        ok(&all)
    };
    cli(&["topic", "create", "readings", "-p", "1", "-r", "1"]);
    let data = c.dir.path().join("devices");
    let (code, out, err) = pehra(&[
        "device-sim",
        "--zookeeper",
        &z,
        "--credentials",
        &tester,
        "--device-keys",
        k,
        "--count",
        "1",
        "--interval",
        "1",
        "--acks",
        "all",
        "--duration",
        "4",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    let all = format!("{out}{err}").replace('\r', "\n");
    assert_eq!(code, 0, "{all}");
    let line = all
        .lines()
        .rfind(|l| l.contains("readings published"))
        .unwrap_or_else(|| panic!("no live line:\n{all}"));
    let published: u64 = line
        .split("readings published")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(published >= 2, "{line}");
    let out = cli(&[
        "consume",
        "readings",
        "--from-beginning",
        "--max",
        &published.to_string(),
        "--format",
        "json",
    ]);
    assert_eq!(out.lines().count() as u64, published, "{out}");
    assert!(
        out.lines().all(|l| l.contains(r#""key":"dev-0001""#)),
        "{out}"
    );
}
