#!/usr/bin/env bash
# A partition leader's change under a steady acks=all produce load: a planned (warm,
# predictive) handover vs a SIGKILL failover vs a controlled shutdown, in the same run
# on the same cluster (seed 002's benchmark; docs/pehra.md, "Warm handover").
#
#   bash bench/handover.sh
#
# One zookeeper and three brokers (pehra, release build of profile PROFILE) on
# loopback, sessions of SESSION_MS; a topic `handover` of one partition on all three.
# For each KIND, in order, handover-load (bench/src/bin/handover-load.rs) waits until
# all three replicas are in sync, runs PRODUCERS idempotent producers (one acks=all
# record of 100 bytes in flight each) for 2 s, then changes the leader:
#   planned   pehra cluster handover handover 0 (the controller picks the candidate)
#   kill      SIGKILL to the leader's PID (the zookeeper notices when its session
#             expires: SESSION_MS)
#   shutdown  SIGTERM to the leader's PID (a controlled shutdown: it asks the
#             controller to move its leadership, then exits)
#   pehredar  a PEHRA term handover with produces held during it: the brokers are
#             restarted free to sleep (no --stay-awake, idle after IDLE_MS, alarm every
#             ALARM_MS); handover-load --pehredar makes sure the Pehredar does not lead
#             the partition, waits until the other two sleep, starts the producers (the
#             first produces go to the Pehredar, which holds them, wakes the cluster and
#             forwards them) and at once asks for a re-election without the Pehredar
# and measures until 1 s after the partition znode names the new leader (the new
# Pehredar is in office, for pehredar). A stopped broker is started again (same id,
# address and data) before the next KIND.
#
# Columns: failed produces (the client gave up); retries after an error (a refusal
# such as not-leader, a 5.03, or no answer); retries without an error (the zookeeper
# said the leader moved: the client sends the request on at once); the longest produce
# latency in the window; the longest time without any acknowledgement in it (the time
# without a leader that takes writes); and from the action to the znode naming the new
# leader (to the new Pehredar in office, for pehredar).
#
# Environment (defaults): KINDS="planned kill shutdown pehredar" PRODUCERS=4
#   SESSION_MS=1500 IDLE_MS=1000 ALARM_MS=10000 PROFILE=handover-rel (a profile
#   inheriting release) READY_TIMEOUT=30 SKIP_BUILD=0
# The zookeeper's PEHRA terms last 10 minutes, so no term ends during the run: the
# only term handover is the one asked for.
# Every process started here is stopped by PID on exit.
set -euo pipefail

BENCH=handover
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=bench/lib.sh
source bench/lib.sh
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
PROFILE="${PROFILE:-handover-rel}"
BIN="$TARGET_DIR/$PROFILE"
KINDS="${KINDS:-planned kill shutdown pehredar}"
PRODUCERS="${PRODUCERS:-4}"
SESSION_MS="${SESSION_MS:-1500}"
IDLE_MS="${IDLE_MS:-1000}"
ALARM_MS="${ALARM_MS:-10000}"
READY_TIMEOUT="${READY_TIMEOUT:-30}"

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    log "building ($PROFILE)"
    CARGO_INCREMENTAL=0 cargo build -j2 --config "profile.$PROFILE.inherits=\"release\"" \
        --profile "$PROFILE" -p pehra -p pehra-bench --bin pehra --bin handover-load >&2
fi
PEHRA="$BIN/pehra"
LOAD="$BIN/handover-load"

bench_workdir handover
declare -A PID_OF LOGF ADDR
STARTS=0

free_port port
ADDR[zk]="127.0.0.1:$port"
mkdir -p "$WORK/zk"
start_server zk "$WORK/zk.log" "$PEHRA" zookeeper --listen "${ADDR[zk]}" --data-dir "$WORK/zk" \
    --pehra-term-ms 600000 --pehra-handover-ms 10000
wait_listening zk || die "the zookeeper did not start"

SLEEPY=0 # 1: the brokers may sleep (the pehredar row)
start_broker() { # id
    local id="$1" pehra=(--stay-awake)
    [[ -n "${ADDR[b$id]:-}" ]] || { free_port port; ADDR[b$id]="127.0.0.1:$port"; }
    mkdir -p "$WORK/b$id"
    STARTS=$((STARTS + 1))
    ((SLEEPY)) && pehra=(--idle-before-sleep-ms "$IDLE_MS" --alarm-interval-ms "$ALARM_MS")
    start_server "b$id" "$WORK/broker$id.$STARTS.log" "$PEHRA" broker --id "$id" \
        --listen "${ADDR[b$id]}" --zookeeper "${ADDR[zk]}" --data-dir "$WORK/b$id" \
        --session-timeout-ms "$SESSION_MS" "${pehra[@]}"
    echo "${PID_OF[b$id]}" >"$WORK/pid.$id"
}
for id in 1 2 3; do start_broker "$id"; done
for id in 1 2 3; do wait_listening "b$id" || die "broker $id did not start"; done

ROWS=()
for kind in $KINDS; do
    mode=(--action)
    case "$kind" in
        planned) action="'$PEHRA' cluster handover handover 0 --zookeeper ${ADDR[zk]} >&2" ;;
        kill) action="kill -KILL \"\$(cat '$WORK'/pid.\$LEADER)\"" ;;
        shutdown) action="kill -TERM \"\$(cat '$WORK'/pid.\$LEADER)\"" ;;
        pehredar)
            mode=(--pehredar)
            action=""
            if ((!SLEEPY)); then
                log "restarting the brokers free to sleep"
                stop_pids 15 "${PID_OF[b1]}" "${PID_OF[b2]}" "${PID_OF[b3]}"
                SLEEPY=1
                for id in 1 2 3; do start_broker "$id"; done
                for id in 1 2 3; do wait_listening "b$id" || die "broker $id did not restart"; done
            fi
            ;;
        *) die "unknown KIND $kind (planned, kill, shutdown, pehredar)" ;;
    esac
    log "$kind"
    if [[ -n "$action" ]]; then mode+=("$action"); fi
    out="$("$LOAD" --zookeeper "${ADDR[zk]}" --producers "$PRODUCERS" "${mode[@]}")" ||
        die "handover-load failed for $kind"
    log "$kind: $out"
    ROWS+=("$kind $out")
    from="$(field from <<<"$out")"
    if [[ "$kind" == kill || "$kind" == shutdown ]]; then
        pid="${PID_OF[b$from]}"
        while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
        wait "$pid" 2>/dev/null || true
        start_broker "$from"
        wait_listening "b$from" || die "broker $from did not restart"
    fi
done

printf '\n| change | failed | retries after an error | retries without one | longest produce (ms) | longest without an ack (ms) | action to new leader or Pehredar (ms) |\n'
printf '|---|---|---|---|---|---|---|\n'
for row in "${ROWS[@]}"; do
    kind="${row%% *}"
    json="${row#* }"
    printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$kind" "$(field failed <<<"$json")" \
        "$(field error_retries <<<"$json")" "$(field moved_retries <<<"$json")" \
        "$(field max_latency_ms <<<"$json")" "$(field ack_gap_ms <<<"$json")" \
        "$(field switch_ms <<<"$json")"
done
