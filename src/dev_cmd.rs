//! `pehra dev`: a whole local cluster in one command. A zookeeper and N brokers run as
//! real processes on loopback (their logs in the data directory), a demo topic gets a
//! producer and a consumer, and a live line shows brokers, leaders and records/s.

use anyhow::{bail, Context, Result};
use clap::Args;
use pehra_broker::client::producer::Producer;
use pehra_broker::client::{records_from, ClusterClient};
use pehra_shared::wire::{Acks, Record};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Arguments of `pehra dev`.
#[derive(Args)]
#[command(
    after_help = "Ports: the zookeeper on 127.0.0.1:ZOOKEEPER_PORT (with --zookeepers N, member j on \
    ZOOKEEPER_PORT+j-1), broker i on 127.0.0.1:BROKER_PORT+i-1. \
    Their Prometheus/OpenMetrics metrics are at http://127.0.0.1:PORT/metrics on the same port numbers \
    over TCP (or from --metrics-port). \
    Process logs go to DATA_DIR/logs/. Ctrl-C stops everything; the data stays for the next run."
)]
pub struct DevArgs {
    /// How many brokers.
    #[arg(long, default_value_t = 3)]
    brokers: u32,
    /// Where everything is kept.
    #[arg(long, default_value = "pehra-data/dev")]
    data_dir: PathBuf,
    /// The zookeeper's port (the first member's, with --zookeepers).
    #[arg(long, default_value_t = 2181)]
    zookeeper_port: u16,
    /// Run the zookeeper as an ensemble of this many members (Raft; 3 or 5 survive the
    /// loss of 1 or 2); 1 is a zookeeper alone.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=7))]
    zookeepers: u32,
    /// The first broker's port.
    #[arg(long, default_value_t = 5683)]
    broker_port: u16,
    /// Serve the zookeeper's metrics on tcp 127.0.0.1:PORT and broker i's on PORT+i
    /// (the ensemble's members first, with --zookeepers; default: each on its own CoAP
    /// port number, over TCP).
    #[arg(long, value_name = "PORT")]
    metrics_port: Option<u16>,
    /// Serve no metrics.
    #[arg(long, conflicts_with = "metrics_port")]
    no_metrics: bool,
    /// The demo topic.
    #[arg(long, default_value = "demo")]
    topic: String,
    /// Its partitions.
    #[arg(long, default_value_t = 3)]
    partitions: u32,
    /// Records per second the demo producer sends.
    #[arg(long, default_value_t = 200)]
    rate: u32,
    /// Stop by itself after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    duration: Option<u64>,
    /// The demo producer sends for this many seconds...
    #[arg(long, default_value_t = 5)]
    burst_s: u64,
    /// ...then pauses this long, so that the brokers fall asleep (PEHRA) and the next
    /// burst wakes them. 0: produce without pause.
    #[arg(long, default_value_t = 20)]
    pause_s: u64,
    /// A broker with no traffic for this long goes dormant (PEHRA sleepCycle).
    #[arg(long, default_value_t = 3000)]
    idle_before_sleep_ms: u64,
    /// A dormant broker wakes this often to check on the Pehredar (alarmClock).
    #[arg(long, default_value_t = 10_000)]
    alarm_interval_ms: u64,
    /// The Pehredar's term (a re-election is held before it ends).
    #[arg(long, default_value_t = 60_000)]
    pehra_term_ms: u64,
    /// Simulated battery devices (`pehra device-sim`: the firmware's node loop) that
    /// publish readings to the topic `readings` and collect their downlink.
    #[arg(long, default_value_t = 0)]
    devices: u32,
    /// Seconds between a simulated device's alarms. Each reading is traffic that wakes
    /// the brokers, so with many devices or a short interval they never fall asleep.
    #[arg(long, default_value_t = 30)]
    device_interval: u64,
}

/// A child process killed (by PID) when dropped, and by the kernel when `pehra dev` dies
/// (`process_tree::die_with_parent`).
struct Child {
    name: String,
    child: tokio::process::Child,
}

impl Child {
    /// Starts `pehra ARGS`, its stderr going to `log`; waits until it prints `ready_word`.
    async fn start(
        name: &str,
        args: &[String],
        log: &Path,
        ready_word: &'static str,
    ) -> Result<Child> {
        let exe = std::env::current_exe().context("finding the pehra executable")?;
        let mut command = tokio::process::Command::new(exe);
        command
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        crate::process_tree::die_with_parent(&mut command);
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let stderr = child.stderr.take().expect("piped");
        let mut file =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<String>();
        tokio::spawn(async move {
            use tokio::io::AsyncBufReadExt;
            let mut ready = Some(ready_tx);
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = writeln!(file, "{line}");
                if line.contains(ready_word) {
                    if let Some(tx) = ready.take() {
                        let _ = tx.send(line);
                    }
                }
            }
        });
        match tokio::time::timeout(Duration::from_secs(20), ready_rx).await {
            Ok(Ok(_)) => Ok(Child {
                name: name.into(),
                child,
            }),
            _ => bail!("{name} did not start; see {}", log.display()),
        }
    }

    /// SIGTERM, then wait (bounded) for it to exit.
    ///
    /// Every child runs in a process group of its own, so a Ctrl-C in the terminal (a
    /// SIGINT to the foreground group) reaches only `pehra dev`, which stops them in
    /// order: the devices, then the brokers one at a time (each moves its leadership to
    /// those still up), the zookeeper last. Had the zookeeper got the SIGINT too, it
    /// would have gone first and left every broker's controlled shutdown waiting out
    /// its timeout.
    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            crate::process_tree::terminate(pid);
        }
        let asked = Instant::now();
        match tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await {
            Ok(_) => eprintln!(
                "  {} stopped ({:.1} s)",
                self.name,
                asked.elapsed().as_secs_f64()
            ),
            Err(_) => {
                eprintln!("  {} did not stop in 10 s: killing it", self.name);
                let _ = self.child.kill().await;
            }
        }
    }
}

pub async fn run(args: DevArgs) -> Result<ExitCode> {
    if args.brokers == 0 {
        bail!("--brokers must be at least 1");
    }
    let logs = args.data_dir.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let mut zk_addrs = Vec::new();
    for j in 0..args.zookeepers {
        let port = u16::try_from(u32::from(args.zookeeper_port) + j)
            .context("--zookeeper-port + --zookeepers goes past port 65535")?;
        zk_addrs.push(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    let members = zk_addrs.len();
    // A port held (by a previous `pehra dev` that was killed, say) is said at once, with
    // its holder, rather than as a child that does not start.
    let mut ports = zk_addrs.clone();
    for id in 1..=args.brokers {
        let port = u16::try_from(u32::from(args.broker_port) + id - 1)
            .context("--broker-port + --brokers goes past port 65535")?;
        ports.push(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    let distinct: std::collections::BTreeSet<_> = ports.iter().collect();
    if distinct.len() < ports.len() {
        bail!("the zookeeper and broker ports overlap: choose --zookeeper-port and --broker-port further apart");
    }
    crate::process_tree::check_ports_free(&ports)?;
    // Metrics: the zookeeper's, then each broker's (loopback, TCP).
    let metrics: Vec<Option<SocketAddr>> = if args.no_metrics {
        vec![None; ports.len()]
    } else {
        let mut metrics = Vec::new();
        for (i, coap) in ports.iter().enumerate() {
            let port = match args.metrics_port {
                Some(first) => u16::try_from(u32::from(first) + i as u32)
                    .context("--metrics-port + --brokers goes past port 65535")?,
                None => coap.port(),
            };
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            if let Err(e) = std::net::TcpListener::bind(addr) {
                bail!(
                    "tcp {addr} (metrics) cannot be bound: {e}; choose other ports with \
                     --metrics-port, or --no-metrics"
                );
            }
            metrics.push(Some(addr));
        }
        metrics
    };
    let metrics_flag = |i: usize| -> Vec<String> {
        match metrics[i] {
            Some(addr) => vec!["--metrics-listen".into(), addr.to_string()],
            None => Vec::new(),
        }
    };
    let scrape = |i: usize| -> String {
        match metrics[i] {
            Some(addr) => format!(", metrics http://{addr}/metrics"),
            None => String::new(),
        }
    };
    eprintln!(
        "pehra dev: data in {}, process logs in {}",
        args.data_dir.display(),
        logs.display()
    );

    let keys = ensure_keys(&args.data_dir.join("keys"), args.brokers, args.devices)?;
    let cred = |name: &str| keys.join(format!("{name}.cred")).display().to_string();
    let mut children = Vec::new();
    // Every member of an ensemble holds the zookeeper's identity (`zookeeper.cred`).
    let peers = zk_addrs
        .iter()
        .zip(1..)
        .map(|(addr, id)| format!("{id}={addr}"))
        .collect::<Vec<_>>()
        .join(",");
    for (j, zk_addr) in zk_addrs.iter().enumerate() {
        // Alone: the names of old (`zookeeper`, its data dir and log), so that data of
        // earlier runs stays in use.
        let (name, dir, label) = if members == 1 {
            (
                "zookeeper".to_string(),
                "zookeeper".to_string(),
                "zookeeper  ".to_string(),
            )
        } else {
            let id = j + 1;
            (
                format!("zookeeper {id}"),
                format!("zookeeper-{id}"),
                format!("zookeeper {id}"),
            )
        };
        let mut zk_args: Vec<String> = vec![
            "zookeeper".into(),
            "--credentials".into(),
            cred("zookeeper"),
            "--listen".into(),
            zk_addr.to_string(),
            "--data-dir".into(),
            args.data_dir.join(&dir).display().to_string(),
            "--pehra-term-ms".into(),
            args.pehra_term_ms.to_string(),
            "--pehra-handover-ms".into(),
            (args.pehra_term_ms / 6).to_string(),
        ];
        if members > 1 {
            zk_args.extend([
                "--id".into(),
                (j + 1).to_string(),
                "--peers".into(),
                peers.clone(),
            ]);
        }
        zk_args.extend(metrics_flag(j));
        children.push(
            Child::start(
                &name,
                &zk_args,
                &logs.join(format!("{dir}.log")),
                "listening on",
            )
            .await?,
        );
        eprintln!("  {label} udp {zk_addr}{}", scrape(j));
    }
    // What the brokers, the demo and the devices are given: every member.
    let zk_list = zk_addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    for id in 1..=args.brokers {
        let port = args.broker_port + id as u16 - 1;
        let mut broker_args: Vec<String> = vec![
            "broker".into(),
            "--credentials".into(),
            cred(&format!("broker-{id}")),
            "--id".into(),
            id.to_string(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--zookeeper".into(),
            zk_list.clone(),
            "--data-dir".into(),
            args.data_dir
                .join(format!("broker-{id}"))
                .display()
                .to_string(),
            "--idle-before-sleep-ms".into(),
            args.idle_before_sleep_ms.to_string(),
            "--alarm-interval-ms".into(),
            args.alarm_interval_ms.to_string(),
        ];
        broker_args.extend(metrics_flag(members + id as usize - 1));
        let name = format!("broker {id}");
        children.push(
            Child::start(
                &name,
                &broker_args,
                &logs.join(format!("broker-{id}.log")),
                "listening on",
            )
            .await?,
        );
        eprintln!(
            "  broker {id}   udp 127.0.0.1:{port}{}",
            scrape(members + id as usize - 1)
        );
    }

    eprintln!(
        "  security   OSCORE on every request; client credentials {} \
         (export PEHRA_CREDENTIALS={} for the other commands)",
        cred("client"),
        cred("client")
    );
    let credentials = Arc::new(
        pehra_shared::security::credentials::Credentials::load(keys.join("client.cred"))
            .context("loading the client credentials")?,
    );
    let result = demo(&args, &zk_addrs, credentials, &logs).await;
    eprintln!("\npehra dev: stopping");
    for child in children.into_iter().rev() {
        child.stop().await;
    }
    eprintln!(
        "pehra dev: stopped; the data stays in {}",
        args.data_dir.display()
    );
    result.map(|()| ExitCode::SUCCESS)
}

/// Creates the demo topic, runs a producer and a consumer, and shows the live view until
/// Ctrl-C (or `--duration`).
async fn demo(
    args: &DevArgs,
    zk_addrs: &[SocketAddr],
    credentials: Arc<pehra_shared::security::credentials::Credentials>,
    logs: &Path,
) -> Result<()> {
    // Listening from now on: a Ctrl-C while the demo sets up, or while the live line is
    // being made, is kept until the loop below looks.
    let shutdown = crate::shutdown_signal();
    tokio::pin!(shutdown);
    let client = Arc::new(ClusterClient::connect_members(zk_addrs, Some(credentials)).await?);
    let replication_factor = args.brokers.min(3);
    let devices = match args.devices {
        0 => None,
        n => Some(start_devices(args, &client, zk_addrs, n, logs).await?),
    };
    let devices_log = logs.join("devices.log");
    match client
        .create_topic(&args.topic, args.partitions, replication_factor)
        .await
    {
        Ok(()) => eprintln!(
            "  topic {} created ({} partitions, replication factor {replication_factor})",
            args.topic, args.partitions
        ),
        Err(e) if e.to_string().starts_with("topic exists") => {
            eprintln!("  topic {} exists", args.topic)
        }
        Err(e) => return Err(e.into()),
    }
    client
        .wait_for_leaders(&args.topic, Duration::from_secs(20))
        .await?;
    if args.pause_s == 0 {
        eprintln!(
            "  producing {} records/s; consuming from the end; Ctrl-C stops\n",
            args.rate
        );
    } else {
        eprintln!(
            "  producing {} records/s for {} s, then pausing {} s (brokers idle for {} ms \
             fall asleep; the next burst wakes them); consuming from the end; Ctrl-C stops\n",
            args.rate, args.burst_s, args.pause_s, args.idle_before_sleep_ms
        );
    }

    let produced = Arc::new(AtomicU64::new(0));
    let consumed = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let wrote = Arc::new(tokio::sync::Notify::new());
    let schedule = Bursts {
        rate: args.rate,
        burst: Duration::from_secs(args.burst_s),
        pause: Duration::from_secs(args.pause_s),
    };
    // The consumer starts at each partition's end as it is before the producer starts,
    // so it counts every record the producer will have counted.
    let start = end_offsets(&client, &args.topic, args.partitions).await;
    let producer = tokio::spawn(produce_loop(
        client.clone(),
        args.topic.clone(),
        schedule,
        produced.clone(),
        failed.clone(),
        wrote.clone(),
    ));
    let consumer = tokio::spawn(consume_loop(
        client.clone(),
        args.topic.clone(),
        start,
        consumed.clone(),
        wrote,
    ));
    let mut pehra_view = PehraView::default();
    let started = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let (mut last_p, mut last_c) = (0, 0);
    let stop_after = args.duration.map(Duration::from_secs);
    let outcome = loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = &mut shutdown => break Ok(()),
        }
        if producer.is_finished() || consumer.is_finished() {
            break Err(anyhow::anyhow!(
                "the demo {} stopped",
                if producer.is_finished() {
                    "producer"
                } else {
                    "consumer"
                }
            ));
        }
        let meta = client.refresh().await.unwrap_or_else(|_| client.metadata());
        let (p, c) = (
            produced.load(Ordering::Relaxed),
            consumed.load(Ordering::Relaxed),
        );
        let leaders: Vec<String> = (0..args.partitions)
            .map(|part| {
                match meta
                    .topics
                    .get(&args.topic)
                    .and_then(|t| t.partitions.get(&part))
                    .and_then(|m| m.leader)
                {
                    Some(id) if meta.brokers.contains_key(&id) => format!("{part}→{id}"),
                    _ => format!("{part}→none"),
                }
            })
            .collect();
        if let Ok(nodes) = crate::pehra_cmd::read_nodes(client.zookeeper()).await {
            for change in pehra_view.update(&nodes) {
                eprintln!("\r{change:<150}");
            }
        }
        let devices = if args.devices > 0 {
            devices_summary(&devices_log)
        } else {
            String::new()
        };
        eprint!(
            "\r[{:>4}s] brokers {}/{} alive | {} |{devices} leaders {} | produced {} ({}/s) consumed {} ({}/s) lag {} | failed sends {}   ",
            started.elapsed().as_secs(),
            meta.brokers.len(),
            args.brokers,
            pehra_view.summary(),
            leaders.join(" "),
            p,
            p - last_p,
            c,
            c - last_c,
            p.saturating_sub(c),
            failed.load(Ordering::Relaxed),
        );
        (last_p, last_c) = (p, c);
        if stop_after.is_some_and(|d| started.elapsed() >= d) {
            break Ok(());
        }
    };
    producer.abort();
    consumer.abort();
    if let Some(devices) = devices {
        // Each device finishes the cycle it is in, so no reading is left half sent.
        devices.stop().await;
    }
    outcome
}

/// When the demo producer sends: `rate` records/s for `burst`, then nothing for `pause`.
struct Bursts {
    rate: u32,
    burst: Duration,
    pause: Duration,
}

async fn produce_loop(
    client: Arc<ClusterClient>,
    topic: String,
    schedule: Bursts,
    produced: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    wrote: Arc<tokio::sync::Notify>,
) -> Result<()> {
    let ticks_per_second = 10u32;
    let per_tick = (schedule.rate / ticks_per_second).max(1);
    let mut ticker = tokio::time::interval(Duration::from_secs(1) / ticks_per_second);
    let mut seq = 0u64;
    // One batch per partition and tick, idempotent.
    let producer = Producer::new(topic, Acks::All, usize::MAX);
    let mut burst_started = tokio::time::Instant::now();
    loop {
        ticker.tick().await;
        if !schedule.pause.is_zero() && burst_started.elapsed() >= schedule.burst {
            tokio::time::sleep(schedule.pause).await;
            burst_started = tokio::time::Instant::now();
            ticker.reset();
        }
        let now_ms = pehra_shared::driver::clock::unix_ms();
        let mut records = Vec::with_capacity(per_tick as usize);
        for _ in 0..per_tick {
            let sensor = format!("sensor-{}", seq % 8);
            let value = format!(
                "{{\"sensor\":\"{sensor}\",\"temp_c\":{:.1},\"seq\":{seq}}}",
                18.0 + (seq % 70) as f64 / 10.0
            );
            records.push(Record {
                key: Some(sensor.into_bytes()),
                value: value.into_bytes(),
                timestamp_ms: now_ms,
                headers: Vec::new(),
            });
            seq += 1;
        }
        let sent = match producer.send(&client, records).await {
            Ok(sent) => sent,
            Err(e) => {
                failed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %e, "demo producer");
                continue;
            }
        };
        for batch in sent {
            match batch.result {
                Ok(_) => {
                    produced.fetch_add(batch.records as u64, Ordering::Relaxed);
                    wrote.notify_one();
                }
                Err(e) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(error = %e, "demo producer");
                }
            }
        }
    }
}

/// Each partition's log end, retrying (every 200 ms) while a leader is not up yet.
async fn end_offsets(client: &ClusterClient, topic: &str, partitions: u32) -> Vec<u64> {
    let mut ends = Vec::new();
    for p in 0..partitions {
        loop {
            match client.fetch(topic, p, 0, 1).await {
                Ok(head) => break ends.push(head.log_end_offset),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
    ends
}

/// Reads what the demo producer wrote, from `next` (an offset per partition) on, woken
/// by the producer (so an idle demo sends the brokers nothing and they can sleep).
async fn consume_loop(
    client: Arc<ClusterClient>,
    topic: String,
    mut next: Vec<u64>,
    consumed: Arc<AtomicU64>,
    wrote: Arc<tokio::sync::Notify>,
) -> Result<()> {
    let partitions = next.len() as u32;
    loop {
        wrote.notified().await;
        for p in 0..partitions {
            let from = next[p as usize];
            let Ok(response) = client.fetch(&topic, p, from, 1024 * 1024).await else {
                continue;
            };
            let records = records_from(&response, from)?;
            if let Some((last, _)) = records.last() {
                next[p as usize] = last + 1;
                consumed.fetch_add(records.len() as u64, Ordering::Relaxed);
            }
        }
    }
}

/// The PEHRA part of the live view: who is Pehredar, who sleeps, and a line for every
/// node that fell asleep, woke or took office since the last look.
#[derive(Default)]
struct PehraView {
    roles: std::collections::BTreeMap<String, pehra_shared::wire::NodeRole>,
    alarms: std::collections::BTreeMap<String, Option<u64>>,
}

impl PehraView {
    /// Takes the nodes' statuses now; returns a line per change.
    fn update(&mut self, nodes: &[pehra_shared::wire::NodeStatus]) -> Vec<String> {
        use pehra_shared::wire::NodeRole;
        let now = pehra_shared::driver::clock::unix_ms();
        let mut changes = Vec::new();
        for n in nodes {
            let before = self.roles.insert(n.node.clone(), n.role);
            let alarm_before = self.alarms.insert(n.node.clone(), n.next_alarm_ms);
            if before == Some(n.role) {
                if n.role == NodeRole::Dormant && alarm_before != Some(n.next_alarm_ms) {
                    changes.push(format!(
                        "  {} checked in with the Pehredar at its alarm and sleeps on (alarm in {:.1} s)",
                        n.node,
                        n.next_alarm_ms.unwrap_or(now).saturating_sub(now) as f64 / 1000.0
                    ));
                }
                continue;
            }
            let line = match n.role {
                NodeRole::Dormant => format!(
                    "  {} fell asleep (alarm in {:.1} s)",
                    n.node,
                    n.next_alarm_ms.unwrap_or(now).saturating_sub(now) as f64 / 1000.0
                ),
                NodeRole::Pehredar => format!("  {} took office as Pehredar", n.node),
                NodeRole::Awake if before == Some(NodeRole::Dormant) => {
                    format!("  {} woke up", n.node)
                }
                NodeRole::Awake => format!("  {} is awake", n.node),
                NodeRole::OptedOut => format!("  {} does not take part in PEHRA", n.node),
            };
            changes.push(line);
        }
        let names: std::collections::BTreeSet<&str> =
            nodes.iter().map(|n| n.node.as_str()).collect();
        self.roles.retain(|name, _| names.contains(name.as_str()));
        self.alarms.retain(|name, _| names.contains(name.as_str()));
        changes
    }

    /// `pehredar broker-2, asleep 1/3`.
    fn summary(&self) -> String {
        use pehra_shared::wire::NodeRole;
        let pehredar = self
            .roles
            .iter()
            .find(|(_, r)| **r == NodeRole::Pehredar)
            .map(|(n, _)| n.as_str())
            .unwrap_or("none");
        let asleep = self
            .roles
            .values()
            .filter(|r| **r == NodeRole::Dormant)
            .count();
        format!("pehredar {pehredar}, asleep {asleep}/{}", self.roles.len())
    }
}

/// The cluster's keys in `dir` (made by `pehra keys init` the first time, with brokers
/// and devices `dev-0001`.. added when a later run has more), returned as `dir`.
fn ensure_keys(dir: &Path, brokers: u32, devices: u32) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("finding the pehra executable")?;
    let run = |args: &[&str]| -> Result<()> {
        let out = std::process::Command::new(&exe)
            .args(args)
            .output()
            .context("running pehra keys")?;
        if !out.status.success() {
            bail!(
                "pehra keys {}: {}",
                args.first().unwrap_or(&""),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    };
    let dir_text = dir.display().to_string();
    let device_names: Vec<String> = (1..=devices).map(|i| format!("dev-{i:04}")).collect();
    if !dir.join("registry.json").exists() {
        let mut init = vec!["keys", "init", &dir_text];
        let brokers_text = brokers.to_string();
        init.extend(["--brokers", &brokers_text]);
        let list = device_names.join(",");
        if devices > 0 {
            init.extend(["--devices", &list]);
        }
        run(&init)?;
        eprintln!("  keys       made in {dir_text} (pehra keys init)");
    }
    for name in &device_names {
        if !dir.join(format!("{name}.cred")).exists() {
            run(&["keys", "add", &dir_text, name, "--role", "device"])?;
        }
    }
    for id in 1..=brokers {
        let name = format!("broker-{id}");
        if !dir.join(format!("{name}.cred")).exists() {
            run(&[
                "keys",
                "add",
                &dir_text,
                &name,
                "--role",
                "broker",
                "--number",
                &id.to_string(),
            ])?;
        }
    }
    Ok(dir.to_path_buf())
}

/// Starts `pehra device-sim` for `count` devices against the cluster (its live line goes
/// to `logs/devices.log`); the topic `readings` is created first. Killed when dropped.
async fn start_devices(
    args: &DevArgs,
    client: &ClusterClient,
    zk_addrs: &[SocketAddr],
    count: u32,
    logs: &Path,
) -> Result<Child> {
    match client
        .create_topic("readings", 3, args.brokers.min(3))
        .await
    {
        Ok(()) => {}
        Err(e) if e.to_string().starts_with("topic exists") => {}
        Err(e) => return Err(e.into()),
    }
    client
        .wait_for_leaders("readings", Duration::from_secs(20))
        .await?;
    let log = logs.join("devices.log");
    let out = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let exe = std::env::current_exe().context("finding the pehra executable")?;
    let mut command = tokio::process::Command::new(exe);
    command
        .args([
            "device-sim",
            "--zookeeper",
            &zk_addrs
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
            "--count",
            &count.to_string(),
            "--interval",
            &args.device_interval.to_string(),
            "--data-dir",
            &args.data_dir.join("devices").display().to_string(),
            "--credentials",
            &args.data_dir.join("keys/client.cred").display().to_string(),
            // The devices' own credentials: they speak OSCORE, as the firmware does.
            "--device-keys",
            &args.data_dir.join("keys").display().to_string(),
        ])
        .stdout(out)
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .process_group(0);
    crate::process_tree::die_with_parent(&mut command);
    let child = command.spawn().context("starting the simulated devices")?;
    eprintln!(
        "  {count} simulated devices publish to `readings` every {} s (their log: {}); \
         downlink: pehra produce downlink.dev-0001 -m 'set-interval 5'",
        args.device_interval,
        log.display()
    );
    Ok(Child {
        name: "the simulated devices".into(),
        child,
    })
}

/// ` devices: awake 2 asleep 18 readings 140 |` from the simulator's latest live line.
fn devices_summary(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let Some(line) = text
        .rsplit(['\r', '\n'])
        .find(|l| l.contains("readings published"))
    else {
        return " devices: starting |".into();
    };
    let words: Vec<&str> = line.split_whitespace().collect();
    let after = |name: &str| {
        words
            .iter()
            .position(|w| *w == name)
            .and_then(|i| words.get(i + 1))
            .copied()
            .unwrap_or("?")
    };
    format!(
        " devices: awake {} asleep {} readings {} downlink {} |",
        after("awake"),
        after("asleep"),
        after("published"),
        after("downlink")
    )
}
