//! ZooKeeper's classic recipes, built only on the public [`Client`] API (seed 004):
//!
//! - [`election`]: leader election without herd effect (ephemeral-sequential znodes,
//!   each contender watching only its predecessor);
//! - [`lock`]: a distributed mutex on the same pattern;
//! - [`membership`]: group membership (ephemeral znodes, a stream of the member set);
//! - [`barrier`]: the double barrier (enter when `n` have arrived, leave when all left);
//! - [`config`]: a configuration value with change notifications.
//!
//! The recipes talk to the zookeeper through the [`Client`] they are given and hold no
//! state the zookeeper does not have: a process that crashes (its session expires) drops
//! out of every recipe by itself, because everything it joined is an ephemeral znode.

pub mod barrier;
pub mod config;
pub mod election;
pub mod lock;
pub mod membership;
mod queue;

pub use barrier::Barrier;
pub use config::{ConfigValue, ConfigWatch};
pub use election::{Candidate, Election};
pub use lock::{Guard, Lock};
pub use membership::{Group, Member, MembersWatch};

use crate::client::{Client, CreateMode, SessionState, ZkError};
use pehra_shared::wire::ErrorKind;
use thiserror::Error;

/// Why a recipe failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RecipeError {
    /// A zookeeper call failed.
    #[error(transparent)]
    Zk(#[from] ZkError),
    /// A znode this recipe created is gone: its session expired, or someone deleted it.
    /// The recipe's claim (leadership, lock, place in a barrier) is lost.
    #[error("the znode {0} is gone (session expired, or deleted by someone else)")]
    NodeGone(String),
    /// The client's session expired or was closed while the recipe was waiting.
    #[error("the client's session has ended")]
    SessionEnded,
    /// A watch stopped without telling why: the client was shut down.
    #[error("the watch ended: the client is shut down")]
    WatchEnded,
    /// A bad argument (a member name with a `/`, a barrier of zero participants).
    #[error("invalid argument: {0}")]
    Invalid(String),
}

impl RecipeError {
    /// The zookeeper's refusal kind, if the zookeeper refused (or the session expired).
    pub fn kind(&self) -> Option<ErrorKind> {
        match self {
            RecipeError::Zk(e) => e.kind(),
            RecipeError::SessionEnded => Some(ErrorKind::SessionExpired),
            _ => None,
        }
    }
}

/// What every recipe returns.
pub type Result<T, E = RecipeError> = std::result::Result<T, E>;

/// Creates `path` and every missing ancestor as empty persistent znodes (a znode that
/// already exists is fine).
pub async fn ensure_path(client: &Client, path: &str) -> Result<()> {
    crate::path::validate(path).map_err(|e| RecipeError::Invalid(e.to_string()))?;
    if path == "/" || client.exists(path).await?.is_some() {
        return Ok(());
    }
    let mut prefix = String::new();
    for component in path[1..].split('/') {
        prefix.push('/');
        prefix.push_str(component);
        match client.create(&prefix, b"", CreateMode::Persistent).await {
            Ok(_) => {}
            Err(e) if e.kind() == Some(ErrorKind::NodeExists) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// `dir/name`, without doubling the slash under the root.
fn child_path(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// The last component of a path.
fn last_component(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Checks that `name` can be one path component.
fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(RecipeError::Invalid(format!(
            "{name:?} is not a valid znode name"
        )));
    }
    Ok(())
}

/// Completes when the client's session has expired or been closed (never, for a client
/// without a session or once the client is gone: its watches end by themselves then).
async fn session_ended(client: &Client) {
    let mut state = client.session_state();
    loop {
        if matches!(
            *state.borrow_and_update(),
            SessionState::Expired | SessionState::Closed
        ) {
            return;
        }
        if state.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// Whether the client's session is alive.
fn session_alive(client: &Client) -> bool {
    *client.session_state().borrow() == SessionState::Alive
}
