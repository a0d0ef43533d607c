//! `handover-load`: one change of a partition's leader under a steady acks=all produce
//! load, measured (bench/handover.sh runs it once per kind of change).
//!
//! It waits until the partition's replicas are all in sync, runs `--producers`
//! idempotent producers (each one acks=all record of `--record-size` bytes at a time,
//! sent again by the client on a leader change), and after `--before-ms` runs
//! `sh -c ACTION` with `LEADER` set to the current leader's id (the script kills it, shuts
//! it down, or asks for a warm handover). The change window runs from the action until
//! `--after-ms` after the partition znode names another leader. Prints one JSON object:
//!
//! - `failed`: produces that returned an error (the client gave up);
//! - `error_retries`: requests the client sent again after a refusal (not leader, 5.03)
//!   or no answer; `moved_retries`: requests it sent on at once because the zookeeper
//!   said the leader moved (no error seen);
//! - `max_latency_ms`: the longest produce (send to acknowledgement) that was in flight
//!   during the window; `ack_gap_ms`: the longest time without any acknowledgement in
//!   the window (the time the partition could not take writes);
//! - `switch_ms`: from the action to the znode naming the new leader; `from`, `to`.
//!
//! With `--pehredar`, the change is a PEHRA term handover instead (the brokers must be
//! free to sleep): it makes sure the Pehredar does not lead the partition (a re-election
//! without it if it does), waits until every other broker is dormant, then starts the
//! producers, whose first produces go to the Pehredar (the leader sleeps), which holds
//! and forwards them, and at once asks for a re-election without the Pehredar (a
//! `Reelect` request, as `pehra cluster maintenance` does). The window runs from then
//! until `--after-ms` after another node took office; `switch_ms` is the time to the new
//! Pehredar in office, `from` and `to` the two Pehredars, `held` whether the producers'
//! metadata routed the first produce to the Pehredar.

use anyhow::{bail, Context, Result};
use clap::Parser;
use pehra_broker::client::{ClusterClient, RetryStats};
use pehra_cluster as cluster;
use pehra_shared::wire::{self, Acks, NodeRole, PartitionMetadata, PehraRequest, Record};
use pehra_zookeeper::{Client, CreateMode};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    /// The zookeeper.
    #[arg(long)]
    zookeeper: SocketAddr,
    /// The topic (created if missing: one partition, replication factor 3).
    #[arg(long, default_value = "handover")]
    topic: String,
    /// Producers, each with one request in flight.
    #[arg(long, default_value_t = 4)]
    producers: usize,
    /// Bytes per record.
    #[arg(long, default_value_t = 100)]
    record_size: usize,
    /// Load before the action, ms.
    #[arg(long, default_value_t = 2000)]
    before_ms: u64,
    /// Load after the new leader is named, ms.
    #[arg(long, default_value_t = 1000)]
    after_ms: u64,
    /// Run with `sh -c`, `LEADER` set to the leader's id.
    #[arg(long, required_unless_present = "pehredar", default_value = "")]
    action: String,
    /// Give up waiting for in-sync replicas or a new leader after this long, s.
    #[arg(long, default_value_t = 60)]
    timeout_s: u64,
    /// Measure a PEHRA term handover with the cluster asleep (no `--action`).
    #[arg(long)]
    pehredar: bool,
}

/// One acknowledged produce: sent, acknowledged.
type Sample = (Instant, Instant);

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let timeout = Duration::from_secs(args.timeout_s);
    let client = Arc::new(ClusterClient::connect(args.zookeeper).await?);
    match client.create_topic(&args.topic, 1, 3).await {
        Ok(()) => {}
        Err(e) if e.to_string().starts_with("topic exists") => {}
        Err(e) => return Err(e.into()),
    }
    client.wait_for_leaders(&args.topic, timeout).await?;
    let zk = client.zookeeper();
    let path = cluster::partition_path(&args.topic, 0);
    let read = || async {
        let (data, _) = zk.get_data(&path).await?;
        anyhow::Ok(wire::decode::<PartitionMetadata>(&data)?)
    };
    let deadline = Instant::now() + timeout;
    let before = loop {
        let m = read().await?;
        let live = client.refresh().await?.brokers;
        if m.isr.len() == 3 && m.leader.is_some_and(|l| live.contains_key(&l)) {
            break m;
        }
        if Instant::now() > deadline {
            bail!("the partition's replicas are not all in sync: {m:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let leader = before.leader.expect("a leader");
    if args.pehredar {
        return pehredar(&args, &client, leader).await;
    }

    let load = Load::start(&client, &args);
    tokio::time::sleep(Duration::from_millis(args.before_ms)).await;
    let retries_before = client.retry_stats();
    let t0 = Instant::now();
    let status = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(&args.action)
        .env("LEADER", leader.to_string())
        .status()
        .await
        .context("running the action")?;
    if !status.success() {
        eprintln!("handover-load: the action exited with {status}");
    }
    let after = loop {
        let m = read().await?;
        if m.leader.is_some_and(|l| l != leader) {
            break m;
        }
        if t0.elapsed() > timeout {
            bail!("no new leader within {timeout:?}: {m:?}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let switch = t0.elapsed();
    tokio::time::sleep(Duration::from_millis(args.after_ms)).await;
    let window = load.stop(&client, retries_before, t0, timeout).await;
    println!(
        "{{\"from\":{leader},\"to\":{},{window},\"switch_ms\":{:.1}}}",
        after.leader.unwrap_or(0),
        ms(switch)
    );
    Ok(())
}

/// The PEHRA term handover with produces held (see the module docs).
async fn pehredar(args: &Args, client: &Arc<ClusterClient>, leader: u32) -> Result<()> {
    let timeout = Duration::from_secs(args.timeout_s);
    let zk = client.zookeeper();
    let leader_node = cluster::broker_node_name(leader);
    // A Pehredar that is not the leader (the leader must be asleep).
    let deadline = Instant::now() + timeout;
    let mut asked = false;
    let old = loop {
        let state = cluster::pehra_state(zk).await?;
        let term = state.as_ref().and_then(|s| s.term.clone());
        let settled = state.as_ref().is_some_and(|s| s.next.is_none());
        match term {
            Some(t) if settled && t.pehredar != leader_node => break t.pehredar,
            Some(t) if settled && !asked => {
                reelect(zk, &t.pehredar).await?;
                asked = true;
            }
            _ => {}
        }
        if Instant::now() > deadline {
            bail!("no Pehredar other than the leader in office: {state:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Every other broker asleep, the cluster out of traffic mode.
    loop {
        let state = cluster::pehra_state(zk).await?;
        let statuses = cluster::pehra_statuses(zk).await?;
        let asleep = statuses
            .iter()
            .filter(|s| s.node != old)
            .all(|s| s.role == NodeRole::Dormant);
        let calm = state.is_some_and(|s| !s.traffic_awake && s.next.is_none());
        if asleep && calm && statuses.len() >= 3 {
            break;
        }
        if Instant::now() > deadline {
            bail!("the brokers did not all fall asleep: {statuses:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let meta = client.refresh().await?;
    let from = cluster::broker_id_of(&old).unwrap_or(0);
    let held = meta
        .produce_target(&args.topic, 0)
        .ok()
        .zip(meta.brokers.get(&from).and_then(|b| b.addr.parse().ok()))
        .is_some_and(|(target, pehredar): (SocketAddr, SocketAddr)| target == pehredar);
    let retries_before = client.retry_stats();
    let t0 = Instant::now();
    let load = Load::start(client, args);
    reelect(zk, &old).await?;
    let new = loop {
        let term = cluster::pehra_state(zk).await?.and_then(|s| s.term);
        if let Some(t) = term.filter(|t| t.pehredar != old) {
            break t.pehredar;
        }
        if t0.elapsed() > timeout {
            bail!("no new Pehredar in office within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let switch = t0.elapsed();
    tokio::time::sleep(Duration::from_millis(args.after_ms)).await;
    let window = load.stop(client, retries_before, t0, timeout).await;
    println!(
        "{{\"from\":{from},\"to\":{},\"held\":{held},{window},\"switch_ms\":{:.1}}}",
        cluster::broker_id_of(&new).unwrap_or(0),
        ms(switch)
    );
    Ok(())
}

/// Asks the PEHRA coordinator for an election without `exclude`.
async fn reelect(zk: &Client, exclude: &str) -> Result<()> {
    let request = PehraRequest::Reelect {
        exclude: vec![exclude.to_string()],
    };
    zk.create(
        &format!("{}/r-", cluster::PEHRA_REQUESTS),
        &wire::encode(&request)?,
        CreateMode::PersistentSequential,
    )
    .await?;
    Ok(())
}

/// The producers, running.
struct Load {
    samples: Arc<Mutex<Vec<Sample>>>,
    failed: Arc<Mutex<u64>>,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Starts `args.producers` idempotent acks=all producers.
    fn start(client: &Arc<ClusterClient>, args: &Args) -> Load {
        let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
        let failed: Arc<Mutex<u64>> = Arc::default();
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();
        for i in 0..args.producers {
            let (client, samples, failed, topic) = (
                client.clone(),
                samples.clone(),
                failed.clone(),
                args.topic.clone(),
            );
            let mut stop = stop.clone();
            let value = vec![b'x'; args.record_size];
            let producer_id = (u64::from(std::process::id()) << 16) + i as u64;
            tasks.push(tokio::spawn(async move {
                let mut seq = 0u32;
                while !*stop.borrow_and_update() {
                    let record = Record {
                        key: None,
                        value: value.clone(),
                        timestamp_ms: 0,
                        headers: Vec::new(),
                    };
                    let sent = Instant::now();
                    match client
                        .produce(&topic, 0, &[record], Acks::All, Some((producer_id, seq)))
                        .await
                    {
                        Ok(_) => {
                            samples.lock().unwrap().push((sent, Instant::now()));
                            seq += 1;
                        }
                        Err(e) => {
                            eprintln!("handover-load: produce failed: {e}");
                            *failed.lock().unwrap() += 1;
                        }
                    }
                }
            }));
        }
        Load {
            samples,
            failed,
            stop: stop_tx,
            tasks,
        }
    }

    /// Stops the producers and returns the window's figures (from `t0` to now) as JSON
    /// fields.
    async fn stop(
        self,
        client: &ClusterClient,
        retries_before: RetryStats,
        t0: Instant,
        timeout: Duration,
    ) -> String {
        let t1 = Instant::now();
        self.stop.send_replace(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(timeout, t).await;
        }
        let retries = client.retry_stats().since(&retries_before);
        let samples = std::mem::take(&mut *self.samples.lock().unwrap());
        // In flight during the window: sent before its end, answered after its start.
        let max_latency = samples
            .iter()
            .filter(|(s, a)| *s <= t1 && *a >= t0)
            .map(|(s, a)| *a - *s)
            .max()
            .unwrap_or_default();
        let mut acks: Vec<Instant> = samples
            .iter()
            .map(|(_, a)| *a)
            .filter(|a| *a >= t0 && *a <= t1)
            .collect();
        acks.sort();
        let mut gap = acks.first().map_or(t1 - t0, |a| *a - t0);
        for w in acks.windows(2) {
            gap = gap.max(w[1] - w[0]);
        }
        let failed = *self.failed.lock().unwrap();
        format!(
            "\"produced\":{},\"failed\":{failed},\"error_retries\":{},\"moved_retries\":{},\"max_latency_ms\":{:.1},\"ack_gap_ms\":{:.1}",
            samples.len(),
            retries.not_leader + retries.unavailable + retries.no_leader + retries.no_answer,
            retries.leader_moved,
            ms(max_latency),
            ms(gap),
        )
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
