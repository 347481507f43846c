use std::ffi::{c_char, CStr, CString};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::ptr;

use base64::Engine;
use gobuildcache_ffi::*;
use sha2::Digest;

/// A handle that can cross threads; the C contract says it is thread-safe.
#[derive(Clone, Copy)]
struct Shared(*mut gbc_cache);
// SAFETY: gbc_cache is documented as usable from many threads (all but free).
unsafe impl Send for Shared {}
// SAFETY: as above.
unsafe impl Sync for Shared {}

struct TestCache {
    ptr: *mut gbc_cache,
    _dir: tempfile::TempDir,
}

impl Drop for TestCache {
    fn drop(&mut self) {
        gbc_cache_free(self.ptr);
    }
}

fn open() -> TestCache {
    let dir = tempfile::tempdir().unwrap();
    let json = serde_json::json!({"cache-dir": dir.path(), "stats": false}).to_string();
    let json = CString::new(json).unwrap();
    let mut ptr = ptr::null_mut();
    assert_eq!(gbc_cache_open(json.as_ptr(), 0, &mut ptr), gbc_result::Ok);
    assert!(!ptr.is_null());
    TestCache { ptr, _dir: dir }
}

pub(crate) fn last_error() -> String {
    let mut n = 0usize;
    assert_eq!(
        gbc_last_error_message(ptr::null_mut(), 0, &mut n),
        gbc_result::Ok
    );
    let mut buf = vec![0u8; n + 1];
    let mut m = 0usize;
    assert_eq!(
        gbc_last_error_message(buf.as_mut_ptr().cast(), buf.len(), &mut m),
        gbc_result::Ok
    );
    assert_eq!(m, n);
    CStr::from_bytes_until_nul(&buf)
        .unwrap()
        .to_str()
        .unwrap()
        .to_string()
}

fn sha(body: &[u8]) -> [u8; 32] {
    sha2::Sha256::digest(body).into()
}

pub(crate) fn put(
    c: *const gbc_cache,
    action: &[u8],
    body: &[u8],
) -> Result<gbc_entry, gbc_result> {
    let out = sha(body);
    let mut e = std::mem::MaybeUninit::<gbc_entry>::uninit();
    let r = gbc_cache_put_bytes(
        c,
        action.as_ptr(),
        action.len(),
        out.as_ptr(),
        out.len(),
        body.as_ptr(),
        body.len(),
        e.as_mut_ptr(),
    );
    // SAFETY: written on Ok.
    (r == gbc_result::Ok)
        .then(|| unsafe { e.assume_init() })
        .ok_or(r)
}

pub(crate) fn get(c: *const gbc_cache, action: &[u8]) -> Result<gbc_entry, gbc_result> {
    let mut e = std::mem::MaybeUninit::<gbc_entry>::uninit();
    let r = gbc_cache_get(c, action.as_ptr(), action.len(), e.as_mut_ptr());
    // SAFETY: written on Ok.
    (r == gbc_result::Ok)
        .then(|| unsafe { e.assume_init() })
        .ok_or(r)
}

/// Reads and frees an entry's path.
pub(crate) fn take_path(e: &gbc_entry) -> String {
    assert!(!e.path.is_null());
    // SAFETY: a NUL-terminated string from the library.
    let s = unsafe { CStr::from_ptr(e.path) }
        .to_str()
        .unwrap()
        .to_string();
    gbc_string_free(e.path);
    s
}

fn stats(c: *const gbc_cache) -> serde_json::Value {
    let mut s: *mut c_char = ptr::null_mut();
    assert_eq!(gbc_cache_stats_json(c, &mut s), gbc_result::Ok);
    // SAFETY: a NUL-terminated string from the library.
    let v = serde_json::from_slice(unsafe { CStr::from_ptr(s) }.to_bytes()).unwrap();
    gbc_string_free(s);
    v
}

#[test]
fn abi_version_is_the_header_constant() {
    assert_eq!(gbc_abi_version(), GBC_ABI_VERSION);
}

#[test]
fn open_rejects_bad_arguments_without_writing_output() {
    let sentinel = ptr::dangling_mut::<gbc_cache>();
    let mut out = sentinel;
    assert_eq!(
        gbc_cache_open(ptr::null(), 0, &mut out),
        gbc_result::InvalidArgument
    );
    assert!(last_error().contains("config_json"), "{}", last_error());
    assert_eq!(out, sentinel);
    assert_eq!(
        gbc_cache_open(c"{}".as_ptr(), 0, ptr::null_mut()),
        gbc_result::InvalidArgument
    );
    assert_eq!(
        gbc_cache_open(c"{}".as_ptr(), 0x80, &mut out),
        gbc_result::InvalidArgument
    );
    assert_eq!(
        gbc_cache_open(c"{not json".as_ptr(), 0, &mut out),
        gbc_result::Config
    );
    assert_eq!(
        gbc_cache_open(c"{\"max-size\": \"lots\"}".as_ptr(), 0, &mut out),
        gbc_result::Config
    );
    assert!(last_error().contains("max-size"), "{}", last_error());
    let bad_utf8 = [0xffu8, 0];
    assert_eq!(
        gbc_cache_open(bad_utf8.as_ptr().cast(), 0, &mut out),
        gbc_result::InvalidArgument
    );
    assert_eq!(out, sentinel);
}

/// Runs in a child process (see `env_flag_reads_the_environment`): setting variables in
/// the test process would race with other tests reading the environment.
#[test]
#[ignore = "run by env_flag_reads_the_environment in a child process"]
fn env_flag_child() {
    let dir = tempfile::tempdir().unwrap();
    let json = CString::new(serde_json::json!({"cache-dir": dir.path()}).to_string()).unwrap();
    let mut out = ptr::null_mut();
    // GOBUILDCACHE_ERROR_RATE=7 is invalid: only a config that read the environment fails.
    assert_eq!(
        gbc_cache_open(json.as_ptr(), GBC_OPEN_READ_ENV, &mut out),
        gbc_result::Config
    );
    assert!(
        last_error().contains("GOBUILDCACHE_ERROR_RATE"),
        "{}",
        last_error()
    );
    assert_eq!(gbc_cache_open(json.as_ptr(), 0, &mut out), gbc_result::Ok);
    gbc_cache_free(out);
}

#[test]
fn env_flag_reads_the_environment() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "api::env_flag_child", "--ignored", "--nocapture"])
        .env("GOBUILDCACHE_ERROR_RATE", "7")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("1 passed"), "{text}");
}

#[test]
fn put_then_get_round_trips() {
    let c = open();
    let action = [1u8; 32];
    let body = b"object file bytes";
    assert_eq!(get(c.ptr, &action).err(), Some(gbc_result::NotFound));

    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    let p = put(c.ptr, &action, body).unwrap();
    assert_eq!(p.output_id, sha(body));
    assert_eq!(p.size, body.len() as u64);
    let put_path = take_path(&p);

    let h = get(c.ptr, &action).unwrap();
    assert_eq!(h.output_id, sha(body));
    assert_eq!(h.size, body.len() as u64);
    assert!(
        h.time_unix_nanos >= before - 2_000_000_000,
        "{}",
        h.time_unix_nanos
    );
    let path = take_path(&h);
    assert_eq!(path, put_path);
    assert!(std::path::Path::new(&path).is_absolute());
    assert_eq!(std::fs::read(&path).unwrap(), body);

    let s = stats(c.ptr);
    assert_eq!(s["puts"], 1);
    assert_eq!(s["hits"], 1);
    assert_eq!(s["misses"], 1);

    assert_eq!(gbc_cache_clear_local(c.ptr), gbc_result::Ok);
    assert_eq!(get(c.ptr, &action).err(), Some(gbc_result::NotFound));
}

#[test]
fn a_miss_leaves_the_output_untouched() {
    let c = open();
    let mut e = gbc_entry {
        output_id: [9; 32],
        size: 42,
        time_unix_nanos: 7,
        path: ptr::null_mut(),
    };
    let action = [2u8; 32];
    assert_eq!(
        gbc_cache_get(c.ptr, action.as_ptr(), 32, &mut e),
        gbc_result::NotFound
    );
    assert_eq!((e.output_id, e.size, e.time_unix_nanos), ([9; 32], 42, 7));
    assert!(e.path.is_null());
}

#[test]
fn bad_ids_buffers_and_pointers_are_rejected() {
    let c = open();
    let id = [3u8; 32];
    let mut e = std::mem::MaybeUninit::<gbc_entry>::uninit();
    // Wrong ID length: the library's ID check.
    assert_eq!(
        gbc_cache_get(c.ptr, id.as_ptr(), 31, e.as_mut_ptr()),
        gbc_result::InvalidId
    );
    assert!(last_error().contains("32 bytes"), "{}", last_error());
    // NULL with a length is not a buffer.
    assert_eq!(
        gbc_cache_get(c.ptr, ptr::null(), 32, e.as_mut_ptr()),
        gbc_result::InvalidArgument
    );
    assert_eq!(
        gbc_cache_get(c.ptr, id.as_ptr(), usize::MAX, e.as_mut_ptr()),
        gbc_result::InvalidArgument
    );
    assert_eq!(
        gbc_cache_get(ptr::null(), id.as_ptr(), 32, e.as_mut_ptr()),
        gbc_result::InvalidArgument
    );
    assert_eq!(
        gbc_cache_get(c.ptr, id.as_ptr(), 32, ptr::null_mut()),
        gbc_result::InvalidArgument
    );
    let out = sha(b"x");
    assert_eq!(
        gbc_cache_put_bytes(
            c.ptr,
            id.as_ptr(),
            32,
            out.as_ptr(),
            32,
            ptr::null(),
            1,
            e.as_mut_ptr()
        ),
        gbc_result::InvalidArgument
    );
    assert_eq!(
        gbc_cache_put_bytes(
            c.ptr,
            id.as_ptr(),
            32,
            out.as_ptr(),
            32,
            b"x".as_ptr(),
            1,
            ptr::null_mut()
        ),
        gbc_result::InvalidArgument
    );
    // The wrong OutputID is an integrity failure and stores nothing.
    assert_eq!(
        gbc_cache_put_bytes(
            c.ptr,
            id.as_ptr(),
            32,
            out.as_ptr(),
            32,
            b"y".as_ptr(),
            1,
            e.as_mut_ptr()
        ),
        gbc_result::Integrity
    );
    assert_eq!(get(c.ptr, &id).err(), Some(gbc_result::NotFound));
    // An empty body may come as NULL.
    let empty = sha(b"");
    assert_eq!(
        gbc_cache_put_bytes(
            c.ptr,
            id.as_ptr(),
            32,
            empty.as_ptr(),
            32,
            ptr::null(),
            0,
            e.as_mut_ptr()
        ),
        gbc_result::Ok
    );
    // SAFETY: written on Ok.
    let e = unsafe { e.assume_init() };
    assert_eq!(e.size, 0);
    take_path(&e);
    // Free functions accept NULL.
    gbc_string_free(ptr::null_mut());
    gbc_cache_free(ptr::null_mut());
    assert_eq!(gbc_cache_close(ptr::null_mut()), gbc_result::Ok);
}

/// IDs that try path traversal or have the wrong length are refused at every entry point that
/// takes one, before anything touches a path; nothing is written.
#[test]
fn hostile_ids_are_refused_before_touching_a_path() {
    let c = open();
    let src = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(src.path(), b"x").unwrap();
    let src_path = CString::new(src.path().to_str().unwrap()).unwrap();
    let good = [1u8; 32];
    let out = sha(b"x");
    let mut e = std::mem::MaybeUninit::<gbc_entry>::uninit();
    let hostile: &[&[u8]] = &[
        b"../../etc/passwd",
        b"a/b",
        b"/etc/passwd",
        b"..\0/..",
        "ünïcödé/../..".as_bytes(),
        &[b'a'; 31],
        &[b'a'; 33],
        &[b'a'; 64],
    ];
    for bad in hostile {
        let ids: [(&[u8], &[u8]); 2] = [(bad, &out), (&good, bad)];
        for (a, o) in ids {
            let (pa, la, po, lo) = (a.as_ptr(), a.len(), o.as_ptr(), o.len());
            let p = e.as_mut_ptr();
            let (r, w) = pipe();
            drop(w);
            for got in [
                gbc_cache_put_bytes(c.ptr, pa, la, po, lo, b"x".as_ptr(), 1, p),
                gbc_cache_put_file(c.ptr, pa, la, po, lo, src_path.as_ptr(), p),
                gbc_cache_put_fd(c.ptr, pa, la, po, lo, r.as_raw_fd(), 1, p),
            ] {
                assert_eq!(got, gbc_result::InvalidId, "{a:?} {o:?}");
                assert!(last_error().contains("32 bytes"), "{}", last_error());
            }
        }
        assert_eq!(
            gbc_cache_get(c.ptr, bad.as_ptr(), bad.len(), e.as_mut_ptr()),
            gbc_result::InvalidId
        );
    }
    for sub in ["v1/a", "v1/o", "v1/tmp"] {
        let d = c._dir.path().join(sub);
        let n = std::fs::read_dir(&d).map_or(0, |r| r.count());
        assert_eq!(n, 0, "{} is not empty", d.display());
    }
}

#[test]
fn last_error_is_cut_safely_and_per_thread() {
    let mut out = ptr::null_mut();
    assert_eq!(
        gbc_cache_open(c"[]".as_ptr(), 0, &mut out),
        gbc_result::Config
    );
    let full = last_error();
    assert!(full.len() > 8, "{full}");
    let mut buf = [0x55u8; 8];
    let mut n = 0;
    assert_eq!(
        gbc_last_error_message(buf.as_mut_ptr().cast(), buf.len(), &mut n),
        gbc_result::Ok
    );
    assert_eq!(n, full.len());
    assert_eq!(&buf[..7], &full.as_bytes()[..7]);
    assert_eq!(buf[7], 0);
    assert_eq!(
        gbc_last_error_message(buf.as_mut_ptr().cast(), buf.len(), ptr::null_mut()),
        gbc_result::InvalidArgument
    );
    assert_eq!(
        gbc_last_error_message(ptr::null_mut(), 4, &mut n),
        gbc_result::InvalidArgument
    );
    // Asking with bad arguments did not overwrite the message.
    assert_eq!(last_error(), full);
    // Another thread has its own (empty) message.
    assert_eq!(std::thread::spawn(last_error).join().unwrap(), "");
}

#[test]
fn calls_after_close_return_closed() {
    let c = open();
    let action = [4u8; 32];
    take_path(&put(c.ptr, &action, b"before close").unwrap());
    assert_eq!(gbc_cache_close(c.ptr), gbc_result::Ok);
    assert_eq!(
        gbc_cache_close(c.ptr),
        gbc_result::Ok,
        "close is idempotent"
    );
    assert_eq!(get(c.ptr, &action).err(), Some(gbc_result::Closed));
    assert!(last_error().contains("closed"), "{}", last_error());
    assert_eq!(
        put(c.ptr, &action, b"after").err(),
        Some(gbc_result::Closed)
    );
    let mut s = ptr::null_mut();
    assert_eq!(gbc_cache_stats_json(c.ptr, &mut s), gbc_result::Closed);
    assert!(s.is_null());
    assert_eq!(gbc_cache_clear_local(c.ptr), gbc_result::Closed);
    let mut end = gbc_serve_end::Eof;
    assert_eq!(
        gbc_cache_serve_fds(c.ptr, 0, 1, &mut end),
        gbc_result::Closed
    );
    // TestCache's drop frees the closed handle.
}

#[test]
fn concurrent_calls_and_a_racing_close() {
    let c = open();
    let shared = Shared(c.ptr);
    let threads: Vec<_> = (0..8u8)
        .map(|t| {
            std::thread::spawn(move || {
                let s = shared;
                for i in 0..50u8 {
                    let action = [
                        t, i, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                        0, 0, 0, 0, 0, 0, 1,
                    ];
                    let body = vec![t ^ i; 100 + i as usize];
                    take_path(&put(s.0, &action, &body).unwrap());
                    let e = get(s.0, &action).unwrap();
                    assert_eq!(std::fs::read(take_path(&e)).unwrap(), body);
                    let _ = stats(s.0);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(stats(c.ptr)["puts"], 400);

    // Close while other threads are calling: every call completes or says Closed.
    let callers: Vec<_> = (0..4u8)
        .map(|t| {
            std::thread::spawn(move || {
                let s = shared;
                let mut closed = 0;
                for i in 0..200u8 {
                    let action = [
                        t, i, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9,
                        9, 9, 9, 9, 9, 9, 9,
                    ];
                    match put(s.0, &action, &[i; 10]) {
                        Ok(e) => {
                            take_path(&e);
                        }
                        Err(gbc_result::Closed) => closed += 1,
                        Err(r) => panic!("unexpected {r:?}: {}", last_error()),
                    }
                }
                closed
            })
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(5));
    assert_eq!(gbc_cache_close(shared.0), gbc_result::Ok);
    let closed: i32 = callers.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(closed > 0 || get(c.ptr, &[0; 32]).err() == Some(gbc_result::Closed));
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let (r, w) = std::io::pipe().unwrap();
    (r.into(), w.into())
}

#[test]
fn put_fd_streams_from_a_pipe_and_checks_the_fd() {
    let c = open();
    let action = [5u8; 32];
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let out = sha(&body);
    let (r, w) = pipe();
    let writer = {
        let body = body.clone();
        std::thread::spawn(move || {
            let mut w = std::fs::File::from(w);
            w.write_all(&body).unwrap();
        })
    };
    let mut e = std::mem::MaybeUninit::<gbc_entry>::uninit();
    let res = gbc_cache_put_fd(
        c.ptr,
        action.as_ptr(),
        32,
        out.as_ptr(),
        32,
        r.as_raw_fd(),
        -1,
        e.as_mut_ptr(),
    );
    assert_eq!(res, gbc_result::Ok, "{}", last_error());
    writer.join().unwrap();
    // SAFETY: written on Ok.
    let got = unsafe { e.assume_init_read() };
    assert_eq!(got.size, body.len() as u64);
    assert_eq!(std::fs::read(take_path(&got)).unwrap(), body);

    // A descriptor we cannot use is an argument error, before anything is read.
    let (r2, w2) = pipe();
    for fd in [-1, 1_000_000, w2.as_raw_fd()] {
        assert_eq!(
            gbc_cache_put_fd(
                c.ptr,
                action.as_ptr(),
                32,
                out.as_ptr(),
                32,
                fd,
                -1,
                e.as_mut_ptr()
            ),
            gbc_result::InvalidArgument,
            "fd {fd}"
        );
    }
    // SAFETY: F_SETFL on a descriptor we own.
    unsafe { libc_set_nonblock(r2.as_raw_fd()) };
    assert_eq!(
        gbc_cache_put_fd(
            c.ptr,
            action.as_ptr(),
            32,
            out.as_ptr(),
            32,
            r2.as_raw_fd(),
            -1,
            e.as_mut_ptr()
        ),
        gbc_result::InvalidArgument
    );
    assert!(last_error().contains("non-blocking"), "{}", last_error());

    // put_file: a path, streamed.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("body");
    std::fs::write(&f, b"from a file").unwrap();
    let fpath = CString::new(f.to_str().unwrap()).unwrap();
    let fout = sha(b"from a file");
    assert_eq!(
        gbc_cache_put_file(
            c.ptr,
            action.as_ptr(),
            32,
            fout.as_ptr(),
            32,
            fpath.as_ptr(),
            e.as_mut_ptr()
        ),
        gbc_result::Ok
    );
    // SAFETY: written on Ok.
    take_path(unsafe { e.assume_init_ref() });
    assert_eq!(
        gbc_cache_put_file(
            c.ptr,
            action.as_ptr(),
            32,
            fout.as_ptr(),
            32,
            c"/no/such/file".as_ptr(),
            e.as_mut_ptr()
        ),
        gbc_result::Io
    );
    assert_eq!(
        gbc_cache_put_file(
            c.ptr,
            action.as_ptr(),
            32,
            fout.as_ptr(),
            32,
            ptr::null(),
            e.as_mut_ptr()
        ),
        gbc_result::InvalidArgument
    );
}

/// # Safety
/// `fd` is an open descriptor owned by the caller.
unsafe fn libc_set_nonblock(fd: i32) {
    extern "C" {
        fn fcntl(fd: i32, cmd: i32, ...) -> i32;
    }
    const F_GETFL: i32 = 3;
    const F_SETFL: i32 = 4;
    const O_NONBLOCK: i32 = 0o4000;
    // SAFETY: by the caller's promise.
    unsafe {
        let flags = fcntl(fd, F_GETFL);
        assert!(fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0);
    }
}

#[test]
fn serves_the_protocol_over_a_pipe_pair() {
    let c = open();
    let shared = Shared(c.ptr);
    let (req_r, req_w) = pipe();
    let (resp_r, resp_w) = pipe();
    let server = std::thread::spawn(move || {
        let s = shared;
        let mut end = gbc_serve_end::Eof;
        let r = gbc_cache_serve_fds(s.0, req_r.as_raw_fd(), resp_w.as_raw_fd(), &mut end);
        // The fds are still ours: the library duplicated them.
        drop((req_r, resp_w));
        (r, end)
    });

    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let action = [6u8; 32];
    let body = b"package main";
    let mut w = std::fs::File::from(req_w);
    let mut requests = String::new();
    requests += &format!(
        "{{\"ID\":1,\"Command\":\"get\",\"ActionID\":\"{}\"}}\n\n",
        b64(&action)
    );
    requests += &format!(
        "{{\"ID\":2,\"Command\":\"put\",\"ActionID\":\"{}\",\"OutputID\":\"{}\",\"BodySize\":{}}}\n\"{}\"\n\n",
        b64(&action),
        b64(&sha(body)),
        body.len(),
        b64(body)
    );
    w.write_all(requests.as_bytes()).unwrap();

    let mut lines = BufReader::new(std::fs::File::from(resp_r)).lines();
    let mut next =
        || -> serde_json::Value { serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap() };
    let hello = next();
    assert_eq!(hello["ID"], 0);
    assert!(hello["KnownCommands"]
        .as_array()
        .unwrap()
        .contains(&"close".into()));
    let mut got = [next(), next()];
    got.sort_by_key(|v| v["ID"].as_i64());
    assert_eq!(got[0]["Miss"], true);
    assert_eq!(got[1]["ID"], 2);
    let disk_path = got[1]["DiskPath"].as_str().unwrap().to_string();
    assert_eq!(std::fs::read(&disk_path).unwrap(), body);

    // A hit once the put is answered, then close.
    w.write_all(
        format!(
            "{{\"ID\":3,\"Command\":\"get\",\"ActionID\":\"{}\"}}\n\n",
            b64(&action)
        )
        .as_bytes(),
    )
    .unwrap();
    let hit = next();
    assert_eq!(hit["ID"], 3);
    assert_eq!(hit["DiskPath"], disk_path.as_str());
    assert_eq!(hit["Size"], body.len());
    w.write_all(b"{\"ID\":4,\"Command\":\"close\"}\n\n")
        .unwrap();
    assert_eq!(next()["ID"], 4);
    let (r, end) = server.join().unwrap();
    assert_eq!(r, gbc_result::Ok);
    assert_eq!(end, gbc_serve_end::Closed);

    // The same handle serves again; this time the input just ends.
    let (req_r, req_w) = pipe();
    let (_resp_r, resp_w) = pipe();
    drop(req_w);
    let mut end = gbc_serve_end::Closed;
    assert_eq!(
        gbc_cache_serve_fds(c.ptr, req_r.as_raw_fd(), resp_w.as_raw_fd(), &mut end),
        gbc_result::Ok
    );
    assert_eq!(end, gbc_serve_end::Eof);
    // Swapped directions are refused.
    assert_eq!(
        gbc_cache_serve_fds(c.ptr, resp_w.as_raw_fd(), req_r.as_raw_fd(), &mut end),
        gbc_result::InvalidArgument
    );
    assert_eq!(
        gbc_cache_serve_fds(
            c.ptr,
            req_r.as_raw_fd(),
            resp_w.as_raw_fd(),
            ptr::null_mut()
        ),
        gbc_result::InvalidArgument
    );
}

#[test]
fn garbage_on_the_wire_is_a_protocol_error() {
    let c = open();
    let (req_r, req_w) = pipe();
    let (resp_r, resp_w) = pipe();
    let mut w = std::fs::File::from(req_w);
    w.write_all(b"this is not json\n").unwrap();
    drop(w);
    let mut end = gbc_serve_end::Closed;
    let r = gbc_cache_serve_fds(c.ptr, req_r.as_raw_fd(), resp_w.as_raw_fd(), &mut end);
    assert_eq!(r, gbc_result::Protocol, "{}", last_error());
    assert_eq!(end, gbc_serve_end::Closed, "not written on failure");
    drop((resp_r, resp_w));
}

/// The Azure and HTTP stores' settings cross the ABI as JSON keys, like every other.
#[test]
fn open_takes_azure_and_http_settings() {
    let dir = tempfile::tempdir().unwrap();
    let mut out = ptr::null_mut();
    let json = CString::new(
        serde_json::json!({"cache-dir": dir.path(), "backend": "azure", "azure-prefix": "p/"})
            .to_string(),
    )
    .unwrap();
    assert_eq!(
        gbc_cache_open(json.as_ptr(), 0, &mut out),
        gbc_result::Config
    );
    assert!(last_error().contains("azure-container"), "{}", last_error());
    let json = CString::new(
        serde_json::json!({
            "cache-dir": dir.path(),
            "backend": "http",
            "http-url": "http://user:pw-LeakCheck@127.0.0.1:1/dav/",
            "http-token": "tok-LeakCheck",
        })
        .to_string(),
    )
    .unwrap();
    assert_eq!(
        gbc_cache_open(json.as_ptr(), 0, &mut out),
        gbc_result::Config
    );
    assert!(!last_error().contains("LeakCheck"), "{}", last_error());
    // A server that is not there: the cache opens (fail-open) and works locally.
    let json = CString::new(
        serde_json::json!({
            "cache-dir": dir.path(),
            "backend": "http",
            "http-url": "http://127.0.0.1:1/dav/",
            "http-token": "tok-LeakCheck",
            "stats": false,
        })
        .to_string(),
    )
    .unwrap();
    assert_eq!(gbc_cache_open(json.as_ptr(), 0, &mut out), gbc_result::Ok);
    gbc_cache_free(out);
}
