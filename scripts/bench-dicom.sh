#!/usr/bin/env bash
# DICOM C-STORE benchmark (issue 7): dcmtk's storescu sends the same set of
# generated CT images (512x512, 16-bit, about 0.5 MB each) over loopback
#   1. to dcmtk's storescp writing every object to disk (the baseline), and
#   2. to the real `wardlink` binary (release build) storing each header
#      durably (group commit, fsync) and running the pipeline,
# first over 1 association, then over ASSOCS concurrent associations (storescp
# with --fork for those). Prints images/s, MB/s and each server's peak RSS
# (VmHWM; for storescp --fork the parent only, its children exit).
#
# The four runs are repeated ROUNDS times (default 3), interleaved, so that
# both servers see the same disk and CPU; the summary gives each one's median
# and the ratio wardlink / storescp of the medians.
#
# Usage: [ROUNDS=3] scripts/bench-dicom.sh [COUNT=1000] [ASSOCS=8]
# Needs dcmtk and target/test-venv with pydicom (scripts/install-test-deps.sh).
# TCP_NODELAY=1 is set for every dcmtk process: without it Debian's dcmtk
# 3.6.7 waits ~40 ms per object (stack-notes.md).
set -euo pipefail
cd "$(dirname "$0")/.."

COUNT=${1:-1000}
ASSOCS=${2:-8}
ROUNDS=${ROUNDS:-3}
PY=target/test-venv/bin/python
WORK=${WARDLINK_BENCH_DIR:-/tmp/wardlink-bench-dicom}
BIN=${WARDLINK_BIN:-}
if [ -z "$BIN" ]; then
    cargo build --release -q -p wardlink --bin wardlink
    BIN="${CARGO_TARGET_DIR:-target}/release/wardlink"
fi
export TCP_NODELAY=1

mkdir -p "$WORK"
if [ "$(ls "$WORK/ct" 2>/dev/null | wc -l)" -ne "$COUNT" ]; then
    rm -rf "$WORK/ct"
    "$PY" tests/dicom/client.py ctset "$WORK/ct" --count "$COUNT" >/dev/null
fi
BYTES=$(du -sb "$WORK/ct" | cut -f1)

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
hwm() { awk '/VmHWM/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# send PORT N: N storescu processes, each with an equal share of the files; prints seconds.
send() {
    local port=$1 n=$2 i pids=() start end
    ls "$WORK/ct"/*.dcm > "$WORK/files"
    split -n "r/$n" -d "$WORK/files" "$WORK/part."
    start=$(date +%s.%N)
    for part in "$WORK"/part.*; do
        # shellcheck disable=SC2046
        /usr/bin/storescu -aet BENCH -aec WARDLINK -to 30 127.0.0.1 "$port" $(cat "$part") \
            >"$part.log" 2>&1 & pids+=($!)
    done
    for i in "${pids[@]}"; do
        wait "$i" || { echo "storescu failed:" >&2; cat "$WORK"/part.*.log >&2; exit 1; }
    done
    end=$(date +%s.%N)
    rm -f "$WORK"/part.*
    echo "$end - $start" | bc -l
}

# Seconds of every run, per name, for the summary.
declare -A TIMES
report() { # NAME SECONDS RSS_KIB
    TIMES[$1]="${TIMES[$1]:-} $2"
    awk -v n="$1" -v s="$2" -v c="$COUNT" -v b="$BYTES" -v r="$3" \
        'BEGIN { printf "%-28s %8.1f images/s %8.1f MB/s %8.1f s   peak RSS %6.1f MiB\n", n, c/s, b/s/1e6, s, r/1024 }'
}

run_storescp() { # ASSOC_COUNT
    local port out pid secs extra=()
    port=$(free_port); out="$WORK/storescp.out"; rm -rf "$out"; mkdir -p "$out"
    [ "$1" -gt 1 ] && extra=(--fork)
    /usr/bin/storescp "${extra[@]}" -aet WARDLINK -od "$out" "$port" >"$WORK/storescp.log" 2>&1 & pid=$!
    sleep 0.5
    secs=$(send "$port" "$1")
    sleep 0.2
    report "storescp ($1 assoc)" "$secs" "$(hwm $pid)"
    stored=$(find "$out" -type f | wc -l)
    kill "$pid"; wait "$pid" 2>/dev/null || true
    [ "$stored" -eq "$COUNT" ] || { echo "storescp stored $stored of $COUNT" >&2; exit 1; }
}

run_wardlink() { # ASSOC_COUNT
    local dir="$WORK/wardlink" pid secs port
    rm -rf "$dir"; mkdir -p "$dir"
    cat > "$dir/w.toml" <<EOF
[gateway]
state_dir = "$dir/state"
[log]
level = "warn"
[[source.dicom]]
name = "bench"
listen = "127.0.0.1:0"
max_associations = 64
EOF
    "$BIN" run --config "$dir/w.toml" 2>"$dir/log" & pid=$!
    for _ in $(seq 100); do [ -f "$dir/state/run.json" ] && break; sleep 0.1; done
    port=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["listeners"][0]["addr"].rsplit(":",1)[1])' "$dir/state/run.json")
    secs=$(send "$port" "$1")
    report "wardlink ($1 assoc)" "$secs" "$(hwm $pid)"
    stored=$(sqlite3 "$dir/state/wardlink.db" "SELECT COUNT(*) FROM messages WHERE kind = 'dicom'")
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
    [ "$stored" -eq "$COUNT" ] || { echo "wardlink stored $stored of $COUNT" >&2; exit 1; }
}

median() { tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

echo "# $COUNT CT images, $((BYTES / 1000000)) MB, $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg), $ROUNDS rounds"
for _ in $(seq "$ROUNDS"); do
    run_storescp 1
    run_wardlink 1
    run_storescp "$ASSOCS"
    run_wardlink "$ASSOCS"
done
echo "# medians of $ROUNDS rounds (images/s; ratio = wardlink / storescp, target >= 1.0)"
for n in 1 "$ASSOCS"; do
    s=$(echo "${TIMES["storescp ($n assoc)"]}" | median)
    w=$(echo "${TIMES["wardlink ($n assoc)"]}" | median)
    awk -v n="$n" -v s="$s" -v w="$w" -v c="$COUNT" \
        'BEGIN { printf "%d assoc: storescp %7.1f  wardlink %7.1f  ratio %.2f\n", n, c/s, c/w, s/w }'
done
