//! Group membership (seed 004, "Group Membership"): each member is an ephemeral znode
//! `group/<member>` holding the member's data. A member leaves explicitly (the znode is
//! deleted) or implicitly when its process dies (the session expires and the znode goes
//! with it). Anyone can list the members or follow the member set as it changes.
//!
//! ```no_run
//! # async fn f(client: std::sync::Arc<pehra_zookeeper::Client>) -> pehra_zookeeper::recipes::Result<()> {
//! use pehra_zookeeper::recipes::Group;
//! let mut members = Group::watch_members(&client, "/brokers/ids").await?;
//! let me = Group::join(client.clone(), "/brokers/ids", "7", b"10.0.0.7:5683").await?;
//! while let Some(set) = members.next().await {
//!     println!("members now: {:?}", set?);
//! }
//! # Ok(()) }
//! ```

use super::{check_name, child_path, ensure_path, RecipeError, Result};
use crate::client::{Client, CreateMode, Watch, WatchEvent};
use pehra_shared::wire::{ErrorKind, Stat};
use std::sync::Arc;

/// A group of members under one znode.
pub struct Group;

impl Group {
    /// Joins `group` (created, persistent, if missing) as `member` (one path
    /// component) with `data`. Fails with a `NodeExists` refusal if a member of that
    /// name is there already (possibly this member's previous session, not yet expired).
    pub async fn join(
        client: Arc<Client>,
        group: &str,
        member: &str,
        data: &[u8],
    ) -> Result<Member> {
        check_name(member)?;
        ensure_path(&client, group).await?;
        let path = client
            .create(&child_path(group, member), data, CreateMode::Ephemeral)
            .await?;
        Ok(Member {
            client,
            path,
            name: member.to_string(),
        })
    }

    /// The members of `group` now, sorted (none if the group does not exist).
    pub async fn members(client: &Client, group: &str) -> Result<Vec<String>> {
        match client.get_children(group).await {
            Ok((children, _)) => Ok(children),
            Err(e) if e.kind() == Some(ErrorKind::NotFound) => Ok(Vec::new()),
            Err(e) => Err(e.into()),
        }
    }

    /// A member's data, or `None` if it is not a member.
    pub async fn member_data(
        client: &Client,
        group: &str,
        member: &str,
    ) -> Result<Option<Vec<u8>>> {
        check_name(member)?;
        match client.get_data(&child_path(group, member)).await {
            Ok((data, _)) => Ok(Some(data)),
            Err(e) if e.kind() == Some(ErrorKind::NotFound) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Follows the member set of `group` (created if missing): the first item is the
    /// set now, then one per change.
    pub async fn watch_members(client: &Client, group: &str) -> Result<MembersWatch> {
        ensure_path(client, group).await?;
        Ok(MembersWatch {
            watch: client.watch_children(group).await?,
            last: None,
        })
    }
}

/// This process's membership in a group.
///
/// Dropping it does not leave the group: the member stays until [`Member::leave`] or
/// until its session ends.
pub struct Member {
    client: Arc<Client>,
    path: String,
    name: String,
}

impl Member {
    /// The member's name in the group.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The member's znode.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Replaces the member's data (fails with [`RecipeError::NodeGone`] if it is no
    /// longer a member).
    pub async fn set_data(&self, data: &[u8]) -> Result<Stat> {
        match self.client.set_data(&self.path, data, None).await {
            Ok(stat) => Ok(stat),
            Err(e) if e.kind() == Some(ErrorKind::NotFound) => {
                Err(RecipeError::NodeGone(self.path.clone()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Leaves the group explicitly.
    pub async fn leave(self) -> Result<()> {
        match self.client.delete(&self.path, None).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == Some(ErrorKind::NotFound) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member").field("path", &self.path).finish()
    }
}

/// The member set of a group as it changes (see [`Group::watch_members`]).
pub struct MembersWatch {
    watch: Watch,
    last: Option<Vec<String>>,
}

impl MembersWatch {
    /// The sorted member list: first the set when the watch began, then the set after
    /// each change (changes committed together may come as one; a set equal to the
    /// previous one is not repeated). `None` once the group znode is deleted or the
    /// client is shut down.
    pub async fn next(&mut self) -> Option<Result<Vec<String>>> {
        loop {
            match self.watch.next().await? {
                Ok(WatchEvent::Children(children)) => {
                    if self.last.as_ref() == Some(&children.children) {
                        continue;
                    }
                    self.last = Some(children.children.clone());
                    return Some(Ok(children.children));
                }
                Ok(WatchEvent::Deleted) => return None,
                Ok(WatchEvent::Data(_)) => continue,
                Err(e) => return Some(Err(e.into())),
            }
        }
    }
}
