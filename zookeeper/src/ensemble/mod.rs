//! A zookeeper ensemble: the members' write logs replicated with Raft (raft-rs, see
//! `docs/ensemble.md`).
//!
//! - [`member`]: one member's Raft as a sans-IO machine (ticks, messages, proposals in;
//!   send / persist / apply actions out);
//! - [`log`]: its Raft log and hard state, durable in the zookeeper's own storage;
//! - [`store`]: the same log in memory, as raft-rs reads it (with its cut and the
//!   snapshot offered);
//! - [`snapshot`]: the leader's tree shipped to a member that lost its data (pulled in
//!   pieces, checked);
//! - [`health`]: the leader hands its office over when its health falls (seed 002);
//! - [`messages`]: what the core and the driver tell each other;
//! - [`driver`]: the thin async task that runs the machine: a timer, the `POST /raft`
//!   resource, the CoAP endpoint for sending, the disk, and the core for applying.
//!
//! The leader's core applies a batch of writes to its tree, proposes the batch's log
//! records as one Raft entry and answers once the entry is committed (and in its own
//! write-ahead log). Every other member applies committed entries to its tree, in order,
//! by their zxids (so zxids stay the leader's counter, monotonic across leader changes:
//! a new leader writes only once every entry of earlier terms is applied).

pub mod driver;
pub mod health;
pub mod lease;
pub mod log;
pub mod member;
pub mod messages;
pub mod snapshot;
pub mod store;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// The URI path of the Raft resource (`POST /raft`, a protobuf `eraftpb.Message`).
pub const RAFT_PATH: &str = "raft";

/// The Raft tick: elections time out after 10 ticks without a leader (plus Raft's
/// randomisation, and the leader's lease: [`lease`]), leaders heartbeat every 2.
pub const TICK: std::time::Duration = std::time::Duration::from_millis(100);

/// How a member sees its ensemble.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnsembleConfig {
    /// This member's id (≥ 1).
    pub id: u64,
    /// Every member (this one included): id → the address it serves CoAP on.
    pub members: BTreeMap<u64, SocketAddr>,
    /// Cut the Raft log once it holds this many entries every member has (0: never;
    /// [`member::DEFAULT_COMPACT_EVERY`] unless set).
    pub compact_every: u64,
    /// This member's health, told in its status (`health_index`).
    pub health: health::HealthSource,
    /// Started to join an existing ensemble (`--join`): at its first start it does not
    /// vote or campaign until a membership change adds it.
    pub join: bool,
    /// The lease this member gives as leader (seed 002: [`lease`]); checked with
    /// [`lease::check`].
    pub lease: pehra_shared::health::LeaseConfig,
}

/// The ensemble's members as the Raft log records them: who votes, and where each
/// member serves (also members being added or removed, and members that joined after
/// this one was started with its `--peers`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// The voters' ids (empty for a member that has been started to join and was not
    /// added yet).
    pub voters: Vec<u64>,
    /// The learners: members added that catch up before they vote.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub learners: Vec<u64>,
    /// Every member's CoAP address (`HOST:PORT`), by id.
    pub addrs: BTreeMap<u64, String>,
}

/// Why `--peers` does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeersError {
    /// An item is not `ID=HOST:PORT`.
    #[error("bad member {0:?}: expected ID=HOST:PORT with ID ≥ 1")]
    Item(String),
    /// The member's own id is not in the list.
    #[error("this member's id {0} is not among the peers")]
    MissingSelf(u64),
}

impl EnsembleConfig {
    /// Parses `1=HOST:PORT,2=HOST:PORT,...` for member `id`.
    pub fn parse(id: u64, peers: &str) -> Result<EnsembleConfig, PeersError> {
        let mut members = BTreeMap::new();
        for item in peers.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let bad = || PeersError::Item(item.to_string());
            let (n, addr) = item.split_once('=').ok_or_else(bad)?;
            let n: u64 = n.trim().parse().map_err(|_| bad())?;
            let addr = std::net::ToSocketAddrs::to_socket_addrs(addr.trim())
                .ok()
                .and_then(|mut a| a.next())
                .ok_or_else(bad)?;
            if n == 0 {
                return Err(bad());
            }
            members.insert(n, addr);
        }
        if !members.contains_key(&id) {
            return Err(PeersError::MissingSelf(id));
        }
        Ok(EnsembleConfig {
            id,
            members,
            compact_every: member::DEFAULT_COMPACT_EVERY,
            health: health::HealthSource::default(),
            join: false,
            lease: lease::default_config(),
        })
    }
}

/// The URI path of a change of the voters (`POST /ensemble/members`, a
/// [`MembershipRequest`]; admin only), answered once it is applied.
pub const MEMBERS_PATH: &str = "ensemble/members";

/// A change of the ensemble's voters (one at a time), asked of the leader.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MembershipRequest {
    /// Member `id`, serving at `addr` (`HOST:PORT`), votes from now on. Start it first
    /// with `--join`.
    Add {
        /// Its id (≥ 1).
        id: u64,
        /// Its CoAP address.
        addr: String,
    },
    /// Member `id` no longer votes. Not the leader: hand its office over first.
    Remove {
        /// Its id.
        id: u64,
    },
}

impl From<MembershipRequest> for member::MembershipChange {
    fn from(request: MembershipRequest) -> Self {
        match request {
            MembershipRequest::Add { id, addr } => member::MembershipChange::Add { id, addr },
            MembershipRequest::Remove { id } => member::MembershipChange::Remove { id },
        }
    }
}

/// The answer to a [`MembershipRequest`] (2.04): the change is applied (a member added
/// is a learner until it has caught up; the leader then makes it a voter).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MembershipChanged {
    /// The voters now.
    pub voters: Vec<u64>,
    /// The learners now.
    #[serde(default)]
    pub learners: Vec<u64>,
}

/// The URI path of a member's view of its ensemble (`GET /ensemble`, an
/// [`EnsembleStatus`]), and of a leadership handover (`POST /ensemble`, a
/// [`TransferRequest`]); 4.04 on a zookeeper that is alone.
pub const STATUS_PATH: &str = "ensemble";

/// A member's view of its ensemble (`GET /ensemble`, CBOR).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EnsembleStatus {
    /// This member's id.
    pub id: u64,
    /// `leader`, `follower`, `candidate`, `pre-candidate`, or `learner` (added, catching
    /// up before it votes).
    pub role: String,
    /// The leader's id, if known.
    pub leader: Option<u64>,
    /// The Raft term.
    pub term: u64,
    /// The last Raft index this member has.
    pub last_index: u64,
    /// The highest index known committed.
    pub commit: u64,
    /// The highest index applied (handed to the tree).
    pub applied: u64,
    /// The first index its log holds (the log is cut below what every member has).
    #[serde(default)]
    pub first_index: u64,
    /// Its Node Health Index now, ‰ (what the leader compares when its own health falls).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_index: Option<u16>,
    /// On the leader: the lease it gives in its heartbeats and how it was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseStatus>,
    /// On a follower: the lease its leader gave (`None`: none yet, the default timeout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_lease_ms: Option<u32>,
    /// Its election timeout now, ms (drawn in [lease, 2 × lease)).
    #[serde(default)]
    pub election_timeout_ms: u64,
    /// Every member; on the leader, with the index each one has (`matched`).
    pub members: Vec<MemberStatus>,
}

/// The lease a leader gives (seed 002's formula, [`lease`]), as `GET /ensemble` shows it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct LeaseStatus {
    /// The lease, ms.
    pub lease_ms: u32,
    /// Its NHI factor, ‰.
    pub nhi_factor: i32,
    /// Its network stability factor, ‰.
    pub network_factor: i32,
    /// Its load factor, ‰.
    pub load_factor: i32,
    /// The standard deviation of the heartbeats' round trips, µs.
    pub rtt_stddev_us: u32,
}

/// A member in an [`EnsembleStatus`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MemberStatus {
    /// Its id.
    pub id: u64,
    /// Its CoAP address.
    pub addr: String,
    /// The last index the leader knows it has (only in the leader's view).
    pub matched: Option<u64>,
    /// A learner: added, catching up, not voting yet.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub learner: bool,
    /// The mean round trip of the leader's recent heartbeats to it, µs (only in the
    /// leader's view): its distance, which a health handover prefers short.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_us: Option<u32>,
}

/// Asks the ensemble leader to hand its office over (`POST /ensemble`, CBOR; admin
/// only): `{"to"?: u64}`, the member to hand over to, or the one furthest along.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct TransferRequest {
    /// The member to hand over to; `None`: the one whose log is furthest along.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<u64>,
}

/// The answer to a [`TransferRequest`] (2.04): the handover has started. It completes
/// when `to` leads (`GET /ensemble`); Raft abandons it after an election timeout if `to`
/// does not take over, and `from` goes on leading.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TransferStarted {
    /// The leader handing over.
    pub from: u64,
    /// The member taking over.
    pub to: u64,
}

/// One Raft entry of the zookeeper: a batch of log records of the leader.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Proposal {
    /// The proposing member.
    pub from: u64,
    /// Its proposal counter (with `from`, tells a member its own proposal back).
    pub seq: u64,
    /// The records: (zxid, encoded log record).
    pub records: Vec<(u64, serde_bytes::ByteBuf)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse() {
        let c = EnsembleConfig::parse(2, "1=127.0.0.1:2181, 2=127.0.0.1:2182,3=127.0.0.1:2183")
            .unwrap();
        assert_eq!(c.members.len(), 3);
        assert_eq!(c.members[&2], "127.0.0.1:2182".parse().unwrap());
        assert_eq!(
            EnsembleConfig::parse(4, "1=127.0.0.1:1"),
            Err(PeersError::MissingSelf(4))
        );
        assert!(EnsembleConfig::parse(1, "1=nowhere").is_err());
        assert!(EnsembleConfig::parse(0, "0=127.0.0.1:1").is_err());
    }
}
