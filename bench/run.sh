#!/usr/bin/env bash
# Benchmark: gobuildcache (GOCACHEPROG helper) vs Go's native GOCACHE and vs another open-source
# GOCACHEPROG helper (bradfitz/go-tool-cache's go-cacher), in one run with alternating reps.
# Prints a markdown report (one summary table of medians and ratios, then details) and writes
# it to bench/results/latest.md. See bench/README.md for the workloads and every knob.
#
# Environment knobs (all optional):
#   BENCH_REPS=5          W1 measured reps per workload and side (alternating native, floor, ours,
#                         go-cacher)
#   BENCH_WARMUP=2        W1 uncounted warm-up runs per workload and side, after the cold fill
#   BENCH_REMOTE=1        1: W3 with ours+S3 and W2 (moto_server behind toxiproxy on 127.0.0.1);
#                         0: no remote (W1 only, or W3 local-only with BENCH_COLD=1); auto: 1 if
#                         moto_server and toxiproxy-server are found (after BENCH_INSTALL)
#   BENCH_INSTALL=1       1: install missing tools (scripts/test-servers.sh for moto_server and
#                         toxiproxy-server; `go install` for go-cacher); 0: fail if one is missing
#   BENCH_GOCACHER=1      1: include bradfitz/go-tool-cache's go-cacher (disk) in W1 and W3, and in
#                         W2 with its HTTP cache server gocached behind the same toxiproxy; 0: skip
#   BENCH_FLOOR=1         1: include the "floor" side in W1: tools/src/bin/protocol_floor.rs, a helper that
#                         does no work (answers gets from a copy of the native side's filled cache,
#                         preloaded in memory), i.e. what the go command's GOCACHEPROG path itself
#                         costs; and the "lookup" side, the same helper with -lookup: each get also
#                         reads the entry file and stats the output file on disk, the file work any
#                         helper that keeps entries on disk does per get; 0: skip both
#   BENCH_GOCACHER_VERSION=v0.0.0-20260722201841-0bb331e19f64   the go-tool-cache module version
#   BENCH_COLD=0          1 (with BENCH_REMOTE=0): W3 with ours local-only
#   BENCH_COLD_REPS=2     W3 reps per side
#   BENCH_W2_REPS=5       W2 reps per latency (and mode), plus as many for the disk remote
#   BENCH_W2_LATENCIES="0 5 20"   added round trip (ms) between the helper and moto_server for W2
#   BENCH_W2_DISK=1       1: W2 also on a directory remote (no HTTP; filled by one extra cold run)
#   BENCH_W2_PREFETCH=    empty: the helper's default; else a list of GOBUILDCACHE_PREFETCH values
#                         to compare in the same run, e.g. "on off"
#   BENCH_MANIFEST_KEY=   if set, GOBUILDCACHE_MANIFEST_KEY for every remote run (fill and W2)
#   BENCH_BUILD=1         0: skip `cargo build --release` and `cargo build --release -p
#                         gobuildcache-tools --bin protocol_floor` (use the binaries already built)
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
W2_LATENCIES="${BENCH_W2_LATENCIES:-0 5 20}"
W2_DISK="${BENCH_W2_DISK:-1}"
W2_PREFETCH="${BENCH_W2_PREFETCH:-}"
MANIFEST_KEY="${BENCH_MANIFEST_KEY:-}"
REMOTE="${BENCH_REMOTE:-1}"
INSTALL="${BENCH_INSTALL:-1}"
GOCACHER="${BENCH_GOCACHER:-1}"
FLOOR="${BENCH_FLOOR:-1}"
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
read -r -a LATS <<<"$W2_LATENCIES"
((${#LATS[@]} >= 1)) || die "BENCH_W2_LATENCIES must list at least one latency (ms)"
for l in "${LATS[@]}"; do
    [[ "$l" =~ ^[0-9]+$ ]] || die "BENCH_W2_LATENCIES must be whole milliseconds, got '$l'"
done
# W2 modes: "default" leaves GOBUILDCACHE_PREFETCH unset (the helper's own default).
read -r -a MODES <<<"$W2_PREFETCH"
((${#MODES[@]} == 0)) && MODES=(default)
for v in GOCACHER FLOOR W2_DISK INSTALL COLD; do
    [[ "${!v}" == 0 || "${!v}" == 1 ]] || die "BENCH_$v must be 0 or 1, got '${!v}'"
done

command -v go >/dev/null 2>&1 || die "go not found on PATH (install Go, or add it to PATH)"
command -v python3 >/dev/null 2>&1 || die "python3 not found on PATH (needed for the report)"

# Tools (where scripts/test.sh finds them), go-cacher, the servers and toxiproxy.
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"

if [[ "$REMOTE" != 0 ]] && ! have_servers && [[ "$INSTALL" == 1 ]]; then
    note "moto_server or toxiproxy-server missing: running scripts/test-servers.sh"
    bash "$ROOT/scripts/test-servers.sh" || note "scripts/test-servers.sh failed"
    hash -r
fi
case "$REMOTE" in
auto) if have_servers; then REMOTE=1; else
    REMOTE=0; note "moto_server or toxiproxy-server not found: skipping W2/W3 (bash scripts/test-servers.sh installs them)"; fi ;;
0) ;;
1) command -v moto_server >/dev/null 2>&1 ||
    die "BENCH_REMOTE=1 needs moto_server (bash scripts/test-servers.sh installs it; BENCH_REMOTE=0 skips W2/W3)"
   command -v toxiproxy-server >/dev/null 2>&1 ||
    die "BENCH_REMOTE=1 needs toxiproxy-server in $TOOLS or on PATH (bash scripts/test-servers.sh installs it; BENCH_REMOTE=0 skips W2/W3)" ;;
*) die "BENCH_REMOTE must be 0, 1 or auto, got '$REMOTE'" ;;
esac
if [[ "$REMOTE" == 1 ]]; then
    command -v curl >/dev/null 2>&1 || die "BENCH_REMOTE=1 needs curl (bucket creation, toxiproxy's API, calibration)"
fi

# go-cacher (and its server gocached for W2), pinned.
GC_TOOLS=(go-cacher)
[[ "$REMOTE" == 1 ]] && GC_TOOLS+=(gocached)
if [[ "$GOCACHER" == 1 ]]; then
    ensure_gocacher "$INSTALL" "${GC_TOOLS[@]}"
    GC_SRC="$TOOLS/go-cacher"
fi

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
# The floor helper (tools/src/bin/protocol_floor.rs): built from this tree whatever BENCH_BIN says.
SRC_FLOOR="$ROOT/target/release/protocol_floor"
if [[ "$FLOOR" == 1 ]]; then
    if [[ "$DO_BUILD" != 0 ]]; then
        command -v cargo >/dev/null 2>&1 || die "cargo not found on PATH (BENCH_BUILD=0 or BENCH_FLOOR=0)"
        note "cargo build --release -p gobuildcache-tools --bin protocol_floor"
        (cd "$ROOT" && cargo build --release --quiet -p gobuildcache-tools --bin protocol_floor) ||
            die "cargo build --release -p gobuildcache-tools --bin protocol_floor failed (BENCH_FLOOR=0 skips the floor)"
    fi
    [[ -x "$SRC_FLOOR" ]] || die "floor helper $SRC_FLOOR missing (build it, or BENCH_FLOOR=0 skips it)"
fi

# --- private scratch space ---------------------------------------------------------------
WORK="$(mktemp -d "${TMPDIR:-/tmp}/gobuildcache-bench.XXXXXX")"
cleanup() {
    stop_servers
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

# Copy the binaries so a concurrent build by someone else cannot swap them mid-run.
mkdir -p "$WORK/bin" "$WORK/logs" "$WORK/stats"
BIN="$WORK/bin/gobuildcache"
cp "$SRC_BIN" "$BIN"
if [[ "$FLOOR" == 1 ]]; then
    FLOOR_BIN="$WORK/bin/protocol_floor"
    cp "$SRC_FLOOR" "$FLOOR_BIN"
fi
if [[ "$GOCACHER" == 1 ]]; then
    GC_BIN="$WORK/bin/go-cacher"
    cp "$GC_SRC" "$GC_BIN"
    if [[ "$REMOTE" == 1 ]]; then
        GOCACHED_BIN="$WORK/bin/gocached"
        cp "$TOOLS/gocached" "$GOCACHED_BIN"
    fi
fi

SAMPLES="$WORK/samples.tsv"
printf 'phase\tworkload\tside\trep\tseconds\tstats\tbytes\tnote\tlat_ms\tmode\tlog\n' >"$SAMPLES"

export GOTOOLCHAIN=local
export GOFLAGS=
export GOWORK=off
unset GOCACHEPROG
# Only what each run sets: no stray helper settings from the caller's shell.
while IFS='=' read -r name _; do
    [[ "$name" == GOBUILDCACHE_* && "$name" != GOBUILDCACHE_TOOLS ]] && unset "$name"
done < <(env)

NATIVE_GOCACHE="$WORK/native/gocache"
OURS_GOCACHE="$WORK/ours/gocache"
OURS_DIR="$WORK/ours/cache"
GC_GOCACHE="$WORK/gocacher/gocache"
GC_DIR="$WORK/gocacher/cache"
FLOOR_GOCACHE="$WORK/floor/gocache"
FLOOR_DIR="$WORK/floor/native-copy"
LOOKUP_GOCACHE="$WORK/lookup/gocache"

workload_args() {
    case "$1" in
    build) echo "build $BUILD_PKGS" ;;
    test) echo "test $TEST_PKGS" ;;
    vet) echo "vet $VET_PKGS" ;;
    *) die "unknown workload $1" ;;
    esac
}

# Environment of our helper for each side: "ours" is local only; "s3" and "disk" add a remote
# tier (S3 on moto_server through toxiproxy, or a directory). REMOTE_PREFIX picks the S3 key
# prefix / the remote directory, so every W3 rep starts from an empty remote. MODE is the W2
# prefetch mode ("default": leave it to the helper).
REMOTE_PREFIX=run-1
MODE=default
CUR_LAT=-
remote_env() {
    case "$1" in
    ours) ;;
    s3)
        s3_env "$PROXY_PORT" "$REMOTE_PREFIX/"
        ;;
    disk) echo GOBUILDCACHE_REMOTE_DIR="$WORK/remote-disk/$REMOTE_PREFIX" ;;
    *) die "unknown side $1" ;;
    esac
    if [[ "$1" != ours ]]; then
        [[ -n "$MANIFEST_KEY" ]] && echo GOBUILDCACHE_MANIFEST_KEY="$MANIFEST_KEY"
        [[ "$MODE" != default ]] && echo GOBUILDCACHE_PREFETCH="$MODE"
    fi
    return 0
}

# tracing's WARN/ERROR lines and the helper's fatal errors (not its "0 errors" stats line).
HELPER_WARN_RE='^ *(WARN|ERROR) |^gobuildcache: (error|warning)'

# run_go PHASE WORKLOAD SIDE REP: one timed go invocation; appends a row to $SAMPLES.
# Sides: native (Go's own cache), floor (protocol_floor on a copy of native's filled cache),
# lookup (the same with -lookup: a disk lookup per get),
# ours (our helper, local tier only), gocacher (go-cacher's disk cache), s3 / disk (our helper
# with a remote tier), gcremote (go-cacher with gocached behind toxiproxy). ours and gocacher
# keep their W1 caches, except gocacher in W3 (phase cold); s3, disk and gcremote get a
# brand-new GOCACHE and -cache-dir for every run.
run_go() {
    local phase=$1 wl=$2 side=$3 rep=$4
    local tag="$phase-$wl-$side-$rep"
    [[ "$CUR_LAT" != - ]] && tag="$tag-${CUR_LAT}ms"
    [[ "$MODE" != default ]] && tag="$tag-$MODE"
    local log="$WORK/logs/$tag.log" stats="-" t0 t1 rc=0 extra="" fresh=0
    local -a args renv
    read -r -a args <<<"$(workload_args "$wl")"
    local gocache dir
    case "$side" in
    native) gocache=$NATIVE_GOCACHE ;;
    floor) gocache=$FLOOR_GOCACHE ;;
    lookup) gocache=$LOOKUP_GOCACHE ;;
    ours) gocache=$OURS_GOCACHE dir=$OURS_DIR ;;
    gocacher) gocache=$GC_GOCACHE dir=$GC_DIR ;;
    s3 | disk | gcremote) fresh=1 ;;
    *) die "unknown side $side" ;;
    esac
    [[ "$side" == gocacher && "$phase" == cold ]] && fresh=1
    if ((fresh)); then
        gocache="$WORK/fresh/$tag/gocache"
        dir="$WORK/fresh/$tag/cache"
        rm -rf "$WORK/fresh/$tag"
    fi
    mkdir -p "$gocache"
    # Every run starts with no dirty pages: a few GB written by earlier runs would otherwise
    # throttle a later run's writes (writeback), whichever side it is.
    sync
    case "$side" in
    native)
        t0=$(now_ns)
        (cd "$WORK" && GOCACHE="$gocache" go "${args[@]}") >"$log" 2>&1 || rc=$?
        t1=$(now_ns)
        ;;
    floor | lookup)
        local how=""
        [[ "$side" == lookup ]] && how="-lookup "
        t0=$(now_ns)
        (cd "$WORK" && GOCACHE="$gocache" GOCACHEPROG="$FLOOR_BIN $how$FLOOR_DIR" \
            go "${args[@]}") >"$log" 2>&1 || rc=$?
        t1=$(now_ns)
        ;;
    gocacher | gcremote)
        mkdir -p "$dir"
        # -verbose only adds one start line and the counters at close.
        local server=""
        [[ "$side" == gcremote ]] && server="-cache-server http://127.0.0.1:$GC_PROXY_PORT"
        t0=$(now_ns)
        (cd "$WORK" && GOCACHE="$gocache" GOCACHEPROG="$GC_BIN -verbose -cache-dir $dir $server" \
            go "${args[@]}") >"$log" 2>&1 || rc=$?
        t1=$(now_ns)
        ;;
    *)
        # remote_env prints one line per group of variables: read them all.
        read -r -a renv <<<"$(remote_env "$side" | tr '\n' ' ')"
        [[ "$side" == disk ]] && mkdir -p "$WORK/remote-disk/$REMOTE_PREFIX"
        mkdir -p "$dir"
        stats="$WORK/stats/$tag.json"
        rm -f "$stats"
        t0=$(now_ns)
        (cd "$WORK" && env "${renv[@]}" GOCACHE="$gocache" \
            GOCACHEPROG="$BIN -cache-dir $dir -stats-json $stats" \
            go "${args[@]}") >"$log" 2>&1 || rc=$?
        t1=$(now_ns)
        [[ -s "$stats" ]] || { note "warning: $tag: helper wrote no stats JSON"; stats="-"; }
        ;;
    esac
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
    if [[ "$phase" == cold || "$phase" == fill-* ]]; then
        if [[ "$side" == native ]]; then
            bytes=$(du -sb "$gocache" | cut -f1)
        else
            bytes=$(du -sb "$dir" | cut -f1)
        fi
    fi
    # Fresh per-run caches are not needed again (the remote keeps what W2 reads), but they are
    # only removed with the temp dir at the end: creating ~2,900 files right after deleting as
    # many is slow on ext4, and the next run measured that (W2 2.5 s a rep instead of 0.55 s;
    # the first fresh run after W3's deletions 1.2 s), not what a fresh CI machine sees.
    # Costs ~0.35 GB of disk per run until the end.
    local secs
    secs=$(secs_between "$t0" "$t1")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$phase" "$wl" "$side" "$rep" "$secs" "$stats" \
        "$bytes" "${extra:--}" "$CUR_LAT" "$MODE" "$log" >>"$SAMPLES"
    printf 'bench: %-9s %-5s %-8s #%-2s %5s %-7s %8ss\n' "$phase" "$wl" "$side" "$rep" \
        "$([[ $CUR_LAT != - ]] && echo "${CUR_LAT}ms")" "$([[ $MODE != default ]] && echo "$MODE")" "$secs" >&2
}

# floor_row SIDE REP SECS BYTES NOTE: appends one "w2floor" row and prints it.
floor_row() {
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' w2floor build "$1" "$2" "$3" - \
        "$4" "$5" - default - >>"$SAMPLES"
    printf 'bench: %-9s %-5s %-8s #%-2s %5s %-7s %8ss\n' w2floor build "$1" "$2" "" "" "$3" >&2
}

# copy_floor REP: W2's floor, what writing the warm start into a fresh dir costs with no
# helper, no network and no go command: `cp -a` of the first fresh run's filled local tier
# (the same entries W2 writes) into a new dir, timed like a run; appends a "w2floor" row.
copy_floor() {
    local src="$WORK/fresh/pack-build-s3-1-0ms/cache" dst="$WORK/fresh/copy-floor-$1" t0 t1 secs
    [[ -d "$src" ]] || return 0
    sync
    t0=$(now_ns)
    cp -a "$src" "$dst"
    t1=$(now_ns)
    secs=$(secs_between "$t0" "$t1")
    floor_row copy "$1" "$secs" "$(du -sb "$dst" | cut -f1)" "files=$(find "$dst" -type f | wc -l)"
}

# verify_floor REP: the SHA-256 every body from a remote must pass before it is stored
# (design: integrity end to end), over the bodies copy_floor copied, already in memory (a
# helper hashes what it writes, it does not read it back), with Python's hashlib (OpenSSL:
# SHA-NI where the CPU has it, as ours); appends a "w2floor" row.
verify_floor() {
    local dir="$WORK/fresh/copy-floor-$1/v1/o" secs
    [[ -d "$dir" ]] || return 0
    secs=$(python3 - "$dir" <<'EOP'
import hashlib, os, sys, time
bodies = []
for d, _, files in os.walk(sys.argv[1]):
    for f in files:
        with open(os.path.join(d, f), "rb") as fh:
            bodies.append(fh.read())
t = time.perf_counter()
for b in bodies:
    hashlib.sha256(b).digest()
print(f"{time.perf_counter() - t:.3f}")
EOP
    ) || die "verify floor: hashing $dir failed"
    floor_row sha256 "$1" "$secs" "$(du -sb "$dir" | cut -f1)" "files=$(find "$dir" -type f | wc -l)"
}

# download_floor REP: W2's other floor, what fetching the warm start costs with no helper:
# every pack object under W2's prefix fetched with curl through toxiproxy at +0 ms, three at
# a time as the helper streams them, into /dev/null; appends a "w2floor" row. moto_server
# serves from Python on the same two cores, so this is the most any S3 row can save over it.
download_floor() {
    local base="http://127.0.0.1:$PROXY_PORT/$S3_BUCKET" keys t0 t1 secs bytes
    local -a auth=(--aws-sigv4 "aws:amz:us-east-1:s3" --user testing:testing)
    keys=$(curl -sf "${auth[@]}" "$base?list-type=2&prefix=run-1/manifests/&max-keys=1000" |
        grep -o '<Key>[^<]*\.pack</Key>' | sed -e 's/<Key>//' -e 's/<\/Key>//') || return 0
    [[ -n "$keys" ]] || return 0
    set_latency 0
    t0=$(now_ns)
    bytes=$(printf '%s\n' $keys | xargs -P 3 -I{} curl -sf "${auth[@]}" -o /dev/null \
        -w '%{size_download}\n' "$base/{}" | awk '{s += $1} END {print s}') ||
        die "download floor: a GET of a pack failed"
    t1=$(now_ns)
    CUR_LAT=-
    secs=$(secs_between "$t0" "$t1")
    floor_row s3get "$1" "$secs" "$bytes" "objects=$(printf '%s\n' $keys | wc -l)"
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
    echo "w2_latencies=${LATS[*]}"
    echo "w2_modes=${MODES[*]}"
    echo "w2_disk=$W2_DISK"
    echo "manifest_key=${MANIFEST_KEY:-(helper default)}"
    echo "gocacher=$GOCACHER"
    echo "floor=$FLOOR"
    [[ "$FLOOR" == 1 ]] && echo "floor_sha256=$(sha256sum "$FLOOR_BIN" | cut -c1-16)"
    [[ "$GOCACHER" == 1 ]] && echo "gocacher_version=$GOCACHER_MOD $(gocacher_version "$GC_BIN")"
    if [[ "$REMOTE" == 1 ]]; then
        echo "moto=$(python3 -c 'import moto; print(moto.__version__)' 2>/dev/null || echo unknown)"
        echo "toxiproxy=$(go version -m "$(command -v toxiproxy-server)" 2>/dev/null |
            awk '$1 == "mod" { print $2, $3 }' || echo unknown)"
    fi
    echo "build_pkgs=$BUILD_PKGS"
    echo "test_pkgs=$TEST_PKGS"
    echo "vet_pkgs=$VET_PKGS"
    echo "load_start=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)"
} >"$META"

WORKLOADS=(build test vet)
W1_SIDES=(native ours)
[[ "$GOCACHER" == 1 ]] && W1_SIDES+=(gocacher)
START_S=$SECONDS

# --- W1 warm-local -----------------------------------------------------------------------
note "W1: filling every cache (cold, not counted): ${W1_SIDES[*]}"
for wl in "${WORKLOADS[@]}"; do
    for side in "${W1_SIDES[@]}"; do run_go fill "$wl" "$side" 1; done
done
if [[ "$FLOOR" == 1 ]]; then
    # The floor answers from its own copy of native's filled cache, taken once, so native's own
    # runs (which touch its files) never change it under the floor.
    note "W1: copying the native cache for the floor side"
    rm -rf "$FLOOR_DIR"
    mkdir -p "$(dirname "$FLOOR_DIR")"
    cp -a "$NATIVE_GOCACHE" "$FLOOR_DIR"
    # Its first run scans the copy and writes the index every later run loads (one file read).
    echo '{"ID":1,"Command":"close"}' | "$FLOOR_BIN" "$FLOOR_DIR" >/dev/null 2>"$WORK/logs/floor-index.log" ||
        { cat "$WORK/logs/floor-index.log" >&2; die "protocol_floor could not index $FLOOR_DIR"; }
    [[ -s "$FLOOR_DIR/protocol_floor.idx" ]] || die "protocol_floor wrote no index in $FLOOR_DIR"
    echo "floor_copy_bytes=$(du -sb "$FLOOR_DIR" | cut -f1)" >>"$META"
    W1_SIDES=(native floor lookup "${W1_SIDES[@]:1}")
fi
if ((WARMUP > 0)); then
    note "W1: $WARMUP warm-up run(s) per side (not counted)"
    for ((i = 1; i <= WARMUP; i++)); do
        for wl in "${WORKLOADS[@]}"; do
            for side in "${W1_SIDES[@]}"; do run_go warmup "$wl" "$side" "$i"; done
        done
    done
fi
note "W1: $REPS measured rep(s), alternating ${W1_SIDES[*]}"
for ((i = 1; i <= REPS; i++)); do
    for wl in "${WORKLOADS[@]}"; do
        for side in "${W1_SIDES[@]}"; do run_go warm "$wl" "$side" "$i"; done
    done
done

# --- W3 cold / W2 warm-remote ----------------------------------------------------------
if [[ "$REMOTE" == 1 ]]; then
    # A real S3 server (moto) on 127.0.0.1, reached only through toxiproxy; one bucket, a key
    # prefix per W3 rep.
    start_moto
    start_toxiproxy
    add_proxy s3 "$MOTO_PORT" PROXY_PORT
    if [[ "$GOCACHER" == 1 ]]; then
        # go-cacher's own remote: its HTTP cache server, behind the same latency toxics.
        start_gocached "$GOCACHED_BIN"
        add_proxy gocached "$GOCACHED_PORT" GC_PROXY_PORT
    fi

    # Calibration: the round trip of a small GET, direct and through the proxy at each latency.
    read -r med min <<<"$(rtt_ms "$MOTO_PORT")"
    printf 'calib_direct_ms=%s\ncalib_direct_min_ms=%s\n' "$med" "$min" >>"$META"
    calib="direct $med"
    for l in $(printf '%s\n' 0 "${LATS[@]}" | sort -nu); do
        set_latency "$l"
        read -r med min <<<"$(rtt_ms "$PROXY_PORT")"
        printf 'calib_%s_ms=%s\ncalib_%s_min_ms=%s\n' "$l" "$med" "$l" "$min" >>"$META"
        calib="$calib, +${l} ms: $med"
    done
    set_latency 0
    CUR_LAT=-
    note "calibration, median ms per small GET through toxiproxy: $calib"

    # W3; rep 1's S3 prefix is also W2's warm remote (a normal cold run: it uploads everything
    # and, with the warm-start feature, publishes the manifest at close). Through the proxy at
    # 0 ms, like every S3 run.
    W3_SIDES=(native s3)
    [[ "$GOCACHER" == 1 ]] && W3_SIDES+=(gocacher)
    note "W3: $COLD_REPS cold rep(s) of go build $BUILD_PKGS, empty everything, alternating ${W3_SIDES[*]}"
    for ((i = 1; i <= COLD_REPS; i++)); do
        for side in "${W3_SIDES[@]}"; do
            [[ "$side" == native ]] && rm -rf "$NATIVE_GOCACHE"
            REMOTE_PREFIX=run-$i
            run_go cold build "$side" "$i"
        done
    done
    CUR_LAT=-
    REMOTE_PREFIX=run-1
    if [[ "$W2_DISK" == 1 ]]; then
        note "W2: filling the disk remote (one cold run, not counted in W3)"
        run_go fill-disk build disk 1
        echo "remote_disk_bytes=$(du -sb "$WORK/remote-disk/run-1" | cut -f1)" >>"$META"
    fi
    if [[ "$GOCACHER" == 1 ]]; then
        note "W2: filling gocached (one cold go-cacher run, not counted)"
        run_go fill-gc build gcremote 1
        echo "gocached_bytes=$(du -sb "$WORK/gocached" | cut -f1)" >>"$META"
    fi

    # The first fresh run on a remote a cold run filled: it streams the packs of the cold
    # run's uploads (a helper before those fetched one by one and published a pack at
    # close). Reported apart, not counted.
    note "W2: the first fresh run on each remote after its cold fill (not counted)"
    CUR_LAT=0
    run_go pack build s3 1
    if ((COLD_REPS >= 2)); then
        # W3 rep 2's prefix is as fresh: its first reader at the largest latency.
        REMOTE_PREFIX=run-2
        set_latency "$(printf '%s\n' "${LATS[@]}" | sort -n | tail -n 1)"
        run_go pack build s3 2
        set_latency 0
        REMOTE_PREFIX=run-1
    fi
    CUR_LAT=-
    [[ "$W2_DISK" == 1 ]] && run_go pack build disk 1

    # W2: every rep a brand-new GOCACHE and -cache-dir against the remote filled above;
    # alternating over latencies (and modes), then the disk remote.
    note "W2: $W2_REPS rep(s) of go build $BUILD_PKGS, fresh local, warm remote: S3 at +${LATS[*]} ms" \
        "round trip$([[ ${MODES[*]} != default ]] && echo ", prefetch ${MODES[*]}")$([[ $GOCACHER == 1 ]] && echo ', go-cacher+gocached')$([[ $W2_DISK == 1 ]] && echo ', disk')"
    for ((i = 1; i <= W2_REPS; i++)); do
        copy_floor "$i"
        verify_floor "$i"
        download_floor "$i"
        for l in "${LATS[@]}"; do
            set_latency "$l"
            for MODE in "${MODES[@]}"; do run_go w2 build s3 "$i"; done
            MODE=default
            [[ "$GOCACHER" == 1 ]] && run_go w2 build gcremote "$i"
        done
        set_latency 0
        CUR_LAT=-
        if [[ "$W2_DISK" == 1 ]]; then
            for MODE in "${MODES[@]}"; do run_go w2 build disk "$i"; done
            MODE=default
        fi
    done
elif [[ "$COLD" == 1 ]]; then
    W3_SIDES=(native ours)
    [[ "$GOCACHER" == 1 ]] && W3_SIDES+=(gocacher)
    note "W3: $COLD_REPS cold rep(s) of go build $BUILD_PKGS, empty caches, alternating ${W3_SIDES[*]} (local only)"
    for ((i = 1; i <= COLD_REPS; i++)); do
        rm -rf "$NATIVE_GOCACHE" "$OURS_GOCACHE" "$OURS_DIR"
        for side in "${W3_SIDES[@]}"; do run_go cold build "$side" "$i"; done
    done
fi

{
    echo "load_end=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)"
    echo "elapsed=$((SECONDS - START_S))"
} >>"$META"

# --- report ------------------------------------------------------------------------------
write_report "$BENCH_DIR/report.py" "$OUT"
