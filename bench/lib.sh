# Shared by the bench scripts (sourced, not run): where the tools are, the pinned go-cacher,
# and the servers on 127.0.0.1 (moto_server, toxiproxy in front of it, go-cacher's gocached).
# The caller defines die and note, and sets WORK (its private temp dir) before starting a server.
# Globals set here: TOOLS, MOTO_PORT, S3_BUCKET, TOXI_API, PROXIES, CUR_LAT, and PIDs to stop.

TOOLS="${GOBUILDCACHE_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/gobuildcache-tools}"
# Where scripts/test.sh finds its tools: pip's script dir, then our tools dir, then PATH.
PATH="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$TOOLS:$PATH"
export PATH

GOCACHER_VERSION="${BENCH_GOCACHER_VERSION:-v0.0.0-20260722201841-0bb331e19f64}"
GOCACHER_MOD=github.com/bradfitz/go-tool-cache

now_ns() { date +%s%N; }
secs_between() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.4f", (b - a) / 1e9 }'; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_http() { # URL PID LOG NAME
    for ((i = 0; i < 300; i++)); do
        curl -s -o /dev/null "$1" && return 0
        kill -0 "$2" 2>/dev/null || { tail -n 20 "$3" >&2; die "$4 exited"; }
        sleep 0.1
    done
    die "$4 did not answer on $1 within 30 s"
}
stop_pid() {
    if [[ -n "$1" ]]; then
        kill "$1" 2>/dev/null || true
        wait "$1" 2>/dev/null || true
    fi
}

have_servers() { command -v moto_server >/dev/null 2>&1 && command -v toxiproxy-server >/dev/null 2>&1; }

# ensure_gocacher INSTALL TOOL...: the pinned go-cacher binaries in $TOOLS, reinstalled from the
# Go module proxy when another version is there (INSTALL=1), else an error naming the knob.
gocacher_version() { go version -m "$1" 2>/dev/null | awk -v m="$GOCACHER_MOD" '$1 == "mod" && $2 == m { print $3 }'; }
ensure_gocacher() {
    local install=$1 t
    shift
    for t in "$@"; do
        if [[ "$(gocacher_version "$TOOLS/$t")" != "$GOCACHER_VERSION" ]]; then
            [[ "$install" == 1 ]] ||
                die "$t $GOCACHER_VERSION not in $TOOLS (BENCH_INSTALL=1 installs it; BENCH_GOCACHER=0 skips go-cacher)"
            note "installing $t $GOCACHER_VERSION into $TOOLS (Go module proxy)"
            mkdir -p "$TOOLS"
            GOBIN="$TOOLS" GOFLAGS=-buildvcs=false GOTOOLCHAIN=local \
                go install "$GOCACHER_MOD/cmd/$t@$GOCACHER_VERSION" ||
                die "go install $GOCACHER_MOD/cmd/$t@$GOCACHER_VERSION failed (BENCH_GOCACHER=0 skips go-cacher)"
        fi
        [[ -x "$TOOLS/$t" ]] || die "$t missing in $TOOLS after installing (BENCH_GOCACHER=0 skips go-cacher)"
    done
}

# start_moto: moto_server on a free port, bucket $S3_BUCKET and a small object for rtt_ms.
MOTO_PID=""
S3_BUCKET=gobuildcache-bench
start_moto() {
    local code
    MOTO_PORT=$(free_port)
    note "starting moto_server on 127.0.0.1:$MOTO_PORT"
    moto_server -H 127.0.0.1 -p "$MOTO_PORT" >"$WORK/logs/moto.log" 2>&1 &
    MOTO_PID=$!
    wait_http "http://127.0.0.1:$MOTO_PORT/" "$MOTO_PID" "$WORK/logs/moto.log" moto_server
    code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT "http://127.0.0.1:$MOTO_PORT/$S3_BUCKET") || true
    [[ "$code" == 200 ]] || die "creating bucket $S3_BUCKET on moto_server failed (HTTP $code)"
    code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT --data-binary 'calibration' \
        "http://127.0.0.1:$MOTO_PORT/$S3_BUCKET/bench-calibration") || true
    [[ "$code" == 200 ]] || die "putting the calibration object on moto_server failed (HTTP $code)"
}

# s3_env PORT PREFIX: our helper's settings for $S3_BUCKET behind 127.0.0.1:PORT, one per line.
s3_env() {
    printf '%s\n' GOBUILDCACHE_BACKEND=s3 GOBUILDCACHE_S3_BUCKET="$S3_BUCKET" \
        GOBUILDCACHE_S3_PREFIX="$2" GOBUILDCACHE_AWS_ENDPOINT_URL_S3="http://127.0.0.1:$1" \
        GOBUILDCACHE_AWS_S3_USE_PATH_STYLE=true GOBUILDCACHE_AWS_REGION=us-east-1 \
        GOBUILDCACHE_AWS_ACCESS_KEY_ID=testing GOBUILDCACHE_AWS_SECRET_ACCESS_KEY=testing
}

# start_gocached: go-cacher's HTTP cache server on a free port (GOCACHED_PORT), cache in
# $WORK/gocached.
GOCACHED_PID=""
start_gocached() { # BIN
    GOCACHED_PORT=$(free_port)
    mkdir -p "$WORK/gocached"
    note "starting gocached on 127.0.0.1:$GOCACHED_PORT"
    "$1" -cache-dir "$WORK/gocached" -listen "127.0.0.1:$GOCACHED_PORT" >"$WORK/logs/gocached.log" 2>&1 &
    GOCACHED_PID=$!
    wait_http "http://127.0.0.1:$GOCACHED_PORT/" "$GOCACHED_PID" "$WORK/logs/gocached.log" gocached
}

# --- toxiproxy: latency between a helper and its server ------------------------------------
TOXI_PID=""
PROXIES=()
CUR_LAT=-
start_toxiproxy() {
    TOXI_API=$(free_port)
    note "starting toxiproxy-server (API on 127.0.0.1:$TOXI_API)"
    toxiproxy-server -host 127.0.0.1 -port "$TOXI_API" >"$WORK/logs/toxiproxy.log" 2>&1 &
    TOXI_PID=$!
    wait_http "http://127.0.0.1:$TOXI_API/version" "$TOXI_PID" "$WORK/logs/toxiproxy.log" toxiproxy-server
}
toxi_api() { # METHOD PATH [JSON]: fails on an HTTP error
    local code
    local -a body=()
    [[ $# -ge 3 ]] && body=(-H 'Content-Type: application/json' -d "$3")
    code=$(curl -s -o "$WORK/logs/toxi-api.out" -w '%{http_code}' -X "$1" \
        "http://127.0.0.1:$TOXI_API/$2" "${body[@]}") || code=000
    [[ "$code" == 2* ]] || { cat "$WORK/logs/toxi-api.out" >&2; die "toxiproxy API $1 /$2 failed (HTTP $code)"; }
}
# add_proxy NAME UPSTREAM_PORT VAR: a proxy to 127.0.0.1:UPSTREAM_PORT; its port goes into VAR.
add_proxy() {
    local port
    port=$(free_port)
    toxi_api POST proxies "{\"name\":\"$1\",\"listen\":\"127.0.0.1:$port\",\"upstream\":\"127.0.0.1:$2\",\"enabled\":true}"
    PROXIES+=("$1")
    printf -v "$3" '%s' "$port"
}
# set_latency MS: the added round trip, split over the two directions. toxiproxy's latency toxic
# delays each chunk by its value after it arrives (chunks pipeline), so one request and its
# response together gain up + down = MS; the TCP handshake is not delayed.
set_latency() {
    local ms=$1 up down px
    up=$((ms / 2))
    down=$((ms - up))
    for px in "${PROXIES[@]}"; do
        curl -s -o /dev/null -X DELETE "http://127.0.0.1:$TOXI_API/proxies/$px/toxics/lat_up" || true
        curl -s -o /dev/null -X DELETE "http://127.0.0.1:$TOXI_API/proxies/$px/toxics/lat_down" || true
        if ((ms > 0)); then
            toxi_api POST "proxies/$px/toxics" \
                "{\"name\":\"lat_up\",\"type\":\"latency\",\"stream\":\"upstream\",\"attributes\":{\"latency\":$up,\"jitter\":0}}"
            toxi_api POST "proxies/$px/toxics" \
                "{\"name\":\"lat_down\",\"type\":\"latency\",\"stream\":\"downstream\",\"attributes\":{\"latency\":$down,\"jitter\":0}}"
        fi
    done
    CUR_LAT=$ms
}
# rtt_ms PORT: "MEDIAN MIN" time of 30 small GETs on one keep-alive connection (the first,
# which connects, is dropped), in ms. Other load only adds time, so the minimum is the steadier.
rtt_ms() {
    local url="http://127.0.0.1:$1/$S3_BUCKET/bench-calibration"
    local -a a=()
    for ((k = 0; k < 31; k++)); do a+=(-o /dev/null -w '%{time_total}\n' "$url"); done
    curl -s "${a[@]}" | tail -n +2 | sort -g |
        awk '{ v[NR] = $1 } END { printf "%.2f %.2f", v[int((NR + 1) / 2)] * 1000, v[1] * 1000 }'
}
stop_servers() {
    stop_pid "$TOXI_PID"
    stop_pid "$GOCACHED_PID"
    stop_pid "$MOTO_PID"
}

# write_report REPORT_PY OUT: renders $SAMPLES and $META with REPORT_PY, prints the report and
# copies it to OUT ("-": nowhere).
write_report() {
    local report="$WORK/report.md"
    python3 "$1" "$SAMPLES" "$META" >"$report"
    cat "$report"
    if [[ "$2" != - ]]; then
        mkdir -p "$(dirname "$2")"
        cp "$report" "$2"
        note "wrote $2"
    fi
}
