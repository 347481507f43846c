//! Network faults between the helper and a real store (S3 on moto_server, GCS on
//! fake-gcs-server, Azure on Azurite), injected by a real TCP fault proxy (toxiproxy): latency, a slow link,
//! connections cut mid-body, a server that accepts and never answers, and the store going
//! away mid-build and coming back. Under each, `go build` and `go test` of a small module
//! must succeed with correct binaries, in bounded time, with the fault counted in the stats;
//! afterwards a clean build against the healed store proves nothing wrong was stored.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use gobuildcache::StatsSnapshot;

use crate::azurite::Azurite;
use crate::fake_gcs::FakeGcs;
use crate::moto::Moto;
use crate::toxiproxy::{Proxy, Stream, Toxic, Toxiproxy};
use crate::util::*;

// A store that answers, only slowly: the cost-aware verdict (src/remote/pace.rs).
mod slow;

/// `-close-timeout` for every helper here: how long close may wait for uploads stuck on a
/// faulty link (the default, 30s, would only make the tests slower).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// The helper's own limits (src/store/guard.rs `Limits::default`), for the time bounds.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);
const GET_TIMEOUT: Duration = Duration::from_secs(3);
const GET_ATTEMPTS: u32 = 2;
const BREAKER_THRESHOLD: u32 = 5;
/// The module variant (see `write_small_module`).
const MODULE: u32 = 7;
/// The prefix the fill writes; each cold run writes under a prefix of its own.
const FILLED: &str = "filled/";

enum Server {
    S3(Moto),
    Gcs(FakeGcs),
    Azure(Azurite),
}

/// A real store behind a toxiproxy proxy, a small module, and a reference binary from a
/// clean build through the proxy.
struct Rig {
    t: TestDir,
    module: PathBuf,
    server: Server,
    _tp: Toxiproxy,
    proxy: Proxy,
    reference: Vec<u8>,
    /// How long the clean cold fill took: `go build`, and `go build` + `go test`.
    fill_build_time: Duration,
    fill_time: Duration,
}

/// One `go build -o app ./cmd/app`, the app run, and `go test ./...`, on one local dir.
struct Outcome {
    with_test: bool,
    build_time: Duration,
    build: StatsSnapshot,
    test: StatsSnapshot,
    elapsed: Duration,
    test_stdout: String,
    stderr: String,
}

impl Rig {
    fn s3() -> Rig {
        Rig::s3_with(true)
    }

    fn gcs() -> Rig {
        Rig::gcs_with(true)
    }

    /// `fill_test`: the fill runs `go test` too (more entries in the store, slower).
    fn s3_with(fill_test: bool) -> Rig {
        let moto = Moto::start();
        moto.create_bucket("gbc");
        let port = moto.port();
        Rig::new(Server::S3(moto), port, fill_test)
    }

    fn gcs_with(fill_test: bool) -> Rig {
        let gcs = FakeGcs::start();
        gcs.create_bucket("gbc");
        let port = gcs.port();
        Rig::new(Server::Gcs(gcs), port, fill_test)
    }

    fn azure() -> Rig {
        let az = Azurite::start();
        az.create_container("gbc");
        let port = az.port();
        Rig::new(Server::Azure(az), port, true)
    }

    fn new(server: Server, upstream: u16, fill_test: bool) -> Rig {
        let t = TestDir::new();
        let module = t.path("mod");
        write_small_module(&module, MODULE);
        let tp = Toxiproxy::start();
        let proxy = tp.proxy("store", upstream);
        let mut rig = Rig {
            t,
            module,
            server,
            _tp: tp,
            proxy,
            reference: Vec::new(),
            fill_build_time: Duration::ZERO,
            fill_time: Duration::ZERO,
        };
        let fill = rig.run("fill", FILLED, fill_test, None);
        assert!(fill.build.uploads > 0, "{:?}", fill.build);
        assert_eq!(
            fill.build.upload_failures + fill.build.uploads_not_done + fill.test.uploads_not_done,
            0,
            "{:?}",
            fill.build
        );
        rig.reference = std::fs::read(rig.t.path("app-fill")).unwrap();
        rig.fill_build_time = fill.build_time;
        rig.fill_time = fill.elapsed;
        rig
    }

    /// The helper's environment: the store through the proxy, under `prefix`.
    fn env(&self, prefix: &str) -> Vec<(String, String)> {
        let endpoint = self.proxy.endpoint();
        let (mut env, prefix_key) = match &self.server {
            Server::S3(m) => {
                let mut env = m.env("gbc");
                for (k, v) in env.iter_mut() {
                    if k == "GOBUILDCACHE_AWS_ENDPOINT_URL_S3" {
                        *v = endpoint.clone();
                    }
                }
                (env, "GOBUILDCACHE_S3_PREFIX")
            }
            Server::Gcs(g) => {
                let mut env = g.env("gbc");
                for (k, v) in env.iter_mut() {
                    if k == "STORAGE_EMULATOR_HOST" {
                        *v = endpoint.clone();
                    }
                }
                (env, "GOBUILDCACHE_GCS_PREFIX")
            }
            Server::Azure(_) => (
                Azurite::env_via(self.proxy.port(), "gbc"),
                "GOBUILDCACHE_AZURE_PREFIX",
            ),
        };
        env.push((prefix_key.into(), prefix.into()));
        env.push((
            "GOBUILDCACHE_CLOSE_TIMEOUT".into(),
            format!("{}s", CLOSE_TIMEOUT.as_secs()),
        ));
        env
    }

    fn go(
        &self,
        local: &str,
        prefix: &str,
        stats: &str,
        extra: &[(&str, &str)],
    ) -> (GoEnv, PathBuf) {
        let s = self.t.path(&format!("{stats}.json"));
        let mut go = GoEnv::ours(&self.t, &self.module, &self.t.path(local), &s);
        go.extra_env = self.env(prefix);
        go.extra_env
            .extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        (go, s)
    }

    /// Builds and tests the module on a fresh local dir `local-{name}` against `prefix`;
    /// `during` runs beside the `go build` (e.g. to cut the store off mid-build).
    fn run(
        &self,
        name: &str,
        prefix: &str,
        with_test: bool,
        during: Option<&(dyn Fn(&Path) + Sync)>,
    ) -> Outcome {
        self.run_with(name, prefix, with_test, during, &[])
    }

    /// As [`Rig::run`], with more environment for the helper.
    fn run_with(
        &self,
        name: &str,
        prefix: &str,
        with_test: bool,
        during: Option<&(dyn Fn(&Path) + Sync)>,
        extra: &[(&str, &str)],
    ) -> Outcome {
        let mut local = format!("local-{name}");
        if self.t.path(&local).exists() {
            // The same run again (a slow row measured twice): fresh all the same.
            local = format!("local-{name}-{}", unique());
        }
        let app = self.t.path(&format!("app-{name}"));
        let start = Instant::now();
        let (go, build_stats) = self.go(&local, prefix, &format!("{name}-build"), extra);
        let child = go
            .command(&["build", "-o", app.to_str().unwrap(), "./cmd/app"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting go");
        let out = std::thread::scope(|s| {
            if let Some(f) = during {
                let dir = self.t.path(&local);
                s.spawn(move || f(&dir));
            }
            wait_bounded(child, Duration::from_secs(300), "go build")
        });
        let mut stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "go build ({name}) failed:\n{stderr}");
        let run = std::process::Command::new(&app).output().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&run.stdout),
            small_module_output(MODULE),
            "the binary built under {name} misbehaves"
        );
        if !self.reference.is_empty() {
            assert!(
                std::fs::read(&app).unwrap() == self.reference,
                "the binary built under {name} differs from the clean build's"
            );
        }
        let build_time = start.elapsed();
        let (mut test, mut test_stdout) = (StatsSnapshot::default(), String::new());
        if with_test {
            let (go, test_stats) = self.go(&local, prefix, &format!("{name}-test"), extra);
            let out = go.ok(&["test", "./..."]);
            test_stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(
                test_stdout.contains(&format!("ok  \texample.com/small{MODULE}/lib")),
                "{test_stdout}"
            );
            stderr += &String::from_utf8_lossy(&out.stderr);
            test = stats(&test_stats);
        }
        let elapsed = start.elapsed();
        assert_bodies_intact(&self.t.path(&local));
        let o = Outcome {
            with_test,
            build_time,
            build: stats(&build_stats),
            test,
            elapsed,
            test_stdout,
            stderr,
        };
        for s in [&o.build, &o.test] {
            assert_eq!(s.corrupt_dropped + s.remote_corrupt, 0, "{name}: {s:?}");
            assert_eq!(
                s.get_errors + s.put_errors + s.protocol_errors,
                0,
                "{name}: {s:?}"
            );
        }
        eprintln!(
            "faults: {name}: {:.1}s (build {:.1}s), build {:?}, test {:?}",
            elapsed.as_secs_f64(),
            build_time.as_secs_f64(),
            brief(&o.build),
            brief(&o.test)
        );
        o
    }

    /// After a fault is gone: a fresh local dir gets the fill's entries from the store
    /// (remote hits, the same binary), and every object in the store, including whatever
    /// the faulty runs uploaded, is intact.
    fn check_healed(&self, name: &str) {
        self.proxy.clear();
        self.proxy.set_enabled(true);
        let healed = self.run(&format!("{name}-healed"), FILLED, false, None);
        let s = &healed.build;
        assert_eq!(s.remote_errors + s.local_hits, 0, "{name} healed: {s:?}");
        assert!(s.remote_hits > 0, "{name} healed: {s:?}");
        assert_warm(s, 1);
        self.assert_store_intact();
    }

    /// Every object decodes, sits under its own ActionID and holds the body its OutputID
    /// names: nothing torn or mixed up was stored. Returns how many objects there are.
    fn assert_store_intact(&self) -> usize {
        use gobuildcache::format::object;
        let objects: Vec<(String, Vec<u8>)> = match &self.server {
            Server::S3(m) => {
                let keys = m.keys("gbc", "");
                crate::moto::block_on(async {
                    // One client for all reads (straight to the server, not through the proxy).
                    let b = m.backend("gbc").await;
                    let mut out = Vec::new();
                    for k in keys {
                        let o = b.client().get_object().bucket("gbc").key(&k).send().await;
                        let o = o.unwrap_or_else(|e| panic!("get {k}: {e:?}"));
                        out.push((k, o.body.collect().await.unwrap().to_vec()));
                    }
                    out
                })
            }
            Server::Gcs(g) => g
                .object_names("gbc")
                .into_iter()
                .map(|k| {
                    let body = g.get_object("gbc", &k).expect("listed object");
                    (k, body)
                })
                .collect(),
            Server::Azure(a) => a
                .keys("gbc")
                .into_iter()
                .map(|k| {
                    let body = a.get_object("gbc", &k).expect("listed object");
                    (k, body)
                })
                .collect(),
        };
        // Warm-start manifests are not cache objects.
        for (key, data) in objects.iter().filter(|(k, _)| !k.contains("/manifests/")) {
            let mut body = Vec::new();
            let h = object::decode(&data[..], &mut body)
                .unwrap_or_else(|e| panic!("stored object {key} is damaged: {e}"));
            assert!(
                key.ends_with(&h.action_id.to_hex()),
                "{key} holds an object for {}",
                h.action_id
            );
            assert_eq!(
                gobuildcache::OutputId::of(&body),
                h.output_id,
                "{key}: body does not match its OutputID"
            );
        }
        objects.len()
    }
}

fn brief(s: &StatsSnapshot) -> String {
    format!(
        "gets {} hits {} (remote {}) remote_errors {} trips {} uploads {} failed {} skipped {} not_done {} slow: verdicts {} resumes {} skipped {}",
        s.gets,
        s.hits,
        s.remote_hits,
        s.remote_errors,
        s.breaker_trips,
        s.uploads,
        s.upload_failures,
        s.uploads_skipped,
        s.uploads_not_done,
        s.slow_verdicts,
        s.slow_resumes,
        s.slow_skipped
    )
}

/// How much a faulty store may add to one go command, from the helper's own limits: the
/// start-up check, the gets that open the breaker (each up to its deadline, retried), and
/// close waiting for stuck uploads. Generous: in practice these overlap.
fn fault_budget() -> Duration {
    CHECK_TIMEOUT + GET_TIMEOUT * GET_ATTEMPTS * BREAKER_THRESHOLD + CLOSE_TIMEOUT
}

impl Rig {
    /// A run under a fault may take at most twice the clean cold build of the same steps
    /// plus the fault budget per go command: slower, never hung.
    fn assert_bounded(&self, o: &Outcome, name: &str) {
        let (reference, commands) = if o.with_test {
            (self.fill_time, 2)
        } else {
            (self.fill_build_time, 1)
        };
        let bound = reference * 2 + fault_budget() * commands;
        assert!(
            o.elapsed < bound,
            "{name} took {:?}, more than {bound:?} (clean cold run {reference:?})",
            o.elapsed
        );
        // One warning per kind of problem, not one per request.
        let warns = o.stderr.lines().filter(|l| l.contains("WARN")).count();
        assert!(warns <= 4 * commands as usize, "{name}:\n{}", o.stderr);
    }

    /// A fault on a fresh local dir against the filled store (with `go test` too when
    /// `with_test`), bounded in time; the heal check follows.
    fn warm(
        &self,
        name: &str,
        with_test: bool,
        during: Option<&(dyn Fn(&Path) + Sync)>,
    ) -> Outcome {
        let o = self.run(&format!("{name}-warm"), FILLED, with_test, during);
        self.assert_bounded(&o, name);
        o
    }

    /// A fault on a fresh local dir and an empty store prefix (a cold build uploading
    /// through the fault).
    fn cold(&self, name: &str, during: Option<&(dyn Fn(&Path) + Sync)>) -> Outcome {
        let o = self.run(&format!("{name}-cold"), &format!("{name}/"), false, during);
        self.assert_bounded(&o, name);
        o
    }
}

/// Every remote hit arrives, only later: nothing fails, nothing is rebuilt.
fn latency(rig: &Rig) {
    let lat = Toxic::Latency {
        ms: 50,
        jitter_ms: 10,
    };
    rig.proxy.add("lat-down", Stream::Downstream, lat.clone());
    rig.proxy.add("lat-up", Stream::Upstream, lat);
    let o = rig.warm("latency", true, None);
    for s in [&o.build, &o.test] {
        assert_eq!(s.remote_errors + s.breaker_trips, 0, "{s:?}");
        assert_eq!(s.slow_verdicts + s.slow_skipped, 0, "not too slow: {s:?}");
    }
    assert!(o.build.remote_hits > 0);
    assert_warm(&o.build, 1);
    assert!(o.test_stdout.contains("(cached)"), "{}", o.test_stdout);
    rig.check_healed("latency");
}

/// Bodies stream slowly both ways (still above the helper's minimum rate): downloads are
/// whole and correct, and close gives up on slow uploads at -close-timeout. The test
/// binaries (megabytes each) cost more at this rate than linking them: the store may be
/// judged too slow (src/remote/pace.rs), and then its gets are misses, never errors.
fn slow_link(rig: &Rig, cold: bool) {
    let bw = Toxic::Bandwidth { kb_per_sec: 512 };
    rig.proxy.add("bw-down", Stream::Downstream, bw.clone());
    rig.proxy.add("bw-up", Stream::Upstream, bw);
    let o = rig.warm("slow", true, None);
    for s in [&o.build, &o.test] {
        if s.slow_verdicts == 0 {
            assert_eq!(s.remote_errors, 0, "{s:?}");
        }
    }
    if o.build.slow_verdicts == 0 {
        assert_warm(&o.build, 1);
    }
    if o.test.slow_verdicts == 0 {
        assert!(o.test_stdout.contains("(cached)"), "{}", o.test_stdout);
    }
    if cold {
        let c = rig.cold("slow", None);
        assert!(c.build.uploads > 0, "{:?}", c.build);
        assert_eq!(c.build.upload_failures, 0, "{:?}", c.build);
    }
    rig.check_healed("slow");
}

/// Connections die after 100 kB: bodies are cut mid-stream both ways. A cut download is a
/// miss (not "corrupt": the object is fine and must not be deleted), a cut upload stores
/// nothing.
fn cut_mid_body(rig: &Rig, cold: bool) {
    let cut = Toxic::LimitData { bytes: 100_000 };
    rig.proxy.add("cut-down", Stream::Downstream, cut.clone());
    rig.proxy.add("cut-up", Stream::Upstream, cut);
    let o = rig.warm("cut", true, None);
    assert!(o.build.remote_errors > 0, "{:?}", o.build);
    assert!(o.build.remote_hits > 0, "{:?}", o.build);
    if cold {
        let c = rig.cold("cut", None);
        assert!(
            c.build.upload_failures + c.build.uploads_skipped > 0,
            "{:?}",
            c.build
        );
    }
    rig.check_healed("cut");
}

/// The server accepts connections and never answers: deadlines and the breaker turn every
/// call into a quick miss, and close does not wait for uploads beyond -close-timeout.
fn black_hole(rig: &Rig, with_test: bool) {
    rig.proxy
        .add("hole", Stream::Downstream, Toxic::Timeout { ms: 0 });
    let o = rig.warm("hole", with_test, None);
    let s = &o.build;
    // Either stops the asking: the breaker after failures, or the slow-store verdict once
    // the waits add up (the start-up check's among them, so it can come before any call
    // has run out its deadline).
    assert!(
        (s.remote_errors > 0 && s.breaker_trips >= 1) || s.slow_verdicts >= 1,
        "{s:?}"
    );
    assert_eq!(s.remote_hits + s.uploads, 0, "{s:?}");
    rig.check_healed("hole");
}

/// The store goes away in the middle of a build (every connection dropped, new ones
/// refused) and comes back two seconds later.
fn gone_mid_build(rig: &Rig, cold: bool) {
    // Slower round trips keep the build busy with the store when it goes.
    rig.proxy.add(
        "lat",
        Stream::Downstream,
        Toxic::Latency {
            ms: 20,
            jitter_ms: 0,
        },
    );
    let cut_off = |local: &Path| {
        let start = Instant::now();
        while files_under(&local.join("v1/o")).len() < 20 && start.elapsed().as_secs() < 120 {
            std::thread::sleep(Duration::from_millis(5));
        }
        rig.proxy.set_enabled(false);
        std::thread::sleep(Duration::from_secs(2));
        rig.proxy.set_enabled(true);
    };
    let o = rig.warm("gone", true, Some(&cut_off));
    let s = &o.build;
    assert!(s.remote_errors > 0, "{s:?}");
    if cold {
        let c = rig.cold("gone", Some(&cut_off));
        let s = &c.build;
        assert!(
            s.upload_failures + s.uploads_skipped + s.uploads_not_done > 0,
            "{s:?}"
        );
    }
    rig.check_healed("gone");
}

#[test]
fn s3_builds_survive_network_faults() {
    let rig = Rig::s3();
    latency(&rig);
    slow_link(&rig, true);
    cut_mid_body(&rig, true);
    black_hole(&rig, true);
    gone_mid_build(&rig, true);
}

#[test]
fn gcs_builds_survive_network_faults() {
    let rig = Rig::gcs();
    cut_mid_body(&rig, true);
    black_hole(&rig, false);
    gone_mid_build(&rig, false);
}

#[test]
fn azure_builds_survive_network_faults() {
    let rig = Rig::azure();
    cut_mid_body(&rig, true);
    black_hole(&rig, false);
    gone_mid_build(&rig, false);
}
