//! Closing and flushing through the C ABI with an S3 remote (moto_server): what was put
//! reaches the bucket before close returns, and what could not is reported.

use std::ffi::CString;
use std::ptr;

use crate::api::{get, last_error, put, take_path};
use crate::moto::Moto;
use gobuildcache_ffi::*;

fn open_s3(
    endpoint: &str,
    bucket: &str,
    dir: &std::path::Path,
    extra: serde_json::Value,
) -> *mut gbc_cache {
    let mut json = serde_json::json!({
        "backend": "s3",
        "s3-bucket": bucket,
        "s3-prefix": "ffi/",
        "cache-dir": dir,
        "stats": false,
        "aws-endpoint-url-s3": endpoint,
        "aws-s3-use-path-style": true,
        "aws-region": crate::moto::REGION,
        "aws-access-key-id": crate::moto::ACCESS_KEY,
        "aws-secret-access-key": crate::moto::SECRET_KEY,
    });
    for (k, v) in extra.as_object().unwrap() {
        json[k] = v.clone();
    }
    let json = CString::new(json.to_string()).unwrap();
    let mut c = ptr::null_mut();
    assert_eq!(
        gbc_cache_open(json.as_ptr(), 0, &mut c),
        gbc_result::Ok,
        "{}",
        last_error()
    );
    c
}

#[test]
fn close_uploads_what_was_put_and_a_fresh_dir_gets_it() {
    let m = Moto::start();
    m.create_bucket("ffi");
    let t = tempfile::tempdir().unwrap();
    let a = open_s3(
        &m.endpoint(),
        "ffi",
        &t.path().join("a"),
        serde_json::json!({}),
    );
    take_path(&put(a, &[1; 32], b"put then close").unwrap());
    take_path(&put(a, &[2; 32], b"put then flush").unwrap());
    let mut left = u64::MAX;
    assert_eq!(
        gbc_cache_flush(a, &mut left),
        gbc_result::Ok,
        "{}",
        last_error()
    );
    assert_eq!(left, 0);
    assert_eq!(m.keys("ffi", "ffi/").len(), 2, "flush uploaded both");
    take_path(&put(a, &[3; 32], b"after the flush").unwrap());
    assert_eq!(gbc_cache_close(a), gbc_result::Ok, "{}", last_error());
    gbc_cache_free(a);
    let keys = m.keys("ffi", "ffi/");
    assert_eq!(keys.len(), 3, "{keys:?}");

    let b = open_s3(
        &m.endpoint(),
        "ffi",
        &t.path().join("b"),
        serde_json::json!({}),
    );
    for n in 1..=3u8 {
        let e = get(b, &[n; 32]).unwrap_or_else(|r| panic!("entry {n}: {r:?}"));
        let path = take_path(&e);
        assert!(std::fs::metadata(path).unwrap().len() > 0);
    }
    gbc_cache_free(b);
}

/// A store that never answers: close gives up at `close-timeout` and says what it left.
#[test]
fn close_reports_uploads_it_could_not_finish() {
    // Accepts connections (the kernel's backlog) and never answers them.
    let hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", hole.local_addr().unwrap());
    let t = tempfile::tempdir().unwrap();
    let c = open_s3(
        &endpoint,
        "hole",
        t.path(),
        serde_json::json!({"close-timeout": "200ms"}),
    );
    take_path(&put(c, &[7; 32], b"never uploaded").unwrap());
    let started = std::time::Instant::now();
    assert_eq!(gbc_cache_close(c), gbc_result::Incomplete);
    assert!(
        last_error().contains("1 uploads were not done"),
        "{}",
        last_error()
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // Closed all the same.
    assert_eq!(get(c, &[7; 32]).err(), Some(gbc_result::Closed));
    assert_eq!(
        gbc_cache_close(c),
        gbc_result::Ok,
        "a second close is a no-op"
    );
    gbc_cache_free(c);
}
