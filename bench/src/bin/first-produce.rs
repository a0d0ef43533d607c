//! `first-produce`: the latency of the first produce to a sleeping cluster (PEHRA) vs to
//! an awake one, on a running cluster.
//!
//! Each round waits until every broker but the Pehredar is dormant, then times one
//! produce (acks all, one 100-byte record) to a partition whose leader sleeps: the
//! producer client sends it to the Pehredar, which holds it, wakes everyone and forwards
//! it once the leader is up; it returns when the record is committed on every in-sync
//! replica. Right after, with the cluster awake, it times one more produce to the same
//! partition. Prints one JSON object: the samples and their medians, in milliseconds.

use anyhow::{bail, Context, Result};
use clap::Parser;
use pehra_broker::client::ClusterClient;
use pehra_cluster as cluster;
use pehra_shared::wire::{Acks, NodeRole, Record};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    /// The zookeeper.
    #[arg(long)]
    zookeeper: SocketAddr,
    /// The topic (created if missing, one partition per broker, RF 3).
    #[arg(long, default_value = "first-produce")]
    topic: String,
    /// Rounds (each waits for the cluster to fall asleep again).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// How long to wait for the cluster to fall asleep, seconds.
    #[arg(long, default_value_t = 120)]
    sleep_timeout_s: u64,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let client = ClusterClient::connect(args.zookeeper).await?;
    let brokers = client.refresh().await?.brokers.len() as u32;
    match client
        .create_topic(&args.topic, brokers, brokers.min(3))
        .await
    {
        Ok(()) => {}
        Err(e) if e.to_string().starts_with("topic exists") => {}
        Err(e) => return Err(e.into()),
    }
    client
        .wait_for_leaders(&args.topic, Duration::from_secs(30))
        .await?;
    let (mut asleep, mut awake) = (Vec::new(), Vec::new());
    for round in 0..args.rounds {
        let pehredar = wait_asleep(&client, Duration::from_secs(args.sleep_timeout_s))
            .await
            .with_context(|| format!("round {round}"))?;
        let meta = client.refresh().await?;
        let Some(partition) = meta.topics[&args.topic]
            .partitions
            .iter()
            .find(|(_, m)| m.leader.is_some_and(|l| format!("broker-{l}") != pehredar))
            .map(|(p, _)| *p)
        else {
            bail!("every partition is led by the Pehredar {pehredar}: start more brokers");
        };
        let started = Instant::now();
        client
            .produce(&args.topic, partition, &[record()], Acks::All, None)
            .await?;
        asleep.push(started.elapsed().as_secs_f64() * 1000.0);
        let started = Instant::now();
        client
            .produce(&args.topic, partition, &[record()], Acks::All, None)
            .await?;
        awake.push(started.elapsed().as_secs_f64() * 1000.0);
        eprintln!(
            "round {round}: to the sleeping cluster {:.1} ms, awake {:.1} ms",
            asleep[round], awake[round]
        );
    }
    println!(
        "{{\"asleep_ms\": {:?}, \"awake_ms\": {:?}, \"asleep_median_ms\": {:.2}, \"awake_median_ms\": {:.2}}}",
        asleep,
        awake,
        median(&asleep),
        median(&awake)
    );
    Ok(())
}

fn record() -> Record {
    Record {
        key: None,
        value: vec![b'x'; 100],
        timestamp_ms: 0,
        headers: Vec::new(),
    }
}

/// Waits until a Pehredar is in office and every other node is dormant (or opted out,
/// or told to stay awake);
/// returns the Pehredar's name. Polls the zookeeper every 100 ms.
async fn wait_asleep(client: &ClusterClient, limit: Duration) -> Result<String> {
    let zk = client.zookeeper();
    let deadline = Instant::now() + limit;
    loop {
        if let Some(state) = cluster::pehra_state(zk).await? {
            if let (Some(term), None, false) = (&state.term, &state.next, state.traffic_awake) {
                let asleep = cluster::pehra_statuses(zk)
                    .await?
                    .iter()
                    .all(|s| match s.role {
                        NodeRole::Pehredar => s.node == term.pehredar,
                        NodeRole::Dormant | NodeRole::OptedOut => true,
                        NodeRole::Awake => s.stay_awake,
                    });
                if asleep {
                    return Ok(term.pehredar.clone());
                }
            }
        }
        if Instant::now() >= deadline {
            bail!("the cluster did not fall asleep within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn median(samples: &[f64]) -> f64 {
    let mut s = samples.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    if s.is_empty() {
        return f64::NAN;
    }
    s[s.len() / 2]
}
