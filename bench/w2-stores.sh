#!/usr/bin/env bash
# W2 (fresh local dir, warm remote) on each kind of store in one run: S3 on moto_server, Azure
# on Azurite, HTTP on wsgidav (WebDAV), all on 127.0.0.1 with no added latency. Each store is
# filled by one cold `go build` (not counted) and given its warm-start pack by one fresh run
# (not counted); then BENCH_W2_REPS rounds, each a fresh GOCACHE and -cache-dir per store,
# alternating the stores. Prints the median wall time per store and its ratio to S3.
#
# Knobs: BENCH_W2_REPS=5, BENCH_BUILD_PKGS=std, BENCH_BIN (default target/release/gobuildcache,
# built when missing), BENCH_KEEP=0. Servers come from scripts/test-servers.sh.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REPS="${BENCH_W2_REPS:-5}"
PKGS="${BENCH_BUILD_PKGS:-std}"
BIN="${BENCH_BIN:-$ROOT/target/release/gobuildcache}"
export GOTOOLCHAIN=local

note() { echo "w2-stores: $*" >&2; }
die() { note "$*"; exit 1; }
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
[[ -x "$BIN" ]] || (cd "$ROOT" && cargo build --release --bin gobuildcache)
bash "$ROOT/scripts/test-servers.sh"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/gbc-w2-stores.XXXXXX")
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [[ "${BENCH_KEEP:-0}" == 1 ]] && note "kept $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT

wait_port() { # PORT NAME
    for _ in $(seq 1 300); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "$2 did not start" >&2
    exit 1
}

MOTO=$(free_port)
moto_server -H 127.0.0.1 -p "$MOTO" >"$WORK/moto.log" 2>&1 &
PIDS+=($!)
AZ=$(free_port)
mkdir -p "$WORK/azurite"
(cd "$WORK/azurite" && exec "$TOOLS/azurite/node_modules/.bin/azurite-blob" --blobHost 127.0.0.1 \
    --blobPort "$AZ" --inMemoryPersistence --skipApiVersionCheck --disableTelemetry --silent) \
    >"$WORK/azurite.log" 2>&1 &
PIDS+=($!)
DAV=$(free_port)
mkdir -p "$WORK/dav/cache"
wsgidav --host 127.0.0.1 --port "$DAV" --root "$WORK/dav" --auth anonymous --no-config -q \
    >"$WORK/wsgidav.log" 2>&1 &
PIDS+=($!)
wait_port "$MOTO" moto_server
wait_port "$AZ" Azurite
wait_port "$DAV" wsgidav
curl -sf -o /dev/null -X PUT "http://127.0.0.1:$MOTO/gbc"
# Azurite's container: one Shared Key signed request (the development key is a public test
# value).
python3 - "$AZ" <<'EOF'
import base64, hashlib, hmac, sys, urllib.request
from email.utils import formatdate
port, acct = sys.argv[1], "devstoreaccount1"
key = base64.b64decode("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==")
date, ver = formatdate(usegmt=True), "2021-08-06"
s = f"PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{ver}\n/{acct}/{acct}/gbc\nrestype:container"
sig = base64.b64encode(hmac.new(key, s.encode(), hashlib.sha256).digest()).decode()
r = urllib.request.Request(f"http://127.0.0.1:{port}/{acct}/gbc?restype=container", method="PUT",
    headers={"x-ms-date": date, "x-ms-version": ver, "Authorization": f"SharedKey {acct}:{sig}", "Content-Length": "0"})
urllib.request.urlopen(r).read()
EOF

store_env() {
    case "$1" in
    s3) echo GOBUILDCACHE_BACKEND=s3 GOBUILDCACHE_S3_BUCKET=gbc \
        GOBUILDCACHE_AWS_ENDPOINT_URL_S3="http://127.0.0.1:$MOTO" GOBUILDCACHE_AWS_S3_USE_PATH_STYLE=true \
        GOBUILDCACHE_AWS_REGION=us-east-1 GOBUILDCACHE_AWS_ACCESS_KEY_ID=testing \
        GOBUILDCACHE_AWS_SECRET_ACCESS_KEY=testing ;;
    azure) echo GOBUILDCACHE_BACKEND=azure GOBUILDCACHE_AZURE_CONTAINER=gbc \
        "GOBUILDCACHE_AZURE_STORAGE_CONNECTION_STRING=DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;BlobEndpoint=http://127.0.0.1:$AZ/devstoreaccount1;" ;;
    http) echo GOBUILDCACHE_BACKEND=http GOBUILDCACHE_HTTP_URL="http://127.0.0.1:$DAV/cache/" ;;
    esac
}

N=0
# run STORE PHASE: one go build on a brand-new GOCACHE and -cache-dir; prints seconds.
run() {
    N=$((N + 1))
    local d="$WORK/run-$N" stats="$WORK/run-$N.json"
    mkdir -p "$d"
    local start end
    start=$(date +%s%N)
    env -i PATH="$PATH" HOME="$HOME" GOTOOLCHAIN=local GOCACHE="$d/gocache" \
        GOCACHEPROG="$BIN -cache-dir $d/local -stats-json $stats" GOBUILDCACHE_PRINT_STATS=false \
        $(store_env "$1") go build $PKGS 2>"$d/stderr" || { cat "$d/stderr" >&2; exit 1; }
    end=$(date +%s%N)
    python3 -c "import json,sys; s=json.load(open('$stats')); print('%.3f' % (($end-$start)/1e9), s['remote_hits'], s['local_hits'], s['misses'], s['remote_errors'], s.get('pack_entries', 0))"
    rm -rf "$d"
}

STORES=(s3 azure http)
for s in "${STORES[@]}"; do
    note "$s: cold fill: $(run "$s")"
    note "$s: first fresh run (publishes the pack): $(run "$s")"
done
for ((i = 1; i <= REPS; i++)); do
    for s in "${STORES[@]}"; do
        r=$(run "$s")
        note "$s rep $i: $r (seconds, remote hits, local hits, misses, remote errors, pack entries)"
        echo "$s ${r%% *}" >>"$WORK/samples"
    done
done
python3 - "$WORK/samples" "$PKGS" "$REPS" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
med = {s: statistics.median(float(t) for k, t in rows if k == s) for s in ("s3", "azure", "http")}
print(f"W2, go build {sys.argv[2]}, fresh local dir, warm store, median of {sys.argv[3]}:")
print("| store | server | median s | vs S3 |")
print("|---|---|---|---|")
names = {"s3": "moto_server", "azure": "Azurite 3.35.0", "http": "wsgidav (WebDAV)"}
for s in ("s3", "azure", "http"):
    print(f"| {s} | {names[s]} | {med[s]:.2f} | {med[s] / med['s3']:.2f}x |")
EOF
