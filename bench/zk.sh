#!/usr/bin/env bash
# Our zookeeper vs Apache ZooKeeper 3.8 (Debian's `zookeeper` package) under the same
# workload, driven by the same Rust load client (target/release/zk-load, closed loop):
# create, set and get of VALUE_SIZE-byte values with 1 and 16 concurrent clients.
#
#   bash bench/zk.sh
#
# Targets (each on its own free port on 127.0.0.1, data dirs side by side in one temp dir):
#   ours    target/release/pehra zookeeper --listen 127.0.0.1:PORT --data-dir DIR
#           (CoAP/UDP; every write fdatasync'd before it is answered, group commit)
#           driven through pehra_zookeeper::Client (one request at a time per client)
#   apache  java -cp CONF:/usr/share/java/zookeeper.jar[:slf4j-simple.jar]
#           org.apache.zookeeper.server.ZooKeeperServerMain CONF/zoo.cfg
#           standalone, zoo.cfg written here: tickTime=2000, forceSync=yes (the default:
#           the log is fsync'd before a write is answered), admin server off, 4lw srvr/ruok.
#           zookeeper.jar's manifest Class-Path names its dependencies (netty, jute,
#           slf4j-api, ...); slf4j-simple only routes its WARN+ logs to a file.
#           Driven through the zookeeper-client crate (TCP), also one request at a time.
#           Installed with apt-get (package zookeeper) if missing and running as root;
#           skipped otherwise.
#
# zk-load --ops all runs, per (target, clients): set-up (a fresh parent znode, one
# znode per client), then create (client i: PARENT/c<i>-<n>, all under one parent),
# set (client i: PARENT/s<i>) and get (the same), each WARMUP s not counted + DURATION s.
# Rounds alternate which target goes first; each target gets one discarded pass first
# (JIT_WARMUP s per operation) so the JVM's JIT is warm before anything is measured.
#
# Environment (defaults):
#   CLIENTS="1 16"  concurrencies        VALUE_SIZE=1024  bytes per value
#   DURATION=4 WARMUP=1                  seconds per operation (measured, not measured)
#   REPEAT=3        rounds; every figure is the median of the rounds, per metric
#   JIT_WARMUP=1    seconds per operation of the discarded first pass (0 = none)
#   TARGETS="ours apache"   READY_TIMEOUT=30   SKIP_BUILD=0 (1 = use existing binaries)
#   JAVA_HEAP=1000m the server's -Xmx/-Xms (upstream zkEnv.sh's default heap)
#   PROFILE=release cargo profile of our binaries (another name: built as a copy of
#                   release into target/PROFILE, e.g. to keep others' binaries intact)
#
# Output: a table on stdout, bench/results/zk-<date>.json (gitignored) and a Markdown
# snippet. Every process started here is killed by PID on exit; the temp dir is removed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
PROFILE="${PROFILE:-release}"
REL="$TARGET_DIR/$PROFILE"

CLIENTS="${CLIENTS:-1 16}"
VALUE_SIZE="${VALUE_SIZE:-1024}"
DURATION="${DURATION:-4}"
WARMUP="${WARMUP:-1}"
REPEAT="${REPEAT:-3}"
JIT_WARMUP="${JIT_WARMUP:-1}"
TARGETS="${TARGETS:-ours apache}"
READY_TIMEOUT="${READY_TIMEOUT:-30}"
SKIP_BUILD="${SKIP_BUILD:-0}"
JAVA_HEAP="${JAVA_HEAP:-1000m}"
ZK_JAR=/usr/share/java/zookeeper.jar

BENCH=zk.sh
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"   # log, die, free_port, start_server, field, ...

# ---------------------------------------------------------------- cleanup
bench_workdir zk-bench

# ---------------------------------------------------------------- build
LOAD="$REL/zk-load"
PEHRA="$REL/pehra"
if [[ "$SKIP_BUILD" != 1 ]]; then
    # Another profile than release: built as a copy of release into target/PROFILE.
    PROFILE_ARGS=(--release)
    [[ "$PROFILE" == release ]] || PROFILE_ARGS=(--config "profile.$PROFILE.inherits=\"release\"" --profile "$PROFILE")
    log "building pehra-bench ($PROFILE)"
    cargo build "${PROFILE_ARGS[@]}" -j2 -p pehra-bench
    log "building pehra ($PROFILE)"
    if ! cargo build "${PROFILE_ARGS[@]}" -j2 -p pehra --bin pehra; then
        [[ -x "$PEHRA" ]] || die "building pehra failed and there is no $PEHRA"
        log "warning: building pehra failed; measuring the existing $PEHRA" \
            "(built $(date -r "$PEHRA" '+%Y-%m-%d %H:%M'))"
    fi
fi
[[ -x "$LOAD" && -x "$PEHRA" ]] || die "missing $LOAD or $PEHRA (build failed?)"

# ---------------------------------------------------------------- ports

# ---------------------------------------------------------------- targets
NAMES=()
declare -A ADDR DESC PID_OF LOGF


# Ready = a real session can be opened (on ours that is a logged, fsynced write).
wait_ready() { # name
    local name="$1" deadline=$((SECONDS + READY_TIMEOUT))
    while ((SECONDS < deadline)); do
        if ! kill -0 "${PID_OF[$name]}" 2>/dev/null; then
            log "$name: server exited; its log:"
            sed 's/^/    /' "${LOGF[$name]}" >&2 || true
            return 1
        fi
        if "$LOAD" --target "$name" --addr "${ADDR[$name]}" --probe --connect-timeout 2 \
            >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.2
    done
    log "$name: not ready after ${READY_TIMEOUT}s; its log:"
    sed 's/^/    /' "${LOGF[$name]}" >&2 || true
    return 1
}

# Apache ZooKeeper's four-letter word `srvr` (its version line), over bash's /dev/tcp.
zk_srvr() { # port
    # shellcheck disable=SC2016 # $1 is expanded by the inner bash
    timeout 3 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" && printf srvr >&3 && cat <&3' _ "$1" 2>/dev/null || true
}

for name in $TARGETS; do
    case "$name" in
        ours)
            free_port port
            ADDR[ours]="127.0.0.1:$port"
            DESC[ours]="pehra zookeeper (git $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), binary of $(date -r "$PEHRA" '+%Y-%m-%d %H:%M')), CoAP/UDP, fdatasync per batch"
            mkdir -p "$WORK/ours-data"
            start_server ours "$WORK/ours.log" "$PEHRA" zookeeper --listen "${ADDR[ours]}" \
                --data-dir "$WORK/ours-data"
            NAMES+=(ours)
            ;;
        apache)
            if [[ ! -r "$ZK_JAR" ]] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
                log "installing zookeeper (Debian package: Apache ZooKeeper 3.8)"
                apt-get update -qq >/dev/null &&
                    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq zookeeper >/dev/null || true
            fi
            if [[ ! -r "$ZK_JAR" ]] || ! command -v java >/dev/null; then
                log "skipping apache: $ZK_JAR or java not found (install: sudo apt-get install -y zookeeper)"
                continue
            fi
            free_port port
            ADDR[apache]="127.0.0.1:$port"
            conf="$WORK/apache-conf"
            mkdir -p "$conf" "$WORK/apache-data"
            cat >"$conf/zoo.cfg" <<EOF
tickTime=2000
dataDir=$WORK/apache-data
clientPort=$port
clientPortAddress=127.0.0.1
maxClientCnxns=0
forceSync=yes
admin.enableServer=false
4lw.commands.whitelist=srvr,ruok
EOF
            APACHE_CP="$conf:$ZK_JAR"
            # A logging backend for slf4j if the package set has one (else slf4j is silent).
            [[ -r /usr/share/java/slf4j-simple.jar ]] && APACHE_CP+=":/usr/share/java/slf4j-simple.jar"
            DESC[apache]="Apache ZooKeeper $(dpkg-query -W -f='${Version}' zookeeper 2>/dev/null || echo '?') standalone, $(java -version 2>&1 | head -n1 | tr -d '"'), forceSync=yes"
            start_server apache "$WORK/apache.log" java -Xms"$JAVA_HEAP" -Xmx"$JAVA_HEAP" \
                -Dorg.slf4j.simpleLogger.defaultLogLevel=warn -Dzookeeper.log.dir="$WORK" \
                -cp "$APACHE_CP" org.apache.zookeeper.server.ZooKeeperServerMain "$conf/zoo.cfg"
            NAMES+=(apache)
            ;;
        *) die "unknown target '$name' (TARGETS: ours apache)" ;;
    esac
done
((${#NAMES[@]})) || die "no target to measure"

READY=()
for name in "${NAMES[@]}"; do
    if wait_ready "$name"; then
        log "$name ready on ${ADDR[$name]} (pid ${PID_OF[$name]})"
        READY+=("$name")
    else
        log "skipping $name"
    fi
done
NAMES=("${READY[@]}")
((${#NAMES[@]})) || die "no target came up"
APACHE_SRVR=""
if [[ -n "${ADDR[apache]:-}" && " ${NAMES[*]} " == *" apache "* ]]; then
    APACHE_SRVR="$(zk_srvr "${ADDR[apache]##*:}" | sed -n 's/^Zookeeper version: //p' | head -n1)"
    [[ -n "$APACHE_SRVR" ]] && log "apache srvr: $APACHE_SRVR"
fi

# ---------------------------------------------------------------- measure
RUNS="$WORK/runs.jsonl"   # one line per (round, target, clients, op): "round<TAB>json"
: >"$RUNS"
load() { # target clients duration warmup label -> JSON lines on stdout
    "$LOAD" --target "$1" --addr "${ADDR[$1]}" --clients "$2" --ops all --duration "$3" \
        --warmup "$4" --value-size "$VALUE_SIZE" --label "$5" --json
}

if [[ "$JIT_WARMUP" != 0 ]]; then
    for name in "${NAMES[@]}"; do
        log "warm-up pass (discarded): $name, 16 clients, ${JIT_WARMUP}s per operation"
        load "$name" 16 "$JIT_WARMUP" 0 warmup >/dev/null || log "warm-up pass of $name failed"
    done
fi

log "measuring: ${NAMES[*]}; clients=[$CLIENTS] value=${VALUE_SIZE}B warmup=${WARMUP}s" \
    "duration=${DURATION}s per operation, repeat=$REPEAT"
read -r TICKS0 STEAL0 < <(cpu_ticks)
for ((round = 1; round <= REPEAT; round++)); do
    order=("${NAMES[@]}")
    if ((round % 2 == 0)); then # alternate who goes first
        order=()
        for ((i = ${#NAMES[@]} - 1; i >= 0; i--)); do order+=("${NAMES[$i]}"); done
    fi
    for c in $CLIENTS; do
        for name in "${order[@]}"; do
            if out="$(load "$name" "$c" "$DURATION" "$WARMUP" "round$round")"; then
                :
            else
                log "round $round/$REPEAT $name x$c: zk-load exited $? (partial results kept)"
            fi
            summary=""
            while IFS= read -r line; do
                [[ "$line" == "{"* ]] || continue
                printf '%s\t%s\n' "$round" "$line" >>"$RUNS"
                e="$(field errors <<<"$line")"
                summary+=" $(field op <<<"$line") $(printf '%.0f' "$(field ops_per_s <<<"$line")")/s"
                [[ "$e" == 0 ]] || summary+=" ($e errors: $(field first_error <<<"$line"))"
            done <<<"$out"
            log "round $round/$REPEAT $name x$c:${summary:- no result}"
        done
    done
done
read -r TICKS1 STEAL1 < <(cpu_ticks)
STEAL_PCT="$(awk -v s=$((STEAL1 - STEAL0)) -v t=$((TICKS1 - TICKS0)) 'BEGIN { if (t > 0) printf "%.1f", 100 * s / t; else print 0 }')"
for name in "${NAMES[@]}"; do
    kill -0 "${PID_OF[$name]}" 2>/dev/null || log "warning: $name exited during the runs (log: ${LOGF[$name]})"
done

# ---------------------------------------------------------------- summary
# TSV: round target op clients ops_per_s p50_us p99_us errors parent_children max_us
TSV="$WORK/runs.tsv"
while IFS=$'\t' read -r round line; do
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$(field target <<<"$line")" \
        "$(field op <<<"$line")" "$(field clients <<<"$line")" "$(field ops_per_s <<<"$line")" \
        "$(field lat_p50_us <<<"$line")" "$(field lat_p99_us <<<"$line")" \
        "$(field errors <<<"$line")" "$(field parent_children <<<"$line")" \
        "$(field lat_max_us <<<"$line")"
done <"$RUNS" >"$TSV"

# One line per (op, clients), in the order create/set/get x CLIENTS:
# op clients  then for ours and apache: ops/s min max p50 p99 worst errors n  then ratios:
# ops/s (of medians), ops/s per-round median, p50, p99 (ours/apache; "-" if missing).
SUMMARY="$WORK/summary.tsv"
awk -F'\t' -v clients="$CLIENTS" '
    function med(list,    a, n, i, j, t) {
        n = split(list, a, " ")
        if (n == 0) return ""
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
        return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    function lo(list,    a, n, i, m) { n = split(list, a, " "); m = a[1]; for (i = 2; i <= n; i++) if (a[i] + 0 < m + 0) m = a[i]; return m }
    function hi(list,    a, n, i, m) { n = split(list, a, " "); m = a[1]; for (i = 2; i <= n; i++) if (a[i] + 0 > m + 0) m = a[i]; return m }
    function r(a, b) { return (a != "" && b != "" && b + 0 > 0) ? sprintf("%.3f", a / b) : "-" }
    {
        k = $3 SUBSEP $4 SUBSEP $2
        ops[k] = ops[k] " " $5; p50[k] = p50[k] " " $6; p99[k] = p99[k] " " $7
        err[k] += $8; n[k]++
        if (!(k in worst) || $10 + 0 > worst[k] + 0) worst[k] = $10
        per[$1 SUBSEP $3 SUBSEP $4 SUBSEP $2] = $5
        if ($1 > rounds) rounds = $1
    }
    END {
        nc = split(clients, cl, " ")
        split("create set get", opl, " ")
        for (o = 1; o <= 3; o++) for (c = 1; c <= nc; c++) {
            op = opl[o]; cc = cl[c]; line = op "\t" cc
            for (t = 1; t <= 2; t++) {
                tg = t == 1 ? "ours" : "apache"; k = op SUBSEP cc SUBSEP tg
                if (!(k in n)) { line = line "\t-\t-\t-\t-\t-\t-\t-\t0"; m[tg] = ""; m50[tg] = ""; m99[tg] = ""; continue }
                m[tg] = med(ops[k]); m50[tg] = med(p50[k]); m99[tg] = med(p99[k])
                line = line sprintf("\t%.1f\t%s\t%s\t%s\t%s\t%s\t%d\t%d", m[tg], lo(ops[k]), hi(ops[k]), m50[tg], m99[tg], worst[k], err[k], n[k])
            }
            rr = ""
            for (i = 1; i <= rounds; i++) {
                a = per[i SUBSEP op SUBSEP cc SUBSEP "ours"]; b = per[i SUBSEP op SUBSEP cc SUBSEP "apache"]
                if (a != "" && b + 0 > 0) rr = rr " " a / b
            }
            rrm = rr == "" ? "-" : sprintf("%.3f", med(rr))
            line = line "\t" r(m["ours"], m["apache"]) "\t" rrm "\t" r(m50["ours"], m50["apache"]) "\t" r(m99["ours"], m99["apache"])
            print line
        }
    }' "$TSV" >"$SUMMARY"

fmt_num() { [[ "$1" == - || -z "$1" ]] && echo "-" || printf '%.0f' "$1"; }
fmt_ms() { [[ "$1" == - || -z "$1" ]] && echo "-" || awk -v v="$1" 'BEGIN { printf "%.2f", v / 1000 }'; }
fmt_range() { [[ "$1" == - ]] && echo "-" || awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f-%.0f", a, b }'; }

echo
printf '%-6s %3s | %7s %11s %6s %6s %6s %3s | %7s %11s %6s %6s %6s %3s | %6s %6s %6s %6s\n' \
    op cli "ours/s" "range" "p50" "p99" "max" err "apache" "range" "p50" "p99" "max" err \
    "ops x" "rnd x" "p50 x" "p99 x"
while IFS=$'\t' read -r op cc o_ops o_lo o_hi o_50 o_99 o_mx o_err _ a_ops a_lo a_hi a_50 a_99 a_mx a_err _ r_ops r_rnd r_50 r_99; do
    printf '%-6s %3s | %7s %11s %6s %6s %6s %3s | %7s %11s %6s %6s %6s %3s | %6s %6s %6s %6s\n' "$op" "$cc" \
        "$(fmt_num "$o_ops")" "$(fmt_range "$o_lo" "$o_hi")" "$(fmt_ms "$o_50")" "$(fmt_ms "$o_99")" "$(fmt_ms "$o_mx")" "$o_err" \
        "$(fmt_num "$a_ops")" "$(fmt_range "$a_lo" "$a_hi")" "$(fmt_ms "$a_50")" "$(fmt_ms "$a_99")" "$(fmt_ms "$a_mx")" "$a_err" \
        "$r_ops" "$r_rnd" "$r_50" "$r_99"
done <"$SUMMARY"
echo
echo "ops/s, p50, p99: median of $REPEAT round(s) each; range = min-max ops/s; latencies in ms;"
echo "max = the slowest single request of all rounds; err = errors summed over rounds."
echo "ratios are ours/apache: ops x (of the medians; >1 = ours faster), rnd x (median of the per-round"
echo "ratios, the two runs being adjacent in time), p50 x / p99 x (latency; <1 = ours faster)."
CREATE_CHILDREN="$(awk -F'\t' '$3 == "create" && $9 != "null" { v[$2 " x" $4] = $9 }
    END { for (k in v) print k ": " v[k] }' "$TSV" | sort | paste -sd, - | sed 's/,/, /g')"
[[ -z "$CREATE_CHILDREN" ]] ||
    echo "create: a run's znodes are all children of one parent; children at the end of the last round: $CREATE_CHILDREN"
echo "cpu steal during the runs: ${STEAL_PCT}% (high = noisy host, repeat the run)"
for name in "${NAMES[@]}"; do echo "  $name (${ADDR[$name]}): ${DESC[$name]}"; done
[[ -z "$APACHE_SRVR" ]] || echo "  apache srvr: $APACHE_SRVR"

# ---------------------------------------------------------------- JSON
STAMP="$(date +%Y%m%d-%H%M%S)"
mkdir -p "$ROOT/bench/results"
JSON="$ROOT/bench/results/zk-$STAMP.json"
CPU_MODEL="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)"
GIT_REV="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
{
    printf '{\n  "date": %s,\n' "$(jstr "$(date -Iseconds)")"
    printf '  "host": {"kernel": %s, "cpus": %s, "cpu_model": %s},\n' \
        "$(jstr "$(uname -r)")" "$(nproc)" "$(jstr "$CPU_MODEL")"
    printf '  "git_rev": %s,\n' "$(jstr "$GIT_REV")"
    printf '  "targets": {'
    first=1
    for name in "${NAMES[@]}"; do
        ((first)) || printf ', '
        first=0
        printf '%s: %s' "$(jstr "$name")" "$(jstr "${DESC[$name]}")"
    done
    printf '},\n  "apache_srvr_version": %s,\n' "$(jstr "$APACHE_SRVR")"
    printf '  "settings": {"clients": [%s], "value_size": %s, "warmup_s": %s, "duration_s": %s, "repeat": %s, "jit_warmup_s": %s},\n' \
        "$(xargs <<<"$CLIENTS" | tr ' ' ',')" "$VALUE_SIZE" "$WARMUP" "$DURATION" "$REPEAT" "$JIT_WARMUP"
    printf '  "cpu_steal_pct": %s,\n  "summary": [\n' "$STEAL_PCT"
    first=1
    while IFS=$'\t' read -r op cc o_ops o_lo o_hi o_50 o_99 o_mx o_err o_n a_ops a_lo a_hi a_50 a_99 a_mx a_err a_n r_ops r_rnd r_50 r_99; do
        ((first)) || printf ',\n'
        first=0
        printf '    {"op": "%s", "clients": %s,\n' "$op" "$cc"
        for t in ours apache; do
            if [[ $t == ours ]]; then set -- "$o_ops" "$o_lo" "$o_hi" "$o_50" "$o_99" "$o_mx" "$o_err" "$o_n"
            else set -- "$a_ops" "$a_lo" "$a_hi" "$a_50" "$a_99" "$a_mx" "$a_err" "$a_n"; fi
            printf '     "%s": {"ops_per_s": %s, "ops_per_s_min": %s, "ops_per_s_max": %s, "lat_p50_us": %s, "lat_p99_us": %s, "lat_max_us": %s, "errors": %s, "rounds": %s},\n' \
                "$t" "$(jnum "$1")" "$(jnum "$2")" "$(jnum "$3")" "$(jnum "$4")" "$(jnum "$5")" "$(jnum "$6")" "$7" "$8"
        done
        printf '     "ours_vs_apache": {"ops_per_s": %s, "ops_per_s_per_round_median": %s, "lat_p50": %s, "lat_p99": %s}}' \
            "$(jnum "$r_ops")" "$(jnum "$r_rnd")" "$(jnum "$r_50")" "$(jnum "$r_99")"
    done <"$SUMMARY"
    printf '\n  ],\n  "runs": [\n'
    awk -F'\t' '{ printf "%s    {\"round\": %s, \"run\": %s}", (NR > 1 ? ",\n" : ""), $1, $2 } END { print "" }' "$RUNS"
    printf '  ]\n}\n'
} >"$JSON"
echo "results: ${JSON#"$ROOT"/}"

# ---------------------------------------------------------------- Markdown
echo
echo "Markdown (for the README):"
echo
echo "| op | clients | ours ops/s | p50 (ms) | p99 (ms) | Apache ops/s | p50 (ms) | p99 (ms) | ops/s ours/Apache | p50 ours/Apache |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
while IFS=$'\t' read -r op cc o_ops _ _ o_50 o_99 _ _ _ a_ops _ _ a_50 a_99 _ _ _ r_ops _ r_50 _; do
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$op" "$cc" \
        "$(fmt_num "$o_ops")" "$(fmt_ms "$o_50")" "$(fmt_ms "$o_99")" \
        "$(fmt_num "$a_ops")" "$(fmt_ms "$a_50")" "$(fmt_ms "$a_99")" "$r_ops" "$r_50"
done <"$SUMMARY"
echo
printf '_%s: zk-load (Rust; pehra_zookeeper::Client vs the zookeeper-client crate), %s-byte values, %ss (+%ss warm-up) per operation, median of %s, loopback, %s × %s, cpu steal %s%%._\n' \
    "$(date +%Y-%m-%d)" "$VALUE_SIZE" "$DURATION" "$WARMUP" "$REPEAT" "$(nproc)" "${CPU_MODEL:-cpu}" "$STEAL_PCT"
