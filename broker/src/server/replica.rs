//! The leader's side of replication: `POST /replica` (followers' long-polling fetches),
//! and the in-sync replica set it keeps in the partition znodes.
//!
//! A follower's fetch offset is its log end: the leader takes it as the follower's
//! progress, moves the high watermark to what every in-sync replica has, and answers
//! the acks=all produces that covers. A follower that has caught up joins the in-sync
//! set; one that has not caught up for longer than the lag limit leaves it. Both are
//! conditional writes of the partition znode, made only while it still names this
//! broker leader in the same epoch, and applied here only once written: a leader never
//! counts on a smaller set than the zookeeper knows (else the controller could elect a
//! replica missing acknowledged records).

use super::partition::{join, PartitionKey};
use super::{lookup_any, State};
use crate::log::LogError;
use pehra_shared::api::{cbor_response, decode_request};
use pehra_shared::coap::Code;
use pehra_shared::driver::{Incoming, Responder};
use pehra_shared::wire::{
    self, EpochEndOffset, ErrorKind, PartitionMetadata, ReplicaBatch, ReplicaFetchPartition,
    ReplicaFetchRequest, ReplicaFetchResponse, ReplicaPartitionData,
};
use pehra_zookeeper::cluster;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The longest a leader holds a fetch with nothing new (under the CoAP piggyback window,
/// so the answer rides in the ACK).
pub(crate) const MAX_WAIT: Duration = Duration::from_millis(400);

/// Handles a follower's fetch, holding it until something is new or `max_wait_ms` passed.
pub(crate) fn replica_fetch(state: Arc<State>, incoming: Incoming, responder: Responder) {
    let request: ReplicaFetchRequest = match decode_request(&incoming.request) {
        Ok(r) => r,
        Err(response) => return responder.respond(response),
    };
    tokio::spawn(async move {
        let wait = Duration::from_millis(u64::from(request.max_wait_ms)).min(MAX_WAIT);
        let deadline = tokio::time::Instant::now() + wait;
        let mut first = true;
        loop {
            let notified = state.appended.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (response, ready) = serve(&state, &request, first);
            first = false;
            if ready || tokio::time::Instant::now() >= deadline {
                return responder.respond(cbor_response(Code::CONTENT, &response));
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    });
}

/// Builds the answer; `true` if it carries anything worth answering at once (batches,
/// errors, a divergence).
fn serve(
    state: &Arc<State>,
    request: &ReplicaFetchRequest,
    first: bool,
) -> (ReplicaFetchResponse, bool) {
    let mut budget = (request.max_bytes as usize).clamp(1, state.replica_fetch_bytes);
    let mut ready = false;
    let mut partitions = Vec::with_capacity(request.partitions.len());
    for asked in &request.partitions {
        let data = serve_partition(state, request.replica, asked, first, &mut budget);
        ready |= data.error.is_some() || data.diverging.is_some() || !data.batches.is_empty();
        partitions.push(data);
    }
    (ReplicaFetchResponse { partitions }, ready)
}

fn serve_partition(
    state: &Arc<State>,
    replica: u32,
    asked: &ReplicaFetchPartition,
    first: bool,
    budget: &mut usize,
) -> ReplicaPartitionData {
    let mut data = ReplicaPartitionData {
        topic: asked.topic.clone(),
        partition: asked.partition,
        error: None,
        high_watermark: 0,
        log_start_offset: 0,
        log_end_offset: 0,
        diverging: None,
        batches: Vec::new(),
    };
    let Some(partition) = lookup_any(state, &asked.topic, asked.partition) else {
        data.error = Some(ErrorKind::NotLeader);
        return data;
    };
    let mut p = partition.lock().expect("lock");
    if asked.leader_epoch > p.meta.leader_epoch && p.leads(state.id) {
        // A fetch claims a newer epoch: we may have been deposed (a pause, a partition
        // from the zookeeper). The claim is only a number in a datagram, so it is checked
        // with the zookeeper before the leader steps down: a forged or impossible epoch
        // never fences a leader.
        if p.begin_epoch_check(Instant::now()) {
            let key = (asked.topic.clone(), asked.partition);
            tokio::spawn(check_newer_epoch(
                state.clone(),
                key,
                replica,
                asked.leader_epoch,
            ));
        }
    }
    if asked.leader_epoch != p.meta.leader_epoch || !p.leads(state.id) {
        data.error = Some(if asked.leader_epoch < p.meta.leader_epoch {
            ErrorKind::FencedEpoch
        } else {
            ErrorKind::NotLeader
        });
        return data;
    }
    if !p.meta.replicas.contains(&replica) {
        data.error = Some(ErrorKind::NotFound);
        return data;
    }
    let (start, end) = (p.log.log_start_offset(), p.log.log_end_offset());
    data.log_start_offset = start;
    data.log_end_offset = end;
    if let Some(epoch) = asked.last_fetched_epoch {
        let diverging = match p.log.end_offset_for_epoch(epoch) {
            Some((found, end_offset)) if found == epoch && end_offset >= asked.offset => None,
            Some((found, end_offset)) => Some(EpochEndOffset {
                epoch: found,
                end_offset,
            }),
            None => Some(EpochEndOffset {
                epoch,
                end_offset: start,
            }),
        };
        if diverging.is_some() {
            data.diverging = diverging;
            data.high_watermark = p.high_watermark;
            return data;
        }
    }
    if asked.offset > end {
        // No follower can have more than the leader once their epochs agree (the
        // divergence check above): a fetch offset past our log end is refused and not
        // taken as progress (else one datagram could advance the high watermark and
        // acknowledge acks=all records no follower has). The follower truncates to our
        // end, as after a divergence.
        tracing::warn!(
            topic = %asked.topic, partition = asked.partition, replica, offset = asked.offset,
            end, "a follower's fetch offset is past the leader's log end: refused"
        );
        data.diverging = Some(EpochEndOffset {
            epoch: p.meta.leader_epoch,
            end_offset: end,
        });
        data.high_watermark = p.high_watermark;
        return data;
    }
    if first {
        let join_isr = p.record_fetch(replica, asked.offset, Instant::now());
        if join_isr {
            if let Some(leader) = p.leader.as_mut() {
                leader.isr_change_pending = true;
                leader.adding = Some(replica);
            }
            let key = (asked.topic.clone(), asked.partition);
            tokio::spawn(change_isr(state.clone(), key, IsrChange::Add(replica)));
        }
        if let Some(hw) = p.advance_high_watermark(state.id) {
            state.notify_partition(&asked.topic, asked.partition, hw, p.log.log_end_offset());
        }
    }
    data.high_watermark = p.high_watermark;
    if asked.offset < start || asked.offset >= end || *budget == 0 {
        return data; // below the start: the follower starts over from `start`
    }
    match p.log.read(asked.offset, *budget) {
        Ok(batches) => {
            for b in batches {
                *budget = budget.saturating_sub(b.bytes.len());
                data.batches.push(ReplicaBatch {
                    base_offset: b.base_offset,
                    record_count: b.record_count,
                    leader_epoch: b.leader_epoch,
                    max_timestamp_ms: b.max_timestamp_ms,
                    producer_id: b.producer.map(|x| x.producer_id),
                    base_sequence: b.producer.map(|x| x.base_sequence),
                    batch: b.bytes,
                });
            }
        }
        Err(LogError::OffsetOutOfRange { .. }) => {}
        Err(e) => {
            tracing::error!(topic = %asked.topic, partition = asked.partition, error = %e, "reading for a follower");
            data.error = Some(ErrorKind::Internal);
        }
    }
    data
}

/// How long after a refuted epoch claim further claims for the partition are ignored (an
/// attacker repeating a forged epoch makes at most one zookeeper read per this period).
const REFUTED_CLAIM_HOLDOFF: Duration = Duration::from_secs(1);
/// Pause between attempts to reach the zookeeper while checking an epoch claim.
const EPOCH_CHECK_RETRY: Duration = Duration::from_millis(500);

/// Checks with the zookeeper a follower's claim that the partition has a leader epoch
/// newer than ours. Deposed (the zookeeper names a newer epoch or another leader): fence
/// and step down until the new state arrives. Still the leader in our epoch: the claim
/// was forged or impossible; it is logged and ignored. Zookeeper unreachable: fenced
/// (the safe side: we may be the one cut off) and asked again until it answers.
async fn check_newer_epoch(state: Arc<State>, key: PartitionKey, replica: u32, claimed: u32) {
    let path = cluster::partition_path(&key.0, key.1);
    loop {
        let read = match state.zk.get() {
            Some(zk) => zk.get_data(&path).await.map(|(data, _)| data),
            None => return,
        };
        if !settle_epoch_check(&state, &key, replica, claimed, read) {
            return;
        }
        tokio::time::sleep(EPOCH_CHECK_RETRY).await;
    }
}

/// Acts on the zookeeper's answer (see [`check_newer_epoch`]); `true` to ask again.
fn settle_epoch_check(
    state: &State,
    key: &PartitionKey,
    replica: u32,
    claimed: u32,
    read: Result<Vec<u8>, pehra_zookeeper::ZkError>,
) -> bool {
    let Some(partition) = lookup_any(state, &key.0, key.1) else {
        return false;
    };
    let mut p = partition.lock().expect("lock");
    let ours = p.meta.leader_epoch;
    match read.map(|data| wire::decode::<PartitionMetadata>(&data)) {
        Ok(Ok(meta)) if meta.leader_epoch > ours || meta.leader != Some(state.id) => {
            tracing::warn!(
                topic = %key.0, partition = key.1, ours, zookeeper = meta.leader_epoch,
                replica, claimed, "a newer leader epoch exists: fenced"
            );
            p.fence(meta.leader_epoch.max(ours + 1));
            drop(p);
            state.reassign.notify_one();
            false
        }
        Ok(Ok(_)) => {
            tracing::warn!(
                topic = %key.0, partition = key.1, ours, replica, claimed,
                "a fetch claimed a leader epoch the zookeeper does not know (forged or impossible): ignored"
            );
            if p.fenced_by == Some(ours + 1) {
                p.fenced_by = None; // set while the zookeeper did not answer
            }
            p.end_epoch_check(Some(Instant::now() + REFUTED_CLAIM_HOLDOFF));
            false
        }
        Ok(Err(e)) => {
            tracing::error!(topic = %key.0, partition = key.1, error = %e, "undecodable partition znode");
            p.end_epoch_check(None);
            false
        }
        Err(e) => {
            if p.fenced_by.is_none() {
                tracing::warn!(
                    topic = %key.0, partition = key.1, ours, replica, claimed, error = %e,
                    "a fetch claimed a newer leader epoch and the zookeeper cannot confirm ours: fenced until it answers"
                );
                p.fenced_by = Some(ours + 1);
                p.step_down("a newer leader epoch may exist");
            }
            true
        }
    }
}

/// A change to a partition's in-sync set.
#[derive(Debug, Clone)]
pub(crate) enum IsrChange {
    /// A follower caught up.
    Add(u32),
    /// Followers fell behind.
    Remove(Vec<u32>),
}

/// Writes an in-sync set change to the partition znode (if it still names us leader in
/// our epoch) and then applies it here.
pub(crate) async fn change_isr(state: Arc<State>, key: PartitionKey, change: IsrChange) {
    apply_isr_change(&state, &key, &change).await;
    // Whatever came of it, the ISR upkeep looks again (it waited for this outcome).
    state.isr_recheck.notify_one();
}

async fn apply_isr_change(state: &Arc<State>, key: &PartitionKey, change: &IsrChange) {
    let state = state.clone();
    let key = key.clone();
    let result = write_isr(&state, &key, change).await;
    if let Some(partition) = lookup_any(&state, &key.0, key.1) {
        let mut p = partition.lock().expect("lock");
        match &result {
            Ok(Some((meta, version))) => {
                tracing::info!(topic = %key.0, partition = key.1, ?change, isr = %join(&meta.isr), "in-sync replicas changed");
                let min_insync = p.min_insync;
                let before = p.meta.isr.clone();
                p.update(state.id, meta.clone(), *version, min_insync, Instant::now());
                state.metrics.isr_changed(&before, &p, state.id);
                if let Some(hw) = p.advance_high_watermark(state.id) {
                    let end = p.log.log_end_offset();
                    drop(p);
                    state.notify_partition(&key.0, key.1, hw, end);
                    return;
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(topic = %key.0, partition = key.1, ?change, error = %e, "could not change the in-sync replicas")
            }
        }
        let outcome_known = result.is_ok();
        if let Some(leader) = p.leader.as_mut() {
            leader.isr_change_pending = false;
            // A refused or pointless addition stops counting; after an error the write
            // may or may not have happened, so the follower keeps counting until the
            // next read of the znode settles it.
            if outcome_known {
                leader.adding = None;
            }
        }
    }
}

async fn write_isr(
    state: &State,
    key: &PartitionKey,
    change: &IsrChange,
) -> Result<Option<(PartitionMetadata, u32)>, pehra_zookeeper::ZkError> {
    let Some(zk) = state.zk.get() else {
        return Ok(None);
    };
    let epoch = match lookup_any(state, &key.0, key.1) {
        Some(p) => match p.lock().expect("lock").leader.as_ref() {
            Some(l) => l.epoch,
            None => return Ok(None),
        },
        None => return Ok(None),
    };
    let path = cluster::partition_path(&key.0, key.1);
    for _ in 0..5 {
        let (data, stat) = zk.get_data(&path).await?;
        let Ok(mut meta) = wire::decode::<PartitionMetadata>(&data) else {
            return Ok(None);
        };
        if meta.leader != Some(state.id) || meta.leader_epoch != epoch {
            return Ok(None); // no longer ours to change
        }
        if !apply_to_metadata(&mut meta, change, state.id) {
            return Ok(None);
        }
        match zk
            .set_data(
                &path,
                &wire::encode(&meta).expect("encodes"),
                Some(stat.version),
            )
            .await
        {
            Ok(stat) => return Ok(Some((meta, stat.version))),
            Err(e) if e.kind() == Some(ErrorKind::VersionMismatch) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// Applies `change` to a partition's state as its leader `me` writes it; `false` if it
/// changes nothing. A follower added to the ISR empties the eligible leader replicas
/// ([`PartitionMetadata::elr`]): acks=all records may be acknowledged from now on without
/// them, so they would no longer hold every acknowledged record.
fn apply_to_metadata(meta: &mut PartitionMetadata, change: &IsrChange, me: u32) -> bool {
    match change {
        IsrChange::Add(r) => {
            if !meta.replicas.contains(r) || meta.isr.contains(r) {
                return false;
            }
            meta.isr.push(*r);
            meta.elr.clear();
            true
        }
        IsrChange::Remove(gone) => {
            let before = meta.isr.len();
            meta.isr.retain(|r| *r == me || !gone.contains(r));
            meta.isr.len() != before
        }
    }
}

/// Answers acks=all produces that waited too long and drops followers that lag from the
/// in-sync set. It wakes only when that can be due: at the earliest deadline any
/// partition has ([`super::partition::Partition::next_isr_check`]), after a write, a
/// fetch's ISR change or an assignment change, and, while this broker leads a partition,
/// at least every `replica_lag` (a safety net for an event missed); an idle broker whose
/// followers have everything sleeps here for that long, and one that leads nothing until
/// an assignment makes it a leader.
pub(crate) async fn maintain_isr(state: Arc<State>) {
    let mut next: Option<Instant> = None;
    let mut leads_any = true;
    loop {
        // Registered before the check below, so a write during it is not missed.
        let appended = state.appended.notified();
        let assigned = state.assignment_applied.notified();
        let rechecked = state.isr_recheck.notified();
        tokio::pin!(appended, assigned, rechecked);
        appended.as_mut().enable();
        assigned.as_mut().enable();
        rechecked.as_mut().enable();
        let now = Instant::now();
        let safety = leads_any.then_some(now + state.replica_lag);
        // Never sooner than the old tick's floor: a deadline that stays in the past
        // (its work is in flight) must not spin.
        let at = match (next, safety) {
            (Some(n), Some(s)) => Some(n.min(s)),
            (n, s) => n.or(s),
        }
        .map(|at| at.max(now + ISR_CHECK_FLOOR));
        tokio::select! {
            _ = async {
                match at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {}
            _ = &mut appended => {}
            _ = &mut assigned => {}
            _ = &mut rechecked => {}
        }
        super::pehra::awake(&state).await;
        let now = Instant::now();
        let partitions: Vec<_> = state
            .partitions
            .read()
            .expect("lock")
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        next = None;
        leads_any = false;
        for (key, partition) in partitions {
            let mut p = partition.lock().expect("lock");
            leads_any |= p.leader.is_some();
            p.expire_waiters(now);
            let lagging = p.lagging_followers(state.id, state.replica_lag, now);
            if !lagging.is_empty() {
                tracing::info!(topic = %key.0, partition = key.1, lagging = %join(&lagging), "followers fell behind: leaving the in-sync set");
                if let Some(leader) = p.leader.as_mut() {
                    leader.isr_change_pending = true;
                }
                tokio::spawn(change_isr(state.clone(), key, IsrChange::Remove(lagging)));
            }
            if let Some(at) = p.next_isr_check(state.id, state.replica_lag) {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
    }
}

/// The shortest wait between two ISR checks.
const ISR_CHECK_FLOOR: Duration = Duration::from_millis(50);

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(isr: &[u32], elr: &[u32]) -> PartitionMetadata {
        PartitionMetadata {
            partition: 0,
            leader: Some(1),
            leader_epoch: 2,
            replicas: vec![1, 2, 3],
            isr: isr.to_vec(),
            elr: elr.to_vec(),
        }
    }

    #[test]
    fn a_follower_back_in_the_isr_empties_the_eligible_leader_replicas() {
        let mut m = meta(&[1], &[2, 3]);
        assert!(apply_to_metadata(&mut m, &IsrChange::Add(3), 1));
        assert_eq!(m, meta(&[1, 3], &[]));
        // Nothing to add: nothing changes, the ELR neither.
        let mut m = meta(&[1, 3], &[2]);
        assert!(!apply_to_metadata(&mut m, &IsrChange::Add(3), 1));
        assert!(!apply_to_metadata(&mut m, &IsrChange::Add(7), 1));
        assert_eq!(m, meta(&[1, 3], &[2]));
    }

    #[test]
    fn the_leader_never_removes_itself_and_a_removal_keeps_the_elr() {
        let mut m = meta(&[1, 2, 3], &[]);
        assert!(apply_to_metadata(&mut m, &IsrChange::Remove(vec![1, 2]), 1));
        assert_eq!(m, meta(&[1, 3], &[]));
        let mut m = meta(&[1, 3], &[2]);
        assert!(!apply_to_metadata(&mut m, &IsrChange::Remove(vec![2]), 1));
        assert_eq!(m, meta(&[1, 3], &[2]));
    }
}
