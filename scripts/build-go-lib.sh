#!/usr/bin/env bash
# Builds the Go package's static library from source, where the package links it:
# go/lib/<GOOS>-<GOARCH>/libgobuildcache_ffi.a. Run from anywhere, or as `go generate` in go/.
# The release workflow runs it once per platform.
#   build-go-lib.sh                          this machine
#   build-go-lib.sh RUST_TARGET GOOS-GOARCH  cross, e.g. aarch64-unknown-linux-gnu linux-arm64
#   CARGO_FLAGS   extra cargo flags, e.g. "--no-default-features" for a disk-only library
# Needs cargo and go; on Linux also binutils (ld, objcopy, strip, ar).
#
# Why the post-processing: cargo's staticlib is ~230 MB (every crate's objects with their
# LLVM bitcode and one section per function), and a Go module zip may hold 500 MiB in all.
# With binutils the archive becomes one partially linked object, garbage-collected from the
# C ABI's functions, without bitcode and local symbols: ~34 MB, linked the same way.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:-}
platform=${2:-"$(go env GOOS)-$(go env GOARCH)"}
out="go/lib/$platform"
if [ -n "$target" ]; then
    # shellcheck disable=SC2086
    cargo build --release -p gobuildcache-ffi --target "$target" ${CARGO_FLAGS:-}
    built="target/$target/release/libgobuildcache_ffi.a"
else
    # shellcheck disable=SC2086
    cargo build --release -p gobuildcache-ffi ${CARGO_FLAGS:-}
    built=target/release/libgobuildcache_ffi.a
fi
# The header is checked in (the header test keeps it fresh); a stale copy would not link.
cmp -s include/gobuildcache.h go/lib/include/gobuildcache.h || {
    echo "build-go-lib: go/lib/include/gobuildcache.h differs from include/gobuildcache.h;" \
         "run GBC_UPDATE_HEADER=1 cargo test -p gobuildcache-ffi --test tests header" >&2
    exit 1
}
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
prefix=${BINUTILS_PREFIX:-}
if [ "${platform%%-*}" = linux ] && command -v "${prefix}ld" >/dev/null && "${prefix}ld" --version 2>/dev/null | grep -q GNU; then
    roots=$(grep -o 'gbc_[a-z_]*(' include/gobuildcache.h | tr -d '(' | sort -u | sed 's/^/-u /')
    cat >"$work/merge.ld" <<'LD'
SECTIONS
{
  .text : { *(.text .text.*) }
  .rodata : { *(.rodata .rodata.*) }
  .data.rel.ro : { *(.data.rel.ro .data.rel.ro.*) }
  .data : { *(.data .data.*) }
  .bss : { *(.bss .bss.*) }
  .tdata : { *(.tdata .tdata.*) }
  .tbss : { *(.tbss .tbss.*) }
  .gcc_except_table : { *(.gcc_except_table .gcc_except_table.*) }
}
LD
    # shellcheck disable=SC2086
    "${prefix}ld" -r -T "$work/merge.ld" --gc-sections $roots -o "$work/gobuildcache.o" \
        --whole-archive "$built" --no-whole-archive
    "${prefix}objcopy" --remove-section=.llvmbc --remove-section=.llvmcmd "$work/gobuildcache.o"
    "${prefix}strip" --strip-unneeded "$work/gobuildcache.o"
    "${prefix}ar" rcs "$work/libgobuildcache_ffi.a" "$work/gobuildcache.o"
else
    cp "$built" "$work/libgobuildcache_ffi.a"
fi
mv "$work/libgobuildcache_ffi.a" "$out/libgobuildcache_ffi.a"
echo "$out/libgobuildcache_ffi.a ($(du -h "$out/libgobuildcache_ffi.a" | cut -f1))"
