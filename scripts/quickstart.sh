#!/usr/bin/env bash
# Installs gobuildcache and runs a real build with it on the default local disk tier:
# a cold build fills the cache, a second build in a fresh GOCACHE is served from it.
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
export GOTOOLCHAIN=local GOCACHEPROG=gobuildcache
echo "== cold build: fills the local cache"
GOCACHE="$work/gocache1" go build -o hello .
echo "== warm build in a fresh GOCACHE: served by gobuildcache"
GOCACHE="$work/gocache2" go build -o hello .
./hello
