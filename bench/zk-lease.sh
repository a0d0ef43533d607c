#!/usr/bin/env bash
# Seed 002's adaptive lease for the zookeeper ensemble's leader, measured on real
# processes: three `pehra zookeeper` members on loopback (release build), each reading
# its health from a file; for each row below every member's file gets that health (so
# whichever leads has it), and after one health sample (5 s) plus a second the leader's
# lease and its factors are read from `pehra cluster status`, with the election
# timeouts its followers drew from it.
#
#   bash bench/zk-lease.sh
#
# The lease: base × (1 + NHI factor + network stability factor + load factor), clamped
# to [min, max] (--leader-lease-ms BASE,MIN,MAX; here LEASE, default 2000,1000,3000 so
# the factors show whole: the default base, 1000 ms, is also the minimum). The network
# factor comes from the heartbeats' round trips on loopback (their standard
# deviation), the load factor from the health's CPU. No jitter is injected (loopback
# only): the unit test `ensemble::lease` covers the network factor's arithmetic.
#
# Environment (defaults): LEASE=2000,1000,3000  SETTLE=6 (s per row)  SKIP_BUILD=0
# Output: a Markdown table on stdout. Every process started here is stopped by PID on
# exit.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
LEASE="${LEASE:-2000,1000,3000}"
SETTLE="${SETTLE:-6}"
SKIP_BUILD="${SKIP_BUILD:-0}"
READY_TIMEOUT=60
BENCH=zk-lease.sh
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
bench_workdir zk-lease
declare -A PID_OF LOGF

if [[ "$SKIP_BUILD" != 1 ]]; then
    log "building pehra (release)"
    cargo build -j2 --release -p pehra --bin pehra >&2
fi
PEHRA="$TARGET_DIR/release/pehra"

PEERS=""
ADDRS=()
for id in 1 2 3; do
    free_port port
    ADDRS+=("127.0.0.1:$port")
    PEERS+="${PEERS:+,}$id=127.0.0.1:$port"
done
ALL="$(IFS=,; echo "${ADDRS[*]}")"
for id in 1 2 3; do
    echo "cpu=0" >"$WORK/health-$id"
    start_server "zk$id" "$WORK/zk$id.log" "$PEHRA" zookeeper --id "$id" --listen "${ADDRS[$((id - 1))]}" \
        --data-dir "$WORK/zk$id" --peers "$PEERS" --health-file "$WORK/health-$id" \
        --leader-handover-on off --leader-lease-ms "$LEASE"
done
for id in 1 2 3; do wait_listening "zk$id"; done
deadline=$((SECONDS + READY_TIMEOUT))
until grep -q "gives a lease of" <<<"$("$PEHRA" cluster status --zookeeper "$ALL" 2>/dev/null || true)"; do
    ((SECONDS < deadline)) || die "no leader with a lease after ${READY_TIMEOUT}s"
    sleep 0.5
done

echo "| health file | NHI | NHI factor | load factor | network factor (heartbeat RTT σ) | lease (formula) | followers' election timeouts |"
echo "|---|---|---:|---:|---:|---:|---|"
row() { # text
    local text="$1" id status line lease nhi net load sigma timeouts index
    for id in 1 2 3; do printf '%b' "$text" >"$WORK/health-$id"; done
    sleep "$SETTLE"
    status="$("$PEHRA" cluster status --zookeeper "$ALL")"
    line="$(grep "gives a lease of" <<<"$status")"
    lease="$(sed -n 's/.*gives a lease of \([0-9]*\) ms.*/\1/p' <<<"$line")"
    nhi="$(sed -n 's/.*NHI factor \([-+0-9]*\)‰.*/\1/p' <<<"$line")"
    net="$(sed -n 's/.*network \([-+0-9]*\)‰.*/\1/p' <<<"$line")"
    sigma="$(sed -n 's/.*deviation of \([0-9.]*\) ms.*/\1/p' <<<"$line")"
    load="$(sed -n 's/.*load \([-+0-9]*\)‰.*/\1/p' <<<"$line")"
    index="$(awk '$3 == "leader" { print $8 }' <<<"$status")"
    timeouts="$(awk '$3 == "follower" { printf "%s%s %s", sep, $9, $10; sep = ", " }' <<<"$status")"
    echo "| \`$(printf '%b' "$text" | tr '\n' ' ' | sed 's/ $//')\` | $index | $nhi‰ | $load‰ | $net‰ ($sigma ms) | **$lease ms** | $timeouts |"
}
row 'cpu=0\n'
row 'cpu=500\n'
row 'cpu=1000\n'
row 'cpu=600\nmemory=1000\nfailures=5\n'
row 'cpu=300\nmemory=1000\ndisk_io=1000\nbattery=0\nfailures=5\n'
