#!/usr/bin/env bash
# Runs every fuzz target of shared/fuzz for SECONDS each (default 20), on stable
# without a sanitizer (-s none), and prints one summary line per target. Exits non-zero
# if any target crashed (the input is left in shared/fuzz/artifacts/TARGET/).
#
#   bash shared/fuzz/run.sh [SECONDS]
#
# FUZZ_SEED=N fixes libFuzzer's seed and FUZZ_RUNS=N runs each target for exactly N
# inputs instead of SECONDS: the same inputs in the same order on any machine. CI uses
# both, so a CI failure means a regression, not a new random find (the long runs use
# random seeds and time limits, and are recorded in docs/security.md).
#
# The long runs with AddressSanitizer and what they found: docs/security.md, "Fuzzing".
set -uo pipefail

seconds="${1:-20}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target/fuzz}"
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz"
    cargo install cargo-fuzz --locked || cargo install cargo-fuzz || exit 2
fi

cd "$here" || exit 2
echo "fuzz: building the targets"
cargo fuzz build -s none || exit 2

targets=$(cargo fuzz list)
logs="$(mktemp -d)"
failed=0
summary=()
for t in $targets; do
    log="$logs/$t.log"
    if [ -n "${FUZZ_RUNS:-}" ]; then limit="-runs=$FUZZ_RUNS"; else limit="-max_total_time=$seconds"; fi
    cargo fuzz run -s none "$t" -- "$limit" -seed="${FUZZ_SEED:-0}" \
        -print_final_stats=1 >"$log" 2>&1
    rc=$?
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*')
    ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*')
    if [ "$rc" -eq 0 ]; then
        line="fuzz: $t ok: ${runs:-?} runs (${limit#-}), cov ${cov:-?}, ft ${ft:-?}"
    else
        failed=1
        artifact=$(grep -o 'Test unit written to [^ ]*' "$log" | tail -1 | sed 's/Test unit written to //')
        line="fuzz: $t FAILED (exit $rc) after ${runs:-?} runs; input: ${artifact:-none}"
        echo "---- $t: last lines of its log ----"
        grep -v '^#' "$log" | tail -40
    fi
    echo "$line"
    summary+=("$line")
done
if [ -n "${FUZZ_RUNS:-}" ]; then per="$FUZZ_RUNS runs"; else per="${seconds}s"; fi
echo "---- fuzz summary ($per per target, seed ${FUZZ_SEED:-random}) ----"
printf '%s\n' "${summary[@]}"
rm -rf "$logs"
exit "$failed"
