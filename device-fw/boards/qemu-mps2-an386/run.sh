#!/usr/bin/env bash
# Build the Pehra firmware for QEMU's mps2-an386, check its flash/RAM budget, and boot it
# in QEMU against a CoAP gateway on the host's loopback: it must get a DHCP lease and
# print at least 2 check-in replies.
#
#   device-fw/boards/qemu-mps2-an386/run.sh            # build, size, boot (stub gateway
#                                                      # if nothing serves 127.0.0.1:PORT)
# Environment: PEHRA_GATEWAY_PORT (5683), PEHRA_CYCLES (3), QEMU_TIMEOUT (60 s),
# STACK_RESERVE (bytes counted for the stack in the RAM figure, 12288),
# FLASH_BUDGET (131072), RAM_BUDGET (49152).
set -euo pipefail
cd "$(dirname "$0")"

PORT="${PEHRA_GATEWAY_PORT:-5683}"
CYCLES="${PEHRA_CYCLES:-3}"
QEMU_TIMEOUT="${QEMU_TIMEOUT:-60}"
STACK_RESERVE="${STACK_RESERVE:-12288}"
FLASH_BUDGET="${FLASH_BUDGET:-131072}"
RAM_BUDGET="${RAM_BUDGET:-49152}"
ELF=target/thumbv7em-none-eabihf/release/pehra-qemu-an386
LOG="$(mktemp -d)"
QEMU_PID=""; GW_PID=""
cleanup() {
  [ -n "$QEMU_PID" ] && kill "$QEMU_PID" 2>/dev/null || true
  [ -n "$GW_PID" ] && kill "$GW_PID" 2>/dev/null || true
  [ -n "${BROKER_PID:-}" ] && kill "$BROKER_PID" 2>/dev/null || true
  [ -n "${ZK_PID:-}" ] && kill "$ZK_PID" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$LOG"
}
trap cleanup EXIT

# --- tools -----------------------------------------------------------------------------
if ! command -v qemu-system-arm >/dev/null; then
  echo "== installing qemu-system-arm"
  if [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-system-arm) >/dev/null
  else
    echo "qemu-system-arm missing and not root: apt-get install qemu-system-arm" >&2; exit 2
  fi
fi
rustup target list --installed 2>/dev/null | grep -qx thumbv7em-none-eabihf \
  || rustup target add thumbv7em-none-eabihf

# --- build -----------------------------------------------------------------------------
echo "== building (release, gateway 10.0.2.2:$PORT, $CYCLES cycles)"
PEHRA_GATEWAY_PORT="$PORT" PEHRA_CYCLES="$CYCLES" cargo build --release -j2 --quiet

# --- size ------------------------------------------------------------------------------
# Section headers via readelf (works for any ELF; no llvm-tools needed).
read -r FLASH RAM_STATIC TEXT RODATA DATA BSS < <(readelf -S -W "$ELF" | python3 -c '
import sys, re
sz = {}
for line in sys.stdin:
    m = re.match(r"\s*\[\s*\d+\]\s+(\S+)\s+\S+\s+([0-9a-f]+)\s+[0-9a-f]+\s+([0-9a-f]+)\s+\S+\s+(\S*)", line)
    if m and "A" in m.group(4):
        sz[m.group(1)] = sz.get(m.group(1), 0) + int(m.group(3), 16)
g = lambda k: sz.get(k, 0)
flash = g(".vector_table") + g(".text") + g(".rodata") + g(".data") + g(".gnu.sgstubs")
ram = g(".data") + g(".bss") + g(".uninit")
print(flash, ram, g(".text"), g(".rodata"), g(".data"), g(".bss"))
')
RAM=$((RAM_STATIC + STACK_RESERVE))
printf '   text    rodata    data     bss  (bytes)\n%7d %9d %7d %7d\n' "$TEXT" "$RODATA" "$DATA" "$BSS"
printf 'flash: %d B (%.1f KiB) of budget %d KiB\n' "$FLASH" "$(awk -v b="$FLASH" 'BEGIN { print b / 1024 }')" $((FLASH_BUDGET/1024))
printf 'RAM:   %d B (%.1f KiB) = data+bss %d (16 KiB heap included) + stack reserve %d, of budget %d KiB\n' \
  "$RAM" "$(awk -v b="$RAM" 'BEGIN { print b / 1024 }')" "$RAM_STATIC" "$STACK_RESERVE" $((RAM_BUDGET/1024))
FAIL=0
if [ "$FLASH" -ge "$FLASH_BUDGET" ]; then echo "FAIL: flash over budget"; FAIL=1; fi
if [ "$RAM" -ge "$RAM_BUDGET" ]; then echo "FAIL: RAM over budget"; FAIL=1; fi

# --- gateway ---------------------------------------------------------------------------
# A real local cluster (a zookeeper and one broker on 127.0.0.1:PORT) when a `pehra`
# binary is at hand (PEHRA_BIN, or the workspace's target/{debug,release}/pehra); else
# an existing CoAP server on the port; else the stub (gateway_stub.py).
ROOT="$(cd ../../.. && pwd)"
PEHRA_BIN="${PEHRA_BIN:-}"
if [ -z "$PEHRA_BIN" ]; then
  # The newer of the two builds (a stale one may lack the device routes).
  PEHRA_BIN=$(ls -t "$ROOT/target/debug/pehra" "$ROOT/target/release/pehra" 2>/dev/null | head -n1 || true)
fi
ZK_PID=""; BROKER_PID=""
coap_ping() {
  python3 - "$1" <<'PY'
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1)
# An empty CON (a CoAP ping): a CoAP server answers with RST.
s.sendto(bytes([0x40, 0, 0x12, 0x34]), ("127.0.0.1", int(sys.argv[1])))
try: s.recvfrom(64); sys.exit(0)
except Exception: sys.exit(1)
PY
}
if coap_ping "$PORT"; then
  echo "== a CoAP server answers on 127.0.0.1:$PORT: using it as the gateway"
elif [ -n "$PEHRA_BIN" ]; then
  ZK_PORT=$(python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  echo "== starting a local cluster: $PEHRA_BIN zookeeper on 127.0.0.1:$ZK_PORT, broker 1 on 127.0.0.1:$PORT"
  "$PEHRA_BIN" zookeeper --listen "127.0.0.1:$ZK_PORT" --data-dir "$LOG/zk" >"$LOG/zk.log" 2>&1 &
  ZK_PID=$!
  for _ in $(seq 100); do grep -q "listening on" "$LOG/zk.log" 2>/dev/null && break; sleep 0.1; done
  "$PEHRA_BIN" broker --id 1 --listen "127.0.0.1:$PORT" --zookeeper "127.0.0.1:$ZK_PORT" \
    --data-dir "$LOG/broker" >"$LOG/broker.log" 2>&1 &
  BROKER_PID=$!
  for _ in $(seq 100); do coap_ping "$PORT" && break; sleep 0.2; done
  # The check-in names the Pehredar once one is elected: wait for it (bounded).
  for _ in $(seq 50); do
    "$PEHRA_BIN" pehra status --zookeeper "127.0.0.1:$ZK_PORT" 2>/dev/null | grep -q "^pehredar: *broker-1" && break
    sleep 0.2
  done
else
  echo "== no gateway on 127.0.0.1:$PORT and no pehra binary: starting the stub gateway (gateway_stub.py)"
  python3 gateway_stub.py --port "$PORT" --seconds $((QEMU_TIMEOUT + 10)) >"$LOG/gw" 2>&1 &
  GW_PID=$!
  for _ in $(seq 50); do grep -q "CoAP on" "$LOG/gw" 2>/dev/null && break; sleep 0.1; done
fi

# --- boot ------------------------------------------------------------------------------
echo "== booting in QEMU (timeout ${QEMU_TIMEOUT}s)"
# `timeout` bounds the run (exit 124 if it had to stop QEMU); QEMU_PID is killed on exit.
timeout --signal=TERM --kill-after=5 "$QEMU_TIMEOUT" \
  qemu-system-arm -machine mps2-an386 -cpu cortex-m4 -nographic -monitor none -serial none \
  -semihosting-config enable=on,target=native -nic user,model=lan9118 \
  -kernel "$ELF" >"$LOG/qemu" 2>&1 </dev/null &
QEMU_PID=$!
set +e; wait "$QEMU_PID"; QRC=$?; set -e
QEMU_PID=""
cat "$LOG/qemu"
[ -n "$GW_PID" ] && { sed 's/^/  /' "$LOG/gw"; kill "$GW_PID" 2>/dev/null || true; GW_PID=""; }

REPLIES=$(grep -c '^pehra-fw: reply #' "$LOG/qemu" || true)
LEASE=$(grep -c '^pehra-fw: DHCP lease' "$LOG/qemu" || true)
STACK_USED=$(sed -n 's/.*stack used \([0-9]*\) B.*/\1/p' "$LOG/qemu" | tail -1)
echo "== QEMU exit $QRC, DHCP lease: $LEASE, replies: $REPLIES, stack used: ${STACK_USED:-?} B"
if [ -n "$STACK_USED" ] && [ "$STACK_USED" -gt "$STACK_RESERVE" ]; then
  echo "FAIL: stack used $STACK_USED B > reserve $STACK_RESERVE B"; FAIL=1
fi
# QEMU's exit: 0 every cycle got a reply, 1 some did not (still fine with >= 2 replies),
# 124 the timeout stopped it.
if [ "$LEASE" -lt 1 ] || [ "$REPLIES" -lt 2 ]; then
  echo "FAIL: expected a DHCP lease and at least 2 check-in replies"; FAIL=1
fi
if [ "$FAIL" != 0 ] && [ -n "${BROKER_PID:-}" ]; then
  echo "== the broker's log (last 20 lines)"; tail -n 20 "$LOG/broker.log" | sed 's/^/  /'
fi
[ "$FAIL" = 0 ] && echo "PASS" || echo "FAILED"
exit "$FAIL"
