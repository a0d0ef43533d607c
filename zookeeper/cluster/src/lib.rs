//! The cluster's layout in the zookeeper's tree and the controller that maintains it
//! (crate `pehra-cluster`: clients of the zookeeper, run beside it by `pehra zookeeper`;
//! the coordination service itself, `pehra-zookeeper`, knows nothing of this layout but
//! the rule it is given for brokers' writes, [`broker_writes::check`]).
//!
//! ```text
//! /brokers/ids/{id}                  ephemeral, BrokerInfo: the live brokers
//! /brokers/recovering/{id}:{t}:{p}   ephemeral, text: broker {id}'s replica of {t}/{p} may
//!                                    not lead (behind or damaged); `{id}:*`: none may yet
//! /topics/{topic}                    TopicConfig: partitions, replication factor
//! /topics/{topic}/partitions/{p}     PartitionMetadata: replicas, leader, epoch, ISR
//! /consumers/{group}/{topic}/{p}     committed offset (decimal text)
//! /admin/shutdown/{id}               ephemeral, empty: broker {id} asks for a controlled shutdown
//! /admin/handover                    HandoverStats: warm handover counts and the last outcome
//! /admin/handover/{topic}:{p}        HandoverOrder: a warm handover of the partition's leader
//! /pehra/state                       PehraState: mode, Pehredar, term, wake generation
//! /pehra/admin                       AdminSwitch: the admin's last mode change
//! /pehra/nodes/{node}                ephemeral, NodeStatus: each node's PEHRA role and alarm
//! /pehra/requests/r-{seq}            PehraRequest: wakeUpAll / re-election asks
//! /pehra/terms/{number:020}          TermRecord: the election history (latest 1000)
//! /pehra/maintenance/{node}          Maintenance: a rolling-maintenance order
//! ```
//!
//! Everything the controller decides is a znode, so `pehra zk ls /` shows the cluster.
//!
//! - [`election`]: what a partition's leader and ISR should become (pure);
//! - [`controller`]: the loop that applies it on every change, and re-replication;
//! - [`pehra`]: the PEHRA coordinator (elections of the Pehredar, wake-ups) on `/pehra`;
//! - [`reassign`]: `pehra cluster rebalance`, moving replicas onto the brokers that
//!   [`assign_replicas`] would choose today.
//!
//! Every write to a partition znode, by the controller, a leader broker or a rebalance,
//! is a read-modify-write conditional on the version read.

pub mod admin;
pub mod broker_writes;
pub mod controller;
pub mod election;
pub mod handover;
pub mod leader_health;
pub mod maintenance;
pub mod pehra;
pub mod reassign;
pub mod warm;

pub use controller::{Controller, ControllerConfig};
pub use election::decide;
pub use maintenance::{
    lagging_partitions, maintenance, MaintenanceError, MaintenanceEvent, MaintenanceOptions,
};
pub use pehra::{PehraCoordinator, PehraCoordinatorConfig};
pub use reassign::{rebalance, RebalanceEvent, RebalanceOptions, RebalanceReport};

use pehra_shared::wire::{self, BrokerInfo, ErrorKind};
use pehra_zookeeper::client::{Client, CreateMode, ZkError};
use std::collections::{BTreeMap, BTreeSet};

/// Where live brokers register.
pub const BROKERS: &str = "/brokers/ids";
/// Where live brokers report the replicas that may not lead (KIP-966's eligible leader
/// replicas, inverted): ephemeral children `{id}:{topic}:{partition}` for a replica that
/// restarted behind the high watermark it last knew or found damage in its log, and
/// `{id}:*` (created with the registration, in one multi) while broker `{id}` has not
/// opened its logs yet. Their data is the reason, one line of text. The controller never
/// elects such a replica cleanly, and counts it out of the ISR while another leads.
pub const RECOVERING: &str = "/brokers/recovering";
/// Where topics live.
pub const TOPICS: &str = "/topics";
/// Where consumer groups keep committed offsets.
pub const CONSUMERS: &str = "/consumers";
/// Where brokers ask for a controlled shutdown (ephemeral children named by broker id).
pub const SHUTDOWN: &str = "/admin/shutdown";
/// Warm handover orders ([`handover::HandoverOrder`], children `{topic}:{partition}`,
/// created by the admin or the controller, confirmed by the leader); the data of the
/// parent is the [`handover::HandoverStats`].
pub const HANDOVERS: &str = "/admin/handover";
/// Since when each broker named in some partition's replicas has been absent (children
/// named by broker id, data the time in ms since the Unix epoch as decimal text), kept
/// by the controller so that a restart of it does not restart the replacement clocks.
pub const ABSENT: &str = "/admin/absent";

/// The cluster's PEHRA state ([`wire::PehraState`]), written only by the coordinator.
pub const PEHRA_STATE: &str = "/pehra/state";
/// The admin's last mode change ([`wire::AdminSwitch`]), written only by the
/// zookeeper's `POST /pehra/mode` route after checking the admin key.
pub const PEHRA_ADMIN: &str = "/pehra/admin";
/// The parent of the PEHRA znodes.
pub const PEHRA: &str = "/pehra";
/// Each node's PEHRA status ([`wire::NodeStatus`], ephemeral).
pub const PEHRA_NODES: &str = "/pehra/nodes";
/// Requests to the coordinator ([`wire::PehraRequest`], persistent sequential `r-`).
pub const PEHRA_REQUESTS: &str = "/pehra/requests";
/// The election history ([`wire::TermRecord`]).
pub const PEHRA_TERMS: &str = "/pehra/terms";
/// Rolling-maintenance orders ([`wire::Maintenance`]).
pub const PEHRA_MAINTENANCE: &str = "/pehra/maintenance";

/// A broker's PEHRA node name.
pub fn broker_node_name(id: u32) -> String {
    format!("broker-{id}")
}

/// The broker id of a PEHRA node name (`broker-{id}`), if it is a broker's.
pub fn broker_id_of(node: &str) -> Option<u32> {
    node.strip_prefix("broker-")?.parse().ok()
}

/// The cluster's PEHRA state, if the coordinator has written it.
pub async fn pehra_state(client: &Client) -> Result<Option<wire::PehraState>, ZkError> {
    match client.get_data(PEHRA_STATE).await {
        Ok((data, _)) => Ok(wire::decode(&data).ok()),
        Err(e) if e.kind() == Some(ErrorKind::NotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Every node's PEHRA status, sorted by name (none before PEHRA started); statuses that
/// go meanwhile or do not decode are skipped.
pub async fn pehra_statuses(client: &Client) -> Result<Vec<wire::NodeStatus>, ZkError> {
    let names = match client.get_children(PEHRA_NODES).await {
        Ok((names, _)) => names,
        Err(e) if e.kind() == Some(ErrorKind::NotFound) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut statuses = Vec::new();
    for name in names {
        match client.get_data(&pehra_node_path(&name)).await {
            Ok((data, _)) => {
                if let Ok(status) = wire::decode::<wire::NodeStatus>(&data) {
                    statuses.push(status);
                }
            }
            Err(e) if e.kind() == Some(ErrorKind::NotFound) => {}
            Err(e) => return Err(e),
        }
    }
    statuses.sort_by(|a, b| a.node.cmp(&b.node));
    Ok(statuses)
}

/// A node's PEHRA status znode.
pub fn pehra_node_path(node: &str) -> String {
    format!("{PEHRA_NODES}/{node}")
}

/// One term's history znode.
pub fn pehra_term_path(number: u64) -> String {
    format!("{PEHRA_TERMS}/{number:020}")
}

/// A node's maintenance order znode.
pub fn pehra_maintenance_path(node: &str) -> String {
    format!("{PEHRA_MAINTENANCE}/{node}")
}

/// A broker's registration znode.
pub fn broker_path(id: u32) -> String {
    format!("{BROKERS}/{id}")
}

/// A broker's request for a controlled shutdown: an ephemeral znode it creates with its
/// own session. The controller then moves the leadership of its partitions to other
/// in-sync replicas and takes it out of every ISR; the shutdown is done when no partition
/// names it leader (or it leads a partition nobody else can take over).
pub fn shutdown_path(id: u32) -> String {
    format!("{SHUTDOWN}/{id}")
}

/// The warm handover order of `topic`/`partition` (see [`HANDOVERS`]).
pub fn handover_path(topic: &str, partition: u32) -> String {
    format!("{HANDOVERS}/{topic}:{partition}")
}

/// The partition a [`HANDOVERS`] child names.
pub fn handover_partition(name: &str) -> Option<(String, u32)> {
    let (topic, partition) = name.rsplit_once(':')?;
    Some((topic.to_string(), partition.parse().ok()?))
}

/// Broker `id`'s absence record (see [`ABSENT`]).
pub fn absent_path(id: u32) -> String {
    format!("{ABSENT}/{id}")
}

/// Now, in ms since the Unix epoch (the times the cluster's znodes hold): the drivers'
/// one wall clock.
pub use pehra_shared::driver::clock::unix_ms;

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

/// The session timeout the zookeeper's own services ask for (the server clamps it to
/// its `max_session_timeout`, 60 s by default).
pub const SERVICE_SESSION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Runs one of the zookeeper's own cluster services (the controller, the PEHRA
/// coordinator) on a session of its own to the zookeeper at `addr`, and closes that
/// session when `service` returns.
///
/// The session asks for [`SERVICE_SESSION_TIMEOUT`]: the services run inside the
/// zookeeper's process and own no ephemeral znodes, so their session can only fail with
/// the process itself, and its heartbeats (a third of the timeout apart) were most of an
/// idle zookeeper's wakeups at the 10 s they used to ask for.
pub(crate) async fn run_as_service(
    addr: std::net::SocketAddr,
    credentials: Option<std::sync::Arc<pehra_shared::security::credentials::Credentials>>,
    service: impl AsyncFnOnce(&Client) -> Result<(), ZkError>,
) -> Result<(), ZkError> {
    let options = pehra_zookeeper::client::ClientOptions {
        session_timeout: SERVICE_SESSION_TIMEOUT,
        credentials,
        ..Default::default()
    };
    let client = Client::connect(addr, options).await?;
    let result = service(&client).await;
    let _ = client.close().await;
    result
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

/// The name under [`RECOVERING`] for broker `id`'s replica of `topic`/`partition`, or,
/// with `None`, for all of its replicas.
pub fn recovering_name(id: u32, replica: Option<(&str, u32)>) -> String {
    match replica {
        Some((topic, partition)) => format!("{id}:{topic}:{partition}"),
        None => format!("{id}:*"),
    }
}

/// The replicas that reported that they may not lead (see [`RECOVERING`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ineligible {
    /// Brokers none of whose replicas may lead yet (their logs are not open).
    pub all: BTreeSet<u32>,
    /// Per partition, the brokers whose replica of it may not lead.
    pub partitions: BTreeMap<(String, u32), BTreeSet<u32>>,
}

impl Ineligible {
    /// Reads the names under [`RECOVERING`] (unknown names are ignored).
    pub fn from_names<S: AsRef<str>>(names: &[S]) -> Ineligible {
        let mut out = Ineligible::default();
        for name in names {
            let name = name.as_ref();
            let Some((id, rest)) = name.split_once(':') else {
                continue;
            };
            let Ok(id) = id.parse::<u32>() else {
                continue;
            };
            if rest == "*" {
                out.all.insert(id);
            } else if let Some((topic, partition)) = rest.rsplit_once(':') {
                if let Ok(partition) = partition.parse::<u32>() {
                    out.partitions
                        .entry((topic.to_owned(), partition))
                        .or_default()
                        .insert(id);
                }
            }
        }
        out
    }

    /// The brokers that reported lacking records of `topic`/`partition` (behind their
    /// high watermark, or damaged): not those whose logs are merely not open yet.
    pub fn lacking(&self, topic: &str, partition: u32) -> BTreeSet<u32> {
        self.partitions
            .get(&(topic.to_owned(), partition))
            .cloned()
            .unwrap_or_default()
    }

    /// The brokers whose replica of `topic`/`partition` may not lead.
    pub fn of(&self, topic: &str, partition: u32) -> BTreeSet<u32> {
        let mut ids = self.all.clone();
        if let Some(these) = self.partitions.get(&(topic.to_owned(), partition)) {
            ids.extend(these);
        }
        ids
    }
}

/// The replicas that reported that they may not lead now.
pub async fn ineligible_replicas(client: &Client) -> Result<Ineligible, ZkError> {
    match client.get_children(RECOVERING).await {
        Ok((names, _)) => Ok(Ineligible::from_names(&names)),
        Err(e) if e.kind() == Some(ErrorKind::NotFound) => Ok(Ineligible::default()),
        Err(e) => Err(e),
    }
}

/// Why each replica under [`RECOVERING`] may not lead, by its name there (for status).
pub async fn recovering_reasons(client: &Client) -> Result<BTreeMap<String, String>, ZkError> {
    let names = match client.get_children(RECOVERING).await {
        Ok((names, _)) => names,
        Err(e) if e.kind() == Some(ErrorKind::NotFound) => return Ok(BTreeMap::new()),
        Err(e) => return Err(e),
    };
    let mut reasons = BTreeMap::new();
    for name in names {
        match client.get_data(&format!("{RECOVERING}/{name}")).await {
            Ok((data, _)) => {
                reasons.insert(name, String::from_utf8_lossy(&data).into_owned());
            }
            Err(e) if e.kind() == Some(ErrorKind::NotFound) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(reasons)
}

/// The brokers that asked for a controlled shutdown (children of [`SHUTDOWN`]).
pub async fn shutting_down(client: &Client) -> Result<BTreeSet<u32>, ZkError> {
    match client.get_children(SHUTDOWN).await {
        Ok((ids, _)) => Ok(ids.iter().filter_map(|id| id.parse().ok()).collect()),
        Err(e) if e.kind() == Some(ErrorKind::NotFound) => Ok(BTreeSet::new()),
        Err(e) => Err(e),
    }
}

/// The brokers that may take new work: live and not shutting down, by id.
pub async fn available_brokers(client: &Client) -> Result<BTreeMap<u32, BrokerInfo>, ZkError> {
    let mut brokers = live_brokers(client).await?;
    let leaving = shutting_down(client).await?;
    brokers.retain(|id, _| !leaving.contains(id));
    Ok(brokers)
}

/// Whether `b` may join `chosen` in repulsion pass `pass`: 0 wants a new host and a new
/// rack, 1 a new host, 2 anything.
fn repels(chosen: &[&BrokerInfo], b: &BrokerInfo, pass: u8) -> bool {
    let new_host = chosen.iter().all(|c| c.host != b.host);
    let new_rack = chosen.iter().all(|c| c.rack.is_none() || c.rack != b.rack);
    match pass {
        0 => new_host && new_rack,
        1 => new_host,
        _ => true,
    }
}

/// The first of `candidates` (in order of preference) that repels best from `chosen`:
/// one on a new host and rack if any, else on a new host, else the first.
pub(crate) fn pick_repelling<'a>(
    chosen: &[&BrokerInfo],
    candidates: &[&'a BrokerInfo],
) -> Option<&'a BrokerInfo> {
    (0..3).find_map(|pass| candidates.iter().find(|b| repels(chosen, b, pass)).copied())
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
            if repels(&chosen, b, pass) {
                chosen.push(b);
            }
        }
    }
    chosen.into_iter().map(|b| b.id).collect()
}

/// Gives every topic all its partitions, then settles every partition once: leaders of
/// dead or shutting-down brokers replaced, unavailable brokers out of the ISR (clean
/// elections only, no re-replication). [`Controller`] does this on every change.
pub async fn reconcile(client: &Client) -> Result<(), ZkError> {
    let config = ControllerConfig {
        unclean_election: false,
        replace_dead_after: None,
    };
    controller::Reconciler::new(config).pass(client).await?;
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
    fn recovering_names_are_read_back() {
        let names = [
            recovering_name(1, None),
            recovering_name(2, Some(("a:b-c", 3))),
            recovering_name(3, Some(("t", 0))),
            "junk".into(),
            "x:t:0".into(),
            "4:t:x".into(),
        ];
        let i = Ineligible::from_names(&names);
        assert_eq!(i.of("a:b-c", 3), BTreeSet::from([1, 2]));
        assert_eq!(i.of("t", 0), BTreeSet::from([1, 3]));
        assert_eq!(i.of("t", 1), BTreeSet::from([1]));
    }

    #[test]
    fn topic_names_are_checked() {
        assert!(validate_topic("temps.room-1_a").is_ok());
        for bad in ["", "a/b", "..", "with space", &"x".repeat(201)] {
            assert!(validate_topic(bad).is_err(), "{bad:?}");
        }
    }
}
