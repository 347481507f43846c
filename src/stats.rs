//! Counters and latency histograms, lock-free so the hot path only does atomic adds.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use serde::Serialize;

#[derive(Default)]
pub(crate) struct Stats {
    pub gets: AtomicU64,
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub puts: AtomicU64,
    pub put_errors: AtomicU64,
    pub get_errors: AtomicU64,
    /// Body bytes received by puts.
    pub bytes_in: AtomicU64,
    /// Body bytes of hits handed out.
    pub bytes_out: AtomicU64,
    pub corrupt_dropped: AtomicU64,
    pub protocol_errors: AtomicU64,
    pub local_hits: AtomicU64,
    pub remote_hits: AtomicU64,
    pub remote_misses: AtomicU64,
    pub remote_absent: AtomicU64,
    pub remote_errors: AtomicU64,
    pub remote_corrupt: AtomicU64,
    pub bytes_down: AtomicU64,
    pub remote_downloads: AtomicU64,
    pub bytes_up: AtomicU64,
    pub uploads: AtomicU64,
    pub uploads_existing: AtomicU64,
    pub upload_failures: AtomicU64,
    pub uploads_dropped: AtomicU64,
    pub uploads_skipped: AtomicU64,
    pub uploads_not_done: AtomicU64,
    pub upload_queue_high_water: AtomicU64,
    pub breaker_trips: AtomicU64,
    pub manifest_entries: AtomicU64,
    pub manifest_rejected: AtomicU64,
    pub manifest_published: AtomicU64,
    pub prefetch_fetched: AtomicU64,
    pub prefetch_local: AtomicU64,
    pub prefetch_missing: AtomicU64,
    pub prefetch_joined: AtomicU64,
    pub prefetch_hits: AtomicU64,
    pub pack_entries: AtomicU64,
    pub pack_published: AtomicU64,
    pub slow_verdicts: AtomicU64,
    pub slow_resumes: AtomicU64,
    pub slow_skipped: AtomicU64,
    pub close_us: AtomicU64,
    pub get_latency: Histogram,
    pub put_latency: Histogram,
    warned: std::sync::Mutex<std::collections::HashMap<&'static str, u64>>,
}

/// A point-in-time copy of the statistics, as printed and as written by `-stats-json`.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct StatsSnapshot {
    pub gets: u64,
    pub hits: u64,
    pub misses: u64,
    pub puts: u64,
    pub put_errors: u64,
    pub get_errors: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub corrupt_dropped: u64,
    pub protocol_errors: u64,
    /// Hits on entries that were local before this helper started or that another process
    /// fetched.
    pub local_hits: u64,
    /// Hits on entries this helper brought from the remote (on demand or by prefetch).
    pub remote_hits: u64,
    /// Gets the remote answered "not there".
    pub remote_misses: u64,
    /// Of those, misses known from the start-up listing of a small remote, without asking.
    pub remote_absent: u64,
    /// Remote calls that failed (timeouts, errors, breaker open); each was a miss.
    pub remote_errors: u64,
    /// Remote objects that failed verification; each was a miss and was deleted.
    pub remote_corrupt: u64,
    pub bytes_down: u64,
    /// Objects fetched from the remote into the local tier (by gets and the prefetch).
    pub remote_downloads: u64,
    pub bytes_up: u64,
    pub uploads: u64,
    /// Uploads skipped because the object was already there.
    pub uploads_existing: u64,
    pub upload_failures: u64,
    /// Uploads not queued because the queue was full (the entry stays local).
    pub uploads_dropped: u64,
    /// Uploads not attempted because the remote was unusable or its breaker open.
    pub uploads_skipped: u64,
    /// Uploads still pending when close's deadline passed.
    pub uploads_not_done: u64,
    pub upload_queue_high_water: u64,
    pub breaker_trips: u64,
    /// ActionIDs in the warm-start manifest found at start-up.
    pub manifest_entries: u64,
    /// Manifest objects ignored because they were damaged or over the size cap.
    pub manifest_rejected: u64,
    /// Entries in the manifest this run published (0: nothing new to publish).
    pub manifest_published: u64,
    /// Manifest entries the prefetch downloaded into the local tier.
    pub prefetch_fetched: u64,
    /// Manifest entries that were already local (e.g. another helper fetched them).
    pub prefetch_local: u64,
    /// Manifest entries the remote no longer has.
    pub prefetch_missing: u64,
    /// Remote hits that arrived while the prefetch was fetching their entry, and waited.
    pub prefetch_joined: u64,
    /// Remote hits the prefetch had already stored locally when the go command asked: no
    /// wait at all. `remote_hits - prefetch_hits` gets waited for the network.
    pub prefetch_hits: u64,
    /// Prefetched entries that came in the warm-start pack (one streamed object) rather
    /// than one by one. Counted in `prefetch_fetched` too.
    pub pack_entries: u64,
    /// Entries in the packs this run published (0: none published): a cold run's uploads,
    /// packed while it runs, or at close the warm start it had to fetch one by one.
    pub pack_published: u64,
    /// Times the remote was judged too slow to pay (fetching cost more than building).
    pub slow_verdicts: u64,
    /// Times a probe found it fast again and gets went back to it.
    pub slow_resumes: u64,
    /// Gets answered locally, without asking the remote, because it was judged too slow
    /// (or let go waiting when the verdict came); each was a miss.
    pub slow_skipped: u64,
    /// How long the go command's `close` took to answer, in microseconds (0 before it came):
    /// what the helper finished there (the warm start's publishing, uploads still pending).
    /// The helper exits right after the answer, so this is its close-to-exit time.
    #[serde(default)]
    pub close_us: u64,
    pub get_latency: Quantiles,
    pub put_latency: Quantiles,
    /// Peak resident memory of this process so far (Linux; 0 elsewhere).
    pub peak_rss_bytes: u64,
    /// CPU time (user + system) this process has used so far, in microseconds, at 10 ms
    /// resolution (Linux; 0 elsewhere): what the helper costs the machine the build runs on.
    #[serde(default)]
    pub cpu_us: u64,
    /// The system (kernel) part of `cpu_us`: file creation, renames and sockets. Kept apart
    /// because it depends on the file system more than on this code.
    #[serde(default)]
    pub cpu_system_us: u64,
}

/// Latency quantiles in microseconds (bucketed: each value is within ~10% of the truth).
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct Quantiles {
    pub count: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    /// All of them added up: what the go command waited in all (its requests overlap, so
    /// more than the wall time it cost).
    #[serde(default)]
    pub total_us: u64,
}

impl Stats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Relaxed)
    }

    /// Logs the first problem of each kind as a warning; the rest only under `-debug`. The
    /// helper's stderr lands in the user's build log: one line per kind, counts at exit.
    pub fn warn_once(&self, kind: &'static str, msg: &str) {
        let mut w = self.warned.lock().unwrap_or_else(|p| p.into_inner());
        let n = w.entry(kind).or_insert(0);
        *n += 1;
        if *n == 1 {
            tracing::warn!("{msg} (further {kind} problems are counted in the stats)");
        } else {
            tracing::debug!("{msg}");
        }
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let g = |c: &AtomicU64| c.load(Relaxed);
        let cpu = cpu_times();
        StatsSnapshot {
            gets: g(&self.gets),
            hits: g(&self.hits),
            misses: g(&self.misses),
            puts: g(&self.puts),
            put_errors: g(&self.put_errors),
            get_errors: g(&self.get_errors),
            bytes_in: g(&self.bytes_in),
            bytes_out: g(&self.bytes_out),
            corrupt_dropped: g(&self.corrupt_dropped),
            protocol_errors: g(&self.protocol_errors),
            local_hits: g(&self.local_hits),
            remote_hits: g(&self.remote_hits),
            remote_misses: g(&self.remote_misses),
            remote_absent: g(&self.remote_absent),
            remote_errors: g(&self.remote_errors),
            remote_corrupt: g(&self.remote_corrupt),
            bytes_down: g(&self.bytes_down),
            remote_downloads: g(&self.remote_downloads),
            bytes_up: g(&self.bytes_up),
            uploads: g(&self.uploads),
            uploads_existing: g(&self.uploads_existing),
            upload_failures: g(&self.upload_failures),
            uploads_dropped: g(&self.uploads_dropped),
            uploads_skipped: g(&self.uploads_skipped),
            uploads_not_done: g(&self.uploads_not_done),
            upload_queue_high_water: g(&self.upload_queue_high_water),
            breaker_trips: g(&self.breaker_trips),
            manifest_entries: g(&self.manifest_entries),
            manifest_rejected: g(&self.manifest_rejected),
            manifest_published: g(&self.manifest_published),
            prefetch_fetched: g(&self.prefetch_fetched),
            prefetch_local: g(&self.prefetch_local),
            prefetch_missing: g(&self.prefetch_missing),
            prefetch_joined: g(&self.prefetch_joined),
            prefetch_hits: g(&self.prefetch_hits),
            pack_entries: g(&self.pack_entries),
            pack_published: g(&self.pack_published),
            slow_verdicts: g(&self.slow_verdicts),
            slow_resumes: g(&self.slow_resumes),
            slow_skipped: g(&self.slow_skipped),
            close_us: g(&self.close_us),
            get_latency: self.get_latency.quantiles(),
            put_latency: self.put_latency.quantiles(),
            peak_rss_bytes: peak_rss_bytes(),
            cpu_us: cpu.user_us + cpu.system_us,
            cpu_system_us: cpu.system_us,
        }
    }
}

/// VmHWM from /proc: the high-water mark of this process's resident memory, in bytes; 0
/// where /proc is missing.
pub fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// CPU time this process (all its threads) has used so far, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTimes {
    pub user_us: u64,
    pub system_us: u64,
}

/// utime and stime from /proc; zeros where /proc is missing. /proc counts in USER_HZ, which
/// Linux fixes at 100 for user space.
pub fn cpu_times() -> CpuTimes {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the command name, which is in parentheses and may hold spaces.
            let rest = &s[s.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split(' ').collect();
            // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
            let ticks = |i: usize| f.get(i)?.parse::<u64>().ok();
            Some(CpuTimes {
                user_us: ticks(11)? * 10_000,
                system_us: ticks(12)? * 10_000,
            })
        })
        .unwrap_or_default()
}

impl StatsSnapshot {
    /// Two short lines for the end of a build log.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "gobuildcache: {} gets ({} hits, {} misses), {} puts, {} served, {} stored",
            self.gets,
            self.hits,
            self.misses,
            self.puts,
            human_bytes(self.bytes_out),
            human_bytes(self.bytes_in),
        );
        let problems = [
            (self.corrupt_dropped, "corrupt entries dropped"),
            (self.get_errors, "get errors"),
            (self.put_errors, "put errors"),
            (self.protocol_errors, "bad requests"),
        ];
        for (n, what) in problems {
            if n > 0 {
                s += &format!(", {n} {what}");
            }
        }
        let remote_used = self.remote_hits
            + self.remote_misses
            + self.remote_errors
            + self.uploads
            + self.uploads_existing
            + self.upload_failures
            + self.uploads_dropped
            + self.slow_skipped
            > 0;
        if remote_used {
            s += &format!(
                "\ngobuildcache: remote: {} hits, {} misses, {} errors, {} down, {} up ({} uploads, {} already there)",
                self.remote_hits,
                self.remote_misses,
                self.remote_errors,
                human_bytes(self.bytes_down),
                human_bytes(self.bytes_up),
                self.uploads,
                self.uploads_existing,
            );
            let remote_problems = [
                (self.remote_corrupt, "corrupt objects dropped"),
                (self.upload_failures, "uploads failed"),
                (self.uploads_dropped, "uploads skipped (queue full)"),
                (self.uploads_skipped, "uploads skipped (remote unavailable)"),
                (self.uploads_not_done, "uploads not done by close"),
                (self.breaker_trips, "circuit-breaker trips"),
                (self.slow_skipped, "gets skipped (remote too slow)"),
            ];
            for (n, what) in remote_problems {
                if n > 0 {
                    s += &format!(", {n} {what}");
                }
            }
        }
        if self.manifest_entries + self.manifest_published + self.manifest_rejected > 0 {
            s += &format!(
                "\ngobuildcache: warm start: {} in manifest, {} prefetched, {} already local, {} gone; {} hits ready in time, {} waited for a prefetch; published {}",
                self.manifest_entries,
                self.prefetch_fetched,
                self.prefetch_local,
                self.prefetch_missing,
                self.prefetch_hits,
                self.prefetch_joined,
                self.manifest_published,
            );
            if self.manifest_rejected > 0 {
                s += &format!(", {} manifests rejected", self.manifest_rejected);
            }
            if self.pack_entries + self.pack_published > 0 {
                s += &format!(
                    "; pack: {} entries in, {} published",
                    self.pack_entries, self.pack_published
                );
            }
        }
        for (name, q) in [("get", &self.get_latency), ("put", &self.put_latency)] {
            if q.count > 0 {
                s += &format!(
                    "\ngobuildcache: {name} latency p50 {} p90 {} p99 {} max {}; {} in all",
                    human_us(q.p50_us),
                    human_us(q.p90_us),
                    human_us(q.p99_us),
                    human_us(q.max_us),
                    human_us(q.total_us)
                );
            }
        }
        s
    }
}

pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn human_us(us: u64) -> String {
    if us < 1000 {
        format!("{us}µs")
    } else if us < 1_000_000 {
        format!("{:.1}ms", us as f64 / 1000.0)
    } else {
        format!("{:.2}s", us as f64 / 1e6)
    }
}

/// Log-linear histogram of microseconds: 8 sub-buckets per power of two.
pub(crate) struct Histogram {
    buckets: [AtomicU64; BUCKETS],
    count: AtomicU64,
    max: AtomicU64,
    /// Sum of all values: how long the go command waited on us in all.
    total: AtomicU64,
}

const SUB: u32 = 3; // 2^3 sub-buckets
const BUCKETS: usize = (64 - SUB as usize + 1) << SUB;

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            max: AtomicU64::new(0),
            total: AtomicU64::new(0),
        }
    }
}

fn bucket_of(v: u64) -> usize {
    if v < (1 << SUB) {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros(); // >= SUB
    let sub = (v >> (exp - SUB)) & ((1 << SUB) - 1);
    (((exp - SUB + 1) << SUB) as u64 + sub) as usize
}

/// The largest value that falls in bucket `i`.
fn bucket_upper(i: usize) -> u64 {
    if i < (1 << SUB) {
        return i as u64;
    }
    let exp = (i >> SUB) as u32 + SUB - 1;
    let sub = (i & ((1 << SUB) - 1)) as u64;
    let lower = (1u64 << exp) | (sub << (exp - SUB));
    lower + ((1u64 << (exp - SUB)) - 1)
}

impl Histogram {
    pub fn record(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.buckets[bucket_of(us)].fetch_add(1, Relaxed);
        self.count.fetch_add(1, Relaxed);
        self.max.fetch_max(us, Relaxed);
        self.total.fetch_add(us, Relaxed);
    }

    pub fn quantiles(&self) -> Quantiles {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        let max = self.max.load(Relaxed);
        let q = |frac: f64| {
            if total == 0 {
                return 0;
            }
            let rank = ((total as f64) * frac).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (i, c) in counts.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    return bucket_upper(i).min(max);
                }
            }
            max
        };
        Quantiles {
            count: total,
            p50_us: q(0.50),
            p90_us: q(0.90),
            p99_us: q(0.99),
            max_us: max,
            total_us: self.total.load(Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_their_values() {
        for v in (0..5000u64).chain([u64::MAX / 3, u64::MAX]) {
            let b = bucket_of(v);
            assert!(b < BUCKETS, "{v}");
            assert!(bucket_upper(b) >= v, "{v} in {b}");
            if b > 0 {
                assert!(bucket_upper(b - 1) < v, "{v} in {b}");
            }
        }
    }

    #[test]
    fn cpu_time_is_read_and_grows() {
        let before = cpu_times();
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(300) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let after = cpu_times();
        assert!(after.user_us > before.user_us, "{before:?} -> {after:?}");
        assert!(
            after.system_us >= before.system_us,
            "{before:?} -> {after:?}"
        );
    }

    #[test]
    fn quantiles_are_close() {
        let h = Histogram::default();
        for us in 1..=1000u64 {
            h.record(Duration::from_micros(us));
        }
        let q = h.quantiles();
        assert_eq!(q.count, 1000);
        assert_eq!(q.max_us, 1000);
        assert_eq!(q.total_us, 500_500);
        assert!((500..=560).contains(&q.p50_us), "{q:?}");
        assert!((990..=1000).contains(&q.p99_us), "{q:?}");
        assert_eq!(Histogram::default().quantiles(), Quantiles::default());
    }

    #[test]
    fn summary_is_short() {
        let s = StatsSnapshot {
            gets: 10,
            hits: 7,
            misses: 3,
            bytes_out: 3 << 20,
            corrupt_dropped: 1,
            ..Default::default()
        };
        let text = s.summary();
        assert!(text.contains("10 gets (7 hits, 3 misses)"), "{text}");
        assert!(text.contains("3.0 MiB served"), "{text}");
        assert!(text.contains("1 corrupt entries dropped"), "{text}");
        assert_eq!(text.lines().count(), 1);
    }
}
