//! The thin async driver of a member's Raft: ticks it, feeds it the messages `POST /raft`
//! receives and the core's proposals, and carries out its actions (send over CoAP,
//! persist to the Raft log, hand committed entries and role changes to the core).

use super::log::RaftLog;
use super::member::{Action, Committed, Member, Role};
use super::{EnsembleConfig, RAFT_PATH};
use crate::server::Job;
use pehra_shared::coap::Request;
use pehra_shared::driver::Handle;
use protobuf::Message as _;
use raft::eraftpb::Message;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

/// The Raft tick: elections time out after 10 ticks without a leader (plus Raft's
/// randomisation), leaders heartbeat every 2.
pub const TICK: Duration = Duration::from_millis(100);

/// What the driver tells the core.
#[derive(Debug)]
pub(crate) enum Event {
    /// Entries committed, in order.
    Committed(Vec<Committed>),
    /// The member's role changed.
    Role {
        /// The new role.
        role: Role,
        /// The leader's address, if known.
        leader: Option<SocketAddr>,
    },
    /// A proposal was not taken (the member is no longer the leader).
    Dropped,
}

/// The driver's inputs and outputs.
pub(crate) struct Driver {
    pub member: Member,
    pub log: RaftLog,
    pub config: EnsembleConfig,
    pub handle: Handle,
    /// Raft messages received on `POST /raft` (protobuf bytes).
    pub inbox: UnboundedReceiver<Vec<u8>>,
    /// Proposals of the core.
    pub proposals: UnboundedReceiver<Vec<u8>>,
    /// The core's job queue.
    pub core: UnboundedSender<Job>,
}

impl Driver {
    /// Runs until the core is gone or the Raft log fails.
    pub async fn run(mut self) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.member.tick(),
                bytes = self.inbox.recv() => match bytes.map(|b| Message::parse_from_bytes(&b)) {
                    Some(Ok(message)) => self.member.step(message),
                    Some(Err(e)) => tracing::warn!(error = %e, "undecodable raft message"),
                    None => return,
                },
                data = self.proposals.recv() => match data {
                    Some(data) => {
                        if self.member.propose(data).is_err()
                            && self.core.send(Job::Ensemble(Event::Dropped)).is_err()
                        {
                            return;
                        }
                    }
                    None => return,
                },
            }
            if !self.carry_out() {
                return;
            }
        }
    }

    /// Carries out the machine's actions; `false` if the member must stop.
    fn carry_out(&mut self) -> bool {
        for action in self.member.poll() {
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
                Action::Apply(committed) => {
                    if self
                        .core
                        .send(Job::Ensemble(Event::Committed(committed)))
                        .is_err()
                    {
                        return false;
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

    /// Sends one message as a non-confirmable `POST /raft` (Raft retries what is lost).
    fn send(&self, message: Message) {
        let Some(&peer) = self.config.members.get(&message.to) else {
            return;
        };
        let payload = match message.write_to_bytes() {
            Ok(payload) => payload,
            Err(e) => {
                tracing::error!(error = %e, "raft message does not encode");
                return;
            }
        };
        let handle = self.handle.clone();
        tokio::spawn(async move {
            let request = Request::post(RAFT_PATH).with_payload(payload);
            if let Err(e) = handle.send_non(peer, request).await {
                tracing::debug!(%peer, error = %e, "raft message not sent");
            }
        });
    }
}
