//! The cluster's layout in the tree and the controller that maintains it.
//!
//! ```text
//! /brokers/ids/{id}                  ephemeral, BrokerInfo: the live brokers
//! /topics/{topic}                    TopicConfig: partitions, replication factor
//! /topics/{topic}/partitions/{p}     PartitionMetadata: replicas, leader, epoch, ISR
//! /consumers/{group}/{topic}/{p}     committed offset (decimal text)
//! ```
//!
//! Everything the controller decides is a znode, so `pehra zk ls /` shows the cluster.

use crate::client::{Client, ClientOptions, CreateMode, ZkError};
use pehra_shared::wire::{self, BrokerInfo, ErrorKind, MultiOp, PartitionMetadata, TopicConfig};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

/// Where live brokers register.
pub const BROKERS: &str = "/brokers/ids";
/// Where topics live.
pub const TOPICS: &str = "/topics";
/// Where consumer groups keep committed offsets.
pub const CONSUMERS: &str = "/consumers";

/// A broker's registration znode.
pub fn broker_path(id: u32) -> String {
    format!("{BROKERS}/{id}")
}

/// A topic's znode.
pub fn topic_path(topic: &str) -> String {
    format!("{TOPICS}/{topic}")
}

/// A topic's partitions parent.
pub fn partitions_path(topic: &str) -> String {
    format!("{TOPICS}/{topic}/partitions")
}

/// One partition's state znode.
pub fn partition_path(topic: &str, partition: u32) -> String {
    format!("{TOPICS}/{topic}/partitions/{partition}")
}

/// A committed consumer offset's znode.
pub fn offset_path(group: &str, topic: &str, partition: u32) -> String {
    format!("{CONSUMERS}/{group}/{topic}/{partition}")
}

/// Checks a topic name: 1 to 200 of `[A-Za-z0-9._-]`, not `.` or `..`.
pub fn validate_topic(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 200 {
        return Err(format!("invalid topic name {name:?}: 1 to 200 characters"));
    }
    if name == "."
        || name == ".."
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        return Err(format!(
            "invalid topic name {name:?}: use letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(())
}

/// Creates `path` and any missing parents as persistent, empty znodes.
pub async fn ensure_path(client: &Client, path: &str) -> Result<(), ZkError> {
    let mut at = String::new();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        at.push('/');
        at.push_str(part);
        match client.create(&at, b"", CreateMode::Persistent).await {
            Ok(_) => {}
            Err(e) if e.kind() == Some(ErrorKind::NodeExists) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The live brokers, by id.
pub async fn live_brokers(client: &Client) -> Result<BTreeMap<u32, BrokerInfo>, ZkError> {
    let mut brokers = BTreeMap::new();
    let (ids, _) = match client.get_children(BROKERS).await {
        Ok(c) => c,
        Err(e) if e.kind() == Some(ErrorKind::NotFound) => return Ok(brokers),
        Err(e) => return Err(e),
    };
    for id in ids {
        match client.get_data(&format!("{BROKERS}/{id}")).await {
            Ok((data, _)) => {
                if let Ok(info) = wire::decode::<BrokerInfo>(&data) {
                    brokers.insert(info.id, info);
                }
            }
            Err(e) if e.kind() == Some(ErrorKind::NotFound) => {} // gone meanwhile
            Err(e) => return Err(e),
        }
    }
    Ok(brokers)
}

/// Chooses `replication_factor` brokers for a partition: a rotation of the brokers by
/// partition number (spreading leaders), preferring brokers on racks and hosts not yet
/// used by this partition (seed 003's repelling colonies). Fewer than asked if there are
/// not enough brokers.
pub fn assign_replicas(
    partition: u32,
    replication_factor: u32,
    brokers: &[BrokerInfo],
) -> Vec<u32> {
    if brokers.is_empty() {
        return Vec::new();
    }
    let start = partition as usize % brokers.len();
    let rotated: Vec<&BrokerInfo> = brokers
        .iter()
        .cycle()
        .skip(start)
        .take(brokers.len())
        .collect();
    let want = (replication_factor as usize).min(brokers.len());
    let mut chosen: Vec<&BrokerInfo> = Vec::new();
    // Passes from strictest to loosest: new rack and host, new host, anyone.
    for pass in 0..3 {
        for b in &rotated {
            if chosen.len() == want {
                break;
            }
            if chosen.iter().any(|c| c.id == b.id) {
                continue;
            }
            let new_host = chosen.iter().all(|c| c.host != b.host);
            let new_rack = chosen.iter().all(|c| c.rack.is_none() || c.rack != b.rack);
            let ok = match pass {
                0 => new_host && new_rack,
                1 => new_host,
                _ => true,
            };
            if ok {
                chosen.push(b);
            }
        }
    }
    chosen.into_iter().map(|b| b.id).collect()
}

/// The cluster controller: assigns the partitions of new topics to live brokers.
pub struct Controller;

impl Controller {
    /// Runs the controller against the zookeeper at `addr` until the session is lost.
    pub async fn run(addr: SocketAddr) -> Result<(), ZkError> {
        let options = ClientOptions {
            session_timeout: Duration::from_secs(10),
            ..ClientOptions::default()
        };
        let client = Client::connect(addr, options).await?;
        ensure_path(&client, BROKERS).await?;
        ensure_path(&client, TOPICS).await?;
        let mut brokers_watch = client.watch_children(BROKERS).await?;
        let mut topics_watch = client.watch_children(TOPICS).await?;
        loop {
            if let Err(e) = reconcile(&client).await {
                tracing::warn!(error = %e, "controller: reconcile failed; will retry on the next change");
            }
            tokio::select! {
                event = brokers_watch.next() => if event.is_none() { return Ok(()) },
                event = topics_watch.next() => if event.is_none() { return Ok(()) },
            }
        }
    }
}

/// Gives every topic all its partitions; a partition is created only once it can get
/// its full replication factor.
pub async fn reconcile(client: &Client) -> Result<(), ZkError> {
    let brokers: Vec<BrokerInfo> = live_brokers(client).await?.into_values().collect();
    let (topics, _) = client.get_children(TOPICS).await?;
    for topic in topics {
        let config = match client.get_data(&topic_path(&topic)).await {
            Ok((data, _)) => match wire::decode::<TopicConfig>(&data) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(%topic, error = %e, "controller: topic config does not decode");
                    continue;
                }
            },
            Err(e) if e.kind() == Some(ErrorKind::NotFound) => continue,
            Err(e) => return Err(e),
        };
        ensure_path(client, &partitions_path(&topic)).await?;
        let (existing, _) = client.get_children(&partitions_path(&topic)).await?;
        let existing: BTreeSet<u32> = existing.iter().filter_map(|p| p.parse().ok()).collect();
        let mut ops = Vec::new();
        for partition in (0..config.partitions).filter(|p| !existing.contains(p)) {
            let replicas = assign_replicas(partition, config.replication_factor, &brokers);
            if replicas.len() < config.replication_factor as usize {
                tracing::info!(%topic, partition, live = brokers.len(), "controller: waiting for enough brokers");
                continue;
            }
            let state = PartitionMetadata {
                partition,
                leader: replicas.first().copied(),
                leader_epoch: 0,
                isr: replicas.clone(),
                replicas,
            };
            ops.push(MultiOp::Create {
                path: partition_path(&topic, partition),
                data: wire::encode(&state).expect("encodes"),
                ephemeral: false,
                sequential: false,
            });
        }
        if !ops.is_empty() {
            client.multi(ops).await?;
            tracing::info!(%topic, "controller: partitions assigned");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(id: u32, host: &str, rack: Option<&str>) -> BrokerInfo {
        BrokerInfo {
            id,
            addr: format!("127.0.0.1:{}", 5683 + id),
            host: host.into(),
            rack: rack.map(Into::into),
        }
    }

    #[test]
    fn replicas_repel_across_hosts_and_racks() {
        let brokers = [
            broker(1, "a", Some("r1")),
            broker(2, "a", Some("r1")),
            broker(3, "b", Some("r2")),
            broker(4, "c", Some("r1")),
        ];
        let r = assign_replicas(0, 2, &brokers);
        assert_eq!(r, [1, 3], "second replica on another host and rack");
        let r = assign_replicas(1, 3, &brokers);
        assert_eq!(r, [2, 3, 4], "new rack first, then new host");
        assert_eq!(
            assign_replicas(0, 5, &brokers).len(),
            4,
            "no more replicas than brokers"
        );
        assert!(assign_replicas(0, 1, &[]).is_empty());
        let leaders: BTreeSet<u32> = (0..4).map(|p| assign_replicas(p, 1, &brokers)[0]).collect();
        assert_eq!(leaders.len(), 4, "leaders spread over the brokers");
    }

    #[test]
    fn topic_names_are_checked() {
        assert!(validate_topic("temps.room-1_a").is_ok());
        for bad in ["", "a/b", "..", "with space", &"x".repeat(201)] {
            assert!(validate_topic(bad).is_err(), "{bad:?}");
        }
    }
}
