#!/usr/bin/env bash
# Build the Pehra firmware for the ESP32-C3 (release), print its size (../elf-size.py:
# the ELF's section headers, no llvm-tools needed) and fail past the budgets.
#
#   device-fw/boards/esp32c3/build.sh                 # placeholder Wi-Fi settings (CI)
#   PEHRA_WIFI_SSID=... PEHRA_WIFI_PASSWORD=... PEHRA_GATEWAY=1@192.168.1.10:5683 \
#     PEHRA_DEVICE_CREDENTIALS=keys/sensor-1.cred \
#     device-fw/boards/esp32c3/build.sh               # a flashable build (OSCORE keys compiled in)
#   device-fw/boards/esp32c3/build.sh --no-default-features   # without Wi-Fi
#
# Extra arguments go to `cargo build`. The placeholders build a firmware that cannot join
# any network: real values come from the environment only, never from a committed file.
set -euo pipefail
cd "$(dirname "$0")"

export PEHRA_WIFI_SSID="${PEHRA_WIFI_SSID:-pehra-placeholder-ssid}"
export PEHRA_WIFI_PASSWORD="${PEHRA_WIFI_PASSWORD:-pehra-placeholder-password}"
# 192.0.2.0/24 is TEST-NET-1 (documentation only): nothing answers there.
export PEHRA_GATEWAY="${PEHRA_GATEWAY:-192.0.2.1:5683}"
ELF="${CARGO_TARGET_DIR:-target}/riscv32imc-unknown-none-elf/release/pehra-esp32c3"

rustup target list --installed 2>/dev/null | grep -qx riscv32imc-unknown-none-elf \
  || rustup target add riscv32imc-unknown-none-elf

echo "== building (release, riscv32imc-unknown-none-elf, gateway $PEHRA_GATEWAY)"
cargo build --release -j2 --quiet "$@"

# Flash and RAM (../elf-size.py --layout esp32c3 says what each counts) against the
# budgets: today's figures with OSCORE (614.6 KiB flash on 2026-12-05, 166.4 KiB static
# RAM) plus a margin: flash under 616 KiB (was 640; the factory app partition of ESP-IDF's
# default partition table, what espflash writes, is 1 MiB); static RAM under 172 KiB, leaving the other
# ~228 KiB of the 400 KiB SRAM to the stack; RTC fast memory under its 8 KiB.
FLASH_BUDGET="${FLASH_BUDGET:-630784}" RAM_BUDGET="${RAM_BUDGET:-176128}" RTC_BUDGET="${RTC_BUDGET:-8192}"
python3 ../elf-size.py "$ELF" --layout esp32c3 --flash-budget "$FLASH_BUDGET" \
  --ram-budget "$RAM_BUDGET" --rtc-budget "$RTC_BUDGET"
