//! The controller's side of the warm (predictive) handover of partition leaders: the
//! driver of [`super::handover`]'s decisions over the orders under [`HANDOVERS`].
//!
//! 1. An order appears: the admin's (`pehra cluster handover`), or the controller's own
//!    when a leader's Node Health Index (its PEHRA status) falls to the trigger class
//!    and a healthier in-sync replica exists.
//! 2. The controller chooses the candidate ([`handover::candidate`], or the admin's
//!    `--to`) and writes it into the order (`presync`): the leader stops appending to
//!    the partition (it holds new produces), waits until every in-sync replica, the
//!    candidate included, has its whole log (so every acks=all produce is answered) and
//!    confirms with its log end (`ready_log_end`).
//! 3. The Lease Transfer: one multi writes the partition with the candidate as leader
//!    and the leader epoch bumped (conditional on the version read) and deletes the
//!    order (conditional on the version that carries the confirmation). The old leader
//!    follows from then on and forwards the produces it held to the new leader.
//! 4. Rollback: the candidate's session lost, the candidate out of the ISR or
//!    ineligible, the leader lost, the partition changed meanwhile, or no confirmation
//!    within [`HandoverConfig::presync_timeout_ms`]: the order is deleted and nothing
//!    else is written; the leader appends again, and the ordinary election
//!    ([`super::election::decide`], run by the controller on every change) deals with
//!    the dead.
//!
//! The counts and the last outcome are the data of [`HANDOVERS`]
//! ([`HandoverStats`], shown by `pehra cluster status`).
//!
//! What wakes the driver: the orders, the live brokers and the nodes' PEHRA statuses
//! (the health) through watches; while a leader is unhealthy or an order is open, also
//! every [`HEALTH_POLL`] (a leadership moved to an unhealthy broker changes no status,
//! a cooldown ends, a pre-sync times out); otherwise only every [`RESYNC`]. It polled
//! every second before, 7 reads of its own zookeeper each time (issue 19: an idle
//! zookeeper with two awake brokers went from 196 wake-ups a minute to 76).

use super::handover::{
    self, HandoverConfig, HandoverOrder, HandoverReason, HandoverResult, HandoverStats, PreSync,
    Rating, Step,
};
use super::{
    broker_id_of, ensure_path, handover_partition, handover_path, ineligible_replicas,
    live_brokers, partition_path, partitions_path, pehra_node_path, pehra_statuses, shutting_down,
    unix_ms, BROKERS, HANDOVERS, PEHRA_NODES, TOPICS,
};
use pehra_shared::time::Instant as MachineTime;
use pehra_shared::wire::{self, ErrorKind, MultiOp, NodeStatus, PartitionMetadata};
use pehra_zookeeper::client::{Client, CreateMode, SessionState, WatchEvent, ZkError};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How often the leaders' health is looked at while one of them is unhealthy or an
/// order is open.
const HEALTH_POLL: Duration = Duration::from_secs(1);
/// How often the driver looks without being woken otherwise (a safety net: the watches
/// wake it for every change it acts on). Every 30 s until 2026-12-05 (issue 19: an idle
/// zookeeper's wakeups).
const RESYNC: Duration = Duration::from_secs(300);
/// After a handover of a partition ended, no health-triggered one for it for this long.
const COOLDOWN: Duration = Duration::from_secs(30);
/// After a failed pass, the next one comes this soon.
const RETRY: Duration = Duration::from_millis(500);

/// Runs the warm handovers until the session is lost (an error) or a watch ends.
pub async fn drive(client: &Client, config: HandoverConfig) -> Result<(), ZkError> {
    ensure_path(client, HANDOVERS).await?;
    let (tx, mut changed) = mpsc::unbounded_channel::<()>();
    let mut orders = client.watch_children(HANDOVERS).await?;
    let mut brokers = client.watch_children(BROKERS).await?;
    ensure_path(client, PEHRA_NODES).await?;
    let mut nodes = client.watch_children(PEHRA_NODES).await?;
    let mut session = client.session_state();
    let mut driver = Driver {
        config,
        active: BTreeMap::new(),
        cooldown: BTreeMap::new(),
        watched: BTreeSet::new(),
        statuses_watched: BTreeMap::new(),
    };
    loop {
        let now = Instant::now();
        let wake = match driver.pass(client, &tx).await {
            Ok(next) => next,
            Err(e) => {
                tracing::warn!(error = %e, "handover: pass failed; retrying");
                now + RETRY
            }
        };
        tokio::select! {
            e = orders.next() => match e {
                Some(Ok(WatchEvent::Deleted)) => {
                    ensure_path(client, HANDOVERS).await?;
                    orders = client.watch_children(HANDOVERS).await?;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Err(ZkError::SessionExpired),
            },
            e = brokers.next() => match e {
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Err(ZkError::SessionExpired),
            },
            e = nodes.next() => match e {
                Some(Ok(WatchEvent::Deleted)) => {
                    ensure_path(client, PEHRA_NODES).await?;
                    nodes = client.watch_children(PEHRA_NODES).await?;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Err(ZkError::SessionExpired),
            },
            _ = changed.recv() => {}
            _ = tokio::time::sleep_until(wake) => {}
            // (The guard `wait_for` gives is dropped at once: the future stays `Send`.)
            _ = async {
                let _ = session
                    .wait_for(|s| matches!(s, SessionState::Expired | SessionState::Closed))
                    .await;
            } => {
                return Err(ZkError::SessionExpired);
            }
        }
        while changed.try_recv().is_ok() {}
    }
}

/// A handover the controller started.
struct Active {
    handover: handover::Handover,
    started: Instant,
}

impl Active {
    /// A pre-sync of `meta`'s leadership to `candidate`, starting now. The handover's
    /// time is this driver's monotonic clock (since `started`), not the wall clock:
    /// a wall-clock step back once held its timeout off (the driver woke at the
    /// deadline, was told to wait, and woke again at once, until the wall clock caught
    /// up), a step forward cut it short.
    fn start(config: &HandoverConfig, meta: PartitionMetadata, candidate: u32) -> Active {
        Active {
            handover: handover::Handover::start(config, meta, candidate, MachineTime::ZERO),
            started: Instant::now(),
        }
    }

    /// What to do now, from the partition and the log ends (see [`handover::Handover::step`]).
    fn step(
        &self,
        meta: &PartitionMetadata,
        live: &BTreeSet<u32>,
        ineligible: &BTreeSet<u32>,
        leader_log_end: Option<u64>,
        candidate_log_end: Option<u64>,
    ) -> Step {
        let now = MachineTime::from_micros(
            u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX),
        );
        self.handover.step(
            now,
            meta,
            live,
            ineligible,
            leader_log_end,
            candidate_log_end,
        )
    }
}

struct Driver {
    config: HandoverConfig,
    /// By order name.
    active: BTreeMap<String, Active>,
    /// No health trigger for these partitions until then.
    cooldown: BTreeMap<(String, u32), Instant>,
    /// Orders whose data is watched.
    watched: BTreeSet<String>,
    /// The nodes whose PEHRA status (health) is watched, with the task forwarding its
    /// changes (finished once the watch ended: watched again at the next pass).
    statuses_watched: BTreeMap<String, tokio::task::JoinHandle<()>>,
}

/// One partition as read.
struct Part {
    meta: PartitionMetadata,
    version: u32,
}

async fn read_partition(client: &Client, topic: &str, p: u32) -> Result<Option<Part>, ZkError> {
    match client.get_data(&partition_path(topic, p)).await {
        Ok((data, stat)) => Ok(wire::decode::<PartitionMetadata>(&data)
            .ok()
            .map(|meta| Part {
                meta,
                version: stat.version,
            })),
        Err(e) if e.kind() == Some(ErrorKind::NotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Every partition's state, by topic and number.
async fn read_all(client: &Client) -> Result<BTreeMap<(String, u32), PartitionMetadata>, ZkError> {
    let mut all = BTreeMap::new();
    let topics = match client.get_children(TOPICS).await {
        Ok((t, _)) => t,
        Err(e) if e.kind() == Some(ErrorKind::NotFound) => return Ok(all),
        Err(e) => return Err(e),
    };
    for topic in topics {
        let partitions = match client.get_children(&partitions_path(&topic)).await {
            Ok((p, _)) => p,
            Err(e) if e.kind() == Some(ErrorKind::NotFound) => continue,
            Err(e) => return Err(e),
        };
        for p in partitions.iter().filter_map(|p| p.parse::<u32>().ok()) {
            if let Some(part) = read_partition(client, &topic, p).await? {
                all.insert((topic.clone(), p), part.meta);
            }
        }
    }
    Ok(all)
}

/// What a pass knows about the brokers.
struct View {
    /// Live and not shutting down.
    available: BTreeSet<u32>,
    ineligible: super::Ineligible,
    ratings: BTreeMap<u32, Rating>,
}

impl Driver {
    /// Advances every order and starts the health-triggered ones; returns when it must
    /// look again at the latest (a pre-sync timeout).
    async fn pass(
        &mut self,
        client: &Client,
        changed: &mpsc::UnboundedSender<()>,
    ) -> Result<Instant, ZkError> {
        let now = Instant::now();
        let live = live_brokers(client).await?;
        let leaving = shutting_down(client).await?;
        let available: BTreeSet<u32> = live
            .keys()
            .copied()
            .filter(|b| !leaving.contains(b))
            .collect();
        let ineligible = ineligible_replicas(client).await?;
        let statuses = pehra_statuses(client).await?;
        self.watch_statuses(client, &statuses, changed).await;
        let indexes = health_indexes(&statuses);
        let (names, _) = client.get_children(HANDOVERS).await?;
        let names: BTreeSet<String> = names.into_iter().collect();
        self.active.retain(|n, _| names.contains(n));
        self.watched.retain(|n| names.contains(n));
        self.cooldown.retain(|_, until| *until > now);
        let unhealthy = indexes
            .iter()
            .any(|(_, &i)| handover::should_hand_over(&self.config, Some(i), false));
        // Loads (partitions led) are only needed to choose a candidate.
        let all = if unhealthy || !names.is_empty() {
            read_all(client).await?
        } else {
            BTreeMap::new()
        };
        let mut load: BTreeMap<u32, u32> = BTreeMap::new();
        for meta in all.values() {
            if let Some(l) = meta.leader {
                *load.entry(l).or_default() += 1;
            }
        }
        let ratings = ratings(&statuses, &load);
        let view = View {
            available,
            ineligible,
            ratings,
        };
        let mut next = now
            + if unhealthy || !names.is_empty() {
                HEALTH_POLL
            } else {
                RESYNC
            };
        for name in &names {
            if self.watched.insert(name.clone()) {
                watch_order(client, name, changed, &mut self.watched).await;
            }
            if let Some(deadline) = self.advance(client, name, &view).await? {
                next = next.min(deadline);
            }
        }
        if unhealthy {
            self.trigger_on_health(client, &all, &names, &view, &indexes)
                .await?;
        }
        Ok(next)
    }

    /// Watches the status of every broker in `statuses` not watched yet (or whose watch
    /// ended), and stops watching those gone: a change wakes the driver through
    /// `changed`. Only brokers: their health is all the handovers read, and no other
    /// name under [`PEHRA_NODES`] costs the zookeeper an observation.
    async fn watch_statuses(
        &mut self,
        client: &Client,
        statuses: &[NodeStatus],
        changed: &mpsc::UnboundedSender<()>,
    ) {
        let present: BTreeSet<&str> = statuses
            .iter()
            .filter(|s| broker_id_of(&s.node).is_some())
            .map(|s| s.node.as_str())
            .collect();
        self.statuses_watched.retain(|node, task| {
            let keep = present.contains(node.as_str()) && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        for node in present {
            if !self.statuses_watched.contains_key(node) {
                if let Some(task) = forward_changes(client, &pehra_node_path(node), changed).await {
                    self.statuses_watched.insert(node.to_string(), task);
                }
            }
        }
    }

    /// Creates an order for each partition whose leader is unhealthy and has a
    /// candidate.
    async fn trigger_on_health(
        &mut self,
        client: &Client,
        all: &BTreeMap<(String, u32), PartitionMetadata>,
        orders: &BTreeSet<String>,
        view: &View,
        indexes: &BTreeMap<u32, u16>,
    ) -> Result<(), ZkError> {
        for ((topic, p), meta) in all {
            let Some(leader) = meta.leader else { continue };
            if !handover::should_hand_over(&self.config, indexes.get(&leader).copied(), false)
                || self.cooldown.contains_key(&(topic.clone(), *p))
                || orders.contains(&format!("{topic}:{p}"))
            {
                continue;
            }
            let ineligible = view.ineligible.of(topic, *p);
            let Some(to) = handover::candidate(
                &self.config,
                meta,
                &view.available,
                &ineligible,
                &view.ratings,
            ) else {
                continue;
            };
            tracing::info!(%topic, partition = p, leader, candidate = to, index = indexes.get(&leader), "handover: the leader's health fell; handing over");
            let order = HandoverOrder {
                reason: HandoverReason::Health,
                to: Some(to),
                presync: None,
                ready_log_end: None,
            };
            let data = wire::encode(&order).expect("encodes");
            match client
                .create(&handover_path(topic, *p), &data, CreateMode::Persistent)
                .await
            {
                Ok(_) => {}
                Err(e) if e.kind() == Some(ErrorKind::NodeExists) => {}
                Err(e) => return Err(e),
            }
            self.cooldown
                .insert((topic.clone(), *p), Instant::now() + COOLDOWN);
        }
        Ok(())
    }

    /// Moves one order on; returns its pre-sync deadline while it waits.
    async fn advance(
        &mut self,
        client: &Client,
        name: &str,
        view: &View,
    ) -> Result<Option<Instant>, ZkError> {
        let path = format!("{HANDOVERS}/{name}");
        let (order, order_version) = match client.get_data(&path).await {
            Ok((data, stat)) => match wire::decode::<HandoverOrder>(&data) {
                Ok(o) => (o, stat.version),
                Err(e) => {
                    tracing::warn!(%path, error = %e, "handover: order does not decode; dropped");
                    delete_order(client, &path, None).await?;
                    return Ok(None);
                }
            },
            Err(e) if e.kind() == Some(ErrorKind::NotFound) => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some((topic, p)) = handover_partition(name) else {
            delete_order(client, &path, Some(order_version)).await?;
            return Ok(None);
        };
        let Some(part) = read_partition(client, &topic, p).await? else {
            delete_order(client, &path, Some(order_version)).await?;
            return Ok(None);
        };
        let ineligible = view.ineligible.of(&topic, p);
        let now_ms = unix_ms();
        let presync = match order.presync {
            Some(presync) => presync,
            None => {
                // Choose the candidate and start the pre-sync.
                let chosen = match order.to {
                    Some(to) => Some(to).filter(|&to| {
                        Some(to) != part.meta.leader
                            && part.meta.isr.contains(&to)
                            && part.meta.replicas.contains(&to)
                            && view.available.contains(&to)
                            && !ineligible.contains(&to)
                    }),
                    None => handover::candidate(
                        &self.config,
                        &part.meta,
                        &view.available,
                        &ineligible,
                        &view.ratings,
                    )
                    .or_else(|| least_loaded(&part.meta, view, &ineligible)),
                };
                let (Some(leader), Some(candidate)) = (part.meta.leader, chosen) else {
                    tracing::warn!(%topic, partition = p, to = ?order.to, "handover: no replica can take over");
                    let result = HandoverResult {
                        topic: topic.clone(),
                        partition: p,
                        from: part.meta.leader,
                        to: order.to,
                        reason: order.reason,
                        outcome: "no candidate".into(),
                        took_ms: 0,
                        at_ms: now_ms,
                    };
                    end_order(
                        client,
                        &path,
                        order_version,
                        |s| s.no_candidate += 1,
                        result,
                    )
                    .await?;
                    return Ok(None);
                };
                let presync = PreSync {
                    leader,
                    candidate,
                    leader_epoch: part.meta.leader_epoch,
                };
                let started = HandoverOrder {
                    presync: Some(presync),
                    ready_log_end: None,
                    ..order.clone()
                };
                let data = wire::encode(&started).expect("encodes");
                match client.set_data(&path, &data, Some(order_version)).await {
                    Ok(_) => {}
                    Err(e) if e.kind() == Some(ErrorKind::VersionMismatch) => return Ok(None),
                    Err(e) if e.kind() == Some(ErrorKind::NotFound) => return Ok(None),
                    Err(e) => return Err(e),
                }
                tracing::info!(%topic, partition = p, leader, candidate, reason = ?order.reason, "handover: pre-sync started");
                self.active.insert(
                    name.to_string(),
                    Active::start(&self.config, part.meta.clone(), candidate),
                );
                return Ok(Some(
                    Instant::now() + Duration::from_millis(self.config.presync_timeout_ms),
                ));
            }
        };
        // A pre-sync under way (started by an earlier run of the controller, if this one
        // does not know it: its clock starts now).
        let active = self.active.entry(name.to_string()).or_insert_with(|| {
            let meta = PartitionMetadata {
                leader: Some(presync.leader),
                leader_epoch: presync.leader_epoch,
                ..part.meta.clone()
            };
            Active::start(&self.config, meta, presync.candidate)
        });
        let confirmed = order.ready_log_end;
        let step = active.step(
            &part.meta,
            &view.available,
            &ineligible,
            confirmed,
            confirmed,
        );
        let took_ms = active.started.elapsed().as_millis() as u64;
        let deadline = active.started + Duration::from_millis(self.config.presync_timeout_ms);
        let result = |outcome: String| HandoverResult {
            topic: topic.clone(),
            partition: p,
            from: Some(presync.leader),
            to: Some(presync.candidate),
            reason: order.reason,
            outcome,
            took_ms,
            at_ms: now_ms,
        };
        match step {
            Step::Wait => Ok(Some(deadline)),
            Step::Transfer { meta, log_end } => {
                // The transfer, the end of the order and its count: all or nothing.
                let ops = vec![
                    MultiOp::SetData {
                        path: partition_path(&topic, p),
                        data: wire::encode(&meta).expect("encodes"),
                        version: Some(part.version),
                    },
                    MultiOp::Delete {
                        path: path.clone(),
                        version: Some(order_version),
                    },
                    count_op(client, |s| s.completed += 1, result("completed".into())).await?,
                ];
                match client.multi(ops).await {
                    Ok(_) => {
                        tracing::info!(%topic, partition = p, from = presync.leader, to = presync.candidate, epoch = meta.leader_epoch, log_end, took_ms, "handover: lease transferred");
                        self.active.remove(name);
                        Ok(None)
                    }
                    // The partition or the order changed meanwhile: decide again.
                    Err(e)
                        if matches!(
                            e.kind(),
                            Some(ErrorKind::VersionMismatch | ErrorKind::NotFound)
                        ) =>
                    {
                        Ok(Some(Instant::now()))
                    }
                    Err(e) => Err(e),
                }
            }
            Step::RollBack(why) => {
                tracing::warn!(%topic, partition = p, leader = presync.leader, candidate = presync.candidate, why = why.as_str(), "handover: rolled back; the ordinary election decides");
                self.active.remove(name);
                let outcome = format!("rolled back: {}", why.as_str());
                end_order(
                    client,
                    &path,
                    order_version,
                    |s| s.rolled_back += 1,
                    result(outcome),
                )
                .await?;
                Ok(None)
            }
        }
    }
}

/// The Node Health Index each broker published in its PEHRA status, by broker id.
fn health_indexes(statuses: &[NodeStatus]) -> BTreeMap<u32, u16> {
    statuses
        .iter()
        .filter_map(|s| Some((broker_id_of(&s.node)?, s.nhi?)))
        .collect()
}

/// What the candidate choice knows of each broker that published its health: the index
/// and the mean RTT from its PEHRA status (0 if it has measured none yet) and `load`,
/// the partitions it leads.
fn ratings(statuses: &[NodeStatus], load: &BTreeMap<u32, u32>) -> BTreeMap<u32, Rating> {
    statuses
        .iter()
        .filter_map(|s| {
            let b = broker_id_of(&s.node)?;
            let r = Rating {
                index: s.nhi?,
                load: load.get(&b).copied().unwrap_or(0),
                rtt_ms: s.rtt_ms.unwrap_or(0),
            };
            Some((b, r))
        })
        .collect()
}

/// Without health reports (brokers that take no part in PEHRA), an operator's handover
/// goes to the eligible in-sync replica that leads the fewest partitions.
fn least_loaded(meta: &PartitionMetadata, view: &View, ineligible: &BTreeSet<u32>) -> Option<u32> {
    meta.isr
        .iter()
        .copied()
        .filter(|&b| Some(b) != meta.leader && meta.replicas.contains(&b))
        .filter(|b| view.available.contains(b) && !ineligible.contains(b))
        .min_by_key(|b| (view.ratings.get(b).map_or(0, |r| r.load), *b))
}

/// Deletes an order; `false` if someone else did (or it changed) first.
async fn delete_order(client: &Client, path: &str, version: Option<u32>) -> Result<bool, ZkError> {
    match client.delete(path, version).await {
        Ok(()) => Ok(true),
        Err(e)
            if matches!(
                e.kind(),
                Some(ErrorKind::NotFound | ErrorKind::VersionMismatch)
            ) =>
        {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// The write that counts an outcome in the stats (the controller is their only writer).
async fn count_op(
    client: &Client,
    count: impl FnOnce(&mut HandoverStats),
    result: HandoverResult,
) -> Result<MultiOp, ZkError> {
    let mut stats = read_stats(client).await?;
    count(&mut stats);
    stats.last = Some(result);
    Ok(MultiOp::SetData {
        path: HANDOVERS.to_string(),
        data: wire::encode(&stats).expect("encodes"),
        version: None,
    })
}

/// Deletes an order (if it is still at `version`) and counts its outcome, together.
async fn end_order(
    client: &Client,
    path: &str,
    version: u32,
    count: impl FnOnce(&mut HandoverStats),
    result: HandoverResult,
) -> Result<(), ZkError> {
    let ops = vec![
        MultiOp::Delete {
            path: path.to_string(),
            version: Some(version),
        },
        count_op(client, count, result).await?,
    ];
    match client.multi(ops).await {
        Ok(_) => Ok(()),
        // Changed or gone meanwhile: the next pass decides again.
        Err(e)
            if matches!(
                e.kind(),
                Some(ErrorKind::NotFound | ErrorKind::VersionMismatch)
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// The handover counts (zeros before the first handover).
pub async fn read_stats(client: &Client) -> Result<HandoverStats, ZkError> {
    match client.get_data(HANDOVERS).await {
        Ok((data, _)) => Ok(wire::decode(&data).unwrap_or_default()),
        Err(e) if e.kind() == Some(ErrorKind::NotFound) => Ok(HandoverStats::default()),
        Err(e) => Err(e),
    }
}

/// Watches an order's data: every change (the leader's confirmation) wakes the driver.
async fn watch_order(
    client: &Client,
    name: &str,
    changed: &mpsc::UnboundedSender<()>,
    watched: &mut BTreeSet<String>,
) {
    if forward_changes(client, &format!("{HANDOVERS}/{name}"), changed)
        .await
        .is_none()
    {
        watched.remove(name);
    }
}

/// Watches the data of `path` and signals `changed` at every change, until the watch
/// ends; `None` if it cannot be watched.
async fn forward_changes(
    client: &Client,
    path: &str,
    changed: &mpsc::UnboundedSender<()>,
) -> Option<tokio::task::JoinHandle<()>> {
    let mut watch = client.watch_data(path).await.ok()?;
    let changed = changed.clone();
    Some(tokio::spawn(async move {
        while let Some(event) = watch.next().await {
            if changed.send(()).is_err() || event.is_err() {
                break;
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pehra_shared::wire::NodeRole;

    fn status(node: &str, nhi: Option<u16>, rtt_ms: Option<u32>) -> NodeStatus {
        NodeStatus {
            node: node.into(),
            addr: "127.0.0.1:5683".into(),
            role: NodeRole::Awake,
            candidate: true,
            stay_awake: true,
            idle: false,
            next_alarm_ms: None,
            office: None,
            wake_generation: 0,
            since_ms: 0,
            nhi,
            lease_ms: None,
            rtt_ms,
        }
    }

    #[test]
    fn the_view_carries_each_brokers_reported_rtt_index_and_load() {
        let statuses = [
            status("broker-1", Some(700), Some(3)),
            status("broker-2", Some(900), Some(40)),
            status("broker-3", Some(900), None),
            status("broker-4", None, Some(1)),
            status("device-7", Some(1000), Some(1)),
        ];
        let load = BTreeMap::from([(1, 2), (2, 1)]);
        let r = ratings(&statuses, &load);
        let rating = |index, load, rtt_ms| Rating {
            index,
            load,
            rtt_ms,
        };
        assert_eq!(
            r,
            BTreeMap::from([
                (1, rating(700, 2, 3)),
                (2, rating(900, 1, 40)),
                (3, rating(900, 0, 0)),
            ]),
            "no index, or not a broker: not rated"
        );
        assert_eq!(
            health_indexes(&statuses),
            BTreeMap::from([(1, 700), (2, 900), (3, 900)])
        );
    }

    #[test]
    fn of_two_equally_healthy_and_loaded_replicas_the_nearer_takes_over() {
        let statuses = [
            status("broker-1", Some(500), Some(5)),
            status("broker-2", Some(900), Some(30)),
            status("broker-3", Some(900), Some(4)),
        ];
        let meta = PartitionMetadata {
            partition: 0,
            leader: Some(1),
            leader_epoch: 1,
            replicas: vec![1, 2, 3],
            isr: vec![1, 2, 3],
            elr: Vec::new(),
        };
        let live = BTreeSet::from([1, 2, 3]);
        let load = BTreeMap::from([(1, 1)]);
        let config = HandoverConfig::default();
        let chosen = handover::candidate(
            &config,
            &meta,
            &live,
            &BTreeSet::new(),
            &ratings(&statuses, &load),
        );
        assert_eq!(chosen, Some(3), "broker 3 reports 4 ms, broker 2 30 ms");
    }

    /// The pre-sync's timeout runs on the driver's monotonic clock: with the wall clock
    /// stepped back an hour it still times out when its time is up (it once said
    /// "wait" until the wall clock caught up, and the driver woke again and again).
    #[test]
    fn the_presync_timeout_ignores_wall_clock_steps() {
        use pehra_shared::driver::clock;
        let config = HandoverConfig::default();
        let meta = PartitionMetadata {
            partition: 0,
            leader: Some(1),
            leader_epoch: 4,
            replicas: vec![1, 2, 3],
            isr: vec![1, 2, 3],
            elr: Vec::new(),
        };
        let live: BTreeSet<u32> = [1, 2, 3].into();
        let mut active = Active::start(&config, meta.clone(), 2);
        let decide = |a: &Active| a.step(&meta, &live, &BTreeSet::new(), Some(10), Some(7));
        assert_eq!(decide(&active), Step::Wait);
        let real = clock::unix_ms();
        clock::set_wall_clock(Some(std::rc::Rc::new(move || real - 3_600_000)));
        active.started -= Duration::from_millis(config.presync_timeout_ms);
        let step = decide(&active);
        clock::set_wall_clock(None);
        assert_eq!(step, Step::RollBack(handover::RollBack::Timeout));
    }
}
