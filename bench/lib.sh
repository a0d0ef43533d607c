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
