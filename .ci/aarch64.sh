#!/usr/bin/env bash
# Gateway build: a static `pehra` for 64-bit ARM Linux (Raspberry Pi 3/4/5 class
# gateways, any distribution: aarch64-unknown-linux-musl, no shared libraries), built on
# this x86-64 machine with cargo-zigbuild (zig as the C compiler and linker, for
# mimalloc's C code and musl), then a smoke test of that very binary under qemu-aarch64
# (user-mode emulation): keys, a zookeeper and a broker with OSCORE on loopback, a topic,
# a produce and a consume, both servers stopped by PID.
#
# Installs what it needs: the Rust target (rustup), qemu-user and file (apt, as root), and
# cargo-zigbuild + ziglang from PyPI in the venv .venv-cross.
#
#   bash .ci/aarch64.sh            build and smoke-test
#   bash .ci/aarch64.sh --build    build only
#
# The binary: ${CARGO_TARGET_DIR:-target}/aarch64-unknown-linux-musl/gateway/pehra (the
# release profile without debug info, stripped: Cargo.toml's [profile.gateway]); copy
# it to the gateway (scp) and run it there as is.
set -euo pipefail
cd "$(dirname "$0")/.."
target=aarch64-unknown-linux-musl
started=$SECONDS
log() { printf '[aarch64 %3ds] %s\n' $((SECONDS - started)) "$*"; }

rustup target add "$target" >/dev/null
packages=()
command -v file >/dev/null || packages+=(file)
[[ ${1:-} == --build ]] || command -v qemu-aarch64 >/dev/null || packages+=(qemu-user)
if ((${#packages[@]})); then
  [[ $(id -u) -eq 0 ]] || { echo "missing: sudo apt-get install ${packages[*]}" >&2; exit 1; }
  log "apt-get install ${packages[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null
fi
venv=.venv-cross
if ! "$venv/bin/cargo-zigbuild" --version >/dev/null 2>&1 || ! "$venv/bin/python" -m ziglang version >/dev/null 2>&1; then
  log "installing cargo-zigbuild and ziglang into $venv (pip)"
  if ! python3 -m venv --clear "$venv" >/dev/null 2>&1; then # Debian: venvs need python3-venv
    [[ $(id -u) -eq 0 ]] || { echo "missing: sudo apt-get install python3-venv" >&2; exit 1; }
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv --clear "$venv"
  fi
  "$venv/bin/pip" install -q --disable-pip-version-check cargo-zigbuild ziglang
fi
export PATH="$PWD/$venv/bin:$PATH" # cargo-zigbuild finds zig through the venv's python -m ziglang

log "cargo zigbuild --profile gateway --target $target"
cargo zigbuild -j2 --profile gateway --target "$target" -p pehra --bin pehra
bin="${CARGO_TARGET_DIR:-target}/$target/gateway/pehra"
info=$(file -b "$bin")
log "built $bin: $(du -h "$bin" | cut -f1); $info"
[[ $info == *"ARM aarch64"* && $info == *"statically linked"* ]] || { echo "not a static aarch64 binary: $info" >&2; exit 1; }
[[ ${1:-} == --build ]] && exit 0

# The smoke test, on loopback; whatever it started is stopped by PID on the way out.
dir=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT
pehra() { qemu-aarch64 "$bin" "$@"; }
free_port() { python3 -c 'import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# start NAME ARGS...: runs `pehra ARGS` under qemu, its stderr in $dir/NAME.log, and waits
# (60 s at most) for its "listening on" line.
start() {
  local name=$1
  shift
  qemu-aarch64 "$bin" "$@" 2>"$dir/$name.log" &
  local pid=$!
  pids+=("$pid")
  # tail ends with the process (--pid), so neither outlives it.
  if ! timeout 60 grep -q -m1 "listening on" <(tail -F --pid="$pid" "$dir/$name.log" 2>/dev/null); then
    echo "$name did not start under qemu:" >&2
    cat "$dir/$name.log" >&2
    exit 1
  fi
  log "$name: $(grep -m1 'listening on' "$dir/$name.log")"
}
zk="127.0.0.1:$(free_port)"
broker="127.0.0.1:$(free_port)"
pehra keys init "$dir/keys" --brokers 1 --clients smoke >/dev/null
start zookeeper zookeeper --listen "$zk" --data-dir "$dir/zk" --credentials "$dir/keys/zookeeper.cred"
start broker broker --id 1 --listen "$broker" --zookeeper "$zk" --data-dir "$dir/broker" \
  --credentials "$dir/keys/broker-1.cred"
export PEHRA_CREDENTIALS="$dir/keys/smoke.cred"
pehra topic create smoke --partitions 1 --replication-factor 1 --zookeeper "$zk"
printf 'reading-1\nreading-2\n' | pehra produce smoke --acks all --zookeeper "$zk"
out=$(pehra consume smoke --from-beginning --zookeeper "$zk")
[[ $out == *reading-1* && $out == *reading-2* ]] || { echo "consumed: $out" >&2; exit 1; }
log "produced and consumed 2 records through the aarch64 binary"
# Stop by PID: SIGTERM (controlled shutdown), bounded.
for i in 1 0; do
  kill -TERM "${pids[$i]}"
  timeout 30 tail --pid="${pids[$i]}" -f /dev/null || { echo "pid ${pids[$i]} did not stop" >&2; exit 1; }
done
pids=()
log "smoke test passed"
