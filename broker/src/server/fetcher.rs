//! The follower's side of replication: one task per leader broker fetches every
//! partition this broker follows from it, in one long-polling `POST /replica` exchange
//! at a time, and appends what comes back exactly as the leader stored it.

use super::partition::PartitionKey;
use super::replica::{DORMANT_HOLD, FETCH_TIMEOUT};
use super::replica_actions::settle;
use super::{lookup_any, State};
use crate::replica::FetchPosition;
use pehra_shared::api::{decode_response, response_error};
use pehra_shared::coap::{Method, Request, CONTENT_FORMAT_CBOR};
use pehra_shared::wire::{self, ReplicaFetchPartition, ReplicaFetchRequest, ReplicaFetchResponse};
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
            max_wait_ms: DORMANT_HOLD.as_millis() as u32,
            max_bytes: state.replica_fetch_bytes as u32,
            partitions,
        };
        let coap = Request::new(Method::Post, "replica")
            .with_payload(wire::encode(&request).expect("encodes"))
            .with_content_format(CONTENT_FORMAT_CBOR);
        // The leader holds the fetch until it appends (`replica::hold`): on a new set of
        // partitions or a new assignment (a new epoch, a leader that restarted) the fetch
        // is sent again at once, and the leader ends the older one.
        let applied = state.assignment_applied.notified();
        tokio::pin!(applied);
        applied.as_mut().enable();
        let answer = tokio::select! {
            answer = tokio::time::timeout(FETCH_TIMEOUT, handle.request(addr, coap)) => answer,
            changed = keys.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
            _ = applied => continue,
        };
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

fn positions(
    state: &Arc<State>,
    leader: u32,
    keys: &BTreeSet<PartitionKey>,
) -> Vec<ReplicaFetchPartition> {
    keys.iter()
        .filter_map(|key| {
            let p = lookup_any(state, &key.0, key.1)?;
            let mut p = p.lock();
            let position = p.replica.fetch_position(leader);
            let high_watermark = p.replica.high_watermark();
            settle(state, key, p);
            let position = position?;
            Some(ReplicaFetchPartition {
                topic: key.0.clone(),
                partition: key.1,
                offset: position.offset,
                leader_epoch: position.leader_epoch,
                last_fetched_epoch: position.last_fetched_epoch,
                high_watermark: Some(high_watermark),
            })
        })
        .collect()
}

/// Gives each partition's replica its part of the leader's answer; `true` if the follower
/// made progress (else it waits before fetching again).
fn apply(
    state: &Arc<State>,
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
            super::pehra::traffic(state);
            state.unflushed.notify_one();
        }
        let key = (asked.topic.clone(), asked.partition);
        let Some(partition) = lookup_any(state, &key.0, key.1) else {
            continue;
        };
        let position = FetchPosition {
            offset: asked.offset,
            leader_epoch: asked.leader_epoch,
            last_fetched_epoch: asked.last_fetched_epoch,
        };
        let mut p = partition.lock();
        let durable_hw = p.replica.durable_hw();
        match p.replica.handle_leader_data(leader, position, data) {
            Ok(true) => {}
            Ok(false) => progressed = false,
            Err(e) => {
                tracing::error!(topic = %key.0, partition = key.1, error = %e, "replicating")
            }
        }
        if p.replica.durable_hw() != durable_hw {
            // A commit learned (with no batch, as the last answer of a burst brings it):
            // the flusher checkpoints it. Before, only answers with batches woke it, so a
            // follower's checkpoint stayed one answer behind: its last acknowledged records
            // were not counted as ones it must have before it may lead.
            state.unflushed.notify_one();
        }
        settle(state, &key, p);
    }
    progressed
}
