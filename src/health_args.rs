//! The seed-002 knobs shared by `pehra broker` (the lease it gives as Pehredar, how it
//! rates its health) and `pehra zookeeper` (how the coordinator rates candidates).
//! `docs/pehra.md` argues the defaults.

use clap::Args;
use pehra_shared::health::{HealthClass, LeaseConfig, NhiConfig, NhiThresholds, NhiWeights};
use std::path::PathBuf;

/// Node Health Index settings.
#[derive(Args, Debug, Clone)]
pub struct NhiArgs {
    /// Node Health Index weights: CPU,MEMORY,DISK_IO,RTT,BATTERY,FAILURES.
    #[arg(long, value_parser = parse_weights, default_value = "25,15,10,20,10,20")]
    pub nhi_weights: NhiWeights,
    /// Node Health Index class thresholds in ‰: EXCELLENT,GOOD,WARNING (below: critical).
    #[arg(long, value_parser = parse_thresholds, default_value = "850,650,400")]
    pub nhi_thresholds: NhiThresholds,
    /// The RTT at which the index's RTT part reaches 0, ms.
    #[arg(long, default_value_t = 200)]
    pub nhi_rtt_bad_ms: u32,
    /// What the index loses per recent failure, ‰.
    #[arg(long, default_value_t = 200)]
    pub nhi_failure_penalty: u16,
}

impl NhiArgs {
    /// The index configuration.
    pub fn config(&self) -> NhiConfig {
        NhiConfig {
            weights: self.nhi_weights,
            thresholds: self.nhi_thresholds,
            rtt_bad_ms: self.nhi_rtt_bad_ms.max(1),
            failure_penalty: self.nhi_failure_penalty,
        }
    }
}

/// Adaptive lease settings (a broker's, as Pehredar).
#[derive(Args, Debug, Clone)]
pub struct LeaseArgs {
    /// Adaptive lease: the base, ms.
    #[arg(long, default_value_t = 60_000)]
    pub lease_base_ms: u32,
    /// Adaptive lease: the shortest, ms.
    #[arg(long, default_value_t = 15_000)]
    pub lease_min_ms: u32,
    /// Adaptive lease: the longest, ms.
    #[arg(long, default_value_t = 120_000)]
    pub lease_max_ms: u32,
    /// Adaptive lease: the NHI factor per class in ‰, EXCELLENT,GOOD,WARNING,CRITICAL.
    #[arg(long, value_parser = parse_factors, default_value = "-100,-50,100,300", allow_hyphen_values = true)]
    pub lease_nhi_factors: [i32; 4],
    /// Adaptive lease: the network stability factor per ms of RTT standard deviation, ‰.
    #[arg(long, default_value_t = -20, allow_hyphen_values = true)]
    pub lease_jitter_factor_per_ms: i32,
    /// Adaptive lease: the network stability factor goes no further than this, ‰.
    #[arg(long, default_value_t = -300, allow_hyphen_values = true)]
    pub lease_jitter_factor_limit: i32,
    /// Adaptive lease: the load factor at full load (proportional below), ‰.
    #[arg(long, default_value_t = -200, allow_hyphen_values = true)]
    pub lease_load_factor: i32,
    /// How many RTT samples the network stability window keeps.
    #[arg(long, default_value_t = 32)]
    pub rtt_window: usize,
    /// Read this node's health from FILE (`cpu=`, `memory=`, `disk_io=`, `battery=` in ‰,
    /// `rtt_ms=`, `failures=`, one per line) instead of the system: to inject load.
    #[arg(long, value_name = "FILE")]
    pub health_file: Option<PathBuf>,
}

impl LeaseArgs {
    /// The lease configuration.
    pub fn config(&self) -> LeaseConfig {
        let [e, g, w, c] = self.lease_nhi_factors;
        LeaseConfig {
            base_ms: self.lease_base_ms,
            min_ms: self.lease_min_ms,
            max_ms: self.lease_max_ms,
            nhi_excellent: e,
            nhi_good: g,
            nhi_warning: w,
            nhi_critical: c,
            stddev_factor_per_ms: self.lease_jitter_factor_per_ms,
            stddev_factor_limit: self.lease_jitter_factor_limit,
            load_factor_at_full: self.lease_load_factor,
        }
    }
}

fn numbers<T: std::str::FromStr, const N: usize>(text: &str) -> Result<[T; N], String> {
    let parts: Vec<T> = text
        .split(',')
        .map(|p| {
            p.trim()
                .parse::<T>()
                .map_err(|_| format!("{p:?} is not a number"))
        })
        .collect::<Result<_, _>>()?;
    let n = parts.len();
    parts
        .try_into()
        .map_err(|_| format!("{n} values given, {N} wanted"))
}

fn parse_weights(text: &str) -> Result<NhiWeights, String> {
    let [cpu, memory, disk_io, rtt, battery, failures] = numbers::<u16, 6>(text)?;
    Ok(NhiWeights {
        cpu,
        memory,
        disk_io,
        rtt,
        battery,
        failures,
    })
}

/// Parses `EXCELLENT,GOOD,WARNING` thresholds (not increasing).
pub fn parse_thresholds(text: &str) -> Result<NhiThresholds, String> {
    let [excellent, good, warning] = numbers::<u16, 3>(text)?;
    if !(excellent >= good && good >= warning) {
        return Err("thresholds must not increase: EXCELLENT ≥ GOOD ≥ WARNING".into());
    }
    Ok(NhiThresholds {
        excellent,
        good,
        warning,
    })
}

fn parse_factors(text: &str) -> Result<[i32; 4], String> {
    numbers::<i32, 4>(text)
}

/// Parses the zookeeper leader's lease bounds `BASE,MIN,MAX` (ms), checked against
/// Raft's timing ([`pehra_zookeeper::ensemble::lease::check`]): the seed's factors apply
/// as for the Pehredar.
pub fn parse_leader_lease(text: &str) -> Result<LeaseConfig, String> {
    let [base_ms, min_ms, max_ms] = numbers::<u32, 3>(text)?;
    let config = LeaseConfig {
        base_ms,
        min_ms,
        max_ms,
        ..pehra_zookeeper::ensemble::lease::default_config()
    };
    pehra_zookeeper::ensemble::lease::check(&config).map_err(|e| e.to_string())?;
    Ok(config)
}

/// Parses `MIN,MAX` permille bounds (MIN ≤ MAX, MIN at least 100 ‰).
pub fn parse_permille_bounds(text: &str) -> Result<[u32; 2], String> {
    let [min, max] = numbers::<u32, 2>(text)?;
    if min < 100 || min > max {
        return Err(format!(
            "{text:?}: want MIN,MAX in permille with 100 <= MIN <= MAX"
        ));
    }
    Ok([min, max])
}

/// Parses a health class name (`excellent`, `good`, `warning`, `critical`).
pub fn parse_class(text: &str) -> Result<HealthClass, String> {
    HealthClass::parse(text)
        .ok_or_else(|| format!("{text:?} is not excellent, good, warning or critical"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_and_bad_ones_are_refused() {
        assert_eq!(parse_factors("-100,-50,100,300"), Ok([-100, -50, 100, 300]));
        assert!(parse_factors("1,2,3").is_err());
        assert_eq!(parse_permille_bounds("1000,2000"), Ok([1000, 2000]));
        assert!(parse_permille_bounds("2000,1000").is_err());
        assert!(parse_permille_bounds("50,1000").is_err());
        assert_eq!(
            parse_leader_lease("1000,1000,3000").map(|c| c.max_ms),
            Ok(3_000)
        );
        assert!(parse_leader_lease("500,500,3000")
            .unwrap_err()
            .contains("within 1000..=3000 ms"));
        assert!(parse_weights("1,2,3,4,5,x").is_err());
        assert!(parse_thresholds("400,650,850").is_err());
        assert_eq!(parse_class("good"), Ok(HealthClass::Good));
        assert!(parse_class("meh").is_err());
    }
}
