//! PEHRA on real processes: a zookeeper (the elector) and brokers on loopback, one
//! scenario per function of seed 000 — election and reElection (300 terms), selfChk,
//! sleepCycle, alarmClock, wakeUpAll, disablePehra, the admin's enable/disable,
//! maintenance and allDown.
//!
//! Every wait is for a state the zookeeper shows (a znode's value), bounded in time.

mod common;

use common::metrics::{free_tcp_port, scrape_value};
use common::{pehra, unsafe_kill, TempDir, TestCluster};
use pehra_broker::client::{records_from, ClusterClient};
use pehra_cluster::{
    self as cluster, pehra_node_path, PEHRA_ADMIN, PEHRA_NODES, PEHRA_STATE, PEHRA_TERMS,
};
use pehra_shared::coap::{Config, Request, CONTENT_FORMAT_CBOR};
use pehra_shared::driver::{Endpoint, Router};
use pehra_shared::wire::{
    self, Acks, AdminSwitch, NodeRole, NodeStatus, PehraState, Record, TermRecord, WakeReason,
};
use pehra_zookeeper::Client;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Short sessions, idle periods and alarms so that a test sees several cycles.
const SESSION_MS: &str = "1500";
const IDLE_MS: &str = "500";
const ALARM_MS: u64 = 2000;

/// The PEHRA settings of a test cluster's zookeeper.
struct Terms {
    term_ms: u64,
    handover_ms: u64,
}

const LONG_TERMS: Terms = Terms {
    term_ms: 60_000,
    handover_ms: 10_000,
};

/// A zookeeper with an admin key, and brokers `1..=n` with the short PEHRA settings
/// (plus `extra` flags per broker).
fn start_cluster(name: &str, terms: Terms, n: u32, extra: &[(u32, &[&str])]) -> TestCluster {
    let builder = TestCluster::builder(name);
    let key = key_file_in(builder.dir());
    std::fs::write(&key, "c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seS0wMTIzNDU2\n").unwrap();
    let term = terms.term_ms.to_string();
    let handover = terms.handover_ms.to_string();
    let alarm = ALARM_MS.to_string();
    let mut builder = builder
        .zookeeper_flags(&[
            "--admin-key",
            key.to_str().unwrap(),
            "--pehra-term-ms",
            &term,
            "--pehra-handover-ms",
            &handover,
            "--pehra-takeover-timeout-ms",
            "3000",
        ])
        .broker_flags(&[
            "--session-timeout-ms",
            SESSION_MS,
            "--replica-lag-ms",
            "2000",
            "--idle-before-sleep-ms",
            IDLE_MS,
            "--alarm-interval-ms",
            &alarm,
            "--controlled-shutdown-timeout-ms",
            "3000",
        ]);
    for (id, flags) in extra {
        builder = builder.flags_of(*id, flags);
    }
    builder.start(n)
}

/// The admin key file of a cluster in `dir`.
fn key_file_in(dir: &Path) -> PathBuf {
    dir.join("admin.key")
}

/// The admin key file of `c`.
fn key_file(c: &TestCluster) -> PathBuf {
    key_file_in(c.dir.path())
}

async fn state(zk: &Client) -> Option<PehraState> {
    let (data, _) = zk.get_data(PEHRA_STATE).await.ok()?;
    wire::decode(&data).ok()
}

async fn statuses(zk: &Client) -> BTreeMap<String, NodeStatus> {
    let mut out = BTreeMap::new();
    let Ok((names, _)) = zk.get_children(PEHRA_NODES).await else {
        return out;
    };
    for name in names {
        if let Ok((data, _)) = zk.get_data(&pehra_node_path(&name)).await {
            if let Ok(s) = wire::decode::<NodeStatus>(&data) {
                out.insert(name, s);
            }
        }
    }
    out
}

/// The cluster as the zookeeper shows it.
struct View {
    state: PehraState,
    nodes: BTreeMap<String, NodeStatus>,
}

impl View {
    fn pehredar(&self) -> Option<&str> {
        self.state.term.as_ref().map(|t| t.pehredar.as_str())
    }

    fn role(&self, node: &str) -> Option<NodeRole> {
        self.nodes.get(node).map(|s| s.role)
    }

    /// Every participant except the Pehredar (and stay-awake ones) is dormant.
    fn all_asleep_but_pehredar(&self) -> bool {
        let Some(p) = self.pehredar() else {
            return false;
        };
        self.state.next.is_none()
            && self.nodes.values().all(|s| match s.role {
                NodeRole::Pehredar => s.node == p,
                NodeRole::Dormant => true,
                NodeRole::Awake => s.stay_awake,
                NodeRole::OptedOut => true,
            })
            && self.role(p) == Some(NodeRole::Pehredar)
    }
}

/// Waits (polling the zookeeper every 50 ms, up to `limit`) until `ok` holds for the
/// state and the statuses; returns that view.
async fn wait_for(
    zk: &Client,
    limit: Duration,
    what: &str,
    mut ok: impl FnMut(&View) -> bool,
) -> View {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(state) = state(zk).await {
            let view = View {
                state,
                nodes: statuses(zk).await,
            };
            if ok(&view) {
                return view;
            }
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {limit:?} waiting for: {what}\nstate: {:?}\nnodes: {:#?}",
                    view.state, view.nodes
                );
            }
        } else if Instant::now() >= deadline {
            panic!("timed out after {limit:?} waiting for: {what} (no /pehra/state)");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until a Pehredar is in office and every other participant sleeps.
async fn all_asleep(zk: &Client) -> View {
    wait_for(
        zk,
        Duration::from_secs(30),
        "all asleep but the Pehredar",
        |v| v.all_asleep_but_pehredar(),
    )
    .await
}

async fn term_records(zk: &Client) -> Vec<TermRecord> {
    let (names, _) = zk.get_children(PEHRA_TERMS).await.unwrap();
    let mut records = Vec::new();
    for name in names {
        let (data, _) = zk.get_data(&format!("{PEHRA_TERMS}/{name}")).await.unwrap();
        records.push(wire::decode::<TermRecord>(&data).unwrap());
    }
    records.sort_by_key(|r| r.term.number);
    records
}

fn broker_id(node: &str) -> u32 {
    node.strip_prefix("broker-").unwrap().parse().unwrap()
}

fn record(value: String) -> Record {
    Record {
        key: None,
        value: value.into_bytes(),
        timestamp_ms: 0,
        headers: Vec::new(),
    }
}

/// election + reElection + selfChk: over 300 short terms among three candidates and one
/// opted-out broker, every candidate is elected, the opted-out one never, every term
/// number is taken in turn, and each successor took office before its predecessor's
/// term ended (no term passed without a Pehredar).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_elections_elect_every_candidate_and_never_leave_a_gap() {
    let terms = Terms {
        term_ms: 300,
        handover_ms: 150,
    };
    let c = start_cluster("pehra-elections", terms, 4, &[(4, &["--pehra-opt-out"])]);
    let zk = c.zk().await;
    let first = wait_for(&zk, Duration::from_secs(20), "a first term", |v| {
        v.state.term.is_some()
    })
    .await
    .state
    .term
    .unwrap()
    .number;
    let target = first + 300;
    let view = wait_for(&zk, Duration::from_secs(240), "300 more terms", |v| {
        v.state.term.as_ref().is_some_and(|t| t.number >= target)
    })
    .await;
    assert_eq!(view.role("broker-4"), Some(NodeRole::OptedOut));
    assert!(!view.nodes["broker-4"].candidate);

    let records: Vec<TermRecord> = term_records(&zk)
        .await
        .into_iter()
        .filter(|r| r.term.number >= first && r.term.number <= target)
        .collect();
    let numbers: Vec<u64> = records.iter().map(|r| r.term.number).collect();
    assert_eq!(
        numbers,
        (first..=target).collect::<Vec<_>>(),
        "every term from {first} to {target} was taken, in order"
    );
    let mut elected: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &records {
        *elected.entry(r.term.pehredar.as_str()).or_default() += 1;
        assert!(
            r.candidates.contains(&r.term.pehredar),
            "term {} went to a non-candidate: {r:?}",
            r.term.number
        );
        assert!(
            !r.candidates.iter().any(|c| c == "broker-4"),
            "the opted-out broker was a candidate: {r:?}"
        );
    }
    let names: BTreeSet<&str> = elected.keys().copied().collect();
    assert_eq!(
        names,
        BTreeSet::from(["broker-1", "broker-2", "broker-3"]),
        "elected: {elected:?}"
    );
    let mut late = Vec::new();
    for pair in records.windows(2) {
        let (before, after) = (&pair[0].term, &pair[1].term);
        assert!(after.started_ms >= before.started_ms);
        if after.started_ms > before.ends_ms {
            late.push((after.number, after.started_ms - before.ends_ms));
        }
    }
    assert!(
        late.is_empty(),
        "successors that took office after their predecessor's term ended (term, ms late): {late:?}"
    );
}

/// sleepCycle + alarmClock + selfChk/stayAwake: idle brokers other than the Pehredar go
/// dormant with an alarm, run their sleep and wake hooks, wake at the alarm, check in and
/// sleep again (a later alarm); a stay-awake broker never sleeps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_brokers_sleep_wake_at_their_alarm_and_sleep_again() {
    let hooks = TempDir::new("pehra-hooks");
    let log = hooks.path().join("hooks.log");
    let on_sleep = format!("echo sleep >> {}", log.display());
    let on_wake = format!("echo wake >> {}", log.display());
    let c = start_cluster(
        "pehra-sleep",
        LONG_TERMS,
        4,
        &[
            (1, &["--on-sleep", &on_sleep, "--on-wake", &on_wake]),
            (2, &["--on-sleep", &on_sleep, "--on-wake", &on_wake]),
            (3, &["--on-sleep", &on_sleep, "--on-wake", &on_wake]),
            (4, &["--stay-awake"]),
        ],
    );
    let zk = c.zk().await;
    let asleep = all_asleep(&zk).await;
    let pehredar = asleep.pehredar().unwrap().to_string();
    assert_ne!(pehredar, "", "a Pehredar is in office");
    assert_eq!(asleep.role("broker-4"), Some(NodeRole::Awake), "stay-awake");
    let sleepers: Vec<String> = asleep
        .nodes
        .values()
        .filter(|s| s.role == NodeRole::Dormant)
        .map(|s| s.node.clone())
        .collect();
    assert!(!sleepers.is_empty());
    let first_alarm: BTreeMap<String, u64> = sleepers
        .iter()
        .map(|n| {
            (
                n.clone(),
                asleep.nodes[n]
                    .next_alarm_ms
                    .expect("a dormant node has an alarm"),
            )
        })
        .collect();
    // Each sleeper wakes at its alarm, checks in with the Pehredar, and sleeps again
    // with a later alarm; the stay-awake broker is still awake after that.
    let later = wait_for(
        &zk,
        Duration::from_secs(4 * ALARM_MS / 1000 + 10),
        "a second sleep after the alarm",
        |v| {
            first_alarm.iter().all(|(n, a)| {
                v.nodes.get(n).is_some_and(|s| {
                    s.role == NodeRole::Dormant && s.next_alarm_ms.is_some_and(|b| b > *a)
                })
            })
        },
    )
    .await;
    assert_eq!(later.role("broker-4"), Some(NodeRole::Awake), "stay-awake");
    assert_eq!(later.pehredar(), Some(pehredar.as_str()));
    // The sleep hook ran once per sleeper at least (the alarm's brief check-in is not a
    // wake: the hooks mark full sleeps and wakes).
    let sleeps = hook_lines(&log, "sleep");
    assert!(sleeps >= sleepers.len(), "sleep hooks: {sleeps}");
    // A wakeUpAll (the admin disabling PEHRA) wakes them: each runs its wake hook.
    let zk_arg = c.zk_addr.to_string();
    let key = key_file(&c).to_str().unwrap().to_string();
    let (code, out, err) = pehra(&[
        "pehra",
        "disable",
        "--zookeeper",
        &zk_arg,
        "--admin-key",
        &key,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    wait_for(&zk, Duration::from_secs(10), "every sleeper awake", |v| {
        sleepers
            .iter()
            .all(|n| v.role(n) != Some(NodeRole::Dormant))
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while hook_lines(&log, "wake") < sleepers.len() {
        assert!(
            Instant::now() < deadline,
            "wake hooks: {:?}",
            std::fs::read_to_string(&log)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How many lines of the hook log say `word`.
fn hook_lines(log: &std::path::Path, word: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| *l == word)
        .count()
}

/// alarmClock when the Pehredar dies: the dormant brokers wake within one alarm interval
/// of its death and elect a new Pehredar among themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_pehredar_wakes_the_sleepers_within_one_alarm_and_a_new_one_is_elected() {
    let mut c = start_cluster("pehra-lost", LONG_TERMS, 3, &[]);
    let zk = c.zk().await;
    let asleep = all_asleep(&zk).await;
    let dead = asleep.pehredar().unwrap().to_string();
    let generation = asleep.state.wake_generation;
    let sleepers: Vec<String> = asleep
        .nodes
        .keys()
        .filter(|n| **n != dead)
        .cloned()
        .collect();
    // SIGSTOP: it neither answers check-ins nor closes its session.
    let pid = c.brokers[&broker_id(&dead)].child.id();
    unsafe_kill(pid, "STOP");
    let died = Instant::now();
    let mut woke: BTreeMap<String, Duration> = BTreeMap::new();
    wait_for(&zk, Duration::from_secs(20), "every sleeper awake", |v| {
        for n in &sleepers {
            if !woke.contains_key(n) && v.role(n).is_some_and(|r| r != NodeRole::Dormant) {
                woke.insert(n.clone(), died.elapsed());
            }
        }
        woke.len() == sleepers.len()
    })
    .await;
    let limit = Duration::from_millis(ALARM_MS) + Duration::from_millis(500);
    for (n, after) in &woke {
        assert!(
            *after <= limit,
            "{n} woke {after:?} after the Pehredar died (alarm {ALARM_MS} ms)"
        );
    }
    let after = wait_for(
        &zk,
        Duration::from_secs(20),
        "a new Pehredar in office",
        |v| v.pehredar().is_some_and(|p| p != dead) && v.state.next.is_none(),
    )
    .await;
    assert!(sleepers.contains(&after.pehredar().unwrap().to_string()));
    assert!(after.state.wake_generation > generation);
    assert_eq!(after.state.wake_reason, Some(WakeReason::PehredarLost));
    unsafe_kill(pid, "CONT");
    c.kill_broker(broker_id(&dead));
}

/// wakeUpAll + disablePehra: a produce (acks=all) to a partition whose leader sleeps is
/// held by the Pehredar, everyone is woken, the produce is acknowledged once committed
/// and is readable; the cluster stays out of PEHRA mode until idle, then sleeps again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_produce_to_a_sleeping_cluster_is_acknowledged_and_readable() {
    let c = start_cluster("pehra-wake", LONG_TERMS, 3, &[]);
    let client = ClusterClient::connect(c.zk_addr).await.unwrap();
    client.create_topic("sensors", 3, 3).await.unwrap();
    client
        .wait_for_leaders("sensors", Duration::from_secs(20))
        .await
        .unwrap();
    let zk = c.zk().await;
    let asleep = all_asleep(&zk).await;
    let pehredar = broker_id(asleep.pehredar().unwrap());
    let generation = asleep.state.wake_generation;
    // A partition led by a sleeping broker.
    let meta = client.refresh().await.unwrap();
    let partition = (0..3)
        .find(|p| {
            meta.topics["sensors"].partitions[p]
                .leader
                .is_some_and(|l| l != pehredar)
        })
        .expect("a partition led by a sleeper");
    // The producer sends it to the Pehredar, which holds it and forwards it.
    let pehredar_addr = c.addrs[&pehredar];
    assert_eq!(
        meta.produce_target("sensors", partition).unwrap(),
        pehredar_addr
    );
    let before = client.retry_stats();
    let offset = client
        .produce(
            "sensors",
            partition,
            &[record("while the cluster slept".into())],
            Acks::All,
            None,
        )
        .await
        .expect("the produce is acknowledged")
        .expect("acks all is answered")
        .base_offset;
    let fetched = client
        .fetch("sensors", partition, offset, 64 * 1024)
        .await
        .unwrap();
    let records = records_from(&fetched, offset).unwrap();
    assert_eq!(records[0].1.value, b"while the cluster slept");
    let after = client.retry_stats();
    assert_eq!(
        (after.not_leader, after.unavailable, after.no_answer),
        (before.not_leader, before.unavailable, before.no_answer),
        "the held produce was answered at the first attempt"
    );
    // The coordinator's wakeUpAll follows as a backstop, asynchronously: the held
    // produce may be answered first (it no longer reads the zookeeper on its way).
    let woken = wait_for(
        &zk,
        Duration::from_secs(10),
        "the coordinator's wakeUpAll for the traffic",
        |v| v.state.wake_generation > generation,
    )
    .await
    .state;
    assert_eq!(woken.wake_reason, Some(WakeReason::Traffic));
    // disablePehra by traffic ends once everyone is idle: they sleep again.
    wait_for(
        &zk,
        Duration::from_secs(30),
        "asleep again after the traffic",
        |v| !v.state.traffic_awake && v.all_asleep_but_pehredar(),
    )
    .await;
}

/// An idle leader is not woken by its followers' fetches, dormant or awake: the awake
/// brokers (the Pehredar, `--stay-awake` ones) follow every partition they hold, and a
/// leader holds a follower's fetch until it appends (30 s at most). Held for 400 ms, as
/// before, each awake follower woke each of its leaders (dormant ones too) two and a half
/// times a second. A produce still wakes a dormant leader, and the held fetches bring
/// its record to the followers at once (acks=all is answered).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_leaders_hold_their_followers_fetches_dormant_or_awake() {
    // Four brokers, 3 and 4 never sleeping: whoever is Pehredar, at least two are awake
    // and one is dormant. Alarms far apart: no alarm wakes a sleeper inside the window.
    let ports: BTreeMap<u32, String> = (1..=4)
        .map(|id| (id, free_tcp_port().to_string()))
        .collect();
    let flags: BTreeMap<u32, Vec<&str>> = ports
        .iter()
        .map(|(&id, port)| {
            let mut f = vec!["--alarm-interval-ms", "60000", "--metrics-listen", port];
            if id >= 3 {
                f.push("--stay-awake");
            }
            (id, f)
        })
        .collect();
    let extra: Vec<(u32, &[&str])> = flags.iter().map(|(&id, f)| (id, f.as_slice())).collect();
    let c = start_cluster("pehra-idle-leaders", LONG_TERMS, 4, &extra);
    let client = ClusterClient::connect(c.zk_addr).await.unwrap();
    client.create_topic("held", 4, 3).await.unwrap();
    client
        .wait_for_leaders("held", Duration::from_secs(20))
        .await
        .unwrap();
    let zk = c.zk().await;
    let asleep = all_asleep(&zk).await;
    let dormant: BTreeSet<u32> = asleep
        .nodes
        .values()
        .filter(|s| s.role == NodeRole::Dormant)
        .map(|s| broker_id(&s.node))
        .collect();
    let meta = client.refresh().await.unwrap();
    let leaders: BTreeMap<u32, u32> = (0..4)
        .filter_map(|p| Some((p, meta.topics["held"].partitions[&p].leader?)))
        .collect();
    assert!(
        leaders.values().any(|l| dormant.contains(l)),
        "a dormant broker leads a partition (dormant: {dormant:?}, leaders: {leaders:?})"
    );
    let answered = |id: u32| {
        let addr: SocketAddr = format!("127.0.0.1:{}", ports[&id]).parse().unwrap();
        scrape_value(addr, "pehra_broker_replica_fetches_answered_total", &[])
    };
    let all_answered = || (1..=4).map(answered).sum::<f64>();
    // An observation window, not a wait for an event: what matters is what does not
    // happen in it. Held for 400 ms, the awake followers' fetches were answered about 60
    // times in three seconds. Held 30 s (or to a dormant leader's alarm), each awake
    // follower's fetch from each leader is answered at most once in the window (if its
    // hold happens to end there, on a slow machine): 3 awake followers x 3 leaders.
    let pairs = 3.0 * 3.0;
    let before = all_answered();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = all_answered() - before;
    eprintln!("fetches answered by idle leaders in 3 s: {during}");
    assert!(
        during <= pairs,
        "idle leaders answered {during} fetches in 3 s (dormant: {dormant:?}, leaders: {leaders:?})"
    );
    let view = wait_for(&zk, Duration::from_secs(1), "a view", |_| true).await;
    for id in &dormant {
        assert_eq!(
            view.role(&format!("broker-{id}")),
            Some(NodeRole::Dormant),
            "broker {id} slept through the window"
        );
    }
    // A produce to every partition, dormant leaders' too: acknowledged by all in sync.
    for (&partition, leader) in &leaders {
        let value = format!("to partition {partition} led by {leader}");
        let place = client
            .produce("held", partition, &[record(value.clone())], Acks::All, None)
            .await
            .expect("the produce is acknowledged")
            .expect("acks all is answered");
        let fetched = client
            .fetch("held", partition, place.base_offset, 64 * 1024)
            .await
            .unwrap();
        let records = records_from(&fetched, place.base_offset).unwrap();
        assert_eq!(records[0].1.value, value.as_bytes());
    }
}

/// The quiet lease: an idle broker that stays awake renews its zookeeper session once per
/// stretch instead of heartbeating, so a dead one keeps its partitions past its session
/// timeout, until a producer finds it silent: the producer reports it, the zookeeper's
/// pings go unanswered, and the partition gets a new leader in about two seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_leader_that_died_is_replaced_once_a_producer_finds_it_silent() {
    let awake: &[&str] = &["--stay-awake"];
    let mut c = start_cluster(
        "pehra-quiet",
        LONG_TERMS,
        3,
        &[(1, awake), (2, awake), (3, awake)],
    );
    let client = ClusterClient::connect(c.zk_addr).await.unwrap();
    client.create_topic("quiet", 3, 3).await.unwrap();
    client
        .wait_for_leaders("quiet", Duration::from_secs(20))
        .await
        .unwrap();
    let zk = c.zk().await;
    let view = wait_for(&zk, Duration::from_secs(30), "every broker idle", |v| {
        v.pehredar().is_some() && v.nodes.len() == 3 && v.nodes.values().all(|s| s.idle)
    })
    .await;
    let pehredar = broker_id(view.pehredar().unwrap());
    let meta = client.refresh().await.unwrap();
    let (partition, leader) = (0..3)
        .find_map(|p| {
            let leader = meta.topics["quiet"].partitions[&p].leader?;
            (leader != pehredar).then_some((p, leader))
        })
        .expect("a partition led by a broker that is not the Pehredar");
    // The stretch is the heartbeat right after the idle status; nothing marks it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    c.kill_broker(leader);
    // Twice the session timeout: a heartbeating broker's session would be gone, and
    // its partition led by another.
    tokio::time::sleep(2 * Duration::from_millis(SESSION_MS.parse().unwrap())).await;
    let (data, _) = zk
        .get_data(&cluster::partition_path("quiet", partition))
        .await
        .unwrap();
    let still: wire::PartitionMetadata = wire::decode(&data).unwrap();
    assert_eq!(
        still.leader,
        Some(leader),
        "the quiet lease held its session"
    );
    let asked = Instant::now();
    client
        .produce(
            "quiet",
            partition,
            &[record("after".into())],
            Acks::All,
            None,
        )
        .await
        .expect("the produce is acknowledged by a new leader")
        .expect("acks all is answered");
    eprintln!(
        "produce to the dead quiet leader answered after {:?}",
        asked.elapsed()
    );
    assert!(
        client.retry_stats().suspected >= 1,
        "{:?}",
        client.retry_stats()
    );
    let meta = client.refresh().await.unwrap();
    let now_leader = meta.topics["quiet"].partitions[&partition].leader;
    assert!(now_leader.is_some() && now_leader != Some(leader));
}

/// wakeUpAll straight from the Pehredar: `POST /pehra/wake` (which the Pehredar sends to
/// every broker when it holds a produce, so the leader's followers need not wait for the
/// coordinator's round through the zookeeper) wakes a sleeper at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sleeper_wakes_on_the_pehredars_wake_call() {
    let c = start_cluster("pehra-wake-call", LONG_TERMS, 3, &[]);
    let zk = c.zk().await;
    let asleep = all_asleep(&zk).await;
    let pehredar = broker_id(asleep.pehredar().unwrap());
    let sleeper = (1..=3).find(|&b| b != pehredar).unwrap();
    let endpoint = Endpoint::bind(
        "127.0.0.1:0".parse().unwrap(),
        Config::default(),
        Router::new(),
    )
    .await
    .unwrap();
    let response = endpoint
        .handle()
        .request(c.addrs[&sleeper], Request::post("pehra/wake"))
        .await
        .unwrap();
    assert!(response.code().is_success(), "{:?}", response.code());
    let name = format!("broker-{sleeper}");
    wait_for(&zk, Duration::from_secs(10), "the sleeper awake", |v| {
        v.role(&name) == Some(NodeRole::Awake)
    })
    .await;
}

/// A PEHRA term handover with a produce held: a producer whose metadata was read while
/// the cluster slept sends its produces to the Pehredar; after a re-election the old
/// Pehredar, out of office, still gets them (the producer has seen no error that would
/// make it re-read the metadata). It forwards them to the leader as it did in office,
/// instead of refusing them with `not_leader` (which cost every producer a retry after
/// an error in `bench/handover.sh`'s pehredar row).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_produce_sent_to_the_pehredar_that_just_left_office_is_forwarded_not_refused() {
    let c = start_cluster("pehra-left-office", LONG_TERMS, 3, &[]);
    let client = ClusterClient::connect(c.zk_addr).await.unwrap();
    client.create_topic("sensors", 3, 3).await.unwrap();
    client
        .wait_for_leaders("sensors", Duration::from_secs(20))
        .await
        .unwrap();
    let zk = c.zk().await;
    let asleep = all_asleep(&zk).await;
    let old = asleep.pehredar().unwrap().to_string();
    let pehredar = broker_id(&old);
    let meta = client.refresh().await.unwrap();
    let partition = (0..3)
        .find(|p| {
            meta.topics["sensors"].partitions[p]
                .leader
                .is_some_and(|l| l != pehredar)
        })
        .expect("a partition led by a sleeper");
    assert_eq!(
        meta.produce_target("sensors", partition).unwrap(),
        c.addrs[&pehredar],
        "the producer's metadata routes to the Pehredar"
    );
    // The term handover: a re-election without the Pehredar.
    let request = wire::PehraRequest::Reelect {
        exclude: vec![old.clone()],
    };
    zk.create(
        &format!("{}/r-", cluster::PEHRA_REQUESTS),
        &wire::encode(&request).unwrap(),
        pehra_zookeeper::CreateMode::PersistentSequential,
    )
    .await
    .unwrap();
    wait_for(
        &zk,
        Duration::from_secs(20),
        "the old Pehredar out of office",
        |v| {
            v.pehredar().is_some_and(|p| p != old)
                && v.nodes.get(&old).is_some_and(|s| s.office.is_none())
        },
    )
    .await;
    // The producer's metadata still names the old Pehredar.
    assert_eq!(
        client
            .metadata()
            .produce_target("sensors", partition)
            .unwrap(),
        c.addrs[&pehredar]
    );
    let before = client.retry_stats();
    let offset = client
        .produce(
            "sensors",
            partition,
            &[record("held across the term handover".into())],
            Acks::All,
            Some((77, 0)),
        )
        .await
        .expect("the produce is acknowledged")
        .expect("acks all is answered")
        .base_offset;
    let after = client.retry_stats();
    assert_eq!(
        (after.not_leader, after.unavailable, after.no_answer),
        (before.not_leader, before.unavailable, before.no_answer),
        "the old Pehredar forwarded it: no refusal, no retry"
    );
    // Answered through a Pehredar, the producer re-reads the metadata (in the
    // background, so that the read does not delay the answer).
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.metadata().pehredar == Some(pehredar) {
        assert!(
            Instant::now() < deadline,
            "answered through a Pehredar, the producer did not re-read the metadata"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let fetched = client
        .fetch("sensors", partition, offset, 64 * 1024)
        .await
        .unwrap();
    let records = records_from(&fetched, offset).unwrap();
    assert_eq!(records[0].1.value, b"held across the term handover");
}

/// enablePehra/disablePehra by the admin: refused without the key, with a wrong key or
/// replayed (4.01, nothing changes); with the key, everyone is woken first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_admin_key_switches_pehra_and_a_replay_is_refused() {
    let c = start_cluster("pehra-admin", LONG_TERMS, 3, &[]);
    let zk = c.zk().await;
    let asleep = all_asleep(&zk).await;
    let zk_arg = c.zk_addr.to_string();
    let wrong = c.dir.path().join("wrong.key");
    std::fs::write(&wrong, "not-the-admin-key-0123456789").unwrap();
    let (code, _, err) = pehra(&[
        "pehra",
        "disable",
        "--zookeeper",
        &zk_arg,
        "--admin-key",
        wrong.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("4.01"), "{err}");
    let (code, _, err) = pehra(&[
        "pehra",
        "disable",
        "--zookeeper",
        &zk_arg,
        "--admin-key",
        "/nonexistent/key",
    ]);
    assert_eq!(code, 1, "{err}");
    let unchanged = state(&zk).await.unwrap();
    assert!(unchanged.enabled);
    assert_eq!(unchanged.wake_generation, asleep.state.wake_generation);

    // A signed change, sent twice: the second is a replay.
    let key = pehra_cluster::admin::read_key_file(&key_file(&c)).unwrap();
    let change = pehra_cluster::admin::sign_mode_change(&key, false, now_ms());
    let endpoint = Endpoint::bind(
        "127.0.0.1:0".parse().unwrap(),
        Config::default(),
        Router::new(),
    )
    .await
    .unwrap();
    let send = |change: &wire::ModeChange| {
        Request::post("pehra/mode")
            .with_payload(wire::encode(change).unwrap())
            .with_content_format(CONTENT_FORMAT_CBOR)
    };
    let first = endpoint
        .handle()
        .request(c.zk_addr, send(&change))
        .await
        .unwrap();
    assert!(first.code().is_success(), "{:?}", first.code());
    let awake = wait_for(
        &zk,
        Duration::from_secs(10),
        "everyone awake, PEHRA off",
        |v| !v.state.enabled && v.nodes.values().all(|s| s.role != NodeRole::Dormant),
    )
    .await;
    assert!(awake.state.wake_generation > asleep.state.wake_generation);
    assert_eq!(awake.state.wake_reason, Some(WakeReason::Admin));
    let (admin, _) = zk.get_data(PEHRA_ADMIN).await.unwrap();
    let admin: AdminSwitch = wire::decode(&admin).unwrap();
    assert!(!admin.enabled);

    let replay = endpoint
        .handle()
        .request(c.zk_addr, send(&change))
        .await
        .unwrap();
    assert_eq!(replay.code(), pehra_shared::coap::Code::UNAUTHORIZED);
    let mut forged = pehra_cluster::admin::sign_mode_change(&key, true, now_ms());
    forged.enabled = false;
    forged.issued_ms += 1;
    let forged_reply = endpoint
        .handle()
        .request(c.zk_addr, send(&forged))
        .await
        .unwrap();
    assert_eq!(forged_reply.code(), pehra_shared::coap::Code::UNAUTHORIZED);
    let (after, _) = zk.get_data(PEHRA_ADMIN).await.unwrap();
    assert_eq!(
        wire::decode::<AdminSwitch>(&after).unwrap(),
        admin,
        "nothing changed"
    );

    // Disabled: nobody sleeps, even idle.
    let gen = state(&zk).await.unwrap().wake_generation;
    // Nothing to await for an event that must not happen: watch three idle periods.
    tokio::time::sleep(Duration::from_millis(3 * 500)).await;
    let still = statuses(&zk).await;
    assert!(
        still.values().all(|s| s.role != NodeRole::Dormant),
        "{still:#?}"
    );

    // The CLI with the right key: enabled, everyone woken first, then they sleep again.
    let key_path = key_file(&c);
    let key_arg = key_path.to_str().unwrap();
    let (code, out, err) = pehra(&[
        "pehra",
        "enable",
        "--zookeeper",
        &zk_arg,
        "--admin-key",
        key_arg,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let enabled = wait_for(
        &zk,
        Duration::from_secs(30),
        "asleep again after enable",
        |v| v.state.enabled && v.all_asleep_but_pehredar(),
    )
    .await;
    assert!(enabled.state.wake_generation > gen);
    let (code, out, _) = pehra(&["pehra", "status", "--zookeeper", &zk_arg]);
    assert_eq!(code, 0);
    assert!(
        out.contains("enabled: idle nodes sleep") && out.contains("dormant"),
        "{out}"
    );
}

/// maintenance: every broker restarts in turn (same PID), the Pehredar last after a new
/// one took office, while a producer with acks=all keeps going: nothing it sent fails
/// and everything is readable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_maintenance_restarts_every_broker_pehredar_last_while_serving() {
    let c = start_cluster("pehra-maint", LONG_TERMS, 3, &[]);
    let client = std::sync::Arc::new(ClusterClient::connect(c.zk_addr).await.unwrap());
    client.create_topic("jobs", 2, 3).await.unwrap();
    client
        .wait_for_leaders("jobs", Duration::from_secs(20))
        .await
        .unwrap();
    let zk = c.zk().await;
    let before = wait_for(&zk, Duration::from_secs(30), "a Pehredar in office", |v| {
        v.pehredar().is_some() && v.state.next.is_none()
    })
    .await;
    let pehredar = before.pehredar().unwrap().to_string();
    let pids: BTreeMap<u32, u32> = c
        .brokers
        .iter()
        .map(|(id, b)| (*id, b.child.id()))
        .collect();

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let producer = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut failures = Vec::new();
            let mut i = 0u64;
            while !*stop_rx.borrow() {
                let partition = (i % 2) as u32;
                let value = format!("job-{i}");
                match client
                    .produce("jobs", partition, &[record(value.clone())], Acks::All, None)
                    .await
                {
                    Ok(Some(r)) => acked.push((partition, r.base_offset, value)),
                    Ok(None) => failures.push("no answer to acks=all".into()),
                    Err(e) => failures.push(e.to_string()),
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (acked, failures)
        })
    };
    let zk_arg = c.zk_addr.to_string();
    let maintenance = tokio::task::spawn_blocking(move || {
        pehra(&[
            "cluster",
            "maintenance",
            "--zookeeper",
            &zk_arg,
            "--timeout-s",
            "60",
        ])
    });
    let (code, out, err) = maintenance.await.unwrap();
    stop_tx.send(true).unwrap();
    let (acked, failures) = producer.await.unwrap();
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let order: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_suffix(": maintenance ordered"))
        .collect();
    assert_eq!(order.len(), 3, "{out}");
    assert_eq!(
        *order.last().unwrap(),
        pehredar,
        "the Pehredar goes last: {out}"
    );
    let new_office = out.find("took office as Pehredar").expect(&out);
    assert!(
        new_office < out.rfind(": maintenance ordered").unwrap(),
        "{out}"
    );
    assert!(
        failures.is_empty(),
        "produces failed during maintenance: {failures:?}"
    );
    assert!(!acked.is_empty());
    for (id, b) in &c.brokers {
        assert_eq!(b.child.id(), pids[id], "restarted in place");
    }
    // Everything acknowledged is readable.
    for partition in 0..2u32 {
        let want: Vec<&(u32, u64, String)> = acked.iter().filter(|a| a.0 == partition).collect();
        let Some(first) = want.first() else { continue };
        let mut got = Vec::new();
        let mut from = first.1;
        while got.len() < want.len() {
            let fetched = client
                .fetch("jobs", partition, from, 64 * 1024)
                .await
                .unwrap();
            let records = records_from(&fetched, from).unwrap();
            assert!(!records.is_empty(), "partition {partition} ends at {from}");
            from = records.last().unwrap().0 + 1;
            got.extend(
                records
                    .into_iter()
                    .map(|(o, r)| (o, String::from_utf8(r.value).unwrap())),
            );
        }
        for (_, offset, value) in want {
            assert!(
                got.contains(&(*offset, value.clone())),
                "{value} at {offset} lost"
            );
        }
    }
    let (done, _) = zk
        .get_data(&cluster::pehra_maintenance_path(&pehredar))
        .await
        .unwrap();
    let done: wire::Maintenance = wire::decode(&done).unwrap();
    assert_eq!(done.state, wire::MaintenanceState::Done);
}

/// allDown: with every broker down, the first back is made temporary Pehredar at once,
/// and an ordinary election follows once all known brokers are back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_all_went_down_the_first_back_is_temporary_pehredar_until_all_return() {
    let mut c = start_cluster("pehra-alldown", LONG_TERMS, 3, &[]);
    let zk = c.zk().await;
    wait_for(
        &zk,
        Duration::from_secs(30),
        "a Pehredar and three known nodes",
        |v| v.pehredar().is_some() && v.state.known.len() == 3 && v.state.next.is_none(),
    )
    .await;
    for id in 1..=3 {
        c.kill_broker(id);
    }
    wait_for(&zk, Duration::from_secs(20), "every status gone", |v| {
        v.nodes.is_empty()
    })
    .await;
    c.start_broker(2);
    let temporary = wait_for(
        &zk,
        Duration::from_secs(20),
        "broker-2 temporary Pehredar",
        |v| {
            v.state.temporary
                && v.pehredar() == Some("broker-2")
                && v.role("broker-2") == Some(NodeRole::Pehredar)
        },
    )
    .await;
    let temp_term = temporary.state.term.clone().unwrap().number;
    c.start_broker(1);
    c.start_broker(3);
    let elected = wait_for(&zk, Duration::from_secs(30), "an ordinary election", |v| {
        !v.state.temporary
            && v.state.next.is_none()
            && v.state.term.as_ref().is_some_and(|t| t.number > temp_term)
    })
    .await;
    let number = elected.state.term.unwrap().number;
    let records = term_records(&zk).await;
    let temp = records.iter().find(|r| r.term.number == temp_term).unwrap();
    assert!(temp.temporary && temp.term.pehredar == "broker-2");
    let election = records.iter().find(|r| r.term.number == number).unwrap();
    assert!(!election.temporary);
    let candidates: BTreeSet<&str> = election.candidates.iter().map(String::as_str).collect();
    assert_eq!(
        candidates,
        BTreeSet::from(["broker-1", "broker-2", "broker-3"])
    );
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}
