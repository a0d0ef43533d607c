//! The messages between the zookeeper's core and the ensemble driver: what the driver
//! tells the core (committed entries, role changes) and what the core asks of it
//! (proposals, read points). Their own module, so that the core and the driver both
//! depend on it and not on each other.

use super::member::{Committed, Role};
use std::net::SocketAddr;

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
    /// The read point asked for ([`ToDriver::ReadIndex`]) is reached (`false`: no leader
    /// is known to ask).
    ReadReady(u64, bool),
    /// Raft must send a snapshot: encode the tree at a committed index, when it is at
    /// one, and send it back ([`ToDriver::Snapshot`]).
    SnapshotWanted,
    /// A snapshot from the leader: make `tree` (an encoded tree at Raft index `index`)
    /// this member's tree, durably, then answer `done` (with why not, if it failed).
    InstallSnapshot {
        /// The Raft index the tree is at.
        index: u64,
        /// The encoded tree.
        tree: Vec<u8>,
        /// Answered once the tree is durable (or with why it could not be).
        done: tokio::sync::oneshot::Sender<Result<(), String>>,
    },
}

/// What the core asks of the driver.
#[derive(Debug)]
pub(crate) enum ToDriver {
    /// Propose this entry.
    Propose(Vec<u8>),
    /// Find a linearizable read point (ReadIndex) for the read `id`.
    ReadIndex(u64),
    /// Every committed entry up to this Raft index is applied and durable in the core's
    /// own storage (the Raft log may be cut up to there).
    Durable(u64),
    /// The tree, encoded at Raft index `index` (every committed entry up to it applied,
    /// nothing else): offer it as a snapshot.
    Snapshot {
        /// The Raft index.
        index: u64,
        /// The encoded tree.
        tree: Vec<u8>,
    },
}
