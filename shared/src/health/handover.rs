//! When a leader hands over: the rule the cluster controller applies to partition
//! leaders (`pehra_cluster::handover`) and the zookeeper ensemble to its own leader
//! (`pehra_zookeeper::ensemble::health`). Pure.

use super::{HealthClass, NhiConfig};

/// When and how a leader hands over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandoverConfig {
    /// How health is rated.
    pub nhi: NhiConfig,
    /// A leader whose class is this or worse hands over.
    pub trigger: HealthClass,
    /// A candidate must be at least this healthy (and healthier than the leader).
    pub min_candidate: HealthClass,
    /// How long the candidate has to catch up before the handover is rolled back, ms.
    pub presync_timeout_ms: u64,
}

impl Default for HandoverConfig {
    /// Hand over at Warning or worse, to a Good or better candidate, within 5 s.
    fn default() -> Self {
        HandoverConfig {
            nhi: NhiConfig::DEFAULT,
            trigger: HealthClass::Warning,
            min_candidate: HealthClass::Good,
            presync_timeout_ms: 5_000,
        }
    }
}

/// Whether a leader whose Node Health Index is `index` should hand over (`operator`:
/// asked to).
pub fn should_hand_over(config: &HandoverConfig, index: Option<u16>, operator: bool) -> bool {
    operator || index.is_some_and(|i| config.nhi.class_of(i) <= config.trigger)
}
