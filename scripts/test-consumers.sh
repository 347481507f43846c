#!/usr/bin/env bash
# The crate and the Go package as users outside this repository take them, each driven by
# the README's own snippet (the code block after each "tested:" marker):
#   Go:   a copy of go/ laid out as a release tag ships it (its tracked files plus this
#         machine's static library, nothing from ../) is required by a new module in a temp
#         dir, which passes go vet and go test -race, its test driving real go builds
#         through the README's Serve helper.
#   Rust: a new cargo project depends on the crate by path and runs the README's
#         #[tokio::main] program against a real S3 server (moto_server); the object lands.
# Needs cargo, go (cgo, a C compiler), python3, git, moto_server on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
export GOTOOLCHAIN=local CGO_ENABLED=1 GOFLAGS=-mod=mod
work=$(mktemp -d)
moto_pid=
cleanup() {
    [ -n "$moto_pid" ] && kill "$moto_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

# snippet LANG: the first ```LANG block after the README's "tested:" marker for that language.
snippet() {
    awk -v lang="$1" '
        /<!-- tested:/ { armed = 1; next }
        armed && $0 == "```" lang { inside = 1; next }
        inside && $0 == "```" { exit }
        inside { print }
    ' README.md
}
[ -n "$(snippet go)" ] && [ -n "$(snippet rust)" ] || {
    echo "test-consumers: README.md lost a tested snippet" >&2
    exit 1
}

echo "== Go: a new module requires the package as a release lays it out"
bash scripts/build-go-lib.sh >/dev/null
platform="$(go env GOOS)-$(go env GOARCH)"
mod="$work/gobuildcache-go"
git ls-files go | while IFS= read -r f; do
    mkdir -p "$mod/$(dirname "${f#go/}")"
    cp "$f" "$mod/${f#go/}"
done
mkdir -p "$mod/lib/$platform"
cp "go/lib/$platform/libgobuildcache_ffi.a" "$mod/lib/$platform/"
if grep -rn '\.\./' "$mod" --include='*.go' | grep -v '//go:generate' | grep -q '#cgo'; then
    echo "test-consumers: a #cgo line reaches outside the module" >&2
    exit 1
fi
app="$work/consumer-go"
mkdir -p "$app"
cat >"$app/go.mod" <<MOD
module example.com/consumer

go 1.24

require github.com/gobuildcache/gobuildcache/go v0.0.0

replace github.com/gobuildcache/gobuildcache/go => $mod
MOD
snippet go >"$app/main.go"
cat >"$app/main_test.go" <<'TEST'
package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// The helper serves real go builds: a second build in a fresh GOCACHE hits.
func TestServeDrivesGoBuild(t *testing.T) {
	dir := t.TempDir()
	helper := filepath.Join(dir, "helper")
	if out, err := exec.Command("go", "build", "-o", helper, ".").CombinedOutput(); err != nil {
		t.Fatalf("building the helper: %v\n%s", err, out)
	}
	mod := filepath.Join(dir, "hello")
	os.MkdirAll(mod, 0o755)
	os.WriteFile(filepath.Join(mod, "go.mod"), []byte("module example.com/hello\n\ngo 1.22\n"), 0o644)
	os.WriteFile(filepath.Join(mod, "main.go"), []byte("package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"hi\") }\n"), 0o644)
	for i, gocache := range []string{"gocache1", "gocache2"} {
		stats := filepath.Join(dir, "stats.json")
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, "hello-bin"), ".")
		cmd.Dir = mod
		cmd.Env = append(os.Environ(),
			"GOCACHEPROG="+helper,
			"GOCACHE="+filepath.Join(dir, gocache),
			"GOBUILDCACHE_CACHE_DIR="+filepath.Join(dir, "cache"),
			"GOBUILDCACHE_STATS_JSON="+stats,
			"GOBUILDCACHE_PRINT_STATS=false")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %d: %v\n%s", i, err, out)
		}
		var s struct{ Hits, Misses, Puts uint64 }
		b, err := os.ReadFile(stats)
		if err != nil || json.Unmarshal(b, &s) != nil {
			t.Fatalf("stats %d: %v %s", i, err, b)
		}
		if i == 0 && s.Puts == 0 {
			t.Fatalf("the cold build stored nothing: %+v", s)
		}
		// The link of the main package is asked for and not stored by the go
		// command; everything else hits.
		if i == 1 && (s.Hits == 0 || s.Misses > 1) {
			t.Fatalf("the warm build was not served from the cache: %+v", s)
		}
	}
}
TEST
(
    cd "$app"
    go vet ./...
    go test -race -count=1 ./...
)

echo "== Rust: a new #[tokio::main] project uses the crate with an S3 remote"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
moto_server -H 127.0.0.1 -p "$port" >"$work/moto.log" 2>&1 &
moto_pid=$!
endpoint="http://127.0.0.1:$port"
python3 - "$endpoint" <<'PY'
import sys, time, urllib.request
for _ in range(200):
    try:
        urllib.request.urlopen(urllib.request.Request(sys.argv[1] + "/consumer", method="PUT"), timeout=2)
        sys.exit(0)
    except OSError:
        time.sleep(0.1)
sys.exit("moto_server did not start")
PY
crate="$work/consumer-rust"
mkdir -p "$crate/src"
cat >"$crate/Cargo.toml" <<TOML
[package]
name = "consumer"
version = "0.1.0"
edition = "2021"

[dependencies]
gobuildcache = { path = "$repo" }
tokio = { version = "1", features = ["macros", "rt-multi-thread"] }

[workspace]
TOML
snippet rust >"$crate/src/main.rs"
# The repository's lock file and (debug) target dir: most dependencies are already built by
# the test suite; those whose features the workspace's dev-dependencies widen build again.
cp Cargo.lock "$crate/Cargo.lock"
CARGO_TARGET_DIR="$repo/target" cargo build --quiet --manifest-path "$crate/Cargo.toml"
GOBUILDCACHE_BACKEND=s3 GOBUILDCACHE_S3_BUCKET=consumer \
GOBUILDCACHE_AWS_ENDPOINT_URL_S3="$endpoint" GOBUILDCACHE_AWS_S3_USE_PATH_STYLE=true \
GOBUILDCACHE_AWS_REGION=us-east-1 GOBUILDCACHE_AWS_ACCESS_KEY_ID=testing \
GOBUILDCACHE_AWS_SECRET_ACCESS_KEY=testing GOBUILDCACHE_CACHE_DIR="$work/rust-cache" \
GOBUILDCACHE_PRINT_STATS=false \
    "$repo/target/debug/consumer" | tee "$work/rust.out"
grep -q '^11 bytes at /' "$work/rust.out"
grep -q '^uploads left: 0$' "$work/rust.out"
key="gobuildcache/$(printf '07%.0s' $(seq 32))"
python3 - "$endpoint" "$key" <<'PY'
import sys, urllib.request
body = urllib.request.urlopen(sys.argv[1] + "/consumer?list-type=2").read().decode()
if "<Key>%s</Key>" % sys.argv[2] not in body:
    sys.exit("the put did not reach the bucket: " + body)
PY
echo "test-consumers: all passed"
