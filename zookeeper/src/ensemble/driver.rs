//! The thin async driver of a member's Raft: ticks it, feeds it the messages `POST /raft`
//! receives and the core's proposals, and carries out its actions (send over CoAP,
//! persist to the Raft log, hand committed entries and role changes to the core), and
//! moves snapshots (see [`super::snapshot`]): the leader's core encodes its tree when
//! Raft wants one, the follower pulls it piece by piece before stepping the message.
//! As leader it samples its health every [`super::health::SAMPLE_EVERY`], times its
//! heartbeats' round trips, and sends the lease they make with each heartbeat
//! ([`super::lease`]); as follower it hands the lease a heartbeat carries to the member.

use super::lease::{self, LeaderLease};
use super::log::RaftLog;
use super::member::{Action, Member, MembershipChange, MembershipError, Role};
use super::messages::{Event, ToDriver};
use super::snapshot::{self, Offered};
use super::{EnsembleConfig, RAFT_PATH, TICK};
use crate::server::Job;
use pehra_shared::coap::Config as CoapConfig;
use pehra_shared::coap::Request;
use pehra_shared::driver::Endpoint;
use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

/// Requests to one member that may be out at once; further messages are dropped (Raft
/// sends them again) rather than queued behind a member that does not answer.
const MAX_OUT_PER_MEMBER: usize = 16;

/// The CoAP parameters of the endpoint Raft messages go out from: confirmable requests
/// (so OSCORE's Echo freshness check of a new context completes) that give up within
/// about a second, since Raft resends on its own, each in one datagram up to
/// [`PEER_MAX_PAYLOAD`](pehra_shared::coap::PEER_MAX_PAYLOAD) (the member caps the
/// entries per message below it: `member::MAX_ENTRY_BYTES_PER_MESSAGE`).
pub fn raft_endpoint_config() -> CoapConfig {
    CoapConfig {
        ack_timeout: Duration::from_millis(200),
        max_retransmit: 2,
        nstart: MAX_OUT_PER_MEMBER,
        max_payload: pehra_shared::coap::PEER_MAX_PAYLOAD,
        ..CoapConfig::default()
    }
}

/// A request to hand the leadership over: to whom (`None`: the member furthest along)
/// and where the answer goes.
pub(crate) type TransferAsk = (
    Option<u64>,
    tokio::sync::oneshot::Sender<Result<super::TransferStarted, super::member::TransferError>>,
);

/// A request to change the voters, and where the answer goes (the voters once it is
/// applied).
pub(crate) type MembershipAsk = (
    MembershipChange,
    tokio::sync::oneshot::Sender<Result<super::MembershipChanged, MembershipRefusal>>,
);

/// Why a membership change did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum MembershipRefusal {
    /// Refused before it was proposed.
    #[error(transparent)]
    Refused(#[from] MembershipError),
    /// Proposed, and not applied in time (no quorum?); it may still be.
    #[error("the change was proposed but not applied within {0} s (is a majority of the members up?): see `pehra cluster status`")]
    NotApplied(u64),
}

/// A membership change proposed and not applied yet: what, who asked, until when.
pub(crate) type Changing = (
    MembershipChange,
    tokio::sync::oneshot::Sender<Result<super::MembershipChanged, MembershipRefusal>>,
    tokio::time::Instant,
);

/// How long a proposed membership change may take before its requester is told.
const MEMBERSHIP_WAIT: Duration = Duration::from_secs(10);

/// The driver's inputs and outputs.
pub(crate) struct Driver {
    pub member: Member,
    pub log: RaftLog,
    pub config: EnsembleConfig,
    /// The endpoint Raft messages go out from (see [`raft_endpoint_config`]).
    pub endpoint: Endpoint,
    /// Raft messages received on `POST /raft` (protobuf bytes), with the lease a
    /// heartbeat carried (`?lease=MS`).
    pub inbox: UnboundedReceiver<(Vec<u8>, Option<u32>)>,
    /// Proposals of the core.
    pub proposals: UnboundedReceiver<ToDriver>,
    /// The core's job queue.
    pub core: UnboundedSender<Job>,
    /// Requests for the member's view of the ensemble (`GET /ensemble`).
    pub status: UnboundedReceiver<tokio::sync::oneshot::Sender<super::EnsembleStatus>>,
    /// Requests to hand the leadership over (`POST /ensemble`).
    pub transfers: UnboundedReceiver<TransferAsk>,
    /// Requests out per member.
    pub out: BTreeMap<u64, Arc<AtomicUsize>>,
    /// The snapshot this member offers (shared with the `POST /raft/snapshot` route).
    pub offered: Offered,
    /// Requests to change the voters (`POST /ensemble/members`).
    pub memberships: UnboundedReceiver<MembershipAsk>,
    /// The voters (`config.members` holds the addresses).
    pub voters: Vec<u64>,
    /// The learners: members catching up before they vote.
    pub learners: Vec<u64>,
    /// The membership change proposed and not applied yet: what, who asked, until when.
    pub changing: Option<Changing>,
    /// The addresses a snapshot being installed carried (from the leader).
    pub pulled_addrs: Option<BTreeMap<u64, String>>,
    /// The zookeeper's credentials, if secured: a member added later gets a context too.
    pub credentials: Option<Arc<pehra_shared::security::credentials::Credentials>>,
    /// The lease this member gives as leader, from its health and its heartbeats' round
    /// trips.
    pub lease: LeaderLease,
    /// Where the round trips of heartbeats sent go, with the member's id (set by
    /// [`Driver::run`]).
    pub heartbeat_rtts: Option<UnboundedSender<(u64, Duration)>>,
    /// The recent heartbeat round trips to each member (its distance, in the status).
    pub member_rtts: BTreeMap<u64, pehra_shared::health::RttWindow>,
}

/// Heartbeat round trips kept per member for its distance.
const MEMBER_RTT_WINDOW: usize = 8;

/// Ticks between two samples of the leader's health (for its lease).
const HEALTH_SAMPLE_TICKS: u32 =
    (super::health::SAMPLE_EVERY.as_millis() / TICK.as_millis()) as u32;

/// A snapshot pulled from the leader: the `MsgSnapshot` with the tree in its data, or
/// why it could not be pulled (with the snapshot's index).
type Pulled = Result<(Message, BTreeMap<u64, String>), (u64, snapshot::SnapshotError)>;

impl Driver {
    /// Runs until the core is gone or the Raft log fails.
    pub async fn run(mut self) {
        let mut out: BTreeMap<u64, Arc<AtomicUsize>> = BTreeMap::new();
        for id in self.config.members.keys() {
            out.insert(*id, Arc::default());
        }
        self.out = out;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (pulled_tx, mut pulled) = tokio::sync::mpsc::unbounded_channel::<Pulled>();
        let (rtt_tx, mut rtts) = tokio::sync::mpsc::unbounded_channel::<(u64, Duration)>();
        self.heartbeat_rtts = Some(rtt_tx);
        // Ticks since the leader last sampled its health.
        let mut since_sample = HEALTH_SAMPLE_TICKS;
        // The snapshot being pulled (its index), if any: one at a time.
        let mut pulling: Option<u64> = None;
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    self.member.handle_tick();
                    since_sample = since_sample.saturating_add(1);
                    if since_sample >= HEALTH_SAMPLE_TICKS && self.leads() {
                        since_sample = 0;
                        self.lease.handle_health(self.config.health.sample());
                    }
                    if self.changing.as_ref().is_some_and(|(_, _, by)| tokio::time::Instant::now() >= *by) {
                        let (_, reply, _) = self.changing.take().expect("checked");
                        let _ = reply.send(Err(MembershipRefusal::NotApplied(MEMBERSHIP_WAIT.as_secs())));
                    }
                    if self.offered.forget_if_idle(tokio::time::Instant::now()) {
                        self.member.withdraw_snapshot();
                        tracing::info!("ensemble: the snapshot offered was not asked for in a while: forgotten");
                    }
                }
                Some((to, rtt)) = rtts.recv() => {
                    self.lease.handle_rtt(rtt);
                    self.member_rtts
                        .entry(to)
                        .or_insert_with(|| pehra_shared::health::RttWindow::new(MEMBER_RTT_WINDOW))
                        .push_us(rtt.as_micros().min(u32::MAX as u128) as u32);
                }
                received = self.inbox.recv() => match received.map(|(b, l)| (Message::parse_from_bytes(&b), l)) {
                    Some((Ok(message), lease_ms)) => {
                        if let Some(ms) = lease_ms.filter(|_| message.get_msg_type() == MessageType::MsgHeartbeat) {
                            self.member.handle_leader_lease(message.from, ms, lease::ticks(ms, TICK));
                        }
                        if let Some(message) = self.pull_if_snapshot(message, &mut pulling, &pulled_tx) {
                            self.member.handle_message(message);
                        }
                    }
                    Some((Err(e), _)) => tracing::warn!(error = %e, "undecodable raft message"),
                    None => return,
                },
                Some(done) = pulled.recv() => {
                    pulling = None;
                    match done {
                        Ok((message, addrs)) => {
                            self.pulled_addrs = Some(addrs);
                            self.member.handle_message(message);
                        }
                        Err((index, e)) => {
                            tracing::warn!(index, error = %e, "ensemble: pulling a snapshot failed (the leader sends another)");
                        }
                    }
                }
                Some(reply) = self.status.recv() => {
                    let mut status = self.member.status();
                    status.health_index = Some(self.config.health.index());
                    status.election_timeout_ms =
                        self.member.election_timeout_ticks() as u64 * TICK.as_millis() as u64;
                    let leads = self.leads();
                    status.lease = leads.then(|| self.lease.status());
                    for member in &mut status.members {
                        if let Some(addr) = self.config.members.get(&member.id) {
                            member.addr = addr.to_string();
                        }
                        member.rtt_us = self
                            .member_rtts
                            .get(&member.id)
                            .filter(|w| leads && !w.is_empty())
                            .map(|w| w.mean_us());
                    }
                    let _ = reply.send(status);
                }
                Some((change, reply)) = self.memberships.recv() => {
                    if self.changing.is_some() {
                        let _ = reply.send(Err(MembershipError::Pending.into()));
                    } else {
                        match self.member.propose_membership(&change) {
                            Ok(()) => {
                                tracing::info!(?change, "ensemble: membership change proposed");
                                let by = tokio::time::Instant::now() + MEMBERSHIP_WAIT;
                                self.changing = Some((change, reply, by));
                            }
                            Err(e) => {
                                let _ = reply.send(Err(e.into()));
                            }
                        }
                    }
                }
                Some((to, reply)) = self.transfers.recv() => {
                    let from = self.config.id;
                    let started = self.member.transfer_leadership(to);
                    match &started {
                        Ok(to) => tracing::info!(from, to, "ensemble: handing the leadership over"),
                        Err(e) => tracing::info!(error = %e, "ensemble: leadership handover refused"),
                    }
                    let _ = reply.send(started.map(|to| super::TransferStarted { from, to }));
                }
                asked = self.proposals.recv() => match asked {
                    Some(ToDriver::Propose(data)) => {
                        if self.member.propose(data).is_err()
                            && self.core.send(Job::Ensemble(Event::Dropped)).is_err()
                        {
                            return;
                        }
                    }
                    Some(ToDriver::Durable(index)) => self.member.handle_durable(index),
                    Some(ToDriver::Snapshot { index, tree }) => {
                        let addrs = self.addrs();
                        let reference = self.offered.set(index, tree, addrs, tokio::time::Instant::now());
                        let data = pehra_shared::wire::encode(&reference).expect("references encode");
                        if self.member.offer_snapshot(index, data) {
                            tracing::info!(index, bytes = reference.len, "ensemble: snapshot offered");
                        } else {
                            tracing::warn!(index, "ensemble: the tree's index is no longer in the log; a new snapshot will be made");
                        }
                    }
                    Some(ToDriver::ReadIndex(id)) => {
                        if self.member.read_index(id.to_be_bytes().to_vec()).is_err()
                            && self.core.send(Job::Ensemble(Event::ReadReady(id, false))).is_err()
                        {
                            return;
                        }
                    }
                    None => return,
                },
            }
            if !self.carry_out().await {
                return;
            }
        }
    }

    /// A `MsgSnapshot` that this member needs (it is past what this member has
    /// committed) carries only a reference: starts pulling the tree from the sender and
    /// returns `None` (the message is stepped once the tree is in, through `pulled`).
    /// Every other message is returned to be stepped now.
    fn pull_if_snapshot(
        &self,
        message: Message,
        pulling: &mut Option<u64>,
        pulled: &tokio::sync::mpsc::UnboundedSender<Pulled>,
    ) -> Option<Message> {
        if message.get_msg_type() != MessageType::MsgSnapshot {
            return Some(message);
        }
        let index = message.get_snapshot().get_metadata().index;
        if index <= self.member.committed() {
            // Raft answers it with where this log is; nothing to pull.
            return Some(message);
        }
        if pulling.is_some() {
            return None; // the leader sends it again if this pull fails
        }
        let &leader = self.config.members.get(&message.from)?;
        *pulling = Some(index);
        tracing::info!(
            index,
            from = message.from,
            "ensemble: pulling a snapshot from the leader"
        );
        let (handle, pulled) = (self.endpoint.handle(), pulled.clone());
        tokio::spawn(async move {
            let mut message = message;
            let result = match snapshot::fetch(&handle, leader, &message.get_snapshot().data).await
            {
                Ok((tree, addrs)) => {
                    message.mut_snapshot().set_data(tree.into());
                    Ok((message, addrs))
                }
                Err(e) => Err((index, e)),
            };
            let _ = pulled.send(result);
        });
        None
    }

    /// Carries out the machine's actions; `false` if the member must stop.
    async fn carry_out(&mut self) -> bool {
        for action in self.member.poll_actions() {
            match action {
                Action::Send(messages) => {
                    for message in messages {
                        self.send(message);
                    }
                }
                Action::Persist {
                    entries,
                    hard_state,
                } => {
                    if let Err(e) = self.log.persist(&entries, hard_state.as_ref()) {
                        tracing::error!(error = %e, "raft log write failed: this member stops replicating");
                        return false;
                    }
                }
                Action::Compact {
                    base,
                    entries,
                    hard_state,
                } => {
                    if let Err(e) = self.log.compact(base, &entries, &hard_state) {
                        tracing::error!(error = %e, "raft log cut failed: this member stops replicating");
                        return false;
                    }
                    tracing::debug!(first = base.0 + 1, kept = entries.len(), "raft log cut");
                }
                Action::Apply(committed) => {
                    if self
                        .core
                        .send(Job::Ensemble(Event::Committed(committed)))
                        .is_err()
                    {
                        return false;
                    }
                }
                Action::Read(context) => {
                    if !self.read_ready(&context, true) {
                        return false;
                    }
                }
                Action::ReadAbandoned(context) => {
                    if !self.read_ready(&context, false) {
                        return false;
                    }
                }
                Action::SnapshotWanted => {
                    if self
                        .core
                        .send(Job::Ensemble(Event::SnapshotWanted))
                        .is_err()
                    {
                        return false;
                    }
                }
                Action::Membership {
                    voters,
                    learners,
                    change,
                } => {
                    self.learners = learners;
                    self.membership_applied(voters, &change).await;
                    if let Err(e) = self.log.set_membership(&self.membership()) {
                        tracing::error!(error = %e, "raft log write failed: this member stops replicating");
                        return false;
                    }
                    if self
                        .changing
                        .as_ref()
                        .is_some_and(|(asked, _, _)| *asked == change)
                    {
                        let (_, reply, _) = self.changing.take().expect("checked");
                        let _ = reply.send(Ok(super::MembershipChanged {
                            voters: self.voters.clone(),
                            learners: self.learners.clone(),
                        }));
                    }
                }
                Action::InstallSnapshot {
                    index,
                    term,
                    voters,
                    learners,
                    data,
                } => {
                    tracing::info!(
                        index,
                        term,
                        bytes = data.len(),
                        "ensemble: installing a snapshot from the leader"
                    );
                    let (done, installed) = tokio::sync::oneshot::channel();
                    let event = Event::InstallSnapshot {
                        index,
                        tree: data,
                        done,
                    };
                    if self.core.send(Job::Ensemble(event)).is_err() {
                        return false;
                    }
                    // The log restarts from the snapshot (the next action) only once
                    // the tree is durable: else a crash between the two would leave a
                    // log that starts after a tree that does not have what came before.
                    match installed.await {
                        Ok(Ok(())) => {
                            // The snapshot's membership is this member's now.
                            self.voters = voters;
                            self.learners = learners;
                            for (id, addr) in self.pulled_addrs.take().unwrap_or_default() {
                                self.learn_addr(id, &addr).await;
                            }
                            if let Err(e) = self.log.set_membership(&self.membership()) {
                                tracing::error!(error = %e, "raft log write failed: this member stops replicating");
                                return false;
                            }
                        }
                        Ok(Err(e)) => {
                            tracing::error!(index, error = %e, "ensemble: the snapshot could not be installed: this member stops replicating");
                            return false;
                        }
                        Err(_) => return false,
                    }
                }
                Action::Role(role) => {
                    let leader = match role {
                        Role::Leader { .. } => Some(self.config.id),
                        Role::Follower { leader } => leader,
                    }
                    .and_then(|id| self.config.members.get(&id).copied());
                    tracing::info!(?role, ?leader, "ensemble role");
                    if self
                        .core
                        .send(Job::Ensemble(Event::Role { role, leader }))
                        .is_err()
                    {
                        return false;
                    }
                }
            }
        }
        true
    }

    /// A membership change was applied: the voters, and where to send.
    async fn membership_applied(&mut self, voters: Vec<u64>, change: &MembershipChange) {
        self.voters = voters;
        match change {
            MembershipChange::Add { id, addr } => {
                self.learn_addr(*id, addr).await;
                tracing::info!(member = id, %addr, voters = ?self.voters, "ensemble: member added as a learner (it votes once it has caught up)");
            }
            MembershipChange::Promote { id } => {
                tracing::info!(member = id, voters = ?self.voters, "ensemble: learner caught up: it votes now");
            }
            MembershipChange::Remove { id } if *id == self.config.id => {
                tracing::warn!(voters = ?self.voters, "ensemble: this member was removed from the ensemble; it takes no part any more: stop it");
            }
            MembershipChange::Remove { id } => {
                self.config.members.remove(id);
                self.out.remove(id);
                tracing::info!(member = id, voters = ?self.voters, "ensemble: member removed");
            }
        }
    }

    /// Where member `id` serves, as a membership change or a snapshot says; a new
    /// address gets an OSCORE context before anything is sent to it.
    async fn learn_addr(&mut self, id: u64, addr: &str) {
        let Some(parsed) = std::net::ToSocketAddrs::to_socket_addrs(addr)
            .ok()
            .and_then(|mut a| a.next())
        else {
            tracing::error!(
                member = id,
                addr,
                "ensemble: a member's address does not resolve"
            );
            return;
        };
        if id == self.config.id || self.config.members.get(&id) == Some(&parsed) {
            return;
        }
        if let Some(credentials) = &self.credentials {
            let context = pehra_shared::driver::security::client_context(
                credentials,
                &credentials.identity().kid,
            );
            let secured = match context {
                Ok(context) => self
                    .endpoint
                    .handle()
                    .secure_peer(parsed, context)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = secured {
                tracing::error!(member = id, error = %e, "ensemble: no OSCORE context for a new member");
            }
        }
        self.config.members.insert(id, parsed);
        self.out.entry(id).or_default();
    }

    /// Every member's address, as text.
    fn addrs(&self) -> BTreeMap<u64, String> {
        self.config
            .members
            .iter()
            .map(|(id, addr)| (*id, addr.to_string()))
            .collect()
    }

    /// The membership to record.
    fn membership(&self) -> super::Membership {
        super::Membership {
            voters: self.voters.clone(),
            learners: self.learners.clone(),
            addrs: self.addrs(),
        }
    }

    /// Tells the core that the read `context` (a read id) reached its read point
    /// (`found`) or was given up; `false` if the core is gone.
    fn read_ready(&self, context: &[u8], found: bool) -> bool {
        let Ok(id) = <[u8; 8]>::try_from(context) else {
            return true;
        };
        let event = Event::ReadReady(u64::from_be_bytes(id), found);
        self.core.send(Job::Ensemble(event)).is_ok()
    }

    /// Whether this member leads.
    fn leads(&self) -> bool {
        self.member.leader() == Some(self.config.id)
    }

    /// Sends one message as a `POST /raft`, unless too many are out to that member
    /// already (Raft retries what is lost). A heartbeat carries the lease and its round
    /// trip is timed.
    fn send(&self, message: Message) {
        let (Some(&peer), Some(out)) = (
            self.config.members.get(&message.to),
            self.out.get(&message.to),
        ) else {
            return;
        };
        // Raft sends a read's request and answer once (the member asks again only after
        // `READ_ASK_AGAIN_TICKS`): they pass the limit, which holds back catch-up traffic.
        let once = matches!(
            message.get_msg_type(),
            MessageType::MsgReadIndex | MessageType::MsgReadIndexResp
        );
        if out.fetch_add(1, Ordering::AcqRel) >= MAX_OUT_PER_MEMBER && !once {
            out.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        let out = out.clone();
        let payload = match message.write_to_bytes() {
            Ok(payload) => payload,
            Err(e) => {
                tracing::error!(error = %e, "raft message does not encode");
                return;
            }
        };
        let handle = self.endpoint.handle();
        let mut request = Request::post(RAFT_PATH).with_payload(payload);
        let mut timed = None;
        if message.get_msg_type() == MessageType::MsgHeartbeat {
            let lease_ms = self.lease.lease().lease_ms;
            request = request.with_query(&format!("{}={lease_ms}", lease::LEASE_QUERY));
            timed = self.heartbeat_rtts.clone();
        }
        let to = message.to;
        tokio::spawn(async move {
            let sent = tokio::time::Instant::now();
            match handle.request(peer, request).await {
                Ok(response) if !response.code().is_success() => {
                    tracing::warn!(%peer, code = %response.code(), "raft message refused");
                }
                Ok(_) => {
                    if let Some(rtts) = timed {
                        let _ = rtts.send((to, sent.elapsed()));
                    }
                }
                Err(e) => tracing::debug!(%peer, error = %e, "raft message not delivered"),
            }
            out.fetch_sub(1, Ordering::AcqRel);
        });
    }
}
