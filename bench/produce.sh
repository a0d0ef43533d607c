#!/usr/bin/env bash
# Produce-to-consume over loopback: our broker vs Mosquitto (MQTT QoS 0 and 1) vs raw UDP,
# one producer and one consumer on one partition/topic, all driven by the same load
# client (target/release/produce-load; producer and consumer in one process, so the
# send time stamped into each record gives produce-to-consume latency without clocks).
#
#   bash bench/produce.sh
#
# Targets (each server on its own free port on 127.0.0.1, all started up front):
#   ours     pehra zookeeper + pehra broker --id 1 (data dirs in a temp dir), and brokers
#            2..N as well when a row asks for replication factor N > 1 (OURS_REPL: three
#            brokers, ids 1,2,3, each its own port and data dir). The topic `bench` is
#            created with `pehra topic create` (readiness; with N brokers also a topic
#            `bench-rfN` of N replicas, probed until all N are in sync, then deleted);
#            every measured run then creates a topic of its own (produce-load
#            --fresh-topic: 1 partition, the row's replication factor; the run starts
#            once all its replicas are in sync) and deletes it after, so no observer left
#            behind by an earlier run shares its partition resource. With N brokers up
#            the controller may put an RF 1 topic's partition on any of them (the rows
#            pin no broker). Producer: pehra_broker's ClusterClient, one produce request
#            per message, IN_FLIGHT requests at once, acks 1 (the leader wrote it) or
#            all (every in-sync replica has it), per OURS/OURS_REPL entry. Consumer: a
#            second ClusterClient observing the partition (a notification whenever its
#            high watermark moves) and fetching from its next offset; it sees committed
#            records only, so with RF > 1 a record arrives once the followers have it
#            (they long-poll POST /replica on the leader), whatever the acks. Before a
#            replicated run produce-load also waits for one acks=all record to be
#            acknowledged (not consumed). A broker can miss a new topic's partitions (a
#            race in its assignment watch); produce-load then rewrites the topic znode so
#            the brokers re-read it, before measuring, and the log line says "nudged".
#   mqtt     mosquitto (Debian's package, installed with apt-get if missing and running
#            as root; skipped otherwise), started here with a config file written here:
#            `listener PORT 127.0.0.1`, `allow_anonymous true` and, with MQTT_NODELAY=1,
#            `set_tcp_nodelay true`. Load: rumqttc (publisher + subscriber connection,
#            clean sessions, one record per PUBLISH, QoS 0 and QoS 1 for both; at QoS 1
#            at most IN_FLIGHT PUBLISHes await their PUBACK; TCP_NODELAY as above).
#   raw      udp-echo (this crate): BATCH records per datagram to the echo, which sends
#            it back to the same socket; the ceiling (one hop through another process).
#            Its window is also cut to 128 kB in flight (udp-echo's default socket buffer
#            drops a larger burst of big datagrams: 64 x 6400 B would lose ~5%).
#
# Every run: WARMUP records not measured, then COUNT measured records of RECORD_SIZE
# bytes; at most WINDOW messages produced and not yet consumed (the same end-to-end flow
# control for all; for raw UDP and QoS 0 the only one). records/s = measured records /
# (last arrival - first send); MB/s counts record bytes (RECORD_SIZE each); latency =
# arrival - send time per record. Each run is bounded by TIMEOUT seconds.
#
# Environment (defaults):
#   COUNT=100000 WARMUP=10000 RECORD_SIZE=100 WINDOW=64 IN_FLIGHT=16
#   OURS="1:16 7:16 64:1"  our rows, BATCH[:IN_FLIGHT[:ACKS[:RF]]] each (defaults:
#                   IN_FLIGHT, acks 1, replication factor 1). 7 x 100 B records make a
#                   966-byte request, the most that fits one 1024-byte CoAP block; 64
#                   go block-wise (8.4 kB), one request at a time (see produce-load docs).
#   OURS_REPL="1:16:all:3 7:16:all:3 7:16:1:3 64:1:all:3"  our replicated rows, measured
#                   in the same rounds: the same format, but ACKS defaults to all and RF
#                   to 3. ACKS is 1 or all. The largest RF of all rows is the number of
#                   brokers started (OURS_REPL="" and RF 1 everywhere: one broker). A row
#                   is named ours-bBATCH-fIN_FLIGHT, plus -acks=ACKS-rf=RF unless acks 1
#                   and RF 1 (the rows as before); its column "vs rf1" compares it with
#                   the acks=1 RF 1 row of the same BATCH and IN_FLIGHT, if there is one.
#   RAW_BATCHES     batch sizes of the raw UDP rows (default: the batches of our rows)
#   MQTT_QOS="0 1"  MQTT_NODELAY=1 (0 = Nagle on, the TCP default)
#   FETCH_BYTES=65536   our consumer's max_bytes per fetch
#   REPEAT=3        rounds; every figure is the median of the rounds, per metric
#   PIN=none        none | split (servers on CPU 0, load on CPU 1) | same (all on CPU 0)
#   TARGETS="raw ours mqtt"  READY_TIMEOUT=30  TIMEOUT=60  SKIP_BUILD=0 (1 = use binaries)
#   OSCORE=0        1: our cluster runs secured (keys from `pehra keys init`, every server
#                   with its credentials, the load client as `client`): every request
#                   and answer OSCORE-protected and checked against the ACLs. Run the
#                   script with OSCORE=0 and =1 to compare (the raw UDP rows of each run
#                   are the common yardstick).
#
# Output: a table on stdout, bench/results/produce-<date>.json (gitignored) and a
# Markdown snippet. Every process started here is killed by PID on exit.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
REL="$TARGET_DIR/release"

COUNT="${COUNT:-100000}"
WARMUP="${WARMUP:-10000}"
RECORD_SIZE="${RECORD_SIZE:-100}"
WINDOW="${WINDOW:-64}"
IN_FLIGHT="${IN_FLIGHT:-16}"
OURS="${OURS:-1:16 7:16 64:1}"
OURS_REPL="${OURS_REPL-1:16:all:3 7:16:all:3 7:16:1:3 64:1:all:3}"
RAW_BATCHES="${RAW_BATCHES:-$(for e in $OURS $OURS_REPL; do echo "${e%%:*}"; done | awk '!seen[$0]++' | xargs)}"
MQTT_QOS="${MQTT_QOS:-0 1}"
MQTT_NODELAY="${MQTT_NODELAY:-1}"
FETCH_BYTES="${FETCH_BYTES:-65536}"
REPEAT="${REPEAT:-3}"
PIN="${PIN:-none}"
TARGETS="${TARGETS:-raw ours mqtt}"
READY_TIMEOUT="${READY_TIMEOUT:-30}"
TIMEOUT="${TIMEOUT:-60}"
SKIP_BUILD="${SKIP_BUILD:-0}"
OSCORE="${OSCORE:-0}"
# One-line errors from the load client, not anyhow backtraces.
export RUST_LIB_BACKTRACE=0 RUST_BACKTRACE=0

BENCH=produce.sh
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"   # log, die, free_port, start_server, field, ...

# ---------------------------------------------------------------- our rows
# OURS_ROWS: "BATCH IN_FLIGHT ACKS RF" per entry; BROKERS: the largest RF.
OURS_ROWS=()
BROKERS=1
parse_ours() { # default-acks default-rf entries...
    local dacks="$1" drf="$2" e b f a r rest
    shift 2
    for e in "$@"; do
        IFS=: read -r b f a r rest <<<"$e"
        f="${f:-$IN_FLIGHT}" a="${a:-$dacks}" r="${r:-$drf}"
        [[ "$b" =~ ^[1-9][0-9]*$ && "$f" =~ ^[1-9][0-9]*$ && "$r" =~ ^[1-9][0-9]*$ &&
            ("$a" == 1 || "$a" == all) && -z "$rest" ]] ||
            die "bad entry '$e' (BATCH[:IN_FLIGHT[:ACKS[:RF]]], ACKS 1 or all)"
        OURS_ROWS+=("$b $f $a $r")
        ((r > BROKERS)) && BROKERS=$r
    done
    return 0
}
PIDS=()
declare -A PID_OF
WORK="$(mktemp -d "${TMPDIR:-/tmp}/pehra-produce-bench.XXXXXX")"
cleanup() {
    local pid zk="${PID_OF[zk]:-}" rest=() zks=()
    # The zookeeper last: a broker's controlled shutdown (SIGTERM) asks it to move
    # leadership away, and without it a broker hangs for minutes.
    for pid in "${PIDS[@]}"; do
        if [[ "$pid" == "$zk" ]]; then zks+=("$pid"); else rest+=("$pid"); fi
    done
    ((${#rest[@]} == 0)) || stop_pids 15 "${rest[@]}"
    ((${#zks[@]} == 0)) || stop_pids 15 "${zks[@]}"
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
# shellcheck disable=SC2086 # the entries are words
parse_ours 1 1 $OURS
# shellcheck disable=SC2086
parse_ours all 3 $OURS_REPL

# ---------------------------------------------------------------- pinning
case "$PIN" in
    none) SRV_PIN=(); CLI_PIN=() ;;
    split) SRV_PIN=(taskset -c 0); CLI_PIN=(taskset -c 1) ;;
    same) SRV_PIN=(taskset -c 0); CLI_PIN=(taskset -c 0) ;;
    *) die "PIN must be none, split or same (got '$PIN')" ;;
esac
if [[ "$PIN" != none ]] && ! command -v taskset >/dev/null; then
    die "PIN=$PIN needs taskset (util-linux)"
fi

# ---------------------------------------------------------------- build
LOAD="$REL/produce-load"
ECHO="$REL/udp-echo"
PEHRA="$REL/pehra"
if [[ "$SKIP_BUILD" != 1 ]]; then
    log "building pehra and pehra-bench (release)"
    cargo build --release -j2 -p pehra -p pehra-bench
fi
[[ -x "$LOAD" && -x "$ECHO" ]] || die "missing $LOAD or $ECHO (build failed?)"
PROBE_LOAD="$LOAD" # wait_probe (lib.sh)
if [[ "$OSCORE" == 1 ]]; then
    # Keys for the zookeeper, every broker and the load client; start_pehra (lib.sh)
    # gives the servers theirs, and every pehra/produce-load call below is the client.
    "$REL/pehra" keys init "$WORK/keys" --brokers "$BROKERS" >/dev/null ||
        die "pehra keys init failed"
    export PEHRA_KEYS="$WORK/keys" PEHRA_CREDENTIALS="$WORK/keys/client.cred"
fi

# ---------------------------------------------------------------- ports

# ---------------------------------------------------------------- servers
# (PID_OF is declared up front: cleanup reads it.)
declare -A LOGF ADDR
# stop_pids, wait_listening, wait_probe, start_pehra, start_mosquitto: bench/lib.sh
UP=" "
MOSQ_VERSION=""
for t in $TARGETS; do
    case "$t" in
        raw)
            free_port port
            ADDR[raw]="127.0.0.1:$port"
            start_server raw "$WORK/udp-echo.log" "${SRV_PIN[@]}" "$ECHO" --listen "${ADDR[raw]}" --quiet
            wait_probe raw raw "${ADDR[raw]}" || die "the raw UDP echo server did not come up"
            UP+="raw "
            ;;
        ours)
            [[ -x "$PEHRA" ]] || { log "skipping ours: no $PEHRA"; continue; }
            if ! start_pehra "$PEHRA" "$BROKERS"; then log "skipping ours"; continue; fi
            UP+="ours "
            ;;
        mqtt)
            if ! start_mosquitto; then log "skipping mqtt"; continue; fi
            UP+="mqtt "
            ;;
        *) die "unknown target '$t' (TARGETS: raw ours mqtt)" ;;
    esac
    log "$t ready (${ADDR[$t]})"
done
[[ "$UP" == *" raw "* ]] || log "warning: no raw UDP ceiling (TARGETS has no raw)"

# ---------------------------------------------------------------- rows
# name system batch in-flight qos description [acks rf]
ROWS=()
declare -A R_SYS R_BATCH R_INF R_QOS R_DESC R_ACKS R_RF
add_row() {
    [[ -z "${R_SYS[$1]:-}" ]] || { log "warning: row $1 twice, measured once"; return 0; }
    ROWS+=("$1")
    R_SYS[$1]="$2" R_BATCH[$1]="$3" R_INF[$1]="$4" R_QOS[$1]="$5" R_DESC[$1]="$6"
    R_ACKS[$1]="${7:-}" R_RF[$1]="${8:-}"
}
if [[ "$UP" == *" raw "* ]]; then
    for b in $RAW_BATCHES; do
        add_row "raw-b$b" raw "$b" "$IN_FLIGHT" 0 "raw UDP via udp-echo, $b record(s)/datagram"
    done
fi
if [[ "$UP" == *" ours "* ]]; then
    for e in "${OURS_ROWS[@]}"; do
        read -r b f a r <<<"$e"
        n="ours-b$b-f$f"
        [[ "$a" == 1 && "$r" == 1 ]] || n+="-acks=$a-rf=$r"
        d="Pehra broker, acks $a, replication factor $r"
        [[ "$OSCORE" != 1 ]] || d+=", OSCORE"
        ((r == 1)) || d+=" ($BROKERS brokers)"
        add_row "$n" ours "$b" "$f" 0 "$d, $b record(s)/request, $f request(s) in flight" "$a" "$r"
    done
fi
if [[ "$UP" == *" mqtt "* ]]; then
    nd=""
    [[ "$MQTT_NODELAY" == 1 ]] && nd=", TCP_NODELAY"
    for q in $MQTT_QOS; do
        add_row "mqtt-q$q" mqtt 1 "$IN_FLIGHT" "$q" "Mosquitto ${MOSQ_VERSION:-?}, QoS $q, 1 record/PUBLISH$nd"
    done
fi
((${#ROWS[@]})) || die "nothing to measure"

run_row() { # name round -> JSON line on stdout
    local n="$1" extra=()
    case "${R_SYS[$n]}" in
        raw) extra=(--target "${ADDR[raw]}") ;;
        ours)
            extra=(--target "${ADDR[zk]}" --topic bench --fresh-topic --fetch-bytes "$FETCH_BYTES"
                --acks "${R_ACKS[$n]}" --replication-factor "${R_RF[$n]}")
            ;;
        mqtt)
            extra=(--target "${ADDR[mqtt]}" --qos "${R_QOS[$n]}")
            [[ "$MQTT_NODELAY" == 1 ]] && extra+=(--tcp-nodelay)
            ;;
    esac
    "${CLI_PIN[@]}" "$LOAD" --system "${R_SYS[$n]}" "${extra[@]}" --batch "${R_BATCH[$n]}" \
        --in-flight "${R_INF[$n]}" --window "$WINDOW" --record-size "$RECORD_SIZE" \
        --count "$COUNT" --warmup "$WARMUP" --timeout "$TIMEOUT" --label "$n/round$2" --json
}

# ---------------------------------------------------------------- measure
log "measuring: ${ROWS[*]}; count=$COUNT (+$WARMUP warm-up) record=${RECORD_SIZE}B" \
    "window=$WINDOW repeat=$REPEAT pin=$PIN"
RUNS="$WORK/runs.tsv" # round name json
: >"$RUNS"
read -r TICKS0 STEAL0 < <(cpu_ticks)
for ((round = 1; round <= REPEAT; round++)); do
    order=("${ROWS[@]}")
    if ((round % 2 == 0)); then # alternate who goes first
        order=()
        for ((i = ${#ROWS[@]} - 1; i >= 0; i--)); do order+=("${ROWS[$i]}"); done
    fi
    for n in "${order[@]}"; do
        if line="$(run_row "$n" "$round" 2>"$WORK/last.err")"; then :; else
            log "round $round/$REPEAT $n: produce-load exited $? ($(tail -n1 "$WORK/last.err"))"
        fi
        [[ "$line" == "{"* ]] || continue
        printf '%s\t%s\t%s\n' "$round" "$n" "$line" >>"$RUNS"
        msg="$(printf '%.0f' "$(field rps <<<"$line")") records/s, p50 $(field lat_p50_us <<<"$line") us"
        [[ "$(field lost <<<"$line")" == 0 ]] || msg+=", lost $(field lost <<<"$line")"
        [[ "$(field errors <<<"$line")" == 0 ]] || msg+=", $(field errors <<<"$line") errors: $(field first_error <<<"$line")"
        [[ "$(field timed_out <<<"$line")" == false ]] || msg+=", TIMED OUT"
        r="$(field retries <<<"$line")"
        [[ -z "$r" || "$r" == 0 ]] || msg+=", $r producer retries ($(field retry_causes <<<"$line"))"
        r="$(field nudges <<<"$line")"
        [[ -z "$r" || "$r" == 0 ]] || msg+=", brokers nudged $r time(s) (see produce-load's wait_served)"
        log "round $round/$REPEAT $n: $msg"
        while IFS= read -r l; do log "    $l"; done <"$WORK/last.err"
    done
done
read -r TICKS1 STEAL1 < <(cpu_ticks)
STEAL_PCT="$(awk -v s=$((STEAL1 - STEAL0)) -v t=$((TICKS1 - TICKS0)) 'BEGIN { if (t > 0) printf "%.1f", 100 * s / t; else print 0 }')"
for name in "${!PID_OF[@]}"; do
    kill -0 "${PID_OF[$name]}" 2>/dev/null || log "warning: $name exited during the runs (log: ${LOGF[$name]})"
done

# ---------------------------------------------------------------- summary
# Per row: medians over rounds of rps, mbps, p50, p99; min/max rps; summed lost/errors.
SUMMARY="$WORK/summary.tsv" # name rps lo hi mbps p50 p99 lost errors n msg_bytes
while IFS=$'\t' read -r _ n line; do
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$n" "$(field rps <<<"$line")" "$(field mbps <<<"$line")" \
        "$(field lat_p50_us <<<"$line")" "$(field lat_p99_us <<<"$line")" "$(field lost <<<"$line")" \
        "$(field errors <<<"$line")" "$(field msg_bytes <<<"$line")"
done <"$RUNS" | awk -F'\t' '
    function med(list,    a, n, i, j, t) {
        n = split(list, a, " ")
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
        return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    {
        if (!($1 in n)) { order[++k] = $1; lo[$1] = $2; hi[$1] = $2 }
        n[$1]++; rps[$1] = rps[$1] " " $2; mb[$1] = mb[$1] " " $3; p50[$1] = p50[$1] " " $4
        p99[$1] = p99[$1] " " $5; lost[$1] += $6; err[$1] += $7; bytes[$1] = $8
        if ($2 + 0 < lo[$1] + 0) lo[$1] = $2; if ($2 + 0 > hi[$1] + 0) hi[$1] = $2
    }
    END {
        for (i = 1; i <= k; i++) {
            r = order[i]
            printf "%s\t%.1f\t%s\t%s\t%.3f\t%.1f\t%.1f\t%d\t%d\t%d\t%s\n", r, med(rps[r]), lo[r], hi[r],
                med(mb[r]), med(p50[r]), med(p99[r]), lost[r], err[r], n[r], bytes[r]
        }
    }' >"$SUMMARY"

declare -A S_RPS
while IFS=$'\t' read -r n rps _; do S_RPS[$n]="$rps"; done <"$SUMMARY"

# Per-round ratios (the two runs of a round are close in time, so host noise cancels
# better than in the ratio of medians): median over rounds of ours/raw (same batch),
# ours/QoS 0, ours/QoS 1, mqtt/raw, and a replicated row / our acks=1 RF 1 row of the
# same batch and in-flight. ROUND_RATIO[name,kind] with kind raw|q0|q1|rf1.
declare -A ROUND_RATIO
while IFS=$'\t' read -r n kind r; do ROUND_RATIO[$n,$kind]="$r"; done < <(
    while IFS=$'\t' read -r round n line; do
        printf '%s\t%s\t%s\n' "$round" "$n" "$(field rps <<<"$line")"
    done <"$RUNS" | awk -F'\t' '
        function med(list,    a, n, i, j, t) {
            n = split(list, a, " ")
            for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
            return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
        }
        { rps[$1, $2] = $3; names[$2] = 1; if ($1 > rounds) rounds = $1 }
        END {
            for (n in names) {
                b = n; sub(/^[a-z]+-b/, "", b); sub(/-.*/, "", b)
                split("raw q0 q1 rf1", kinds, " ")
                for (k = 1; k <= 4; k++) {
                    kind = kinds[k]
                    if (kind == "raw") ref = "raw-b" b; else ref = "mqtt-" kind
                    if (n ~ /^raw-/ || (n ~ /^mqtt-/ && kind != "raw")) continue
                    if (n ~ /^mqtt-/) ref = "raw-b1"
                    if (kind == "rf1") {
                        # ours-bB-fF-acks=A-rf=R -> ours-bB-fF
                        if (!match(n, /^ours-b[0-9]+-f[0-9]+-/)) continue
                        ref = substr(n, 1, RLENGTH - 1)
                    }
                    list = ""
                    for (r = 1; r <= rounds; r++)
                        if ((r, n) in rps && (r, ref) in rps && rps[r, ref] > 0) list = list " " rps[r, n] / rps[r, ref]
                    if (list != "") printf "%s\t%s\t%.3f\n", n, kind, med(list)
                }
            }
        }')
# Ratios of records/s: vs the raw row of the same batch size, vs MQTT QoS 0 and QoS 1.
vs_raw() { ratio "${S_RPS[$1]:-}" "${S_RPS[raw-b${R_BATCH[$1]}]:-}"; }
vs_q() { if [[ "${R_SYS[$1]}" == ours ]]; then ratio "${S_RPS[$1]:-}" "${S_RPS[mqtt-q$2]:-}"; fi; }
# A replicated row vs our acks=1 RF 1 row of the same batch and in-flight.
rf1_of() { if [[ "${R_SYS[$1]}" == ours && "$1" != "ours-b${R_BATCH[$1]}-f${R_INF[$1]}" ]]; then echo "ours-b${R_BATCH[$1]}-f${R_INF[$1]}"; fi; }
vs_rf1() {
    local ref
    ref="$(rf1_of "$1")"
    if [[ -n "$ref" ]]; then ratio "${S_RPS[$1]:-}" "${S_RPS[$ref]:-}"; fi
}
fmt_ms() { awk -v v="$1" 'BEGIN { printf "%.2f", v / 1000 }'; }

echo
W=14
for n in "${ROWS[@]}"; do ((${#n} <= W)) || W=${#n}; done
printf '%-*s %5s %4s %3s %6s %10s %15s %7s %8s %8s %6s %4s %7s %7s %7s %7s\n' "$W" target batch acks rf \
    "msg B" "records/s" "min-max" "MB/s" "p50 ms" "p99 ms" lost err "vs raw" "vs q0" "vs q1" "vs rf1"
while IFS=$'\t' read -r n rps lo hi mb p50 p99 lost err _ bytes; do
    printf '%-*s %5s %4s %3s %6s %10.0f %15s %7.2f %8s %8s %6s %4s %7s %7s %7s %7s\n' "$W" "$n" \
        "${R_BATCH[$n]}" "${R_ACKS[$n]:--}" "${R_RF[$n]:--}" "$bytes" "$rps" \
        "$(awk -v a="$lo" -v b="$hi" 'BEGIN { printf "%.0fk-%.0fk", a / 1000, b / 1000 }')" "$mb" \
        "$(fmt_ms "$p50")" "$(fmt_ms "$p99")" "$lost" "$err" "$(vs_raw "$n")" "$(vs_q "$n" 0)" \
        "$(vs_q "$n" 1)" "$(vs_rf1 "$n")"
done <"$SUMMARY"
echo
echo "records/s, MB/s (record bytes), p50/p99 produce-to-consume: median of $REPEAT round(s) per figure;"
echo "min-max = records/s range; lost/err summed over rounds; msg B = bytes per message (ours: the CBOR"
echo "produce request body; CoAP block-wise above 1024). vs raw = records/s / raw UDP with the same batch;"
echo "vs q0/q1 = ours records/s / Mosquitto QoS 0 / QoS 1 (1 record per PUBLISH). vs rf1 = records/s /"
echo "our acks=1 RF 1 row with the same batch and in-flight (acks, rf: of our rows)."
for n in "${ROWS[@]}"; do
    [[ "${R_SYS[$n]}" == raw ]] && continue
    line="  $n: vs raw ${ROUND_RATIO[$n,raw]:--}"
    [[ "${R_SYS[$n]}" == ours ]] && line+=", vs q0 ${ROUND_RATIO[$n,q0]:--}, vs q1 ${ROUND_RATIO[$n,q1]:--}"
    [[ -z "$(rf1_of "$n")" ]] || line+=", vs $(rf1_of "$n") ${ROUND_RATIO[$n,rf1]:--}"
    rr+="$line"$'\n'
done
[[ -z "${rr:-}" ]] || printf 'median of the per-round ratios (records/s):\n%s' "$rr"
echo "cpu steal during the runs: ${STEAL_PCT}% (high = noisy host, repeat the run)"
for n in "${ROWS[@]}"; do echo "  $n: ${R_DESC[$n]}"; done

# ---------------------------------------------------------------- JSON
STAMP="$(date +%Y%m%d-%H%M%S)"
mkdir -p "$ROOT/bench/results"
JSON="$ROOT/bench/results/produce-$STAMP.json"
CPU_MODEL="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)"
GIT_REV="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
{
    printf '{\n  "date": %s,\n' "$(jstr "$(date -Iseconds)")"
    printf '  "host": {"kernel": %s, "cpus": %s, "cpu_model": %s},\n' \
        "$(jstr "$(uname -r)")" "$(nproc)" "$(jstr "$CPU_MODEL")"
    printf '  "git_rev": %s,\n  "mosquitto_version": %s,\n' "$(jstr "$GIT_REV")" "$(jstr "$MOSQ_VERSION")"
    printf '  "settings": {"count": %s, "warmup": %s, "record_size": %s, "window": %s, "in_flight": %s, "ours": %s, "ours_repl": %s, "brokers": %s, "raw_batches": %s, "mqtt_qos": %s, "mqtt_nodelay": %s, "fetch_bytes": %s, "repeat": %s, "pin": %s},\n' \
        "$COUNT" "$WARMUP" "$RECORD_SIZE" "$WINDOW" "$IN_FLIGHT" "$(jstr "$OURS")" "$(jstr "$OURS_REPL")" "$BROKERS" "$(jstr "$RAW_BATCHES")" \
        "$(jstr "$MQTT_QOS")" "$MQTT_NODELAY" "$FETCH_BYTES" "$REPEAT" "$(jstr "$PIN")"
    printf '  "cpu_steal_pct": %s,\n  "summary": [\n' "$STEAL_PCT"
    first=1
    while IFS=$'\t' read -r n rps lo hi mb p50 p99 lost err rounds bytes; do
        ((first)) || printf ',\n'
        first=0
        acks=null
        [[ -z "${R_ACKS[$n]}" ]] || acks="$(jstr "${R_ACKS[$n]}")"
        printf '    {"target": %s, "description": %s, "system": "%s", "batch": %s, "in_flight": %s, "acks": %s, "replication_factor": %s, "msg_bytes": %s, "records_per_s": %s, "records_per_s_min": %s, "records_per_s_max": %s, "mb_per_s": %s, "lat_p50_us": %s, "lat_p99_us": %s, "lost": %s, "errors": %s, "rounds": %s, "vs_raw": %s, "vs_mqtt_qos0": %s, "vs_mqtt_qos1": %s, "vs_acks1_rf1": %s, "per_round_median": {"vs_raw": %s, "vs_mqtt_qos0": %s, "vs_mqtt_qos1": %s, "vs_acks1_rf1": %s}}' \
            "$(jstr "$n")" "$(jstr "${R_DESC[$n]}")" "${R_SYS[$n]}" "${R_BATCH[$n]}" "${R_INF[$n]}" \
            "$acks" "$(jnum "${R_RF[$n]}")" \
            "$(jnum "$bytes")" "$rps" "$lo" "$hi" "$mb" "$p50" "$p99" "$lost" "$err" "$rounds" \
            "$(jnum "$(vs_raw "$n")")" "$(jnum "$(vs_q "$n" 0)")" "$(jnum "$(vs_q "$n" 1)")" "$(jnum "$(vs_rf1 "$n")")" \
            "$(jnum "${ROUND_RATIO[$n,raw]:-}")" "$(jnum "${ROUND_RATIO[$n,q0]:-}")" "$(jnum "${ROUND_RATIO[$n,q1]:-}")" \
            "$(jnum "${ROUND_RATIO[$n,rf1]:-}")"
    done <"$SUMMARY"
    printf '\n  ],\n  "runs": [\n'
    awk -F'\t' '{ printf "%s    {\"round\": %s, \"target\": \"%s\", \"run\": %s}", (NR > 1 ? ",\n" : ""), $1, $2, $3 } END { print "" }' "$RUNS"
    printf '  ]\n}\n'
} >"$JSON"
echo "results: ${JSON#"$ROOT"/}"

# ---------------------------------------------------------------- Markdown
echo
echo "Markdown (for the README):"
echo
echo "| target | records/s | MB/s | p50 (ms) | p99 (ms) | vs raw UDP | vs MQTT QoS 0 | vs MQTT QoS 1 | vs acks=1 RF 1 |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
while IFS=$'\t' read -r n rps _ _ mb p50 p99 _ _ _ _; do
    name="${R_DESC[$n]}"
    [[ "${R_SYS[$n]}" == ours ]] && name="**$name**"
    printf '| %s | %.0f | %.2f | %s | %s | %s | %s | %s | %s |\n' "$name" "$rps" "$mb" "$(fmt_ms "$p50")" \
        "$(fmt_ms "$p99")" "$(vs_raw "$n")" "$(vs_q "$n" 0)" "$(vs_q "$n" 1)" "$(vs_rf1 "$n")"
done <"$SUMMARY"
echo
printf '_%s: produce-load, %s × %s-byte records (+%s warm-up) per run, at most %s messages produced and not consumed, median of %s, loopback, %s × %s, pin=%s, cpu steal %s%%._\n' \
    "$(date +%Y-%m-%d)" "$COUNT" "$RECORD_SIZE" "$WARMUP" "$WINDOW" "$REPEAT" "$(nproc)" "${CPU_MODEL:-cpu}" "$PIN" "$STEAL_PCT"
