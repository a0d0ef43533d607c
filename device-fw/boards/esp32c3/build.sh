#!/usr/bin/env bash
# Build the Pehra firmware for the ESP32-C3 (release) and print its size from the ELF's
# section headers (readelf; no llvm-tools needed).
#
#   device-fw/boards/esp32c3/build.sh                 # placeholder Wi-Fi settings (CI)
#   PEHRA_WIFI_SSID=... PEHRA_WIFI_PASSWORD=... PEHRA_GATEWAY=192.168.1.10:5683 \
#     device-fw/boards/esp32c3/build.sh               # a flashable build
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
ELF=target/riscv32imc-unknown-none-elf/release/pehra-esp32c3

rustup target list --installed 2>/dev/null | grep -qx riscv32imc-unknown-none-elf \
  || rustup target add riscv32imc-unknown-none-elf

echo "== building (release, riscv32imc-unknown-none-elf, gateway $PEHRA_GATEWAY)"
cargo build --release -j2 --quiet "$@"

# Flash: every allocated PROGBITS section (code and constants run from flash through the
# cache; .trap/.rwtext*/.data* are copied from flash to RAM at boot).
# RAM: what is copied there + .bss (the 32 KiB main heap included) + the 64 KiB heap in
# the RAM the bootloader used (.dram2_uninit, reclaimed after boot). The rest of the
# 400 KiB SRAM is the stack (.stack).
# Budgets: flash under the 1 MiB factory app partition of ESP-IDF's default partition
# table (what espflash writes); static RAM under 192 KiB, leaving the other ~200 KiB of
# the 400 KiB SRAM to the stack; RTC fast memory under its 8 KiB.
export FLASH_BUDGET="${FLASH_BUDGET:-1048576}" RAM_BUDGET="${RAM_BUDGET:-196608}" RTC_BUDGET="${RTC_BUDGET:-8192}"
readelf -S -W "$ELF" | python3 -c '
import os, sys, re
FLASH_BUDGET, RAM_BUDGET, RTC_BUDGET = (int(os.environ[v]) for v in ("FLASH_BUDGET", "RAM_BUDGET", "RTC_BUDGET"))
secs = []
for line in sys.stdin:
    m = re.match(r"\s*\[\s*\d+\]\s+(\S+)\s+(\S+)\s+([0-9a-f]+)\s+[0-9a-f]+\s+([0-9a-f]+)\s+\S+\s+(\S*)", line)
    if m and "A" in m.group(5):
        secs.append((m.group(1), m.group(2), int(m.group(4), 16)))
def total(pred):
    return sum(s for n, t, s in secs if pred(n, t))
text = total(lambda n, t: n in (".text", ".trap") or n.startswith(".rwtext") or n == ".rtc_fast.text")
rodata = total(lambda n, t: n.startswith(".rodata") or n == ".flash.appdesc")
data = total(lambda n, t: t == "PROGBITS" and (n.startswith(".data") or n == ".rtc_fast.data"))
bss = total(lambda n, t: n.startswith(".bss") or n == ".rtc_fast.bss")
heap2 = total(lambda n, t: n == ".dram2_uninit")
rtc = total(lambda n, t: n.startswith(".rtc_fast"))
wifi = total(lambda n, t: n.endswith(".wifi"))
stack = total(lambda n, t: n == ".stack")
flash = total(lambda n, t: t == "PROGBITS")
iram = total(lambda n, t: n == ".trap" or n.startswith(".rwtext"))
ram = iram + data + bss + heap2
k = lambda b: b / 1024
print("   text    rodata    data     bss  (bytes)")
print("%7d %9d %7d %7d" % (text, rodata, data, bss))
print("flash: %d B (%.1f KiB; %.1f KiB of it esp-radio/Wi-Fi blob sections .*.wifi)" % (flash, k(flash), k(wifi)))
print("RAM:   %d B (%.1f KiB) = IRAM code %.1f + data %.1f + bss %.1f (32 KiB heap) + reclaimed heap %.1f KiB; stack %.1f KiB; RTC fast %d B" %
      (ram, k(ram), k(iram), k(data), k(bss), k(heap2), k(stack), rtc))
budgets = {"flash": (flash, FLASH_BUDGET), "RAM": (ram, RAM_BUDGET), "RTC fast memory": (rtc, RTC_BUDGET)}
over = [n for n, (used, budget) in budgets.items() if used >= budget]
print("budgets: flash %.0f KiB, RAM %.0f KiB static, RTC fast %d B: %s" %
      (k(FLASH_BUDGET), k(RAM_BUDGET), RTC_BUDGET, "FAIL: over in " + ", ".join(over) if over else "ok"))
sys.exit(1 if over else 0)
'
echo "ELF: $ELF"
