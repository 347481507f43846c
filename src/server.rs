//! Drives a [`Cache`] over the GOCACHEPROG protocol on any byte streams.
//!
//! The calling thread reads requests as fast as they arrive and answers each one as soon as
//! it is done, writing the response itself and flushing only when no more input is waiting
//! (so a burst of requests is answered in one write). Local requests take microseconds,
//! which is why they are handled inline: handing them to another thread would cost more in
//! wake-ups than the work (measured: two futex calls per get). A local miss that must ask
//! the remote tier becomes a task on the cache's runtime and is answered, under the same
//! output lock, whenever it completes, in any order.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::protocol::body::{read_body, read_line, BodyError, Line};
use crate::protocol::{parse_request, BadRequest, Command, Request, Response, MAX_LINE};
use crate::{Cache, Error, Result};

/// How a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// The peer sent `close` and got its answer.
    Closed,
    /// The input ended without `close` (the go command died or closed the pipe).
    Eof,
}

/// Serves one GOCACHEPROG session: handshake, requests until `close` or end of input.
///
/// An `Err` means the input could not be trusted any more (a line that is not a request, a
/// stream cut inside a body): the caller should report it and exit non-zero so the go
/// command fails at once instead of waiting.
pub fn serve<R: Read, W: Write + Send + 'static>(
    cache: &Cache,
    input: R,
    output: W,
) -> Result<Ended> {
    // A go command's session: its flush publishes the warm start.
    cache.publish_warm_start();
    let mut reader = BufReader::with_capacity(256 * 1024, input);
    let out = Arc::new(Mutex::new(Output {
        w: BufWriter::with_capacity(64 * 1024, output),
        failed: None,
    }));
    let mut session = Session {
        cache,
        out: Arc::clone(&out),
        seen: HashSet::new(),
        line: Vec::with_capacity(512),
        tasks: Vec::new(),
    };
    session.send(&Response::hello());
    let res = session.run(&mut reader);
    session.wait_for_tasks();
    drop(session);
    let mut out = lock(&out);
    let flushed = out.flush();
    match (res, flushed) {
        (Err(e), _) => Err(e),
        (Ok(Ended::Closed), Err(e)) => Err(Error::io("writing responses", e)),
        (Ok(end), _) => Ok(end),
    }
}

/// The response stream, shared by the reading thread and remote-get tasks.
struct Output<W: Write> {
    w: BufWriter<W>,
    /// After a write error (the peer went away) responses are dropped; input is still read
    /// to its end so the session finishes normally.
    failed: Option<std::io::Error>,
}

impl<W: Write> Output<W> {
    fn send(&mut self, r: &Response) {
        if self.failed.is_some() {
            return;
        }
        let mut buf = Vec::with_capacity(256);
        r.encode_into(&mut buf);
        if let Err(e) = self.w.write_all(&buf) {
            tracing::debug!("writing responses: {e}");
            self.failed = Some(e);
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if let Some(e) = &self.failed {
            return Err(std::io::Error::new(e.kind(), e.to_string()));
        }
        if let Err(e) = self.w.flush() {
            tracing::debug!("writing responses: {e}");
            let copy = std::io::Error::new(e.kind(), e.to_string());
            self.failed = Some(e);
            return Err(copy);
        }
        Ok(())
    }
}

type Shared<W> = Arc<Mutex<Output<W>>>;

fn lock<W: Write>(out: &Shared<W>) -> std::sync::MutexGuard<'_, Output<W>> {
    out.lock().unwrap_or_else(|p| p.into_inner())
}

struct Session<'c, W: Write + Send + 'static> {
    cache: &'c Cache,
    out: Shared<W>,
    /// IDs answered so far: the go command treats a repeated response ID as fatal.
    seen: HashSet<i64>,
    line: Vec<u8>,
    /// Remote gets in flight.
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl<W: Write + Send + 'static> Session<'_, W> {
    fn send(&self, r: &Response) {
        lock(&self.out).send(r);
    }

    /// Lets every remote get finish and answer.
    fn wait_for_tasks(&mut self) {
        let tasks = std::mem::take(&mut self.tasks);
        if let Some(rt) = self.cache.runtime() {
            crate::cache::block_on(rt, async {
                for t in tasks {
                    let _ = t.await;
                }
            });
        }
    }

    fn run<R: Read>(&mut self, reader: &mut BufReader<R>) -> Result<Ended> {
        loop {
            if reader.buffer().is_empty() {
                // About to wait for input: whatever is answered goes out now.
                let _ = lock(&self.out).flush();
            }
            let mut line = std::mem::take(&mut self.line);
            let got = read_line(reader, &mut line, MAX_LINE)
                .map_err(|e| Error::io("reading requests", e));
            let got = got?;
            let req = match got {
                Line::Eof => return Ok(Ended::Eof),
                Line::TooLong(n) => {
                    return Err(Error::Protocol(format!(
                        "request line of {n} bytes is longer than the {MAX_LINE}-byte limit"
                    )))
                }
                Line::Line if line.trim_ascii().is_empty() => {
                    self.line = line;
                    continue;
                }
                Line::Line => parse_request(line.trim_ascii()),
            };
            self.line = line;
            let req = match req {
                Ok(r) => r,
                Err(bad) => {
                    self.bad_request(reader, bad)?;
                    continue;
                }
            };
            if !self.seen.insert(req.id) {
                let bad = BadRequest {
                    id: Some(req.id),
                    body_size: body_size_of(&req),
                    message: format!("duplicate request ID {}", req.id),
                };
                self.bad_request(reader, bad)?;
                continue;
            }
            match req.command {
                Command::Get => self.get(&req),
                Command::Put => self.put(reader, &req)?,
                Command::Close => {
                    // Finish what must be finished: pending remote gets, then uploads (up
                    // to -close-timeout), then the report, then the answer.
                    let closing = std::time::Instant::now();
                    self.wait_for_tasks();
                    self.cache.flush();
                    self.cache.note_close(closing.elapsed());
                    if let Err(e) = self.cache.report() {
                        self.cache.warn_once("stats", &e.to_string());
                    }
                    self.send(&Response::closed(req.id));
                    return Ok(Ended::Closed);
                }
                Command::Other(ref c) => {
                    let bad = BadRequest {
                        id: Some(req.id),
                        body_size: 0,
                        message: format!("unknown command {c:?}"),
                    };
                    self.bad_request(reader, bad)?;
                }
            }
        }
    }

    /// Answers a bad request with `Err` when it has an ID; otherwise the stream is lost.
    fn bad_request<R: BufRead>(&mut self, reader: &mut R, bad: BadRequest) -> Result<()> {
        self.cache.note_protocol_error(&bad.message);
        if bad.body_size > 0 {
            self.skip_body(reader, bad.body_size)?;
        }
        match bad.id {
            Some(id) => {
                self.send(&Response::error(id, bad.message));
                Ok(())
            }
            None => Err(Error::Protocol(bad.message)),
        }
    }

    /// Consumes a body we will not store, keeping the stream in sync.
    fn skip_body<R: BufRead>(&mut self, reader: &mut R, size: i64) -> Result<()> {
        match read_body(reader, &mut std::io::sink(), size as u64) {
            Err(BodyError::Truncated(m)) => Err(Error::Protocol(format!(
                "input ended inside a put body: {m}"
            ))),
            _ => Ok(()),
        }
    }

    fn get(&mut self, req: &Request) {
        let action = match req.action_id() {
            Ok(a) => a,
            Err(m) => {
                self.cache.note_protocol_error(&m);
                return self.send(&Response::error(req.id, m));
            }
        };
        let start = Instant::now();
        let resp = match self.cache.get_local(&action) {
            Ok(Some(entry)) => Response::hit(req.id, &entry),
            Ok(None) if self.cache.has_remote() => {
                return self.spawn_remote_get(req.id, action, start)
            }
            Ok(None) => Response::miss(req.id),
            Err(e) => Response::error(req.id, e.to_string()),
        };
        self.send(&resp);
    }

    fn spawn_remote_get(&mut self, id: i64, action: crate::ActionId, start: Instant) {
        let Some(rt) = self.cache.runtime() else {
            return self.send(&Response::miss(id));
        };
        let cache = self.cache.clone();
        let out = Arc::clone(&self.out);
        let task = rt.spawn(async move {
            let resp = match cache.get_remote(action, start).await {
                Some(entry) => Response::hit(id, &entry),
                None => Response::miss(id),
            };
            let mut out = lock(&out);
            out.send(&resp);
            let _ = out.flush();
        });
        if self.tasks.len() >= 1024 {
            self.tasks.retain(|t| !t.is_finished());
        }
        self.tasks.push(task);
    }

    fn put<R: BufRead>(&mut self, reader: &mut R, req: &Request) -> Result<()> {
        let started = Instant::now();
        let size = req.body_size;
        let ids = req.action_id().and_then(|a| Ok((a, req.output_id()?)));
        let (action, output) = match (ids, size) {
            (_, s) if s < 0 => {
                let m = format!("negative BodySize {s}");
                self.cache.note_protocol_error(&m);
                self.send(&Response::error(req.id, m));
                return Ok(());
            }
            (Ok(ids), _) => ids,
            (Err(m), _) => {
                let bad = BadRequest {
                    id: Some(req.id),
                    body_size: size,
                    message: m,
                };
                return self.bad_request(reader, bad);
            }
        };
        let mut w = match self.cache.begin_put() {
            Ok(w) => w,
            Err(e) => {
                if size > 0 {
                    self.skip_body(reader, size)?;
                }
                self.send(&Response::error(req.id, e.to_string()));
                return Ok(());
            }
        };
        if size > 0 {
            match read_body(reader, &mut w, size as u64) {
                Ok(_) => {}
                Err(BodyError::Truncated(m)) => {
                    return Err(Error::Protocol(format!(
                        "input ended inside the body of put {}: {m}",
                        req.id
                    )))
                }
                Err(e) => {
                    // Nothing is stored: dropping the writer removes its temp file.
                    drop(w);
                    let m = e.to_string();
                    self.cache.note_protocol_error(&m);
                    self.send(&Response::error(req.id, m));
                    return Ok(());
                }
            }
        }
        let resp = match w.commit(&action, &output, Some(size as u64)) {
            Ok(entry) => Response::put_done(req.id, &entry),
            Err(e) => Response::error(req.id, e.to_string()),
        };
        self.send(&resp);
        tracing::trace!(id = req.id, elapsed = ?started.elapsed(), "put answered");
        Ok(())
    }
}

fn body_size_of(req: &Request) -> i64 {
    if req.command == Command::Put {
        req.body_size
    } else {
        0
    }
}

#[cfg(test)]
mod tests;
