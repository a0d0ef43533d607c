#!/usr/bin/env bash
# Build the Pehra firmware for the nRF52840-DK (release), print its size (../elf-size.py:
# the ELF's section headers, no llvm-tools needed) and fail past the flash/RAM budgets.
#
#   device-fw/boards/nrf52840dk/build.sh              # placeholder network settings (CI)
#   PEHRA_GATEWAY='[fd00:1::1]:5683' PEHRA_IPV6_ADDR=fd00:1::/64 PEHRA_PAN_ID=0xbeef \
#     PEHRA_CHANNEL=26 device-fw/boards/nrf52840dk/build.sh    # a flashable build
#
# Extra arguments go to `cargo build`. The placeholders (2001:db8::/32, the documentation
# prefix) build a firmware that reaches nothing: real values come from the environment
# only, never from a committed file.
# Budgets (bytes): FLASH_BUDGET (111616 = 109 KiB), RAM_BUDGET (55296 = 54 KiB: data + bss,
# heap included, + RTT buffers + STACK_RESERVE, 16384): the figures with OSCORE (108.1 KiB,
# 52.1 KiB on 2026-12-05) plus a small margin.
# PEHRA_DEVICE_CREDENTIALS: the device's NAME.cred from `pehra keys` (compiled in; without
# it the firmware is unprovisioned: every broker refuses it).
set -euo pipefail
cd "$(dirname "$0")"

# 2001:db8::/32 is the IPv6 documentation prefix (RFC 3849): nothing answers there.
export PEHRA_GATEWAY="${PEHRA_GATEWAY:-[2001:db8::1]:5683}"
export PEHRA_IPV6_ADDR="${PEHRA_IPV6_ADDR:-2001:db8::/64}"
export PEHRA_PAN_ID="${PEHRA_PAN_ID:-0xbeef}"
export PEHRA_CHANNEL="${PEHRA_CHANNEL:-26}"
STACK_RESERVE="${STACK_RESERVE:-16384}"
FLASH_BUDGET="${FLASH_BUDGET:-111616}"
RAM_BUDGET="${RAM_BUDGET:-55296}"
ELF="${CARGO_TARGET_DIR:-target}/thumbv7em-none-eabihf/release/pehra-nrf52840dk"

rustup target list --installed 2>/dev/null | grep -qx thumbv7em-none-eabihf \
  || rustup target add thumbv7em-none-eabihf

echo "== building (release, thumbv7em-none-eabihf, gateway $PEHRA_GATEWAY, address $PEHRA_IPV6_ADDR, PAN $PEHRA_PAN_ID, channel $PEHRA_CHANNEL)"
cargo build --release -j2 --quiet "$@"

# Flash and RAM against the budgets: see ../elf-size.py (the stack takes the rest of the
# 256 KiB; the reserve is what this build promises it).
python3 ../elf-size.py "$ELF" --layout cortex-m --flash-budget "$FLASH_BUDGET" \
  --ram-budget "$RAM_BUDGET" --stack-reserve "$STACK_RESERVE"
