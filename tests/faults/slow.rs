//! A store that answers every request, only slowly (toxiproxy bandwidth and latency): the
//! helper must weigh what fetching costs against what building would, stop asking a store
//! that costs more, and never make the build slower than no cache by more than a budget
//! derived from the policy's own constants (src/remote/pace.rs). A healthy store must keep
//! every hit.

use std::path::Path;
use std::time::{Duration, Instant};

use gobuildcache::remote::pace;

use super::{brief, Outcome, Rig, FILLED};
use crate::toxiproxy::{Stream, Toxic};
use crate::util::*;

/// What a slow store may add to one `go build`: gets waiting for the start-up check, the
/// waits summed before a verdict, a tick to notice it, and close's capped wait for the warm
/// start to stop while the store is slow; plus what the verdict leaves to judgement
/// ([`UNJUDGED`]).
fn policy_budget() -> Duration {
    pace::CHECK_PATIENCE + pace::EVIDENCE + pace::TICK + pace::SLOW_CLOSE + UNJUDGED
}

/// A store just under the verdict's ratio (64 KB/s here) may cost up to [`pace::SLOW_RATIO`]
/// times what its gets save, and the verdict weighs the last [`pace::SPAN`] only and wants
/// [`pace::MIN_SLOW_GETS`] slow gets: on a quiet 2-core machine every row stayed within
/// 1.35 x cold plus the rest of the budget (2026-11-30, cold builds 4.0-4.4 s, slow rows
/// 6.7-10.6 s on S3 and GCS); the 4 s are room. A row over its bound while the other tests
/// of this binary load the machine is measured again (see [`check_rows`]).
const UNJUDGED: Duration = Duration::from_secs(4);

/// Room for a loaded 2-core machine (three engineers' builds, and the other tests of this
/// binary) and for what a GOCACHEPROG helper costs a cold build by itself (the go command's
/// JSON per action, the uploads' encoding; W3 in the README: 1.21x native).
const LOAD: f64 = 1.35;

impl Rig {
    /// A cold `go build` of the module with Go's own cache and no helper: the yardstick.
    fn cold_native(&self) -> Duration {
        let gocache = self.t.path(&format!("gocache-native-{}", unique()));
        let go = GoEnv::native(&self.t, &self.module, &gocache);
        let app = self.t.path("app-native");
        let start = Instant::now();
        go.ok(&["build", "-o", app.to_str().unwrap(), "./cmd/app"]);
        let took = start.elapsed();
        assert!(std::fs::read(&app).unwrap() == self.reference);
        took
    }

    /// A `go build` on a fresh local dir against the filled store under a slow link: green,
    /// the same binary, one warning about the slowness at most. Its time is checked by
    /// [`check_times`] once the cold yardstick has been measured again.
    fn slow_run(
        &self,
        name: &str,
        during: Option<&(dyn Fn(&Path) + Sync)>,
        extra: &[(&str, &str)],
    ) -> Outcome {
        // GBC_TEST_TRACE=<dir>: each row's helper logs with -debug (seconds since start)
        // into <dir>/<row>.log, to see where a row's time went.
        let trace = std::env::var_os("GBC_TEST_TRACE");
        let mut extra = extra.to_vec();
        if trace.is_some() {
            extra.push(("GOBUILDCACHE_DEBUG", "true"));
        }
        let o = self.run_with(&format!("{name}-slow"), FILLED, false, during, &extra);
        if let Some(dir) = trace {
            let log = Path::new(&dir).join(format!("{name}.log"));
            std::fs::write(&log, &o.stderr).expect("writing the trace");
        }
        let warns: Vec<&str> = o.stderr.lines().filter(|l| l.contains("WARN")).collect();
        // One of each kind at most: a get that timed out, the verdict, a manifest that did
        // not arrive, the uploads close left.
        assert!(warns.len() <= 4, "{name}: {warns:#?}");
        assert!(
            warns.iter().filter(|l| l.contains("is too slow")).count() <= 1,
            "{name}: one warning for slowness: {warns:#?}"
        );
        o
    }
}

/// The most a build under a slow store may take: the cold build without a cache (the slower
/// of those measured around it, as the machine's load drifts) times [`LOAD`] plus the
/// policy budget.
fn bound(cold: Duration) -> Duration {
    cold.mul_f64(LOAD) + policy_budget()
}

/// Says how a row went against its bound; true if within it.
fn within(store: &str, name: &str, o: &Outcome, cold: Duration) -> bool {
    let bound = bound(cold);
    let b = &o.build;
    eprintln!(
        "slow store: {store}: {name}: build {:.1}s; cold build without a cache {:.1}s; bound {:.1}s \
         ({LOAD} x cold + budget {:.1}s); verdicts {} resumes {} skipped {} remote hits {}; \
         gets waited {:.1}s in all, {:.1}s at most",
        o.build_time.as_secs_f64(),
        cold.as_secs_f64(),
        bound.as_secs_f64(),
        policy_budget().as_secs_f64(),
        b.slow_verdicts,
        b.slow_resumes,
        b.slow_skipped,
        b.remote_hits,
        b.get_latency.total_us as f64 / 1e6,
        b.get_latency.max_us as f64 / 1e6,
    );
    if o.build_time <= bound {
        return true;
    }
    // What the helper itself said (its summary, its warnings): whether its gets waited, or
    // the build was slow around them.
    let said: Vec<&str> = o
        .stderr
        .lines()
        .filter(|l| l.starts_with("gobuildcache:") || l.contains("WARN"))
        .collect();
    eprintln!(
        "slow store: {store}: {name}: over its bound: {}\n{}",
        brief(b),
        said.join("\n")
    );
    false
}

type Row<'a> = (&'static str, Box<dyn Fn() -> Outcome + 'a>);

/// Runs each row and checks its time. The other tests of this binary run beside, and one of
/// them (four go builds at once, say) can double a row's time for a while: a row over its
/// bound is measured again once, with the yardstick measured again right before it, and
/// fails only if it is over twice. (CI, 2026-11-30: one row in a full run took 33.5 s with
/// its gets waiting 5 s in all; alone, under two other slow suites and a loop of `go build
/// std`, the same row took 15-17 s.)
fn check_rows(rig: &Rig, store: &str, rows: &[Row<'_>], before: Duration) {
    let runs: Vec<Outcome> = rows.iter().map(|(_, run)| run()).collect();
    let after = rig.cold_native();
    eprintln!(
        "slow store: {store}: cold build without a cache {:.1}s before, {:.1}s after; policy budget {:.1}s",
        before.as_secs_f64(),
        after.as_secs_f64(),
        policy_budget().as_secs_f64()
    );
    let cold = before.max(after);
    let mut failed = Vec::new();
    for ((name, run), o) in rows.iter().zip(&runs) {
        if within(store, name, o, cold) {
            continue;
        }
        let again = rig.cold_native().max(cold);
        let o2 = run();
        if !within(store, &format!("{name} (again)"), &o2, again) {
            failed.push(format!(
                "{name}: {:?} then {:?} > {:?}: {}",
                o.build_time,
                o2.build_time,
                bound(again),
                brief(&o2.build)
            ));
        }
    }
    assert!(
        failed.is_empty(),
        "slower than no cache plus the budget, twice: {failed:#?}"
    );
}

/// A steady fault: the build stays within its bound (checked later). When the store is
/// judged slow, which `must_judge` requires, that is said once and its gets are skipped.
/// (Whether a middling link pays depends on how busy the machine is: its compiles slow
/// down too, and the policy's yardstick grows with them.)
fn steady(rig: &Rig, name: &str, toxics: &[(Stream, Toxic)], must_judge: bool) -> Outcome {
    for (i, (stream, toxic)) in toxics.iter().enumerate() {
        rig.proxy
            .add(&format!("{name}-{i}"), *stream, toxic.clone());
    }
    let o = rig.slow_run(name, None, &[]);
    let s = &o.build;
    assert!(!must_judge || s.slow_verdicts >= 1, "{name}: {s:?}");
    if s.slow_verdicts > 0 {
        assert!(s.slow_skipped > 0, "{name}: {s:?}");
        assert_eq!(
            o.stderr.matches("is too slow").count(),
            1,
            "{name}: the warning says so: {}",
            o.stderr
        );
    }
    rig.proxy.clear();
    o
}

fn both(t: Toxic) -> Vec<(Stream, Toxic)> {
    vec![(Stream::Downstream, t.clone()), (Stream::Upstream, t)]
}

/// A healthy store 20 ms away, warm start on: every remote hit is kept, no verdict.
fn healthy(rig: &Rig) {
    rig.proxy.add(
        "healthy",
        Stream::Downstream,
        Toxic::Latency {
            ms: 20,
            jitter_ms: 0,
        },
    );
    let o = rig.run("healthy-20ms", FILLED, false, None);
    let s = &o.build;
    assert_eq!(
        s.slow_verdicts + s.slow_skipped + s.remote_errors,
        0,
        "{s:?}"
    );
    assert!(s.remote_hits > 0 && s.manifest_entries > 0, "{s:?}");
    assert_warm(s, 1);
    rig.proxy.clear();
}

/// The link turns slow (3 s per response) in the middle of a build, then recovers: the
/// store is judged slow, probed in the background, and used again once it is fast. The warm
/// start is off so the build's own gets meet the change.
fn turns_slow_and_recovers(rig: &Rig) -> Outcome {
    let flip = |local: &Path| {
        let start = Instant::now();
        while files_under(&local.join("v1/o")).len() < 15 && start.elapsed().as_secs() < 60 {
            std::thread::sleep(Duration::from_millis(5));
        }
        rig.proxy.add(
            "flip",
            Stream::Downstream,
            Toxic::Latency {
                ms: 3000,
                jitter_ms: 0,
            },
        );
        std::thread::sleep(Duration::from_secs(5));
        rig.proxy.clear();
    };
    let run = || {
        rig.slow_run(
            "turns-slow",
            Some(&flip),
            &[("GOBUILDCACHE_PREFETCH", "false")],
        )
    };
    let mut o = run();
    if o.build.slow_resumes == 0 {
        // A test server on a machine busy with the other tests' builds can answer even a
        // fast link's probes too slowly to lift the verdict (CI, 2026-11-30: a 40 s build
        // of this row): run it once more before calling it a failure.
        eprintln!(
            "slow store: turns-slow: no resume ({}), once more",
            brief(&o.build)
        );
        o = run();
    }
    let s = &o.build;
    assert!(s.slow_verdicts >= 1, "{s:?}");
    assert!(s.slow_resumes >= 1, "fast again, used again: {s:?}");
    assert!(s.remote_hits > 0, "{s:?}");
    o
}

fn suite(rig: &Rig) {
    let before = rig.cold_native();
    healthy(rig);
    let lat = |ms| vec![(Stream::Downstream, Toxic::Latency { ms, jitter_ms: 0 })];
    let bw = |kb_per_sec| both(Toxic::Bandwidth { kb_per_sec });
    let rows: Vec<Row<'_>> = vec![
        (
            "bw-16KBps",
            Box::new(move || steady(rig, "bw-16KBps", &bw(16), false)),
        ),
        (
            "bw-64KBps",
            Box::new(move || steady(rig, "bw-64KBps", &bw(64), false)),
        ),
        (
            "latency-1s",
            Box::new(move || steady(rig, "latency-1s", &lat(1000), false)),
        ),
        (
            "latency-3s",
            Box::new(move || steady(rig, "latency-3s", &lat(3000), true)),
        ),
        (
            "turns-slow-and-recovers",
            Box::new(move || turns_slow_and_recovers(rig)),
        ),
    ];
    let store = match rig.server {
        super::Server::S3(_) => "S3",
        super::Server::Gcs(_) => "GCS",
        super::Server::Azure(_) => "Azure",
    };
    check_rows(rig, store, &rows, before);
    rig.assert_store_intact();
}

#[test]
fn s3_a_slow_store_never_slows_the_build() {
    suite(&Rig::s3_with(false));
}

#[test]
fn gcs_a_slow_store_never_slows_the_build() {
    suite(&Rig::gcs_with(false));
}
