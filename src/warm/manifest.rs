//! Warm-start manifests: the ActionIDs that recent runs used, so a helper on a fresh machine
//! can fetch them before the go command asks (the prefetch, `warm/prefetch.rs`).
//!
//! Each publish writes a new immutable object under the manifest's name
//! (`<prefix>manifests/<slug>/<time>-<random>`) with an if-absent put, like every other
//! object. Readers merge the newest few, so jobs publishing at the same time add up instead
//! of overwriting each other; writers delete all but the newest few.
//!
//! Format (little-endian): `GBCM`, version 1, 3 reserved bytes, entry count (u32), then per
//! entry the 32-byte ActionID and an age byte (publishes since a run last used it), then the
//! SHA-256 of everything before it.

use std::collections::HashMap;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::ids::ActionId;

const MAGIC: &[u8; 4] = b"GBCM";
const VERSION: u8 = 1;
const HEAD: usize = 12;
const ENTRY: usize = 33;
const SUM: usize = 32;

/// Entries kept per manifest: ~3.3 MB, far beyond what one module's builds use
/// (`go build std` uses ~1,100), small enough to read at every start.
pub const MAX_ENTRIES: usize = 100_000;
/// The largest object that can be a valid manifest; anything bigger is not read in full.
pub const MAX_BYTES: u64 = (HEAD + MAX_ENTRIES * ENTRY + SUM) as u64;
/// An entry no run used in this many publishes is dropped: the code it came from is gone.
pub const MAX_AGE: u8 = 10;
/// Manifests merged at start-up (concurrent publishers each leave one).
pub const READ_NEWEST: usize = 3;
/// Manifests kept per name after a publish.
pub const KEEP: usize = 4;

/// ActionIDs in the order they should be fetched, with their ages.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Manifest {
    pub entries: Vec<(ActionId, u8)>,
}

impl Manifest {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn encode(&self) -> Vec<u8> {
        let n = self.entries.len().min(MAX_ENTRIES);
        let mut out = Vec::with_capacity(HEAD + n * ENTRY + SUM);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&[VERSION, 0, 0, 0]);
        out.extend_from_slice(&(n as u32).to_le_bytes());
        for (id, age) in &self.entries[..n] {
            out.extend_from_slice(id.as_bytes());
            out.push(*age);
        }
        let sum = Sha256::digest(&out);
        out.extend_from_slice(&sum);
        out
    }

    pub fn decode(b: &[u8]) -> Result<Manifest, String> {
        if b.len() < HEAD + SUM {
            return Err(format!("{} bytes is too short for a manifest", b.len()));
        }
        if &b[..4] != MAGIC {
            return Err("not a manifest (bad magic)".into());
        }
        if b[4] != VERSION {
            return Err(format!("manifest version {} is not supported", b[4]));
        }
        let n = u32::from_le_bytes(b[8..12].try_into().expect("4 bytes")) as usize;
        if n > MAX_ENTRIES {
            return Err(format!("{n} entries is over the cap of {MAX_ENTRIES}"));
        }
        if b.len() != HEAD + n * ENTRY + SUM {
            return Err(format!(
                "{} bytes do not hold the {n} entries the header says",
                b.len()
            ));
        }
        let (body, sum) = b.split_at(b.len() - SUM);
        if Sha256::digest(body).as_slice() != sum {
            return Err("checksum mismatch".into());
        }
        let entries = body[HEAD..]
            .chunks_exact(ENTRY)
            .map(|c| {
                let id = ActionId::from_bytes(&c[..32]).expect("32 bytes");
                (id, c[32])
            })
            .collect();
        Ok(Manifest { entries })
    }

    /// The union of several manifests (newest first): each ActionID once, at its first
    /// position, with its smallest age.
    pub fn merge<'a>(newest_first: impl IntoIterator<Item = &'a Manifest>) -> Manifest {
        let mut pos: HashMap<ActionId, usize> = HashMap::new();
        let mut entries: Vec<(ActionId, u8)> = Vec::new();
        for m in newest_first {
            for &(id, age) in &m.entries {
                match pos.get(&id) {
                    Some(&i) => entries[i].1 = entries[i].1.min(age),
                    None => {
                        pos.insert(id, entries.len());
                        entries.push((id, age));
                    }
                }
            }
        }
        Manifest { entries }
    }

    /// What this run publishes: the IDs it used (in order of use, age 0) followed by the
    /// older entries it did not use, one publish older; stale ones dropped, capped.
    pub fn next(&self, used: &[ActionId]) -> Manifest {
        let fresh = Manifest {
            entries: used.iter().map(|&id| (id, 0)).collect(),
        };
        let older = Manifest {
            entries: self
                .entries
                .iter()
                .filter(|(_, age)| *age < MAX_AGE)
                .map(|&(id, age)| (id, age + 1))
                .collect(),
        };
        let mut m = Manifest::merge([&fresh, &older]);
        m.entries.truncate(MAX_ENTRIES);
        m
    }
}

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
    let name = name.strip_suffix(".pack").unwrap_or(name);
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

    fn id(n: u8) -> ActionId {
        ActionId::from_bytes(&[n; 32]).unwrap()
    }

    #[test]
    fn round_trip_and_damage() {
        let m = Manifest {
            entries: vec![(id(1), 0), (id(2), 3)],
        };
        let b = m.encode();
        assert_eq!(Manifest::decode(&b).unwrap(), m);
        for i in [0, 4, 8, 12, 40, b.len() - 1] {
            let mut bad = b.clone();
            bad[i] ^= 1;
            assert!(Manifest::decode(&bad).is_err(), "flip at {i} accepted");
        }
        assert!(Manifest::decode(&b[..b.len() - 1]).is_err());
        assert!(Manifest::decode(b"GBCM").is_err());
        // A header claiming more than the cap is refused before anything is allocated.
        let mut huge = b.clone();
        huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Manifest::decode(&huge).unwrap_err().contains("cap"));
    }

    #[test]
    fn merge_keeps_first_position_and_youngest_age() {
        let a = Manifest {
            entries: vec![(id(1), 2), (id(2), 0)],
        };
        let b = Manifest {
            entries: vec![(id(3), 0), (id(1), 0)],
        };
        let m = Manifest::merge([&a, &b]);
        assert_eq!(m.entries, vec![(id(1), 0), (id(2), 0), (id(3), 0)]);
    }

    #[test]
    fn next_puts_used_first_ages_the_rest_and_drops_stale() {
        let old = Manifest {
            entries: vec![(id(1), 0), (id(2), MAX_AGE), (id(3), 4)],
        };
        let m = old.next(&[id(3), id(9)]);
        assert_eq!(m.entries, vec![(id(3), 0), (id(9), 0), (id(1), 1)]);
    }

    #[test]
    fn next_is_capped() {
        let used: Vec<ActionId> = (0..MAX_ENTRIES as u32 + 10)
            .map(|i| {
                let mut b = [0u8; 32];
                b[..4].copy_from_slice(&i.to_le_bytes());
                ActionId::from_bytes(&b).unwrap()
            })
            .collect();
        let m = Manifest::default().next(&used);
        assert_eq!(m.len(), MAX_ENTRIES);
        assert_eq!(Manifest::decode(&m.encode()).unwrap().len(), MAX_ENTRIES);
    }

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
