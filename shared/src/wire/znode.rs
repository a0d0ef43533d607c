//! The coordination service's znode tree: create, read, write, list, multi, sync, watch.

use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use super::error::ErrorKind;

/// Body of `POST /z/{path}`: create a znode at the path in the URI.
///
/// CBOR: `{"data": bytes, "ephemeral": bool, "sequential": bool, "session"?: u64,
/// "request"?: u64}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateRequest {
    /// The znode's initial data.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
    /// Delete the znode when the owning session ends (needs `session`).
    pub ephemeral: bool,
    /// Append a monotonically increasing `%010d` counter to the name.
    pub sequential: bool,
    /// The session the request belongs to (the owner of an ephemeral znode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<u64>,
    /// The request's number within `session` (increasing, one request at a time): a
    /// retry of the same number is answered with what the first one did, never applied
    /// twice, even across a zookeeper restart or a move to another ensemble member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<u64>,
}

/// Body of the 2.01 answer to a create (the path is also in Location-Path).
///
/// CBOR: `{"path": text, "stat": Stat}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateResponse {
    /// The path actually created (with the sequential suffix, if any).
    pub path: String,
    /// The new znode's stat.
    pub stat: Stat,
}

/// A znode's metadata, as ZooKeeper's `Stat`.
///
/// CBOR: `{"czxid": u64, "mzxid": u64, "pzxid": u64, "ctime_ms": u64, "mtime_ms": u64,
/// "version": u32, "cversion": u32, "ephemeral_owner"?: u64, "data_length": u32,
/// "num_children": u32}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Stat {
    /// zxid of the write that created the znode.
    pub czxid: u64,
    /// zxid of the write that last changed its data.
    pub mzxid: u64,
    /// zxid of the write that last changed its children.
    pub pzxid: u64,
    /// When it was created, milliseconds since the Unix epoch.
    pub ctime_ms: u64,
    /// When its data last changed, milliseconds since the Unix epoch.
    pub mtime_ms: u64,
    /// Number of changes to its data (the ETag / If-Match version).
    pub version: u32,
    /// Number of changes to its children.
    pub cversion: u32,
    /// The session that owns it, if ephemeral; `None` (omitted) for a persistent znode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ephemeral_owner: Option<u64>,
    /// Length of its data, bytes.
    pub data_length: u32,
    /// Number of children.
    pub num_children: u32,
}

/// Body of the answer to `GET /z/{path}` (and of each Observe notification).
///
/// CBOR: `{"data": bytes, "stat": Stat}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeData {
    /// The znode's data.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
    /// Its stat.
    pub stat: Stat,
}

/// Body of `PUT /z/{path}`: replace a znode's data.
///
/// CBOR: `{"data": bytes, "version"?: u32, "session"?: u64, "request"?: u64}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetDataRequest {
    /// The new data.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
    /// The version the znode must have (4.12 otherwise); `None` means any version
    /// (ZooKeeper's -1). Same meaning as an If-Match option.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    /// The session the request belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<u64>,
    /// The request's number within `session` (increasing, one request at a time): a
    /// retry of the same number is answered with what the first one did, never applied
    /// twice, even across a zookeeper restart or a move to another ensemble member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<u64>,
}

/// Body of the answer to `GET /z/{path}?children`.
///
/// CBOR: `{"children": [text, ...], "stat": Stat}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Children {
    /// The children's names (last path segment only), sorted.
    #[serde(deserialize_with = "super::array_only::array_only")]
    pub children: Vec<String>,
    /// The parent's stat.
    pub stat: Stat,
}

/// One operation of a `POST /multi` transaction.
///
/// CBOR: a one-entry map, variant name → fields, e.g.
/// `{"delete": {"path": "/a", "version": 3}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MultiOp {
    /// Create a znode, as [`CreateRequest`].
    Create {
        /// Where.
        path: String,
        /// Its initial data.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        /// Deleted with the request's session.
        ephemeral: bool,
        /// Append a sequence number to the name.
        sequential: bool,
    },
    /// Replace a znode's data, as [`SetDataRequest`].
    SetData {
        /// Which znode.
        path: String,
        /// The new data.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        /// The version it must have; `None` means any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<u32>,
    },
    /// Delete a znode (it must have no children).
    Delete {
        /// Which znode.
        path: String,
        /// The version it must have; `None` means any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<u32>,
    },
    /// Change nothing, but fail the transaction unless the znode exists (and has this
    /// version, if given).
    Check {
        /// Which znode.
        path: String,
        /// The version it must have; `None` means it need only exist.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<u32>,
    },
}

/// Body of `POST /multi`: operations applied all together or not at all.
///
/// CBOR: `{"ops": [MultiOp, ...], "session"?: u64, "request"?: u64}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MultiRequest {
    /// The operations, applied in order.
    #[serde(deserialize_with = "super::array_only::array_only")]
    pub ops: Vec<MultiOp>,
    /// The session the transaction belongs to (owner of ephemeral creates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<u64>,
    /// The request's number within `session` (increasing, one request at a time): a
    /// retry of the same number is answered with what the first one did, never applied
    /// twice, even across a zookeeper restart or a move to another ensemble member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<u64>,
}

/// The outcome of one [`MultiOp`], at the same index in [`MultiResponse::results`].
///
/// CBOR: `"delete"`, `"check"`, or a one-entry map: `{"create": {"path": text}}`,
/// `{"set_data": {"stat": Stat}}`, `{"error": {"error": ErrorKind}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MultiResult {
    /// The znode was created.
    Create {
        /// The path actually created.
        path: String,
    },
    /// The data was replaced.
    SetData {
        /// The znode's stat afterwards.
        stat: Stat,
    },
    /// The znode was deleted.
    Delete,
    /// The check passed.
    Check,
    /// The operation failed or was not applied (a multi with any failure changes
    /// nothing; the failing operation says why).
    Error {
        /// Why.
        error: ErrorKind,
    },
}

/// Body of the answer to `POST /multi`.
///
/// CBOR: `{"results": [MultiResult, ...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MultiResponse {
    /// One result per operation, in order.
    #[serde(deserialize_with = "super::array_only::array_only")]
    pub results: Vec<MultiResult>,
}

/// Body of the answer to `POST /sync`.
///
/// CBOR: `{"zxid": u64}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SyncResponse {
    /// The last zxid applied when the sync completed: reads after it see at least this.
    pub zxid: u64,
}

/// What happened to a watched znode.
///
/// CBOR: a text string: `"created"`, `"data_changed"`, `"children_changed"`, `"deleted"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WatchEventKind {
    /// The znode was created.
    Created,
    /// Its data changed.
    DataChanged,
    /// A child was added or removed.
    ChildrenChanged,
    /// It was deleted.
    Deleted,
}

/// A watch notification.
///
/// CBOR: `{"kind": WatchEventKind, "path": text, "zxid": u64}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchEvent {
    /// What happened.
    pub kind: WatchEventKind,
    /// To which znode.
    pub path: String,
    /// The zxid of the write that did it.
    pub zxid: u64,
}
