#!/usr/bin/env bash
# Deterministic simulation of the whole cluster at scale (issue 13, item 8): runs
# tests/simulation.rs over SEEDS seeds (default 1000) from FIRST (default 1), two seeds at
# a time (the test's two halves on two test threads), and prints the totals: seeds,
# simulated hours, faults injected, records acknowledged, wall time.
#
#   bash bench/sim.sh                 # 1000 seeds
#   SEEDS=200 FIRST=5000 bash bench/sim.sh
#
# Built optimised and with RUSTFLAGS="--cfg tokio_unstable" (tokio's select! order then
# comes from the seed, and a failing seed replays exactly, see docs/replication.md
# "Simulation"), in its own target directory ($CARGO_TARGET_DIR/sim-unstable) so that the flag does not
# rebuild the ordinary one. Other knobs of the test pass through: SIM_SECONDS (simulated
# seconds of producing and faults per seed, 20), SIM_ZK_CRASH=0 (do not crash the zookeeper,
# whose crashes are on by default), SIM_DIR (the data directories, /dev/shm). A failing seed prints itself and how to
# replay it; the script then exits non-zero. Output: bench/results/sim-<date>.log.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BENCH=sim
source bench/lib.sh
SEEDS="${SEEDS:-1000}"
FIRST="${FIRST:-1}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}/sim-unstable"
export RUSTFLAGS="--cfg tokio_unstable"
export CARGO_INCREMENTAL=0
PROFILE=(--config 'profile.simrel.inherits="release"' --config 'profile.simrel.debug=false' --profile simrel)

log "building tests/simulation.rs (optimised, tokio_unstable) in $CARGO_TARGET_DIR"
cargo build -j2 -q "${PROFILE[@]}" -p pehra --test simulation

mkdir -p bench/results
out="bench/results/sim-$(date -u +%Y%m%dT%H%M%SZ).log"
log "running $SEEDS seeds from $FIRST; output in $out"
start=$(date +%s)
status=0
SIM_FIRST="$FIRST" SIM_SEEDS="$SEEDS" cargo test -j2 -q "${PROFILE[@]}" -p pehra --test simulation \
    seeded_fault_schedules -- --nocapture --test-threads=2 >"$out" 2>&1 || status=$?
wall=$(($(date +%s) - start))

# Totals from each half's SUMMARY line (the two halves print at once, so a per-seed
# line may be cut into by the other's: the seeds are counted from the summaries).
awk -v wall="$wall" '
    /SUMMARY: / {
        sub(/.*SUMMARY: /, "")
        ok += $1; sim += $3; faults += $6; sub(/\(/, "", $9); disk += $9; clock += $11; acked += $14
    }
    /seed [0-9]+: FAILED/ { failed++; print }
    END {
        printf "seeds: %d passed, %d failed\n", ok, failed
        printf "simulated: %.2f hours\n", sim
        printf "faults injected: %d (%d disk, %d clock steps)\n", faults, disk, clock
        printf "records acknowledged and checked: %d\n", acked
        printf "wall time: %d s (%.1f seeds per minute)\n", wall, (ok + failed) * 60 / (wall > 0 ? wall : 1)
    }' "$out"
exit "$status"
