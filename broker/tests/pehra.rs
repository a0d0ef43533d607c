//! The broker's PEHRA driver against a real in-process zookeeper on loopback, with the
//! test writing `/pehra/state` itself (a fake coordinator).
//!
//! Every wait is for a status change seen through a watch, bounded by a timeout.

use pehra_broker::{Broker, BrokerConfig, PehraConfig};
use pehra_cluster::{self as cluster, PEHRA_STATE};
use pehra_shared::wire::{self, NodeRole, NodeStatus, PehraState, Term};
use pehra_zookeeper::{Client, ClientOptions, CreateMode, Server, ServerConfig, WatchEvent};
use std::time::Duration;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Waits for the broker's status to satisfy `f`.
async fn status_until(zk: &Client, node: &str, f: impl Fn(&NodeStatus) -> bool) -> NodeStatus {
    let path = cluster::pehra_node_path(node);
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let Ok(mut watch) = zk.watch_data(&path).await else {
                tokio::task::yield_now().await;
                continue;
            };
            while let Some(Ok(event)) = watch.next().await {
                if let WatchEvent::Data(d) = event {
                    let s: NodeStatus = wire::decode(&d.data).expect("status decodes");
                    if f(&s) {
                        return s;
                    }
                }
            }
            // Not created yet: the watch ended at once; ask again after a short pause.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("status reached in time")
}

async fn write_state(zk: &Client, state: &PehraState) {
    cluster::ensure_path(zk, "/pehra").await.expect("ensure");
    let data = wire::encode(state).expect("encodes");
    match zk.set_data(PEHRA_STATE, &data, None).await {
        Ok(_) => {}
        Err(_) => {
            zk.create(PEHRA_STATE, &data, CreateMode::Persistent)
                .await
                .expect("create state");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_sleeps_checks_in_at_its_alarm_and_wakes_on_a_wake_all() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().join("zk"));
    cfg.min_session_timeout = Duration::from_millis(500);
    let server = Server::start(cfg).await.expect("zookeeper");
    let zk_addr = server.local_addr();
    let zk = Client::connect(
        zk_addr,
        ClientOptions {
            session_timeout: Duration::from_secs(2),
            ..Default::default()
        },
    )
    .await
    .expect("client");

    let start = |id: u32, stay_awake: bool| {
        let mut config = BrokerConfig::new(
            id,
            "127.0.0.1:0".parse().unwrap(),
            zk_addr,
            dir.path().join(format!("b{id}")),
        );
        config.session_timeout = Duration::from_millis(1_000);
        config.pehra = PehraConfig {
            stay_awake,
            idle_before_sleep: Duration::from_millis(300),
            alarm_interval: Duration::from_millis(1_500),
            ..PehraConfig::default()
        };
        Broker::start(config)
    };
    // broker-1 will be the Pehredar (stays awake anyway), broker-2 sleeps.
    let b1 = start(1, true).await.expect("broker 1");
    let b2 = start(2, false).await.expect("broker 2");

    let mut state = PehraState {
        next: Some(Term {
            number: 1,
            pehredar: "broker-1".into(),
            started_ms: now_ms(),
            ends_ms: now_ms() + 3_600_000,
        }),
        ..PehraState::default()
    };
    write_state(&zk, &state).await;
    let s1 = status_until(&zk, "broker-1", |s| s.office == Some(1)).await;
    assert_eq!(s1.role, NodeRole::Pehredar);
    // The fake coordinator moves next to term.
    state.term = state.next.take();
    write_state(&zk, &state).await;

    let dormant = status_until(&zk, "broker-2", |s| s.role == NodeRole::Dormant).await;
    let first_alarm = dormant.next_alarm_ms.expect("a dormant node has an alarm");
    // At the alarm it checks in with broker-1 and is told to sleep on: a later alarm.
    let again = status_until(&zk, "broker-2", |s| {
        s.role == NodeRole::Dormant && s.next_alarm_ms.is_some_and(|a| a > first_alarm)
    })
    .await;
    assert!(again.next_alarm_ms.unwrap() > first_alarm);

    // A wakeUpAll: broker-2 wakes and says it obeyed generation 1.
    state.wake_generation = 1;
    state.wake_reason = Some(wire::WakeReason::Admin);
    write_state(&zk, &state).await;
    let awake = status_until(&zk, "broker-2", |s| s.role == NodeRole::Awake).await;
    assert_eq!(awake.wake_generation, 1);

    // Its session survived the sleeps (its registration is still there).
    assert!(zk
        .exists(&cluster::broker_path(2))
        .await
        .expect("exists")
        .is_some());

    b2.shutdown().await;
    b1.shutdown().await;
    zk.close().await.expect("close");
    server.shutdown().await.expect("zookeeper shutdown");
}
