#!/usr/bin/env bash
# CoAP request/response rate over loopback: raw UDP ceiling vs libcoap vs our server,
# all measured by the same load client (target/release/coap-load, closed loop).
#
#   bash bench/coap.sh
#
# Targets (each on its own free port on 127.0.0.1, all started up front):
#   raw-udp  udp-echo (this crate)              coap-load --mode raw, 16-byte datagrams
#   libcoap  coap-server-notls -A 127.0.0.1 -p PORT -v 0   (Debian: libcoap3-bin)
#            resource GET /time: piggybacked ACK 2.05, Max-Age:1, 15-byte text payload
#            ("Nov 22 03:21:10"), 27-byte response datagram for a 13-byte request.
#   ours     "$BENCH_SERVER_CMD" if set, else target/release/coap-bench-server, else
#            target/release/pehra-bench-server; skipped if none exists.
#            Contract: listen on the given address, answer GET /time (OURS_PATH) with a
#            piggybacked ACK 2.05 and a 15-byte payload (+ Max-Age:1 to be byte-identical
#            to libcoap: 27-byte response). The binaries get `--listen 127.0.0.1:PORT`;
#            BENCH_SERVER_CMD may contain {addr} or {port} placeholders, otherwise
#            `--listen 127.0.0.1:PORT` is appended.
#
# Environment (defaults):
#   IN_FLIGHT=16 DURATION=5 WARMUP=1 THREADS=1   coap-load settings, same for all targets
#   REPEAT=3        rounds; targets are interleaved per round, the median-req/s run is kept
#   PIN=none        none | split (servers on CPU 0, client on CPU 1) | same (all on CPU 0)
#   LIBCOAP_PATH=time OURS_PATH=time RAW_SIZE=16
#   READY_TIMEOUT=10  seconds to wait for each server's readiness probe
#   SKIP_BUILD=0      1 = use existing release binaries
#   BENCH_SERVER_CMD  command line of our server (see above)
#
# Output: a table on stdout, bench/results/coap-<date>.json (gitignored) and a Markdown
# snippet for the README. Every process started here is killed by PID on exit.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
REL="$TARGET_DIR/release"

IN_FLIGHT="${IN_FLIGHT:-16}"
DURATION="${DURATION:-5}"
WARMUP="${WARMUP:-1}"
THREADS="${THREADS:-1}"
REPEAT="${REPEAT:-3}"
PIN="${PIN:-none}"
LIBCOAP_PATH="${LIBCOAP_PATH:-time}"
OURS_PATH="${OURS_PATH:-time}"
RAW_SIZE="${RAW_SIZE:-16}"
READY_TIMEOUT="${READY_TIMEOUT:-10}"
SKIP_BUILD="${SKIP_BUILD:-0}"
BENCH_SERVER_CMD="${BENCH_SERVER_CMD:-}"

BENCH=coap.sh
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"   # log, die, free_port, start_server, field, ...

# ---------------------------------------------------------------- cleanup
bench_workdir coap-bench

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
if [[ "$SKIP_BUILD" != 1 ]]; then
    log "building pehra-bench (release)"
    cargo build --release -j2 -p pehra-bench
    if [[ -f "$ROOT/src/main.rs" ]]; then
        log "building pehra (release)"
        cargo build --release -j2 -p pehra --bin pehra ||
            log "warning: building the pehra binary failed; continuing"
    fi
fi
LOAD="$REL/coap-load"
ECHO="$REL/udp-echo"
[[ -x "$LOAD" && -x "$ECHO" ]] || die "missing $LOAD or $ECHO (build failed?)"

# ---------------------------------------------------------------- ports

# ---------------------------------------------------------------- targets
NAMES=()                 # target names, in table order
declare -A ADDR MODE RPATH DESC PID_OF LOGF EXTRA


wait_ready() { # name
    local name="$1" deadline=$((SECONDS + READY_TIMEOUT))
    while ((SECONDS < deadline)); do
        if ! kill -0 "${PID_OF[$name]}" 2>/dev/null; then
            log "$name: server exited; its log:"
            sed 's/^/    /' "${LOGF[$name]}" >&2 || true
            return 1
        fi
        if "$LOAD" --target "${ADDR[$name]}" --mode "${MODE[$name]}" --path "${RPATH[$name]}" \
            --raw-size "$RAW_SIZE" --in-flight 1 --warmup 0 --duration 0.2 \
            --ack-timeout-ms 100 --json ${EXTRA[$name]:-} >/dev/null 2>&1; then
            return 0
        fi
    done
    log "$name: not ready after ${READY_TIMEOUT}s; its log:"
    sed 's/^/    /' "${LOGF[$name]}" >&2 || true
    return 1
}

add_target() { # name mode path description [extra coap-load flag]
    NAMES+=("$1")
    MODE[$1]="$2"
    RPATH[$1]="$3"
    DESC[$1]="$4"
    EXTRA[$1]="${5:-}"
}

# (a) raw UDP ceiling
free_port port
ADDR[raw-udp]="127.0.0.1:$port"
add_target raw-udp raw "-" "udp-echo, ${RAW_SIZE}-byte datagrams"
start_server raw-udp "$WORK/udp-echo.log" "${SRV_PIN[@]}" "$ECHO" --listen "${ADDR[raw-udp]}" --quiet

# (b) libcoap
LIBCOAP_VERSION=""
if ! command -v coap-server-notls >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing libcoap3-bin (the libcoap peer)"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libcoap3-bin >/dev/null || true
fi
if command -v coap-server-notls >/dev/null; then
    LIBCOAP_VERSION="$( (coap-server-notls -h 2>&1 || true) | sed -n 's/.* v\([0-9][0-9.]*\) .*/\1/p' | head -n1)"
    free_port port
    ADDR[libcoap]="127.0.0.1:$port"
    add_target libcoap coap "$LIBCOAP_PATH" "libcoap ${LIBCOAP_VERSION:-?} coap-server-notls, GET /$LIBCOAP_PATH"
    start_server libcoap "$WORK/libcoap.log" "${SRV_PIN[@]}" coap-server-notls -A 127.0.0.1 -p "$port" -v 0
else
    log "skipping libcoap: coap-server-notls not found (install: sudo apt-get install -y libcoap3-bin)"
fi

# (c) our server
free_port port
OURS_CMD=()
if [[ -n "$BENCH_SERVER_CMD" ]]; then
    cmd="$BENCH_SERVER_CMD"
    if [[ "$cmd" == *"{addr}"* || "$cmd" == *"{port}"* ]]; then
        cmd="${cmd//\{addr\}/127.0.0.1:$port}"
        cmd="${cmd//\{port\}/$port}"
    else
        cmd="$cmd --listen 127.0.0.1:$port"
    fi
    OURS_CMD=(bash -c "exec $cmd")
    OURS_LABEL="$BENCH_SERVER_CMD"
elif [[ -x "$REL/coap-bench-server" ]]; then
    OURS_CMD=("$REL/coap-bench-server" --listen "127.0.0.1:$port")
    OURS_LABEL="coap-bench-server"
elif [[ -x "$REL/pehra-bench-server" ]]; then
    OURS_CMD=("$REL/pehra-bench-server" --listen "127.0.0.1:$port")
    OURS_LABEL="pehra-bench-server"
fi
if ((${#OURS_CMD[@]})); then
    ADDR[ours]="127.0.0.1:$port"
    add_target ours coap "$OURS_PATH" "$OURS_LABEL, GET /$OURS_PATH"
    start_server ours "$WORK/ours.log" "${SRV_PIN[@]}" "${OURS_CMD[@]}"
else
    log "skipping ours: set BENCH_SERVER_CMD or build target/release/coap-bench-server"
fi
# (d) our server with security on: every request and response protected with OSCORE
# (RFC 8613), the load client protecting and verifying each one (coap-load --oscore).
if [[ -z "$BENCH_SERVER_CMD" && -x "$REL/coap-bench-server" ]]; then
    free_port port
    ADDR[ours-oscore]="127.0.0.1:$port"
    add_target ours-oscore coap "$OURS_PATH" "coap-bench-server --oscore, GET /$OURS_PATH (OSCORE both ways)" --oscore
    start_server ours-oscore "$WORK/ours-oscore.log" "${SRV_PIN[@]}" "$REL/coap-bench-server" --listen "127.0.0.1:$port" --oscore
fi

READY=()
for name in "${NAMES[@]}"; do
    if wait_ready "$name"; then
        log "$name ready on ${ADDR[$name]} (pid ${PID_OF[$name]})"
        READY+=("$name")
    elif [[ "$name" == raw-udp ]]; then
        die "the raw UDP echo server did not come up"
    else
        log "skipping $name"
    fi
done
NAMES=("${READY[@]}")

# ---------------------------------------------------------------- measure
log "measuring: ${NAMES[*]}; in-flight=$IN_FLIGHT threads=$THREADS warmup=${WARMUP}s" \
    "duration=${DURATION}s repeat=$REPEAT pin=$PIN"
# CPU steal time (host contention) during the measurement: a noise indicator.
read -r TICKS0 STEAL0 < <(cpu_ticks)
for ((round = 1; round <= REPEAT; round++)); do
    for name in "${NAMES[@]}"; do
        out="$WORK/$name.runs"
        if line="$("${CLI_PIN[@]}" "$LOAD" --target "${ADDR[$name]}" --mode "${MODE[$name]}" \
            --path "${RPATH[$name]}" --raw-size "$RAW_SIZE" --in-flight "$IN_FLIGHT" \
            --threads "$THREADS" --warmup "$WARMUP" --duration "$DURATION" --label "$name" --json \
            ${EXTRA[$name]})"; then
            echo "$line" >>"$out"
            log "round $round/$REPEAT $name: $(grep -o '"rps":[0-9.]*' <<<"$line" | cut -d: -f2) req/s"
        else
            log "round $round/$REPEAT $name: run failed (exit $?)"
        fi
    done
done

read -r TICKS1 STEAL1 < <(cpu_ticks)
STEAL_PCT="$(awk -v s=$((STEAL1 - STEAL0)) -v t=$((TICKS1 - TICKS0)) 'BEGIN { if (t > 0) printf "%.1f", 100 * s / t; else print 0 }')"

# field NAME <<< json-line  (flat JSON from coap-load)

declare -A MED
for name in "${NAMES[@]}"; do
    f="$WORK/$name.runs"
    [[ -s "$f" ]] || continue
    # the run with the median req/s (lower median for an even count)
    MED[$name]="$(awk '{ match($0, /"rps":[0-9.]+/); print substr($0, RSTART + 6, RLENGTH - 6) "\t" $0 }' "$f" |
        sort -g | awk -F'\t' '{ l[NR] = $2 } END { print l[int((NR + 1) / 2)] }')"
done

# ours/libcoap per round (the two runs are adjacent in time, so host noise cancels
# better than in the ratio of medians); prints "r1 r2 ...<TAB>median".
round_ratios() {
    [[ -s "$WORK/ours.runs" && -s "$WORK/libcoap.runs" ]] || return 0
    paste -d'\t' "$WORK/ours.runs" "$WORK/libcoap.runs" | awk -F'\t' '
        function rps(l) { match(l, /"rps":[0-9.]+/); return substr(l, RSTART + 6, RLENGTH - 6) + 0 }
        NF == 2 && $1 != "" && $2 != "" && rps($2) > 0 { r[++n] = rps($1) / rps($2) }
        END {
            if (n == 0) exit
            for (i = 1; i <= n; i++) { printf "%s%.3f", (i > 1 ? " " : ""), r[i]; s[i] = r[i] }
            for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (s[j] < s[i]) { t = s[i]; s[i] = s[j]; s[j] = t }
            printf "\t%.3f\n", (n % 2 ? s[(n + 1) / 2] : (s[n / 2] + s[n / 2 + 1]) / 2)
        }'
}
IFS=$'\t' read -r ROUND_RATIOS ROUND_RATIO_MED < <(round_ratios; echo) || true
RAW_RPS="$(field rps <<<"${MED[raw-udp]:-}")"
LIB_RPS="$(field rps <<<"${MED[libcoap]:-}")"
OURS_RPS="$(field rps <<<"${MED[ours]:-}")"

# ---------------------------------------------------------------- table
printf '\n%-11s %10s %12s %9s %9s %7s %8s %8s %10s\n' target req/s "min-max" "p50 us" "p99 us" "resp B" "err/rtx" "vs raw" "vs libcoap"
for name in "${NAMES[@]}"; do
    m="${MED[$name]:-}"
    [[ -n "$m" ]] || { printf '%-11s %10s\n' "$name" "failed"; continue; }
    rps="$(field rps <<<"$m")"
    range="$(awk '{ match($0, /"rps":[0-9.]+/); v = substr($0, RSTART + 6, RLENGTH - 6) + 0
                    if (NR == 1 || v < lo) lo = v; if (NR == 1 || v > hi) hi = v }
                  END { printf "%.0fk-%.0fk", lo / 1000, hi / 1000 }' "$WORK/$name.runs")"
    vs_lib=""
    [[ "$name" == ours && -n "$LIB_RPS" ]] && vs_lib="$(ratio "$rps" "$LIB_RPS")"
    printf '%-11s %10.0f %12s %9s %9s %7s %8s %8s %10s\n' "$name" "$rps" "$range" \
        "$(field lat_p50_us <<<"$m")" "$(field lat_p99_us <<<"$m")" "$(field resp_bytes <<<"$m")" \
        "$(field errors <<<"$m")/$(field retransmissions <<<"$m")" "$(ratio "$rps" "$RAW_RPS")" "$vs_lib"
done
echo
if [[ -n "$OURS_RPS" && -n "$LIB_RPS" ]]; then
    echo "ours/libcoap = $(ratio "$OURS_RPS" "$LIB_RPS") (ratio of medians);" \
        "per round: $ROUND_RATIOS (median $ROUND_RATIO_MED)"
fi
OSCORE_RPS="$(field rps <<<"${MED[ours-oscore]:-}")"
if [[ -n "$OURS_RPS" && -n "$OSCORE_RPS" ]]; then
    echo "the cost of security: ours-oscore/ours = $(ratio "$OSCORE_RPS" "$OURS_RPS") (OSCORE on every request and response)"
fi
echo "cpu steal during the runs: ${STEAL_PCT}% (high = noisy host, repeat the run)"
for name in "${NAMES[@]}"; do echo "  $name: ${DESC[$name]}"; done

# ---------------------------------------------------------------- JSON
STAMP="$(date +%Y%m%d-%H%M%S)"
mkdir -p "$ROOT/bench/results"
JSON="$ROOT/bench/results/coap-$STAMP.json"
CPU_MODEL="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)"
GIT_REV="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
{
    printf '{\n  "date": %s,\n' "$(jstr "$(date -Iseconds)")"
    printf '  "host": {"kernel": %s, "cpus": %s, "cpu_model": %s},\n' \
        "$(jstr "$(uname -r)")" "$(nproc)" "$(jstr "$CPU_MODEL")"
    printf '  "git_rev": %s,\n  "libcoap_version": %s,\n' "$(jstr "$GIT_REV")" "$(jstr "$LIBCOAP_VERSION")"
    printf '  "settings": {"in_flight": %s, "threads": %s, "warmup_s": %s, "duration_s": %s, "repeat": %s, "pin": %s, "raw_size": %s},\n' \
        "$IN_FLIGHT" "$THREADS" "$WARMUP" "$DURATION" "$REPEAT" "$(jstr "$PIN")" "$RAW_SIZE"
    printf '  "targets": [\n'
    first=1
    for name in "${NAMES[@]}"; do
        [[ -n "${MED[$name]:-}" ]] || continue
        ((first)) || printf ',\n'
        first=0
        printf '    {"name": %s, "description": %s, "median": %s,\n     "runs": [%s]}' \
            "$(jstr "$name")" "$(jstr "${DESC[$name]}")" "${MED[$name]}" \
            "$(paste -sd, "$WORK/$name.runs")"
    done
    printf '\n  ],\n'
    printf '  "cpu_steal_pct": %s,\n' "$STEAL_PCT"
    printf '  "ratios": {"libcoap_vs_raw": %s, "ours_vs_raw": %s, "ours_vs_libcoap": %s, "ours_vs_libcoap_per_round": [%s], "ours_vs_libcoap_per_round_median": %s}\n}\n' \
        "$(jnum "$(ratio "$LIB_RPS" "$RAW_RPS")")" "$(jnum "$(ratio "$OURS_RPS" "$RAW_RPS")")" \
        "$(jnum "$(ratio "$OURS_RPS" "$LIB_RPS")")" "${ROUND_RATIOS// /, }" "$(jnum "$ROUND_RATIO_MED")"
} >"$JSON"
echo "results: ${JSON#"$ROOT"/}"

# ---------------------------------------------------------------- Markdown
echo
echo "Markdown (for the README):"
echo
echo "| target | req/s | p50 (µs) | p99 (µs) | vs raw UDP |"
echo "|---|---:|---:|---:|---:|"
for name in "${NAMES[@]}"; do
    m="${MED[$name]:-}"
    [[ -n "$m" ]] || continue
    rps="$(field rps <<<"$m")"
    printf '| %s | %.0f | %s | %s | %s |\n' "${DESC[$name]}" "$rps" "$(field lat_p50_us <<<"$m")" \
        "$(field lat_p99_us <<<"$m")" "$(ratio "$rps" "$RAW_RPS")"
done
echo
printf '_%s: coap-load, %s thread(s), %s in flight, %ss (+%ss warm-up), median of %s, loopback, %s × %s, pin=%s._\n' \
    "$(date +%Y-%m-%d)" "$THREADS" "$IN_FLIGHT" "$DURATION" "$WARMUP" "$REPEAT" "$(nproc)" "${CPU_MODEL:-cpu}" "$PIN"
if [[ -n "$OURS_RPS" && -n "$LIB_RPS" ]]; then
    echo "_ours/libcoap = $(ratio "$OURS_RPS" "$LIB_RPS")._"
fi
