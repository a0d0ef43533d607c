//! Deterministic simulation of the whole cluster (issue 13, item 8): the zookeeper (with
//! the cluster controller), three brokers and the clients as hosts of one turmoil
//! simulation in this process, on simulated UDP and simulated time, under a seeded
//! schedule of faults: partitions (both ways and one way), crashes and restarts, on a
//! crashed broker a flipped byte or a cut tail of a segment file before it restarts, and
//! wall-clock steps (forward or back, then corrected). The PEHRA coordinator runs beside
//! the controller, with short terms, and the brokers sleep when idle.
//! Checked on every run: no acknowledged record lost, moved or duplicated, each
//! partition in order, leader epochs never going back, and the zookeeper's register
//! history linearizable (the checker of tests/linearizability).
//!
//! `SIM_SEED=N` runs one seed (a failing seed prints itself: replay it so; in a build
//! with `RUSTFLAGS="--cfg tokio_unstable"` the replay is exact, see
//! `a_seed_replays_exactly` and docs/replication.md); `SIM_SEEDS=N` (and `SIM_FIRST=F`)
//! runs N seeds from F; `SIM_ZOOKEEPERS=3` runs them with a zookeeper ensemble of three;
//! `SIM_LOG=debug` logs. bench/sim.sh runs a thousand.

#[allow(dead_code)]
mod linearizability;

mod simulation {
    pub mod checks;
    pub mod clock;
    pub mod cluster;
    pub mod faults;
    pub mod net;
    pub mod rng;
    pub mod run;
}

use simulation::run::{run, zookeepers_from_env, Outcome};

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn init_logs() {
    if let Ok(filter) = std::env::var("SIM_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

/// Runs `seeds` with `zookeepers` zookeepers, printing one line per seed; panics naming
/// every failed seed.
fn run_seeds(seeds: impl Iterator<Item = u64>, zookeepers: usize) -> Vec<Outcome> {
    let mut failed = Vec::new();
    let mut outcomes = Vec::new();
    let replay = if zookeepers == 3 {
        "SIM_ZOOKEEPERS=3 "
    } else {
        ""
    };
    for seed in seeds {
        let wall = std::time::Instant::now();
        match run(seed, zookeepers) {
            Ok(o) => {
                println!(
                    "seed {seed}: ok: {:.1} s simulated in {:.1} s, {} faults ({} disk, {} clock), {} records acknowledged, {} zookeeper operations checked, trace {:016x}",
                    o.simulated.as_secs_f64(),
                    wall.elapsed().as_secs_f64(),
                    o.faults,
                    o.disk_faults,
                    o.clock_steps,
                    o.acked,
                    o.zk_ops,
                    o.trace
                );
                outcomes.push(o);
            }
            Err(e) => {
                println!("seed {seed}: FAILED: {e}\nreplay: {replay}SIM_SEED={seed} cargo test -p pehra --test simulation -- --nocapture");
                failed.push(seed);
            }
        }
    }
    assert!(
        failed.is_empty(),
        "failed seeds: {failed:?} (replay one with SIM_SEED=N)"
    );
    outcomes
}

/// The seeds of this test: `SIM_SEED` alone (in `half` 0), or every other one of
/// `SIM_SEEDS` seeds from `SIM_FIRST` (default 24 from 1), so that the two halves run on
/// two test threads.
fn seeds(half: u64) -> Vec<u64> {
    if let Some(seed) = env_u64("SIM_SEED") {
        return if half == 0 { vec![seed] } else { Vec::new() };
    }
    let first = env_u64("SIM_FIRST").unwrap_or(1);
    let count = env_u64("SIM_SEEDS").unwrap_or(24);
    (first + half..first + count).step_by(2).collect()
}

fn run_half(half: u64) {
    init_logs();
    let outcomes = run_seeds(seeds(half).into_iter(), zookeepers_from_env());
    let simulated: f64 = outcomes.iter().map(|o| o.simulated.as_secs_f64()).sum();
    let faults: usize = outcomes.iter().map(|o| o.faults).sum();
    let disk: usize = outcomes.iter().map(|o| o.disk_faults).sum();
    let clock: usize = outcomes.iter().map(|o| o.clock_steps).sum();
    let acked: usize = outcomes.iter().map(|o| o.acked).sum();
    println!(
        "SUMMARY: {} seeds, {:.3} simulated hours, {faults} faults injected ({disk} disk, {clock} clock steps), {acked} records acknowledged, all checks passed",
        outcomes.len(),
        simulated / 3600.0
    );
}

/// Seeded fault schedules (half of the seeds; the other half below).
#[test]
fn seeded_fault_schedules_keep_every_acknowledged_record() {
    run_half(0);
}

/// The other half of the seeds, on another test thread.
#[test]
fn seeded_fault_schedules_keep_every_acknowledged_record_2() {
    run_half(1);
}

/// Issue 16: the same checks with a zookeeper ensemble of three (hosts zk1–zk3: Raft
/// between them, the controller and the PEHRA coordinator on the leader, the log cut
/// every 50 entries), its members crashed and partitioned from each other (a leader cut
/// off from the majority too) and from the brokers and clients, who know all three. Six
/// seeds here (not with `SIM_SEED`: replay one with `SIM_ZOOKEEPERS=3 SIM_SEED=N`);
/// `SIM_ZOOKEEPERS=3` runs the seeded tests above in this mode.
#[test]
fn an_ensemble_under_seeded_faults_keeps_every_acknowledged_record() {
    if env_u64("SIM_SEED").is_some() {
        return;
    }
    init_logs();
    run_seeds(1..=6, 3);
}

/// Seeds that found bugs, run every time (their fault schedules replay exactly, the
/// interleaving nearly): 1043, a partition left offline although a broker that left its
/// ISR below the minimum had every acknowledged record (now an eligible leader replica,
/// KIP-966); 1065, a broker that never took the leadership it was given because the
/// zookeeper's notification went NON while the broker was cut off (now confirmable);
/// 1575, a partition left offline because a broker re-registering (logs not open yet)
/// when it left the ISR below the minimum was kept out of the ELR (about half its runs
/// failed; now only reports of lacking records keep a broker out).
const SEEDS_THAT_FOUND_BUGS: &[u64] = &[1043, 1065, 1575];

/// The seeds in [`SEEDS_THAT_FOUND_BUGS`] pass (not when replaying one with `SIM_SEED`).
#[test]
fn seeds_that_found_bugs_pass() {
    if env_u64("SIM_SEED").is_some() {
        return;
    }
    init_logs();
    run_seeds(SEEDS_THAT_FOUND_BUGS.iter().copied(), 1);
}

/// A seed replays exactly: the same acknowledgements, errors and faults at the same
/// simulated times, run after run (seeds 7, 1 and 2, or `SIM_SEED`). What it takes
/// (docs/replication.md, "Simulation"): every driver's disk work inline
/// (`driver::blocking`, the zookeeper's log worker), every source of randomness and the
/// wall clock from the simulation, no hash-map order in what the servers do, and tokio's
/// `select!` order from the seed, which needs a tokio built with `--cfg tokio_unstable`:
/// CI's replay stage and bench/sim.sh build so (in target/sim-unstable); elsewhere the
/// test is ignored.
#[test]
#[cfg_attr(
    not(tokio_unstable),
    ignore = "needs RUSTFLAGS=\"--cfg tokio_unstable\" (tokio's select! order from the seed): see .ci/run"
)]
fn a_seed_replays_exactly() {
    init_logs();
    let seeds = match env_u64("SIM_SEED") {
        Some(seed) => vec![(seed, zookeepers_from_env())],
        None => vec![(7, 1), (1, 1), (2, 1), (1, 3)],
    };
    for (seed, zookeepers) in seeds {
        let first = run(seed, zookeepers).expect("first run");
        let second = run(seed, zookeepers).expect("second run");
        assert_eq!(
            first.trace, second.trace,
            "seed {seed} ({zookeepers} zookeepers) did not replay exactly"
        );
    }
}
