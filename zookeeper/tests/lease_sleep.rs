//! PEHRA's lease stretch: a dormant client's one heartbeat with `sleep_ms` keeps its
//! session (and ephemeral znodes) alive over the sleep, against a real in-process
//! zookeeper on loopback.
//!
//! The sleeps here are the thing under test (time passing without heartbeats), not
//! synchronisation: expiry is observed through watches.

mod common;

use common::within;
use pehra_zookeeper::{
    Client, CreateMode, Server, ServerConfig, SessionState, WatchEvent, ZkError,
};
use std::time::Duration;

const SESSION: Duration = Duration::from_millis(500);

async fn start(max_sleep: Duration) -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().to_path_buf());
    cfg.min_session_timeout = SESSION;
    cfg.max_sleep = max_sleep;
    (Server::start(cfg).await.expect("server starts"), dir)
}

async fn client(server: &Server) -> Client {
    common::client(server, SESSION).await
}

/// Waits until the watched znode is deleted.
async fn deleted(watch: &mut pehra_zookeeper::Watch) {
    loop {
        match watch.next().await {
            Some(Ok(WatchEvent::Deleted)) => return,
            Some(Ok(_)) => {}
            other => panic!("watch ended without a deletion: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_sleeping_client_keeps_its_session_a_silent_one_loses_it() {
    let (server, _dir) = start(Duration::from_secs(3600)).await;
    let observer = client(&server).await;

    let sleeper = client(&server).await;
    sleeper
        .create("/sleeper", b"", CreateMode::Ephemeral)
        .await
        .expect("create");
    let silent = client(&server).await;
    silent
        .create("/silent", b"", CreateMode::Ephemeral)
        .await
        .expect("create");

    let mut sleeper_watch = observer.watch_data("/sleeper").await.expect("watch");
    let mut silent_watch = observer.watch_data("/silent").await.expect("watch");

    let lease = sleeper.sleep(SESSION * 4).await.expect("sleep");
    assert_eq!(lease, SESSION * 5, "lease = timeout + sleep");
    assert!(sleeper.is_asleep());
    // The silent client stops heartbeating without announcing a sleep (a crash).
    drop(silent);

    within(
        10,
        "the silent client's znode goes",
        deleted(&mut silent_watch),
    )
    .await;
    // Asleep for three session timeouts in all.
    tokio::time::sleep(SESSION * 3).await;
    sleeper.wake().await.expect("wake");
    assert!(!sleeper.is_asleep());
    assert_eq!(*sleeper.session_state().borrow(), SessionState::Alive);
    assert!(observer.exists("/sleeper").await.expect("exists").is_some());

    // Awake again, the normal keepalive holds the session over further timeouts.
    tokio::time::sleep(SESSION * 3).await;
    assert!(observer.exists("/sleeper").await.expect("exists").is_some());
    assert_eq!(*sleeper.session_state().borrow(), SessionState::Alive);
    // No deletion was ever reported for the sleeper.
    let pending = tokio::time::timeout(Duration::from_millis(1), sleeper_watch.next()).await;
    assert!(
        !matches!(pending, Ok(Some(Ok(WatchEvent::Deleted)))),
        "the sleeper's znode was deleted"
    );

    sleeper.close().await.expect("close");
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn sleeping_beyond_the_granted_lease_expires_the_session() {
    // The server grants at most 200 ms of sleep.
    let (server, _dir) = start(Duration::from_millis(200)).await;
    let observer = client(&server).await;
    let sleeper = client(&server).await;
    sleeper
        .create("/oversleeper", b"", CreateMode::Ephemeral)
        .await
        .expect("create");
    let mut watch = observer.watch_data("/oversleeper").await.expect("watch");

    let lease = sleeper.sleep(Duration::from_secs(60)).await.expect("sleep");
    assert_eq!(lease, SESSION + Duration::from_millis(200), "sleep capped");

    within(10, "the oversleeper's znode goes", deleted(&mut watch)).await;
    let woke = sleeper.wake().await;
    assert!(
        matches!(
            woke,
            Err(ZkError::Server { .. }) | Err(ZkError::SessionExpired)
        ),
        "waking after the lease ran out fails: {woke:?}"
    );
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_sessions_lease_follows_the_health_its_node_reports() {
    let (server, _dir) = start(Duration::from_secs(3600)).await;
    let healthy = client(&server).await;
    let unwell = client(&server).await;
    healthy.report_health(pehra_shared::health::system::parse("cpu=0\n"));
    let critical = pehra_shared::health::system::parse(
        "cpu=500\nmemory=1000\ndisk_io=1000\nbattery=0\nfailures=5\n",
    );
    unwell.report_health(critical);
    // Critical (+30 %) and half loaded (−10 %); healthy: the timeout (never shorter).
    let want = Duration::from_millis(600);
    within(
        10,
        "heartbeats carry the health and get their lease",
        async {
            while healthy.granted_lease() != Some(SESSION) || unwell.granted_lease() != Some(want) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        },
    )
    .await;
    // A sleep's heartbeat keeps the adaptive lease and stretches it.
    let lease = unwell.sleep(SESSION).await.expect("sleep");
    assert_eq!(lease, want + SESSION);
    unwell.wake().await.expect("wake");
    // Reported healthy again: back to the timeout.
    unwell.report_health(pehra_shared::health::system::parse("cpu=0\n"));
    within(10, "the lease follows the new health", async {
        while unwell.granted_lease() != Some(SESSION) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    server.shutdown().await.expect("shutdown");
}
