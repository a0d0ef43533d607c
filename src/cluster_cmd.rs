//! `pehra cluster`: the cluster's state, and rebalancing replicas across the brokers.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use pehra_broker::client::Metadata;
use pehra_cluster::{self as cluster, RebalanceOptions};
use pehra_shared::wire::ErrorKind;
use pehra_zookeeper::{Client, ClientOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

/// Arguments of `pehra cluster`.
#[derive(Args)]
pub struct ClusterArgs {
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
    command: ClusterCommand,
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Brokers (alive, host, rack), topics and partitions with leaders and replicas.
    Status,
    /// Move replicas so that every available broker (a new one too) holds its share,
    /// then give each partition's leadership to its preferred replica.
    #[command(
        after_help = "For each partition whose replicas are not where the controller would \
        put them today: the new brokers are added as followers and copy the log, and once \
        they are all in the in-sync set the old replicas are dropped and the preferred \
        (first) replica leads. There are never fewer copies than before. Brokers shutting down \
        (/admin/shutdown) get nothing.\n\
        A partition whose new replicas do not catch up within --timeout-s stops the \
        rebalance (exit status 1); it keeps the extra replicas, which is safe, and running \
        rebalance again continues from there."
    )]
    Rebalance {
        /// How long to wait for one partition's new replicas to catch up, in seconds.
        #[arg(long, default_value_t = 120)]
        timeout_s: u64,
        /// Only print what would move; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Warm handover: move a partition's leadership to a caught-up in-sync replica with
    /// no produce refused (seed 002; the admin only).
    #[command(
        after_help = "Writes the order /admin/handover/TOPIC:PARTITION (only the admin and the \
        zookeeper may: the default ACLs). The controller chooses the candidate (--to, or the \
        in-sync replica with the best health index, then the fewest partitions led), the \
        leader holds new produces while the candidate catches up and confirms, and the \
        controller transfers the leadership with the next leader epoch; the old leader \
        forwards the held produces to the new one. If the candidate dies, leaves the \
        in-sync set or does not confirm within 5 s, the handover is rolled back (exit \
        status 1) and the ordinary election stays in charge."
    )]
    Handover {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The broker to hand over to (an eligible in-sync replica).
        #[arg(long, value_name = "BROKER")]
        to: Option<u32>,
        /// How long to wait for the outcome, in seconds.
        #[arg(long, default_value_t = 30)]
        timeout_s: u64,
    },
    /// Planned handover of the zookeeper ensemble's leadership (and with it the
    /// controller and the PEHRA coordinator) to another member (the admin only).
    #[command(
        after_help = "Raft's leadership transfer (raft-rs): the leader stops taking writes, brings the \
        new member's log up to its own, then tells it to take over at once, without \
        waiting for an election timeout. Writes sent meanwhile are refused as \
        `not_leader` and clients with the member list send them to the new leader. \
        Without --to the member whose log is furthest along takes over. If it has not \
        taken over within an election timeout (down, cut off), Raft abandons the \
        transfer and the old leader goes on; this command asks again until --timeout-s, \
        then exits 1."
    )]
    ZookeeperHandover {
        /// The ensemble member (its id) to hand over to.
        #[arg(long, value_name = "MEMBER")]
        to: Option<u64>,
        /// How long to wait for the new leader, in seconds.
        #[arg(long, default_value_t = 10)]
        timeout_s: u64,
    },
    /// Adds a member to the zookeeper ensemble (it must be running with `--join`).
    #[command(
        after_help = "Start the new member first: `pehra zookeeper --id ID --listen \
        HOST:PORT --data-dir DIR --peers <every current member and the new one> --join`; it \
        waits without voting until it is added. This command asks the ensemble leader to add \
        it (Raft's single-server change, one at a time) and returns once the change is \
        applied; the new member then catches up from the leader's log, or from a snapshot of \
        its tree if the log no longer goes back that far. Give clients the new member in \
        their --zookeeper list when they next start. docs/ensemble.md, \"Membership \
        changes\"."
    )]
    ZookeeperAdd {
        /// The member: ID=HOST:PORT.
        #[arg(value_name = "ID=HOST:PORT")]
        member: String,
    },
    /// Removes a member from the zookeeper ensemble (not the leader: hand over first).
    #[command(
        after_help = "Returns once the change is applied: the member no longer votes and \
        is sent nothing; stop its process then. The leader cannot remove itself: move the \
        leadership first with `pehra cluster zookeeper-handover`. An ensemble keeps at least \
        one member; a majority of the members must be up for the change to apply."
    )]
    ZookeeperRemove {
        /// The member's id.
        #[arg(value_name = "ID")]
        id: u64,
    },
    /// Rolling maintenance (PEHRA): every broker in turn, the Pehredar last, moves its
    /// leadership away and restarts (or runs --command), while the others serve.
    #[command(
        after_help = "For each broker, in order of id with the Pehredar last: if it is the \
        Pehredar, another is elected first and must take office; the broker is told (its \
        znode /pehra/maintenance/broker-{id}) to move its partition leadership to other \
        in-sync replicas and then to restart itself (same binary, arguments and PID) or run \
        the command it has configured under the name NAME (`pehra broker \
        --maintenance-command NAME=CMD`; the order carries only the name, never a command); the next broker's turn starts only once it is back in the \
        in-sync set of every partition it holds. A failed command or a step slower than \
        --timeout-s stops the run (exit status 1); brokers not yet visited are untouched."
    )]
    Maintenance {
        /// The name of a command each broker has configured with `--maintenance-command
        /// NAME=CMD`, to run instead of restarting.
        #[arg(long, value_name = "NAME", value_parser = parse_command_name)]
        command: Option<String>,
        /// How long one step (a re-election, one broker's maintenance, its return to the
        /// in-sync sets) may take, in seconds.
        #[arg(long, default_value_t = 120)]
        timeout_s: u64,
    },
}

/// A maintenance command's name (see [`pehra_shared::wire::is_maintenance_command_name`]).
fn parse_command_name(name: &str) -> Result<String, String> {
    if pehra_shared::wire::is_maintenance_command_name(name) {
        Ok(name.to_string())
    } else {
        Err(format!(
            "{name:?} is not a command name (1 to 64 letters, digits, '-', '_' or '.'): brokers run only commands configured on them with --maintenance-command NAME=CMD"
        ))
    }
}

pub async fn cluster(args: ClusterArgs) -> Result<ExitCode> {
    let credentials = args.security.load()?;
    let client = Client::without_session_any(
        &args.zookeeper,
        ClientOptions::default().coap,
        credentials.as_deref(),
    )
    .await
    .context("opening a zookeeper client")?;
    let zookeepers = args
        .zookeeper
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    match args.command {
        ClusterCommand::Status => {
            ensemble_status(&args.zookeeper, credentials.as_deref()).await?;
            status(&client).await
        }
        ClusterCommand::Handover {
            topic,
            partition,
            to,
            timeout_s,
        } => {
            handover(
                &client,
                &topic,
                partition,
                to,
                Duration::from_secs(timeout_s),
            )
            .await
        }
        ClusterCommand::ZookeeperHandover { to, timeout_s } => {
            zookeeper_handover(&client, to, Duration::from_secs(timeout_s)).await
        }
        ClusterCommand::ZookeeperAdd { member } => {
            let (id, addr) = member
                .split_once('=')
                .and_then(|(id, addr)| Some((id.trim().parse::<u64>().ok()?, addr.trim())))
                .filter(|(id, addr)| *id > 0 && !addr.is_empty())
                .with_context(|| format!("{member:?}: expected ID=HOST:PORT with ID ≥ 1"))?;
            std::net::ToSocketAddrs::to_socket_addrs(addr)
                .ok()
                .and_then(|mut a| a.next())
                .with_context(|| format!("{addr:?} is not an address (HOST:PORT)"))?;
            let request = pehra_zookeeper::ensemble::MembershipRequest::Add {
                id,
                addr: addr.to_string(),
            };
            change_membership(&client, request, &format!("member {id} ({addr}) added")).await
        }
        ClusterCommand::ZookeeperRemove { id } => {
            let request = pehra_zookeeper::ensemble::MembershipRequest::Remove { id };
            change_membership(&client, request, &format!("member {id} removed")).await
        }
        ClusterCommand::Maintenance { command, timeout_s } => {
            let options = cluster::MaintenanceOptions {
                command,
                timeout: Duration::from_secs(timeout_s),
            };
            cluster::maintenance(&client, options, |event| println!("{event}"))
                .await
                .with_context(|| {
                    format!(
                        "rolling maintenance through the zookeeper at {}",
                        zookeepers
                    )
                })?;
            println!("maintenance done: every broker is back in service");
            Ok(ExitCode::SUCCESS)
        }
        ClusterCommand::Rebalance { timeout_s, dry_run } => {
            let options = RebalanceOptions {
                timeout: Duration::from_secs(timeout_s),
                dry_run,
            };
            let report = cluster::rebalance(&client, options, |event| println!("{event}"))
                .await
                .with_context(|| format!("rebalancing through the zookeeper at {zookeepers}"))?;
            println!("{report}");
            match report.timed_out {
                Some((topic, partition)) => {
                    eprintln!(
                        "pehra: rebalance stopped: the new replicas of {topic}/{partition} did not \
                         catch up within {timeout_s} s (the partition keeps its extra replicas; \
                         run rebalance again, perhaps with a longer --timeout-s)"
                    );
                    Ok(ExitCode::FAILURE)
                }
                None => Ok(ExitCode::SUCCESS),
            }
        }
    }
}

/// `pehra cluster zookeeper-add|remove`: asks the leader, prints the voters after.
async fn change_membership(
    client: &Client,
    request: pehra_zookeeper::ensemble::MembershipRequest,
    done: &str,
) -> Result<ExitCode> {
    let changed = client
        .change_membership(&request)
        .await
        .context("changing the zookeeper ensemble's members")?;
    let list = |ids: &[u64]| {
        ids.iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    if changed.learners.is_empty() {
        println!(
            "zookeeper ensemble: {done}; voters {}",
            list(&changed.voters)
        );
    } else {
        println!(
            "zookeeper ensemble: {done}; voters {}; learners {} (a member added votes once it has caught up)",
            list(&changed.voters),
            list(&changed.learners)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `pehra cluster zookeeper-handover`: starts the handover, then waits until a member
/// other than the old leader leads (asking again each time Raft abandons an attempt).
async fn zookeeper_handover(
    client: &Client,
    to: Option<u64>,
    timeout: Duration,
) -> Result<ExitCode> {
    let start = std::time::Instant::now();
    let started = client
        .transfer_leadership(to)
        .await
        .context("asking the ensemble leader to hand over")?;
    println!(
        "zookeeper leader {} hands over to member {}…",
        started.from, started.to
    );
    // Raft gives up on a transfer after an election timeout (10 ticks of 100 ms, plus
    // up to as many again at random): ask again after that.
    const ATTEMPT: Duration = Duration::from_millis(2_500);
    let mut asked_at = std::time::Instant::now();
    loop {
        let leader = client
            .ensemble_status()
            .await
            .ok()
            .flatten()
            .and_then(|s| s.leader);
        if leader == Some(started.to) {
            println!(
                "zookeeper leader: member {} → member {} in {} ms",
                started.from,
                started.to,
                start.elapsed().as_millis()
            );
            return Ok(ExitCode::SUCCESS);
        }
        if let Some(other) = leader.filter(|&l| l != started.from && to.is_none()) {
            println!(
                "zookeeper leader: member {} → member {other} in {} ms",
                started.from,
                start.elapsed().as_millis()
            );
            return Ok(ExitCode::SUCCESS);
        }
        if start.elapsed() >= timeout {
            eprintln!(
                "pehra: the zookeeper leadership did not move to member {} within {} s; \
                 member {} leads (Raft abandoned the transfer: is member {} up and caught up?)",
                started.to,
                timeout.as_secs(),
                leader.map_or_else(|| "none".to_string(), |l| l.to_string()),
                started.to
            );
            return Ok(ExitCode::FAILURE);
        }
        if asked_at.elapsed() >= ATTEMPT && leader == Some(started.from) {
            asked_at = std::time::Instant::now();
            let _ = client.transfer_leadership(Some(started.to)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Under a topic's partitions: each replica that may not lead and why, and why each
/// partition without a leader is offline.
fn write_ineligible(
    out: &mut impl Write,
    meta: &Metadata,
    topic: &str,
    recovering: &std::collections::BTreeMap<String, String>,
) -> std::io::Result<()> {
    let Some(state) = meta.topics.get(topic) else {
        return Ok(());
    };
    for (&p, m) in &state.partitions {
        let mut reasons = Vec::new();
        for &b in &m.replicas {
            let named = [
                cluster::recovering_name(b, Some((topic, p))),
                cluster::recovering_name(b, None),
            ];
            if let Some(why) = named.iter().find_map(|n| recovering.get(n)) {
                reasons.push((b, why.clone()));
            }
        }
        for (b, why) in &reasons {
            writeln!(out, "  partition {p}: broker {b} may not lead: {why}")?;
        }
        if m.leader.is_none() {
            let live: Vec<u32> = m
                .isr
                .iter()
                .copied()
                .filter(|b| meta.brokers.contains_key(b))
                .collect();
            let why = if live.is_empty() {
                format!(
                    "none of the in-sync replicas ({}) is alive",
                    crate::broker_cmd::join_ids(&m.isr)
                )
            } else {
                format!(
                    "the live in-sync replicas ({}) lack acknowledged records",
                    crate::broker_cmd::join_ids(&live)
                )
            };
            writeln!(
                out,
                "  partition {p}: OFFLINE: {why}; it waits for a complete replica (to accept \
                 losing records instead: pehra zookeeper --unclean-leader-election)"
            )?;
        }
    }
    Ok(())
}

/// Prints the ensemble's members, leader, each member's lag behind the leader, where its
/// Raft log starts (it is cut below what every member has) and its health index, if the
/// zookeeper is an ensemble (nothing for a zookeeper alone). Asks every member listed
/// and, through the first that answers, learns the others.
async fn ensemble_status(
    listed: &[SocketAddr],
    credentials: Option<&pehra_shared::security::credentials::Credentials>,
) -> Result<()> {
    use pehra_zookeeper::ensemble::EnsembleStatus;
    let ask = |addr: SocketAddr| async move {
        let coap = pehra_shared::coap::Config {
            ack_timeout: Duration::from_millis(300),
            max_retransmit: 2,
            ..pehra_shared::coap::Config::default()
        };
        let client = Client::without_session_secured(addr, coap, credentials).await?;
        client.ensemble_status().await
    };
    // Why the last member that did not answer with a view did not.
    let mut failure: Option<String> = None;
    let mut refused = false;
    let mut views: std::collections::BTreeMap<u64, EnsembleStatus> = Default::default();
    let mut addrs: Vec<SocketAddr> = listed.to_vec();
    let mut alone = false;
    let mut i = 0;
    while i < addrs.len() {
        match ask(addrs[i]).await {
            Ok(Some(view)) => {
                for m in &view.members {
                    if let Ok(addr) = m.addr.parse() {
                        if !addrs.contains(&addr) {
                            addrs.push(addr);
                        }
                    }
                }
                views.insert(view.id, view);
            }
            Ok(None) => alone = true,
            Err(e) => {
                refused = matches!(
                    e.kind(),
                    Some(ErrorKind::Unauthorized | ErrorKind::Forbidden)
                );
                failure = Some(format!("{}: {e}", addrs[i]));
            }
        }
        i += 1;
    }
    if views.is_empty() {
        if !alone {
            // A refusal says what to do (GET /ensemble is cluster:admin); silence says
            // where nothing answered.
            match failure {
                // Refused (GET /ensemble is cluster:admin): the rest of the status is
                // still the caller's to see.
                Some(why) if refused => {
                    println!("zookeeper ensemble: not shown ({why})");
                    return Ok(());
                }
                Some(why) => anyhow::bail!("no member of the ensemble showed its view: {why}"),
                None => anyhow::bail!("no zookeeper answered at {listed:?}"),
            }
        }
        return Ok(());
    }
    let members = views
        .values()
        .next()
        .map(|v| v.members.clone())
        .unwrap_or_default();
    let leader = views.values().find(|v| v.role == "leader");
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "zookeeper ensemble ({} members, leader {})",
        members.len(),
        leader.map_or("unknown".to_string(), |l| l.id.to_string())
    )?;
    writeln!(
        out,
        "  id   address                role           term   applied  lag      log from  health  timeout  rtt"
    )?;
    for m in &members {
        let Some(view) = views.get(&m.id) else {
            writeln!(out, "  {:<4} {:<22} unreachable", m.id, m.addr)?;
            continue;
        };
        let lag = leader
            .and_then(|l| {
                let matched = l.members.iter().find(|x| x.id == m.id)?.matched?;
                Some(l.last_index.saturating_sub(matched))
            })
            .map_or("-".to_string(), |lag| lag.to_string());
        // The health index in ‰ (what the leader compares when its own falls).
        let health = view
            .health_index
            .map_or("-".to_string(), |h| format!("{h}‰"));
        // The election timeout it waits for a heartbeat (from the leader's lease).
        let timeout = if view.election_timeout_ms > 0 {
            format!("{} ms", view.election_timeout_ms)
        } else {
            "-".to_string()
        };
        // The leader's heartbeat round trip to it (its distance, for a health handover).
        let rtt = leader
            .and_then(|l| l.members.iter().find(|x| x.id == m.id)?.rtt_us)
            .map_or("-".to_string(), |us| {
                format!("{:.1} ms", f64::from(us) / 1000.0)
            });
        writeln!(
            out,
            "  {:<4} {:<22} {:<14} {:<6} {:<8} {:<8} {:<9} {:<7} {:<8} {}",
            m.id,
            m.addr,
            view.role,
            view.term,
            view.applied,
            lag,
            view.first_index,
            health,
            timeout,
            rtt
        )?;
    }
    if let Some((l, lease)) = leader.and_then(|l| Some((l, l.lease?))) {
        writeln!(
            out,
            "  leader {} gives a lease of {} ms (seed 002: NHI factor {:+}‰, network {:+}‰ for a heartbeat RTT deviation of {:.1} ms, load {:+}‰); followers wait it to twice it",
            l.id,
            lease.lease_ms,
            lease.nhi_factor,
            lease.network_factor,
            f64::from(lease.rtt_stddev_us) / 1000.0,
            lease.load_factor
        )?;
    }
    Ok(())
}

async fn status(client: &Client) -> Result<ExitCode> {
    let meta = Metadata::load(client).await?;
    let leaving = cluster::shutting_down(client).await?;
    let recovering = cluster::recovering_reasons(client).await?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "brokers ({} alive)", meta.brokers.len())?;
    writeln!(out, "  id   address                host             rack")?;
    for b in meta.brokers.values() {
        writeln!(
            out,
            "  {:<4} {:<22} {:<16} {}{}",
            b.id,
            b.addr,
            b.host,
            b.rack.as_deref().unwrap_or("-"),
            if leaving.contains(&b.id) {
                "  (shutting down)"
            } else {
                ""
            }
        )?;
    }
    writeln!(out, "topics ({})", meta.topics.len())?;
    for (name, state) in &meta.topics {
        writeln!(
            out,
            "{name}: {} partitions, replication factor {}",
            state.config.partitions, state.config.replication_factor
        )?;
        crate::broker_cmd::write_partitions(&mut out, &meta, name)?;
        write_ineligible(&mut out, &meta, name, &recovering)?;
    }
    let stats = cluster::warm::read_stats(client).await?;
    writeln!(
        out,
        "warm handovers: {} completed, {} rolled back, {} without a candidate",
        stats.completed, stats.rolled_back, stats.no_candidate
    )?;
    if let Some(last) = &stats.last {
        writeln!(out, "  last: {}", describe(last))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// One handover outcome, on one line.
fn describe(r: &cluster::handover::HandoverResult) -> String {
    let id = |b: Option<u32>| b.map_or("-".to_string(), |b| b.to_string());
    format!(
        "{}/{} broker {} -> {} ({:?}): {} after {} ms",
        r.topic,
        r.partition,
        id(r.from),
        id(r.to),
        r.reason,
        r.outcome,
        r.took_ms
    )
}

/// `pehra cluster handover`: writes the order and waits for its outcome.
async fn handover(
    client: &Client,
    topic: &str,
    partition: u32,
    to: Option<u32>,
    timeout: Duration,
) -> Result<ExitCode> {
    use cluster::handover::{HandoverOrder, HandoverReason};
    let path = cluster::handover_path(topic, partition);
    let order = HandoverOrder {
        reason: HandoverReason::Operator,
        to,
        presync: None,
        ready_log_end: None,
    };
    let data = pehra_shared::wire::encode(&order).expect("encodes");
    let mut watch = client
        .watch_children(cluster::HANDOVERS)
        .await
        .context("watching /admin/handover (is the controller running?)")?;
    client
        .create(&path, &data, pehra_zookeeper::CreateMode::Persistent)
        .await
        .with_context(|| format!("writing the handover order {path}"))?;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match client.get_data(&path).await {
            Err(e) if e.kind() == Some(pehra_shared::wire::ErrorKind::NotFound) => break,
            Err(e) => return Err(e).context("reading the handover order"),
            Ok(_) => {}
        }
        match tokio::time::timeout_at(deadline, watch.next()).await {
            Ok(Some(Ok(_))) => {}
            Ok(_) => {
                watch = client.watch_children(cluster::HANDOVERS).await?;
            }
            Err(_) => {
                anyhow::bail!("the handover of {topic}/{partition} did not finish within {timeout:?} (its order {path} is still there)")
            }
        }
    }
    let stats = cluster::warm::read_stats(client).await?;
    match stats
        .last
        .filter(|l| l.topic == topic && l.partition == partition)
    {
        Some(last) => {
            println!("{}", describe(&last));
            Ok(if last.outcome == "completed" {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        None => {
            println!("{topic}/{partition}: the handover ended (its outcome was overwritten by a later one)");
            Ok(ExitCode::SUCCESS)
        }
    }
}
