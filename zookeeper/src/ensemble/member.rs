//! One member's Raft, sans-IO: fed ticks, peers' messages and proposals; answers with
//! [`Action`]s in the order the driver must carry them out (send, persist, send what
//! needed the persist, apply committed entries). No clock, socket or disk in here.
//!
//! raft-rs' [`RawNode`] does the consensus; this wraps its `Ready` protocol and keeps an
//! in-memory copy of the log ([`LogStore`]) that the driver mirrors to disk
//! ([`super::log::RaftLog`]) through the `Persist` and `Compact` actions.
//!
//! **Compaction.** The log is cut below what every member has and has made durable in
//! its own tree storage, so no member ever needs a cut entry again (Raft would otherwise
//! have to ship a snapshot of the tree). The leader proposes a cut at index `x` (a
//! compaction entry, told apart by its context [`COMPACT_CONTEXT`]) once every voter has
//! matched `x`, `x` is committed, and `x` is at least `compact_every` entries past the
//! log's start; each member, on applying that entry, cuts its log at `x` as soon as its
//! core has made everything up to `x` durable in its write-ahead log
//! ([`Member::set_durable`]). A member that is down holds compaction back until it
//! returns (its log grows meanwhile, as it would without compaction).
//!
//! **Snapshots.** A member whose log ends before the leader's first entry (it lost its
//! disk, or is new) is sent a snapshot of the state machine. When Raft first needs one
//! the machine asks for it ([`Action::SnapshotWanted`]); the driver has the core's tree
//! encoded at a committed index and offers it ([`Member::offer_snapshot`]); Raft sends
//! it at its next attempt. A member receiving one installs it
//! ([`Action::InstallSnapshot`], carried out durably before its log is restarted from
//! the snapshot's index with an [`Action::Compact`]).

use super::log::Restored;
use super::store::LogStore;
use protobuf::Message as _;
use raft::eraftpb::{
    ConfChange, ConfChangeType, Entry, EntryType, HardState, Message, MessageType,
};
use raft::{Config, RawNode, SnapshotStatus, StateRole, Storage as _};

/// The context of a compaction entry (its data: the index to cut at, 8 bytes big-endian).
pub const COMPACT_CONTEXT: &[u8] = b"pehra/compact";

/// The context of a member's append responses while it runs on a log that was empty when
/// it started, followed by a number of its own (8 bytes big-endian): see
/// [`Member::with_incarnation`].
pub const EMPTY_START: &[u8] = b"pehra/empty-start/";

/// Ticks without a leader before an election (raft-rs draws each member's timeout in
/// [`ELECTION_TICK`, 2 × `ELECTION_TICK`)), unless the leader's lease says longer.
pub const ELECTION_TICK: usize = 10;

/// The longest lease a leader may give, in ticks (seed 002's maximum): a follower's
/// election timeout is then drawn in [lease, 2 × lease).
pub const MAX_LEASE_TICKS: usize = 30;

/// Raft's `max_size_per_msg`: the entries of one append message stop at this many bytes
/// (one entry always goes, however large), so that an append with its envelope fits one
/// datagram of [`PEER_MAX_PAYLOAD`](pehra_shared::coap::PEER_MAX_PAYLOAD) and is not cut
/// into 1 KiB blocks, each a round trip.
pub const MAX_ENTRY_BYTES_PER_MESSAGE: u64 = 24 * 1024;

/// Ticks a read waits for its read point before this member asks again: raft-rs sends
/// `MsgReadIndex` and its answer once, and drops a read that reaches a leader not yet
/// writable in its term.
const READ_ASK_AGAIN_TICKS: u32 = 5;

/// Ticks after which a read still without a read point is given up
/// ([`Action::ReadAbandoned`]): three election timeouts without a leader that answers.
const READ_GIVE_UP_TICKS: u32 = 3 * ELECTION_TICK as u32;

/// A learner is promoted to voter once its log matches the leader's and is within this
/// many entries of the commit index (the rest it receives in one or two appends).
const PROMOTE_WITHIN: u64 = 64;

/// By default the log is cut once it holds this many entries every member has.
pub const DEFAULT_COMPACT_EVERY: u64 = 10_000;

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
    /// The read asked for with this context may be answered once the entries handed
    /// over so far are applied (Raft's ReadIndex: a `sync` on any member).
    Read(Vec<u8>),
    /// The read asked for with this context found no read point in
    /// `READ_GIVE_UP_TICKS`: answer it with "no leader".
    ReadAbandoned(Vec<u8>),
    /// This member's role changed.
    Role(Role),
    /// The log was cut: on disk, replace it by the cut (`base`), what it kept
    /// (`entries`) and `hard_state` (after every earlier action).
    Compact {
        /// The index and term of the last entry cut.
        base: (u64, u64),
        /// The entries kept (from `base.0 + 1` on).
        entries: Vec<Entry>,
        /// The hard state now.
        hard_state: HardState,
    },
    /// Raft must send a snapshot to a member and none is offered: encode the state
    /// machine at a committed index and [`Member::offer_snapshot`] it.
    SnapshotWanted,
    /// A membership change was applied: `voters` vote from now on, `learners` catch up.
    Membership {
        /// The voters now.
        voters: Vec<u64>,
        /// The learners now.
        learners: Vec<u64>,
        /// What changed.
        change: MembershipChange,
    },
    /// A snapshot from the leader: make it the state machine, durably, before the
    /// actions after this one (they restart the log from it).
    InstallSnapshot {
        /// The Raft index it is at.
        index: u64,
        /// The term of that index.
        term: u64,
        /// The voters at the snapshot.
        voters: Vec<u64>,
        /// The learners at the snapshot.
        learners: Vec<u64>,
        /// What the leader's `MsgSnapshot` carried (once the driver filled it in: the
        /// state machine's bytes).
        data: Vec<u8>,
    },
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

/// What a member's `AddLearnerNode` carries: where it serves, and the members when it
/// was proposed. A member that joins reads its log from the start when the leader has
/// not cut it yet (no snapshot comes): the configuration the ensemble started with is in
/// no entry, so without this it would take itself for the only voter and elect itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Joining {
    addr: String,
    voters: Vec<u64>,
    learners: Vec<u64>,
}

impl Joining {
    /// Reads a conf change's context: a [`Joining`], or (written by a version before
    /// learners) the address alone.
    fn read(context: &[u8]) -> Joining {
        pehra_shared::wire::decode(context).unwrap_or_else(|_| Joining {
            addr: String::from_utf8_lossy(context).into_owned(),
            voters: Vec::new(),
            learners: Vec::new(),
        })
    }
}

/// Why a proposal was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("this member is not the ensemble leader")]
pub struct NotLeader;

/// A change of the ensemble's members (one at a time: Raft's single-server changes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipChange {
    /// Member `id`, serving at `addr`, joins as a **learner**: it is sent the log (or a
    /// snapshot) but does not vote, so a member that is still catching up (or not
    /// started yet) never counts towards a quorum; the leader promotes it
    /// ([`MembershipChange::Promote`]) once it has caught up.
    Add {
        /// Its id.
        id: u64,
        /// Its CoAP address, `HOST:PORT`.
        addr: String,
    },
    /// The learner `id` caught up and votes from now on (proposed by the leader itself).
    Promote {
        /// Its id.
        id: u64,
    },
    /// Member `id` (a voter or a learner) no longer votes and is sent nothing more.
    Remove {
        /// Its id.
        id: u64,
    },
}

/// Why a membership change was not proposed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    /// Only the (writable) leader proposes one.
    #[error("this member is not the ensemble leader")]
    NotLeader,
    /// One change at a time: the last one is not applied yet.
    #[error("a membership change is under way: retry once it is applied")]
    Pending,
    /// The member to add is a member already (a voter, or a learner catching up).
    #[error("member {0} is already a member (a voter, or a learner catching up)")]
    AlreadyMember(u64),
    /// The member to remove is not a member.
    #[error("member {0} is not a member of this ensemble")]
    NotAMember(u64),
    /// The leader removing itself (raft-rs leaves that case untested): hand over first.
    #[error("member {0} leads the ensemble: hand the leadership over first (pehra cluster zookeeper-handover), then remove it")]
    Leader(u64),
    /// An ensemble keeps at least one voter.
    #[error("member {0} is the only voter")]
    Last(u64),
    /// Ids start at 1.
    #[error("member ids start at 1")]
    BadId,
}

/// Why a leadership transfer was not started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    /// Only the leader hands its office over.
    #[error("this member is not the ensemble leader")]
    NotLeader,
    /// The member asked for is not a voter of this ensemble (or is this member).
    #[error("member {0} is not another member of this ensemble")]
    NotAMember(u64),
    /// An ensemble of one has nobody to hand over to.
    #[error("the ensemble has no other member")]
    Alone,
}

/// A member's Raft.
pub struct Member {
    node: RawNode<LogStore>,
    role: Role,
    /// The last index handed over in `Apply` actions.
    applied: u64,
    /// Reads whose index is known, waiting for it to be applied: (index, context).
    reads: Vec<(u64, Vec<u8>)>,
    /// Reads asked for whose read point has not come yet: context → (ticks since first
    /// asked, ticks since last asked).
    asking: std::collections::BTreeMap<Vec<u8>, (u32, u32)>,
    /// Reads given up, told with the next actions.
    abandoned: Vec<Vec<u8>>,
    /// The term whose no-op this member applied as its leader (0: none): from then on it
    /// is writable in that term.
    writable_term: u64,
    /// Propose a cut once this many entries every member has are in the log (0: never).
    compact_every: u64,
    /// The highest cut this member proposed (as leader).
    proposed_cut: u64,
    /// The highest cut committed (from compaction entries applied).
    cut_target: u64,
    /// Everything up to this index is durable in the core's own storage.
    durable: u64,
    /// Ticks left during which this member ignores vote requests, because it started on
    /// an empty log in an ensemble of several: it may be a member that lost its disk and
    /// with it the vote it cast, and voting again in that term could elect two leaders.
    /// Any election running when it lost its disk has moved to a later term once every
    /// candidate's election timeout (at most 2 × `election_tick`) has passed. (A new
    /// ensemble, all of whose members start empty, elects its first leader that much
    /// later.)
    abstain_ticks: u32,
    /// Started on an empty log in an ensemble of several: this process's number, told
    /// in its append responses (0: not told).
    empty_start: u64,
    /// The numbers members told ([`EMPTY_START`]), so a leader acts on each once.
    incarnations: std::collections::BTreeMap<u64, u64>,
    /// Messages of this machine's own (not raft-rs'), sent with the next actions.
    outbox: Vec<Message>,
    /// Where this member's election timeouts come from (see
    /// [`Member::fix_election_timeout`]).
    timeout_seed: u64,
    /// The lease the leader last gave in its heartbeats: its id, the lease in ms and in
    /// ticks (seed 002; see [`Member::handle_leader_lease`]).
    leader_lease: Option<(u64, u32, usize)>,
    /// Membership changes applied, told with the next actions.
    applied_changes: Vec<Action>,
}

impl Member {
    /// A member `id` of the ensemble `voters`, with what its log held on disk. `seed`
    /// makes its election timeouts differ from its peers'.
    pub fn new(id: u64, voters: &[u64], restored: Restored) -> Result<Member, raft::Error> {
        Self::with_learners(id, voters, &[], restored)
    }

    /// [`Member::new`] in an ensemble that also has `learners` (members catching up
    /// before they vote, as the Raft log recorded them).
    pub fn with_learners(
        id: u64,
        voters: &[u64],
        learners: &[u64],
        restored: Restored,
    ) -> Result<Member, raft::Error> {
        let storage = LogStore::new(
            voters,
            learners,
            restored.base,
            &restored.entries,
            restored.hard_state.clone(),
        )?;
        let config = Config {
            id,
            election_tick: ELECTION_TICK,
            // A leader's lease may stretch the followers' timeouts up to this.
            max_election_tick: 2 * MAX_LEASE_TICKS,
            heartbeat_tick: 2,
            max_size_per_msg: MAX_ENTRY_BYTES_PER_MESSAGE,
            max_inflight_msgs: 256,
            check_quorum: true,
            pre_vote: true,
            // The tree is rebuilt from its own log at start; committed entries it already
            // has are skipped by zxid, so Raft may hand them over again.
            applied: 0,
            ..Config::default()
        };
        config.validate()?;
        let started_empty =
            restored.base.is_none() && restored.entries.is_empty() && restored.hard_state.term == 0;
        // (A member started to join, with no voters yet, counts as one of several.)
        let abstain_ticks = if started_empty && voters != [id] {
            2 * config.election_tick as u32
        } else {
            0
        };
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let mut node = RawNode::new(&config, storage, &logger)?;
        if voters == [id] {
            // Alone: no one to wait for.
            node.campaign()?;
        }
        Ok(Member {
            node,
            role: Role::Follower { leader: None },
            applied: 0,
            reads: Vec::new(),
            asking: Default::default(),
            abandoned: Vec::new(),
            writable_term: 0,
            compact_every: DEFAULT_COMPACT_EVERY,
            proposed_cut: 0,
            cut_target: 0,
            durable: 0,
            abstain_ticks,
            empty_start: 0,
            incarnations: Default::default(),
            outbox: Vec::new(),
            applied_changes: Vec::new(),
            timeout_seed: id,
            leader_lease: None,
        })
    }

    /// A random number for this process: if it started on an empty log in an ensemble of
    /// several, its append responses tell it (with [`EMPTY_START`]), so that a leader
    /// that counted entries as this member's learns they are gone.
    ///
    /// The number also seeds this member's election timeouts.
    pub fn with_incarnation(mut self, number: u64) -> Member {
        if self.abstain_ticks > 0 {
            self.empty_start = number;
        }
        self.timeout_seed = number;
        self.fix_election_timeout();
        self
    }

    /// The leader `from` gave a lease of `lease_ms`, `ticks` of this member's ticks, in
    /// a heartbeat (seed 002's adaptive lease, `super::lease`): while `from` leads, this
    /// member's election timeout is drawn in [ticks, 2 × ticks) instead of
    /// [`ELECTION_TICK`, 2 × `ELECTION_TICK`). `ticks` is taken within [`ELECTION_TICK`,
    /// [`MAX_LEASE_TICKS`]]: a follower never gives up on a leader sooner than the leader
    /// gives up on itself (raft-rs' check-quorum runs on `ELECTION_TICK`).
    pub fn handle_leader_lease(&mut self, from: u64, lease_ms: u32, ticks: usize) {
        let ticks = ticks.clamp(ELECTION_TICK, MAX_LEASE_TICKS);
        self.leader_lease = Some((from, lease_ms, ticks));
        self.fix_election_timeout();
    }

    /// The lease of the leader this member follows now, ms (`None`: it gave none, or
    /// another member leads since).
    pub fn leader_lease_ms(&self) -> Option<u32> {
        self.current_lease().map(|(ms, _)| ms)
    }

    /// The current leader's lease (ms, ticks), if it gave one.
    fn current_lease(&self) -> Option<(u32, usize)> {
        let leader = self.node.raft.leader_id;
        match self.leader_lease {
            Some((from, ms, ticks)) if from == leader && leader != self.node.raft.id => {
                Some((ms, ticks))
            }
            _ => None,
        }
    }

    /// This member's election timeout now, in ticks.
    pub fn election_timeout_ticks(&self) -> usize {
        self.node.raft.randomized_election_timeout()
    }

    /// Sets raft-rs' randomized election timeout from this member's seed, its term and
    /// the leader it knows, in [`ELECTION_TICK`, 2 × `ELECTION_TICK`) (or the leader's
    /// lease: [`Member::handle_leader_lease`]): raft-rs draws it
    /// from the thread's random generator at each reset, which no seed reaches, so a
    /// simulation of the ensemble would not replay. Called after every input; a value
    /// that depends only on that state is the same in a replay, and differs between
    /// members (their seeds) and terms as raft-rs' draws do.
    fn fix_election_timeout(&mut self) {
        let base = self
            .current_lease()
            .map_or(ELECTION_TICK, |(_, ticks)| ticks);
        let raft = &mut self.node.raft;
        let mut x = self.timeout_seed
            ^ raft.term.wrapping_mul(0x9e37_79b9_7f4a_7c15)
            ^ raft.leader_id.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        // splitmix64's finaliser.
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^= x >> 31;
        let timeout = base + (x % base as u64) as usize;
        if raft.randomized_election_timeout() != timeout {
            raft.set_randomized_election_timeout(timeout);
        }
    }

    /// Cut the log once it holds `every` entries every member has (0: never).
    pub fn compacting_every(mut self, every: u64) -> Member {
        self.compact_every = every;
        self
    }

    /// The core has made every committed entry up to `index` durable in its own storage
    /// (its tree's write-ahead log): the log may be cut up to there.
    pub fn handle_durable(&mut self, index: u64) {
        self.durable = self.durable.max(index);
    }

    /// Offers a snapshot of the state machine at `index` (every committed entry up to it
    /// applied, none after), whose `MsgSnapshot` carries `data`; Raft sends it when it
    /// next tries. `false` if `index` is not in the log (the log was cut past it).
    pub fn offer_snapshot(&mut self, index: u64, data: Vec<u8>) -> bool {
        self.node.mut_store().offer(index, data)
    }

    /// Withdraws the snapshot offered (a later want asks for a new one).
    pub fn withdraw_snapshot(&mut self) {
        self.node.mut_store().withdraw();
    }

    /// The highest index known committed.
    pub fn committed(&self) -> u64 {
        self.node.raft.raft_log.committed
    }

    /// The first index the log holds (1 until it is cut).
    pub fn first_index(&self) -> u64 {
        self.node.store().first_index().unwrap_or(1)
    }

    /// As the leader, proposes a cut where every member has the entries, if the log
    /// holds enough of them.
    fn maybe_propose_cut(&mut self) {
        let raft = &self.node.raft;
        if self.compact_every == 0
            || raft.state != StateRole::Leader
            || raft.lead_transferee.is_some()
        {
            return;
        }
        let prs = raft.prs();
        let Some(everyone_has) = prs
            .conf()
            .voters()
            .ids()
            .iter()
            .map(|id| prs.get(id).map_or(0, |p| p.matched))
            .min()
        else {
            return;
        };
        let at = everyone_has.min(raft.raft_log.committed).min(self.durable);
        let first = self.first_index();
        if at < first.saturating_add(self.compact_every) || at <= self.proposed_cut {
            return;
        }
        if self
            .node
            .propose(COMPACT_CONTEXT.to_vec(), at.to_be_bytes().to_vec())
            .is_ok()
        {
            self.proposed_cut = at;
        }
    }

    /// Cuts the log as far as the committed cut and the core's durability allow.
    fn cut(&mut self, actions: &mut Vec<Action>) {
        let at = self
            .cut_target
            .min(self.durable)
            .min(self.node.raft.raft_log.applied);
        if at <= self.first_index() {
            return;
        }
        let store = self.node.mut_store();
        match store.compact(at) {
            Ok(Some(base)) => match store.entries_from(at) {
                Ok(entries) => actions.push(Action::Compact {
                    base,
                    entries,
                    hard_state: store.hard_state(),
                }),
                Err(e) => tracing::error!(error = %e, "raft log: the entries kept do not read"),
            },
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, at, "raft log: the cut failed"),
        }
    }

    /// One tick of the logical clock (the driver calls it every tick interval).
    pub fn handle_tick(&mut self) {
        self.abstain_ticks = self.abstain_ticks.saturating_sub(1);
        self.node.tick();
        self.fix_election_timeout();
        self.maybe_propose_cut();
        self.ask_reads_again();
        self.maybe_promote();
    }

    /// Asks again for the reads whose read point has not come in
    /// [`READ_ASK_AGAIN_TICKS`] (the request or the answer was lost, or the leader was
    /// not yet writable), and gives up those waiting [`READ_GIVE_UP_TICKS`].
    fn ask_reads_again(&mut self) {
        let leader_known = self.leader().is_some();
        let mut again = Vec::new();
        let abandoned = &mut self.abandoned;
        self.asking.retain(|context, (age, since)| {
            *age += 1;
            *since += 1;
            if *age >= READ_GIVE_UP_TICKS {
                abandoned.push(context.clone());
                return false;
            }
            if *since >= READ_ASK_AGAIN_TICKS && leader_known {
                *since = 0;
                again.push(context.clone());
            }
            true
        });
        for context in again {
            self.node.read_index(context);
        }
    }

    /// A peer's message.
    pub fn handle_message(&mut self, mut message: Message) {
        match message.get_msg_type() {
            MessageType::MsgRequestVote | MessageType::MsgRequestPreVote
                if self.abstain_ticks > 0 =>
            {
                // Started with an empty log: see `abstain_ticks`.
                tracing::debug!(
                    from = message.from,
                    "vote request ignored: this member's log was empty at start"
                );
                return;
            }
            MessageType::MsgHeartbeat => {
                // The leader commits up to what it believes this member has; a member
                // that lost its disk has less, and raft-rs would end the process
                // committing past its log. Commit nothing from such a heartbeat: the
                // leader learns from the answers to its appends what this log holds.
                let last = self.node.raft.raft_log.last_index();
                if message.commit > last {
                    if self.empty_start != 0 {
                        // And say so, as the answer to an append would (tagged, see
                        // `note_incarnation`): an idle leader sends no appends.
                        let mut lacking = Message::default();
                        lacking.set_msg_type(MessageType::MsgAppendResponse);
                        lacking.to = message.from;
                        lacking.from = self.node.raft.id;
                        lacking.term = message.term;
                        lacking.reject = true;
                        lacking.index = message.commit;
                        lacking.reject_hint = last;
                        self.outbox.push(lacking);
                    }
                    message.commit = self.node.raft.raft_log.committed.min(last);
                }
            }
            MessageType::MsgAppendResponse => self.note_incarnation(&message),
            _ => {}
        }
        if let Err(e) = self.node.step(message) {
            tracing::debug!(error = %e, "raft message ignored");
        }
        self.fix_election_timeout();
    }

    /// As the leader: the first answer of a member process that started on an empty
    /// log (its append responses carry [`EMPTY_START`] and a number of its own) means
    /// whatever that member acknowledged before is gone (its data directory was emptied,
    /// or it is a new machine under an old id). raft-rs assumes a member never loses what
    /// it acknowledged, and would probe past its log for ever: probe it from the start
    /// again, which sends it a snapshot if the log no longer goes back that far.
    fn note_incarnation(&mut self, response: &Message) {
        let Some(incarnation) = response
            .context
            .strip_prefix(EMPTY_START)
            .and_then(|n| <[u8; 8]>::try_from(n).ok())
            .map(u64::from_be_bytes)
        else {
            return;
        };
        if self.incarnations.insert(response.from, incarnation) == Some(incarnation)
            || self.node.raft.state != StateRole::Leader
        {
            return;
        }
        let Some(progress) = self.node.raft.mut_prs().get_mut(response.from) else {
            return;
        };
        if progress.matched > 0 {
            tracing::warn!(
                member = response.from,
                had = progress.matched,
                "ensemble: member {} started on an empty log: it lost what it had (a data directory emptied?); sending it everything again",
                response.from
            );
            progress.matched = 0;
            progress.become_probe();
        }
    }

    /// Proposes `data` (an entry for every member's state machine).
    pub fn propose(&mut self, data: Vec<u8>) -> Result<(), NotLeader> {
        if !matches!(self.role, Role::Leader { .. }) {
            return Err(NotLeader);
        }
        self.node.propose(Vec::new(), data).map_err(|_| NotLeader)
    }

    /// Proposes a change of the voters (the writable leader only, one at a time). It is
    /// done when an [`Action::Membership`] says so.
    pub fn propose_membership(&mut self, change: &MembershipChange) -> Result<(), MembershipError> {
        if !matches!(self.role, Role::Leader { .. }) || self.node.raft.state != StateRole::Leader {
            return Err(MembershipError::NotLeader);
        }
        if self.node.raft.has_pending_conf() {
            return Err(MembershipError::Pending);
        }
        let voters = self.voters();
        let learners = self.learners();
        let mut cc = ConfChange::default();
        match change {
            MembershipChange::Add { id: 0, .. } => return Err(MembershipError::BadId),
            MembershipChange::Add { id, addr } => {
                if voters.contains(id) || learners.contains(id) {
                    return Err(MembershipError::AlreadyMember(*id));
                }
                cc.set_change_type(ConfChangeType::AddLearnerNode);
                cc.node_id = *id;
                let joining = Joining {
                    addr: addr.clone(),
                    voters: voters.clone(),
                    learners: learners.clone(),
                };
                cc.context = pehra_shared::wire::encode(&joining)
                    .expect("a joining context encodes")
                    .into();
            }
            MembershipChange::Promote { id } => {
                if !learners.contains(id) {
                    return Err(MembershipError::NotAMember(*id));
                }
                cc.set_change_type(ConfChangeType::AddNode);
                cc.node_id = *id;
            }
            MembershipChange::Remove { id } if learners.contains(id) => {
                cc.set_change_type(ConfChangeType::RemoveNode);
                cc.node_id = *id;
            }
            MembershipChange::Remove { id } => {
                if !voters.contains(id) {
                    return Err(MembershipError::NotAMember(*id));
                }
                if *id == self.node.raft.id {
                    return Err(MembershipError::Leader(*id));
                }
                if voters.len() == 1 {
                    return Err(MembershipError::Last(*id));
                }
                cc.set_change_type(ConfChangeType::RemoveNode);
                cc.node_id = *id;
            }
        }
        self.node
            .propose_conf_change(Vec::new(), cc)
            .map_err(|_| MembershipError::NotLeader)
    }

    /// Applies a committed membership change (every member, in log order).
    fn apply_membership(&mut self, entry: &Entry) {
        let cc = match ConfChange::parse_from_bytes(&entry.data) {
            Ok(cc) => cc,
            Err(e) => {
                tracing::error!(index = entry.index, error = %e, "undecodable membership change skipped");
                return;
            }
        };
        let joining = Joining::read(&cc.context);
        if cc.node_id == self.node.raft.id && self.voters().is_empty() {
            self.take_configuration(&joining);
        }
        let was_learner = self.learners().contains(&cc.node_id);
        let conf = match self.node.apply_conf_change(&cc) {
            Ok(conf) => conf,
            Err(e) => {
                tracing::error!(index = entry.index, error = %e, "membership change refused by raft");
                return;
            }
        };
        self.node
            .mut_store()
            .mem()
            .wl()
            .set_conf_state(conf.clone());
        let change = match cc.get_change_type() {
            ConfChangeType::AddNode if was_learner => MembershipChange::Promote { id: cc.node_id },
            // (An `AddNode` of a new member: written by a version without learners.)
            ConfChangeType::AddLearnerNode | ConfChangeType::AddNode => MembershipChange::Add {
                id: cc.node_id,
                addr: joining.addr,
            },
            ConfChangeType::RemoveNode => MembershipChange::Remove { id: cc.node_id },
        };
        let (mut voters, mut learners) = (conf.voters, conf.learners);
        voters.sort_unstable();
        learners.sort_unstable();
        self.applied_changes.push(Action::Membership {
            voters,
            learners,
            change,
        });
    }

    /// A joining member (no voters yet) learns the ensemble's configuration from the
    /// change that adds it, before applying that change.
    fn take_configuration(&mut self, joining: &Joining) {
        let changes = joining
            .voters
            .iter()
            .map(|id| (ConfChangeType::AddNode, *id))
            .chain(
                joining
                    .learners
                    .iter()
                    .map(|id| (ConfChangeType::AddLearnerNode, *id)),
            );
        for (kind, id) in changes {
            let mut cc = ConfChange::default();
            cc.set_change_type(kind);
            cc.node_id = id;
            match self.node.apply_conf_change(&cc) {
                Ok(conf) => self.node.mut_store().mem().wl().set_conf_state(conf),
                Err(e) => {
                    tracing::error!(member = id, error = %e, "ensemble: the configuration a joining member was given does not apply")
                }
            }
        }
    }

    /// The voters now, in order.
    pub fn voters(&self) -> Vec<u64> {
        let mut voters: Vec<u64> = self.node.raft.prs().conf().voters().ids().iter().collect();
        voters.sort_unstable();
        voters
    }

    /// The learners now (members catching up before they vote), in order.
    pub fn learners(&self) -> Vec<u64> {
        let mut learners: Vec<u64> = self
            .node
            .raft
            .prs()
            .conf()
            .learners()
            .iter()
            .copied()
            .collect();
        learners.sort_unstable();
        learners
    }

    /// As the leader, promotes a learner that has caught up (its log within
    /// [`PROMOTE_WITHIN`] entries of the commit index) to a voter; one change at a time.
    fn maybe_promote(&mut self) {
        let raft = &self.node.raft;
        if raft.state != StateRole::Leader
            || self.writable_term != raft.term
            || raft.has_pending_conf()
        {
            return;
        }
        let committed = raft.raft_log.committed;
        // Caught up: its log matches the leader's (replicating, not probing), it answered
        // lately, and it is close to the commit index.
        let caught_up = self.learners().into_iter().find(|id| {
            raft.prs().get(*id).is_some_and(|p| {
                p.state == raft::ProgressState::Replicate
                    && p.recent_active
                    && p.matched > 0
                    && p.matched + PROMOTE_WITHIN >= committed
            })
        });
        if let Some(id) = caught_up {
            match self.propose_membership(&MembershipChange::Promote { id }) {
                Ok(()) => tracing::info!(
                    member = id,
                    "ensemble: learner caught up: promoting it to voter"
                ),
                Err(e) => {
                    tracing::debug!(member = id, error = %e, "ensemble: learner not promoted yet")
                }
            }
        }
    }

    /// Asks for a linearizable read point (ReadIndex, through the leader): an
    /// [`Action::Read`] with `context` follows once this member has applied everything
    /// committed when the leader heard of it. `Err` if no leader is known.
    pub fn read_index(&mut self, context: Vec<u8>) -> Result<(), NotLeader> {
        if self.leader().is_none() {
            return Err(NotLeader);
        }
        self.asking.insert(context.clone(), (0, 0));
        self.node.read_index(context);
        Ok(())
    }

    /// Hands the leadership over (a planned change of master, seed 002, for the
    /// zookeeper leader): to `to`, or to the member whose log is furthest along (the
    /// shortest pre-sync; the lowest id among equals). Raft's leadership transfer: the
    /// leader stops taking proposals, brings the transferee's log up to its own (the
    /// pre-sync), then tells it to campaign at once (`MsgTimeoutNow`: the transferee wins
    /// the election without waiting for a timeout). If that has not happened within an
    /// election timeout (the transferee is down or cut off), the transfer is abandoned
    /// and this member goes on leading (the rollback). Returns the transferee.
    pub fn transfer_leadership(&mut self, to: Option<u64>) -> Result<u64, TransferError> {
        if self.node.raft.state != StateRole::Leader {
            return Err(TransferError::NotLeader);
        }
        let me = self.node.raft.id;
        let voters: Vec<u64> = self.node.raft.prs().conf().voters().ids().iter().collect();
        let target = match to {
            Some(id) if id != me && voters.contains(&id) => id,
            Some(id) => return Err(TransferError::NotAMember(id)),
            None => {
                let prs = self.node.raft.prs();
                voters
                    .iter()
                    .copied()
                    .filter(|&id| id != me)
                    .max_by_key(|&id| {
                        let matched = prs.get(id).map_or(0, |p| p.matched);
                        (matched, std::cmp::Reverse(id))
                    })
                    .ok_or(TransferError::Alone)?
            }
        };
        self.node.transfer_leader(target);
        Ok(target)
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

    /// This member's view of the ensemble (addresses left empty).
    pub fn status(&self) -> super::EnsembleStatus {
        let status = self.node.status();
        let role = match status.ss.raft_state {
            StateRole::Leader => "leader",
            StateRole::Follower => "follower",
            StateRole::Candidate => "candidate",
            StateRole::PreCandidate => "pre-candidate",
        };
        let learners = self.learners();
        let role = if learners.contains(&status.id) {
            "learner"
        } else {
            role
        };
        let mut members: Vec<super::MemberStatus> = self
            .voters()
            .into_iter()
            .chain(learners.iter().copied())
            .map(|id| super::MemberStatus {
                id,
                addr: String::new(),
                matched: status.progress.and_then(|p| p.get(id)).map(|p| p.matched),
                learner: learners.contains(&id),
                rtt_us: None,
            })
            .collect();
        members.sort_by_key(|m| m.id);
        super::EnsembleStatus {
            id: status.id,
            role: role.into(),
            leader: self.leader(),
            term: status.hs.term,
            last_index: self.node.raft.raft_log.last_index(),
            commit: status.hs.commit,
            applied: status.applied,
            first_index: self.first_index(),
            health_index: None,
            lease: None,
            leader_lease_ms: self.leader_lease_ms(),
            election_timeout_ms: 0,
            members,
        }
    }

    /// The actions the inputs so far call for (empty if none).
    pub fn poll_actions(&mut self) -> Vec<Action> {
        self.fix_election_timeout();
        let mut actions = Vec::new();
        if self.node.store().take_wanted() {
            actions.push(Action::SnapshotWanted);
        }
        push_send(&mut actions, std::mem::take(&mut self.outbox));
        actions.extend(self.abandoned.drain(..).map(Action::ReadAbandoned));
        if !self.node.has_ready() {
            tag_empty_start(&mut actions, self.empty_start);
            return actions;
        }
        let mut ready = self.node.ready();
        push_send(&mut actions, ready.take_messages());
        if !ready.snapshot().is_empty() {
            let snapshot = ready.snapshot().clone();
            let data = snapshot.data.to_vec();
            let store = self.node.mut_store();
            let conf = snapshot.get_metadata().get_conf_state();
            let (mut voters, mut learners) = (conf.voters.clone(), conf.learners.clone());
            voters.sort_unstable();
            learners.sort_unstable();
            match store.restore(snapshot) {
                Ok(base) => {
                    actions.push(Action::InstallSnapshot {
                        index: base.0,
                        term: base.1,
                        voters,
                        learners,
                        data,
                    });
                    actions.push(Action::Compact {
                        base,
                        entries: Vec::new(),
                        hard_state: store.hard_state(),
                    });
                }
                // raft-rs took it (it checked it follows this log): cannot happen.
                Err(e) => tracing::error!(error = %e, "raft: a snapshot does not fit the log"),
            }
        }
        for state in ready.take_read_states() {
            self.asking.remove(&state.request_ctx);
            self.reads.push((state.index, state.request_ctx));
        }
        let mut applied = Vec::new();
        self.collect(ready.take_committed_entries(), &mut applied);
        let entries = ready.take_entries();
        let hard_state = ready.hs().cloned();
        {
            let store = self.node.mut_store();
            let mut core = store.mem().wl();
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
                let mut core = store.mem().wl();
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
        // Every committed entry handed over (empty and configuration ones too).
        self.applied = self.applied.max(self.node.raft.raft_log.applied);
        if !applied.is_empty() {
            actions.push(Action::Apply(applied));
        }
        actions.append(&mut self.applied_changes);
        let applied_to = self.applied;
        let (ready_reads, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.reads)
            .into_iter()
            .partition(|(index, _)| *index <= applied_to);
        self.reads = waiting;
        actions.extend(ready_reads.into_iter().map(|(_, ctx)| Action::Read(ctx)));
        if role != self.role {
            self.role = role;
            actions.push(Action::Role(role));
        }
        self.cut(&mut actions);
        // A snapshot is pulled by the follower, not pushed (see `super::snapshot`):
        // once its reference is sent, Raft goes back to probing the follower, which
        // answers with where its log ends once it has installed it, or asks again.
        let snapshots_sent: Vec<u64> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Send(messages) => Some(messages),
                _ => None,
            })
            .flatten()
            .filter(|m| m.get_msg_type() == MessageType::MsgSnapshot)
            .map(|m| m.to)
            .collect();
        for to in snapshots_sent {
            self.node.report_snapshot(to, SnapshotStatus::Finish);
        }
        tag_empty_start(&mut actions, self.empty_start);
        actions
    }

    /// The role after applying `applied`: a leader becomes writable once its own term's
    /// no-op is applied (every earlier entry is then applied too).
    ///
    /// While it hands its office over ([`Member::transfer_leadership`]) a leader is not
    /// writable (Raft drops proposals meanwhile): it says the transferee leads, so that
    /// writes go there instead of failing here; if the transfer is abandoned it is
    /// writable again.
    fn current_role(&mut self, applied: &[Committed]) -> Role {
        let raft = &self.node.raft;
        if raft.state != StateRole::Leader {
            return Role::Follower {
                leader: self.leader(),
            };
        }
        if applied
            .iter()
            .any(|c| c.term == raft.term && c.data.is_empty())
        {
            self.writable_term = raft.term;
        }
        if let Some(transferee) = raft.lead_transferee {
            return Role::Follower {
                leader: Some(transferee),
            };
        }
        if self.writable_term == raft.term {
            Role::Leader { term: raft.term }
        } else {
            Role::Follower {
                leader: self.leader(),
            }
        }
    }

    fn collect(&mut self, entries: Vec<Entry>, out: &mut Vec<Committed>) {
        for entry in entries {
            match entry.get_entry_type() {
                EntryType::EntryNormal => {}
                EntryType::EntryConfChange => {
                    self.apply_membership(&entry);
                    continue;
                }
                // Joint consensus: not proposed by this code.
                EntryType::EntryConfChangeV2 => continue,
            }
            if entry.context.as_ref() == COMPACT_CONTEXT {
                if let Ok(at) = <[u8; 8]>::try_from(entry.data.as_ref()) {
                    self.cut_target = self.cut_target.max(u64::from_be_bytes(at));
                }
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

/// Tags this member's append responses with [`EMPTY_START`] and its number, if it
/// started on an empty log.
fn tag_empty_start(actions: &mut [Action], number: u64) {
    if number == 0 {
        return;
    }
    let mut context = EMPTY_START.to_vec();
    context.extend_from_slice(&number.to_be_bytes());
    for action in actions {
        if let Action::Send(messages) = action {
            for m in messages
                .iter_mut()
                .filter(|m| m.get_msg_type() == MessageType::MsgAppendResponse)
            {
                m.context = context.clone().into();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Three members in virtual time on a network that loses and reorders messages.

    use super::*;

    /// A small deterministic generator (xorshift): the same run every time.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn chance(&mut self, percent: u64) -> bool {
            self.next() % 100 < percent
        }
    }

    struct Net {
        members: Vec<Member>,
        /// Messages in flight.
        wire: Vec<Message>,
        /// What each member applied, in order.
        applied: Vec<Vec<Vec<u8>>>,
        /// The Raft index each member applied last (its state machine skips what it has,
        /// as the zookeeper's tree does by zxid).
        applied_index: Vec<u64>,
        /// What each member's Raft log holds on disk.
        disk: Vec<Restored>,
        /// The members' compaction setting.
        compact_every: u64,
        /// Members cut off from everyone (a crash or a partition).
        down: Vec<bool>,
        rng: Rng,
        loss: u64,
        /// Snapshots the leaders offered.
        snapshots_offered: usize,
        /// The reads each member found a read point for (their contexts), in order.
        reads: Vec<Vec<Vec<u8>>>,
        /// Drop every message of these types (a network that loses them).
        dropped: Vec<MessageType>,
    }

    /// A state machine (the entries applied) as snapshot bytes: each entry's length, then it.
    fn encode_applied(applied: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for entry in applied {
            out.extend_from_slice(&(entry.len() as u32).to_be_bytes());
            out.extend_from_slice(entry);
        }
        out
    }

    fn decode_applied(mut bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while bytes.len() >= 4 {
            let len = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
            out.push(bytes[4..4 + len].to_vec());
            bytes = &bytes[4 + len..];
        }
        out
    }

    impl Net {
        fn new(loss: u64, seed: u64) -> Net {
            let members = (1..=3)
                .map(|id| {
                    Member::new(id, &[1, 2, 3], Restored::default())
                        .unwrap()
                        .with_incarnation(id * 1_000_003)
                })
                .collect();
            Net {
                members,
                wire: Vec::new(),
                applied: vec![Vec::new(); 3],
                applied_index: vec![0; 3],
                disk: vec![Restored::default(); 3],
                compact_every: DEFAULT_COMPACT_EVERY,
                down: vec![false; 3],
                rng: Rng(seed),
                loss,
                snapshots_offered: 0,
                reads: vec![Vec::new(); 3],
                dropped: Vec::new(),
            }
        }

        /// One tick of virtual time: every member ticks, the wire delivers what it holds
        /// (some lost, the rest in a shuffled order), actions are carried out.
        fn step(&mut self) {
            for (i, m) in self.members.iter_mut().enumerate() {
                if !self.down[i] {
                    m.handle_tick();
                }
            }
            let mut wire = std::mem::take(&mut self.wire);
            for i in (1..wire.len()).rev() {
                let j = (self.rng.next() % (i as u64 + 1)) as usize;
                wire.swap(i, j);
            }
            for message in wire {
                let (from, to) = (message.from as usize - 1, message.to as usize - 1);
                if self.down[from]
                    || self.down[to]
                    || self.rng.chance(self.loss)
                    || self.dropped.contains(&message.get_msg_type())
                {
                    continue;
                }
                self.members[to].handle_message(message);
            }
            self.poll();
        }

        fn poll(&mut self) {
            for i in 0..self.members.len() {
                if self.down[i] {
                    continue;
                }
                for action in self.members[i].poll_actions() {
                    match action {
                        Action::Send(messages) => self.wire.extend(messages),
                        Action::Role(_) | Action::ReadAbandoned(_) | Action::Membership { .. } => {}
                        Action::Read(context) => self.reads[i].push(context),
                        Action::Persist {
                            entries,
                            hard_state,
                        } => {
                            let disk = &mut self.disk[i];
                            if let Some(first) = entries.first() {
                                disk.entries.retain(|e| e.index < first.index);
                            }
                            disk.entries.extend(entries);
                            if let Some(hs) = hard_state {
                                disk.hard_state = hs;
                            }
                        }
                        Action::Compact {
                            base,
                            entries,
                            hard_state,
                        } => {
                            self.disk[i] = Restored {
                                hard_state,
                                base: Some(base),
                                entries,
                                membership: self.disk[i].membership.clone(),
                            };
                        }
                        Action::SnapshotWanted => {
                            // The state machine at what it applied, inline (the driver
                            // has the follower pull it; the same bytes arrive).
                            let data = encode_applied(&self.applied[i]);
                            let at = self.applied_index[i];
                            self.members[i].offer_snapshot(at, data);
                            self.snapshots_offered += 1;
                        }
                        Action::InstallSnapshot { index, data, .. } => {
                            self.applied[i] = decode_applied(&data);
                            self.applied_index[i] = index;
                        }
                        Action::Apply(entries) => {
                            for e in entries {
                                if e.index <= self.applied_index[i] {
                                    continue;
                                }
                                self.applied_index[i] = e.index;
                                if !e.data.is_empty() {
                                    self.applied[i].push(e.data);
                                }
                            }
                        }
                    }
                }
                // The state machine applies at once and durably.
                let durable = self.applied_index[i];
                self.members[i].handle_durable(durable);
            }
        }

        /// Member `i` restarts from what its disk holds (its state machine kept).
        fn restart(&mut self, i: usize) {
            let incarnation = self.rng.next();
            self.members[i] = Member::new(i as u64 + 1, &[1, 2, 3], self.disk[i].clone())
                .unwrap()
                .compacting_every(self.compact_every)
                .with_incarnation(incarnation);
            self.down[i] = false;
        }

        fn leader(&self) -> Option<usize> {
            (0..self.members.len())
                .find(|&i| !self.down[i] && matches!(self.members[i].role(), Role::Leader { .. }))
        }

        /// Runs until a writable leader exists (bounded).
        fn elect(&mut self) -> usize {
            for _ in 0..1000 {
                if let Some(leader) = self.leader() {
                    return leader;
                }
                self.step();
            }
            panic!("no leader elected");
        }

        /// Proposes `data` until some leader has it committed and applied (bounded).
        fn commit(&mut self, data: Vec<u8>) {
            for _ in 0..200 {
                let leader = self.elect();
                if self.members[leader].propose(data.clone()).is_ok() {
                    for _ in 0..100 {
                        self.step();
                        if self.applied[leader].contains(&data) {
                            return;
                        }
                    }
                }
            }
            panic!("{data:?} never committed");
        }

        /// Every member's applied sequence is a prefix of the longest one (no two members
        /// ever apply different entries at the same position).
        fn assert_consistent(&self) {
            let longest = self.applied.iter().max_by_key(|a| a.len()).unwrap();
            for applied in &self.applied {
                assert_eq!(applied[..], longest[..applied.len()]);
            }
        }
    }

    /// A read (`sync`) on a follower whose `MsgReadIndex` or answer is lost, or whose
    /// leader dies before answering, is asked again and answered; with no leader for
    /// three election timeouts it is given up, not kept for ever.
    #[test]
    fn a_read_whose_request_or_answer_is_lost_is_asked_again() {
        for lost in [MessageType::MsgReadIndex, MessageType::MsgReadIndexResp] {
            let mut net = Net::new(0, 11);
            net.commit(b"one".to_vec());
            let leader = net.elect();
            let follower = (leader + 1) % 3;
            net.dropped = vec![lost];
            net.members[follower]
                .read_index(b"read-1".to_vec())
                .unwrap();
            for _ in 0..20 {
                net.step();
            }
            assert!(net.reads[follower].is_empty(), "{lost:?} was dropped");
            net.dropped.clear();
            for _ in 0..(READ_ASK_AGAIN_TICKS + 2) {
                net.step();
            }
            assert_eq!(
                net.reads[follower],
                [b"read-1".to_vec()],
                "after {lost:?} was lost"
            );
        }

        // The leader dies with the read unanswered: the new leader answers it.
        let mut net = Net::new(0, 12);
        net.commit(b"one".to_vec());
        let leader = net.elect();
        let follower = (leader + 1) % 3;
        net.dropped = vec![MessageType::MsgReadIndex];
        net.members[follower]
            .read_index(b"read-2".to_vec())
            .unwrap();
        net.step();
        net.down[leader] = true;
        net.dropped.clear();
        for _ in 0..READ_GIVE_UP_TICKS {
            net.step();
            if !net.reads[follower].is_empty() {
                break;
            }
        }
        assert_eq!(net.reads[follower], [b"read-2".to_vec()]);

        // No leader at all: given up after three election timeouts.
        let mut net = Net::new(0, 13);
        net.commit(b"one".to_vec());
        let leader = net.elect();
        let follower = (leader + 1) % 3;
        net.dropped = vec![MessageType::MsgReadIndex];
        net.members[follower]
            .read_index(b"read-3".to_vec())
            .unwrap();
        net.step();
        for other in 0..3 {
            net.down[other] = other != follower;
        }
        let mut abandoned = false;
        for _ in 0..=READ_GIVE_UP_TICKS {
            net.members[follower].handle_tick();
            abandoned |= net.members[follower]
                .poll_actions()
                .iter()
                .any(|a| matches!(a, Action::ReadAbandoned(c) if c == b"read-3"));
        }
        assert!(abandoned, "the read was never given up");
    }

    #[test]
    fn a_leadership_transfer_moves_the_leader_and_loses_nothing() {
        for seed in 1..=5 {
            let mut net = Net::new(10, seed * 104_729);
            for n in 0..10u32 {
                net.commit(n.to_be_bytes().to_vec());
            }
            let old = net.elect();
            let to = (old + 1) % 3;
            // The transferee is told to campaign once (MsgTimeoutNow); on a lossy network
            // that can be lost and the transfer abandoned: ask again, as the CLI does.
            for _attempt in 0..5 {
                if net.leader() == Some(to) {
                    break;
                }
                if let Some(leader) = net.leader() {
                    assert_eq!(
                        net.members[leader].transfer_leadership(Some(to as u64 + 1)),
                        Ok(to as u64 + 1)
                    );
                }
                for _ in 0..40 {
                    if net.leader() == Some(to) {
                        break;
                    }
                    net.step();
                }
            }
            assert_eq!(
                net.leader(),
                Some(to),
                "seed {seed}: the transfer did not complete"
            );
            for n in 10..20u32 {
                net.commit(n.to_be_bytes().to_vec());
            }
            net.assert_consistent();
            for n in 0..20u32 {
                assert!(net.applied[to].contains(&n.to_be_bytes().to_vec()));
            }
        }
    }

    #[test]
    fn a_transfer_to_a_member_that_is_gone_is_abandoned_and_the_leader_stays() {
        let mut net = Net::new(0, 42);
        net.commit(b"before".to_vec());
        let old = net.elect();
        let gone = (old + 2) % 3;
        net.down[gone] = true;
        assert!(net.members[old]
            .transfer_leadership(Some(gone as u64 + 1))
            .is_ok());
        // While it tries, proposals are refused, and it names the transferee as leader...
        net.step();
        assert!(net.members[old].propose(b"during".to_vec()).is_err());
        assert_eq!(
            net.members[old].role(),
            Role::Follower {
                leader: Some(gone as u64 + 1)
            }
        );
        // ...until it gives up, after an election timeout (10 to 20 ticks): the same
        // leader, writable again.
        for _ in 0..30 {
            net.step();
        }
        net.commit(b"after".to_vec());
        assert_eq!(net.elect(), old);
        net.assert_consistent();
    }

    #[test]
    fn a_transfer_goes_to_the_member_furthest_along_unless_one_is_named() {
        let mut net = Net::new(0, 9);
        net.commit(b"a".to_vec());
        let leader = net.elect();
        let (x, y) = ((leader + 1) % 3, (leader + 2) % 3);
        // y misses the next entries: x is furthest along.
        net.down[y] = true;
        net.commit(b"b".to_vec());
        net.down[y] = false;
        assert_eq!(
            net.members[leader].transfer_leadership(None),
            Ok(x as u64 + 1)
        );
        assert_eq!(
            net.members[x].transfer_leadership(None),
            Err(TransferError::NotLeader)
        );
        assert_eq!(
            net.members[leader].transfer_leadership(Some(leader as u64 + 1)),
            Err(TransferError::NotAMember(leader as u64 + 1))
        );
        assert_eq!(
            net.members[leader].transfer_leadership(Some(9)),
            Err(TransferError::NotAMember(9))
        );
    }

    #[test]
    fn a_lossy_reordering_network_commits_the_same_sequence_everywhere() {
        for seed in 1..=5 {
            let mut net = Net::new(20, seed * 7919);
            for n in 0..30u32 {
                net.commit(n.to_be_bytes().to_vec());
            }
            net.assert_consistent();
            // The leader goes away: another is elected and commits, nothing committed is lost.
            let old = net.elect();
            net.down[old] = true;
            for n in 30..40u32 {
                net.commit(n.to_be_bytes().to_vec());
            }
            assert_ne!(net.elect(), old);
            net.assert_consistent();
            // The new leader has applied everything it acknowledged.
            let survivor = net.elect();
            for n in 0..40u32 {
                assert!(
                    net.applied[survivor].contains(&n.to_be_bytes().to_vec()),
                    "seed {seed}: entry {n} lost"
                );
            }
            // It comes back and catches up.
            net.down[old] = false;
            for _ in 0..500 {
                net.step();
            }
            net.assert_consistent();
            assert!(
                net.applied[old].len() >= 40,
                "seed {seed}: the old leader did not catch up"
            );
        }
    }

    #[test]
    fn the_log_is_cut_below_what_every_member_has_and_restarts_follow_the_cut() {
        let mut net = Net::new(10, 77);
        net.compact_every = 8;
        for i in 0..3 {
            net.restart(i);
        }
        for n in 0..40u32 {
            net.commit(n.to_be_bytes().to_vec());
        }
        for _ in 0..50 {
            net.step();
        }
        for i in 0..3 {
            assert!(
                net.members[i].first_index() > 20,
                "member {i} cut its log: starts at {}",
                net.members[i].first_index()
            );
            assert!(net.disk[i].base.is_some(), "member {i} cut its log on disk");
        }
        // A member down holds the cut back: the others keep what it lacks.
        let leader = net.elect();
        let down = (leader + 1) % 3;
        net.down[down] = true;
        let behind = net.applied_index[down];
        for n in 40..80u32 {
            net.commit(n.to_be_bytes().to_vec());
        }
        for i in (0..3).filter(|&i| i != down) {
            assert!(
                net.members[i].first_index() <= behind + 1,
                "member {i} cut past what member {down} has ({behind}): starts at {}",
                net.members[i].first_index()
            );
        }
        // It restarts from its disk and catches up with entries the others kept; so
        // does a member restarted from a cut log.
        net.restart(down);
        let other = (down + 1) % 3;
        net.restart(other);
        for n in 80..90u32 {
            net.commit(n.to_be_bytes().to_vec());
        }
        for _ in 0..300 {
            net.step();
        }
        net.assert_consistent();
        for i in 0..3 {
            assert_eq!(net.applied[i].len(), 90, "member {i} has every entry");
            assert!(
                net.members[i].first_index() > behind + 1,
                "member {i} cut again once everyone caught up"
            );
        }
    }

    #[test]
    fn a_member_that_lost_its_disk_catches_up_from_a_snapshot() {
        for seed in 1..=3 {
            let mut net = Net::new(10, seed * 31);
            net.compact_every = 8;
            for i in 0..3 {
                net.restart(i);
            }
            for n in 0..40u32 {
                net.commit(n.to_be_bytes().to_vec());
            }
            for _ in 0..50 {
                net.step();
            }
            let leader = net.elect();
            assert!(net.members[leader].first_index() > 20, "the log is cut");
            assert_eq!(net.snapshots_offered, 0, "nobody needed one yet");
            // A follower loses everything: its Raft log and its state machine.
            let lost = (leader + 1) % 3;
            net.disk[lost] = Restored::default();
            net.applied[lost].clear();
            net.applied_index[lost] = 0;
            net.restart(lost);
            // With nothing new to replicate (only heartbeats) it is caught up too.
            for _ in 0..300 {
                net.step();
            }
            assert_eq!(
                net.applied[lost].len(),
                40,
                "seed {seed}: the emptied member caught up while the ensemble was idle"
            );
            for n in 40..50u32 {
                net.commit(n.to_be_bytes().to_vec());
            }
            for _ in 0..300 {
                net.step();
            }
            assert!(
                net.snapshots_offered >= 1,
                "seed {seed}: no snapshot offered"
            );
            net.assert_consistent();
            assert_eq!(
                net.applied[lost].len(),
                50,
                "seed {seed}: the emptied member has every entry"
            );
            assert!(
                net.disk[lost].base.is_some(),
                "its log on disk starts at the snapshot"
            );
            // It restarts from that disk (its state machine kept) and follows on.
            net.restart(lost);
            for n in 50..55u32 {
                net.commit(n.to_be_bytes().to_vec());
            }
            for _ in 0..100 {
                net.step();
            }
            net.assert_consistent();
            assert_eq!(
                net.applied[lost].len(),
                55,
                "seed {seed}: after its restart"
            );
        }
    }

    #[test]
    fn a_member_started_on_an_empty_log_votes_only_after_two_election_timeouts() {
        let vote = |term| {
            let mut m = Message::default();
            m.set_msg_type(MessageType::MsgRequestVote);
            (m.from, m.to, m.term) = (2, 1, term);
            m
        };
        let grants = |member: &mut Member| {
            member
                .poll_actions()
                .into_iter()
                .filter_map(|a| match a {
                    Action::Send(messages) => Some(messages),
                    _ => None,
                })
                .flatten()
                .any(|m| m.get_msg_type() == MessageType::MsgRequestVoteResponse && !m.reject)
        };
        let mut empty = Member::new(1, &[1, 2, 3], Restored::default()).unwrap();
        empty.handle_message(vote(5));
        assert!(!grants(&mut empty), "it may have voted in term 5 before");
        for _ in 0..20 {
            empty.handle_tick();
        }
        let _ = empty.poll_actions();
        empty.handle_message(vote(6));
        assert!(
            grants(&mut empty),
            "every election it may have voted in is over"
        );
        // A member with its disk votes at once; so does one alone.
        let disk = Restored {
            hard_state: HardState {
                term: 3,
                ..Default::default()
            },
            ..Default::default()
        };
        let mut kept = Member::new(1, &[1, 2, 3], disk).unwrap();
        kept.handle_message(vote(5));
        assert!(grants(&mut kept));
    }

    /// Proposes `change` at the leader until it is applied there (bounded).
    fn change_membership(net: &mut Net, change: MembershipChange) {
        for _ in 0..50 {
            let leader = net.elect();
            match net.members[leader].propose_membership(&change) {
                Ok(()) | Err(MembershipError::Pending) => {}
                Err(MembershipError::AlreadyMember(_))
                    if matches!(change, MembershipChange::Add { .. }) =>
                {
                    return
                }
                Err(MembershipError::NotAMember(_))
                    if matches!(change, MembershipChange::Remove { .. }) =>
                {
                    return
                }
                Err(e) => panic!("{change:?}: {e}"),
            }
            for _ in 0..30 {
                net.step();
            }
        }
        panic!("{change:?} never applied");
    }

    #[test]
    fn members_are_added_and_removed_one_at_a_time_and_a_new_one_catches_up() {
        let mut net = Net::new(10, 5);
        net.compact_every = 8;
        for i in 0..3 {
            net.restart(i);
        }
        for n in 0..30u32 {
            net.commit(n.to_be_bytes().to_vec());
        }
        for _ in 0..50 {
            net.step();
        }
        let leader = net.elect();
        assert!(net.members[leader].first_index() > 10, "the log is cut");
        // The refusals.
        assert_eq!(
            net.members[leader].propose_membership(&MembershipChange::Add {
                id: 2,
                addr: "b".into()
            }),
            Err(MembershipError::AlreadyMember(2))
        );
        assert_eq!(
            net.members[leader].propose_membership(&MembershipChange::Remove { id: 9 }),
            Err(MembershipError::NotAMember(9))
        );
        assert_eq!(
            net.members[leader].propose_membership(&MembershipChange::Remove {
                id: leader as u64 + 1
            }),
            Err(MembershipError::Leader(leader as u64 + 1))
        );
        let follower = (leader + 1) % 3;
        assert_eq!(
            net.members[follower].propose_membership(&MembershipChange::Remove { id: 1 }),
            Err(MembershipError::NotLeader)
        );
        // Member 4 starts to join (no voters), is added, and catches up from a snapshot.
        net.members.push(
            Member::new(4, &[], Restored::default())
                .unwrap()
                .compacting_every(8)
                .with_incarnation(44),
        );
        net.applied.push(Vec::new());
        net.applied_index.push(0);
        net.disk.push(Restored::default());
        net.down.push(false);
        for _ in 0..40 {
            net.step();
        }
        assert!(
            net.applied[3].is_empty(),
            "not a member yet: it gets nothing"
        );
        assert_eq!(net.members[3].role(), Role::Follower { leader: None });
        change_membership(
            &mut net,
            MembershipChange::Add {
                id: 4,
                addr: "127.0.0.1:2184".into(),
            },
        );
        for n in 30..40u32 {
            net.commit(n.to_be_bytes().to_vec());
        }
        for _ in 0..200 {
            net.step();
        }
        net.assert_consistent();
        assert_eq!(net.applied[3].len(), 40, "the new member has every entry");
        for m in &net.members {
            assert_eq!(m.voters(), vec![1, 2, 3, 4]);
        }
        // A follower is removed: the other three go on without it.
        let leader = net.elect();
        let gone = (0..3).find(|&i| i != leader).unwrap();
        change_membership(
            &mut net,
            MembershipChange::Remove {
                id: gone as u64 + 1,
            },
        );
        for _ in 0..20 {
            net.step();
        }
        net.down[gone] = true;
        for n in 40..50u32 {
            net.commit(n.to_be_bytes().to_vec());
        }
        for _ in 0..100 {
            net.step();
        }
        let mut want: Vec<u64> = (1..=4).filter(|&id| id != gone as u64 + 1).collect();
        want.sort_unstable();
        for (i, m) in net.members.iter().enumerate().filter(|(i, _)| *i != gone) {
            assert_eq!(m.voters(), want, "member {}", i + 1);
            assert_eq!(net.applied[i].len(), 50, "member {}", i + 1);
        }
        net.assert_consistent();
    }

    /// A member added is a learner until it has caught up: added while it is not even
    /// running, with one of the three voters down, it does not make the quorum three of
    /// four (writes would stop); once it runs and has caught up, the leader makes it a
    /// voter. It reads the log from the start (nothing was cut, no snapshot comes), so it
    /// learns the ensemble's first configuration from the change that added it (without
    /// that it took itself for the only voter).
    #[test]
    fn a_member_added_votes_only_once_it_has_caught_up() {
        let mut net = Net::new(0, 21);
        for n in 0..10u32 {
            net.commit(n.to_be_bytes().to_vec());
        }
        net.members.push(
            Member::new(4, &[], Restored::default())
                .unwrap()
                .with_incarnation(4_000_037),
        );
        net.applied.push(Vec::new());
        net.applied_index.push(0);
        net.disk.push(Restored::default());
        net.down.push(true);
        net.reads.push(Vec::new());
        let leader = net.elect();
        let resting = (0..3).find(|&i| i != leader).unwrap();
        net.down[resting] = true;
        change_membership(
            &mut net,
            MembershipChange::Add {
                id: 4,
                addr: "127.0.0.1:2184".into(),
            },
        );
        let leader = net.elect();
        assert_eq!(net.members[leader].voters(), vec![1, 2, 3]);
        assert_eq!(net.members[leader].learners(), vec![4]);
        assert_eq!(net.members[leader].status().members.len(), 4);
        // Two of the three voters still make a quorum.
        for n in 10..20u32 {
            net.commit(n.to_be_bytes().to_vec());
        }
        for _ in 0..50 {
            net.step();
        }
        assert_eq!(net.members[leader].voters(), vec![1, 2, 3], "not caught up");
        // Member 4 starts, catches up and is promoted.
        net.down[3] = false;
        for _ in 0..200 {
            net.step();
            if net.members[leader].voters() == [1, 2, 3, 4] {
                break;
            }
        }
        assert_eq!(net.members[leader].voters(), vec![1, 2, 3, 4]);
        assert!(net.members[leader].learners().is_empty());
        for n in 20..25u32 {
            net.commit(n.to_be_bytes().to_vec());
        }
        for _ in 0..20 {
            net.step();
        }
        assert_eq!(net.applied[3].len(), 25, "the new voter has every entry");
        assert_eq!(net.members[3].voters(), vec![1, 2, 3, 4]);
        net.assert_consistent();
    }

    #[test]
    fn election_timeouts_come_from_the_seed_not_the_thread() {
        let timeout = |seed: u64| {
            let mut member = Member::new(1, &[1, 2, 3], Restored::default())
                .unwrap()
                .with_incarnation(seed);
            // After inputs that make raft-rs draw again (a tick, a new term).
            member.handle_tick();
            let mut vote = Message::default();
            vote.set_msg_type(MessageType::MsgHeartbeat);
            (vote.from, vote.to, vote.term) = (2, 1, 3);
            member.handle_message(vote);
            member.node.raft.randomized_election_timeout()
        };
        let drawn: Vec<usize> = (1..=40).map(timeout).collect();
        for (seed, t) in (1..=40).zip(&drawn) {
            assert!((ELECTION_TICK..2 * ELECTION_TICK).contains(t), "{t}");
            assert_eq!(
                *t,
                timeout(seed),
                "seed {seed}: the same inputs, the same timeout"
            );
        }
        let distinct: std::collections::BTreeSet<usize> = drawn.into_iter().collect();
        assert!(distinct.len() > 5, "members' timeouts differ: {distinct:?}");
    }

    #[test]
    fn a_follower_waits_the_lease_of_the_leader_it_follows_and_only_while_it_leads() {
        let heartbeat = |member: &mut Member, from: u64, term: u64| {
            let mut m = Message::default();
            m.set_msg_type(MessageType::MsgHeartbeat);
            (m.from, m.to, m.term) = (from, 1, term);
            member.handle_message(m);
        };
        let mut member = Member::new(1, &[1, 2, 3], Restored::default()).unwrap();
        heartbeat(&mut member, 2, 3);
        assert_eq!(member.leader(), Some(2));
        let default = member.election_timeout_ticks();
        assert!((ELECTION_TICK..2 * ELECTION_TICK).contains(&default));
        // Another member's lease changes nothing.
        member.handle_leader_lease(3, 2_500, 25);
        assert_eq!(member.leader_lease_ms(), None);
        assert_eq!(member.election_timeout_ticks(), default);
        // The leader's: drawn in [lease, 2 × lease).
        member.handle_leader_lease(2, 2_500, 25);
        assert_eq!(member.leader_lease_ms(), Some(2_500));
        let t = member.election_timeout_ticks();
        assert!((25..50).contains(&t), "{t}");
        member.handle_tick();
        assert!((25..50).contains(&member.election_timeout_ticks()));
        // Bounded by Raft's timing, whatever a heartbeat says.
        member.handle_leader_lease(2, 100_000, 1_000);
        assert!((MAX_LEASE_TICKS..2 * MAX_LEASE_TICKS).contains(&member.election_timeout_ticks()));
        member.handle_leader_lease(2, 100, 1);
        assert!((ELECTION_TICK..2 * ELECTION_TICK).contains(&member.election_timeout_ticks()));
        // A new leader in a new term: its own lease (none yet), not the old one's.
        member.handle_leader_lease(2, 2_500, 25);
        heartbeat(&mut member, 3, 4);
        assert_eq!(member.leader(), Some(3));
        assert_eq!(member.leader_lease_ms(), None);
        assert!((ELECTION_TICK..2 * ELECTION_TICK).contains(&member.election_timeout_ticks()));
        // Its election then waits as long: no election for 25 ticks, then one.
        member.handle_leader_lease(3, 2_500, 25);
        let waits = member.election_timeout_ticks();
        for _ in 0..waits - 1 {
            member.handle_tick();
        }
        assert_eq!(member.leader(), Some(3), "still following");
        member.handle_tick();
        assert_eq!(
            member.leader(),
            None,
            "the lease ran out: it campaigns (pre-vote)"
        );
    }
}
