//! A server's own health sample for PEHRA's Node Health Index and adaptive lease (seed
//! 002), on a host with `/proc` (brokers, zookeeper members): CPU from the load average per
//! core, memory from `/proc/meminfo`, or, for tests and experiments, values read from a
//! file (`--health-file`).

use crate::wire::NodeHealth;
use std::path::Path;

/// Samples the node's health now: from `file` if given (see [`parse`]), else from the
/// system (zeros where the system does not say).
pub fn sample(file: Option<&Path>) -> NodeHealth {
    match file {
        Some(path) => std::fs::read_to_string(path)
            .map(|text| parse(&text))
            .unwrap_or_default(),
        None => system(),
    }
}

/// Parses `key=value` lines (`cpu`, `memory`, `disk_io`, `battery` in ‰, `rtt_ms`,
/// `failures`); unknown keys and bad values are ignored.
pub fn parse(text: &str) -> NodeHealth {
    let mut h = NodeHealth::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let Ok(v) = value.trim().parse::<u32>() else {
            continue;
        };
        let permille = v.min(1000) as u16;
        match key.trim() {
            "cpu" => h.cpu_permille = permille,
            "memory" => h.memory_permille = permille,
            "disk_io" => h.disk_io_permille = permille,
            "battery" => h.battery_permille = Some(permille),
            "rtt_ms" => h.rtt_ms = v,
            "failures" => h.failures = v,
            _ => {}
        }
    }
    h
}

fn system() -> NodeHealth {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let cpu = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0, |load| {
            ((load / cores) * 1000.0).clamp(0.0, 1000.0) as u16
        });
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            let field = |name: &str| -> Option<u64> {
                t.lines()
                    .find(|l| l.starts_with(name))?
                    .split_whitespace()
                    .nth(1)?
                    .parse()
                    .ok()
            };
            let (total, available) = (field("MemTotal:")?, field("MemAvailable:")?);
            (total > 0).then(|| (1000 - available.min(total) * 1000 / total) as u16)
        })
        .unwrap_or(0);
    NodeHealth {
        cpu_permille: cpu,
        memory_permille: memory,
        ..NodeHealth::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_health_file_sets_what_it_names() {
        let h = parse("cpu=950\nrtt_ms = 40\nbattery=2000\nnonsense\nfailures=x\nfailures=3\n");
        assert_eq!(h.cpu_permille, 950);
        assert_eq!(h.rtt_ms, 40);
        assert_eq!(h.battery_permille, Some(1000));
        assert_eq!(h.failures, 3);
        assert_eq!(h.memory_permille, 0);
    }

    #[test]
    fn the_system_sample_is_in_range() {
        let h = sample(None);
        assert!(h.cpu_permille <= 1000 && h.memory_permille <= 1000);
    }
}
