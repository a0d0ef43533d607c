//! One run of the simulation: the cluster on turmoil, the seed's fault schedule, the
//! checks.

use crate::simulation::cluster::{self, History, Shared, BROKER_PORT_BASE, ZK_PORT};
use crate::simulation::faults::{self, Fault};
use crate::simulation::rng::Rng;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

/// How long the producer and the faults go on (simulated): `SIM_SECONDS`, 20 s by
/// default.
fn producing() -> Duration {
    Duration::from_secs(
        std::env::var("SIM_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(20),
    )
}

/// Whether the zookeeper's host crashes too: yes unless `SIM_ZK_CRASH=0`. (It was off
/// until the clients registered their watches again after a zookeeper restart:
/// docs/replication.md, "Simulation".)
fn zk_crashes() -> bool {
    std::env::var("SIM_ZK_CRASH").map_or(true, |v| v != "0")
}

/// How many zookeepers the seeded tests run: `SIM_ZOOKEEPERS=3` an ensemble of three
/// (hosts zk1–zk3), anything else one (host zk).
pub fn zookeepers_from_env() -> usize {
    match std::env::var("SIM_ZOOKEEPERS").as_deref() {
        Ok("3") => 3,
        _ => 1,
    }
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Simulated time until every client was done.
    pub simulated: Duration,
    /// Faults injected (each partition, crash, disk damage counted once).
    pub faults: usize,
    /// Of which disk damage.
    pub disk_faults: usize,
    /// Of which wall-clock steps.
    pub clock_steps: usize,
    /// Records acknowledged.
    pub acked: usize,
    /// Zookeeper register operations checked.
    pub zk_ops: usize,
    /// A hash of the trace (acknowledgements, errors and faults with their simulated
    /// times): the same seed must give the same hash.
    pub trace: u64,
}

/// Where the data directories of the runs go: `SIM_DIR`, else /dev/shm (fsync is cheap
/// there), else the temporary directory.
fn base_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("SIM_DIR") {
        return dir.into();
    }
    let shm = PathBuf::from("/dev/shm");
    if shm.is_dir() {
        shm
    } else {
        std::env::temp_dir()
    }
}

/// Runs seed `seed` with `zookeepers` zookeepers (1, or 3: an ensemble); `Err` names the
/// first failed check (the seed's data directory is kept then).
pub fn run(seed: u64, zookeepers: usize) -> Result<Outcome, String> {
    // Named by the zookeeper count too: the ensemble test runs seeds the one-zookeeper
    // tests run, on another test thread at the same time.
    let data = base_dir().join(format!(
        "pehra-sim-{}-{seed}-zk{zookeepers}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data).map_err(|e| format!("{}: {e}", data.display()))?;
    let result = run_in(seed, zookeepers, data.clone());
    if result.is_ok() {
        let _ = std::fs::remove_dir_all(&data);
    }
    result.map_err(|e| format!("{e}\n(data directories kept in {})", data.display()))
}

fn run_in(seed: u64, zookeepers: usize, data: PathBuf) -> Result<Outcome, String> {
    let mut rng = Rng::new(seed);
    let mut sim = turmoil::Builder::new()
        .simulation_duration(Duration::from_secs(600))
        .tick_duration(Duration::from_millis(1))
        .min_message_latency(Duration::from_micros(200))
        .max_message_latency(Duration::from_millis(5))
        .rng_seed(seed)
        // A fixed wall-clock start (2025-06-15), so a replay sees the same times.
        .epoch(std::time::UNIX_EPOCH + Duration::from_secs(1_750_000_000))
        .build();

    let ensemble = zookeepers == 3;
    if ensemble {
        for id in 1..=3u64 {
            let dir = data.join(format!("zk{id}"));
            sim.host(format!("zk{id}"), move || {
                let dir = dir.clone();
                async move { cluster::zookeeper_member(id, dir, zk_members()).await }
            });
        }
    } else {
        let zk_dir = data.join("zk");
        sim.host("zk", move || {
            let dir = zk_dir.clone();
            async move { cluster::zookeeper(dir, zk_addrs()[0]).await }
        });
    }
    for id in 1..=3u32 {
        let dir = data.join(format!("broker{id}"));
        sim.host(format!("broker{id}"), move || {
            let dir = dir.clone();
            async move { cluster::broker(id, dir, zk_addrs()).await }
        });
    }
    let mut services = BTreeMap::new();
    let mut members = BTreeMap::new();
    if ensemble {
        // Each member on a port of its own: the socket factory names a host by port.
        for id in 1..=3u64 {
            let port = ZK_PORT + id as u16;
            let ip = sim.lookup(format!("zk{id}"));
            services.insert(port, ip);
            members.insert(id, SocketAddr::new(ip, port));
        }
    } else {
        services.insert(ZK_PORT, sim.lookup("zk"));
        members.insert(1, SocketAddr::new(sim.lookup("zk"), ZK_PORT));
    }
    for id in 1..=3u16 {
        services.insert(BROKER_PORT_BASE + id, sim.lookup(format!("broker{id}")));
    }
    let zk: Vec<SocketAddr> = members.values().copied().collect();
    ZK.with(|z| *z.borrow_mut() = members);
    let _installed = crate::simulation::net::install(seed, services);
    let _clock = crate::simulation::clock::install();

    let history: Shared = Rc::new(RefCell::new(History::default()));
    let start = tokio::time::Instant::now;
    let producing = producing();
    {
        let (h, z) = (history.clone(), zk.clone());
        sim.client("producer", async move {
            cluster::producer(h, z, start(), producing).await
        });
        let (h, z) = (history.clone(), zk.clone());
        sim.client("monitor", async move { cluster::epoch_monitor(h, z).await });
        let (h, z) = (history.clone(), zk.clone());
        sim.client("consumer", async move {
            cluster::consumer(h, z, Duration::from_secs(60)).await
        });
        let h = history.clone();
        sim.client("lin", async move {
            cluster::zk_registers(h, zk, seed, producing).await
        });
    }

    let servers: &[&'static str] = if ensemble {
        &faults::ENSEMBLE_SERVERS
    } else {
        &faults::SERVERS
    };
    let mut plan = faults::plan(&mut rng, producing, zk_crashes(), servers);
    plan.extend(faults::plan_clock_steps(
        &mut Rng::new(seed ^ 0xc10c_c10c),
        producing,
    ));
    let disk_faults = plan
        .iter()
        .filter(|p| matches!(p.fault, Fault::Crash { disk: Some(_), .. }))
        .count();
    // (when, is the end, index into plan)
    let mut events: Vec<(Duration, bool, usize)> = Vec::new();
    for (i, p) in plan.iter().enumerate() {
        events.push((p.at, false, i));
        events.push((p.at + p.lasts, true, i));
    }
    events.sort();
    let mut next = 0;
    let mut fault_log = Vec::new();
    loop {
        while next < events.len() && events[next].0 <= sim.elapsed() {
            let (at, is_end, i) = events[next];
            let fault = &plan[i].fault;
            if is_end {
                let done = faults::end(&mut sim, fault, &data, &mut rng);
                fault_log.push(format!("{} end {fault:?} {done}", at.as_millis()));
            } else {
                faults::start(&mut sim, fault);
                fault_log.push(format!("{} start {fault:?}", at.as_millis()));
            }
            next += 1;
        }
        match sim.step() {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => {
                return Err(format!(
                    "the simulation failed at {:?}: {e}\nfaults:\n{}",
                    sim.elapsed(),
                    fault_log.join("\n")
                ))
            }
        }
    }
    let simulated = sim.elapsed();
    drop(sim);
    let h = history.borrow();
    crate::simulation::checks::all(&h)
        .map_err(|e| format!("{e}\nfaults:\n{}", fault_log.join("\n")))?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for line in h.trace.iter().chain(fault_log.iter()) {
        line.hash(&mut hasher);
    }
    simulated.as_millis().hash(&mut hasher);
    Ok(Outcome {
        simulated,
        faults: plan.len(),
        disk_faults,
        clock_steps: plan
            .iter()
            .filter(|p| matches!(p.fault, Fault::ClockStep { .. }))
            .count(),
        acked: h.acked.len(),
        zk_ops: h.zk_ops.values().map(Vec::len).sum(),
        trace: hasher.finish(),
    })
}

std::thread_local! {
    static ZK: RefCell<BTreeMap<u64, SocketAddr>> = const { RefCell::new(BTreeMap::new()) };
}

/// The zookeeper members' addresses in this run, by id (one for a single zookeeper; the
/// hosts are made before they are known).
fn zk_members() -> BTreeMap<u64, SocketAddr> {
    let members = ZK.with(|z| z.borrow().clone());
    assert!(!members.is_empty(), "set before the simulation steps");
    members
}

/// Every zookeeper member's address.
fn zk_addrs() -> Vec<SocketAddr> {
    zk_members().into_values().collect()
}
