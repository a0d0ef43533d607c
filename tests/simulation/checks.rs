//! What is checked at the end of every run.

use crate::linearizability::is_linearizable;
use crate::simulation::cluster::{History, PARTITIONS};
use std::collections::BTreeMap;

/// Every check; the first failure, described.
pub fn all(h: &History) -> Result<(), String> {
    records(h)?;
    epochs(h)?;
    zookeeper(h)
}

/// No acknowledged record lost or moved, none duplicated, each partition in order.
fn records(h: &History) -> Result<(), String> {
    let read = h.read_back.as_ref().ok_or("the consumer did not finish")?;
    for partition in 0..PARTITIONS {
        let got = read.get(&partition).map(Vec::as_slice).unwrap_or(&[]);
        for pair in got.windows(2) {
            if pair[1].0 <= pair[0].0 {
                return Err(format!(
                    "partition {partition}: offsets out of order: {pair:?}"
                ));
            }
            if pair[1].1 <= pair[0].1 {
                return Err(format!(
                    "partition {partition}: record {} at offset {} after record {} at offset {} (duplicate or out of order)",
                    pair[1].1, pair[1].0, pair[0].1, pair[0].0
                ));
            }
        }
        let at: BTreeMap<u64, u64> = got.iter().copied().collect();
        for acked in h.acked.iter().filter(|a| a.partition == partition) {
            match at.get(&acked.offset) {
                Some(seq) if *seq == acked.seq => {}
                Some(seq) => {
                    return Err(format!(
                        "partition {partition}: record {} was acknowledged at offset {} (epoch {}), which now holds record {seq}",
                        acked.seq, acked.offset, acked.epoch
                    ))
                }
                None => {
                    return Err(format!(
                        "partition {partition}: record {} acknowledged at offset {} (epoch {}) is lost or unreadable (read back {} records up to offset {:?}; last read error: {})",
                        acked.seq,
                        acked.offset,
                        acked.epoch,
                        got.len(),
                        got.last().map(|r| r.0),
                        h.read_errors.get(&partition).map_or("none", String::as_str)
                    ))
                }
            }
        }
    }
    Ok(())
}

/// Leader epochs never go backwards: as read from the zookeeper, and in the answers to
/// the producer.
fn epochs(h: &History) -> Result<(), String> {
    for (partition, seen) in &h.epochs {
        if let Some(w) = seen.windows(2).find(|w| w[1] < w[0]) {
            return Err(format!(
                "partition {partition}: the leader epoch went back from {} to {} in the zookeeper",
                w[0], w[1]
            ));
        }
    }
    for partition in 0..PARTITIONS {
        let mut last = 0;
        for a in h.acked.iter().filter(|a| a.partition == partition) {
            if a.epoch < last {
                return Err(format!(
                    "partition {partition}: record {} acknowledged in epoch {} after one in epoch {last}",
                    a.seq, a.epoch
                ));
            }
            last = a.epoch;
        }
    }
    Ok(())
}

/// The most operations of one znode checked.
const MAX_OPS: usize = 120;

/// The zookeeper's history of the register workload is linearizable (up to each
/// znode's first write with an unknown outcome).
fn zookeeper(h: &History) -> Result<(), String> {
    for (key, ops) in &h.zk_ops {
        // The checker takes at most 128 operations: the history is cut before the
        // 121st call too. Cutting at a time T (keeping what returned before T) is sound:
        // everything dropped was called after T, so it comes after all that is kept.
        let mut calls: Vec<_> = ops.iter().map(|op| op.call).collect();
        calls.sort();
        let cut = [h.zk_cut.get(key).copied(), calls.get(MAX_OPS).copied()]
            .into_iter()
            .flatten()
            .min();
        let kept: Vec<_> = match cut {
            Some(cut) => ops.iter().filter(|op| op.ret < cut).cloned().collect(),
            None => ops.clone(),
        };
        if !is_linearizable(&kept) {
            return Err(format!(
                "zookeeper: the history of {key} ({} operations) is not linearizable: {kept:#?}",
                kept.len()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulation::cluster::Acked;

    /// Two records of partition 0 acknowledged at offsets 0 and 1, read back as `read`
    /// (partition 1 empty).
    fn history(read: Vec<(u64, u64)>) -> History {
        let acked = |seq, offset| Acked {
            partition: 0,
            seq,
            offset,
            epoch: 0,
        };
        History {
            acked: vec![acked(0, 0), acked(1, 1)],
            read_back: Some(BTreeMap::from([(0, read), (1, Vec::new())])),
            ..History::default()
        }
    }

    #[test]
    fn the_checks_catch_a_lost_a_moved_a_duplicated_and_a_reordered_record() {
        assert_eq!(records(&history(vec![(0, 0), (1, 1)])), Ok(()));
        let lost = records(&history(vec![(0, 0)])).unwrap_err();
        assert!(lost.contains("is lost"), "{lost}");
        let moved = records(&history(vec![(0, 0), (1, 2), (2, 1)])).unwrap_err();
        assert!(moved.contains("out of order"), "{moved}");
        let duplicated = records(&history(vec![(0, 0), (1, 1), (2, 1)])).unwrap_err();
        assert!(duplicated.contains("duplicate"), "{duplicated}");
        let unread = records(&History::default()).unwrap_err();
        assert!(unread.contains("did not finish"), "{unread}");
    }

    #[test]
    fn the_checks_catch_an_epoch_going_back() {
        let mut h = History::default();
        h.epochs.insert(0, vec![0, 2, 1]);
        assert!(epochs(&h).unwrap_err().contains("went back from 2 to 1"));
    }
}
