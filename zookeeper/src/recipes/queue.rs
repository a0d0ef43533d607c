//! The pattern shared by [`election`](super::election) and [`lock`](super::lock): a
//! queue of ephemeral-sequential znodes under one directory, served lowest sequence
//! number first, where each waiter watches only its immediate predecessor. When a znode
//! goes, exactly one waiter (its successor) is woken: no herd effect.

use super::{child_path, session_ended, RecipeError, Result};
use crate::client::{Client, WatchEvent};
use std::sync::atomic::{AtomicU64, Ordering};

/// The sequence number of a child named `prefix` + 10 digits, or `None` for any other
/// child (so foreign znodes in the directory are ignored).
pub(super) fn sequence(name: &str, prefix: &str) -> Option<u64> {
    let digits = name.strip_prefix(prefix)?;
    if digits.len() < 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The queue's members (children of `dir` named `prefix` + sequence), in order.
pub(super) async fn members(client: &Client, dir: &str, prefix: &str) -> Result<Vec<String>> {
    let (children, _) = client.get_children(dir).await?;
    Ok(order(children, prefix))
}

/// Keeps the children that are queue members and sorts them by sequence number.
pub(super) fn order(children: Vec<String>, prefix: &str) -> Vec<String> {
    let mut queue: Vec<(u64, String)> = children
        .into_iter()
        .filter_map(|c| sequence(&c, prefix).map(|s| (s, c)))
        .collect();
    queue.sort();
    queue.into_iter().map(|(_, c)| c).collect()
}

/// What [`check`] found.
pub(super) enum Turn {
    /// `me` is first in the queue.
    First,
    /// `me` waits behind this znode (its full path).
    Behind(String),
}

/// Where `me` (a child name of `dir`) stands in the queue.
pub(super) async fn check(client: &Client, dir: &str, prefix: &str, me: &str) -> Result<Turn> {
    let queue = members(client, dir, prefix).await?;
    match queue.iter().position(|c| c == me) {
        None => Err(RecipeError::NodeGone(child_path(dir, me))),
        Some(0) => Ok(Turn::First),
        Some(i) => Ok(Turn::Behind(child_path(dir, &queue[i - 1]))),
    }
}

/// Waits until `me` is first in the queue. Watches only the immediate predecessor:
/// when it goes, the queue is read again (the predecessor may have left while others
/// are still ahead), and the new predecessor is watched. `wakeups` counts the times a
/// watch woke this waiter (a predecessor's deletion notified after the watch began).
///
/// Fails with [`RecipeError::NodeGone`] if `me` disappears, and
/// [`RecipeError::SessionEnded`] if the session ends while waiting. Cancel-safe: it
/// only reads and watches.
pub(super) async fn wait_first(
    client: &Client,
    dir: &str,
    prefix: &str,
    me: &str,
    wakeups: &AtomicU64,
) -> Result<()> {
    loop {
        let predecessor = match check(client, dir, prefix, me).await? {
            Turn::First => return Ok(()),
            Turn::Behind(p) => p,
        };
        let mut watch = client.watch_data(&predecessor).await?;
        let mut first = true;
        loop {
            let event = tokio::select! {
                event = watch.next() => event,
                () = session_ended(client) => return Err(RecipeError::SessionEnded),
            };
            match event {
                // The predecessor is there (first event) or its data changed: keep waiting.
                Some(Ok(WatchEvent::Data(_))) | Some(Ok(WatchEvent::Children(_))) => {}
                Some(Ok(WatchEvent::Deleted)) => {
                    // Gone before the watch began (first event) is not a wakeup.
                    if !first {
                        wakeups.fetch_add(1, Ordering::SeqCst);
                    }
                    break;
                }
                Some(Err(e)) => return Err(e.into()),
                None => return Err(RecipeError::WatchEnded),
            }
            first = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_by_sequence_and_ignores_foreign_children() {
        let children = vec![
            "n-0000000010".to_string(),
            "x-0000000001".to_string(),
            "n-0000000002".to_string(),
            "n-abc".to_string(),
            "n-00000000100".to_string(),
            "ready".to_string(),
        ];
        assert_eq!(
            order(children, "n-"),
            vec!["n-0000000002", "n-0000000010", "n-00000000100"]
        );
        assert_eq!(sequence("lock-0000000007", "lock-"), Some(7));
        assert_eq!(sequence("lock-7", "lock-"), None);
    }
}
