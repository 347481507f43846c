#!/usr/bin/env bash
# Benchmark: gobuildcache (GOCACHEPROG helper) vs Go's native GOCACHE, in one run with
# alternating reps. Prints a markdown table of medians and ratios, and writes it to
# bench/results/latest.md. See bench/README.md.
#
# Environment knobs (all optional):
#   BENCH_REPS=5          measured reps per workload and side (alternating native, ours, ...)
#   BENCH_WARMUP=2        uncounted warm-up runs per workload and side, after the cold fill
#   BENCH_COLD=0          1: also run W3 (cold `go build std`, empty caches), slow
#   BENCH_COLD_REPS=3     reps for W3
#   BENCH_BUILD=1         0: skip `cargo build --release` (use the binary already built)
#   BENCH_BIN=path        benchmark this helper binary instead of target/release/gobuildcache
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
COLD_REPS="${BENCH_COLD_REPS:-3}"
DO_BUILD="${BENCH_BUILD:-1}"
TEST_PKGS="${BENCH_TEST_PKGS:-strings strconv bytes encoding/json}"
VET_PKGS="${BENCH_VET_PKGS:-strings strconv bytes encoding/json}"
OUT="${BENCH_OUT:-$BENCH_DIR/results/latest.md}"
KEEP="${BENCH_KEEP:-0}"

for v in REPS WARMUP COLD_REPS; do
    [[ "${!v}" =~ ^[0-9]+$ ]] || die "BENCH_$v must be a non-negative integer, got '${!v}'"
done
((REPS >= 1)) || die "BENCH_REPS must be at least 1"
((COLD_REPS >= 1)) || die "BENCH_COLD_REPS must be at least 1"

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
cleanup() {
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
    build) echo "build std" ;;
    test) echo "test $TEST_PKGS" ;;
    vet) echo "vet $VET_PKGS" ;;
    *) die "unknown workload $1" ;;
    esac
}

now_ns() { date +%s%N; }

# run_go PHASE WORKLOAD SIDE REP: one timed go invocation; appends a row to $SAMPLES.
run_go() {
    local phase=$1 wl=$2 side=$3 rep=$4
    local tag="$phase-$wl-$side-$rep"
    local log="$WORK/logs/$tag.log" stats="-" t0 t1 rc=0 extra=""
    local -a args
    read -r -a args <<<"$(workload_args "$wl")"
    if [[ "$side" == native ]]; then
        mkdir -p "$NATIVE_GOCACHE"
        t0=$(now_ns)
        (cd "$WORK" && GOCACHE="$NATIVE_GOCACHE" go "${args[@]}") >"$log" 2>&1 || rc=$?
        t1=$(now_ns)
    else
        mkdir -p "$OURS_GOCACHE" "$OURS_DIR"
        stats="$WORK/stats/$tag.json"
        rm -f "$stats"
        t0=$(now_ns)
        (cd "$WORK" && GOCACHE="$OURS_GOCACHE" \
            GOCACHEPROG="$BIN -cache-dir $OURS_DIR -stats-json $stats" \
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
    local bytes="-"
    if [[ "$phase" == cold ]]; then
        if [[ "$side" == native ]]; then
            bytes=$(du -sb "$NATIVE_GOCACHE" | cut -f1)
        else
            bytes=$(du -sb "$OURS_DIR" | cut -f1)
        fi
    fi
    local secs
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f", (b - a) / 1e9 }')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$phase" "$wl" "$side" "$rep" "$secs" "$stats" "$bytes" "${extra:--}" >>"$SAMPLES"
    printf 'bench: %-6s %-5s %-6s #%-2s %8ss\n' "$phase" "$wl" "$side" "$rep" "$secs" >&2
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

# --- W3 cold (opt-in) --------------------------------------------------------------------
if [[ "$COLD" == 1 ]]; then
    note "W3: $COLD_REPS cold rep(s) of go build std, empty caches, alternating native, ours"
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
