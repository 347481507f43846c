//! The remote tier end to end, with the real go command: written once, run against every
//! store (a shared directory here; S3 on moto_server and GCS on fake-gcs-server in their
//! modules). A remote hit is always proven with a fresh, empty local dir.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::util::*;

/// Raw access to a store, to look at and damage objects behind the helper's back.
pub trait Store {
    /// The helper's environment for this store (`GOBUILDCACHE_BACKEND`, bucket, endpoint...).
    fn env(&self) -> Vec<(String, String)>;
    /// Every object key in the store, sorted.
    fn keys(&self) -> Vec<String>;
    fn read(&self, key: &str) -> Vec<u8>;
    fn write(&self, key: &str, data: &[u8]);
}

/// A directory used as the remote (`-remote-dir`): the cheapest real store.
pub struct DirStore {
    pub root: PathBuf,
    _tmp: TestDir,
}

impl DirStore {
    pub fn start() -> DirStore {
        let tmp = TestDir::new();
        let root = tmp.path("remote");
        std::fs::create_dir_all(&root).unwrap();
        DirStore { root, _tmp: tmp }
    }

    /// A remote directory that does not exist.
    pub fn missing() -> DirStore {
        let tmp = TestDir::new();
        DirStore {
            root: tmp.path("does-not-exist"),
            _tmp: tmp,
        }
    }
}

impl Store for DirStore {
    fn env(&self) -> Vec<(String, String)> {
        vec![(
            "GOBUILDCACHE_REMOTE_DIR".into(),
            self.root.to_str().unwrap().into(),
        )]
    }
    fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = files_under(&self.root)
            .iter()
            .map(|p| {
                p.strip_prefix(&self.root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        keys.sort();
        keys
    }
    fn read(&self, key: &str) -> Vec<u8> {
        std::fs::read(self.root.join(key)).unwrap()
    }
    fn write(&self, key: &str, data: &[u8]) {
        let p = self.root.join(key);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap()
    }
}

pub struct Run {
    pub t: TestDir,
    pub module: PathBuf,
}

impl Run {
    pub fn new() -> Run {
        let t = TestDir::new();
        let module = t.path("mod");
        write_module(&module);
        Run { t, module }
    }

    /// A go command on a brand-new local dir (a fresh CI machine) sharing `store`.
    pub fn fresh(&self, store: &dyn Store, name: &str, extra: &[(&str, &str)]) -> (GoEnv, PathBuf) {
        let stats = self.t.path(&format!("{name}.json"));
        let mut go = GoEnv::ours(
            &self.t,
            &self.module,
            &self.t.path(&format!("local-{name}")),
            &stats,
        );
        go.extra_env = store.env();
        for (k, v) in extra {
            go.extra_env.push((k.to_string(), v.to_string()));
        }
        (go, stats)
    }
}

fn object_keys(store: &dyn Store) -> Vec<String> {
    store
        .keys()
        .into_iter()
        .filter(|k| k.starts_with("gobuildcache/"))
        .collect()
}

/// Process 1 fills the remote from an empty local dir; process 2, on another empty local dir,
/// gets every entry from the remote: same binaries, `go test` cached.
pub fn fresh_machine_gets_remote_hits(store: &dyn Store) {
    let r = Run::new();
    let (go1, s1) = r.fresh(store, "one", &[]);
    let app1 = r.t.path("app1");
    go1.ok(&["build", "-o", app1.to_str().unwrap(), "./cmd/app"]);
    go1.ok(&["test", "./..."]);
    let first = stats(&s1);
    assert!(first.uploads > 0, "{first:?}");
    assert_eq!(
        first.upload_failures + first.uploads_dropped + first.uploads_not_done,
        0,
        "{first:?}"
    );
    assert!(!object_keys(store).is_empty());

    let (go2, s2) = r.fresh(store, "two", &[]);
    let app2 = r.t.path("app2");
    go2.ok(&["build", "-o", app2.to_str().unwrap(), "./cmd/app"]);
    let second = stats(&s2);
    assert_eq!(second.local_hits, 0, "the local dir was empty: {second:?}");
    assert!(second.remote_hits > 0, "{second:?}");
    assert_warm(&second, 1); // the link of cmd/app is never cached
    assert_eq!(
        second.remote_errors + second.remote_corrupt,
        0,
        "{second:?}"
    );
    assert_eq!(std::fs::read(&app1).unwrap(), std::fs::read(&app2).unwrap());

    let (go3, s3) = r.fresh(store, "three", &[]);
    let out = go3.ok(&["test", "./..."]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.matches("(cached)").count(), 2, "{text}");
    assert_warm(&stats(&s3), 0);
}

/// Objects with flipped bytes or cut short are misses, counted, and the build is correct.
pub fn damaged_objects_are_rebuilt(store: &dyn Store) {
    let r = Run::new();
    let (go1, _) = r.fresh(store, "fill", &[]);
    go1.ok(&["build", "./..."]);
    // The fill's packs hold good copies: damaged too, so the warm start meets the objects.
    for k in pack_keys(store) {
        store.write(&k, b"not a pack");
    }
    let keys: Vec<String> = object_keys(store)
        .into_iter()
        .filter(|k| !k.contains("/manifests/"))
        .collect();
    assert!(keys.len() > 10);
    let mut damaged = 0;
    for (i, key) in keys.iter().enumerate() {
        let mut data = store.read(key);
        match i % 3 {
            0 => {
                let mid = data.len() / 2;
                data[mid] ^= 0x55; // flipped bits in the body
            }
            1 => data.truncate(data.len() * 2 / 3), // truncated
            _ => continue,
        }
        store.write(key, &data);
        damaged += 1;
    }
    let (go2, s2) = r.fresh(store, "after", &[]);
    let app = r.t.path("app");
    go2.ok(&["build", "-o", app.to_str().unwrap(), "./cmd/app"]);
    let s = stats(&s2);
    assert!(s.remote_corrupt > 0, "{s:?}");
    assert!(s.remote_corrupt <= damaged, "{s:?}");
    assert!(s.remote_hits > 0, "undamaged objects still serve: {s:?}");
    let native = GoEnv::native(&r.t, &r.module, &r.t.path("native"));
    let app_native = r.t.path("app-native");
    native.ok(&["build", "-o", app_native.to_str().unwrap(), "./cmd/app"]);
    assert_eq!(
        std::fs::read(app).unwrap(),
        std::fs::read(app_native).unwrap()
    );
    assert_bodies_intact(&r.t.path("local-after"));
}

/// Objects written with compression are read by a helper configured without it.
pub fn compression_is_recorded_in_the_object(store: &dyn Store) {
    let r = Run::new();
    let (go1, _) = r.fresh(store, "lz4", &[("GOBUILDCACHE_COMPRESSION", "true")]);
    go1.ok(&["build", "./..."]);
    let (go2, s2) = r.fresh(store, "raw", &[("GOBUILDCACHE_COMPRESSION", "false")]);
    go2.ok(&["build", "./..."]);
    let s = stats(&s2);
    assert!(s.remote_hits > 0 && s.remote_corrupt == 0, "{s:?}");
    assert_warm(&s, 1);
}

/// `-read-only` reads the remote but never writes or deletes anything in it.
pub fn read_only_leaves_the_store_unchanged(store: &dyn Store) {
    let r = Run::new();
    let (go1, _) = r.fresh(store, "ro-empty", &[("GOBUILDCACHE_READ_ONLY", "true")]);
    go1.ok(&["build", "./mathx"]);
    assert!(
        object_keys(store).is_empty(),
        "read-only wrote to an empty store"
    );

    let (go2, _) = r.fresh(store, "fill", &[]);
    go2.ok(&["build", "./mathx"]);
    let before: Vec<(String, Vec<u8>)> = object_keys(store)
        .into_iter()
        .map(|k| (store.read(&k), k))
        .map(|(d, k)| (k, d))
        .collect();
    // Damage one object: a read-only helper must not delete it either.
    let (k0, d0) = &before[0];
    let mut bad = d0.clone();
    bad.truncate(10);
    store.write(k0, &bad);
    let (go3, s3) = r.fresh(store, "ro", &[("GOBUILDCACHE_READ_ONLY", "true")]);
    go3.ok(&["build", "./..."]);
    let s = stats(&s3);
    assert!(s.remote_hits > 0, "{s:?}");
    assert_eq!(s.uploads + s.upload_failures, 0, "{s:?}");
    let after: Vec<String> = object_keys(store);
    assert_eq!(
        after,
        before.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>()
    );
    assert!(
        s.misses > 0,
        "the build had misses it could have uploaded: {s:?}"
    );
    assert_eq!(store.read(k0), bad);
    for (k, d) in &before[1..] {
        assert!(store.read(k) == *d, "read-only changed {k}");
    }
}

/// clear-remote deletes its prefix and nothing else; an empty prefix needs --force.
pub fn clear_remote_deletes_only_its_prefix(store: &dyn Store, prefix_flag: Option<&str>) {
    let r = Run::new();
    let (go1, _) = r.fresh(store, "fill", &[]);
    go1.ok(&["build", "./mathx"]);
    let foreign = "other-team/keep-me";
    store.write(foreign, b"not ours");
    // Keys that share the prefix's first characters but are not under it.
    let neighbours = ["gobuildcache-other/x", "gobuildcacheX", "gobuildcache.bak"];
    for k in neighbours {
        store.write(k, b"not ours either");
    }
    let n = object_keys(store).len();
    assert!(n > 0);
    let run = |args: &[&str]| {
        let mut c = std::process::Command::new(bin());
        c.arg("clear-remote")
            .args(args)
            .arg("-cache-dir")
            .arg(r.t.path("local-clear"));
        for (k, v) in store.env() {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    let out = run(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("deleting {n} objects")), "{text}");
    assert!(text.contains(&format!("deleted {n} objects")), "{text}");
    assert!(object_keys(store).is_empty());
    let survivors = |want: &[&str]| {
        let keys = store.keys();
        for k in want {
            assert!(keys.contains(&k.to_string()), "{k} was deleted: {keys:?}");
        }
    };
    survivors(&[foreign]);
    survivors(&neighbours);

    if let Some(flag) = prefix_flag {
        // A prefix without a slash is a string start: only the keys a helper with that prefix
        // writes (prefix + ActionID hex) are its, not every key that starts the same way.
        let own = format!("gobuildcache{}", "ab".repeat(32));
        store.write(&own, b"written with -prefix gobuildcache");
        let out = run(&[flag, "gobuildcache"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("deleted 1 objects"), "{text}");
        assert!(!store.keys().contains(&own));
        survivors(&[foreign]);
        survivors(&neighbours);

        let out = run(&[flag, ""]);
        assert!(!out.status.success(), "an empty prefix is refused");
        assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
        assert!(store.keys().contains(&foreign.to_string()));
    }
}

/// A store that fails every call: the build still succeeds, local-only, counted.
pub fn failing_store_is_a_miss_not_a_failure(store: &dyn Store) {
    let r = Run::new();
    let (go, s) = r.fresh(store, "faulty", &[("GOBUILDCACHE_ERROR_RATE", "1.0")]);
    let out = go.ok(&["build", "./..."]);
    let st = stats(&s);
    assert!(st.remote_errors > 0, "{st:?}");
    assert!(st.breaker_trips >= 1, "{st:?}");
    assert_eq!(st.remote_hits, 0);
    let err = String::from_utf8_lossy(&out.stderr);
    let warnings = err.lines().filter(|l| l.contains("WARN")).count();
    assert!(
        warnings <= 3,
        "one warning per kind, not one per request:\n{err}"
    );
}

/// `gobuildcache prefetch` (the warm-up step a CI job can run first), started in the module
/// like the go command would be; returns the running process.
fn start_prefetch(
    r: &Run,
    store: &dyn Store,
    local: &str,
    stats: &std::path::Path,
    extra: &[(&str, &str)],
) -> Child {
    let mut c = Command::new(bin());
    c.arg("prefetch")
        .arg("-cache-dir")
        .arg(r.t.path(local))
        .arg("-stats-json")
        .arg(stats)
        .current_dir(&r.module)
        .env_clear()
        .env("GOTOOLCHAIN", "local")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for k in ["PATH", "HOME", "TMPDIR"] {
        if let Some(v) = std::env::var_os(k) {
            c.env(k, v);
        }
    }
    for (k, v) in store.env() {
        c.env(k, v);
    }
    c.envs(extra.iter().copied());
    c.spawn().expect("starting gobuildcache prefetch")
}

fn finish(child: Child, what: &str) -> Output {
    let out = wait_bounded(child, Duration::from_secs(300), what);
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Warm start: a cold run publishes its manifest. On a fresh local dir, two concurrent
/// `gobuildcache prefetch` runs fetch each entry exactly once between them, and the go
/// command that follows finds every entry local: no get waits for the network.
pub fn prefetch_fetches_each_entry_once_and_builds_locally(store: &dyn Store) {
    let r = Run::new();
    let (go1, s1) = r.fresh(store, "fill", &[]);
    let app1 = r.t.path("app1");
    go1.ok(&["build", "-o", app1.to_str().unwrap(), "./cmd/app"]);
    go1.ok(&["test", "./..."]);
    assert!(stats(&s1).manifest_published > 0, "{:?}", stats(&s1));

    let (pa, pb) = (r.t.path("pa.json"), r.t.path("pb.json"));
    let a = start_prefetch(&r, store, "local-warm", &pa, &[]);
    let b = start_prefetch(&r, store, "local-warm", &pb, &[]);
    let out = finish(a, "prefetch a");
    finish(b, "prefetch b");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("prefetched"),
        "{out:?}"
    );
    let (sa, sb) = (stats(&pa), stats(&pb));
    let entries = sa.manifest_entries;
    assert!(entries > 10, "{sa:?}");
    assert_eq!(sb.manifest_entries, entries, "both read the same manifest");
    assert_eq!(
        sa.prefetch_missing + sb.prefetch_missing,
        0,
        "{sa:?} {sb:?}"
    );
    for s in [&sa, &sb] {
        assert_eq!(s.prefetch_fetched + s.prefetch_local, entries, "{s:?}");
        assert_eq!(s.remote_errors + s.remote_corrupt, 0, "{s:?}");
        assert_eq!(
            s.manifest_published, 0,
            "a prefetch alone uses nothing: {s:?}"
        );
    }
    assert_eq!(
        sa.prefetch_fetched + sb.prefetch_fetched,
        entries,
        "each entry fetched exactly once across both: {sa:?} {sb:?}"
    );
    assert_eq!(sa.remote_downloads + sb.remote_downloads, entries);

    let (go2, s2) = r.fresh(store, "warm", &[]);
    let app2 = r.t.path("app2");
    go2.ok(&["build", "-o", app2.to_str().unwrap(), "./cmd/app"]);
    go2.ok(&["test", "./..."]);
    let st = stats(&s2);
    assert_eq!(st.remote_hits, 0, "every entry was local already: {st:?}");
    assert_eq!(st.local_hits, st.hits, "{st:?}");
    assert_eq!(st.prefetch_fetched, 0, "{st:?}");
    assert_eq!(std::fs::read(&app1).unwrap(), std::fs::read(&app2).unwrap());
    assert_bodies_intact(&r.t.path("local-warm"));
}

/// ActionIDs a local tier holds a record for.
fn local_records(local: &std::path::Path) -> u64 {
    files_under(&local.join("v1").join("a")).len() as u64
}

/// The go command's gets race the prefetch started by its own helper (one fetch at a time,
/// so most gets overtake it): every hit is the right body, and nothing is fetched twice.
pub fn gets_racing_the_prefetch_get_the_right_bodies(store: &dyn Store) {
    let r = Run::new();
    let (go1, _) = r.fresh(store, "fill", &[]);
    let app1 = r.t.path("app1");
    go1.ok(&["build", "-o", app1.to_str().unwrap(), "./cmd/app"]);

    let (go2, s2) = r.fresh(store, "race", &[("GOBUILDCACHE_PREFETCH_CONCURRENCY", "1")]);
    let app2 = r.t.path("app2");
    go2.ok(&["build", "-o", app2.to_str().unwrap(), "./cmd/app"]);
    let st = stats(&s2);
    assert!(st.manifest_entries > 0, "{st:?}");
    assert_eq!(
        st.local_hits, 0,
        "fresh dir: every hit came from the remote: {st:?}"
    );
    assert_warm(&st, 1);
    assert!(
        st.prefetch_hits + st.prefetch_joined <= st.remote_hits,
        "{st:?}"
    );
    assert_eq!(st.remote_errors + st.remote_corrupt, 0, "{st:?}");
    // Each entry was downloaded once: by the prefetch or by a get, never both (a put may
    // rewrite a downloaded entry's record, or add one).
    let records = local_records(&r.t.path("local-race"));
    assert!(st.remote_downloads <= records, "{records} records: {st:?}");
    assert!(
        records <= st.remote_downloads + st.puts,
        "{records} records: {st:?}"
    );
    assert_eq!(std::fs::read(&app1).unwrap(), std::fs::read(&app2).unwrap());
    assert_bodies_intact(&r.t.path("local-race"));
}

/// Manifests that are damaged or over the size cap are ignored with a warning; the valid one
/// beside them still drives the prefetch, and builds are unaffected.
pub fn bad_manifests_are_ignored(store: &dyn Store) {
    let r = Run::new();
    let key = [("GOBUILDCACHE_MANIFEST_KEY", "suite/bad-manifests")];
    let (go1, _) = r.fresh(store, "fill", &key);
    go1.ok(&["build", "./..."]);
    let dir = gobuildcache::warm::names::dir_key("gobuildcache/", "suite/bad-manifests");
    let valid: Vec<String> = store
        .keys()
        .into_iter()
        .filter(|k| k.starts_with(&dir) && !gobuildcache::warm::pack::is_pack(k))
        .collect();
    assert_eq!(valid.len(), 1, "{:?}", store.keys());
    // Newer names than the valid one, so they are read first.
    let mut garbage = store.read(&valid[0]);
    garbage[20] ^= 0xff;
    store.write(&format!("{dir}ffffffffffffff00-00000000"), &garbage);
    let huge = vec![7u8; gobuildcache::format::manifest::MAX_BYTES as usize + 1];
    store.write(&format!("{dir}ffffffffffffff01-00000000"), &huge);

    let (go2, s2) = r.fresh(store, "after", &key);
    let out = go2.ok(&["build", "./..."]);
    let st = stats(&s2);
    assert_eq!(st.manifest_rejected, 2, "{st:?}");
    assert!(
        st.manifest_entries > 0,
        "the valid manifest still counts: {st:?}"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.matches("ignoring manifest").count(),
        1,
        "warned once: {err}"
    );
    assert_warm(&st, 1);
}

/// Two jobs publishing the same manifest name at once both land (no overwrite), and the
/// next run starts from the union of what they used.
pub fn concurrent_publishers_are_merged(store: &dyn Store) {
    use gobuildcache::format::manifest::Manifest;
    use gobuildcache::warm::names::dir_key;
    let r = Run::new();
    let key = [("GOBUILDCACHE_MANIFEST_KEY", "suite/merge")];
    let (ga, _) = r.fresh(store, "a", &key);
    let (gb, _) = r.fresh(store, "b", &key);
    let ca = ga
        .command(&["vet", "./mathx"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let cb = gb
        .command(&["build", "./greet"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    finish(ca, "go vet");
    finish(cb, "go build");
    let dir = dir_key("gobuildcache/", "suite/merge");
    let published: Vec<Manifest> = store
        .keys()
        .into_iter()
        .filter(|k| k.starts_with(&dir) && !gobuildcache::warm::pack::is_pack(k))
        .map(|k| Manifest::decode(&store.read(&k)).unwrap())
        .collect();
    assert_eq!(published.len(), 2, "both publishes landed");
    let union = Manifest::merge(&published);
    assert!(union.len() > published[0].len().max(published[1].len()));

    // The prefetch step waits for the warm start; a go build can end before a store slowed
    // by a loaded machine has answered, and its close then stops the reading.
    let sc = r.t.path("c.json");
    finish(
        start_prefetch(&r, store, "local-c", &sc, &key),
        "prefetch c",
    );
    assert_eq!(stats(&sc).manifest_entries, union.len() as u64);
}

fn pack_keys(store: &dyn Store) -> Vec<String> {
    store
        .keys()
        .into_iter()
        .filter(|k| gobuildcache::warm::pack::is_pack(k))
        .collect()
}

/// Warm-start packs: a cold run publishes its uploads as packs; the next fresh machine
/// streams them and publishes none; two concurrent prefetches into one fresh dir take the
/// entries from them, each exactly once between them, and the build that follows is all
/// local. Only the newest groups are kept.
pub fn packs_carry_the_warm_start(store: &dyn Store) {
    let r = Run::new();
    let (go1, s1) = r.fresh(store, "fill", &[]);
    let app1 = r.t.path("app1");
    go1.ok(&["build", "-o", app1.to_str().unwrap(), "./cmd/app"]);
    let st = stats(&s1);
    assert!(st.uploads > 0, "{st:?}");
    assert_eq!(
        st.pack_published, st.uploads,
        "a cold run packs what it uploaded: {st:?}"
    );
    assert!(st.close_us > 0 && st.cpu_us > 0, "reported: {st:?}");
    go1.ok(&["test", "./..."]);
    let after_fill = pack_keys(store);
    assert!(!after_fill.is_empty());

    let (go2, s2) = r.fresh(store, "fresh", &[]);
    go2.ok(&["build", "./cmd/app"]);
    let st = stats(&s2);
    assert!(st.pack_entries > 0, "{st:?}");
    let single = st.remote_downloads - st.pack_entries;
    assert!(
        single < gobuildcache::warm::pack::MIN_SINGLE,
        "the packs held the warm start: {st:?}"
    );
    assert_eq!(st.pack_published, 0, "{st:?}");
    assert_eq!(pack_keys(store), after_fill);

    let (pa, pb) = (r.t.path("pa.json"), r.t.path("pb.json"));
    let a = start_prefetch(&r, store, "local-shared", &pa, &[]);
    let b = start_prefetch(&r, store, "local-shared", &pb, &[]);
    finish(a, "prefetch a");
    finish(b, "prefetch b");
    let (sa, sb) = (stats(&pa), stats(&pb));
    let entries = sa.manifest_entries;
    assert!(sa.pack_entries + sb.pack_entries > 0, "{sa:?} {sb:?}");
    assert_eq!(
        sa.prefetch_fetched + sb.prefetch_fetched,
        entries,
        "each entry fetched exactly once across both: {sa:?} {sb:?}"
    );
    assert_eq!(sa.remote_downloads + sb.remote_downloads, entries);
    for s in [&sa, &sb] {
        assert_eq!(s.remote_errors + s.remote_corrupt, 0, "{s:?}");
        // A new pack only if the ones found left a quarter to fetch one by one.
        let single = s.remote_downloads - s.pack_entries;
        assert!(s.pack_published == 0 || single * 4 >= entries, "{s:?}");
    }
    assert_bodies_intact(&r.t.path("local-shared"));

    let (go3, s3) = r.fresh(store, "shared", &[]);
    let app3 = r.t.path("app3");
    go3.ok(&["build", "-o", app3.to_str().unwrap(), "./cmd/app"]);
    let st = stats(&s3);
    assert_eq!(st.local_hits, st.hits, "{st:?}");
    assert_eq!(st.pack_published, 0, "{st:?}");
    assert_eq!(std::fs::read(&app1).unwrap(), std::fs::read(&app3).unwrap());
    let packs = pack_keys(store);
    assert_eq!(
        gobuildcache::warm::pack::newest_groups(&packs, gobuildcache::warm::pack::KEEP).len(),
        packs.len(),
        "only the newest groups are kept: {packs:?}"
    );
}

/// A damaged pack is reported once and deleted; what it could not deliver is fetched one
/// by one, and the build is right.
pub fn a_damaged_pack_is_dropped(store: &dyn Store) {
    let r = Run::new();
    let (go1, _) = r.fresh(store, "fill", &[]);
    let app1 = r.t.path("app1");
    go1.ok(&["build", "-o", app1.to_str().unwrap(), "./cmd/app"]);
    let packs = pack_keys(store);
    assert_eq!(packs.len(), 1, "{:?}", store.keys());
    let mut pack = store.read(&packs[0]);
    // The middle of the biggest frame's body, found through the index (12-byte head, then
    // 40 bytes per entry: ActionID and frame length, then a 32-byte checksum).
    let n = u32::from_le_bytes(pack[8..12].try_into().unwrap()) as usize;
    let lens: Vec<u64> = (0..n)
        .map(|i| u64::from_le_bytes(pack[12 + i * 40 + 32..12 + i * 40 + 40].try_into().unwrap()))
        .collect();
    let big = (0..n).max_by_key(|&i| lens[i]).unwrap();
    let start = 12 + n * 40 + 32 + lens[..big].iter().sum::<u64>() as usize;
    assert!(lens[big] > 200, "{lens:?}");
    pack[start + 88 + (lens[big] as usize - 88) / 2] ^= 0x55;
    store.write(&packs[0], &pack);

    let p = r.t.path("p.json");
    let out = finish(
        start_prefetch(&r, store, "local-after", &p, &[]),
        "prefetch",
    );
    let st = stats(&p);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("is damaged").count(), 1, "{err}");
    assert!(st.remote_corrupt >= 1, "{st:?}");
    assert_eq!(
        st.prefetch_fetched + st.prefetch_missing,
        st.manifest_entries,
        "the rest came one by one: {st:?}"
    );
    assert!(!pack_keys(store).contains(&packs[0]), "{:?}", store.keys());

    let (go3, s3) = r.fresh(store, "after", &[]);
    let app3 = r.t.path("app3");
    go3.ok(&["build", "-o", app3.to_str().unwrap(), "./cmd/app"]);
    assert_eq!(std::fs::read(&app1).unwrap(), std::fs::read(&app3).unwrap());
    assert_bodies_intact(&r.t.path("local-after"));
    let st = stats(&s3);
    assert_eq!(st.remote_corrupt, 0, "{st:?}");
}

/// A cold remote small enough to list whole at start-up is not asked about each miss, and
/// what it holds is still fetched.
pub fn a_small_remote_is_listed_once(store: &dyn Store) {
    let r = Run::new();
    let (go1, s1) = r.fresh(store, "cold", &[]);
    go1.ok(&["build", "./..."]);
    let st = stats(&s1);
    assert!(st.remote_absent > 0, "{st:?}");
    assert!(st.remote_absent <= st.remote_misses, "{st:?}");
    assert_eq!(st.remote_hits + st.remote_errors, 0, "{st:?}");

    let (go2, s2) = r.fresh(store, "warm", &[]);
    go2.ok(&["build", "./..."]);
    let st = stats(&s2);
    // Only the main package's link, never cached, is not in the store.
    assert_warm(&st, 1);
    assert!(st.remote_hits > 0, "{st:?}");
    assert!(st.remote_absent <= st.misses, "{st:?}");
}

/// The shared suite, once per store; `$store` makes a fresh store for each test.
macro_rules! store_suite {
    ($name:ident, $store:expr, $prefix_flag:expr) => {
        mod $name {
            use super::*;

            #[test]
            fn fresh_machine_gets_remote_hits() {
                super::fresh_machine_gets_remote_hits(&$store);
            }

            #[test]
            fn damaged_objects_are_rebuilt() {
                super::damaged_objects_are_rebuilt(&$store);
            }

            #[test]
            fn compression_is_recorded_in_the_object() {
                super::compression_is_recorded_in_the_object(&$store);
            }

            #[test]
            fn read_only_leaves_the_store_unchanged() {
                super::read_only_leaves_the_store_unchanged(&$store);
            }

            #[test]
            fn clear_remote_deletes_only_its_prefix() {
                super::clear_remote_deletes_only_its_prefix(&$store, $prefix_flag);
            }

            #[test]
            fn prefetch_fetches_each_entry_once_and_builds_locally() {
                super::prefetch_fetches_each_entry_once_and_builds_locally(&$store);
            }

            #[test]
            fn gets_racing_the_prefetch_get_the_right_bodies() {
                super::gets_racing_the_prefetch_get_the_right_bodies(&$store);
            }

            #[test]
            fn bad_manifests_are_ignored() {
                super::bad_manifests_are_ignored(&$store);
            }

            #[test]
            fn packs_carry_the_warm_start() {
                super::packs_carry_the_warm_start(&$store);
            }

            #[test]
            fn a_damaged_pack_is_dropped() {
                super::a_damaged_pack_is_dropped(&$store);
            }

            #[test]
            fn a_small_remote_is_listed_once() {
                super::a_small_remote_is_listed_once(&$store);
            }

            #[test]
            fn concurrent_publishers_are_merged() {
                super::concurrent_publishers_are_merged(&$store);
            }

            #[test]
            fn failing_store_is_a_miss_not_a_failure() {
                super::failing_store_is_a_miss_not_a_failure(&$store);
            }
        }
    };
}

store_suite!(dir, DirStore::start(), None);
store_suite!(s3, S3Store::start(), Some("-s3-prefix"));
store_suite!(gcs, GcsStore::start(), Some("-gcs-prefix"));
store_suite!(azure, AzureStore::start(), Some("-azure-prefix"));
store_suite!(http, HttpStore::start(), Some("-http-prefix"));

/// A remote too big to list at start-up is asked about each miss, as before.
#[test]
fn dir_big_remote_is_asked_per_get() {
    let store = DirStore::start();
    for i in 0..16_001 {
        store.write(&format!("gobuildcache/other-{i}"), b"x");
    }
    let r = Run::new();
    let (go, s) = r.fresh(&store, "cold", &[]);
    go.ok(&["build", "./..."]);
    let st = stats(&s);
    assert!(st.remote_misses > 0, "{st:?}");
    assert_eq!(st.remote_absent, 0, "{st:?}");
}

/// A store that lists a page per request and holds more than one page is listed in parts
/// side by side (one per first hex digit): its misses still cost no round trip.
#[test]
fn s3_a_remote_past_one_page_is_listed_in_parts() {
    let store = S3Store::start();
    for i in 0..1_100u32 {
        // Spread over every first digit, as ActionIDs are.
        let id = format!("{:x}{:063x}", i % 16, u64::from(i) * 7919);
        store.write(&format!("gobuildcache/{id}"), b"x");
    }
    let r = Run::new();
    let (go, s) = r.fresh(&store, "cold", &[]);
    go.ok(&["build", "./..."]);
    let st = stats(&s);
    assert!(st.remote_absent > 0, "{st:?}");
    assert!(st.remote_absent <= st.remote_misses, "{st:?}");
    assert_eq!(st.remote_hits + st.remote_errors, 0, "{st:?}");
}

#[test]
fn dir_missing_store_warns_once_and_builds() {
    let store = DirStore::missing();
    let r = Run::new();
    let (go, s) = r.fresh(&store, "missing", &[]);
    let out = go.ok(&["build", "./..."]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("not usable").count(), 1, "{err}");
    let st = stats(&s);
    assert_eq!(st.remote_hits, 0);
    assert!(st.misses > 0);
}

// S3 on a real moto_server.

use crate::fake_gcs::FakeGcs;
use crate::moto::Moto;

pub struct S3Store {
    pub server: Moto,
    pub bucket: String,
}

impl S3Store {
    pub fn start() -> S3Store {
        let server = Moto::start();
        server.create_bucket("gbc");
        S3Store {
            server,
            bucket: "gbc".into(),
        }
    }
}

impl Store for S3Store {
    fn env(&self) -> Vec<(String, String)> {
        self.server.env(&self.bucket)
    }
    fn keys(&self) -> Vec<String> {
        let mut k = self.server.keys(&self.bucket, "");
        k.sort();
        k
    }
    fn read(&self, key: &str) -> Vec<u8> {
        self.server
            .get_object(&self.bucket, key)
            .expect("object exists")
    }
    fn write(&self, key: &str, data: &[u8]) {
        self.server.put_object(&self.bucket, key, data)
    }
}

/// A missing bucket and rejected credentials: one clear warning, a green local-only build.
#[test]
fn s3_missing_bucket_and_bad_credentials_build_local_only() {
    let store = S3Store::start();
    let r = Run::new();
    let missing = S3Store {
        server: Moto::start(),
        bucket: "no-such-bucket".into(),
    };
    let (go, s) = r.fresh(&missing, "missing", &[]);
    let out = go.ok(&["build", "./..."]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("not usable").count(), 1, "{err}");
    assert!(err.contains("no-such-bucket"), "{err}");
    assert_eq!(stats(&s).remote_hits, 0);

    let denying = Moto::start_with_auth();
    let bad = S3Store {
        server: denying,
        bucket: "gbc".into(),
    };
    let (go, s) = r.fresh(&bad, "denied", &[]);
    let out = go.ok(&["build", "./..."]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("not usable").count(), 1, "{err}");
    assert!(!err.contains("testing"), "no credential in messages: {err}");
    let st = stats(&s);
    assert_eq!(st.remote_hits + st.uploads, 0, "{st:?}");
    drop(store);
}

/// The server dies in the middle of a build: the build still succeeds, correct, and the
/// failure costs bounded time (timeouts and the breaker), not a hang.
#[test]
fn s3_server_stopped_mid_build() {
    let mut store = S3Store::start();
    let r = Run::new();
    let (fill, _) = r.fresh(&store, "fill", &[]);
    fill.ok(&["build", "./..."]);

    let (go, s) = r.fresh(&store, "victim", &[]);
    let app = r.t.path("app");
    let child = go
        .command(&["build", "-a", "-o", app.to_str().unwrap(), "./cmd/app"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let local = r.t.path("local-victim");
    let start = std::time::Instant::now();
    while files_under(&local.join("v1/o")).len() < 15 && start.elapsed().as_secs() < 60 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    store.server.stop();
    let stopped_at = std::time::Instant::now();
    let out = wait_bounded(child, std::time::Duration::from_secs(300), "go build");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tail = stopped_at.elapsed();
    let st = stats(&s);
    assert!(st.remote_errors > 0 || st.upload_failures > 0, "{st:?}");
    // A cold rebuild of what is left takes tens of seconds on 2 cores; the remote must not
    // add more than its deadlines (a few seconds) on top.
    assert!(
        tail.as_secs() < 240,
        "took {tail:?} after the server stopped"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    let warns = err.lines().filter(|l| l.contains("WARN")).count();
    assert!(
        warns <= 4,
        "a dying server is a handful of lines, not one per request:\n{err}"
    );
    let native = GoEnv::native(&r.t, &r.module, &r.t.path("native"));
    let app_native = r.t.path("app-native");
    native.ok(&["build", "-o", app_native.to_str().unwrap(), "./cmd/app"]);
    assert_eq!(
        std::fs::read(app).unwrap(),
        std::fs::read(app_native).unwrap()
    );
}

// GCS on a real fake-gcs-server.

pub struct GcsStore {
    pub server: FakeGcs,
    pub bucket: String,
}

impl GcsStore {
    pub fn start() -> GcsStore {
        let server = FakeGcs::start();
        server.create_bucket("gbc");
        GcsStore {
            server,
            bucket: "gbc".into(),
        }
    }
}

impl Store for GcsStore {
    fn env(&self) -> Vec<(String, String)> {
        self.server.env(&self.bucket)
    }
    fn keys(&self) -> Vec<String> {
        let mut k = self.server.object_names(&self.bucket);
        k.sort();
        k
    }
    fn read(&self, key: &str) -> Vec<u8> {
        self.server
            .get_object(&self.bucket, key)
            .expect("object exists")
    }
    fn write(&self, key: &str, data: &[u8]) {
        self.server.put_object(&self.bucket, key, data)
    }
}

#[test]
fn gcs_missing_bucket_builds_local_only() {
    let store = GcsStore::start();
    let missing = GcsStore {
        server: FakeGcs::start(),
        bucket: "no-such-bucket".into(),
    };
    let r = Run::new();
    let (go, s) = r.fresh(&missing, "missing", &[]);
    let out = go.ok(&["build", "./..."]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("not usable").count(), 1, "{err}");
    assert_eq!(stats(&s).remote_hits, 0);
    drop(store);
}

// Azure Blob Storage on a real Azurite.

use crate::azurite::Azurite;

pub struct AzureStore {
    pub server: Azurite,
    pub container: String,
}

impl AzureStore {
    pub fn start() -> AzureStore {
        let server = Azurite::start();
        server.create_container("gbc");
        AzureStore {
            server,
            container: "gbc".into(),
        }
    }
}

impl Store for AzureStore {
    fn env(&self) -> Vec<(String, String)> {
        self.server.env(&self.container)
    }
    fn keys(&self) -> Vec<String> {
        self.server.keys(&self.container)
    }
    fn read(&self, key: &str) -> Vec<u8> {
        self.server
            .get_object(&self.container, key)
            .expect("object exists")
    }
    fn write(&self, key: &str, data: &[u8]) {
        self.server.put_object(&self.container, key, data)
    }
}

/// A missing container, then a server that is not there: one clear warning each, a green
/// local-only build.
#[test]
fn azure_missing_container_and_dead_server_build_local_only() {
    let missing = AzureStore {
        server: Azurite::start(),
        container: "no-such-container".into(),
    };
    let r = Run::new();
    let (go, s) = r.fresh(&missing, "missing", &[]);
    let out = go.ok(&["build", "./..."]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("not usable").count(), 1, "{err}");
    assert!(err.contains("no-such-container"), "{err}");
    assert!(
        !err.contains("AccountKey"),
        "no credential in messages: {err}"
    );
    assert_eq!(stats(&s).remote_hits, 0);

    let mut dead = missing;
    dead.container = "gbc".into();
    dead.server.stop();
    let (go, s) = r.fresh(&dead, "dead", &[]);
    let out = go.ok(&["build", "./..."]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("not usable").count(), 1, "{err}");
    let st = stats(&s);
    assert_eq!(st.remote_hits + st.uploads, 0, "{st:?}");
}

// A plain HTTP store on a real WebDAV server (wsgidav).

use crate::webdav::WebDav;

pub struct HttpStore {
    pub server: WebDav,
}

impl HttpStore {
    pub fn start() -> HttpStore {
        HttpStore {
            server: WebDav::start(),
        }
    }
}

impl Store for HttpStore {
    fn env(&self) -> Vec<(String, String)> {
        self.server.env()
    }
    fn keys(&self) -> Vec<String> {
        self.server.keys()
    }
    fn read(&self, key: &str) -> Vec<u8> {
        std::fs::read(self.server.dir().join(key)).unwrap()
    }
    fn write(&self, key: &str, data: &[u8]) {
        let p = self.server.dir().join(key);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
        self.server.settle();
    }
}

/// A base URL the server does not have, then a server that is not there: one clear warning
/// each, a green local-only build.
#[test]
fn http_missing_base_and_dead_server_build_local_only() {
    let mut store = HttpStore::start();
    let r = Run::new();
    let (go, s) = r.fresh(
        &store,
        "missing",
        &[(
            "GOBUILDCACHE_HTTP_URL",
            &format!("http://127.0.0.1:{}/no-such-dir/", store.server.port()),
        )],
    );
    let out = go.ok(&["build", "./..."]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("not usable").count(), 1, "{err}");
    assert!(err.contains("no-such-dir"), "{err}");
    assert_eq!(stats(&s).remote_hits, 0);

    store.server.stop();
    let (go, s) = r.fresh(&store, "dead", &[]);
    let out = go.ok(&["build", "./..."]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("not usable").count(), 1, "{err}");
    let st = stats(&s);
    assert_eq!(st.remote_hits + st.uploads, 0, "{st:?}");
}

impl HttpStore {
    fn read_opt(&self, key: &str) -> Option<Vec<u8>> {
        std::fs::read(self.server.dir().join(key)).ok()
    }

    /// `rclone serve webdav`: a second real server, one that ignores `If-None-Match`.
    pub fn rclone() -> HttpStore {
        HttpStore {
            server: WebDav::start_server(crate::webdav::Server::Rclone),
        }
    }
}

#[test]
fn http_rclone_fresh_machine_gets_remote_hits() {
    fresh_machine_gets_remote_hits(&HttpStore::rclone());
}

#[test]
fn http_rclone_clear_remote_deletes_only_its_prefix() {
    clear_remote_deletes_only_its_prefix(&HttpStore::rclone(), Some("-http-prefix"));
}

/// A server without create-only puts (rclone ignores `If-None-Match: *`): a second put of a
/// key replaces the first. Two cold builds racing to upload the same keys then leave one
/// valid object per key, and a fresh machine builds from them, correct and fully warm.
#[test]
fn http_without_create_only_racing_writers_are_harmless() {
    use gobuildcache::store::{http::HttpBackend, Backend, Payload, PutOutcome};
    let store = HttpStore::rclone();
    let t = TestDir::new();
    let (a, b) = (t.path("a"), t.path("b"));
    std::fs::write(&a, b"first").unwrap();
    std::fs::write(&b, b"second!").unwrap();
    let backend = HttpBackend::new(
        &WebDav::url_via(store.server.port()),
        &gobuildcache::config::HttpSettings::default(),
    )
    .unwrap();
    crate::moto::block_on(async {
        let k = "gobuildcache/race/k";
        assert_eq!(
            backend.put(k, &Payload::file(&a, 5)).await.unwrap(),
            PutOutcome::Stored
        );
        // What this server gives: the second writer wins (wsgidav answers 412 instead).
        assert_eq!(
            backend.put(k, &Payload::file(&b, 7)).await.unwrap(),
            PutOutcome::Stored
        );
        backend.delete(k).await.unwrap();
    });
    assert_eq!(store.read_opt("gobuildcache/race/k"), None);

    let r = Run::new();
    let (go1, _) = r.fresh(&store, "racer1", &[]);
    let (go2, _) = r.fresh(&store, "racer2", &[]);
    let c1 = go1
        .command(&["build", "./..."])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let c2 = go2
        .command(&["build", "./..."])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    for (c, what) in [(c1, "racer 1"), (c2, "racer 2")] {
        let out = wait_bounded(c, Duration::from_secs(300), what);
        assert!(
            out.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for key in object_keys(&store)
        .iter()
        .filter(|k| !k.contains("/manifests/"))
    {
        let mut body = Vec::new();
        let h = gobuildcache::format::object::decode(&store.read(key)[..], &mut body)
            .unwrap_or_else(|e| panic!("{key} is damaged: {e}"));
        assert_eq!(gobuildcache::OutputId::of(&body), h.output_id, "{key}");
    }
    let (go3, s3) = r.fresh(&store, "after", &[]);
    let app = r.t.path("app");
    let out = go3.ok(&["build", "-o", app.to_str().unwrap(), "./cmd/app"]);
    let st = stats(&s3);
    assert_eq!(
        st.remote_corrupt + st.remote_errors,
        0,
        "{st:?}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_warm(&st, 1);
    let native = GoEnv::native(&r.t, &r.module, &r.t.path("native"));
    let app_native = r.t.path("app-native");
    native.ok(&["build", "-o", app_native.to_str().unwrap(), "./cmd/app"]);
    assert_eq!(
        std::fs::read(app).unwrap(),
        std::fs::read(app_native).unwrap()
    );
}
