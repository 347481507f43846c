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
//!
//! With `-lookup` first (`protocol_floor -lookup DIR`) each get also does the file work any
//! helper that keeps its entries on disk must do before it can answer: open, read and close the
//! entry file, check it names the expected output, and stat that output for its size (the go
//! command's native cache does the same, and more, in its own process). Its answers are the
//! same; the difference to the plain floor is the price of a per-get disk lookup on this
//! machine, so a helper's time over this floor is what its own implementation adds.

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
    let mut args: Vec<_> = std::env::args_os().skip(1).collect();
    let lookup = args.first().is_some_and(|a| a == "-lookup");
    if lookup {
        args.remove(0);
    }
    let [dir] = &args[..] else {
        eprintln!("usage: protocol_floor [-lookup] GOCACHE_DIR");
        return ExitCode::from(2);
    };
    match run(Path::new(dir), lookup) {
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

/// `-lookup`'s per-get disk work: the entry file of `action` (base64, as sent) names an output
/// whose file is there with the entry's size. The answer itself still comes from memory.
fn on_disk(dir: &Path, action: &str) -> Option<()> {
    use std::io::Read as _;
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let raw = base64::engine::general_purpose::STANDARD
        .decode(action)
        .ok()?;
    let hex: String = raw
        .iter()
        .flat_map(|b| {
            [
                DIGITS[(b >> 4) as usize] as char,
                DIGITS[(b & 15) as usize] as char,
            ]
        })
        .collect();
    let mut entry = [0u8; 256];
    let mut f = std::fs::File::open(dir.join(&hex[..2]).join(format!("{hex}-a"))).ok()?;
    let n = f.read(&mut entry).ok()?;
    drop(f);
    let text = std::str::from_utf8(&entry[..n]).ok()?;
    let p: Vec<&str> = text.split_whitespace().collect();
    let [_, a, output, size, _] = p[..] else {
        return None;
    };
    let size: u64 = size.parse().ok()?;
    let body = dir.join(output.get(..2)?).join(format!("{output}-d"));
    (a == hex && std::fs::metadata(body).ok()?.len() == size).then_some(())
}

fn run(dir: &Path, lookup: bool) -> std::io::Result<()> {
    let mut r = BufReader::new(std::io::stdin().lock());
    let mut w = BufWriter::new(std::io::stdout().lock());
    // The go command waits for this line before going on: send it before loading, so the load
    // overlaps the go command's own work up to its first get.
    w.write_all(b"{\"ID\":0,\"KnownCommands\":[\"get\",\"close\"]}\n")?;
    w.flush()?;
    let map = load(dir)?;
    let dir = std::fs::canonicalize(dir)?;
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
                let found = req.action_id.and_then(|a| {
                    let tail = map.get(&*a)?;
                    (!lookup || on_disk(&dir, &a).is_some()).then_some(tail)
                });
                match found {
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
