//! One settings source: the library's table (`gobuildcache::config::SETTINGS`) is what the
//! Go package's `Config` and the README's configuration tables cover, key for key. The C ABI
//! takes the table's keys as JSON as they are, so it needs no list of its own.

use std::collections::BTreeSet;
use std::path::PathBuf;

use gobuildcache::config::{env_name, SETTINGS};

fn repo_file(rel: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Every quoted string that follows `marker` in `src`, up to `,` or `"`.
fn quoted_after(src: &str, marker: &str) -> BTreeSet<String> {
    src.match_indices(marker)
        .map(|(i, _)| {
            let rest = &src[i + marker.len()..];
            rest[..rest.find([',', '"']).unwrap_or(rest.len())].to_string()
        })
        .filter(|k| !k.is_empty() && k != "-")
        .collect()
}

#[test]
fn the_go_config_has_every_setting() {
    let go = repo_file("go/config.go");
    // Field tags, plus the keys configJSON sets itself (durations, lists).
    let mut go_keys = quoted_after(&go, "json:\"");
    go_keys.extend(quoted_after(&go, "m[\""));
    let lib: BTreeSet<String> = SETTINGS.iter().map(|s| s.key.to_string()).collect();
    let missing: Vec<_> = lib.difference(&go_keys).collect();
    let unknown: Vec<_> = go_keys.difference(&lib).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "go/config.go's Config and the library's settings differ: no Go field for {missing:?}, \
         Go fields the library does not know: {unknown:?}"
    );
}

#[test]
fn the_readme_documents_every_setting() {
    let readme = repo_file("README.md");
    let missing: Vec<String> = SETTINGS
        .iter()
        .filter_map(|s| {
            let shown = if s.is_flag() {
                format!("`-{}`", s.key)
            } else {
                env_name(s.key)
            };
            (!readme.contains(&shown)).then_some(shown)
        })
        .collect();
    assert!(
        missing.is_empty(),
        "README.md's configuration tables lack {missing:?}"
    );
}
