//! A long randomized run of hostile GOCACHEPROG input through the request parser and the whole
//! server loop (a real `Cache` in a temp dir), on stable Rust:
//!
//! ```text
//! cargo run --release -p gobuildcache-tools --bin fuzz_protocol -- --inputs 1000000 [--seed N]
//! ```
//!
//! Prints the inputs run, the time, the distinct error kinds and the peak RSS. Any violated
//! expectation panics with the seed and the session's input. The generator and the checks are
//! `tests/hostile.rs`, which CI also runs (bounded) as `robust::randomized_hostile_sessions`.

#[path = "../../../tests/hostile.rs"]
mod hostile;

use std::process::ExitCode;
use std::time::Instant;

fn main() -> ExitCode {
    let mut inputs: u64 = 1_000_000;
    let mut seed: u64 = 1;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().and_then(|v| v.parse().ok());
        match (a.as_str(), v) {
            ("--inputs", Some(n)) => inputs = n,
            ("--seed", Some(n)) => seed = n,
            _ => {
                eprintln!("usage: fuzz_protocol [--inputs N] [--seed N]");
                return ExitCode::from(2);
            }
        }
    }
    let dir = tempfile::Builder::new()
        .prefix("gbc-fuzz-")
        .tempdir()
        .expect("temp dir");
    let cache = hostile::open_cache(dir.path());
    let mut tally = hostile::Tally::default();
    let start = Instant::now();
    hostile::run(&cache, dir.path(), seed, inputs, &mut tally);
    let elapsed = start.elapsed();
    let stats = cache.stats();
    println!(
        "inputs {} in {} sessions ({:.1} MiB of input), seed {seed}",
        tally.inputs,
        tally.sessions,
        tally.bytes as f64 / (1 << 20) as f64
    );
    println!(
        "time {:.1}s ({:.0} inputs/s)",
        elapsed.as_secs_f64(),
        tally.inputs as f64 / elapsed.as_secs_f64()
    );
    println!(
        "sessions: {} closed, {} ended at end of input, {} ended by a protocol error",
        tally.closed, tally.eof, tally.fatal
    );
    println!(
        "cache: {} gets ({} hits), {} puts, {} put errors, {} protocol errors",
        stats.gets, stats.hits, stats.puts, stats.put_errors, stats.protocol_errors
    );
    println!("cases:");
    for (case, n) in &tally.cases {
        println!("  {n:>9}  {case}");
    }
    println!("distinct error kinds: {}", tally.kinds.len());
    for (kind, n) in &tally.kinds {
        println!("  {n:>9}  {kind}");
    }
    println!(
        "max RSS {:.1} MiB",
        hostile::peak_rss() as f64 / (1 << 20) as f64
    );
    ExitCode::SUCCESS
}
