//! The broker's side of a warm (predictive) handover of a partition's leadership
//! (seed 002; the controller's side and the protocol: `pehra_cluster::warm`).
//!
//! - As the leader named in an order's `presync`: stop appending to the partition
//!   (produces are held: [`HandoverSide::Holding`]), wait until the high watermark
//!   reaches the log end with the candidate in sync there (every acks=all produce is
//!   answered, the candidate has every record and so every producer's state), and
//!   confirm with that log end in the order (`ready_log_end`).
//! - When the order goes: the partition znode says what happened. A new leader epoch:
//!   the lease was transferred; this broker follows from then on and forwards the held
//!   produces (and, for a while, late ones: [`HandoverSide::HandedTo`]) to the new
//!   leader, relaying its answers, so producers see no error. The same epoch with this
//!   broker leading: rolled back; the held produces are appended here as usual.
//! - As the candidate: a produce that arrives before this broker learnt that it leads
//!   waits for the new assignment ([`HandoverSide::TakingOver`]).

use super::partition::{replica_now, HandoverSide};
use super::replica_actions::run_actions;
use super::{lookup_any, State};
use parking_lot::Mutex;
use pehra_cluster::handover::{HandoverOrder, PreSync};
use pehra_cluster::{self as cluster, handover_partition, HANDOVERS};
use pehra_shared::api::error_response;
use pehra_shared::driver::{Incoming, Responder};
use pehra_shared::wire::{self, ErrorKind, PartitionMetadata};
use pehra_zookeeper::{Client, ZkError};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How long a broker that handed over forwards late produces to the new leader.
const FORWARD_FOR: Duration = Duration::from_secs(10);
/// How long a candidate holds a produce waiting to learn that it leads.
const TAKE_OVER_WAIT: Duration = Duration::from_secs(3);
/// How long the leader waits for the candidate to catch up (the controller's pre-sync
/// timeout rolls the handover back before).
const PRESYNC_LIMIT: Duration = Duration::from_secs(10);

/// How often the orders are read again without a watch event while no handover is
/// under way on this broker (a fallback: the watches bring every change).
const IDLE_FALLBACK: Duration = Duration::from_secs(60);

/// How a held produce goes through the ordinary produce path again (`produce::produce`,
/// passed in so this module does not import its caller).
pub(crate) type Dispatch = fn(&Arc<State>, Incoming, Responder);

/// Follows the handover orders for as long as the broker runs.
pub(crate) async fn follow(zk: Arc<Client>, state: Arc<State>, dispatch: Dispatch) {
    let (tx, mut changed) = mpsc::unbounded_channel::<()>();
    let watched: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    // Orders this broker acts on, with the pre-sync it saw.
    let mut known: BTreeMap<String, PreSync> = BTreeMap::new();
    loop {
        match read_orders(&zk).await {
            Ok(orders) => {
                for (name, presync) in &orders {
                    watch(&zk, &format!("{HANDOVERS}/{name}"), false, &watched, &tx).await;
                    let Some(presync) = presync else { continue };
                    let Some((topic, p)) = handover_partition(name) else {
                        continue;
                    };
                    match known.get(name) {
                        Some(seen) if seen == presync => continue,
                        // Another handover of the same partition since the last read:
                        // the earlier one ended first.
                        Some(seen) => {
                            if seen.leader == state.id {
                                finish_as_leader(&zk, &state, &topic, p, *seen, dispatch).await;
                            }
                            known.remove(name);
                        }
                        None => {}
                    }
                    if presync.leader == state.id {
                        known.insert(name.clone(), *presync);
                        tokio::spawn(presync_as_leader(
                            zk.clone(),
                            state.clone(),
                            name.clone(),
                            topic,
                            p,
                            *presync,
                        ));
                    } else if presync.candidate == state.id {
                        known.insert(name.clone(), *presync);
                        if let Some(part) = lookup_any(&state, &topic, p) {
                            let mut part = part.lock();
                            if matches!(part.handover, HandoverSide::None) {
                                part.handover = HandoverSide::TakingOver {
                                    since: Instant::now(),
                                    held: Vec::new(),
                                };
                            }
                        }
                    }
                }
                let gone: Vec<String> = known
                    .keys()
                    .filter(|n| !orders.contains_key(*n))
                    .cloned()
                    .collect();
                for name in gone {
                    let presync = known.remove(&name).expect("known");
                    if presync.leader == state.id {
                        if let Some((topic, p)) = handover_partition(&name) {
                            finish_as_leader(&zk, &state, &topic, p, presync, dispatch).await;
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading the handover orders"),
        }
        watch(&zk, HANDOVERS, true, &watched, &tx).await;
        let in_progress = release_taken_over(&state, dispatch) || !known.is_empty();
        // The watches bring every change; the timer is a fallback, once a second only
        // while a handover is under way here. Otherwise a minute, and none at all while
        // the broker is dormant (a poll a second was 60 wakeups a minute of a sleeping
        // broker, issue 19): waking up reads the orders again.
        let fallback = async {
            if in_progress {
                tokio::time::sleep(Duration::from_secs(1)).await;
            } else {
                super::pehra::awake_period(&state.asleep, IDLE_FALLBACK).await;
            }
        };
        tokio::select! {
            c = changed.recv() => if c.is_none() {
                return;
            },
            _ = state.assignment_applied.notified() => {}
            () = fallback => {}
        }
        while changed.try_recv().is_ok() {}
    }
}

/// Every order by name, with its pre-sync if the controller started it.
async fn read_orders(zk: &Client) -> Result<BTreeMap<String, Option<PreSync>>, ZkError> {
    let names = match zk.get_children(HANDOVERS).await {
        Ok((names, _)) => names,
        Err(e) if e.kind() == Some(ErrorKind::NotFound) => return Ok(BTreeMap::new()),
        Err(e) => return Err(e),
    };
    let mut orders = BTreeMap::new();
    for name in names {
        match zk.get_data(&format!("{HANDOVERS}/{name}")).await {
            Ok((data, _)) => {
                let presync = wire::decode::<HandoverOrder>(&data)
                    .ok()
                    .and_then(|o| o.presync);
                orders.insert(name, presync);
            }
            Err(e) if e.kind() == Some(ErrorKind::NotFound) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(orders)
}

/// Watches a znode (its children, or its data); every event wakes [`follow`].
async fn watch(
    zk: &Client,
    path: &str,
    children: bool,
    watched: &Arc<Mutex<BTreeSet<String>>>,
    changed: &mpsc::UnboundedSender<()>,
) {
    let key = format!("{path}{}", if children { " (children)" } else { "" });
    if !watched.lock().insert(key.clone()) {
        return;
    }
    let w = if children {
        zk.watch_children(path).await
    } else {
        zk.watch_data(path).await
    };
    let Ok(mut w) = w else {
        watched.lock().remove(&key);
        return;
    };
    let (watched, changed) = (watched.clone(), changed.clone());
    tokio::spawn(async move {
        while let Some(event) = w.next().await {
            if changed.send(()).is_err() || event.is_err() {
                break;
            }
        }
        watched.lock().remove(&key);
        let _ = changed.send(());
    });
}

/// The leader's pre-sync: hold produces, wait for the candidate and the in-flight
/// acks=all produces, confirm.
async fn presync_as_leader(
    zk: Arc<Client>,
    state: Arc<State>,
    name: String,
    topic: String,
    p: u32,
    presync: PreSync,
) {
    let Some(partition) = lookup_any(&state, &topic, p) else {
        return;
    };
    {
        let mut part = partition.lock();
        if !part.replica.leads() || part.replica.meta().leader_epoch != presync.leader_epoch {
            return; // the controller sees the partition changed and rolls back
        }
        part.handover = HandoverSide::Holding { held: Vec::new() };
    }
    tracing::info!(%topic, partition = p, candidate = presync.candidate, "handover: holding produces; pre-synchronising the candidate");
    let deadline = tokio::time::Instant::now() + PRESYNC_LIMIT;
    let log_end = loop {
        let moved = state.hw_moved.notified();
        tokio::pin!(moved);
        moved.as_mut().enable();
        {
            let part = partition.lock();
            if !part.replica.leads() || !matches!(part.handover, HandoverSide::Holding { .. }) {
                return;
            }
            let end = part.replica.log().log_end_offset();
            let candidate_end = part.replica.follower_log_end(presync.candidate);
            if part.replica.high_watermark() >= end
                && candidate_end == Some(end)
                && part.replica.meta().isr.contains(&presync.candidate)
            {
                break end;
            }
        }
        // The high watermark moves when the last follower fetched the last record; a
        // candidate's progress is only seen on its fetches: look again soon anyway.
        if tokio::time::timeout_at(
            deadline.min(tokio::time::Instant::now() + Duration::from_millis(20)),
            moved,
        )
        .await
        .is_err()
            && tokio::time::Instant::now() >= deadline
        {
            tracing::warn!(%topic, partition = p, "handover: the candidate did not catch up");
            return; // the controller's timeout rolls back
        }
    };
    // The confirmation: only on the order that started this pre-sync.
    let path = format!("{HANDOVERS}/{name}");
    let result = match zk.get_data(&path).await {
        Ok((data, stat)) => match wire::decode::<HandoverOrder>(&data) {
            Ok(order) if order.presync == Some(presync) => {
                let ready = HandoverOrder {
                    ready_log_end: Some(log_end),
                    ..order
                };
                let data = wire::encode(&ready).expect("encodes");
                zk.set_data(&path, &data, Some(stat.version))
                    .await
                    .map(|_| ())
            }
            _ => Ok(()),
        },
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => {
            tracing::info!(%topic, partition = p, log_end, "handover: pre-sync complete, confirmed")
        }
        Err(e) => tracing::warn!(%topic, partition = p, error = %e, "handover: confirming"),
    }
}

/// The order is gone: transferred (follow, forward the held produces) or rolled back
/// (append them here).
async fn finish_as_leader(
    zk: &Client,
    state: &Arc<State>,
    topic: &str,
    p: u32,
    presync: PreSync,
    dispatch: Dispatch,
) {
    let Some(partition) = lookup_any(state, topic, p) else {
        return;
    };
    // The truth is the partition znode (the order went in the same transaction as the
    // transfer): this broker's own assignment may not have caught up yet.
    let now_meta = match zk.get_data(&cluster::partition_path(topic, p)).await {
        Ok((data, stat)) => wire::decode::<PartitionMetadata>(&data)
            .ok()
            .map(|m| (m, stat.version)),
        Err(_) => None,
    };
    let (held, actions) = {
        let mut part = partition.lock();
        let transferred = now_meta
            .as_ref()
            .filter(|(m, _)| m.leader_epoch > presync.leader_epoch && m.leader != Some(state.id));
        if let Some((meta, version)) = transferred {
            // Stop leading now (the assignment will say the same).
            let min_insync = part.replica.min_insync();
            part.replica
                .handle_assignment(replica_now(), meta.clone(), *version, min_insync);
        }
        let held = match std::mem::take(&mut part.handover) {
            HandoverSide::Holding { held, .. } => held,
            other => {
                part.handover = other;
                Vec::new()
            }
        };
        if let Some((meta, _)) = transferred {
            if let Some(to) = meta.leader {
                part.handover = HandoverSide::HandedTo {
                    to,
                    at: Instant::now(),
                };
            }
            state.metrics.handovers_given.inc();
        } else {
            state.metrics.handovers_rolled_back.inc();
        }
        (held, part.take_actions())
    };
    run_actions(state, &(topic.to_string(), p), actions);
    let leads = partition.lock().replica.leads();
    tracing::info!(%topic, partition = p, held = held.len(), transferred = !leads, "handover: finished");
    state.reassign.notify_one();
    for (incoming, responder) in held {
        // Rolled back: appended here; transferred: forwarded (see `intercept`).
        dispatch(state, incoming, responder);
    }
}

/// A produce for a partition this broker does not lead (now): held, forwarded or
/// waiting if a warm handover concerns it; given back otherwise.
pub(crate) fn intercept(
    state: &Arc<State>,
    topic: &str,
    p: u32,
    incoming: Incoming,
    responder: Responder,
) -> Option<(Incoming, Responder)> {
    let Some(partition) = lookup_any(state, topic, p) else {
        // Not a partition of this broker at all: answered by the caller.
        return Some((incoming, responder));
    };
    let mut part = partition.lock();
    let forwarded = incoming.request.queries().any(|q| q == "held");
    match &mut part.handover {
        HandoverSide::Holding { held, .. } => {
            state.metrics.handover_held_produces.inc();
            held.push((incoming, responder));
            None
        }
        HandoverSide::TakingOver { since, held } if since.elapsed() < TAKE_OVER_WAIT => {
            state.metrics.handover_held_produces.inc();
            held.push((incoming, responder));
            None
        }
        HandoverSide::HandedTo { to, at } if at.elapsed() < FORWARD_FOR && !forwarded => {
            let to = *to;
            drop(part);
            forward(state, topic.to_string(), p, to, incoming, responder);
            None
        }
        _ => Some((incoming, responder)),
    }
}

/// A produce for a partition this broker leads, while it holds them: held.
pub(crate) fn hold_if_handing_over(
    state: &State,
    part: &mut super::partition::Partition,
    incoming: Incoming,
    responder: Responder,
) -> Option<(Incoming, Responder)> {
    match &mut part.handover {
        HandoverSide::Holding { held, .. } => {
            state.metrics.handover_held_produces.inc();
            held.push((incoming, responder));
            None
        }
        _ => Some((incoming, responder)),
    }
}

/// Sends a produce on to the new leader `to` and relays its answer.
fn forward(
    state: &Arc<State>,
    topic: String,
    p: u32,
    to: u32,
    incoming: Incoming,
    responder: Responder,
) {
    let Some(pubsub) = state.pubsub.get().cloned() else {
        return responder.respond(not_leader(state.id, &topic, p, to));
    };
    let me = state.id;
    tokio::spawn(async move {
        let cluster = pubsub.cluster();
        let leader = match cluster.refresh().await {
            Ok(meta) => meta
                .topics
                .get(&topic)
                .and_then(|t| t.partitions.get(&p))
                .and_then(|m| m.leader),
            Err(_) => None,
        };
        if leader.is_none_or(|l| l == me) {
            return responder.respond(not_leader(me, &topic, p, to));
        }
        let body = incoming.request.payload().to_vec();
        let response = match cluster.forward_produce(&topic, p, body).await {
            Ok(answer) => {
                pehra_shared::api::cbor_response(pehra_shared::coap::Code::CHANGED, &answer)
            }
            Err(crate::client::ClientError::Broker { kind, message }) => {
                error_response(kind, &message)
            }
            Err(e) => error_response(
                ErrorKind::Busy,
                &format!("the produce could not be forwarded to the new leader: {e}"),
            ),
        };
        responder.respond(response);
    });
}

fn not_leader(me: u32, topic: &str, p: u32, to: u32) -> pehra_shared::coap::Response {
    error_response(
        ErrorKind::NotLeader,
        &format!(
            "broker {me} handed {topic}/{p} over to broker {to}: ask the zookeeper for the leader"
        ),
    )
}

/// Candidates that now lead (or waited long enough): their held produces go through
/// the ordinary path again. Also whether a handover is still under way on any
/// partition here.
fn release_taken_over(state: &Arc<State>, dispatch: Dispatch) -> bool {
    let mut under_way = false;
    let partitions: Vec<_> = state.partitions.read().values().cloned().collect();
    for partition in partitions {
        let held = {
            let mut part = partition.lock();
            let due = match &part.handover {
                HandoverSide::TakingOver { since, .. } => {
                    part.replica.leads() || since.elapsed() >= TAKE_OVER_WAIT
                }
                _ => false,
            };
            if !due {
                under_way |= match &part.handover {
                    HandoverSide::None => false,
                    HandoverSide::HandedTo { at, .. } => at.elapsed() < FORWARD_FOR,
                    _ => true,
                };
                continue;
            }
            match std::mem::take(&mut part.handover) {
                HandoverSide::TakingOver { held, .. } => held,
                _ => Vec::new(),
            }
        };
        for (incoming, responder) in held {
            dispatch(state, incoming, responder);
        }
    }
    under_way
}
