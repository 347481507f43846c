//! Amazon S3, S3 Express One Zone directory buckets and S3-compatible stores.
//!
//! The SDK's own retries are off: the layer above retries with jitter and keeps a circuit
//! breaker, and SDK retries underneath would multiply its attempts and blow its deadlines.
//! Timeouts here are short and per attempt; the layer above wraps every call in its own deadline
//! as well.
//!
//! Error messages are built from the parts we choose (operation, bucket, key, service code and
//! message, HTTP status, request id). We never print the SDK's `Debug` or `DisplayErrorContext`,
//! which can carry request details.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use aws_config::meta::region::RegionProviderChain;
use aws_config::BehaviorVersion;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    StalledStreamProtectionConfig,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::RequestId;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;

use super::{Backend, BackendError, BackendResult, BodyReader, ObjectInfo, Payload, PutOutcome};
use crate::config::AwsSettings;
use crate::Error;

/// Connecting to a healthy S3 endpoint takes milliseconds; a cache must not wait long for one
/// that is down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// One attempt of a small call (get up to the response headers, head, list page, delete).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// One put attempt: a base, plus time for the body at a slow-but-working 8 MiB/s, so that a
/// large link output is not cut off while it is still moving.
const PUT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);
const PUT_BYTES_PER_SEC: u64 = 8 << 20;
/// A download whose body stops moving for this long fails (the SDK's stalled-stream protection),
/// since the body is streamed after the attempt timeout no longer applies.
const STALL_GRACE: Duration = Duration::from_secs(5);
/// Longest service message we quote; S3-compatible stores sometimes send whole HTML pages.
const MAX_MESSAGE: usize = 300;

pub struct S3Backend {
    conf: aws_sdk_s3::Config,
    /// Built on first use, on an I/O thread: building it loads the system's root certificates
    /// (measured: ~7 ms), which would otherwise hold up the go command's handshake.
    client: std::sync::OnceLock<Client>,
    bucket: String,
    endpoint: Option<String>,
    put_attempt_timeout: Duration,
    list_page_size: i32,
    /// Set once the store has rejected `If-None-Match` as unsupported; later puts go straight
    /// to the HEAD-then-put fallback.
    no_conditional_put: AtomicBool,
    /// Static secrets we were given, scrubbed from any message as a last line of defence.
    secrets: Vec<String>,
}

impl S3Backend {
    /// Configures a client for `bucket` (built on first use). Makes no network call when region
    /// and credentials are given; otherwise the SDK's default chains may (environment, profile,
    /// instance metadata).
    pub async fn new(bucket: &str, aws: &AwsSettings) -> Result<S3Backend, Error> {
        validate_bucket(bucket)?;
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        loader = match &aws.region {
            Some(r) => loader.region(Region::new(r.clone())),
            // A missing region must not crash start-up; most S3-compatible stores ignore it.
            None => loader.region(
                RegionProviderChain::default_provider().or_else(Region::from_static("us-east-1")),
            ),
        };
        let mut secrets = Vec::new();
        if let Some(url) = &aws.endpoint_url {
            // The SDK refuses a query (and quotes the URL in every error); a pre-signed URL's
            // query is a credential, so refuse it here without quoting it.
            if url.contains(['?', '#']) {
                return Err(Error::Config(format!(
                    "the S3 endpoint URL (GOBUILDCACHE_AWS_ENDPOINT_URL_S3) must not have a query \
                     or fragment; give scheme, host and port only, e.g. {}",
                    crate::config::redact_url(url)
                )));
            }
        }
        match (&aws.access_key_id, &aws.secret_access_key) {
            (Some(id), Some(secret)) => {
                let token = aws.session_token.as_ref().map(|t| t.expose().to_string());
                secrets.push(secret.expose().to_string());
                secrets.extend(token.clone());
                loader = loader.credentials_provider(Credentials::new(
                    id.expose(),
                    secret.expose(),
                    token,
                    None,
                    "gobuildcache",
                ));
            }
            (None, None) if aws.session_token.is_some() => {
                return Err(Error::Config(
                    "an AWS session token is set without an access key id and secret access key \
                     (GOBUILDCACHE_AWS_ACCESS_KEY_ID, GOBUILDCACHE_AWS_SECRET_ACCESS_KEY)"
                        .into(),
                ))
            }
            (None, None) => {} // the SDK's default credential chain
            (Some(_), None) => {
                return Err(Error::Config(
                    "an AWS access key id is set but no secret access key \
                     (GOBUILDCACHE_AWS_SECRET_ACCESS_KEY)"
                        .into(),
                ))
            }
            (None, Some(_)) => {
                return Err(Error::Config(
                    "an AWS secret access key is set but no access key id \
                     (GOBUILDCACHE_AWS_ACCESS_KEY_ID)"
                        .into(),
                ))
            }
        }
        let sdk = loader.load().await;

        let mut b = aws_sdk_s3::config::Builder::from(&sdk)
            .retry_config(RetryConfig::disabled())
            .timeout_config(timeouts(CONNECT_TIMEOUT, ATTEMPT_TIMEOUT))
            .stalled_stream_protection(
                StalledStreamProtectionConfig::enabled()
                    .grace_period(STALL_GRACE)
                    .build(),
            )
            .force_path_style(aws.force_path_style)
            // Directory buckets (`--x-s3`) authenticate with CreateSession tokens, which the SDK
            // manages; pin it on so a stray AWS_S3_DISABLE_EXPRESS_SESSION_AUTH cannot turn it off.
            .disable_s3_express_session_auth(false)
            // Integrity is checked end to end above the trait (SHA-256 of every object read), so
            // the SDK's default CRC trailers add nothing for us, and several S3-compatible stores
            // reject the aws-chunked uploads they need.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if let Some(url) = &aws.endpoint_url {
            // S3 does not use user info, and the SDK would log and quote it: it never gets it.
            b = b.endpoint_url(crate::config::redact_url(url));
        }
        Ok(S3Backend {
            conf: b.build(),
            client: std::sync::OnceLock::new(),
            bucket: bucket.to_string(),
            endpoint: aws.endpoint_url.as_deref().map(crate::config::redact_url),
            put_attempt_timeout: PUT_ATTEMPT_TIMEOUT,
            list_page_size: 1000,
            no_conditional_put: AtomicBool::new(false),
            secrets,
        })
    }

    /// Overrides the connect timeout and the per-attempt timeout of every call (puts still get
    /// extra time for their size). For tests and unusual networks.
    pub fn with_timeouts(mut self, connect: Duration, attempt: Duration) -> S3Backend {
        self.conf = self
            .conf
            .to_builder()
            .timeout_config(timeouts(connect, attempt))
            .build();
        self.client = std::sync::OnceLock::new();
        self.put_attempt_timeout = attempt;
        self
    }

    /// Keys per ListObjectsV2 page (S3's maximum and default is 1000); small pages let tests
    /// exercise pagination cheaply.
    pub fn with_list_page_size(mut self, n: i32) -> S3Backend {
        self.list_page_size = n.clamp(1, 1000);
        self
    }

    /// The SDK client, built on the first call.
    pub fn client(&self) -> &Client {
        self.client
            .get_or_init(|| Client::from_conf(self.conf.clone()))
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    fn put_timeouts(&self, size: u64) -> TimeoutConfig {
        let connect = self
            .conf
            .timeout_config()
            .and_then(|t| t.connect_timeout())
            .unwrap_or(CONNECT_TIMEOUT);
        let extra = Duration::from_secs(size / PUT_BYTES_PER_SEC);
        timeouts(connect, self.put_attempt_timeout + extra)
    }

    /// One PutObject; `if_absent` adds `If-None-Match: *`.
    async fn put_object(
        &self,
        key: &str,
        payload: &Payload,
        if_absent: bool,
    ) -> Result<PutOutcome, PutFailure> {
        let size = payload.size();
        let body = match payload {
            Payload::File { path, .. } => ByteStream::from_path(path).await.map_err(|e| {
                PutFailure::Other(BackendError::Permanent(self.scrub(format!(
                    "put {}: reading {}: {e}",
                    self.target(key),
                    path.display()
                ))))
            })?,
            Payload::Bytes(b) => ByteStream::from(b.clone()),
        };
        let mut req = self
            .client()
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_length(i64::try_from(size).unwrap_or(i64::MAX))
            .body(body);
        if if_absent {
            req = req.if_none_match("*");
        }
        let res = req
            .customize()
            .config_override(
                aws_sdk_s3::config::Builder::default().timeout_config(self.put_timeouts(size)),
            )
            .send()
            .await;
        match res {
            Ok(_) => Ok(PutOutcome::Stored),
            Err(e) => {
                let status = status(&e);
                let code = e.code();
                if if_absent {
                    // 412: the key exists. 409: a concurrent conditional put of the same key
                    // is in flight; that writer stores it.
                    if status == Some(412)
                        || status == Some(409)
                        || matches!(
                            code,
                            Some("PreconditionFailed" | "ConditionalRequestConflict")
                        )
                    {
                        return Ok(PutOutcome::AlreadyExists);
                    }
                    if status == Some(501) || code == Some("NotImplemented") {
                        return Err(PutFailure::ConditionalUnsupported);
                    }
                }
                Err(PutFailure::Other(self.error("put", Some(key), e)))
            }
        }
    }

    fn target(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    fn error<E>(&self, op: &str, key: Option<&str>, err: SdkError<E>) -> BackendError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let target = match key {
            Some(k) => self.target(k),
            None => format!("s3://{}", self.bucket),
        };
        let (transient, detail) = describe(key.is_none(), &err);
        let msg = self.scrub(format!("{op} {target}: {detail}"));
        if transient {
            BackendError::Transient(msg)
        } else {
            BackendError::Permanent(msg)
        }
    }

    fn scrub(&self, mut msg: String) -> String {
        for s in &self.secrets {
            if !s.is_empty() && msg.contains(s.as_str()) {
                msg = msg.replace(s.as_str(), "***");
            }
        }
        msg
    }
}

enum PutFailure {
    ConditionalUnsupported,
    Other(BackendError),
}

fn timeouts(connect: Duration, attempt: Duration) -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(connect)
        .operation_attempt_timeout(attempt)
        .build()
}

fn validate_bucket(bucket: &str) -> Result<(), Error> {
    if bucket.is_empty() {
        return Err(Error::Config(
            "the s3 backend needs a bucket (-s3-bucket or GOBUILDCACHE_S3_BUCKET)".into(),
        ));
    }
    if bucket.contains("://") || bucket.contains('/') || bucket.chars().any(char::is_whitespace) {
        return Err(Error::Config(format!(
            "invalid S3 bucket name {bucket:?}: give the bare bucket name \
             (the key prefix is -s3-prefix)"
        )));
    }
    Ok(())
}

fn status<E>(err: &SdkError<E>) -> Option<u16> {
    err.raw_response().map(|r| r.status().as_u16())
}

/// Whether an error is worth a retry, and a message for people. Built from chosen parts only:
/// the SDK's `Display`/`Debug` of a service error can include request details.
fn describe<E>(bucket_op: bool, err: &SdkError<E>) -> (bool, String)
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match err {
        SdkError::TimeoutError(_) => (true, format!("timed out: {}", chain(err))),
        SdkError::DispatchFailure(_) if no_credentials(err) => (
            false,
            "no AWS credentials found: set GOBUILDCACHE_AWS_ACCESS_KEY_ID and \
             GOBUILDCACHE_AWS_SECRET_ACCESS_KEY, or use the SDK's default chain (AWS_PROFILE, \
             web identity / OIDC, an instance or container role)"
                .into(),
        ),
        SdkError::DispatchFailure(d) => {
            let transient = !d.is_user();
            let what = if d.is_timeout() {
                "connection timed out"
            } else if d.is_io() {
                "connection failed"
            } else {
                "request not sent"
            };
            (transient, format!("{what}: {}", chain(err)))
        }
        SdkError::ConstructionFailure(_) => (
            false,
            format!("could not build the request: {}", chain(err)),
        ),
        SdkError::ResponseError(_) => {
            let st = status(err);
            let transient = st.is_none_or(|s| s == 429 || s >= 500);
            let st = st.map_or(String::new(), |s| format!(" (HTTP {s})"));
            (transient, format!("unreadable response{st}"))
        }
        SdkError::ServiceError(_) => {
            let st = status(err);
            let code = err.code().filter(|c| !c.is_empty());
            let transient = st.is_some_and(|s| s == 429 || s >= 500)
                || code.is_some_and(|c| {
                    matches!(
                        c,
                        "SlowDown"
                            | "Throttling"
                            | "ThrottlingException"
                            | "RequestTimeout"
                            | "InternalError"
                            | "ServiceUnavailable"
                            | "RequestTimeTooSkewed"
                    )
                });
            let mut msg = String::new();
            if let Some(c) = code {
                msg.push_str(c);
            }
            match err.message().filter(|m| !m.is_empty()) {
                Some(m) => {
                    if !msg.is_empty() {
                        msg.push_str(": ");
                    }
                    msg.push_str(&truncate(m));
                }
                // HEAD responses have no body, so no code or message: say what the status means.
                None => {
                    if let Some(h) = st.and_then(|s| hint(bucket_op, s)) {
                        if !msg.is_empty() {
                            msg.push_str(": ");
                        }
                        msg.push_str(h);
                    }
                }
            }
            if msg.is_empty() {
                msg.push_str("error");
            }
            if let Some(s) = st {
                msg.push_str(&format!(" (HTTP {s}"));
                if let Some(id) = err.request_id() {
                    msg.push_str(&format!(", request id {id}"));
                }
                msg.push(')');
            }
            (transient, msg)
        }
        _ => (true, "unexpected SDK error".into()),
    }
}

/// Whether the SDK's credential chain found nothing (or a broken profile): that will not fix
/// itself during a build. Its own message lists every provider it tried, over many lines.
fn no_credentials(err: &dyn std::error::Error) -> bool {
    use aws_credential_types::provider::error::CredentialsError;
    let mut cur = err.source();
    while let Some(e) = cur {
        if let Some(c) = e.downcast_ref::<CredentialsError>() {
            return matches!(
                c,
                CredentialsError::CredentialsNotLoaded(_)
                    | CredentialsError::InvalidConfiguration(_)
            );
        }
        cur = e.source();
    }
    false
}

fn hint(bucket_op: bool, status: u16) -> Option<&'static str> {
    Some(match status {
        301 => "the bucket is in another region (set GOBUILDCACHE_AWS_REGION)",
        400 => "bad request",
        403 => "access denied (check the credentials and the bucket policy)",
        404 if bucket_op => "no such bucket",
        404 => "not found",
        _ => return None,
    })
}

/// The source chain of a transport error, e.g. `io error: tcp connect error: Connection refused`.
/// These come from the HTTP stack and name neither credentials nor signed URLs.
fn chain(err: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !s.is_empty() && parts.last() != Some(&s) {
            parts.push(s);
        }
        cur = e.source();
    }
    truncate(&parts.join(": "))
}

fn truncate(s: &str) -> String {
    match s.char_indices().nth(MAX_MESSAGE) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[async_trait]
impl Backend for S3Backend {
    fn name(&self) -> &'static str {
        "s3"
    }

    fn location(&self) -> String {
        match &self.endpoint {
            Some(e) => format!("s3://{} at {e}", self.bucket),
            None => format!("s3://{}", self.bucket),
        }
    }

    async fn check(&self) -> BackendResult<()> {
        self.client()
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.error("check", None, e))
    }

    async fn get(&self, key: &str) -> BackendResult<Option<BodyReader>> {
        match self
            .client()
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => Ok(Some(Box::new(out.body.into_async_read()))),
            Err(e) => {
                let missing = e.as_service_error().is_some_and(|s| s.is_no_such_key())
                    || (status(&e) == Some(404) && e.code() != Some("NoSuchBucket"));
                if missing {
                    Ok(None)
                } else {
                    Err(self.error("get", Some(key), e))
                }
            }
        }
    }

    async fn put(&self, key: &str, body: &Payload) -> BackendResult<PutOutcome> {
        if !self.no_conditional_put.load(Ordering::Relaxed) {
            match self.put_object(key, body, true).await {
                Ok(o) => return Ok(o),
                Err(PutFailure::Other(e)) => return Err(e),
                Err(PutFailure::ConditionalUnsupported) => {
                    if !self.no_conditional_put.swap(true, Ordering::Relaxed) {
                        tracing::debug!(
                            "{}: the store does not support conditional puts (If-None-Match); \
                             checking with HEAD before each put instead",
                            self.location()
                        );
                    }
                }
            }
        }
        // Fallback for stores without If-None-Match: HEAD, then an unconditional put. Another
        // writer can store the same key between the two; we accept that window, since either
        // body is a valid result for the key and readers verify every object they fetch.
        match self
            .client()
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(_) => return Ok(PutOutcome::AlreadyExists),
            Err(e) if status(&e) == Some(404) => {}
            Err(e) => return Err(self.error("head", Some(key), e)),
        }
        match self.put_object(key, body, false).await {
            Ok(o) => Ok(o),
            Err(PutFailure::Other(e)) => Err(e),
            Err(PutFailure::ConditionalUnsupported) => Err(BackendError::Permanent(format!(
                "put {}: the store refused an unconditional put as unsupported",
                self.target(key)
            ))),
        }
    }

    async fn delete(&self, key: &str) -> BackendResult<()> {
        match self
            .client()
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if status(&e) == Some(404) && e.code() != Some("NoSuchBucket") => Ok(()),
            Err(e) => Err(self.error("delete", Some(key), e)),
        }
    }

    async fn list(&self, prefix: &str) -> BackendResult<Vec<ObjectInfo>> {
        let mut pages = self
            .client()
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .max_keys(self.list_page_size)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.error("list", Some(prefix), e))?;
            for o in page.contents() {
                if let Some(key) = o.key() {
                    out.push(ObjectInfo {
                        key: key.to_string(),
                        size: o.size().and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
                    });
                }
            }
        }
        // Directory buckets list in no particular order.
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn lists_by_page(&self) -> bool {
        true
    }

    async fn list_some(&self, prefix: &str, max: usize) -> BackendResult<(Vec<ObjectInfo>, bool)> {
        let page = self
            .client()
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            // S3 answers at most a page (1,000) whatever is asked; some compatible stores
            // answer more, which would only hide that from the tests.
            .max_keys(
                i32::try_from(max)
                    .unwrap_or(i32::MAX)
                    .min(self.list_page_size),
            )
            .send()
            .await
            .map_err(|e| self.error("list", Some(prefix), e))?;
        let out = page
            .contents()
            .iter()
            .filter_map(|o| {
                Some(ObjectInfo {
                    key: o.key()?.to_string(),
                    size: o.size().and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
                })
            })
            .collect();
        Ok((out, !page.is_truncated().unwrap_or(false)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextRef;
    use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
    use aws_sdk_s3::error::BoxError;
    use std::sync::{Arc, Mutex};

    fn settings(region: &str) -> AwsSettings {
        AwsSettings {
            region: Some(region.into()),
            access_key_id: Some(Secret::new("AKIDTESTING")),
            secret_access_key: Some(Secret::new("not-a-real-secret")),
            ..AwsSettings::default()
        }
    }

    /// Records each signed request (URI and header names) and stops it before it is sent, so
    /// these tests stay offline.
    #[derive(Debug, Clone, Default)]
    struct Capture(Arc<Mutex<Vec<Sent>>>);

    /// A request's URI and header names.
    type Sent = (String, Vec<String>);

    impl Intercept for Capture {
        fn name(&self) -> &'static str {
            "capture"
        }
        fn read_before_transmit(
            &self,
            ctx: &BeforeTransmitInterceptorContextRef<'_>,
            _rc: &RuntimeComponents,
            _cfg: &mut ConfigBag,
        ) -> Result<(), BoxError> {
            let req = ctx.request();
            let headers = req.headers().iter().map(|(k, _)| k.to_string()).collect();
            self.0
                .lock()
                .unwrap()
                .push((req.uri().to_string(), headers));
            Err("captured, not sent".into())
        }
    }

    /// Issues a GetObject through `backend`'s configuration plus `extra`; returns the URI
    /// (without the query) and the header names that would have been sent.
    async fn captured_get(
        backend: &S3Backend,
        extra: impl FnOnce(aws_sdk_s3::config::Builder) -> aws_sdk_s3::config::Builder,
    ) -> (String, Vec<String>) {
        let cap = Capture::default();
        let conf = extra(
            backend
                .client()
                .config()
                .to_builder()
                .interceptor(cap.clone()),
        )
        .build();
        let client = Client::from_conf(conf);
        let res = client
            .get_object()
            .bucket(backend.bucket())
            .key("k")
            .send()
            .await;
        assert!(res.is_err(), "the interceptor stops every request");
        let got = cap.0.lock().unwrap();
        let (uri, headers) = got.last().cloned().expect("a request was signed");
        let path = uri.split('?').next().unwrap().to_string();
        (path, headers)
    }

    #[tokio::test]
    async fn client_settings() {
        let b = S3Backend::new("my-bucket", &settings("eu-west-1"))
            .await
            .unwrap();
        let conf = b.client().config();
        assert_eq!(conf.region().map(|r| r.as_ref()), Some("eu-west-1"));
        assert_eq!(
            conf.retry_config().unwrap().max_attempts(),
            1,
            "no SDK retries"
        );
        let t = conf.timeout_config().unwrap();
        assert_eq!(t.connect_timeout(), Some(CONNECT_TIMEOUT));
        assert_eq!(t.operation_attempt_timeout(), Some(ATTEMPT_TIMEOUT));
        assert_eq!(b.location(), "s3://my-bucket");
        assert_eq!(b.name(), "s3");

        let (uri, headers) = captured_get(&b, |c| c).await;
        assert_eq!(uri, "https://my-bucket.s3.eu-west-1.amazonaws.com/k");
        assert!(headers.iter().any(|h| h == "authorization"), "{headers:?}");
        assert!(!headers.iter().any(|h| h == "x-amz-s3session-token"));
    }

    /// Directory buckets go to their zonal endpoint and are signed with a CreateSession token
    /// (`x-amz-s3session-token`), not plain SigV4: session auth must stay on.
    #[tokio::test]
    async fn express_directory_bucket() {
        let bucket = "gbc-cache--usw2-az1--x-s3";
        let b = S3Backend::new(bucket, &settings("us-west-2"))
            .await
            .unwrap();
        assert_eq!(b.location(), format!("s3://{bucket}"));
        // Stand in for CreateSession (which needs AWS) with a fixed session credential.
        let (uri, headers) = captured_get(&b, |c| {
            c.express_credentials_provider(Credentials::new(
                "SESSIONAKID",
                "session-secret",
                Some("session-token".into()),
                None,
                "test",
            ))
        })
        .await;
        assert_eq!(
            uri,
            format!("https://{bucket}.s3express-usw2-az1.us-west-2.amazonaws.com/k")
        );
        assert!(
            headers.iter().any(|h| h == "x-amz-s3session-token"),
            "signed with S3 Express session auth: {headers:?}"
        );
        assert!(!headers.iter().any(|h| h == "x-amz-security-token"));
    }

    #[tokio::test]
    async fn missing_region_defaults_and_endpoint_is_used() {
        let mut aws = settings("x");
        aws.region = None;
        aws.endpoint_url = Some("http://user:pw@127.0.0.1:9/".into());
        aws.force_path_style = true;
        let b = S3Backend::new("bkt", &aws).await.unwrap();
        assert!(
            b.client().config().region().is_some(),
            "never without a region"
        );
        assert_eq!(b.location(), "s3://bkt at http://127.0.0.1:9/");
        let (uri, _) = captured_get(&b, |c| c).await;
        assert!(uri.ends_with("127.0.0.1:9/bkt/k"), "path style: {uri}");
        assert!(uri.starts_with("http://"), "{uri}");
    }

    #[tokio::test]
    async fn bad_settings_are_config_errors() {
        for bucket in ["", "s3://b", "b/prefix", "b c"] {
            let e = S3Backend::new(bucket, &settings("us-east-1")).await;
            assert!(matches!(e, Err(Error::Config(_))), "{bucket:?}");
        }
        let mut aws = settings("us-east-1");
        aws.secret_access_key = None;
        match S3Backend::new("b", &aws).await {
            Err(Error::Config(m)) => assert!(m.contains("SECRET_ACCESS_KEY"), "{m}"),
            _ => panic!("half-set credentials must be refused"),
        }
        let mut aws = settings("us-east-1");
        aws.access_key_id = None;
        assert!(matches!(
            S3Backend::new("b", &aws).await,
            Err(Error::Config(_))
        ));
    }

    /// A scripted store without `If-None-Match` support (501 NotImplemented, as some
    /// S3-compatible stores answer): puts fall back to HEAD-then-put. Returns the request lines
    /// it saw.
    fn store_without_conditional_puts() -> (String, Arc<Mutex<Vec<String>>>) {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            let mut stored = false;
            for mut conn in listener.incoming().flatten() {
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                let (mut len, mut conditional) = (0usize, false);
                loop {
                    let mut h = String::new();
                    r.read_line(&mut h).unwrap();
                    let h = h.trim().to_ascii_lowercase();
                    if h.is_empty() {
                        break;
                    }
                    if let Some(v) = h.strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                    conditional |= h.starts_with("if-none-match:");
                }
                let mut body = vec![0; len];
                r.read_exact(&mut body).unwrap();
                let method = line.split(' ').next().unwrap_or("").to_string();
                log.lock().unwrap().push(format!(
                    "{method}{}",
                    if conditional { " if-none-match" } else { "" }
                ));
                let (status, body) = match (method.as_str(), conditional) {
                    ("PUT", true) => (
                        "501 Not Implemented",
                        "<Error><Code>NotImplemented</Code><Message>If-None-Match</Message></Error>",
                    ),
                    ("PUT", false) => {
                        stored = true;
                        ("200 OK", "")
                    }
                    ("HEAD", _) if stored => ("200 OK", ""),
                    _ => ("404 Not Found", ""),
                };
                let len = if method == "HEAD" { 0 } else { body.len() };
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status}\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n{}",
                    if method == "HEAD" { "" } else { body }
                );
            }
        });
        (url, seen)
    }

    #[tokio::test]
    async fn put_falls_back_when_conditional_puts_are_unsupported() {
        let (url, seen) = store_without_conditional_puts();
        let mut aws = settings("us-east-1");
        aws.endpoint_url = Some(url);
        aws.force_path_style = true;
        let b = S3Backend::new("b", &aws).await.unwrap();
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        std::fs::write(&src, b"body").unwrap();
        assert_eq!(
            b.put("k", &Payload::file(&src, 4)).await.unwrap(),
            PutOutcome::Stored
        );
        assert_eq!(
            b.put("k", &Payload::file(&src, 4)).await.unwrap(),
            PutOutcome::AlreadyExists
        );
        assert_eq!(
            *seen.lock().unwrap(),
            ["PUT if-none-match", "HEAD", "PUT", "HEAD"],
            "the unsupported header is tried once, then HEAD guards each put"
        );
    }

    #[test]
    fn helpers() {
        use crate::config::redact_url;
        assert_eq!(redact_url("https://a:b@h:1/p"), "https://h:1/p");
        assert_eq!(
            redact_url("https://h:1/p?X-Amz-Signature=s"),
            "https://h:1/p"
        );
        assert_eq!(redact_url("http://h"), "http://h");
        let long = "x".repeat(1000);
        assert!(truncate(&long).chars().count() <= MAX_MESSAGE + 1);
        assert_eq!(truncate("short"), "short");
    }
}
