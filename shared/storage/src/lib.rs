//! Pehra's one durable-file layer, under both on-disk stores: the brokers' partition logs
//! (`pehra_broker::log`) and the zookeeper's write-ahead log and snapshots
//! (`pehra_zookeeper::storage`).
//!
//! What the two stores share lives here, once:
//!
//! - [`IoError`]: every failed file operation names what was being done and to which path;
//! - [`file`]: the durable primitives (syncing a directory, creating a file with its header
//!   atomically, replacing a small file atomically, deleting, truncating);
//! - [`Numbered`] and [`list`]: directories of files named by a 20-digit number (segments,
//!   indexes, snapshots), with the `*.tmp` leftovers of an interrupted creation;
//! - [`Plan`]: opening a store is split in two. A store first reads what the directory
//!   holds and decides, without writing anything, what recovery must change (a pure
//!   function of what it read, tested without a disk); only when every check has passed is
//!   the [`Plan`] applied, so a refusal leaves the directory as it was;
//! - [`Poison`]: after a failed write or sync a store refuses further work until it is
//!   reopened (what reached the disk is unknown);
//! - [`data_dir`]: claiming a server's data directory (its lock and the writable check).
//!
//! Everything is synchronous std I/O, for the blocking threads the stores run on.

pub mod data_dir;
pub mod file;
mod io_error;
mod listing;
mod plan;
mod poison;

pub use file::{create_dir_durably, create_with_header, fsync_dir, remove_if_present};
pub use io_error::{io_err, IoError};
pub use listing::{list, Listing, Numbered};
pub use plan::{Change, Plan};
pub use poison::Poison;
