#!/usr/bin/env bash
# The helper's own CPU in one cold `go build std`: S3 on a moto_server on loopback (MODE=s3,
# the default) or local-only (MODE=local). PERF=1 records the helper with
# `perf record --call-graph dwarf` (use a build with symbols, e.g.
# CARGO_PROFILE_RELEASE_STRIP=false CARGO_PROFILE_RELEASE_DEBUG=1). Prints the wall time of the
# go command and the helper's stats; leaves its dir (stats.json, perf.data) for inspection.
# Run A/B comparisons alternately in the same hour: this machine's ext4 makes file creation
# cost vary between runs (README, "A kernel cost").
#   BIN=target/release/gobuildcache MODE=s3 PERF=0 PORT=5599 bash bench/cold-cpu.sh
set -euo pipefail
MODE=${MODE:-s3}
BIN=$(realpath "${BIN:-target/release/gobuildcache}")
PORT=${PORT:-5599}
W=$(mktemp -d "${TMPDIR:-/tmp}/cold-cpu-$MODE-XXXXXX")
if [[ $MODE == s3 ]]; then
    if ! curl -s -o /dev/null "http://127.0.0.1:$PORT/"; then
        moto_server -H 127.0.0.1 -p "$PORT" >"$W/moto.log" 2>&1 &
        for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$PORT/" && break; sleep 0.2; done
    fi
    curl -s -X PUT "http://127.0.0.1:$PORT/cold-cpu" -o /dev/null
    export GOBUILDCACHE_BACKEND=s3 GOBUILDCACHE_S3_BUCKET=cold-cpu \
        GOBUILDCACHE_S3_PREFIX="$(basename "$W")/" \
        GOBUILDCACHE_AWS_ENDPOINT_URL_S3="http://127.0.0.1:$PORT" \
        GOBUILDCACHE_AWS_S3_USE_PATH_STYLE=true GOBUILDCACHE_AWS_REGION=us-east-1 \
        GOBUILDCACHE_AWS_ACCESS_KEY_ID=testing GOBUILDCACHE_AWS_SECRET_ACCESS_KEY=testing
fi
PERF_CMD=""
[[ "${PERF:-0}" == 1 ]] && PERF_CMD="perf record -F 300 --call-graph dwarf,16384 -o $W/perf.data --"
cat >"$W/helper.sh" <<EOW
#!/bin/sh
exec $PERF_CMD "$BIN" -cache-dir "$W/local" -stats-json "$W/stats.json" "\$@" 2>>"$W/helper.log"
EOW
chmod +x "$W/helper.sh"
GOCACHEPROG="$W/helper.sh" GOCACHE="$W/gocache" GOTOOLCHAIN=local GOFLAGS= \
    /usr/bin/time -f "go build std: %e s" go build std
python3 -c "import json; s = json.load(open('$W/stats.json')); print({k: s.get(k) for k in ['puts', 'uploads', 'bytes_up', 'pack_published', 'cpu_us', 'cpu_system_us', 'close_us', 'peak_rss_bytes']})"
echo "$W"
