//! Leader election without herd effect (seed 004, "Leader Election"; ZooKeeper's
//! recipe).
//!
//! Each contender creates an ephemeral-sequential znode `n-<seq>` under a base znode
//! (created, persistent, if missing). The contender with the lowest sequence number
//! leads. Every other contender watches only its immediate predecessor's znode; when
//! that goes, it reads the children again: if it is now the lowest it leads, otherwise
//! it watches its new predecessor. A leader that dies (its session expires) or resigns
//! therefore wakes exactly one contender, its successor, however many are waiting, and
//! leadership passes in sequence order.
//!
//! ```no_run
//! # async fn f(client: std::sync::Arc<pehra_zookeeper::Client>) -> pehra_zookeeper::recipes::Result<()> {
//! use pehra_zookeeper::recipes::Election;
//! let candidate = Election::join(client, "/election", b"broker-1").await?;
//! candidate.wait_for_leadership().await?;
//! // ... lead, until the session ends or:
//! candidate.resign().await?;
//! # Ok(()) }
//! ```

use super::queue::{self, Turn};
use super::{child_path, ensure_path, last_component, session_alive, RecipeError, Result};
use crate::client::{Client, CreateMode};
use pehra_shared::wire::ErrorKind;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// The name prefix of the contenders' znodes.
pub const PREFIX: &str = "n-";

/// Leader election under one base znode.
pub struct Election;

impl Election {
    /// Enters the election under `base` (created if missing) with `id` as the data of
    /// this contender's znode (what [`Election::leader`] reports). Returns at once; see
    /// [`Candidate::wait_for_leadership`].
    pub async fn join(client: Arc<Client>, base: &str, id: &[u8]) -> Result<Candidate> {
        ensure_path(&client, base).await?;
        let prefix = child_path(base, PREFIX);
        let path = client
            .create(&prefix, id, CreateMode::EphemeralSequential)
            .await?;
        Ok(Candidate {
            client,
            base: base.to_string(),
            name: last_component(&path).to_string(),
            path,
            leader: AtomicBool::new(false),
            resigned: AtomicBool::new(false),
            wakeups: AtomicU64::new(0),
        })
    }

    /// The current leader's znode path and id, if anyone contends under `base`.
    pub async fn leader(client: &Client, base: &str) -> Result<Option<(String, Vec<u8>)>> {
        loop {
            let queue = match queue::members(client, base, PREFIX).await {
                Ok(q) => q,
                Err(e) if e.kind() == Some(ErrorKind::NotFound) => return Ok(None),
                Err(e) => return Err(e),
            };
            let Some(first) = queue.first() else {
                return Ok(None);
            };
            let path = child_path(base, first);
            match client.get_data(&path).await {
                Ok((id, _)) => return Ok(Some((path, id))),
                // The leader went between the two reads: look again.
                Err(e) if e.kind() == Some(ErrorKind::NotFound) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The contenders' znode names under `base`, in sequence (leader first).
    pub async fn contenders(client: &Client, base: &str) -> Result<Vec<String>> {
        queue::members(client, base, PREFIX).await
    }
}

/// One contender: its znode in the election.
///
/// Dropping a candidate does not withdraw it: its znode stays (and it may still be the
/// leader, as far as the others know) until its session ends. Call
/// [`Candidate::resign`] to step down at once.
pub struct Candidate {
    client: Arc<Client>,
    base: String,
    path: String,
    name: String,
    leader: AtomicBool,
    resigned: AtomicBool,
    wakeups: AtomicU64,
}

impl Candidate {
    /// Waits until this contender leads (returns at once if it already does).
    ///
    /// Fails with [`RecipeError::NodeGone`] if its znode disappeared (its session
    /// expired, or it resigned) and [`RecipeError::SessionEnded`] if the session ends
    /// while waiting: leadership can then never come, join again with a new client.
    pub async fn wait_for_leadership(&self) -> Result<()> {
        if self.is_leader() {
            return Ok(());
        }
        if self.resigned.load(Ordering::SeqCst) {
            return Err(RecipeError::NodeGone(self.path.clone()));
        }
        queue::wait_first(&self.client, &self.base, PREFIX, &self.name, &self.wakeups).await?;
        self.leader.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Whether this contender leads: it was found first in the election and has neither
    /// resigned nor lost its session since.
    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::SeqCst) && session_alive(&self.client)
    }

    /// Checks with the zookeeper that this contender's znode is (still) the lowest.
    pub async fn check_leadership(&self) -> Result<bool> {
        match queue::check(&self.client, &self.base, PREFIX, &self.name).await {
            Ok(Turn::First) => Ok(true),
            Ok(Turn::Behind(_)) => Ok(false),
            Err(RecipeError::NodeGone(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Leaves the election: deletes this contender's znode (its successor, if any,
    /// takes over). The candidate cannot contend again; join anew for that.
    pub async fn resign(&self) -> Result<()> {
        self.leader.store(false, Ordering::SeqCst);
        self.resigned.store(true, Ordering::SeqCst);
        match self.client.delete(&self.path, None).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == Some(ErrorKind::NotFound) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// How many times a watch woke this contender (its predecessor's znode went while
    /// it was watching). With no herd effect, each departure wakes one contender only.
    pub fn wakeups(&self) -> u64 {
        self.wakeups.load(Ordering::SeqCst)
    }

    /// This contender's znode (`/election/n-0000000003`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Its sequence number.
    pub fn sequence(&self) -> u64 {
        queue::sequence(&self.name, PREFIX).unwrap_or(u64::MAX)
    }

    /// The client it contends with.
    pub fn client(&self) -> &Arc<Client> {
        &self.client
    }

    /// Gives the client back (to close it, for instance), without resigning.
    pub fn into_client(self) -> Arc<Client> {
        self.client
    }
}

impl std::fmt::Debug for Candidate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Candidate")
            .field("path", &self.path)
            .field("leader", &self.leader.load(Ordering::SeqCst))
            .field("wakeups", &self.wakeups())
            .finish()
    }
}
