//! The controller loop: on every change of the live brokers, the topics or the shutdown
//! requests (and on a timer), it assigns new partitions, elects leaders, shrinks ISRs
//! and replaces brokers that stay dead too long.

use super::election::{self, Outcome};
use super::{
    absent_path, assign_replicas, ensure_path, ineligible_replicas, live_brokers, partition_path,
    partitions_path, pick_repelling, shutting_down, topic_path, unix_ms, Ineligible, ABSENT,
    BROKERS, RECOVERING, SHUTDOWN, TOPICS,
};
use pehra_shared::wire::{self, BrokerInfo, ErrorKind, MultiOp, PartitionMetadata, TopicConfig};
use pehra_zookeeper::client::{Client, CreateMode, SessionState, Watch, WatchEvent, ZkError};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::time::Instant;

/// Even without changes, the controller looks at everything this often: a safety net
/// (the watches wake it for every change it acts on; a partition it could not settle is
/// retried after [`RETRY`], a dead broker's replacement at its deadline). Every 30 s
/// until 2026-12-05, when it was a third of an idle zookeeper's wakeups (issue 19).
const RESYNC: Duration = Duration::from_secs(300);
/// After a failed pass (zookeeper busy or unreachable), the next one comes this soon.
const RETRY: Duration = Duration::from_secs(1);
/// Conditional writes to one partition lost to concurrent writers before giving up until
/// the next pass.
const MAX_ATTEMPTS: usize = 16;

/// How the controller behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerConfig {
    /// With no in-sync replica left, elect any live replica (which may lack records that
    /// were acknowledged): availability over durability. Off by default.
    pub unclean_election: bool,
    /// A replica whose broker has been absent this long is replaced by a live broker
    /// (`None`: never).
    pub replace_dead_after: Option<Duration>,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            unclean_election: false,
            replace_dead_after: Some(Duration::from_secs(300)),
        }
    }
}

/// The cluster controller, run as a client of the zookeeper's own tree.
pub struct Controller;

impl Controller {
    /// Runs the controller with the default [`ControllerConfig`] against the zookeeper at
    /// `addr` until its session is lost.
    pub async fn run(addr: SocketAddr) -> Result<(), ZkError> {
        Self::run_with(addr, ControllerConfig::default()).await
    }

    /// Runs the controller with `config` against the zookeeper at `addr` until its
    /// session is lost (an error) or a watch ends (`Ok`). Run it again to resume: the
    /// state lives in the tree (the absent brokers' clocks too, in `/admin/absent`).
    pub async fn run_with(addr: SocketAddr, config: ControllerConfig) -> Result<(), ZkError> {
        Self::run_secured(addr, None, config).await
    }

    /// [`Controller::run_with`], its client protected with OSCORE by `credentials` (the
    /// zookeeper's own, for a zookeeper with security on).
    pub async fn run_secured(
        addr: SocketAddr,
        credentials: Option<std::sync::Arc<pehra_shared::security::credentials::Credentials>>,
        config: ControllerConfig,
    ) -> Result<(), ZkError> {
        super::run_as_service(addr, credentials, async |client| {
            Self::run_on(client, config).await
        })
        .await
    }

    /// Runs the controller on an existing client (see [`Controller::run_with`]), and
    /// beside it the warm handovers of partition leaders ([`super::warm`]).
    pub async fn run_on(client: &Client, config: ControllerConfig) -> Result<(), ZkError> {
        tokio::select! {
            r = Self::reconcile(client, config) => r,
            r = super::warm::drive(client, super::handover::HandoverConfig::default()) => r,
        }
    }

    async fn reconcile(client: &Client, config: ControllerConfig) -> Result<(), ZkError> {
        for path in [BROKERS, RECOVERING, TOPICS, SHUTDOWN, ABSENT] {
            ensure_path(client, path).await?;
        }
        let mut brokers = Watched::new(client, BROKERS).await?;
        let mut topics = Watched::new(client, TOPICS).await?;
        let mut shutdown = Watched::new(client, SHUTDOWN).await?;
        let mut recovering = Watched::new(client, RECOVERING).await?;
        let mut session = client.session_state();
        let mut reconciler = Reconciler::new(config);
        tracing::info!(
            unclean_election = reconciler.config.unclean_election,
            replace_dead_after = ?reconciler.config.replace_dead_after,
            "controller started"
        );
        loop {
            let now = Instant::now();
            let wake = match reconciler.pass(client).await {
                Ok(deadline) => deadline.map_or(now + RESYNC, |d| d.min(now + RESYNC)),
                Err(e) => {
                    tracing::warn!(error = %e, "controller: reconcile failed; retrying");
                    now + RETRY
                }
            };
            tokio::select! {
                r = brokers.changed(client) => r?,
                r = topics.changed(client) => r?,
                r = shutdown.changed(client) => r?,
                r = recovering.changed(client) => r?,
                _ = tokio::time::sleep_until(wake) => {}
                _ = session.wait_for(|s| matches!(s, SessionState::Expired | SessionState::Closed)) => {
                    return Err(ZkError::SessionExpired);
                }
            }
        }
    }
}

/// A children watch that survives its znode being deleted and created again.
struct Watched {
    path: &'static str,
    watch: Watch,
}

impl Watched {
    async fn new(client: &Client, path: &'static str) -> Result<Watched, ZkError> {
        Ok(Watched {
            path,
            watch: client.watch_children(path).await?,
        })
    }

    /// Resolves on the next change.
    async fn changed(&mut self, client: &Client) -> Result<(), ZkError> {
        match self.watch.next().await {
            Some(Ok(WatchEvent::Deleted)) => {
                ensure_path(client, self.path).await?;
                self.watch = client.watch_children(self.path).await?;
                Ok(())
            }
            Some(Ok(_)) => Ok(()),
            Some(Err(e)) => Err(e),
            None => Err(ZkError::SessionExpired),
        }
    }
}

/// One partition as read, with the version its next write must name.
struct Read {
    topic: String,
    partition: u32,
    meta: PartitionMetadata,
    version: u32,
    /// The topic's minimum in-sync replicas (what the ELR is kept for).
    min_insync: u32,
}

/// Since when broker `b`, found absent now, has been absent: as its absence record says
/// (written by this controller or an earlier run of it), else from now on, recorded.
async fn absent_since(client: &Client, b: u32, now: Instant) -> Result<Instant, ZkError> {
    let path = absent_path(b);
    let recorded = match client.get_data(&path).await {
        Ok((data, _)) => std::str::from_utf8(&data)
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok()),
        Err(e) if e.kind() == Some(ErrorKind::NotFound) => None,
        Err(e) => return Err(e),
    };
    if let Some(since_ms) = recorded {
        let ago = Duration::from_millis(unix_ms().saturating_sub(since_ms));
        tracing::info!(broker = b, absent_for = ?ago, "controller: broker absent (recorded)");
        return Ok(now.checked_sub(ago).unwrap_or(now));
    }
    tracing::info!(broker = b, "controller: broker absent");
    let data = unix_ms().to_string();
    match client
        .create(&path, data.as_bytes(), CreateMode::Persistent)
        .await
    {
        Ok(_) => {}
        // Another writer recorded it meanwhile: theirs is as good (and older).
        Err(e) if e.kind() == Some(ErrorKind::NodeExists) => {}
        Err(e) => return Err(e),
    }
    Ok(now)
}

/// Deletes the absence records of brokers no longer absent (back, or named nowhere).
async fn forget_absences(client: &Client, absent: &BTreeMap<u32, Instant>) -> Result<(), ZkError> {
    let (recorded, _) = client.get_children(ABSENT).await?;
    for name in recorded {
        if name.parse::<u32>().is_ok_and(|b| absent.contains_key(&b)) {
            continue;
        }
        match client.delete(&format!("{ABSENT}/{name}"), None).await {
            Ok(()) => {}
            Err(e) if e.kind() == Some(ErrorKind::NotFound) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The controller's memory between passes.
pub(crate) struct Reconciler {
    config: ControllerConfig,
    /// A CSPRNG (ChaCha12 seeded by the OS): nobody can predict the next leader.
    rng: StdRng,
    /// When each broker named in some partition's replicas was first seen absent.
    absent_since: BTreeMap<u32, Instant>,
    /// Replacements that found no free broker, already logged.
    stuck: BTreeSet<(String, u32, u32)>,
}

impl Reconciler {
    pub(crate) fn new(config: ControllerConfig) -> Reconciler {
        Reconciler {
            config,
            rng: StdRng::from_seed(pehra_shared::driver::socket::seed32().expect("OS randomness")),
            absent_since: BTreeMap::new(),
            stuck: BTreeSet::new(),
        }
    }

    /// One pass over the whole cluster; returns when the next replacement falls due.
    pub(crate) async fn pass(&mut self, client: &Client) -> Result<Option<Instant>, ZkError> {
        let brokers = live_brokers(client).await?;
        let leaving = shutting_down(client).await?;
        // After the registrations: a broker reports `{id}:*` in the same multi that
        // registers it, so a registration seen here has its report seen too.
        let ineligible = ineligible_replicas(client).await?;
        let live: BTreeSet<u32> = brokers.keys().copied().collect();
        let available: Vec<BrokerInfo> = brokers
            .values()
            .filter(|b| !leaving.contains(&b.id))
            .cloned()
            .collect();
        let topics = match client.get_children(TOPICS).await {
            Ok((t, _)) => t,
            Err(e) if e.kind() == Some(ErrorKind::NotFound) => Vec::new(),
            Err(e) => return Err(e),
        };
        let mut reads = Vec::new();
        for topic in topics {
            reads.extend(read_topic(client, &topic, &available).await?);
        }

        // Who has been gone how long.
        let now = Instant::now();
        let named: BTreeSet<u32> = reads
            .iter()
            .flat_map(|r| r.meta.replicas.iter().copied())
            .collect();
        self.absent_since
            .retain(|b, _| named.contains(b) && !live.contains(b));
        let newly_absent: Vec<u32> = named
            .difference(&live)
            .filter(|b| !self.absent_since.contains_key(b))
            .copied()
            .collect();
        for b in newly_absent {
            let since = absent_since(client, b, now).await?;
            self.absent_since.insert(b, since);
        }
        forget_absences(client, &self.absent_since).await?;
        let due: BTreeSet<u32> = match self.config.replace_dead_after {
            Some(limit) => self
                .absent_since
                .iter()
                .filter(|(_, &since)| now >= since + limit)
                .map(|(&b, _)| b)
                .collect(),
            None => BTreeSet::new(),
        };
        let next = self.config.replace_dead_after.and_then(|limit| {
            self.absent_since
                .values()
                .map(|&since| since + limit)
                .filter(|&t| t > now)
                .min()
        });
        let mut load: BTreeMap<u32, usize> = BTreeMap::new();
        for r in &reads {
            for &b in &r.meta.replicas {
                *load.entry(b).or_default() += 1;
            }
        }
        self.stuck
            .retain(|(_, _, b)| due.contains(b) && named.contains(b));

        let mut first_error = None;
        for read in reads {
            let ctx = Context {
                live: &live,
                leaving: &leaving,
                available: &available,
                due: &due,
                ineligible: &ineligible,
            };
            if let Err(e) = self.settle(client, read, &ctx, &mut load).await {
                tracing::warn!(error = %e, "controller: a partition could not be settled");
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(next),
        }
    }

    /// Brings one partition to what [`election::decide`] and re-replication want,
    /// re-reading and deciding again whenever another writer got there first.
    async fn settle(
        &mut self,
        client: &Client,
        mut read: Read,
        ctx: &Context<'_>,
        load: &mut BTreeMap<u32, usize>,
    ) -> Result<(), ZkError> {
        let path = partition_path(&read.topic, read.partition);
        for _ in 0..MAX_ATTEMPTS {
            let old = &read.meta;
            let ineligible = ctx.ineligible.of(&read.topic, read.partition);
            // ELR members that reported lacking records leave it first (a write even if
            // nothing else changes).
            let lacking = ctx.ineligible.lacking(&read.topic, read.partition);
            let pruned = election::forget_lacking_elr(old, &lacking);
            let elected = election::decide_with_lacking(
                pruned.as_ref().unwrap_or(old),
                ctx.live,
                ctx.leaving,
                &ineligible,
                &lacking,
                read.min_insync,
                self.config.unclean_election,
                &mut self.rng,
            )
            .or(pruned);
            let base = elected.as_ref().unwrap_or(old);
            let replaced = replace_dead(base, ctx.due, ctx.available, load);
            for &dead in &replaced.stuck {
                if self
                    .stuck
                    .insert((read.topic.clone(), read.partition, dead))
                {
                    tracing::warn!(
                        topic = %read.topic,
                        partition = read.partition,
                        broker = dead,
                        "controller: cannot replace a dead replica: every available broker already holds this partition"
                    );
                }
            }
            let Some(new) = replaced.meta.or(elected) else {
                return Ok(());
            };
            let data = wire::encode(&new).expect("encodes");
            match client.set_data(&path, &data, Some(read.version)).await {
                Ok(_) => {
                    log_change(&read.topic, old, &new, &ineligible);
                    for &b in &old.replicas {
                        if let Some(n) = load.get_mut(&b) {
                            *n = n.saturating_sub(1);
                        }
                    }
                    for &b in &new.replicas {
                        *load.entry(b).or_default() += 1;
                    }
                    return Ok(());
                }
                Err(e) if e.kind() == Some(ErrorKind::VersionMismatch) => {
                    match client.get_data(&path).await {
                        Ok((data, stat)) => match wire::decode::<PartitionMetadata>(&data) {
                            Ok(meta) => {
                                read.meta = meta;
                                read.version = stat.version;
                            }
                            Err(e) => {
                                tracing::warn!(%path, error = %e, "controller: partition state does not decode");
                                return Ok(());
                            }
                        },
                        Err(e) if e.kind() == Some(ErrorKind::NotFound) => return Ok(()),
                        Err(e) => return Err(e),
                    }
                }
                Err(e) if e.kind() == Some(ErrorKind::NotFound) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        tracing::warn!(%path, "controller: partition kept changing under the controller; retrying later");
        Ok(())
    }
}

/// What a pass knows about the brokers.
struct Context<'a> {
    live: &'a BTreeSet<u32>,
    leaving: &'a BTreeSet<u32>,
    available: &'a [BrokerInfo],
    due: &'a BTreeSet<u32>,
    /// The replicas that reported they may not lead.
    ineligible: &'a Ineligible,
}

/// How many partition znodes one multi creates (about 100 bytes each).
const CREATES_PER_MULTI: usize = 128;

/// Creates the missing partitions of `topic` and reads all of them.
async fn read_topic(
    client: &Client,
    topic: &str,
    available: &[BrokerInfo],
) -> Result<Vec<Read>, ZkError> {
    let config = match client.get_data(&topic_path(topic)).await {
        Ok((data, _)) => match wire::decode::<TopicConfig>(&data) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(%topic, error = %e, "controller: topic config does not decode");
                return Ok(Vec::new());
            }
        },
        Err(e) if e.kind() == Some(ErrorKind::NotFound) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    // A topic znode written around the client's checks is skipped, not retried: its
    // partitions would never fit in the zookeeper (or on the brokers).
    if let Err(reason) = config.validate() {
        tracing::error!(%topic, %reason, "controller: topic refused; delete it (pehra topic delete)");
        return Ok(Vec::new());
    }
    let parent = partitions_path(topic);
    let (existing, parent_missing) = match client.get_children(&parent).await {
        Ok((children, _)) => (children, false),
        Err(e) if e.kind() == Some(ErrorKind::NotFound) => (Vec::new(), true),
        Err(e) => return Err(e),
    };
    let existing: BTreeSet<u32> = existing.iter().filter_map(|p| p.parse().ok()).collect();
    let mut ops = Vec::new();
    for partition in (0..config.partitions).filter(|p| !existing.contains(p)) {
        let replicas = assign_replicas(partition, config.replication_factor, available);
        if replicas.len() < config.replication_factor as usize {
            tracing::info!(%topic, partition, available = available.len(), "controller: waiting for enough brokers");
            continue;
        }
        let state = PartitionMetadata {
            partition,
            leader: replicas.first().copied(),
            leader_epoch: 0,
            isr: replicas.clone(),
            replicas,
            elr: Vec::new(),
        };
        ops.push(MultiOp::Create {
            path: partition_path(topic, partition),
            data: wire::encode(&state).expect("encodes"),
            ephemeral: false,
            sequential: false,
        });
    }
    if parent_missing {
        ops.insert(
            0,
            MultiOp::Create {
                path: parent,
                data: Vec::new(),
                ephemeral: false,
                sequential: false,
            },
        );
    }
    // In slices, so no request is larger than the zookeeper takes whatever the count.
    // The parent is created in the first slice, never on its own path: a topic deleted
    // since it was read then fails the create (its znode is gone) instead of coming
    // back empty, or with its partitions under a delete that already passed them.
    for slice in ops.chunks(CREATES_PER_MULTI) {
        match client.multi(slice.to_vec()).await {
            Ok(_) => tracing::info!(%topic, count = slice.len(), "controller: partitions assigned"),
            // Deleted meanwhile, or created by a concurrent pass: read what is there.
            Err(e) if matches!(e.kind(), Some(ErrorKind::NotFound | ErrorKind::NodeExists)) => {}
            Err(e) => return Err(e),
        }
    }
    let mut reads = Vec::new();
    for partition in 0..config.partitions {
        let path = partition_path(topic, partition);
        match client.get_data(&path).await {
            Ok((data, stat)) => match wire::decode::<PartitionMetadata>(&data) {
                Ok(meta) => reads.push(Read {
                    topic: topic.to_string(),
                    partition,
                    meta,
                    version: stat.version,
                    min_insync: config.min_insync(),
                }),
                Err(e) => {
                    tracing::warn!(%path, error = %e, "controller: partition state does not decode")
                }
            },
            Err(e) if e.kind() == Some(ErrorKind::NotFound) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(reads)
}

/// What [`replace_dead`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Replaced {
    /// The new state, if a replica was replaced.
    pub meta: Option<PartitionMetadata>,
    /// Dead replicas that could not be replaced: no available broker is free.
    pub stuck: Vec<u32>,
}

/// Replaces every replica whose broker is in `due` (absent too long) by an available
/// broker that is not a replica yet, if another ISR member keeps the data: the new
/// broker takes the dead one's place in `replicas` (not in the ISR: its leader adds it
/// once it has caught up) and the dead one leaves the ISR. Among the free brokers the
/// one on a new host and rack is preferred (as [`assign_replicas`] does), then the one
/// holding the fewest replicas (`load`).
pub(crate) fn replace_dead(
    meta: &PartitionMetadata,
    due: &BTreeSet<u32>,
    available: &[BrokerInfo],
    load: &BTreeMap<u32, usize>,
) -> Replaced {
    let mut m = meta.clone();
    let mut out = Replaced::default();
    for i in 0..m.replicas.len() {
        let dead = m.replicas[i];
        if !due.contains(&dead) {
            continue;
        }
        let rest: Vec<u32> = m.isr.iter().copied().filter(|&b| b != dead).collect();
        if rest.is_empty() {
            // The dead broker may be the only one with every record: wait for it.
            continue;
        }
        let chosen: Vec<&BrokerInfo> = available
            .iter()
            .filter(|b| m.replicas.contains(&b.id))
            .collect();
        let mut free: Vec<&BrokerInfo> = available
            .iter()
            .filter(|b| !m.replicas.contains(&b.id))
            .collect();
        free.sort_by_key(|b| (load.get(&b.id).copied().unwrap_or(0), b.id));
        match pick_repelling(&chosen, &free) {
            Some(b) => {
                m.replicas[i] = b.id;
                m.isr = rest;
                m.elr.retain(|&e| e != dead);
                out.meta = Some(m.clone());
            }
            None => out.stuck.push(dead),
        }
    }
    out
}

fn log_change(
    topic: &str,
    old: &PartitionMetadata,
    new: &PartitionMetadata,
    ineligible: &BTreeSet<u32>,
) {
    let partition = new.partition;
    match election::outcome(old, new) {
        Outcome::Elected => tracing::info!(
            %topic, partition, old_leader = ?old.leader, new_leader = ?new.leader,
            epoch = new.leader_epoch, isr = ?new.isr,
            "controller: leader changed"
        ),
        Outcome::ElectedFromElr => tracing::warn!(
            %topic, partition, old_leader = ?old.leader, new_leader = ?new.leader,
            epoch = new.leader_epoch, old_isr = ?old.isr, elr = ?old.elr,
            "controller: leader changed: no in-sync replica was left; broker {} left the ISR \
             below its minimum and so has every acknowledged record (eligible leader replica)",
            new.leader.unwrap_or_default()
        ),
        Outcome::ElectedUnclean => tracing::warn!(
            %topic, partition, old_leader = ?old.leader, new_leader = ?new.leader,
            epoch = new.leader_epoch, old_isr = ?old.isr,
            "controller: UNCLEAN leader election of {topic}/{partition}: no in-sync replica \
             was available, broker {} (not in the ISR {:?}) now leads; records acknowledged \
             by those replicas but not copied to it may be lost",
            new.leader.unwrap_or_default(), old.isr
        ),
        Outcome::Offline => tracing::warn!(
            %topic, partition, old_leader = ?old.leader, epoch = new.leader_epoch, isr = ?new.isr,
            ?ineligible,
            "controller: partition offline: no in-sync replica is available and eligible (one that \
             restarted behind its high watermark or found damage may not lead); it waits for one \
             of the ISR to return (or pehra zookeeper --unclean-leader-election)"
        ),
        Outcome::IsrShrunk => {}
    }
    if old.replicas != new.replicas {
        tracing::info!(
            %topic, partition, old_replicas = ?old.replicas, new_replicas = ?new.replicas,
            "controller: dead replica replaced; the new one copies the log and joins the ISR when caught up"
        );
    }
    if old.isr != new.isr {
        tracing::info!(%topic, partition, old_isr = ?old.isr, new_isr = ?new.isr, "controller: ISR changed");
    }
    if old.elr != new.elr {
        tracing::info!(%topic, partition, old_elr = ?old.elr, new_elr = ?new.elr, "controller: eligible leader replicas changed");
    }
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

    fn meta(leader: Option<u32>, replicas: &[u32], isr: &[u32]) -> PartitionMetadata {
        PartitionMetadata {
            partition: 0,
            leader,
            leader_epoch: 3,
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
            elr: Vec::new(),
        }
    }

    #[test]
    fn a_dead_replica_is_replaced_in_place_by_a_repelling_broker() {
        let available = [
            broker(1, "a", Some("r1")),
            broker(2, "b", Some("r2")),
            broker(4, "a", Some("r1")),
            broker(5, "c", Some("r3")),
            broker(6, "d", Some("r3")),
        ];
        let m = meta(Some(1), &[1, 3, 2], &[1, 3, 2]);
        let due = BTreeSet::from([3]);
        // 4 shares host and rack with 1; 5 and 6 are new on both: the less loaded wins.
        let load = BTreeMap::from([(5, 4), (6, 1)]);
        let r = replace_dead(&m, &due, &available, &load);
        assert_eq!(r.meta, Some(meta(Some(1), &[1, 6, 2], &[1, 2])));
        assert!(r.stuck.is_empty());
        // Nothing due: nothing happens.
        let r = replace_dead(&m, &BTreeSet::new(), &available, &load);
        assert_eq!(r, Replaced::default());
    }

    #[test]
    fn no_replacement_without_another_copy_or_a_free_broker() {
        let available = [broker(1, "a", None), broker(2, "b", None)];
        let load = BTreeMap::new();
        // 3 is the only ISR member: it may hold records nobody else has.
        let m = meta(None, &[1, 2, 3], &[3]);
        let r = replace_dead(&m, &BTreeSet::from([3]), &available, &load);
        assert_eq!(r, Replaced::default());
        // Every available broker is already a replica.
        let m = meta(Some(1), &[1, 2, 3], &[1, 2, 3]);
        let r = replace_dead(&m, &BTreeSet::from([3]), &available, &load);
        assert_eq!(r.meta, None);
        assert_eq!(r.stuck, [3]);
    }

    #[test]
    fn two_dead_replicas_get_two_distinct_brokers() {
        let available = [
            broker(1, "a", None),
            broker(4, "d", None),
            broker(5, "e", None),
        ];
        let m = meta(Some(1), &[2, 1, 3], &[1, 2, 3]);
        let r = replace_dead(&m, &BTreeSet::from([2, 3]), &available, &BTreeMap::new());
        assert_eq!(r.meta, Some(meta(Some(1), &[4, 1, 5], &[1])));
    }
}
