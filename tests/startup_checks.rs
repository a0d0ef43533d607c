//! What `pehra broker`, `pehra zookeeper` and `pehra topic create` refuse at start, each
//! with one line on stderr and exit status 1, before anything is registered or created:
//! a data directory another live process uses, one that cannot be written, a broker id a
//! live broker holds, and a replication factor above the live brokers. Real processes on
//! loopback, each run bounded in time.

mod common;

use common::{free_udp_port, pehra, wait_bounded, TempDir, TestCluster, Zookeeper};
use pehra_broker::client::ClusterClient;
use pehra_cluster as cluster;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `pehra ARGS` and waits at most `limit` for it to exit; returns its exit code and
/// stderr, and how long it ran. Panics (after killing it by PID) if it runs longer.
fn run_within(args: &[String], limit: Duration) -> (i32, String, Duration) {
    let start = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_pehra"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_bounded(child, limit)
        .unwrap_or_else(|| panic!("pehra {args:?} was still running after {limit:?}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        start.elapsed(),
    )
}

/// The arguments of `pehra broker` for broker `id` with data in `dir`.
fn broker_args(id: u32, zookeeper: SocketAddr, dir: &Path) -> Vec<String> {
    vec![
        "broker".into(),
        "--id".into(),
        id.to_string(),
        "--listen".into(),
        format!("127.0.0.1:{}", free_udp_port()),
        "--zookeeper".into(),
        zookeeper.to_string(),
        "--data-dir".into(),
        dir.display().to_string(),
    ]
}

/// Whether broker `id` is registered now.
async fn registered(c: &TestCluster, id: u32) -> bool {
    c.zk()
        .await
        .exists(&cluster::broker_path(id))
        .await
        .unwrap()
        .is_some()
}

/// Asserts that stderr is one line, containing `expected`.
fn assert_one_line(stderr: &str, expected: &str) {
    assert!(
        stderr.contains(expected),
        "expected {expected:?} in:\n{stderr}"
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line:\n{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_on_a_data_directory_in_use_exits_naming_the_process() {
    let c = TestCluster::builder("start-dir-in-use").start(1);
    let dir = c.brokers[&1].dir.clone();
    let (code, stderr, _) = run_within(&broker_args(2, c.zk_addr, &dir), Duration::from_secs(15));
    assert_eq!(code, 1, "{stderr}");
    assert_one_line(
        &stderr,
        &format!(
            "data directory {} is in use by another process (pid {})",
            dir.display(),
            c.pid(1)
        ),
    );
    assert!(!registered(&c, 2).await, "broker 2 never registered");
}

#[test]
fn a_zookeeper_on_a_data_directory_in_use_exits_naming_the_process() {
    let dir = TempDir::new("start-zk-in-use");
    let data = dir.path().join("zookeeper");
    let first = Zookeeper::start_fresh(&data);
    let args: Vec<String> = vec![
        "zookeeper".into(),
        "--listen".into(),
        format!("127.0.0.1:{}", free_udp_port()),
        "--data-dir".into(),
        data.display().to_string(),
    ];
    let (code, stderr, _) = run_within(&args, Duration::from_secs(15));
    assert_eq!(code, 1, "{stderr}");
    assert_one_line(
        &stderr,
        &format!(
            "data directory {} is in use by another process (pid {})",
            data.display(),
            first.child.id()
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_whose_data_directory_cannot_be_written_exits_before_registering() {
    let c = TestCluster::builder("start-dir-readonly").start(0);
    // Nothing can be created under /proc, not even by root: one that does not exist and
    // one that does.
    for (id, dir) in [(7, "/proc/pehra-nowhere"), (8, "/proc/sys")] {
        let (code, stderr, _) = run_within(
            &broker_args(id, c.zk_addr, Path::new(dir)),
            Duration::from_secs(15),
        );
        assert_eq!(code, 1, "{stderr}");
        assert_one_line(&stderr, &format!("data directory {dir} is not writable: "));
        assert!(!registered(&c, id).await, "broker {id} never registered");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_broker_with_a_live_brokers_id_exits_naming_its_address() {
    let c = TestCluster::builder("start-id-in-use").start(1);
    let other = c.dir.path().join("other-broker-1");
    let (code, stderr, took) =
        run_within(&broker_args(1, c.zk_addr, &other), Duration::from_secs(15));
    assert_eq!(code, 1, "{stderr}");
    assert_one_line(
        &stderr,
        &format!(
            "broker id 1 is already registered by a live broker at {}",
            c.addr(1)
        ),
    );
    assert!(took < Duration::from_secs(10), "it took {took:?}");
    // The live broker keeps its registration.
    let (data, _) = c
        .zk()
        .await
        .get_data(&cluster::broker_path(1))
        .await
        .unwrap();
    let info: pehra_shared::wire::BrokerInfo = pehra_shared::wire::decode(&data).unwrap();
    assert_eq!(info.addr, c.addr(1).to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_replicated_beyond_the_live_brokers_is_refused_unless_allowed() {
    let c = TestCluster::builder("start-rf").start(1);
    let zk = c.zk_addr.to_string();
    let refusal = "replication factor 3 is above the 1 live brokers \
                   (use --allow-under-replicated to create it anyway)";
    let (code, _, stderr) = pehra(&["topic", "create", "t", "-r", "3", "--zookeeper", &zk]);
    assert_eq!(code, 1, "{stderr}");
    assert_one_line(&stderr, refusal);
    let client = ClusterClient::connect(c.zk_addr).await.unwrap();
    let error = client.create_topic("u", 1, 3).await.unwrap_err();
    assert_eq!(error.to_string(), refusal);
    let zk_client = c.zk().await;
    for topic in ["t", "u"] {
        assert!(
            zk_client
                .exists(&cluster::topic_path(topic))
                .await
                .unwrap()
                .is_none(),
            "{topic} was not created"
        );
    }
    // Allowed: created, with a warning.
    let (code, out, stderr) = pehra(&[
        "topic",
        "create",
        "t",
        "-r",
        "3",
        "--allow-under-replicated",
        "--zookeeper",
        &zk,
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(out.contains("created topic t"), "{out}");
    assert!(
        stderr.contains("replication factor 3 is above the 1 live brokers"),
        "a warning: {stderr}"
    );
    // Within the live brokers: no question asked.
    let (code, _, stderr) = pehra(&["topic", "create", "v", "-r", "1", "--zookeeper", &zk]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
}
