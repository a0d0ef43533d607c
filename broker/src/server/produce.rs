//! `POST /produce`: a producer's batch to a partition leader.

use super::partition::replica_now;
use super::replica_actions::settle;
use super::{lookup_leader, now_ms, State};
use crate::replica::{Produce, Produced};
use pehra_shared::api::{decode_request, error_response};
use pehra_shared::driver::{Incoming, Responder};
use pehra_shared::wire::{self, ErrorKind, ProduceRequest};
use std::sync::Arc;

/// Handles a produce: the partition's replica machine decides (appends, then answers at
/// once for acks 1, never for acks 0, or when every in-sync replica has the batch for
/// acks all); this driver decodes the request, routes it (leader, warm handover, the
/// Pehredar) and carries out the replica's actions.
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
    let mut p = partition.lock();
    // Leading, but handing over: held until the switch (or the rollback).
    let Some((_incoming, responder)) =
        super::handover::hold_if_handing_over(state, &mut p, incoming, responder)
    else {
        return;
    };
    let produce = Produce {
        topic: &request.topic,
        batch: &request.batch,
        record_count: count,
        acks: request.acks,
        leader_epoch: request.leader_epoch,
        producer_id: request.producer_id,
        base_sequence: request.base_sequence,
        gapless: request.gapless,
        if_log_end: request.if_log_end,
        timestamp_ms: now_ms(),
    };
    let produced = p.replica.handle_produce(replica_now(), &produce, responder);
    let key = (request.topic, request.partition);
    settle(state, &key, p);
    if produced == Produced::New {
        state.metrics.produced(&key.0, count, request.batch.len());
    }
    state.metrics.produce_took(start);
}
