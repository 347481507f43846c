//! A directory as the shared store (an NFS mount, a mounted volume, or a test fixture).

use std::io;
use std::path::{Path, PathBuf};

use async_trait::async_trait;

use super::{Backend, BackendError, BackendResult, BodyReader, ObjectInfo, Payload, PutOutcome};

pub struct DiskBackend {
    root: PathBuf,
}

impl DiskBackend {
    pub fn new(root: impl Into<PathBuf>) -> DiskBackend {
        DiskBackend { root: root.into() }
    }

    /// Keys become relative paths; anything that could escape the root is refused.
    fn path(&self, key: &str) -> BackendResult<PathBuf> {
        let ok = !key.is_empty()
            && !key.starts_with('/')
            && !key.contains('\\')
            && key
                .split('/')
                .all(|seg| !seg.is_empty() && seg != "." && seg != "..");
        if !ok {
            return Err(BackendError::Permanent(format!("invalid key {key:?}")));
        }
        Ok(self.root.join(key))
    }
}

/// Names the file, so the message says which store (a key alone does not).
fn err(what: &str, path: &Path, e: io::Error) -> BackendError {
    let msg = format!("{what} {}: {e}", path.display());
    match e.kind() {
        io::ErrorKind::PermissionDenied | io::ErrorKind::NotFound => BackendError::Permanent(msg),
        _ => BackendError::Transient(msg),
    }
}

#[async_trait]
impl Backend for DiskBackend {
    fn name(&self) -> &'static str {
        "disk"
    }

    fn location(&self) -> String {
        format!("dir://{}", self.root.display())
    }

    async fn check(&self) -> BackendResult<()> {
        let meta = tokio::fs::metadata(&self.root)
            .await
            .map_err(|e| err("checking", &self.root, e))?;
        if !meta.is_dir() {
            return Err(BackendError::Permanent(format!(
                "{} is not a directory",
                self.root.display()
            )));
        }
        Ok(())
    }

    async fn get(&self, key: &str) -> BackendResult<Option<BodyReader>> {
        let path = self.path(key)?;
        match tokio::fs::File::open(&path).await {
            Ok(f) => Ok(Some(Box::new(f))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(err("reading", &path, e)),
        }
    }

    async fn put(&self, key: &str, body: &Payload) -> BackendResult<PutOutcome> {
        let dest = self.path(key)?;
        let parent = dest.parent().expect("keys have a parent").to_path_buf();
        let body = body.clone();
        let root = self.root.clone();
        // Copy to a unique temp name, then link: link(2) fails if the key exists, which is
        // the if-absent semantics, and readers never see a partial object.
        tokio::task::spawn_blocking(move || {
            create_below(&root, &parent).map_err(|e| err("creating", &parent, e))?;
            let tmp = parent.join(format!(
                ".tmp-{}-{}",
                std::process::id(),
                rand::random::<u64>()
            ));
            let written = match &body {
                Payload::File { path, .. } => std::fs::copy(path, &tmp).map(|_| ()),
                Payload::Bytes(b) => std::fs::write(&tmp, b),
            };
            let res =
                written.map_err(|e| err("writing", &tmp, e)).and_then(
                    |_| match std::fs::hard_link(&tmp, &dest) {
                        Ok(()) => Ok(PutOutcome::Stored),
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                            Ok(PutOutcome::AlreadyExists)
                        }
                        Err(e) => Err(err("publishing", &dest, e)),
                    },
                );
            let _ = std::fs::remove_file(&tmp);
            res
        })
        .await
        .map_err(|e| BackendError::Transient(format!("upload task: {e}")))?
    }

    async fn delete(&self, key: &str) -> BackendResult<()> {
        let path = self.path(key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(err("deleting", &path, e)),
        }
    }

    async fn list(&self, prefix: &str) -> BackendResult<Vec<ObjectInfo>> {
        Ok(self.walk(prefix, usize::MAX).await?.0)
    }

    async fn list_some(&self, prefix: &str, max: usize) -> BackendResult<(Vec<ObjectInfo>, bool)> {
        self.walk(prefix, max).await
    }
}

impl DiskBackend {
    /// Up to `max` objects, and whether that was all (the walk stops at `max + 1`).
    async fn walk(&self, prefix: &str, max: usize) -> BackendResult<(Vec<ObjectInfo>, bool)> {
        let root = self.root.clone();
        let prefix = prefix.to_string();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            walk(&root, &root, &prefix, max.saturating_add(1), &mut out)
                .map_err(|e| err("listing", &root.join(&prefix), e))?;
            let complete = out.len() <= max;
            out.truncate(max);
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok((out, complete))
        })
        .await
        .map_err(|e| BackendError::Transient(format!("list task: {e}")))?
    }
}

/// Creates `dir` and what is missing between it and `root`, never `root` itself: a store whose
/// directory is missing (an NFS mount that is not there) must fail, not fill the local disk
/// under the mount point.
fn create_below(root: &Path, dir: &Path) -> io::Result<()> {
    if dir == root || dir.is_dir() {
        return Ok(());
    }
    create_below(root, dir.parent().expect("below the root"))?;
    match std::fs::create_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}

fn walk(
    root: &Path,
    dir: &Path,
    prefix: &str,
    limit: usize,
    out: &mut Vec<ObjectInfo>,
) -> io::Result<()> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for ent in rd {
        if out.len() >= limit {
            break;
        }
        let ent = ent?;
        let path = ent.path();
        let ft = ent.file_type()?;
        let rel = path
            .strip_prefix(root)
            .expect("walked from the root")
            .to_string_lossy()
            .replace(std::path::MAIN_SEPARATOR, "/");
        if ft.is_dir() {
            // Only descend where keys under the prefix can be.
            let dir_key = format!("{rel}/");
            if dir_key.starts_with(prefix) || prefix.starts_with(&dir_key) {
                walk(root, &path, prefix, limit, out)?;
            }
        } else if ft.is_file()
            && rel.starts_with(prefix)
            && !ent.file_name().to_string_lossy().starts_with(".tmp-")
        {
            out.push(ObjectInfo {
                key: rel,
                size: ent.metadata()?.len(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn put_get_list_delete() {
        let d = tempfile::tempdir().unwrap();
        let b = DiskBackend::new(d.path().join("store"));
        assert!(b.check().await.is_err(), "missing root");
        std::fs::create_dir(d.path().join("store")).unwrap();
        b.check().await.unwrap();
        let src = d.path().join("src");
        std::fs::write(&src, b"object").unwrap();
        assert!(b.get("p/k1").await.unwrap().is_none());
        assert_eq!(
            b.put("p/k1", &Payload::file(&src, 6)).await.unwrap(),
            PutOutcome::Stored
        );
        std::fs::write(&src, b"other").unwrap();
        assert_eq!(
            b.put("p/k1", &Payload::file(&src, 5)).await.unwrap(),
            PutOutcome::AlreadyExists
        );
        let mut body = Vec::new();
        b.get("p/k1")
            .await
            .unwrap()
            .unwrap()
            .read_to_end(&mut body)
            .await
            .unwrap();
        assert_eq!(body, b"object", "never overwritten");
        b.put("q/k2", &Payload::file(&src, 5)).await.unwrap();
        let keys: Vec<String> = b
            .list("p/")
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(keys, ["p/k1"]);
        assert_eq!(b.list("").await.unwrap().len(), 2);
        b.delete("p/k1").await.unwrap();
        b.delete("p/k1").await.unwrap();
        assert!(b.get("p/k1").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn keys_cannot_escape_the_root() {
        let d = tempfile::tempdir().unwrap();
        let b = DiskBackend::new(d.path());
        for key in ["../x", "/etc/passwd", "a/../../x", "", "a//b", "a\\b"] {
            assert!(b.get(key).await.is_err(), "{key}");
        }
    }
}
