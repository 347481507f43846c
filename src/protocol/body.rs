//! Streaming I/O for the request stream: request lines with a length cap, and put bodies
//! decoded from base64 in chunks, so a body of any size needs a fixed amount of memory.

use std::io::{self, BufRead, Write};

/// Input characters decoded per step (a multiple of 4): 48 KiB of output.
const STEP: usize = 64 * 1024;

#[derive(Debug)]
pub enum BodyError {
    /// No body string where one was due. Only whitespace was consumed.
    Missing,
    /// Bad base64, or more bytes than announced. The body was consumed: still in sync.
    Invalid(String),
    /// The sink failed. The body was consumed: still in sync.
    Sink(io::Error),
    /// The input ended or failed inside the body: the stream cannot be used any more.
    Truncated(String),
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::Missing => f.write_str("put body missing: expected a base64 JSON string"),
            BodyError::Invalid(m) => write!(f, "put body: {m}"),
            BodyError::Sink(e) => write!(f, "storing put body: {e}"),
            BodyError::Truncated(m) => write!(f, "input ended inside a put body: {m}"),
        }
    }
}

/// Reads the body string that follows a put, decoding into `sink`; returns the decoded size.
/// At most `limit` bytes reach the sink: anything longer is an error, not a larger file.
pub fn read_body<R: BufRead, W: Write>(
    r: &mut R,
    sink: &mut W,
    limit: u64,
) -> Result<u64, BodyError> {
    let truncated = |e: io::Error| BodyError::Truncated(e.to_string());
    // Leading whitespace: the go command writes an empty line between request and body.
    loop {
        let buf = r.fill_buf().map_err(truncated)?;
        if buf.is_empty() {
            return Err(BodyError::Truncated("no body before end of input".into()));
        }
        let skip = buf.iter().take_while(|b| b.is_ascii_whitespace()).count();
        if skip < buf.len() {
            let opens = buf[skip] == b'"';
            r.consume(skip + opens as usize);
            if !opens {
                return Err(BodyError::Missing);
            }
            break;
        }
        r.consume(skip);
    }

    let mut dec = Decoder {
        carry: [0; 4],
        carried: 0,
        out: vec![0u8; STEP / 4 * 3 + 3],
        written: 0,
        limit,
        padded: false,
        failure: None,
    };
    loop {
        let buf = r.fill_buf().map_err(truncated)?;
        if buf.is_empty() {
            return Err(BodyError::Truncated(format!(
                "after {} body bytes",
                dec.written
            )));
        }
        // A body string ends at its quote; a newline first means it was cut short, and the
        // newline is left for the next request so the stream stays in sync.
        let end = memchr::memchr2(b'"', b'\n', buf);
        let chunk = &buf[..end.unwrap_or(buf.len())];
        let n = chunk.len();
        dec.feed(chunk, sink);
        match end {
            None => r.consume(n),
            Some(i) => {
                let closed = buf[i] == b'"';
                r.consume(i + closed as usize);
                if !closed {
                    dec.fail("body string not terminated before end of line".into());
                } else if dec.carried != 0 {
                    dec.fail("base64 length is not a multiple of 4".into());
                }
                return match dec.failure {
                    None => Ok(dec.written),
                    Some(Failure::Invalid(m)) => Err(BodyError::Invalid(m)),
                    Some(Failure::Sink(e)) => Err(BodyError::Sink(e)),
                };
            }
        }
    }
}

enum Failure {
    Invalid(String),
    Sink(io::Error),
}

struct Decoder {
    carry: [u8; 4],
    carried: usize,
    out: Vec<u8>,
    written: u64,
    limit: u64,
    /// A padded group ends the data; anything after it is an error.
    padded: bool,
    failure: Option<Failure>,
}

impl Decoder {
    fn fail(&mut self, m: String) {
        if self.failure.is_none() {
            self.failure = Some(Failure::Invalid(m));
        }
    }

    fn feed<W: Write>(&mut self, mut chunk: &[u8], sink: &mut W) {
        if self.failure.is_some() {
            return; // keep consuming to the end of the body, decode nothing more
        }
        if self.carried > 0 {
            let take = (4 - self.carried).min(chunk.len());
            self.carry[self.carried..self.carried + take].copy_from_slice(&chunk[..take]);
            self.carried += take;
            chunk = &chunk[take..];
            if self.carried < 4 {
                return;
            }
            let group = self.carry;
            self.carried = 0;
            self.decode(&group, sink);
        }
        while chunk.len() >= 4 && self.failure.is_none() {
            let take = chunk.len().min(STEP) / 4 * 4;
            self.decode(&chunk[..take], sink);
            chunk = &chunk[take..];
        }
        if self.failure.is_none() {
            self.carry[..chunk.len()].copy_from_slice(chunk);
            self.carried = chunk.len();
        }
    }

    fn decode<W: Write>(&mut self, input: &[u8], sink: &mut W) {
        if self.padded {
            return self.fail("data after base64 padding".into());
        }
        // SIMD: put bodies are most of a cold build's input, and base64-simd decodes them
        // several times faster than the scalar `base64` crate (README, "Performance").
        let n = match base64_simd::STANDARD
            .decode(input, base64_simd::Out::from_slice(&mut self.out))
        {
            Ok(out) => out.len(),
            Err(_) => {
                let why = match input.iter().find(|b| !is_base64_char(**b)) {
                    Some(b) => format!("invalid base64: byte {b:#04x}"),
                    None => "invalid base64: bad padding or trailing bits".into(),
                };
                return self.fail(why);
            }
        };
        self.padded = input.last() == Some(&b'=');
        if self.written + n as u64 > self.limit {
            return self.fail(format!(
                "body is longer than its BodySize of {}",
                self.limit
            ));
        }
        if let Err(e) = sink.write_all(&self.out[..n]) {
            self.failure = Some(Failure::Sink(e));
            return;
        }
        self.written += n as u64;
    }
}

fn is_base64_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=')
}

/// What [`read_line`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A line is in the buffer (without its newline; a last line may lack one).
    Line,
    Eof,
    /// Longer than the cap; it was skipped and the buffer holds its start.
    TooLong(usize),
}

/// Reads one line into `buf` (cleared first), holding at most `max` bytes of it.
pub fn read_line<R: BufRead>(r: &mut R, buf: &mut Vec<u8>, max: usize) -> io::Result<Line> {
    buf.clear();
    let mut total = 0usize;
    loop {
        let avail = r.fill_buf()?;
        if avail.is_empty() {
            return Ok(match total {
                0 => Line::Eof,
                n if n > max => Line::TooLong(n),
                _ => Line::Line,
            });
        }
        let (take, done) = match memchr::memchr(b'\n', avail) {
            Some(i) => (i, true),
            None => (avail.len(), false),
        };
        let room = max.saturating_sub(buf.len()).min(take);
        buf.extend_from_slice(&avail[..room]);
        total += take;
        r.consume(take + done as usize);
        if done {
            return Ok(if total > max {
                Line::TooLong(total)
            } else {
                Line::Line
            });
        }
    }
}
