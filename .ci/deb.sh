#!/usr/bin/env bash
# Packages: the pehra .deb (cargo-deb; Cargo.toml's [package.metadata.deb], the units and
# maintainer scripts in src/deb/), for the gateway (arm64, from the static aarch64 build
# of .ci/aarch64.sh) and for this machine (amd64), then an install test of the amd64
# package on this machine:
#
#   1. `dpkg -i`: the postinst makes the `pehra` system user, /var/lib/pehra (pehra, 0750),
#      /etc/pehra (root:pehra, 0750) and, on a first install, the identities of a
#      one-gateway cluster (/etc/pehra/keys, root only; zookeeper.cred and broker-1.cred
#      owned by the service user, 0600).
#   2. `systemd-analyze verify` checks both units.
#   3. Both services run as systemd would run them: each unit's ExecStart, as its
#      User/Group (setpriv), with the installed /etc/pehra/pehra.toml (only --listen
#      added, to keep to loopback on a random port). A topic, a produce and a consume go
#      through them with the installed client identity.
#   4. SIGTERM (the units' KillSignal) stops the broker through its controlled shutdown
#      and the zookeeper after it, each with exit status 0.
#   5. `dpkg --purge` removes the package, its data and its configuration.
#
# Not tested here: systemd itself starting the units (CI machines have no systemd as PID
# 1: the postinst's start is skipped there, as Debian's helpers do), so the sandboxing
# lines (ProtectSystem=strict and the rest) are checked by `systemd-analyze verify` for
# syntax only. On a gateway with systemd: `systemd-analyze security pehra-broker`.
#
#   bash .ci/deb.sh             build both packages, install-test the amd64 one (root)
#   bash .ci/deb.sh --build     build both packages only
#
# The packages: ${CARGO_TARGET_DIR:-target}/debian/pehra_VERSION_{amd64,arm64}.deb.
# The amd64 one is built from the debug binary the rest of CI builds (a release one is
# `cargo deb`); the arm64 one is the gateway release build.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
log() { printf '[deb %3ds] %s\n' $((SECONDS - started)) "$*"; }
target_dir=${CARGO_TARGET_DIR:-target}
out="$target_dir/debian"

if ! cargo deb --version >/dev/null 2>&1; then
  log "cargo install cargo-deb"
  cargo install -q --locked cargo-deb
fi

log "amd64 package (debug binary)"
cargo build -j2 -q -p pehra --bin pehra
rm -f "$out"/pehra_*.deb
cargo deb -q --fast --no-build --profile dev -o "$out/"
amd64=$(ls "$out"/pehra_*_amd64.deb)

log "arm64 package (the gateway build of .ci/aarch64.sh)"
[[ -x "$target_dir/aarch64-unknown-linux-musl/gateway/pehra" ]] || bash .ci/aarch64.sh --build
cargo deb -q --no-build --no-strip --target aarch64-unknown-linux-musl --profile gateway -o "$out/"
arm64=$(ls "$out"/pehra_*_arm64.deb)
for deb in "$amd64" "$arm64"; do
  contents=$(dpkg-deb --contents "$deb")
  for path in ./usr/bin/pehra ./etc/pehra/pehra.toml ./usr/lib/systemd/system/pehra-zookeeper.service \
    ./usr/lib/systemd/system/pehra-broker.service ./usr/share/doc/pehra/operations.md; do
    grep -q " $path\$" <<<"$contents" || { echo "$deb lacks $path" >&2; exit 1; }
  done
  [[ $(dpkg-deb -I "$deb" conffiles) == /etc/pehra/pehra.toml ]] \
    || { echo "$deb: /etc/pehra/pehra.toml is not a conffile" >&2; exit 1; }
  log "built $deb ($(du -h "$deb" | cut -f1), $(dpkg-deb --field "$deb" Architecture))"
done
[[ $(dpkg-deb --field "$arm64" Depends) != *libc6* ]] || { echo "the static arm64 build should not depend on libc6" >&2; exit 1; }
[[ ${1:-} == --build ]] && exit 0

# ---- install test (root; a machine without the package) ----
[[ $(id -u) -eq 0 ]] || { echo "the install test needs root (or: bash .ci/deb.sh --build)" >&2; exit 1; }
if dpkg -s pehra >/dev/null 2>&1 || [[ -e /etc/pehra || -e /var/lib/pehra ]]; then
  echo "pehra is installed here already (or /etc/pehra, /var/lib/pehra exist): not touching it" >&2
  exit 1
fi
dir=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  dpkg --purge pehra >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT

log "dpkg -i $(basename "$amd64")"
DEBIAN_FRONTEND=noninteractive dpkg -i "$amd64" | sed 's/^/  /'
check_mode() { # PATH OWNER:GROUP MODE
  local got
  got=$(stat -c '%U:%G %a' "$1")
  [[ $got == "$2 $3" ]] || { echo "$1 is $got, not $2 $3" >&2; exit 1; }
}
getent passwd pehra | grep -q ':/var/lib/pehra:/usr/sbin/nologin$' || { echo "no system user pehra: $(getent passwd pehra)" >&2; exit 1; }
check_mode /var/lib/pehra pehra:pehra 750
check_mode /etc/pehra root:pehra 750
check_mode /etc/pehra/keys root:root 700
check_mode /etc/pehra/zookeeper.cred pehra:pehra 600
check_mode /etc/pehra/broker-1.cred pehra:pehra 600
log "user, directories and identities in place"

units=(/usr/lib/systemd/system/pehra-zookeeper.service /usr/lib/systemd/system/pehra-broker.service)
if ! command -v systemd-analyze >/dev/null; then
  log "apt-get install systemd (for systemd-analyze)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null
fi
systemd-analyze verify "${units[@]}"
log "systemd-analyze verify: both units valid"

free_port() { python3 -c 'import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
unit_value() { sed -n "s/^$2=//p" "$1" | tail -1; }
# run UNIT NAME EXTRA...: the unit's ExecStart as its User/Group, stderr in $dir/NAME.log;
# waits (60 s at most) for its "listening on" line.
run() {
  local unit=$1 name=$2
  shift 2
  local user group exec
  user=$(unit_value "$unit" User)
  group=$(unit_value "$unit" Group)
  read -r -a exec <<<"$(unit_value "$unit" ExecStart)"
  (cd / && umask "$(unit_value "$unit" UMask)" && exec setpriv --reuid="$user" --regid="$group" --init-groups --no-new-privs \
    "${exec[@]}" "$@") 2>"$dir/$name.log" &
  local pid=$!
  pids+=("$pid")
  if ! timeout 60 grep -q -m1 "listening on" <(tail -F --pid="$pid" "$dir/$name.log" 2>/dev/null); then
    echo "$name did not start from its unit:" >&2
    cat "$dir/$name.log" >&2
    exit 1
  fi
  log "$name (as $user): $(grep -m1 'listening on' "$dir/$name.log")"
}
zk="127.0.0.1:$(free_port)"
broker="127.0.0.1:$(free_port)"
run "${units[0]}" zookeeper --listen "$zk"
run "${units[1]}" broker --listen "$broker" --zookeeper "$zk"
export PEHRA_CREDENTIALS=/etc/pehra/keys/client.cred
pehra topic create installed --partitions 1 --replication-factor 1 --zookeeper "$zk"
printf 'reading-1\nreading-2\n' | pehra produce installed --acks all --zookeeper "$zk"
consumed=$(pehra consume installed --from-beginning --zookeeper "$zk")
[[ $consumed == *reading-1* && $consumed == *reading-2* ]] || { echo "consumed: $consumed" >&2; exit 1; }
[[ -d /var/lib/pehra/zookeeper && -d /var/lib/pehra/broker-1 ]] || { echo "no data under /var/lib/pehra" >&2; exit 1; }
check_mode /var/lib/pehra/broker-1 pehra:pehra 750
log "topic, produce and consume through the installed services; data in /var/lib/pehra"

# Stop as systemd would: the broker first (After=pehra-zookeeper), SIGTERM, within the
# units' TimeoutStopSec; each must exit 0.
for i in 1 0; do
  name=$([[ $i == 1 ]] && echo broker || echo zookeeper)
  kill -TERM "${pids[$i]}"
  status=0
  timeout 40 tail --pid="${pids[$i]}" -f /dev/null || { echo "$name did not stop within 40 s" >&2; exit 1; }
  wait "${pids[$i]}" || status=$?
  [[ $status == 0 ]] || { echo "$name exited $status:" >&2; tail -5 "$dir/$name.log" >&2; exit 1; }
done
pids=()
if ! grep -q "leaving the cluster (moving leadership away first)" "$dir/broker.log" \
  || grep -q "leaving anyway" "$dir/broker.log"; then
  echo "the broker's SIGTERM was no clean controlled shutdown:" >&2
  tail -5 "$dir/broker.log" >&2
  exit 1
fi
log "SIGTERM: broker (controlled shutdown) and zookeeper stopped, status 0"

dpkg --purge pehra | sed 's/^/  /'
[[ ! -e /etc/pehra && ! -e /var/lib/pehra && ! -e /usr/bin/pehra ]] || { echo "purge left files behind" >&2; exit 1; }
log "dpkg --purge: package, data and configuration removed; install test passed"
