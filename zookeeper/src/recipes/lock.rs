//! A distributed mutex (seed 004, "Locks"; ZooKeeper's recipe), on the election's
//! pattern: each acquirer creates an ephemeral-sequential znode `lock-<seq>` under the
//! lock's znode and holds the lock when its znode is the lowest; each waiter watches
//! only its immediate predecessor, so a release wakes one waiter only (no herd effect),
//! and the lock is granted in arrival order (fair).
//!
//! A holder that crashes releases the lock when its session expires (its znode is
//! ephemeral). A [`Guard`] dropped without [`Guard::release`] releases in the
//! background; an [`Lock::acquire`] that is cancelled withdraws its znode likewise.
//!
//! ```no_run
//! # async fn f(client: std::sync::Arc<pehra_zookeeper::Client>) -> pehra_zookeeper::recipes::Result<()> {
//! use pehra_zookeeper::recipes::Lock;
//! let guard = Lock::acquire(client, "/locks/partition-7").await?;
//! // ... critical section ...
//! guard.release().await?;
//! # Ok(()) }
//! ```

use super::queue::{self, Turn};
use super::{child_path, ensure_path, last_component, session_alive, Result};
use crate::client::{Client, CreateMode};
use pehra_shared::wire::ErrorKind;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// The name prefix of the acquirers' znodes.
pub const PREFIX: &str = "lock-";

/// A distributed mutex named by a znode path.
pub struct Lock;

impl Lock {
    /// Waits until the lock at `path` (created, persistent, if missing) is held by this
    /// client, and returns the guard that holds it.
    pub async fn acquire(client: Arc<Client>, path: &str) -> Result<Guard> {
        let node = OwnedNode::create(client, path).await?;
        let name = last_component(&node.path).to_string();
        let wakeups = AtomicU64::new(0);
        queue::wait_first(&node.client, path, PREFIX, &name, &wakeups).await?;
        Ok(Guard { node: Some(node) })
    }

    /// Takes the lock if it is free now; `None` (and nothing left behind) if it is held.
    pub async fn try_acquire(client: Arc<Client>, path: &str) -> Result<Option<Guard>> {
        let node = OwnedNode::create(client, path).await?;
        let name = last_component(&node.path).to_string();
        match queue::check(&node.client, path, PREFIX, &name).await? {
            Turn::First => Ok(Some(Guard { node: Some(node) })),
            Turn::Behind(_) => {
                node.delete().await?;
                Ok(None)
            }
        }
    }

    /// Whether anyone holds (or waits for) the lock at `path`.
    pub async fn is_locked(client: &Client, path: &str) -> Result<bool> {
        match queue::members(client, path, PREFIX).await {
            Ok(q) => Ok(!q.is_empty()),
            Err(e) if e.kind() == Some(ErrorKind::NotFound) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// A held lock. Release it with [`Guard::release`]; dropping it releases it in the
/// background (when dropped inside a tokio runtime).
pub struct Guard {
    node: Option<OwnedNode>,
}

impl Guard {
    /// Releases the lock: deletes this holder's znode (its successor, if any, takes
    /// the lock).
    pub async fn release(mut self) -> Result<()> {
        match self.node.take() {
            Some(node) => node.delete().await,
            None => Ok(()),
        }
    }

    /// The holder's znode (`/locks/a/lock-0000000004`).
    pub fn path(&self) -> &str {
        self.node.as_ref().map_or("", |n| n.path.as_str())
    }

    /// Whether the lock is still held: the session that holds it is alive. (A holder
    /// whose session expired has lost the lock, even if it has not noticed yet.)
    pub fn is_held(&self) -> bool {
        self.node.as_ref().is_some_and(|n| session_alive(&n.client))
    }
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard").field("path", &self.path()).finish()
    }
}

/// An ephemeral-sequential znode this process created; deleted in the background if
/// dropped without [`OwnedNode::delete`].
struct OwnedNode {
    client: Arc<Client>,
    path: String,
    armed: bool,
}

impl OwnedNode {
    async fn create(client: Arc<Client>, dir: &str) -> Result<OwnedNode> {
        ensure_path(&client, dir).await?;
        let path = client
            .create(
                &child_path(dir, PREFIX),
                b"",
                CreateMode::EphemeralSequential,
            )
            .await?;
        Ok(OwnedNode {
            client,
            path,
            armed: true,
        })
    }

    async fn delete(mut self) -> Result<()> {
        self.armed = false;
        match self.client.delete(&self.path, None).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == Some(ErrorKind::NotFound) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

impl Drop for OwnedNode {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let client = self.client.clone();
            let path = std::mem::take(&mut self.path);
            runtime.spawn(async move {
                if let Err(e) = client.delete(&path, None).await {
                    if e.kind() != Some(ErrorKind::NotFound) {
                        tracing::warn!(path, error = %e, "could not release a lock znode");
                    }
                }
            });
        }
    }
}
