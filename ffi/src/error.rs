//! Result codes, the per-thread last error, and argument checks.

use std::cell::RefCell;
use std::ffi::{c_char, CStr};

use gobuildcache::Error;

/// The result of every fallible call. 0 is success; the numbers never change and a retired
/// number is never reused (leave it here as a comment).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum gbc_result {
    /// Success: the output parameters have been written.
    Ok = 0,
    /// A NULL pointer, a pointer/length pair that is not a buffer, an unknown flag, or a
    /// file descriptor that cannot be used. Nothing was done.
    InvalidArgument = 1,
    /// A panic inside the library was caught at the boundary. The handle is still safe to
    /// close and free; the last error says what happened.
    Panic = 2,
    /// `gbc_cache_get`: the cache has no entry for the ActionID. Not a failure.
    NotFound = 3,
    /// The handle was closed with `gbc_cache_close`.
    Closed = 4,
    /// A file-system or stream error.
    Io = 5,
    /// The GOCACHEPROG peer sent something that is not the protocol; the session is over.
    Protocol = 6,
    /// An ActionID or OutputID that is not exactly 32 bytes.
    InvalidId = 7,
    /// The JSON config (or, with `GBC_OPEN_READ_ENV`, the environment) is invalid.
    Config = 8,
    /// A body whose SHA-256 or size is not the OutputID or size given with it; nothing
    /// was stored.
    Integrity = 9,
    /// The remote store failed in a way that could not be turned into a miss.
    Backend = 10,
    /// `gbc_cache_flush` or `gbc_cache_close`: some uploads could not be done within
    /// `close-timeout`; those entries stay in the local tier only. Close has still closed.
    Incomplete = 11,
}

/// A failed call on its way to C: the code, and the message stored as the last error.
pub(crate) struct Failure {
    pub code: gbc_result,
    pub message: String,
}

impl Failure {
    pub fn new(code: gbc_result, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Failure {
        Failure::new(gbc_result::InvalidArgument, message)
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure::new(map_error(&e), e.to_string())
    }
}

/// The one place a library error becomes a code. Exhaustive on purpose: a new variant in the
/// library must get a code (a new number) before this crate compiles again.
pub(crate) fn map_error(e: &Error) -> gbc_result {
    match e {
        Error::Io { .. } => gbc_result::Io,
        Error::Protocol(_) => gbc_result::Protocol,
        Error::InvalidId(_) => gbc_result::InvalidId,
        Error::Config(_) => gbc_result::Config,
        Error::Integrity(_) => gbc_result::Integrity,
        Error::Backend { .. } => gbc_result::Backend,
        Error::Closed => gbc_result::Closed,
    }
}

thread_local! {
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

pub(crate) fn set_last_error(message: String) {
    LAST_ERROR.with(|e| *e.borrow_mut() = message);
}

/// Copies the message of the last failed call made on this thread into `buf`.
///
/// At most `len - 1` bytes are copied (cut at a UTF-8 character boundary) and a NUL is
/// appended; `*out_n` receives the full length of the message in bytes, without the NUL, so
/// `*out_n >= len` means it was cut. With `len == 0`, `buf` may be NULL and only `*out_n` is
/// written (ask for the length, then allocate). The message is empty if no call on this
/// thread has failed. Successful calls do not clear it, as with `errno`: read it right after
/// the failing call. This function never changes the stored message.
///
/// Ownership: `buf` is the caller's. Thread-safety: each thread has its own message.
/// Returns `GBC_RESULT_INVALID_ARGUMENT` if `out_n` is NULL, or `buf` is NULL with `len > 0`.
#[no_mangle]
pub extern "C" fn gbc_last_error_message(
    buf: *mut c_char,
    len: usize,
    out_n: *mut usize,
) -> gbc_result {
    ffi_boundary! {
        if out_n.is_null() || (buf.is_null() && len > 0) {
            // Not stored as the last error: that would overwrite the message being asked for.
            return gbc_result::InvalidArgument;
        }
        LAST_ERROR.with(|e| {
            let msg = e.borrow();
            if len > 0 {
                let mut n = msg.len().min(len - 1);
                while !msg.is_char_boundary(n) {
                    n -= 1;
                }
                // SAFETY: the caller gives `len` writable bytes at `buf` (checked non-NULL
                // above); we write `n + 1 <= len` of them and read `n` from our own string.
                unsafe {
                    std::ptr::copy_nonoverlapping(msg.as_ptr(), buf.cast::<u8>(), n);
                    *buf.add(n) = 0;
                }
            }
            // SAFETY: `out_n` is non-NULL (checked above) and the caller's to write.
            unsafe { *out_n = msg.len() };
        });
        gbc_result::Ok
    }
}

impl crate::boundary::FfiReturn for gbc_result {
    type Out = gbc_result;
    fn into_out(self) -> gbc_result {
        self
    }
    fn panicked() -> gbc_result {
        gbc_result::Panic
    }
}

/// A NUL-terminated UTF-8 string argument; `what` names it in the error.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string that outlives `'a`.
pub(crate) unsafe fn arg_str<'a>(p: *const c_char, what: &str) -> Result<&'a str, Failure> {
    if p.is_null() {
        return Err(Failure::invalid(format!("{what} is NULL")));
    }
    // SAFETY: non-NULL, and the caller promises NUL termination and lifetime.
    let c = unsafe { CStr::from_ptr(p) };
    c.to_str()
        .map_err(|_| Failure::invalid(format!("{what} is not valid UTF-8")))
}

/// A `(pointer, length)` byte buffer argument. NULL is allowed only with length 0.
///
/// # Safety
/// Unless NULL, `p` points to `len` readable bytes that outlive `'a`.
pub(crate) unsafe fn arg_bytes<'a>(
    p: *const u8,
    len: usize,
    what: &str,
) -> Result<&'a [u8], Failure> {
    if p.is_null() {
        if len == 0 {
            return Ok(&[]);
        }
        return Err(Failure::invalid(format!(
            "{what} is NULL with length {len}"
        )));
    }
    if len > isize::MAX as usize {
        return Err(Failure::invalid(format!(
            "{what} length {len} is not a buffer size"
        )));
    }
    // SAFETY: non-NULL, length within isize::MAX, and the caller promises `len` readable
    // bytes that stay valid and unmodified for the call.
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

/// Checks an output pointer before any work is done, so a NULL one fails without effects.
pub(crate) fn arg_out<T>(p: *mut T, what: &str) -> Result<(), Failure> {
    if p.is_null() {
        return Err(Failure::invalid(format!("{what} is NULL")));
    }
    Ok(())
}
