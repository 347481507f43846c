//! The panic boundary and the argument-checking macros every `extern "C"` body uses.

use crate::error::{set_last_error, Failure};
use crate::gbc_result;

/// What an `extern "C"` body may evaluate to, and what C sees when it panics instead.
pub(crate) trait FfiReturn {
    type Out;
    fn into_out(self) -> Self::Out;
    fn panicked() -> Self::Out;
}

/// A fallible body: `Err` sets the thread's last error and returns its code.
impl FfiReturn for Result<(), Failure> {
    type Out = gbc_result;
    fn into_out(self) -> gbc_result {
        match self {
            Ok(()) => gbc_result::Ok,
            Err(f) => {
                let code = f.code;
                set_last_error(f.message);
                code
            }
        }
    }
    fn panicked() -> gbc_result {
        gbc_result::Panic
    }
}

impl FfiReturn for () {
    type Out = ();
    fn into_out(self) {}
    fn panicked() {}
}

impl FfiReturn for u32 {
    type Out = u32;
    fn into_out(self) -> u32 {
        self
    }
    fn panicked() -> u32 {
        0
    }
}

/// Runs an `extern "C"` body under `catch_unwind`: unwinding into C is undefined behaviour.
/// A panic sets the last error (so C sees why) and returns [`FfiReturn::panicked`].
///
/// `ffi_boundary! { result => ... }` is for bodies that return `Result<(), Failure>` (the
/// closure's type is spelled out so `?` knows its error type); the plain form is for the few
/// functions that return a value or nothing.
macro_rules! ffi_boundary {
    (result => $($body:tt)*) => {
        $crate::boundary::guard(|| -> Result<(), $crate::error::Failure> { $($body)* })
    };
    ($($body:tt)*) => {
        $crate::boundary::guard(|| { $($body)* })
    };
}

pub(crate) fn guard<R: FfiReturn>(body: impl FnOnce() -> R) -> R::Out {
    // AssertUnwindSafe: after a panic nothing of the body's state is looked at again; the
    // library's own state is behind atomics and poison-tolerant locks.
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
        Ok(v) => v.into_out(),
        Err(payload) => {
            note_panic(payload);
            R::panicked()
        }
    }
}

fn note_panic(payload: Box<dyn std::any::Any + Send>) {
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    set_last_error(format!("panic inside gobuildcache: {what}"));
}
