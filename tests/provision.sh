#!/usr/bin/env bash
# Installs what the interoperability tests need, once, and is a no-op when it is there:
#   - libcoap's command-line tools (coap-client-notls, coap-server-notls: Debian's
#     libcoap3-bin), through apt-get when running as root (else it says what to install);
#   - a Python venv at .venv (workspace root) with aiocoap, its OSCORE support and
#     lakers-python (aiocoap's EDHOC).
#
# The tests call it themselves on first use (tests/common/provision.rs), so the README's
# `cargo test -j2 --workspace` works on a fresh machine; .ci/run calls it too. Several
# test binaries run at once, so everything happens under one file lock (flock): the
# first does the work, the others wait for it and then find everything in place.
#
# Usage: bash tests/provision.sh        (prints nothing when nothing was missing)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/.venv"

have_tools() { command -v coap-client-notls >/dev/null && command -v coap-server-notls >/dev/null; }
python="${PEHRA_PYTHON:-$venv/bin/python}"   # PEHRA_PYTHON: an interpreter of your own, used as it is
have_venv() { "$python" -c "import aiocoap.oscore, cbor2, cbor_diag, cryptography, lakers" 2>/dev/null; }

# Fast path without the lock: the usual case once provisioned.
if have_tools && have_venv; then exit 0; fi

exec 9<"$0"   # the lock is this script itself: no lock file to leave behind
flock 9
# Another test binary may have done it while this one waited for the lock.
if have_tools && have_venv; then exit 0; fi

# apt_install PACKAGE...: as root through apt-get, else a one-line error naming the command.
apt_install() {
  if [[ $(id -u) -ne 0 ]]; then
    echo "provision: missing Debian packages $*: run \`sudo apt-get install $*\` (or bash tests/provision.sh as root)" >&2
    exit 1
  fi
  echo "provision: apt-get install $*" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
}

packages=()
have_tools || packages+=(libcoap3-bin)
command -v python3 >/dev/null || packages+=(python3 python3-venv)
((${#packages[@]} == 0)) || apt_install "${packages[@]}"

if ! have_venv; then
  if [[ -n ${PEHRA_PYTHON:-} ]]; then
    echo "provision: PEHRA_PYTHON=$PEHRA_PYTHON cannot import aiocoap.oscore or lakers: pip install 'aiocoap[oscore]' lakers-python into it, or unset it" >&2
    exit 1
  fi
  echo "provision: python3 -m venv $venv && pip install 'aiocoap[oscore]' lakers-python" >&2
  # Debian's python3 makes venvs only with python3-venv (ensurepip) installed.
  if ! python3 -m venv --clear "$venv" >/dev/null 2>&1; then
    apt_install python3-venv
    python3 -m venv --clear "$venv"
  fi
  # lakers-python: aiocoap's EDHOC (tests/interop/aiocoap_edhoc.py).
  "$venv/bin/pip" install -q --disable-pip-version-check "aiocoap[oscore]" "lakers-python==0.6.2" >&2
  have_venv || { echo "provision: aiocoap[oscore] or lakers-python did not install into $venv" >&2; exit 1; }
fi
