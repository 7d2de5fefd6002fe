#!/usr/bin/env bash
# Installs what the test suite needs beyond the Rust toolchain, idempotently:
# a Python virtual environment in target/test-venv with the third-party
# clients the tests drive (python-hl7's mllp_send). Safe to run again: it
# only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=target/test-venv
PY_PACKAGES=("hl7==0.4.5" "cryptography==46.0.3" "zstandard==0.25.0")

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else echo "need root for: $*" >&2; return 1; fi; }

apt_updated=no
apt_install() {
    local missing=()
    for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ $apt_updated = no ]; then as_root apt-get update -qq; apt_updated=yes; fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
}

# Python 3 with venv support (Debian splits venv out of python3).
if ! command -v python3 >/dev/null || ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    apt_install python3 python3-venv
fi

if [ ! -x "$VENV/bin/python" ]; then
    mkdir -p target
    python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c 'import hl7, cryptography, zstandard' >/dev/null 2>&1; then
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PY_PACKAGES[@]}"
fi
echo "test dependencies ready: $VENV ($("$VENV/bin/python" --version))"

# --- appliance (issue 8): /metrics is checked with Prometheus's own
# `promtool check metrics` (Debian package prometheus) and the status page is
# loaded in headless Chromium (Debian package chromium).
apt_install prometheus chromium
