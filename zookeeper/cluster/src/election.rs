//! Leader election and ISR upkeep for one partition: pure decisions, no I/O.
//!
//! The controller reads a partition's [`PartitionMetadata`], asks [`decide`] what it
//! should become given which brokers are live and which are shutting down, and writes
//! the answer back conditionally on the version it read.

use pehra_shared::wire::PartitionMetadata;
use rand::seq::IndexedRandom;
use rand::Rng;
use std::collections::BTreeSet;

/// What a [`decide`] did, for logging.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A new leader from the ISR (a clean election).
    Elected,
    /// A new leader from the eligible leader replicas (no in-sync replica was left; a
    /// clean election too: it has every acknowledged record).
    ElectedFromElr,
    /// A new leader from outside the ISR: records acknowledged by the old ISR may be lost.
    ElectedUnclean,
    /// The leader is gone and no in-sync replica is available: the partition is offline.
    Offline,
    /// Same leader; unavailable brokers left the ISR.
    IsrShrunk,
}

/// How `new` differs from `old` (both as [`decide`] returned them).
pub fn outcome(old: &PartitionMetadata, new: &PartitionMetadata) -> Outcome {
    match new.leader {
        None if old.leader.is_some() => Outcome::Offline,
        Some(l) if new.leader != old.leader || new.leader_epoch != old.leader_epoch => {
            if old.isr.contains(&l) {
                Outcome::Elected
            } else if old.elr.contains(&l) {
                Outcome::ElectedFromElr
            } else {
                Outcome::ElectedUnclean
            }
        }
        _ => Outcome::IsrShrunk,
    }
}

/// The partition's next state, or `None` if nothing needs to change.
///
/// A broker is *available* when it is `live` and not `shutting_down`; it is *eligible*
/// to lead when it is available and not in `ineligible` (the replicas that reported
/// that they lack acknowledged records: restarted behind the high watermark they last
/// knew, or with damage in their log; see [`super::RECOVERING`]). An ineligible replica
/// counts as absent from the ISR wherever someone else leads: it rejoins through its
/// leader once it has caught up.
///
/// - Leader present but unavailable (dead or shutting down), or alive but itself
///   ineligible while an eligible in-sync replica exists: a new leader is chosen
///   uniformly at random among the eligible in-sync replicas other than the old
///   leader, `leader_epoch + 1`, and unavailable or ineligible brokers leave the ISR.
///   With no such candidate: a leader that is alive stays (it cannot hand over; a
///   shutdown will time out; an ineligible one still has the most, and its ISR is left
///   as it is: it names the replicas that have every record, one of which takes over
///   once back); otherwise an eligible member of the ELR (below) is chosen the same way,
///   ISR = just it; with none, a dead leader gives `leader = None`, `leader_epoch + 1`,
///   the ISR kept as it was (it names who has every committed record, even those that
///   are ineligible now: the partition stays offline rather than lose acknowledged
///   records).
/// - No leader: elected the same way among the eligible in-sync replicas, then the ELR.
/// - With `unclean` and no clean candidate once the leader is gone: a random available
///   replica (eligible ones first), ISR = just it, ELR emptied, `leader_epoch + 1`
///   (committed records may be lost).
/// - Leader available: unavailable and ineligible brokers leave the ISR, but never the
///   leader and never the last member; the epoch stays.
///
/// The ELR (eligible leader replicas, Kafka's KIP-966; [`PartitionMetadata::elr`]):
/// brokers this decision takes out of the ISR join it when the ISR left is smaller than
/// `min_insync`, unless they reported lacking records: no acks=all record is acknowledged
/// while the ISR is below the minimum, so they hold every one that was. An ISR at or
/// above the minimum empties it (acks=all records may pass them from then on), and a
/// broker back in the ISR leaves it. With `min_insync` 1 the ELR stays empty.
///
/// Only replicas are ever elected, only available brokers are, an ineligible one only by
/// an unclean election, one outside the ISR and the ELR only by an unclean election, the
/// ISR never becomes empty (unless it was), and the epoch never decreases.
pub fn decide<R: Rng + ?Sized>(
    meta: &PartitionMetadata,
    live: &BTreeSet<u32>,
    shutting_down: &BTreeSet<u32>,
    ineligible: &BTreeSet<u32>,
    min_insync: u32,
    unclean: bool,
    rng: &mut R,
) -> Option<PartitionMetadata> {
    decide_with_lacking(
        meta,
        live,
        shutting_down,
        ineligible,
        ineligible,
        min_insync,
        unclean,
        rng,
    )
}

/// An ELR member that reports lacking records of this partition (`lacking`: a log cut
/// below the high watermark it knew, or damage; not the "logs not open yet" mark every
/// broker registers with) leaves the ELR for good: it catches up only to the high
/// watermark it last knew, which may be below the one at which it left the ISR, so "no
/// longer reported" does not prove it has every acknowledged record. It is protected
/// again only by rejoining the ISR. The partition with those members removed, if any
/// was there; [`decide`] then runs on it.
pub fn forget_lacking_elr(
    meta: &PartitionMetadata,
    lacking: &BTreeSet<u32>,
) -> Option<PartitionMetadata> {
    if !meta.elr.iter().any(|b| lacking.contains(b)) {
        return None;
    }
    Some(PartitionMetadata {
        elr: meta
            .elr
            .iter()
            .copied()
            .filter(|b| !lacking.contains(b))
            .collect(),
        ..meta.clone()
    })
}

/// [`decide`] telling apart, among the `ineligible` brokers (who may not lead now), those
/// that reported `lacking` records of this partition (a log below the high watermark it
/// knew, or damage). Only those are kept out of the ELR when they leave the ISR below its
/// minimum: a broker that is merely registering (its logs not open yet, the
/// `/brokers/recovering/{id}:*` mark) when the controller sees it leave still has every
/// record it had. Simulation seed 1575: broker 2 restarted and re-registered just before
/// the controller took it out of the ISR [2, 3] for its old session's expiry; with its
/// mark it did not join the ELR, the last in-sync replica then came back damaged, and
/// the partition stayed offline although broker 2 had every acknowledged record.
#[allow(clippy::too_many_arguments)]
pub fn decide_with_lacking<R: Rng + ?Sized>(
    meta: &PartitionMetadata,
    live: &BTreeSet<u32>,
    shutting_down: &BTreeSet<u32>,
    ineligible: &BTreeSet<u32>,
    lacking: &BTreeSet<u32>,
    min_insync: u32,
    unclean: bool,
    rng: &mut R,
) -> Option<PartitionMetadata> {
    let available = |b: u32| live.contains(&b) && !shutting_down.contains(&b);
    let eligible = |b: u32| available(b) && !ineligible.contains(&b);
    let in_replicas = |b: u32| meta.replicas.contains(&b);
    let among = |set: &[u32], old: Option<u32>| {
        let mut clean: Vec<u32> = set
            .iter()
            .copied()
            .filter(|&b| Some(b) != old && eligible(b) && in_replicas(b))
            .collect();
        clean.sort_unstable();
        clean.dedup();
        clean
    };
    let elr_after = |isr: &[u32]| next_elr(meta, isr, lacking, min_insync);
    match meta.leader {
        Some(leader)
            if available(leader)
                && in_replicas(leader)
                && (!ineligible.contains(&leader)
                    || (among(&meta.isr, Some(leader)).is_empty()
                        && meta.isr.iter().all(|&b| b == leader))) =>
        {
            if ineligible.contains(&leader) {
                // It lacks records, but no other replica is known to have them (it was
                // elected uncleanly, or is the only copy): it keeps what it has.
                return None;
            }
            let isr: Vec<u32> = meta
                .isr
                .iter()
                .copied()
                .filter(|&b| b == leader || eligible(b))
                .collect();
            if isr.is_empty() {
                return None;
            }
            let elr = elr_after(&isr);
            if isr.len() == meta.isr.len() && elr == meta.elr {
                return None;
            }
            Some(PartitionMetadata {
                isr,
                elr,
                ..meta.clone()
            })
        }
        old => {
            if let Some(&leader) = among(&meta.isr, old).choose(rng) {
                let isr: Vec<u32> = meta
                    .isr
                    .iter()
                    .copied()
                    .filter(|&b| b == leader || eligible(b))
                    .collect();
                let elr = elr_after(&isr);
                return Some(PartitionMetadata {
                    leader: Some(leader),
                    leader_epoch: meta.leader_epoch + 1,
                    isr,
                    elr,
                    ..meta.clone()
                });
            }
            // No clean candidate. A leader that is still alive (shutting down, or not a
            // replica any more) keeps the partition: it has the data. Not one that lacks
            // records others in the ISR have: the partition goes offline until one of
            // them is back (or an unclean election).
            if old.is_some_and(|l| live.contains(&l) && !ineligible.contains(&l)) {
                return None;
            }
            // A replica that left the ISR below its minimum has every acknowledged record.
            if let Some(&leader) = among(&meta.elr, old).choose(rng) {
                let isr = vec![leader];
                let elr = elr_after(&isr);
                return Some(PartitionMetadata {
                    leader: Some(leader),
                    leader_epoch: meta.leader_epoch + 1,
                    isr,
                    elr,
                    ..meta.clone()
                });
            }
            if unclean {
                let mut dirty: Vec<u32> = meta
                    .replicas
                    .iter()
                    .copied()
                    .filter(|&b| available(b))
                    .collect();
                dirty.sort_unstable();
                dirty.dedup();
                if dirty.iter().any(|&b| eligible(b)) {
                    dirty.retain(|&b| eligible(b));
                }
                if let Some(&leader) = dirty.choose(rng) {
                    return Some(PartitionMetadata {
                        leader: Some(leader),
                        leader_epoch: meta.leader_epoch + 1,
                        isr: vec![leader],
                        elr: Vec::new(),
                        ..meta.clone()
                    });
                }
            }
            // Offline: remember that there was a leader change (epoch), keep the ISR.
            old.map(|_| PartitionMetadata {
                leader: None,
                leader_epoch: meta.leader_epoch + 1,
                ..meta.clone()
            })
        }
    }
}

/// The ELR once the ISR is `isr` (see [`decide`]): empty at or above `min_insync`;
/// below it, the old ELR and the brokers that left the ISR (but not those that reported
/// lacking records), less those in the ISR and those no longer replicas; sorted.
pub fn next_elr(
    meta: &PartitionMetadata,
    isr: &[u32],
    ineligible: &BTreeSet<u32>,
    min_insync: u32,
) -> Vec<u32> {
    if isr.len() >= min_insync as usize {
        return Vec::new();
    }
    let left = meta
        .isr
        .iter()
        .filter(|b| !isr.contains(b) && !ineligible.contains(b));
    let mut elr: Vec<u32> = meta
        .elr
        .iter()
        .chain(left)
        .copied()
        .filter(|b| !isr.contains(b) && meta.replicas.contains(b))
        .collect();
    elr.sort_unstable();
    elr.dedup();
    elr
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use std::collections::BTreeMap;

    fn meta(leader: Option<u32>, epoch: u32, replicas: &[u32], isr: &[u32]) -> PartitionMetadata {
        PartitionMetadata {
            partition: 0,
            leader,
            leader_epoch: epoch,
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
            elr: Vec::new(),
        }
    }

    fn set(ids: &[u32]) -> BTreeSet<u32> {
        ids.iter().copied().collect()
    }

    fn rng() -> StdRng {
        StdRng::seed_from_u64(7)
    }

    fn none() -> BTreeSet<u32> {
        BTreeSet::new()
    }

    #[test]
    fn healthy_partition_is_left_alone() {
        let m = meta(Some(1), 4, &[1, 2, 3], &[1, 2, 3]);
        assert_eq!(
            decide(&m, &set(&[1, 2, 3]), &none(), &none(), 1, false, &mut rng()),
            None
        );
        // A live replica outside the ISR is not the controller's business.
        let m = meta(Some(1), 4, &[1, 2, 3], &[1, 2]);
        assert_eq!(
            decide(&m, &set(&[1, 2, 3]), &none(), &none(), 1, false, &mut rng()),
            None
        );
    }

    #[test]
    fn dead_follower_leaves_the_isr_without_an_epoch_change() {
        let m = meta(Some(1), 4, &[1, 2, 3], &[1, 2, 3]);
        let new =
            decide(&m, &set(&[1, 3]), &none(), &none(), 1, false, &mut rng()).expect("change");
        assert_eq!(new, meta(Some(1), 4, &[1, 2, 3], &[1, 3]));
        assert_eq!(outcome(&m, &new), Outcome::IsrShrunk);
        // A follower shutting down leaves too.
        let new = decide(
            &m,
            &set(&[1, 2, 3]),
            &set(&[3]),
            &none(),
            1,
            false,
            &mut rng(),
        )
        .expect("change");
        assert_eq!(new.isr, [1, 2]);
        assert_eq!(new.leader_epoch, 4);
    }

    #[test]
    fn the_leader_never_leaves_the_isr_and_the_isr_never_empties() {
        // The leader is the only ISR member left: nothing to remove.
        let m = meta(Some(1), 2, &[1, 2, 3], &[1]);
        assert_eq!(
            decide(&m, &set(&[1]), &none(), &none(), 1, false, &mut rng()),
            None
        );
        // An ISR that (wrongly) lacks the leader is not emptied either.
        let m = meta(Some(1), 2, &[1, 2, 3], &[2]);
        assert_eq!(
            decide(&m, &set(&[1]), &none(), &none(), 1, false, &mut rng()),
            None
        );
    }

    #[test]
    fn dead_leader_is_replaced_from_the_isr() {
        let m = meta(Some(1), 4, &[1, 2, 3], &[1, 2, 3]);
        let new =
            decide(&m, &set(&[2, 3]), &none(), &none(), 1, false, &mut rng()).expect("change");
        assert!(matches!(new.leader, Some(2 | 3)));
        assert_eq!(new.leader_epoch, 5);
        assert_eq!(new.isr, [2, 3]);
        assert_eq!(
            new.replicas,
            [1, 2, 3],
            "replicas are not the election's business"
        );
        assert_eq!(outcome(&m, &new), Outcome::Elected);
    }

    #[test]
    fn only_in_sync_available_replicas_are_candidates() {
        // 2 is live but out of sync, 3 in sync but dead, 4 in the ISR but not a replica.
        let m = meta(Some(1), 0, &[1, 2, 3, 5], &[1, 3, 4, 5]);
        for seed in 0..50 {
            let mut r = StdRng::seed_from_u64(seed);
            let new =
                decide(&m, &set(&[2, 4, 5]), &none(), &none(), 1, false, &mut r).expect("change");
            assert_eq!(new.leader, Some(5));
            assert_eq!(
                new.isr,
                [4, 5],
                "dead 1 and 3 leave; 4 is not ours to judge"
            );
        }
    }

    #[test]
    fn dead_leader_without_candidates_goes_offline_keeping_the_isr() {
        let m = meta(Some(1), 4, &[1, 2, 3], &[1, 3]);
        // 2 is live but not in sync: a clean election cannot use it.
        let new = decide(&m, &set(&[2]), &none(), &none(), 1, false, &mut rng()).expect("change");
        assert_eq!(new, meta(None, 5, &[1, 2, 3], &[1, 3]));
        assert_eq!(outcome(&m, &new), Outcome::Offline);
        // Offline stays offline without an epoch bump on every pass.
        assert_eq!(
            decide(&new, &set(&[2]), &none(), &none(), 1, false, &mut rng()),
            None
        );
        // Nobody at all.
        let new = decide(&m, &none(), &none(), &none(), 1, false, &mut rng()).expect("change");
        assert_eq!(new, meta(None, 5, &[1, 2, 3], &[1, 3]));
    }

    #[test]
    fn offline_partition_elects_when_an_isr_member_returns() {
        let m = meta(None, 5, &[1, 2, 3], &[1, 3]);
        assert_eq!(
            decide(&m, &set(&[2]), &none(), &none(), 1, false, &mut rng()),
            None
        );
        let new =
            decide(&m, &set(&[2, 3]), &none(), &none(), 1, false, &mut rng()).expect("change");
        assert_eq!(new, meta(Some(3), 6, &[1, 2, 3], &[3]));
        // Returning but already shutting down again: not elected.
        assert_eq!(
            decide(&m, &set(&[3]), &set(&[3]), &none(), 1, false, &mut rng()),
            None
        );
    }

    #[test]
    fn shutting_down_leader_hands_over_or_stays() {
        let m = meta(Some(1), 4, &[1, 2, 3], &[1, 2, 3]);
        let new = decide(
            &m,
            &set(&[1, 2, 3]),
            &set(&[1]),
            &none(),
            1,
            false,
            &mut rng(),
        )
        .expect("change");
        assert!(matches!(new.leader, Some(2 | 3)));
        assert_eq!(new.leader_epoch, 5);
        assert_eq!(new.isr, [2, 3], "the shutting-down broker leaves the ISR");
        // No one to hand over to: it keeps leading (the shutdown will time out).
        let m = meta(Some(1), 4, &[1, 2, 3], &[1]);
        assert_eq!(
            decide(
                &m,
                &set(&[1, 2, 3]),
                &set(&[1]),
                &none(),
                1,
                true,
                &mut rng()
            ),
            None,
            "not even an unclean election while the leader is alive"
        );
    }

    #[test]
    fn unclean_election_only_when_no_clean_candidate() {
        let m = meta(Some(1), 4, &[1, 2, 3], &[1, 3]);
        // A clean candidate exists: it wins even with unclean allowed.
        let new = decide(&m, &set(&[2, 3]), &none(), &none(), 1, true, &mut rng()).expect("change");
        assert_eq!((new.leader, new.isr.clone()), (Some(3), vec![3]));
        // None: the live out-of-sync replica takes over, alone in the ISR.
        let new = decide(&m, &set(&[2, 4]), &none(), &none(), 1, true, &mut rng()).expect("change");
        assert_eq!(new, meta(Some(2), 5, &[1, 2, 3], &[2]));
        assert_eq!(outcome(&m, &new), Outcome::ElectedUnclean);
        // From offline as well.
        let off = meta(None, 5, &[1, 2, 3], &[1]);
        let new = decide(&off, &set(&[3]), &none(), &none(), 1, true, &mut rng()).expect("change");
        assert_eq!(new, meta(Some(3), 6, &[1, 2, 3], &[3]));
        // Nobody available: offline, ISR kept.
        let new = decide(&m, &set(&[4]), &set(&[2]), &none(), 1, true, &mut rng()).expect("change");
        assert_eq!(new, meta(None, 5, &[1, 2, 3], &[1, 3]));
    }

    #[test]
    fn a_leader_that_is_not_a_replica_is_replaced() {
        let m = meta(Some(9), 1, &[1, 2, 3], &[1, 2, 3]);
        let new = decide(
            &m,
            &set(&[1, 2, 3, 9]),
            &none(),
            &none(),
            1,
            false,
            &mut rng(),
        )
        .expect("change");
        assert!(matches!(new.leader, Some(1..=3)));
        assert_eq!(new.leader_epoch, 2);
    }

    #[test]
    fn the_choice_is_uniform_among_candidates() {
        let m = meta(Some(1), 0, &[1, 2, 3, 4, 5, 6], &[1, 2, 3, 4, 6]);
        // Candidates: 2, 3, 4 (1 dead, 5 out of sync, 6 shutting down).
        let live = set(&[2, 3, 4, 5, 6]);
        let shutting = set(&[6]);
        let mut r = StdRng::seed_from_u64(2026);
        let mut counts = BTreeMap::new();
        for _ in 0..300 {
            let new = decide(&m, &live, &shutting, &none(), 1, false, &mut r).expect("change");
            *counts.entry(new.leader.expect("elected")).or_insert(0) += 1;
            assert_eq!(new.isr, [2, 3, 4]);
        }
        assert_eq!(counts.keys().copied().collect::<Vec<_>>(), [2, 3, 4]);
        for (&id, &n) in &counts {
            assert!(n >= 60, "broker {id} chosen only {n} of 300 times");
        }
    }

    #[test]
    fn an_ineligible_replica_is_never_elected_while_an_eligible_one_is_in_sync() {
        // All three were in sync when everything stopped; 1 came back behind (or
        // damaged) and reports it.
        let off = meta(None, 5, &[1, 2, 3], &[1, 2, 3]);
        let behind = set(&[1]);
        // Only 1 is back: the partition stays offline rather than lose records.
        assert_eq!(
            decide(&off, &set(&[1]), &none(), &behind, 1, false, &mut rng()),
            None
        );
        // 2 is back too: 2 leads, and 1 is not counted in the ISR until it catches up.
        for seed in 0..20 {
            let mut r = StdRng::seed_from_u64(seed);
            let new =
                decide(&off, &set(&[1, 2]), &none(), &behind, 1, false, &mut r).expect("change");
            assert_eq!(new, meta(Some(2), 6, &[1, 2, 3], &[2]));
        }
        // A dead leader whose only live in-sync replica is ineligible: offline, ISR kept.
        let m = meta(Some(2), 4, &[1, 2, 3], &[1, 2]);
        let new = decide(&m, &set(&[1]), &none(), &behind, 1, false, &mut rng()).expect("change");
        assert_eq!(new, meta(None, 5, &[1, 2, 3], &[1, 2]));
        assert_eq!(outcome(&m, &new), Outcome::Offline);
        // Unless the operator allows an unclean election.
        let new = decide(&m, &set(&[1]), &none(), &behind, 1, true, &mut rng()).expect("change");
        assert_eq!(new, meta(Some(1), 5, &[1, 2, 3], &[1]));
        // Even then an eligible replica outside the ISR is preferred.
        let m = meta(Some(2), 4, &[1, 2, 3], &[2]);
        let new = decide(&m, &set(&[1, 3]), &none(), &behind, 1, true, &mut rng()).expect("change");
        assert_eq!(new.leader, Some(3));
    }

    #[test]
    fn an_ineligible_follower_leaves_the_isr_and_an_ineligible_leader_hands_over() {
        // A live leader: an ineligible follower stops counting in the ISR.
        let m = meta(Some(1), 4, &[1, 2, 3], &[1, 2, 3]);
        let new = decide(
            &m,
            &set(&[1, 2, 3]),
            &none(),
            &set(&[3]),
            1,
            false,
            &mut rng(),
        )
        .expect("change");
        assert_eq!(new, meta(Some(1), 4, &[1, 2, 3], &[1, 2]));
        // The leader found damage in its log: an eligible in-sync replica takes over.
        let new = decide(
            &m,
            &set(&[1, 2, 3]),
            &none(),
            &set(&[1]),
            1,
            false,
            &mut rng(),
        )
        .expect("change");
        assert!(matches!(new.leader, Some(2 | 3)), "{new:?}");
        assert_eq!(new.leader_epoch, 5);
        assert_eq!(new.isr.len(), 2);
        assert!(!new.isr.contains(&1));
        // Nobody else has every record: it keeps leading (it has the most).
        let m = meta(Some(1), 4, &[1, 2, 3], &[1]);
        assert_eq!(
            decide(
                &m,
                &set(&[1, 2, 3]),
                &none(),
                &set(&[1]),
                1,
                false,
                &mut rng()
            ),
            None
        );
        // Restarted behind while the zookeeper still names it leader, the others down:
        // offline (not served by a replica that lacks records), the ISR kept...
        let m = meta(Some(1), 0, &[1, 2, 3], &[1, 2, 3]);
        let off =
            decide(&m, &set(&[1]), &none(), &set(&[1]), 1, false, &mut rng()).expect("change");
        assert_eq!(off, meta(None, 1, &[1, 2, 3], &[1, 2, 3]));
        assert_eq!(
            decide(&off, &set(&[1]), &none(), &set(&[1]), 1, false, &mut rng()),
            None,
            "and it stays so"
        );
        // ...and the first complete one back takes over.
        let new = decide(
            &off,
            &set(&[1, 2]),
            &none(),
            &set(&[1]),
            1,
            false,
            &mut rng(),
        )
        .expect("change");
        assert_eq!(new, meta(Some(2), 2, &[1, 2, 3], &[2]));
        // Forced: it leads alone, and then keeps leading (no epoch bump on every pass).
        let forced =
            decide(&m, &set(&[1]), &none(), &set(&[1]), 1, true, &mut rng()).expect("change");
        assert_eq!(forced, meta(Some(1), 1, &[1, 2, 3], &[1]));
        assert_eq!(
            decide(
                &forced,
                &set(&[1]),
                &none(),
                &set(&[1]),
                1,
                true,
                &mut rng()
            ),
            None
        );
    }

    #[test]
    fn random_histories_keep_the_invariants() {
        let mut r = StdRng::seed_from_u64(99);
        let replicas = [1, 2, 3, 4];
        for _ in 0..200 {
            let mut m = meta(Some(1), 0, &replicas, &replicas);
            for _ in 0..30 {
                let live: BTreeSet<u32> = replicas
                    .iter()
                    .copied()
                    .filter(|_| r.next_u32() % 3 != 0)
                    .collect();
                let shutting: BTreeSet<u32> = replicas
                    .iter()
                    .copied()
                    .filter(|_| r.next_u32() % 5 == 0)
                    .collect();
                let ineligible: BTreeSet<u32> = replicas
                    .iter()
                    .copied()
                    .filter(|_| r.next_u32() % 4 == 0)
                    .collect();
                let unclean = r.next_u32() % 4 == 0;
                if let Some(new) = decide(&m, &live, &shutting, &ineligible, 1, unclean, &mut r) {
                    assert!(!new.isr.is_empty(), "{m:?} -> {new:?}");
                    assert!(new.leader_epoch >= m.leader_epoch);
                    if new.leader != m.leader {
                        assert_eq!(new.leader_epoch, m.leader_epoch + 1);
                    }
                    if let Some(l) = new.leader.filter(|_| new.leader != m.leader) {
                        assert!(replicas.contains(&l));
                        assert!(live.contains(&l) && !shutting.contains(&l));
                        assert!(new.isr.contains(&l));
                        assert!(
                            unclean || m.isr.contains(&l) || m.elr.contains(&l),
                            "{m:?} -> {new:?}"
                        );
                        assert!(
                            unclean || !ineligible.contains(&l),
                            "an ineligible replica was elected: {m:?} -> {new:?} ({ineligible:?})"
                        );
                    }
                    m = new;
                }
                // Followers catching up again, as a leader would add them.
                if let Some(l) = m.leader {
                    if live.contains(&l) {
                        for &b in &replicas {
                            if live.contains(&b) && !m.isr.contains(&b) && r.next_u32() % 2 == 0 {
                                m.isr.push(b);
                                m.elr.clear();
                            }
                        }
                    }
                }
            }
        }
    }

    fn with_elr(mut m: PartitionMetadata, elr: &[u32]) -> PartitionMetadata {
        m.elr = elr.to_vec();
        m
    }

    #[test]
    fn replicas_leaving_the_isr_below_its_minimum_become_eligible_leader_replicas() {
        // Leader 1 alive, follower 2 dead: ISR [1] is below the minimum 2, so 2 (which
        // has every acks=all record: none can be acknowledged from now on) joins the ELR.
        let m = meta(Some(1), 4, &[1, 2, 3], &[1, 2]);
        let new = decide(&m, &set(&[1, 3]), &none(), &none(), 2, false, &mut rng());
        assert_eq!(
            new,
            Some(with_elr(meta(Some(1), 4, &[1, 2, 3], &[1]), &[2]))
        );
        // At the minimum the ISR keeps acknowledging without the one that left: no ELR.
        let m = meta(Some(1), 4, &[1, 2, 3], &[1, 2, 3]);
        let new = decide(&m, &set(&[1, 3]), &none(), &none(), 2, false, &mut rng());
        assert_eq!(new, Some(meta(Some(1), 4, &[1, 2, 3], &[1, 3])));
        // One that reported lacking records does not join.
        let m = meta(Some(1), 4, &[1, 2, 3], &[1, 2]);
        let new = decide(
            &m,
            &set(&[1, 2, 3]),
            &none(),
            &set(&[2]),
            2,
            false,
            &mut rng(),
        );
        assert_eq!(new, Some(meta(Some(1), 4, &[1, 2, 3], &[1])));
        // The ELR never forms with a minimum of 1.
        let m = meta(Some(1), 4, &[1, 2, 3], &[1, 2]);
        let new = decide(&m, &set(&[1, 3]), &none(), &none(), 1, false, &mut rng());
        assert_eq!(new, Some(meta(Some(1), 4, &[1, 2, 3], &[1])));
    }

    #[test]
    fn a_broker_merely_registering_when_it_leaves_the_isr_still_joins_the_elr() {
        // Seed 1575: leader 2 of ISR [2, 3] restarted; its new registration (logs not
        // open yet: ineligible, but it reported no lack) comes before the controller
        // sees the old session gone. 3 takes over alone and 2 joins the ELR...
        let m = meta(Some(2), 0, &[1, 2, 3], &[2, 3]);
        let new = decide_with_lacking(
            &m,
            &set(&[2, 3]),
            &none(),
            &set(&[2]),
            &none(),
            2,
            false,
            &mut rng(),
        )
        .expect("3 takes over");
        assert_eq!(new, with_elr(meta(Some(3), 1, &[1, 2, 3], &[3]), &[2]));
        // ...so when 3 is gone (and comes back damaged), 2, its logs now checked, leads.
        let again = decide_with_lacking(
            &new,
            &set(&[1, 2, 3]),
            &none(),
            &set(&[3]),
            &set(&[3]),
            2,
            false,
            &mut rng(),
        );
        assert_eq!(again.and_then(|m| m.leader), None, "3 still leads: alive");
        let m = with_elr(meta(None, 2, &[1, 2, 3], &[3]), &[2]);
        let elected = decide_with_lacking(
            &m,
            &set(&[1, 2, 3]),
            &none(),
            &set(&[3]),
            &set(&[3]),
            2,
            false,
            &mut rng(),
        )
        .expect("elected");
        assert_eq!(elected.leader, Some(2));
        // Had 2 reported lacking records, it would not have joined.
        let m = meta(Some(2), 0, &[1, 2, 3], &[2, 3]);
        let new = decide_with_lacking(
            &m,
            &set(&[2, 3]),
            &none(),
            &set(&[2]),
            &set(&[2]),
            2,
            false,
            &mut rng(),
        );
        assert_eq!(new, Some(meta(Some(3), 1, &[1, 2, 3], &[3])));
    }

    #[test]
    fn a_dead_leader_leaving_the_isr_below_its_minimum_joins_the_elr() {
        // Seed 1043 of the simulation: leader 1 dies, 3 takes over alone.
        let m = meta(Some(1), 1, &[1, 2, 3], &[3, 1]);
        let new = decide(&m, &set(&[2, 3]), &none(), &none(), 2, false, &mut rng());
        assert_eq!(
            new,
            Some(with_elr(meta(Some(3), 2, &[1, 2, 3], &[3]), &[1]))
        );
    }

    #[test]
    fn with_no_in_sync_replica_left_an_eligible_leader_replica_is_elected() {
        // ...then 3 dies too, and 1 is back: it has every acknowledged record.
        let m = with_elr(meta(Some(3), 2, &[1, 2, 3], &[3]), &[1]);
        let new =
            decide(&m, &set(&[1, 2]), &none(), &none(), 2, false, &mut rng()).expect("elected");
        assert_eq!(new, with_elr(meta(Some(1), 3, &[1, 2, 3], &[1]), &[3]));
        assert_eq!(outcome(&m, &new), Outcome::ElectedFromElr);
        // Never 2, which was not in the ISR when it fell below the minimum.
        let m = with_elr(meta(Some(3), 2, &[1, 2, 3], &[3]), &[1]);
        let new = decide(&m, &set(&[2]), &none(), &none(), 2, false, &mut rng());
        assert_eq!(new, Some(with_elr(meta(None, 3, &[1, 2, 3], &[3]), &[1])));
        // Nor an ELR member that reports lacking records (restarted behind its high
        // watermark): offline until 3 (or a clean 1) is back...
        let new = decide(&m, &set(&[1, 2]), &none(), &set(&[1]), 2, false, &mut rng());
        assert_eq!(new, Some(with_elr(meta(None, 3, &[1, 2, 3], &[3]), &[1])));
        // ...and it leaves the ELR for good: caught up to the high watermark it knew, it
        // is no longer reported, but that mark may be older than the one it left at.
        let offline = forget_lacking_elr(&new.expect("offline"), &set(&[1])).expect("pruned");
        assert_eq!(offline, meta(None, 3, &[1, 2, 3], &[3]));
        assert_eq!(
            decide(
                &offline,
                &set(&[1, 2]),
                &none(),
                &none(),
                2,
                false,
                &mut rng()
            ),
            None
        );
        // An ISR member back wins.
        let back = decide(
            &offline,
            &set(&[1, 3]),
            &none(),
            &none(),
            2,
            false,
            &mut rng(),
        );
        assert_eq!(back, Some(meta(Some(3), 4, &[1, 2, 3], &[3])));
        // Only members reported lacking leave; none reported, nothing to write.
        let m = with_elr(meta(Some(3), 2, &[1, 2, 3], &[3]), &[1, 2]);
        assert_eq!(
            forget_lacking_elr(&m, &set(&[2])),
            Some(with_elr(meta(Some(3), 2, &[1, 2, 3], &[3]), &[1]))
        );
        assert_eq!(forget_lacking_elr(&m, &none()), None);
    }

    #[test]
    fn an_isr_back_at_its_minimum_empties_the_elr_and_unclean_elections_too() {
        let m = with_elr(meta(Some(1), 2, &[1, 2, 3], &[1, 3]), &[2]);
        let new = decide(&m, &set(&[1, 3]), &none(), &none(), 2, false, &mut rng());
        assert_eq!(new, Some(meta(Some(1), 2, &[1, 2, 3], &[1, 3])));
        let m = with_elr(meta(Some(3), 2, &[1, 2, 3], &[3]), &[1]);
        let new = decide(&m, &set(&[2]), &none(), &none(), 2, true, &mut rng());
        assert_eq!(new, Some(meta(Some(2), 3, &[1, 2, 3], &[2])));
    }

    /// Random histories with acks=all writes acknowledged whenever the ISR is at its
    /// minimum: every clean election (ISR or ELR) picks a broker that holds every record
    /// acknowledged so far.
    #[test]
    fn every_clean_election_picks_a_holder_of_every_acknowledged_record() {
        let mut r = StdRng::seed_from_u64(1043);
        let replicas = [1, 2, 3, 4];
        for history in 0..400 {
            let min_insync = 1 + history % 3;
            let mut m = meta(Some(1), 0, &replicas, &replicas);
            let mut holders: BTreeSet<u32> = set(&replicas);
            for _ in 0..40 {
                let live: BTreeSet<u32> = replicas
                    .iter()
                    .copied()
                    .filter(|_| r.next_u32() % 3 != 0)
                    .collect();
                if let Some(new) = decide(&m, &live, &none(), &none(), min_insync, false, &mut r) {
                    if let Some(l) = new.leader.filter(|_| new.leader_epoch != m.leader_epoch) {
                        assert!(
                            holders.contains(&l),
                            "{m:?} -> {new:?}, holders {holders:?}"
                        );
                    }
                    m = new;
                }
                let Some(leader) = m.leader.filter(|l| live.contains(l)) else {
                    continue;
                };
                // A write acknowledged with acks=all reaches exactly the ISR.
                if m.isr.len() >= min_insync as usize && r.next_u32() % 2 == 0 {
                    holders = m.isr.iter().copied().collect();
                }
                // A follower catching up copies the leader and joins, as the leader writes it.
                for &b in &replicas {
                    if live.contains(&b) && !m.isr.contains(&b) && r.next_u32() % 2 == 0 {
                        m.isr.push(b);
                        m.elr.clear();
                        if holders.contains(&leader) {
                            holders.insert(b);
                        }
                    }
                }
            }
        }
    }
}
