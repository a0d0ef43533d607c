//! The Node Health Index (seed 002 §1): a weighted score in ‰ (1000 = perfect health)
//! from a [`NodeHealth`] report, and its class (Excellent / Good / Warning / Critical).
//!
//! Each input is first turned into a *goodness* in ‰ (1000 = as good as it gets):
//!
//! | input | goodness |
//! |---|---|
//! | CPU, memory, disk I/O load | `1000 − load‰` |
//! | RTT | `1000 − 1000 × rtt_ms / rtt_bad_ms`, floored at 0 |
//! | battery | the charge ‰; a mains-powered node (no battery) scores 1000 |
//! | failures | `1000 − failure_penalty × failures`, floored at 0 |
//!
//! The index is the weighted mean of the goodnesses (weights need not sum to anything in
//! particular; all zero gives 1000).

use crate::wire::NodeHealth;

/// How much each input counts in the index (relative weights).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NhiWeights {
    /// CPU load.
    pub cpu: u16,
    /// Memory in use.
    pub memory: u16,
    /// Disk I/O load.
    pub disk_io: u16,
    /// Round-trip time.
    pub rtt: u16,
    /// Battery charge.
    pub battery: u16,
    /// Recent failures.
    pub failures: u16,
}

impl Default for NhiWeights {
    /// CPU 25, memory 15, disk I/O 10, RTT 20, battery 10, failures 20.
    fn default() -> Self {
        NhiConfig::DEFAULT.weights
    }
}

/// The lowest index of each class, ‰. Below `warning` is Critical.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NhiThresholds {
    /// Excellent from here.
    pub excellent: u16,
    /// Good from here.
    pub good: u16,
    /// Warning from here.
    pub warning: u16,
}

impl NhiThresholds {
    /// The class of an index.
    pub fn class_of(&self, index: u16) -> HealthClass {
        if index >= self.excellent {
            HealthClass::Excellent
        } else if index >= self.good {
            HealthClass::Good
        } else if index >= self.warning {
            HealthClass::Warning
        } else {
            HealthClass::Critical
        }
    }
}

impl Default for NhiThresholds {
    /// Excellent ≥ 850, Good ≥ 650, Warning ≥ 400, Critical below.
    fn default() -> Self {
        NhiConfig::DEFAULT.thresholds
    }
}

/// Everything the index depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NhiConfig {
    /// The weights.
    pub weights: NhiWeights,
    /// The class thresholds.
    pub thresholds: NhiThresholds,
    /// The RTT at which the RTT goodness reaches 0, ms (must be > 0; 0 is taken as 1).
    pub rtt_bad_ms: u32,
    /// Goodness lost per recent failure, ‰.
    pub failure_penalty: u16,
}

impl NhiConfig {
    /// Default weights (CPU 25, memory 15, disk I/O 10, RTT 20, battery 10, failures 20)
    /// and thresholds (850 / 650 / 400), RTT bad at 200 ms, 200 ‰ per failure.
    pub const DEFAULT: NhiConfig = NhiConfig {
        weights: NhiWeights {
            cpu: 25,
            memory: 15,
            disk_io: 10,
            rtt: 20,
            battery: 10,
            failures: 20,
        },
        thresholds: NhiThresholds {
            excellent: 850,
            good: 650,
            warning: 400,
        },
        rtt_bad_ms: 200,
        failure_penalty: 200,
    };
}

impl Default for NhiConfig {
    /// [`NhiConfig::DEFAULT`].
    fn default() -> Self {
        NhiConfig::DEFAULT
    }
}

/// The class of a Node Health Index, worst first (so `Ord` compares health).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HealthClass {
    /// Below the Warning threshold.
    Critical,
    /// Between Warning and Good.
    Warning,
    /// Between Good and Excellent.
    Good,
    /// At or above Excellent.
    Excellent,
}

impl HealthClass {
    /// Its name in lower case, for status output and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthClass::Critical => "critical",
            HealthClass::Warning => "warning",
            HealthClass::Good => "good",
            HealthClass::Excellent => "excellent",
        }
    }

    /// Parses [`HealthClass::as_str`]'s names.
    pub fn parse(s: &str) -> Option<HealthClass> {
        Some(match s {
            "critical" => HealthClass::Critical,
            "warning" => HealthClass::Warning,
            "good" => HealthClass::Good,
            "excellent" => HealthClass::Excellent,
            _ => return None,
        })
    }
}

fn inverse_load(permille: u16) -> u64 {
    1000 - u64::from(permille.min(1000))
}

impl NhiConfig {
    /// The Node Health Index of `health`, ‰ (0 = as bad as it gets, 1000 = perfect).
    pub fn index(&self, health: &NodeHealth) -> u16 {
        let w = &self.weights;
        let bad = u64::from(self.rtt_bad_ms.max(1));
        let rtt = 1000u64.saturating_sub(u64::from(health.rtt_ms) * 1000 / bad);
        let battery = health
            .battery_permille
            .map_or(1000, |b| u64::from(b.min(1000)));
        let failures =
            1000u64.saturating_sub(u64::from(self.failure_penalty) * u64::from(health.failures));
        let parts = [
            (w.cpu, inverse_load(health.cpu_permille)),
            (w.memory, inverse_load(health.memory_permille)),
            (w.disk_io, inverse_load(health.disk_io_permille)),
            (w.rtt, rtt),
            (w.battery, battery),
            (w.failures, failures),
        ];
        let total: u64 = parts.iter().map(|(w, _)| u64::from(*w)).sum();
        if total == 0 {
            return 1000;
        }
        let sum: u64 = parts.iter().map(|(w, g)| u64::from(*w) * g).sum();
        // At most 1000: a weighted mean of values ≤ 1000.
        (sum / total) as u16
    }

    /// The class of an index.
    pub fn class_of(&self, index: u16) -> HealthClass {
        self.thresholds.class_of(index)
    }

    /// The index of `health` and its class.
    pub fn rate(&self, health: &NodeHealth) -> (u16, HealthClass) {
        let index = self.index(health);
        (index, self.class_of(index))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(cpu: u16, mem: u16, rtt_ms: u32, failures: u32) -> NodeHealth {
        NodeHealth {
            cpu_permille: cpu,
            memory_permille: mem,
            disk_io_permille: 0,
            rtt_ms,
            battery_permille: None,
            failures,
        }
    }

    #[test]
    fn an_idle_node_is_perfect_and_excellent() {
        let c = NhiConfig::default();
        assert_eq!(
            c.rate(&NodeHealth::default()),
            (1000, HealthClass::Excellent)
        );
    }

    #[test]
    fn the_index_is_the_weighted_mean_of_the_goodnesses() {
        let c = NhiConfig::default();
        // cpu 600 ‰ → 400 × 25; memory 500 → 500 × 15; disk 1000 × 10; rtt 50/200 →
        // 750 × 20; battery 1000 × 10; 1 failure → 800 × 20. Sum 68 500 / 100 = 685.
        assert_eq!(c.index(&health(600, 500, 50, 1)), 685);
        assert_eq!(c.class_of(685), HealthClass::Good);
    }

    #[test]
    fn each_threshold_starts_its_class() {
        let c = NhiConfig::default();
        assert_eq!(c.class_of(850), HealthClass::Excellent);
        assert_eq!(c.class_of(849), HealthClass::Good);
        assert_eq!(c.class_of(650), HealthClass::Good);
        assert_eq!(c.class_of(649), HealthClass::Warning);
        assert_eq!(c.class_of(400), HealthClass::Warning);
        assert_eq!(c.class_of(399), HealthClass::Critical);
        assert!(HealthClass::Critical < HealthClass::Warning);
        assert!(HealthClass::Good < HealthClass::Excellent);
    }

    #[test]
    fn a_saturated_failing_far_node_is_critical() {
        let c = NhiConfig::default();
        let h = NodeHealth {
            cpu_permille: 1000,
            memory_permille: 1000,
            disk_io_permille: 1000,
            rtt_ms: 10_000,
            battery_permille: Some(0),
            failures: 99,
        };
        assert_eq!(c.rate(&h), (0, HealthClass::Critical));
    }

    #[test]
    fn out_of_range_inputs_are_clamped_not_wrapped() {
        let c = NhiConfig::default();
        let h = NodeHealth {
            cpu_permille: u16::MAX,
            battery_permille: Some(u16::MAX),
            rtt_ms: u32::MAX,
            failures: u32::MAX,
            ..NodeHealth::default()
        };
        let i = c.index(&h);
        assert!(i <= 1000);
    }

    #[test]
    fn weights_are_configurable() {
        let only_cpu = NhiConfig {
            weights: NhiWeights {
                cpu: 1,
                memory: 0,
                disk_io: 0,
                rtt: 0,
                battery: 0,
                failures: 0,
            },
            ..NhiConfig::default()
        };
        assert_eq!(only_cpu.index(&health(300, 1000, 5000, 9)), 700);
        let none = NhiConfig {
            weights: NhiWeights {
                cpu: 0,
                memory: 0,
                disk_io: 0,
                rtt: 0,
                battery: 0,
                failures: 0,
            },
            ..NhiConfig::default()
        };
        assert_eq!(none.index(&health(1000, 1000, 5000, 9)), 1000);
    }

    #[test]
    fn thresholds_are_configurable() {
        let strict = NhiConfig {
            thresholds: NhiThresholds {
                excellent: 990,
                good: 900,
                warning: 800,
            },
            ..NhiConfig::default()
        };
        assert_eq!(strict.class_of(950), HealthClass::Good);
        assert_eq!(strict.class_of(799), HealthClass::Critical);
    }

    #[test]
    fn a_battery_counts_and_mains_power_is_full() {
        let c = NhiConfig::default();
        let low = NodeHealth {
            battery_permille: Some(100),
            ..NodeHealth::default()
        };
        // battery 100 × 10 + 1000 × 90 = 91 000 / 100.
        assert_eq!(c.index(&low), 910);
    }

    #[test]
    fn class_names_round_trip() {
        for c in [
            HealthClass::Critical,
            HealthClass::Warning,
            HealthClass::Good,
            HealthClass::Excellent,
        ] {
            assert_eq!(HealthClass::parse(c.as_str()), Some(c));
        }
        assert_eq!(HealthClass::parse("fine"), None);
    }
}
