#!/usr/bin/env bash
# Benchmark: gobuildcache (GOCACHEPROG helper) vs Go's native GOCACHE, in one run with
# alternating reps. Prints a markdown table of medians and ratios, and writes it to
# bench/results/latest.md. See bench/README.md.
#
# Environment knobs (all optional):
#   BENCH_REPS=5          measured reps per workload and side (alternating native, ours, ...)
#   BENCH_WARMUP=2        uncounted warm-up runs per workload and side, after the cold fill
#   BENCH_REMOTE=auto     1: run W3 (cold, ours with S3) and W2 (fresh local, warm remote) on a
#                         moto_server started on 127.0.0.1; 0: skip; auto: 1 if moto_server is on PATH
#   BENCH_COLD=0          1 (with BENCH_REMOTE=0): W3 with ours local-only (cold `go build std`)
#   BENCH_COLD_REPS=2     reps for W3 (each side ~1-1.5 min on 2 CPUs)
#   BENCH_W2_REPS=5       reps for W2 (each side)
#   BENCH_BUILD=1         0: skip `cargo build --release` (use the binary already built)
#   BENCH_BIN=path        benchmark this helper binary instead of target/release/gobuildcache
#   BENCH_BUILD_PKGS=std  what `go build` builds (a small package, e.g. fmt, for a smoke test)
#   BENCH_TEST_PKGS="strings strconv bytes encoding/json"   packages for `go test`
#   BENCH_VET_PKGS="strings strconv bytes encoding/json"    packages for `go vet`
#   BENCH_OUT=path        where to write the markdown (default bench/results/latest.md; "-" = none)
#   BENCH_KEEP=0          1: keep the temp dir (caches, logs, stats JSON) for inspection
set -euo pipefail

die() { echo "bench: $*" >&2; exit 1; }
note() { echo "bench: $*" >&2; }

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH_DIR/.." && pwd)"

REPS="${BENCH_REPS:-5}"
WARMUP="${BENCH_WARMUP:-2}"
COLD="${BENCH_COLD:-0}"
COLD_REPS="${BENCH_COLD_REPS:-2}"
W2_REPS="${BENCH_W2_REPS:-5}"
REMOTE="${BENCH_REMOTE:-auto}"
DO_BUILD="${BENCH_BUILD:-1}"
BUILD_PKGS="${BENCH_BUILD_PKGS:-std}"
TEST_PKGS="${BENCH_TEST_PKGS:-strings strconv bytes encoding/json}"
VET_PKGS="${BENCH_VET_PKGS:-strings strconv bytes encoding/json}"
OUT="${BENCH_OUT:-$BENCH_DIR/results/latest.md}"
KEEP="${BENCH_KEEP:-0}"

for v in REPS WARMUP COLD_REPS W2_REPS; do
    [[ "${!v}" =~ ^[0-9]+$ ]] || die "BENCH_$v must be a non-negative integer, got '${!v}'"
done
((REPS >= 1)) || die "BENCH_REPS must be at least 1"
((COLD_REPS >= 1)) || die "BENCH_COLD_REPS must be at least 1"
((W2_REPS >= 1)) || die "BENCH_W2_REPS must be at least 1"
case "$REMOTE" in
auto) if command -v moto_server >/dev/null 2>&1; then REMOTE=1; else
    REMOTE=0; note "moto_server not on PATH: skipping W2/W3 (bash scripts/test-servers.sh installs it)"; fi ;;
0) ;;
1) command -v moto_server >/dev/null 2>&1 ||
    die "BENCH_REMOTE=1 needs moto_server on PATH (bash scripts/test-servers.sh installs it)"
   command -v curl >/dev/null 2>&1 || die "BENCH_REMOTE=1 needs curl (to create the bucket)" ;;
*) die "BENCH_REMOTE must be 0, 1 or auto, got '$REMOTE'" ;;
esac

command -v go >/dev/null 2>&1 || die "go not found on PATH (install Go, or add it to PATH)"
command -v python3 >/dev/null 2>&1 || die "python3 not found on PATH (needed for the report)"

# --- the helper binary -------------------------------------------------------------------
if [[ -n "${BENCH_BIN:-}" ]]; then
    SRC_BIN="$BENCH_BIN"
else
    if [[ "$DO_BUILD" != 0 ]]; then
        command -v cargo >/dev/null 2>&1 ||
            die "cargo not found on PATH (install Rust, or set BENCH_BUILD=0 / BENCH_BIN=path)"
        note "cargo build --release"
        (cd "$ROOT" && cargo build --release --quiet) || die "cargo build --release failed"
    fi
    SRC_BIN="$ROOT/target/release/gobuildcache"
fi
[[ -x "$SRC_BIN" ]] || die "helper binary $SRC_BIN missing or not executable (build it or set BENCH_BIN)"

# --- private scratch space ---------------------------------------------------------------
WORK="$(mktemp -d "${TMPDIR:-/tmp}/gobuildcache-bench.XXXXXX")"
MOTO_PID=""
cleanup() {
    if [[ -n "$MOTO_PID" ]]; then
        kill "$MOTO_PID" 2>/dev/null || true
        wait "$MOTO_PID" 2>/dev/null || true
    fi
    if [[ "$KEEP" == 1 ]]; then
        note "kept $WORK"
    else
        chmod -R u+w "$WORK" 2>/dev/null || true
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
[[ "$WORK" =~ [[:space:]] ]] && die "temp dir '$WORK' contains whitespace; set TMPDIR to a path without"

# Copy the binary so a concurrent `cargo build` by someone else cannot swap it mid-run.
mkdir -p "$WORK/bin" "$WORK/logs" "$WORK/stats"
BIN="$WORK/bin/gobuildcache"
cp "$SRC_BIN" "$BIN"

SAMPLES="$WORK/samples.tsv"
printf 'phase\tworkload\tside\trep\tseconds\tstats\tbytes\tnote\n' >"$SAMPLES"

export GOTOOLCHAIN=local
export GOFLAGS=
export GOWORK=off
unset GOCACHEPROG

NATIVE_GOCACHE="$WORK/native/gocache"
OURS_GOCACHE="$WORK/ours/gocache"
OURS_DIR="$WORK/ours/cache"

workload_args() {
    case "$1" in
    build) echo "build $BUILD_PKGS" ;;
    test) echo "test $TEST_PKGS" ;;
    vet) echo "vet $VET_PKGS" ;;
    *) die "unknown workload $1" ;;
    esac
}

now_ns() { date +%s%N; }

# Environment of our helper for each side: "ours" is local only; "s3" and "disk" add a remote
# tier (S3 on the moto_server below, or a directory). REMOTE_PREFIX picks the S3 key prefix /
# the remote directory, so every W3 rep starts from an empty remote.
REMOTE_PREFIX=run-1
remote_env() {
    case "$1" in
    ours) ;;
    s3)
        echo GOBUILDCACHE_BACKEND=s3 GOBUILDCACHE_S3_BUCKET="$S3_BUCKET" \
            GOBUILDCACHE_S3_PREFIX="$REMOTE_PREFIX/" \
            GOBUILDCACHE_AWS_ENDPOINT_URL_S3="http://127.0.0.1:$MOTO_PORT" \
            GOBUILDCACHE_AWS_S3_USE_PATH_STYLE=true GOBUILDCACHE_AWS_REGION=us-east-1 \
            GOBUILDCACHE_AWS_ACCESS_KEY_ID=testing GOBUILDCACHE_AWS_SECRET_ACCESS_KEY=testing
        ;;
    disk) echo GOBUILDCACHE_REMOTE_DIR="$WORK/remote-disk/$REMOTE_PREFIX" ;;
    *) die "unknown side $1" ;;
    esac
}

# tracing's WARN/ERROR lines and the helper's fatal errors (not its "0 errors" stats line).
HELPER_WARN_RE='^ *(WARN|ERROR) |^gobuildcache: (error|warning)'

# run_go PHASE WORKLOAD SIDE REP: one timed go invocation; appends a row to $SAMPLES.
# Sides: native (Go's own cache), ours (helper, local tier only, the W1 caches), s3 / disk
# (helper with a remote tier and a brand-new GOCACHE and -cache-dir for this one run).
run_go() {
    local phase=$1 wl=$2 side=$3 rep=$4
    local tag="$phase-$wl-$side-$rep"
    local log="$WORK/logs/$tag.log" stats="-" t0 t1 rc=0 extra=""
    local -a args renv
    read -r -a args <<<"$(workload_args "$wl")"
    if [[ "$side" == native ]]; then
        mkdir -p "$NATIVE_GOCACHE"
        t0=$(now_ns)
        (cd "$WORK" && GOCACHE="$NATIVE_GOCACHE" go "${args[@]}") >"$log" 2>&1 || rc=$?
        t1=$(now_ns)
    else
        local gocache=$OURS_GOCACHE dir=$OURS_DIR
        if [[ "$side" != ours ]]; then
            gocache="$WORK/fresh/$tag/gocache"
            dir="$WORK/fresh/$tag/cache"
            rm -rf "$WORK/fresh/$tag"
        fi
        read -r -a renv <<<"$(remote_env "$side")"
        [[ "$side" == disk ]] && mkdir -p "$WORK/remote-disk/$REMOTE_PREFIX"
        mkdir -p "$gocache" "$dir"
        stats="$WORK/stats/$tag.json"
        rm -f "$stats"
        t0=$(now_ns)
        (cd "$WORK" && env "${renv[@]}" GOCACHE="$gocache" \
            GOCACHEPROG="$BIN -cache-dir $dir -stats-json $stats" \
            go "${args[@]}") >"$log" 2>&1 || rc=$?
        t1=$(now_ns)
        [[ -s "$stats" ]] || { note "warning: $tag: helper wrote no stats JSON"; stats="-"; }
    fi
    if ((rc != 0)); then
        echo "bench: '$side' go ${args[*]} failed (exit $rc) in phase $phase; last lines of its log:" >&2
        tail -n 30 "$log" >&2
        exit 1
    fi
    if [[ "$wl" == test && "$phase" == warm ]]; then
        # Warm means every test result comes from the cache.
        local uncached
        uncached=$(grep -E '^ok ' "$log" | grep -vc '(cached)' || true)
        ((uncached == 0)) || extra="uncached=$uncached"
    fi
    if [[ "$side" == s3 || "$side" == disk ]] && grep -qE "$HELPER_WARN_RE" "$log"; then
        # The helper logs the first problem of each kind (remote errors, timeouts, ...).
        note "warning: $tag: the helper logged warnings/errors (see below)"
        grep -E "$HELPER_WARN_RE" "$log" | head -n 5 >&2
        extra="helper-warnings"
    fi
    local bytes="-"
    if [[ "$phase" == cold || "$phase" == fill-disk ]]; then
        if [[ "$side" == native ]]; then
            bytes=$(du -sb "$NATIVE_GOCACHE" | cut -f1)
        elif [[ "$side" == ours ]]; then
            bytes=$(du -sb "$OURS_DIR" | cut -f1)
        else
            bytes=$(du -sb "$dir" | cut -f1)
        fi
    fi
    # Fresh per-run caches are not needed again (the remote keeps what W2 reads).
    [[ "$side" == s3 || "$side" == disk ]] && [[ "$KEEP" != 1 ]] && rm -rf "$WORK/fresh/$tag"
    local secs
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f", (b - a) / 1e9 }')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$phase" "$wl" "$side" "$rep" "$secs" "$stats" "$bytes" "${extra:--}" >>"$SAMPLES"
    printf 'bench: %-9s %-5s %-6s #%-2s %8ss\n' "$phase" "$wl" "$side" "$rep" "$secs" >&2
}

# --- metadata ----------------------------------------------------------------------------
META="$WORK/meta.env"
{
    echo "date=$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "nproc=$(nproc)"
    echo "cpu=$(grep -m1 '^model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//' || echo unknown)"
    echo "mem=$(awk '/^MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo 2>/dev/null || echo unknown)"
    echo "kernel=$(uname -sr)"
    echo "go=$(go version)"
    if [[ -n "${BENCH_BIN:-}" ]]; then
        echo "commit=unknown (BENCH_BIN=$BENCH_BIN)"
    else
        echo "commit=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)$(cd "$ROOT" && git diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || echo ' + uncommitted changes')"
    fi
    echo "bin_sha256=$(sha256sum "$BIN" | cut -c1-16)"
    echo "reps=$REPS"
    echo "warmup=$WARMUP"
    echo "cold=$COLD"
    echo "cold_reps=$COLD_REPS"
    echo "remote=$REMOTE"
    echo "w2_reps=$W2_REPS"
    if [[ "$REMOTE" == 1 ]]; then
        echo "moto=$(python3 -c 'import moto; print(moto.__version__)' 2>/dev/null || echo unknown)"
    fi
    echo "build_pkgs=$BUILD_PKGS"
    echo "test_pkgs=$TEST_PKGS"
    echo "vet_pkgs=$VET_PKGS"
    echo "load_start=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)"
} >"$META"

WORKLOADS=(build test vet)
START_S=$SECONDS

# --- W1 warm-local -----------------------------------------------------------------------
note "W1: filling both caches (cold, not counted)"
for wl in "${WORKLOADS[@]}"; do
    run_go fill "$wl" native 1
    run_go fill "$wl" ours 1
done
if ((WARMUP > 0)); then
    note "W1: $WARMUP warm-up run(s) per side (not counted)"
    for ((i = 1; i <= WARMUP; i++)); do
        for wl in "${WORKLOADS[@]}"; do
            run_go warmup "$wl" native "$i"
            run_go warmup "$wl" ours "$i"
        done
    done
fi
note "W1: $REPS measured rep(s), alternating native, ours"
for ((i = 1; i <= REPS; i++)); do
    for wl in "${WORKLOADS[@]}"; do
        run_go warm "$wl" native "$i"
        run_go warm "$wl" ours "$i"
    done
done

# --- W3 cold / W2 warm-remote ----------------------------------------------------------
if [[ "$REMOTE" == 1 ]]; then
    # A real S3 server (moto) on 127.0.0.1; one bucket, a key prefix per W3 rep.
    MOTO_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    S3_BUCKET=gobuildcache-bench
    note "starting moto_server on 127.0.0.1:$MOTO_PORT"
    moto_server -H 127.0.0.1 -p "$MOTO_PORT" >"$WORK/logs/moto.log" 2>&1 &
    MOTO_PID=$!
    for ((i = 0; i < 300; i++)); do
        curl -s -o /dev/null "http://127.0.0.1:$MOTO_PORT/" && break
        kill -0 "$MOTO_PID" 2>/dev/null || { tail -n 20 "$WORK/logs/moto.log" >&2; die "moto_server exited"; }
        sleep 0.1
    done
    code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT "http://127.0.0.1:$MOTO_PORT/$S3_BUCKET") || true
    [[ "$code" == 200 ]] || die "creating bucket $S3_BUCKET on moto_server failed (HTTP $code)"

    note "W3: $COLD_REPS cold rep(s) of go build $BUILD_PKGS, empty everything, alternating native, ours+S3"
    for ((i = 1; i <= COLD_REPS; i++)); do
        rm -rf "$NATIVE_GOCACHE"
        run_go cold build native "$i"
        REMOTE_PREFIX=run-$i
        run_go cold build s3 "$i"
    done
    # The disk remote is filled by one cold run too (informational, like the W1 fill).
    REMOTE_PREFIX=run-1
    note "W2: filling the disk remote (one cold run, not counted in W3)"
    run_go fill-disk build disk 1
    echo "remote_disk_bytes=$(du -sb "$WORK/remote-disk/run-1" | cut -f1)" >>"$META"

    # W2: the remotes filled by W3 rep 1 / the disk fill; every rep a brand-new GOCACHE and
    # -cache-dir. Alternating s3, disk.
    note "W2: $W2_REPS rep(s) of go build $BUILD_PKGS, fresh local, warm remote, alternating s3, disk"
    for ((i = 1; i <= W2_REPS; i++)); do
        run_go w2 build s3 "$i"
        run_go w2 build disk "$i"
    done
elif [[ "$COLD" == 1 ]]; then
    note "W3: $COLD_REPS cold rep(s) of go build $BUILD_PKGS, empty caches, alternating native, ours (local only)"
    for ((i = 1; i <= COLD_REPS; i++)); do
        rm -rf "$NATIVE_GOCACHE"
        run_go cold build native "$i"
        rm -rf "$OURS_GOCACHE" "$OURS_DIR"
        run_go cold build ours "$i"
    done
fi

{
    echo "load_end=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)"
    echo "elapsed=$((SECONDS - START_S))"
} >>"$META"

# --- report ------------------------------------------------------------------------------
REPORT="$WORK/report.md"
python3 "$BENCH_DIR/report.py" "$SAMPLES" "$META" >"$REPORT"
cat "$REPORT"
if [[ "$OUT" != - ]]; then
    mkdir -p "$(dirname "$OUT")"
    cp "$REPORT" "$OUT"
    note "wrote $OUT"
fi
