//! `pehra zookeeper` (the server) and `pehra zk` (its command-line client).

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use pehra_zookeeper::{Client, ClientOptions, CreateMode, Server, ServerConfig, WatchEvent};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Arguments of `pehra zookeeper`.
#[derive(Args)]
#[command(
    after_help = "The zookeeper keeps its write-ahead log and snapshots in --data-dir; \
    a write is answered only once it is on disk, and a restart recovers everything answered.\n\
    Stop it with Ctrl-C or SIGTERM: writes in progress are finished first.",
    args_override_self = true
)]
pub struct ServeArgs {
    /// Read settings from this TOML file's [zookeeper] table (annotated example:
    /// docs/pehra.toml.example): every flag of this command, as `flag-name = value`
    /// without the dashes. A flag given on the command line overrides the file (list
    /// flags add to it). Check a file with `pehra config check FILE`.
    #[arg(long, value_name = "FILE")]
    #[allow(dead_code)] // read by config_file::expand_args before the command line is parsed
    config: Option<PathBuf>,
    /// UDP address to serve CoAP on.
    #[arg(long, default_value = "127.0.0.1:2181")]
    listen: SocketAddr,
    /// Directory for the log and snapshots (created if missing).
    #[arg(long, default_value = "pehra-data/zookeeper")]
    data_dir: PathBuf,
    /// Smallest session timeout granted, in milliseconds.
    #[arg(long, default_value_t = 1_000)]
    min_session_timeout_ms: u64,
    /// Largest session timeout granted, in milliseconds.
    #[arg(long, default_value_t = 60_000)]
    max_session_timeout_ms: u64,
    /// Longest sleep a dormant node's heartbeat may stretch its lease over (PEHRA), in
    /// milliseconds: the lease granted is the session timeout plus min(sleep, this).
    #[arg(long, default_value_t = 3_600_000)]
    max_sleep_ms: u64,
    /// The adaptive lease of sessions whose nodes report their health in heartbeats
    /// (brokers; seed 002): timeout × (1 + NHI factor + network factor + load factor),
    /// kept within MIN,MAX permille of the session's timeout. The default never grants
    /// less than the timeout the client asked for and at most twice it. docs/pehra.md,
    /// "Session leases".
    #[arg(long, value_name = "MIN,MAX", default_value = "1000,2000", value_parser = crate::health_args::parse_permille_bounds)]
    session_lease_permille: [u32; 2],
    /// Snapshot the tree after this many MiB of log.
    #[arg(long, default_value_t = 64)]
    snapshot_after_mib: u64,
    /// When a partition's leader is gone and no in-sync replica is alive, elect any live
    /// replica instead of leaving the partition offline. Records acknowledged by the old
    /// in-sync replicas but not yet copied to the new leader are lost: availability over
    /// durability. Off by default (the partition waits for an in-sync replica to return).
    #[arg(long)]
    unclean_leader_election: bool,
    /// A broker absent this many seconds is replaced, in every partition it was a replica
    /// of, by a live broker that copies the data from the leader (only where another
    /// in-sync replica still has it). 0 = never replace.
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    replace_dead_broker_after_s: u64,
    /// PEHRA: how long a Pehredar's term lasts, in milliseconds, from when it took office.
    /// A shorter term spreads the watchman's extra energy use over the candidates more
    /// evenly, at the cost of more elections.
    #[arg(long, default_value_t = 60_000, value_name = "MS")]
    pehra_term_ms: u64,
    /// PEHRA: how long before a term ends its successor is elected, in milliseconds. The
    /// current Pehredar keeps office until the successor has taken it, so there is never
    /// a gap; this is the time the successor has to wake up and take over.
    #[arg(long, default_value_t = 10_000, value_name = "MS")]
    pehra_handover_ms: u64,
    /// PEHRA: how long an elected node has to take office (publish it in its status),
    /// in milliseconds, before another candidate is drawn without it.
    #[arg(long, default_value_t = 5_000, value_name = "MS")]
    pehra_takeover_timeout_ms: u64,
    /// PEHRA × seed 002: the Pehredar is drawn at random among the candidates whose
    /// reported health is at least this class (or who report none); among all of them
    /// if none is. `critical` turns health off for the draw.
    #[arg(long, default_value = "good", value_parser = crate::health_args::parse_class)]
    pehredar_min_health: pehra_shared::health::HealthClass,
    /// PEHRA × seed 002: the Node Health Index class thresholds in ‰ the coordinator
    /// classes candidates' published index by: EXCELLENT,GOOD,WARNING (below: critical).
    #[arg(long, value_parser = crate::health_args::parse_thresholds, default_value = "850,650,400")]
    nhi_thresholds: pehra_shared::health::NhiThresholds,
    /// PEHRA admin key file: enables `POST /pehra/mode` (`pehra pehra enable|disable
    /// --admin-key FILE`), whose requests must be signed (HMAC-SHA256) with the same
    /// key. The file's contents, whitespace trimmed, at least 16 bytes. Without it every
    /// mode change is refused (4.01).
    #[arg(long, value_name = "FILE")]
    admin_key: Option<PathBuf>,
    #[command(flatten)]
    security: crate::security_args::ServerSecurityArgs,
    #[command(flatten)]
    metrics: crate::metrics_http::MetricsArgs,
    /// Recovery from a damaged write-ahead log, for when the zookeeper refused to start
    /// because valid records follow damage in it: cut the log after zxid N, the last good
    /// record the error names, deleting every record after it (the error says how many).
    /// Only that exact N is accepted; on a healthy log it does nothing. Restoring the data
    /// directory from a backup loses less: use this only when there is none.
    #[arg(long, value_name = "N")]
    recover_truncate_wal: Option<u64>,
    /// This member's id in an ensemble (with --peers).
    #[arg(long, value_name = "N", requires = "peers")]
    id: Option<u64>,
    /// Run as a member of an ensemble (docs/ensemble.md): every member, this one
    /// included, as ID=HOST:PORT separated by commas
    /// (`1=127.0.0.1:2181,2=127.0.0.1:2182,3=127.0.0.1:2183`). Writes are replicated with
    /// Raft; only the leader takes writes and sessions, and runs the cluster controller
    /// and the PEHRA coordinator. Without it: a single zookeeper, as always.
    #[arg(long, value_name = "ID=HOST:PORT,...", requires = "id")]
    peers: Option<String>,
    /// Join an existing ensemble: at its first start this member neither votes nor
    /// campaigns until the leader adds it (`pehra cluster zookeeper-add ID=HOST:PORT`);
    /// --peers must then name the current members (and this one). Once it holds a
    /// membership it follows what its Raft log says (the flag changes nothing).
    #[arg(long, requires = "peers")]
    join: bool,
    /// In an ensemble: cut the Raft log once it holds this many entries that every
    /// member has made durable (each entry is one batch of writes). Bounds the log's
    /// memory and disk; a member that is down holds the cut back until it returns. 0 =
    /// never cut.
    #[arg(long, value_name = "N", default_value_t = pehra_zookeeper::ensemble::member::DEFAULT_COMPACT_EVERY, requires = "peers")]
    raft_compact_entries: u64,
    /// In an ensemble: the leader hands its office to a healthier member (Raft's
    /// leadership transfer) after three samples 5 s apart at this Node Health Index
    /// class or worse (rated with --nhi-thresholds), to a member rated good or better;
    /// `off` never. docs/ensemble.md, "Health handover".
    #[arg(
        long,
        value_name = "CLASS|off",
        default_value = "warning",
        requires = "peers"
    )]
    leader_handover_on: String,
    /// In an ensemble: the lease the leader gives in its heartbeats (seed 002), BASE,MIN,MAX
    /// in ms: `base × (1 + NHI factor + network stability factor + load factor)`,
    /// clamped; followers wait that long (to twice that) for a heartbeat before they
    /// elect. Within 1000..=3000 ms (Raft's election timeout to three times it).
    /// docs/ensemble.md, "Adaptive lease".
    #[arg(
        long,
        value_name = "BASE,MIN,MAX",
        default_value = "1000,1000,3000",
        value_parser = crate::health_args::parse_leader_lease,
        requires = "peers"
    )]
    leader_lease_ms: pehra_shared::health::LeaseConfig,
    /// This member's health read from a file of `key=value` lines (`cpu`, `memory`,
    /// `disk_io`, `battery` in ‰, `rtt_ms`, `failures`) instead of the system: tests and
    /// experiments.
    #[arg(long, value_name = "FILE")]
    health_file: Option<PathBuf>,
}

pub async fn serve(args: ServeArgs) -> Result<ExitCode> {
    let mut config = ServerConfig::new(args.listen, args.data_dir.clone());
    config.min_session_timeout = Duration::from_millis(args.min_session_timeout_ms);
    config.max_session_timeout =
        Duration::from_millis(args.max_session_timeout_ms.max(args.min_session_timeout_ms));
    config.max_sleep = Duration::from_millis(args.max_sleep_ms);
    let [min_permille, max_permille] = args.session_lease_permille;
    config.session_lease = pehra_zookeeper::SessionLeaseConfig {
        nhi: pehra_shared::health::NhiConfig {
            thresholds: args.nhi_thresholds,
            ..pehra_shared::health::NhiConfig::DEFAULT
        },
        min_permille,
        max_permille,
        ..Default::default()
    };
    config.snapshot_after_bytes = args.snapshot_after_mib * 1024 * 1024;
    config.recovery.recover_truncate_wal = args.recover_truncate_wal;
    if let (Some(id), Some(peers)) = (args.id, &args.peers) {
        let mut ensemble =
            pehra_zookeeper::ensemble::EnsembleConfig::parse(id, peers).context("--peers")?;
        ensemble.compact_every = args.raft_compact_entries;
        ensemble.join = args.join;
        ensemble.lease = args.leader_lease_ms;
        ensemble.health = pehra_zookeeper::ensemble::health::HealthSource {
            file: args.health_file.clone(),
            nhi: pehra_shared::health::NhiConfig {
                thresholds: args.nhi_thresholds,
                ..pehra_shared::health::NhiConfig::DEFAULT
            },
        };
        config.ensemble = Some(ensemble);
    }
    let ensemble_for_watch = config.ensemble.clone();
    config.security = args.security.resolve(args.listen, "the zookeeper")?;
    // What a broker may write beyond the ACL: only its own partitions' state, as their
    // leader, and only its own handover confirmations (docs/security.md).
    config.broker_writes = Some(pehra_cluster::broker_writes::check);
    // PEHRA's mode switch, `POST /pehra/mode`: refused (4.01) without --admin-key.
    config.admin_routes.push(pehra_cluster::admin::MODE_ROUTE);
    config.security_updates =
        args.security
            .reload_on_sighup(args.listen, "the zookeeper", config.security.as_ref())?;
    let own_credentials = config.security.as_ref().map(|s| {
        std::sync::Arc::new(pehra_shared::driver::security::service_credentials(
            &s.credentials,
        ))
    });
    if let Some(path) = &args.admin_key {
        config.admin_key = Some(pehra_cluster::admin::read_key_file(path)?);
    }
    anyhow::ensure!(
        args.pehra_handover_ms < args.pehra_term_ms,
        "--pehra-handover-ms ({}) must be shorter than --pehra-term-ms ({})",
        args.pehra_handover_ms,
        args.pehra_term_ms
    );
    let metrics = config.metrics.clone();
    let mut server = Server::start(config).await.with_context(|| {
        format!(
            "starting the zookeeper with data in {}",
            args.data_dir.display()
        )
    })?;
    let r = server.recovered();
    eprintln!(
        "zookeeper listening on udp {} ({}; data in {}; recovered zxid {}: {} znodes, {} sessions, {} log records replayed{})",
        server.local_addr(),
        crate::security_args::mode(own_credentials.is_some()),
        args.data_dir.display(),
        r.zxid,
        r.nodes,
        r.sessions,
        r.replayed,
        if r.truncated_bytes > 0 { format!(", {} bytes of torn log tail cut", r.truncated_bytes) } else { String::new() },
    );
    if let Some(addr) = args.metrics.listen() {
        let mut registry = prometheus_client::registry::Registry::default();
        metrics.register(&mut registry);
        let coap = crate::metrics_http::CoapMetrics::default();
        coap.attach(server.coap_handle());
        let bound = crate::metrics_http::serve(addr, registry, coap, None).await?;
        eprintln!("zookeeper metrics on http://{bound}/metrics");
    }
    // The cluster controller runs beside the tree, as a client of it (DESIGN.md).
    let mut controller_addr = server.local_addr();
    if controller_addr.ip().is_unspecified() {
        controller_addr.set_ip(if controller_addr.is_ipv6() {
            std::net::Ipv6Addr::LOCALHOST.into()
        } else {
            std::net::Ipv4Addr::LOCALHOST.into()
        });
    }
    let controller_config = pehra_cluster::ControllerConfig {
        unclean_election: args.unclean_leader_election,
        replace_dead_after: (args.replace_dead_broker_after_s > 0)
            .then(|| Duration::from_secs(args.replace_dead_broker_after_s)),
    };
    // The controller and the coordinator run on the ensemble's leader only (alone: always),
    // started when it becomes the leader and stopped when it stops being it.
    let pehra_config = pehra_cluster::PehraCoordinatorConfig {
        timing: pehra_shared::pehra::coordinator::CoordinatorConfig {
            term_ms: args.pehra_term_ms,
            handover_ms: args.pehra_handover_ms,
            takeover_timeout_ms: args.pehra_takeover_timeout_ms,
            thresholds: args.nhi_thresholds,
            min_health: args.pehredar_min_health,
        },
    };
    // The leader's health watch (an ensemble only): hands the office over when it falls.
    let health_watch = match (&ensemble_for_watch, args.leader_handover_on.as_str()) {
        (Some(_), "off") | (None, _) => None,
        (Some(ensemble), class) => {
            let trigger = pehra_shared::health::HealthClass::parse(class).with_context(|| {
                format!("--leader-handover-on {class:?}: expected excellent, good, warning, critical or off")
            })?;
            Some((
                ensemble.clone(),
                pehra_cluster::handover::HandoverConfig {
                    nhi: ensemble.health.nhi,
                    trigger,
                    ..Default::default()
                },
            ))
        }
    };
    let mut leadership = server.leadership();
    let supervisor = tokio::spawn(async move {
        loop {
            while !*leadership.borrow_and_update() {
                if leadership.changed().await.is_err() {
                    return;
                }
            }
            let mut tasks = leader_tasks(
                controller_addr,
                own_credentials.clone(),
                controller_config.clone(),
                pehra_config,
            );
            if let Some((ensemble, handover)) = health_watch.clone() {
                let credentials = own_credentials.clone();
                tasks.push(AbortOnDrop(tokio::spawn(async move {
                    let run = pehra_cluster::leader_health::watch_leader_health(
                        ensemble.id,
                        ensemble.members.clone(),
                        credentials,
                        ensemble.health.clone(),
                        handover,
                    );
                    if let Err(e) = run.await {
                        tracing::error!(error = %e, "the leader's health watch stopped");
                    }
                })));
            }
            while *leadership.borrow_and_update() {
                if leadership.changed().await.is_err() {
                    // No more changes (the server stopped, or it is alone): keep them.
                    std::future::pending::<()>().await;
                }
            }
            tracing::info!(
                "no longer the leader: stopping the cluster controller, the PEHRA coordinator and the health watch"
            );
            drop(tasks);
        }
    });
    let _supervisor = AbortOnDrop(supervisor);
    tokio::select! {
        result = server.wait() => {
            result.context("the zookeeper stopped")?;
            Ok(ExitCode::SUCCESS)
        }
        _ = crate::shutdown_signal() => {
            eprintln!("zookeeper stopping");
            server.shutdown().await.context("stopping the zookeeper")?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Starts the cluster controller and the PEHRA coordinator (each restarted if it stops);
/// they stop when the returned handles are dropped.
fn leader_tasks(
    controller_addr: SocketAddr,
    own_credentials: Option<std::sync::Arc<pehra_shared::security::credentials::Credentials>>,
    controller_config: pehra_cluster::ControllerConfig,
    pehra_config: pehra_cluster::PehraCoordinatorConfig,
) -> Vec<AbortOnDrop> {
    let controller_credentials = own_credentials.clone();
    let controller = tokio::spawn(async move {
        loop {
            let run = pehra_cluster::Controller::run_secured(
                controller_addr,
                controller_credentials.clone(),
                controller_config.clone(),
            );
            if let Err(e) = run.await {
                tracing::error!(error = %e, "the cluster controller stopped; restarting it");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    // The PEHRA coordinator (docs/pehra.md) runs beside it the same way.
    let pehra = tokio::spawn(async move {
        loop {
            let run = pehra_cluster::PehraCoordinator::run_secured(
                controller_addr,
                own_credentials.clone(),
                pehra_config,
            );
            if let Err(e) = run.await {
                tracing::error!(error = %e, "the PEHRA coordinator stopped; restarting it");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    vec![AbortOnDrop(controller), AbortOnDrop(pehra)]
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Arguments of `pehra zk`.
#[derive(Args)]
pub struct ZkArgs {
    /// The zookeeper's address, or every member of an ensemble separated by commas
    /// (requests move to another member when one is down or not the leader).
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
    command: ZkCommand,
}

#[derive(Subcommand)]
enum ZkCommand {
    /// List a znode's children, one per line.
    Ls { path: String },
    /// Print a znode's data.
    Get { path: String },
    /// Print a znode's stat.
    Stat { path: String },
    /// Create a znode and print its path (with -s, the sequence number shows).
    #[command(
        after_help = "With -e the znode lives as long as this command's session: the command \
        keeps running until Ctrl-C, then closes the session and the znode goes."
    )]
    Create {
        /// Ephemeral: deleted when the session ends.
        #[arg(short = 'e', long)]
        ephemeral: bool,
        /// Sequential: a 10-digit counter is appended to the name.
        #[arg(short = 's', long)]
        sequential: bool,
        path: String,
        /// The data (text); empty if omitted.
        data: Option<String>,
    },
    /// Replace a znode's data (only if at VERSION, with -v).
    Set {
        #[arg(short = 'v', long)]
        version: Option<u32>,
        path: String,
        data: String,
    },
    /// Delete a childless znode (only if at VERSION, with -v).
    Delete {
        #[arg(short = 'v', long)]
        version: Option<u32>,
        path: String,
    },
    /// Print a znode's data (or children) now and on every change, until it is deleted.
    Watch {
        path: String,
        /// Watch the children instead of the data.
        #[arg(long)]
        children: bool,
        /// Stop after this many events.
        #[arg(long)]
        count: Option<usize>,
    },
}

pub async fn run(args: ZkArgs) -> Result<ExitCode> {
    let options = ClientOptions {
        credentials: args.security.load()?,
        ..ClientOptions::default()
    };
    let needs_session = matches!(
        args.command,
        ZkCommand::Create {
            ephemeral: true,
            ..
        }
    );
    let client = if needs_session {
        Client::connect_any(&args.zookeeper, options).await?
    } else {
        Client::without_session_any(
            &args.zookeeper,
            options.coap,
            options.credentials.as_deref(),
        )
        .await?
    };
    let mut out = std::io::stdout().lock();
    match args.command {
        ZkCommand::Ls { path } => {
            for child in client.get_children(&path).await?.0 {
                writeln!(out, "{child}")?;
            }
        }
        ZkCommand::Get { path } => {
            let (data, _) = client.get_data(&path).await?;
            write_data(&mut out, &data)?;
        }
        ZkCommand::Stat { path } => {
            let (_, stat) = client.get_data(&path).await?;
            writeln!(out, "czxid          {}", stat.czxid)?;
            writeln!(out, "mzxid          {}", stat.mzxid)?;
            writeln!(out, "pzxid          {}", stat.pzxid)?;
            writeln!(out, "ctime          {}", format_ms(stat.ctime_ms))?;
            writeln!(out, "mtime          {}", format_ms(stat.mtime_ms))?;
            writeln!(out, "version        {}", stat.version)?;
            writeln!(out, "cversion       {}", stat.cversion)?;
            match stat.ephemeral_owner {
                Some(owner) => writeln!(out, "ephemeralOwner {owner:#x}")?,
                None => writeln!(out, "ephemeralOwner none")?,
            }
            writeln!(out, "dataLength     {}", stat.data_length)?;
            writeln!(out, "numChildren    {}", stat.num_children)?;
        }
        ZkCommand::Create {
            ephemeral,
            sequential,
            path,
            data,
        } => {
            let mode = match (ephemeral, sequential) {
                (false, false) => CreateMode::Persistent,
                (true, false) => CreateMode::Ephemeral,
                (false, true) => CreateMode::PersistentSequential,
                (true, true) => CreateMode::EphemeralSequential,
            };
            let created = client
                .create(&path, data.unwrap_or_default().as_bytes(), mode)
                .await?;
            writeln!(out, "{created}")?;
            if ephemeral {
                out.flush()?;
                crate::shutdown_signal().await;
                client.close().await?;
            }
        }
        ZkCommand::Set {
            version,
            path,
            data,
        } => {
            let stat = client.set_data(&path, data.as_bytes(), version).await?;
            writeln!(out, "version {}", stat.version)?;
        }
        ZkCommand::Delete { version, path } => client.delete(&path, version).await?,
        ZkCommand::Watch {
            path,
            children,
            count,
        } => {
            let mut watch = if children {
                client.watch_children(&path).await?
            } else {
                client.watch_data(&path).await?
            };
            let mut seen = 0;
            while count.is_none_or(|c| seen < c) {
                let Some(event) = watch.next().await else {
                    break;
                };
                seen += 1;
                match event? {
                    WatchEvent::Data(node) => {
                        write!(out, "version {}: ", node.stat.version)?;
                        write_data(&mut out, &node.data)?;
                    }
                    WatchEvent::Children(c) => writeln!(out, "{}", c.children.join(" "))?,
                    WatchEvent::Deleted => {
                        writeln!(out, "deleted: {path}")?;
                        break;
                    }
                }
                out.flush()?;
            }
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn write_data(out: &mut impl Write, data: &[u8]) -> std::io::Result<()> {
    out.write_all(data)?;
    if !data.ends_with(b"\n") {
        writeln!(out)?;
    }
    Ok(())
}

/// Milliseconds since the epoch as `YYYY-MM-DD hh:mm:ss.mmm UTC`.
fn format_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:03} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_epoch_milliseconds() {
        assert_eq!(super::format_ms(0), "1970-01-01 00:00:00.000 UTC");
        assert_eq!(
            super::format_ms(1_795_312_496_789),
            "2026-11-22 01:54:56.789 UTC"
        );
    }
}
