#!/usr/bin/env bash
# scripts/install.sh against a release served by a real HTTP server on 127.0.0.1
# (python3 -m http.server), laid out by scripts/package-release.sh exactly as the release
# workflow lays it out and as GitHub serves it (<url>/download/v<V>/..., <url>/latest/download/...).
# A good archive installs and runs (and serves a real go build); a tampered archive, a missing
# sums entry, an unknown platform and an unknown version each fail with one line and install
# nothing. The installer runs under /bin/sh (dash on Debian): it must stay POSIX.
#
#   bash scripts/test-install.sh [BINARY]    (default target/debug/gobuildcache, built if missing)
set -euo pipefail
cd "$(dirname "$0")/.."

fail() {
    echo "test-install: FAIL: $*" >&2
    exit 1
}
for tool in python3 curl go tar gzip sha256sum; do
    command -v "$tool" >/dev/null || fail "'$tool' is required but not on PATH"
done

bin=${1:-target/debug/gobuildcache}
if [ $# -eq 0 ] && [ ! -x "$bin" ]; then
    cargo build -q --bin gobuildcache
fi
[ -x "$bin" ] || fail "no binary at $bin"
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
# The action pins its own release, and the recipes pin the action: all one version.
grep -q "^    default: \"$version\"" action.yml || fail "action.yml's version input is not $version"
for f in examples/github-actions/*.yml README.md; do
    if grep -o 'gobuildcache/gobuildcache\(/summary\)\{0,1\}@v[0-9.]*' "$f" | grep -v "@v$version\$"; then
        fail "$f uses another version of the action than v$version"
    fi
done

case $(uname -m) in
x86_64 | amd64) cpu=x86_64 ;;
aarch64 | arm64) cpu=aarch64 ;;
*) fail "no release target for this machine's CPU: $(uname -m)" ;;
esac
case $(uname -s) in
Linux) target=$cpu-unknown-linux-musl other=aarch64-apple-darwin ;;
Darwin) target=$cpu-apple-darwin other=x86_64-unknown-linux-musl ;;
*) fail "no release target for $(uname -s)" ;;
esac

work=$(mktemp -d)
server=
cleanup() {
    [ -n "$server" ] && kill "$server" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

# One release tree per case, each a copy of the good one with one thing wrong.
release() { # release NAME: www/NAME/releases/{download/v$version,latest/download}
    local d=$work/www/$1/releases
    mkdir -p "$d/download/v$version" "$d/latest"
    ln -s "../download/v$version" "$d/latest/download"
    echo "$d/download/v$version"
}
good=$(release good)
bash scripts/package-release.sh archive "$target" "$bin" "$good"
# Another platform's archive (any bytes), so the sums file has several lines as a real one does.
printf 'not this platform\n' >"$work/other"
bash scripts/package-release.sh archive "$other" "$work/other" "$good"
bash scripts/package-release.sh sums "$good"
[ "$(wc -l <"$good/sha256sums.txt")" -eq 2 ] || fail "sums file: $(cat "$good/sha256sums.txt")"

tampered=$(release tampered)
cp "$good"/* "$tampered/"
# One byte changed inside the compressed data: still the right size, no longer the right hash.
printf 'X' | dd of="$tampered/gobuildcache-$target.tar.gz" bs=1 seek=200 conv=notrunc 2>/dev/null
nosum=$(release nosum)
cp "$good"/* "$nosum/"
grep -v "gobuildcache-$target.tar.gz" "$good/sha256sums.txt" >"$nosum/sha256sums.txt"

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
python3 -m http.server --bind 127.0.0.1 --directory "$work/www" "$port" >"$work/http.log" 2>&1 &
server=$!
url=http://127.0.0.1:$port
for _ in $(seq 100); do
    curl -fsS -o /dev/null "$url/good/releases/download/v$version/sha256sums.txt" 2>/dev/null && break
    kill -0 "$server" 2>/dev/null || fail "http.server died: $(cat "$work/http.log")"
    sleep 0.1
done
curl -fsS -o /dev/null "$url/good/releases/latest/download/sha256sums.txt" ||
    fail "the test server does not serve the release"

# install CASE [ARGS...]: runs the installer with the release CASE; sets out, err, rc.
install() {
    local case=$1
    shift
    rc=0
    GOBUILDCACHE_DOWNLOAD_URL=$url/$case/releases sh scripts/install.sh "$@" \
        >"$work/out" 2>"$work/err" || rc=$?
    out=$(cat "$work/out")
    err=$(cat "$work/err")
}
# expect_refused WHAT PATTERN DIR: failed, one line on stderr matching PATTERN, DIR unchanged.
expect_refused() {
    [ "$rc" -ne 0 ] || fail "$1: the installer succeeded: $out"
    [ "$(printf '%s\n' "$err" | wc -l)" -eq 1 ] || fail "$1: not one line: $err"
    [[ $err == *$2* ]] || fail "$1: expected '$2' in: $err"
    [ "$(ls -A "$3")" = "old" ] || fail "$1: $3 changed: $(ls -A "$3")"
    [ "$(cat "$3/old")" = "untouched" ] || fail "$1: $3/old changed"
    echo "ok: $1: $err"
}
fresh_dir() { # a dir holding only a file named old
    mkdir -p "$work/$1"
    echo untouched >"$work/$1/old"
    echo "$work/$1"
}

echo "== a good archive installs, runs and serves a go build (from an empty dir)"
t0=$(date +%s.%N)
install good "$version" --dir "$work/good-bin"
[ "$rc" -eq 0 ] || fail "good: exit $rc: $err"
[[ $out == *"gobuildcache $version installed in $work/good-bin/gobuildcache"* ]] || fail "good: $out"
[ "$("$work/good-bin/gobuildcache" --version)" = "gobuildcache $version" ] || fail "good: --version"
cmp "$bin" "$work/good-bin/gobuildcache" || fail "good: not the released binary"
[ "$(ls -A "$work/good-bin")" = "gobuildcache" ] || fail "good: left files: $(ls -A "$work/good-bin")"
t1=$(date +%s.%N)
mod=$work/hello
mkdir -p "$mod"
printf 'module example.com/hello\n\ngo 1.22\n' >"$mod/go.mod"
# No imports: the cold build compiles the runtime only (the test is about the install).
printf 'package main\n\nfunc main() { println("hello") }\n' >"$mod/main.go"
# A directory as the shared remote (an NFS mount in real life): this build fills it, and the
# action's jobs below, on fresh machines, are served by it.
mkdir -p "$work/shared"
(
    cd "$mod"
    GOTOOLCHAIN=local GOFLAGS= GOCACHE="$work/gocache" GOBUILDCACHE_CACHE_DIR="$work/cache" \
        GOBUILDCACHE_STATS_JSON="$work/stats.json" GOBUILDCACHE_PRINT_STATS=false \
        GOBUILDCACHE_REMOTE_DIR="$work/shared" \
        GOCACHEPROG="$work/good-bin/gobuildcache" go build -o hello .
) || fail "good: go build with the installed helper failed"
t2=$(date +%s.%N)
[ "$("$mod/hello" 2>&1)" = hello ] || fail "good: the built program"
grep -q '"puts": *[1-9]' "$work/stats.json" || fail "good: the helper stored nothing: $(cat "$work/stats.json")"
echo "ok: installed in $(awk "BEGIN { printf \"%.2f\", $t1 - $t0 }") s; empty dir to a go build through the cache (cold) in $(awk "BEGIN { printf \"%.2f\", $t2 - $t0 }") s"

echo "== latest (no version), into a dir that does not exist yet"
install good --dir "$work/latest/bin"
[ "$rc" -eq 0 ] || fail "latest: exit $rc: $err"
"$work/latest/bin/gobuildcache" --version >/dev/null || fail "latest: does not run"
echo "ok: latest: $(head -n 1 <<<"$out")"

echo "== refused, nothing installed"
d=$(fresh_dir tampered)
install tampered "$version" --dir "$d"
expect_refused "tampered archive" "checksum mismatch for gobuildcache-$target.tar.gz" "$d"
d=$(fresh_dir nosum)
install nosum "$version" --dir "$d"
expect_refused "missing sums entry" "has no entry for gobuildcache-$target.tar.gz" "$d"
d=$(fresh_dir unknown-version)
install good 9.9.9 --dir "$d"
expect_refused "unknown version" "cannot download" "$d"
# Another OS / CPU: uname answers as a machine there would.
mkdir -p "$work/fake"
for platform in "FreeBSD x86_64" "Linux riscv64" "Darwin ppc"; do
    printf '#!/bin/sh\ncase $1 in -s) echo %s ;; -m) echo %s ;; *) exit 1 ;; esac\n' $platform >"$work/fake/uname"
    chmod +x "$work/fake/uname"
    d=$(fresh_dir "platform-${platform// /-}")
    PATH=$work/fake:$PATH install good "$version" --dir "$d"
    expect_refused "unknown platform $platform" "no release binary for ${platform// //}" "$d"
done

echo "== the GitHub Action (action.yml, then summary/action.yml), step by step as the runner runs them"
# Two jobs on fresh machines sharing the directory the first build filled: both are served by it.
action() { GOBUILDCACHE_DOWNLOAD_URL=$url/good/releases python3 scripts/action-runner.py "$@"; }
job_build() { # job_build STATE: a go build in a fresh GOCACHE with the job's environment
    action "$1" --exec sh -c 'cd "$1" && GOTOOLCHAIN=local GOFLAGS= GOCACHE="$2" go build -o hello .' \
        _ "$mod" "$1/gocache" || fail "action: go build in $1"
}
t0=$(date +%s.%N)
for job in job1 job2; do
    action "$work/$job" . "version=$version" backend=disk "remote-dir=$work/shared" \
        >"$work/$job.out" 2>&1 || fail "action $job: $(cat "$work/$job.out")"
    job_build "$work/$job"
    [ "$job" = job2 ] || t1=$(date +%s.%N)
    action "$work/$job" summary >"$work/$job.summary-out" 2>&1 || fail "summary $job: $(cat "$work/$job.summary-out")"
done
action "$work/job2" --exec sh -c '
    [ "$(command -v gobuildcache)" = "$RUNNER_TEMP/gobuildcache/bin/gobuildcache" ] &&
    [ "$GOCACHEPROG" = "$RUNNER_TEMP/gobuildcache/bin/gobuildcache" ] &&
    [ "$GOBUILDCACHE_BACKEND" = disk ] && [ "$GOBUILDCACHE_REMOTE_DIR" = "$1" ] &&
    [ "$GOBUILDCACHE_READ_ONLY" = false ] &&
    [ "$GOBUILDCACHE_CACHE_DIR" = "$RUNNER_TEMP/gobuildcache/cache" ] &&
    [ "$GOBUILDCACHE_STATS_JSON" = "$RUNNER_TEMP/gobuildcache/stats.json" ]' _ "$work/shared" ||
    fail "action: the job's environment: $(action "$work/job2" --exec env | grep -E '^(GOCACHEPROG|GOBUILDCACHE_)')"
sum=$work/job2/summary.md
grep -q '^### gobuildcache' "$sum" || fail "action: no job summary: $(cat "$sum")"
for job in job1 job2; do
    grep -q '"remote_hits": *[1-9]' "$work/$job/summary.md" ||
        fail "action: $job was not served by the shared remote: $(cat "$work/$job/summary.md")"
done
echo "ok: action: two jobs on fresh machines served by the shared remote (job summaries); the first, from an empty dir to a go build served by the cache: $(awk "BEGIN { printf \"%.2f\", $t1 - $t0 }") s"

# masked_once WHAT LOG SECRET: the action's log masks SECRET and prints it nowhere else.
masked_once() {
    grep -qx "::add-mask::$3" "$2" || fail "action $1: the secret was not masked"
    [ "$(grep -c "$3" "$2")" -eq 1 ] || fail "action $1: the secret was printed"
}
# S3 inputs map to GOBUILDCACHE_*; static keys are masked for the log and never echoed.
action "$work/job3" . "version=$version" backend=s3 bucket=bkt prefix=team/ region=eu-west-1 \
    endpoint-url=http://127.0.0.1:9 path-style=true aws-access-key-id=AKIDTESTVALUE \
    aws-secret-access-key=SECRETTESTVALUE read-only=true >"$work/job3.out" 2>&1 ||
    fail "action s3: $(cat "$work/job3.out")"
action "$work/job3" --exec sh -c '
    [ "$GOBUILDCACHE_BACKEND" = s3 ] && [ "$GOBUILDCACHE_S3_BUCKET" = bkt ] &&
    [ "$GOBUILDCACHE_S3_PREFIX" = team/ ] && [ "$GOBUILDCACHE_AWS_REGION" = eu-west-1 ] &&
    [ "$GOBUILDCACHE_AWS_ENDPOINT_URL_S3" = http://127.0.0.1:9 ] &&
    [ "$GOBUILDCACHE_AWS_S3_USE_PATH_STYLE" = true ] && [ "$GOBUILDCACHE_READ_ONLY" = true ] &&
    [ "$GOBUILDCACHE_AWS_ACCESS_KEY_ID" = AKIDTESTVALUE ] &&
    [ "$GOBUILDCACHE_AWS_SECRET_ACCESS_KEY" = SECRETTESTVALUE ] &&
    [ -z "${GOBUILDCACHE_AWS_SESSION_TOKEN:-}" ] && [ -z "${GOBUILDCACHE_GCS_BUCKET:-}" ]' ||
    fail "action s3: $(action "$work/job3" --exec env | grep -E '^GOBUILDCACHE_' | grep -v SECRET)"
masked_once s3 "$work/job3.out" SECRETTESTVALUE
echo "ok: action: s3 inputs mapped, keys masked"
# The default prefix is the repository's name.
action "$work/job4" . "version=$version" backend=gcs bucket=g >"$work/job4.out" 2>&1 ||
    fail "action gcs: $(cat "$work/job4.out")"
action "$work/job4" --exec sh -c '[ "$GOBUILDCACHE_GCS_PREFIX" = "$GITHUB_REPOSITORY/" ]' ||
    fail "action gcs: prefix"
if action "$work/job5" . "version=$version" backend=s3 >"$work/job5.out" 2>&1; then
    fail "action: backend s3 without a bucket was accepted"
fi
grep -q '::error::gobuildcache: backend s3 needs the bucket input' "$work/job5.out" || fail "action: $(cat "$work/job5.out")"
echo "ok: action: gcs prefix defaults to the repository, s3 without a bucket is refused"
# Azure and HTTP: the bucket input is the container; the prefix goes to the store chosen;
# their secrets are masked like the S3 keys.
action "$work/job6" . "version=$version" backend=azure bucket=cont azure-storage-account=acct \
    azure-sas-token=SASTESTVALUE >"$work/job6.out" 2>&1 || fail "action azure: $(cat "$work/job6.out")"
action "$work/job6" --exec sh -c '
    [ "$GOBUILDCACHE_BACKEND" = azure ] && [ "$GOBUILDCACHE_AZURE_CONTAINER" = cont ] &&
    [ "$GOBUILDCACHE_AZURE_PREFIX" = "$GITHUB_REPOSITORY/" ] &&
    [ "$GOBUILDCACHE_AZURE_STORAGE_ACCOUNT" = acct ] &&
    [ "$GOBUILDCACHE_AZURE_STORAGE_SAS_TOKEN" = SASTESTVALUE ] &&
    [ -z "${GOBUILDCACHE_S3_BUCKET:-}" ] && [ -z "${GOBUILDCACHE_HTTP_URL:-}" ]' ||
    fail "action azure: $(action "$work/job6" --exec env | grep -E '^GOBUILDCACHE_' | grep -v SAS)"
masked_once azure "$work/job6.out" SASTESTVALUE
action "$work/job7" . "version=$version" backend=http http-url=https://cache.lan/go/ prefix=t/ \
    http-token=BEARERTESTVALUE >"$work/job7.out" 2>&1 || fail "action http: $(cat "$work/job7.out")"
action "$work/job7" --exec sh -c '
    [ "$GOBUILDCACHE_BACKEND" = http ] && [ "$GOBUILDCACHE_HTTP_URL" = https://cache.lan/go/ ] &&
    [ "$GOBUILDCACHE_HTTP_PREFIX" = t/ ] && [ "$GOBUILDCACHE_HTTP_TOKEN" = BEARERTESTVALUE ]' ||
    fail "action http: $(action "$work/job7" --exec env | grep -E '^GOBUILDCACHE_' | grep -v TOKEN)"
masked_once http "$work/job7.out" BEARERTESTVALUE
for refused in "backend=http|backend http needs the http-url input" \
    "backend=azure|backend azure needs the bucket input" \
    "backend=minio|backend must be disk, s3, gcs, azure or http, not minio"; do
    if action "$work/job8" . "version=$version" "${refused%%|*}" >"$work/job8.out" 2>&1; then
        fail "action: ${refused%%|*} was accepted"
    fi
    grep -q "::error::gobuildcache: ${refused#*|}" "$work/job8.out" || fail "action: ${refused%%|*}: $(cat "$work/job8.out")"
done
echo "ok: action: azure and http inputs mapped, secrets masked; incomplete or unknown backends refused"

echo "test-install: all passed"
