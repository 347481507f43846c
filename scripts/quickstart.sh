#!/usr/bin/env bash
# Installs gobuildcache and runs a real build with it on the local disk tier: a cold build
# fills the cache, a second build in a fresh GOCACHE is served from it. The demo caches in a
# private temp dir (removed at the end), so the cold build is really cold and your own cache
# is left alone; without GOBUILDCACHE_CACHE_DIR the helper uses the default dir printed below.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo install --path . --locked --quiet
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
command -v go >/dev/null || { echo "install Go 1.24+ first" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/hello"
cat > "$work/hello/go.mod" <<'MOD'
module example.com/hello

go 1.22
MOD
cat > "$work/hello/main.go" <<'SRC'
package main

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
)

func main() {
	u, _ := url.Parse("https://example.com/?q=gobuildcache")
	json.NewEncoder(os.Stdout).Encode(u.Query())
	fmt.Println("built with GOCACHEPROG=gobuildcache")
}
SRC
cd "$work/hello"
export GOTOOLCHAIN=local GOCACHEPROG=gobuildcache GOBUILDCACHE_CACHE_DIR="$work/cache"
echo "== cold build: fills the local cache"
GOCACHE="$work/gocache1" go build -o hello .
echo "== warm build in a fresh GOCACHE: served by gobuildcache"
GOCACHE="$work/gocache2" go build -o hello .
./hello
case "$(uname -s)" in
    Darwin) default_dir="$HOME/Library/Caches/gobuildcache" ;;
    *) default_dir="${XDG_CACHE_HOME:-$HOME/.cache}/gobuildcache" ;;
esac
echo "== the demo cached in $work/cache (now removed); your own builds cache in $default_dir"
echo "   unless -cache-dir or GOBUILDCACHE_CACHE_DIR says otherwise."
echo "   The binary is in ${CARGO_HOME:-$HOME/.cargo}/bin: put that dir on PATH."
