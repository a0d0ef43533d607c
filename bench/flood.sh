#!/usr/bin/env bash
# Memory under an observer flood and abandoned Block2 transfers (issue 12's "memory stays
# bounded"): what one host with a UDP socket can make a broker and the zookeeper hold.
#
#   bash bench/flood.sh
#
# Starts, on loopback, a zookeeper and one broker in --insecure mode (the worst case:
# anybody may register; with OSCORE the same limits hold per authenticated principal and
# strangers are refused before anything is kept), creates a topic through the pub-sub
# interface and publishes a PAYLOAD_KIB-KiB value to it, then runs observer-flood
# (bench/src/bin/observer-flood.rs) against each server in turn:
#   broker     SOCKETS source ports x OBSERVES observe registrations of /ps/data/flood,
#              plus BLOCK2 source ports each asking for the first block of the large
#              value and never for the next (the server keeps the body for them);
#   zookeeper  the same observer flood on a znode (GET /z/flood with Observe).
# Each server's resident memory (VmRSS from /proc/PID/status) is read before the flood,
# right after it (sockets still open, observers registered), and after PUBLISHES
# publications / znode writes that notify every registered observer; VmHWM is the peak.
# The flood never acknowledges a notification: the servers' CON notifications find the
# dead observers and drop them (RFC 7641 §4.5).
#
# Environment (defaults): SOCKETS=256 OBSERVES=64 BLOCK2=2000 PAYLOAD_KIB=60 PUBLISHES=20
# SKIP_BUILD=0 (1: use the release binaries as they are). Results: a table on stdout and
# bench/results/flood-<date>.json. Everything started here is killed by PID on exit.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BENCH=flood
source bench/lib.sh
REL="${CARGO_TARGET_DIR:-$ROOT/target}/release"
SOCKETS="${SOCKETS:-256}"
OBSERVES="${OBSERVES:-64}"
BLOCK2="${BLOCK2:-2000}"
PAYLOAD_KIB="${PAYLOAD_KIB:-60}"
PUBLISHES="${PUBLISHES:-20}"

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    log "building release binaries (pehra, observer-flood)"
    cargo build -j2 -q --release -p pehra --bin pehra -p pehra-bench --bin observer-flood
fi

bench_workdir flood-bench
declare -A PID_OF LOGF
READY_TIMEOUT=30 # lib.sh's wait_listening

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
hwm_kib() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }

free_port ZK_PORT
free_port BROKER_PORT
ZK="127.0.0.1:$ZK_PORT"
BROKER="127.0.0.1:$BROKER_PORT"
start_server zookeeper "$WORK/zk.log" "$REL/pehra" zookeeper --insecure --listen "$ZK" --data-dir "$WORK/zk"
wait_listening zookeeper || die "the zookeeper did not start"
start_server broker "$WORK/broker.log" env ${BROKER_ENV:-} "$REL/pehra" broker --insecure --id 1 --listen "$BROKER" \
    --zookeeper "$ZK" --data-dir "$WORK/broker"
wait_listening broker || die "the broker did not start"

coap() { "$REL/pehra" coap --timeout 20 "$@" >/dev/null; }
# The topic (pub-sub, draft -21: {0: "flood"}), then its large value.
printf '\xa1\x00\x65flood' >"$WORK/create.cbor"
for _ in $(seq 1 50); do
    coap post "coap://$BROKER/ps" -t 60 -f "$WORK/create.cbor" 2>/dev/null && break
    sleep 0.2 # the broker's first metadata read; no event to wait on from outside
done
head -c $((PAYLOAD_KIB * 1024)) /dev/zero | tr '\0' 'x' >"$WORK/value.txt"
for _ in $(seq 1 50); do
    coap put "coap://$BROKER/ps/data/flood" -t 0 -f "$WORK/value.txt" 2>/dev/null && break
    sleep 0.2 # the new partition's leader
done
coap get "coap://$BROKER/ps/data/flood" || die "the topic's value cannot be read"
"$REL/pehra" zk --zookeeper "$ZK" create /flood small >/dev/null

# flood NAME ADDR PATH [BLOCK2-PATH]: runs observer-flood against one server and sets
# FLOODED/DONE (its JSON lines) and RSS_BEFORE/RSS_FLOODED/RSS_AFTER/HWM (KiB).
flood() {
    local name="$1" addr="$2" path="$3" block2="${4:-}" pid="${PID_OF[$1]}"
    local out="$WORK/flood-$name.out"
    RSS_BEFORE=$(rss_kib "$pid")
    local extra=()
    [[ -n "$block2" ]] && extra=(--block2-path "$block2" --block2-sockets "$BLOCK2")
    "$REL/observer-flood" --target "$addr" --path "$path" --sockets "$SOCKETS" \
        --observes "$OBSERVES" --hold-ms 8000 "${extra[@]}" >"$out" &
    local flood_pid=$!
    PIDS+=("$flood_pid")
    timeout 120 grep -q -m1 '"phase":"flooded"' <(tail -F --pid="$flood_pid" "$out" 2>/dev/null) \
        || die "observer-flood against $name did not finish its flood"
    RSS_FLOODED=$(rss_kib "$pid")
    local i
    for ((i = 1; i <= PUBLISHES; i++)); do
        if [[ "$name" == broker ]]; then
            coap put "coap://$addr/ps/data/flood" -t 0 -d "update $i" || true
        else
            "$REL/pehra" zk --zookeeper "$addr" set /flood "update $i" >/dev/null
        fi
    done
    wait "$flood_pid" || true
    RSS_AFTER=$(rss_kib "$pid")
    HWM=$(hwm_kib "$pid")
    FLOODED=$(grep '"phase":"flooded"' "$out")
    DONE=$(grep '"phase":"done"' "$out" || echo '{}')
}

declare -A ROW
for target in broker zookeeper; do
    if [[ $target == broker ]]; then
        flood broker "$BROKER" ps/data/flood ps/data/flood
    else
        flood zookeeper "$ZK" z/flood
    fi
    registered=$(field registered <<<"$FLOODED")
    sent=$(field sent <<<"$FLOODED")
    refused=$(grep -o '"5.03":[0-9]*' <<<"$FLOODED" | cut -d: -f2 || true)
    blocks=$(field block2_first_blocks <<<"$FLOODED")
    notes=$(field notifications <<<"$DONE")
    ROW[$target]="$sent $registered ${refused:-0} ${blocks:-0} ${notes:-0} $RSS_BEFORE $RSS_FLOODED $RSS_AFTER $HWM"
    log "$target: $FLOODED $DONE; RSS KiB before $RSS_BEFORE, flooded $RSS_FLOODED, after $RSS_AFTER, peak $HWM"
done

printf '\n| server | requests | observers registered | refused 5.03 | Block2 first blocks | notifications | RSS before (MiB) | RSS flooded (MiB) | RSS after %s changes (MiB) | peak (MiB) |\n' "$PUBLISHES"
printf '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n'
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
json="["
for target in broker zookeeper; do
    read -r sent reg ref blk notes before flooded after hwm <<<"${ROW[$target]}"
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$target" "$sent" "$reg" "$ref" "$blk" "$notes" \
        "$(mib "$before")" "$(mib "$flooded")" "$(mib "$after")" "$(mib "$hwm")"
    json+="{\"server\":\"$target\",\"sent\":$sent,\"registered\":$reg,\"refused\":$ref,\"block2_first_blocks\":$blk,\"notifications\":$notes,\"rss_before_kib\":$before,\"rss_flooded_kib\":$flooded,\"rss_after_kib\":$after,\"hwm_kib\":$hwm},"
done
json="${json%,}]"
mkdir -p bench/results
result="bench/results/flood-$(date +%Y%m%d-%H%M%S).json"
printf '{"sockets":%s,"observes":%s,"block2":%s,"payload_kib":%s,"publishes":%s,"rows":%s}\n' \
    "$SOCKETS" "$OBSERVES" "$BLOCK2" "$PAYLOAD_KIB" "$PUBLISHES" "$json" >"$result"
log "results in $result"
