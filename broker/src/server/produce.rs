//! `POST /produce`: a producer's batch to a partition leader.

use super::partition::{not_enough_replicas, AckWaiter, Partition};
use super::{lookup_leader, now_ms, State};
use crate::log::{BatchMeta, ProducerBatch};
use pehra_shared::api::{cbor_response, decode_request, error_response};
use pehra_shared::coap::{Code, Response};
use pehra_shared::driver::{Incoming, Responder};
use pehra_shared::wire::{self, Acks, ErrorKind, ProduceRequest, ProduceResponse};
use std::sync::Arc;
use tokio::time::Instant;

/// Handles a produce: appends, then answers at once (acks 1), never (acks 0), or when
/// every in-sync replica has the batch (acks all).
pub(crate) fn produce(state: &Arc<State>, incoming: Incoming, responder: Responder) {
    let start = std::time::Instant::now();
    let request: ProduceRequest = match decode_request(&incoming.request) {
        Ok(r) => r,
        Err(response) => return responder.respond(response),
    };
    let count = match wire::batch_record_count(&request.batch) {
        Ok(0) => {
            return responder.respond(error_response(
                ErrorKind::Malformed,
                "a record batch must hold at least one record",
            ))
        }
        Ok(n) => n,
        Err(e) => {
            return responder.respond(error_response(
                ErrorKind::Malformed,
                &format!("bad record batch: {e}"),
            ))
        }
    };
    let found = lookup_leader(state, &request.topic, request.partition);
    // Not the leader (now), but a warm handover of this partition is under way: held,
    // forwarded to the new leader, or waiting for this broker to learn that it leads.
    let (incoming, responder) = match &found {
        Err(_) => match super::handover::intercept(
            state,
            &request.topic,
            request.partition,
            incoming,
            responder,
        ) {
            None => return,
            Some(back) => back,
        },
        Ok(_) => (incoming, responder),
    };
    let partition = match found {
        Ok(p) => p,
        Err(not_leader)
            if super::pehra::holds_produces(state)
                && !incoming.request.queries().any(|q| q == "held") =>
        {
            // The Pehredar (or the one that just handed its term over) holds a produce
            // for a leader that (as the producer saw it) sleeps: the cluster is woken
            // and the produce forwarded.
            let held = super::pehra::Held {
                topic: request.topic,
                partition: request.partition,
                body: incoming.request.payload().to_vec(),
                not_leader,
            };
            return super::pehra::hold_and_forward(state, held, responder);
        }
        Err(response) => return responder.respond(response),
    };
    let mut p = partition.lock().expect("lock");
    // Leading, but handing over: held until the switch (or the rollback).
    let Some((_incoming, responder)) =
        super::handover::hold_if_handing_over(state, &mut p, incoming, responder)
    else {
        return;
    };
    let (response, duplicate) = match append(state, &mut p, &request, count) {
        Ok(Appended::New(r)) => (r, false),
        Ok(Appended::Duplicate(r)) => (r, true),
        Err(response) => return responder.respond(response),
    };
    let moved = p.advance_high_watermark(state.id);
    let end = p.log.log_end_offset();
    let until = response.base_offset + u64::from(response.record_count);
    // A duplicate gets the answer its original would get now: "ok" for acks=all only
    // once it is committed with enough replicas in sync. (A new batch was checked against
    // min in-sync before it was written, under this lock: only a duplicate meets this.)
    match request.acks {
        Acks::None => responder.discard(),
        Acks::Leader => responder.respond(cbor_response(Code::CHANGED, &response)),
        Acks::All if p.meta.isr.len() < p.min_insync as usize => {
            responder.respond(not_enough_replicas(p.meta.isr.len(), p.min_insync, true))
        }
        Acks::All if p.high_watermark >= until => {
            responder.respond(cbor_response(Code::CHANGED, &response))
        }
        Acks::All => {
            let deadline = Instant::now() + state.ack_timeout;
            if let Some(leader) = p.leader.as_mut() {
                leader.waiters.push(AckWaiter {
                    until,
                    deadline,
                    responder,
                    response,
                });
            }
        }
    }
    drop(p);
    if !duplicate {
        state.appended.notify_waiters(); // something new for the followers
        state
            .metrics
            .produced(&request.topic, count, request.batch.len());
    }
    state.metrics.produce_took(start);
    if let Some(hw) = moved {
        state.notify_partition(&request.topic, request.partition, hw, end);
    }
}

/// Checks an idempotent producer's batch against the batches of it the log remembers:
/// `Some` place for a retry of one of its last [`PRODUCER_WINDOW`](crate::log::PRODUCER_WINDOW) batches (not to be
/// written again), an error for a stale copy of an older batch, or (for a gapless
/// producer) a batch that does not start where its last stored batch ended.
fn check_sequence(
    log: &crate::log::PartitionLog,
    producer: ProducerBatch,
    gapless: bool,
) -> Result<Option<ProduceResponse>, Response> {
    let id = producer.producer_id;
    if let Some(stored) = log.producer_batch(id, producer.base_sequence) {
        return Ok(Some(ProduceResponse {
            base_offset: stored.base_offset,
            record_count: stored.record_count,
            leader_epoch: stored.leader_epoch,
        }));
    }
    let last = log.last_producer_batch(id);
    if let Some(last) = last {
        if producer.base_sequence < last.base_sequence {
            // A copy of an older batch arriving late (a CoAP retransmission to a broker
            // that restarted on the same address, a delayed datagram): the producer
            // already moved on, so it was stored or given up on. Never store it now, out
            // of order.
            return Err(error_response(
                ErrorKind::Malformed,
                &format!(
                    "producer {id} sequence {} is older than its last stored batch ({}): \
                     a stale duplicate, not stored",
                    producer.base_sequence, last.base_sequence
                ),
            ));
        }
    }
    if gapless {
        let expected = last.map_or(0, |l| l.base_sequence.wrapping_add(l.record_count));
        if producer.base_sequence != expected {
            return Err(error_response(
                ErrorKind::OutOfOrderSequence,
                &format!(
                    "producer {id} sequence {} is not the next one ({expected}): an earlier \
                     batch is not stored yet; send this one again after it",
                    producer.base_sequence
                ),
            ));
        }
    }
    Ok(None)
}

/// What [`append`] did with a batch.
enum Appended {
    /// Written now, at this place.
    New(ProduceResponse),
    /// A producer's retry of its last batch: not written again; the first one's place.
    /// Whether it may be acknowledged depends on the original's state, like a new one's.
    Duplicate(ProduceResponse),
}

/// Appends the batch unless it is a producer's retry of its last batch, which gets
/// the first one's place instead of a second copy.
fn append(
    state: &State,
    p: &mut Partition,
    request: &ProduceRequest,
    count: u32,
) -> Result<Appended, Response> {
    if let Some(epoch) = request.leader_epoch {
        if epoch != p.meta.leader_epoch {
            return Err(error_response(
                ErrorKind::FencedEpoch,
                &format!(
                    "leader epoch {epoch} is not the current {}",
                    p.meta.leader_epoch
                ),
            ));
        }
    }
    if request.producer_id == Some(u64::MAX) {
        return Err(error_response(
            ErrorKind::Malformed,
            "producer id 18446744073709551615 (u64::MAX) is reserved",
        ));
    }
    let producer = match (request.producer_id, request.base_sequence) {
        (Some(producer_id), Some(base_sequence)) => Some(ProducerBatch {
            producer_id,
            base_sequence,
        }),
        _ => None,
    };
    if let Some(producer) = producer {
        if let Some(refused) = check_sequence(&p.log, producer, request.gapless)? {
            return Ok(Appended::Duplicate(refused));
        }
    }
    if let Some(end) = request.if_log_end {
        let now = p.log.log_end_offset();
        if end != now {
            return Err(error_response(
                ErrorKind::VersionMismatch,
                &format!(
                    "the log of {}/{} ends at {now}, not {end}: not appended",
                    request.topic, request.partition
                ),
            ));
        }
    }
    if request.acks == Acks::All && p.meta.isr.len() < p.min_insync as usize {
        return Err(not_enough_replicas(p.meta.isr.len(), p.min_insync, false));
    }
    let epoch = p.meta.leader_epoch;
    let meta = BatchMeta {
        record_count: count,
        max_timestamp_ms: now_ms(),
        leader_epoch: epoch,
        producer,
        base_offset: None,
    };
    p.note_append(Instant::now());
    let info = p.log.append_batch(&request.batch, &meta).map_err(|e| {
        tracing::error!(topic = %request.topic, partition = request.partition, error = %e, "append failed");
        match e {
            crate::log::LogError::StorageFull { .. } => error_response(
                ErrorKind::Busy,
                &format!(
                    "{e} (broker {}): the batch was not stored; produce is refused until space \
                     is freed, fetches go on",
                    state.id
                ),
            ),
            e => error_response(
                ErrorKind::Internal,
                &format!("append failed on broker {}: {e}", state.id),
            ),
        }
    })?;
    state.unflushed.notify_one();
    Ok(Appended::New(ProduceResponse {
        base_offset: info.base_offset,
        record_count: count,
        leader_epoch: epoch,
    }))
}
