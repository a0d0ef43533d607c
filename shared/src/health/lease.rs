//! The adaptive lease (seed 002 §2):
//!
//! ```text
//! lease = base × (1 + nhi_factor + network_stability_factor + load_factor)
//! lease = clamp(lease, min, max)
//! ```
//!
//! in integers: every factor is in ‰, so `lease_ms = base_ms × (1000 + Σ factors‰) / 1000`.
//!
//! - **NHI factor**: one value per [`HealthClass`] of the master; the seed's example
//!   (Excellent −10 %, Good −5 %, Warning +10 %, Critical +30 %) is the default.
//! - **Network stability factor**: `stddev_factor_per_ms` ‰ per millisecond of standard
//!   deviation of the RTTs in the sliding window ([`super::RttWindow`]), bounded by
//!   `stddev_factor_limit` (the seed: more fluctuation, shorter lease; so the defaults
//!   are negative).
//! - **Load factor**: `load_factor_at_full` ‰ at 1000 ‰ load of the master itself,
//!   proportional below (the seed: more load, shorter lease; negative by default).

use super::nhi::HealthClass;

/// Every knob of the lease formula.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseConfig {
    /// The base lease, ms.
    pub base_ms: u32,
    /// The shortest lease, ms.
    pub min_ms: u32,
    /// The longest lease, ms.
    pub max_ms: u32,
    /// NHI factor of an Excellent master, ‰.
    pub nhi_excellent: i32,
    /// NHI factor of a Good master, ‰.
    pub nhi_good: i32,
    /// NHI factor of a master in Warning, ‰.
    pub nhi_warning: i32,
    /// NHI factor of a Critical master, ‰.
    pub nhi_critical: i32,
    /// Network stability factor per millisecond of RTT standard deviation, ‰.
    pub stddev_factor_per_ms: i32,
    /// The network stability factor never goes beyond this (same sign as the
    /// per-millisecond factor), ‰.
    pub stddev_factor_limit: i32,
    /// The load factor at full load (1000 ‰), ‰; proportional below.
    pub load_factor_at_full: i32,
}

impl Default for LeaseConfig {
    /// Base 60 s (a dormant node's default alarm interval), between 15 s and 120 s; the
    /// seed's NHI factors; −20 ‰ per ms of RTT deviation down to −300 ‰; −200 ‰ at full
    /// load. `docs/pehra.md` argues them.
    fn default() -> Self {
        LeaseConfig {
            base_ms: 60_000,
            min_ms: 15_000,
            max_ms: 120_000,
            nhi_excellent: -100,
            nhi_good: -50,
            nhi_warning: 100,
            nhi_critical: 300,
            stddev_factor_per_ms: -20,
            stddev_factor_limit: -300,
            load_factor_at_full: -200,
        }
    }
}

/// What the lease of a master depends on now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseInputs {
    /// The master's health class (from its Node Health Index).
    pub class: HealthClass,
    /// Standard deviation of the RTTs in the window, µs.
    pub rtt_stddev_us: u32,
    /// The master's own load, ‰.
    pub load_permille: u16,
}

/// A lease and how it was made, for status output, metrics and the docs' table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseParts {
    /// NHI factor, ‰.
    pub nhi_factor: i32,
    /// Network stability factor, ‰.
    pub network_factor: i32,
    /// Load factor, ‰.
    pub load_factor: i32,
    /// `base × (1 + factors)` before clamping, ms.
    pub unclamped_ms: u64,
    /// The lease, clamped to [min, max], ms.
    pub lease_ms: u32,
}

impl LeaseConfig {
    /// The NHI factor of `class`, ‰.
    pub fn nhi_factor(&self, class: HealthClass) -> i32 {
        match class {
            HealthClass::Excellent => self.nhi_excellent,
            HealthClass::Good => self.nhi_good,
            HealthClass::Warning => self.nhi_warning,
            HealthClass::Critical => self.nhi_critical,
        }
    }

    /// The network stability factor for an RTT standard deviation, ‰.
    pub fn network_factor(&self, rtt_stddev_us: u32) -> i32 {
        let raw = i64::from(self.stddev_factor_per_ms) * i64::from(rtt_stddev_us) / 1000;
        let limit = i64::from(self.stddev_factor_limit);
        let bounded = if limit < 0 {
            raw.max(limit)
        } else {
            raw.min(limit)
        };
        bounded as i32
    }

    /// The load factor for a load, ‰.
    pub fn load_factor(&self, load_permille: u16) -> i32 {
        let load = i64::from(load_permille.min(1000));
        (i64::from(self.load_factor_at_full) * load / 1000) as i32
    }

    /// The lease for `inputs`, with its parts.
    pub fn lease(&self, inputs: &LeaseInputs) -> LeaseParts {
        let nhi_factor = self.nhi_factor(inputs.class);
        let network_factor = self.network_factor(inputs.rtt_stddev_us);
        let load_factor = self.load_factor(inputs.load_permille);
        let multiplier =
            (1000 + i64::from(nhi_factor) + i64::from(network_factor) + i64::from(load_factor))
                .max(0) as u64;
        let unclamped_ms = u64::from(self.base_ms) * multiplier / 1000;
        let (lo, hi) = (
            u64::from(self.min_ms.min(self.max_ms)),
            u64::from(self.max_ms),
        );
        LeaseParts {
            nhi_factor,
            network_factor,
            load_factor,
            unclamped_ms,
            lease_ms: unclamped_ms.clamp(lo, hi) as u32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(class: HealthClass, stddev_ms: u32, load: u16) -> LeaseInputs {
        LeaseInputs {
            class,
            rtt_stddev_us: stddev_ms * 1000,
            load_permille: load,
        }
    }

    fn seed_30s() -> LeaseConfig {
        LeaseConfig {
            base_ms: 30_000,
            min_ms: 5_000,
            max_ms: 60_000,
            ..LeaseConfig::default()
        }
    }

    #[test]
    fn the_nhi_factor_is_the_seeds() {
        let c = seed_30s();
        let lease = |class| c.lease(&inputs(class, 0, 0)).lease_ms;
        assert_eq!(lease(HealthClass::Excellent), 27_000);
        assert_eq!(lease(HealthClass::Good), 28_500);
        assert_eq!(lease(HealthClass::Warning), 33_000);
        assert_eq!(lease(HealthClass::Critical), 39_000);
    }

    #[test]
    fn the_factors_add_up_as_the_formula_says() {
        let c = seed_30s();
        // Good −50, 5 ms deviation × −20 = −100, load 500 ‰ × −200 = −100:
        // 30 000 × (1000 − 250) / 1000.
        let p = c.lease(&inputs(HealthClass::Good, 5, 500));
        assert_eq!(
            (p.nhi_factor, p.network_factor, p.load_factor),
            (-50, -100, -100)
        );
        assert_eq!(p.lease_ms, 22_500);
    }

    #[test]
    fn more_jitter_and_more_load_mean_a_shorter_lease_until_the_limits() {
        let c = seed_30s();
        let lease = |ms, load| c.lease(&inputs(HealthClass::Good, ms, load)).lease_ms;
        assert!(lease(1, 0) > lease(5, 0));
        assert!(lease(5, 0) > lease(10, 0));
        assert_eq!(
            lease(15, 0),
            lease(500, 0),
            "network factor bounded at −300 ‰"
        );
        assert!(lease(0, 100) > lease(0, 900));
        assert_eq!(
            lease(0, 1000),
            lease(0, 60_000 / 60),
            "load above 1000 ‰ is full"
        );
    }

    #[test]
    fn the_lease_is_clamped_to_min_and_max() {
        let c = LeaseConfig {
            base_ms: 30_000,
            min_ms: 25_000,
            max_ms: 35_000,
            ..LeaseConfig::default()
        };
        let worst = c.lease(&inputs(HealthClass::Excellent, 1000, 1000));
        assert_eq!(worst.unclamped_ms, 30_000 * 400 / 1000);
        assert_eq!(worst.lease_ms, 25_000);
        assert_eq!(
            c.lease(&inputs(HealthClass::Critical, 0, 0)).lease_ms,
            35_000
        );
    }

    #[test]
    fn factors_summing_below_minus_one_give_the_minimum_not_a_wrap() {
        let c = LeaseConfig {
            nhi_excellent: -2000,
            min_ms: 1,
            ..LeaseConfig::default()
        };
        let p = c.lease(&inputs(HealthClass::Excellent, 0, 0));
        assert_eq!((p.unclamped_ms, p.lease_ms), (0, 1));
    }

    #[test]
    fn a_positive_stability_factor_is_bounded_from_above() {
        let c = LeaseConfig {
            stddev_factor_per_ms: 50,
            stddev_factor_limit: 200,
            ..LeaseConfig::default()
        };
        assert_eq!(c.network_factor(2_000), 100);
        assert_eq!(c.network_factor(100_000), 200);
    }
}
