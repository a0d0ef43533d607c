//! The PEHRA coordinator and the admin route against a real in-process zookeeper on
//! 127.0.0.1: fake nodes are clients with their own sessions writing ephemeral
//! `NodeStatus` znodes, so a node "dies" when its session is closed.
//!
//! No sleeps: every wait is on a watch of `/pehra/state`, bounded by a timeout.

use pehra_cluster::admin::sign_mode_change;
use pehra_cluster::{self as cluster, PehraCoordinator, PehraCoordinatorConfig};
use pehra_shared::pehra::coordinator::CoordinatorConfig;
use pehra_shared::wire::{
    self, AdminSwitch, ErrorKind, NodeRole, NodeStatus, PehraRequest, PehraState, Term, TermRecord,
    WakeReason,
};
use pehra_zookeeper::{Client, ClientOptions, CreateMode, Server, ServerConfig, WatchEvent};
use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SESSION: Duration = Duration::from_secs(1);
const KEY: &[u8] = b"an admin key of 32 bytes, really";

struct Zk {
    server: Server,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Zk {
    async fn start(admin_key: Option<&[u8]>) -> Zk {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().to_path_buf());
        cfg.min_session_timeout = SESSION;
        cfg.admin_key = admin_key.map(<[u8]>::to_vec);
        cfg.admin_routes.push(pehra_cluster::admin::MODE_ROUTE);
        let server = Server::start(cfg).await.expect("server starts");
        let addr = server.local_addr();
        Zk {
            server,
            addr,
            _dir: dir,
        }
    }

    async fn client(&self) -> Client {
        let options = ClientOptions {
            session_timeout: SESSION,
            ..Default::default()
        };
        Client::connect(self.addr, options).await.expect("connect")
    }

    /// Runs a coordinator until the guard is dropped.
    fn coordinator(&self, term_ms: u64, handover_ms: u64) -> Abort {
        let config = PehraCoordinatorConfig {
            timing: CoordinatorConfig {
                term_ms,
                handover_ms,
                takeover_timeout_ms: 10_000,
                ..CoordinatorConfig::default()
            },
        };
        Abort(tokio::spawn(PehraCoordinator::run_with(self.addr, config)))
    }

    /// A fake node with its own session and status.
    async fn node(&self, name: &str, candidate: bool) -> Node {
        let client = self.client().await;
        cluster::ensure_path(&client, cluster::PEHRA_NODES)
            .await
            .expect("nodes path");
        let status = NodeStatus {
            node: name.into(),
            addr: "127.0.0.1:9".into(),
            role: if candidate {
                NodeRole::Awake
            } else {
                NodeRole::OptedOut
            },
            candidate,
            stay_awake: false,
            idle: false,
            next_alarm_ms: None,
            office: None,
            wake_generation: 0,
            since_ms: now_ms(),
            nhi: None,
            lease_ms: None,
            rtt_ms: None,
        };
        client
            .create(
                &cluster::pehra_node_path(name),
                &wire::encode(&status).unwrap(),
                CreateMode::Ephemeral,
            )
            .await
            .expect("status");
        Node { client, status }
    }

    async fn stop(self) {
        self.server.shutdown().await.expect("clean shutdown");
    }
}

struct Abort(tokio::task::JoinHandle<Result<(), pehra_zookeeper::ZkError>>);

impl Drop for Abort {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Node {
    client: Client,
    status: NodeStatus,
}

impl Node {
    async fn update(&mut self, f: impl FnOnce(&mut NodeStatus)) {
        f(&mut self.status);
        self.client
            .set_data(
                &cluster::pehra_node_path(&self.status.node),
                &wire::encode(&self.status).unwrap(),
                None,
            )
            .await
            .expect("update status");
    }

    /// Takes office for term `number`.
    async fn take_office(&mut self, number: u64) {
        self.update(|s| {
            s.office = Some(number);
            s.role = NodeRole::Pehredar;
        })
        .await;
    }

    async fn kill(self) {
        self.client.close().await.expect("close session");
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

async fn within<T>(secs: u64, what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(secs), f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {secs} s: {what}"),
    }
}

/// Waits (on a data watch of `/pehra/state`) until the state satisfies `pred`.
async fn wait_state(client: &Client, what: &str, pred: impl Fn(&PehraState) -> bool) -> PehraState {
    within(20, what, async {
        loop {
            if client
                .exists(cluster::PEHRA_STATE)
                .await
                .expect("exists")
                .is_none()
            {
                // Not created yet: wait for /pehra's children to change.
                cluster::ensure_path(client, "/pehra")
                    .await
                    .expect("/pehra");
                let mut w = client.watch_children("/pehra").await.expect("watch");
                while let Some(Ok(WatchEvent::Children(c))) = w.next().await {
                    if c.children.iter().any(|c| c == "state") {
                        break;
                    }
                }
                continue;
            }
            let mut watch = client
                .watch_data(cluster::PEHRA_STATE)
                .await
                .expect("watch");
            while let Some(event) = watch.next().await {
                if let Ok(WatchEvent::Data(d)) = event {
                    let state: PehraState = wire::decode(&d.data).expect("state decodes");
                    if pred(&state) {
                        return state;
                    }
                }
            }
        }
    })
    .await
}

/// Waits until `next` is open with a number above `after`, and returns it.
async fn wait_elected(client: &Client, after: u64) -> Term {
    let state = wait_state(client, "an election", |s| {
        s.next.as_ref().is_some_and(|n| n.number > after)
    })
    .await;
    state.next.unwrap()
}

/// Waits until term `number` is in office.
async fn wait_office(client: &Client, number: u64) -> PehraState {
    wait_state(client, "taking office", |s| {
        s.term.as_ref().is_some_and(|t| t.number == number)
    })
    .await
}

async fn term_record(client: &Client, number: u64) -> TermRecord {
    let (data, _) = client
        .get_data(&cluster::pehra_term_path(number))
        .await
        .expect("term record");
    wire::decode(&data).expect("record decodes")
}

fn find<'a>(nodes: &'a mut [Node], name: &str) -> &'a mut Node {
    nodes
        .iter_mut()
        .find(|n| n.status.node == name)
        .expect("one of ours")
}

#[tokio::test]
async fn an_elected_node_takes_office_and_hands_over_without_a_gap() {
    let zk = Zk::start(None).await;
    let client = zk.client().await;
    let _coordinator = zk.coordinator(3_000, 1_500);
    let mut nodes = vec![
        zk.node("broker-1", true).await,
        zk.node("broker-2", true).await,
    ];
    let _opt = zk.node("broker-9", false).await;
    let next = wait_elected(&client, 0).await;
    assert_eq!(next.number, 1);
    assert_ne!(
        next.pehredar, "broker-9",
        "the opted-out node is never elected"
    );
    find(&mut nodes, &next.pehredar).take_office(1).await;
    let state = wait_office(&client, 1).await;
    let t1 = state.term.clone().unwrap();
    assert_eq!(t1.pehredar, next.pehredar);
    assert!(state.next.is_none());
    assert_eq!(state.known, ["broker-1", "broker-2"]);
    let record = term_record(&client, 1).await;
    assert_eq!(record.term, t1);
    assert!(!record.temporary);
    // Re-election before the term ends; the old Pehredar stays until the new one is in.
    let next = wait_elected(&client, 1).await;
    assert_eq!(next.number, 2);
    let (data, _) = client.get_data(cluster::PEHRA_STATE).await.unwrap();
    let during: PehraState = wire::decode(&data).unwrap();
    assert_eq!(
        during.term.as_ref(),
        Some(&t1),
        "the old term is kept meanwhile"
    );
    find(&mut nodes, &next.pehredar).take_office(2).await;
    let t2 = wait_office(&client, 2).await.term.unwrap();
    assert!(t2.started_ms <= t1.ends_ms, "gap: {t1:?} then {t2:?}");
    assert_eq!(term_record(&client, 2).await.term, t2);
    drop(nodes);
    zk.stop().await;
}

#[tokio::test]
async fn a_dead_pehredar_wakes_everyone_and_another_is_elected() {
    let zk = Zk::start(None).await;
    let client = zk.client().await;
    let _coordinator = zk.coordinator(600_000, 10_000);
    let mut nodes = vec![
        zk.node("broker-1", true).await,
        zk.node("broker-2", true).await,
        zk.node("broker-3", true).await,
    ];
    let next = wait_elected(&client, 0).await;
    find(&mut nodes, &next.pehredar).take_office(1).await;
    let before = wait_office(&client, 1).await;
    let i = nodes
        .iter()
        .position(|n| n.status.node == next.pehredar)
        .unwrap();
    nodes.remove(i).kill().await;
    let state = wait_state(&client, "a wake and an election", |s| {
        s.wake_generation > before.wake_generation && s.next.is_some()
    })
    .await;
    assert_eq!(state.wake_reason, Some(WakeReason::PehredarLost));
    let successor = state.next.unwrap();
    assert_ne!(successor.pehredar, next.pehredar);
    assert_eq!(successor.number, 2);
    find(&mut nodes, &successor.pehredar).take_office(2).await;
    let state = wait_office(&client, 2).await;
    assert_eq!(state.term.unwrap().pehredar, successor.pehredar);
    zk.stop().await;
}

#[tokio::test]
async fn all_down_brings_a_temporary_pehredar_then_an_election() {
    let zk = Zk::start(None).await;
    let client = zk.client().await;
    let _coordinator = zk.coordinator(600_000, 10_000);
    let a = zk.node("broker-1", true).await;
    let mut b = zk.node("broker-2", true).await;
    let mut c = zk.node("broker-3", true).await;
    let next = wait_elected(&client, 0).await;
    let mut nodes = vec![a];
    for n in [&mut b, &mut c] {
        if n.status.node == next.pehredar {
            n.take_office(1).await;
        }
    }
    if nodes[0].status.node == next.pehredar {
        nodes[0].take_office(1).await;
    }
    wait_office(&client, 1).await;
    nodes.push(b);
    nodes.push(c);
    for n in nodes {
        n.kill().await;
    }
    // The first back is made temporary Pehredar.
    let mut first = zk.node("broker-2", true).await;
    let state = wait_state(&client, "a temporary Pehredar", |s| {
        s.next.as_ref().is_some_and(|n| n.pehredar == "broker-2")
    })
    .await;
    let number = state.next.unwrap().number;
    first.take_office(number).await;
    let state = wait_office(&client, number).await;
    assert!(state.temporary);
    assert!(term_record(&client, number).await.temporary);
    // Not everyone is back yet: no election.
    let _second = zk.node("broker-1", true).await;
    // Everyone back: an ordinary election.
    let _third = zk.node("broker-3", true).await;
    let next = wait_elected(&client, number).await;
    assert_eq!(next.number, number + 1);
    zk.stop().await;
}

#[tokio::test]
async fn traffic_keeps_everyone_awake_until_all_are_idle() {
    let zk = Zk::start(None).await;
    let client = zk.client().await;
    let _coordinator = zk.coordinator(600_000, 10_000);
    let mut nodes = vec![
        zk.node("broker-1", true).await,
        zk.node("broker-2", true).await,
    ];
    let _opt = zk.node("broker-9", false).await;
    let next = wait_elected(&client, 0).await;
    find(&mut nodes, &next.pehredar).take_office(1).await;
    let before = wait_office(&client, 1).await;
    let request = PehraRequest::WakeAll {
        from: next.pehredar.clone(),
        reason: WakeReason::Traffic,
        term: 1,
    };
    client
        .create(
            &format!("{}/r-", cluster::PEHRA_REQUESTS),
            &wire::encode(&request).unwrap(),
            CreateMode::PersistentSequential,
        )
        .await
        .expect("request");
    let state = wait_state(&client, "traffic mode", |s| s.traffic_awake).await;
    assert_eq!(state.wake_generation, before.wake_generation + 1);
    assert_eq!(state.wake_reason, Some(WakeReason::Traffic));
    let generation = state.wake_generation;
    nodes[0]
        .update(|s| {
            s.idle = true;
            s.wake_generation = generation;
        })
        .await;
    client.sync().await.unwrap();
    nodes[1]
        .update(|s| {
            s.idle = true;
            s.wake_generation = generation;
        })
        .await;
    let state = wait_state(&client, "traffic mode over", |s| !s.traffic_awake).await;
    assert_eq!(state.wake_generation, generation, "no further wake");
    // The request was applied and deleted.
    within(10, "the request is deleted", async {
        let mut w = client
            .watch_children(cluster::PEHRA_REQUESTS)
            .await
            .unwrap();
        while let Some(Ok(WatchEvent::Children(c))) = w.next().await {
            if c.children.is_empty() {
                return;
            }
        }
        panic!("watch ended");
    })
    .await;
    zk.stop().await;
}

#[tokio::test]
async fn mode_changes_need_a_key_a_valid_mac_and_freshness() {
    // No key configured.
    let zk = Zk::start(None).await;
    let client = zk.client().await;
    let e = client
        .pehra_mode(&sign_mode_change(KEY, false, now_ms()))
        .await
        .expect_err("refused without a key");
    assert_eq!(e.kind(), Some(ErrorKind::Unauthorized), "{e}");
    assert!(e.to_string().contains("admin key"), "{e}");
    zk.stop().await;

    let zk = Zk::start(Some(KEY)).await;
    let client = zk.client().await;
    let _coordinator = zk.coordinator(600_000, 10_000);
    let mut node = zk.node("broker-1", true).await;
    let next = wait_elected(&client, 0).await;
    node.take_office(next.number).await;
    let before = wait_office(&client, 1).await;
    assert!(before.enabled);

    // Wrong key.
    let e = client
        .pehra_mode(&sign_mode_change(
            b"not the admin key at all",
            false,
            now_ms(),
        ))
        .await
        .expect_err("wrong key");
    assert_eq!(e.kind(), Some(ErrorKind::Unauthorized), "{e}");
    // Far in the future.
    let e = client
        .pehra_mode(&sign_mode_change(KEY, false, now_ms() + 10 * 60 * 1000))
        .await
        .expect_err("from the future");
    assert_eq!(e.kind(), Some(ErrorKind::Unauthorized), "{e}");
    assert!(client.exists(cluster::PEHRA_ADMIN).await.unwrap().is_none());

    // Valid.
    let issued = now_ms();
    let change = sign_mode_change(KEY, false, issued);
    client.pehra_mode(&change).await.expect("accepted");
    let (data, stat) = client.get_data(cluster::PEHRA_ADMIN).await.unwrap();
    let stored: AdminSwitch = wire::decode(&data).unwrap();
    assert_eq!(
        stored,
        AdminSwitch {
            enabled: false,
            issued_ms: issued
        }
    );
    let state = wait_state(&client, "disabled", |s| !s.enabled).await;
    assert_eq!(state.wake_generation, before.wake_generation + 1);
    assert_eq!(state.wake_reason, Some(WakeReason::Admin));

    // Replayed, and an older one: refused, nothing changes.
    let e = client.pehra_mode(&change).await.expect_err("replay");
    assert_eq!(e.kind(), Some(ErrorKind::Unauthorized), "{e}");
    let e = client
        .pehra_mode(&sign_mode_change(KEY, true, issued - 1))
        .await
        .expect_err("stale");
    assert_eq!(e.kind(), Some(ErrorKind::Unauthorized), "{e}");
    let (data_after, stat_after) = client.get_data(cluster::PEHRA_ADMIN).await.unwrap();
    assert_eq!((data_after, stat_after.version), (data, stat.version));

    // Enabled again.
    client
        .pehra_mode(&sign_mode_change(KEY, true, issued + 1))
        .await
        .expect("accepted");
    let state = wait_state(&client, "enabled", |s| s.enabled).await;
    assert_eq!(state.wake_generation, before.wake_generation + 2);
    zk.stop().await;
}
