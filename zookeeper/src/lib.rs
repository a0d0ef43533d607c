//! The mini-zookeeper: ZooKeeper's coordination semantics over CoAP and CBOR, durable on
//! disk, with its client library and recipes.
//!
//! - [`tree`]: the data tree (znodes, stats, sessions), pure and deterministic;
//! - [`storage`]: the write-ahead log and snapshots;
//! - [`ensemble`]: replication of the log between members (Raft);
//! - [`server`]: the CoAP service around them (group commit, watches, session expiry);
//! - [`client`]: the async client library; [`recipes`] built on it.

pub mod client;
pub mod ensemble;
pub mod path;
pub mod recipes;
pub mod server;
pub mod storage;
pub mod tree;
pub mod uri;

pub use client::{Client, ClientOptions, CreateMode, SessionState, Watch, WatchEvent, ZkError};
pub use server::{Security, Server, ServerConfig, ServerError, SessionLeaseConfig};
