//! The remote object format: a fixed header, then the body (LZ4 frame or raw).
//!
//! Objects describe themselves, so any reader decodes any writer's objects whatever its own
//! `-compression` setting; and they name the ActionID they were written for, so an object
//! copied under the wrong key is caught. The body is verified against the OutputID by the
//! reader (SHA-256), which catches flipped bits and truncation anywhere.
//!
//! ```text
//! 0   8  tag: magic "GBCO", version 1, then the codec (0 raw, 1 LZ4 frame) and two
//!        bytes zero
//! 8  32  ActionID
//! 40 32  OutputID (SHA-256 of the uncompressed body)
//! 72  8  uncompressed size, little endian
//! 80  8  original put time, Unix nanoseconds, little endian
//! 88     body
//! ```

use std::io::{self, BufRead, Read, Write};
use std::time::SystemTime;

use super::{nanos_to_time, time_to_nanos, Tag};
use crate::ids::{ActionId, OutputId};

pub const HEADER_LEN: usize = 88;
const TAG: Tag = Tag {
    magic: b"GBCO",
    version: 1,
    what: "gobuildcache object",
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    Raw = 0,
    Lz4 = 1,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub codec: Codec,
    pub action_id: ActionId,
    pub output_id: OutputId,
    pub size: u64,
    pub time: SystemTime,
}

impl Header {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[..Tag::LEN].copy_from_slice(&TAG.head([self.codec as u8, 0, 0]));
        b[8..40].copy_from_slice(self.action_id.as_bytes());
        b[40..72].copy_from_slice(self.output_id.as_bytes());
        b[72..80].copy_from_slice(&self.size.to_le_bytes());
        b[80..88].copy_from_slice(&time_to_nanos(self.time).to_le_bytes());
        b
    }

    pub fn decode(b: &[u8; HEADER_LEN]) -> Result<Header, String> {
        let [codec, r1, r2] = TAG.check(b)?;
        let codec = match codec {
            0 => Codec::Raw,
            1 => Codec::Lz4,
            c => return Err(format!("unknown codec {c}")),
        };
        if r1 != 0 || r2 != 0 {
            return Err("reserved header bytes are set".into());
        }
        let id_err = |e: crate::Error| e.to_string();
        Ok(Header {
            codec,
            action_id: ActionId::from_bytes(&b[8..40]).map_err(id_err)?,
            output_id: OutputId::from_bytes(&b[40..72]).map_err(id_err)?,
            size: u64::from_le_bytes(b[72..80].try_into().expect("8 bytes")),
            time: nanos_to_time(i64::from_le_bytes(b[80..88].try_into().expect("8 bytes"))),
        })
    }
}

/// Writes header + encoded body to `out`, reading the body from `body`.
pub fn encode<R: Read, W: Write>(header: &Header, mut body: R, out: W) -> io::Result<W> {
    let mut out = out;
    out.write_all(&header.encode())?;
    match header.codec {
        Codec::Raw => {
            io::copy(&mut body, &mut out)?;
            Ok(out)
        }
        Codec::Lz4 => {
            let mut enc = lz4_flex::frame::FrameEncoder::new(out);
            io::copy(&mut body, &mut enc)?;
            enc.finish().map_err(io::Error::other)
        }
    }
}

/// Why an object could not be decoded.
#[derive(Debug)]
pub enum DecodeError {
    /// The object itself is damaged: truncated, foreign, bad header or bad compressed data.
    Corrupt(String),
    /// Reading failed (network, timeout): says nothing about the object.
    Io(io::Error),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Corrupt(m) => f.write_str(m),
            DecodeError::Io(e) => write!(f, "reading object: {e}"),
        }
    }
}

fn classify(what: &str, e: io::Error) -> DecodeError {
    match e.kind() {
        // A short object, or data the decompressor rejects: the object is bad.
        io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidData => {
            DecodeError::Corrupt(format!("{what}: {e}"))
        }
        _ => DecodeError::Io(e),
    }
}

/// Reads the header of an object, then streams its decoded body into `sink`. Reads at most
/// `header.size` bytes of body plus one (so an over-long body is an error, not a big file).
/// The caller verifies the hash (the sink hashes what it is given).
pub fn decode<R: Read, W: Write>(mut input: R, sink: &mut W) -> Result<Header, DecodeError> {
    let header = read_header(&mut input)?;
    decode_body(&header, input, sink)?;
    Ok(header)
}

/// The header alone, so a reader can decide where the body goes before reading it.
pub fn read_header<R: Read>(input: &mut R) -> Result<Header, DecodeError> {
    let mut hb = [0u8; HEADER_LEN];
    input
        .read_exact(&mut hb)
        .map_err(|e| classify("object header", e))?;
    Header::decode(&hb).map_err(DecodeError::Corrupt)
}

/// The body after [`read_header`]; as [`decode`].
pub fn decode_body<R: Read, W: Write>(
    header: &Header,
    input: R,
    sink: &mut W,
) -> Result<(), DecodeError> {
    let copied = match header.codec {
        Codec::Raw => copy_limited(
            io::BufReader::with_capacity(IO_BUF, input.take(header.size.saturating_add(1))),
            sink,
            header.size,
        ),
        Codec::Lz4 => copy_limited(lz4_flex::frame::FrameDecoder::new(input), sink, header.size),
    }?;
    if copied != header.size {
        return Err(DecodeError::Corrupt(format!(
            "object body has {copied} bytes, its header says {}",
            header.size
        )));
    }
    Ok(())
}

/// Bytes a body is read or copied in at a time: an LZ4 block. Each read or write is a
/// syscall; `std`'s 8 KiB made 20,000 of them for a cold `go build std`'s 160 MiB.
pub const IO_BUF: usize = 64 << 10;

/// Copies at most `size + 1` bytes, a buffer at a time: an LZ4 frame hands over each decoded
/// block whole. (`io::copy` went 8 KiB at a time: a fresh `go build std` made 24,000 writes
/// to the local tier for 160 MiB.)
fn copy_limited<R: BufRead, W: Write>(r: R, sink: &mut W, size: u64) -> Result<u64, DecodeError> {
    let mut limited = r.take(size.saturating_add(1));
    let mut copied = 0u64;
    loop {
        let buf = match limited.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(classify("object body", e)),
        };
        if buf.is_empty() {
            return Ok(copied);
        }
        let n = buf.len();
        sink.write_all(buf)
            .map_err(|e| classify("object body", e))?;
        limited.consume(n);
        copied += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(codec: Codec, body: &[u8]) -> Header {
        Header {
            codec,
            action_id: ActionId::from_bytes(&[1; 32]).unwrap(),
            output_id: OutputId::of(body),
            size: body.len() as u64,
            time: nanos_to_time(1_700_000_000_000_000_001),
        }
    }

    #[test]
    fn either_codec_round_trips_and_any_reader_decodes_it() {
        let body: Vec<u8> = (0..100_000u32).map(|i| (i % 7) as u8).collect();
        for codec in [Codec::Raw, Codec::Lz4] {
            let h = header(codec, &body);
            let obj = encode(&h, &body[..], Vec::new()).unwrap();
            if codec == Codec::Lz4 {
                assert!(obj.len() < body.len() / 10, "compressible body compressed");
            }
            let mut out = Vec::new();
            assert_eq!(decode(&obj[..], &mut out).unwrap(), h);
            assert_eq!(out, body);
        }
    }

    /// A sink that counts its writes.
    struct Writes(Vec<u8>, usize);
    impl Write for Writes {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.1 += 1;
            self.0.extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_body_reaches_its_sink_in_large_writes() {
        // Each write to the local tier is a syscall: 8 KiB at a time made 24,000 of them in a
        // fresh `go build std`.
        let body: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
        for codec in [Codec::Raw, Codec::Lz4] {
            let h = header(codec, &body);
            let obj = encode(&h, &body[..], Vec::new()).unwrap();
            let mut sink = Writes(Vec::new(), 0);
            assert_eq!(decode(&obj[..], &mut sink).unwrap(), h);
            assert_eq!(sink.0, body);
            assert!(sink.1 <= 17, "{codec:?}: {} writes for 1 MiB", sink.1);
        }
    }

    /// What the cache accepts: a decodable object for the right ActionID whose body hashes
    /// to its OutputID. Damage must never get past that with a wrong body.
    fn accepted(obj: &[u8], want_action: &ActionId) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        let h = decode(obj, &mut out).ok()?;
        (h.action_id == *want_action && OutputId::of(&out) == h.output_id).then_some(out)
    }

    #[test]
    fn damaged_objects_are_never_accepted_with_a_wrong_body() {
        let body = b"some build output".repeat(100);
        for codec in [Codec::Raw, Codec::Lz4] {
            let h = header(codec, &body);
            let obj = encode(&h, &body[..], Vec::new()).unwrap();
            for cut in 0..obj.len() {
                if let Some(out) = accepted(&obj[..cut], &h.action_id) {
                    assert_eq!(out, body, "cut at {cut} accepted a wrong body");
                }
            }
            for i in 0..obj.len() {
                for bit in [0x01, 0x10, 0x80] {
                    let mut bad = obj.clone();
                    bad[i] ^= bit;
                    if let Some(out) = accepted(&bad, &h.action_id) {
                        assert_eq!(out, body, "flip at {i} accepted a wrong body");
                    }
                }
            }
            // Filed under another action: refused.
            assert!(accepted(&obj, &ActionId::from_bytes(&[2; 32]).unwrap()).is_none());
        }
        let mut v2 = encode(&header(Codec::Raw, b"x"), &b"x"[..], Vec::new()).unwrap();
        v2[4] = 2;
        assert!(decode(&v2[..], &mut Vec::new())
            .unwrap_err()
            .to_string()
            .contains("version"));
        let mut codec9 = encode(&header(Codec::Raw, b"x"), &b"x"[..], Vec::new()).unwrap();
        codec9[5] = 9;
        assert!(decode(&codec9[..], &mut Vec::new())
            .unwrap_err()
            .to_string()
            .contains("codec"));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// LZ4 blocks of random bytes behind a valid header and frame descriptor (what a store
        /// returning garbage hands the pointer-based decoder): an error or the right body,
        /// never a panic, never more than the header's size.
        #[test]
        fn garbage_lz4_blocks_are_refused(
            body in proptest::collection::vec(0u8..4, 0..5000),
            garbage in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..3000),
            keep in 0usize..64,
        ) {
            let h = header(Codec::Lz4, &body);
            let obj = encode(&h, &body[..], Vec::new()).unwrap();
            // The object header, the frame's magic and descriptor, then some of the real
            // blocks before the garbage.
            let start = (HEADER_LEN + 7 + keep).min(obj.len());
            let mut bad = obj[..start].to_vec();
            bad.extend_from_slice(&garbage);
            let mut out = Vec::new();
            let res = decode(&bad[..], &mut out);
            proptest::prop_assert!(out.len() as u64 <= h.size);
            if res.is_ok() {
                proptest::prop_assert_eq!(&out, &body);
            }
        }
    }

    #[test]
    fn an_over_long_body_is_refused_without_reading_it_all() {
        let h = header(Codec::Raw, b"abc");
        let mut obj = encode(&h, &b"abc"[..], Vec::new()).unwrap();
        obj.extend(std::iter::repeat_n(0u8, 1 << 20));
        let mut out = Vec::new();
        assert!(decode(&obj[..], &mut out).is_err());
        assert!(out.len() <= 4);
    }
}
