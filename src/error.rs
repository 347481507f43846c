/// Everything the library can fail with. Each variant maps to one result code at the C ABI,
/// so callers branch on the kind, never on the message.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("invalid id: {0}")]
    InvalidId(String),
    #[error("{0}")]
    Config(String),
    /// A body whose hash or size is not what the caller said it is.
    #[error("integrity check failed: {0}")]
    Integrity(String),
    #[error("{backend} backend: {message}")]
    Backend {
        backend: &'static str,
        message: String,
    },
    #[error("the cache is closed")]
    Closed,
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn io_path(what: &str, path: &std::path::Path, source: std::io::Error) -> Error {
        Error::io(format!("{what} {}", path.display()), source)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Shorthand for attaching a path to an io::Error.
pub(crate) trait IoContext<T> {
    fn with_path(self, what: &str, path: &std::path::Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn with_path(self, what: &str, path: &std::path::Path) -> Result<T> {
        self.map_err(|e| Error::io_path(what, path, e))
    }
}
