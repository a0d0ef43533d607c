#!/usr/bin/env bash
# Build the Pehra firmware for the nRF52840-DK (release), print its size from the ELF's
# section headers (readelf; no llvm-tools needed) and fail past the flash/RAM budgets.
#
#   device-fw/boards/nrf52840dk/build.sh              # placeholder network settings (CI)
#   PEHRA_GATEWAY='[fd00:1::1]:5683' PEHRA_IPV6_ADDR=fd00:1::/64 PEHRA_PAN_ID=0xbeef \
#     PEHRA_CHANNEL=26 device-fw/boards/nrf52840dk/build.sh    # a flashable build
#
# Extra arguments go to `cargo build`. The placeholders (2001:db8::/32, the documentation
# prefix) build a firmware that reaches nothing: real values come from the environment
# only, never from a committed file.
# Budgets (bytes): FLASH_BUDGET (196608 = 192 KiB), RAM_BUDGET (65536 = 64 KiB: data + bss,
# heap included, + RTT buffers + STACK_RESERVE, 16384).
set -euo pipefail
cd "$(dirname "$0")"

# 2001:db8::/32 is the IPv6 documentation prefix (RFC 3849): nothing answers there.
export PEHRA_GATEWAY="${PEHRA_GATEWAY:-[2001:db8::1]:5683}"
export PEHRA_IPV6_ADDR="${PEHRA_IPV6_ADDR:-2001:db8::/64}"
export PEHRA_PAN_ID="${PEHRA_PAN_ID:-0xbeef}"
export PEHRA_CHANNEL="${PEHRA_CHANNEL:-26}"
STACK_RESERVE="${STACK_RESERVE:-16384}"
FLASH_BUDGET="${FLASH_BUDGET:-196608}"
RAM_BUDGET="${RAM_BUDGET:-65536}"
ELF=target/thumbv7em-none-eabihf/release/pehra-nrf52840dk

rustup target list --installed 2>/dev/null | grep -qx thumbv7em-none-eabihf \
  || rustup target add thumbv7em-none-eabihf

echo "== building (release, thumbv7em-none-eabihf, gateway $PEHRA_GATEWAY, address $PEHRA_IPV6_ADDR, PAN $PEHRA_PAN_ID, channel $PEHRA_CHANNEL)"
cargo build --release -j2 --quiet "$@"

# Flash: vector table, code, constants and the initial values of .data (copied to RAM at
# boot). RAM: .data + .bss (the heap and every task's state included) + .uninit
# (defmt-rtt's buffer) + the stack reserve (the stack takes the rest of the 256 KiB).
read -r FLASH RAM_STATIC TEXT RODATA DATA BSS UNINIT < <(readelf -S -W "$ELF" | python3 -c '
import sys, re
sz = {}
for line in sys.stdin:
    m = re.match(r"\s*\[\s*\d+\]\s+(\S+)\s+\S+\s+([0-9a-f]+)\s+[0-9a-f]+\s+([0-9a-f]+)\s+\S+\s+(\S*)", line)
    if m and "A" in m.group(4):
        sz[m.group(1)] = sz.get(m.group(1), 0) + int(m.group(3), 16)
g = lambda k: sz.get(k, 0)
flash = g(".vector_table") + g(".text") + g(".rodata") + g(".data") + g(".gnu.sgstubs")
ram = g(".data") + g(".bss") + g(".uninit")
print(flash, ram, g(".text"), g(".rodata"), g(".data"), g(".bss"), g(".uninit"))
')
RAM=$((RAM_STATIC + STACK_RESERVE))
kib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1024 }'; }
printf '   text    rodata    data     bss  uninit  (bytes)\n%7d %9d %7d %7d %7d\n' "$TEXT" "$RODATA" "$DATA" "$BSS" "$UNINIT"
printf 'flash: %d B (%s KiB) of budget %d KiB (the chip has 1024)\n' "$FLASH" "$(kib "$FLASH")" $((FLASH_BUDGET / 1024))
printf 'RAM:   %d B (%s KiB) = data+bss+uninit %d (24 KiB heap included) + stack reserve %d, of budget %d KiB (the chip has 256)\n' \
  "$RAM" "$(kib "$RAM")" "$RAM_STATIC" "$STACK_RESERVE" $((RAM_BUDGET / 1024))
echo "ELF: $ELF"
FAIL=0
if [ "$FLASH" -gt "$FLASH_BUDGET" ]; then echo "FAIL: flash over budget"; FAIL=1; fi
if [ "$RAM" -gt "$RAM_BUDGET" ]; then echo "FAIL: RAM over budget"; FAIL=1; fi
exit "$FAIL"
