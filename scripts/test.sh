#!/usr/bin/env bash
# The whole test suite: what the README's test command and CI run.
# Needs: cargo, go (GOTOOLCHAIN=local is set by the tests themselves).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo test (unit, protocol, real go builds)"
cargo test --release --all-targets
cargo test --release --doc
