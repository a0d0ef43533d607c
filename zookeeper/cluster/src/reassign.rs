//! Rebalance: move every partition's replicas onto the brokers [`assign_replicas`] would
//! choose among the brokers available today (so a new broker takes its share), without
//! ever having fewer copies than before.
//!
//! For each partition whose replica set differs from its target:
//!
//! 1. `replicas` = target, then the current replicas not in it: the new brokers become
//!    followers and copy the log; leader and epoch unchanged.
//! 2. Wait (a watch on the partition znode, bounded by the timeout) until the ISR holds
//!    every target replica: their leader adds each once it has caught up.
//! 3. `replicas` = target, `isr` = isr ∩ target, and leadership to `target[0]` (epoch + 1)
//!    if it is not there already.
//!
//! A timeout leaves the partition after step 1, with extra replicas: safe, and a new run
//! picks up from there. Then every partition whose leader is not its preferred replica
//! (`replicas[0]`, in sync and available) has its leadership moved there. Every write is
//! conditional on the version read.

use super::{assign_replicas, available_brokers, partition_path, topic_path, TOPICS};
use pehra_shared::wire::{self, ErrorKind, PartitionMetadata, TopicConfig};
use pehra_zookeeper::client::{Client, WatchEvent, ZkError};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::SeedableRng;
use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;
use tokio::time::Instant;

/// How [`rebalance`] runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebalanceOptions {
    /// How long to wait for one partition's new replicas to catch up.
    pub timeout: Duration,
    /// Only report what would move; write nothing.
    pub dry_run: bool,
}

impl Default for RebalanceOptions {
    fn default() -> Self {
        RebalanceOptions {
            timeout: Duration::from_secs(120),
            dry_run: false,
        }
    }
}

/// Progress of a [`rebalance`], one event per step (its `Display` is a progress line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RebalanceEvent {
    /// Dry run: the partition would move from `replicas` to `target`.
    WouldMove {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// Its replicas now.
        replicas: Vec<u32>,
        /// Where they would go.
        target: Vec<u32>,
    },
    /// The new replicas are copying the log; waiting for them to join the ISR.
    Copying {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// Target replicas not in the ISR yet.
        to: Vec<u32>,
        /// The ISR now.
        isr: Vec<u32>,
    },
    /// The partition now has its target replicas.
    Moved {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// Its replicas.
        replicas: Vec<u32>,
        /// Its leader.
        leader: Option<u32>,
    },
    /// Leadership moved to the preferred replica (or would, in a dry run).
    LeaderMoved {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The old leader.
        from: Option<u32>,
        /// The new leader.
        to: u32,
        /// The new epoch (unchanged in a dry run).
        epoch: u32,
        /// Whether it was only planned (dry run).
        dry_run: bool,
    },
    /// The partition was left alone.
    Skipped {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// Why.
        reason: String,
    },
    /// The new replicas did not catch up in time; the partition keeps the extra replicas.
    TimedOut {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// Target replicas still not in the ISR.
        waiting_for: Vec<u32>,
        /// The ISR at the end.
        isr: Vec<u32>,
    },
}

fn ids(ids: &[u32]) -> String {
    if ids.is_empty() {
        return "none".into();
    }
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

fn leader(l: Option<u32>) -> String {
    l.map_or_else(|| "none".into(), |l| l.to_string())
}

impl fmt::Display for RebalanceEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RebalanceEvent::WouldMove {
                topic,
                partition,
                replicas,
                target,
            } => write!(
                f,
                "{topic}/{partition}: would move replicas {} -> {}",
                ids(replicas),
                ids(target)
            ),
            RebalanceEvent::Copying {
                topic,
                partition,
                to,
                isr,
            } => write!(
                f,
                "{topic}/{partition}: copying to broker{} {} (isr {})…",
                if to.len() == 1 { "" } else { "s" },
                ids(to),
                ids(isr)
            ),
            RebalanceEvent::Moved {
                topic,
                partition,
                replicas,
                leader: l,
            } => write!(
                f,
                "{topic}/{partition}: moved: replicas {}, leader {}",
                ids(replicas),
                leader(*l)
            ),
            RebalanceEvent::LeaderMoved {
                topic,
                partition,
                from,
                to,
                epoch,
                dry_run,
            } => {
                if *dry_run {
                    write!(
                        f,
                        "{topic}/{partition}: would move leadership {} -> {to}",
                        leader(*from)
                    )
                } else {
                    write!(
                        f,
                        "{topic}/{partition}: leader {} -> {to} (epoch {epoch})",
                        leader(*from)
                    )
                }
            }
            RebalanceEvent::Skipped {
                topic,
                partition,
                reason,
            } => write!(f, "{topic}/{partition}: skipped: {reason}"),
            RebalanceEvent::TimedOut {
                topic,
                partition,
                waiting_for,
                isr,
            } => write!(
                f,
                "{topic}/{partition}: timed out waiting for broker {} to catch up (isr {}); \
                 the partition keeps its extra replicas, which is safe: run rebalance again",
                ids(waiting_for),
                ids(isr)
            ),
        }
    }
}

/// What a [`rebalance`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RebalanceReport {
    /// Partitions in the cluster.
    pub partitions: usize,
    /// Partitions whose replicas were already where they should be.
    pub balanced: usize,
    /// Partitions whose replicas moved (or would, in a dry run).
    pub moved: Vec<(String, u32)>,
    /// Leaderships moved to the preferred replica (or that would be).
    pub leaders_moved: usize,
    /// Partitions left alone (not assigned yet, too few brokers, changed meanwhile).
    pub skipped: usize,
    /// The partition whose new replicas did not catch up in time; the rebalance stopped
    /// there.
    pub timed_out: Option<(String, u32)>,
    /// Nothing was written.
    pub dry_run: bool,
}

impl fmt::Display for RebalanceReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = if self.dry_run { "would move" } else { "moved" };
        write!(
            f,
            "{} partitions: {} balanced, {verb} {}, {} skipped; {verb} {} leaderships to the preferred replica",
            self.partitions,
            self.balanced,
            self.moved.len(),
            self.skipped,
            self.leaders_moved
        )?;
        if let Some((topic, partition)) = &self.timed_out {
            write!(f, "; stopped at {topic}/{partition} (timed out)")?;
        }
        Ok(())
    }
}

/// Moves every partition's replicas to `assign_replicas(partition, replication_factor,
/// available brokers)`, then leaderships to the preferred replicas; see the module
/// documentation. Stops at the first partition that does not catch up within
/// `options.timeout` ([`RebalanceReport::timed_out`]).
pub async fn rebalance(
    client: &Client,
    options: RebalanceOptions,
    mut progress: impl FnMut(&RebalanceEvent),
) -> Result<RebalanceReport, ZkError> {
    let mut report = RebalanceReport {
        dry_run: options.dry_run,
        ..RebalanceReport::default()
    };
    let mut rng = StdRng::from_seed(pehra_shared::driver::socket::seed32().expect("OS randomness"));
    let available: Vec<_> = available_brokers(client).await?.into_values().collect();
    let available_ids: BTreeSet<u32> = available.iter().map(|b| b.id).collect();
    let mut partitions = Vec::new();
    for topic in children(client, TOPICS).await? {
        let Some(config) = topic_config(client, &topic).await? else {
            continue;
        };
        for partition in 0..config.partitions {
            partitions.push((topic.clone(), partition, config.replication_factor));
        }
    }
    report.partitions = partitions.len();
    for (topic, partition, replication_factor) in &partitions {
        let (topic, partition) = (topic.as_str(), *partition);
        let Some((meta, _)) = read(client, topic, partition).await? else {
            skip(
                &mut report,
                &mut progress,
                topic,
                partition,
                "not assigned yet".into(),
            );
            continue;
        };
        let target = assign_replicas(partition, *replication_factor, &available);
        if target.len() < *replication_factor as usize {
            skip(
                &mut report,
                &mut progress,
                topic,
                partition,
                format!(
                    "{} brokers available, replication factor {replication_factor}",
                    available.len()
                ),
            );
            continue;
        }
        if same_set(&meta.replicas, &target) {
            report.balanced += 1;
            continue;
        }
        if options.dry_run {
            progress(&RebalanceEvent::WouldMove {
                topic: topic.into(),
                partition,
                replicas: meta.replicas.clone(),
                target,
            });
            report.moved.push((topic.into(), partition));
            continue;
        }
        let deadline = Instant::now() + options.timeout;
        let outcome = move_partition(
            client,
            topic,
            partition,
            &target,
            deadline,
            &mut rng,
            &mut progress,
        )
        .await?;
        match outcome {
            Move::Done => report.moved.push((topic.into(), partition)),
            Move::Skipped(reason) => skip(&mut report, &mut progress, topic, partition, reason),
            Move::TimedOut => {
                report.timed_out = Some((topic.into(), partition));
                return Ok(report);
            }
        }
    }
    // Preferred leaders.
    for (topic, partition, _) in &partitions {
        let (topic, partition) = (topic.as_str(), *partition);
        loop {
            let Some((meta, version)) = read(client, topic, partition).await? else {
                break;
            };
            let Some(&preferred) = meta.replicas.first() else {
                break;
            };
            if meta.leader == Some(preferred)
                || !meta.isr.contains(&preferred)
                || !available_ids.contains(&preferred)
            {
                break;
            }
            let new = PartitionMetadata {
                leader: Some(preferred),
                leader_epoch: meta.leader_epoch + 1,
                ..meta.clone()
            };
            if !options.dry_run && !write(client, topic, partition, &new, version).await? {
                continue; // changed meanwhile: look again
            }
            report.leaders_moved += 1;
            progress(&RebalanceEvent::LeaderMoved {
                topic: topic.into(),
                partition,
                from: meta.leader,
                to: preferred,
                epoch: if options.dry_run {
                    meta.leader_epoch
                } else {
                    new.leader_epoch
                },
                dry_run: options.dry_run,
            });
            break;
        }
    }
    Ok(report)
}

fn skip(
    report: &mut RebalanceReport,
    progress: &mut impl FnMut(&RebalanceEvent),
    topic: &str,
    partition: u32,
    reason: String,
) {
    report.skipped += 1;
    progress(&RebalanceEvent::Skipped {
        topic: topic.into(),
        partition,
        reason,
    });
}

enum Move {
    Done,
    Skipped(String),
    TimedOut,
}

/// Steps 1 to 3 of the module documentation for one partition.
async fn move_partition(
    client: &Client,
    topic: &str,
    partition: u32,
    target: &[u32],
    deadline: Instant,
    rng: &mut StdRng,
    progress: &mut impl FnMut(&RebalanceEvent),
) -> Result<Move, ZkError> {
    // 1. Add the new replicas (keeping the old ones until the new ones are in sync).
    loop {
        let Some((meta, version)) = read(client, topic, partition).await? else {
            return Ok(Move::Skipped("deleted meanwhile".into()));
        };
        let mut expanded = target.to_vec();
        expanded.extend(meta.replicas.iter().filter(|b| !target.contains(b)));
        if meta.replicas == expanded {
            break;
        }
        let new = PartitionMetadata {
            replicas: expanded,
            ..meta
        };
        if write(client, topic, partition, &new, version).await? {
            break;
        }
    }
    let path = partition_path(topic, partition);
    let mut announced = false;
    loop {
        // 2. Wait until every target replica is in sync.
        let mut watch = client.watch_data(&path).await?;
        let (meta, version) = loop {
            let event = match tokio::time::timeout_at(deadline, watch.next()).await {
                Ok(Some(event)) => event?,
                Ok(None) => return Err(ZkError::SessionExpired),
                Err(_) => {
                    let (isr, waiting_for) = match read(client, topic, partition).await? {
                        Some((m, _)) => {
                            let waiting = missing(target, &m.isr);
                            (m.isr, waiting)
                        }
                        None => (Vec::new(), target.to_vec()),
                    };
                    progress(&RebalanceEvent::TimedOut {
                        topic: topic.into(),
                        partition,
                        waiting_for,
                        isr,
                    });
                    return Ok(Move::TimedOut);
                }
            };
            let node = match event {
                WatchEvent::Data(node) => node,
                WatchEvent::Deleted => return Ok(Move::Skipped("deleted meanwhile".into())),
                WatchEvent::Children(_) => continue,
            };
            let meta: PartitionMetadata = match wire::decode(&node.data) {
                Ok(m) => m,
                Err(e) => return Ok(Move::Skipped(format!("state does not decode: {e}"))),
            };
            if !target.iter().all(|b| meta.replicas.contains(b)) {
                return Ok(Move::Skipped(format!(
                    "replicas changed meanwhile to {} (run rebalance again)",
                    ids(&meta.replicas)
                )));
            }
            let waiting = missing(target, &meta.isr);
            if waiting.is_empty() {
                break (meta, node.stat.version);
            }
            if !announced {
                announced = true;
                progress(&RebalanceEvent::Copying {
                    topic: topic.into(),
                    partition,
                    to: waiting,
                    isr: meta.isr.clone(),
                });
            }
        };
        drop(watch);
        // 3. Drop the old replicas; leadership to the preferred replica.
        let isr: Vec<u32> = meta
            .isr
            .iter()
            .copied()
            .filter(|b| target.contains(b))
            .collect();
        let (mut leader, mut leader_epoch) = (meta.leader, meta.leader_epoch);
        if leader != Some(target[0]) && isr.contains(&target[0]) {
            leader = Some(target[0]);
            leader_epoch += 1;
        } else if !leader.is_some_and(|l| target.contains(&l)) {
            if let Some(&l) = isr.choose(rng) {
                leader = Some(l);
                leader_epoch += 1;
            }
        }
        let new = PartitionMetadata {
            partition,
            leader,
            leader_epoch,
            replicas: target.to_vec(),
            isr,
            elr: Vec::new(),
        };
        if write(client, topic, partition, &new, version).await? {
            progress(&RebalanceEvent::Moved {
                topic: topic.into(),
                partition,
                replicas: new.replicas,
                leader: new.leader,
            });
            return Ok(Move::Done);
        }
        // Changed meanwhile: wait and decide again on the new state.
    }
}

/// The members of `want` not in `have`.
fn missing(want: &[u32], have: &[u32]) -> Vec<u32> {
    want.iter().copied().filter(|b| !have.contains(b)).collect()
}

fn same_set(a: &[u32], b: &[u32]) -> bool {
    a.iter().collect::<BTreeSet<_>>() == b.iter().collect::<BTreeSet<_>>()
}

async fn children(client: &Client, path: &str) -> Result<Vec<String>, ZkError> {
    match client.get_children(path).await {
        Ok((c, _)) => Ok(c),
        Err(e) if e.kind() == Some(ErrorKind::NotFound) => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

async fn topic_config(client: &Client, topic: &str) -> Result<Option<TopicConfig>, ZkError> {
    match client.get_data(&topic_path(topic)).await {
        Ok((data, _)) => Ok(wire::decode(&data).ok()),
        Err(e) if e.kind() == Some(ErrorKind::NotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A partition's state and version; `None` if missing or undecodable.
async fn read(
    client: &Client,
    topic: &str,
    partition: u32,
) -> Result<Option<(PartitionMetadata, u32)>, ZkError> {
    match client.get_data(&partition_path(topic, partition)).await {
        Ok((data, stat)) => Ok(wire::decode(&data).ok().map(|m| (m, stat.version))),
        Err(e) if e.kind() == Some(ErrorKind::NotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes `meta` if the partition is still at `version`; `false` if it is not (or gone).
async fn write(
    client: &Client,
    topic: &str,
    partition: u32,
    meta: &PartitionMetadata,
    version: u32,
) -> Result<bool, ZkError> {
    let data = wire::encode(meta).expect("encodes");
    match client
        .set_data(&partition_path(topic, partition), &data, Some(version))
        .await
    {
        Ok(_) => Ok(true),
        Err(e)
            if matches!(
                e.kind(),
                Some(ErrorKind::VersionMismatch | ErrorKind::NotFound)
            ) =>
        {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_read_well() {
        let e = RebalanceEvent::Copying {
            topic: "t".into(),
            partition: 1,
            to: vec![4],
            isr: vec![1, 2, 3],
        };
        assert_eq!(e.to_string(), "t/1: copying to broker 4 (isr 1,2,3)…");
        let e = RebalanceEvent::Moved {
            topic: "t".into(),
            partition: 1,
            replicas: vec![1, 2, 4],
            leader: Some(1),
        };
        assert_eq!(e.to_string(), "t/1: moved: replicas 1,2,4, leader 1");
        assert!(same_set(&[3, 1, 2], &[1, 2, 3]));
        assert!(!same_set(&[1, 2, 4], &[1, 2, 3]));
        assert_eq!(missing(&[1, 2, 4], &[2, 3]), [1, 4]);
    }
}
