//! `gbc_cache`: the handle and its functions.
//!
//! Lifetime: `gbc_cache_open` → any number of calls, from any threads → `gbc_cache_close`
//! (optional, idempotent) → `gbc_cache_free` (exactly once). Close and free are separate so
//! that a call made after close gets `GBC_RESULT_CLOSED` instead of touching freed memory;
//! free closes first when needed. A garbage-collected wrapper (the Go package) calls free from
//! its `Close` or finalizer, after which it never passes the pointer again.

use std::ffi::{c_char, c_int, CString};
use std::fs::File;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use gobuildcache::{ActionId, Cache, Config, Ended, Entry, OutputId};

use crate::error::{arg_bytes, arg_out, arg_str, gbc_result, Failure};
use crate::{GBC_ID_LEN, GBC_OPEN_READ_ENV};

/// An open cache. Opaque: C only ever holds a pointer to it.
///
/// Thread-safety: every function taking a `const gbc_cache *` may be called from many threads
/// at once on the same handle, including `gbc_cache_close`. Only `gbc_cache_free` must not
/// overlap any other call on the handle.
pub struct gbc_cache {
    _private: [u8; 0],
}

/// What a `gbc_cache` pointer really points to: a `Box<Handle>`.
struct Handle {
    cache: Arc<Cache>,
    closed: AtomicBool,
}

const _: () = {
    const fn thread_safe<T: Send + Sync>() {}
    thread_safe::<Handle>();
};

/// A cache entry, as returned by get and put.
///
/// Ownership: `path` is allocated by the library; release it with `gbc_string_free` (the
/// other fields are plain values).
#[repr(C)]
pub struct gbc_entry {
    /// SHA-256 of the body.
    pub output_id: [u8; GBC_ID_LEN],
    /// Body size in bytes.
    pub size: u64,
    /// When the entry was first put, in nanoseconds since the Unix epoch (UTC).
    pub time_unix_nanos: i64,
    /// NUL-terminated absolute path of a file holding exactly the body. It stays valid until
    /// the cache is closed (unless `gbc_cache_clear_local` removes it); never write to it.
    pub path: *mut c_char,
}

/// How a `gbc_cache_serve_fds` session ended.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum gbc_serve_end {
    /// The peer sent `close` and got its answer.
    Closed = 1,
    /// The input ended without `close` (the go command exited or closed the pipe).
    Eof = 2,
}

/// # Safety
/// `p` is NULL or a pointer from `gbc_cache_open` that has not been freed.
unsafe fn handle<'a>(p: *const gbc_cache) -> Result<&'a Handle, Failure> {
    if p.is_null() {
        return Err(Failure::invalid("cache is NULL"));
    }
    // SAFETY: non-NULL, and by the caller's promise a live `Box<Handle>` from `open`; we
    // only ever hand out shared references to it.
    let h = unsafe { &*p.cast::<Handle>() };
    if h.closed.load(Ordering::Acquire) {
        return Err(Failure::new(gbc_result::Closed, "the cache is closed"));
    }
    Ok(h)
}

/// # Safety
/// Unless NULL, `p` points to `len` readable bytes.
unsafe fn arg_action(p: *const u8, len: usize) -> Result<ActionId, Failure> {
    // SAFETY: forwarded from the caller.
    let bytes = unsafe { arg_bytes(p, len, "action_id") }?;
    Ok(ActionId::from_bytes(bytes)?)
}

/// # Safety
/// Unless NULL, `p` points to `len` readable bytes.
unsafe fn arg_output(p: *const u8, len: usize) -> Result<OutputId, Failure> {
    // SAFETY: forwarded from the caller.
    let bytes = unsafe { arg_bytes(p, len, "output_id") }?;
    Ok(OutputId::from_bytes(bytes)?)
}

fn entry_to_c(e: &Entry) -> Result<gbc_entry, Failure> {
    let nanos = match e.time.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_nanos()).map_or(i64::MIN, |n| -n),
    };
    let path = CString::new(e.path.as_os_str().as_bytes()).map_err(|_| {
        Failure::new(
            gbc_result::Io,
            format!("path {} contains NUL", e.path.display()),
        )
    })?;
    Ok(gbc_entry {
        output_id: *e.output_id.as_bytes(),
        size: e.size,
        time_unix_nanos: nanos,
        path: path.into_raw(),
    })
}

/// Writes an entry to its output parameter (checked non-NULL before any work was done).
///
/// # Safety
/// `out` is valid for writes of a `gbc_entry`.
unsafe fn write_entry(out: *mut gbc_entry, e: &Entry) -> Result<(), Failure> {
    let c = entry_to_c(e)?;
    // SAFETY: by the caller's promise; `write` because `*out` may be uninitialised.
    unsafe { out.write(c) };
    Ok(())
}

/// Opens (creating if needed) the cache described by `config_json`.
///
/// `config_json` is a NUL-terminated JSON object whose keys are the `gobuildcache` flag names
/// without dashes, e.g. `{"cache-dir": "/tmp/c", "stats": false, "max-size": "5GiB"}`; values
/// are strings, numbers or booleans. `""` and `"{}"` mean the defaults. With
/// `GBC_OPEN_READ_ENV` in `flags` the `GOBUILDCACHE_*` environment is read beneath the JSON,
/// as the binary does (JSON keys win). No other flag bit is defined.
///
/// On success `*out_cache` receives a new handle, owned by the caller: release it with
/// `gbc_cache_free`. Errors: `GBC_RESULT_CONFIG` for a bad config or an unusable cache dir.
/// The first open in a process sends the library's warnings (everything with `"debug": true`)
/// to stderr, as the binary does, unless a `tracing` subscriber is already installed.
/// Thread-safety: callable from any thread; each call makes an independent handle (several
/// handles, even in several processes, may share one cache dir).
#[no_mangle]
pub extern "C" fn gbc_cache_open(
    config_json: *const c_char,
    flags: u32,
    out_cache: *mut *mut gbc_cache,
) -> gbc_result {
    ffi_boundary! { result =>
        // SAFETY: the caller passes NULL or a NUL-terminated string.
        let json = unsafe { arg_str(config_json, "config_json") }?;
        arg_out(out_cache, "out_cache")?;
        if flags & !GBC_OPEN_READ_ENV != 0 {
            return Err(Failure::invalid(format!("unknown flags {flags:#x}")));
        }
        let config = Config::builder()
            .env(flags & GBC_OPEN_READ_ENV != 0)
            .json(json)?
            .build()?;
        gobuildcache::init_logging(config.debug);
        let cache = Cache::open(config)?;
        let h = Box::new(Handle {
            cache: Arc::new(cache),
            closed: AtomicBool::new(false),
        });
        // SAFETY: `out_cache` is non-NULL (checked) and the caller's to write.
        unsafe { *out_cache = Box::into_raw(h).cast::<gbc_cache>() };
        Ok(())
    }
}

/// Closes the cache: first waits for pending uploads (and, in a serving session, publishes
/// the warm start) for at most the config's `close-timeout`, as `gbc_cache_flush` does; then
/// DiskPaths it handed out may be trimmed, and every later call on this handle returns
/// `GBC_RESULT_CLOSED`. The handle itself stays allocated until `gbc_cache_free`.
///
/// Returns `GBC_RESULT_INCOMPLETE` when some uploads could not be done in time (the last
/// error says how many; those entries stay local): the cache is closed all the same. NULL
/// and an already closed handle are no-ops returning `GBC_RESULT_OK`.
///
/// Thread-safety: may race with other calls on the handle; those either complete or return
/// `GBC_RESULT_CLOSED`.
#[no_mangle]
pub extern "C" fn gbc_cache_close(cache: *mut gbc_cache) -> gbc_result {
    ffi_boundary! { result =>
        if cache.is_null() {
            return Ok(());
        }
        // SAFETY: non-NULL, and by the caller's promise not yet freed.
        let h = unsafe { &*cache.cast::<Handle>() };
        if h.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        uploads_done(h.cache.close(), &h.cache)
    }
}

/// Waits for pending uploads for at most the config's `close-timeout`, so that what was put
/// so far is in the shared store, and leaves the cache open. In a serving session it also
/// ends the warm start and publishes it (see the `publish` setting).
///
/// On success `*out_left` (may be NULL) receives 0. `GBC_RESULT_INCOMPLETE`: some uploads
/// could not be done in time; `*out_left` receives how many (those entries stay local).
/// Thread-safety: any thread, concurrently with other calls on the handle.
#[no_mangle]
pub extern "C" fn gbc_cache_flush(cache: *const gbc_cache, out_left: *mut u64) -> gbc_result {
    ffi_boundary! { result =>
        // SAFETY: the caller passes NULL or a handle from `gbc_cache_open`, not freed.
        let h = unsafe { handle(cache) }?;
        let left = h.cache.flush();
        if !out_left.is_null() {
            // SAFETY: non-NULL, and the caller's to write. Written on INCOMPLETE too: the
            // count is the point of that result.
            unsafe { *out_left = left };
        }
        uploads_done(left, &h.cache)
    }
}

/// `GBC_RESULT_INCOMPLETE` when `left` uploads were not done, with a message naming them.
fn uploads_done(left: u64, cache: &Cache) -> Result<(), Failure> {
    if left == 0 {
        return Ok(());
    }
    Err(Failure::new(
        gbc_result::Incomplete,
        format!(
            "{left} uploads were not done within close-timeout {:?} (or less, for a store \
             judged too slow); those entries stay local",
            cache.config().close_timeout
        ),
    ))
}

/// Closes the cache if still open and releases the handle. NULL is a no-op.
///
/// Ownership: takes back what `gbc_cache_open` gave; the pointer must not be used again.
/// Thread-safety: must not overlap any other call on the same handle.
#[no_mangle]
pub extern "C" fn gbc_cache_free(cache: *mut gbc_cache) {
    ffi_boundary! {
        if !cache.is_null() {
            // SAFETY: by the caller's promise, a pointer from `Box::into_raw` in
            // `gbc_cache_open`, freed only here, once, with no other call in flight.
            let h = unsafe { Box::from_raw(cache.cast::<Handle>()) };
            h.closed.store(true, Ordering::Release);
            h.cache.close();
        }
    }
}

/// Looks up an ActionID (`action_id_len` must be 32).
///
/// Returns `GBC_RESULT_OK` and fills `*out_entry` on a hit, `GBC_RESULT_NOT_FOUND` on a miss
/// (`*out_entry` untouched). A damaged local entry or a remote failure is a miss, not an
/// error. On `GBC_RESULT_OK` the caller owns `out_entry->path` (free with `gbc_string_free`).
/// Thread-safety: any thread, concurrently with other calls on the handle.
#[no_mangle]
pub extern "C" fn gbc_cache_get(
    cache: *const gbc_cache,
    action_id: *const u8,
    action_id_len: usize,
    out_entry: *mut gbc_entry,
) -> gbc_result {
    ffi_boundary! { result =>
        // SAFETY: the caller passes NULL or a handle from `gbc_cache_open`, not freed.
        let h = unsafe { handle(cache) }?;
        // SAFETY: the caller passes NULL or `action_id_len` readable bytes.
        let action = unsafe { arg_action(action_id, action_id_len) }?;
        arg_out(out_entry, "out_entry")?;
        match h.cache.get(&action)? {
            // SAFETY: `out_entry` is non-NULL (checked) and the caller's to write.
            Some(e) => unsafe { write_entry(out_entry, &e) },
            None => Err(Failure::new(
                gbc_result::NotFound,
                format!("no entry for action {action}"),
            )),
        }
    }
}

/// Stores `body` (`body_len` bytes; NULL allowed when 0) under `action_id`; `output_id` must
/// be its SHA-256 (`GBC_RESULT_INTEGRITY` otherwise, and nothing is stored). Both IDs are 32
/// bytes. The body is copied; the caller keeps ownership of every buffer.
///
/// On success fills `*out_entry`; the caller owns `out_entry->path` (`gbc_string_free`).
/// Thread-safety: any thread, concurrently with other calls on the handle.
#[no_mangle]
#[allow(clippy::too_many_arguments)] // ptr/len pairs: C has no slices
pub extern "C" fn gbc_cache_put_bytes(
    cache: *const gbc_cache,
    action_id: *const u8,
    action_id_len: usize,
    output_id: *const u8,
    output_id_len: usize,
    body: *const u8,
    body_len: usize,
    out_entry: *mut gbc_entry,
) -> gbc_result {
    ffi_boundary! { result =>
        // SAFETY: the caller passes NULL or a handle from `gbc_cache_open`, not freed.
        let h = unsafe { handle(cache) }?;
        // SAFETY: each pointer is NULL or valid for its length, as the caller promises.
        let (action, output, body) = unsafe {
            (
                arg_action(action_id, action_id_len)?,
                arg_output(output_id, output_id_len)?,
                arg_bytes(body, body_len, "body")?,
            )
        };
        arg_out(out_entry, "out_entry")?;
        let e = h.cache.put_bytes(&action, &output, body)?;
        // SAFETY: `out_entry` is non-NULL (checked) and the caller's to write.
        unsafe { write_entry(out_entry, &e) }
    }
}

/// Stores a copy of the file at `path` (NUL-terminated, any bytes but NUL), streaming it: the
/// body is never held in memory. `output_id` must be its SHA-256. The file is only read.
///
/// On success fills `*out_entry`; the caller owns `out_entry->path` (`gbc_string_free`).
/// Thread-safety: any thread, concurrently with other calls on the handle.
#[no_mangle]
pub extern "C" fn gbc_cache_put_file(
    cache: *const gbc_cache,
    action_id: *const u8,
    action_id_len: usize,
    output_id: *const u8,
    output_id_len: usize,
    path: *const c_char,
    out_entry: *mut gbc_entry,
) -> gbc_result {
    ffi_boundary! { result =>
        // SAFETY: the caller passes NULL or a handle from `gbc_cache_open`, not freed.
        let h = unsafe { handle(cache) }?;
        // SAFETY: each pointer is NULL or valid for its length, as the caller promises.
        let (action, output) = unsafe {
            (
                arg_action(action_id, action_id_len)?,
                arg_output(output_id, output_id_len)?,
            )
        };
        if path.is_null() {
            return Err(Failure::invalid("path is NULL"));
        }
        // SAFETY: non-NULL, and the caller promises a NUL-terminated string.
        let path = unsafe { std::ffi::CStr::from_ptr(path) };
        let path = std::ffi::OsString::from_vec(path.to_bytes().to_vec());
        arg_out(out_entry, "out_entry")?;
        let e = h.cache.put_file(&action, &output, Path::new(&path))?;
        // SAFETY: `out_entry` is non-NULL (checked) and the caller's to write.
        unsafe { write_entry(out_entry, &e) }
    }
}

/// Stores what can be read from file descriptor `fd` until end of file, streaming it (a pipe
/// works: this is how the Go package passes an `io.Reader`). `size` is the expected body size,
/// or -1 when unknown; `output_id` must be the body's SHA-256.
///
/// `fd` stays the caller's: it is duplicated, read from its current offset, and not closed.
/// It must be open for reading and in blocking mode (`GBC_RESULT_INVALID_ARGUMENT` otherwise).
/// On success fills `*out_entry`; the caller owns `out_entry->path` (`gbc_string_free`).
/// Thread-safety: any thread, concurrently with other calls on the handle.
#[no_mangle]
#[allow(clippy::too_many_arguments)] // ptr/len pairs: C has no slices
pub extern "C" fn gbc_cache_put_fd(
    cache: *const gbc_cache,
    action_id: *const u8,
    action_id_len: usize,
    output_id: *const u8,
    output_id_len: usize,
    fd: c_int,
    size: i64,
    out_entry: *mut gbc_entry,
) -> gbc_result {
    ffi_boundary! { result =>
        // SAFETY: the caller passes NULL or a handle from `gbc_cache_open`, not freed.
        let h = unsafe { handle(cache) }?;
        // SAFETY: each pointer is NULL or valid for its length, as the caller promises.
        let (action, output) = unsafe {
            (
                arg_action(action_id, action_id_len)?,
                arg_output(output_id, output_id_len)?,
            )
        };
        if size < -1 {
            return Err(Failure::invalid(format!("size {size} is neither -1 nor a size")));
        }
        arg_out(out_entry, "out_entry")?;
        let file = dup_fd(fd, Direction::Read, "fd")?;
        let size = u64::try_from(size).ok();
        let e = h.cache.put_reader(&action, &output, size, file)?;
        // SAFETY: `out_entry` is non-NULL (checked) and the caller's to write.
        unsafe { write_entry(out_entry, &e) }
    }
}

/// Writes the cache's statistics as a JSON object (the same as `-stats-json` writes) to
/// `*out_json`, a NUL-terminated string the caller owns: free it with `gbc_string_free`.
/// Thread-safety: any thread, concurrently with other calls on the handle.
#[no_mangle]
pub extern "C" fn gbc_cache_stats_json(
    cache: *const gbc_cache,
    out_json: *mut *mut c_char,
) -> gbc_result {
    ffi_boundary! { result =>
        // SAFETY: the caller passes NULL or a handle from `gbc_cache_open`, not freed.
        let h = unsafe { handle(cache) }?;
        arg_out(out_json, "out_json")?;
        let json = serde_json::to_string(&h.cache.stats())
            .map_err(|e| Failure::new(gbc_result::Io, format!("encoding stats: {e}")))?;
        let json = CString::new(json)
            .map_err(|_| Failure::new(gbc_result::Io, "stats JSON contains NUL"))?;
        // SAFETY: `out_json` is non-NULL (checked) and the caller's to write.
        unsafe { *out_json = json.into_raw() };
        Ok(())
    }
}

/// Serves one GOCACHEPROG session: reads requests from `in_fd`, writes responses to `out_fd`,
/// until the peer sends `close` (answered after the `-stats`/`-stats-json` report) or `in_fd`
/// reaches end of file. Blocks the calling thread for the whole session. A Go program that is
/// itself a GOCACHEPROG helper passes its stdin and stdout (0 and 1).
///
/// Both fds stay the caller's (they are duplicated, never closed) and must be in blocking
/// mode, `in_fd` readable and `out_fd` writable (`GBC_RESULT_INVALID_ARGUMENT` otherwise).
/// Writing to a closed pipe raises SIGPIPE in a C program that has not ignored it.
/// `GBC_RESULT_PROTOCOL` or `GBC_RESULT_IO` mean the stream could not be trusted any more: a
/// helper should exit non-zero so the go command fails at once. On success `*out_end` says
/// how the session ended. The cache is not closed by this call.
/// Thread-safety: any thread; several sessions may run on one handle at once.
#[no_mangle]
pub extern "C" fn gbc_cache_serve_fds(
    cache: *const gbc_cache,
    in_fd: c_int,
    out_fd: c_int,
    out_end: *mut gbc_serve_end,
) -> gbc_result {
    ffi_boundary! { result =>
        // SAFETY: the caller passes NULL or a handle from `gbc_cache_open`, not freed.
        let h = unsafe { handle(cache) }?;
        arg_out(out_end, "out_end")?;
        let input = dup_fd(in_fd, Direction::Read, "in_fd")?;
        let output = dup_fd(out_fd, Direction::Write, "out_fd")?;
        let end = match gobuildcache::serve(&h.cache, input, output)? {
            Ended::Closed => gbc_serve_end::Closed,
            Ended::Eof => gbc_serve_end::Eof,
        };
        // SAFETY: `out_end` is non-NULL (checked) and the caller's to write.
        unsafe { *out_end = end };
        Ok(())
    }
}

/// Removes every entry of the local tier. DiskPaths handed out earlier become invalid.
/// Thread-safety: any thread; gets racing with it may miss.
#[no_mangle]
pub extern "C" fn gbc_cache_clear_local(cache: *const gbc_cache) -> gbc_result {
    ffi_boundary! { result =>
        // SAFETY: the caller passes NULL or a handle from `gbc_cache_open`, not freed.
        let h = unsafe { handle(cache) }?;
        h.cache.clear_local()?;
        Ok(())
    }
}

#[derive(Clone, Copy)]
enum Direction {
    Read,
    Write,
}

/// Duplicates a caller's fd after checking it can be used, so the library never closes (or
/// outlives) the caller's descriptor.
fn dup_fd(fd: c_int, dir: Direction, what: &str) -> Result<File, Failure> {
    if fd < 0 {
        return Err(Failure::invalid(format!("{what} {fd} is negative")));
    }
    // SAFETY: F_GETFL only reads the descriptor's flags; a bad fd gives -1 (EBADF).
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(Failure::invalid(format!(
            "{what} {fd} is not an open descriptor"
        )));
    }
    // A non-blocking fd would make reads fail with EAGAIN mid-session. Go's `(*os.File).Fd`
    // switches an fd back to blocking; C callers must do the same.
    if flags & libc::O_NONBLOCK != 0 {
        return Err(Failure::invalid(format!(
            "{what} {fd} is in non-blocking mode"
        )));
    }
    let mode = flags & libc::O_ACCMODE;
    let usable = match dir {
        Direction::Read => mode == libc::O_RDONLY || mode == libc::O_RDWR,
        Direction::Write => mode == libc::O_WRONLY || mode == libc::O_RDWR,
    };
    if !usable {
        let need = match dir {
            Direction::Read => "reading",
            Direction::Write => "writing",
        };
        return Err(Failure::invalid(format!(
            "{what} {fd} is not open for {need}"
        )));
    }
    // SAFETY: `fd` is open (F_GETFL succeeded) and not -1; the borrow lasts only for the
    // duplication, during which the caller keeps it open.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let owned: OwnedFd = borrowed
        .try_clone_to_owned()
        .map_err(|e| Failure::new(gbc_result::Io, format!("duplicating {what} {fd}: {e}")))?;
    Ok(File::from(owned))
}
