//! Following the controller: which partitions this broker holds a replica of, which it
//! leads, and whom it fetches the others from. Every watched znode change re-reads the
//! whole assignment (small clusters; simple and never stale).

use super::hw_checkpoint;
use super::partition::{replica_now, Partition, PartitionKey};
use super::replica_actions::settle;
use super::State;
use crate::log::PartitionLog;
use crate::replica::PartitionReplica;
use parking_lot::Mutex;
use pehra_cluster::{self as cluster, BROKERS, TOPICS};
use pehra_shared::wire::{self, BrokerInfo, ErrorKind, PartitionMetadata, TopicConfig};
use pehra_storage::IoError;
use pehra_zookeeper::{Client, ZkError};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// One partition this broker holds a replica of, as the zookeeper says.
pub(crate) struct Assigned {
    pub meta: PartitionMetadata,
    pub version: u32,
    pub min_insync: u32,
    /// The topic's identity: the zxid that created its znode. A topic deleted and
    /// created again under the same name has another (Kafka's topic id).
    pub topic_id: u64,
}

/// After a failed read of the assignment (the zookeeper unreachable), the next one
/// comes this soon.
const READ_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// The file in a partition's directory that names the topic incarnation its data is of.
const TOPIC_ID_FILE: &str = "topic-id";

/// Keeps the open partitions, their roles and the fetchers equal to what the partition
/// znodes say, re-reading whenever a watched znode changes.
pub(crate) async fn follow_assignments(zk: Arc<Client>, state: Arc<State>) {
    let (changed_tx, mut changed) = mpsc::unbounded_channel::<()>();
    let watched: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    loop {
        // A failed read is tried again soon: the change that asked for it was reported
        // once, and a watch registered again after a zookeeper restart does not report
        // a state it already reported.
        let retry = match read_assignment(&zk, state.id).await {
            Ok((assigned, brokers, paths)) => {
                let (closed, regressed) = apply_assignment(&state, assigned, &brokers).await;
                repair_epochs(&zk, regressed).await;
                remove_replicas_no_longer_held(&zk, &state, closed).await;
                for (path, children) in paths {
                    watch_for_changes(&zk, path, children, &watched, &changed_tx).await;
                }
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading partition assignments; again in {READ_RETRY:?}");
                Some(Instant::now() + READ_RETRY)
            }
        };
        tokio::select! {
            c = changed.recv() => if c.is_none() {
                return;
            },
            _ = state.reassign.notified() => {}
            _ = tokio::time::sleep_until(retry.unwrap_or_else(Instant::now)), if retry.is_some() => {}
        }
        while changed.try_recv().is_ok() {}
    }
}

/// The live brokers' addresses.
type Addresses = BTreeMap<u32, SocketAddr>;

/// The partitions `id` holds a replica of, the brokers' addresses, and the znodes to
/// watch for changes (path, children?).
async fn read_assignment(
    zk: &Client,
    id: u32,
) -> Result<
    (
        BTreeMap<PartitionKey, Assigned>,
        Addresses,
        Vec<(String, bool)>,
    ),
    ZkError,
> {
    let mut assigned = BTreeMap::new();
    let mut paths = vec![(TOPICS.to_string(), true), (BROKERS.to_string(), true)];
    let brokers: Addresses = cluster::live_brokers(zk)
        .await?
        .into_values()
        .filter_map(|b: BrokerInfo| Some((b.id, b.addr.parse().ok()?)))
        .collect();
    let (topics, _) = zk.get_children(TOPICS).await?;
    for topic in topics {
        // Data: the topic's config (min in-sync replicas). Children: the controller
        // creates `partitions` under it after the topic appears; a read between the two
        // must still learn of it.
        paths.push((cluster::topic_path(&topic), false));
        paths.push((cluster::topic_path(&topic), true));
        let (min_insync, topic_id) = match zk.get_data(&cluster::topic_path(&topic)).await {
            Ok((data, stat)) => match wire::decode::<TopicConfig>(&data) {
                Ok(config) => (config.min_insync(), stat.czxid),
                Err(_) => continue,
            },
            Err(e) if e.kind() == Some(ErrorKind::NotFound) => continue,
            Err(e) => return Err(e),
        };
        let parent = cluster::partitions_path(&topic);
        let partitions = match zk.get_children(&parent).await {
            Ok((p, _)) => p,
            Err(e) if e.kind() == Some(ErrorKind::NotFound) => continue,
            Err(e) => return Err(e),
        };
        paths.push((parent, true));
        for p in partitions {
            let Ok(partition) = p.parse::<u32>() else {
                continue;
            };
            let path = cluster::partition_path(&topic, partition);
            paths.push((path.clone(), false));
            let Ok((data, stat)) = zk.get_data(&path).await else {
                continue;
            };
            let Ok(meta) = wire::decode::<PartitionMetadata>(&data) else {
                continue;
            };
            if meta.replicas.contains(&id) {
                assigned.insert(
                    (topic.clone(), partition),
                    Assigned {
                        meta,
                        version: stat.version,
                        min_insync,
                        topic_id,
                    },
                );
            }
        }
    }
    Ok((assigned, brokers, paths))
}

async fn watch_for_changes(
    zk: &Client,
    path: String,
    children: bool,
    watched: &Arc<Mutex<BTreeSet<String>>>,
    changed: &mpsc::UnboundedSender<()>,
) {
    let key = if children {
        format!("{path} (children)")
    } else {
        path.clone()
    };
    if !watched.lock().insert(key.clone()) {
        return;
    }
    let watch = if children {
        zk.watch_children(&path).await
    } else {
        zk.watch_data(&path).await
    };
    let Ok(mut watch) = watch else {
        watched.lock().remove(&key);
        return;
    };
    let (watched, changed) = (watched.clone(), changed.clone());
    tokio::spawn(async move {
        // Every event triggers a re-read, the first (the state at registration) too: the
        // znode may have changed between our read and this watch.
        while let Some(event) = watch.next().await {
            if changed.send(()).is_err() || event.is_err() {
                break;
            }
        }
        watched.lock().remove(&key);
        let _ = changed.send(());
    });
}

/// A partition whose znode names an older leader epoch than this broker's log holds.
pub(crate) struct Regressed {
    key: PartitionKey,
    meta: PartitionMetadata,
    version: u32,
    log_epoch: u32,
}

/// Opens, updates and closes partitions as `assigned` says, and sets the fetchers;
/// returns the partitions it closed, and those it refused to act on because their leader
/// epoch went back (see [`repair_epochs`]).
async fn apply_assignment(
    state: &Arc<State>,
    assigned: BTreeMap<PartitionKey, Assigned>,
    brokers: &Addresses,
) -> (Vec<PartitionKey>, Vec<Regressed>) {
    let mut regressed = Vec::new();
    for (key, a) in &assigned {
        let existing = state.partitions.read().get(key).cloned();
        let partition = match existing {
            Some(p) => p,
            None => match open(state, key, a).await {
                Some(p) => p,
                None => continue,
            },
        };
        let mut p = partition.lock();
        // Leader epochs never go back: a zookeeper that names an older epoch than this
        // log already holds lost changes (a cut write-ahead log, an old backup). Neither
        // lead nor follow in it. Once seen, the repair must reach an epoch above what the
        // log held: the controller may elect (and number) leaders from the old state
        // before a repair lands, and its count can reach the log's own last epoch, which
        // would then start a second term under one number.
        let floor = state.epoch_floors.lock().get(key).copied();
        let regression = p
            .replica
            .log()
            .last_epoch()
            .filter(|&e| e > a.meta.leader_epoch)
            .or(floor.filter(|&f| f >= a.meta.leader_epoch));
        if regression.is_none() && floor.is_some() {
            state.epoch_floors.lock().remove(key);
        }
        if let Some(log_epoch) = regression {
            state.epoch_floors.lock().insert(key.clone(), log_epoch);
            tracing::error!(
                topic = %key.0, partition = key.1, znode_epoch = a.meta.leader_epoch, log_epoch,
                "the zookeeper names leader epoch {} for this partition, but this replica's log \
                 holds batches of epoch {log_epoch}: the zookeeper's state went back (lost \
                 changes); not acting on it, asking for epoch {} instead",
                a.meta.leader_epoch,
                log_epoch + 1
            );
            p.replica.step_down("the leader epoch went back");
            settle(state, key, p);
            regressed.push(Regressed {
                key: key.clone(),
                meta: a.meta.clone(),
                version: a.version,
                log_epoch,
            });
            continue;
        }
        let was_leading = p.replica.in_leader_term();
        let before = p.replica.meta().isr.clone();
        p.replica
            .handle_assignment(replica_now(), a.meta.clone(), a.version, a.min_insync);
        state.metrics.isr_changed(&before, &p.replica);
        let leading = p.replica.in_leader_term();
        if leading != was_leading {
            tracing::info!(
                topic = %key.0, partition = key.1, epoch = p.replica.meta().leader_epoch,
                end = p.replica.log().log_end_offset(), hw = p.replica.high_watermark(),
                "{}", if leading { "leading partition" } else { "following partition" }
            );
        }
        settle(state, key, p);
    }
    let open_keys: Vec<PartitionKey> = state.partitions.read().keys().cloned().collect();
    let mut closed = Vec::new();
    for key in open_keys.into_iter().filter(|k| !assigned.contains_key(k)) {
        if let Some(p) = state.partitions.write().remove(&key) {
            state.hw_checkpoint.lock().remove(&key);
            state.epoch_floors.lock().remove(&key);
            closed.push(key.clone());
            let mut p = p.lock();
            p.replica
                .step_down("the partition was moved off this broker");
            if let Err(e) = p.replica.log_mut().flush() {
                tracing::warn!(error = %e, "flushing a partition no longer held");
            }
            settle(state, &key, p);
            tracing::info!(topic = %key.0, partition = key.1, "no longer a replica of the partition");
        }
    }
    let open_keys_kept: BTreeSet<PartitionKey> = regressed.iter().map(|r| r.key.clone()).collect();
    let mut wanted = super::fetcher::FetchPlan::new();
    if !state.leaving.load(std::sync::atomic::Ordering::SeqCst) {
        for (key, a) in assigned
            .iter()
            .filter(|(k, _)| !open_keys_kept.contains(*k))
        {
            let Some(leader) = a.meta.leader.filter(|&l| l != state.id) else {
                continue;
            };
            let Some(&addr) = brokers.get(&leader) else {
                continue; // the leader is gone; the controller will elect another
            };
            wanted
                .entry(leader)
                .or_insert_with(|| (addr, BTreeSet::new()))
                .1
                .insert(key.clone());
        }
    }
    // Dormant (PEHRA): nothing fetched, but the plan is kept for the wake.
    let dormant = super::pehra::is_asleep(state);
    state.fetchers.lock().plan(state, wanted, dormant);
    state
        .open_failures
        .lock()
        .retain(|k, _| assigned.contains_key(k));
    state
        .logs_opened
        .store(true, std::sync::atomic::Ordering::SeqCst);
    state.eligibility_changed.notify_one();
    state.assignment_applied.notify_waiters();
    (closed, regressed)
}

/// Moves the leader epoch of each partition in `regressed` past what this broker's log
/// holds (the same leader and in-sync set, conditional on the version read): epochs
/// never go back, so every replica starts a term newer than any batch it has. Another
/// writer first: the watch brings the new state, and this is decided again.
async fn repair_epochs(zk: &Client, regressed: Vec<Regressed>) {
    for r in regressed {
        let repaired = PartitionMetadata {
            leader_epoch: r.log_epoch + 1,
            ..r.meta.clone()
        };
        let path = cluster::partition_path(&r.key.0, r.key.1);
        let data = wire::encode(&repaired).expect("encodes");
        match zk.set_data(&path, &data, Some(r.version)).await {
            Ok(_) => tracing::error!(
                topic = %r.key.0, partition = r.key.1, from = r.meta.leader_epoch,
                to = repaired.leader_epoch,
                "repaired the partition's leader epoch, which had gone back"
            ),
            Err(e) => tracing::warn!(
                topic = %r.key.0, partition = r.key.1, error = %e,
                "repairing the leader epoch (another writer may have changed the partition)"
            ),
        }
    }
}

/// Deletes the data of the closed partitions this broker is positively no longer a
/// replica of: the topic was deleted, or the partition's replicas leave this broker out
/// (it was moved, or re-replicated while this broker was down). A partition left out of
/// an assignment for any other reason (a read that failed) keeps its data.
async fn remove_replicas_no_longer_held(
    zk: &Client,
    state: &Arc<State>,
    closed: Vec<PartitionKey>,
) {
    for key in closed {
        let why = match no_longer_held(zk, &key, state.id).await {
            Ok(Some(why)) => why,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(topic = %key.0, partition = key.1, error = %e, "cannot tell whether a closed partition's data is still wanted; kept");
                continue;
            }
        };
        let dir = partition_dir(state, &key);
        match pehra_shared::driver::blocking::run(move || std::fs::remove_dir_all(&dir)).await {
            Ok(Ok(())) => {
                tracing::info!(topic = %key.0, partition = key.1, "removed the replica's data: {why}")
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
            Ok(Err(e)) => {
                tracing::warn!(topic = %key.0, partition = key.1, error = %e, "removing the replica's data")
            }
            Err(e) => tracing::warn!(error = %e, "the removal task failed"),
        }
    }
}

/// Why this broker's replica of `key` is not wanted any more, if the zookeeper says so.
async fn no_longer_held(
    zk: &Client,
    key: &PartitionKey,
    id: u32,
) -> Result<Option<&'static str>, ZkError> {
    let not_found = |e: &ZkError| e.kind() == Some(ErrorKind::NotFound);
    match zk.get_data(&cluster::topic_path(&key.0)).await {
        Err(e) if not_found(&e) => return Ok(Some("the topic was deleted")),
        Err(e) => return Err(e),
        Ok(_) => {}
    }
    match zk.get_data(&cluster::partition_path(&key.0, key.1)).await {
        // The topic is being deleted (its partitions go first).
        Err(e) if not_found(&e) => Ok(Some("the topic was deleted")),
        Err(e) => Err(e),
        Ok((data, _)) => Ok(match wire::decode::<PartitionMetadata>(&data) {
            Ok(meta) if !meta.replicas.contains(&id) => {
                Some("the partition's replicas are on other brokers now")
            }
            _ => None,
        }),
    }
}

/// Where a partition's log lives.
pub(crate) fn partition_dir(state: &State, key: &PartitionKey) -> std::path::PathBuf {
    state.data_dir.join(format!("{}-{}", key.0, key.1))
}

/// Why a partition directory cannot be claimed for a topic incarnation.
#[derive(Debug, thiserror::Error)]
enum ClaimError {
    /// A file operation failed.
    #[error(transparent)]
    Io(#[from] IoError),
    /// The mark names no incarnation: damage, not proof of another topic.
    #[error(
        "{path} does not name a topic incarnation ({text:?}): refusing to delete the \
         partition's data; if the data is this topic's, write its topic id there (or delete \
         the file)"
    )]
    UnreadableMark {
        /// The mark.
        path: PathBuf,
        /// What it holds.
        text: String,
    },
}

/// Makes `dir` hold data of topic incarnation `topic_id`: data of another incarnation (a
/// topic deleted, then created again under the same name, while this broker did not
/// see it gone) is removed first; a directory without the mark (older versions) is
/// taken as this incarnation's. The mark is replaced atomically and durably, so one that
/// does not parse is damage: refused, never taken for another incarnation's.
fn claim_for_topic(dir: &Path, topic_id: u64) -> Result<(), ClaimError> {
    let mark = dir.join(TOPIC_ID_FILE);
    match std::fs::read_to_string(&mark) {
        Ok(text) => match text.trim().parse::<u64>() {
            Ok(id) if id == topic_id => return Ok(()),
            Ok(_) => {
                tracing::info!(dir = %dir.display(), old = text.trim(), new = topic_id, "the partition's data is of a deleted topic of the same name: removed");
                std::fs::remove_dir_all(dir)
                    .map_err(pehra_storage::io_err("remove the old data of", dir))?;
            }
            Err(_) => return Err(ClaimError::UnreadableMark { path: mark, text }),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(pehra_storage::io_err("read", &mark)(e).into()),
    }
    pehra_storage::create_dir_durably(dir, "create the partition directory")?;
    let text = format!("{topic_id}\n");
    Ok(pehra_storage::file::replace_durably(
        dir,
        TOPIC_ID_FILE,
        text.as_bytes(),
    )?)
}

async fn open(
    state: &Arc<State>,
    key: &PartitionKey,
    a: &Assigned,
) -> Option<Arc<Mutex<Partition>>> {
    let dir = partition_dir(state, key);
    let config = state.log_config.clone();
    let topic_id = a.topic_id;
    let opened = pehra_shared::driver::blocking::run(move || {
        claim_for_topic(&dir, topic_id).map_err(|e| e.to_string())?;
        let hw = hw_checkpoint::load(&dir).map_err(|e| e.to_string())?;
        let (log, recovery) = PartitionLog::open(&dir, config).map_err(|e| e.to_string())?;
        Ok::<_, String>((log, recovery, hw))
    })
    .await
    .expect("open task");
    match opened {
        Ok((log, recovery, checkpoint_hw)) => {
            tracing::info!(
                topic = %key.0, partition = key.1,
                start = recovery.log_start_offset, end = recovery.log_end_offset,
                cut = recovery.truncated_bytes, checkpoint_hw, "opened partition replica"
            );
            let replica = PartitionReplica::new(
                state.replica_config(),
                log,
                a.meta.clone(),
                a.version,
                a.min_insync,
                checkpoint_hw,
            );
            let partition = Partition {
                replica,
                handover: Default::default(),
            };
            if let Some(reason) = partition.replica.ineligible_reason() {
                tracing::warn!(
                    topic = %key.0, partition = key.1,
                    "the replica may not lead until it has caught up: {reason}"
                );
            }
            state.open_failures.lock().remove(key);
            state
                .hw_checkpoint
                .lock()
                .insert(key.clone(), checkpoint_hw);
            let partition = Arc::new(Mutex::new(partition));
            state
                .partitions
                .write()
                .insert(key.clone(), partition.clone());
            Some(partition)
        }
        Err(e) => {
            tracing::error!(topic = %key.0, partition = key.1, error = %e, "cannot open the partition log");
            state.open_failures.lock().insert(key.clone(), e);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{claim_for_topic, TOPIC_ID_FILE};
    use std::fs;

    #[test]
    fn a_directory_of_another_topic_incarnation_is_emptied_and_claimed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("t-0");
        // A new directory is claimed.
        claim_for_topic(&dir, 7).unwrap();
        assert_eq!(fs::read_to_string(dir.join(TOPIC_ID_FILE)).unwrap(), "7\n");
        fs::write(dir.join("00000000000000000000.log"), b"data").unwrap();
        // The same incarnation keeps its data.
        claim_for_topic(&dir, 7).unwrap();
        assert!(dir.join("00000000000000000000.log").exists());
        // Another incarnation (deleted and created again unseen) starts empty.
        claim_for_topic(&dir, 9).unwrap();
        assert!(!dir.join("00000000000000000000.log").exists());
        assert_eq!(fs::read_to_string(dir.join(TOPIC_ID_FILE)).unwrap(), "9\n");
        // A directory from before the mark existed is taken as it is.
        let old = tmp.path().join("u-0");
        fs::create_dir_all(&old).unwrap();
        fs::write(old.join("00000000000000000000.log"), b"data").unwrap();
        claim_for_topic(&old, 3).unwrap();
        assert!(old.join("00000000000000000000.log").exists());
    }

    #[test]
    fn a_mark_that_names_no_incarnation_is_refused_and_the_data_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("t-0");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("00000000000000000000.log"), b"data").unwrap();
        // What a crash between creating the mark and its data reaching the disk left
        // behind, before the mark was written durably.
        fs::write(dir.join(TOPIC_ID_FILE), b"").unwrap();
        let refused = claim_for_topic(&dir, 7).unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("refusing to delete the partition's data"),
            "{refused}"
        );
        assert!(dir.join("00000000000000000000.log").exists());
    }
}
