//! Behaviour as wrappers around any backend: read-only mode and fault injection.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;

use super::{Backend, BackendError, BackendResult, BodyReader, ObjectInfo, PutOutcome};

/// Reads pass through; writes are refused (for untrusted runs such as fork pull requests).
pub struct ReadOnly(pub Arc<dyn Backend>);

#[async_trait]
impl Backend for ReadOnly {
    fn name(&self) -> &'static str {
        self.0.name()
    }
    fn location(&self) -> String {
        self.0.location()
    }
    async fn check(&self) -> BackendResult<()> {
        self.0.check().await
    }
    async fn get(&self, key: &str) -> BackendResult<Option<BodyReader>> {
        self.0.get(key).await
    }
    async fn put(&self, _key: &str, _path: &Path, _size: u64) -> BackendResult<PutOutcome> {
        Err(BackendError::Permanent(
            "read-only mode: not writing".into(),
        ))
    }
    async fn delete(&self, _key: &str) -> BackendResult<()> {
        Err(BackendError::Permanent(
            "read-only mode: not deleting".into(),
        ))
    }
    async fn list(&self, prefix: &str) -> BackendResult<Vec<ObjectInfo>> {
        self.0.list(prefix).await
    }
    async fn list_some(&self, prefix: &str, max: usize) -> BackendResult<(Vec<ObjectInfo>, bool)> {
        self.0.list_some(prefix, max).await
    }
}

/// Fails a fraction of calls on purpose (`-error-rate`), to test that failures stay misses.
pub struct Faulty {
    pub inner: Arc<dyn Backend>,
    pub rate: f64,
}

impl Faulty {
    fn roll(&self, what: &str) -> BackendResult<()> {
        if rand::random::<f64>() < self.rate {
            return Err(BackendError::Transient(format!("injected fault ({what})")));
        }
        Ok(())
    }
}

#[async_trait]
impl Backend for Faulty {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn location(&self) -> String {
        self.inner.location()
    }
    async fn check(&self) -> BackendResult<()> {
        self.inner.check().await
    }
    async fn get(&self, key: &str) -> BackendResult<Option<BodyReader>> {
        self.roll("get")?;
        self.inner.get(key).await
    }
    async fn put(&self, key: &str, path: &Path, size: u64) -> BackendResult<PutOutcome> {
        self.roll("put")?;
        self.inner.put(key, path, size).await
    }
    async fn delete(&self, key: &str) -> BackendResult<()> {
        self.roll("delete")?;
        self.inner.delete(key).await
    }
    async fn list(&self, prefix: &str) -> BackendResult<Vec<ObjectInfo>> {
        self.roll("list")?;
        self.inner.list(prefix).await
    }
    async fn list_some(&self, prefix: &str, max: usize) -> BackendResult<(Vec<ObjectInfo>, bool)> {
        self.roll("list")?;
        self.inner.list_some(prefix, max).await
    }
}
