#!/usr/bin/env bash
# The zookeeper ensemble's soak on real processes (issue 16): tests/ensemble_soak.rs with
# ROUNDS rounds (default 40; CI runs 4). Each round SIGKILLs or SIGSTOPs the leader or a
# follower (in turn) and the partition's leading broker, under a producer (acks=all),
# register clients and a znode creator; at the end every acknowledged record and znode
# is checked and each register's history must be linearizable. See docs/ensemble.md,
# "Soak".
#
#   bash bench/ensemble-soak.sh        # 40 rounds
#   bash bench/ensemble-soak.sh 100
#
# Output: bench/results/ensemble-soak-<date>.log (the last line sums the run up).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BENCH=ensemble-soak
source bench/lib.sh
ROUNDS="${1:-40}"

log "building pehra and tests/ensemble_soak.rs (release)"
cargo build -j2 -q --release --bin pehra
cargo test -j2 -q --release -p pehra --test ensemble_soak --no-run

mkdir -p bench/results
out="bench/results/ensemble-soak-$(date -u +%Y%m%dT%H%M%SZ).log"
log "running $ROUNDS rounds; output in $out"
start=$(date +%s)
status=0
PEHRA_SOAK_ROUNDS="$ROUNDS" cargo test -j2 -q --release -p pehra --test ensemble_soak \
    the_ensemble_keeps_everything -- --nocapture >"$out" 2>&1 || status=$?
wall=$(($(date +%s) - start))
grep -E "^[0-9]+ rounds:|panicked|^round " "$out" | tail -3
echo "wall time: $wall s; exit $status"
exit "$status"
