//! A real S3 server on 127.0.0.1 for the tests: `moto_server`, one process per `Moto`,
//! in-memory, killed on drop. Installed by `scripts/test-servers.sh`; a test that needs it
//! fails (never skips) when it is missing.
//!
//! Only fake keys are used here (`testing`/`testing`); moto accepts any key unless started
//! with [`Moto::start_with_auth`].

#![allow(dead_code)]

use std::future::Future;
use std::process::Command;
use std::time::Duration;

use crate::server::{Process, Spec};
use gobuildcache::config::{AwsSettings, Secret};
use gobuildcache::store::s3::S3Backend;

pub const ACCESS_KEY: &str = "testing";
pub const SECRET_KEY: &str = "testing";
pub const REGION: &str = "us-east-1";

const HOW: &str = "moto_server is not on PATH: run `bash scripts/test-servers.sh` \
                   (it installs the PyPI package moto[server])";

pub struct Moto {
    server: Process,
    port: u16,
}

/// Runs `fut` to completion on a private runtime in its own thread, so the blocking helpers
/// below work from plain and from `#[tokio::test]` code alike.
pub fn block_on<F: Future + Send>(fut: F) -> F::Output
where
    F::Output: Send,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(fut)
        })
        .join()
        .unwrap()
    })
}

impl Moto {
    /// Starts a server that accepts any credentials, and waits (bounded) until it answers.
    pub fn start() -> Moto {
        Moto::launch(None)
    }

    /// Starts a server that checks credentials against its own (empty) IAM, so every request,
    /// whatever its keys, is refused with 403. For "bad credentials" tests; buckets cannot be
    /// created on it.
    pub fn start_with_auth() -> Moto {
        Moto::launch(Some(0))
    }

    /// As [`Moto::start_with_auth`], after `n` unchecked calls in which to create a bucket and
    /// an IAM user with keys (moto's `INITIAL_NO_AUTH_ACTION_COUNT`).
    pub fn start_with_auth_after(n: u32) -> Moto {
        Moto::launch(Some(n))
    }

    fn launch(auth: Option<u32>) -> Moto {
        let server = Process::start(Spec {
            name: "moto_server",
            how: HOW,
            ready_within: Duration::from_secs(20),
            command: Box::new(move |port, _| {
                let mut c = Command::new("moto_server");
                c.args(["-H", "127.0.0.1", "-p"])
                    .arg(port.to_string())
                    // Nothing from the developer's AWS setup leaks into the server.
                    .env_remove("AWS_ACCESS_KEY_ID")
                    .env_remove("AWS_SECRET_ACCESS_KEY")
                    .env_remove("AWS_SESSION_TOKEN")
                    .env_remove("AWS_PROFILE");
                if let Some(n) = auth {
                    c.env("INITIAL_NO_AUTH_ACTION_COUNT", n.to_string());
                }
                c
            }),
            ready: Box::new(|port| {
                crate::util::http_request(port, "GET", "/moto-api/", None, b"").is_ok()
            }),
        });
        Moto {
            port: server.port,
            server,
        }
    }

    /// `http://127.0.0.1:PORT`, the value for `AWS_ENDPOINT_URL_S3`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The environment for our helper binary to use this server and `bucket` (fake keys).
    pub fn env(&self, bucket: &str) -> Vec<(String, String)> {
        [
            ("GOBUILDCACHE_BACKEND", "s3"),
            ("GOBUILDCACHE_S3_BUCKET", bucket),
            ("GOBUILDCACHE_AWS_ENDPOINT_URL_S3", &self.endpoint()),
            ("GOBUILDCACHE_AWS_S3_USE_PATH_STYLE", "true"),
            ("GOBUILDCACHE_AWS_REGION", REGION),
            ("GOBUILDCACHE_AWS_ACCESS_KEY_ID", ACCESS_KEY),
            ("GOBUILDCACHE_AWS_SECRET_ACCESS_KEY", SECRET_KEY),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// The settings [`Moto::env`] stands for, as the library sees them.
    pub fn aws_settings(&self) -> AwsSettings {
        self.aws_settings_with_keys(ACCESS_KEY, SECRET_KEY)
    }

    pub fn aws_settings_with_keys(&self, access_key: &str, secret_key: &str) -> AwsSettings {
        AwsSettings {
            access_key_id: Some(Secret::new(access_key)),
            secret_access_key: Some(Secret::new(secret_key)),
            ..Moto::settings_for(&self.endpoint())
        }
    }

    /// Test settings (fake keys, path style) for any endpoint, e.g. one nothing listens on.
    pub fn settings_for(endpoint: &str) -> AwsSettings {
        AwsSettings {
            region: Some(REGION.into()),
            access_key_id: Some(Secret::new(ACCESS_KEY)),
            secret_access_key: Some(Secret::new(SECRET_KEY)),
            session_token: None,
            endpoint_url: Some(endpoint.to_string()),
            force_path_style: true,
        }
    }

    /// Our S3 backend on this server and `bucket`.
    pub async fn backend(&self, bucket: &str) -> S3Backend {
        S3Backend::new(bucket, &self.aws_settings())
            .await
            .unwrap_or_else(|e| panic!("S3Backend::new({bucket}): {e}"))
    }

    /// Creates a bucket (an unsigned PUT, which moto accepts).
    pub fn create_bucket(&self, name: &str) {
        let (status, resp) = self.request("PUT", &format!("/{name}"), b"");
        assert_eq!(
            status,
            200,
            "creating bucket {name}: {}",
            String::from_utf8_lossy(&resp)
        );
    }

    /// Writes an object directly (overwriting), e.g. to plant a corrupt or truncated one.
    pub fn put_object(&self, bucket: &str, key: &str, body: &[u8]) {
        let body = body.to_vec();
        block_on(async {
            let b = self.backend(bucket).await;
            b.client()
                .put_object()
                .bucket(bucket)
                .key(key)
                .body(body.into())
                .send()
                .await
                .unwrap_or_else(|e| panic!("put s3://{bucket}/{key}: {e:?}"));
        })
    }

    /// An object's bytes, read directly; `None` if it does not exist.
    pub fn get_object(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        block_on(async {
            let b = self.backend(bucket).await;
            match b.client().get_object().bucket(bucket).key(key).send().await {
                Ok(o) => Some(o.body.collect().await.unwrap().to_vec()),
                Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => None,
                Err(e) => panic!("get s3://{bucket}/{key}: {e:?}"),
            }
        })
    }

    /// Every key in `bucket` under `prefix`, sorted.
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        use gobuildcache::store::Backend;
        block_on(async {
            let b = self.backend(bucket).await;
            let list = b.list(prefix).await.unwrap();
            list.into_iter().map(|o| o.key).collect()
        })
    }

    /// One HTTP/1.0 request (so the reply is never chunked); panics if the server is unreachable.
    pub fn request(&self, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
        self.try_request(method, path, body)
            .unwrap_or_else(|e| panic!("{method} {path} to moto_server: {e}"))
    }

    fn try_request(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> std::io::Result<(u16, Vec<u8>)> {
        crate::util::http_request(self.port, method, path, None, body)
    }

    /// Kills the server ("the store died mid-build"); idempotent. Nothing listens on the
    /// port until [`Moto::restart`].
    pub fn stop(&mut self) {
        self.server.stop();
    }

    pub fn is_running(&self) -> bool {
        self.server.is_running()
    }

    /// Starts the server again on the same port (same endpoint). moto keeps everything in
    /// memory: buckets and objects are gone, so create the buckets again.
    pub fn restart(&mut self) {
        self.server.restart();
    }

    /// The server's stderr so far (one line per request), for assertion messages.
    pub fn log(&self) -> String {
        self.server.log()
    }
}
