#!/usr/bin/env bash
# W4: a real module and a CI-shaped job. golang.org/x/tools at a pinned version (216 packages,
# 92 commands, third-party dependencies: golang.org/x/{mod,sync,net,telemetry,sys},
# github.com/google/go-cmp, github.com/yuin/goldmark), fetched through the Go module proxy into
# the bench's temp dir. The job is three go commands, each with its own helper, sharing one
# GOCACHE and one local dir, as a CI job's steps do:
#   go build ./...   go vet ./...   go test -count=1 -run '^$' ./...
# Rows: native cold and warm; ours cold (filling S3 on moto_server through toxiproxy); ours
# warm-local (the fill's dirs again); ours on a brand-new dir against the warm bucket at each
# added round trip (the first run after each fill reported apart, then the median of later
# ones); go-cacher against gocached likewise; and "one dependency changed": a leaf package of a
# dependency (golang.org/x/mod/semver, replaced by a writable copy) gains an exported function
# between the fill and the run, new in every rep, so each run meets a change the bucket lacks.
# Prints a markdown report and writes it to bench/results/w4-latest.md.
#
# Knobs (all optional):
#   BENCH_W4_MODULE=golang.org/x/tools@v0.52.0   the module; its dependency
#   BENCH_W4_DEP=golang.org/x/mod                 is replaced by a copy, and in it
#   BENCH_W4_LEAF=semver/semver.go                this file changes for the "changed" rows
#   BENCH_W4_REPS=3        later fresh runs per latency, warm runs per side
#   BENCH_W4_CHANGED=2     "one dependency changed" reps
#   BENCH_W4_LATENCIES="0 20"   added round trip (ms) for the fresh runs
#   BENCH_GOCACHER=1, BENCH_INSTALL=1, BENCH_BUILD=1, BENCH_BIN, BENCH_KEEP=0 as in bench/run.sh
#   BENCH_OUT=path         default bench/results/w4-latest.md ("-" = none)
set -euo pipefail

die() { echo "w4: $*" >&2; exit 1; }
note() { echo "w4: $*" >&2; }

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH_DIR/.." && pwd)"
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"

MODULE="${BENCH_W4_MODULE:-golang.org/x/tools@v0.52.0}"
DEP="${BENCH_W4_DEP:-golang.org/x/mod}"
LEAF="${BENCH_W4_LEAF:-semver/semver.go}"
REPS="${BENCH_W4_REPS:-3}"
CHANGED="${BENCH_W4_CHANGED:-2}"
read -r -a LATS <<<"${BENCH_W4_LATENCIES:-0 20}"
GOCACHER="${BENCH_GOCACHER:-1}"
INSTALL="${BENCH_INSTALL:-1}"
DO_BUILD="${BENCH_BUILD:-1}"
OUT="${BENCH_OUT:-$BENCH_DIR/results/w4-latest.md}"
KEEP="${BENCH_KEEP:-0}"
[[ "$MODULE" == *@* ]] || die "BENCH_W4_MODULE must be path@version, got '$MODULE'"
for v in REPS CHANGED; do [[ "${!v}" =~ ^[0-9]+$ ]] || die "BENCH_W4_$v must be a whole number"; done
((REPS >= 1)) || die "BENCH_W4_REPS must be at least 1"
((${#LATS[@]} >= 1)) || die "BENCH_W4_LATENCIES must list at least one latency (ms)"
for l in "${LATS[@]}"; do [[ "$l" =~ ^[0-9]+$ ]] || die "BENCH_W4_LATENCIES must be whole ms, got '$l'"; done
for v in GOCACHER INSTALL; do [[ "${!v}" == 0 || "${!v}" == 1 ]] || die "BENCH_$v must be 0 or 1"; done

command -v go >/dev/null 2>&1 || die "go not found on PATH"
command -v curl >/dev/null 2>&1 || die "curl not found on PATH"
if ! have_servers; then
    [[ "$INSTALL" == 1 ]] || die "moto_server or toxiproxy-server missing (bash scripts/test-servers.sh installs them)"
    bash "$ROOT/scripts/test-servers.sh"
    hash -r
    have_servers || die "moto_server or toxiproxy-server still missing after scripts/test-servers.sh"
fi
[[ "$GOCACHER" == 1 ]] && ensure_gocacher "$INSTALL" go-cacher gocached

if [[ -n "${BENCH_BIN:-}" ]]; then
    SRC_BIN="$BENCH_BIN"
else
    if [[ "$DO_BUILD" != 0 ]]; then
        note "cargo build --release"
        (cd "$ROOT" && cargo build --release --quiet) || die "cargo build --release failed"
    fi
    SRC_BIN="$ROOT/target/release/gobuildcache"
fi
[[ -x "$SRC_BIN" ]] || die "helper binary $SRC_BIN missing (build it or set BENCH_BIN)"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/gobuildcache-w4.XXXXXX")"
[[ "$WORK" =~ [[:space:]] ]] && die "temp dir '$WORK' contains whitespace; set TMPDIR to a path without"
cleanup() {
    stop_servers
    if [[ "$KEEP" == 1 ]]; then note "kept $WORK"; else
        chmod -R u+w "$WORK" 2>/dev/null || true
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
# Every job's dirs (~0.7 GB each) stay until the end: deleting thousands of files right before
# a job makes the next job's file creations slow on ext4 (bench/README.md, W4), and that is
# not what a fresh CI machine sees.
FREE_KB=$(df -Pk "$WORK" | awk 'NR == 2 { print $4 }')
((FREE_KB > 24 * 1024 * 1024)) || die "W4 keeps every job's dirs until the end and needs ~24 GB free in $WORK's file system ($((FREE_KB / 1024 / 1024)) GB there)"
mkdir -p "$WORK/bin" "$WORK/logs" "$WORK/stats" "$WORK/runs"
BIN="$WORK/bin/gobuildcache"
cp "$SRC_BIN" "$BIN"
if [[ "$GOCACHER" == 1 ]]; then
    cp "$TOOLS/go-cacher" "$TOOLS/gocached" "$WORK/bin/"
fi

export GOTOOLCHAIN=local GOFLAGS= GOWORK=off GOMODCACHE="$WORK/gomod"
unset GOCACHEPROG
while IFS='=' read -r name _; do
    [[ "$name" == GOBUILDCACHE_* && "$name" != GOBUILDCACHE_TOOLS ]] && unset "$name"
done < <(env)

# --- the module, through the module proxy, then offline -----------------------------------
mod_dir() { go mod download -json "$1" | python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])'; }
note "fetching $MODULE and its dependencies (Go module proxy)"
SRC="$WORK/src"
cp -r "$(mod_dir "$MODULE")" "$SRC" || die "go mod download $MODULE failed"
chmod -R u+w "$SRC"
(cd "$SRC" && go mod download) || die "go mod download in $MODULE failed"
DEP_VERSION=$(cd "$SRC" && go list -m -f '{{.Version}}' "$DEP") || die "$MODULE does not require $DEP"
cp -r "$(mod_dir "$DEP@$DEP_VERSION")" "$WORK/dep"
chmod -R u+w "$WORK/dep"
[[ -f "$WORK/dep/$LEAF" ]] || die "$DEP@$DEP_VERSION has no $LEAF (BENCH_W4_LEAF)"
(cd "$SRC" && go mod edit -replace "$DEP=../dep") || die "go mod edit -replace $DEP failed"
export GOPROXY=off
PKGS=$(cd "$SRC" && go list ./... | wc -l) || die "go list ./... failed in $MODULE"
LEAF_PKG="$DEP/$(dirname "$LEAF")"
USERS=$(cd "$SRC" && go list -test -f '{{.ImportPath}} {{join .Deps " "}} ' ./... | grep -c " $LEAF_PKG " || true)
note "$MODULE: $PKGS packages; $DEP@$DEP_VERSION replaced by a copy; the changed rows edit $LEAF_PKG"

# bump N: the dependency's leaf package gains an exported function (new export data, so every
# package importing it recompiles, and what they export decides how far it goes).
bump() {
    printf '\n// BenchBump%s is added by bench/w4.sh: one dependency changed.\nfunc BenchBump%s() string { return "%s" }\n' \
        "$1" "$1" "$1" >>"$WORK/dep/$LEAF"
}

# --- servers --------------------------------------------------------------------------------
start_moto
start_toxiproxy
add_proxy s3 "$MOTO_PORT" PROXY_PORT
if [[ "$GOCACHER" == 1 ]]; then
    start_gocached "$WORK/bin/gocached"
    add_proxy gocached "$GOCACHED_PORT" GC_PROXY_PORT
fi
set_latency 0

# --- the job ---------------------------------------------------------------------------------
SAMPLES="$WORK/samples.tsv"
printf 'phase\tside\trep\tlat_ms\tstep\tseconds\tstats\tlog\tserver_cpu_s\n' >"$SAMPLES"
# server_cpu: the CPU seconds the servers on this machine (moto_server, toxiproxy, gocached)
# spent, which a real store spends elsewhere; on 2 cores they compete with the compiler.
TICKS=$(getconf CLK_TCK)
server_cpu() {
    local pid total=0
    for pid in "$MOTO_PID" "$TOXI_PID" "$GOCACHED_PID"; do
        [[ -n "$pid" && -r /proc/$pid/stat ]] || continue
        total=$((total + $(awk '{ print $14 + $15 }' "/proc/$pid/stat")))
    done
    echo "$total"
}
STEPS=(build vet test)
step_args() {
    case "$1" in
    build) echo "build ./..." ;;
    vet) echo "vet ./..." ;;
    test) echo "test -count=1 -run ^\$ ./..." ;;
    esac
}

# job PHASE SIDE REP DIR [PREFIX]: the three steps in $SRC, one after another, on GOCACHE
# DIR/gocache and (helpers) the local dir DIR/cache. SIDE: native, ours (S3 key prefix PREFIX
# through toxiproxy at the current latency), gocacher (gocached through toxiproxy).
job() {
    local phase=$1 side=$2 rep=$3 dir=$4 prefix=${5:-} st t0 t1 c0 c1 rc stats log secs total=0
    local -a args renv=()
    mkdir -p "$dir/gocache" "$dir/cache"
    [[ "$side" == ours ]] && mapfile -t renv < <(s3_env "$PROXY_PORT" "$prefix")
    sync
    for st in "${STEPS[@]}"; do
        read -r -a args <<<"$(step_args "$st")"
        local tag="$phase-$side-$rep-${CUR_LAT}ms-$st"
        log="$WORK/logs/$tag.log" stats=- rc=0
        c0=$(server_cpu)
        t0=$(now_ns)
        case "$side" in
        native) (cd "$SRC" && GOCACHE="$dir/gocache" go "${args[@]}") >"$log" 2>&1 || rc=$? ;;
        ours)
            stats="$WORK/stats/$tag.json"
            (cd "$SRC" && env "${renv[@]}" GOCACHE="$dir/gocache" \
                GOCACHEPROG="$BIN -cache-dir $dir/cache -stats-json $stats" go "${args[@]}") >"$log" 2>&1 || rc=$?
            ;;
        gocacher)
            (cd "$SRC" && GOCACHE="$dir/gocache" GOCACHEPROG="$WORK/bin/go-cacher -verbose -cache-dir $dir/cache -cache-server http://127.0.0.1:$GC_PROXY_PORT" \
                go "${args[@]}") >"$log" 2>&1 || rc=$?
            ;;
        esac
        t1=$(now_ns)
        c1=$(server_cpu)
        if ((rc != 0)); then
            tail -n 30 "$log" >&2
            die "$tag: go ${args[*]} failed (exit $rc)"
        fi
        secs=$(secs_between "$t0" "$t1")
        total=$(awk -v a="$total" -v b="$secs" 'BEGIN { printf "%.4f", a + b }')
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$phase" "$side" "$rep" "$CUR_LAT" "$st" "$secs" "$stats" "$log" \
            "$(awk -v a="$c0" -v b="$c1" -v t="$TICKS" 'BEGIN { printf "%.2f", (b - a) / t }')" >>"$SAMPLES"
    done
    printf 'w4: %-8s %-8s #%-2s +%-3s ms %8ss\n' "$phase" "$side" "$rep" "$CUR_LAT" "$total" >&2
}
fresh_dir() { echo "$WORK/runs/$1"; }

START_S=$SECONDS
note "cold: native, then ours filling one S3 prefix per latency, then go-cacher filling gocached"
job cold native 1 "$WORK/native"
i=0
for l in "${LATS[@]}"; do
    i=$((i + 1))
    job cold ours "$i" "$WORK/fill-$l" "lat$l/"
done
[[ "$GOCACHER" == 1 ]] && job cold gocacher 1 "$(fresh_dir gc-fill)"

note "first fresh run after each fill, at its latency"
for l in "${LATS[@]}"; do
    set_latency "$l"
    job first ours 1 "$(fresh_dir "first-$l")" "lat$l/"
done

note "$REPS rep(s): native warm, ours warm-local, then fresh dirs at +${LATS[*]} ms (ours, go-cacher)"
for ((i = 1; i <= REPS; i++)); do
    set_latency 0
    job warm native "$i" "$WORK/native"
    for l in "${LATS[@]}"; do
        set_latency "$l"
        job warm ours "$i" "$WORK/fill-$l" "lat$l/"
        job fresh ours "$i" "$(fresh_dir "fresh-$i-$l")" "lat$l/"
        [[ "$GOCACHER" == 1 ]] && job fresh gocacher "$i" "$(fresh_dir "gc-$i-$l")"
    done
done

LAST=${LATS[-1]}
note "$CHANGED rep(s) of one dependency changed ($LEAF_PKG): native warm, fresh dirs at +$LAST ms"
for ((i = 1; i <= CHANGED; i++)); do
    bump "$i"
    set_latency 0
    job changed native "$i" "$WORK/native"
    set_latency "$LAST"
    job changed ours "$i" "$(fresh_dir "changed-$i")" "lat$LAST/"
    [[ "$GOCACHER" == 1 ]] && job changed gocacher "$i" "$(fresh_dir "gc-changed-$i")"
done
set_latency 0

META="$WORK/meta.env"
{
    echo "date=$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "nproc=$(nproc)"
    echo "cpu=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
    echo "go=$(go version)"
    echo "module=$MODULE"
    echo "packages=$PKGS"
    echo "dep=$DEP@$DEP_VERSION"
    echo "leaf=$LEAF_PKG"
    echo "leaf_users=$USERS"
    echo "reps=$REPS"
    echo "changed=$CHANGED"
    echo "latencies=${LATS[*]}"
    echo "gocacher=$GOCACHER"
    [[ "$GOCACHER" == 1 ]] && echo "gocacher_version=$GOCACHER_MOD $(gocacher_version "$WORK/bin/go-cacher")"
    echo "bin_sha256=$(sha256sum "$BIN" | cut -c1-16)"
    echo "commit=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "load_end=$(cut -d' ' -f1-3 /proc/loadavg)"
    echo "elapsed=$((SECONDS - START_S))"
} >"$META"

write_report "$BENCH_DIR/w4report.py" "$OUT"
