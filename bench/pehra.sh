#!/usr/bin/env bash
# PEHRA's cost of idling: CPU time and wakeups per minute of idle, for a dormant broker,
# an awake idle broker and the Pehredar (and our zookeeper), against an idle Mosquitto
# and an idle Apache ZooKeeper measured in the same window; then the latency of the
# first produce to a sleeping cluster vs to an awake one.
#
#   bash bench/pehra.sh
#
# Setup (release binaries, everything on 127.0.0.1, every process killed by PID on exit):
#   pehra zookeeper   --pehra-term-ms 3600000 (no re-election inside the window)
#   brokers 1..3      --idle-before-sleep-ms IDLE_MS --alarm-interval-ms ALARM_MS: once
#                     idle, all but the Pehredar sleep; a dormant one wakes once per alarm
#   broker 4          --stay-awake: participates but never sleeps (the awake idle broker,
#                     the same code with every timer running)
#   mosquitto         Debian's package, no client (installed with apt-get if missing)
#   Apache ZooKeeper  Debian's `zookeeper` 3.8 standalone, no client (same)
# Once every broker but the Pehredar and broker 4 is dormant, every process is sampled
# over WINDOW_S seconds: CPU time = utime + stime of all its threads (/proc/PID/stat),
# wakeups = voluntary context switches summed over its threads (/proc/PID/task/*/status),
# both scaled to one minute. Then `first-produce` (bench/src/bin/first-produce.rs) times
# ROUNDS produces (acks all, one record, to a partition led by a sleeper) to the sleeping
# cluster, each followed by one to the then awake cluster.
#
# Environment (defaults): WINDOW_S=60 SETTLE_S=15 IDLE_MS=2000 ALARM_MS=60000 ROUNDS=5 SKIP_BUILD=0
# TOPIC_PARTITIONS=4 (a topic of that many partitions, RF 3, with 8 records, exists in the
# window; 0: none, as before 2026-12-05)
# SETTLE_S: the window starts this long after the cluster fell asleep, so that tokio's
# idle blocking-pool threads (they exit 10 s after their last job) are gone before it: the
# wakeups of a thread that exits inside the window would be lost from the count.
# Output: a table (on stderr, with the progress) and bench/results/pehra-<date>.json (gitignored).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
REL="$TARGET_DIR/release"
PEHRA="$REL/pehra"
FIRST="$REL/first-produce"
WINDOW_S="${WINDOW_S:-60}"
IDLE_MS="${IDLE_MS:-2000}"
ALARM_MS="${ALARM_MS:-60000}"
ROUNDS="${ROUNDS:-5}"
SETTLE_S="${SETTLE_S:-15}"
SKIP_BUILD="${SKIP_BUILD:-0}"
TOPIC_PARTITIONS="${TOPIC_PARTITIONS:-4}"
ZK_JAR=/usr/share/java/zookeeper.jar
TICKS=$(getconf CLK_TCK)

BENCH=pehra.sh
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"   # log, die, free_port

PIDS=()
WORK="$(mktemp -d "${TMPDIR:-/tmp}/pehra-idle-bench.XXXXXX")"
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [[ "$SKIP_BUILD" != 1 ]]; then
    log "building (release)"
    cargo build --release -j2 -p pehra --bin pehra
    cargo build --release -j2 -p pehra-bench --bin first-produce
fi
[[ -x "$PEHRA" && -x "$FIRST" ]] || die "missing $PEHRA or $FIRST"

install_deb() { # file-or-command package
    if [[ "$1" == /* ]]; then [[ -r "$1" ]] && return 0; else command -v "$1" >/dev/null && return 0; fi
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        log "installing $2 (Debian package)"
        apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null || true
    fi
}

declare -A PID_OF
start() { # name log command...
    local name="$1" logf="$2"
    shift 2
    "$@" >"$logf" 2>&1 &
    PIDS+=("$!")
    PID_OF[$name]=$!
}

free_port port
ZK="127.0.0.1:$port"
start zookeeper "$WORK/zk.log" "$PEHRA" zookeeper --listen "$ZK" --data-dir "$WORK/zk" \
    --pehra-term-ms 3600000 --pehra-handover-ms 60000
sleep 1
for id in 1 2 3 4; do
    extra=()
    [[ $id == 4 ]] && extra=(--stay-awake)
    free_port port
    start "broker-$id" "$WORK/b$id.log" "$PEHRA" broker --id "$id" --listen "127.0.0.1:$port" \
        --zookeeper "$ZK" --data-dir "$WORK/b$id" --idle-before-sleep-ms "$IDLE_MS" \
        --alarm-interval-ms "$ALARM_MS" "${extra[@]}"
done

install_deb mosquitto mosquitto
if command -v mosquitto >/dev/null; then
    free_port port
    printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$port" >"$WORK/mosquitto.conf"
    start mosquitto "$WORK/mosquitto.log" mosquitto -c "$WORK/mosquitto.conf"
else
    log "skipping mosquitto: not installed"
fi
install_deb "$ZK_JAR" zookeeper
if [[ -r "$ZK_JAR" ]] && command -v java >/dev/null; then
    mkdir -p "$WORK/apache-conf" "$WORK/apache-data"
    free_port port
    printf 'tickTime=2000\ndataDir=%s\nclientPort=%s\nclientPortAddress=127.0.0.1\nadmin.enableServer=false\n' \
        "$WORK/apache-data" "$port" >"$WORK/apache-conf/zoo.cfg"
    cp="$WORK/apache-conf:$ZK_JAR"
    [[ -r /usr/share/java/slf4j-simple.jar ]] && cp+=":/usr/share/java/slf4j-simple.jar"
    start apache-zookeeper "$WORK/apache.log" java -Xms256m -Xmx256m -Dzookeeper.log.dir="$WORK" \
        -cp "$cp" org.apache.zookeeper.server.ZooKeeperServerMain "$WORK/apache-conf/zoo.cfg"
else
    log "skipping Apache ZooKeeper: not installed"
fi

# A topic in the window (TOPIC_PARTITIONS, RF 3, a few records): the dormant brokers lead
# partitions that the awake ones (the Pehredar, broker 4) follow. Without one, the window
# missed the awake followers' fetches to dormant leaders (README, 2026-12-05).
if ((TOPIC_PARTITIONS > 0)); then
    log "creating topic idle-window ($TOPIC_PARTITIONS partitions, RF 3) with 8 records"
    deadline=$((SECONDS + 60))
    until "$PEHRA" topic create idle-window --partitions "$TOPIC_PARTITIONS" --replication-factor 3 \
        --zookeeper "$ZK" >"$WORK/topic.log" 2>&1; do
        ((SECONDS < deadline)) || { cat "$WORK/topic.log" >&2; die "could not create the topic"; }
        sleep 0.5
    done
    until printf 'r%d\n' 1 2 3 4 5 6 7 8 | "$PEHRA" produce idle-window --acks all \
        --zookeeper "$ZK" >"$WORK/produce.log" 2>&1; do
        ((SECONDS < deadline)) || { cat "$WORK/produce.log" >&2; die "could not produce to the topic"; }
        sleep 0.5
    done
fi

# Waits until the cluster sleeps; prints the Pehredar's and one sleeper's node names.
log "waiting for every broker but the Pehredar and broker-4 to fall asleep"
deadline=$((SECONDS + 120))
while :; do
    status="$("$PEHRA" pehra status --zookeeper "$ZK" 2>/dev/null || true)"
    pehredar="$(awk '$1 ~ /^broker-/ && $2 == "pehredar" {print $1}' <<<"$status")"
    awake="$(awk '$1 ~ /^broker-/ && $2 == "awake" {print $1}' <<<"$status")"
    sleeper="$(awk '$1 ~ /^broker-/ && $2 == "dormant" {print $1; exit}' <<<"$status")"
    if [[ -n "$pehredar" && -n "$sleeper" && -z "$awake" ]]; then break; fi
    ((SECONDS < deadline)) || { echo "$status" >&2; die "the cluster did not fall asleep"; }
    sleep 0.5
done
log "asleep; settling for ${SETTLE_S} s"
sleep "$SETTLE_S"
log "Pehredar $pehredar, sampling $sleeper (dormant), broker-4 (awake idle) over ${WINDOW_S} s"

proc_cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
vcsw() { cat /proc/"$1"/task/*/status 2>/dev/null | awk '/^voluntary_ctxt_switches/ {s += $2} END {print s + 0}'; }

declare -A ROLE=([zookeeper]="our zookeeper (gateway)" [mosquitto]="Mosquitto, idle" [apache-zookeeper]="Apache ZooKeeper, idle")
ROLE[$sleeper]="dormant broker"
ROLE["broker-4"]="awake idle broker (--stay-awake)"
ROLE[$pehredar]="Pehredar broker"
SAMPLED=(zookeeper "$sleeper" broker-4 "$pehredar")
[[ -n "${PID_OF[mosquitto]:-}" ]] && SAMPLED+=(mosquitto)
[[ -n "${PID_OF[apache-zookeeper]:-}" ]] && SAMPLED+=(apache-zookeeper)
declare -A CPU0 CSW0
for n in "${SAMPLED[@]}"; do
    CPU0[$n]=$(proc_cpu_ticks "${PID_OF[$n]}")
    CSW0[$n]=$(vcsw "${PID_OF[$n]}")
done
sleep "$WINDOW_S"
status_after="$("$PEHRA" pehra status --zookeeper "$ZK")"
still="$(awk -v n="$sleeper" '$1 == n {print $2}' <<<"$status_after")"
[[ "$still" == dormant ]] || log "warning: $sleeper is $still at the end of the window"

mkdir -p bench/results
out="bench/results/pehra-$(date +%Y%m%d-%H%M%S).json"
printf '\n%-36s %14s %18s\n' "process (idle)" "CPU ms/min" "wakeups/min" >&2
{
    printf '{\n  "git_rev": "%s",\n  "window_s": %s, "idle_ms": %s, "alarm_ms": %s, "topic_partitions": %s,\n  "idle": {' \
        "$(git rev-parse --short HEAD)" "$WINDOW_S" "$IDLE_MS" "$ALARM_MS" "$TOPIC_PARTITIONS"
    sep=""
    for n in "${SAMPLED[@]}"; do
        cpu=$(( ($(proc_cpu_ticks "${PID_OF[$n]}") - CPU0[$n]) * 1000 / TICKS ))
        csw=$(( $(vcsw "${PID_OF[$n]}") - CSW0[$n] ))
        cpu_min=$(awk -v v="$cpu" -v w="$WINDOW_S" 'BEGIN {printf "%.0f", v * 60 / w}')
        csw_min=$(awk -v v="$csw" -v w="$WINDOW_S" 'BEGIN {printf "%.0f", v * 60 / w}')
        printf '%-36s %14s %18s\n' "${ROLE[$n]}" "$cpu_min" "$csw_min" >&2
        printf '%s\n    "%s": {"cpu_ms_per_min": %s, "wakeups_per_min": %s}' "$sep" "${ROLE[$n]}" "$cpu_min" "$csw_min"
        sep=","
    done
    printf '\n  },\n'
} >"$out.part"

log "first produce: $ROUNDS rounds, each after the cluster fell asleep again"
first="$("$FIRST" --zookeeper "$ZK" --rounds "$ROUNDS")"
echo "$first" | python3 -c '
import json, sys
d = json.load(sys.stdin)
print("\nfirst produce (acks all, 1 record)   median ms   samples")
print("  to the sleeping cluster           %9.1f   %s" % (d["asleep_median_ms"], ", ".join("%.1f" % x for x in d["asleep_ms"])))
print("  to the awake cluster              %9.1f   %s" % (d["awake_median_ms"], ", ".join("%.1f" % x for x in d["awake_ms"])))
print("  ratio asleep / awake              %9.1fx" % (d["asleep_median_ms"] / d["awake_median_ms"]))
' >&2
{ cat "$out.part"; printf '  "first_produce": %s\n}\n' "$first"; } >"$out"
rm -f "$out.part"
log "written $out"
