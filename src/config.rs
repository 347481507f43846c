//! Configuration: one table of settings read from the environment, flags or JSON.
//!
//! The binary, the C ABI and the Go package all resolve settings here, so precedence and
//! validation exist once. Precedence: default < environment < explicit (flag or JSON key).
//! Each environment key `K` is read as `GOBUILDCACHE_K` first, then `K`; a variable set to the
//! empty string counts as unset (so an empty prefixed variable falls through), as in the Go
//! original.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{Error, Result};

/// Where the shared copy of the cache lives. `Disk` means local-only (the original's name).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendKind {
    Disk,
    S3,
    Gcs,
    /// Azure Blob Storage (feature `azure`).
    Azure,
    /// Any HTTP server taking GET/PUT/DELETE, WebDAV for listing (feature `http`).
    Http,
}

/// How concurrent fetches of one ActionID are deduplicated across processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockType {
    Fslock,
    Memory,
    Noop,
}

/// Resolved settings. Build one with [`Config::from_env`], [`Config::builder`] or
/// [`Config::default`]; the binary and the C ABI use the builder.
#[derive(Clone, Debug)]
pub struct Config {
    pub backend: BackendKind,
    pub cache_dir: PathBuf,
    /// Defaults to `<cache_dir>/locks` when unset.
    pub lock_dir: Option<PathBuf>,
    pub lock_type: LockType,
    pub s3_bucket: String,
    pub s3_prefix: String,
    pub gcs_bucket: String,
    pub gcs_prefix: String,
    pub azure_container: String,
    pub azure_prefix: String,
    pub azure: AzureSettings,
    /// With `-backend http`: the base URL objects go under.
    pub http_url: String,
    pub http_prefix: String,
    pub http: HttpSettings,
    pub debug: bool,
    pub stats: bool,
    pub stats_json: Option<PathBuf>,
    pub compression: bool,
    pub async_backend: bool,
    pub read_only: bool,
    pub error_rate: f64,
    /// Soft cap on the local tier in bytes; trimming removes least recently used bodies.
    pub max_size: u64,
    /// How long `close` waits for pending uploads.
    pub close_timeout: Duration,
    /// With `-backend disk`: a directory shared as the remote tier (an NFS mount, say).
    pub remote_dir: Option<PathBuf>,
    /// Warm start: prefetch what recent runs used, publish what this one used.
    pub prefetch: bool,
    /// The manifest name; `None` derives it from the go command's and the CI's environment.
    pub manifest_key: Option<String>,
    /// Names to start from when `manifest_key` has no manifest yet; `None` derives them.
    pub manifest_fallback: Option<Vec<String>>,
    /// Fetches the prefetch keeps in flight.
    pub prefetch_concurrency: usize,
    /// Whether close publishes the warm start; `None`: only when serving a go command (or
    /// in the prefetch step), since other tools' entries are not the go command's build.
    pub publish: Option<bool>,
    pub aws: AwsSettings,
    /// Where each non-default value came from (`"flag -cache-dir"`, `"GOBUILDCACHE_CACHE_DIR"`),
    /// so later errors (an unwritable dir) name the culprit.
    origins: Vec<(&'static str, String)>,
}

/// S3 settings beyond bucket and prefix. Anything unset is left to the AWS SDK's default
/// chain (environment, profiles, web identity / OIDC, instance metadata).
#[derive(Clone, Default)]
pub struct AwsSettings {
    pub region: Option<String>,
    pub access_key_id: Option<Secret>,
    pub secret_access_key: Option<Secret>,
    pub session_token: Option<Secret>,
    pub endpoint_url: Option<String>,
    pub force_path_style: bool,
}

impl std::fmt::Debug for AwsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsSettings")
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &self.secret_access_key)
            .field("session_token", &self.session_token)
            .field(
                "endpoint_url",
                &self.endpoint_url.as_deref().map(redact_url),
            )
            .field("force_path_style", &self.force_path_style)
            .finish()
    }
}

/// Azure settings beyond container and prefix. Without a connection string or SAS token the
/// Entra ID chain is used (see `store::azure`).
#[derive(Clone, Debug, Default)]
pub struct AzureSettings {
    /// The storage account name (else taken from the connection string or endpoint).
    pub account: Option<String>,
    /// The blob service URL, e.g. Azurite's `http://127.0.0.1:10000/devstoreaccount1`.
    pub endpoint: Option<String>,
    pub connection_string: Option<Secret>,
    pub sas_token: Option<Secret>,
}

/// Credentials for `-backend http`: a bearer token, or basic auth.
#[derive(Clone, Debug, Default)]
pub struct HttpSettings {
    pub token: Option<Secret>,
    pub username: Option<Secret>,
    pub password: Option<Secret>,
}

/// An endpoint URL fit for messages: without the user info, query and fragment, where
/// credentials sit (`https://key:secret@host`, a pre-signed `?X-Amz-Signature=…`).
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (format!("{s}://"), r),
        None => (String::new(), url),
    };
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    format!("{scheme}{host}{path}")
}

/// A credential: usable, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// How a setting can be given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A flag taking a value.
    Value,
    /// A flag in Go's boolean syntax.
    Bool,
    /// Environment (prefixed form only) or JSON, never a flag: a credential on a command
    /// line shows in `ps`; the plain `AWS_*` forms are the SDK's own to read.
    Secret,
    /// Environment or JSON only, both prefixed and plain forms.
    EnvOnly,
}

/// One row of the settings table: the flag/JSON key and the environment key(s) it reads.
pub struct Setting {
    pub key: &'static str,
    pub env: &'static [&'static str],
    pub help: &'static str,
    pub kind: Kind,
}

impl Setting {
    pub fn is_flag(&self) -> bool {
        matches!(self.kind, Kind::Value | Kind::Bool)
    }
}

macro_rules! settings {
    ($( $key:literal, [$($env:literal),*], $kind:ident, $help:literal; )*) => {
        /// Every setting, in the order `help` lists them.
        pub const SETTINGS: &[Setting] = &[
            $( Setting { key: $key, env: &[$($env),*], help: $help, kind: Kind::$kind }, )*
        ];
    };
}

settings! {
    "backend", ["BACKEND_TYPE", "BACKEND"], Value, "remote tier: disk (local only), s3, gcs, azure or http [default: disk]";
    "cache-dir", ["CACHE_DIR"], Value, "local cache directory [default: user cache dir/gobuildcache]";
    "lock-dir", ["LOCK_DIR"], Value, "directory for cross-process fetch locks [default: CACHE_DIR/locks]";
    "lock-type", ["LOCK_TYPE"], Value, "fetch deduplication: fslock, memory or noop [default: fslock]";
    "s3-bucket", ["S3_BUCKET"], Value, "S3 bucket (S3 Express directory buckets end in --x-s3)";
    "s3-prefix", ["S3_PREFIX"], Value, "key prefix in the S3 bucket [default: gobuildcache/]";
    "gcs-bucket", ["GCS_BUCKET"], Value, "GCS bucket";
    "gcs-prefix", ["GCS_PREFIX"], Value, "object prefix in the GCS bucket [default: gobuildcache/]";
    "azure-container", ["AZURE_CONTAINER"], Value, "Azure Blob Storage container";
    "azure-prefix", ["AZURE_PREFIX"], Value, "blob name prefix in the Azure container [default: gobuildcache/]";
    "http-url", ["HTTP_URL"], Value, "with -backend http: base URL of a server taking GET/PUT/DELETE (WebDAV for listing)";
    "http-prefix", ["HTTP_PREFIX"], Value, "key prefix under the HTTP base URL [default: gobuildcache/]";
    "debug", ["DEBUG"], Bool, "debug logging to stderr [default: false]";
    "stats", ["PRINT_STATS"], Bool, "print statistics to stderr on exit [default: true]";
    "stats-json", ["STATS_JSON"], Value, "also write statistics as JSON to this file on exit";
    "compression", ["COMPRESSION"], Bool, "compress objects sent to the remote [default: true]";
    "async-backend", ["ASYNC_BACKEND"], Bool, "upload in the background [default: true]";
    "read-only", ["READ_ONLY"], Bool, "never write to the remote (untrusted runs) [default: false]";
    "error-rate", ["ERROR_RATE"], Value, "fraction 0.0-1.0 of remote calls that fail on purpose (tests) [default: 0]";
    "max-size", ["MAX_SIZE"], Value, "local tier size cap, e.g. 10GiB, 500MB [default: 10GiB]";
    "close-timeout", ["CLOSE_TIMEOUT"], Value, "how long close waits for pending uploads, e.g. 30s [default: 30s]";
    "remote-dir", ["REMOTE_DIR"], Value, "with -backend disk: a directory shared as the remote tier (e.g. an NFS mount)";
    "prefetch", ["PREFETCH"], Bool, "warm start: fetch what recent runs used at start-up, publish this run's list at close [default: true]";
    "manifest-key", ["MANIFEST_KEY"], Value, "warm-start manifest name [default: <module>/<GOOS>-<GOARCH>/<GOVERSION>/<CI branch>]";
    "manifest-fallback", ["MANIFEST_FALLBACK"], Value, "comma-separated manifest names to start from when manifest-key has none [default: the CI's base branch, main, master]";
    "prefetch-concurrency", ["PREFETCH_CONCURRENCY"], Value, "fetches the warm start keeps in flight [default: 32]";
    "publish", ["PUBLISH"], Bool, "warm start: publish this run's manifest (and a pack) at close [default: in a GOCACHEPROG session and the prefetch step, not for other library users]";
    "aws-region", ["AWS_REGION"], Secret, "S3 region (else the SDK's default chain)";
    "aws-access-key-id", ["AWS_ACCESS_KEY_ID"], Secret, "static S3 credentials (else the SDK's default chain)";
    "aws-secret-access-key", ["AWS_SECRET_ACCESS_KEY"], Secret, "static S3 credentials";
    "aws-session-token", ["AWS_SESSION_TOKEN"], Secret, "static S3 session token";
    "aws-endpoint-url-s3", ["AWS_ENDPOINT_URL_S3"], EnvOnly, "S3-compatible endpoint (MinIO, R2, Tigris, a test server)";
    "aws-s3-use-path-style", ["AWS_S3_USE_PATH_STYLE"], EnvOnly, "path-style S3 addressing (most S3-compatible stores)";
    "azure-storage-account", ["AZURE_STORAGE_ACCOUNT"], EnvOnly, "Azure storage account name (else from the connection string or endpoint)";
    "azure-storage-endpoint", ["AZURE_STORAGE_ENDPOINT"], EnvOnly, "Azure blob service URL (Azurite, sovereign clouds) [default: https://ACCOUNT.blob.core.windows.net]";
    "azure-storage-connection-string", ["AZURE_STORAGE_CONNECTION_STRING"], Secret, "Azure connection string (else SAS token, else the Entra ID chain)";
    "azure-storage-sas-token", ["AZURE_STORAGE_SAS_TOKEN"], Secret, "Azure SAS token for the container";
    "http-token", ["HTTP_TOKEN"], Secret, "bearer token for -backend http";
    "http-username", ["HTTP_USERNAME"], Secret, "basic-auth user for -backend http";
    "http-password", ["HTTP_PASSWORD"], Secret, "basic-auth password for -backend http";
}

/// Default key prefix in a shared store.
pub const DEFAULT_PREFIX: &str = "gobuildcache/";

/// The prefix read before each plain environment key.
pub const ENV_PREFIX: &str = "GOBUILDCACHE_";

impl Default for Config {
    fn default() -> Self {
        Config {
            backend: BackendKind::Disk,
            cache_dir: default_cache_dir(),
            lock_dir: None,
            lock_type: LockType::Fslock,
            s3_bucket: String::new(),
            s3_prefix: DEFAULT_PREFIX.into(),
            gcs_bucket: String::new(),
            gcs_prefix: DEFAULT_PREFIX.into(),
            azure_container: String::new(),
            azure_prefix: DEFAULT_PREFIX.into(),
            azure: AzureSettings::default(),
            http_url: String::new(),
            http_prefix: DEFAULT_PREFIX.into(),
            http: HttpSettings::default(),
            debug: false,
            stats: true,
            stats_json: None,
            compression: true,
            async_backend: true,
            read_only: false,
            error_rate: 0.0,
            max_size: 10 << 30,
            close_timeout: Duration::from_secs(30),
            remote_dir: None,
            prefetch: true,
            manifest_key: None,
            manifest_fallback: None,
            prefetch_concurrency: 32,
            publish: None,
            aws: AwsSettings::default(),
            origins: Vec::new(),
        }
    }
}

/// Collects explicit settings on top of the environment, then validates once.
pub struct ConfigBuilder {
    read_env: bool,
    explicit: Vec<(String, String, String)>,
}

impl Config {
    /// Defaults overlaid with the process environment.
    pub fn from_env() -> Result<Config> {
        Config::builder().env(true).build()
    }

    pub fn builder() -> ConfigBuilder {
        ConfigBuilder {
            read_env: false,
            explicit: Vec::new(),
        }
    }

    /// The lock directory actually used.
    pub fn lock_dir(&self) -> PathBuf {
        self.lock_dir
            .clone()
            .unwrap_or_else(|| self.cache_dir.join("locks"))
    }

    /// Where a setting's value came from, for error messages: `"flag -cache-dir"`,
    /// `"GOBUILDCACHE_CACHE_DIR"`, or `"default"`.
    pub fn origin(&self, key: &str) -> &str {
        self.origins
            .iter()
            .rev()
            .find(|(k, _)| *k == key)
            .map(|(_, o)| o.as_str())
            .unwrap_or("default")
    }

    /// The prefix of the configured remote, if any.
    pub fn remote_prefix(&self) -> Option<&str> {
        match self.backend {
            BackendKind::Disk if self.remote_dir.is_some() => Some(DEFAULT_PREFIX),
            BackendKind::Disk => None,
            BackendKind::S3 => Some(&self.s3_prefix),
            BackendKind::Gcs => Some(&self.gcs_prefix),
            BackendKind::Azure => Some(&self.azure_prefix),
            BackendKind::Http => Some(&self.http_prefix),
        }
    }

    fn set(&mut self, key: &str, value: &str, origin: String) -> Result<()> {
        let setting = SETTINGS
            .iter()
            .find(|s| s.key == key)
            .ok_or_else(|| Error::Config(format!("unknown setting {origin}")))?;
        let bad = |why: &str| Error::Config(format!("invalid value {value:?} for {origin}: {why}"));
        match setting.key {
            "backend" => {
                self.backend = match value.to_ascii_lowercase().as_str() {
                    "disk" | "local" => BackendKind::Disk,
                    "s3" => BackendKind::S3,
                    "gcs" => BackendKind::Gcs,
                    "azure" => BackendKind::Azure,
                    "http" | "webdav" => BackendKind::Http,
                    _ => return Err(bad("expected disk, s3, gcs, azure or http")),
                }
            }
            "cache-dir" => {
                self.cache_dir = non_empty_path(value).ok_or_else(|| bad("empty path"))?
            }
            "lock-dir" => {
                self.lock_dir = Some(non_empty_path(value).ok_or_else(|| bad("empty path"))?)
            }
            "lock-type" => {
                self.lock_type = match value.to_ascii_lowercase().as_str() {
                    "fslock" | "fs" => LockType::Fslock,
                    "memory" => LockType::Memory,
                    "noop" => LockType::Noop,
                    _ => return Err(bad("expected fslock, memory or noop")),
                }
            }
            "s3-bucket" => self.s3_bucket = value.to_string(),
            "s3-prefix" => self.s3_prefix = value.to_string(),
            "gcs-bucket" => self.gcs_bucket = value.to_string(),
            "gcs-prefix" => self.gcs_prefix = value.to_string(),
            "azure-container" => self.azure_container = value.to_string(),
            "azure-prefix" => self.azure_prefix = value.to_string(),
            "http-url" => self.http_url = value.trim().to_string(),
            "http-prefix" => self.http_prefix = value.to_string(),
            "azure-storage-account" => self.azure.account = non_empty(value),
            "azure-storage-endpoint" => self.azure.endpoint = non_empty(value),
            "azure-storage-connection-string" => {
                self.azure.connection_string = non_empty(value).map(Secret)
            }
            "azure-storage-sas-token" => self.azure.sas_token = non_empty(value).map(Secret),
            "http-token" => self.http.token = non_empty(value).map(Secret),
            "http-username" => self.http.username = non_empty(value).map(Secret),
            "http-password" => self.http.password = non_empty(value).map(Secret),
            "debug" => self.debug = parse_bool(value).ok_or_else(|| bad(BOOL_HELP))?,
            "stats" => self.stats = parse_bool(value).ok_or_else(|| bad(BOOL_HELP))?,
            "stats-json" => self.stats_json = non_empty_path(value),
            "compression" => self.compression = parse_bool(value).ok_or_else(|| bad(BOOL_HELP))?,
            "async-backend" => {
                self.async_backend = parse_bool(value).ok_or_else(|| bad(BOOL_HELP))?
            }
            "read-only" => self.read_only = parse_bool(value).ok_or_else(|| bad(BOOL_HELP))?,
            "error-rate" => {
                self.error_rate = value
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|r| (0.0..=1.0).contains(r))
                    .ok_or_else(|| bad("expected a number from 0.0 to 1.0"))?
            }
            "max-size" => {
                self.max_size = parse_size(value)
                    .ok_or_else(|| bad("expected a size such as 10GiB, 500MB or 1048576"))?
            }
            "close-timeout" => {
                self.close_timeout = humantime::parse_duration(value.trim())
                    .map_err(|_| bad("expected a duration such as 30s or 2m"))?
            }
            "remote-dir" => self.remote_dir = non_empty_path(value),
            "prefetch" => self.prefetch = parse_bool(value).ok_or_else(|| bad(BOOL_HELP))?,
            "manifest-key" => self.manifest_key = non_empty(value),
            "manifest-fallback" => {
                self.manifest_fallback = Some(
                    value
                        .split(',')
                        .map(str::trim)
                        .filter(|v| !v.is_empty())
                        .map(String::from)
                        .collect(),
                )
            }
            "prefetch-concurrency" => {
                self.prefetch_concurrency = value
                    .trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=256).contains(n))
                    .ok_or_else(|| bad("expected a whole number from 1 to 256"))?
            }
            "publish" => self.publish = Some(parse_bool(value).ok_or_else(|| bad(BOOL_HELP))?),
            "aws-region" => self.aws.region = non_empty(value),
            "aws-access-key-id" => self.aws.access_key_id = non_empty(value).map(Secret),
            "aws-secret-access-key" => self.aws.secret_access_key = non_empty(value).map(Secret),
            "aws-session-token" => self.aws.session_token = non_empty(value).map(Secret),
            "aws-endpoint-url-s3" => self.aws.endpoint_url = non_empty(value),
            "aws-s3-use-path-style" => {
                self.aws.force_path_style = parse_bool(value).ok_or_else(|| bad(BOOL_HELP))?
            }
            other => unreachable!("setting {other} has no parser"),
        }
        self.origins.push((setting.key, origin));
        Ok(())
    }

    /// Settings that can only be checked together.
    fn validate(&self) -> Result<()> {
        if self.remote_dir.is_some() && self.backend != BackendKind::Disk {
            return Err(Error::Config(format!(
                "remote-dir (from {}) is for -backend disk; backend {} has its own bucket",
                self.origin("remote-dir"),
                self.backend.name()
            )));
        }
        let keys = [&self.aws.access_key_id, &self.aws.secret_access_key];
        if self.http.username.is_some() != self.http.password.is_some() {
            return Err(Error::Config(format!(
                "basic auth needs both {ENV_PREFIX}HTTP_USERNAME and {ENV_PREFIX}HTTP_PASSWORD"
            )));
        }
        if self.http.token.is_some() && self.http.username.is_some() {
            return Err(Error::Config(format!(
                "{ENV_PREFIX}HTTP_TOKEN and basic auth ({ENV_PREFIX}HTTP_USERNAME) are exclusive"
            )));
        }
        if keys.iter().filter(|k| k.is_some()).count() == 1 {
            return Err(Error::Config(format!(
                "static S3 credentials need both {ENV_PREFIX}AWS_ACCESS_KEY_ID and \
                 {ENV_PREFIX}AWS_SECRET_ACCESS_KEY"
            )));
        }
        if !self.backend.compiled_in() {
            return Err(Error::Config(
                self.backend.compiled_out(Some(self.origin("backend"))),
            ));
        }
        match self.backend {
            BackendKind::Disk => {}
            BackendKind::S3 | BackendKind::Gcs | BackendKind::Azure | BackendKind::Http => {
                let (bucket, key, what) = match self.backend {
                    BackendKind::S3 => (&self.s3_bucket, "s3-bucket", "a bucket"),
                    BackendKind::Gcs => (&self.gcs_bucket, "gcs-bucket", "a bucket"),
                    BackendKind::Azure => (&self.azure_container, "azure-container", "a container"),
                    _ => (&self.http_url, "http-url", "a base URL"),
                };
                if bucket.is_empty() {
                    return Err(Error::Config(format!(
                        "backend {} (from {}) needs {what}: set -{key} or {}",
                        self.backend.name(),
                        self.origin("backend"),
                        env_name(key),
                    )));
                }
            }
        }
        Ok(())
    }
}

impl BackendKind {
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Disk => "disk",
            BackendKind::S3 => "s3",
            BackendKind::Gcs => "gcs",
            BackendKind::Azure => "azure",
            BackendKind::Http => "http",
        }
    }

    /// Whether this build has the store: each one but `disk` is a cargo feature of its name.
    pub fn compiled_in(self) -> bool {
        match self {
            BackendKind::Disk => true,
            BackendKind::S3 => cfg!(feature = "s3"),
            BackendKind::Gcs => cfg!(feature = "gcs"),
            BackendKind::Azure => cfg!(feature = "azure"),
            BackendKind::Http => cfg!(feature = "http"),
        }
    }

    /// The error for a store this build does not have, naming the feature that adds it.
    pub fn compiled_out(self, origin: Option<&str>) -> String {
        let name = self.name();
        let from = origin.map(|o| format!(" (from {o})")).unwrap_or_default();
        format!(
            "backend {name}{from} is not in this build of gobuildcache: it needs the cargo \
             feature \"{name}\" (on by default)"
        )
    }
}

impl ConfigBuilder {
    /// Also read the `GOBUILDCACHE_*` / plain environment variables (below explicit values).
    pub fn env(mut self, read: bool) -> Self {
        self.read_env = read;
        self
    }

    /// An explicit setting from a command-line flag: `key` is the flag name without dashes.
    pub fn flag(mut self, key: &str, value: &str) -> Self {
        self.explicit
            .push((key.to_string(), value.to_string(), format!("flag -{key}")));
        self
    }

    /// An explicit setting from a JSON config object (the C ABI and the Go package).
    pub fn json(mut self, json: &str) -> Result<Self> {
        if json.trim().is_empty() {
            return Ok(self);
        }
        let value: serde_json::Value = serde_json::from_str(json)
            .map_err(|e| Error::Config(format!("config JSON is invalid: {e}")))?;
        let obj = value
            .as_object()
            .ok_or_else(|| Error::Config("config JSON must be an object".into()))?;
        for (k, v) in obj {
            let s = match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Bool(b) => b.to_string(),
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Null => continue,
                _ => {
                    return Err(Error::Config(format!(
                        "config JSON key {k:?}: expected a string, number or boolean"
                    )))
                }
            };
            self.explicit
                .push((k.clone(), s, format!("config key {k:?}")));
        }
        Ok(self)
    }

    pub fn build(self) -> Result<Config> {
        self.build_with_env(&|k| std::env::var(k).ok())
    }

    /// As [`build`](Self::build), with the environment given as a lookup function (tests).
    pub fn build_with_env(self, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Config> {
        let mut cfg = Config::default();
        if self.read_env {
            for setting in SETTINGS {
                let plain = setting.kind != Kind::Secret;
                if let Some((var, value)) = read_env(setting.env, plain, lookup) {
                    cfg.set(setting.key, &value, var)?;
                }
            }
        }
        for (key, value, origin) in self.explicit {
            cfg.set(&key, &value, origin)?;
        }
        cfg.validate()?;
        Ok(cfg)
    }
}

/// First non-empty of `GOBUILDCACHE_K`, then (if `plain`) `K`, for each key in order.
fn read_env(
    keys: &[&str],
    plain: bool,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Option<(String, String)> {
    keys.iter()
        .flat_map(|k| {
            [
                Some(format!("{ENV_PREFIX}{k}")),
                plain.then(|| k.to_string()),
            ]
        })
        .flatten()
        .find_map(|var| lookup(&var).filter(|v| !v.is_empty()).map(|v| (var, v)))
}

/// The prefixed environment name of a setting, for messages.
pub fn env_name(key: &str) -> String {
    SETTINGS
        .iter()
        .find(|s| s.key == key)
        .map(|s| format!("{ENV_PREFIX}{}", s.env[0]))
        .unwrap_or_default()
}

const BOOL_HELP: &str = "expected true/false, 1/0, yes/no or on/off";

pub fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "t" | "yes" | "y" | "on" => Some(true),
        "0" | "false" | "f" | "no" | "n" | "off" => Some(false),
        _ => None,
    }
}

/// `1048576`, `500MB`, `10GiB`, `1.5G` (bare K/M/G/T are binary, as `du` and Go's tools use them).
pub fn parse_size(v: &str) -> Option<u64> {
    let v = v.trim();
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let num: f64 = num.parse().ok()?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "kb" => 1e3,
        "m" | "mib" => 1024.0 * 1024.0,
        "mb" => 1e6,
        "g" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "gb" => 1e9,
        "t" | "tib" => 1024.0f64.powi(4),
        "tb" => 1e12,
        _ => return None,
    };
    let bytes = num * mult;
    (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

fn non_empty(v: &str) -> Option<String> {
    (!v.is_empty()).then(|| v.to_string())
}

fn non_empty_path(v: &str) -> Option<PathBuf> {
    (!v.is_empty()).then(|| PathBuf::from(v))
}

/// `$XDG_CACHE_HOME/gobuildcache`, `~/.cache/gobuildcache`, `~/Library/Caches/gobuildcache`,
/// else the temp dir: the same places Go's own `os.UserCacheDir` uses.
pub fn default_cache_dir() -> PathBuf {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let base = if cfg!(target_os = "macos") {
        env("HOME").map(|h| h.join("Library/Caches"))
    } else if cfg!(windows) {
        env("LocalAppData")
    } else {
        env("XDG_CACHE_HOME")
            .filter(|p| p.is_absolute())
            .or_else(|| env("HOME").map(|h| h.join(".cache")))
    };
    base.filter(|p| p.is_absolute())
        .unwrap_or_else(std::env::temp_dir)
        .join("gobuildcache")
}

/// Makes a relative path absolute against the current directory: DiskPath must be absolute.
pub(crate) fn absolute(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).map_err(|e| Error::io_path("resolving", p, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn build(env: &[(&str, &str)], flags: &[(&str, &str)]) -> Result<Config> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut b = Config::builder().env(true);
        for (k, v) in flags {
            b = b.flag(k, v);
        }
        b.build_with_env(&|k| env.get(k).cloned())
    }

    /// The help's `[default: V]` is the default: setting V changes nothing. Defaults that
    /// are derived (a path, a name, a session kind) are described, not given, and skipped.
    #[test]
    fn help_states_the_defaults() {
        let derived = [
            "cache-dir",
            "lock-dir",
            "manifest-key",
            "manifest-fallback",
            "publish",
            "azure-storage-endpoint",
        ];
        let mut checked = 0;
        for s in SETTINGS {
            let Some(v) = s.help.split("[default: ").nth(1) else {
                continue;
            };
            if derived.contains(&s.key) {
                continue;
            }
            let v = v.trim_end_matches(']');
            let mut c = build(&[], &[(s.key, v)]).unwrap_or_else(|e| panic!("{}: {e}", s.key));
            c.origins.clear();
            let mut d = build(&[], &[]).unwrap();
            d.origins.clear();
            assert_eq!(format!("{c:?}"), format!("{d:?}"), "-{} {v}", s.key);
            checked += 1;
        }
        assert!(checked >= 15, "{checked}");
    }

    #[test]
    fn defaults() {
        let c = build(&[], &[]).unwrap();
        assert_eq!(c.backend, BackendKind::Disk);
        assert_eq!(c.s3_prefix, "gobuildcache/");
        assert!(c.stats && c.compression && c.async_backend && !c.read_only && !c.debug);
        assert_eq!(c.max_size, 10 << 30);
        assert_eq!(c.lock_type, LockType::Fslock);
        assert!(c.cache_dir.ends_with("gobuildcache"));
        assert_eq!(c.lock_dir(), c.cache_dir.join("locks"));
    }

    #[test]
    fn prefixed_env_wins_and_empty_falls_through() {
        let c = build(
            &[("GOBUILDCACHE_CACHE_DIR", "/a"), ("CACHE_DIR", "/b")],
            &[],
        )
        .unwrap();
        assert_eq!(c.cache_dir, PathBuf::from("/a"));
        assert_eq!(c.origin("cache-dir"), "GOBUILDCACHE_CACHE_DIR");
        let c = build(&[("GOBUILDCACHE_CACHE_DIR", ""), ("CACHE_DIR", "/b")], &[]).unwrap();
        assert_eq!(c.cache_dir, PathBuf::from("/b"));
        // BACKEND_TYPE is read before BACKEND, whatever the prefix.
        let c = build(
            &[
                ("BACKEND", "s3"),
                ("BACKEND_TYPE", "disk"),
                ("S3_BUCKET", "b"),
            ],
            &[],
        )
        .unwrap();
        assert_eq!(c.backend, BackendKind::Disk);
        let c = build(&[("GOBUILDCACHE_PRINT_STATS", "false")], &[]).unwrap();
        assert!(!c.stats);
    }

    #[test]
    fn flags_beat_env() {
        let c = build(
            &[("GOBUILDCACHE_DEBUG", "false"), ("MAX_SIZE", "1GiB")],
            &[("debug", "true"), ("max-size", "500MB")],
        )
        .unwrap();
        assert!(c.debug);
        assert_eq!(c.max_size, 500_000_000);
        assert_eq!(c.origin("max-size"), "flag -max-size");
    }

    #[test]
    fn bad_values_name_their_source() {
        let e = build(&[("GOBUILDCACHE_ERROR_RATE", "abc")], &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("GOBUILDCACHE_ERROR_RATE") && e.contains("abc"),
            "{e}"
        );
        let e = build(&[("ERROR_RATE", "1.5")], &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("ERROR_RATE"), "{e}");
        let e = build(&[], &[("backend", "ftp")]).unwrap_err().to_string();
        assert!(e.contains("flag -backend") && e.contains("ftp"), "{e}");
        let e = build(&[("GOBUILDCACHE_DEBUG", "maybe")], &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("GOBUILDCACHE_DEBUG"), "{e}");
        if cfg!(feature = "s3") {
            let e = build(&[("GOBUILDCACHE_BACKEND", "s3")], &[])
                .unwrap_err()
                .to_string();
            assert!(e.contains("s3-bucket"), "{e}");
        }
        let e = build(&[], &[("no-such", "1")]).unwrap_err().to_string();
        assert!(e.contains("no-such"), "{e}");
    }

    #[test]
    fn a_compiled_out_store_is_one_line_naming_its_feature() {
        for (name, kind, bucket) in [
            ("s3", BackendKind::S3, "s3-bucket"),
            ("gcs", BackendKind::Gcs, "gcs-bucket"),
        ] {
            let r = build(&[("GOBUILDCACHE_BACKEND", name)], &[(bucket, "b")]);
            if kind.compiled_in() {
                assert_eq!(r.unwrap().backend, kind);
            } else {
                let e = r.unwrap_err().to_string();
                assert!(
                    e.contains(&format!("cargo feature \"{name}\""))
                        && e.contains("GOBUILDCACHE_BACKEND")
                        && !e.contains('\n'),
                    "{e}"
                );
            }
        }
        assert_eq!(BackendKind::S3.compiled_in(), cfg!(feature = "s3"));
        assert_eq!(BackendKind::Gcs.compiled_in(), cfg!(feature = "gcs"));
        assert!(BackendKind::Disk.compiled_in());
    }

    #[test]
    fn json_keys_are_the_flag_names() {
        let c = Config::builder()
            .json(r#"{"cache-dir": "/x", "stats": false, "error-rate": 0.5, "s3-prefix": ""}"#)
            .unwrap()
            .build_with_env(&|_| None)
            .unwrap();
        assert_eq!(c.cache_dir, PathBuf::from("/x"));
        assert!(!c.stats);
        assert_eq!(c.error_rate, 0.5);
        assert_eq!(c.s3_prefix, "");
        assert!(Config::builder().json("[1]").is_err());
        assert!(Config::builder().json("{").is_err());
        let e = Config::builder()
            .json(r#"{"stats": "perhaps"}"#)
            .unwrap()
            .build_with_env(&|_| None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("config key \"stats\""), "{e}");
    }

    #[test]
    fn aws_credentials_are_prefixed_only_and_never_printed() {
        let c = build(
            &[
                ("AWS_ACCESS_KEY_ID", "plain-is-for-the-sdk"),
                ("GOBUILDCACHE_AWS_ACCESS_KEY_ID", "AKIDTEST"),
                ("GOBUILDCACHE_AWS_SECRET_ACCESS_KEY", "sekrit-value"),
                ("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9000"),
                ("AWS_S3_USE_PATH_STYLE", "true"),
            ],
            &[],
        )
        .unwrap();
        assert_eq!(c.aws.access_key_id.as_ref().unwrap().expose(), "AKIDTEST");
        assert_eq!(c.aws.endpoint_url.as_deref(), Some("http://127.0.0.1:9000"));
        assert!(c.aws.force_path_style);
        let dbg = format!("{c:?}");
        assert!(
            !dbg.contains("sekrit") && !dbg.contains("AKIDTEST"),
            "{dbg}"
        );
        let c = build(
            &[("AWS_ACCESS_KEY_ID", "x"), ("AWS_SECRET_ACCESS_KEY", "y")],
            &[],
        )
        .unwrap();
        assert!(
            c.aws.access_key_id.is_none(),
            "the SDK's default chain reads these"
        );
        let e = build(&[("GOBUILDCACHE_AWS_ACCESS_KEY_ID", "only-half")], &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("SECRET_ACCESS_KEY") && !e.contains("only-half"),
            "{e}"
        );
    }

    #[test]
    fn endpoint_credentials_never_printed() {
        let c = build(
            &[(
                "GOBUILDCACHE_AWS_ENDPOINT_URL_S3",
                "https://key:pw-secret@s3.example:9000/base?X-Amz-Signature=sig-secret#frag",
            )],
            &[],
        )
        .unwrap();
        let dbg = format!("{c:?}");
        assert!(dbg.contains("https://s3.example:9000/base"), "{dbg}");
        assert!(
            !dbg.contains("pw-secret") && !dbg.contains("sig-secret") && !dbg.contains("frag"),
            "{dbg}"
        );
        assert_eq!(redact_url("h:1/p?q"), "h:1/p");
        assert_eq!(redact_url("http://u@h"), "http://h");
    }

    // Selecting a store validates that it is compiled in.
    #[cfg(all(feature = "azure", feature = "http"))]
    #[test]
    fn azure_and_http_settings() {
        let c = build(
            &[
                ("GOBUILDCACHE_BACKEND", "azure"),
                ("AZURE_CONTAINER", "plain"),
                ("GOBUILDCACHE_AZURE_CONTAINER", "ci"),
                ("AZURE_STORAGE_CONNECTION_STRING", "plain-is-for-the-sdk"),
                (
                    "GOBUILDCACHE_AZURE_STORAGE_SAS_TOKEN",
                    "sv=1&sig=sas-secret",
                ),
                ("GOBUILDCACHE_HTTP_TOKEN", "bearer-secret"),
            ],
            &[("azure-prefix", "team/")],
        )
        .unwrap();
        assert_eq!(c.backend, BackendKind::Azure);
        assert_eq!(c.azure_container, "ci");
        assert_eq!(c.remote_prefix(), Some("team/"));
        assert!(c.azure.connection_string.is_none(), "prefixed form only");
        assert_eq!(
            c.azure.sas_token.as_ref().unwrap().expose(),
            "sv=1&sig=sas-secret"
        );
        let dbg = format!("{c:?}");
        assert!(
            !dbg.contains("sas-secret") && !dbg.contains("bearer-secret"),
            "{dbg}"
        );

        let c = build(
            &[("GOBUILDCACHE_HTTP_URL", "https://h/dav/")],
            &[("backend", "http")],
        )
        .unwrap();
        assert_eq!(c.backend, BackendKind::Http);
        assert_eq!(c.remote_prefix(), Some(DEFAULT_PREFIX));
        let e = build(&[("GOBUILDCACHE_HTTP_USERNAME", "u")], &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("HTTP_PASSWORD"), "{e}");
        assert!(SETTINGS
            .iter()
            .filter(|s| s.key.starts_with("http-") || s.key.starts_with("azure-storage-"))
            .filter(|s| s.key.contains("token")
                || s.key.contains("password")
                || s.key.contains("connection"))
            .all(|s| s.kind == Kind::Secret));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1048576"), Some(1 << 20));
        assert_eq!(parse_size("10GiB"), Some(10 << 30));
        assert_eq!(parse_size("10G"), Some(10 << 30));
        assert_eq!(parse_size("500MB"), Some(500_000_000));
        assert_eq!(parse_size("1.5k"), Some(1536));
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_size("-1"), None);
        assert_eq!(parse_size("10 parsecs"), None);
    }
}
