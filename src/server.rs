//! Drives a [`Cache`] over the GOCACHEPROG protocol on any byte streams.
//!
//! The calling thread reads requests as fast as they arrive and answers each one as soon as
//! it is done; a second thread writes responses, flushing whenever it has no more queued, so
//! a slow reader of our output never stalls our input. Local requests take microseconds,
//! which is why they are handled inline rather than handed to a pool: a thread hop would
//! cost more than the work.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::sync::mpsc;
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
pub fn serve<R: Read, W: Write + Send>(cache: &Cache, input: R, output: W) -> Result<Ended> {
    let mut reader = BufReader::with_capacity(256 * 1024, input);
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    std::thread::scope(|s| {
        let writer = s.spawn(move || write_loop(rx, output));
        let mut session = Session {
            cache,
            tx,
            seen: HashSet::new(),
            line: Vec::with_capacity(512),
        };
        session.send(&Response::hello());
        let res = session.run(&mut reader);
        drop(session);
        let written = writer
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("response writer panicked")));
        match (res, written) {
            (Err(e), _) => Err(e),
            (Ok(Ended::Closed), Err(e)) => Err(Error::io("writing responses", e)),
            (Ok(end), _) => Ok(end),
        }
    })
}

fn write_loop<W: Write>(rx: mpsc::Receiver<Vec<u8>>, output: W) -> std::io::Result<()> {
    let mut out = BufWriter::with_capacity(64 * 1024, output);
    let mut failed = None;
    while let Ok(msg) = rx.recv() {
        if failed.is_some() {
            continue; // keep draining so the reader never blocks on us
        }
        let mut res = out.write_all(&msg);
        while res.is_ok() {
            match rx.try_recv() {
                Ok(more) => res = out.write_all(&more),
                Err(_) => break,
            }
        }
        if let Err(e) = res.and_then(|_| out.flush()) {
            tracing::debug!("writing responses: {e}");
            failed = Some(e);
        }
    }
    match failed {
        Some(e) => Err(e),
        None => out.flush(),
    }
}

struct Session<'c> {
    cache: &'c Cache,
    tx: mpsc::Sender<Vec<u8>>,
    /// IDs answered so far: the go command treats a repeated response ID as fatal.
    seen: HashSet<i64>,
    line: Vec<u8>,
}

impl Session<'_> {
    fn send(&self, r: &Response) {
        let mut buf = Vec::with_capacity(256);
        r.encode_into(&mut buf);
        // The writer only goes away after we do; a send error cannot happen.
        let _ = self.tx.send(buf);
    }

    fn run<R: BufRead>(&mut self, reader: &mut R) -> Result<Ended> {
        loop {
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
        let resp = match self.cache.get(&action) {
            Ok(Some(entry)) => Response::hit(req.id, &entry),
            Ok(None) => Response::miss(req.id),
            Err(e) => Response::error(req.id, e.to_string()),
        };
        self.send(&resp);
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
