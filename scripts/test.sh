#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls this script).
# Installs what the tests need beyond the Rust toolchain (idempotently, see
# scripts/install-test-deps.sh), then runs every test of the workspace.
# Tests that drive third-party clients are required here, never skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh

export WARDLINK_TEST_PYTHON="$PWD/target/test-venv/bin/python"
# A PostgreSQL server on 127.0.0.1 for the collector's suite, stopped again
# when this script exits (whatever the outcome).
WARDLINK_TEST_POSTGRES_URL="$(scripts/test-postgres.sh)"
trap 'scripts/test-postgres.sh stop >/dev/null 2>&1 || true' EXIT
export WARDLINK_TEST_POSTGRES_URL
export WARDLINK_REQUIRE_EXTERNAL=1
# tests/packaging.rs builds the .debs and installs, upgrades and purges them
# on this machine (CI runs as root on a throwaway box).
export WARDLINK_TEST_DEBS=1
# The end-to-end tests of the gateway (tests/sync.rs) start wardlink-collector,
# a binary of another package: build every binary first.
cargo build --workspace --bins
cargo test --workspace
