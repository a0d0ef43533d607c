#!/usr/bin/env bash
# Our zookeeper as a 3-member ensemble vs Apache ZooKeeper 3.8 (Debian's `zookeeper`
# package) as a 3-node ensemble, on loopback, driven by the same Rust load client
# (target/PROFILE/zk-load) in the same run:
#   1. throughput: create, set and get of VALUE_SIZE-byte values with 1 and 16
#      concurrent clients (closed loop, one request at a time per client), every client
#      given every member;
#   2. failover: one client writes (set, one at a time), the ensemble's leader is killed
#      (SIGKILL) between two writes, and the time from the kill to the next acknowledged
#      write is measured, with the writes that failed meanwhile; the killed member is
#      restarted and the next round waits until it has rejoined.
#
#   bash bench/zk-ensemble.sh
#
# Targets (each member on its own free port on 127.0.0.1; data dirs in one temp dir):
#   ours    3 x target/PROFILE/pehra zookeeper --id N --listen 127.0.0.1:PORT_N
#             --data-dir DIR_N --peers 1=127.0.0.1:PORT_1,2=...,3=...
#           (Raft over CoAP/UDP, raft-rs; every write fdatasync'd by a majority before it
#           is answered; no credentials, as bench/zk.sh: plain CoAP, no ACLs)
#           driven through pehra_zookeeper::Client::connect_any(all members)
#   apache  3 x java -cp CONF_N:/usr/share/java/zookeeper.jar[:slf4j-simple.jar]
#             org.apache.zookeeper.server.quorum.QuorumPeerMain CONF_N/zoo.cfg
#           zoo.cfg written here: tickTime=TICK_TIME, initLimit=10, syncLimit=5,
#           forceSync=yes (the default), server.N=127.0.0.1:PEER_PORT:ELECTION_PORT, a
#           myid in each dataDir, admin server off, 4lw srvr/ruok; no authentication
#           either. Driven through the zookeeper-client crate with the connect string
#           h1:p1,h2:p2,h3:p3 (it picks a member; writes are forwarded to the leader).
#           Installed with apt-get (package zookeeper) if missing and running as root.
# Which member leads: `zk-load --status` (ours: GET /ensemble; Apache: srvr's `Mode:`).
# An ensemble is "whole" when every member answers, one leads, the others follow, and
# (ours) every member has applied the leader's commit index.
#
# Environment (defaults):
#   CLIENTS="1 16"  VALUE_SIZE=1024  DURATION=4 WARMUP=1  REPEAT=3  JIT_WARMUP=1
#                   as bench/zk.sh (figures: median of REPEAT rounds, alternating order)
#   FAILOVERS=3     failover rounds per target (alternating which target goes first)
#   FAILOVER_PRE=2  seconds of writes before each kill (and 5 s after the first acknowledged
#                   write: the session must be the same and alive, logged)
#   FAILOVER_TIMEOUT=30  a round without an acknowledged write by then counts as none
#   TARGETS="ours apache"   READY_TIMEOUT=60   SKIP_BUILD=0   JAVA_HEAP=1000m (per JVM)
#   TICK_TIME=2000  Apache's tickTime (its default; syncLimit and initLimit count ticks)
#   PROFILE=release cargo profile of our binaries (another name: a copy of release)
#
# Output: tables on stdout, bench/results/zk-ensemble-<date>.json (gitignored) and
# Markdown snippets. Every process started here is killed by PID on exit (also the
# restarted members); the temp dir is removed.
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
FAILOVERS="${FAILOVERS:-3}"
FAILOVER_PRE="${FAILOVER_PRE:-2}"
FAILOVER_TIMEOUT="${FAILOVER_TIMEOUT:-30}"
TARGETS="${TARGETS:-ours apache}"
READY_TIMEOUT="${READY_TIMEOUT:-60}"
SKIP_BUILD="${SKIP_BUILD:-0}"
JAVA_HEAP="${JAVA_HEAP:-1000m}"
TICK_TIME="${TICK_TIME:-2000}"
ZK_JAR=/usr/share/java/zookeeper.jar
N=3

BENCH=zk-ensemble.sh
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"   # log, die, free_port, start_server, field, ...

bench_workdir zk-ensemble

# ---------------------------------------------------------------- build
LOAD="$REL/zk-load"
PEHRA="$REL/pehra"
if [[ "$SKIP_BUILD" != 1 ]]; then
    PROFILE_ARGS=(--release)
    [[ "$PROFILE" == release ]] || PROFILE_ARGS=(--config "profile.$PROFILE.inherits=\"release\"" --profile "$PROFILE")
    log "building pehra-bench ($PROFILE)"
    cargo build "${PROFILE_ARGS[@]}" -j2 -p pehra-bench
    log "building pehra ($PROFILE)"
    if ! cargo build "${PROFILE_ARGS[@]}" -j2 -p pehra --bin pehra; then
        [[ -x "$PEHRA" ]] || die "building pehra failed and there is no $PEHRA"
        log "warning: building pehra failed; measuring the existing $PEHRA"
    fi
fi
[[ -x "$LOAD" && -x "$PEHRA" ]] || die "missing $LOAD or $PEHRA (build failed?)"

# ---------------------------------------------------------------- members
NAMES=()
declare -A ADDR DESC PID_OF LOGF PORT STARTS
# ADDR[ours] / ADDR[apache]: the member list (client ports); PID_OF[oursN]/[apacheN].

start_ours() { # i
    local i="$1" n="${STARTS[ours$1]:-0}"
    STARTS[ours$i]=$((n + 1))
    start_server "ours$i" "$WORK/ours$i.$n.log" "$PEHRA" zookeeper --id "$i" \
        --listen "127.0.0.1:${PORT[ours$i]}" --data-dir "$WORK/ours-data$i" --peers "$OURS_PEERS"
}
start_apache() { # i
    local i="$1" n="${STARTS[apache$1]:-0}"
    STARTS[apache$i]=$((n + 1))
    start_server "apache$i" "$WORK/apache$i.$n.log" java -Xms"$JAVA_HEAP" -Xmx"$JAVA_HEAP" \
        -Dorg.slf4j.simpleLogger.defaultLogLevel=warn -Dzookeeper.log.dir="$WORK" \
        -cp "$WORK/apache-conf$i:$APACHE_CP" org.apache.zookeeper.server.quorum.QuorumPeerMain \
        "$WORK/apache-conf$i/zoo.cfg"
}
pids_of() { # target -> P1,P2,P3
    local i out=""
    for ((i = 1; i <= N; i++)); do out+="${out:+,}${PID_OF[$1$i]}"; done
    printf '%s' "$out"
}
show_member_logs() { # target
    local i
    for ((i = 1; i <= N; i++)); do
        log "$1$i: its log (last lines):"
        tail -n 15 "${LOGF[$1$i]}" | sed 's/^/    /' >&2 || true
    done
}
# Waits until the ensemble is whole (zk-load --status) and a session can be opened.
# Sets LAST_STATUS.
wait_whole() { # target
    local t="$1" deadline=$((SECONDS + READY_TIMEOUT)) i
    LAST_STATUS=""
    while ((SECONDS < deadline)); do
        for ((i = 1; i <= N; i++)); do
            kill -0 "${PID_OF[$t$i]}" 2>/dev/null || { log "$t$i exited"; show_member_logs "$t"; return 1; }
        done
        if LAST_STATUS="$("$LOAD" --target "$t" --addr "${ADDR[$t]}" --status 2>/dev/null)" &&
            "$LOAD" --target "$t" --addr "${ADDR[$t]}" --probe --connect-timeout 5 >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.2
    done
    log "$t: not whole after ${READY_TIMEOUT}s (last: ${LAST_STATUS:-?})"
    show_member_logs "$t"
    return 1
}

GIT_REV="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
for name in $TARGETS; do
    case "$name" in
        ours)
            list="" OURS_PEERS=""
            for ((i = 1; i <= N; i++)); do
                free_port port
                PORT[ours$i]=$port
                list+="${list:+,}127.0.0.1:$port"
                OURS_PEERS+="${OURS_PEERS:+,}$i=127.0.0.1:$port"
                mkdir -p "$WORK/ours-data$i"
            done
            ADDR[ours]="$list"
            DESC[ours]="3 x pehra zookeeper (git $GIT_REV, binary of $(date -r "$PEHRA" '+%Y-%m-%d %H:%M')), Raft (raft-rs) over CoAP/UDP, fdatasync per batch"
            for ((i = 1; i <= N; i++)); do start_ours "$i"; done
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
            APACHE_CP="$ZK_JAR"
            [[ -r /usr/share/java/slf4j-simple.jar ]] && APACHE_CP+=":/usr/share/java/slf4j-simple.jar"
            list="" servers=""
            for ((i = 1; i <= N; i++)); do
                free_port port; PORT[apache$i]=$port
                free_port pp; free_port ep
                list+="${list:+,}127.0.0.1:$port"
                servers+="server.$i=127.0.0.1:$pp:$ep"$'\n'
            done
            ADDR[apache]="$list"
            for ((i = 1; i <= N; i++)); do
                mkdir -p "$WORK/apache-conf$i" "$WORK/apache-data$i"
                echo "$i" >"$WORK/apache-data$i/myid"
                cat >"$WORK/apache-conf$i/zoo.cfg" <<EOF
tickTime=$TICK_TIME
initLimit=10
syncLimit=5
dataDir=$WORK/apache-data$i
clientPort=${PORT[apache$i]}
clientPortAddress=127.0.0.1
maxClientCnxns=0
forceSync=yes
admin.enableServer=false
4lw.commands.whitelist=srvr,ruok
$servers
EOF
            done
            DESC[apache]="3 x Apache ZooKeeper $(dpkg-query -W -f='${Version}' zookeeper 2>/dev/null || echo '?') QuorumPeerMain, $(java -version 2>&1 | head -n1 | tr -d '"'), forceSync=yes, tickTime=$TICK_TIME"
            for ((i = 1; i <= N; i++)); do start_apache "$i"; done
            NAMES+=(apache)
            ;;
        *) die "unknown target '$name' (TARGETS: ours apache)" ;;
    esac
done
((${#NAMES[@]})) || die "no target to measure"

READY=()
for name in "${NAMES[@]}"; do
    if wait_whole "$name"; then
        log "$name whole on ${ADDR[$name]} (pids $(pids_of "$name")): $LAST_STATUS"
        READY+=("$name")
    else
        log "skipping $name"
    fi
done
NAMES=("${READY[@]}")
((${#NAMES[@]})) || die "no target came up"

# ---------------------------------------------------------------- throughput
RUNS="$WORK/runs.jsonl"
: >"$RUNS"
load() { # target clients duration warmup label -> JSON lines on stdout
    "$LOAD" --target "$1" --addr "${ADDR[$1]}" --clients "$2" --ops all --duration "$3" \
        --warmup "$4" --value-size "$VALUE_SIZE" --label "$5" --json
}
ordered() { # round -> NAMES, reversed on even rounds
    local i
    if (($1 % 2)); then echo "${NAMES[*]}"; else for ((i = ${#NAMES[@]} - 1; i >= 0; i--)); do printf '%s ' "${NAMES[$i]}"; done; fi
}

if [[ "$JIT_WARMUP" != 0 ]]; then
    for name in "${NAMES[@]}"; do
        log "warm-up pass (discarded): $name, 16 clients, ${JIT_WARMUP}s per operation"
        load "$name" 16 "$JIT_WARMUP" 0 warmup >/dev/null || log "warm-up pass of $name failed"
    done
fi

log "throughput: ${NAMES[*]}; clients=[$CLIENTS] value=${VALUE_SIZE}B warmup=${WARMUP}s duration=${DURATION}s, repeat=$REPEAT"
read -r TICKS0 STEAL0 < <(cpu_ticks)
LOAD0="$(cut -d' ' -f1 /proc/loadavg)"
for ((round = 1; round <= REPEAT; round++)); do
    for c in $CLIENTS; do
        for name in $(ordered "$round"); do
            out="$(load "$name" "$c" "$DURATION" "$WARMUP" "round$round")" ||
                log "round $round/$REPEAT $name x$c: zk-load exited $? (partial results kept)"
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
LOAD1="$(cut -d' ' -f1 /proc/loadavg)"

# ---------------------------------------------------------------- failover
FAILS="$WORK/failover.jsonl"
: >"$FAILS"
log "failover: $FAILOVERS round(s) per target, ${FAILOVER_PRE}s of writes before each kill"
for ((round = 1; round <= FAILOVERS; round++)); do
    for name in $(ordered "$round"); do
        wait_whole "$name" || die "$name: not whole before failover round $round"
        before="$LAST_STATUS"
        out="$("$LOAD" --target "$name" --addr "${ADDR[$name]}" --failover-pids "$(pids_of "$name")" \
            --warmup "$FAILOVER_PRE" --value-size "$VALUE_SIZE" --failover-timeout "$FAILOVER_TIMEOUT" \
            --json --label "failover$round" 2>"$WORK/failover.err")" ||
            log "failover round $round $name: zk-load exited $? ($(tail -n1 "$WORK/failover.err"))"
        line="$(grep '^{' <<<"$out" | tail -n1 || true)"
        [[ -n "$line" ]] || die "failover round $round $name: no result"
        printf '%s\t%s\n' "$round" "$line" >>"$FAILS"
        killed="$(field killed_member <<<"$line")"
        log "failover round $round/$FAILOVERS $name: before [$before], killed member $killed;" \
            "next write acknowledged after $(field recovery_ms <<<"$line") ms," \
            "$(field failed_writes <<<"$line") failed writes (first: $(field first_error <<<"$line"));" \
            "after: $(field roles_after <<<"$line"); then $(field writes_failed_after <<<"$line") failed writes" \
            "in the next 5 s, session $(field session_before <<<"$line") -> $(field session_after <<<"$line")"
        wait "${PID_OF[$name$killed]}" 2>/dev/null || true
        t0=$SECONDS
        "start_$name" "$killed"
        wait_whole "$name" || die "$name: member $killed did not rejoin"
        log "  $name$killed restarted (pid ${PID_OF[$name$killed]}), whole again after $((SECONDS - t0))s: $LAST_STATUS"
    done
done
for name in "${NAMES[@]}"; do
    for ((i = 1; i <= N; i++)); do
        kill -0 "${PID_OF[$name$i]}" 2>/dev/null || log "warning: $name$i exited (log: ${LOGF[$name$i]})"
    done
done

# ---------------------------------------------------------------- summary
TSV="$WORK/runs.tsv"
while IFS=$'\t' read -r round line; do
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$(field target <<<"$line")" \
        "$(field op <<<"$line")" "$(field clients <<<"$line")" "$(field ops_per_s <<<"$line")" \
        "$(field lat_p50_us <<<"$line")" "$(field lat_p99_us <<<"$line")" "$(field errors <<<"$line")"
done <"$RUNS" >"$TSV"
# op clients, then for ours and apache: ops/s p50 p99 errors; then ops/s ratio, per-round
# ratio median, p50 ratio.
SUMMARY="$WORK/summary.tsv"
awk -F'\t' -v clients="$CLIENTS" '
    function med(list,    a, n, i, j, t) {
        n = split(list, a, " ")
        if (n == 0) return ""
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
        return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    function r(a, b) { return (a != "" && b != "" && b + 0 > 0) ? sprintf("%.2f", a / b) : "-" }
    {
        k = $3 SUBSEP $4 SUBSEP $2
        ops[k] = ops[k] " " $5; p50[k] = p50[k] " " $6; p99[k] = p99[k] " " $7; err[k] += $8
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
                m[tg] = med(ops[k]); m50[tg] = med(p50[k])
                line = line "\t" (m[tg] == "" ? "-" : m[tg]) "\t" (m50[tg] == "" ? "-" : m50[tg]) "\t" (k in ops ? med(p99[k]) : "-") "\t" err[k] + 0
            }
            rr = ""
            for (i = 1; i <= rounds; i++) {
                a = per[i SUBSEP op SUBSEP cc SUBSEP "ours"]; b = per[i SUBSEP op SUBSEP cc SUBSEP "apache"]
                if (a != "" && b + 0 > 0) rr = rr " " a / b
            }
            print line "\t" r(m["ours"], m["apache"]) "\t" (rr == "" ? "-" : sprintf("%.2f", med(rr))) "\t" r(m50["ours"], m50["apache"])
        }
    }' "$TSV" >"$SUMMARY"

# Failover per target: rounds, recovery ms median/min/max (of the rounds that recovered),
# failed writes (list), rounds without recovery.
FSUM="$WORK/failover.tsv"
while IFS=$'\t' read -r round line; do
    printf '%s\t%s\t%s\t%s\n' "$(field target <<<"$line")" "$(field recovery_ms <<<"$line")" \
        "$(field failed_writes <<<"$line")" "$round"
done <"$FAILS" | awk -F'\t' '
    { n[$1]++; f[$1] = f[$1] (f[$1] == "" ? "" : ",") $3; all[$1] = all[$1] (all[$1] == "" ? "" : ", ") ($2 == "null" ? "none" : sprintf("%.0f", $2))
      if ($2 == "null") { none[$1]++; next }
      v[$1] = v[$1] " " $2 }
    END {
        for (t in n) {
            k = split(v[t], a, " ")
            for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (a[j] + 0 < a[i] + 0) { x = a[i]; a[i] = a[j]; a[j] = x }
            med = k == 0 ? "-" : (k % 2 ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2)
            printf "%s\t%d\t%s\t%s\t%s\t%s\t%d\t%s\n", t, n[t], med, (k ? a[1] : "-"), (k ? a[k] : "-"), f[t], none[t] + 0, all[t]
        }
    }' | sort >"$FSUM"

fmt_num() { [[ "$1" == - || -z "$1" ]] && echo "-" || printf "%'.0f" "$1"; }
fmt_ms() { [[ "$1" == - || -z "$1" ]] && echo "-" || awk -v v="$1" 'BEGIN { printf "%.2f", v / 1000 }'; }
fmt_f0() { [[ "$1" == - || -z "$1" ]] && echo "-" || printf '%.0f' "$1"; }

CPU_MODEL="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)"
LOADAVG="$(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "Throughput (median of $REPEAT rounds; latencies in ms; x = ours/apache, ops >1 = ours faster, p50 <1 = ours faster):"
printf '%-6s %3s | %8s %7s %7s %4s | %8s %7s %7s %4s | %6s %6s %6s\n' op cli "ours/s" p50 p99 err "apache/s" p50 p99 err "ops x" "rnd x" "p50 x"
while IFS=$'\t' read -r op cc o_ops o_50 o_99 o_err a_ops a_50 a_99 a_err r_ops r_rnd r_50; do
    printf '%-6s %3s | %8s %7s %7s %4s | %8s %7s %7s %4s | %6s %6s %6s\n' "$op" "$cc" \
        "$(fmt_num "$o_ops")" "$(fmt_ms "$o_50")" "$(fmt_ms "$o_99")" "$o_err" \
        "$(fmt_num "$a_ops")" "$(fmt_ms "$a_50")" "$(fmt_ms "$a_99")" "$a_err" "$r_ops" "$r_rnd" "$r_50"
done <"$SUMMARY"
echo
echo "Failover (SIGKILL of the leader between two writes -> next acknowledged write):"
while IFS=$'\t' read -r t n med lo hi failed none all; do
    echo "  $t: $n round(s), ms: $all (median $(fmt_f0 "$med"), min $(fmt_f0 "$lo"), max $(fmt_f0 "$hi")); failed writes per round: $failed; rounds without recovery: $none"
done <"$FSUM"
echo "machine shared with other work: load average $LOAD0 before / $LOAD1 after the throughput runs on $(nproc) cpus, cpu steal ${STEAL_PCT}%"
for name in "${NAMES[@]}"; do echo "  $name (${ADDR[$name]}): ${DESC[$name]}"; done

# ---------------------------------------------------------------- JSON
STAMP="$(date +%Y%m%d-%H%M%S)"
mkdir -p "$ROOT/bench/results"
JSON="$ROOT/bench/results/zk-ensemble-$STAMP.json"
{
    printf '{\n  "date": %s,\n  "git_rev": %s,\n' "$(jstr "$(date -Iseconds)")" "$(jstr "$GIT_REV")"
    printf '  "host": {"kernel": %s, "cpus": %s, "cpu_model": %s, "loadavg_end": %s},\n' \
        "$(jstr "$(uname -r)")" "$(nproc)" "$(jstr "$CPU_MODEL")" "$(jstr "$LOADAVG")"
    printf '  "targets": {'
    first=1
    for name in "${NAMES[@]}"; do
        ((first)) || printf ', '
        first=0
        printf '%s: %s' "$(jstr "$name")" "$(jstr "${DESC[$name]}")"
    done
    printf '},\n  "settings": {"clients": [%s], "value_size": %s, "warmup_s": %s, "duration_s": %s, "repeat": %s, "failovers": %s, "failover_pre_s": %s},\n' \
        "$(xargs <<<"$CLIENTS" | tr ' ' ',')" "$VALUE_SIZE" "$WARMUP" "$DURATION" "$REPEAT" "$FAILOVERS" "$FAILOVER_PRE"
    printf '  "cpu_steal_pct": %s, "loadavg_throughput": [%s, %s],\n  "runs": [\n' "$STEAL_PCT" "$LOAD0" "$LOAD1"
    awk -F'\t' '{ printf "%s    {\"round\": %s, \"run\": %s}", (NR > 1 ? ",\n" : ""), $1, $2 } END { print "" }' "$RUNS"
    printf '  ],\n  "failover": [\n'
    awk -F'\t' '{ printf "%s    {\"round\": %s, \"run\": %s}", (NR > 1 ? ",\n" : ""), $1, $2 } END { print "" }' "$FAILS"
    printf '  ]\n}\n'
} >"$JSON"
echo "results: ${JSON#"$ROOT"/}"

# ---------------------------------------------------------------- Markdown
echo
echo "Markdown:"
echo
echo "| op | clients | Pehra ops/s | p50 ms | p99 ms | Apache ops/s | p50 ms | p99 ms | ops/s Pehra/Apache |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
while IFS=$'\t' read -r op cc o_ops o_50 o_99 _ a_ops a_50 a_99 _ r_ops _ _; do
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$op" "$cc" \
        "$(fmt_num "$o_ops")" "$(fmt_ms "$o_50")" "$(fmt_ms "$o_99")" \
        "$(fmt_num "$a_ops")" "$(fmt_ms "$a_50")" "$(fmt_ms "$a_99")" "$r_ops"
done <"$SUMMARY"
echo
echo "| leader killed (SIGKILL) | rounds | next acknowledged write, ms (each round) | median | failed writes meanwhile |"
echo "|---|---:|---|---:|---|"
while IFS=$'\t' read -r t n med _ _ failed _ all; do
    printf '| %s | %s | %s | %s | %s |\n' "$t" "$n" "$all" "$(fmt_f0 "$med")" "$failed"
done <"$FSUM"
echo
printf '_%s, git %s: %s-byte values, %ss (+%ss warm-up) per operation, median of %s; %s failover rounds; loopback, %s × %s shared with other builds (load average %s-%s, cpu steal %s%%)._\n' \
    "$(date +%Y-%m-%d)" "$GIT_REV" "$VALUE_SIZE" "$DURATION" "$WARMUP" "$REPEAT" "$FAILOVERS" "$(nproc)" "${CPU_MODEL:-cpu}" "$LOAD0" "$LOAD1" "$STEAL_PCT"
