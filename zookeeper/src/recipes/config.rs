//! A configuration value with change notifications (seed 004, "Configuration
//! Management"): the value is a znode's data. Writers [`ConfigValue::set`] it; readers
//! [`ConfigValue::watch`] it and get the current value, then every new one.
//!
//! ```no_run
//! # async fn f(client: std::sync::Arc<pehra_zookeeper::Client>) -> pehra_zookeeper::recipes::Result<()> {
//! use pehra_zookeeper::recipes::ConfigValue;
//! ConfigValue::set(&client, "/config/lease_ms", b"3000").await?;
//! let mut lease = ConfigValue::watch(client.clone(), "/config/lease_ms").await?;
//! loop {
//!     match lease.next().await? {
//!         Some(value) => println!("lease now {}", String::from_utf8_lossy(&value)),
//!         None => println!("lease not set"),
//!     }
//! }
//! # }
//! ```

use super::{ensure_path, last_component, RecipeError, Result};
use crate::client::{Client, CreateMode, Watch, WatchEvent};
use crate::path::parent;
use pehra_shared::wire::{ErrorKind, Stat};
use std::sync::Arc;

/// Configuration values, one per znode.
pub struct ConfigValue;

impl ConfigValue {
    /// Sets the value at `path`: creates the znode (and its missing ancestors,
    /// persistent) or replaces its data. Returns the znode's stat after the write.
    pub async fn set(client: &Client, path: &str, value: &[u8]) -> Result<Stat> {
        loop {
            match client.set_data(path, value, None).await {
                Ok(stat) => return Ok(stat),
                Err(e) if e.kind() == Some(ErrorKind::NotFound) => {}
                Err(e) => return Err(e.into()),
            }
            ensure_path(client, parent(path)).await?;
            match client.create(path, value, CreateMode::Persistent).await {
                Ok(_) => {
                    let (_, stat) = match client.get_data(path).await {
                        Ok(found) => found,
                        // Deleted again at once: it was set all the same.
                        Err(e) if e.kind() == Some(ErrorKind::NotFound) => continue,
                        Err(e) => return Err(e.into()),
                    };
                    return Ok(stat);
                }
                // Someone created it meanwhile: replace their value.
                Err(e) if e.kind() == Some(ErrorKind::NodeExists) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Sets the value only if the znode is at `version` (compare-and-set); fails with a
    /// `VersionMismatch` refusal otherwise.
    pub async fn set_if(client: &Client, path: &str, value: &[u8], version: u32) -> Result<Stat> {
        Ok(client.set_data(path, value, Some(version)).await?)
    }

    /// The value now, or `None` if it is not set.
    pub async fn get(client: &Client, path: &str) -> Result<Option<Vec<u8>>> {
        match client.get_data(path).await {
            Ok((data, _)) => Ok(Some(data)),
            Err(e) if e.kind() == Some(ErrorKind::NotFound) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes the value (nothing if it is not set).
    pub async fn unset(client: &Client, path: &str) -> Result<()> {
        match client.delete(path, None).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == Some(ErrorKind::NotFound) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Follows the value at `path`: see [`ConfigWatch::next`]. The parent znode is
    /// created if missing (to be told when the value appears).
    pub async fn watch(client: Arc<Client>, path: &str) -> Result<ConfigWatch> {
        crate::path::validate(path).map_err(|e| RecipeError::Invalid(e.to_string()))?;
        if path == "/" {
            return Err(RecipeError::Invalid(
                "the root is not a configuration value".into(),
            ));
        }
        Ok(ConfigWatch {
            client,
            path: path.to_string(),
            phase: Phase::Start,
            last: None,
        })
    }
}

/// Where a [`ConfigWatch`] is.
enum Phase {
    /// Open a watch on the value.
    Start,
    /// Following the value's znode.
    Value(Watch),
    /// The value is not set: open a watch on the parent's children.
    Absent,
    /// Waiting for the value's znode to appear among the parent's children.
    AwaitCreation(Watch),
}

/// What was last reported.
#[derive(PartialEq, Eq)]
enum Seen {
    /// The value written at this zxid.
    Value(u64),
    /// "Not set".
    Unset,
}

/// The value of a configuration znode as it changes (see [`ConfigValue::watch`]).
pub struct ConfigWatch {
    client: Arc<Client>,
    path: String,
    phase: Phase,
    last: Option<Seen>,
}

impl ConfigWatch {
    /// The value: first the value now, then each new value (a write of the same bytes
    /// counts; writes committed together may come as one, the latest). `Ok(None)` when
    /// the value is not set (at first, or after it was deleted); the watch goes on and
    /// reports the value when it is set again. Fails when the client is shut down.
    ///
    /// Cancel-safe: a call dropped before it returns loses nothing.
    pub async fn next(&mut self) -> Result<Option<Vec<u8>>> {
        loop {
            match &mut self.phase {
                Phase::Start => {
                    self.phase = Phase::Value(self.client.watch_data(&self.path).await?);
                }
                Phase::Value(watch) => match watch.next().await {
                    Some(Ok(WatchEvent::Data(node))) => {
                        let seen = Seen::Value(node.stat.mzxid);
                        if self.last.as_ref() != Some(&seen) {
                            self.last = Some(seen);
                            return Ok(Some(node.data));
                        }
                    }
                    Some(Ok(WatchEvent::Deleted)) => {
                        self.phase = Phase::Absent;
                        if self.last != Some(Seen::Unset) {
                            self.last = Some(Seen::Unset);
                            return Ok(None);
                        }
                    }
                    Some(Ok(WatchEvent::Children(_))) => {}
                    Some(Err(e)) => {
                        self.phase = Phase::Start;
                        return Err(e.into());
                    }
                    None => return Err(RecipeError::WatchEnded),
                },
                Phase::Absent => {
                    let dir = parent(&self.path);
                    ensure_path(&self.client, dir).await?;
                    self.phase = Phase::AwaitCreation(self.client.watch_children(dir).await?);
                }
                Phase::AwaitCreation(watch) => match watch.next().await {
                    Some(Ok(WatchEvent::Children(children))) => {
                        let name = last_component(&self.path);
                        if children.children.iter().any(|c| c == name) {
                            self.phase = Phase::Start;
                        }
                    }
                    // The parent itself went: make it again and wait on.
                    Some(Ok(WatchEvent::Deleted)) => self.phase = Phase::Absent,
                    Some(Ok(WatchEvent::Data(_))) => {}
                    Some(Err(e)) => {
                        self.phase = Phase::Absent;
                        return Err(e.into());
                    }
                    None => return Err(RecipeError::WatchEnded),
                },
            }
        }
    }

    /// The value's znode.
    pub fn path(&self) -> &str {
        &self.path
    }
}
