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

use super::partition::{replica_clock, replica_instant, replica_now};
use super::replica_actions::{run_actions, settle};
use super::{lookup_any, State};
use crate::log::LogError;
use crate::replica::FollowerFetch;
use pehra_shared::api::{cbor_response, decode_request};
use pehra_shared::coap::Code;
use pehra_shared::driver::{Incoming, Responder};
use pehra_shared::wire::{
    ErrorKind, ReplicaBatch, ReplicaFetchPartition, ReplicaFetchRequest, ReplicaFetchResponse,
    ReplicaPartitionData,
};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The longest an awake leader holds a follower's fetch with nothing new: until it
/// appends, at most this long (then as a separate CoAP response, the request acknowledged
/// at once). A leader once held one 400 ms (so that the answer rode in the ACK): each
/// awake follower then woke each of its leaders 2.5 times a second, dormant ones included
/// (420–460 wakeups a minute for a dormant broker, issue 19). Holding costs no latency:
/// an append answers the held fetch at once.
pub(crate) const IDLE_HOLD: Duration = Duration::from_secs(30);

/// The longest a dormant leader holds a follower's fetch: until it wakes, appends or its
/// alarm rings (it is up then anyway), at most this long. Under [`FETCH_TIMEOUT`].
pub(crate) const DORMANT_HOLD: Duration = Duration::from_secs(80);

/// How long a leader holds a fetch from a follower whose high watermark is behind its
/// own with nothing else new: the follower learns of a commit this soon (as when every
/// fetch was held this long), or sooner with the next append.
pub(crate) const COMMIT_NOTICE: Duration = Duration::from_millis(400);

/// How long a follower waits for a fetch's answer: the longest hold and some (under the
/// CoAP engine's 93 s wait for a separate response).
pub(crate) const FETCH_TIMEOUT: Duration = Duration::from_secs(88);

/// What the leader is doing while it holds a fetch, for [`hold`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LeaderMode {
    /// Awake.
    Awake,
    /// Dormant (PEHRA), its alarm this long after the fetch arrived (`None`: ringing or
    /// not known yet).
    Dormant { alarm_in: Option<Duration> },
}

/// How long after its arrival a fetch with nothing new is answered anyway: `asked` (the
/// follower's `max_wait_ms`) at most; soon ([`COMMIT_NOTICE`]) if the follower has not
/// heard of a commit; else up to [`IDLE_HOLD`] by an awake leader, and by a dormant one
/// until its alarm ([`DORMANT_HOLD`] at most).
pub(crate) fn hold(asked: Duration, behind_on_commits: bool, mode: LeaderMode) -> Duration {
    let limit = match mode {
        _ if behind_on_commits => COMMIT_NOTICE,
        LeaderMode::Awake | LeaderMode::Dormant { alarm_in: None } => IDLE_HOLD,
        LeaderMode::Dormant {
            alarm_in: Some(alarm),
        } => alarm.min(DORMANT_HOLD),
    };
    asked.min(limit)
}

/// Handles a follower's fetch, holding it until something is new or [`hold`] says.
pub(crate) fn replica_fetch(state: Arc<State>, incoming: Incoming, responder: Responder) {
    let request: ReplicaFetchRequest = match decode_request(&incoming.request) {
        Ok(r) => r,
        Err(response) => return responder.respond(response),
    };
    // One held fetch per peer: a follower has one fetch out to each leader, so a newer
    // one (it gave up on the older, or its partitions changed) ends the older at once.
    // Bounds what a peer can hold for up to a hold's length to one task.
    let peer = incoming.peer;
    let superseded = Arc::new(tokio::sync::Notify::new());
    if let Some(older) = state.held_fetches.lock().insert(peer, superseded.clone()) {
        older.notify_one();
    }
    tokio::spawn(async move {
        let arrived = tokio::time::Instant::now();
        let arrived_ms = super::now_ms();
        let asked = Duration::from_millis(u64::from(request.max_wait_ms));
        let (mut asleep, mut alarm) = (state.asleep.subscribe(), state.alarm_ms.subscribe());
        let mut first = true;
        let mut acknowledged = false;
        let mut ended = false;
        loop {
            let notified = state.appended.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (response, ready) = serve(&state, &request, first);
            first = false;
            let mode = if *asleep.borrow_and_update() {
                let alarm_ms = *alarm.borrow_and_update();
                LeaderMode::Dormant {
                    alarm_in: (alarm_ms > arrived_ms)
                        .then(|| Duration::from_millis(alarm_ms - arrived_ms)),
                }
            } else {
                LeaderMode::Awake
            };
            let held = hold(asked, behind_on_commits(&request, &response), mode);
            let deadline = arrived + held;
            if ready || ended || tokio::time::Instant::now() >= deadline {
                let mut held = state.held_fetches.lock();
                if held.get(&peer).is_some_and(|h| Arc::ptr_eq(h, &superseded)) {
                    held.remove(&peer);
                }
                drop(held);
                state.metrics.replica_fetches_answered.inc();
                return responder.respond(cbor_response(Code::CONTENT, &response));
            }
            if matches!(mode, LeaderMode::Dormant { .. }) && !acknowledged {
                // Dormant, a long hold: the empty ACK now, not at the piggyback window's
                // end (a wakeup of its own). Awake, the window stays: an append within it
                // answers in the ACK (two datagrams instead of four under load).
                responder.acknowledge();
                acknowledged = true;
            }
            tokio::select! {
                _ = notified => {}
                // The kernel timer: one wakeup at the deadline, not tokio's timer steps
                // towards it (a 30 s sleep cost a dormant broker four or five).
                () = pehra_shared::driver::clock::sleep_until(deadline) => {}
                // Woken, gone dormant, or a new alarm: the hold is decided again.
                _ = asleep.changed() => {}
                _ = alarm.changed() => {}
                () = superseded.notified() => ended = true,
            }
        }
    });
}

/// Whether the follower's high watermark is behind the leader's for a partition it asked
/// for (so it should hear of the commit soon).
fn behind_on_commits(request: &ReplicaFetchRequest, response: &ReplicaFetchResponse) -> bool {
    request
        .partitions
        .iter()
        .zip(&response.partitions)
        .any(|(asked, data)| {
            asked
                .high_watermark
                .is_some_and(|hw| data.high_watermark > hw)
        })
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
    let key = (asked.topic.clone(), asked.partition);
    let mut p = partition.lock();
    let fetch = FollowerFetch {
        replica,
        leader_epoch: asked.leader_epoch,
        offset: asked.offset,
        last_fetched_epoch: asked.last_fetched_epoch,
        first,
    };
    let view = p.replica.handle_follower_fetch(replica_now(), fetch);
    data.error = view.error;
    data.high_watermark = view.high_watermark;
    data.log_start_offset = view.log_start_offset;
    data.log_end_offset = view.log_end_offset;
    data.diverging = view.diverging;
    if let Some(offset) = view.read_from.filter(|_| *budget > 0) {
        match p.replica.log().read(offset, *budget) {
            Ok(batches) => {
                for b in batches {
                    *budget = budget.saturating_sub(b.bytes.len());
                    data.batches.push(ReplicaBatch::from(b));
                }
            }
            Err(LogError::OffsetOutOfRange { .. }) => {}
            Err(e) => {
                tracing::error!(topic = %asked.topic, partition = asked.partition, error = %e, "reading for a follower");
                data.error = Some(ErrorKind::Internal);
            }
        }
    }
    settle(state, &key, p);
    data
}

/// Answers acks=all produces that waited too long and drops followers that lag from the
/// in-sync set. It wakes only when that can be due: at the earliest deadline any
/// partition has ([`crate::replica::PartitionReplica::poll_timeout`]; a replica whose
/// timeout becomes earlier than this wake, e.g. for an acks=all produce, wakes it through
/// `isr_recheck`: every settle compares), after an ISR change or an assignment change,
/// and, while this broker leads a partition, at least every [`ISR_SAFETY`] (a safety net
/// for an event missed); an idle broker whose followers have everything sleeps here for
/// that long, and one that leads nothing until an assignment makes it a leader. It waits
/// on the kernel timer (one wakeup, not tokio's timer steps).
pub(crate) async fn maintain_isr(state: Arc<State>) {
    let mut next: Option<Instant> = None;
    let mut leads_any = true;
    loop {
        // Registered before the check below, so a change during it is not missed.
        let assigned = state.assignment_applied.notified();
        let rechecked = state.isr_recheck.notified();
        tokio::pin!(assigned, rechecked);
        assigned.as_mut().enable();
        rechecked.as_mut().enable();
        let now = Instant::now();
        let safety = leads_any.then_some(now + state.replica_lag.max(ISR_SAFETY));
        // Never sooner than the old tick's floor: a deadline that stays in the past
        // (its work is in flight) must not spin.
        let at = match (next, safety) {
            (Some(n), Some(s)) => Some(n.min(s)),
            (n, s) => n.or(s),
        }
        .map(|at| at.max(now + ISR_CHECK_FLOOR));
        // A replica whose next timeout comes before this wakes it (`partition::settle`).
        let wake_at = at.map_or(u64::MAX, |at| replica_clock(at).as_micros());
        state.isr_wake_at.store(wake_at, Ordering::Relaxed);
        tokio::select! {
            _ = async {
                match at {
                    Some(at) => pehra_shared::driver::clock::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {}
            _ = &mut assigned => {}
            _ = &mut rechecked => {}
        }
        super::pehra::awake(&state).await;
        let partitions: Vec<_> = state
            .partitions
            .read()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        next = None;
        leads_any = false;
        for (key, partition) in partitions {
            let mut p = partition.lock();
            leads_any |= p.replica.in_leader_term();
            p.replica.handle_timeout(replica_now());
            if let Some(at) = p.replica.poll_timeout().map(replica_instant) {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
            let actions = p.take_actions();
            drop(p);
            run_actions(&state, &key, actions);
        }
    }
}

/// The shortest wait between two ISR checks.
const ISR_CHECK_FLOOR: Duration = Duration::from_millis(50);

/// The in-sync set upkeep's safety net while leading (the replica lag if longer): a
/// deadline is otherwise brought by `isr_recheck`, which every settle of a partition
/// whose next timeout comes before the upkeep's wake signals. Every replica lag (5 s by
/// default) until 2026-12-05: with a topic, most of an awake idle leader's wakeups (its
/// 5 s sleep on tokio's timer cost three or four).
const ISR_SAFETY: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;

    const ASKED: Duration = Duration::from_secs(80);

    #[test]
    fn an_awake_leader_holds_an_idle_fetch_thirty_seconds() {
        assert_eq!(hold(ASKED, false, LeaderMode::Awake), IDLE_HOLD);
        assert_eq!(
            hold(Duration::from_millis(500), false, LeaderMode::Awake),
            Duration::from_millis(500),
            "never longer than the follower asked"
        );
    }

    #[test]
    fn a_follower_behind_on_commits_hears_of_them_soon() {
        assert_eq!(hold(ASKED, true, LeaderMode::Awake), COMMIT_NOTICE);
        let dormant = LeaderMode::Dormant {
            alarm_in: Some(Duration::from_secs(50)),
        };
        assert_eq!(hold(ASKED, true, dormant), COMMIT_NOTICE);
    }

    #[test]
    fn a_dormant_leader_holds_until_its_alarm_within_its_limit() {
        let at = |s| LeaderMode::Dormant {
            alarm_in: Some(Duration::from_secs(s)),
        };
        assert_eq!(hold(ASKED, false, at(55)), Duration::from_secs(55));
        assert_eq!(
            hold(ASKED, false, at(3)),
            Duration::from_secs(3),
            "up then anyway"
        );
        assert_eq!(hold(ASKED, false, at(600)), DORMANT_HOLD);
        assert_eq!(
            hold(ASKED, false, LeaderMode::Dormant { alarm_in: None }),
            IDLE_HOLD,
            "checking in: until the next alarm is known"
        );
        assert!(DORMANT_HOLD + Duration::from_secs(5) <= FETCH_TIMEOUT);
    }
}
