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
# --- MQTT (issue 5): a real broker and its command-line clients. The MQTT
# tests and the mqtt_ingest benchmark start their own mosquitto in the
# foreground on 127.0.0.1 on a free port with a generated config; the
# packaged service (port 1883, where systemd starts it) is not used. openssl(1) makes the
# certificates of the mqtts:// test.
apt_install mosquitto mosquitto-clients openssl
# --- end MQTT
# --- DICOM (issue 7): dcmtk's echoscu/storescu/storescp (Debian) drive the
# DICOM edge node and are the benchmark baseline; pynetdicom sends MPPS
# (dcmtk has no N-CREATE/N-SET sender) and pydicom builds the test objects.
apt_install dcmtk
if ! "$VENV/bin/python" -c 'import pynetdicom, pydicom' >/dev/null 2>&1; then
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "pydicom>=3.0,<3.1" "pynetdicom>=3.0,<3.1"
fi
# --- end DICOM
# --- packaging (tests/packaging.rs, scripts/build-debs.sh) -------------------
# dpkg-dev and lintian build and check the .debs; systemd-analyze (package
# systemd) checks the units; the aarch64 cross compiler, its libc and binutils
# build the arm64 packages, qemu-user runs their binaries; adduser is what the
# maintainer scripts call. cargo-deb itself is installed by build-debs.sh
# into target/tools.
apt_install dpkg-dev lintian systemd adduser binutils gcc-aarch64-linux-gnu \
    libc6-dev-arm64-cross binutils-aarch64-linux-gnu qemu-user
if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx aarch64-unknown-linux-gnu; then
    rustup target add aarch64-unknown-linux-gnu
fi
# --- end of packaging ----------------------------------------------------------

echo "test dependencies ready: $VENV ($("$VENV/bin/python" --version))"

# --- appliance (issue 8): /metrics is checked with Prometheus's own
# `promtool check metrics` (Debian package prometheus) and the status page is
# loaded in headless Chromium (Debian package chromium).
apt_install prometheus chromium
