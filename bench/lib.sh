# Helpers shared by the benchmark scripts (bench/*.sh): sourced, not run. The script
# sets BENCH (its name, for the log prefix) before sourcing it.

log() { printf '[%s] %s\n' "${BENCH:-bench}" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- ports
# Ports in use (UDP and TCP, IPv4 and IPv6), from /proc/net.
USED_PORTS=" "
used_ports() {
    local f line hex
    for f in /proc/net/udp /proc/net/udp6 /proc/net/tcp /proc/net/tcp6; do
        [[ -r "$f" ]] || continue
        while read -r _ line _; do
            hex="${line##*:}"
            [[ "$hex" =~ ^[0-9A-Fa-f]{4}$ ]] && printf '%d ' "0x$hex"
        done <"$f"
    done
    return 0
}
# Sets the variable named VAR to a port nobody uses and this script has not handed out
# yet, from 10000-31999: below the kernel's ephemeral range (32768-60999), so that no
# socket bound to port 0 (a client's) can take it before the server binds it. (Not
# `$(free_port)`: in a subshell the ports handed out would be forgotten.)
free_port() { # VAR
    local inuse p i
    inuse=" $(used_ports)"
    for ((i = 0; i < 200; i++)); do
        p=$((10000 + (RANDOM * 32768 + RANDOM) % 22000))
        if [[ "$inuse" != *" $p "* && "$USED_PORTS" != *" $p "* ]]; then
            USED_PORTS+="$p "
            printf -v "$1" '%s' "$p"
            return 0
        fi
    done
    die "no free port found"
}

# ---------------------------------------------------------------- servers
# Starts a server in the background, its output to log-file; records its PID in PIDS
# (which the script's cleanup kills) and PID_OF[name], its log in LOGF[name] (both
# associative arrays the script declares).
start_server() { # name log-file command...
    local name="$1" logf="$2"
    shift 2
    "$@" >"$logf" 2>&1 &
    PIDS+=("$!")
    PID_OF[$name]=$!
    LOGF[$name]="$logf"
}

# ---------------------------------------------------------------- work directory
# Sets WORK to a new temp dir (pehra-NAME.XXXXXX) and PIDS to none, and on exit (also
# Ctrl-C, SIGTERM) stops every pid in PIDS (SIGTERM, then waits) and removes WORK.
bench_workdir() { # name
    PIDS=()
    WORK="$(mktemp -d "${TMPDIR:-/tmp}/pehra-$1.XXXXXX")"
    trap bench_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}
bench_cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}

# ---------------------------------------------------------------- figures
# The first value of a key in JSON on stdin (flat, as the load generators print it).
field() { { grep -o "\"$1\":[^,}]*" || true; } | head -n1 | cut -d: -f2- | tr -d '"'; }
# All CPUs' jiffies since boot, and the idle ones: "total idle".
cpu_ticks() { awk '/^cpu / { t = 0; for (i = 2; i <= NF; i++) t += $i; print t, $9 }' /proc/stat; }
# a / b to three decimals; nothing if either is missing or b is 0.
ratio() { if [[ -n "$1" && -n "$2" ]]; then awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f", a / b }'; fi; }
# JSON string and number (null for nothing or "-").
jstr() { local s="${1//\\/\\\\}"; s="${s//\"/\\\"}"; printf '"%s"' "$s"; }
jnum() { if [[ -n "$1" && "$1" != - ]]; then printf '%s' "$1"; else printf 'null'; fi; }

# ---------------------------------------------------------------- server lifecycles
# Used by produce.sh and instructions.sh. The script declares the associative arrays
# PID_OF, LOGF and ADDR and sets WORK (a temp dir), READY_TIMEOUT (seconds), SRV_PIN (a
# command prefix for every server, e.g. taskset; may be empty) and PROBE_LOAD (the
# produce-load binary). WRAP, if the script sets it, is a command prefix for the servers
# under test only (brokers, mosquitto; not the zookeeper), e.g. valgrind.

# SIGTERM to every pid given, then up to GRACE seconds for them all; SIGKILL to those left.
stop_pids() { # grace pid...
    local grace="$1" pid deadline
    shift
    for pid in "$@"; do kill "$pid" 2>/dev/null || true; done
    deadline=$((SECONDS + grace))
    for pid in "$@"; do
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then
            log "pid $pid still running ${grace}s after SIGTERM: SIGKILL"
            kill -9 "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    done
}
show_log() { # name
    log "$1: its log:"
    tail -n 20 "${LOGF[$1]}" | sed 's/^/    /' >&2 || true
}
# Waits until the server's log has a line with "listening on" (pehra's readiness line).
wait_listening() { # name
    local name="$1" deadline=$((SECONDS + READY_TIMEOUT))
    while ((SECONDS < deadline)); do
        kill -0 "${PID_OF[$name]}" 2>/dev/null || { log "$name exited"; show_log "$name"; return 1; }
        grep -q "listening on" "${LOGF[$name]}" 2>/dev/null && return 0
        sleep 0.1
    done
    log "$name: no 'listening on' after ${READY_TIMEOUT}s"
    show_log "$name"
    return 1
}
# Waits until a real request succeeds: produce-load --probe (a served partition, an
# MQTT CONNACK, an echoed datagram), each try bounded, the whole by READY_TIMEOUT.
wait_probe() { # name system target [extra args...]
    local name="$1" system="$2" target="$3" deadline=$((SECONDS + READY_TIMEOUT)) err
    shift 3
    while ((SECONDS < deadline)); do
        kill -0 "${PID_OF[$name]}" 2>/dev/null || { log "$name exited"; show_log "$name"; return 1; }
        if err="$("$PROBE_LOAD" --system "$system" --target "$target" --probe --timeout 5 "$@" 2>&1 >/dev/null)"; then
            return 0
        fi
        sleep 0.2
    done
    log "$name: no answer after ${READY_TIMEOUT}s (last: ${err:-?})"
    show_log "$name"
    return 1
}
# Shows the logs of the zookeeper and brokers 2..N (a failed probe shows broker 1's).
pehra_logs() { # brokers
    local id
    show_log zk
    for ((id = 2; id <= $1; id++)); do [[ -z "${LOGF[ours$id]:-}" ]] || show_log "ours$id"; done
}

# Starts `pehra zookeeper` (zk) and N brokers, ids 1..N ("ours", "ours2", ..., data dirs
# and logs in WORK), creates the topic `bench` (1 partition) and waits until a producer
# is served. With N > 1 also waits until a topic of N replicas is in sync on all of them
# (and deletes it again). Sets ADDR[zk], ADDR[ours], ADDR[ours2]... Returns 1 (logs
# shown) if something did not come up.
start_pehra() { # pehra-binary brokers
    # With PEHRA_KEYS=DIR (keys from `pehra keys init DIR`), every server runs with its
    # credentials (OSCORE and ACLs); the CLI calls here and the load client then need
    # PEHRA_CREDENTIALS=DIR/client.cred in the environment.
    local pehra="$1" n="$2" id name logf port out rt
    local wrap=("${WRAP[@]+"${WRAP[@]}"}")
    local zk_cred=() broker_cred=()
    [[ -z "${PEHRA_KEYS:-}" ]] || zk_cred=(--credentials "$PEHRA_KEYS/zookeeper.cred")
    free_port port
    ADDR[zk]="127.0.0.1:$port"
    mkdir -p "$WORK/zk"
    start_server zk "$WORK/zk.log" "${SRV_PIN[@]+"${SRV_PIN[@]}"}" "$pehra" zookeeper --listen "${ADDR[zk]}" --data-dir "$WORK/zk" \
        "${zk_cred[@]+"${zk_cred[@]}"}"
    wait_listening zk || return 1
    # Broker 1 is "ours" (broker.log), brokers 2..N "ours2".. (broker2.log ..).
    for ((id = 1; id <= n; id++)); do
        name=ours logf="$WORK/broker.log"
        ((id == 1)) || name="ours$id" logf="$WORK/broker$id.log"
        free_port port
        ADDR[$name]="127.0.0.1:$port"
        mkdir -p "$WORK/b$id"
        [[ -z "${PEHRA_KEYS:-}" ]] || broker_cred=(--credentials "$PEHRA_KEYS/broker-$id.cred")
        start_server "$name" "$logf" "${SRV_PIN[@]+"${SRV_PIN[@]}"}" "${wrap[@]+"${wrap[@]}"}" "$pehra" broker --id "$id" \
            --listen "${ADDR[$name]}" --zookeeper "${ADDR[zk]}" --data-dir "$WORK/b$id" \
            "${broker_cred[@]+"${broker_cred[@]}"}"
    done
    for ((id = 1; id <= n; id++)); do
        name=ours
        ((id == 1)) || name="ours$id"
        wait_listening "$name" || return 1
    done
    if ! out="$("$pehra" topic create bench -p 1 --zookeeper "${ADDR[zk]}" 2>&1)"; then
        log "pehra topic create failed: $out"
        return 1
    fi
    wait_probe ours ours "${ADDR[zk]}" --topic bench || { pehra_logs "$n"; return 1; }
    if ((n > 1)); then
        # Every broker serves: a topic on all of them, all replicas in sync.
        rt="bench-rf$n"
        if ! out="$("$pehra" topic create "$rt" -p 1 -r "$n" --zookeeper "${ADDR[zk]}" 2>&1)"; then
            log "pehra topic create $rt failed: $out"
            return 1
        fi
        wait_probe ours ours "${ADDR[zk]}" --topic "$rt" --replication-factor "$n" || { pehra_logs "$n"; return 1; }
        # Gone again, so its followers do not fetch during the runs.
        out="$("$pehra" topic delete "$rt" --zookeeper "${ADDR[zk]}" 2>&1)" ||
            log "warning: pehra topic delete $rt failed: $out"
        for ((id = 2; id <= n; id++)); do log "ours: broker $id ready (${ADDR[ours$id]})"; done
    fi
    return 0
}

# Starts Mosquitto (Debian's package, installed with apt-get if missing and running as
# root) with a config written to WORK: `listener PORT 127.0.0.1`, `allow_anonymous true`
# and, with MQTT_NODELAY=1, `set_tcp_nodelay true` (and `user MQTT_USER` if set: run as
# root, mosquitto otherwise switches to the user mosquitto); waits for a CONNACK. Sets
# ADDR[mqtt] and MOSQ_VERSION. Returns 1 if mosquitto is missing or did not come up.
start_mosquitto() {
    local port
    local wrap=("${WRAP[@]+"${WRAP[@]}"}")
    if ! command -v mosquitto >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        log "installing mosquitto (Debian package)"
        { apt-get update -qq >/dev/null &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null; } ||
            log "apt-get install mosquitto failed"
    fi
    if ! command -v mosquitto >/dev/null; then
        log "mosquitto not found (install: sudo apt-get install -y mosquitto)"
        return 1
    fi
    MOSQ_VERSION="$( (mosquitto -h 2>&1 || true) | sed -n 's/^mosquitto version \([0-9.]*\).*/\1/p' | head -n1)"
    free_port port
    ADDR[mqtt]="127.0.0.1:$port"
    {
        echo "listener $port 127.0.0.1"
        echo "allow_anonymous true"
        [[ "${MQTT_NODELAY:-1}" == 1 ]] && echo "set_tcp_nodelay true"
        echo "log_dest stderr"
        [[ -z "${MQTT_USER:-}" ]] || echo "user $MQTT_USER"
    } >"$WORK/mosquitto.conf"
    start_server mqtt "$WORK/mosquitto.log" "${SRV_PIN[@]+"${SRV_PIN[@]}"}" "${wrap[@]+"${wrap[@]}"}" mosquitto -c "$WORK/mosquitto.conf"
    wait_probe mqtt mqtt "${ADDR[mqtt]}"
}
