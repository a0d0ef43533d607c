#!/usr/bin/env bash
# User-space instructions per operation of a server, counted by valgrind's callgrind
# (deterministic: no timing, no host noise), ours against peers in one run:
#
#   bash bench/instructions.sh
#
# Rows (each server its own process on 127.0.0.1, only the server under test runs under
# callgrind; the load clients and our zookeeper run natively):
#   coap-ours     coap-bench-server (our CoAP engine + its tokio driver), CON GET /time,
#                 piggybacked 2.05 with 15 bytes (byte-identical to libcoap's answer)
#   coap-libcoap  libcoap's coap-server-notls -v 0, the same GET /time
#   ours-b1       a Pehra broker (with `pehra zookeeper` beside it, not measured): one
#                 100-byte record per produce request, acks 1, 1 partition, produced and
#                 consumed (produce-load: ClusterClient producer + observing consumer)
#   ours-b64      the same broker, 64 records per request, one request in flight
#   mqtt-q0/q1    Mosquitto, QoS 0 / QoS 1, one 100-byte record per PUBLISH, published and
#                 received through it (produce-load's rumqttc publisher + subscriber)
#   zk-set        our zookeeper alone (`pehra zookeeper`): a set of a ZK_VALUE-byte value,
#                 ZK_CLIENTS sessions one request at a time each (zk-load, as bench/zk.sh);
#                 every set is logged and fdatasync'd before it is answered (the disk's
#                 time is not an instruction: only the process's own work is counted).
#                 No peer row: Apache ZooKeeper runs on a JVM, whose JIT callgrind cannot
#                 count fairly (bench/zk.sh compares the two in time instead)
# The setup is bench/lib.sh's (start_pehra, start_mosquitto) and the load clients are
# the ones bench/coap.sh and bench/produce.sh use.
#
# Method: per row, the same server is loaded twice, with N and 2N operations; around each
# load `callgrind_control -d` dumps (and zeroes) the counters, so each dump holds exactly
# one load. instructions/op = (Ir of the 2N load - Ir of the N load) / (ops difference):
# fixed costs (connecting, creating the run's topic, the first allocations) cancel. An
# operation is a GET answered (coap rows) or a record produced and consumed (the others).
# Timers that run whatever the load (a broker's heartbeats) scale with time, not with
# operations, and do not cancel: each server's idle rate (Ir/s over IDLE seconds with no
# load) is printed beside it, to see that it is small against the per-op figures.
#
# Environment (defaults):
#   COAP_SECONDS=4      coap rows: the shorter load's duration (the longer: twice that)
#   COAP_IN_FLIGHT=4    coap-load requests in flight (ACK timeout 10 s: no retransmission)
#   RECORDS=2000        ours-b1 and mqtt rows: records of the shorter load (+ 2x for the longer)
#   RECORDS_B64=12800   ours-b64: records of the shorter load (200 requests)
#   ZK_OPS=1000 ZK_CLIENTS=4 ZK_VALUE=1024   zk-set: sets per client in the shorter load
#   IN_FLIGHT=16 WINDOW=64 RECORD_SIZE=100   produce-load settings, as in produce.sh
#   IDLE=3              seconds of idle measured per server
#   ROWS="coap-ours coap-libcoap ours-b1 ours-b64 mqtt-q0 mqtt-q1 zk-set"
#   PROFILE=release     cargo profile of our binaries (another name: built as a copy of
#                       release into target/PROFILE, e.g. to keep others' binaries intact)
#   SKIP_BUILD=0        1 = use existing binaries
#   ANNOTATE=1          also write callgrind_annotate's per-function table of the longer
#                       load of every row (bench/results/instructions-<date>-<row>.txt)
#   KEEP_RAW=0          1 = with ANNOTATE, also keep the longer load's callgrind file
#                       (bench/results/instructions-<date>-<row>.cg), to ask who calls
#                       what: callgrind_annotate --tree=caller FILE | grep -A12 memcpy
#   READY_TIMEOUT=120 TIMEOUT=900   seconds (everything runs ~50x slower under callgrind)
#
# Output: a table on stdout, bench/results/instructions-<date>.json (gitignored) and a
# Markdown snippet for the README. Every process started here is stopped by PID on exit.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
PROFILE="${PROFILE:-release}"
REL="$TARGET_DIR/$PROFILE"

COAP_SECONDS="${COAP_SECONDS:-4}"
COAP_IN_FLIGHT="${COAP_IN_FLIGHT:-4}"
RECORDS="${RECORDS:-2000}"
RECORDS_B64="${RECORDS_B64:-12800}"
IN_FLIGHT="${IN_FLIGHT:-16}"
WINDOW="${WINDOW:-64}"
RECORD_SIZE="${RECORD_SIZE:-100}"
IDLE="${IDLE:-3}"
ROWS="${ROWS:-coap-ours coap-libcoap ours-b1 ours-b64 mqtt-q0 mqtt-q1 zk-set}"
ZK_OPS="${ZK_OPS:-1000}"
ZK_CLIENTS="${ZK_CLIENTS:-4}"
ZK_VALUE="${ZK_VALUE:-1024}"
SKIP_BUILD="${SKIP_BUILD:-0}"
ANNOTATE="${ANNOTATE:-1}"
KEEP_RAW="${KEEP_RAW:-0}"
READY_TIMEOUT="${READY_TIMEOUT:-120}"
TIMEOUT="${TIMEOUT:-900}"
MQTT_NODELAY=1
# Mosquitto keeps our user (started as root it would switch to the user mosquitto, and
# callgrind_control could no longer reach it).
MQTT_USER="$(id -un)"
export RUST_LIB_BACKTRACE=0 RUST_BACKTRACE=0

BENCH=instructions.sh
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh" # log, die, free_port, start_server, start_pehra, start_mosquitto, ...

for t in valgrind callgrind_control callgrind_annotate; do
    if ! command -v "$t" >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        log "installing valgrind"
        { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null; } ||
            log "apt-get install valgrind failed"
    fi
    command -v "$t" >/dev/null || die "$t not found (install: sudo apt-get install -y valgrind)"
done

# ---------------------------------------------------------------- cleanup
PIDS=()
declare -A PID_OF LOGF ADDR
WORK="$(mktemp -d "${TMPDIR:-/tmp}/pehra-instructions.XXXXXX")"
cleanup() {
    local pid zk="${PID_OF[zk]:-}" rest=()
    for pid in "${PIDS[@]}"; do [[ "$pid" == "$zk" ]] || rest+=("$pid"); done
    ((${#rest[@]} == 0)) || stop_pids 30 "${rest[@]}"
    [[ -z "$zk" ]] || stop_pids 15 "$zk" # the zookeeper last (see produce.sh)
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- build
if [[ "$SKIP_BUILD" != 1 ]]; then
    log "building pehra and pehra-bench ($PROFILE)"
    if [[ "$PROFILE" == release ]]; then
        cargo build --release -j2 -p pehra -p pehra-bench
    else
        cargo build -j2 --config "profile.$PROFILE.inherits=\"release\"" --profile "$PROFILE" -p pehra -p pehra-bench
    fi
fi
PEHRA="$REL/pehra"
COAP_LOAD="$REL/coap-load"
PROBE_LOAD="$REL/produce-load" # wait_probe (lib.sh)
COAP_SERVER="$REL/coap-bench-server"
ZK_LOAD="$REL/zk-load"
for f in "$PEHRA" "$COAP_LOAD" "$PROBE_LOAD" "$COAP_SERVER" "$ZK_LOAD"; do [[ -x "$f" ]] || die "missing $f (build failed?)"; done

# ---------------------------------------------------------------- callgrind
# Every measured server runs as `valgrind --tool=callgrind` with its own output file
# WORK/NAME.cg; callgrind_control -d writes WORK/NAME.cg.1, .2, ... (a dump zeroes the
# counters; names uncompressed, so that every dump reads on its own).
declare -A DUMPS
callgrind_wrap() { # name -> WRAP
    WRAP=(valgrind --tool=callgrind --callgrind-out-file="$WORK/$1.cg" --dump-instr=no --compress-strings=no)
    DUMPS[$1]=0
}
# Dumps NAME's counters; sets DUMP_FILE to the dump's file name. (Not `$(dump ...)`: in
# a subshell the dump count would be forgotten.)
dump() { # name
    local name="$1" f
    timeout 120 callgrind_control -d "${PID_OF[$name]}" >/dev/null || die "callgrind_control -d failed for $name"
    DUMPS[$name]=$((DUMPS[$name] + 1))
    f="$WORK/$name.cg.${DUMPS[$name]}"
    [[ -s "$f" ]] || die "no callgrind dump $f"
    DUMP_FILE="$f"
}
total_ir() { awk '/^(summary|totals):/ { print $2; exit }' "$1"; }

# ---------------------------------------------------------------- servers
want() { [[ " $ROWS " == *" $1 "* ]]; }
SERVERS=() # measured servers: the dump names (PID_OF keys)
declare -A IDLE_IR_S
if want coap-ours; then
    callgrind_wrap coap-ours
    free_port port
    ADDR[coap-ours]="127.0.0.1:$port"
    start_server coap-ours "$WORK/coap-ours.log" "${WRAP[@]}" "$COAP_SERVER" --listen "${ADDR[coap-ours]}"
    SERVERS+=(coap-ours)
fi
if want coap-libcoap; then
    if command -v coap-server-notls >/dev/null; then
        callgrind_wrap coap-libcoap
        free_port port
        ADDR[coap-libcoap]="127.0.0.1:$port"
        start_server coap-libcoap "$WORK/coap-libcoap.log" "${WRAP[@]}" coap-server-notls -A 127.0.0.1 -p "$port" -v 0
        SERVERS+=(coap-libcoap)
    else
        log "skipping coap-libcoap: coap-server-notls not found (install: sudo apt-get install -y libcoap3-bin)"
    fi
fi
if want ours-b1 || want ours-b64; then
    callgrind_wrap ours
    start_pehra "$PEHRA" 1 || die "our zookeeper/broker did not come up"
    SERVERS+=(ours)
fi
if want zk-set; then
    callgrind_wrap zk-ours
    free_port port
    ADDR[zk-ours]="127.0.0.1:$port"
    start_server zk-ours "$WORK/zk-ours.log" "${WRAP[@]}" "$PEHRA" zookeeper --listen "${ADDR[zk-ours]}" \
        --data-dir "$WORK/zk-ours-data"
    SERVERS+=(zk-ours)
fi
if want mqtt-q0 || want mqtt-q1; then
    callgrind_wrap mqtt
    if start_mosquitto; then SERVERS+=(mqtt); else log "skipping mqtt rows"; fi
fi
WRAP=()
# The CoAP servers: ready once a GET is answered.
for s in coap-ours coap-libcoap; do
    [[ " ${SERVERS[*]} " == *" $s "* ]] || continue
    deadline=$((SECONDS + READY_TIMEOUT))
    until "$COAP_LOAD" --target "${ADDR[$s]}" --path time --in-flight 1 --warmup 0 --duration 1 \
        --ack-timeout-ms 2000 --json >/dev/null 2>&1; do
        kill -0 "${PID_OF[$s]}" 2>/dev/null || { show_log "$s"; die "$s exited"; }
        ((SECONDS < deadline)) || { show_log "$s"; die "$s: no answer after ${READY_TIMEOUT}s"; }
    done
done
# Our zookeeper alone: ready once a session opens.
if [[ " ${SERVERS[*]} " == *" zk-ours "* ]]; then
    "$ZK_LOAD" --target ours --addr "${ADDR[zk-ours]}" --probe --connect-timeout "$READY_TIMEOUT" >/dev/null 2>&1 ||
        { show_log zk-ours; die "zk-ours: no session after ${READY_TIMEOUT}s"; }
fi
for s in "${SERVERS[@]}"; do log "$s ready (${ADDR[$s]}, pid ${PID_OF[$s]})"; done

# Idle: what each server spends with nothing to do (timers), per second.
for s in "${SERVERS[@]}"; do dump "$s"; done # start-up and readiness probes
sleep "$IDLE"                                            # (the measured interval itself)
for s in "${SERVERS[@]}"; do
    dump "$s"
    IDLE_IR_S[$s]="$(awk -v ir="$(total_ir "$DUMP_FILE")" -v t="$IDLE" 'BEGIN { printf "%.0f", ir / t }')"
done

# ---------------------------------------------------------------- loads
# One load of row NAME with size K (1 = the shorter, 2 = the longer); prints its JSON.
load() { # row k
    local row="$1" k="$2"
    case "$row" in
        coap-*)
            "$COAP_LOAD" --target "${ADDR[$row]}" --path time --in-flight "$COAP_IN_FLIGHT" --warmup 0 \
                --duration "$((COAP_SECONDS * k))" --ack-timeout-ms 10000 --json --label "$row/$k"
            ;;
        ours-b1 | ours-b64 | mqtt-q0 | mqtt-q1)
            local extra=() batch=1 inflight="$IN_FLIGHT" count=$((RECORDS * k))
            case "$row" in
                ours-b1) extra=(--system ours --target "${ADDR[zk]}" --topic bench --fresh-topic --acks 1) ;;
                ours-b64)
                    extra=(--system ours --target "${ADDR[zk]}" --topic bench --fresh-topic --acks 1)
                    batch=64 inflight=1 count=$((RECORDS_B64 * k))
                    ;;
                mqtt-q*) extra=(--system mqtt --target "${ADDR[mqtt]}" --qos "${row#mqtt-q}" --tcp-nodelay) ;;
            esac
            "$PROBE_LOAD" "${extra[@]}" --batch "$batch" --in-flight "$inflight" --window "$WINDOW" \
                --record-size "$RECORD_SIZE" --count "$count" --warmup 0 --timeout "$TIMEOUT" \
                --label "$row/$k" --json
            ;;
        zk-set)
            "$ZK_LOAD" --target ours --addr "${ADDR[zk-ours]}" --clients "$ZK_CLIENTS" --ops set \
                --count "$((ZK_OPS * k))" --warmup 0 --value-size "$ZK_VALUE" --json --label "$row/$k"
            ;;
    esac
}
server_of() { case "$1" in ours-*) echo ours ;; mqtt-*) echo mqtt ;; zk-*) echo zk-ours ;; *) echo "$1" ;; esac; }
STAMP="$(date +%Y%m%d-%H%M%S)"
mkdir -p "$ROOT/bench/results"
MEASURED=()
declare -A PER_OP OPS_DIFF NOTE ANN
for row in $ROWS; do
    s="$(server_of "$row")"
    [[ " ${SERVERS[*]} " == *" $s "* ]] || continue
    ir=() ops=() note=""
    for k in 1 2; do
        log "$row: load $k/2"
        if ! line="$(load "$row" "$k" 2>"$WORK/last.err")"; then
            log "$row: load failed: $(tail -n1 "$WORK/last.err")"
            continue 2
        fi
        dump "$s"
        f="$DUMP_FILE"
        ir+=("$(total_ir "$f")")
        # An operation: a GET answered, or a record produced and consumed (--count; no
        # warm-up here, so every record of the load).
        case "$row" in
            coap-*) ops+=("$(field completed <<<"$line")") ;;
            ours-b64) ops+=("$((RECORDS_B64 * k))") ;;
            zk-set) ops+=("$((ZK_OPS * ZK_CLIENTS * k))") ;;
            *) ops+=("$((RECORDS * k))") ;;
        esac
        for key in retransmissions timeouts lost errors; do
            v="$(field "$key" <<<"$line")"
            [[ -z "$v" || "$v" == 0 ]] || note+="$key $v (load $k) "
        done
    done
    d=$((ops[1] - ops[0]))
    ((d > 0)) || { log "$row: no more operations in the longer load (${ops[*]})"; continue; }
    PER_OP[$row]="$(awk -v a="${ir[0]}" -v b="${ir[1]}" -v d="$d" 'BEGIN { printf "%.0f", (b - a) / d }')"
    OPS_DIFF[$row]="$d"
    NOTE[$row]="${note% }"
    MEASURED+=("$row")
    log "$row: ${PER_OP[$row]} instructions/op (Ir ${ir[0]} for ${ops[0]} ops, ${ir[1]} for ${ops[1]})${note:+; $note}"
    if [[ "$ANNOTATE" == 1 ]]; then
        ANN[$row]="bench/results/instructions-$STAMP-$row.txt"
        # A dump taken mid-run has calls=0 lines (calls begun before the counters were
        # zeroed), which callgrind_annotate 3.19 books as self cost of the caller (all
        # under main or clone): counted as 1 call they read right.
        sed 's/^calls=0 /calls=1 /' "$f" >"$WORK/annotate.cg"
        {
            echo "# $row: ${ir[1]} Ir for ${ops[1]} operations (the longer load); self cost, then inclusive"
            callgrind_annotate --inclusive=no --threshold=95 "$WORK/annotate.cg" 2>/dev/null | sed -n '/^Ir/,/^$/p' | head -n 60
            callgrind_annotate --inclusive=yes --threshold=100 "$WORK/annotate.cg" 2>/dev/null | sed -n '/^Ir/,/^$/p' | head -n 80
        } >"$ROOT/${ANN[$row]}" || true
        if [[ "$KEEP_RAW" == 1 ]]; then
            cp "$WORK/annotate.cg" "$ROOT/bench/results/instructions-$STAMP-$row.cg"
        fi
    fi
done
((${#MEASURED[@]})) || die "nothing measured"

# ---------------------------------------------------------------- table
vs() { ratio "${PER_OP[$1]:-}" "${PER_OP[$2]:-}"; }
declare -A DESC=(
    [coap-ours]="Pehra coap-bench-server (engine + driver), CoAP GET"
    [coap-libcoap]="libcoap coap-server-notls, CoAP GET"
    [ours-b1]="Pehra broker, acks 1, 1 record/request, produced + consumed"
    [ours-b64]="Pehra broker, acks 1, 64 records/request, produced + consumed"
    [mqtt-q0]="Mosquitto ${MOSQ_VERSION:-?} QoS 0, 1 record/PUBLISH, published + received"
    [mqtt-q1]="Mosquitto ${MOSQ_VERSION:-?} QoS 1, 1 record/PUBLISH, published + received"
    [zk-set]="Pehra zookeeper, set of a ${ZK_VALUE}-byte value (logged, fdatasync'd), ${ZK_CLIENTS} sessions"
)
peer_ratios() { # row -> "vs X a, vs Y b"
    case "$1" in
        coap-ours) [[ -z "$(vs coap-ours coap-libcoap)" ]] || echo "vs libcoap $(vs coap-ours coap-libcoap)" ;;
        ours-*)
            local out=()
            [[ -z "$(vs "$1" mqtt-q0)" ]] || out+=("vs QoS 0 $(vs "$1" mqtt-q0)")
            [[ -z "$(vs "$1" mqtt-q1)" ]] || out+=("vs QoS 1 $(vs "$1" mqtt-q1)")
            local IFS=';'
            echo "${out[*]}" | sed 's/;/, /g'
            ;;
    esac
}
echo
printf '%-13s %12s %9s %14s  %s\n' row "instr/op" "ops" "idle Ir/s" "ratios (instructions/op)"
for row in "${MEASURED[@]}"; do
    printf '%-13s %12s %9s %14s  %s\n' "$row" "${PER_OP[$row]}" "${OPS_DIFF[$row]}" \
        "${IDLE_IR_S[$(server_of "$row")]}" "$(peer_ratios "$row")${NOTE[$row]:+ [${NOTE[$row]}]}"
done
echo
echo "instr/op: user-space instructions of the server process (all its threads) per operation,"
echo "from the difference of two loads (ops = the difference in operations). idle Ir/s: the"
echo "same server with no load. Ratios < 1: ours spends fewer instructions than the peer."
for row in "${MEASURED[@]}"; do echo "  $row: ${DESC[$row]}${ANN[$row]:+ (per function: ${ANN[$row]})}"; done

# ---------------------------------------------------------------- JSON
JSON="$ROOT/bench/results/instructions-$STAMP.json"
GIT_REV="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
{
    printf '{\n  "date": %s,\n  "git_rev": %s,\n  "valgrind": %s,\n  "mosquitto_version": %s,\n' \
        "$(jstr "$(date -Iseconds)")" "$(jstr "$GIT_REV")" "$(jstr "$(valgrind --version)")" "$(jstr "${MOSQ_VERSION:-}")"
    printf '  "settings": {"coap_seconds": %s, "coap_in_flight": %s, "records": %s, "records_b64": %s, "in_flight": %s, "window": %s, "record_size": %s, "zk_ops": %s, "zk_clients": %s, "zk_value": %s, "profile": %s},\n' \
        "$COAP_SECONDS" "$COAP_IN_FLIGHT" "$RECORDS" "$RECORDS_B64" "$IN_FLIGHT" "$WINDOW" "$RECORD_SIZE" "$ZK_OPS" "$ZK_CLIENTS" "$ZK_VALUE" "$(jstr "$PROFILE")"
    printf '  "rows": [\n'
    first=1
    for row in "${MEASURED[@]}"; do
        ((first)) || printf ',\n'
        first=0
        printf '    {"row": %s, "description": %s, "instructions_per_op": %s, "ops": %s, "idle_ir_per_s": %s, "vs_libcoap": %s, "vs_mqtt_qos0": %s, "vs_mqtt_qos1": %s, "notes": %s}' \
            "$(jstr "$row")" "$(jstr "${DESC[$row]}")" "${PER_OP[$row]}" "${OPS_DIFF[$row]}" \
            "$(jnum "${IDLE_IR_S[$(server_of "$row")]}")" \
            "$(jnum "$([[ "$row" == coap-ours ]] && vs coap-ours coap-libcoap)")" \
            "$(jnum "$([[ "$row" == ours-* ]] && vs "$row" mqtt-q0)")" \
            "$(jnum "$([[ "$row" == ours-* ]] && vs "$row" mqtt-q1)")" "$(jstr "${NOTE[$row]}")"
    done
    printf '\n  ]\n}\n'
} >"$JSON"
echo "results: ${JSON#"$ROOT"/}"

# ---------------------------------------------------------------- Markdown
echo
echo "Markdown (for the README):"
echo
echo "| row | instructions/op | vs peer |"
echo "|---|---:|---|"
for row in "${MEASURED[@]}"; do
    name="${DESC[$row]}"
    [[ "$row" == coap-ours || "$row" == ours-* || "$row" == zk-* ]] && name="**$name**"
    printf '| %s | %s | %s |\n' "$name" "${PER_OP[$row]}" "$(peer_ratios "$row")"
done
echo
printf '_%s: `bash bench/instructions.sh`, valgrind %s callgrind, server process only, per op = difference of a %s and a %s load; %s._\n' \
    "$(date +%Y-%m-%d)" "$(valgrind --version | sed 's/valgrind-//')" "x1" "x2" "rev $GIT_REV"
