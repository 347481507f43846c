package gobuildcache

// All linking lives here. The package links a prebuilt static library of the
// Rust core from lib/<GOOS>-<GOARCH>/, as wasmtime-go does, so a module that
// requires this one builds with cgo and a C compiler alone, no Rust toolchain
// and no path outside the module. The release workflow fills lib/ for every
// platform below; in a checkout of the repository, `go generate` (which runs
// scripts/build-go-lib.sh) builds this machine's from source. The header is
// lib/include/gobuildcache.h, a copy of include/gobuildcache.h that the
// header test keeps identical.

//go:generate bash ../scripts/build-go-lib.sh

// #cgo CFLAGS: -I${SRCDIR}/lib/include
// #cgo linux,amd64 LDFLAGS: ${SRCDIR}/lib/linux-amd64/libgobuildcache_ffi.a -lgcc_s -lutil -lrt -lpthread -lm -ldl
// #cgo linux,arm64 LDFLAGS: ${SRCDIR}/lib/linux-arm64/libgobuildcache_ffi.a -lgcc_s -lutil -lrt -lpthread -lm -ldl
// #cgo darwin,amd64 LDFLAGS: ${SRCDIR}/lib/darwin-amd64/libgobuildcache_ffi.a -lm -framework CoreFoundation -framework Security -framework SystemConfiguration
// #cgo darwin,arm64 LDFLAGS: ${SRCDIR}/lib/darwin-arm64/libgobuildcache_ffi.a -lm -framework CoreFoundation -framework Security -framework SystemConfiguration
// #include <gobuildcache.h>
import "C"

import (
	"fmt"
	"runtime"
	"unsafe"
)

// The header this package was compiled against must describe the library it
// links; a mismatch means a stale static library, and every call could be
// wrong, so refuse to start.
func init() {
	if got, want := uint32(C.gbc_abi_version()), uint32(C.GBC_ABI_VERSION); got != want {
		panic(fmt.Sprintf("gobuildcache: library ABI version %d, header %d: rebuild the static library (go generate)", got, want))
	}
}

// call runs one C function and turns its result code into an error.
//
// The last-error message is per OS thread, and a goroutine can move to
// another thread between two cgo calls, so the call and the read of its
// message happen with the goroutine locked to its thread.
//
// Callers follow each call with runtime.KeepAlive on the Go object that owns
// the C pointer: without it the object may be unreachable during the call
// (only the raw pointer is still in use), its finalizer may run, and the C
// handle would be freed under our feet. The debug build tag makes ptr()
// force a GC to catch a missing KeepAlive in tests.
func call(f func() C.gbc_result) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	r := f()
	if r == C.GBC_RESULT_OK {
		return nil
	}
	return &Error{Code: Code(r), Msg: lastErrorMessage()}
}

// lastErrorMessage copies this thread's last error out of the library.
func lastErrorMessage() string {
	var n C.size_t
	if C.gbc_last_error_message(nil, 0, &n) != C.GBC_RESULT_OK || n == 0 {
		return ""
	}
	buf := make([]byte, int(n)+1)
	var got C.size_t
	if C.gbc_last_error_message((*C.char)(unsafe.Pointer(&buf[0])), C.size_t(len(buf)), &got) != C.GBC_RESULT_OK {
		return ""
	}
	return string(buf[:min(int(got), len(buf)-1)])
}

// bytesPtr is the C view of a Go byte slice; NULL for an empty one. cgo lets
// C read Go memory during the call because the bytes hold no Go pointers.
func bytesPtr(b []byte) *C.uint8_t {
	if len(b) == 0 {
		return nil
	}
	return (*C.uint8_t)(unsafe.Pointer(&b[0]))
}
