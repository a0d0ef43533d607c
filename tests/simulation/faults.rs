//! The seeded fault schedule and how each fault is applied to the simulation.

use crate::simulation::rng::Rng;
use std::path::Path;
use std::time::Duration;

/// The hosts that serve, with one zookeeper.
pub const SERVERS: [&str; 4] = ["zk", "broker1", "broker2", "broker3"];
/// The hosts that serve, with a zookeeper ensemble of three (`SIM_ZOOKEEPERS=3`).
pub const ENSEMBLE_SERVERS: [&str; 6] = ["zk1", "zk2", "zk3", "broker1", "broker2", "broker3"];

/// The zookeeper hosts of `servers` (they come first).
fn zookeepers(servers: &[&'static str]) -> usize {
    servers.iter().filter(|h| h.starts_with("zk")).count()
}
/// The hosts of the clients (a partition may cut a client off too).
pub const CLIENTS: [&str; 2] = ["producer", "lin"];

/// What goes wrong.
#[derive(Debug, Clone)]
pub enum Fault {
    /// No datagram between `a` and `b` (with `oneway`, only from `a` to `b`).
    Partition {
        a: &'static str,
        b: &'static str,
        oneway: bool,
    },
    /// The host's process dies, and restarts when the fault ends, after `disk` (if any)
    /// was done to its data directory.
    Crash {
        host: &'static str,
        disk: Option<Disk>,
    },
    /// Every host's wall clock steps by `by_ms` (negative: back), and steps back again
    /// when the fault ends (a wrong clock corrected): both directions of an NTP step.
    ClockStep { by_ms: i64 },
}

/// What is done to a crashed broker's files before it restarts.
#[derive(Debug, Clone, Copy)]
pub enum Disk {
    /// One byte of one segment file flipped (bit rot, a bad sector).
    FlipByte,
    /// The newest segment of a partition cut short (the page cache lost with the
    /// machine, a torn write).
    TornTail,
}

/// A fault and when it starts and ends (simulated time).
#[derive(Debug, Clone)]
pub struct Planned {
    pub at: Duration,
    pub lasts: Duration,
    pub fault: Fault,
}

/// The schedule of a seed among `servers` ([`SERVERS`] or [`ENSEMBLE_SERVERS`]; the
/// zookeepers' hosts crash only with `zk_crashes`): one fault after another from 5 s
/// on, each lasting 1–6 s,
/// with 0.5–2.5 s of calm between, until `until`. At most one disk fault every 20 s (the
/// guarantee is for one damaged copy at a time: acks=all with min.insync 2 keeps two).
/// With [`SERVERS`] it draws what it always drew, so seeds keep their schedules.
pub fn plan(
    rng: &mut Rng,
    until: Duration,
    zk_crashes: bool,
    servers: &[&'static str],
) -> Vec<Planned> {
    let zks = zookeepers(servers) as u64;
    let mut out = Vec::new();
    let mut t = Duration::from_secs(5);
    let mut last_disk: Option<Duration> = None;
    while t + Duration::from_secs(2) < until {
        let lasts = Duration::from_millis(rng.range(1_000, 6_000));
        let fault = match rng.below(10) {
            0..=3 => {
                let a = servers[rng.below(servers.len() as u64) as usize];
                let others: Vec<&'static str> = servers
                    .iter()
                    .chain(CLIENTS.iter())
                    .copied()
                    .filter(|h| *h != a)
                    .collect();
                let b = others[rng.below(others.len() as u64) as usize];
                Fault::Partition {
                    a,
                    b,
                    oneway: rng.chance(0.4),
                }
            }
            _ => {
                let host = if zk_crashes {
                    servers[rng.below(servers.len() as u64) as usize]
                } else {
                    servers[(zks + rng.below(servers.len() as u64 - zks)) as usize]
                };
                let disk_ok = !host.starts_with("zk")
                    && last_disk.is_none_or(|d| t > d + Duration::from_secs(20));
                let disk = if disk_ok && rng.chance(0.5) {
                    last_disk = Some(t);
                    Some(if rng.chance(0.5) {
                        Disk::FlipByte
                    } else {
                        Disk::TornTail
                    })
                } else {
                    None
                };
                Fault::Crash { host, disk }
            }
        };
        out.push(Planned {
            at: t,
            lasts,
            fault,
        });
        t += lasts + Duration::from_millis(rng.range(500, 2_500));
    }
    out
}

/// The clock steps of a seed, from their own generator (`rng`, not the one of
/// [`plan`], so the seeds keep the schedules they had before clock steps existed): in
/// half the runs one step of 2 s to 2 h, forward or back, lasting 1–10 s.
pub fn plan_clock_steps(rng: &mut Rng, until: Duration) -> Vec<Planned> {
    if !rng.chance(0.5) || until < Duration::from_secs(8) {
        return Vec::new();
    }
    let at = Duration::from_millis(rng.range(3_000, until.as_millis() as u64 - 2_000));
    let size = rng.range(2_000, 7_200_000) as i64;
    let by_ms = if rng.chance(0.5) { size } else { -size };
    vec![Planned {
        at,
        lasts: Duration::from_millis(rng.range(1_000, 10_000)),
        fault: Fault::ClockStep { by_ms },
    }]
}

/// Applies the start of a fault.
pub fn start(sim: &mut turmoil::Sim<'_>, fault: &Fault) {
    match *fault {
        Fault::Partition {
            a,
            b,
            oneway: false,
        } => sim.partition(a, b),
        Fault::Partition { a, b, oneway: true } => sim.partition_oneway(a, b),
        Fault::Crash { host, .. } => sim.crash(host),
        Fault::ClockStep { by_ms } => crate::simulation::clock::step(by_ms),
    }
}

/// Ends a fault: the link repaired, or the host's disk damaged (if planned) and the
/// host restarted. Returns what was done to the disk, for the trace.
pub fn end(sim: &mut turmoil::Sim<'_>, fault: &Fault, data: &Path, rng: &mut Rng) -> String {
    match *fault {
        Fault::Partition {
            a,
            b,
            oneway: false,
        } => {
            sim.repair(a, b);
            String::new()
        }
        Fault::Partition { a, b, oneway: true } => {
            sim.repair_oneway(a, b);
            String::new()
        }
        Fault::ClockStep { by_ms } => {
            crate::simulation::clock::step(-by_ms);
            String::new()
        }
        Fault::Crash { host, disk } => {
            let done = match disk {
                Some(disk) => damage(&data.join(host), disk, rng),
                None => String::new(),
            };
            sim.bounce(host);
            done
        }
    }
}

/// Damages one segment file under `dir`; says what was done.
fn damage(dir: &Path, disk: Disk, rng: &mut Rng) -> String {
    let mut segments = Vec::new();
    collect_segments(dir, &mut segments);
    segments.sort();
    segments.retain(|p| std::fs::metadata(p).map(|m| m.len() > 0).unwrap_or(false));
    if segments.is_empty() {
        return "no segment to damage".into();
    }
    let file = segments[rng.below(segments.len() as u64) as usize].clone();
    let len = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    let name = file
        .strip_prefix(dir)
        .unwrap_or(&file)
        .display()
        .to_string();
    match disk {
        Disk::FlipByte => {
            let at = rng.below(len);
            let mask = (rng.range(1, 256)) as u8;
            let mut bytes = std::fs::read(&file).expect("read a segment");
            bytes[at as usize] ^= mask;
            std::fs::write(&file, bytes).expect("write a segment");
            format!("flipped byte {at} of {name} ({len} bytes) with {mask:#04x}")
        }
        Disk::TornTail => {
            // The newest segment of that partition.
            let newest = segments
                .iter()
                .filter(|p| p.parent() == file.parent())
                .max()
                .cloned()
                .unwrap_or(file);
            let len = std::fs::metadata(&newest).map(|m| m.len()).unwrap_or(0);
            let cut = rng.range(1, len.clamp(1, 4096) + 1).min(len);
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&newest)
                .expect("open a segment");
            f.set_len(len - cut).expect("truncate a segment");
            let name = newest
                .strip_prefix(dir)
                .unwrap_or(&newest)
                .display()
                .to_string();
            format!("cut {cut} bytes off {name} ({len} bytes)")
        }
    }
}

fn collect_segments(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_segments(&path, out);
        } else if path.extension().is_some_and(|e| e == "log") {
            out.push(path);
        }
    }
}
