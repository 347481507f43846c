//! Rules in front of any store: read-only mode and fault injection. Each call is asked
//! first whether it may go ahead; one wrapper forwards what is let through.

use std::sync::Arc;

use async_trait::async_trait;

use super::{Backend, BackendError, BackendResult, BodyReader, ObjectInfo, Payload, PutOutcome};

/// What a [`Gated`] store refuses.
#[derive(Clone, Copy, Debug)]
pub enum Rule {
    /// Writes and deletes (for untrusted runs such as fork pull requests); reads pass.
    ReadOnly,
    /// This fraction of calls, transiently (`-error-rate`), to test that failures stay misses.
    Faults(f64),
}

pub struct Gated {
    pub inner: Arc<dyn Backend>,
    pub rule: Rule,
}

impl Gated {
    pub fn new(inner: Arc<dyn Backend>, rule: Rule) -> Gated {
        Gated { inner, rule }
    }

    fn allow(&self, what: &str, writes: bool) -> BackendResult<()> {
        match self.rule {
            Rule::ReadOnly if writes => Err(BackendError::Permanent(format!(
                "read-only mode: not {what}"
            ))),
            Rule::Faults(rate) if rand::random::<f64>() < rate => {
                Err(BackendError::Transient(format!("injected fault ({what})")))
            }
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl Backend for Gated {
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
        self.allow("getting", false)?;
        self.inner.get(key).await
    }
    async fn put(&self, key: &str, body: &Payload) -> BackendResult<PutOutcome> {
        self.allow("writing", true)?;
        self.inner.put(key, body).await
    }
    async fn delete(&self, key: &str) -> BackendResult<()> {
        self.allow("deleting", true)?;
        self.inner.delete(key).await
    }
    async fn list(&self, prefix: &str) -> BackendResult<Vec<ObjectInfo>> {
        self.allow("listing", false)?;
        self.inner.list(prefix).await
    }
    fn lists_by_page(&self) -> bool {
        self.inner.lists_by_page()
    }
    async fn list_some(&self, prefix: &str, max: usize) -> BackendResult<(Vec<ObjectInfo>, bool)> {
        self.allow("listing", false)?;
        self.inner.list_some(prefix, max).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::scripted::Scripted;

    #[tokio::test]
    async fn read_only_refuses_writes_and_passes_reads() {
        let s = Arc::new(Scripted::opens());
        let g = Gated::new(s.clone(), Rule::ReadOnly);
        assert!(g.get("k").await.unwrap().is_some());
        assert!(g.list("").await.is_ok());
        let e = g
            .put("k", &Payload::file("/nonexistent", 0))
            .await
            .unwrap_err();
        assert!(
            !e.is_transient() && e.to_string().contains("read-only"),
            "{e}"
        );
        assert!(g
            .delete("k")
            .await
            .unwrap_err()
            .to_string()
            .contains("read-only"));
        assert_eq!(s.gets(), 1);
    }

    #[tokio::test]
    async fn faults_fail_about_their_share_of_calls_transiently() {
        let g = Gated::new(Arc::new(Scripted::empty()), Rule::Faults(0.5));
        let mut failed = 0;
        for _ in 0..400 {
            if let Err(e) = g.get("k").await {
                assert!(
                    e.is_transient() && e.to_string().contains("injected"),
                    "{e}"
                );
                failed += 1;
            }
        }
        assert!((120..280).contains(&failed), "{failed} of 400");
        let never = Gated::new(Arc::new(Scripted::empty()), Rule::Faults(0.0));
        assert!(never.put("k", &Payload::file("x", 0)).await.is_ok());
    }
}
