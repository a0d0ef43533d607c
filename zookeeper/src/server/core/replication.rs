//! The core's side of an ensemble (see [`crate::ensemble`]): the leader proposes each
//! batch instead of writing it to its log directly and answers it once committed; the
//! other members apply committed batches to their tree and log. Only the leader takes
//! writes and sessions (others answer 4.03 `NotLeader` naming the leader) and expires
//! sessions.

use super::{Core, Held, Job, LogJob, LogRecord};
use crate::ensemble::member::{Committed, Role};
use crate::ensemble::messages::{Event, ToDriver};
use crate::ensemble::Proposal;
use crate::tree::{Change, DataTree};
use pehra_shared::api::error_response;
use pehra_shared::coap::Response;
use pehra_shared::driver::Responder;
use pehra_shared::wire::{self, ErrorKind};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;
use tokio::time::Instant;

/// A snapshot to install: its Raft index, the encoded tree, and whom to tell.
type Install = (
    u64,
    Vec<u8>,
    tokio::sync::oneshot::Sender<Result<(), String>>,
);

/// The core's state of replication.
pub(crate) struct Replication {
    /// This member's id.
    id: u64,
    /// Proposals to the Raft driver.
    proposals: UnboundedSender<ToDriver>,
    /// `sync`s on a follower waiting for their read point, by id.
    reads: std::collections::BTreeMap<u64, Responder>,
    next_read: u64,
    /// `sync`s whose read point is reached: answered once the entries before are applied.
    synced: Vec<Responder>,
    /// The role the driver last reported.
    role: Role,
    /// The leader's address, if known (named in `NotLeader` answers).
    leader: Option<SocketAddr>,
    /// The next proposal's counter.
    next_seq: u64,
    /// The proposal in flight (applied to the tree, not yet committed).
    pending: Option<u64>,
    /// Committed entries not yet applied.
    committed: VecDeque<Committed>,
    /// The Raft index of the last committed entry taken from `committed` (applied, or
    /// skipped), and the one last reported durable to the driver.
    taken: u64,
    reported: u64,
    /// Whether this member leads (for what runs on the leader only).
    leading: tokio::sync::watch::Sender<bool>,
    /// Raft wants a snapshot of the tree (sent once the tree is at a committed index).
    snapshot_wanted: bool,
    /// A snapshot from the leader to install once nothing is being written: its Raft
    /// index, the encoded tree, and whom to tell.
    installing: Option<Install>,
}

impl Replication {
    /// The core's replication for member `id`, proposing through `proposals`.
    /// `leading` is told whenever this member becomes or stops being the leader.
    pub(crate) fn new(
        id: u64,
        proposals: UnboundedSender<ToDriver>,
        leading: tokio::sync::watch::Sender<bool>,
    ) -> Replication {
        Replication {
            id,
            proposals,
            reads: Default::default(),
            next_read: 1,
            synced: Vec::new(),
            role: Role::Follower { leader: None },
            leader: None,
            // Distinct from every earlier run's counters: an entry this member proposed
            // before a restart is never taken for one it proposes now.
            next_seq: pehra_shared::driver::clock::unix_ms()
                .saturating_mul(1000)
                .max(1),
            pending: None,
            committed: VecDeque::new(),
            taken: 0,
            reported: 0,
            leading,
            snapshot_wanted: false,
            installing: None,
        }
    }

    fn is_leader(&self) -> bool {
        matches!(self.role, Role::Leader { .. })
    }
}

impl Core {
    /// Whether this core may take writes and keep leases: alone, or the ensemble leader.
    pub(super) fn leads(&self) -> bool {
        self.replication.as_ref().is_none_or(Replication::is_leader)
    }

    /// An event of the Raft driver.
    pub(super) fn on_ensemble(&mut self, event: Event) {
        let Some(rep) = self.replication.as_mut() else {
            return;
        };
        match event {
            Event::Committed(entries) => rep.committed.extend(entries),
            Event::Role { role, leader } => {
                let was_leader = rep.is_leader();
                rep.role = role;
                rep.leader = leader;
                rep.leading.send_replace(rep.is_leader());
                match (was_leader, rep.is_leader()) {
                    (false, true) => {
                        // Every session gets a fresh lease from the new leader.
                        let now = Instant::now();
                        for (session, state) in self.tree.sessions() {
                            self.leases.renew(
                                *session,
                                now,
                                Duration::from_millis(u64::from(state.timeout_ms)),
                            );
                        }
                        self.closing.clear();
                        tracing::info!(
                            zxid = self.tree.last_zxid(),
                            "ensemble leader: taking writes"
                        );
                    }
                    (true, false) => {
                        self.leases = Default::default();
                        tracing::info!(?leader, "no longer the ensemble leader");
                    }
                    _ => {}
                }
            }
            Event::ReadReady(id, found) => {
                let Some(responder) = rep.reads.remove(&id) else {
                    return;
                };
                if found {
                    // Every entry committed at the read point is queued ahead: the sync is
                    // answered once they are applied (see `apply_committed`).
                    rep.synced.push(responder);
                } else {
                    responder.respond(self.not_leader());
                }
            }
            Event::SnapshotWanted => rep.snapshot_wanted = true,
            Event::InstallSnapshot { index, tree, done } => {
                rep.installing = Some((index, tree, done));
            }
            Event::Dropped => {
                if rep.pending.is_some() {
                    // Raft never took the entry (this member stopped leading, or hands
                    // its office over): not applied anywhere, so `not_leader`, which a
                    // client with the member list sends on to the next member at once.
                    self.roll_back(
                        ErrorKind::NotLeader,
                        "not applied: this member no longer takes writes (the proposal was \
                         dropped: another member leads or takes over); retry on the leader",
                    );
                }
            }
        }
    }

    /// The refusal of a job only the leader takes, if this member is not it; a `sync` in
    /// an ensemble goes through Raft's ReadIndex (answered in `apply_committed`).
    pub(super) fn refuse_unless_leader(&mut self, job: Job) -> Option<Job> {
        let in_ensemble = self.replication.is_some();
        if self.leads() && !(in_ensemble && matches!(job, Job::Sync { .. })) {
            return Some(job);
        }
        let refusal = || self.not_leader();
        match job {
            Job::Write { responder, .. }
            | Job::OpenSession { responder, .. }
            | Job::Heartbeat { responder, .. }
            | Job::Suspect { responder, .. }
            | Job::Admin { responder, .. } => {
                responder.respond(refusal());
                None
            }
            Job::Expire { .. } => None,
            Job::Sync { responder } => {
                // Read-your-writes on any member, linearizable on the leader too (a
                // deposed leader that does not know it yet cannot confirm the read point):
                // Raft's ReadIndex.
                let rep = self.replication.as_mut().expect("in an ensemble");
                let id = rep.next_read;
                rep.next_read += 1;
                rep.reads.insert(id, responder);
                let _ = rep.proposals.send(ToDriver::ReadIndex(id));
                None
            }
            job => Some(job),
        }
    }

    fn not_leader(&self) -> Response {
        let leader = self.replication.as_ref().and_then(|r| r.leader);
        let message = match leader {
            Some(addr) => {
                format!("this zookeeper is not the ensemble leader; the leader is {addr}")
            }
            None => "this zookeeper is not the ensemble leader; no leader is known yet".into(),
        };
        error_response(ErrorKind::NotLeader, &message)
    }

    /// Proposes the batch's records (instead of logging them) if in an ensemble; `false`
    /// if not (the caller logs them itself).
    pub(super) fn propose(&mut self) -> bool {
        if self.replication.is_none() {
            return false;
        }
        let records = std::mem::take(&mut self.records);
        let rep = self.replication.as_mut().expect("checked");
        let seq = rep.next_seq;
        rep.next_seq += 1;
        let proposal = Proposal {
            from: rep.id,
            seq,
            records: records
                .into_iter()
                .map(|(zxid, bytes)| (zxid, serde_bytes::ByteBuf::from(bytes)))
                .collect(),
        };
        let data = wire::encode(&proposal).expect("proposals encode");
        rep.pending = Some(seq);
        if rep.proposals.send(ToDriver::Propose(data)).is_err() {
            tracing::error!("the raft driver is gone");
        }
        true
    }

    /// Applies committed entries while the log is free: the leader's own proposal goes to
    /// its log (its answers wait for that); another's is applied to the tree first.
    pub(super) fn apply_committed(&mut self) {
        loop {
            let Some(rep) = self.replication.as_mut() else {
                return;
            };
            if self.in_flight.is_some() && rep.pending.is_none() {
                // The log is writing the previous entry.
                return;
            }
            let Some(entry) = rep.committed.pop_front() else {
                if self.in_flight.is_none() {
                    let zxid = self.tree.last_zxid();
                    for responder in std::mem::take(&mut rep.synced) {
                        responder.respond(pehra_shared::api::cbor_response(
                            pehra_shared::coap::Code::CONTENT,
                            &wire::SyncResponse { zxid },
                        ));
                    }
                }
                return;
            };
            rep.taken = entry.index;
            if entry.data.is_empty() {
                // A new leader's no-op.
                if rep.pending.is_some() {
                    self.roll_back(
                        ErrorKind::Busy,
                        "not committed, maybe not applied: leadership changed before the \
                         write was committed; retry",
                    );
                }
                continue;
            }
            let proposal: Proposal = match wire::decode(&entry.data) {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(index = entry.index, error = %e, "undecodable raft entry skipped");
                    continue;
                }
            };
            let ours = proposal.from == rep.id && rep.pending == Some(proposal.seq);
            if ours {
                rep.pending = None;
                let records = proposal
                    .records
                    .into_iter()
                    .map(|(zxid, bytes)| (zxid, bytes.into_vec()))
                    .collect();
                if self.log_tx.send(LogJob::Append(records)).is_err() {
                    tracing::error!("the log thread is gone");
                }
                // `in_flight` holds the answers: they go once the log is durable.
                return;
            }
            if rep.pending.is_some() {
                self.roll_back(
                    ErrorKind::Busy,
                    "not committed, maybe not applied: another leader's write was committed \
                     first; retry",
                );
            }
            self.apply_proposal(proposal);
        }
    }

    /// Tells the driver how far committed entries are durable in this member's own log,
    /// when nothing is being written (every entry taken is then on disk): the Raft log
    /// may be cut up to there.
    pub(super) fn report_durable(&mut self) {
        let Some(rep) = self.replication.as_mut() else {
            return;
        };
        if self.in_flight.is_some() || rep.taken <= rep.reported {
            return;
        }
        rep.reported = rep.taken;
        let _ = rep.proposals.send(ToDriver::Durable(rep.taken));
    }

    /// Has a copy of the tree encoded (on a blocking thread) and sent to the driver as a
    /// snapshot, if Raft wants one and the tree is at a committed index: nothing applied that is not committed (no batch open, none
    /// proposed or being written) and every committed entry handed over taken.
    pub(super) fn offer_snapshot(&mut self) {
        let Some(rep) = self.replication.as_mut() else {
            return;
        };
        if !rep.snapshot_wanted
            || self.in_flight.is_some()
            || !self.records.is_empty()
            || !self.held.is_empty()
            || rep.pending.is_some()
            || !rep.committed.is_empty()
        {
            return;
        }
        rep.snapshot_wanted = false;
        // Encoded off the core (a large tree takes a while), from a copy taken now, at
        // exactly the committed writes: writes go on meanwhile. If the log is cut past
        // `index` by the time it is offered, the driver asks for a new one.
        let tree = Box::new(self.tree.clone());
        let (index, zxid) = (rep.taken, self.tree.last_zxid());
        let proposals = rep.proposals.clone();
        tokio::spawn(async move {
            match pehra_shared::driver::blocking::run(move || wire::encode(&*tree)).await {
                Ok(Ok(tree)) => {
                    tracing::info!(
                        index,
                        zxid,
                        bytes = tree.len(),
                        "ensemble: tree encoded for a snapshot"
                    );
                    let _ = proposals.send(ToDriver::Snapshot { index, tree });
                }
                Ok(Err(e)) => tracing::error!(error = %e, "the tree does not encode: no snapshot"),
                Err(e) => tracing::error!(error = %e, "encoding the tree for a snapshot failed"),
            }
        });
    }

    /// Installs the snapshot the leader sent, once nothing is being written: the tree
    /// becomes the leader's at the snapshot's index (unless this one is already as far),
    /// durably (the log starts over from it), and every observer is told.
    pub(super) fn install_snapshot(&mut self) {
        if self.in_flight.is_some() {
            return;
        }
        let Some((index, bytes, done)) =
            self.replication.as_mut().and_then(|r| r.installing.take())
        else {
            return;
        };
        let tree: DataTree = match wire::decode(&bytes) {
            Ok(tree) => tree,
            Err(e) => {
                let _ = done.send(Err(format!("the snapshot's tree does not decode: {e}")));
                return;
            }
        };
        let zxid = tree.last_zxid();
        let rep = self.replication.as_mut().expect("checked");
        rep.taken = rep.taken.max(index);
        if zxid <= self.tree.last_zxid() {
            // This tree has every write the snapshot holds (its Raft log was lost, not
            // its tree): nothing to install; entries after the snapshot are skipped up
            // to its zxid.
            tracing::info!(
                index,
                zxid,
                have = self.tree.last_zxid(),
                "ensemble: snapshot not needed, the tree is as far"
            );
            let _ = done.send(Ok(()));
            return;
        }
        let (tx, rx) = std::sync::mpsc::channel();
        if self.log_tx.send(LogJob::Restart(zxid, bytes, tx)).is_err() {
            let _ = done.send(Err("the log thread is gone".into()));
            return;
        }
        match rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = done.send(Err(e.to_string()));
                return;
            }
            Err(_) => {
                let _ = done.send(Err("the log thread is gone".into()));
                return;
            }
        }
        tracing::info!(
            index,
            zxid,
            was = self.tree.last_zxid(),
            "ensemble: the tree is the leader's snapshot"
        );
        self.tree = tree;
        self.log_bytes = 0;
        let _ = done.send(Ok(()));
        // Whatever an observer saw may have changed: each is told the state now.
        let changes = self
            .watched
            .iter()
            .filter_map(|key| crate::uri::znode_of(key))
            .map(|(path, children)| {
                if children {
                    Change::ChildrenChanged(path)
                } else {
                    Change::DataChanged(path)
                }
            })
            .collect();
        self.notify(changes);
    }

    /// Applies another member's batch to the tree and hands it to the log.
    fn apply_proposal(&mut self, proposal: Proposal) {
        let mut changes: Vec<Change> = Vec::new();
        let mut records = Vec::new();
        for (zxid, bytes) in proposal.records {
            let last = self.tree.last_zxid();
            if zxid <= last {
                continue; // already applied (replayed after a restart)
            }
            if zxid != last + 1 {
                tracing::error!(zxid, last, "a gap in the replicated log: entry skipped");
                continue;
            }
            let record: LogRecord = match wire::decode(&bytes) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(zxid, error = %e, "undecodable replicated record");
                    continue;
                }
            };
            match self
                .tree
                .apply_request(zxid, record.time_ms, &record.op, record.request)
            {
                Ok((_, c)) => changes.extend(c),
                // A refused op is logged as such on the leader too: the tree stays equal.
                Err(e) => tracing::debug!(zxid, error = %e, "replicated op refused by the tree"),
            }
            if let crate::tree::Op::CloseSession { session } = record.op {
                self.leases.remove(session);
            }
            self.log_bytes += bytes.len() as u64;
            records.push((zxid, bytes.into_vec()));
        }
        if records.is_empty() {
            return;
        }
        if self.log_tx.send(LogJob::Append(records)).is_err() {
            tracing::error!("the log thread is gone");
        }
        self.in_flight = Some((Vec::new(), changes));
    }

    /// Whether our proposal is in flight, waiting for Raft to commit it.
    pub(super) fn awaiting_commit(&self) -> bool {
        self.replication
            .as_ref()
            .is_some_and(|r| r.pending.is_some())
    }

    /// Stopping before our proposal committed (no quorum, say): its writers are told it
    /// may or may not be applied (another member may still commit it); nothing reaches
    /// this member's log, which the next start rebuilds the tree from.
    pub(super) fn abandon_proposal(&mut self) {
        if let Some(rep) = self.replication.as_mut() {
            rep.pending = None;
        }
        tracing::warn!("stopping with a write batch not committed yet: answered maybe-applied");
        if let Some((held, _)) = self.in_flight.take() {
            for Held { responder, .. } in held {
                if let Some(r) = responder {
                    r.respond(error_response(
                        ErrorKind::Busy,
                        "the zookeeper member stopped before the write was committed: \
                         maybe applied; read before you retry",
                    ));
                }
            }
        }
        // What waited behind the batch was not applied: a plain refusal.
        let stopping = || {
            error_response(
                ErrorKind::Busy,
                "the zookeeper member is stopping: not applied; retry (another member)",
            )
        };
        for job in std::mem::take(&mut self.queue) {
            match job {
                Job::GetData { responder, .. }
                | Job::GetChildren { responder, .. }
                | Job::Sync { responder }
                | Job::Incarnation { responder }
                | Job::OpenSession { responder, .. }
                | Job::Heartbeat { responder, .. }
                | Job::Suspect { responder, .. }
                | Job::Write { responder, .. }
                | Job::Admin { responder, .. } => responder.respond(stopping()),
                Job::Expire { .. } | Job::Ensemble(_) | Job::Shutdown => {}
            }
        }
    }

    /// Our proposal will not commit as applied: answer it as failed and rebuild the tree
    /// from the log (which holds exactly the committed writes).
    /// Rolls the tree back to the log after the batch in flight did not commit, answering
    /// its writers `kind` with `why`.
    fn roll_back(&mut self, kind: ErrorKind, why: &str) {
        if let Some(rep) = self.replication.as_mut() {
            rep.pending = None;
        }
        tracing::warn!(why, "write batch not committed: rolling the tree back");
        if let Some((held, _)) = self.in_flight.take() {
            for Held { responder, .. } in held {
                if let Some(r) = responder {
                    r.respond(error_response(kind, why));
                }
            }
        }
        let (tx, rx) = std::sync::mpsc::channel();
        if self.log_tx.send(LogJob::Reload(tx)).is_err() {
            return;
        }
        match rx.recv() {
            Ok(Ok(tree)) => self.tree = tree,
            Ok(Err(e)) => tracing::error!(error = %e, "cannot reload the tree from the log"),
            Err(_) => tracing::error!("the log thread is gone"),
        }
    }
}
