#!/usr/bin/env python3
"""Flash and RAM of a firmware ELF, from its section headers (`readelf -S -W`; no
llvm-tools needed), checked against budgets. Every board's build script calls it.

    elf-size.py ELF --layout cortex-m --flash-budget B --ram-budget B [--stack-reserve B]
    elf-size.py ELF --layout esp32c3 --flash-budget B --ram-budget B --rtc-budget B

cortex-m (cortex-m-rt's sections): flash = .vector_table + .text + .rodata + .data (its
initial values, copied to RAM at boot) + .gnu.sgstubs; RAM = .data + .bss (heap and
every task's state included) + .uninit (defmt-rtt's buffer) + the stack reserve (the
stack takes whatever RAM is left; the reserve is what the build promises it).

esp32c3 (esp-hal's sections): flash = every section with contents (PROGBITS: code run
from flash, IRAM code and data images, .rodata, the app descriptor); RAM = IRAM code
(.trap, .rwtext*) + .data* + .bss* + .dram2_uninit (the second heap, in the RAM the
bootloader used); the stack (.stack) is the rest of the 400 KiB SRAM and not counted;
RTC fast memory (.rtc_fast.*) has its own budget.

Exits 1 when a figure reaches its budget, 2 on bad usage.
"""
import argparse
import re
import subprocess
import sys

SECTION = re.compile(
    r"\s*\[\s*\d+\]\s+(\S+)\s+(\S+)\s+[0-9a-f]+\s+[0-9a-f]+\s+([0-9a-f]+)\s+\S+\s+(\S*)"
)


def sections(elf):
    """(name, type, size) of each section that takes memory (flag A)."""
    out = subprocess.run(
        ["readelf", "-S", "-W", elf], check=True, capture_output=True, text=True
    ).stdout
    found = []
    for line in out.splitlines():
        m = SECTION.match(line)
        if m and "A" in m.group(4):
            found.append((m.group(1), m.group(2), int(m.group(3), 16)))
    return found


def kib(b):
    return "%.1f KiB" % (b / 1024)


def cortex_m(secs, args):
    size = {}
    for name, _, s in secs:
        size[name] = size.get(name, 0) + s
    g = lambda k: size.get(k, 0)
    flash = g(".vector_table") + g(".text") + g(".rodata") + g(".data") + g(".gnu.sgstubs")
    static = g(".data") + g(".bss") + g(".uninit")
    ram = static + args.stack_reserve
    print("   text    rodata    data     bss  uninit  (bytes)")
    print("%7d %9d %7d %7d %7d" % (g(".text"), g(".rodata"), g(".data"), g(".bss"), g(".uninit")))
    print("flash: %d B (%s)" % (flash, kib(flash)))
    print("RAM:   %d B (%s) = data+bss+uninit %d (heap included) + stack reserve %d"
          % (ram, kib(ram), static, args.stack_reserve))
    return {"flash": flash, "RAM": ram}


def esp32c3(secs, _args):
    total = lambda pred: sum(s for n, t, s in secs if pred(n, t))
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
    print("   text    rodata    data     bss  (bytes)")
    print("%7d %9d %7d %7d" % (text, rodata, data, bss))
    print("flash: %d B (%s; %s of it esp-radio/Wi-Fi blob sections .*.wifi)" % (flash, kib(flash), kib(wifi)))
    print("RAM:   %d B (%s) = IRAM code %s + data %s + bss %s (heap included) + reclaimed heap %s; "
          "stack %s; RTC fast %d B" % (ram, kib(ram), kib(iram), kib(data), kib(bss), kib(heap2), kib(stack), rtc))
    return {"flash": flash, "RAM": ram, "RTC fast memory": rtc}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("elf")
    p.add_argument("--layout", choices=["cortex-m", "esp32c3"], required=True)
    p.add_argument("--flash-budget", type=int, required=True, help="bytes")
    p.add_argument("--ram-budget", type=int, required=True, help="bytes")
    p.add_argument("--rtc-budget", type=int, help="bytes (esp32c3)")
    p.add_argument("--stack-reserve", type=int, default=0, help="bytes (cortex-m)")
    args = p.parse_args()
    if args.layout == "esp32c3" and args.rtc_budget is None:
        p.error("--layout esp32c3 needs --rtc-budget")
    used = (cortex_m if args.layout == "cortex-m" else esp32c3)(sections(args.elf), args)
    budgets = {"flash": args.flash_budget, "RAM": args.ram_budget, "RTC fast memory": args.rtc_budget}
    over = [n for n in used if used[n] >= budgets[n]]
    print("budgets: " + ", ".join("%s %s" % (n, kib(budgets[n])) for n in used)
          + (": FAIL, over in " + ", ".join(over) if over else ": ok"))
    print("ELF: " + args.elf)
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
