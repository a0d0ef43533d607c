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

/// Runs seed `seed`; `Err` names the first failed check (the seed's data directory is
/// kept then).
pub fn run(seed: u64) -> Result<Outcome, String> {
    let data = base_dir().join(format!("pehra-sim-{}-{seed}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data).map_err(|e| format!("{}: {e}", data.display()))?;
    let result = run_in(seed, data.clone());
    if result.is_ok() {
        let _ = std::fs::remove_dir_all(&data);
    }
    result.map_err(|e| format!("{e}\n(data directories kept in {})", data.display()))
}

fn run_in(seed: u64, data: PathBuf) -> Result<Outcome, String> {
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

    let zk_dir = data.join("zk");
    sim.host("zk", move || {
        let dir = zk_dir.clone();
        async move { cluster::zookeeper(dir, zk_addr()).await }
    });
    for id in 1..=3u32 {
        let dir = data.join(format!("broker{id}"));
        sim.host(format!("broker{id}"), move || {
            let dir = dir.clone();
            async move { cluster::broker(id, dir, zk_addr()).await }
        });
    }
    let mut services = BTreeMap::new();
    services.insert(ZK_PORT, sim.lookup("zk"));
    for id in 1..=3u16 {
        services.insert(BROKER_PORT_BASE + id, sim.lookup(format!("broker{id}")));
    }
    let zk = SocketAddr::new(sim.lookup("zk"), ZK_PORT);
    ZK.with(|z| z.set(Some(zk)));
    let _installed = crate::simulation::net::install(seed, services);
    let _clock = crate::simulation::clock::install();

    let history: Shared = Rc::new(RefCell::new(History::default()));
    let start = tokio::time::Instant::now;
    let producing = producing();
    {
        let h = history.clone();
        sim.client("producer", async move {
            cluster::producer(h, zk, start(), producing).await
        });
        let h = history.clone();
        sim.client(
            "monitor",
            async move { cluster::epoch_monitor(h, zk).await },
        );
        let h = history.clone();
        sim.client("consumer", async move {
            cluster::consumer(h, zk, Duration::from_secs(60)).await
        });
        let h = history.clone();
        sim.client("lin", async move {
            cluster::zk_registers(h, zk, seed, producing).await
        });
    }

    let mut plan = faults::plan(&mut rng, producing, zk_crashes());
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
    static ZK: std::cell::Cell<Option<SocketAddr>> = const { std::cell::Cell::new(None) };
}

/// The zookeeper's address in this run (the hosts are made before it is known).
fn zk_addr() -> SocketAddr {
    ZK.with(|z| z.get())
        .expect("set before the simulation steps")
}
