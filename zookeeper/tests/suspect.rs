//! A client reports a node unanswering (`POST /suspect/PATH`): the zookeeper probes the
//! session owning the ephemeral znode PATH with CoAP pings, and expires it at once if
//! its node answers none, long before its lease would have run out; a node that
//! answers keeps its session. Against a real in-process zookeeper on loopback.

mod common;

use common::{client, within};
use pehra_zookeeper::server::ZkMetrics;
use pehra_zookeeper::{
    Client, ClientOptions, CreateMode, Server, ServerConfig, WatchEvent, ZkError,
};
use std::time::Duration;

/// Far longer than any bound below: an expiry inside them is the probe's doing.
const SESSION: Duration = Duration::from_secs(60);

async fn start() -> (Server, ZkMetrics, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().to_path_buf());
    let metrics = cfg.metrics.clone();
    (
        Server::start(cfg).await.expect("server starts"),
        metrics,
        dir,
    )
}

/// A node's session with an ephemeral znode at `path` (the probe pings the address the
/// session was opened from, then that of its latest heartbeat).
async fn node(server: &Server, path: &str) -> Client {
    let node = client(server, SESSION).await;
    node.create(path, b"", CreateMode::Ephemeral)
        .await
        .expect("create");
    node
}

#[tokio::test]
async fn a_reported_node_that_answers_no_ping_loses_its_session_at_once() {
    let (server, metrics, _dir) = start().await;
    // Without a session, and the node's heartbeats 20 s apart: nothing but the probe
    // keeps the zookeeper busy (an expiry that waited for the next request would wait
    // past the bound below).
    let reporter = Client::without_session(server.local_addr(), ClientOptions::default().coap)
        .await
        .expect("connect");
    let dead = node(&server, "/dead").await;
    let mut watch = reporter.watch_data("/dead").await.expect("watch");
    // The node dies without closing its session (its socket goes with it).
    drop(dead);
    reporter.suspect("/dead").await.expect("report");
    // The probe's window is 1 s; its lease would last 60 s.
    within(4, "the dead node's znode goes", async {
        loop {
            match watch.next().await {
                Some(Ok(WatchEvent::Deleted)) => return,
                Some(Ok(_)) => {}
                other => panic!("watch ended without a deletion: {other:?}"),
            }
        }
    })
    .await;
    assert_eq!(metrics.probe_expiries(), 1);
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_reported_node_that_answers_keeps_its_session() {
    let (server, metrics, _dir) = start().await;
    let reporter = client(&server, Duration::from_secs(10)).await;
    let live = node(&server, "/live").await;
    reporter.suspect("/live").await.expect("report");
    within(10, "the probe is answered", async {
        while metrics.probes_answered() == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(metrics.probe_expiries(), 0);
    assert!(reporter.exists("/live").await.expect("exists").is_some());
    // Reported again at once: the node rests from probes for a second.
    reporter.suspect("/live").await.expect("report");
    live.close().await.expect("close");
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_report_must_name_an_ephemeral_znode() {
    let (server, _metrics, _dir) = start().await;
    let reporter = client(&server, Duration::from_secs(10)).await;
    reporter
        .create("/persistent", b"", CreateMode::Persistent)
        .await
        .expect("create");
    let refused = |e: ZkError| e.kind();
    assert_eq!(
        reporter.suspect("/persistent").await.map_err(refused),
        Err(Some(pehra_shared::wire::ErrorKind::Malformed))
    );
    assert_eq!(
        reporter.suspect("/absent").await.map_err(refused),
        Err(Some(pehra_shared::wire::ErrorKind::NotFound))
    );
    server.shutdown().await.expect("shutdown");
}
