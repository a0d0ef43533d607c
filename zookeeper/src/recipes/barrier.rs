//! The double barrier (seed 004, "Barriers"; ZooKeeper's recipe): `n` participants
//! enter together and leave together.
//!
//! - **Enter**: a participant creates an ephemeral-sequential znode `p-<seq>` under the
//!   barrier znode and follows the barrier's children. When `n` participants are there,
//!   the one that sees it creates the persistent `ready` znode and everyone proceeds:
//!   a participant proceeds when it sees `n` participants or `ready` (so a slow one
//!   that sees only the `ready` znode, the others having left already, proceeds too).
//! - **Leave**: the participants delete their znodes; the lowest one waits for the
//!   highest one, every other one deletes its own znode and waits for the lowest (each
//!   watches one znode, never the whole directory). When none is left, every participant is
//!   released; the last one removes the `ready` znode first, so the barrier can be used
//!   again by the same `n` participants.
//!
//! One barrier znode serves one round at a time: a participant that arrives after the
//! `n`-th (while `ready` is still there) passes straight through.

use super::queue;
use super::{child_path, ensure_path, last_component, session_ended, RecipeError, Result};
use crate::client::{Client, CreateMode, WatchEvent};
use pehra_shared::wire::ErrorKind;
use std::sync::Arc;

/// The name prefix of the participants' znodes.
pub const PREFIX: &str = "p-";

/// The znode that says the barrier is open.
pub const READY: &str = "ready";

/// One participant's handle on a double barrier of `n` participants.
pub struct Barrier {
    client: Arc<Client>,
    path: String,
    n: usize,
    /// This participant's znode name, once entered.
    me: Option<String>,
}

impl Barrier {
    /// A participant of the barrier at `path` for `n` participants (nothing is created
    /// until [`Barrier::enter`]).
    pub fn new(client: Arc<Client>, path: &str, n: usize) -> Barrier {
        Barrier {
            client,
            path: path.to_string(),
            n,
            me: None,
        }
    }

    /// The barrier's znode.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Enters: waits until `n` participants have entered (or the barrier is open).
    pub async fn enter(&mut self) -> Result<()> {
        if self.n == 0 {
            return Err(RecipeError::Invalid(
                "a barrier needs at least one participant".into(),
            ));
        }
        ensure_path(&self.client, &self.path).await?;
        if self.me.is_none() {
            let created = self
                .client
                .create(
                    &child_path(&self.path, PREFIX),
                    b"",
                    CreateMode::EphemeralSequential,
                )
                .await?;
            self.me = Some(last_component(&created).to_string());
        }
        let mut watch = self.client.watch_children(&self.path).await?;
        loop {
            let event = tokio::select! {
                event = watch.next() => event,
                () = session_ended(&self.client) => return Err(RecipeError::SessionEnded),
            };
            match event {
                Some(Ok(WatchEvent::Children(children))) => {
                    let ready = children.children.iter().any(|c| c == READY);
                    if ready {
                        return Ok(());
                    }
                    if queue::order(children.children, PREFIX).len() >= self.n {
                        return self.open().await;
                    }
                }
                Some(Ok(WatchEvent::Data(_))) => {}
                Some(Ok(WatchEvent::Deleted)) => {
                    return Err(RecipeError::NodeGone(self.path.clone()))
                }
                Some(Err(e)) => return Err(e.into()),
                None => return Err(RecipeError::WatchEnded),
            }
        }
    }

    /// Creates the `ready` znode (someone else may have done it already).
    async fn open(&self) -> Result<()> {
        match self
            .client
            .create(&child_path(&self.path, READY), b"", CreateMode::Persistent)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == Some(ErrorKind::NodeExists) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Leaves: withdraws this participant and waits until every participant has left.
    pub async fn leave(&mut self) -> Result<()> {
        let Some(me) = self.me.clone() else {
            return Err(RecipeError::Invalid("leave before enter".into()));
        };
        loop {
            let participants = match queue::members(&self.client, &self.path, PREFIX).await {
                Ok(p) => p,
                Err(e) if e.kind() == Some(ErrorKind::NotFound) => Vec::new(),
                Err(e) => return Err(e),
            };
            let wait_for = match participants.iter().position(|p| *p == me) {
                None if participants.is_empty() => break,
                // Our znode is gone already: wait for the lowest to go.
                None => participants[0].clone(),
                // The last one: close the barrier for the next round (before leaving, so
                // nobody released can find a stale `ready`), then go.
                Some(_) if participants.len() == 1 => {
                    self.delete(READY).await?;
                    self.delete(&me).await?;
                    break;
                }
                // The lowest stays until the highest has gone.
                Some(0) => participants[participants.len() - 1].clone(),
                Some(_) => {
                    self.delete(&me).await?;
                    participants[0].clone()
                }
            };
            self.wait_deleted(&child_path(&self.path, &wait_for))
                .await?;
        }
        self.me = None;
        Ok(())
    }

    async fn delete(&self, name: &str) -> Result<()> {
        match self
            .client
            .delete(&child_path(&self.path, name), None)
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == Some(ErrorKind::NotFound) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Waits until the znode at `path` is deleted.
    async fn wait_deleted(&self, path: &str) -> Result<()> {
        let mut watch = self.client.watch_data(path).await?;
        loop {
            let event = tokio::select! {
                event = watch.next() => event,
                () = session_ended(&self.client) => return Err(RecipeError::SessionEnded),
            };
            match event {
                Some(Ok(WatchEvent::Deleted)) => return Ok(()),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => return Err(RecipeError::WatchEnded),
            }
        }
    }
}
