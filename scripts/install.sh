#!/bin/sh
# Installs a gobuildcache release binary: no Rust needed.
#
#   curl -fsSL https://raw.githubusercontent.com/gobuildcache/gobuildcache/main/scripts/install.sh | sh
#   sh install.sh [VERSION] [--dir DIR]
#
# VERSION is a release such as 0.1.0 (or v0.1.0); without it, the latest release.
# DIR defaults to $GOBUILDCACHE_INSTALL_DIR, else ~/.local/bin.
# GOBUILDCACHE_DOWNLOAD_URL overrides where releases are fetched from (a mirror), laid out as
# GitHub's: <url>/download/v<VERSION>/<file> and <url>/latest/download/<file>.
#
# It picks the archive for this OS and CPU, checks it against the release's sha256sums.txt,
# and installs only when every check passed: a failure leaves DIR as it was and prints one line.
set -eu

me=install.sh
die() {
    echo "$me: error: $*" >&2
    exit 1
}

version=latest
dir=${GOBUILDCACHE_INSTALL_DIR:-${HOME:-}/.local/bin}
while [ $# -gt 0 ]; do
    case $1 in
    -d | --dir)
        [ $# -ge 2 ] || die "$1 needs a directory"
        dir=$2
        shift 2
        ;;
    --dir=*)
        dir=${1#--dir=}
        shift
        ;;
    -h | --help)
        sed -n '2,13p' "$0" 2>/dev/null | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    -*) die "unknown option $1 (usage: install.sh [VERSION] [--dir DIR])" ;;
    *)
        version=$1
        shift
        ;;
    esac
done
[ -n "$dir" ] || die "no install directory: pass --dir DIR or set GOBUILDCACHE_INSTALL_DIR"

# Release targets, in Rust's names: static musl binaries on Linux (no glibc floor).
os=$(uname -s 2>/dev/null || echo unknown)
arch=$(uname -m 2>/dev/null || echo unknown)
case $arch in
x86_64 | amd64) cpu=x86_64 ;;
aarch64 | arm64) cpu=aarch64 ;;
*) cpu= ;;
esac
case $os in
Linux) sys=unknown-linux-musl ;;
Darwin) sys=apple-darwin ;;
*) sys= ;;
esac
if [ -z "$cpu" ] || [ -z "$sys" ]; then
    die "no release binary for $os/$arch (there are for Linux and macOS on x86_64 and arm64); build from source: cargo install gobuildcache"
fi
target=$cpu-$sys
archive=gobuildcache-$target.tar.gz

base=${GOBUILDCACHE_DOWNLOAD_URL:-https://github.com/gobuildcache/gobuildcache/releases}
base=${base%/}
case $version in
latest) url=$base/latest/download ;;
v[0-9]*) url=$base/download/$version ;;
[0-9]*) url=$base/download/v$version ;;
*) die "not a version: $version (expected e.g. 0.1.0 or latest)" ;;
esac

if command -v curl >/dev/null 2>&1; then
    fetch() { curl -fsSL --retry 2 -o "$2" "$1" 2>/dev/null; }
elif command -v wget >/dev/null 2>&1; then
    fetch() { wget -q -O "$2" "$1" 2>/dev/null; }
else
    die "curl or wget is needed to download the release"
fi
if command -v sha256sum >/dev/null 2>&1; then
    sha256() { sha256sum "$1" | cut -d ' ' -f 1; }
elif command -v shasum >/dev/null 2>&1; then
    sha256() { shasum -a 256 "$1" | cut -d ' ' -f 1; }
elif command -v openssl >/dev/null 2>&1; then
    sha256() { openssl dgst -sha256 -r "$1" | cut -d ' ' -f 1; }
else
    die "sha256sum, shasum or openssl is needed to verify the download"
fi

tmp=$(mktemp -d 2>/dev/null || mktemp -d -t gobuildcache)
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' HUP INT TERM

fetch "$url/sha256sums.txt" "$tmp/sha256sums.txt" ||
    die "cannot download $url/sha256sums.txt (is $version a release?)"
# sha256sum's format: "<hex>  <name>", or "<hex> *<name>" in binary mode.
want=$(awk -v f="$archive" '$2 == f || $2 == "*" f { print $1; exit }' "$tmp/sha256sums.txt")
[ -n "$want" ] || die "sha256sums.txt of $version has no entry for $archive"
fetch "$url/$archive" "$tmp/$archive" || die "cannot download $url/$archive"
got=$(sha256 "$tmp/$archive")
[ "$got" = "$want" ] || die "checksum mismatch for $archive: expected $want, got $got; nothing installed"

mkdir "$tmp/x"
(cd "$tmp/x" && gzip -dc "../$archive" | tar -xf -) 2>/dev/null || die "cannot unpack $archive"
bin=$tmp/x/gobuildcache-$target/gobuildcache
[ -f "$bin" ] || die "$archive holds no gobuildcache-$target/gobuildcache"
chmod 755 "$bin"
# Proves the binary runs here before anything is installed.
said=$("$bin" --version 2>/dev/null) || die "the $target binary does not run on this machine"
case $version in
latest) ;;
*) case $said in
    *" ${version#v}") ;;
    *) die "asked for ${version#v}, the archive holds $said" ;;
    esac ;;
esac

mkdir -p "$dir" 2>/dev/null || die "cannot create $dir"
# Same-directory temp name, then rename: a running helper or a half copy is never replaced.
cp "$bin" "$dir/.gobuildcache.$$" 2>/dev/null || die "cannot write to $dir"
mv -f "$dir/.gobuildcache.$$" "$dir/gobuildcache" || {
    rm -f "$dir/.gobuildcache.$$"
    die "cannot install $dir/gobuildcache"
}
echo "$said installed in $dir/gobuildcache"
case :${PATH:-}: in
*:"$dir":*) ;;
*) echo "note: $dir is not on PATH; add it, or set GOCACHEPROG=$dir/gobuildcache" ;;
esac
