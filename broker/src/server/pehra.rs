//! The broker's PEHRA driver: runs the sans-IO [`Node`] for `broker-{id}`.
//!
//! It publishes the node's status as the ephemeral `/pehra/nodes/broker-{id}` (with the
//! broker's own session), watches `/pehra/state`, feeds client traffic in, and carries
//! out the node's actions: going dormant (periodic work and replication fetching paused,
//! the zookeeper lease stretched over the sleep, `--on-sleep` run), waking (all resumed,
//! `--on-wake` run), checking in with the Pehredar at the alarm, and writing requests
//! to the coordinator. It also answers `POST /pehra/checkin` while this broker is the
//! Pehredar.

use super::State;
use parking_lot::Mutex;
use pehra_cluster::{self as cluster, PEHRA_NODES, PEHRA_REQUESTS, PEHRA_STATE};
use pehra_shared::api::{cbor_response, decode_request};
use pehra_shared::coap::{Code, Method, Request, Response, CONTENT_FORMAT_CBOR};
use pehra_shared::driver::clock::now;
use pehra_shared::driver::{Incoming, Responder};
use pehra_shared::pehra::node::{Action, Node, NodeConfig};
use pehra_shared::pehra::vitals::VitalsConfig;
use pehra_shared::time::UnixMs;
use pehra_shared::wire::{
    self, CheckIn, CheckInReply, ErrorKind, NodeRole, NodeStatus, PehraState,
};
use pehra_zookeeper::{Client, CreateMode, WatchEvent};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Notify};

/// How long after waking a broker reads its assignment again (see `wake`).
const REREAD_AFTER_WAKE: Duration = Duration::from_millis(500);
/// How long a check-in waits for the Pehredar before it counts as lost.
const CHECKIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an `--on-sleep` / `--on-wake` command may run before it is killed.
const HOOK_TIMEOUT: Duration = Duration::from_secs(60);

/// The broker's PEHRA settings (selfChk, timers, hooks).
#[derive(Debug, Clone)]
pub struct PehraConfig {
    /// Take part in PEHRA (`false`: `--pehra-opt-out`, always awake, never elected).
    pub participating: bool,
    /// Participate but never sleep (`--stay-awake`).
    pub stay_awake: bool,
    /// No client traffic for this long before it may sleep.
    pub idle_before_sleep: Duration,
    /// How long it sleeps before checking in with the Pehredar.
    pub alarm_interval: Duration,
    /// Awake but idle, it stretches its zookeeper lease by this much at a time instead
    /// of heartbeating (the node's quiet lease, `NodeConfig::quiet_lease_ms`); zero:
    /// heartbeats whenever awake.
    pub quiet_lease: Duration,
    /// Run with `sh -c` when it goes dormant.
    pub on_sleep: Option<String>,
    /// Run with `sh -c` when it wakes.
    pub on_wake: Option<String>,
    /// Health rating and the adaptive lease it gives as Pehredar (seed 002).
    pub vitals: VitalsConfig,
    /// Read the node's health from this file (`key=value` lines) instead of the
    /// system: for tests and experiments that inject load or RTT jitter.
    pub health_file: Option<std::path::PathBuf>,
}

impl Default for PehraConfig {
    fn default() -> Self {
        PehraConfig {
            participating: true,
            stay_awake: false,
            idle_before_sleep: Duration::from_secs(30),
            alarm_interval: Duration::from_secs(60),
            quiet_lease: Duration::from_secs(60),
            on_sleep: None,
            on_wake: None,
            vitals: VitalsConfig::default(),
            health_file: None,
        }
    }
}

/// While requests come, the driver samples the host's health at least this often (they
/// wake it for that, not for each request).
const HEALTH_RESAMPLE: Duration = Duration::from_secs(1);

/// What the request handlers share with the driver.
pub(crate) struct Pehra {
    node: Mutex<Node>,
    /// Client traffic the node needs at once arrived (a stored permit: no arrival is
    /// lost).
    traffic: Notify,
    /// When the last client request arrived (Unix ms): the driver hands it to the node
    /// when it next polls.
    last_traffic_ms: AtomicU64,
    /// Whether a request must wake the driver ([`Node::needs_traffic_at_once`]): a
    /// dormant node, or one that would ask for the cluster to be woken. Otherwise a
    /// request only stores its time (no wake-up per request under load).
    traffic_at_once: AtomicBool,
    /// When the driver last sampled this host's health (Unix ms): while requests come, it
    /// is woken to sample again at most every [`HEALTH_RESAMPLE`] (the health a leader
    /// reports is what moves its partitions away when it turns critical).
    sampled_ms: AtomicU64,
    /// The node was changed from outside the driver (maintenance): poll it again.
    poke: Notify,
    /// `--stay-awake` as configured (what a released maintenance hold returns to).
    configured_stay_awake: bool,
}

impl Pehra {
    /// Tells the node that client traffic reached this broker.
    pub(crate) fn traffic(&self) {
        let now_ms = now().as_millis();
        // SeqCst with the driver's store of the flag and load of the time (a Dekker pair):
        // either this request sees the flag, or the driver sees this request.
        self.last_traffic_ms.fetch_max(now_ms, Ordering::SeqCst);
        let resample = now_ms
            >= self
                .sampled_ms
                .load(Ordering::Relaxed)
                .saturating_add(HEALTH_RESAMPLE.as_millis() as u64);
        if resample || self.traffic_at_once.load(Ordering::SeqCst) {
            self.traffic.notify_one();
        }
    }

    /// Answers a device's check-in from this node's view of PEHRA (any broker may:
    /// devices check in through any gateway). It is not traffic: nothing changes.
    pub(crate) fn answer_device_checkin(&self, now: UnixMs, checkin: &CheckIn) -> CheckInReply {
        self.node.lock().handle_device_checkin(now, checkin)
    }
}

/// Counts client traffic, if PEHRA runs in this broker.
pub(crate) fn traffic(state: &State) {
    if let Some(p) = state.pehra.get() {
        p.traffic();
    }
}

/// Holds the node awake (waking it if dormant) while `hold`, for maintenance; `false`
/// returns to the configured `--stay-awake`.
pub(crate) fn hold_awake(state: &State, hold: bool) {
    if let Some(p) = state.pehra.get() {
        p.node
            .lock()
            .handle_stay_awake(now(), hold || p.configured_stay_awake);
        p.poke.notify_one();
    }
}

/// Whether the broker is dormant now.
pub(crate) fn is_asleep(state: &State) -> bool {
    *state.asleep.borrow()
}

/// Waits until the broker is awake (at once if it is).
pub(crate) async fn awake(state: &State) {
    let mut rx = state.asleep.subscribe();
    let _ = rx.wait_for(|asleep| !*asleep).await;
}

/// The wait of a periodic safety net that a dormant broker skips (`asleep`: its
/// [`State`]'s dormancy flag): `period` of being awake (on the kernel timer: one wakeup,
/// not tokio's timer steps), or, once dormant, until it wakes. A broker that falls asleep during the period does not wake for its
/// end (the eligibility resync and the handover orders' fallback did: a zookeeper read
/// in the middle of a sleep, found by strace of a dormant broker).
pub(crate) async fn awake_period(asleep: &tokio::sync::watch::Sender<bool>, period: Duration) {
    let mut rx = asleep.subscribe();
    let deadline = tokio::time::Instant::now() + period;
    loop {
        if *rx.borrow_and_update() {
            let _ = rx.wait_for(|asleep| !*asleep).await;
            return;
        }
        tokio::select! {
            () = pehra_shared::driver::clock::sleep_until(deadline) => return,
            changed = rx.changed() => if changed.is_err() {
                return;
            },
        }
    }
}

/// Seed 002 figures of this broker, for metrics: its Node Health Index (‰), the lease
/// it gives as Pehredar and the lease the Pehredar gave it, ms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct LeaseFigures {
    pub health_index: Option<u16>,
    pub lease_given_ms: Option<u32>,
    pub lease_heard_ms: Option<u32>,
}

/// This broker's [`LeaseFigures`] now (all `None` without PEHRA).
pub(crate) fn lease_figures(state: &State) -> LeaseFigures {
    let Some(p) = state.pehra.get() else {
        return LeaseFigures::default();
    };
    let node = p.node.lock();
    LeaseFigures {
        health_index: node.vitals().rating().map(|(index, _)| index),
        lease_given_ms: node.lease().map(|l| l.lease_ms),
        lease_heard_ms: node.pehredar_lease_ms(),
    }
}

/// Whether this broker is the Pehredar in office.
pub(crate) fn in_office(state: &State) -> bool {
    state
        .pehra
        .get()
        .is_some_and(|p| p.node.lock().office().is_some())
}

/// Whether this broker holds and forwards produces for sleeping leaders: it is the
/// Pehredar, or was until a few seconds ago (`Node::holds_produces`).
pub(crate) fn holds_produces(state: &State) -> bool {
    state
        .pehra
        .get()
        .is_some_and(|p| p.node.lock().holds_produces(now()))
}

/// A produce the Pehredar may hold: its partition, its encoded body, and the
/// `not_leader` answer it gets if there is no other live leader to forward it to.
pub(crate) struct Held {
    pub topic: String,
    pub partition: u32,
    pub body: Vec<u8>,
    pub not_leader: Response,
}

/// wakeUpAll for a held produce: this broker, the Pehredar, got a produce for a
/// partition it does not lead (the producer saw the leader dormant). The request has
/// already counted as traffic (so the coordinator is asked to wake everyone); the
/// answer waits (a CoAP separate response) while the produce is forwarded to the
/// leader, which wakes on it, with the producer client's retries; the leader's answer
/// (acks all: once committed) is relayed. With no such partition, or no other live
/// leader, the answer is `not_leader` at once.
pub(crate) fn hold_and_forward(state: &Arc<State>, held: Held, responder: Responder) {
    let Some(pubsub) = state.pubsub.get().cloned() else {
        return responder.respond(held.not_leader);
    };
    let state = state.clone();
    let me = state.id;
    let held_produces = state.metrics.held_produces.clone();
    tokio::spawn(async move {
        let Held {
            topic,
            partition,
            body,
            not_leader,
        } = held;
        let cluster = pubsub.cluster();
        let started = std::time::Instant::now();
        let other_leader = |meta: &crate::client::Metadata| {
            meta.topics
                .get(&topic)
                .and_then(|t| t.partitions.get(&partition))
                .and_then(|m| m.leader)
                .filter(|l| *l != me && meta.brokers.contains_key(l))
        };
        // The metadata at hand first: reading it all again from the zookeeper (a round
        // trip per znode) delayed every held produce. If it is stale the forward is
        // answered not_leader and the client reads it again then. A topic it does not
        // know yet (created after it loaded the metadata: the first produce to a new
        // topic that finds the cluster asleep) is read alone, then everything if that
        // names no live leader.
        let leader = match other_leader(&cluster.metadata()) {
            Some(leader) => Some(leader),
            None => match cluster
                .refresh_topic(&topic)
                .await
                .map(|m| other_leader(&m))
            {
                Ok(Some(leader)) => Some(leader),
                _ => match cluster.refresh().await {
                    Ok(meta) => other_leader(&meta),
                    Err(_) => None,
                },
            },
        };
        if leader.is_none() {
            // No such partition, or no other live leader: nothing to hold it for.
            return responder.respond(not_leader);
        }
        // wakeUpAll straight from the Pehredar: the sleepers (the leader's followers,
        // whose fetches acks=all waits for) wake on this message instead of after the
        // coordinator's round through the zookeeper, which still follows as a backstop.
        wake_sleepers(&state, &cluster.metadata());
        tracing::info!(%topic, partition, "Pehredar: holding a produce for a sleeping leader");
        held_produces.inc();
        let found = started.elapsed();
        let response = match cluster.forward_produce(&topic, partition, body).await {
            Ok(answer) => cbor_response(Code::CHANGED, &answer),
            Err(crate::client::ClientError::Broker { kind, message }) => {
                pehra_shared::api::error_response(kind, &message)
            }
            Err(e) => pehra_shared::api::error_response(
                ErrorKind::Busy,
                &format!("the held produce could not be forwarded: {e}"),
            ),
        };
        tracing::debug!(
            %topic,
            partition,
            leader_found_us = found.as_micros() as u64,
            answered_us = started.elapsed().as_micros() as u64,
            "Pehredar: held produce answered"
        );
        responder.respond(response);
    });
}

/// The URI path of the Pehredar's wake call (`POST /pehra/wake`, no body).
pub(crate) const WAKE_PATH: &str = "pehra/wake";

/// Sends `POST /pehra/wake` to every other live broker, without waiting: all of them,
/// not only those `meta` says are dormant (it may be older than their sleep), since to
/// an awake one it is only the traffic it is about to see anyway.
fn wake_sleepers(state: &Arc<State>, meta: &crate::client::Metadata) {
    let Some(handle) = state.handle.get().cloned() else {
        return;
    };
    for id in meta.brokers.keys().filter(|&&id| id != state.id) {
        let Some(addr) = meta
            .brokers
            .get(id)
            .and_then(|b| b.addr.parse::<std::net::SocketAddr>().ok())
        else {
            continue;
        };
        let (state, handle, id) = (state.clone(), handle.clone(), *id);
        tokio::spawn(async move {
            super::access::secure_broker_peer(&state, id, addr).await;
            if let Err(e) = handle.request(addr, Request::post(WAKE_PATH)).await {
                tracing::debug!(broker = id, error = %e, "PEHRA: waking a sleeper");
            }
        });
    }
}

/// `POST /pehra/wake`: the Pehredar wakes this broker for traffic on its way (counted
/// as traffic: the node wakes and stays up until idle again; the Pehredar has asked the
/// coordinator for the wakeUpAll already, so this broker does not).
pub(crate) fn woken(state: &State) -> Response {
    if let Some(p) = state.pehra.get() {
        p.node.lock().handle_wake_call(now());
        p.poke.notify_one();
    }
    Response::new(Code::CHANGED)
}

/// `POST /pehra/checkin`: a dormant node's check-in, answered by the Pehredar.
pub(crate) fn checkin(state: &State, incoming: &Incoming) -> Response {
    let checkin: CheckIn = match decode_request(&incoming.request) {
        Ok(c) => c,
        Err(response) => return response,
    };
    let Some(pehra) = state.pehra.get() else {
        return forbidden(state.id);
    };
    let mut node = pehra.node.lock();
    if node.office().is_none() {
        return forbidden(state.id);
    }
    let reply = node.handle_checkin(now(), &checkin);
    tracing::debug!(node = %checkin.node, directive = ?reply.directive, "check-in answered");
    cbor_response(Code::CHANGED, &reply)
}

fn forbidden(id: u32) -> Response {
    let body = wire::ErrorBody::new(
        ErrorKind::Unauthorized,
        format!("broker {id} is not the Pehredar: check in with the one named in {PEHRA_STATE}"),
    );
    Response::new(Code::FORBIDDEN)
        .with_payload(wire::encode(&body).unwrap_or_default())
        .with_content_format(CONTENT_FORMAT_CBOR)
}

/// Sets up PEHRA for the broker (the check-in route and traffic counting work from
/// now) and returns the driver to spawn.
pub(crate) fn start(
    state: Arc<State>,
    zk: Arc<Client>,
    config: PehraConfig,
    addr: String,
) -> impl std::future::Future<Output = ()> {
    let node_config = NodeConfig {
        name: cluster::broker_node_name(state.id),
        addr,
        participating: config.participating,
        mains_powered: true,
        stay_awake: config.stay_awake,
        idle_ms: config.idle_before_sleep.as_millis() as u64,
        alarm_interval_ms: config.alarm_interval.as_millis() as u64,
        quiet_lease_ms: config.quiet_lease.as_millis() as u64,
        vitals: config.vitals,
    };
    let pehra = Arc::new(Pehra {
        node: Mutex::new(Node::new(node_config, now())),
        traffic: Notify::new(),
        last_traffic_ms: AtomicU64::new(0),
        traffic_at_once: AtomicBool::new(true),
        sampled_ms: AtomicU64::new(0),
        poke: Notify::new(),
        configured_stay_awake: config.stay_awake,
    });
    let _ = state.pehra.set(pehra.clone());
    run(state, zk, config, pehra)
}

/// Hands the node the requests that arrived since it last heard of any (their time only).
fn hand_over_traffic(pehra: &Pehra, node: &mut Node, seen_ms: &mut u64) {
    let last = pehra.last_traffic_ms.load(Ordering::SeqCst);
    if last > *seen_ms {
        *seen_ms = last;
        node.handle_traffic_since(now(), UnixMs::from_millis(last));
    }
}

async fn run(state: Arc<State>, zk: Arc<Client>, config: PehraConfig, pehra: Arc<Pehra>) {
    let name = cluster::broker_node_name(state.id);
    if let Err(e) = cluster::ensure_path(&zk, PEHRA_NODES).await {
        tracing::warn!(error = %e, "PEHRA: cannot create {PEHRA_NODES}");
    }
    let (state_tx, mut state_rx) = mpsc::unbounded_channel::<PehraState>();
    let watcher = tokio::spawn(watch_state(zk.clone(), state_tx));
    let (checkin_tx, mut checkin_rx) = mpsc::unbounded_channel::<Option<CheckInReply>>();
    let mut published_role: Option<NodeRole> = None;
    // The time of the last request handed to the node.
    let mut traffic_seen_ms = 0;
    loop {
        let health = pehra_shared::health::system::sample(config.health_file.as_deref());
        pehra.sampled_ms.store(now().as_millis(), Ordering::Relaxed);
        // The session's heartbeats carry it: the zookeeper sizes this broker's session
        // lease (the lease of its partition leaderships) from it (seed 002).
        zk.report_health(health);
        let mut actions = {
            let mut node = pehra.node.lock();
            node.handle_health(now(), health);
            hand_over_traffic(&pehra, &mut node, &mut traffic_seen_ms);
            node.poll_actions(now())
        };
        actions.sort_by_key(run_order);
        for action in actions {
            match action {
                Action::PublishStatus(status) => {
                    log_transition(&mut published_role, &status);
                    publish(&zk, &name, &status).await;
                }
                Action::Sleep { until_ms } => sleep(&state, &zk, &config, until_ms).await,
                Action::StretchLease { until_ms } => stretch_lease(&zk, until_ms).await,
                Action::ResumeLease => {
                    if let Err(e) = zk.wake().await {
                        tracing::warn!(error = %e, "PEHRA: resuming the zookeeper heartbeat");
                    }
                }
                Action::Wake { reason } => {
                    tracing::info!(reason = ?reason, "awake ({reason:?})");
                    wake(&state, &zk, &config).await;
                }
                Action::CheckIn { pehredar, checkin } => {
                    let (zk, state, tx) = (zk.clone(), state.clone(), checkin_tx.clone());
                    tokio::spawn(async move {
                        let reply = tokio::time::timeout(
                            CHECKIN_TIMEOUT,
                            send_checkin(&state, &zk, &pehredar, &checkin),
                        )
                        .await
                        .ok()
                        .flatten();
                        let _ = tx.send(reply);
                    });
                }
                Action::Request(request) => {
                    tracing::info!(?request, "PEHRA: asking the coordinator");
                    let data = wire::encode(&request).expect("encodes");
                    let path = format!("{PEHRA_REQUESTS}/r-");
                    let result = match cluster::ensure_path(&zk, PEHRA_REQUESTS).await {
                        Ok(()) => zk
                            .create(&path, &data, CreateMode::PersistentSequential)
                            .await
                            .map(|_| ()),
                        Err(e) => Err(e),
                    };
                    if let Err(e) = result {
                        tracing::warn!(error = %e, "PEHRA: writing a request");
                    }
                }
            }
        }
        let deadline = {
            let node = pehra.node.lock();
            let at_once = node.needs_traffic_at_once();
            pehra.traffic_at_once.store(at_once, Ordering::SeqCst);
            // A request that came while the flag said "later" but now needs the node at
            // once: look again without sleeping.
            if at_once && pehra.last_traffic_ms.load(Ordering::SeqCst) > traffic_seen_ms {
                continue;
            }
            node.poll_timeout()
        };
        let sleep_for =
            deadline.map(|d| Duration::from_millis(d.as_millis().saturating_sub(now_ms())));
        tokio::select! {
            _ = pehra.traffic.notified() => {}
            _ = pehra.poke.notified() => {}
            s = state_rx.recv() => match s {
                Some(s) => pehra.node.lock().handle_state(now(), &s),
                None => break,
            },
            Some(reply) = checkin_rx.recv() => {
                pehra.node.lock().handle_checkin_result(now(), reply);
            }
            // A kernel timer: a dormant broker's alarm wakes it once, where tokio's
            // timer wheel took two or three steps for a sleep of a minute (issue 19).
            _ = async {
                match sleep_for {
                    Some(d) => {
                        pehra_shared::driver::clock::sleep_until(tokio::time::Instant::now() + d)
                            .await
                    }
                    None => std::future::pending().await,
                }
            } => {}
        }
    }
    watcher.abort();
}

/// The order the driver carries out one batch of the node's actions in (a stable sort
/// by this key): a wake first, so the followers of a produce that woke the cluster
/// fetch at once (the status write before it, a zookeeper round trip and fsync, held
/// them back); then the status, before a sleep (a write after the stretched heartbeat
/// would renew the lease for the plain timeout); then the rest, as they came.
fn run_order(action: &Action) -> u8 {
    match action {
        Action::Wake { .. } => 0,
        Action::PublishStatus(_) => 1,
        _ => 2,
    }
}

fn log_transition(published: &mut Option<NodeRole>, status: &NodeStatus) {
    if *published == Some(status.role) {
        return;
    }
    *published = Some(status.role);
    match status.role {
        NodeRole::Pehredar => tracing::info!(
            "took office as Pehredar for term {}",
            status.office.unwrap_or(0)
        ),
        NodeRole::Dormant => tracing::info!(
            "dormant until {} (ms since the epoch)",
            status.next_alarm_ms.unwrap_or(0)
        ),
        NodeRole::Awake => tracing::info!("PEHRA role: awake"),
        NodeRole::OptedOut => tracing::info!("PEHRA: opted out (always awake, never elected)"),
    }
}

/// Writes the status znode, creating it (ephemeral, with this broker's session) if
/// needed.
async fn publish(zk: &Client, name: &str, status: &NodeStatus) {
    let path = cluster::pehra_node_path(name);
    let data = wire::encode(status).expect("encodes");
    let result = match zk.set_data(&path, &data, None).await {
        Err(e) if e.kind() == Some(ErrorKind::NotFound) => zk
            .create(&path, &data, CreateMode::Ephemeral)
            .await
            .map(|_| ()),
        other => other.map(|_| ()),
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, "PEHRA: publishing the status");
    }
}

/// Follows `/pehra/state`, re-watching if it is absent (then no one sleeps, so the
/// retry timer costs nothing while dormant).
async fn watch_state(zk: Arc<Client>, tx: mpsc::UnboundedSender<PehraState>) {
    loop {
        if let Ok(mut watch) = zk.watch_data(PEHRA_STATE).await {
            while let Some(Ok(event)) = watch.next().await {
                match event {
                    WatchEvent::Data(node) => match wire::decode::<PehraState>(&node.data) {
                        Ok(s) => {
                            if tx.send(s).is_err() {
                                return;
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "PEHRA: undecodable {PEHRA_STATE}"),
                    },
                    WatchEvent::Deleted => break,
                    WatchEvent::Children(_) => {}
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn send_checkin(
    state: &State,
    zk: &Client,
    pehredar: &str,
    checkin: &CheckIn,
) -> Option<CheckInReply> {
    let (data, _) = zk
        .get_data(&cluster::pehra_node_path(pehredar))
        .await
        .ok()?;
    let status: NodeStatus = wire::decode(&data).ok()?;
    let addr: std::net::SocketAddr = status.addr.parse().ok()?;
    if let Some(id) = pehredar
        .strip_prefix("broker-")
        .and_then(|n| n.parse().ok())
    {
        super::access::secure_broker_peer(state, id, addr).await;
    }
    let request = Request::new(Method::Post, "pehra/checkin")
        .with_payload(wire::encode(checkin).expect("encodes"))
        .with_content_format(CONTENT_FORMAT_CBOR);
    let response = state.handle.get()?.request(addr, request).await.ok()?;
    pehra_shared::api::decode_response(&response).ok()
}

async fn sleep(state: &Arc<State>, zk: &Client, config: &PehraConfig, until_ms: u64) {
    // Before `asleep`: a fetch held from then on is held until this alarm.
    state.alarm_ms.send_replace(until_ms);
    let first = !*state.asleep.borrow();
    if first {
        state.asleep.send_replace(true);
        state.fetchers.lock().clear();
        super::flush_all(state);
        run_hook(config.on_sleep.as_deref(), "on-sleep");
    }
    let duration = Duration::from_millis(until_ms.saturating_sub(now_ms()));
    match zk.sleep(duration).await {
        Ok(lease) if lease < duration => tracing::warn!(
            ?lease,
            sleep = ?duration,
            "the zookeeper granted a lease shorter than the sleep (its --max-sleep-ms): \
             the session will expire before the alarm; lower --alarm-interval-ms"
        ),
        Ok(lease) => tracing::debug!(?lease, "zookeeper lease stretched over the sleep"),
        Err(e) => tracing::warn!(error = %e, "PEHRA: stretching the zookeeper lease"),
    }
}

/// Awake and idle: one heartbeat stretches the zookeeper lease to `until_ms` and the
/// keepalive pauses (the node asks again when the stretch runs out, or resumes on
/// traffic).
async fn stretch_lease(zk: &Client, until_ms: u64) {
    let duration = Duration::from_millis(until_ms.saturating_sub(now_ms()));
    match zk.sleep(duration).await {
        Ok(lease) => tracing::debug!(?lease, "idle: zookeeper lease stretched"),
        Err(e) => tracing::warn!(error = %e, "PEHRA: stretching the zookeeper lease"),
    }
}

async fn wake(state: &Arc<State>, zk: &Client, config: &PehraConfig) {
    if *state.asleep.borrow() {
        state.asleep.send_replace(false);
        state.alarm_ms.send_replace(0);
        state.metrics.wakeups.inc();
        // Fetch at once from the leaders of the last assignment (a produce that woke the
        // cluster waits for its followers), without waiting for the zookeeper heartbeat
        // below. The assignment is read again a little later, off that path (every
        // woken broker reading it at once competed for the CPU with the produce that
        // woke them): the watches stayed registered through the sleep, so this is only
        // a safety net.
        state.fetchers.lock().resume(state);
        let later = state.clone();
        tokio::spawn(async move {
            tokio::time::sleep(REREAD_AFTER_WAKE).await;
            later.reassign.notify_one();
        });
        run_hook(config.on_wake.as_deref(), "on-wake");
    }
    if let Err(e) = zk.wake().await {
        tracing::warn!(error = %e, "PEHRA: resuming the zookeeper heartbeat");
    }
}

/// Runs a hook with `sh -c`, not waited on (killed after [`HOOK_TIMEOUT`]).
fn run_hook(command: Option<&str>, what: &'static str) {
    let Some(command) = command else {
        return;
    };
    match tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .kill_on_drop(true)
        .spawn()
    {
        Ok(mut child) => {
            tokio::spawn(async move {
                match tokio::time::timeout(HOOK_TIMEOUT, child.wait()).await {
                    Ok(Ok(status)) if status.success() => {}
                    Ok(Ok(status)) => tracing::warn!(%status, "--{what} command failed"),
                    Ok(Err(e)) => tracing::warn!(error = %e, "--{what} command"),
                    Err(_) => tracing::warn!("--{what} command still running: killed"),
                }
            });
        }
        Err(e) => tracing::warn!(error = %e, "cannot run the --{what} command"),
    }
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    super::now_ms()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pehra_shared::wire::WakeReason;

    fn status() -> NodeStatus {
        NodeStatus {
            node: "broker-1".into(),
            addr: "127.0.0.1:5683".into(),
            role: NodeRole::Awake,
            candidate: true,
            stay_awake: false,
            idle: false,
            next_alarm_ms: None,
            office: None,
            wake_generation: 0,
            since_ms: 0,
            nhi: None,
            lease_ms: None,
            rtt_ms: None,
        }
    }

    /// A wake goes before the status write (the followers of a produce that woke the
    /// cluster resume fetching before a zookeeper round trip), the status before a sleep.
    #[test]
    fn a_wake_goes_first_and_the_status_before_a_sleep() {
        let mut actions = [
            Action::Sleep { until_ms: 5 },
            Action::PublishStatus(status()),
            Action::Wake {
                reason: WakeReason::Traffic,
            },
        ];
        actions.sort_by_key(run_order);
        assert!(matches!(actions[0], Action::Wake { .. }));
        assert!(matches!(actions[1], Action::PublishStatus(_)));
        assert!(matches!(actions[2], Action::Sleep { .. }));
    }

    /// A safety net's period ends after `period` awake; a broker that falls asleep
    /// during it is not woken at its end, only when it wakes.
    #[tokio::test(start_paused = true)]
    async fn a_period_that_the_broker_sleeps_through_ends_when_it_wakes() {
        let period = Duration::from_secs(30);
        let asleep = Arc::new(tokio::sync::watch::channel(false).0);
        let start = tokio::time::Instant::now();
        awake_period(&asleep, period).await;
        assert_eq!(start.elapsed(), period, "awake: the whole period");

        let start = tokio::time::Instant::now();
        let waiter = {
            let asleep = asleep.clone();
            tokio::spawn(async move { awake_period(&asleep, period).await })
        };
        tokio::time::sleep(Duration::from_secs(10)).await;
        asleep.send_replace(true);
        tokio::time::sleep(Duration::from_secs(90)).await;
        assert!(!waiter.is_finished(), "asleep at the period's end: no wake");
        asleep.send_replace(false);
        waiter.await.unwrap();
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(100),
            "ends as it wakes"
        );
    }
}
