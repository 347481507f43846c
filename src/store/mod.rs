//! Stores: a small [`Backend`] trait, one file per store, and the layers that wrap any store.
//!
//! A store moves opaque bytes under keys and knows nothing above that: not the object format,
//! the local tier, stats or the warm start (those are in [`crate::remote`]). Around every
//! store, once: deadlines, retries and the circuit breaker ([`guard`]), the stall and
//! minimum-rate guard for bodies ([`idle`]), read-only mode and fault injection ([`wrap`]).
//! Adding a store means one file here, a variant in [`crate::config::BackendKind`] and a line
//! in [`open`].

#[cfg(feature = "azure")]
pub mod azure;
pub mod disk;
#[cfg(feature = "gcs")]
pub mod gcs;
pub mod guard;
#[cfg(feature = "http")]
pub mod http;
pub mod idle;
#[cfg(feature = "s3")]
pub mod s3;
#[cfg(test)]
pub(crate) mod scripted;
pub mod wrap;

use std::path::PathBuf;

use async_trait::async_trait;
use bytes::Bytes;

/// An object body being downloaded.
pub type BodyReader = Box<dyn tokio::io::AsyncRead + Send + Unpin>;

/// What a put uploads: a file (a big object, a pack), or bytes already in memory (a small
/// encoded object or a manifest). In memory spares a temp file per upload: on ext4, creating
/// and deleting ~1,500 of them in a cold build cost the helper more CPU than compressing
/// every body (`perf`, 2026-12-02).
#[derive(Clone, Debug)]
pub enum Payload {
    File { path: PathBuf, size: u64 },
    Bytes(Bytes),
}

impl Payload {
    pub fn file(path: impl Into<PathBuf>, size: u64) -> Payload {
        Payload::File {
            path: path.into(),
            size,
        }
    }

    pub fn size(&self) -> u64 {
        match self {
            Payload::File { size, .. } => *size,
            Payload::Bytes(b) => b.len() as u64,
        }
    }

    /// A reader over the bytes; a file must still have the size it was given.
    #[cfg(any(feature = "gcs", feature = "http", feature = "azure"))]
    pub(crate) async fn reader(
        &self,
        what: &str,
    ) -> BackendResult<Box<dyn tokio::io::AsyncRead + Send + Unpin>> {
        match self {
            Payload::File { path, size } => {
                let file = tokio::fs::File::open(path)
                    .await
                    .map_err(|e| local_error(what, path, e))?;
                let len = file
                    .metadata()
                    .await
                    .map_err(|e| local_error(what, path, e))?
                    .len();
                if len != *size {
                    return Err(BackendError::Permanent(format!(
                        "{what}: {} has {len} bytes, expected {size}",
                        path.display()
                    )));
                }
                Ok(Box::new(file))
            }
            Payload::Bytes(b) => Ok(Box::new(std::io::Cursor::new(b.clone()))),
        }
    }
}

/// What a conditional put did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutOutcome {
    Stored,
    /// The key already had an object and the store refused to overwrite it.
    AlreadyExists,
}

/// One listed object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
}

/// A failed remote call. The kind decides whether a retry can help.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// Timeouts, connection failures, throttling, 5xx: worth a retry.
    #[error("{0}")]
    Transient(String),
    /// Missing bucket, bad credentials, 4xx: retrying will not help.
    #[error("{0}")]
    Permanent(String),
    /// Not attempted: the circuit breaker is open or the remote was found unusable. Already
    /// reported when that happened, so not logged again per call.
    #[error("{0}")]
    Unavailable(String),
}

impl BackendError {
    pub fn is_transient(&self) -> bool {
        matches!(self, BackendError::Transient(_))
    }
}

pub type BackendResult<T> = std::result::Result<T, BackendError>;

/// A store of opaque objects under string keys. Keys arrive complete (prefix included).
///
/// Implementations must not print credentials, signed URLs or tokens in errors: error text is
/// logged and shown to users.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Short kind name for logs and stats: `s3`, `gcs`, `disk`.
    fn name(&self) -> &'static str;

    /// Where objects go, without secrets, e.g. `s3://bucket`.
    fn location(&self) -> String;

    /// A cheap call proving the bucket exists and the credentials work.
    async fn check(&self) -> BackendResult<()>;

    /// Opens an object for reading, in one round trip; `None` if there is no such key.
    async fn get(&self, key: &str) -> BackendResult<Option<BodyReader>>;

    /// Uploads `body`. Where the store can, only if the key is absent: an existing object is
    /// never overwritten with a different body silently.
    async fn put(&self, key: &str, body: &Payload) -> BackendResult<PutOutcome>;

    /// Deletes an object; deleting a missing key is not an error.
    async fn delete(&self, key: &str) -> BackendResult<()>;

    /// Every object whose key starts with `prefix`.
    async fn list(&self, prefix: &str) -> BackendResult<Vec<ObjectInfo>>;

    /// Whether one list request answers a page (~1,000 objects) however many the prefix holds
    /// (S3, GCS, Azure): a big listing is then split by key prefix and read side by side.
    /// A store that walks the whole directory for any listing (disk, WebDAV) says no.
    fn lists_by_page(&self) -> bool {
        false
    }

    /// At most `max` objects under `prefix`, in one request where the store allows, and
    /// whether that was all of them.
    async fn list_some(&self, prefix: &str, max: usize) -> BackendResult<(Vec<ObjectInfo>, bool)> {
        let mut all = self.list(prefix).await?;
        let complete = all.len() <= max;
        all.truncate(max);
        Ok((all, complete))
    }
}

/// An error and its sources, `a: b: c`, skipping a source whose text its parent already shows.
#[cfg(any(feature = "gcs", feature = "azure", feature = "http"))]
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = s.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        cur = s.source();
    }
    out
}

/// A reqwest client built on first use, which is on an I/O thread: building one loads the
/// system's root certificates (measured: ~6 ms), and the go command waits for the handshake
/// while the cache opens. A client that cannot be built makes the store unavailable.
#[cfg(any(feature = "gcs", feature = "http"))]
pub(crate) struct LazyClient {
    builder: std::sync::Mutex<Option<reqwest::ClientBuilder>>,
    client: std::sync::OnceLock<Result<reqwest::Client, String>>,
}

#[cfg(any(feature = "gcs", feature = "http"))]
impl LazyClient {
    pub(crate) fn new(builder: reqwest::ClientBuilder) -> LazyClient {
        LazyClient {
            builder: std::sync::Mutex::new(Some(builder)),
            client: std::sync::OnceLock::new(),
        }
    }

    pub(crate) fn get(&self) -> BackendResult<&reqwest::Client> {
        self.client
            .get_or_init(|| {
                // Gone only if an earlier attempt panicked inside reqwest.
                let builder = self
                    .builder
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take()
                    .ok_or("creating the HTTP client: an earlier attempt failed")?;
                builder
                    .build()
                    .map_err(|e| format!("creating the HTTP client: {}", error_chain(&e)))
            })
            .as_ref()
            .map_err(|m| BackendError::Unavailable(m.clone()))
    }
}

/// A reqwest failure as a backend error: a request we could not even build is permanent;
/// anything on the wire may pass.
#[cfg(any(feature = "gcs", feature = "http"))]
pub(crate) fn transport_error(what: &str, e: reqwest::Error) -> BackendError {
    let (builder, timeout) = (e.is_builder(), e.is_timeout());
    let msg = format!("{what}: {}", error_chain(&e.without_url()));
    if builder {
        BackendError::Permanent(msg)
    } else if timeout {
        BackendError::Transient(format!("{msg} (timed out)"))
    } else {
        BackendError::Transient(msg)
    }
}

/// 408, 429 and 5xx can succeed on a retry; other statuses (a missing bucket, bad
/// credentials, a bad request) will not.
#[cfg(any(feature = "gcs", feature = "http"))]
pub(crate) fn is_transient_status(s: reqwest::StatusCode) -> bool {
    use reqwest::StatusCode;
    s == StatusCode::REQUEST_TIMEOUT || s == StatusCode::TOO_MANY_REQUESTS || s.is_server_error()
}

/// The first 16 KiB of an error response's body, read for 5 s at most: enough for the
/// server's message, never a hang on a body that does not end.
#[cfg(any(feature = "gcs", feature = "http"))]
pub(crate) async fn error_body(resp: &mut reqwest::Response) -> Vec<u8> {
    const MAX: usize = 16 * 1024;
    let mut body = Vec::new();
    let read = async {
        while let Ok(Some(chunk)) = resp.chunk().await {
            body.extend_from_slice(&chunk);
            if body.len() >= MAX {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), read).await;
    body
}

/// A local file a put streams from, unreadable: gone or forbidden will not change.
#[cfg(any(feature = "gcs", feature = "http", feature = "azure"))]
pub(crate) fn local_error(what: &str, path: &std::path::Path, e: std::io::Error) -> BackendError {
    let msg = format!("{what}: reading {}: {e}", path.display());
    match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
            BackendError::Permanent(msg)
        }
        _ => BackendError::Transient(msg),
    }
}

/// Builds the configured store, wrapped for fault injection and read-only mode: the one
/// place that matches on the backend kind. `None` when the configuration is local-only.
pub async fn open(config: &crate::Config) -> crate::Result<Option<std::sync::Arc<dyn Backend>>> {
    use crate::config::BackendKind;
    use std::sync::Arc;
    let base: Arc<dyn Backend> = match config.backend {
        BackendKind::Disk => match &config.remote_dir {
            None => return Ok(None),
            Some(dir) => Arc::new(disk::DiskBackend::new(crate::config::absolute(dir)?)),
        },
        #[cfg(feature = "s3")]
        BackendKind::S3 => Arc::new(s3::S3Backend::new(&config.s3_bucket, &config.aws).await?),
        #[cfg(feature = "gcs")]
        BackendKind::Gcs => Arc::new(gcs::GcsBackend::new(&config.gcs_bucket).await?),
        #[cfg(feature = "azure")]
        BackendKind::Azure => Arc::new(azure::AzureBackend::new(
            &config.azure_container,
            &config.azure,
        )?),
        #[cfg(feature = "http")]
        BackendKind::Http => Arc::new(http::HttpBackend::new(&config.http_url, &config.http)?),
        // Config validation already refuses a compiled-out store; this keeps `open` total.
        #[allow(unreachable_patterns)]
        kind => return Err(crate::Error::Config(kind.compiled_out(None))),
    };
    let mut b = base;
    if config.error_rate > 0.0 {
        tracing::info!(
            "injecting faults into {:.0}% of remote calls",
            config.error_rate * 100.0
        );
        b = Arc::new(wrap::Gated::new(b, wrap::Rule::Faults(config.error_rate)));
    }
    if config.read_only {
        b = Arc::new(wrap::Gated::new(b, wrap::Rule::ReadOnly));
    }
    Ok(Some(b))
}
