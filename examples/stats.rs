//! A CI step built on the library: warm the local tier before a build and report on it.
//!
//! ```text
//! cargo run --release --example stats                      # statistics and local tier size
//! cargo run --release --example stats -- --trim            # trim to -max-size first
//! git diff --name-only ... | my-tool-listing-action-ids | \
//!     cargo run --release --example stats -- --prefetch    # get each ActionID (hex, one a line)
//! ```
//!
//! It is configured exactly like the helper, from the `GOBUILDCACHE_*` environment, so a
//! workflow that exports those variables for `GOCACHEPROG=gobuildcache` can run this too. With a
//! remote backend, `--prefetch` pulls the listed entries into the local tier ahead of the build.
//! Prints one JSON object to stdout.

use std::io::BufRead;
use std::process::ExitCode;

use gobuildcache::{ActionId, Cache, Config};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stats: error: {e}");
            ExitCode::from(2)
        }
    }
}

fn run() -> gobuildcache::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = Config::from_env()?;
    gobuildcache::init_logging(config.debug);
    let cache = Cache::open(config)?;

    let mut report = serde_json::Map::new();
    report.insert(
        "cache_dir".into(),
        cache.config().cache_dir.display().to_string().into(),
    );
    if args.iter().any(|a| a == "--trim") {
        let trim = cache.trim()?;
        report.insert("trim".into(), to_json(&trim));
    }
    if args.iter().any(|a| a == "--prefetch") {
        let (mut hits, mut misses) = (0u64, 0u64);
        for line in std::io::stdin().lock().lines() {
            let line = line.map_err(|e| gobuildcache::Error::Io {
                context: "reading ActionIDs from stdin".into(),
                source: e,
            })?;
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            match cache.get(&ActionId::from_hex(line)?)? {
                Some(_) => hits += 1,
                None => misses += 1,
            }
        }
        report.insert(
            "prefetch".into(),
            serde_json::json!({"hits": hits, "misses": misses}),
        );
    }
    report.insert("stats".into(), to_json(&cache.stats()));
    cache.close();
    println!("{}", serde_json::Value::Object(report));
    Ok(())
}

fn to_json(v: &impl serde::Serialize) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}
