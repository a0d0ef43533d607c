//! What a broker may change in the cluster state it is allowed to write.
//!
//! The ACL policy lets every broker write every partition's state
//! (`/topics/*/partitions/*`: a partition leader changes its in-sync set) and every warm
//! handover order (`/admin/handover/*`: the leader confirms the pre-sync). A pattern
//! cannot say "only the partition's leader" or "only the in-sync set", so without more a
//! broker (or whoever stole its key) could name itself leader of any partition, change
//! its replicas, or confirm a handover it is not part of. The zookeeper's core checks
//! every such write against the znode as it stands, in the same step as the write, with
//! [`check`]. Pure: the znode's data now and the data written in, a refusal out.

use super::handover::HandoverOrder;
use super::{HANDOVERS, TOPICS};
use pehra_shared::wire::{self, PartitionMetadata};

/// Whether broker `broker` may replace the data of `path` (now `current`, `None` if the
/// znode does not exist) with `new`. `Ok` for paths this does not govern; `Err` with the
/// reason otherwise.
pub fn check(broker: u32, path: &str, current: Option<&[u8]>, new: &[u8]) -> Result<(), String> {
    if is_partition_path(path) {
        return partition(broker, path, current, new);
    }
    if path
        .strip_prefix(HANDOVERS)
        .and_then(|rest| rest.strip_prefix('/'))
        .is_some_and(|name| !name.is_empty() && !name.contains('/'))
    {
        return handover(broker, path, current, new);
    }
    Ok(())
}

/// `/topics/{topic}/partitions/{n}`.
fn is_partition_path(path: &str) -> bool {
    let Some(rest) = path.strip_prefix(TOPICS).and_then(|r| r.strip_prefix('/')) else {
        return false;
    };
    let parts: Vec<&str> = rest.split('/').collect();
    parts.len() == 3 && parts[1] == "partitions" && parts[2].parse::<u32>().is_ok()
}

/// A partition's state: a replica may only raise the leader epoch (repairing one that
/// went back, with nothing else changed); the leader may change the in-sync set (within
/// the replicas, keeping itself) and shrink the eligible leader replicas. Nobody but the
/// controller names leaders or replicas.
fn partition(broker: u32, path: &str, current: Option<&[u8]>, new: &[u8]) -> Result<(), String> {
    let refuse = |why: String| Err(format!("broker {broker} may not write {path}: {why}"));
    let Some(current) = current.and_then(|d| wire::decode::<PartitionMetadata>(d).ok()) else {
        return refuse("it holds no partition state".into());
    };
    let Ok(new) = wire::decode::<PartitionMetadata>(new) else {
        return refuse("the data is not a partition state".into());
    };
    if !current.replicas.contains(&broker) {
        return refuse(format!("it is not a replica ({:?})", current.replicas));
    }
    if new.partition != current.partition
        || new.replicas != current.replicas
        || new.leader != current.leader
    {
        return refuse("only the controller changes the leader or the replicas".into());
    }
    if new.leader_epoch != current.leader_epoch {
        if new.leader_epoch < current.leader_epoch {
            return refuse(format!(
                "the leader epoch may not go back ({} -> {})",
                current.leader_epoch, new.leader_epoch
            ));
        }
        if new.isr != current.isr || new.elr != current.elr {
            return refuse("an epoch repair changes nothing but the epoch".into());
        }
        return Ok(());
    }
    if new.isr == current.isr && new.elr == current.elr {
        return Ok(());
    }
    if current.leader != Some(broker) {
        return refuse(format!(
            "only the partition's leader ({}) changes its in-sync replicas",
            current
                .leader
                .map_or_else(|| "none".to_string(), |l| l.to_string())
        ));
    }
    let mut seen = Vec::new();
    for r in &new.isr {
        if !current.replicas.contains(r) || seen.contains(r) {
            return refuse(format!(
                "in-sync replicas {:?} are not distinct replicas",
                new.isr
            ));
        }
        seen.push(*r);
    }
    if !new.isr.contains(&broker) {
        return refuse("the leader stays in its in-sync replicas".into());
    }
    if new.elr.iter().any(|r| !current.elr.contains(r)) {
        return refuse("only the controller adds eligible leader replicas".into());
    }
    Ok(())
}

/// A warm handover order: only the leader the pre-sync was started for confirms it, and
/// the confirmation (`ready_log_end`) is all it adds.
fn handover(broker: u32, path: &str, current: Option<&[u8]>, new: &[u8]) -> Result<(), String> {
    let refuse = |why: &str| Err(format!("broker {broker} may not write {path}: {why}"));
    let Some(current) = current.and_then(|d| wire::decode::<HandoverOrder>(d).ok()) else {
        return refuse("it holds no handover order");
    };
    let Ok(new) = wire::decode::<HandoverOrder>(new) else {
        return refuse("the data is not a handover order");
    };
    match current.presync {
        Some(presync) if presync.leader == broker => {}
        Some(_) => return refuse("the pre-sync is another broker's to confirm"),
        None => return refuse("no pre-sync was started"),
    }
    let confirmed = HandoverOrder {
        ready_log_end: new.ready_log_end,
        ..current
    };
    if new.ready_log_end.is_none() || new != confirmed {
        return refuse("a broker only confirms the pre-sync (ready_log_end)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handover::{HandoverReason, PreSync};

    fn meta(leader: Option<u32>, epoch: u32, isr: &[u32], elr: &[u32]) -> Vec<u8> {
        wire::encode(&PartitionMetadata {
            partition: 0,
            leader,
            leader_epoch: epoch,
            replicas: vec![1, 2, 3],
            isr: isr.to_vec(),
            elr: elr.to_vec(),
        })
        .unwrap()
    }

    const P: &str = "/topics/t/partitions/0";

    #[test]
    fn only_the_leader_changes_the_isr_and_nobody_names_leaders() {
        let now = meta(Some(1), 4, &[1, 2, 3], &[]);
        // The leader drops and re-adds a follower.
        assert!(check(1, P, Some(&now), &meta(Some(1), 4, &[1, 3], &[])).is_ok());
        // A follower may not, nor may it make itself leader, nor a non-replica anything.
        let e = check(2, P, Some(&now), &meta(Some(1), 4, &[1, 2], &[])).unwrap_err();
        assert!(e.contains("only the partition's leader (1)"), "{e}");
        assert!(check(2, P, Some(&now), &meta(Some(2), 5, &[2], &[])).is_err());
        assert!(check(9, P, Some(&now), &meta(Some(1), 4, &[1], &[])).is_err());
        // The leader may not drop itself, add a non-replica, or add to the ELR.
        assert!(check(1, P, Some(&now), &meta(Some(1), 4, &[2, 3], &[])).is_err());
        assert!(check(1, P, Some(&now), &meta(Some(1), 4, &[1, 7], &[])).is_err());
        assert!(check(1, P, Some(&now), &meta(Some(1), 4, &[1], &[2])).is_err());
        // A leader adding a follower back empties the ELR.
        let below = meta(Some(1), 4, &[1], &[2]);
        assert!(check(1, P, Some(&below), &meta(Some(1), 4, &[1, 3], &[])).is_ok());
        // Any replica repairs an epoch that went back (up only, nothing else changed).
        assert!(check(3, P, Some(&now), &meta(Some(1), 9, &[1, 2, 3], &[])).is_ok());
        assert!(check(3, P, Some(&now), &meta(Some(1), 3, &[1, 2, 3], &[])).is_err());
        assert!(check(3, P, Some(&now), &meta(Some(1), 9, &[1, 3], &[])).is_err());
        // Not a partition state, or no znode.
        assert!(check(1, P, Some(&now), b"junk").is_err());
        assert!(check(1, P, None, &now).is_err());
        // Other paths are not this check's business.
        assert!(check(1, "/topics/t", Some(b"x"), b"y").is_ok());
        assert!(check(1, "/topics/t/partitions", Some(b"x"), b"y").is_ok());
    }

    #[test]
    fn only_the_handing_over_leader_confirms_a_pre_sync_and_only_that() {
        let order = HandoverOrder {
            reason: HandoverReason::Operator,
            to: None,
            presync: Some(PreSync {
                leader: 1,
                candidate: 2,
                leader_epoch: 4,
            }),
            ready_log_end: None,
        };
        let path = crate::handover_path("t", 0);
        let now = wire::encode(&order).unwrap();
        let confirmed = wire::encode(&HandoverOrder {
            ready_log_end: Some(10),
            ..order.clone()
        })
        .unwrap();
        assert!(check(1, &path, Some(&now), &confirmed).is_ok());
        let e = check(2, &path, Some(&now), &confirmed).unwrap_err();
        assert!(e.contains("another broker's"), "{e}");
        // The leader may not retarget the order.
        let retargeted = wire::encode(&HandoverOrder {
            ready_log_end: Some(10),
            to: Some(3),
            ..order.clone()
        })
        .unwrap();
        assert!(check(1, &path, Some(&now), &retargeted).is_err());
        // Nor confirm an order whose pre-sync has not started.
        let unstarted = wire::encode(&HandoverOrder {
            presync: None,
            ..order
        })
        .unwrap();
        assert!(check(1, &path, Some(&unstarted), &confirmed).is_err());
    }
}
