//! The floor of any GOCACHEPROG helper: a read-only helper that does no work per request.
//!
//! ```text
//! GOCACHEPROG="target/release/protocol_floor /abs/path/to/a/copy/of/GOCACHE" go build std
//! ```
//!
//! It answers from memory: every `<xx>/<action hex>-a` entry of a Go native cache directory
//! ("v1 <action> <output> <size> <unix nanos>") with its answer already encoded, loaded at
//! start-up from `protocol_floor.idx` in that directory (one file read; the first run scans the
//! entries and writes it: delete it if the directory changes). The go command sends its first
//! get right after the handshake, so the load is on its clock: scanning a `go build std` cache's
//! ~2,700 entries takes 10-25 ms, reading the index about 1 ms.
//! A `get` is then one hash lookup and one line written back, its DiskPath pointing at the
//! native cache's own `<xx>/<output hex>-d` file; it advertises only `get` and `close`, so the
//! go command never sends a `put`. What a warm build costs with this helper over the same build
//! on the native cache is what the go command's GOCACHEPROG path itself costs (a JSON request
//! and response over a pipe per get): no helper can be faster. bench/run.sh measures it as
//! W1's "floor" side. At close it prints its counters to stderr, for the bench to check that
//! every get was a hit.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use base64::Engine;

#[derive(serde::Deserialize)]
struct Request<'a> {
    #[serde(rename = "ID")]
    id: i64,
    #[serde(rename = "Command", borrow)]
    command: Cow<'a, str>,
    #[serde(rename = "ActionID", borrow, default)]
    action_id: Option<Cow<'a, str>>,
    #[serde(rename = "BodySize", default)]
    body_size: u64,
}

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1) else {
        eprintln!("usage: protocol_floor GOCACHE_DIR");
        return ExitCode::from(2);
    };
    match run(Path::new(&dir)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("protocol_floor: error: {e}");
            ExitCode::from(1)
        }
    }
}

fn hex(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    (b.len() == 64).then_some(())?;
    let digit = |c: u8| (c as char).to_digit(16);
    b.chunks(2)
        .map(|p| Some((digit(p[0])? * 16 + digit(p[1])?) as u8))
        .collect()
}

/// ActionID (base64, as the go command sends it) -> the rest of the hit response after `"ID":N,`.
fn load(dir: &Path) -> std::io::Result<HashMap<String, String>> {
    let dir = std::fs::canonicalize(dir)?; // DiskPath must be absolute
    let idx = dir.join("protocol_floor.idx");
    if let Ok(text) = std::fs::read_to_string(&idx) {
        let entries = text.lines().filter_map(|l| l.split_once(' '));
        return Ok(entries
            .map(|(k, t)| (k.to_string(), format!("{t}\n")))
            .collect());
    }
    let map = scan(&dir)?;
    let text: String = map.iter().map(|(k, t)| format!("{k} {t}")).collect();
    let tmp = dir.join(format!("protocol_floor.idx.{}", std::process::id()));
    std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &idx))?;
    Ok(map)
}

fn scan(dir: &Path) -> std::io::Result<HashMap<String, String>> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut map = HashMap::new();
    for sub in std::fs::read_dir(dir)? {
        let sub = sub?.path();
        if !sub.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&sub)? {
            let f = f?.path();
            if !f.to_string_lossy().ends_with("-a") {
                continue;
            }
            let text = std::fs::read_to_string(&f)?;
            let p: Vec<&str> = text.split_whitespace().collect();
            let [_, action, output, size, nanos] = p[..] else {
                continue;
            };
            let (Some(a), Some(o), Ok(size), Ok(nanos)) = (
                hex(action),
                hex(output),
                size.parse::<u64>(),
                nanos.parse::<u64>(),
            ) else {
                continue;
            };
            let time = humantime::format_rfc3339_nanos(UNIX_EPOCH + Duration::from_nanos(nanos));
            let path = dir.join(&output[..2]).join(format!("{output}-d"));
            let path =
                serde_json::to_string(&path.to_string_lossy()).map_err(std::io::Error::other)?;
            let tail = format!(
                "\"OutputID\":\"{}\",\"Size\":{size},\"Time\":\"{time}\",\"DiskPath\":{path}}}\n",
                b64.encode(o)
            );
            map.insert(b64.encode(a), tail);
        }
    }
    Ok(map)
}

fn run(dir: &Path) -> std::io::Result<()> {
    let mut r = BufReader::new(std::io::stdin().lock());
    let mut w = BufWriter::new(std::io::stdout().lock());
    // The go command waits for this line before going on: send it before loading, so the load
    // overlaps the go command's own work up to its first get.
    w.write_all(b"{\"ID\":0,\"KnownCommands\":[\"get\",\"close\"]}\n")?;
    w.flush()?;
    let map = load(dir)?;
    let (mut gets, mut hits) = (0u64, 0u64);
    let mut line = String::new();
    loop {
        if r.buffer().is_empty() {
            w.flush()?; // about to wait for input: answer what we have
        }
        line.clear();
        if r.read_line(&mut line)? == 0 {
            break;
        }
        if line.trim().is_empty() {
            continue;
        }
        let req: Request = serde_json::from_str(&line).map_err(std::io::Error::other)?;
        let id = req.id;
        match &*req.command {
            "get" => {
                gets += 1;
                match req.action_id.and_then(|a| map.get(&*a)) {
                    Some(tail) => {
                        hits += 1;
                        write!(w, "{{\"ID\":{id},{tail}")?;
                    }
                    None => writeln!(w, "{{\"ID\":{id},\"Miss\":true}}")?,
                }
            }
            "close" => {
                writeln!(w, "{{\"ID\":{id}}}")?;
                break;
            }
            other => {
                if req.body_size > 0 {
                    // A put's body follows as one base64 JSON string line: skip it.
                    let mut body = String::new();
                    r.read_line(&mut body)?;
                }
                let err = serde_json::to_string(&format!("{other}: read-only floor helper"))?;
                writeln!(w, "{{\"ID\":{id},\"Err\":{err}}}")?;
            }
        }
    }
    w.flush()?;
    eprintln!(
        "protocol_floor: closing; {gets} gets ({hits} hits, {} misses); {} entries loaded",
        gets - hits,
        map.len()
    );
    Ok(())
}
