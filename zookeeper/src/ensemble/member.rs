//! One member's Raft, sans-IO: fed ticks, peers' messages and proposals; answers with
//! [`Action`]s in the order the driver must carry them out (send, persist, send what
//! needed the persist, apply committed entries). No clock, socket or disk in here.
//!
//! raft-rs' [`RawNode`] does the consensus; this wraps its `Ready` protocol and keeps an
//! in-memory copy of the log ([`MemStorage`]) that the driver mirrors to disk
//! ([`super::log::RaftLog`]) through the `Persist` actions.

use super::log::Restored;
use raft::eraftpb::{Entry, EntryType, HardState, Message};
use raft::storage::MemStorage;
use raft::{Config, RawNode, StateRole};

/// What the driver must do, in order.
#[derive(Debug)]
pub enum Action {
    /// Send these messages to their `to` members (loss is fine: Raft retries).
    Send(Vec<Message>),
    /// Make these entries and this hard state durable before the next action.
    Persist {
        /// New entries (they replace the log from the first one's index on).
        entries: Vec<Entry>,
        /// The new hard state, if it changed.
        hard_state: Option<HardState>,
    },
    /// Committed entries with data, in log order: apply them to the state machine.
    Apply(Vec<Committed>),
    /// This member's role changed.
    Role(Role),
}

/// A committed entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// Its Raft index.
    pub index: u64,
    /// Its Raft term.
    pub term: u64,
    /// The proposal (empty: a new leader's no-op).
    pub data: Vec<u8>,
}

/// A member's role as the state machine sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Leader, and every entry of earlier terms is applied: writes may go on.
    Leader {
        /// Its term (fences its writes).
        term: u64,
    },
    /// Not (or not yet) a writable leader; the leader, if known.
    Follower {
        /// The leader's member id.
        leader: Option<u64>,
    },
}

/// Why a proposal was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("this member is not the ensemble leader")]
pub struct NotLeader;

/// A member's Raft.
pub struct Member {
    node: RawNode<MemStorage>,
    role: Role,
}

impl Member {
    /// A member `id` of the ensemble `voters`, with what its log held on disk. `seed`
    /// makes its election timeouts differ from its peers'.
    pub fn new(id: u64, voters: &[u64], restored: Restored) -> Result<Member, raft::Error> {
        let storage = MemStorage::new_with_conf_state((voters.to_vec(), vec![]));
        {
            let mut core = storage.wl();
            core.append(&restored.entries)?;
            core.set_hardstate(restored.hard_state.clone());
        }
        let config = Config {
            id,
            election_tick: 10,
            heartbeat_tick: 2,
            max_size_per_msg: 64 << 10,
            max_inflight_msgs: 256,
            check_quorum: true,
            pre_vote: true,
            // The tree is rebuilt from its own log at start; committed entries it already
            // has are skipped by zxid, so Raft may hand them over again.
            applied: 0,
            ..Config::default()
        };
        config.validate()?;
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let mut node = RawNode::new(&config, storage, &logger)?;
        if voters == [id] {
            // Alone: no one to wait for.
            node.campaign()?;
        }
        Ok(Member {
            node,
            role: Role::Follower { leader: None },
        })
    }

    /// One tick of the logical clock (the driver calls it every tick interval).
    pub fn tick(&mut self) {
        self.node.tick();
    }

    /// A peer's message.
    pub fn step(&mut self, message: Message) {
        if let Err(e) = self.node.step(message) {
            tracing::debug!(error = %e, "raft message ignored");
        }
    }

    /// Proposes `data` (an entry for every member's state machine).
    pub fn propose(&mut self, data: Vec<u8>) -> Result<(), NotLeader> {
        if !matches!(self.role, Role::Leader { .. }) {
            return Err(NotLeader);
        }
        self.node.propose(Vec::new(), data).map_err(|_| NotLeader)
    }

    /// The member's current role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The leader's id, if known.
    pub fn leader(&self) -> Option<u64> {
        match self.node.raft.leader_id {
            0 => None,
            id => Some(id),
        }
    }

    /// The actions the inputs so far call for (empty if none).
    pub fn poll(&mut self) -> Vec<Action> {
        let mut actions = Vec::new();
        if !self.node.has_ready() {
            return actions;
        }
        let mut ready = self.node.ready();
        push_send(&mut actions, ready.take_messages());
        let mut applied = Vec::new();
        self.collect(ready.take_committed_entries(), &mut applied);
        let entries = ready.take_entries();
        let hard_state = ready.hs().cloned();
        {
            let store = self.node.mut_store();
            let mut core = store.wl();
            if !entries.is_empty() {
                core.append(&entries).expect("entries follow the log");
            }
            if let Some(hs) = &hard_state {
                core.set_hardstate(hs.clone());
            }
        }
        if !entries.is_empty() || hard_state.is_some() {
            actions.push(Action::Persist {
                entries,
                hard_state,
            });
        }
        push_send(&mut actions, ready.take_persisted_messages());
        let mut light = self.node.advance(ready);
        if let Some(commit) = light.commit_index() {
            let hs = {
                let store = self.node.mut_store();
                let mut core = store.wl();
                core.mut_hard_state().commit = commit;
                core.hard_state().clone()
            };
            actions.push(Action::Persist {
                entries: Vec::new(),
                hard_state: Some(hs),
            });
        }
        push_send(&mut actions, light.take_messages());
        self.collect(light.take_committed_entries(), &mut applied);
        self.node.advance_apply();
        let role = self.current_role(&applied);
        if !applied.is_empty() {
            actions.push(Action::Apply(applied));
        }
        if role != self.role {
            self.role = role;
            actions.push(Action::Role(role));
        }
        actions
    }

    /// The role after applying `applied`: a leader becomes writable once its own term's
    /// no-op is applied (every earlier entry is then applied too).
    fn current_role(&self, applied: &[Committed]) -> Role {
        let raft = &self.node.raft;
        if raft.state != StateRole::Leader {
            return Role::Follower {
                leader: self.leader(),
            };
        }
        match self.role {
            Role::Leader { term } if term == raft.term => self.role,
            _ if applied
                .iter()
                .any(|c| c.term == raft.term && c.data.is_empty()) =>
            {
                Role::Leader { term: raft.term }
            }
            _ => Role::Follower {
                leader: self.leader(),
            },
        }
    }

    fn collect(&mut self, entries: Vec<Entry>, out: &mut Vec<Committed>) {
        for entry in entries {
            if entry.get_entry_type() != EntryType::EntryNormal {
                // Configuration changes: not used yet (membership is fixed).
                continue;
            }
            out.push(Committed {
                index: entry.index,
                term: entry.term,
                data: entry.data.to_vec(),
            });
        }
    }
}

fn push_send(actions: &mut Vec<Action>, messages: Vec<Message>) {
    if !messages.is_empty() {
        actions.push(Action::Send(messages));
    }
}
