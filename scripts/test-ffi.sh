#!/usr/bin/env bash
# The C ABI and its consumers: the ffi crate's tests, the header's freshness, the C example,
# the Go package (vet, race, debug/GOGC=1), the Go example, and both the crate and the Go
# package used from new projects outside the repository. Run from anywhere; CI runs it from a
# clean clone. Needs: cargo, gcc, go (with cgo), git, python3, moto_server (scripts/test.sh
# puts it on PATH).
set -euo pipefail
cd "$(dirname "$0")/.."

need() {
    command -v "$1" >/dev/null 2>&1 || {
        echo "test-ffi: '$1' is required but not on PATH" >&2
        exit 1
    }
}
for tool in cargo gcc go git; do need "$tool"; done

export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=1

# The ffi crate's Rust tests run with the workspace in scripts/test.sh; here only the header.
echo "== ffi: regenerate include/gobuildcache.h and compare with the checked-in one"
GBC_UPDATE_HEADER=1 cargo test -q -p gobuildcache-ffi --test tests header
git diff --exit-code -- include/ || {
    echo "test-ffi: include/gobuildcache.h is stale; commit the regenerated header" >&2
    exit 1
}

echo "== ffi: static library (also where the Go package links it: go/lib/<GOOS>-<GOARCH>/)"
bash scripts/build-go-lib.sh
lib=target/release/libgobuildcache_ffi.a
test -f "$lib" || { echo "test-ffi: $lib was not built" >&2; exit 1; }

echo "== C example (gcc -Wall -Wextra -Werror, ASan/UBSan)"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
gcc -std=c11 -Wall -Wextra -Werror -Wpedantic -fsanitize=address,undefined \
    -Iinclude examples/c/main.c "$lib" -lgcc_s -lutil -lrt -lpthread -lm -ldl \
    -o "$work/c-example"
"$work/c-example" "$work/c-cache" >"$work/c.out" 2>"$work/c.err" || {
    cat "$work/c.out" "$work/c.err" >&2
    echo "test-ffi: the C example failed" >&2
    exit 1
}
cat "$work/c.out"
expect() { # expect FILE LINE-PATTERN: one line of FILE matches the extended regex
    grep -Eq -- "$2" "$1" || {
        echo "test-ffi: no line matching '$2' in the output above" >&2
        exit 1
    }
}
expect "$work/c.out" '^abi [0-9]+$'
expect "$work/c.out" '^get: miss$'
expect "$work/c.out" '^put: size 13$'
expect "$work/c.out" '^get: hit size 13, output id matches: yes$'
expect "$work/c.out" '^disk path holds the body: yes$'
expect "$work/c.out" '^put tampered: code 9: integrity check failed'
expect "$work/c.out" '^get short id: code 7: '
expect "$work/c.out" '^get null id: code 1: '
expect "$work/c.out" '^stats: puts=1 yes, hits=1 yes$'
expect "$work/c.out" '^get after close: code 4: '
expect "$work/c.out" '^done$'
abi_header=$(sed -n 's/^#define GBC_ABI_VERSION \([0-9]*\)$/\1/p' include/gobuildcache.h)
expect "$work/c.out" "^abi ${abi_header}\$"

echo "== Go package: gofmt, vet, test -race, test -tags debug with GOGC=1"
(
    cd go
    unformatted=$(gofmt -l .)
    if [ -n "$unformatted" ]; then
        echo "test-ffi: gofmt needed on: $unformatted" >&2
        exit 1
    fi
    go vet ./...
    go test -race -count=1 ./...
    GOGC=1 go test -tags debug -count=1 ./...
)

echo "== Go example"
(
    cd examples/go
    unformatted=$(gofmt -l .)
    if [ -n "$unformatted" ]; then
        echo "test-ffi: gofmt needed on: $unformatted" >&2
        exit 1
    fi
    go vet ./...
    go build -o "$work/artifact" .
)
printf 'report\n' >"$work/report.txt"
export GOBUILDCACHE_CACHE_DIR="$work/go-cache"
if "$work/artifact" -key k -get >"$work/go.out"; then
    echo "test-ffi: the Go example hit an empty cache" >&2
    exit 1
fi
expect "$work/go.out" '^miss$'
"$work/artifact" -key k -put "$work/report.txt" >"$work/go.out"
expect "$work/go.out" '^stored 7 bytes, output [0-9a-f]{64}$'
"$work/artifact" -key k -get -stats >"$work/go.out"
path=$(head -n1 "$work/go.out")
cmp "$path" "$work/report.txt"
expect "$work/go.out" '"hits":1,'
unset GOBUILDCACHE_CACHE_DIR

echo "== the crate and the Go package from outside the repository (README snippets)"
bash scripts/test-consumers.sh

echo "test-ffi: all passed"
