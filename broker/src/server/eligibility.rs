//! Eligible leaders: only a replica that has every acknowledged record may lead (in the
//! spirit of Kafka's KIP-966).
//!
//! A replica is *not eligible* while its log has recorded damage, or while its log ends
//! below the high watermark it last knew (from the [checkpoint](super::hw_checkpoint)
//! after a restart, or from its leader's fetch answers since). It says so in the
//! zookeeper, as an ephemeral `/brokers/recovering/{id}:{topic}:{partition}` holding the
//! reason; `{id}:*` is created in the same multi as the broker's registration and stays
//! until its logs are open. The controller never elects such a replica (unless the
//! operator allows an unclean election) and counts it out of the ISR while another leads.
//! A follower heals: damage is cut away and fetched again from the leader, and once its
//! log reaches the high watermark its report goes.

use super::State;
use pehra_cluster::{self as cluster, recovering_name, RECOVERING};
use pehra_shared::wire::ErrorKind;
use pehra_zookeeper::{Client, CreateMode, ZkError};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The registration's companion: `{id}:*`, created with it in one multi.
pub(crate) fn starting_marker(id: u32) -> (String, Vec<u8>) {
    (
        format!("{RECOVERING}/{}", recovering_name(id, None)),
        b"starting: its partition logs are not open yet".to_vec(),
    )
}

/// What this broker should report now: name under [`RECOVERING`] → reason.
fn wanted(state: &State) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if !state.logs_opened.load(std::sync::atomic::Ordering::SeqCst) {
        let (path, reason) = starting_marker(state.id);
        let name = path.rsplit('/').next().unwrap_or_default().to_owned();
        out.insert(name, String::from_utf8_lossy(&reason).into_owned());
    }
    let partitions: Vec<_> = state
        .partitions
        .read()
        .iter()
        .map(|(k, p)| (k.clone(), p.clone()))
        .collect();
    for ((topic, partition), p) in partitions {
        if let Some(reason) = p.lock().replica.ineligible_reason() {
            out.insert(recovering_name(state.id, Some((&topic, partition))), reason);
        }
    }
    for ((topic, partition), reason) in state.open_failures.lock().iter() {
        out.insert(
            recovering_name(state.id, Some((topic, *partition))),
            format!("its log cannot be opened: {reason}"),
        );
    }
    out
}

/// How often the reports are compared with the replicas without a signal (damage found
/// by a read or a scrub).
const RESYNC: std::time::Duration = std::time::Duration::from_secs(30);

/// Keeps this broker's reports under [`RECOVERING`] equal to what its replicas are,
/// whenever [`State::eligibility_changed`] is signalled, and every [`RESYNC`] while
/// awake (a dormant broker compares when it wakes up).
pub(crate) async fn publish(zk: Arc<Client>, state: Arc<State>) {
    let prefix = format!("{}:", state.id);
    loop {
        let changed = state.eligibility_changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        if let Err(e) = sync(&zk, &state, &prefix).await {
            tracing::warn!(error = %e, "reporting which replicas may not lead; retrying");
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            state.eligibility_changed.notify_one();
        }
        // Dormant: no periodic comparison (its zookeeper round trip and the timer steps
        // before it were most of a sleeping broker's wakeups, issue 19), also when it
        // fell asleep during the period; a signal still reports at once, and waking up
        // compares.
        tokio::select! {
            () = changed => {}
            () = super::pehra::awake_period(&state.asleep, RESYNC) => {}
        }
    }
}

async fn sync(zk: &Client, state: &State, prefix: &str) -> Result<(), ZkError> {
    let wanted = wanted(state);
    let (present, _) = zk.get_children(RECOVERING).await?;
    // New reports first, so a replica is never unreported in between.
    for (name, reason) in &wanted {
        if present.contains(name) {
            continue;
        }
        tracing::warn!(report = %name, %reason, "replica may not lead");
        match zk
            .create(
                &format!("{RECOVERING}/{name}"),
                reason.as_bytes(),
                CreateMode::Ephemeral,
            )
            .await
        {
            Ok(_) => {}
            Err(e) if e.kind() == Some(ErrorKind::NodeExists) => {}
            Err(e) => return Err(e),
        }
    }
    for name in present
        .iter()
        .filter(|n| n.starts_with(prefix) && !wanted.contains_key(*n))
    {
        match zk.delete(&format!("{RECOVERING}/{name}"), None).await {
            Ok(()) => tracing::info!(report = %name, "replica eligible to lead again"),
            Err(e) if e.kind() == Some(ErrorKind::NotFound) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Makes sure [`RECOVERING`] exists (for the registration's multi).
pub(crate) async fn prepare(zk: &Client) -> Result<(), ZkError> {
    cluster::ensure_path(zk, RECOVERING).await
}

#[cfg(test)]
mod tests {
    use crate::replica::ineligible_reason;

    #[test]
    fn only_a_complete_undamaged_replica_is_eligible() {
        // Complete: at or past the high watermark it knew.
        assert_eq!(ineligible_reason(100, &[], 100), None);
        assert_eq!(ineligible_reason(120, &[], 100), None);
        assert_eq!(ineligible_reason(0, &[], 0), None, "a new partition");
        // Restarted behind.
        let why = ineligible_reason(80, &[], 100).expect("behind");
        assert!(why.contains("offset 80") && why.contains("100"), "{why}");
        // Damaged, however long its log.
        let why = ineligible_reason(200, &[(40, 42), (90, 95)], 100).expect("damaged");
        assert!(
            why.contains("offsets 40 to 41") && why.contains("2 range"),
            "{why}"
        );
    }
}
