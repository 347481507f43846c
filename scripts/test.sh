#!/usr/bin/env bash
# The whole test suite: what the README's test command and CI run.
# Unit tests, protocol fuzzing (bounded), and integration tests that run the real go
# command with GOCACHEPROG pointing at the freshly built helper.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v go >/dev/null || { echo "the tests need the go command (Go 1.24+)" >&2; exit 1; }

echo "== test servers (moto_server for S3, fake-gcs-server for GCS, toxiproxy for faults)"
bash scripts/test-servers.sh
# pip's script dir, where moto_server lands on a fresh machine, and our tools dir (toxiproxy).
PATH="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):${GOBUILDCACHE_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/gobuildcache-tools}:$PATH"
export PATH

echo "== cargo test (workspace: library, binary, real go builds)"
cargo test --workspace --all-targets
cargo test --workspace --doc

if [ -f scripts/test-ffi.sh ]; then
  echo "== C ABI and Go package"
  bash scripts/test-ffi.sh
fi

echo "== install script and GitHub Action against a local release (scripts/test-install.sh)"
bash scripts/test-install.sh target/debug/gobuildcache

echo "== actionlint: the workflows, the action (through its uses there) and the CI recipes"
actionlint .github/workflows/*.yml examples/github-actions/*.yml
