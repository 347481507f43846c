//! Where warm-start manifests live and what they are called.
//!
//! A manifest's name says which builds it is for: the module, platform, Go version and CI
//! branch, found in the environment the go command and the CI system give the helper
//! ([`default_names`]). Each publish writes a new immutable object under the name's
//! directory (`<prefix>manifests/<slug>/<time>-<random>`, [`dir_key`], [`object_key`]) with
//! an if-absent put, like every other object: readers merge the newest few, so jobs
//! publishing at the same time add up instead of overwriting each other. The bytes are
//! [`crate::format::manifest`].

use std::path::Path;

use sha2::{Digest, Sha256};

/// The object-name directory for a manifest name: readable, key-safe, and distinct per name.
pub fn dir_key(prefix: &str, name: &str) -> String {
    let mut slug: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .take(80)
        .collect();
    // The hash keeps names that slug alike apart, and no slug is "." or "..".
    let h = Sha256::digest(name.as_bytes());
    slug.push('-');
    slug.push_str(&crate::ids::encode_hex(&h[..6]));
    format!("{prefix}manifests/{slug}/")
}

/// Whether `rest` (a key with the prefix taken off) has the shape [`dir_key`] and
/// [`object_key`] give manifests (and packs, the same name plus `.pack`), so `clear-remote`
/// under a prefix without a slash can tell ours from other people's objects.
pub fn is_manifest_key(rest: &str) -> bool {
    let mut parts = rest.split('/');
    let (Some("manifests"), Some(slug), Some(name), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    let slug_ok = slug.rsplit_once('-').is_some_and(|(_, h)| hex(h, 12));
    // A pack is one of its run's group: `<time>-<random>-<n>.pack` (or, before groups,
    // `<time>-<random>.pack`).
    let name = match name.strip_suffix(".pack") {
        Some(p) => p
            .rsplit_once('-')
            .filter(|(_, n)| hex(n, 4))
            .map_or(p, |(g, _)| g),
        None => name,
    };
    let name_ok = name
        .split_once('-')
        .is_some_and(|(t, r)| hex(t, 16) && hex(r, 8));
    slug_ok && name_ok
}

/// A new object name in `dir`: sorts after every earlier one (by time), unique across hosts.
pub fn object_key(dir: &str, now: std::time::SystemTime) -> String {
    let micros = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    format!("{dir}{micros:016x}-{:08x}", rand::random::<u32>())
}

/// The manifest name to publish and the names to read from when it has none yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    pub key: String,
    pub fallbacks: Vec<String>,
}

/// Names derived from what the go command and CI systems put in the helper's environment:
/// `<module>/<GOOS>-<GOARCH>/<GOVERSION>/<branch>`. A pull request's branch falls back to its
/// base branch, then to the repository's default branch when the CI says which, then `main`
/// and `master`. Without a branch the last part is `_`.
pub fn default_names(env: &dyn Fn(&str) -> Option<String>, cwd: &Path) -> Names {
    let get = |k: &str| env(k).filter(|v| !v.trim().is_empty());
    let module = module_path(cwd).unwrap_or_else(|| "_".into());
    let os = get("GOOS").unwrap_or_else(|| std::env::consts::OS.into());
    let arch = get("GOARCH").unwrap_or_else(|| go_arch(std::env::consts::ARCH).into());
    let version = get("GOVERSION").unwrap_or_else(|| "_".into());
    let base = format!("{module}/{os}-{arch}/{version}/");
    // GitHub: the PR's source branch, else the pushed branch. GitLab, Buildkite, CircleCI.
    let branch = [
        "GITHUB_HEAD_REF",
        "GITHUB_REF_NAME",
        "CI_COMMIT_REF_NAME",
        "BUILDKITE_BRANCH",
        "CIRCLE_BRANCH",
    ]
    .iter()
    .find_map(|k| get(k));
    let mut fallbacks = Vec::new();
    for k in [
        "GITHUB_BASE_REF",
        "CI_MERGE_REQUEST_TARGET_BRANCH_NAME",
        "BUILDKITE_PULL_REQUEST_BASE_BRANCH",
        "CI_DEFAULT_BRANCH",
    ] {
        if let Some(b) = get(k) {
            fallbacks.push(b);
        }
    }
    fallbacks.extend(["main".to_string(), "master".to_string()]);
    let key = format!("{base}{}", branch.as_deref().unwrap_or("_"));
    let mut fb: Vec<String> = Vec::new();
    for b in fallbacks {
        let name = format!("{base}{b}");
        if name != key && !fb.contains(&name) {
            fb.push(name);
        }
    }
    Names { key, fallbacks: fb }
}

/// GOOS, GOARCH and GOVERSION as `go env` reports them; empty if there is no go command.
pub fn go_env() -> Vec<(String, String)> {
    let Ok(out) = std::process::Command::new("go")
        .args(["env", "GOOS", "GOARCH", "GOVERSION"])
        .stderr(std::process::Stdio::null())
        .output()
    else {
        return Vec::new();
    };
    if !out.status.success() {
        return Vec::new();
    }
    let text = String::from_utf8_lossy(&out.stdout);
    ["GOOS", "GOARCH", "GOVERSION"]
        .iter()
        .zip(text.lines())
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

/// The module path from the nearest go.mod at or above `dir`.
fn module_path(dir: &Path) -> Option<String> {
    for d in dir.ancestors() {
        if let Ok(text) = std::fs::read_to_string(d.join("go.mod")) {
            return text.lines().find_map(|l| {
                let rest = l.trim().strip_prefix("module")?;
                let m = rest.trim().trim_matches('"');
                (!m.is_empty() && rest.starts_with(char::is_whitespace)).then(|| m.to_string())
            });
        }
    }
    None
}

fn go_arch(rust: &str) -> &str {
    match rust {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64",
        "loongarch64" => "loong64",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_safe_distinct_and_time_ordered() {
        let d = dir_key("p/", "../../etc/passwd");
        assert!(d.starts_with("p/manifests/"));
        assert!(d[12..].split('/').all(|s| s != ".." && s != "."));
        assert_ne!(dir_key("p/", "a/b"), dir_key("p/", "a_b"));
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000);
        let later = t + std::time::Duration::from_micros(1);
        assert!(object_key(&d, t) < object_key(&d, later));
        let k = object_key(&dir_key("p", "main"), t);
        assert!(is_manifest_key(k.strip_prefix("p").unwrap()), "{k}");
        assert!(is_manifest_key(&format!(
            "{}.pack",
            k.strip_prefix("p").unwrap()
        )));
        assert!(is_manifest_key(&format!(
            "{}-002a.pack",
            k.strip_prefix("p").unwrap()
        )));
        assert!(!is_manifest_key(&format!(
            "{}-002a",
            k.strip_prefix("p").unwrap()
        )));
        assert!(!is_manifest_key(&format!(
            "{}.zip",
            k.strip_prefix("p").unwrap()
        )));
        assert!(!is_manifest_key("manifests/x/y"));
        assert!(!is_manifest_key(
            "-other/manifests/a-0123456789ab/0000000000000001-00000000/z"
        ));
    }

    #[test]
    fn default_names_from_go_and_ci_environment() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("go.mod"),
            "// x\nmodule example.com/m\n\ngo 1.24\n",
        )
        .unwrap();
        let sub = dir.path().join("cmd/tool");
        std::fs::create_dir_all(&sub).unwrap();
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let n = default_names(
            &vars(&[
                ("GOOS", "linux"),
                ("GOARCH", "arm64"),
                ("GOVERSION", "go1.26.8"),
                ("GITHUB_HEAD_REF", "feature"),
                ("GITHUB_BASE_REF", "develop"),
            ]),
            &sub,
        );
        assert_eq!(n.key, "example.com/m/linux-arm64/go1.26.8/feature");
        assert_eq!(
            n.fallbacks,
            [
                "example.com/m/linux-arm64/go1.26.8/develop",
                "example.com/m/linux-arm64/go1.26.8/main",
                "example.com/m/linux-arm64/go1.26.8/master"
            ]
        );
        let n = default_names(
            &vars(&[("GOOS", "linux"), ("GITHUB_REF_NAME", "main")]),
            &sub,
        );
        assert!(n.key.ends_with("/_/main"), "{}", n.key);
        assert_eq!(n.fallbacks.len(), 1, "main is not its own fallback");
        let n = default_names(&vars(&[]), Path::new("/"));
        assert!(n.key.starts_with("_/"), "{}", n.key);
        assert!(n.key.ends_with("/_"));
    }
}
