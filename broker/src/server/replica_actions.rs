//! Carrying out what the partitions' replica machines ask for
//! ([`crate::replica::Action`]): answering producers, waking followers, the flusher,
//! consumers and the in-sync set upkeep, and the zookeeper work of in-sync set changes
//! and epoch checks, whose outcomes go back to the machine.

use super::partition::{join, produce_response, replica_now, Partition, PartitionKey};
use super::{lookup_any, State};
use crate::replica::{Action, EpochCheckOutcome, IsrChange, IsrWritten};
use parking_lot::MutexGuard;
use pehra_cluster as cluster;
use pehra_shared::driver::Responder;
use pehra_shared::wire::{self, ErrorKind, PartitionMetadata};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Releases the lock of the partition `key` after the replica was given an input: runs
/// what it asked for, and wakes the in-sync set upkeep if the replica's next timeout is
/// earlier than the upkeep's (an acks=all produce waiting; not every append: a follower's
/// lag deadline after an append is never earlier than the upkeep's next look).
pub(crate) fn settle(state: &Arc<State>, key: &PartitionKey, mut p: MutexGuard<'_, Partition>) {
    let actions = p.take_actions();
    let due = p.replica.poll_timeout();
    drop(p);
    if due.is_some_and(|due| due.as_micros() < state.isr_wake_at.load(Ordering::Relaxed)) {
        state.isr_recheck.notify_one();
    }
    run_actions(state, key, actions);
}

/// Carries out what the replica of `key` asked for: answers producers, wakes followers,
/// the flusher and consumers, and starts the zookeeper work (in-sync set changes, epoch
/// checks) as tasks. Called without the partition's lock.
pub(crate) fn run_actions(state: &Arc<State>, key: &PartitionKey, actions: Vec<Action<Responder>>) {
    for action in actions {
        match action {
            Action::Answer { token, answer } => token.respond(produce_response(answer)),
            Action::Discard(token) => token.discard(),
            Action::Appended => {
                state.appended.notify_waiters(); // something new for the followers
                state.unflushed.notify_one();
            }
            Action::HighWatermark { hw, log_end } => {
                // A commit: held follower fetches look again (one that is behind it is
                // answered within `replica::COMMIT_NOTICE`).
                state.appended.notify_waiters();
                state.notify_partition(&key.0, key.1, hw, log_end)
            }
            Action::ChangeIsr { epoch, change } => {
                tokio::spawn(change_isr(state.clone(), key.clone(), epoch, change));
            }
            Action::CheckEpoch { replica, claimed } => {
                tokio::spawn(check_newer_epoch(
                    state.clone(),
                    key.clone(),
                    replica,
                    claimed,
                ));
            }
            Action::EligibilityChanged => state.eligibility_changed.notify_one(),
            Action::ReadAssignment => state.reassign.notify_one(),
        }
    }
}

/// Pause between attempts to reach the zookeeper while checking an epoch claim.
const EPOCH_CHECK_RETRY: Duration = Duration::from_millis(500);

/// Checks with the zookeeper a follower's claim that the partition has a leader epoch
/// newer than ours ([`Action::CheckEpoch`](crate::replica::Action::CheckEpoch)), and gives
/// the replica the answer until it has one (it fences itself meanwhile).
pub(crate) async fn check_newer_epoch(
    state: Arc<State>,
    key: PartitionKey,
    replica: u32,
    claimed: u32,
) {
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

/// Gives the zookeeper's answer to the replica; `true` to ask again.
fn settle_epoch_check(
    state: &Arc<State>,
    key: &PartitionKey,
    replica: u32,
    claimed: u32,
    read: Result<Vec<u8>, pehra_zookeeper::ZkError>,
) -> bool {
    let Some(partition) = lookup_any(state, &key.0, key.1) else {
        return false;
    };
    let mut p = partition.lock();
    let outcome = match read.map(|data| wire::decode::<PartitionMetadata>(&data)) {
        Ok(Ok(meta)) => EpochCheckOutcome::Read(meta),
        Ok(Err(e)) => {
            tracing::debug!(topic = %key.0, partition = key.1, error = %e, "the partition znode");
            EpochCheckOutcome::Undecodable
        }
        Err(e) => {
            tracing::debug!(topic = %key.0, partition = key.1, replica, claimed, error = %e, "checking a claimed epoch");
            EpochCheckOutcome::Unreachable
        }
    };
    let again = p.replica.handle_epoch_check(replica_now(), outcome);
    settle(state, key, p);
    again
}

/// Writes an in-sync set change ([`Action::ChangeIsr`](crate::replica::Action::ChangeIsr))
/// to the partition znode if it still names us leader in `epoch`, and gives the replica
/// the outcome.
pub(crate) async fn change_isr(
    state: Arc<State>,
    key: PartitionKey,
    epoch: u32,
    change: IsrChange,
) {
    let result = write_isr(&state, &key, epoch, &change).await;
    if let Some(partition) = lookup_any(&state, &key.0, key.1) {
        let mut p = partition.lock();
        let written = match result {
            Ok(Some((meta, version))) => {
                tracing::info!(topic = %key.0, partition = key.1, ?change, isr = %join(&meta.isr), "in-sync replicas changed");
                IsrWritten::Changed(meta, version)
            }
            Ok(None) => IsrWritten::NotWritten,
            Err(e) => {
                tracing::warn!(topic = %key.0, partition = key.1, ?change, error = %e, "could not change the in-sync replicas");
                IsrWritten::Failed
            }
        };
        let before = p.replica.meta().isr.clone();
        p.replica.handle_isr_written(replica_now(), written);
        state.metrics.isr_changed(&before, &p.replica);
        settle(&state, &key, p);
    }
    // Whatever came of it, the ISR upkeep looks again (it waited for this outcome).
    state.isr_recheck.notify_one();
}

async fn write_isr(
    state: &State,
    key: &PartitionKey,
    epoch: u32,
    change: &IsrChange,
) -> Result<Option<(PartitionMetadata, u32)>, pehra_zookeeper::ZkError> {
    let Some(zk) = state.zk.get() else {
        return Ok(None);
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
        if !change.apply(&mut meta, state.id) {
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
