//! The follower's side of replication: one task per leader broker fetches every
//! partition this broker follows from it, in one long-polling `POST /replica` exchange
//! at a time, and appends what comes back exactly as the leader stored it.

use super::partition::PartitionKey;
use super::replica::MAX_WAIT;
use super::{lookup_any, State};
use crate::log::{BatchMeta, LogError, ProducerBatch};
use pehra_shared::api::{decode_response, response_error};
use pehra_shared::coap::{Method, Request, CONTENT_FORMAT_CBOR};
use pehra_shared::wire::{
    self, ReplicaFetchPartition, ReplicaFetchRequest, ReplicaFetchResponse, ReplicaPartitionData,
};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How long to wait before fetching again after a failure (leader down or moving).
const RETRY_AFTER: Duration = Duration::from_millis(200);

/// Leader id → (its address, the partitions to fetch from it).
pub(crate) type FetchPlan = BTreeMap<u32, (SocketAddr, BTreeSet<PartitionKey>)>;

/// The fetch tasks, one per leader this broker follows partitions from.
#[derive(Default)]
pub(crate) struct Fetchers {
    by_leader: BTreeMap<u32, Fetcher>,
    /// What the last assignment asks for, also while dormant (PEHRA): waking restarts
    /// the fetchers from it at once, before the assignment is read again.
    plan: FetchPlan,
}

struct Fetcher {
    addr: SocketAddr,
    partitions: watch::Sender<BTreeSet<PartitionKey>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Fetcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Fetchers {
    /// Makes the running fetchers match `wanted`: leader id → (its address, the
    /// partitions to fetch from it).
    pub fn update(&mut self, state: &Arc<State>, wanted: FetchPlan) {
        self.by_leader
            .retain(|leader, f| wanted.get(leader).is_some_and(|(addr, _)| *addr == f.addr));
        for (leader, (addr, keys)) in wanted {
            match self.by_leader.get(&leader) {
                Some(f) => {
                    f.partitions.send_if_modified(|current| {
                        let changed = *current != keys;
                        *current = keys;
                        changed
                    });
                }
                None => {
                    let (tx, rx) = watch::channel(keys);
                    let task = tokio::spawn(run(state.clone(), leader, addr, rx));
                    self.by_leader.insert(
                        leader,
                        Fetcher {
                            addr,
                            partitions: tx,
                            task,
                        },
                    );
                }
            }
        }
    }

    /// Stops every fetcher (going dormant); the plan stays for [`Fetchers::resume`].
    pub fn clear(&mut self) {
        self.by_leader.clear();
    }

    /// Keeps `plan` as what the assignment asks for, and runs it unless `dormant`.
    pub fn plan(&mut self, state: &Arc<State>, plan: FetchPlan, dormant: bool) {
        self.plan = plan.clone();
        if dormant {
            self.clear();
        } else {
            self.update(state, plan);
        }
    }

    /// Restarts the fetchers of the last plan (waking: a follower fetches the records
    /// that woke its leader without first reading the whole assignment again).
    pub fn resume(&mut self, state: &Arc<State>) {
        self.update(state, self.plan.clone());
    }
}

async fn run(
    state: Arc<State>,
    leader: u32,
    addr: SocketAddr,
    mut keys: watch::Receiver<BTreeSet<PartitionKey>>,
) {
    let Some(handle) = state.handle.get().cloned() else {
        return;
    };
    super::access::secure_broker_peer(&state, leader, addr).await;
    loop {
        let set = keys.borrow_and_update().clone();
        let partitions = positions(&state, leader, &set);
        if set.is_empty() {
            // Nothing to follow from this leader now: wait for the set to change (no
            // polling: an idle broker should not wake for nothing, issue 19).
            if keys.changed().await.is_err() {
                return;
            }
            continue;
        }
        if partitions.is_empty() {
            // Its partitions are not open here yet.
            let _ = tokio::time::timeout(RETRY_AFTER, keys.changed()).await;
            continue;
        }
        let request = ReplicaFetchRequest {
            replica: state.id,
            max_wait_ms: MAX_WAIT.as_millis() as u32,
            max_bytes: state.replica_fetch_bytes as u32,
            partitions,
        };
        let coap = Request::new(Method::Post, "replica")
            .with_payload(wire::encode(&request).expect("encodes"))
            .with_content_format(CONTENT_FORMAT_CBOR);
        let answer = tokio::time::timeout(MAX_WAIT * 5, handle.request(addr, coap)).await;
        let progressed = match answer {
            Ok(Ok(response)) if response.code().is_success() => {
                match decode_response::<ReplicaFetchResponse>(&response) {
                    Ok(answer) => apply(&state, leader, &request.partitions, answer),
                    Err(e) => {
                        tracing::warn!(leader, error = ?e, "a replica fetch answer does not decode");
                        false
                    }
                }
            }
            Ok(Ok(response)) => {
                tracing::debug!(leader, error = ?response_error(&response), "replica fetch refused");
                false
            }
            Ok(Err(e)) => {
                tracing::debug!(leader, error = %e, "replica fetch failed");
                false
            }
            Err(_) => {
                tracing::debug!(leader, "replica fetch timed out");
                false
            }
        };
        if !progressed {
            let _ = tokio::time::timeout(RETRY_AFTER, keys.changed()).await;
        }
    }
}

/// Where this broker's replica of each partition stands, for those it still follows
/// from `leader`. A replica with damage in its log is cut back to the first damaged offset
/// first, to fetch everything from there again (it may not lead meanwhile).
fn positions(
    state: &State,
    leader: u32,
    keys: &BTreeSet<PartitionKey>,
) -> Vec<ReplicaFetchPartition> {
    keys.iter()
        .filter_map(|(topic, partition)| {
            let p = lookup_any(state, topic, *partition)?;
            let mut p = p.lock().expect("lock");
            if p.meta.leader != Some(leader) || p.leader.is_some() {
                return None;
            }
            if let Some(first) = p.log.damage().first().map(|r| r.first_offset) {
                heal_by_refetching(state, &mut p, topic, *partition, first, leader);
            }
            Some(ReplicaFetchPartition {
                topic: topic.clone(),
                partition: *partition,
                offset: p.log.log_end_offset(),
                leader_epoch: p.meta.leader_epoch,
                last_fetched_epoch: p.log.last_epoch(),
            })
        })
        .collect()
}

/// Cuts a damaged follower's log at its first damaged offset `first`, so that it fetches
/// the rest from its (eligible, hence complete) leader again.
fn heal_by_refetching(
    state: &State,
    p: &mut super::partition::Partition,
    topic: &str,
    partition: u32,
    first: u64,
    leader: u32,
) {
    let end = p.log.log_end_offset();
    match p.log.truncate_to(first) {
        Ok(()) => {
            tracing::warn!(
                %topic, partition, leader, from = first, to = end,
                "healing the damaged log: cut at the first damaged offset, fetching offsets \
                 {first} to {end} again from the leader (this replica may not lead until it has them)"
            );
            p.high_watermark = p.high_watermark.min(first);
            state.eligibility_changed.notify_one();
        }
        Err(e) => {
            tracing::error!(%topic, partition, error = %e, "cannot cut the damaged log to heal it")
        }
    }
}

/// Applies an answer; `true` if any partition got an answer without error.
fn apply(
    state: &State,
    leader: u32,
    asked: &[ReplicaFetchPartition],
    answer: ReplicaFetchResponse,
) -> bool {
    let mut progressed = false;
    for (asked, data) in asked.iter().zip(answer.partitions) {
        if asked.topic != data.topic || asked.partition != data.partition {
            tracing::warn!(
                leader,
                "a replica fetch answer lists other partitions than asked"
            );
            return false;
        }
        if data.error.is_some() {
            continue;
        }
        progressed = true;
        if !data.batches.is_empty() {
            // Records replicated here are client traffic for PEHRA (the cluster is busy).
            super::pehra::traffic(state);
            // And they are to be flushed.
            state.unflushed.notify_one();
        }
        let Some(partition) = lookup_any(state, &asked.topic, asked.partition) else {
            continue;
        };
        let mut p = partition.lock().expect("lock");
        // Still following the same leader in the same epoch, from the same place?
        if p.meta.leader != Some(leader)
            || p.meta.leader_epoch != asked.leader_epoch
            || p.leader.is_some()
            || p.log.log_end_offset() != asked.offset
        {
            continue;
        }
        let was_eligible = p.ineligible_reason().is_none();
        match apply_partition(&mut p, asked, data, state.allow_truncation_below_hw) {
            Ok(true) => {}
            Ok(false) => progressed = false,
            Err(e) => {
                tracing::error!(topic = %asked.topic, partition = asked.partition, error = %e, "replicating")
            }
        }
        if p.ineligible_reason().is_none() != was_eligible {
            state.eligibility_changed.notify_one();
        }
    }
    progressed
}

/// Applies one partition's answer; `Ok(false)` when it was refused (a truncation below
/// the high watermark), so the fetcher waits before asking again.
fn apply_partition(
    p: &mut super::partition::Partition,
    asked: &ReplicaFetchPartition,
    data: ReplicaPartitionData,
    allow_truncation_below_hw: bool,
) -> Result<bool, LogError> {
    let (topic, partition) = (&asked.topic, asked.partition);
    if let Some(diverging) = data.diverging {
        let ours = p
            .log
            .end_offset_for_epoch(diverging.epoch)
            .map_or(p.log.log_start_offset(), |(_, end)| end);
        let target = diverging.end_offset.min(ours);
        let from = p.log.log_end_offset();
        if target < p.known_hw.min(from) {
            if !allow_truncation_below_hw {
                // The leader lacks records this replica knows were acknowledged: only an
                // unclean election makes such a leader. Keep them.
                tracing::error!(
                    %topic, partition, epoch = diverging.epoch, leader_end = diverging.end_offset,
                    hw = p.known_hw,
                    "refusing to truncate the log to offset {target}, below the high watermark \
                     {} this replica knew: the leader lacks acknowledged records (an unclean \
                     election?); they are kept here. To accept their loss, restart this broker \
                     with --allow-truncation-below-hw",
                    p.known_hw
                );
                return Ok(false);
            }
            tracing::warn!(
                %topic, partition, hw = p.known_hw,
                "truncating below the high watermark to offset {target}, as \
                 --allow-truncation-below-hw allows: acknowledged records are dropped"
            );
            p.known_hw = target;
        }
        if target < p.log.log_start_offset() {
            p.log.reset_to(data.log_start_offset)?;
        } else {
            match p.log.truncate_to(target) {
                Err(LogError::NotBatchBoundary { batch_base, .. }) => {
                    p.log.truncate_to(batch_base)?
                }
                other => other?,
            }
        }
        p.high_watermark = p.high_watermark.min(p.log.log_end_offset());
        tracing::info!(
            %topic, partition, from, to = p.log.log_end_offset(), epoch = diverging.epoch,
            "log diverged from the leader's: truncated"
        );
        return Ok(true);
    }
    if asked.offset < data.log_start_offset && data.batches.is_empty() {
        tracing::warn!(
            %topic, partition, ours = asked.offset, leader_start = data.log_start_offset,
            "behind the leader's log start (retention): starting over from there"
        );
        p.log.reset_to(data.log_start_offset)?;
        return Ok(true);
    }
    for batch in &data.batches {
        let meta = BatchMeta {
            record_count: batch.record_count,
            max_timestamp_ms: batch.max_timestamp_ms,
            leader_epoch: batch.leader_epoch,
            producer: batch.producer_id.zip(batch.base_sequence).map(
                |(producer_id, base_sequence)| ProducerBatch {
                    producer_id,
                    base_sequence,
                },
            ),
            base_offset: Some(batch.base_offset),
        };
        p.log.append_batch(&batch.batch, &meta)?;
    }
    p.high_watermark = data.high_watermark.min(p.log.log_end_offset());
    // Every record below the leader's high watermark was acknowledged: this replica may
    // lead only once it has them.
    p.known_hw = p.known_hw.max(data.high_watermark);
    Ok(true)
}
