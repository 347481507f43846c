#!/bin/sh
# The release layout, in one place: .github/workflows/release.yml and scripts/test-install.sh
# both call this, so the install script is tested against what a release really holds.
#
#   package-release.sh archive TARGET BINARY OUTDIR   OUTDIR/gobuildcache-TARGET.tar.gz
#   package-release.sh sums OUTDIR                    OUTDIR/sha256sums.txt over its archives
#
# An archive holds one directory, gobuildcache-TARGET/, with the binary and README.md. Names
# carry no version, so <releases>/latest/download/<name> always works.
set -eu
die() {
    echo "package-release: $*" >&2
    exit 1
}
root=$(cd "$(dirname "$0")/.." && pwd)

case ${1:-} in
archive)
    [ $# -eq 4 ] || die "usage: package-release.sh archive TARGET BINARY OUTDIR"
    target=$2 bin=$3 out=$4
    [ -f "$bin" ] || die "no binary at $bin"
    mkdir -p "$out"
    stage=$(mktemp -d)
    trap 'rm -rf "$stage"' EXIT
    d=$stage/gobuildcache-$target
    mkdir "$d"
    cp "$bin" "$d/gobuildcache"
    chmod 755 "$d/gobuildcache"
    cp "$root/README.md" "$d/"
    # Fixed owner and order: the archive does not depend on who built it.
    (cd "$stage" && tar -cf - --owner=0 --group=0 --numeric-owner "gobuildcache-$target" 2>/dev/null ||
        tar -cf - "gobuildcache-$target") | gzip -n -9 >"$out/gobuildcache-$target.tar.gz"
    ;;
sums)
    [ $# -eq 2 ] || die "usage: package-release.sh sums OUTDIR"
    cd "$2"
    ls gobuildcache-*.tar.gz >/dev/null 2>&1 || die "no archives in $2"
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum gobuildcache-*.tar.gz >sha256sums.txt
    else
        shasum -a 256 gobuildcache-*.tar.gz >sha256sums.txt
    fi
    ;;
*) die "usage: package-release.sh archive TARGET BINARY OUTDIR | sums OUTDIR" ;;
esac
