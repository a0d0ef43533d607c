//! The broker's maintenance agent on real processes (a zookeeper and two brokers on
//! loopback): an order with a command wakes a dormant broker, moves its leadership
//! away, runs the command and reports its exit status; an order without one restarts
//! the broker in place (same PID, new session), or, if its program no longer runs, fails
//! at once with the reason.

mod common;

use common::{free_udp_port, spawn_program_ready, wait_bounded, TempDir, TestCluster, Zookeeper};
use pehra_broker::client::ClusterClient;
use pehra_cluster::{self as cluster, PEHRA_MAINTENANCE};
use pehra_shared::wire::{
    self, Maintenance, MaintenanceState, NodeRole, NodeStatus, PartitionMetadata,
};
use pehra_zookeeper::{Client, ClientOptions, CreateMode};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A zookeeper and brokers 1 and 2; idle brokers sleep after half a second (and do not
/// wake by themselves for a minute). Each broker has the maintenance commands `ran`
/// (sleeps a second, then appends `ran-<the broker's pid>` to `ran.txt` in the cluster's
/// directory) and `broken` (fails with status 7 and `broken` on stderr).
fn start_cluster(name: &str) -> TestCluster {
    let builder = TestCluster::builder(name);
    let ran = format!(
        "ran=sleep 1; echo ran-$PPID >> {}",
        builder.dir().join("ran.txt").display()
    );
    builder
        .broker_flags(&[
            "--maintenance-command",
            &ran,
            "--maintenance-command",
            "broken=echo broken >&2; exit 7",
        ])
        .zookeeper_flags(&["--pehra-term-ms", "60000", "--pehra-handover-ms", "10000"])
        .broker_flags(&[
            "--session-timeout-ms",
            "1500",
            "--controlled-shutdown-timeout-ms",
            "3000",
            "--idle-before-sleep-ms",
            "500",
            "--alarm-interval-ms",
            "60000",
        ])
        .start(2)
}

/// A topic with two partitions on both brokers, with leaders.
async fn create_topic(c: &TestCluster) {
    brokers_may_lead(&c.zk().await).await;
    let client = ClusterClient::connect(c.zk_addr).await.unwrap();
    client.create_topic("jobs", 2, 2).await.unwrap();
    client
        .wait_for_leaders("jobs", Duration::from_secs(20))
        .await
        .unwrap();
}

/// Waits until both brokers are registered and none still reports that it may not lead
/// (its logs not open yet: `/brokers/recovering/{id}:*`), so the controller spreads the
/// topic's leaders over both (otherwise one may lead everything and be the Pehredar,
/// never dormant).
async fn brokers_may_lead(zk: &Client) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let watch = zk.watch_children(cluster::RECOVERING).await.ok();
        let children = zk
            .get_children(cluster::RECOVERING)
            .await
            .map(|(c, _)| c)
            .unwrap_or_default();
        let registered = zk
            .get_children(cluster::BROKERS)
            .await
            .map_or(0, |(c, _)| c.len());
        if registered >= 2 && !children.iter().any(|c| c.ends_with(":*")) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "brokers still opening their logs: {children:?}"
        );
        match watch {
            Some(mut w) => {
                let _ = tokio::time::timeout(Duration::from_secs(1), w.next()).await;
            }
            None => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn order(zk: &Client, broker: u32, id: u64, command: Option<&str>) {
    cluster::ensure_path(zk, PEHRA_MAINTENANCE).await.unwrap();
    let path = cluster::pehra_maintenance_path(&cluster::broker_node_name(broker));
    let data = wire::encode(&Maintenance {
        id,
        command: command.map(String::from),
        state: MaintenanceState::Requested,
        message: None,
    })
    .unwrap();
    if zk
        .create(&path, &data, CreateMode::Persistent)
        .await
        .is_err()
    {
        zk.set_data(&path, &data, None).await.unwrap();
    }
}

async fn read_order(zk: &Client, broker: u32) -> Option<Maintenance> {
    let path = cluster::pehra_maintenance_path(&cluster::broker_node_name(broker));
    let (data, _) = zk.get_data(&path).await.ok()?;
    wire::decode(&data).ok()
}

async fn role(zk: &Client, broker: u32) -> Option<NodeRole> {
    let path = cluster::pehra_node_path(&cluster::broker_node_name(broker));
    let (data, _) = zk.get_data(&path).await.ok()?;
    wire::decode::<NodeStatus>(&data).ok().map(|s| s.role)
}

/// Polls until the order of run `id` is done or failed; also returns every state seen
/// and every PEHRA role the broker had meanwhile.
async fn wait_finished(
    zk: &Client,
    broker: u32,
    id: u64,
) -> (Maintenance, Vec<MaintenanceState>, Vec<NodeRole>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut states, mut roles) = (Vec::new(), Vec::new());
    loop {
        if let Some(order) = read_order(zk, broker).await.filter(|o| o.id == id) {
            if states.last() != Some(&order.state) {
                states.push(order.state);
            }
            if matches!(
                order.state,
                MaintenanceState::Done | MaintenanceState::Failed
            ) {
                return (order, states, roles);
            }
        }
        if let Some(r) = role(zk, broker).await {
            if roles.last() != Some(&r) {
                roles.push(r);
            }
        }
        assert!(
            Instant::now() < deadline,
            "order {id} of broker {broker} not finished: {:?}",
            read_order(zk, broker).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn leaders(zk: &Client) -> Vec<Option<u32>> {
    let mut out = Vec::new();
    for p in 0..2 {
        let (data, _) = zk
            .get_data(&cluster::partition_path("jobs", p))
            .await
            .unwrap();
        out.push(wire::decode::<PartitionMetadata>(&data).unwrap().leader);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_order_wakes_the_broker_moves_leadership_and_reports_the_exit_status() {
    let c = start_cluster("maint-cmd");
    create_topic(&c).await;
    let zk = c.zk().await;
    // Wait until some broker leads a partition and sleeps (the other is the Pehredar).
    let deadline = Instant::now() + Duration::from_secs(30);
    let target = loop {
        let leaders = leaders(&zk).await;
        let mut found = None;
        for b in 1..=2 {
            if leaders.contains(&Some(b)) && role(&zk, b).await == Some(NodeRole::Dormant) {
                found = Some(b);
            }
        }
        if let Some(b) = found {
            break b;
        }
        assert!(Instant::now() < deadline, "no dormant leader: {leaders:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let pid = c.pid(target);
    let file = c.dir.path().join("ran.txt");
    order(&zk, target, 1, Some("ran")).await;
    let (done, states, roles) = wait_finished(&zk, target, 1).await;
    assert_eq!(done.state, MaintenanceState::Done, "{done:?}");
    assert_eq!(done.message.as_deref(), Some("exit status 0"));
    assert_eq!(done.command.as_deref(), Some("ran"));
    assert!(states.contains(&MaintenanceState::Running), "{states:?}");
    assert!(roles.contains(&NodeRole::Awake), "held awake: {roles:?}");
    // The command ran once, in that broker (its parent).
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        format!("ran-{pid}\n")
    );
    // Leadership moved to the other broker, and the broker takes work again.
    assert!(!leaders(&zk).await.contains(&Some(target)));
    assert!(zk
        .exists(&cluster::shutdown_path(target))
        .await
        .unwrap()
        .is_none());

    // A failing command: failed, with its exit status and stderr.
    order(&zk, target, 2, Some("broken")).await;
    let (failed, _, _) = wait_finished(&zk, target, 2).await;
    assert_eq!(failed.state, MaintenanceState::Failed);
    assert_eq!(failed.message.as_deref(), Some("exit status 7: broken"));
    assert_eq!(std::fs::read_to_string(&file).unwrap().lines().count(), 1);
}

/// The remote shell found from outside: an order whose `command` is a shell command (or
/// any name the broker has not configured) runs nothing, fails at once with the names
/// the broker has, and leaves the broker's leadership where it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_naming_no_configured_command_runs_nothing() {
    let c = start_cluster("maint-no-shell");
    create_topic(&c).await;
    let zk = c.zk().await;
    let before = leaders(&zk).await;
    let marker = c.dir.path().join("pwned");
    let shell = format!("touch {}", marker.display());
    for (id, command) in [(11, shell.as_str()), (12, "reboot")] {
        order(&zk, 1, id, Some(command)).await;
        let (failed, states, _) = wait_finished(&zk, 1, id).await;
        assert_eq!(failed.state, MaintenanceState::Failed, "{failed:?}");
        assert!(!states.contains(&MaintenanceState::Running), "{states:?}");
        let message = failed.message.unwrap();
        assert!(
            message.contains("no maintenance command named") && message.contains("broken, ran"),
            "{message}"
        );
    }
    assert!(!marker.exists(), "the order's text was run as a command");
    assert_eq!(
        leaders(&zk).await,
        before,
        "leadership moved for a refused order"
    );
    assert!(zk
        .exists(&cluster::shutdown_path(1))
        .await
        .unwrap()
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_without_command_restarts_the_broker_in_place() {
    let mut c = start_cluster("maint-restart");
    create_topic(&c).await;
    let zk = c.zk().await;
    let target = 1u32;
    let registration = cluster::broker_path(target);
    let before = zk.exists(&registration).await.unwrap().unwrap();
    let pid = c.pid(target);
    order(&zk, target, 7, None).await;
    let (done, _, _) = wait_finished(&zk, target, 7).await;
    assert_eq!(done.state, MaintenanceState::Done, "{done:?}");
    assert_eq!(done.message.as_deref(), Some("restarted"));
    // The same process (PID), still running, registered again with a new session.
    let broker = c.brokers.get_mut(&target).unwrap();
    assert_eq!(broker.child.id(), pid);
    assert!(
        broker.child.try_wait().unwrap().is_none(),
        "the broker exited"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(after) = zk.exists(&registration).await.unwrap() {
            assert_ne!(after.ephemeral_owner, before.ephemeral_owner);
            break;
        }
        assert!(Instant::now() < deadline, "not registered again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(String::from_utf8_lossy(&cmdline).contains("broker"));
    // It serves again: it is back in both in-sync sets.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut in_sync = true;
        for p in 0..2 {
            let (data, _) = zk
                .get_data(&cluster::partition_path("jobs", p))
                .await
                .unwrap();
            let meta: PartitionMetadata = wire::decode(&data).unwrap();
            in_sync &= meta.isr.contains(&target);
        }
        if in_sync {
            break;
        }
        assert!(Instant::now() < deadline, "not back in sync");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_whose_program_no_longer_runs_fails_the_order_at_once() {
    let dir = TempDir::new("maint-exec-fails");
    let zk_addr: SocketAddr = format!("127.0.0.1:{}", free_udp_port()).parse().unwrap();
    let _zookeeper = Zookeeper::start(&dir.path().join("zookeeper"), zk_addr);
    // The broker runs from a copy of the program, which an upgrade gone wrong then
    // replaces with a file that cannot run.
    let program = dir.path().join("pehra");
    std::fs::copy(env!("CARGO_BIN_EXE_pehra"), &program).unwrap();
    let args: Vec<String> = [
        "broker",
        "--id",
        "1",
        "--listen",
        &format!("127.0.0.1:{}", free_udp_port()),
        "--zookeeper",
        &zk_addr.to_string(),
        "--data-dir",
        &dir.path().join("broker-1").display().to_string(),
        "--session-timeout-ms",
        "1500",
    ]
    .map(String::from)
    .to_vec();
    let (broker, _) = spawn_program_ready(&program, &args, "listening on");
    let replacement = dir.path().join("pehra.new");
    std::fs::write(&replacement, "not a program\n").unwrap();
    std::fs::rename(&replacement, &program).unwrap();

    let zk = Client::without_session(zk_addr, ClientOptions::default().coap)
        .await
        .unwrap();
    order(&zk, 1, 3, None).await;
    let (failed, _, _) = wait_finished(&zk, 1, 3).await;
    assert_eq!(failed.state, MaintenanceState::Failed, "{failed:?}");
    let message = failed.message.unwrap_or_default();
    assert!(
        message.starts_with("cannot re-execute the broker: "),
        "{message}"
    );
    // The old process exits with the error (it does not linger).
    let out = tokio::task::spawn_blocking(move || wait_bounded(broker, Duration::from_secs(20)))
        .await
        .unwrap()
        .expect("the broker exits");
    assert!(!out.status.success());
}
