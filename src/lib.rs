//! gobuildcache: a build cache for the Go toolchain's `GOCACHEPROG` protocol.
//!
//! The library holds all the logic; the `gobuildcache` binary, the C ABI (`ffi/`) and the Go
//! package (`go/`) are thin consumers. Data flows one way:
//! go command → [`protocol`] → [`server`] → [`Cache`] → local disk tier → remote backend.
//!
//! ```
//! use gobuildcache::{ActionId, Cache, Config, OutputId};
//!
//! # let dir = tempfile::tempdir().unwrap();
//! let config = Config::builder()
//!     .flag("cache-dir", dir.path().to_str().unwrap())
//!     .flag("stats", "false")
//!     .build()?;
//! let cache = Cache::open(config)?;
//! let action = ActionId::from_bytes(&[7; 32])?;
//! let body = b"compiled output";
//! let put = cache.put_bytes(&action, &OutputId::of(body), body)?;
//! let hit = cache.get(&action)?.expect("just stored");
//! assert_eq!(hit.path, put.path);
//! assert_eq!(std::fs::read(&hit.path).unwrap(), body);
//! # Ok::<(), gobuildcache::Error>(())
//! ```

pub mod cache;
pub mod config;
mod error;
pub mod format;
pub mod ids;
mod local;
pub mod protocol;
pub mod remote;
pub mod server;
mod stats;
pub mod store;
pub mod warm;
pub use stats::peak_rss_bytes;

use std::path::PathBuf;
use std::time::SystemTime;

pub use cache::{Cache, PutWriter};
pub use config::{BackendKind, Config, ConfigBuilder, LockType};
pub use error::{Error, Result};
pub use ids::{ActionId, OutputId};
pub use local::TrimReport;
pub use server::{serve, Ended};
pub use stats::{Quantiles, StatsSnapshot};

/// A cached output: where its body is on disk and what it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub output_id: OutputId,
    /// Body size in bytes.
    pub size: u64,
    /// When the entry was first put.
    pub time: SystemTime,
    /// Absolute path of a file holding exactly the body; valid until the cache is closed.
    pub path: PathBuf,
}

/// Sends `tracing` output to stderr: warnings only, or everything with `debug`.
/// Safe to call more than once; only the first call takes effect.
pub fn init_logging(debug: bool) {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::prelude::*;
    let level = if debug {
        LevelFilter::DEBUG
    } else {
        LevelFilter::WARN
    };
    // Client libraries log their own retries as warnings; ours are the ones users need.
    let quiet = if debug {
        LevelFilter::DEBUG
    } else {
        LevelFilter::ERROR
    };
    // The SDK's request-level debug lines dump request properties, the access key ID among
    // them: never below INFO.
    let sdk = quiet.min(LevelFilter::INFO);
    let filter = Targets::new()
        .with_default(level)
        .with_target("gcp_auth", quiet)
        .with_target("aws_config", quiet)
        .with_target("aws_runtime", quiet)
        .with_target("aws_smithy_runtime", sdk)
        .with_target("aws_sdk_s3", quiet)
        .with_target("hyper_util", quiet)
        .with_target("reqwest", quiet);
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(ansi);
    // Warnings land in the go command's output: no clock there. With debug, seconds since
    // start tell where a slow build's time went.
    let fmt = if debug {
        fmt.with_timer(tracing_subscriber::fmt::time::uptime())
            .boxed()
    } else {
        fmt.without_time().boxed()
    };
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(filter)
        .try_init();
}
