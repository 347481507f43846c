//! The C ABI of gobuildcache: `include/gobuildcache.h` is generated from this crate by cbindgen.
//!
//! This crate only translates. Config parsing, ID checks, the cache and the GOCACHEPROG server
//! all live in the `gobuildcache` library; each function here checks its pointers, calls one
//! library function and turns the result into a [`gbc_result`] code.
//!
//! Conventions (as in rustls-ffi):
//! - Every function body runs inside `ffi_boundary!` (`src/boundary.rs`): a panic never
//!   unwinds into C, it becomes `GBC_RESULT_PANIC` (or a no-op for functions that return
//!   nothing).
//! - A NULL pointer or a pointer/length pair that cannot be a buffer is
//!   `GBC_RESULT_INVALID_ARGUMENT`.
//! - Output parameters come last and are written only when the call returns `GBC_RESULT_OK`
//!   (the one exception, `gbc_cache_flush`'s count, is also written with `GBC_RESULT_INCOMPLETE`).
//! - Every failure stores a message for the calling thread, read with
//!   [`gbc_last_error_message`]. Callers branch on the code; the message is for people.
//! - Every string the library allocates is released with [`gbc_string_free`].

// The C names are the API: `gbc_cache`, `gbc_result`, ...
#![allow(non_camel_case_types)]
// Every `extern "C"` function takes raw pointers from C; marking them `unsafe fn` changes
// nothing for C callers. Each pointer contract is in the function's doc (and the header), and
// each dereference has its own SAFETY comment.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

#[macro_use]
mod boundary;
mod cache;
mod error;

pub use cache::*;
pub use error::{gbc_last_error_message, gbc_result};

/// The ABI version this library implements; the header defines `GBC_ABI_VERSION` to the same
/// number. Bumped on any incompatible change to a signature, struct layout or code meaning.
pub const GBC_ABI_VERSION: u32 = 2;

/// `gbc_cache_open` flag: read the `GOBUILDCACHE_*` (then unprefixed) environment variables
/// beneath the JSON config, exactly as the `gobuildcache` binary does.
pub const GBC_OPEN_READ_ENV: u32 = 1;

/// Length in bytes of an ActionID or OutputID.
pub const GBC_ID_LEN: usize = 32;

/// Returns the ABI version of the loaded library. Compare it with `GBC_ABI_VERSION` from the
/// header you compiled against and refuse to run when they differ.
///
/// Thread-safety: callable from any thread at any time.
#[no_mangle]
pub extern "C" fn gbc_abi_version() -> u32 {
    ffi_boundary! { GBC_ABI_VERSION }
}

/// Releases a string returned by this library (`gbc_entry.path`, `gbc_cache_stats_json`).
/// NULL is a no-op. Passing any other pointer, or the same one twice, is undefined behaviour.
///
/// Thread-safety: callable from any thread; the string must not be in use elsewhere.
#[no_mangle]
pub extern "C" fn gbc_string_free(s: *mut std::ffi::c_char) {
    ffi_boundary! {
        if !s.is_null() {
            // SAFETY: the caller promises `s` came from `CString::into_raw` in this library
            // (every string we hand out does) and has not been freed yet.
            drop(unsafe { std::ffi::CString::from_raw(s) });
        }
    }
}
