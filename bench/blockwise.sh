#!/usr/bin/env bash
# A 1 MiB value through block-wise CoAP (RFC 7959) with a standard client, against a raw
# file transfer over loopback.
#
#   bash bench/blockwise.sh
#
# One zookeeper and one broker (release build, plain CoAP on 127.0.0.1, free ports), one
# topic created through the pub-sub interface (POST /ps). Then, REPEAT times:
#   put      coap-client-notls -b 1024 -m put -f 1MiB coap://BROKER/ps/data/bench
#            (Block1: 1024 CON round trips, the value stored in the topic's log)
#   get      coap-client-notls -b 1024 -o OUT coap://BROKER/ps/data/bench
#            (Block2: 1024 CON round trips, later blocks from the cached version)
#   raw-tcp  the same 1 MiB through one TCP connection on loopback (python3: a server
#            that reads to EOF, a client that sends the file), connect to last byte read
# Each figure is the median wall-clock time over the rounds, client process start to
# exit (the TCP one excludes python's start-up: it is timed inside the process). The
# value read back is compared byte for byte.
#
# Environment (defaults): REPEAT=5 SKIP_BUILD=0 (1 = use the existing release binary)
# Output: a table on stdout and a Markdown line for the README. Every process started
# here is killed by PID on exit.
set -euo pipefail

BENCH=blockwise
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
PEHRA="$TARGET_DIR/release/pehra"
REPEAT="${REPEAT:-5}"
SKIP_BUILD="${SKIP_BUILD:-0}"

command -v coap-client-notls >/dev/null || die "coap-client-notls not found (apt-get install libcoap3-bin)"
command -v python3 >/dev/null || die "python3 not found"
if [[ "$SKIP_BUILD" != 1 ]]; then
    log "building pehra (release)"
    cargo build --release -j2 -p pehra --bin pehra >&2
fi
[[ -x "$PEHRA" ]] || die "$PEHRA not found"

# ---------------------------------------------------------------- cleanup
declare -A PID_OF LOGF
bench_workdir blockwise-bench

# Waits until LOG-FILE contains TEXT (at most 20 s).
wait_for_line() { # log-file text
    local i
    for ((i = 0; i < 200; i++)); do
        grep -q "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    die "timed out waiting for '$2' in $1"
}

# Milliseconds since the epoch.
now_ms() { echo $(($(date +%s%N) / 1000000)); }
# The median of the numbers given.
median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# ---------------------------------------------------------------- servers
free_port ZK_PORT
free_port BROKER_PORT
free_port TCP_PORT
start_server zk "$WORK/zk.log" "$PEHRA" zookeeper --listen "127.0.0.1:$ZK_PORT" --data-dir "$WORK/zk"
wait_for_line "$WORK/zk.log" "listening on"
start_server broker "$WORK/broker.log" "$PEHRA" broker --id 1 --listen "127.0.0.1:$BROKER_PORT" \
    --zookeeper "127.0.0.1:$ZK_PORT" --data-dir "$WORK/broker"
wait_for_line "$WORK/broker.log" "listening on"

printf '\xa1\x6atopic-name\x65bench' >"$WORK/topic.cbor"
coap-client-notls -B 10 -m post -t 60 -f "$WORK/topic.cbor" "coap://127.0.0.1:$BROKER_PORT/ps" >/dev/null
URI="coap://127.0.0.1:$BROKER_PORT/ps/data/bench"
python3 -c "import os; open('$WORK/value', 'wb').write(os.urandom(1 << 20))"
# The topic's leader is elected in the background: publish until it takes the value.
for ((i = 0; i < 100; i++)); do
    out="$(coap-client-notls -B 10 -m put -e x "$URI" 2>&1 || true)"
    [[ -z "$out" ]] && break
    sleep 0.1
done

# ---------------------------------------------------------------- rounds
PUTS=() GETS=() RAWS=()
for ((round = 1; round <= REPEAT; round++)); do
    t0=$(now_ms)
    coap-client-notls -B 60 -b 1024 -m put -f "$WORK/value" "$URI" >"$WORK/put.out" 2>&1
    t1=$(now_ms)
    rm -f "$WORK/read"
    coap-client-notls -B 60 -b 1024 -o "$WORK/read" "$URI" >"$WORK/get.out" 2>&1
    t2=$(now_ms)
    cmp -s "$WORK/value" "$WORK/read" || die "round $round: the value read back differs ($(cat "$WORK/get.out"))"
    raw=$(python3 - "$TCP_PORT" "$WORK/value" <<'EOF'
import socket, sys, threading, time
port, path = int(sys.argv[1]), sys.argv[2]
data = open(path, "rb").read()
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", port)); srv.listen(1)
got = bytearray()
def serve():
    conn, _ = srv.accept()
    while chunk := conn.recv(65536):
        got.extend(chunk)
    conn.close()
t = threading.Thread(target=serve); t.start()
start = time.perf_counter()
c = socket.create_connection(("127.0.0.1", port)); c.sendall(data); c.close()
t.join()
elapsed = time.perf_counter() - start
assert bytes(got) == data
print(f"{elapsed * 1000:.1f}")
EOF
)
    PUTS+=($((t1 - t0)))
    GETS+=($((t2 - t1)))
    RAWS+=("$raw")
    log "round $round: put $((t1 - t0)) ms, get $((t2 - t1)) ms, raw tcp $raw ms"
done

PUT=$(median "${PUTS[@]}")
GET=$(median "${GETS[@]}")
RAW=$(median "${RAWS[@]}")
printf '%-8s %10s\n' what "ms (median of $REPEAT)"
printf '%-8s %10s\n' put "$PUT" get "$GET" raw-tcp "$RAW"
echo
echo "| 1 MiB over loopback | libcoap -b 1024 PUT (Block1) | libcoap -b 1024 GET (Block2) | raw TCP copy |"
echo "|---|---|---|---|"
echo "| $(date -u +%Y-%m-%d), $(nproc) cores, median of $REPEAT | $PUT ms | $GET ms | $RAW ms |"
