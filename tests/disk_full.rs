//! A zookeeper whose disk fills up (the finding from outside: it exited and its clients
//! just timed out). Now it refuses writes with 5.03 and a one-line reason, keeps
//! answering reads and heartbeats, does not exit, and takes writes again by itself once
//! space returns; every write it acknowledged survives a crash.
//!
//! A real `pehra zookeeper` process on a real small file system: a 24 MiB tmpfs mounted
//! by the test in its own directory (we run as root; unmounted by a guard). Why not an
//! injected ENOSPC: the claim is about what the kernel does when the space runs out
//! (where `write`, `fdatasync` and `fallocate` fail), and a tmpfs gives exactly that in
//! a few milliseconds. Without permission to mount, the test fails saying so.

mod common;

use common::{BrokerProcess, TempDir, Zookeeper};
use pehra_broker::client::ClusterClient;
use pehra_shared::coap::{Config, Method, Request, Response, CONTENT_FORMAT_CBOR};
use pehra_shared::driver::{Endpoint, Router};
use pehra_shared::wire::{self, Acks, ErrorBody, ErrorKind, ProduceRequest, Record, RecordBatch};
use pehra_zookeeper::{Client, ClientOptions, CreateMode, SessionState};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A tmpfs of `size` mounted at `dir` while it lives.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "this test needs a small file system: it mounts a {size} tmpfs at {} (as root, or \
             with CAP_SYS_ADMIN), and mount failed: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Tmpfs(dir.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system holding `path` with a file there; returns its size.
fn fill(path: &Path) -> u64 {
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0x55u8; 64 * 1024];
    let mut written = 0u64;
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    written
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_keeps_reads_and_sessions_and_recovers() {
    let tmp = TempDir::new("disk-full");
    let mnt = tmp.path().join("mnt");
    let _fs = Tmpfs::mount(&mnt, "24m");
    let data = mnt.join("zookeeper");
    let addr = format!("127.0.0.1:{}", common::free_udp_port())
        .parse()
        .unwrap();
    let mut zookeeper = Zookeeper::start(&data, addr);
    let options = ClientOptions {
        session_timeout: Duration::from_millis(1500),
        ..ClientOptions::default()
    };
    let client = Client::connect(addr, options).await.unwrap();
    client
        .create("/before", b"kept", CreateMode::Persistent)
        .await
        .unwrap();

    // The disk fills up (the log keeps the space it reserved ahead of its writes).
    fill(&mnt.join("filler"));
    let value = vec![7u8; 100 * 1024];
    let mut acknowledged = Vec::new();
    let refusal = loop {
        let path = format!("/n{}", acknowledged.len());
        match client.create(&path, &value, CreateMode::Persistent).await {
            Ok(_) => acknowledged.push(path),
            Err(e) => break e,
        }
        assert!(
            acknowledged.len() < 200,
            "writes never refused with the disk full"
        );
    };
    assert_eq!(refusal.kind(), Some(ErrorKind::Busy), "{refusal}");
    let message = refusal.to_string();
    assert!(
        message.contains("zookeeper storage full: ") && !message.contains('\n'),
        "{message}"
    );
    assert!(
        !acknowledged.is_empty(),
        "the reserved space took writes first"
    );

    // Still up: reads are answered, sessions open before go on (heartbeats need no
    // disk).
    assert_eq!(client.get_data("/before").await.unwrap().0, b"kept");
    assert!(zookeeper.child.try_wait().unwrap().is_none(), "it exited");
    let state = client.session_state();
    for _ in 0..30 {
        // 3 s of reads: two session timeouts.
        client.exists("/before").await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(*state.borrow(), SessionState::Alive, "the session lapsed");
    // What no longer fits the room reserved before the disk filled stays refused.
    let again = client
        .create("/again", &value, CreateMode::Persistent)
        .await;
    assert!(
        again
            .as_ref()
            .is_err_and(|e| e.to_string().contains("zookeeper storage full")),
        "{again:?}"
    );

    // Space returns: writes are taken again, without a restart.
    std::fs::remove_file(mnt.join("filler")).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match client.create("/after", b"x", CreateMode::Persistent).await {
            Ok(_) => break,
            Err(e) => {
                assert!(e.to_string().contains("storage full"), "{e}");
                assert!(tokio::time::Instant::now() < deadline, "still refused: {e}");
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(zookeeper.child.try_wait().unwrap().is_none(), "it exited");

    // Every acknowledged write survives a crash.
    drop(client);
    let _ = zookeeper.child.kill();
    let _ = zookeeper.child.wait();
    let zookeeper = Zookeeper::start(&data, addr);
    let reader = Client::without_session(addr, ClientOptions::default().coap)
        .await
        .unwrap();
    for path in acknowledged
        .iter()
        .chain([&"/before".to_string(), &"/after".to_string()])
    {
        reader
            .get_data(path)
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
    }
    zookeeper.kill();
}

/// One produce of a 16 KiB record straight to `broker` (no retries): the answer.
async fn produce_once(from: &Endpoint, broker: std::net::SocketAddr, topic: &str) -> Response {
    let batch = wire::encode(&RecordBatch {
        records: vec![Record {
            key: None,
            value: vec![9u8; 16 * 1024],
            timestamp_ms: 0,
            headers: Vec::new(),
        }],
    })
    .unwrap();
    let request = ProduceRequest {
        topic: topic.into(),
        partition: 0,
        acks: Acks::Leader,
        producer_id: None,
        base_sequence: None,
        gapless: false,
        leader_epoch: None,
        if_log_end: None,
        batch,
    };
    let request = Request::new(Method::Post, "produce")
        .with_payload(wire::encode(&request).unwrap())
        .with_content_format(CONTENT_FORMAT_CBOR);
    tokio::time::timeout(
        Duration::from_secs(10),
        from.handle().request(broker, request),
    )
    .await
    .expect("an answer in time")
    .expect("an answer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_with_a_full_disk_refuses_produce_keeps_serving_fetches_and_recovers() {
    let tmp = TempDir::new("broker-disk-full");
    let mnt = tmp.path().join("mnt");
    let _fs = Tmpfs::mount(&mnt, "16m");
    let zk_addr = format!("127.0.0.1:{}", common::free_udp_port())
        .parse()
        .unwrap();
    let zookeeper = Zookeeper::start(&tmp.path().join("zookeeper"), zk_addr);
    let addr = format!("127.0.0.1:{}", common::free_udp_port())
        .parse()
        .unwrap();
    let mut broker = BrokerProcess::start(1, addr, &mnt.join("broker-1"), zk_addr);
    let client = ClusterClient::connect(zk_addr).await.unwrap();
    client.create_topic("full", 1, 1).await.unwrap();
    client
        .wait_for_leaders("full", Duration::from_secs(20))
        .await
        .unwrap();
    let raw = Endpoint::bind(
        "127.0.0.1:0".parse().unwrap(),
        Config::default(),
        Router::new(),
    )
    .await
    .unwrap();
    let mut stored = 0u64;
    for _ in 0..3 {
        let answer = produce_once(&raw, addr, "full").await;
        assert!(answer.code().is_success(), "{answer:?}");
        stored += 1;
    }

    fill(&mnt.join("filler"));
    let answer = loop {
        let answer = produce_once(&raw, addr, "full").await;
        if !answer.code().is_success() {
            break answer;
        }
        stored += 1;
        assert!(stored < 1000, "produce never refused with the disk full");
    };
    let body: ErrorBody = wire::decode(answer.payload()).unwrap();
    assert_eq!(body.error, ErrorKind::Busy, "{body:?}");
    assert!(
        body.message.starts_with("broker storage full: "),
        "{}",
        body.message
    );
    // Fetches go on: every stored record is read back; the broker is still up.
    let fetched = client.fetch("full", 0, 0, 1 << 20).await.unwrap();
    assert_eq!(fetched.log_end_offset, stored);
    assert!(
        broker.child.try_wait().unwrap().is_none(),
        "the broker exited"
    );

    // Space returns: produce works again, without a restart.
    std::fs::remove_file(mnt.join("filler")).unwrap();
    let answer = produce_once(&raw, addr, "full").await;
    assert!(answer.code().is_success(), "{answer:?}");
    let fetched = client.fetch("full", 0, 0, 1 << 20).await.unwrap();
    assert_eq!(fetched.log_end_offset, stored + 1);
    drop(broker);
    zookeeper.kill();
}
