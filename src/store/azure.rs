//! Azure Blob Storage through Apache Arrow's `object_store` crate (feature `azure`).
//!
//! Why `object_store` and not the official `azure_storage_blob` crate: `object_store` is kept by
//! the Arrow project, tested in its own CI against Azurite, and already shares our HTTP stack
//! (reqwest 0.13, rustls). It gives us the parts that are costly to get right by hand, Shared
//! Key signing, SAS tokens and the Entra ID chain (workload identity, managed identity, the
//! Azure CLI), while the calls stay ours to shape: create-only puts (`If-None-Match: *`, the
//! 409/412 answer mapped to [`PutOutcome::AlreadyExists`]), gets streamed into the local tier,
//! its retries turned off (`max_retries = 0`, body retries included: the guard above owns
//! deadlines, retries and the breaker), and errors we render ourselves, without URLs' query
//! strings. The official crate would bring a second HTTP pipeline with its own retry policy to
//! turn off, and its credential crate separately.
//!
//! What `object_store` cannot do, we work around here: a put takes its body in memory, so
//! objects up to [`SINGLE_PUT_MAX`] go in one create-only Put Blob and bigger ones (large
//! archives, warm-start packs) as blocks of [`BLOCK`] bytes with at most two in flight, after
//! a metadata read that finds an existing blob. A writer racing between the two overwrites a
//! blob with another valid object for the same key: readers verify every object they fetch.
//!
//! Credentials, first match wins: a connection string or a SAS token from
//! `GOBUILDCACHE_AZURE_STORAGE_CONNECTION_STRING` / `GOBUILDCACHE_AZURE_STORAGE_SAS_TOKEN`
//! (prefixed only, so SDKs in test binaries never see them); else the Entra ID chain: workload
//! identity when `AZURE_CLIENT_ID`, `AZURE_TENANT_ID` and `AZURE_FEDERATED_TOKEN_FILE` are set (AKS,
//! GitHub OIDC with a token file), the Azure CLI when `az` is on `PATH` (`azure/login` in
//! GitHub Actions), else the managed identity of the VM. Explicit secrets come first because a
//! runner that has them set means them; the ambient chain is the fallback, as for S3.

use std::io;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use object_store::azure::{AzureConfigKey, MicrosoftAzure, MicrosoftAzureBuilder};
use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpErrorKind, HttpRequest, HttpResponse, HttpService,
    ReqwestConnector,
};
use object_store::path::Path as ObjPath;
use object_store::{
    ClientOptions, GetOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
    RetryConfig, WriteMultipart,
};
use tokio::io::AsyncReadExt;

use super::error_chain as chain;
use super::{
    local_error, Backend, BackendError, BackendResult, BodyReader, ObjectInfo, Payload, PutOutcome,
};
use crate::config::{redact_url, AzureSettings};
use crate::Error;

/// Bodies up to this size go up in one Put Blob, held in memory once.
pub const SINGLE_PUT_MAX: u64 = 8 << 20;
/// Block size for bigger bodies (Azure allows 50,000 blocks: 390 GiB at this size).
pub const BLOCK: usize = 8 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Azurite's well-known development account (public test values, not secrets).
const DEV_ACCOUNT: &str = "devstoreaccount1";
const DEV_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

pub struct AzureBackend {
    store: MicrosoftAzure,
    account: String,
    container: String,
}

/// A parsed connection string: the parts we use.
#[derive(Default)]
struct ConnectionString {
    account: Option<String>,
    key: Option<String>,
    sas: Option<String>,
    endpoint: Option<String>,
}

/// `Key=Value;…` as the portal and Azurite print it. Errors never quote the string.
fn parse_connection_string(s: &str) -> Result<ConnectionString, Error> {
    let mut protocol = "https".to_string();
    let mut suffix = "core.windows.net".to_string();
    let mut c = ConnectionString::default();
    let mut dev = false;
    for part in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, v)) = part.split_once('=') else {
            return Err(Error::Config(
                "GOBUILDCACHE_AZURE_STORAGE_CONNECTION_STRING: expected Key=Value pairs separated by ';'"
                    .into(),
            ));
        };
        match k.trim().to_ascii_lowercase().as_str() {
            "defaultendpointsprotocol" => protocol = v.trim().to_string(),
            "accountname" => c.account = Some(v.trim().to_string()),
            "accountkey" => c.key = Some(v.trim().to_string()),
            "sharedaccesssignature" => c.sas = Some(v.trim().to_string()),
            "blobendpoint" => c.endpoint = Some(v.trim().trim_end_matches('/').to_string()),
            "endpointsuffix" => suffix = v.trim().to_string(),
            "usedevelopmentstorage" => dev = v.trim().eq_ignore_ascii_case("true"),
            _ => {} // queue/table/file endpoints and the like
        }
    }
    if dev {
        c.account.get_or_insert_with(|| DEV_ACCOUNT.into());
        c.key.get_or_insert_with(|| DEV_KEY.into());
        c.endpoint
            .get_or_insert_with(|| format!("http://127.0.0.1:10000/{DEV_ACCOUNT}"));
    }
    if c.endpoint.is_none() {
        if let Some(a) = &c.account {
            c.endpoint = Some(format!("{protocol}://{a}.blob.{suffix}"));
        }
    }
    if c.key.is_none() && c.sas.is_none() {
        return Err(Error::Config(
            "GOBUILDCACHE_AZURE_STORAGE_CONNECTION_STRING has neither AccountKey nor \
             SharedAccessSignature"
                .into(),
        ));
    }
    Ok(c)
}

/// The account name in a blob endpoint: the host's first label, or for an emulator
/// (`http://127.0.0.1:10000/devstoreaccount1`) the path's first segment.
fn account_from_endpoint(endpoint: &str) -> Option<String> {
    let url = reqwest::Url::parse(endpoint).ok()?;
    let host = url.host_str()?;
    match url.path_segments().and_then(|mut s| s.next()) {
        Some(seg) if !seg.is_empty() => Some(seg.to_string()),
        _ if host.contains('.') && host.parse::<std::net::IpAddr>().is_err() => {
            host.split('.').next().map(String::from)
        }
        _ => None,
    }
}

fn env_plain(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|v| !v.is_empty())
}

/// object_store builds its reqwest client when the store is configured, and building one
/// loads the system's root certificates (measured: the go command's handshake at 12 ms instead
/// of 3): this connector builds it on the first request instead, which is on an I/O thread.
#[derive(Debug)]
struct LazyConnector;

impl HttpConnector for LazyConnector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        Ok(HttpClient::new(LazyService {
            options: options.clone(),
            client: std::sync::OnceLock::new(),
        }))
    }
}

#[derive(Debug)]
struct LazyService {
    options: ClientOptions,
    client: std::sync::OnceLock<Result<HttpClient, String>>,
}

#[async_trait]
impl HttpService for LazyService {
    async fn call(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        let client = self.client.get_or_init(|| {
            ReqwestConnector::default()
                .connect(&self.options)
                .map_err(|e| format!("creating the HTTP client: {}", chain(&e)))
        });
        match client {
            Ok(c) => c.execute(req).await,
            Err(m) => Err(HttpError::new(
                HttpErrorKind::Unknown,
                io::Error::other(m.clone()),
            )),
        }
    }
}

impl AzureBackend {
    /// A backend for `container`, from the settings and the credential chain (module docs).
    /// Makes no network call: credentials are fetched on the first request.
    pub fn new(container: &str, s: &AzureSettings) -> Result<AzureBackend, Error> {
        if container.is_empty() || container.contains('/') {
            return Err(Error::Config(format!(
                "invalid Azure container name {container:?} (set -azure-container or \
                 GOBUILDCACHE_AZURE_CONTAINER)"
            )));
        }
        let mut b = MicrosoftAzureBuilder::new().with_container_name(container);
        let mut endpoint = s.endpoint.clone();
        let mut account = s.account.clone();
        if let Some(cs) = &s.connection_string {
            let c = parse_connection_string(cs.expose())?;
            endpoint = endpoint.or(c.endpoint);
            account = account.or(c.account);
            if let Some(k) = c.key {
                b = b.with_access_key(k);
            } else if let Some(sas) = c.sas {
                b = b.with_config(AzureConfigKey::SasKey, sas);
            }
        } else if let Some(sas) = &s.sas_token {
            b = b.with_config(AzureConfigKey::SasKey, sas.expose().trim_start_matches('?'));
        } else if let (Some(id), Some(tenant), Some(file)) = (
            env_plain("AZURE_CLIENT_ID"),
            env_plain("AZURE_TENANT_ID"),
            env_plain("AZURE_FEDERATED_TOKEN_FILE"),
        ) {
            b = b
                .with_client_id(id)
                .with_tenant_id(tenant)
                .with_federated_token_file(file);
            if let Some(h) = env_plain("AZURE_AUTHORITY_HOST") {
                b = b.with_config(AzureConfigKey::AuthorityHost, h);
            }
        } else if on_path("az") {
            b = b.with_use_azure_cli(true);
        } else if let Some(id) = env_plain("AZURE_CLIENT_ID") {
            // A user-assigned managed identity; without it, the VM's system identity.
            b = b.with_client_id(id);
        }
        let account = match (account, &endpoint) {
            (Some(a), _) => a,
            (None, Some(e)) => account_from_endpoint(e).ok_or_else(|| {
                Error::Config(format!(
                    "cannot tell the Azure storage account from the endpoint {}: set \
                     GOBUILDCACHE_AZURE_STORAGE_ACCOUNT",
                    redact_url(e)
                ))
            })?,
            (None, None) => return Err(Error::Config(
                "backend azure needs a storage account: set GOBUILDCACHE_AZURE_STORAGE_ACCOUNT \
                     (or a connection string)"
                    .into(),
            )),
        };
        b = b.with_account(&account);
        let mut allow_http = false;
        if let Some(e) = &endpoint {
            let url = reqwest::Url::parse(e).map_err(|_| {
                Error::Config(format!("invalid Azure blob endpoint {}", redact_url(e)))
            })?;
            if url.query().is_some() || !url.username().is_empty() {
                return Err(Error::Config(format!(
                    "the Azure blob endpoint {} must not carry credentials (give a SAS token \
                     in GOBUILDCACHE_AZURE_STORAGE_SAS_TOKEN)",
                    redact_url(e)
                )));
            }
            allow_http = url.scheme() == "http";
            b = b.with_endpoint(e.trim_end_matches('/').to_string());
        }
        let options = ClientOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            // The guard above bounds each call; a total timeout here would cut long downloads,
            // whose bodies are watched for stalls instead (store::idle).
            .with_timeout_disabled()
            .with_allow_http(allow_http);
        let store = b
            .with_client_options(options)
            .with_retry(RetryConfig {
                max_retries: 0,
                retry_timeout: Duration::ZERO,
                ..RetryConfig::default()
            })
            .with_disable_tagging(true)
            .with_http_connector(LazyConnector)
            .build()
            .map_err(|e| Error::Backend {
                backend: "azure",
                message: format!("configuring the client: {}", scrub(&chain(&e))),
            })?;
        Ok(AzureBackend {
            store,
            account,
            container: container.to_string(),
        })
    }

    fn target(&self, key: &str) -> String {
        format!("{}/{key}", self.location())
    }

    fn path(&self, op: &str, key: &str) -> BackendResult<ObjPath> {
        ObjPath::parse(key).map_err(|_| {
            BackendError::Permanent(format!(
                "azure {op} {}: not a valid blob name",
                self.target(key)
            ))
        })
    }

    fn error(&self, op: &str, key: &str, e: object_store::Error) -> BackendError {
        classify(format!("azure {op} {}", self.target(key)), &e)
    }

    /// The objects under `prefix` as a lazy stream, pages fetched as it is read.
    fn list_stream(
        &self,
        prefix: &str,
    ) -> futures_util::stream::BoxStream<'static, BackendResult<ObjectInfo>> {
        // object_store lists whole path segments; a key prefix is a string prefix, so list
        // the segment that holds it and filter.
        let dir = prefix.rfind('/').map(|i| &prefix[..i]).unwrap_or("");
        let what = format!("azure list {}", self.target(&format!("{prefix}*")));
        let dir_path = match ObjPath::parse(dir) {
            Ok(p) => p,
            Err(_) => {
                return futures_util::stream::once(async move {
                    Err(BackendError::Permanent(format!(
                        "{what}: not a valid prefix"
                    )))
                })
                .boxed()
            }
        };
        let want = prefix.to_string();
        self.store
            .list(Some(&dir_path))
            .map(move |r| match r {
                Ok(m) => Ok(ObjectInfo {
                    key: m.location.to_string(),
                    size: m.size,
                }),
                // A missing container is a 404 on the listing: not an empty store.
                Err(e @ object_store::Error::NotFound { .. }) => Err(BackendError::Permanent(
                    format!("{what}: the container does not exist ({})", brief(&e)),
                )),
                Err(e) => Err(classify(what.clone(), &e)),
            })
            .try_filter(move |o| futures_util::future::ready(o.key.starts_with(&want)))
            .boxed()
    }

    async fn put_blocks(
        &self,
        key: &str,
        path: &ObjPath,
        file: Box<dyn tokio::io::AsyncRead + Send + Unpin>,
    ) -> BackendResult<()> {
        let upload = self
            .store
            .put_multipart(path)
            .await
            .map_err(|e| self.error("put", key, e))?;
        let mut w = WriteMultipart::new_with_chunk_size(upload, BLOCK);
        let mut file = tokio::io::BufReader::with_capacity(1 << 20, file);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = match file.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    let _ = w.abort().await;
                    return Err(BackendError::Transient(format!(
                        "azure put {}: reading the local file: {e}",
                        self.target(key)
                    )));
                }
            };
            // At most two blocks in memory and in flight.
            if let Err(e) = w.wait_for_capacity(2).await {
                return Err(self.error("put", key, e));
            }
            w.write(&buf[..n]);
        }
        w.finish()
            .await
            .map(|_| ())
            .map_err(|e| self.error("put", key, e))
    }
}

fn on_path(cmd: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| {
        std::env::split_paths(&p)
            .any(|d| d.join(cmd).is_file() || d.join(format!("{cmd}.cmd")).is_file())
    })
}

#[async_trait]
impl Backend for AzureBackend {
    fn name(&self) -> &'static str {
        "azure"
    }

    fn location(&self) -> String {
        format!("azure://{}/{}", self.account, self.container)
    }

    /// Lists a prefix nothing uses: cheap, and a missing container or refused credentials
    /// answer it the same way they would any call.
    async fn check(&self) -> BackendResult<()> {
        let mut s = self.list_stream("gobuildcache-check-nothing-here/");
        match s.next().await {
            Some(Err(e)) => Err(e),
            _ => Ok(()),
        }
    }

    async fn get(&self, key: &str) -> BackendResult<Option<BodyReader>> {
        let path = self.path("get", key)?;
        let res = match self.store.get_opts(&path, GetOptions::default()).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.error("get", key, e)),
        };
        let what = format!("azure get {}", self.target(key));
        let stream = res
            .into_stream()
            .map_err(move |e| io::Error::other(format!("{what}: {}", brief(&e))));
        // The tier above fails a body that stalls (see store::idle).
        Ok(Some(Box::new(tokio_util::io::StreamReader::new(stream))))
    }

    async fn put(&self, key: &str, payload: &Payload) -> BackendResult<PutOutcome> {
        let target = self.path("put", key)?;
        let what = format!("azure put {}", self.target(key));
        let size = payload.size();
        if size > SINGLE_PUT_MAX {
            match self.store.head(&target).await {
                Ok(_) => return Ok(PutOutcome::AlreadyExists),
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.error("put", key, e)),
            }
            let body = payload.reader(&what).await?;
            self.put_blocks(key, &target, body).await?;
            return Ok(PutOutcome::Stored);
        }
        let body = match payload {
            Payload::Bytes(b) => b.clone(),
            Payload::File { path, .. } => {
                let mut body = Vec::with_capacity(size as usize);
                let mut file = payload.reader(&what).await?;
                file.read_to_end(&mut body)
                    .await
                    .map_err(|e| local_error(&what, path, e))?;
                Bytes::from(body)
            }
        };
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self
            .store
            .put_opts(&target, PutPayload::from(body), opts)
            .await
        {
            Ok(_) => Ok(PutOutcome::Stored),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(PutOutcome::AlreadyExists),
            Err(e) => Err(self.error("put", key, e)),
        }
    }

    async fn delete(&self, key: &str) -> BackendResult<()> {
        let path = self.path("delete", key)?;
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error("delete", key, e)),
        }
    }

    async fn list(&self, prefix: &str) -> BackendResult<Vec<ObjectInfo>> {
        let mut out: Vec<ObjectInfo> = self.list_stream(prefix).try_collect().await?;
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn lists_by_page(&self) -> bool {
        true
    }

    async fn list_some(&self, prefix: &str, max: usize) -> BackendResult<(Vec<ObjectInfo>, bool)> {
        // Pages are fetched as the stream is read: stop one past `max`.
        let mut out: Vec<ObjectInfo> = self
            .list_stream(prefix)
            .take(max.saturating_add(1))
            .try_collect()
            .await?;
        let complete = out.len() <= max;
        out.truncate(max);
        Ok((out, complete))
    }
}

/// Transient unless the server answered with a status no retry can change (4xx but 408/429).
fn classify(what: String, e: &object_store::Error) -> BackendError {
    let msg = format!("{what}: {}", brief(e));
    let permanent = match e {
        object_store::Error::NotFound { .. }
        | object_store::Error::InvalidPath { .. }
        | object_store::Error::NotSupported { .. }
        | object_store::Error::NotImplemented { .. }
        | object_store::Error::UnknownConfigurationKey { .. } => true,
        _ => status_of(&chain(e)).is_some_and(|s| (400..500).contains(&s) && s != 408 && s != 429),
    };
    if permanent {
        BackendError::Permanent(msg)
    } else {
        BackendError::Transient(msg)
    }
}

/// The HTTP status in an object_store error's text (`… status code: 403 Forbidden …`).
fn status_of(text: &str) -> Option<u16> {
    let i = text.find("status code: ")? + "status code: ".len();
    text[i..].get(..3)?.parse().ok()
}

/// An error's chain without URLs' query strings (a SAS token travels there), and with the
/// server's XML reduced to its `<Message>`.
fn brief(e: &object_store::Error) -> String {
    let text = scrub(&chain(e));
    match (text.find("<Message>"), text.find("</Message>")) {
        (Some(a), Some(b)) if a < b => {
            let msg = text[a + 9..b].lines().next().unwrap_or("").to_string();
            let head = text[..text.find('<').unwrap_or(a)]
                .trim_end()
                .trim_end_matches(':');
            format!("{head}: {msg}")
        }
        _ => text,
    }
}

/// Drops `?…` from every URL in `text`, and any `sig=` value that is left.
pub(crate) fn scrub(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, word) in text.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        if word.contains("://") {
            out.push_str(&redact_url(word));
        } else if let Some(j) = word.find("sig=") {
            out.push_str(&word[..j + 4]);
            out.push_str("***");
        } else {
            out.push_str(word);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_strings() {
        let c = parse_connection_string(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;\
             BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1/;",
        )
        .unwrap();
        assert_eq!(c.account.as_deref(), Some("devstoreaccount1"));
        assert_eq!(
            c.endpoint.as_deref(),
            Some("http://127.0.0.1:10000/devstoreaccount1")
        );
        let c =
            parse_connection_string("AccountName=acct;SharedAccessSignature=sv=1&sig=x").unwrap();
        assert_eq!(
            c.endpoint.as_deref(),
            Some("https://acct.blob.core.windows.net")
        );
        assert_eq!(c.sas.as_deref(), Some("sv=1&sig=x"));
        let dev = parse_connection_string("UseDevelopmentStorage=true").unwrap();
        assert_eq!(dev.account.as_deref(), Some(DEV_ACCOUNT));
        let e = parse_connection_string("AccountName=a;AccountKey")
            .err()
            .unwrap();
        assert!(!e.to_string().contains("AccountName=a"), "{e}");
        assert!(parse_connection_string("AccountName=a").is_err());
    }

    #[test]
    fn accounts_from_endpoints() {
        for (e, want) in [
            ("https://acct.blob.core.windows.net", Some("acct")),
            (
                "http://127.0.0.1:10000/devstoreaccount1",
                Some("devstoreaccount1"),
            ),
            ("http://127.0.0.1:10000", None),
        ] {
            assert_eq!(account_from_endpoint(e).as_deref(), want, "{e}");
        }
    }

    #[test]
    fn sas_never_survives_scrubbing() {
        let s = scrub("Error performing GET http://h/c/k?sv=1&sig=SeCrEt in 1ms - sig=SeCrEt2");
        assert!(!s.contains("SeCrEt"), "{s}");
        assert_eq!(
            status_of("Server returned non-2xx status code: 403 Forbidden"),
            Some(403)
        );
    }
}
