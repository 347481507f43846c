use std::path::PathBuf;

fn generate() -> String {
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml"))
        .expect("reading ffi/cbindgen.toml");
    let mut out = Vec::new();
    cbindgen::Builder::new()
        .with_crate(&crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen failed")
        .write(&mut out);
    String::from_utf8(out).expect("header is UTF-8")
}

/// Fails when a checked-in header differs from what the sources generate: the C one, and
/// the Go module's copy (a module that requires the Go package sees only what is inside
/// `go/`). Set GBC_UPDATE_HEADER=1 to rewrite both (scripts/test-ffi.sh does, then runs
/// `git diff --exit-code`).
#[test]
fn header_is_fresh() {
    let fresh = generate();
    for rel in [
        "../include/gobuildcache.h",
        "../go/lib/include/gobuildcache.h",
    ] {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel);
        if std::env::var_os("GBC_UPDATE_HEADER").is_some_and(|v| v == "1") {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &fresh).unwrap_or_else(|e| panic!("writing {rel}: {e}"));
            continue;
        }
        let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            checked_in == fresh,
            "{rel} is stale: run GBC_UPDATE_HEADER=1 cargo test -p gobuildcache-ffi --test tests header"
        );
    }
}

/// The header's GBC_ABI_VERSION is the number the library reports at run time.
#[test]
fn header_abi_version_matches_library() {
    let header = generate();
    let line = header
        .lines()
        .find(|l| l.starts_with("#define GBC_ABI_VERSION "))
        .expect("GBC_ABI_VERSION define in the header");
    let n: u32 = line["#define GBC_ABI_VERSION ".len()..]
        .trim()
        .parse()
        .unwrap();
    assert_eq!(n, gobuildcache_ffi::gbc_abi_version());
    assert_eq!(n, gobuildcache_ffi::GBC_ABI_VERSION);
}
