//! The data tree: znodes, their stats, sessions and their ephemerals.
//!
//! Pure and deterministic: [`DataTree::apply`] takes an [`Op`] with its zxid and time and
//! either changes the tree and says what changed, or changes nothing and says why. The
//! server logs every applied op; replaying the log on a snapshot rebuilds the same tree.

use crate::path;
use pehra_shared::wire::{ErrorKind, Stat};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use thiserror::Error;

/// The largest znode data accepted, in bytes (ZooKeeper's default `jute.maxbuffer`).
pub const MAX_DATA_LEN: usize = 1024 * 1024;

/// A change to the tree, as logged and replayed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// A session opens.
    CreateSession {
        /// Its id.
        session: u64,
        /// Its negotiated timeout.
        timeout_ms: u32,
        /// The identity that opened it (OSCORE), the only one that may heartbeat, close
        /// or speak for it; `None` on a zookeeper without security.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        owner: Option<String>,
    },
    /// A session closes or expires: its ephemeral znodes go.
    CloseSession {
        /// Its id.
        session: u64,
    },
    /// Create a znode.
    Create {
        /// The path (for a sequential node, the prefix the counter is appended to).
        path: String,
        /// Its data.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        /// Owned by a session and deleted with it.
        ephemeral: bool,
        /// Append the parent's 10-digit counter to the name.
        sequential: bool,
        /// The owning session (required for ephemerals).
        session: Option<u64>,
    },
    /// Delete a childless znode, if at `version` (any version if `None`).
    Delete {
        /// The path.
        path: String,
        /// The expected version.
        version: Option<u32>,
    },
    /// Replace a znode's data, if at `version`.
    SetData {
        /// The path.
        path: String,
        /// The new data.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        /// The expected version.
        version: Option<u32>,
    },
    /// Inside a multi only: fail unless the znode exists (at `version`).
    Check {
        /// The path.
        path: String,
        /// The expected version.
        version: Option<u32>,
    },
    /// All of these or none.
    Multi {
        /// The operations, applied in order.
        ops: Vec<Op>,
    },
}

impl Op {
    /// Whether applying it needs a session to be alive.
    pub fn session(&self) -> Option<u64> {
        match self {
            Op::Create { session, .. } => *session,
            _ => None,
        }
    }
}

/// What an applied op produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A session was opened.
    SessionCreated,
    /// A session was closed; these ephemerals went with it.
    SessionClosed {
        /// The deleted paths.
        deleted: Vec<String>,
    },
    /// A znode was created at this path (sequential suffix included).
    Created {
        /// The path.
        path: String,
        /// Its stat.
        stat: Stat,
    },
    /// A znode was deleted.
    Deleted,
    /// A znode's data was replaced.
    DataSet {
        /// Its new stat.
        stat: Stat,
    },
    /// A check passed.
    Checked,
    /// A multi succeeded: one outcome per op.
    Multi(Vec<Outcome>),
}

/// What changed, for watches.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    /// A znode appeared.
    Created(String),
    /// A znode's data changed.
    DataChanged(String),
    /// A znode went away.
    Deleted(String),
    /// A znode gained or lost a child.
    ChildrenChanged(String),
}

/// Why an op was refused. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TreeError {
    /// The path is not valid.
    #[error(transparent)]
    BadPath(#[from] path::PathError),
    /// No znode at the path (or its parent).
    #[error("no node: {0}")]
    NoNode(String),
    /// A znode is already there.
    #[error("node exists: {0}")]
    NodeExists(String),
    /// The znode is at another version.
    #[error("version mismatch: {path} is at {actual}")]
    BadVersion {
        /// The path.
        path: String,
        /// Its current version.
        actual: u32,
    },
    /// Deleting a znode that has children.
    #[error("node has children: {0}")]
    NotEmpty(String),
    /// Ephemeral znodes cannot have children.
    #[error("ephemeral nodes cannot have children: {0}")]
    EphemeralParent(String),
    /// The session does not exist (expired or never opened).
    #[error("session {0:#x} has expired or does not exist")]
    SessionExpired(u64),
    /// An ephemeral znode without a session.
    #[error("an ephemeral node needs a session")]
    NoSession,
    /// Data over [`MAX_DATA_LEN`].
    #[error("data of {0} bytes exceeds the 1 MiB limit")]
    TooLarge(usize),
    /// The root cannot be created, deleted or changed this way.
    #[error("the root node cannot be {0}")]
    Root(&'static str),
    /// `check` outside a multi, or a multi inside a multi.
    #[error("{0}")]
    Invalid(&'static str),
    /// One op of a multi failed (index from 0); none was applied.
    #[error("multi op {index} failed: {source}")]
    Multi {
        /// Which op.
        index: usize,
        /// Why.
        source: Box<TreeError>,
    },
}

impl TreeError {
    /// The wire error kind (and so the CoAP code) for this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            TreeError::BadPath(_) | TreeError::Invalid(_) | TreeError::Root(_) => {
                ErrorKind::Malformed
            }
            TreeError::NoSession => ErrorKind::Malformed,
            TreeError::NoNode(_) => ErrorKind::NotFound,
            TreeError::NodeExists(_) => ErrorKind::NodeExists,
            TreeError::BadVersion { .. } => ErrorKind::VersionMismatch,
            TreeError::NotEmpty(_) | TreeError::EphemeralParent(_) => ErrorKind::NotEmpty,
            TreeError::SessionExpired(_) => ErrorKind::SessionExpired,
            TreeError::TooLarge(_) => ErrorKind::TooLarge,
            TreeError::Multi { source, .. } => source.kind(),
        }
    }
}

/// One znode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    #[serde(with = "serde_bytes")]
    data: Vec<u8>,
    stat: Stat,
    children: BTreeSet<String>,
}

/// One open session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionState {
    /// Its negotiated timeout.
    pub timeout_ms: u32,
    /// Paths of its ephemeral znodes.
    pub ephemerals: BTreeSet<String>,
    /// The identity that opened it (see [`Op::CreateSession`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The last numbered request of the session that changed the tree, with what it
    /// produced: a retry of it (after the answer was lost and the zookeeper restarted,
    /// or went to another member) is answered from here instead of applied again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_request: Option<LastRequest>,
}

/// A session's last applied numbered request (at-most-once writes: the Raft thesis
/// §6.3, ZooKeeper's per-session xid). A client sends one request at a time, so the last
/// one is all a retry can be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastRequest {
    /// Its number (increasing within the session).
    pub number: u64,
    /// What it produced.
    pub outcome: Outcome,
}

/// A write's request number within its session ([`DataTree::apply_request`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestId {
    /// The session.
    pub session: u64,
    /// The number, increasing within the session.
    pub number: u64,
}

/// What the tree knows of a numbered request before it is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen<'a> {
    /// Not applied yet: apply it.
    New,
    /// Applied already (a retry): answer with what it produced.
    Applied(&'a Outcome),
    /// Older than the session's last applied request: a stale or forged retry, refused.
    Stale {
        /// The session's last applied request number.
        last: u64,
    },
}

/// The whole coordination state: what a snapshot holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataTree {
    nodes: BTreeMap<String, Node>,
    sessions: BTreeMap<u64, SessionState>,
    last_zxid: u64,
}

impl Default for DataTree {
    fn default() -> Self {
        let mut nodes = BTreeMap::new();
        nodes.insert(
            "/".to_string(),
            Node {
                data: Vec::new(),
                stat: empty_stat(0, 0, None, 0),
                children: BTreeSet::new(),
            },
        );
        DataTree {
            nodes,
            sessions: BTreeMap::new(),
            last_zxid: 0,
        }
    }
}

fn empty_stat(zxid: u64, time_ms: u64, owner: Option<u64>, len: usize) -> Stat {
    Stat {
        czxid: zxid,
        mzxid: zxid,
        pzxid: zxid,
        ctime_ms: time_ms,
        mtime_ms: time_ms,
        version: 0,
        cversion: 0,
        ephemeral_owner: owner,
        data_length: len as u32,
        num_children: 0,
    }
}

/// Saved prior states, to undo a failed multi. Only a multi keeps one: a single op
/// checks everything before it changes anything, so it never needs undoing (and copying a
/// parent with many children for every create would cost more than the create).
#[derive(Default)]
struct Journal {
    enabled: bool,
    nodes: BTreeMap<String, Option<Node>>,
    sessions: BTreeMap<u64, Option<SessionState>>,
}

impl DataTree {
    /// The zxid of the last applied op.
    pub fn last_zxid(&self) -> u64 {
        self.last_zxid
    }

    /// A znode's data and stat.
    pub fn get(&self, path: &str) -> Option<(&[u8], &Stat)> {
        self.nodes.get(path).map(|n| (n.data.as_slice(), &n.stat))
    }

    /// A znode's children (names, sorted) and stat.
    pub fn children(&self, path: &str) -> Option<(Vec<String>, &Stat)> {
        self.nodes
            .get(path)
            .map(|n| (n.children.iter().cloned().collect(), &n.stat))
    }

    /// The open sessions.
    pub fn sessions(&self) -> &BTreeMap<u64, SessionState> {
        &self.sessions
    }

    /// How many znodes there are (the root included).
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Takes zxid `zxid` without a change: a placeholder for a zxid whose record an
    /// operator cut (`--recover-truncate-wal`), so that zxids never go back.
    pub fn skip_zxid(&mut self, zxid: u64) {
        self.last_zxid = self.last_zxid.max(zxid);
    }

    /// Whether the numbered request `id` was applied already (see [`LastRequest`]).
    pub fn seen(&self, id: RequestId) -> Seen<'_> {
        let Some(last) = self
            .sessions
            .get(&id.session)
            .and_then(|s| s.last_request.as_ref())
        else {
            return Seen::New;
        };
        match id.number.cmp(&last.number) {
            std::cmp::Ordering::Greater => Seen::New,
            std::cmp::Ordering::Equal => Seen::Applied(&last.outcome),
            std::cmp::Ordering::Less => Seen::Stale { last: last.number },
        }
    }

    /// [`DataTree::apply`], remembering the outcome as the last request of its session
    /// (if the session is open and `op` changes znodes; a session's open or close is not
    /// numbered). The log records `request` with the op, so a replay remembers it too.
    pub fn apply_request(
        &mut self,
        zxid: u64,
        time_ms: u64,
        op: &Op,
        request: Option<RequestId>,
    ) -> Result<(Outcome, Vec<Change>), TreeError> {
        let (outcome, changes) = self.apply(zxid, time_ms, op)?;
        let numbered = !matches!(op, Op::CreateSession { .. } | Op::CloseSession { .. });
        if let Some(id) = request.filter(|_| numbered) {
            if let Some(state) = self.sessions.get_mut(&id.session) {
                state.last_request = Some(LastRequest {
                    number: id.number,
                    outcome: outcome.clone(),
                });
            }
        }
        Ok((outcome, changes))
    }

    /// Applies `op` as transaction `zxid` at `time_ms`. On error nothing changed (a
    /// failed multi is rolled back whole) and `last_zxid` stays.
    pub fn apply(
        &mut self,
        zxid: u64,
        time_ms: u64,
        op: &Op,
    ) -> Result<(Outcome, Vec<Change>), TreeError> {
        let mut changes = Vec::new();
        let mut journal = Journal {
            enabled: matches!(op, Op::Multi { .. }),
            ..Journal::default()
        };
        let result = match op {
            Op::Multi { ops } => self.apply_multi(zxid, time_ms, ops, &mut journal, &mut changes),
            Op::Check { .. } => Err(TreeError::Invalid("check is only allowed inside a multi")),
            op => self.apply_one(zxid, time_ms, op, &mut journal, &mut changes),
        };
        match result {
            Ok(outcome) => {
                self.last_zxid = zxid;
                changes.sort();
                changes.dedup();
                Ok((outcome, changes))
            }
            Err(e) => {
                self.rollback(journal);
                Err(e)
            }
        }
    }

    fn apply_multi(
        &mut self,
        zxid: u64,
        time_ms: u64,
        ops: &[Op],
        journal: &mut Journal,
        changes: &mut Vec<Change>,
    ) -> Result<Outcome, TreeError> {
        let mut outcomes = Vec::with_capacity(ops.len());
        for (index, op) in ops.iter().enumerate() {
            let result = match op {
                Op::Multi { .. } | Op::CreateSession { .. } | Op::CloseSession { .. } => Err(
                    TreeError::Invalid("a multi may hold only create, delete, set_data and check"),
                ),
                op => self.apply_one(zxid, time_ms, op, journal, changes),
            };
            match result {
                Ok(o) => outcomes.push(o),
                Err(source) => {
                    return Err(TreeError::Multi {
                        index,
                        source: Box::new(source),
                    })
                }
            }
        }
        Ok(Outcome::Multi(outcomes))
    }

    fn apply_one(
        &mut self,
        zxid: u64,
        time_ms: u64,
        op: &Op,
        journal: &mut Journal,
        changes: &mut Vec<Change>,
    ) -> Result<Outcome, TreeError> {
        match op {
            Op::CreateSession {
                session,
                timeout_ms,
                owner,
            } => {
                self.save_session(journal, *session);
                self.sessions.insert(
                    *session,
                    SessionState {
                        timeout_ms: *timeout_ms,
                        ephemerals: BTreeSet::new(),
                        owner: owner.clone(),
                        last_request: None,
                    },
                );
                Ok(Outcome::SessionCreated)
            }
            Op::CloseSession { session } => {
                let Some(state) = self.sessions.get(session).cloned() else {
                    return Err(TreeError::SessionExpired(*session));
                };
                self.save_session(journal, *session);
                let mut deleted = Vec::new();
                for path in state.ephemerals.iter().rev() {
                    self.delete_node(zxid, path, journal, changes);
                    deleted.push(path.clone());
                }
                self.sessions.remove(session);
                Ok(Outcome::SessionClosed { deleted })
            }
            Op::Create {
                path,
                data,
                ephemeral,
                sequential,
                session,
            } => self.create(
                zxid,
                time_ms,
                path,
                data,
                *ephemeral,
                *sequential,
                *session,
                journal,
                changes,
            ),
            Op::Delete { path, version } => {
                path::validate(path)?;
                if path == "/" {
                    return Err(TreeError::Root("deleted"));
                }
                let node = self
                    .nodes
                    .get(path)
                    .ok_or_else(|| TreeError::NoNode(path.clone()))?;
                check_version(path, &node.stat, *version)?;
                if !node.children.is_empty() {
                    return Err(TreeError::NotEmpty(path.clone()));
                }
                self.delete_node(zxid, path, journal, changes);
                Ok(Outcome::Deleted)
            }
            Op::SetData {
                path,
                data,
                version,
            } => {
                path::validate(path)?;
                if data.len() > MAX_DATA_LEN {
                    return Err(TreeError::TooLarge(data.len()));
                }
                let node = self
                    .nodes
                    .get(path)
                    .ok_or_else(|| TreeError::NoNode(path.clone()))?;
                check_version(path, &node.stat, *version)?;
                self.save_node(journal, path);
                let node = self.nodes.get_mut(path).expect("checked");
                node.data = data.clone();
                node.stat.version = node.stat.version.wrapping_add(1);
                node.stat.mzxid = zxid;
                node.stat.mtime_ms = time_ms;
                node.stat.data_length = data.len() as u32;
                changes.push(Change::DataChanged(path.clone()));
                Ok(Outcome::DataSet { stat: node.stat })
            }
            Op::Check { path, version } => {
                path::validate(path)?;
                let node = self
                    .nodes
                    .get(path)
                    .ok_or_else(|| TreeError::NoNode(path.clone()))?;
                check_version(path, &node.stat, *version)?;
                Ok(Outcome::Checked)
            }
            Op::Multi { .. } => Err(TreeError::Invalid("a multi cannot hold a multi")),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn create(
        &mut self,
        zxid: u64,
        time_ms: u64,
        path: &str,
        data: &[u8],
        ephemeral: bool,
        sequential: bool,
        session: Option<u64>,
        journal: &mut Journal,
        changes: &mut Vec<Change>,
    ) -> Result<Outcome, TreeError> {
        path::validate(path)?;
        if path == "/" {
            return Err(TreeError::Root("created"));
        }
        if data.len() > MAX_DATA_LEN {
            return Err(TreeError::TooLarge(data.len()));
        }
        let owner = if ephemeral {
            let session = session.ok_or(TreeError::NoSession)?;
            if !self.sessions.contains_key(&session) {
                return Err(TreeError::SessionExpired(session));
            }
            Some(session)
        } else {
            None
        };
        let parent_path = path::parent(path).to_string();
        let parent = self
            .nodes
            .get(&parent_path)
            .ok_or_else(|| TreeError::NoNode(parent_path.clone()))?;
        if parent.stat.ephemeral_owner.is_some() {
            return Err(TreeError::EphemeralParent(parent_path));
        }
        let path = if sequential {
            format!("{path}{:010}", parent.stat.cversion)
        } else {
            path.to_string()
        };
        if self.nodes.contains_key(&path) {
            return Err(TreeError::NodeExists(path));
        }
        self.save_node(journal, &parent_path);
        self.save_node(journal, &path);
        let parent = self.nodes.get_mut(&parent_path).expect("checked");
        parent.children.insert(path::name(&path).to_string());
        parent.stat.cversion = parent.stat.cversion.wrapping_add(1);
        parent.stat.pzxid = zxid;
        parent.stat.num_children = parent.children.len() as u32;
        let stat = empty_stat(zxid, time_ms, owner, data.len());
        self.nodes.insert(
            path.clone(),
            Node {
                data: data.to_vec(),
                stat,
                children: BTreeSet::new(),
            },
        );
        if let Some(session) = owner {
            self.save_session(journal, session);
            if let Some(s) = self.sessions.get_mut(&session) {
                s.ephemerals.insert(path.clone());
            }
        }
        changes.push(Change::Created(path.clone()));
        changes.push(Change::ChildrenChanged(parent_path));
        Ok(Outcome::Created { path, stat })
    }

    /// Removes a childless znode that exists.
    fn delete_node(
        &mut self,
        zxid: u64,
        path: &str,
        journal: &mut Journal,
        changes: &mut Vec<Change>,
    ) {
        let parent_path = path::parent(path).to_string();
        self.save_node(journal, path);
        self.save_node(journal, &parent_path);
        let Some(node) = self.nodes.remove(path) else {
            return;
        };
        if let Some(owner) = node.stat.ephemeral_owner {
            self.save_session(journal, owner);
            if let Some(s) = self.sessions.get_mut(&owner) {
                s.ephemerals.remove(path);
            }
        }
        if let Some(parent) = self.nodes.get_mut(&parent_path) {
            parent.children.remove(path::name(path));
            parent.stat.cversion = parent.stat.cversion.wrapping_add(1);
            parent.stat.pzxid = zxid;
            parent.stat.num_children = parent.children.len() as u32;
        }
        changes.push(Change::Deleted(path.to_string()));
        changes.push(Change::ChildrenChanged(parent_path));
    }

    fn save_node(&self, journal: &mut Journal, path: &str) {
        if journal.enabled && !journal.nodes.contains_key(path) {
            journal
                .nodes
                .insert(path.to_string(), self.nodes.get(path).cloned());
        }
    }

    fn save_session(&self, journal: &mut Journal, session: u64) {
        if !journal.enabled {
            return;
        }
        journal
            .sessions
            .entry(session)
            .or_insert_with(|| self.sessions.get(&session).cloned());
    }

    fn rollback(&mut self, journal: Journal) {
        for (path, node) in journal.nodes {
            match node {
                Some(n) => self.nodes.insert(path, n),
                None => self.nodes.remove(&path),
            };
        }
        for (session, state) in journal.sessions {
            match state {
                Some(s) => self.sessions.insert(session, s),
                None => self.sessions.remove(&session),
            };
        }
    }
}

fn check_version(path: &str, stat: &Stat, expected: Option<u32>) -> Result<(), TreeError> {
    match expected {
        Some(v) if v != stat.version => Err(TreeError::BadVersion {
            path: path.to_string(),
            actual: stat.version,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;
