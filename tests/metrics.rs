//! `--metrics-listen`: a real zookeeper and a real broker serve Prometheus/OpenMetrics
//! text over HTTP; after a produce and a consume, the counters say what was done.

mod common;

use common::metrics::{free_tcp_port, parse, scrape, value};
use common::{
    free_udp_port, pehra, pehra_with_input, spawn_ready, BrokerProcess, TempDir, Zookeeper,
};
use pehra_broker::client::ClusterClient;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

/// The address in a "… metrics on http://ADDR/metrics" startup line.
fn metrics_addr(line: &str) -> SocketAddr {
    let rest = line.split("http://").nth(1).expect("an http:// address");
    rest.trim_end_matches("/metrics")
        .trim()
        .parse()
        .expect("an address")
}

/// A zookeeper and broker 1, each serving metrics.
struct Metered {
    _zk: Zookeeper,
    _broker: BrokerProcess,
    zk_addr: SocketAddr,
    broker_addr: SocketAddr,
    zk_metrics: SocketAddr,
    broker_metrics: SocketAddr,
    /// Last: removed once the processes above are stopped (fields drop in order;
    /// removed first, the brokers still running wrote into it again and left it).
    _dir: TempDir,
}

fn metered(name: &str) -> Metered {
    let dir = TempDir::new(name);
    let zk_addr: SocketAddr = format!("127.0.0.1:{}", free_udp_port()).parse().unwrap();
    let args: Vec<String> = [
        "zookeeper",
        "--listen",
        &zk_addr.to_string(),
        "--data-dir",
        &dir.path().join("zookeeper").display().to_string(),
        "--metrics-listen",
        "127.0.0.1:0",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let (child, line) = spawn_ready(&args, "metrics on http://");
    let zk_metrics = metrics_addr(&line);
    let _zk = Zookeeper {
        child,
        addr: zk_addr,
        startup_line: line,
    };

    let broker_addr: SocketAddr = format!("127.0.0.1:{}", free_udp_port()).parse().unwrap();
    let broker_dir = dir.path().join("broker-1");
    let args: Vec<String> = [
        "broker",
        "--id",
        "1",
        "--listen",
        &broker_addr.to_string(),
        "--zookeeper",
        &zk_addr.to_string(),
        "--data-dir",
        &broker_dir.display().to_string(),
        "--metrics-listen",
        "127.0.0.1:0",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let (child, line) = spawn_ready(&args, "metrics on http://");
    let broker_metrics = metrics_addr(&line);
    let _broker = BrokerProcess {
        child,
        id: 1,
        addr: broker_addr,
        dir: broker_dir,
        zookeeper: zk_addr,
    };
    Metered {
        _dir: dir,
        _zk,
        _broker,
        zk_addr,
        broker_addr,
        zk_metrics,
        broker_metrics,
    }
}

#[test]
fn zookeeper_and_broker_serve_metrics_that_count_what_was_done() {
    let m = metered("metrics");
    let (zk_addr, zk_metrics, broker_metrics) = (m.zk_addr, m.zk_metrics, m.broker_metrics);
    assert!(zk_metrics.ip().is_loopback() && broker_metrics.ip().is_loopback());

    let z = zk_addr.to_string();
    let (code, _, err) = pehra(&["topic", "create", "readings", "-p", "1", "--zookeeper", &z]);
    assert_eq!(code, 0, "{err}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = ClusterClient::connect(zk_addr).await.unwrap();
        client
            .wait_for_leaders("readings", Duration::from_secs(20))
            .await
            .unwrap();
    });
    let (code, _, err) = pehra_with_input(
        &["produce", "readings", "--zookeeper", &z],
        b"r1\nr2\nr3\nr4\nr5\n",
    );
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = pehra(&[
        "consume",
        "readings",
        "--group",
        "g1",
        "--from-beginning",
        "--zookeeper",
        &z,
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "r1\nr2\nr3\nr4\nr5\n");

    let (status, headers, body) = scrape(broker_metrics);
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(
        headers
            .to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text"),
        "{headers}"
    );
    let broker = parse(&body);
    let topic = [("topic", "readings")];
    assert!(
        value(&broker, "pehra_broker_records_in_total", &topic) >= 5.0,
        "{body}"
    );
    assert!(value(&broker, "pehra_broker_bytes_in_total", &topic) > 0.0);
    assert!(
        value(&broker, "pehra_broker_records_out_total", &topic) >= 5.0,
        "{body}"
    );
    assert!(value(&broker, "pehra_broker_bytes_out_total", &topic) > 0.0);
    assert!(value(&broker, "pehra_broker_produce_latency_seconds_count", &[]) >= 1.0);
    assert!(value(&broker, "pehra_broker_fetch_latency_seconds_count", &[]) >= 1.0);
    assert_eq!(value(&broker, "pehra_broker_leader_partitions", &[]), 1.0);
    assert_eq!(
        value(&broker, "pehra_broker_under_replicated_partitions", &[]),
        0.0
    );
    assert_eq!(value(&broker, "pehra_broker_offline_partitions", &[]), 0.0);
    assert_eq!(
        value(&broker, "pehra_broker_pehra_state", &[("state", "awake")]),
        1.0
    );
    // Seed 002: its Node Health Index (from the system's load here), in permille.
    let nhi = value(&broker, "pehra_broker_health_index_permille", &[]);
    assert!((0.0..=1000.0).contains(&nhi), "{body}");
    let lag = [("group", "g1"), ("topic", "readings"), ("partition", "0")];
    assert_eq!(
        value(&broker, "pehra_broker_consumer_lag", &lag),
        0.0,
        "g1 read everything"
    );
    let names: BTreeSet<&str> = broker.iter().map(|(n, _, _)| n.as_str()).collect();
    for name in [
        "pehra_broker_isr_shrinks_total",
        "pehra_broker_wakeups_total",
        "pehra_broker_held_produces_total",
    ] {
        assert!(names.contains(name), "{name} missing:\n{body}");
    }

    // Two more records: the group is two behind.
    let (code, _, err) = pehra(&[
        "produce",
        "readings",
        "-m",
        "r6",
        "-m",
        "r7",
        "--zookeeper",
        &z,
    ]);
    assert_eq!(code, 0, "{err}");
    let broker = parse(&scrape(broker_metrics).2);
    assert_eq!(value(&broker, "pehra_broker_consumer_lag", &lag), 2.0);

    let (status, _, body) = scrape(zk_metrics);
    assert_eq!(status, "HTTP/1.1 200 OK");
    let zk = parse(&body);
    assert!(
        value(&zk, "pehra_zookeeper_sessions", &[]) >= 1.0,
        "the broker's session:\n{body}"
    );
    assert!(value(&zk, "pehra_zookeeper_znodes", &[]) > 1.0);
    assert!(value(&zk, "pehra_zookeeper_requests_total", &[("kind", "write")]) >= 1.0);
    assert!(
        value(
            &zk,
            "pehra_zookeeper_requests_total",
            &[("kind", "get_data")]
        ) >= 1.0
    );
    assert!(value(&zk, "pehra_zookeeper_wal_bytes_total", &[]) > 0.0);
    assert!(
        value(
            &zk,
            "pehra_zookeeper_lease_seconds_count",
            &[("dormant", "false")]
        ) >= 1.0
    );
    assert!(
        value(&zk, "pehra_zookeeper_watches", &[]) >= 1.0,
        "the broker watches its partitions"
    );
}

#[test]
fn metrics_are_off_unless_asked_and_a_bare_port_is_loopback() {
    let (code, out, _) = pehra(&["broker", "--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("--metrics-listen"), "{out}");
    let (code, out, _) = pehra(&["zookeeper", "--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("--metrics-listen"), "{out}");
}

#[test]
fn a_leader_counts_the_isr_shrink_and_the_under_replicated_partition_when_a_follower_dies() {
    let ports = [free_tcp_port(), free_tcp_port()];
    let mut builder = common::TestCluster::builder("metrics-isr").broker_flags(&[
        "--replica-lag-ms",
        "500",
        "--session-timeout-ms",
        "1500",
    ]);
    for (i, port) in ports.iter().enumerate() {
        let listen = format!("127.0.0.1:{port}");
        builder = builder.flags_of(i as u32 + 1, &["--metrics-listen", &listen]);
    }
    let mut cluster = builder.start(2);
    let z = cluster.zk_addr.to_string();
    let (code, _, err) = pehra(&[
        "topic",
        "create",
        "pair",
        "-p",
        "1",
        "-r",
        "2",
        "--zookeeper",
        &z,
    ]);
    assert_eq!(code, 0, "{err}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = ClusterClient::connect(cluster.zk_addr).await.unwrap();
        client
            .wait_for_leaders("pair", Duration::from_secs(20))
            .await
            .unwrap();
    });
    let (code, _, err) = pehra(&[
        "produce",
        "pair",
        "-m",
        "one",
        "--acks",
        "all",
        "--zookeeper",
        &z,
    ]);
    assert_eq!(code, 0, "{err}");
    let scrape_of = |port: u16| parse(&scrape(SocketAddr::from(([127, 0, 0, 1], port))).2);
    let leader = (0..2)
        .find(|&i| value(&scrape_of(ports[i]), "pehra_broker_leader_partitions", &[]) == 1.0)
        .expect("one broker leads the partition");
    // Both replicas in sync first. (With a 500 ms replica lag, a follower slow to open
    // its replica on a loaded machine may have been taken out once already and come
    // back: the count after the death is compared with the count before it.)
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let shrinks_before = loop {
        let samples = scrape_of(ports[leader]);
        if value(&samples, "pehra_broker_under_replicated_partitions", &[]) == 0.0 {
            break value(&samples, "pehra_broker_isr_shrinks_total", &[]);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the follower never joined the in-sync set"
        );
        std::thread::sleep(Duration::from_millis(100)); // polling the endpoint: there is no event to await
    };

    // The follower dies: the leader takes it out of the in-sync set.
    let follower = 1 - leader;
    cluster.kill_broker(follower as u32 + 1);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let samples = scrape_of(ports[leader]);
        let shrinks = value(&samples, "pehra_broker_isr_shrinks_total", &[]);
        let under = value(&samples, "pehra_broker_under_replicated_partitions", &[]);
        if shrinks > shrinks_before && under == 1.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no ISR shrink counted within 20 s (shrinks {shrinks}, under-replicated {under})"
        );
        std::thread::sleep(Duration::from_millis(100)); // polling the endpoint: there is no event to await
    }
}

#[test]
fn concurrent_gets_of_a_large_topic_value_share_one_read_of_the_log() {
    // Issue 12: a flood of GETs of a large publication made the broker read it from the
    // log once per GET, each holding copies of it while waiting (hundreds of MiB). GETs
    // that miss the cache now share one read.
    let m = metered("metrics-gets");
    let z = m.zk_addr.to_string();
    let (code, _, err) = pehra(&["topic", "create", "big", "-p", "1", "--zookeeper", &z]);
    assert_eq!(code, 0, "{err}");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let fetches = || {
        let (_, _, body) = scrape(m.broker_metrics);
        value(
            &parse(&body),
            "pehra_broker_fetch_latency_seconds_count",
            &[],
        )
    };
    let value_bytes: Vec<u8> = (0..60 * 1024).map(|i| (i % 251) as u8).collect();
    let (before, after) = rt.block_on(async {
        use pehra_shared::coap::{Config, Request};
        use pehra_shared::driver::{Endpoint, Router};
        let client = ClusterClient::connect(m.zk_addr).await.unwrap();
        client
            .wait_for_leaders("big", Duration::from_secs(20))
            .await
            .unwrap();
        // One endpoint per GET: a client sends one request at a time to a server
        // (RFC 7252 §4.7, NSTART 1); a flood comes from many ports.
        let mut endpoints = Vec::new();
        for _ in 0..200 {
            let bind = Endpoint::bind(
                "127.0.0.1:0".parse().unwrap(),
                Config::default(),
                Router::new(),
            );
            endpoints.push(bind.await.unwrap());
        }
        let handle = endpoints[0].handle();
        let put = handle
            .request(
                m.broker_addr,
                Request::put("ps/data/big")
                    .with_payload(value_bytes.clone())
                    .with_content_format(42),
            )
            .await
            .unwrap();
        assert!(put.code().is_success(), "{:?}", put.code());
        let before = fetches();
        let gets = endpoints.iter().map(|endpoint| {
            let handle = endpoint.handle();
            let to = m.broker_addr;
            tokio::spawn(async move { handle.request(to, Request::get("ps/data/big")).await })
        });
        let mut failed = std::collections::BTreeMap::<String, usize>::new();
        for get in futures_join(gets.collect()).await {
            let answer = get.unwrap().unwrap();
            if !answer.code().is_success() || answer.payload().len() != 60 * 1024 {
                let what = format!(
                    "{:?} {}",
                    answer.code(),
                    String::from_utf8_lossy(answer.payload())
                );
                *failed.entry(what).or_default() += 1;
            }
        }
        assert!(failed.is_empty(), "{failed:#?}");
        (before, fetches())
    });
    // Each read of the value is two fetches (the end, then the last record): 200 GETs
    // that each read it make 400. Shared, it is a few dozen here (one read per batch of
    // GETs that arrive while one is in progress); half of 400 leaves room for a slow
    // machine.
    assert!(
        after - before < 200.0,
        "{} log fetches for 200 concurrent GETs",
        after - before
    );
}

/// Awaits every task, in order.
async fn futures_join<T>(
    tasks: Vec<tokio::task::JoinHandle<T>>,
) -> Vec<Result<T, tokio::task::JoinError>> {
    let mut out = Vec::with_capacity(tasks.len());
    for task in tasks {
        out.push(task.await);
    }
    out
}

/// Seed 002's adaptive lease for partition leaders: a broker's session heartbeats carry
/// its health, and the zookeeper grants a critical broker a longer lease than its
/// session timeout (the formula), a healthy one the timeout.
#[test]
fn a_brokers_session_lease_follows_its_health() {
    let ports = [free_tcp_port(), free_tcp_port()];
    let builder = common::TestCluster::builder("metrics-session-lease");
    let healthy = builder.dir().join("healthy.txt");
    let critical = builder.dir().join("critical.txt");
    std::fs::write(&healthy, "cpu=0\n").unwrap();
    let critical_text = "cpu=1000\nmemory=1000\ndisk_io=1000\nfailures=5\n";
    std::fs::write(&critical, critical_text).unwrap();
    let files = [healthy, critical];
    let mut builder = builder.broker_flags(&["--session-timeout-ms", "1500"]);
    for (i, port) in ports.iter().enumerate() {
        let listen = format!("127.0.0.1:{port}");
        builder = builder.flags_of(
            i as u32 + 1,
            &[
                "--metrics-listen",
                &listen,
                "--health-file",
                files[i].to_str().unwrap(),
            ],
        );
    }
    let _cluster = builder.start(2);
    // The formula for the critical one: 1500 ms × (1 + 30 % (critical) − 20 % (full
    // load)), within [timeout, 2 × timeout].
    let sample = pehra_shared::health::system::parse(critical_text);
    let config = pehra_zookeeper::SessionLeaseConfig::default();
    let want = config
        .lease(Duration::from_millis(1500), &sample, 0)
        .lease_ms;
    assert_eq!(want, 1650);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let leases: Vec<Option<f64>> = ports
            .iter()
            .map(|p| {
                parse(&scrape(SocketAddr::from(([127, 0, 0, 1], *p))).2)
                    .iter()
                    .find(|(n, _, _)| n == "pehra_broker_session_lease_ms")
                    .map(|s| s.2)
            })
            .collect();
        if leases == [Some(1500.0), Some(f64::from(want))] {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "session leases {leases:?}, wanted 1500 and {want}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
