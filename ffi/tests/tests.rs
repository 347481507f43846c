//! Tests of the C ABI, calling the `extern "C"` functions through their C signatures.

// The C ABI, function by function: arguments, ownership, closing, threads, serving.
mod api;
// include/gobuildcache.h is what cbindgen makes of ffi/src today.
mod header;
