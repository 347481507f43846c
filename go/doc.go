// Package gobuildcache drives the gobuildcache Go build cache (a GOCACHEPROG
// helper written in Rust) from Go, through its C ABI.
//
// A Cache is the same cache the gobuildcache binary serves: the local disk
// tier and, when configured, a shared object store (S3, S3 Express One Zone,
// S3-compatible stores, GCS). Use it to look entries up or store them from
// build tooling, to read statistics, or to be the GOCACHEPROG helper yourself
// with Serve:
//
//	c, err := gobuildcache.Open(gobuildcache.Config{ReadEnv: true})
//	if err != nil { ... }
//	defer c.Close()
//	err = c.Serve(os.Stdin, os.Stdout) // GOCACHEPROG=/path/to/this/program
//
// Building: the package links the static library built by
//
//	cargo build --release -p gobuildcache-ffi
//
// at ../target/release of this module's directory, with cgo enabled.
//
// Errors from the library are *Error values carrying a Code; compare them
// with errors.Is against the sentinels (ErrNotFound, ErrClosed, ...), never by
// message. All methods are safe for concurrent use; after Close they return
// ErrClosed.
package gobuildcache
