//! `pehra broker`, `pehra topic`, `pehra produce`, `pehra consume`, `pehra cluster`.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use pehra_broker::client::producer::Producer;
use pehra_broker::client::{records_from, ClusterClient};
use pehra_broker::{Broker, BrokerConfig, BrokerError};
use pehra_shared::wire::{Acks, Record};
use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

/// Arguments of `pehra broker`.
#[derive(Args)]
#[command(
    after_help = "The broker registers as /brokers/ids/ID (ephemeral) and serves the partitions \
    the controller gives it: it leads some and follows (replicates) the others. Ctrl-C or \
    SIGTERM is a controlled shutdown: the controller first moves leadership of its partitions \
    to other in-sync replicas, then the broker closes its session (told apart from a crash). \
    If its zookeeper session expires (a pause, a network partition), it steps down \
    everywhere, rejoins with a new session and catches up as a follower.",
    args_override_self = true
)]
pub struct BrokerArgs {
    /// Read settings from this TOML file's [broker] table (annotated example:
    /// docs/pehra.toml.example): every flag of this command, as `flag-name = value`
    /// without the dashes. A flag given on the command line overrides the file (list
    /// flags add to it). Check a file with `pehra config check FILE`.
    #[arg(long, value_name = "FILE")]
    #[allow(dead_code)] // read by config_file::expand_args before the command line is parsed
    config: Option<PathBuf>,
    /// This broker's id (unique in the cluster).
    #[arg(long)]
    id: u32,
    /// UDP address to serve CoAP on.
    #[arg(long, default_value = "127.0.0.1:5683")]
    listen: SocketAddr,
    /// The zookeeper, or every member of an ensemble separated by commas (the session
    /// moves to another member when one fails).
    #[arg(long, default_value = "127.0.0.1:2181", value_delimiter = ',')]
    zookeeper: Vec<SocketAddr>,
    #[command(flatten)]
    security: crate::security_args::ServerSecurityArgs,
    #[command(flatten)]
    metrics: crate::metrics_http::MetricsArgs,
    #[command(flatten)]
    nhi: crate::health_args::NhiArgs,
    #[command(flatten)]
    lease: crate::health_args::LeaseArgs,
    /// With --credentials, still serve the device gateway routes (/dev/*) to devices
    /// without OSCORE (the firmware does not speak it yet): anyone on the network can
    /// then publish readings and read downlink through them, nothing else.
    #[arg(long)]
    insecure_device_routes: bool,
    /// Let this broker's followers drop records below the high watermark they knew when
    /// their leader lacks them. Only after forcing an unclean election (`pehra zookeeper
    /// --unclean-leader-election`): the other replicas otherwise keep the acknowledged
    /// records the new leader lacks, refusing to follow it.
    #[arg(long)]
    allow_truncation_below_hw: bool,
    /// Bytes of partition logs checked per second in the background (every batch's CRC,
    /// round the logs): damage nobody reads is found, reported and healed. 0: off (the
    /// default for now; 1048576 is a reasonable rate).
    #[arg(long, default_value_t = 0)]
    scrub_bytes_per_sec: u64,
    /// Directory for partition logs (default pehra-data/broker-ID).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The host name used for replica placement (default: this machine's).
    #[arg(long)]
    host: Option<String>,
    /// The rack used for replica placement.
    #[arg(long)]
    rack: Option<String>,
    /// Delete log segments whose newest record is older than this many hours (0: keep).
    #[arg(long, default_value_t = 168)]
    retention_hours: u64,
    /// Keep at most this many MiB per partition, deleting the oldest segments (0: no limit).
    #[arg(long, default_value_t = 0)]
    retention_mib: u64,
    /// Roll to a new segment file past this many MiB.
    #[arg(long, default_value_t = 64)]
    segment_mib: u64,
    /// fsync after every batch (slowest, safest against power loss).
    #[arg(long, conflicts_with = "flush_interval_ms")]
    flush_every_batch: bool,
    /// fsync written records at this interval (a crash of the process loses nothing
    /// written; a power loss at most this much).
    #[arg(long, default_value_t = 200)]
    flush_interval_ms: u64,
    /// Zookeeper session timeout: how long after a crash its partitions get new leaders.
    #[arg(long, default_value_t = 6_000)]
    session_timeout_ms: u64,
    /// An in-sync follower that has not caught up for this long leaves the in-sync set.
    #[arg(long, default_value_t = 5_000)]
    replica_lag_ms: u64,
    /// How long an acks=all produce waits for the in-sync replicas before a 5.03.
    #[arg(long, default_value_t = 2_000)]
    ack_timeout_ms: u64,
    /// On SIGTERM, wait at most this long for leadership to move to other replicas.
    #[arg(long, default_value_t = 10_000)]
    controlled_shutdown_timeout_ms: u64,
    /// PEHRA selfChk: do not take part. The broker stays awake, is never elected
    /// Pehredar, and its status says `opted_out`.
    #[arg(long)]
    pehra_opt_out: bool,
    /// PEHRA: take part (may be elected Pehredar) but never go dormant.
    #[arg(long)]
    stay_awake: bool,
    /// PEHRA: go dormant after this long without client traffic (produce, fetch,
    /// pub-sub, records replicated here), in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    idle_before_sleep_ms: u64,
    /// PEHRA: while dormant, wake this often to check in with the Pehredar, in
    /// milliseconds.
    #[arg(long, default_value_t = 60_000)]
    alarm_interval_ms: u64,
    /// PEHRA: awake but idle (the Pehredar, a --stay-awake broker), renew the
    /// zookeeper session once per this many milliseconds instead of heartbeating every
    /// session-timeout/3; the first request resumes the heartbeats. A dead idle broker
    /// is replaced about two seconds after a client finds it silent (clients report it,
    /// the zookeeper probes it). 0: heartbeat whenever awake.
    #[arg(long, default_value_t = 60_000)]
    quiet_lease_ms: u64,
    /// PEHRA: run this shell command (`sh -c`) when the broker goes dormant (not waited
    /// on; killed after a minute).
    #[arg(long, value_name = "CMD")]
    on_sleep: Option<String>,
    /// PEHRA: run this shell command (`sh -c`) when the broker wakes.
    #[arg(long, value_name = "CMD")]
    on_wake: Option<String>,
    /// A command that `pehra cluster maintenance --command NAME` may ask this broker to
    /// run (`sh -c CMD`) instead of restarting; repeat for several. Orders only name a
    /// command: its text is configured here and never read from the network.
    #[arg(long, value_name = "NAME=CMD", value_parser = parse_maintenance_command)]
    maintenance_command: Vec<(String, String)>,
}

/// `NAME=CMD`, NAME of 1–64 letters, digits, `-`, `_` or `.`.
fn parse_maintenance_command(text: &str) -> Result<(String, String), String> {
    let (name, command) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not NAME=CMD"))?;
    if !pehra_shared::wire::is_maintenance_command_name(name) {
        return Err(format!(
            "{name:?} is not a command name (1 to 64 letters, digits, '-', '_' or '.')"
        ));
    }
    if command.trim().is_empty() {
        return Err(format!("the command named {name:?} is empty"));
    }
    Ok((name.to_string(), command.to_string()))
}

pub async fn broker(args: BrokerArgs) -> Result<ExitCode> {
    let data_dir = args
        .data_dir
        .unwrap_or_else(|| PathBuf::from(format!("pehra-data/broker-{}", args.id)));
    let first = *args
        .zookeeper
        .first()
        .context("--zookeeper names no address")?;
    let mut config = BrokerConfig::new(args.id, args.listen, first, data_dir.clone());
    config.zookeeper = args.zookeeper.clone();
    if let Some(host) = args.host {
        config.host = host;
    }
    config.rack = args.rack;
    config.log.retention_ms = (args.retention_hours > 0).then(|| args.retention_hours * 3_600_000);
    config.log.retention_bytes = (args.retention_mib > 0).then(|| args.retention_mib * 1024 * 1024);
    config.log.segment_bytes = args.segment_mib.max(1) * 1024 * 1024;
    if args.flush_every_batch {
        config.log.flush = pehra_broker::log::FlushPolicy::Always;
    }
    config.flush_interval = std::time::Duration::from_millis(args.flush_interval_ms.max(1));
    config.session_timeout = std::time::Duration::from_millis(args.session_timeout_ms.max(1));
    config.replica_lag = std::time::Duration::from_millis(args.replica_lag_ms.max(1));
    config.ack_timeout = std::time::Duration::from_millis(args.ack_timeout_ms.max(1));
    config.controlled_shutdown_timeout =
        std::time::Duration::from_millis(args.controlled_shutdown_timeout_ms);
    config.pehra = pehra_broker::PehraConfig {
        participating: !args.pehra_opt_out,
        stay_awake: args.stay_awake,
        idle_before_sleep: std::time::Duration::from_millis(args.idle_before_sleep_ms.max(1)),
        alarm_interval: std::time::Duration::from_millis(args.alarm_interval_ms.max(1)),
        quiet_lease: std::time::Duration::from_millis(args.quiet_lease_ms),
        on_sleep: args.on_sleep.clone(),
        on_wake: args.on_wake.clone(),
        vitals: pehra_shared::pehra::vitals::VitalsConfig {
            nhi: args.nhi.config(),
            lease: args.lease.config(),
            rtt_window: args.lease.rtt_window.max(1),
        },
        health_file: args.lease.health_file.clone(),
    };
    config.maintenance_commands = args.maintenance_command.iter().cloned().collect();
    config.security = args
        .security
        .resolve(args.listen, &format!("broker {}", args.id))?;
    config.security_updates = args.security.reload_on_sighup(
        args.listen,
        &format!("broker {}", args.id),
        config.security.as_ref(),
    )?;
    config.insecure_device_routes = args.insecure_device_routes;
    config.allow_truncation_below_hw = args.allow_truncation_below_hw;
    config.scrub_bytes_per_sec = args.scrub_bytes_per_sec;
    if args.allow_truncation_below_hw {
        tracing::warn!(
            "--allow-truncation-below-hw: followers drop acknowledged records a new leader lacks"
        );
    }
    if args.insecure_device_routes && config.security.is_some() {
        tracing::warn!("--insecure-device-routes: /dev/* serves devices without OSCORE");
    }
    // Bound before the broker starts (a taken port fails at once), announced once it
    // is registered (the line tells tests and `pehra dev` it is ready).
    let coap_metrics = crate::metrics_http::CoapMetrics::default();
    let metrics_addr = match args.metrics.listen() {
        Some(addr) => {
            let mut registry = prometheus_client::registry::Registry::default();
            config.metrics.register(&mut registry);
            let broker_metrics = config.metrics.clone();
            let lag: crate::metrics_http::Refresh = std::sync::Arc::new(move || {
                let metrics = broker_metrics.clone();
                Box::pin(async move { metrics.refresh().await })
            });
            Some(crate::metrics_http::serve(addr, registry, coap_metrics.clone(), Some(lag)).await?)
        }
        None => None,
    };
    let mut shutdown = std::pin::pin!(crate::shutdown_signal());
    loop {
        let broker = tokio::select! {
            started = Broker::start(config.clone()) => started
                .with_context(|| format!("starting broker {}", args.id))?,
            _ = &mut shutdown => return Ok(ExitCode::SUCCESS),
        };
        eprintln!(
            "broker {} listening on udp {} ({}; zookeeper {}, data in {})",
            args.id,
            broker.local_addr(),
            crate::security_args::mode(config.security.is_some()),
            members_list(&args.zookeeper),
            data_dir.display()
        );
        coap_metrics.attach(broker.coap_handle());
        if let Some(bound) = metrics_addr {
            eprintln!("broker {} metrics on http://{bound}/metrics", args.id);
        }
        tokio::select! {
            error = broker.wait() => {
                if matches!(error, BrokerError::RestartRequested) {
                    // Maintenance: leadership has moved away; stop and re-execute this
                    // program in place (same PID). Returns only if the exec failed.
                    eprintln!("broker {}: maintenance: restarting in place", args.id);
                    let error = broker.restart_in_place().await;
                    return Err(error).context("maintenance: re-executing the broker");
                }
                // The zookeeper gave our partitions to others meanwhile: step down
                // everywhere and rejoin as a new session, to be fenced and catch up.
                eprintln!("broker {}: {error}; rejoining", args.id);
                broker.abandon().await;
            }
            _ = &mut shutdown => {
                eprintln!("broker {} leaving the cluster (moving leadership away first)", args.id);
                broker.shutdown().await;
                return Ok(ExitCode::SUCCESS);
            }
        }
    }
}

/// Arguments of `pehra topic`.
#[derive(Args)]
pub struct TopicArgs {
    /// The zookeeper, or every member of an ensemble separated by commas.
    #[arg(
        long,
        default_value = "127.0.0.1:2181",
        global = true,
        value_delimiter = ','
    )]
    zookeeper: Vec<SocketAddr>,
    #[command(flatten)]
    security: crate::security_args::ClientSecurityArgs,
    #[command(subcommand)]
    command: TopicCommand,
}

#[derive(Subcommand)]
enum TopicCommand {
    /// Create a topic (the controller assigns its partitions to live brokers).
    Create {
        topic: String,
        #[arg(long, short = 'p', default_value_t = 1)]
        partitions: u32,
        /// Copies of each partition, on different brokers; refused if above the brokers
        /// live now (unless --allow-under-replicated).
        #[arg(long, short = 'r', default_value_t = 1)]
        replication_factor: u32,
        /// acks=all produces are refused while fewer replicas are in sync
        /// (default: 2, or the replication factor if smaller).
        #[arg(long)]
        min_insync_replicas: Option<u32>,
        /// Create it even if the replication factor is above the brokers live now (with
        /// a warning): its partitions get replicas and leaders only once enough brokers
        /// are live.
        #[arg(long)]
        allow_under_replicated: bool,
    },
    /// List the topics.
    List,
    /// Show a topic's partitions, leaders and replicas.
    Describe { topic: String },
    /// Delete a topic.
    Delete { topic: String },
}

pub async fn topic(args: TopicArgs) -> Result<ExitCode> {
    let client = ClusterClient::connect_members(&args.zookeeper, args.security.load()?).await?;
    let mut out = std::io::stdout().lock();
    match args.command {
        TopicCommand::Create {
            topic,
            partitions,
            replication_factor,
            min_insync_replicas,
            allow_under_replicated,
        } => {
            let config = pehra_shared::wire::TopicConfig {
                partitions,
                replication_factor,
                min_insync_replicas,
            };
            if allow_under_replicated {
                let live = client.live_brokers().await?;
                client
                    .create_topic_allowing_under_replicated(&topic, config)
                    .await?;
                if replication_factor as usize > live {
                    eprintln!(
                        "pehra: warning: replication factor {replication_factor} is above the \
                         {live} live brokers: {topic}'s partitions are placed once \
                         {replication_factor} brokers are live"
                    );
                }
            } else {
                client.create_topic_with(&topic, config).await?;
            }
            writeln!(out, "created topic {topic} ({partitions} partitions, replication factor {replication_factor})")?;
        }
        TopicCommand::List => {
            for name in client.metadata().topics.keys() {
                writeln!(out, "{name}")?;
            }
        }
        TopicCommand::Describe { topic } => {
            let meta = client.metadata();
            let Some(state) = meta.topics.get(&topic) else {
                bail!("no such topic: {topic}")
            };
            writeln!(
                out,
                "topic {topic}: {} partitions, replication factor {}",
                state.config.partitions, state.config.replication_factor
            )?;
            write_partitions(&mut out, &meta, &topic)?;
        }
        TopicCommand::Delete { topic } => {
            client.delete_topic(&topic).await?;
            writeln!(out, "deleted topic {topic}")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The partition table of `topic describe` and `cluster status`.
pub(crate) fn write_partitions(
    out: &mut impl Write,
    meta: &pehra_broker::client::Metadata,
    topic: &str,
) -> std::io::Result<()> {
    let Some(state) = meta.topics.get(topic) else {
        return Ok(());
    };
    writeln!(out, "  partition  leader   epoch  replicas     isr")?;
    for p in 0..state.config.partitions {
        match state.partitions.get(&p) {
            Some(m) => {
                let leader = match m.leader {
                    Some(id) if meta.brokers.contains_key(&id) => id.to_string(),
                    Some(id) => format!("{id} (down)"),
                    None => "none".into(),
                };
                // Replicas out of the ISR that still have every acknowledged record.
                let elr = if m.elr.is_empty() {
                    String::new()
                } else {
                    format!("  (eligible leader replicas: {})", join(&m.elr))
                };
                writeln!(
                    out,
                    "  {:<10} {:<8} {:<6} {:<12} {}{elr}",
                    p,
                    leader,
                    m.leader_epoch,
                    join(&m.replicas),
                    join(&m.isr)
                )?;
            }
            None => writeln!(out, "  {p:<10} unassigned (waiting for brokers)")?,
        }
    }
    Ok(())
}

/// `1,2,3`.
pub(crate) fn join_ids(ids: &[u32]) -> String {
    join(ids)
}

fn join(ids: &[u32]) -> String {
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

#[derive(Clone, Copy, ValueEnum)]
enum AcksArg {
    #[value(name = "0")]
    None,
    #[value(name = "1")]
    Leader,
    #[value(name = "all")]
    All,
}

/// Arguments of `pehra produce`.
#[derive(Args)]
#[command(
    after_help = "Without -m, every line of standard input is one record. Records with a key go \
    to the partition its hash picks (so a key's records stay in order); others are spread round-robin."
)]
pub struct ProduceArgs {
    topic: String,
    /// The zookeeper, or every member of an ensemble separated by commas (the session
    /// moves to another member when one fails).
    #[arg(long, default_value = "127.0.0.1:2181", value_delimiter = ',')]
    zookeeper: Vec<SocketAddr>,
    #[command(flatten)]
    security: crate::security_args::ClientSecurityArgs,
    /// The key of every record.
    #[arg(short = 'k', long)]
    key: Option<String>,
    /// Read `KEY<TAB>VALUE` lines from standard input (each line's own key).
    #[arg(long, conflicts_with = "key")]
    keyed_lines: bool,
    /// Acknowledgement: 0 (none, NON), 1 (the leader wrote it), all.
    #[arg(long, value_enum, default_value = "1")]
    acks: AcksArg,
    /// Records to send (instead of standard input).
    #[arg(short = 'm', long = "message")]
    messages: Vec<String>,
    /// Most records per batch.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Print where each batch was stored.
    #[arg(short, long)]
    verbose: bool,
}

pub async fn produce(args: ProduceArgs) -> Result<ExitCode> {
    let client = ClusterClient::connect_members(&args.zookeeper, args.security.load()?).await?;
    let meta = client.metadata();
    if !meta.topics.contains_key(&args.topic) {
        bail!("no such topic: {}", args.topic)
    }
    let acks = match args.acks {
        AcksArg::None => Acks::None,
        AcksArg::Leader => Acks::Leader,
        AcksArg::All => Acks::All,
    };
    let lines: Vec<String> = if args.messages.is_empty() {
        std::io::stdin()
            .lock()
            .lines()
            .collect::<std::io::Result<_>>()
            .context("reading standard input")?
    } else {
        args.messages.clone()
    };
    let now_ms = pehra_shared::driver::clock::unix_ms();
    let mut records = Vec::with_capacity(lines.len());
    for line in lines {
        let (key, value) = if args.keyed_lines {
            match line.split_once('\t') {
                Some((k, v)) => (Some(k.as_bytes().to_vec()), v.to_string()),
                None => (None, line),
            }
        } else {
            (args.key.as_ref().map(|k| k.as_bytes().to_vec()), line)
        };
        records.push(Record {
            key,
            value: value.into_bytes(),
            timestamp_ms: now_ms,
            headers: Vec::new(),
        });
    }
    let total = records.len();
    let started = Instant::now();
    // Partitions in parallel; a partition's batches in order, several in flight.
    let client = std::sync::Arc::new(client);
    let producer = Producer::new(args.topic.clone(), acks, args.batch);
    for sent in producer.send(&client, records).await? {
        let partition = sent.partition;
        let stored = sent.result?;
        if args.verbose {
            let topic = &args.topic;
            match stored {
                Some(r) => eprintln!(
                    "{topic}/{partition}: {} records at offsets {}..{}",
                    r.record_count,
                    r.base_offset,
                    r.base_offset + u64::from(r.record_count) - 1
                ),
                None => eprintln!(
                    "{topic}/{partition}: {} records sent (acks=0)",
                    sent.records
                ),
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "produced {total} records to {} in {:.2}s ({:.0} records/s)",
        args.topic,
        secs,
        total as f64 / secs.max(1e-9)
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// The value, one record per line.
    Value,
    /// One JSON object per record: partition, offset, key, value, timestamp.
    Json,
}

/// Arguments of `pehra consume`.
#[derive(Args)]
#[command(
    after_help = "Without --follow it reads up to the end the log had when it started, then exits. \
    With --group it starts at the group's committed offsets and commits as it goes."
)]
pub struct ConsumeArgs {
    topic: String,
    /// The zookeeper, or every member of an ensemble separated by commas (the session
    /// moves to another member when one fails).
    #[arg(long, default_value = "127.0.0.1:2181", value_delimiter = ',')]
    zookeeper: Vec<SocketAddr>,
    #[command(flatten)]
    security: crate::security_args::ClientSecurityArgs,
    /// Consumer group (offsets committed in the zookeeper).
    #[arg(long)]
    group: Option<String>,
    /// Start at the beginning (default without --group: the end).
    #[arg(long)]
    from_beginning: bool,
    /// Keep waiting for new records.
    #[arg(long)]
    follow: bool,
    /// Stop after this many records.
    #[arg(long)]
    max: Option<usize>,
    /// Only this partition.
    #[arg(long)]
    partition: Option<u32>,
    /// Output format.
    #[arg(long, value_enum, default_value = "value")]
    format: Format,
}

pub async fn consume(args: ConsumeArgs) -> Result<ExitCode> {
    let client = ClusterClient::connect_members(&args.zookeeper, args.security.load()?).await?;
    let meta = client.metadata();
    let Some(topic) = meta.topics.get(&args.topic) else {
        bail!("no such topic: {}", args.topic)
    };
    let partitions: Vec<u32> = match args.partition {
        Some(p) if p < topic.config.partitions => vec![p],
        Some(p) => bail!("{} has no partition {p}", args.topic),
        None => (0..topic.config.partitions).collect(),
    };
    // Where each partition starts and (without --follow) ends.
    let mut next = BTreeMap::new();
    let mut end = BTreeMap::new();
    for &p in &partitions {
        let head = client.fetch(&args.topic, p, 0, 1).await?;
        let start = match &args.group {
            Some(g) => match client.committed_offset(g, &args.topic, p).await? {
                Some(o) => o,
                None if args.from_beginning => 0,
                None => head.log_end_offset,
            },
            None if args.from_beginning => 0,
            None => head.log_end_offset,
        };
        next.insert(p, start);
        end.insert(p, head.log_end_offset);
    }
    let mut out = std::io::stdout().lock();
    let mut printed = 0usize;
    let mut ticks = Vec::new();
    if args.follow {
        for &p in &partitions {
            ticks.push(client.observe_partition(&args.topic, p).await?);
        }
        eprintln!(
            "following {} ({} partitions); Ctrl-C stops",
            args.topic,
            partitions.len()
        );
    }
    loop {
        let mut progressed = false;
        for &p in &partitions {
            let from = next[&p];
            if !args.follow && from >= end[&p] {
                continue;
            }
            let response = client.fetch(&args.topic, p, from, 1024 * 1024).await?;
            let records = records_from(&response, from)?;
            for (offset, record) in records {
                if !args.follow && offset >= end[&p] {
                    break;
                }
                write_record(&mut out, args.format, p, offset, &record)?;
                next.insert(p, offset + 1);
                printed += 1;
                progressed = true;
                if args.max.is_some_and(|m| printed >= m) {
                    out.flush()?;
                    commit(&client, &args, &next).await?;
                    return Ok(ExitCode::SUCCESS);
                }
            }
        }
        out.flush()?;
        if progressed {
            commit(&client, &args, &next).await?;
            continue;
        }
        if !args.follow {
            return Ok(ExitCode::SUCCESS);
        }
        // Wait for any partition's notification of new records.
        let waits = ticks.iter_mut().map(|t| Box::pin(t.next()));
        let (item, _, _) = futures_select_all(waits).await;
        if item.is_none() {
            bail!("lost the observation of {}", args.topic);
        }
    }
}

/// Awaits the first of several futures (a small `select_all`).
async fn futures_select_all<F: std::future::Future + Unpin>(
    futures: impl Iterator<Item = F>,
) -> (F::Output, usize, ()) {
    let mut futures: Vec<F> = futures.collect();
    std::future::poll_fn(move |cx| {
        for (i, f) in futures.iter_mut().enumerate() {
            if let std::task::Poll::Ready(v) = std::pin::Pin::new(f).poll(cx) {
                return std::task::Poll::Ready((v, i, ()));
            }
        }
        std::task::Poll::Pending
    })
    .await
}

async fn commit(
    client: &ClusterClient,
    args: &ConsumeArgs,
    next: &BTreeMap<u32, u64>,
) -> Result<()> {
    if let Some(group) = &args.group {
        for (p, offset) in next {
            client
                .commit_offset(group, &args.topic, *p, *offset)
                .await?;
        }
    }
    Ok(())
}

fn write_record(
    out: &mut impl Write,
    format: Format,
    partition: u32,
    offset: u64,
    record: &Record,
) -> std::io::Result<()> {
    match format {
        Format::Value => {
            out.write_all(&record.value)?;
            writeln!(out)
        }
        Format::Json => {
            let key = match &record.key {
                Some(k) => json_string(&String::from_utf8_lossy(k)),
                None => "null".into(),
            };
            writeln!(
                out,
                "{{\"partition\":{partition},\"offset\":{offset},\"key\":{key},\"value\":{},\"timestamp_ms\":{}}}",
                json_string(&String::from_utf8_lossy(&record.value)),
                record.timestamp_ms
            )
        }
    }
}

/// A JSON string literal.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `a,b,c`: the zookeeper members as `--zookeeper` takes them.
fn members_list(members: &[SocketAddr]) -> String {
    members
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use pehra_broker::client::{Metadata, TopicState};
    use pehra_shared::wire::{PartitionMetadata, TopicConfig};

    #[test]
    fn the_partition_table_names_eligible_leader_replicas_only_when_there_are_some() {
        let partition = |n, isr: &[u32], elr: &[u32]| PartitionMetadata {
            partition: n,
            leader: isr.first().copied(),
            leader_epoch: 3,
            replicas: vec![1, 2, 3],
            isr: isr.to_vec(),
            elr: elr.to_vec(),
        };
        let mut meta = Metadata::default();
        meta.topics.insert(
            "t".into(),
            TopicState {
                config: TopicConfig {
                    partitions: 2,
                    replication_factor: 3,
                    min_insync_replicas: Some(2),
                },
                partitions: [
                    (0, partition(0, &[3], &[1, 2])),
                    (1, partition(1, &[1, 2], &[])),
                ]
                .into(),
            },
        );
        let mut out = Vec::new();
        super::write_partitions(&mut out, &meta, "t").unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[1].ends_with("3  (eligible leader replicas: 1,2)"),
            "{text}"
        );
        assert!(lines[2].ends_with("1,2"), "{text}");
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(
            super::json_string("a\"b\\c\n\u{1}"),
            "\"a\\\"b\\\\c\\n\\u0001\""
        );
    }
}
