//! Google Cloud Storage through its JSON API: a small client on `reqwest` (rustls) with
//! Application Default Credentials from `gcp_auth`.
//!
//! Why not a GCS SDK: the official `google-cloud-storage` crate (1.x) reads and writes objects over
//! the JSON API, but its list and delete live in the gRPC-only `StorageControl`, which no emulator
//! serves, so those calls could never be tested. `gcloud-storage` is JSON throughout, but it hides
//! status codes behind its own error type and brings a second HTTP stack and auth stack. The
//! product needs five calls; written directly they give us one round trip per get, bodies streamed
//! both ways, `ifGenerationMatch=0` with 412 as a value, our own timeouts and no hidden retries
//! (the layer above retries with jitter and has a circuit breaker), and error text we control:
//! it never holds a token, an `Authorization` header or a signed URL. Every call below is run
//! against fake-gcs-server in `tests/gcs.rs`.
//!
//! Credentials: with `STORAGE_EMULATOR_HOST` set, that endpoint and no credentials. Otherwise
//! a service-account key in `GOBUILDCACHE_GOOGLE_APPLICATION_CREDENTIALS` (so SDKs inside test
//! binaries do not pick it up), else the ADC chain (`GOOGLE_APPLICATION_CREDENTIALS`, the gcloud
//! ADC file, the metadata server, the gcloud CLI). Credentials are looked up on the first call,
//! never at construction: start-up does not wait on them, and missing credentials surface as a
//! `Permanent` error of that call.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::{StreamExt, TryStreamExt};
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::{RequestBuilder, Response, StatusCode, Url};
use tokio::sync::OnceCell;

use super::error_chain as chain;
use super::transport_error;
use super::{Backend, BackendError, BackendResult, BodyReader, ObjectInfo, Payload, PutOutcome};
use crate::Error;

const PUBLIC_ENDPOINT: &str = "https://storage.googleapis.com";
/// Objects only; `read_write` covers get, insert, delete and list.
const SCOPES: &[&str] = &["https://www.googleapis.com/auth/devstorage.read_write"];
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A whole call, or for a get the time to the response headers.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// An upload gets `REQUEST_TIMEOUT` plus its size at this rate: big objects are not cut off,
/// a stalled one still ends.
const MIN_UPLOAD_RATE: u64 = 1024 * 1024;
const DEFAULT_PAGE_SIZE: u32 = 1000;

pub struct GcsBackend {
    bucket: String,
    /// The API root: the public endpoint or an emulator.
    base: Url,
    http: super::LazyClient,
    auth: Auth,
    page_size: u32,
}

enum Auth {
    /// An emulator: no credentials are sent.
    None,
    /// Resolved on the first call; a failed lookup is tried again on the next one.
    Google {
        key_file: Option<PathBuf>,
        provider: OnceCell<Arc<dyn gcp_auth::TokenProvider>>,
        /// Why no credentials could be found, once that is known: they will not appear during
        /// a build, so later calls fail at once (and gcp_auth does not probe and log again).
        unusable: std::sync::OnceLock<String>,
    },
}

/// Builds a [`GcsBackend`]; [`GcsBackend::new`] configures one from the environment.
pub struct GcsBuilder {
    bucket: String,
    emulator: Option<String>,
    key_file: Option<PathBuf>,
    page_size: u32,
}

impl GcsBuilder {
    /// Talks to an emulator at `host` (`http://127.0.0.1:4443` or `127.0.0.1:4443`) and sends
    /// no credentials.
    pub fn emulator(mut self, host: &str) -> Self {
        self.emulator = Some(host.to_string());
        self
    }

    /// A service-account key file instead of the Application Default Credentials chain.
    pub fn credentials_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.key_file = Some(path.into());
        self
    }

    /// Objects per list request (GCS allows up to 1000).
    pub fn page_size(mut self, n: u32) -> Self {
        self.page_size = n.clamp(1, 1000);
        self
    }

    pub fn build(self) -> Result<GcsBackend, Error> {
        let bucket = self.bucket;
        if bucket.is_empty() || bucket.contains('/') {
            return Err(Error::Config(format!(
                "invalid GCS bucket name {bucket:?} (set -gcs-bucket or GOBUILDCACHE_GCS_BUCKET)"
            )));
        }
        let mut http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .retry(reqwest::retry::never())
            .user_agent(concat!("gobuildcache/", env!("CARGO_PKG_VERSION")));
        let (base, auth) = match &self.emulator {
            Some(host) => {
                // An emulator is local or in-cluster: a proxy from the environment would be wrong.
                http = http.no_proxy();
                (emulator_base(host)?, Auth::None)
            }
            None => (
                Url::parse(PUBLIC_ENDPOINT).expect("valid URL"),
                Auth::Google {
                    key_file: self.key_file,
                    provider: OnceCell::new(),
                    unusable: std::sync::OnceLock::new(),
                },
            ),
        };
        Ok(GcsBackend {
            bucket,
            base,
            http: super::LazyClient::new(http),
            auth,
            page_size: self.page_size,
        })
    }
}

/// `STORAGE_EMULATOR_HOST` as the Google SDKs read it: a URL, or `host:port` meaning http.
fn emulator_base(host: &str) -> Result<Url, Error> {
    let host = host.trim();
    let url = if host.contains("://") {
        host.to_string()
    } else {
        format!("http://{host}")
    };
    match Url::parse(&url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(u),
        _ => Err(Error::Config(format!(
            "STORAGE_EMULATOR_HOST: expected host:port or an http(s) URL, got {host:?}"
        ))),
    }
}

/// `GOBUILDCACHE_<KEY>` first, then `<KEY>`; empty values fall through.
fn env(key: &str) -> Option<String> {
    [
        format!("{}{key}", crate::config::ENV_PREFIX),
        key.to_string(),
    ]
    .iter()
    .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
}

impl GcsBackend {
    /// A backend for `bucket`, configured from the environment (see the module docs). Makes no
    /// network call.
    pub async fn new(bucket: &str) -> Result<GcsBackend, Error> {
        let mut b = GcsBackend::builder(bucket);
        if let Some(host) = env("STORAGE_EMULATOR_HOST") {
            b = b.emulator(&host);
        } else if let Some(file) = std::env::var_os("GOBUILDCACHE_GOOGLE_APPLICATION_CREDENTIALS")
            .filter(|v| !v.is_empty())
        {
            b = b.credentials_file(file);
        }
        b.build()
    }

    pub fn builder(bucket: &str) -> GcsBuilder {
        GcsBuilder {
            bucket: bucket.to_string(),
            emulator: None,
            key_file: None,
            page_size: DEFAULT_PAGE_SIZE,
        }
    }

    /// `base` + the given path segments, each percent-encoded (a `/` in a key becomes `%2F`,
    /// as the JSON API wants object names).
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("http(s) URLs have a path")
            .pop_if_empty()
            .extend(segments);
        url
    }

    fn object_url(&self, key: &str) -> Url {
        self.url(&["storage", "v1", "b", &self.bucket, "o", key])
    }

    fn list_url(&self) -> Url {
        self.url(&["storage", "v1", "b", &self.bucket, "o"])
    }

    fn what(&self, op: &str, key: &str) -> String {
        format!("gcs {op} gs://{}/{key}", self.bucket)
    }

    /// Adds the bearer token, fetching or refreshing it first when needed.
    async fn authorize(&self, req: RequestBuilder, what: &str) -> BackendResult<RequestBuilder> {
        let Auth::Google {
            key_file,
            provider,
            unusable,
        } = &self.auth
        else {
            return Ok(req);
        };
        if let Some(why) = unusable.get() {
            return Err(BackendError::Permanent(format!("{what}: {why}")));
        }
        let init = async {
            let p: Arc<dyn gcp_auth::TokenProvider> = match key_file {
                Some(path) => Arc::new(gcp_auth::CustomServiceAccount::from_file(path)?),
                None => gcp_auth::provider().await?,
            };
            Ok::<_, gcp_auth::Error>(p)
        };
        // The flag says whether the failure was in finding the credentials.
        let token = async {
            let p = provider
                .get_or_try_init(|| init)
                .await
                .map_err(|e| (true, e))?;
            p.token(SCOPES).await.map_err(|e| (false, e))
        };
        let token = match tokio::time::timeout(REQUEST_TIMEOUT, token).await {
            Ok(Ok(t)) => t,
            Ok(Err((finding, e))) => {
                let (transient, why) = auth_failure(key_file.as_deref(), &e);
                if transient {
                    return Err(BackendError::Transient(format!("{what}: {why}")));
                }
                if finding {
                    let _ = unusable.set(why.clone());
                }
                return Err(BackendError::Permanent(format!("{what}: {why}")));
            }
            Err(_) => {
                return Err(BackendError::Transient(format!(
                    "{what}: getting credentials timed out after {REQUEST_TIMEOUT:?}"
                )))
            }
        };
        let mut value = HeaderValue::try_from(format!("Bearer {}", token.as_str()))
            .map_err(|_| BackendError::Permanent(format!("{what}: malformed access token")))?;
        value.set_sensitive(true);
        Ok(req.header(AUTHORIZATION, value))
    }

    /// Sends a request, authorized, and waits at most `limit` for the response headers.
    async fn send(
        &self,
        req: RequestBuilder,
        what: &str,
        limit: Duration,
    ) -> BackendResult<Response> {
        let req = self.authorize(req, what).await?;
        match tokio::time::timeout(limit, req.send()).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(transport_error(what, e)),
            Err(_) => Err(BackendError::Transient(format!(
                "{what}: timed out after {limit:?}"
            ))),
        }
    }

    /// One page of a listing.
    async fn list_page(
        &self,
        what: &str,
        prefix: &str,
        page_size: u32,
        token: Option<&str>,
    ) -> BackendResult<ListPage> {
        let mut url = self.list_url();
        {
            let mut q = url.query_pairs_mut();
            if !prefix.is_empty() {
                q.append_pair("prefix", prefix);
            }
            q.append_pair("maxResults", &page_size.to_string());
            q.append_pair("fields", "items(name,size),nextPageToken");
            if let Some(t) = token {
                q.append_pair("pageToken", t);
            }
        }
        let req = self.http.get()?.get(url).timeout(REQUEST_TIMEOUT);
        let resp = self.send(req, what, REQUEST_TIMEOUT).await?;
        if !resp.status().is_success() {
            return Err(status_error(what, resp).await);
        }
        let body = resp.bytes().await.map_err(|e| transport_error(what, e))?;
        serde_json::from_slice(&body)
            .map_err(|e| BackendError::Transient(format!("{what}: malformed list response: {e}")))
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListPage {
    #[serde(default)]
    items: Vec<ListItem>,
    next_page_token: Option<String>,
}

impl ListPage {
    fn objects(&self, what: &str) -> BackendResult<Vec<ObjectInfo>> {
        self.items
            .iter()
            .map(|item| {
                let size = item.size().ok_or_else(|| {
                    BackendError::Transient(format!(
                        "{what}: object {:?} has no valid size",
                        item.name
                    ))
                })?;
                Ok(ObjectInfo {
                    key: item.name.clone(),
                    size,
                })
            })
            .collect()
    }
}

#[derive(serde::Deserialize)]
struct ListItem {
    name: String,
    /// A decimal string in the JSON API (it is a uint64); accept a number too.
    size: serde_json::Value,
}

impl ListItem {
    fn size(&self) -> Option<u64> {
        match &self.size {
            serde_json::Value::String(s) => s.parse().ok(),
            v => v.as_u64(),
        }
    }
}

#[async_trait]
impl Backend for GcsBackend {
    fn name(&self) -> &'static str {
        "gcs"
    }

    fn location(&self) -> String {
        format!("gs://{}", self.bucket)
    }

    /// Lists at most one object rather than reading the bucket's metadata: that needs
    /// `storage.buckets.get`, which the usual object roles (`roles/storage.objectAdmin`,
    /// `objectUser`) lack, so a correctly scoped CI account would fail the check. A missing
    /// bucket is a 404 either way.
    async fn check(&self) -> BackendResult<()> {
        let what = format!("gcs check gs://{}", self.bucket);
        self.list_page(&what, "", 1, None).await.map(|_| ())
    }

    async fn get(&self, key: &str) -> BackendResult<Option<BodyReader>> {
        let what = self.what("get", key);
        let mut url = self.object_url(key);
        url.query_pairs_mut().append_pair("alt", "media");
        let resp = self
            .send(self.http.get()?.get(url), &what, REQUEST_TIMEOUT)
            .await?;
        match resp.status() {
            s if s.is_success() => {}
            StatusCode::NOT_FOUND => return Ok(None),
            _ => return Err(status_error(&what, resp).await),
        }
        let stream = resp
            .bytes_stream()
            .map_err(move |e| io::Error::other(format!("{what}: {}", chain(&e.without_url()))));
        // The tier above fails a body that stalls (see store::idle).
        Ok(Some(Box::new(tokio_util::io::StreamReader::new(stream))))
    }

    async fn put(&self, key: &str, payload: &Payload) -> BackendResult<PutOutcome> {
        let what = self.what("put", key);
        let size = payload.size();
        let file = payload.reader(&what).await?;
        let mut url = self.url(&["upload", "storage", "v1", "b", &self.bucket, "o"]);
        url.query_pairs_mut()
            .append_pair("uploadType", "multipart")
            // Create only: an existing object is never replaced (412 instead).
            .append_pair("ifGenerationMatch", "0");
        // A multipart upload (metadata part, then the media), not `uploadType=media`: both are one
        // request, but fake-gcs-server enforces `ifGenerationMatch` only on multipart and
        // resumable uploads, and this way the tests prove create-only. The file is streamed in
        // chunks between the two fixed parts; the explicit length keeps the request unchunked.
        let (head, tail, content_type) = multipart_frame(key);
        let file = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024);
        let body =
            futures_util::stream::iter([Ok::<_, io::Error>(bytes::Bytes::from(head.clone()))])
                .chain(file)
                .chain(futures_util::stream::iter([Ok(bytes::Bytes::from(
                    tail.clone(),
                ))]));
        let body = reqwest::Body::wrap_stream(body);
        let length = head.len() as u64 + size + tail.len() as u64;
        let limit = REQUEST_TIMEOUT + Duration::from_secs(size / MIN_UPLOAD_RATE);
        let req = self
            .http
            .get()?
            .post(url)
            .header(CONTENT_TYPE, content_type)
            .header(CONTENT_LENGTH, length)
            .timeout(limit)
            .body(body);
        let resp = self.send(req, &what, limit).await?;
        match resp.status() {
            s if s.is_success() => {
                // Read the (small) object resource so the connection goes back to the pool.
                let _ = resp.bytes().await;
                Ok(PutOutcome::Stored)
            }
            StatusCode::PRECONDITION_FAILED => {
                let _ = resp.bytes().await;
                Ok(PutOutcome::AlreadyExists)
            }
            _ => Err(status_error(&what, resp).await),
        }
    }

    async fn delete(&self, key: &str) -> BackendResult<()> {
        let what = self.what("delete", key);
        let req = self
            .http
            .get()?
            .delete(self.object_url(key))
            .timeout(REQUEST_TIMEOUT);
        let resp = self.send(req, &what, REQUEST_TIMEOUT).await?;
        match resp.status() {
            s if s.is_success() || s == StatusCode::NOT_FOUND => {
                let _ = resp.bytes().await;
                Ok(())
            }
            _ => Err(status_error(&what, resp).await),
        }
    }

    async fn list(&self, prefix: &str) -> BackendResult<Vec<ObjectInfo>> {
        let what = self.what("list", &format!("{prefix}*"));
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .list_page(&what, prefix, self.page_size, token.as_deref())
                .await?;
            out.extend(page.objects(&what)?);
            match page.next_page_token {
                Some(t) if !t.is_empty() => {
                    if token.as_deref() == Some(t.as_str()) {
                        return Err(BackendError::Transient(format!(
                            "{what}: the server repeated a page token"
                        )));
                    }
                    token = Some(t);
                }
                _ => break,
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn lists_by_page(&self) -> bool {
        true
    }

    async fn list_some(&self, prefix: &str, max: usize) -> BackendResult<(Vec<ObjectInfo>, bool)> {
        let what = self.what("list", &format!("{prefix}*"));
        let size = u32::try_from(max).unwrap_or(u32::MAX);
        let page = self.list_page(&what, prefix, size, None).await?;
        let complete = page.next_page_token.as_deref().is_none_or(str::is_empty);
        Ok((page.objects(&what)?, complete))
    }
}

/// The parts of a `multipart/related` upload around the object's bytes: the head (the
/// metadata part and the media part's header), the tail, and the request's content type.
fn multipart_frame(key: &str) -> (String, String, String) {
    // Random, so it cannot be planted in a body; 128 bits make an accidental match moot.
    let boundary = format!("gobuildcache-{:032x}", rand::random::<u128>());
    let meta = serde_json::json!({ "name": key, "contentType": "application/octet-stream" });
    let head = format!(
        "--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{meta}\r\n\
         --{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n"
    );
    let tail = format!("\r\n--{boundary}--\r\n");
    (
        head,
        tail,
        format!("multipart/related; boundary={boundary}"),
    )
}

/// `what: HTTP <status>: <the JSON error message>`. Only the server's message is kept, never
/// the request (headers, URL).
async fn status_error(what: &str, mut resp: Response) -> BackendError {
    let status = resp.status();
    let body = super::error_body(&mut resp).await;
    let detail = error_detail(&body);
    let msg = if detail.is_empty() || Some(detail.as_str()) == status.canonical_reason() {
        format!("{what}: HTTP {status}")
    } else {
        format!("{what}: HTTP {status}: {detail}")
    };
    if super::is_transient_status(status) {
        BackendError::Transient(msg)
    } else {
        BackendError::Permanent(msg)
    }
}

/// `error.message` of a JSON API error, else the body's first line if it looks like text.
fn error_detail(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Wrapper {
        error: Inner,
    }
    #[derive(serde::Deserialize)]
    struct Inner {
        message: String,
    }
    if let Ok(w) = serde_json::from_slice::<Wrapper>(body) {
        return w.error.message;
    }
    let text = String::from_utf8_lossy(body);
    let line = text.lines().next().unwrap_or("").trim();
    if line.starts_with('<') {
        return String::new(); // an HTML error page says nothing the status does not
    }
    line.chars().take(200).collect()
}

/// Whether a retry can help, and the reason. Credentials that cannot be found or parsed will
/// not appear on a retry; a failed token request over the network might.
fn auth_failure(key_file: Option<&Path>, e: &gcp_auth::Error) -> (bool, String) {
    let source = match key_file {
        Some(p) => format!("the key file {}", p.display()),
        None => "Application Default Credentials".to_string(),
    };
    let detail = match e {
        gcp_auth::Error::NoAuthMethod(gcloud, metadata, adc) => format!(
            "{e} (ADC file: {}; metadata server: {}; gcloud: {})",
            chain(adc.as_ref()),
            chain(metadata.as_ref()),
            chain(gcloud.as_ref())
        ),
        _ => chain(e),
    };
    let transient = matches!(e, gcp_auth::Error::Http(..) | gcp_auth::Error::Other(..));
    (
        transient,
        format!("getting credentials from {source}: {detail}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emulator_host_forms() {
        for (host, want) in [
            ("127.0.0.1:4443", "http://127.0.0.1:4443/"),
            ("http://127.0.0.1:4443", "http://127.0.0.1:4443/"),
            (" https://gcs.local:9000/ ", "https://gcs.local:9000/"),
            ("localhost:1", "http://localhost:1/"),
        ] {
            assert_eq!(emulator_base(host).unwrap().as_str(), want, "{host}");
        }
        for bad in ["", "ftp://x:1", "http://"] {
            assert!(emulator_base(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn object_names_are_one_encoded_segment() {
        let b = GcsBackend::builder("bkt")
            .emulator("http://127.0.0.1:1/base/")
            .build()
            .unwrap();
        assert_eq!(
            b.object_url("gobuildcache/a b/%x").as_str(),
            "http://127.0.0.1:1/base/storage/v1/b/bkt/o/gobuildcache%2Fa%20b%2F%25x"
        );
    }

    #[test]
    fn bucket_names_are_checked() {
        for bad in ["", "a/b"] {
            let e = GcsBackend::builder(bad).emulator("127.0.0.1:1").build();
            assert!(matches!(e, Err(Error::Config(_))), "{bad:?}");
        }
    }

    #[test]
    fn statuses_are_classified() {
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(
                crate::store::is_transient_status(StatusCode::from_u16(s).unwrap()),
                "{s}"
            );
        }
        for s in [400, 401, 403, 404, 409, 412] {
            assert!(
                !crate::store::is_transient_status(StatusCode::from_u16(s).unwrap()),
                "{s}"
            );
        }
    }

    #[test]
    fn error_details() {
        let json = br#"{"error":{"code":403,"message":"x@y does not have storage.objects.get access","errors":[]}}"#;
        assert_eq!(
            error_detail(json),
            "x@y does not have storage.objects.get access"
        );
        assert_eq!(error_detail(b"<!DOCTYPE html>\n<html>"), "");
        assert_eq!(error_detail(b"Not Found\nmore"), "Not Found");
        assert_eq!(error_detail(b""), "");
    }

    #[test]
    fn list_sizes_as_string_or_number() {
        let page: ListPage = serde_json::from_str(
            r#"{"items":[{"name":"a","size":"12"},{"name":"b","size":7}],"nextPageToken":"t"}"#,
        )
        .unwrap();
        let sizes: Vec<_> = page.items.iter().map(|i| i.size()).collect();
        assert_eq!(sizes, [Some(12), Some(7)]);
        assert_eq!(page.next_page_token.as_deref(), Some("t"));
        let empty: ListPage = serde_json::from_str("{}").unwrap();
        assert!(empty.items.is_empty() && empty.next_page_token.is_none());
    }

    #[tokio::test]
    async fn missing_credentials_fail_the_first_call_not_construction() {
        let d = tempfile::tempdir().unwrap();
        let key = d.path().join("key.json");
        std::fs::write(&key, "{ not json").unwrap();
        let b = GcsBackend::builder("bkt")
            .credentials_file(&key)
            .build()
            .unwrap();
        let e = b.get("gobuildcache/k").await.err().expect("no credentials");
        assert!(!e.is_transient(), "{e}");
        let msg = e.to_string();
        assert!(msg.contains("gs://bkt/gobuildcache/k"), "{msg}");
        assert!(msg.contains("key.json"), "{msg}");
        assert!(!msg.contains("not json"), "no file content in {msg}");
        // Known to be unusable from now on: later calls fail the same way without a new lookup.
        std::fs::write(&key, "[]").unwrap();
        let again = b.list("gobuildcache/").await.unwrap_err();
        assert!(!again.is_transient(), "{again}");
        assert!(
            again.to_string().ends_with(msg.split_once(": ").unwrap().1),
            "{again} vs {msg}"
        );
    }
}
