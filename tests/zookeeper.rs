//! The mini-zookeeper end to end: a real `pehra zookeeper` process on loopback, driven by
//! the client library, raw CoAP and the `pehra zk` CLI.

mod common;
mod linearizability;

use common::{pehra, TempDir, Zookeeper};
use pehra_shared::api::response_error;
use pehra_shared::coap::{option, Code, Config, Request};
use pehra_shared::driver::{Endpoint, Router};
use pehra_shared::wire::{self, ErrorKind, MultiOp, MultiResult};
use pehra_zookeeper::{Client, ClientOptions, CreateMode, SessionState, WatchEvent, ZkError};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(60);

async fn bounded<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(LIMIT, f)
        .await
        .expect("test took too long")
}

fn options(session_timeout_ms: u64) -> ClientOptions {
    ClientOptions {
        session_timeout: Duration::from_millis(session_timeout_ms),
        ..ClientOptions::default()
    }
}

fn kind<T: std::fmt::Debug>(r: Result<T, ZkError>) -> ErrorKind {
    r.unwrap_err().kind().expect("a refusal from the zookeeper")
}

#[tokio::test]
async fn znode_semantics() {
    bounded(async {
        let dir = TempDir::new("zk-semantics");
        let zk = Zookeeper::start_fresh(dir.path());
        let c = Client::connect(zk.addr, options(5_000)).await.unwrap();

        assert_eq!(
            c.create("/a", b"one", CreateMode::Persistent)
                .await
                .unwrap(),
            "/a"
        );
        let e = c
            .create("/a", b"", CreateMode::Persistent)
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "node exists: /a");
        assert_eq!(
            kind(c.create("/x/y", b"", CreateMode::Persistent).await),
            ErrorKind::NotFound
        );

        let (data, stat) = c.get_data("/a").await.unwrap();
        assert_eq!(
            (data.as_slice(), stat.version, stat.num_children),
            (&b"one"[..], 0, 0)
        );
        let stat = c.set_data("/a", b"two", Some(0)).await.unwrap();
        assert_eq!(stat.version, 1);
        let e = c.set_data("/a", b"three", Some(0)).await.unwrap_err();
        assert_eq!(e.to_string(), "version mismatch: /a is at 1");

        let s1 = c
            .create("/a/q-", b"", CreateMode::PersistentSequential)
            .await
            .unwrap();
        let s2 = c
            .create("/a/q-", b"", CreateMode::PersistentSequential)
            .await
            .unwrap();
        assert_eq!(
            (s1.as_str(), s2.as_str()),
            ("/a/q-0000000000", "/a/q-0000000001")
        );
        let (children, parent) = c.get_children("/a").await.unwrap();
        assert_eq!(children, ["q-0000000000", "q-0000000001"]);
        assert_eq!((parent.cversion, parent.num_children), (2, 2));

        assert_eq!(kind(c.delete("/a", None).await), ErrorKind::NotEmpty);
        assert_eq!(
            kind(c.delete("/a/q-0000000000", Some(5)).await),
            ErrorKind::VersionMismatch
        );
        c.delete("/a/q-0000000000", Some(0)).await.unwrap();
        assert_eq!(c.exists("/a/q-0000000000").await.unwrap(), None);

        let eph = c.create("/e", b"", CreateMode::Ephemeral).await.unwrap();
        assert_eq!(
            c.exists(&eph).await.unwrap().unwrap().ephemeral_owner,
            c.session_id()
        );
        assert_eq!(
            kind(c.create("/e/child", b"", CreateMode::Persistent).await),
            ErrorKind::NotEmpty
        );

        // multi: all or nothing.
        let bad = vec![
            MultiOp::Create {
                path: "/m".into(),
                data: vec![],
                ephemeral: false,
                sequential: false,
            },
            MultiOp::Check {
                path: "/a".into(),
                version: Some(0),
            },
        ];
        assert_eq!(kind(c.multi(bad).await), ErrorKind::VersionMismatch);
        assert_eq!(
            c.exists("/m").await.unwrap(),
            None,
            "the failed multi created nothing"
        );
        let good = vec![
            MultiOp::Create {
                path: "/m".into(),
                data: b"m".to_vec(),
                ephemeral: false,
                sequential: false,
            },
            MultiOp::SetData {
                path: "/a".into(),
                data: b"four".to_vec(),
                version: Some(1),
            },
            MultiOp::Delete {
                path: "/a/q-0000000001".into(),
                version: None,
            },
        ];
        let results = c.multi(good).await.unwrap();
        assert_eq!(results[0], MultiResult::Create { path: "/m".into() });
        assert_eq!(results[2], MultiResult::Delete);
        assert_eq!(c.get_data("/a").await.unwrap().0, b"four");

        // Large data goes block-wise; over 1 MiB is refused.
        let mib = vec![7u8; 1024 * 1024];
        c.create("/big", &mib, CreateMode::Persistent)
            .await
            .unwrap();
        assert_eq!(c.get_data("/big").await.unwrap().0, mib);
        let over = vec![0u8; 1024 * 1024 + 1];
        assert_eq!(
            kind(c.set_data("/big", &over, None).await),
            ErrorKind::TooLarge
        );

        let z1 = c.sync().await.unwrap();
        c.set_data("/m", b"x", None).await.unwrap();
        assert!(c.sync().await.unwrap() > z1, "zxids grow with every write");
        c.close().await.unwrap();
    })
    .await
}

#[tokio::test]
async fn session_expiry_deletes_ephemerals_and_tells_watchers() {
    bounded(async {
        let dir = TempDir::new("zk-expiry");
        let zk = Zookeeper::start_fresh(dir.path());
        let timeout = Duration::from_millis(600);
        let owner = Client::connect(zk.addr, options(timeout.as_millis() as u64))
            .await
            .unwrap();
        let watcher = Client::connect(zk.addr, options(5_000)).await.unwrap();
        owner
            .create("/lease", b"held", CreateMode::Ephemeral)
            .await
            .unwrap();
        let session = owner.session_id().unwrap();
        let mut watch = watcher.watch_data("/lease").await.unwrap();
        assert!(matches!(watch.next().await, Some(Ok(WatchEvent::Data(_)))));

        // The owner crashes: no close, no more heartbeats.
        let crashed_at = Instant::now();
        drop(owner);
        let event = watch.next().await.unwrap().unwrap();
        let took = crashed_at.elapsed();
        assert_eq!(event, WatchEvent::Deleted);
        // The lease runs at most `timeout` from the last heartbeat; one heartbeat interval
        // (timeout / 3) of slack covers the notification's way back on loopback.
        assert!(took <= timeout + timeout / 3, "deleted after {took:?}");
        assert_eq!(watcher.exists("/lease").await.unwrap(), None);

        // The dead session speaks again (seed 003's undead node): told it must rejoin.
        let raw = Endpoint::bind(
            "127.0.0.1:0".parse().unwrap(),
            Config::default(),
            Router::new(),
        )
        .await
        .unwrap();
        let hb = raw
            .handle()
            .request(zk.addr, Request::post(&format!("session/{session}/hb")))
            .await
            .unwrap();
        assert_eq!(hb.code(), Code::NOT_FOUND);
        assert_eq!(response_error(&hb).error, ErrorKind::SessionExpired);
    })
    .await
}

#[tokio::test]
async fn a_client_learns_its_session_expired() {
    bounded(async {
        let dir = TempDir::new("zk-lost");
        let zk = Zookeeper::start_fresh(dir.path());
        let c = Client::connect(zk.addr, options(400)).await.unwrap();
        let mut state = c.session_state();
        assert_eq!(*state.borrow(), SessionState::Alive);
        // Freeze the zookeeper longer than the lease, then let it go: the session expired.
        common::unsafe_kill(zk.child.id(), "STOP");
        tokio::time::sleep(Duration::from_millis(900)).await; // the outage itself, not a wait for an event
        common::unsafe_kill(zk.child.id(), "CONT");
        state
            .wait_for(|s| *s == SessionState::Expired)
            .await
            .unwrap();
        assert_eq!(
            kind(c.create("/x", b"", CreateMode::Ephemeral).await),
            ErrorKind::SessionExpired
        );
    })
    .await
}

#[tokio::test]
async fn watches_see_every_state_and_never_miss_a_change_after_the_read() {
    bounded(async {
        let dir = TempDir::new("zk-watch");
        let zk = Zookeeper::start_fresh(dir.path());
        let c = Arc::new(Client::connect(zk.addr, options(5_000)).await.unwrap());
        c.create("/w", b"0", CreateMode::Persistent).await.unwrap();
        let mut children = c.watch_children("/w").await.unwrap();
        assert_eq!(
            children.next().await.unwrap().unwrap(),
            WatchEvent::Children(pehra_shared::wire::Children {
                children: vec![],
                stat: c.get_data("/w").await.unwrap().1
            })
        );
        c.create("/w/k", b"", CreateMode::Persistent).await.unwrap();
        let WatchEvent::Children(now) = children.next().await.unwrap().unwrap() else {
            panic!()
        };
        assert_eq!(now.children, ["k"]);

        // Race a writer against watchers starting: whatever the interleaving, every watcher
        // ends up at the final version (the first event is the state at registration).
        for round in 0..20u32 {
            let writer = {
                let c = c.clone();
                tokio::spawn(async move {
                    for _ in 0..3 {
                        c.set_data("/w", b"v", None).await.unwrap();
                    }
                })
            };
            let watcher = Client::without_session(zk.addr, Config::default())
                .await
                .unwrap();
            let mut watch = watcher.watch_data("/w").await.unwrap();
            writer.await.unwrap();
            let final_version = (round + 1) * 3;
            loop {
                let WatchEvent::Data(node) = watch.next().await.unwrap().unwrap() else {
                    panic!()
                };
                if node.stat.version == final_version {
                    break;
                }
                assert!(node.stat.version < final_version);
            }
        }
        c.delete("/w/k", None).await.unwrap();
        c.delete("/w", None).await.unwrap();
    })
    .await
}

/// The next event of `watch`, within 20 s (a watch that went deaf fails here).
async fn next_event(watch: &mut pehra_zookeeper::Watch, what: &str) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(20), watch.next())
        .await
        .unwrap_or_else(|_| panic!("{what}: no event in 20 s (the watch went deaf)"))
        .unwrap_or_else(|| panic!("{what}: the watch ended"))
        .unwrap_or_else(|e| panic!("{what}: the watch failed: {e}"))
}

/// Watches are CoAP observations held in the zookeeper's memory: a restart loses them
/// (sessions survive, they are in the log). The client registers them again when its
/// session hears another zookeeper incarnation, so a change made after the restart (or
/// while it was down) still fires, once, and nothing fires for an unchanged znode.
/// Both ways a restart shows: silently (nothing sent to it while it was down), and with
/// the watch's observation failing at once (a request found nothing listening).
#[tokio::test]
async fn watches_outlive_a_zookeeper_restart() {
    bounded(async {
        let dir = TempDir::new("zk-watch-restart");
        let mut zk = Zookeeper::start_fresh(dir.path());
        let addr = zk.addr;
        let c = Client::connect(addr, options(3_000)).await.unwrap();
        c.create("/r", b"0", CreateMode::Persistent).await.unwrap();
        let mut data = c.watch_data("/r").await.unwrap();
        let mut children = c.watch_children("/r").await.unwrap();
        next_event(&mut data, "data, first").await;
        next_event(&mut children, "children, first").await;
        for round in 1..=2u32 {
            zk.kill();
            if round == 2 {
                // Something is sent while it is down: told at once that nothing listens
                // (which fails the watches' observations too).
                let down = c.get_data("/r").await.unwrap_err();
                assert!(down.to_string().contains("nothing listens"), "{down}");
            }
            zk = Zookeeper::start(dir.path(), addr);
            let writer = Client::without_session(addr, Config::default())
                .await
                .unwrap();
            let value = format!("after restart {round}");
            writer.set_data("/r", value.as_bytes(), None).await.unwrap();
            writer
                .create(&format!("/r/k{round}"), b"", CreateMode::Persistent)
                .await
                .unwrap();
            let WatchEvent::Data(node) = next_event(&mut data, "data").await else {
                panic!("not data")
            };
            assert_eq!(node.data, value.as_bytes(), "round {round}");
            let mut names = Vec::new();
            while names.len() < round as usize {
                let WatchEvent::Children(now) = next_event(&mut children, "children").await else {
                    panic!("not children")
                };
                names = now.children;
            }
            assert_eq!(names.len(), round as usize, "{names:?}");
            // Still registered: a later change fires too.
            writer.set_data("/r", b"later", None).await.unwrap();
            let WatchEvent::Data(node) = next_event(&mut data, "data, later").await else {
                panic!("not data")
            };
            assert_eq!(node.data, b"later");
        }
        assert_eq!(*c.session_state().borrow(), SessionState::Alive);
    })
    .await
}

/// A watch without a session has no heartbeat to tell it of a restart: it asks its
/// zookeeper's incarnation every 5 s of quiet. A restart between two asks (nothing
/// sent to the zookeeper while it was down, so nothing failed) took its observation;
/// the next ask sees another process and registers again: the change made after the
/// restart arrives. (Before, the watch asked for the znode, which the new process
/// answered, and went deaf.)
#[tokio::test]
async fn a_watch_without_a_session_outlives_a_quiet_zookeeper_restart() {
    bounded(async {
        let dir = TempDir::new("zk-sessionless-restart");
        let mut zk = Zookeeper::start_fresh(dir.path());
        let addr = zk.addr;
        let setup = Client::without_session(addr, Config::default())
            .await
            .unwrap();
        setup
            .create("/q", b"0", CreateMode::Persistent)
            .await
            .unwrap();
        let watcher = Client::without_session(addr, Config::default())
            .await
            .unwrap();
        let mut data = watcher.watch_data("/q").await.unwrap();
        next_event(&mut data, "first").await;
        zk.kill();
        zk = Zookeeper::start(dir.path(), addr);
        let writer = Client::without_session(addr, Config::default())
            .await
            .unwrap();
        writer.set_data("/q", b"after", None).await.unwrap();
        let WatchEvent::Data(node) = next_event(&mut data, "after the restart").await else {
            panic!("not data")
        };
        assert_eq!(node.data, b"after");
        writer.set_data("/q", b"later", None).await.unwrap();
        let WatchEvent::Data(node) = next_event(&mut data, "later").await else {
            panic!("not data")
        };
        assert_eq!(node.data, b"later");
        zk.kill();
    })
    .await
}

/// Simulation seed 1025: a write applied and logged just before the zookeeper died,
/// its answer lost, was applied a second time when its retransmission reached the
/// restarted process (whose CoAP deduplication is in memory). Numbered requests of a
/// session are remembered in the tree and its log: every retry here, after a SIGKILL and
/// restart, gets the first answer and changes nothing.
#[tokio::test]
async fn a_retried_write_is_not_applied_twice_across_a_zookeeper_restart() {
    bounded(async {
        let dir = TempDir::new("zk-retry-restart");
        let mut zk = Zookeeper::start_fresh(dir.path());
        let addr = zk.addr;
        let c = Client::connect(addr, options(30_000)).await.unwrap();
        let session = c.session_id().unwrap();
        c.create("/r", b"0", CreateMode::Persistent).await.unwrap();
        c.create("/gone", b"", CreateMode::Persistent)
            .await
            .unwrap();
        // The retries a client's CoAP layer (or OSCORE's Echo round) sends: the same body,
        // the same request number (far above the client's own, which numbers from 1).
        let body = |request: u64, data: &[u8], version: Option<u32>| {
            wire::encode(&wire::SetDataRequest {
                data: data.to_vec(),
                version,
                session: Some(session),
                request: Some(request),
            })
            .unwrap()
        };
        let retries = [
            // An unconditional set: applied twice, the version would go 1 -> 2.
            Request::put("z/r").with_payload(body(1_000, b"1", None)),
            // A compare-and-set: its retry would be "version mismatch" after it succeeded.
            Request::put("z/r").with_payload(body(1_001, b"2", Some(1))),
            // A sequential create: applied twice, there would be two children.
            Request::post("z/r/s-").with_payload(
                wire::encode(&wire::CreateRequest {
                    data: vec![],
                    ephemeral: false,
                    sequential: true,
                    session: Some(session),
                    request: Some(1_002),
                })
                .unwrap(),
            ),
            // A delete: its retry would be "no node".
            Request::delete("z/gone")
                .with_query(&format!("session={session}"))
                .with_query("request=1003"),
        ];
        // A new socket for every send: nothing in a new process has seen the exchange.
        let send = |request: Request| async move {
            let raw = Endpoint::bind(
                "127.0.0.1:0".parse().unwrap(),
                Config::default(),
                Router::new(),
            )
            .await
            .unwrap();
            let response = raw
                .handle()
                .request(addr, request.with_content_format(60))
                .await
                .unwrap();
            (
                response.code(),
                response.payload().to_vec(),
                response_error(&response),
            )
        };
        for (i, request) in retries.iter().enumerate() {
            let (code, payload, error) = send(request.clone()).await;
            assert!(code.is_success(), "request {i}: {error:?}");
            // The last one twice: a restart from a log that already held a retry.
            for round in 0..if i == retries.len() - 1 { 2 } else { 1 } {
                zk.kill();
                zk = Zookeeper::start(dir.path(), addr);
                let (again, again_payload, error) = send(request.clone()).await;
                assert_eq!(
                    (again, &again_payload),
                    (code, &payload),
                    "request {i}, restart {round}: {error:?}"
                );
            }
        }
        let reader = Client::without_session(addr, Config::default())
            .await
            .unwrap();
        let (data, stat) = reader.get_data("/r").await.unwrap();
        assert_eq!(
            (data.as_slice(), stat.version),
            (&b"2"[..], 2),
            "each set applied once"
        );
        let (children, _) = reader.get_children("/r").await.unwrap();
        assert_eq!(children.len(), 1, "one sequential child: {children:?}");
        assert_eq!(reader.exists("/gone").await.unwrap(), None);
        // An older number than the session's last is a stale retry: refused, not applied.
        let (stale, _, error) =
            send(Request::put("z/r").with_payload(body(999, b"old", None))).await;
        assert_eq!(stale, Code::BAD_REQUEST, "{error:?}");
        assert!(error.message.contains("stale retry"), "{error:?}");
        assert_eq!(reader.get_data("/r").await.unwrap().0, b"2");
    })
    .await
}

/// The partition znode of `w/0`, if it decodes.
async fn partition_w0(c: &common::TestCluster) -> Option<pehra_shared::wire::PartitionMetadata> {
    let zk = c.zk().await;
    let (data, _) = zk
        .get_data(&pehra_cluster::partition_path("w", 0))
        .await
        .ok()?;
    wire::decode(&data).ok()
}

/// Waits (30 s at most) until `w/0`'s znode names a live leader other than `not`.
async fn led_by_a_live_broker_other_than(c: &common::TestCluster, not: Option<u32>) -> u32 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let live = pehra_cluster::live_brokers(&c.zk().await)
            .await
            .unwrap_or_default();
        let now = partition_w0(c).await;
        if let Some(l) = now.as_ref().and_then(|m| m.leader) {
            if live.contains_key(&l) && Some(l) != not {
                return l;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no new live leader: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await; // polling the znode
    }
}

/// The finding of the cluster simulation (`SIM_ZK_CRASH=1 SIM_SECONDS=40 SIM_SEED=1`):
/// the zookeeper restarts, then a partition's leader crashes; the controller moves the
/// leadership, but the brokers' watches died with the old zookeeper process, so the
/// new leader never learned it leads ("does not lead" for over a minute). Here on real
/// processes: after the restart and the crash, a record is acknowledged by the new
/// leader and both records read back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brokers_follow_a_leader_change_after_a_zookeeper_restart() {
    use pehra_broker::client::{records_from, ClusterClient};
    use pehra_shared::wire::{Acks, Record};
    let mut c = common::TestCluster::builder("zk-restart-leader")
        .broker_flags(&["--session-timeout-ms", "3000", "--stay-awake"])
        .start(3);
    let client = ClusterClient::connect(c.zk_addr).await.unwrap();
    client.create_topic("w", 1, 3).await.unwrap();
    let record = |v: &str| Record {
        key: None,
        value: v.as_bytes().to_vec(),
        timestamp_ms: 0,
        headers: Vec::new(),
    };
    led_by_a_live_broker_other_than(&c, None).await;
    client
        .produce("w", 0, &[record("before")], Acks::All, None)
        .await
        .unwrap()
        .unwrap();

    // The zookeeper crashes and comes back (the brokers' sessions survive it).
    c.zookeeper.take().unwrap().kill();
    c.zookeeper = Some(Zookeeper::start(&c.dir.path().join("zookeeper"), c.zk_addr));
    // Then the leader crashes: the controller moves the leadership.
    let old = partition_w0(&c).await.unwrap().leader.unwrap();
    c.kill_broker(old);
    let new = led_by_a_live_broker_other_than(&c, Some(old)).await;

    // The new leader knows it leads: an acks=all record is acknowledged (the client
    // retries "does not lead" for up to 30 s; without the fix it gives up).
    let answer = client
        .produce("w", 0, &[record("after")], Acks::All, None)
        .await
        .unwrap_or_else(|e| panic!("broker {new} never took the leadership: {e}"))
        .unwrap();
    assert_eq!(answer.base_offset, 1);
    let fetched = client.fetch("w", 0, 0, 64 * 1024).await.unwrap();
    let values: Vec<Vec<u8>> = records_from(&fetched, 0)
        .unwrap()
        .into_iter()
        .map(|(_, r)| r.value)
        .collect();
    assert_eq!(values, [b"before".to_vec(), b"after".to_vec()]);
}

#[tokio::test]
async fn acknowledged_creates_survive_sigkill() {
    bounded(async {
        let dir = TempDir::new("zk-crash");
        let zk = Zookeeper::start_fresh(dir.path());
        let addr = zk.addr;
        let setup = Client::without_session(addr, Config::default())
            .await
            .unwrap();
        setup
            .create("/d", b"", CreateMode::Persistent)
            .await
            .unwrap();

        // Four writers create as fast as they can and record what was acknowledged.
        let acked = Arc::new(std::sync::Mutex::new(BTreeSet::new()));
        let count = Arc::new(AtomicU64::new(0));
        let (enough_tx, enough_rx) = tokio::sync::oneshot::channel();
        let enough_tx = Arc::new(std::sync::Mutex::new(Some(enough_tx)));
        let mut writers = Vec::new();
        for w in 0..4 {
            let (acked, count, enough_tx) = (acked.clone(), count.clone(), enough_tx.clone());
            let options = ClientOptions {
                coap: Config {
                    ack_timeout: Duration::from_millis(200),
                    max_retransmit: 2,
                    ..Config::default()
                },
                ..options(5_000)
            };
            writers.push(tokio::spawn(async move {
                let c = Client::without_session(addr, options.coap).await.unwrap();
                for i in 0.. {
                    let path = format!("/d/w{w}-{i}");
                    match c.create(&path, b"x", CreateMode::Persistent).await {
                        Ok(p) => {
                            acked.lock().unwrap().insert(p);
                            if count.fetch_add(1, Ordering::SeqCst) + 1 == 300 {
                                if let Some(tx) = enough_tx.lock().unwrap().take() {
                                    let _ = tx.send(());
                                }
                            }
                        }
                        Err(_) => return, // the server died under us
                    }
                }
            }));
        }
        enough_rx.await.unwrap();
        zk.kill(); // SIGKILL mid-stream
        for w in writers {
            w.await.unwrap();
        }
        let acked = acked.lock().unwrap().clone();
        assert!(acked.len() >= 300);

        let zk = Zookeeper::start(dir.path(), addr);
        assert!(zk.startup_line.contains("recovered"), "{}", zk.startup_line);
        let c = Client::without_session(addr, Config::default())
            .await
            .unwrap();
        let (children, _) = c.get_children("/d").await.unwrap();
        let present: BTreeSet<String> = children.into_iter().map(|n| format!("/d/{n}")).collect();
        let missing: Vec<_> = acked.difference(&present).collect();
        assert!(
            missing.is_empty(),
            "{} acknowledged creates lost, e.g. {:?}",
            missing.len(),
            missing.first()
        );
    })
    .await
}

#[tokio::test]
async fn restart_recovers_from_a_snapshot_and_the_log_after_it() {
    bounded(async {
        let dir = TempDir::new("zk-snapshot");
        let addr = format!("127.0.0.1:{}", common::free_udp_port())
            .parse()
            .unwrap();
        let zk = Zookeeper::start_with(dir.path(), addr, &["--snapshot-after-mib", "1"]);
        let c = Client::without_session(addr, Config::default())
            .await
            .unwrap();
        let blob: Vec<u8> = (0..600 * 1024).map(|i| (i % 253) as u8).collect();
        for i in 0..4 {
            c.create(&format!("/blob{i}"), &blob, CreateMode::Persistent)
                .await
                .unwrap();
        }
        c.create("/after", b"tail", CreateMode::Persistent)
            .await
            .unwrap();
        c.sync().await.unwrap();
        let snapshots = || {
            std::fs::read_dir(dir.path())
                .unwrap()
                .filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .starts_with("snapshot.")
                })
                .count()
        };
        // The snapshot is written on a thread of its own: wait (bounded) for its file.
        let deadline = Instant::now() + Duration::from_secs(10);
        while snapshots() == 0 {
            assert!(
                Instant::now() < deadline,
                "2.4 MiB of log with a 1 MiB threshold wrote no snapshot"
            );
            tokio::time::sleep(Duration::from_millis(20)).await; // polling the file system: no event to await
        }
        zk.kill();
        let zk = Zookeeper::start_with(dir.path(), addr, &["--snapshot-after-mib", "1"]);
        // Fewer records replayed than were written: the rest came from the snapshot.
        let replayed: usize = zk
            .startup_line
            .split(", ")
            .find_map(|part| {
                part.trim_end_matches(')')
                    .strip_suffix(" log records replayed")
            })
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{}", zk.startup_line));
        assert!(replayed < 5, "{}", zk.startup_line);
        for i in 0..4 {
            assert_eq!(c.get_data(&format!("/blob{i}")).await.unwrap().0, blob);
        }
        assert_eq!(c.get_data("/after").await.unwrap().0, b"tail");
    })
    .await
}

#[tokio::test]
async fn concurrent_history_is_linearizable() {
    bounded(async {
        let dir = TempDir::new("zk-linear");
        let zk = Zookeeper::start_fresh(dir.path());
        let history = linearizability::run_workload(zk.addr, 4, 3, 40).await;
        for (key, ops) in &history {
            assert!(
                linearizability::is_linearizable(ops),
                "history of {key} is not linearizable: {ops:#?}"
            );
        }
    })
    .await
}

#[tokio::test]
async fn bad_input_gets_clear_errors_and_changes_nothing() {
    bounded(async {
        let dir = TempDir::new("zk-bad");
        let zk = Zookeeper::start_fresh(dir.path());
        let raw = Endpoint::bind(
            "127.0.0.1:0".parse().unwrap(),
            Config::default(),
            Router::new(),
        )
        .await
        .unwrap();
        let h = raw.handle();
        let send = |r: Request| {
            let h = h.clone();
            async move { h.request(zk.addr, r).await.unwrap() }
        };
        let cases = [
            (
                Request::post("z/a").with_payload(*b"\xa1\x61"),
                Code::BAD_REQUEST,
                "malformed CBOR",
            ),
            (
                Request::post("z/a")
                    .with_payload(*b"{}")
                    .with_content_format(50),
                Code::UNSUPPORTED_CONTENT_FORMAT,
                "Content-Format 50",
            ),
            (
                raw_path(&["z", "a", "", "b"]).with_payload(wire::encode(&create_body()).unwrap()),
                Code::BAD_REQUEST,
                "empty component",
            ),
            (
                raw_path(&["z", "a", ""]).with_payload(wire::encode(&create_body()).unwrap()),
                Code::BAD_REQUEST,
                "trailing slash",
            ),
            (
                Request::get("z/a/../b"),
                Code::BAD_REQUEST,
                "relative component",
            ),
            (
                Request::put("z/a")
                    .with_option(option::IF_MATCH, [1u8])
                    .with_payload(wire::encode(&create_body()).unwrap()),
                Code::PRECONDITION_FAILED,
                "If-Match",
            ),
            (
                Request::post("session/nonsense/hb"),
                Code::BAD_REQUEST,
                "bad session id",
            ),
            (
                Request::post("session/12345/hb"),
                Code::NOT_FOUND,
                "has expired or does not exist",
            ),
            (
                Request::post("session").with_payload(*b"\x01"),
                Code::BAD_REQUEST,
                "malformed CBOR",
            ),
            (
                Request::get("nothing-here"),
                Code::NOT_FOUND,
                "no such resource",
            ),
        ];
        for (request, code, reason) in cases {
            let what = format!("{:?} {}", request.method(), request.resource_key());
            let response = send(request).await;
            assert_eq!(response.code(), code, "{what}");
            let message = response_error(&response).message;
            assert!(
                message.contains(reason),
                "{what}: {message:?} should say {reason:?}"
            );
        }
        let c = Client::without_session(zk.addr, Config::default())
            .await
            .unwrap();
        assert_eq!(c.exists("/a").await.unwrap(), None, "nothing was stored");
        c.create("/ok", b"", CreateMode::Persistent).await.unwrap();
    })
    .await
}

/// A POST whose Uri-Path options are exactly `segments` (empty ones included).
fn raw_path(segments: &[&str]) -> Request {
    segments.iter().fold(Request::post(""), |r, s| {
        r.with_option(option::URI_PATH, s.as_bytes())
    })
}

fn create_body() -> pehra_shared::wire::CreateRequest {
    pehra_shared::wire::CreateRequest {
        data: vec![],
        ephemeral: false,
        sequential: false,
        session: None,
        request: None,
    }
}

#[test]
fn cli_watch_prints_each_change_until_deletion() {
    use std::io::{BufRead, BufReader};
    let dir = TempDir::new("zk-cli-watch");
    let zk = Zookeeper::start_fresh(dir.path());
    let z = zk.addr.to_string();
    assert_eq!(pehra(&["zk", "--zookeeper", &z, "create", "/w", "v0"]).0, 0);
    let mut watcher = std::process::Command::new(env!("CARGO_BIN_EXE_pehra"))
        .args(["zk", "--zookeeper", &z, "watch", "/w"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watcher.stdout.take().unwrap()).lines();
    // Each line is read before the next change is made: one change per notification.
    assert_eq!(lines.next().unwrap().unwrap(), "version 0: v0");
    assert_eq!(pehra(&["zk", "--zookeeper", &z, "set", "/w", "v1"]).0, 0);
    assert_eq!(lines.next().unwrap().unwrap(), "version 1: v1");
    assert_eq!(pehra(&["zk", "--zookeeper", &z, "delete", "/w"]).0, 0);
    assert_eq!(lines.next().unwrap().unwrap(), "deleted: /w");
    let out = common::wait_bounded(watcher, Duration::from_secs(10))
        .expect("watch exits after the deletion");
    assert!(out.status.success());
}

#[test]
fn cli_reads_and_writes_znodes() {
    let dir = TempDir::new("zk-cli");
    let zk = Zookeeper::start_fresh(dir.path());
    let z = zk.addr.to_string();
    let zk_cmd = |args: &[&str]| {
        let mut all = vec!["zk", "--zookeeper", &z];
        all.extend_from_slice(args);
        pehra(&all)
    };
    assert_eq!(
        zk_cmd(&["create", "/a", "hello"]),
        (0, "/a\n".into(), String::new())
    );
    let (code, _, err) = zk_cmd(&["create", "/a"]);
    assert_eq!((code, err.as_str()), (1, "pehra: node exists: /a\n"));
    assert_eq!(zk_cmd(&["create", "-s", "/a/n-"]).1, "/a/n-0000000000\n");
    assert_eq!(zk_cmd(&["ls", "/a"]).1, "n-0000000000\n");
    assert_eq!(zk_cmd(&["get", "/a"]).1, "hello\n");
    for _ in 0..3 {
        assert_eq!(zk_cmd(&["set", "/a", "x"]).0, 0);
    }
    let (code, _, err) = zk_cmd(&["set", "-v", "1", "/a", "y"]);
    assert_eq!(
        (code, err.as_str()),
        (1, "pehra: version mismatch: /a is at 3\n")
    );
    let (_, stat, _) = zk_cmd(&["stat", "/a"]);
    for label in [
        "czxid",
        "mzxid",
        "pzxid",
        "ctime",
        "mtime",
        "version        3",
        "cversion       1",
        "ephemeralOwner none",
        "dataLength     1",
        "numChildren    1",
    ] {
        assert!(stat.contains(label), "{label} missing in\n{stat}");
    }
    let (code, _, err) = zk_cmd(&["delete", "/a"]);
    assert_eq!((code, err.as_str()), (1, "pehra: node has children: /a\n"));
    let (code, _, err) = zk_cmd(&["get", "a"]);
    assert_eq!(
        (code, err.as_str()),
        (1, "pehra: invalid path \"a\": must start with /\n")
    );
    assert_eq!(zk_cmd(&["delete", "/a/n-0000000000"]).0, 0);
    assert_eq!(zk_cmd(&["delete", "-v", "3", "/a"]).0, 0);
    let (code, _, err) = zk_cmd(&["get", "/a"]);
    assert_eq!((code, err.as_str()), (1, "pehra: no node: /a\n"));
    let other = format!("127.0.0.1:{}", common::free_udp_port());
    let (code, _, err) = pehra(&[
        "zookeeper",
        "--listen",
        &other,
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("in use by another process"), "{err}");
    assert!(zk.terminate(), "SIGTERM stops the zookeeper cleanly");
}

#[test]
fn cli_fails_at_once_when_nothing_listens() {
    // A loopback port with nothing on it: the kernel answers each datagram with an ICMP
    // port unreachable, which the client must take as the answer, not wait out.
    let addr = format!("127.0.0.1:{}", common::free_udp_port());
    let start = Instant::now();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_pehra"))
        .args(["zk", "ls", "/", "--zookeeper", &addr])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = common::wait_bounded(child, Duration::from_secs(10))
        .expect("pehra zk ls exits within 10 s when nothing listens");
    let took = start.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!("nothing listens on udp {addr}")),
        "{stderr}"
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(took < Duration::from_secs(2), "it took {took:?}");
}

/// The ensemble commands against a zookeeper that runs alone say so in one line.
#[test]
fn ensemble_commands_say_a_lone_zookeeper_has_no_ensemble() {
    let dir = TempDir::new("zk-alone");
    let zk = Zookeeper::start_fresh(dir.path());
    let addr = zk.addr.to_string();
    for args in [
        vec!["cluster", "zookeeper-remove", "2", "--zookeeper", &addr],
        vec![
            "cluster",
            "zookeeper-add",
            "4=127.0.0.1:1",
            "--zookeeper",
            &addr,
        ],
        vec!["cluster", "zookeeper-handover", "--zookeeper", &addr],
    ] {
        let (code, _, err) = pehra(&args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(
            err.contains("runs alone (started without --peers)"),
            "{args:?}: {err}"
        );
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    }
    zk.kill();
}
