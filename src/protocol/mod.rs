//! The GOCACHEPROG wire format (cmd/go/internal/cacheprog).
//!
//! Requests are one JSON object per line; a `put` with `BodySize > 0` is followed by the body
//! as one JSON string of padded standard base64 (see [`body`]). Responses are one JSON object
//! per line. This module only translates bytes to values and back; what a request does is
//! the server's business.

pub mod body;

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::ids::{ActionId, OutputId};
use crate::Entry;

/// The commands we announce in the handshake.
pub const KNOWN_COMMANDS: [&str; 3] = ["get", "put", "close"];

/// Longest request line we accept. Real requests are ~200 bytes; the cap bounds memory
/// against a hostile or broken peer.
pub const MAX_LINE: usize = 1 << 20;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Get,
    Put,
    Close,
    Other(String),
}

/// A parsed request, IDs still unchecked (their errors are answered per request).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub id: i64,
    pub command: Command,
    pub action_id: Option<Vec<u8>>,
    pub output_id: Option<Vec<u8>>,
    pub body_size: i64,
}

/// A line we could not make into a [`Request`]. With an `id` it can be answered with `Err`;
/// without one the stream cannot be trusted any more.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadRequest {
    pub id: Option<i64>,
    /// Set when the line announced a body, which must still be skipped to stay in sync.
    pub body_size: i64,
    pub message: String,
}

#[derive(Deserialize)]
struct Wire {
    #[serde(rename = "ID")]
    id: i64,
    #[serde(rename = "Command")]
    command: String,
    #[serde(rename = "ActionID", default)]
    action_id: Option<String>,
    #[serde(rename = "OutputID", default)]
    output_id: Option<String>,
    /// Before Go 1.25 the same field was called ObjectID.
    #[serde(rename = "ObjectID", default)]
    object_id: Option<String>,
    #[serde(rename = "BodySize", default)]
    body_size: i64,
}

fn b64() -> &'static base64::engine::GeneralPurpose {
    &base64::engine::general_purpose::STANDARD
}

/// Parses one request line (without its newline).
pub fn parse_request(line: &[u8]) -> Result<Request, BadRequest> {
    match serde_json::from_slice::<Wire>(line) {
        Ok(w) => {
            let decode = |field: &str, v: Option<String>| -> Result<Option<Vec<u8>>, BadRequest> {
                match v {
                    None => Ok(None),
                    Some(s) => b64()
                        .decode(s.as_bytes())
                        .map(Some)
                        .map_err(|e| BadRequest {
                            id: Some(w.id),
                            body_size: w.body_size,
                            message: format!("{field} is not valid base64: {e}"),
                        }),
                }
            };
            let action_id = decode("ActionID", w.action_id)?;
            let output_id = match w.output_id {
                Some(o) => decode("OutputID", Some(o))?,
                None => decode("ObjectID", w.object_id)?,
            };
            let command = match w.command.as_str() {
                "get" => Command::Get,
                "put" => Command::Put,
                "close" => Command::Close,
                other => Command::Other(other.to_string()),
            };
            Ok(Request {
                id: w.id,
                command,
                action_id,
                output_id,
                body_size: w.body_size,
            })
        }
        Err(e) => {
            // Salvage the ID (and any body announcement) so the peer gets an answer.
            let v: Option<serde_json::Value> = serde_json::from_slice(line).ok();
            let field = |k: &str| v.as_ref().and_then(|v| v.get(k)).and_then(|x| x.as_i64());
            let mut message = format!("malformed request: {e}");
            if v.is_none() {
                message += &format!(" in {}", preview(line));
            }
            // A BodySize too big for an int64 still announces a body: skip it to stay in step.
            let body_size = match v.as_ref().and_then(|v| v.get("BodySize")) {
                Some(b) if b.as_f64().is_some_and(|f| f > 0.0) => b.as_i64().unwrap_or(i64::MAX),
                _ => 0,
            };
            Err(BadRequest {
                id: field("ID"),
                body_size,
                message,
            })
        }
    }
}

/// A short, printable excerpt of untrusted input for error messages.
pub fn preview(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(80)];
    let mut s = format!("{:?}", String::from_utf8_lossy(cut));
    if bytes.len() > cut.len() {
        s += &format!(" ({} bytes)", bytes.len());
    }
    s
}

impl Request {
    pub fn action_id(&self) -> Result<ActionId, String> {
        let raw = self.action_id.as_deref().ok_or("missing ActionID")?;
        ActionId::from_bytes(raw).map_err(|e| e.to_string())
    }

    pub fn output_id(&self) -> Result<OutputId, String> {
        let raw = self.output_id.as_deref().ok_or("missing OutputID")?;
        OutputId::from_bytes(raw).map_err(|e| e.to_string())
    }
}

/// One response line.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Response {
    #[serde(rename = "ID")]
    pub id: i64,
    #[serde(rename = "Err", skip_serializing_if = "Option::is_none")]
    pub err: Option<String>,
    #[serde(rename = "KnownCommands", skip_serializing_if = "Option::is_none")]
    pub known_commands: Option<Vec<&'static str>>,
    #[serde(rename = "Miss", skip_serializing_if = "std::ops::Not::not")]
    pub miss: bool,
    #[serde(rename = "OutputID", skip_serializing_if = "Option::is_none")]
    pub output_id: Option<String>,
    #[serde(rename = "Size", skip_serializing_if = "is_zero")]
    pub size: u64,
    #[serde(rename = "Time", skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    #[serde(rename = "DiskPath", skip_serializing_if = "Option::is_none")]
    pub disk_path: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Response {
    /// The first message: what we can do.
    pub fn hello() -> Response {
        Response {
            id: 0,
            known_commands: Some(KNOWN_COMMANDS.to_vec()),
            ..Default::default()
        }
    }

    pub fn miss(id: i64) -> Response {
        Response {
            id,
            miss: true,
            ..Default::default()
        }
    }

    pub fn error(id: i64, err: impl Into<String>) -> Response {
        Response {
            id,
            err: Some(err.into()),
            ..Default::default()
        }
    }

    pub fn hit(id: i64, e: &Entry) -> Response {
        Response {
            id,
            output_id: Some(b64().encode(e.output_id.as_bytes())),
            size: e.size,
            time: rfc3339(e.time),
            disk_path: Some(e.path.to_string_lossy().into_owned()),
            ..Default::default()
        }
    }

    pub fn put_done(id: i64, e: &Entry) -> Response {
        Response {
            id,
            disk_path: Some(e.path.to_string_lossy().into_owned()),
            ..Default::default()
        }
    }

    pub fn closed(id: i64) -> Response {
        Response {
            id,
            ..Default::default()
        }
    }

    /// Appends the JSON line (with its newline) to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        // Serialising plain strings and integers into a Vec cannot fail.
        serde_json::to_writer(&mut *out, self).expect("response serialisation");
        out.push(b'\n');
    }
}

/// RFC 3339 with nanoseconds, as Go's time.Time marshals. `None` outside years 1970–9999,
/// where the go command then uses "now".
pub fn rfc3339(t: SystemTime) -> Option<String> {
    let secs = t.duration_since(UNIX_EPOCH).ok()?.as_secs();
    (secs < 253_402_300_800).then(|| humantime::format_rfc3339_nanos(t).to_string())
}

#[cfg(test)]
mod tests;
