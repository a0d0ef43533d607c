//! Prints the table of docs/pehra.md: the Pehredar's adaptive lease with the default
//! knobs for injected RTT jitter and CPU load, computed by the same code the broker runs
//! (`pehra::vitals::Vitals`): `cargo run -p pehra-shared --example lease_table`.

use pehra_shared::pehra::vitals::{Vitals, VitalsConfig};
use pehra_shared::wire::NodeHealth;

fn main() {
    println!("| RTT samples (ms) | std dev | CPU load | NHI (class) | NHI f. | network f. | load f. | lease |");
    println!("|---|---|---|---|---|---|---|---|");
    for jitter in [0u32, 2, 5, 10, 15] {
        for load in [0u16, 500, 1000] {
            row(
                jitter,
                NodeHealth {
                    cpu_permille: load,
                    ..NodeHealth::default()
                },
            );
        }
    }
    // The NHI classes CPU alone does not reach: CPU, memory and disk I/O at 800 ‰
    // (Warning), and saturated with 5 recent failures (Critical).
    for jitter in [0u32, 5] {
        for (load, failures) in [(800u16, 0u32), (1000, 5)] {
            row(
                jitter,
                NodeHealth {
                    cpu_permille: load,
                    memory_permille: load,
                    disk_io_permille: load,
                    failures,
                    ..NodeHealth::default()
                },
            );
        }
    }
}

fn row(jitter: u32, health: NodeHealth) {
    let load = health.cpu_permille;
    {
        {
            let mut v = Vitals::new(VitalsConfig::default());
            v.set_health(health);
            // Check-ins alternating 20 ± jitter ms: standard deviation = jitter.
            for i in 0..32 {
                v.checkin_rtt(if i % 2 == 0 {
                    20 + jitter
                } else {
                    20 - jitter.min(20)
                });
            }
            let (index, class) = v.rating().expect("sampled");
            let l = v.lease();
            println!(
                "| 20 ± {jitter} | {:.1} ms | {load} ‰{} | {index} ({}) | {:+} ‰ | {:+} ‰ | {:+} ‰ | {:.1} s |",
                f64::from(v.rtts().stddev_us()) / 1000.0,
                if health.memory_permille > 0 {
                    format!(
                        " (+ memory, disk I/O; {} failures)",
                        health.failures
                    )
                } else {
                    String::new()
                },
                class.as_str(),
                l.nhi_factor,
                l.network_factor,
                l.load_factor,
                f64::from(l.lease_ms) / 1000.0
            );
        }
    }
}
