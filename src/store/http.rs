//! A plain HTTP server as the shared store (feature `http`): `GET`, `PUT` and `DELETE` of
//! `<url>/<prefix><key>`, listing through WebDAV (`PROPFIND`, `Depth: 1`), parent collections
//! made with `MKCOL` on demand. Works with nginx or Apache WebDAV, `rclone serve webdav`,
//! wsgidav (what the tests run), or any server taking GET/PUT/DELETE (then without
//! `clear-remote` and the warm start's listing, which need PROPFIND).
//!
//! Written on the reqwest client the GCS store uses, not on `object_store`'s `HttpStore`:
//! that one holds a whole upload in memory (packs are up to 512 MiB), refuses create-only
//! puts, and lists with `Depth: infinity`, which nginx and many WebDAV servers refuse.
//!
//! Create-only: each put carries `If-None-Match: *`, and a 412 is
//! [`PutOutcome::AlreadyExists`]. A server that ignores the header (nginx's dav module, for
//! one) overwrites instead. What remains then: every object is self-describing and verified
//! on read (header, OutputID, SHA-256), so a lost race leaves another valid object for the
//! same key, and a torn write is a miss, never a wrong build output. Warm-start manifests and
//! packs have fresh names, so they never race.
//!
//! Credentials: a bearer token (`GOBUILDCACHE_HTTP_TOKEN`) or basic auth
//! (`GOBUILDCACHE_HTTP_USERNAME` / `GOBUILDCACHE_HTTP_PASSWORD`), prefixed variables only, sent
//! as a header marked sensitive; a URL with credentials in it is refused. HTTPS uses the
//! system's roots.

use std::collections::HashSet;
use std::io;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::TryStreamExt;
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, IF_NONE_MATCH};
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};

use super::error_chain as chain;
use super::transport_error;
use super::{Backend, BackendError, BackendResult, BodyReader, ObjectInfo, Payload, PutOutcome};
use crate::config::{redact_url, HttpSettings};
use crate::Error;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A whole call, or for a get the time to the response headers.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// An upload gets `REQUEST_TIMEOUT` plus its size at this rate.
const MIN_UPLOAD_RATE: u64 = 1024 * 1024;
const PROPFIND_BODY: &str = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\
<D:propfind xmlns:D=\"DAV:\"><D:prop><D:resourcetype/><D:getcontentlength/></D:prop></D:propfind>";

pub struct HttpBackend {
    /// The base URL, its path ending in `/`.
    base: Url,
    http: super::LazyClient,
    auth: Option<HeaderValue>,
    /// Collections made (or found) by MKCOL, so each is made once per process.
    made: Mutex<HashSet<String>>,
}

impl HttpBackend {
    /// A backend for the base URL `url`. Makes no network call.
    pub fn new(url: &str, s: &HttpSettings) -> Result<HttpBackend, Error> {
        let shown = redact_url(url);
        let mut base = Url::parse(url.trim()).map_err(|_| {
            Error::Config(format!(
                "invalid -http-url {shown}: expected http(s)://host[:port]/path"
            ))
        })?;
        if !matches!(base.scheme(), "http" | "https") || base.host().is_none() {
            return Err(Error::Config(format!(
                "invalid -http-url {shown}: expected an http or https URL"
            )));
        }
        if !base.username().is_empty() || base.password().is_some() || base.query().is_some() {
            return Err(Error::Config(format!(
                "-http-url {shown} must not carry credentials or a query: give them in \
                 GOBUILDCACHE_HTTP_TOKEN or GOBUILDCACHE_HTTP_USERNAME/_PASSWORD"
            )));
        }
        base.set_fragment(None);
        if !base.path().ends_with('/') {
            let p = format!("{}/", base.path());
            base.set_path(&p);
        }
        let auth = match (&s.token, &s.username, &s.password) {
            (Some(t), _, _) => Some(format!("Bearer {}", t.expose())),
            (None, Some(u), Some(p)) => {
                use base64::Engine;
                let pair = format!("{}:{}", u.expose(), p.expose());
                Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                ))
            }
            _ => None,
        };
        let auth = match auth {
            None => None,
            Some(v) => {
                let mut v = HeaderValue::try_from(v).map_err(|_| {
                    Error::Config("the HTTP credentials hold characters a header cannot".into())
                })?;
                v.set_sensitive(true);
                Some(v)
            }
        };
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .retry(reqwest::retry::never())
            // A redirect could take the Authorization header elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("gobuildcache/", env!("CARGO_PKG_VERSION")));
        Ok(HttpBackend {
            base,
            http: super::LazyClient::new(http),
            auth,
            made: Mutex::new(HashSet::new()),
        })
    }

    /// The URL of `key` (a collection when it ends in `/`), each segment percent-encoded.
    fn url(&self, key: &str) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut segs) = url.path_segments_mut() {
            segs.pop_if_empty().extend(key.split('/'));
        }
        url
    }

    fn what(&self, op: &str, key: &str) -> String {
        format!("http {op} {}{key}", self.base)
    }

    fn request(&self, method: Method, key: &str) -> BackendResult<RequestBuilder> {
        let req = self.http.get()?.request(method, self.url(key));
        Ok(match &self.auth {
            Some(v) => req.header(AUTHORIZATION, v.clone()),
            None => req,
        })
    }

    async fn send(
        &self,
        req: RequestBuilder,
        what: &str,
        limit: Duration,
    ) -> BackendResult<Response> {
        match tokio::time::timeout(limit, req.send()).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(transport_error(what, e)),
            Err(_) => Err(BackendError::Transient(format!(
                "{what}: timed out after {limit:?}"
            ))),
        }
    }

    async fn put_once(&self, key: &str, payload: &Payload) -> BackendResult<Response> {
        let what = self.what("put", key);
        let size = payload.size();
        let file = payload.reader(&what).await?;
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(
            file,
            256 * 1024,
        ));
        let limit = REQUEST_TIMEOUT + Duration::from_secs(size / MIN_UPLOAD_RATE);
        let req = self
            .request(Method::PUT, key)?
            .header(IF_NONE_MATCH, "*")
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, size)
            .timeout(limit)
            .body(body);
        self.send(req, &what, limit).await
    }

    /// Makes every collection above `key`, top down (WebDAV answers a PUT into a missing
    /// one with 409).
    async fn make_parents(&self, key: &str) -> BackendResult<()> {
        let mut dir = String::new();
        let parts: Vec<&str> = key.split('/').collect();
        for part in &parts[..parts.len().saturating_sub(1)] {
            dir.push_str(part);
            dir.push('/');
            if self.made.lock().map(|m| m.contains(&dir)).unwrap_or(false) {
                continue;
            }
            let what = self.what("mkcol", &dir);
            let req = self
                .request(Method::from_bytes(b"MKCOL").expect("a valid method"), &dir)?
                .timeout(REQUEST_TIMEOUT);
            let resp = self.send(req, &what, REQUEST_TIMEOUT).await?;
            match resp.status().as_u16() {
                // Made, or already there (405: MKCOL on an existing resource).
                200..=299 | 301 | 405 => {
                    let _ = resp.bytes().await;
                    if let Ok(mut m) = self.made.lock() {
                        m.insert(dir.clone());
                    }
                }
                _ => return Err(status_error(&what, resp).await),
            }
        }
        Ok(())
    }

    /// One `PROPFIND Depth: 1` of the collection `dir` (`""` is the base): its members as
    /// (key, collection?, size). `None` when the collection does not exist.
    async fn propfind(&self, dir: &str) -> BackendResult<Option<Vec<Member>>> {
        let what = self.what("list", dir);
        let req = self
            .request(
                Method::from_bytes(b"PROPFIND").expect("a valid method"),
                dir,
            )?
            .header("Depth", "1")
            .header(CONTENT_TYPE, "application/xml; charset=utf-8")
            .timeout(REQUEST_TIMEOUT)
            .body(PROPFIND_BODY);
        let resp = self.send(req, &what, REQUEST_TIMEOUT).await?;
        match resp.status() {
            StatusCode::NOT_FOUND => return Ok(None),
            StatusCode::METHOD_NOT_ALLOWED | StatusCode::NOT_IMPLEMENTED => {
                return Err(BackendError::Permanent(format!(
                    "{what}: the server does not list (no WebDAV PROPFIND); clear-remote and \
                     the warm start need a WebDAV server"
                )))
            }
            s if s.is_success() => {}
            _ => return Err(status_error(&what, resp).await),
        }
        let body = resp.bytes().await.map_err(|e| transport_error(&what, e))?;
        let members = parse_multistatus(&body).map_err(|e| {
            BackendError::Transient(format!("{what}: malformed PROPFIND answer: {e}"))
        })?;
        let base = percent_decode(self.base.path());
        Ok(Some(
            members
                .into_iter()
                .filter_map(|(href, collection, size)| {
                    let path = match Url::parse(&href) {
                        Ok(u) => u.path().to_string(),
                        Err(_) => href,
                    };
                    let path = percent_decode(&path);
                    let key = path.strip_prefix(&base)?.trim_end_matches('/').to_string();
                    (!key.is_empty() && format!("{key}/") != dir).then_some(Member {
                        key,
                        collection,
                        size,
                    })
                })
                .collect(),
        ))
    }

    /// Objects whose key starts with `prefix`, walking collections one level at a time;
    /// stops once it has more than `cap`.
    async fn walk(&self, prefix: &str, cap: usize) -> BackendResult<Vec<ObjectInfo>> {
        let top = prefix.rfind('/').map(|i| &prefix[..=i]).unwrap_or("");
        let mut dirs = vec![top.to_string()];
        let mut out = Vec::new();
        while let Some(dir) = dirs.pop() {
            let Some(members) = self.propfind(&dir).await? else {
                if dir.is_empty() {
                    return Err(BackendError::Permanent(format!(
                        "{}: the base URL does not exist (404)",
                        self.what("list", "")
                    )));
                }
                continue; // nothing stored under it yet
            };
            for m in members {
                if m.collection {
                    let sub = format!("{}/", m.key);
                    if sub.starts_with(prefix) || prefix.starts_with(&sub) {
                        dirs.push(sub);
                    }
                } else if m.key.starts_with(prefix) {
                    out.push(ObjectInfo {
                        key: m.key,
                        size: m.size,
                    });
                    if out.len() > cap {
                        return Ok(out);
                    }
                }
            }
        }
        Ok(out)
    }
}

struct Member {
    key: String,
    collection: bool,
    size: u64,
}

#[async_trait]
impl Backend for HttpBackend {
    fn name(&self) -> &'static str {
        "http"
    }

    /// The base URL without its final `/` (callers add `/<prefix>`).
    fn location(&self) -> String {
        self.base.as_str().trim_end_matches('/').to_string()
    }

    /// `PROPFIND Depth: 0` of the base: a missing base or refused credentials show here. A
    /// server without WebDAV passes (gets and puts may still work).
    async fn check(&self) -> BackendResult<()> {
        let what = format!("http check {}", self.base);
        let req = self
            .request(Method::from_bytes(b"PROPFIND").expect("a valid method"), "")?
            .header("Depth", "0")
            .header(CONTENT_TYPE, "application/xml; charset=utf-8")
            .timeout(REQUEST_TIMEOUT)
            .body(PROPFIND_BODY);
        let resp = self.send(req, &what, REQUEST_TIMEOUT).await?;
        match resp.status() {
            s if s.is_success() => {
                let _ = resp.bytes().await;
                Ok(())
            }
            StatusCode::METHOD_NOT_ALLOWED | StatusCode::NOT_IMPLEMENTED => Ok(()),
            StatusCode::NOT_FOUND => Err(BackendError::Permanent(format!(
                "{what}: the base URL does not exist (404)"
            ))),
            _ => Err(status_error(&what, resp).await),
        }
    }

    async fn get(&self, key: &str) -> BackendResult<Option<BodyReader>> {
        let what = self.what("get", key);
        let resp = self
            .send(self.request(Method::GET, key)?, &what, REQUEST_TIMEOUT)
            .await?;
        match resp.status() {
            s if s.is_success() => {}
            StatusCode::NOT_FOUND | StatusCode::GONE => return Ok(None),
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
        let mut resp = self.put_once(key, payload).await?;
        if resp.status() == StatusCode::CONFLICT && key.contains('/') {
            let _ = resp.bytes().await;
            self.make_parents(key).await?;
            resp = self.put_once(key, payload).await?;
        }
        match resp.status() {
            s if s.is_success() => {
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
        let req = self.request(Method::DELETE, key)?.timeout(REQUEST_TIMEOUT);
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
        let mut out = self.walk(prefix, usize::MAX).await?;
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn list_some(&self, prefix: &str, max: usize) -> BackendResult<(Vec<ObjectInfo>, bool)> {
        let mut out = self.walk(prefix, max).await?;
        let complete = out.len() <= max;
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out.truncate(max);
        Ok((out, complete))
    }
}

/// The `(href, is collection, content length)` of each `<response>` in a WebDAV multistatus
/// body, whatever the namespace prefixes.
fn parse_multistatus(body: &[u8]) -> Result<Vec<(String, bool, u64)>, String> {
    use quick_xml::events::Event;
    let mut r = quick_xml::Reader::from_reader(body);
    r.config_mut().trim_text(true);
    let mut out = Vec::new();
    let (mut href, mut collection, mut size) = (String::new(), false, 0u64);
    let mut field: Option<&'static str> = None;
    let mut text = String::new();
    let mut buf = Vec::new();
    loop {
        let ev = r.read_event_into(&mut buf).map_err(|e| e.to_string())?;
        match ev {
            Event::Start(e) | Event::Empty(e) if e.local_name().as_ref() == b"collection" => {
                collection = true;
            }
            Event::Start(e) => match e.local_name().as_ref() {
                b"response" => (href, collection, size) = (String::new(), false, 0),
                b"href" => (field, text) = (Some("href"), String::new()),
                b"getcontentlength" => (field, text) = (Some("len"), String::new()),
                _ => {}
            },
            Event::Text(t) if field.is_some() => {
                text.push_str(&t.decode().map_err(|e| e.to_string())?);
            }
            Event::GeneralRef(g) if field.is_some() => {
                if let Ok(Some(c)) = g.resolve_char_ref() {
                    text.push(c);
                } else {
                    text.push_str(match g.decode().map_err(|e| e.to_string())?.as_ref() {
                        "amp" => "&",
                        "lt" => "<",
                        "gt" => ">",
                        "quot" => "\"",
                        "apos" => "'",
                        _ => "",
                    });
                }
            }
            Event::End(e) => match e.local_name().as_ref() {
                b"href" | b"getcontentlength" => match field.take() {
                    Some("href") => href = text.trim().to_string(),
                    Some(_) => size = text.trim().parse().unwrap_or(0),
                    None => {}
                },
                b"response" if !href.is_empty() => {
                    out.push((std::mem::take(&mut href), collection, size));
                }
                _ => {}
            },
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    Ok(out)
}

/// `%XX` decoded; invalid escapes are kept as they are.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `what: HTTP <status>: <the body's first line, if text>`; never the request's headers.
async fn status_error(what: &str, mut resp: Response) -> BackendError {
    let status = resp.status();
    let body = super::error_body(&mut resp).await;
    let text = String::from_utf8_lossy(&body);
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    let msg = if line.is_empty() || line.starts_with('<') {
        format!("{what}: HTTP {status}")
    } else {
        format!(
            "{what}: HTTP {status}: {}",
            line.chars().take(200).collect::<String>()
        )
    };
    if super::is_transient_status(status) {
        BackendError::Transient(msg)
    } else {
        BackendError::Permanent(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    #[test]
    fn urls_encode_each_segment() {
        let b = HttpBackend::new("http://127.0.0.1:1/dav", &HttpSettings::default()).unwrap();
        assert_eq!(
            b.url("gobuildcache/a b/%x").as_str(),
            "http://127.0.0.1:1/dav/gobuildcache/a%20b/%25x"
        );
        assert_eq!(b.url("").as_str(), "http://127.0.0.1:1/dav/");
        assert_eq!(b.url("m/").as_str(), "http://127.0.0.1:1/dav/m/");
    }

    #[test]
    fn credentials_in_the_url_are_refused_unquoted() {
        for bad in [
            "http://user:pw-secret@h/x",
            "http://h/x?token=pw-secret",
            "ftp://h/x",
            "not a url",
        ] {
            let e = HttpBackend::new(bad, &HttpSettings::default())
                .err()
                .unwrap()
                .to_string();
            assert!(!e.contains("pw-secret"), "{e}");
        }
        let s = HttpSettings {
            token: Some(Secret::new("tok")),
            ..HttpSettings::default()
        };
        let b = HttpBackend::new("https://cache.example/", &s).unwrap();
        assert!(b.auth.as_ref().unwrap().is_sensitive());
    }

    #[test]
    fn multistatus_answers() {
        let body = br#"<?xml version="1.0" encoding="utf-8"?>
<d:multistatus xmlns:d="DAV:"><d:response><d:href>/dav/gobuildcache/</d:href>
<d:propstat><d:prop><d:resourcetype><d:collection/></d:resourcetype></d:prop></d:propstat></d:response>
<d:response><d:href>http://h/dav/gobuildcache/a%20b&amp;c</d:href><d:propstat><d:prop>
<d:resourcetype/><d:getcontentlength>12</d:getcontentlength></d:prop></d:propstat></d:response>
</d:multistatus>"#;
        let m = parse_multistatus(body).unwrap();
        assert_eq!(
            m,
            [
                ("/dav/gobuildcache/".to_string(), true, 0),
                ("http://h/dav/gobuildcache/a%20b&c".to_string(), false, 12)
            ]
        );
        assert_eq!(percent_decode("a%20b%2"), "a b%2");
        assert_eq!(percent_decode("%41%zz"), "A%zz");
    }
}
