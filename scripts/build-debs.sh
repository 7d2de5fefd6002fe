#!/usr/bin/env bash
# Builds the Debian packages of wardlink and wardlink-collector for amd64 and
# arm64 (cross-compiled with Debian's gcc-aarch64-linux-gnu), with stripped
# binaries:
#
#   scripts/build-debs.sh            # → target/debian/wardlink_<ver>_{amd64,arm64}.deb
#                                    #   and wardlink-collector_<ver>_{amd64,arm64}.deb
#
# Options:
#   --arch amd64|arm64|all   which architectures (default all)
#   --profile NAME           Cargo profile (default release; tests use deb-test)
#   --deb-version V          package version (default: the workspace version + "-1")
#   --out DIR                where the .deb files go (default <target dir>/debian)
#   --amd64-bins DIR         package the amd64 binaries already in DIR instead of
#                            building them (the packaging test reuses the debug build)
#   --fast                   lighter compression (tests)
#
# What it needs (it says what is missing): cargo-deb (installed with
# `cargo install --locked` into target/tools if missing), for arm64 the rustup
# target aarch64-unknown-linux-gnu (added if rustup is there) and the
# packages gcc-aarch64-linux-gnu and libc6-dev-arm64-cross;
# scripts/install-test-deps.sh installs them all. The files generated from the
# binaries (conffile, man pages, completions, changelog) go to
# packaging/generated/ (see packaging/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

CARGO_DEB_VERSION=3.8.0
ARCHES=all
PROFILE=release
DEB_VERSION=
OUT=
AMD64_BINS=
FAST=()
while [ $# -gt 0 ]; do
    case "$1" in
    --arch) ARCHES=$2; shift 2 ;;
    --profile) PROFILE=$2; shift 2 ;;
    --deb-version) DEB_VERSION=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --amd64-bins) AMD64_BINS=$2; shift 2 ;;
    --fast) FAST=(--fast); shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-debs.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
[ "$ARCHES" = all ] && ARCHES="amd64 arm64"

TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=${OUT:-$TARGET_DIR/debian}
mkdir -p "$OUT"
HOST_TRIPLE=$(rustc -vV | sed -n 's/^host: //p')
CROSS_GCC=aarch64-linux-gnu-gcc

triple_of() {
    case "$1" in
    amd64) echo x86_64-unknown-linux-gnu ;;
    arm64) echo aarch64-unknown-linux-gnu ;;
    *) echo "build-debs.sh: unknown architecture $1 (amd64 or arm64)" >&2; return 2 ;;
    esac
}

# --- tools ---------------------------------------------------------------
# The pinned cargo-deb: one on PATH if it is that version, else the one in
# target/tools, installed there if missing.
CARGO_DEB=$ROOT/target/tools/bin/cargo-deb
if cargo-deb --version 2>/dev/null | grep -q " $CARGO_DEB_VERSION\b"; then
    CARGO_DEB=$(command -v cargo-deb)
elif ! "$CARGO_DEB" --version 2>/dev/null | grep -q " $CARGO_DEB_VERSION\b"; then
    echo "build-debs.sh: installing cargo-deb $CARGO_DEB_VERSION into target/tools (once)" >&2
    env -u CARGO_TARGET_DIR cargo install --quiet --locked --version "$CARGO_DEB_VERSION" \
        --root "$ROOT/target/tools" cargo-deb
fi
for arch in $ARCHES; do
    triple=$(triple_of "$arch")
    [ "$triple" = "$HOST_TRIPLE" ] && continue
    if ! rustup target list --installed 2>/dev/null | grep -qx "$triple"; then
        if command -v rustup >/dev/null; then
            rustup target add "$triple"
        else
            echo "build-debs.sh: the Rust standard library for $triple is missing (rustup target add $triple)" >&2
            exit 1
        fi
    fi
    if [ "$triple" = aarch64-unknown-linux-gnu ] && ! command -v "$CROSS_GCC" >/dev/null; then
        echo "build-debs.sh: $CROSS_GCC is missing: apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross (or run scripts/install-test-deps.sh)" >&2
        exit 1
    fi
done

# Environment for a cross build to aarch64: the C compiler for ring and the
# bundled SQLite and zstd, the linker, and the strip that cargo-deb uses.
cross_env() {
    if [ "$1" = aarch64-unknown-linux-gnu ] && [ "$HOST_TRIPLE" != "$1" ]; then
        echo CC_aarch64_unknown_linux_gnu=$CROSS_GCC
        echo AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
        echo CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=$CROSS_GCC
        echo STRIP_aarch64-unknown-linux-gnu=aarch64-linux-gnu-strip
        echo OBJCOPY_aarch64-unknown-linux-gnu=aarch64-linux-gnu-objcopy
    fi
}

# --- binaries --------------------------------------------------------------
# Explicit --target for every architecture, so the binaries are always in
# <target dir>/<triple>/<profile>/, where cargo-deb --target looks.
bin_dir() { echo "$TARGET_DIR/$1/$PROFILE"; }
for arch in $ARCHES; do
    triple=$(triple_of "$arch")
    if [ "$arch" = amd64 ] && [ -n "$AMD64_BINS" ]; then
        mkdir -p "$(bin_dir "$triple")"
        cp -f "$AMD64_BINS/wardlink" "$AMD64_BINS/wardlink-collector" "$(bin_dir "$triple")/"
        continue
    fi
    mapfile -t envs < <(cross_env "$triple")
    env "${envs[@]}" cargo build --profile "$PROFILE" --target "$triple" --locked \
        -p wardlink -p wardlink-sync --bins
done

# --- generated assets ------------------------------------------------------
# Made by running a binary of this build: a host one, else the arm64 one
# under qemu-user.
run_built() {
    local name=$1; shift
    local triple
    for arch in $ARCHES; do
        triple=$(triple_of "$arch")
        if [ "$triple" = "$HOST_TRIPLE" ]; then "$(bin_dir "$triple")/$name" "$@"; return; fi
    done
    triple=$(triple_of "${ARCHES%% *}")
    qemu-aarch64 -L /usr/aarch64-linux-gnu "$(bin_dir "$triple")/$name" "$@"
}

PKG_VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
DEB_VERSION=${DEB_VERSION:-$PKG_VERSION-1}
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
DATE=$(date -R -d "@$(git log -1 --format=%ct 2>/dev/null || date +%s)")
GEN=$ROOT/packaging/generated
rm -rf "$GEN"
for pkg in wardlink wardlink-collector; do
    mkdir -p "$GEN/$pkg"
    run_built "$pkg" generate-man "$GEN/$pkg/man" >/dev/null
    run_built "$pkg" generate-completions "$GEN/$pkg/completions" >/dev/null
    cat > "$GEN/$pkg/changelog" <<EOF
$pkg ($DEB_VERSION) unstable; urgency=medium

  * Built from wardlink commit $COMMIT by scripts/build-debs.sh; the
    project's history is its git log.

 -- wardlink maintainers <wardlink@example.invalid>  $DATE
EOF
done

# The conffiles: each binary's own commented default, with the state in the
# package's state directory. Loud failure if the default changed shape.
conffile_header() {
    cat <<EOF
# $1
# Installed by the $2 package as a conffile: your changes are kept
# on upgrade and on remove (only purge deletes it). It is the built-in
# default with the state under $3;
# see /usr/share/doc/$2/ and \`$2 print-default-config\`.
#
EOF
}
{
    conffile_header /etc/wardlink/wardlink.toml wardlink /var/lib/wardlink
    run_built wardlink print-default-config |
        sed 's|^state_dir = "./wardlink-data"$|state_dir = "/var/lib/wardlink"|'
} > "$GEN/wardlink/wardlink.toml"
grep -qx 'state_dir = "/var/lib/wardlink"' "$GEN/wardlink/wardlink.toml" ||
    { echo "build-debs.sh: config/default.toml has no state_dir line to set" >&2; exit 1; }
run_built wardlink check-config "$GEN/wardlink/wardlink.toml" >/dev/null
{
    conffile_header /etc/wardlink-collector/collector.toml wardlink-collector /var/lib/wardlink-collector
    run_built wardlink-collector print-default-config |
        sed -e 's|^database = "sqlite://collector-data/collector.db"$|database = "sqlite:///var/lib/wardlink-collector/collector.db"|' \
            -e 's|^key_file = "collector-data/collector.key"$|key_file = "/var/lib/wardlink-collector/collector.key"|'
} > "$GEN/wardlink-collector/collector.toml"
if [ "$(grep -c '^[a-z_]* = ".*/var/lib/wardlink-collector/' "$GEN/wardlink-collector/collector.toml")" != 2 ]; then
    echo "build-debs.sh: the collector's default has no database/key_file line to set" >&2
    exit 1
fi

# --- packages ----------------------------------------------------------------
for arch in $ARCHES; do
    triple=$(triple_of "$arch")
    mapfile -t envs < <(cross_env "$triple")
    for pkg in wardlink wardlink-sync; do
        env "${envs[@]}" "$CARGO_DEB" --package "$pkg" --no-build --target "$triple" \
            --profile "$PROFILE" --deb-version "$DEB_VERSION" --output "$OUT" "${FAST[@]}" >/dev/null
    done
done
for arch in $ARCHES; do
    for name in wardlink wardlink-collector; do
        deb="$OUT/${name}_${DEB_VERSION}_$arch.deb"
        size=$(dpkg-deb --fsys-tarfile "$deb" | tar -tvf - "./usr/bin/$name" | awk '{print $3}')
        echo "$deb (usr/bin/$name: $size bytes stripped)"
    done
done
