//! The four byte layouts gobuildcache writes, each with its byte table at the top of its file:
//! the local tier's entry record (`record.rs`, on disk), the remote [`object`] (one entry
//! in a store), the warm-start [`manifest`] and the pack index (`pack.rs`).
//!
//! They share one framing, written here once: eight bytes of tag (a magic naming the
//! layout, a version, three bytes the layout uses or keeps zero), and for the lists a
//! table: an entry count, fixed-size entries and the SHA-256 of everything before it.
//! A reader refuses what is not whole and of its version; none of these layouts is trusted
//! beyond what it proves. This module knows bytes only: no store, tier or cache.

pub mod manifest;
pub mod object;
pub(crate) mod pack;
pub(crate) mod record;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

/// Magic, version and name of a layout: its first eight bytes.
pub(crate) struct Tag {
    pub magic: &'static [u8; 4],
    pub version: u8,
    /// For errors: "not a {what}".
    pub what: &'static str,
}

impl Tag {
    pub const LEN: usize = 8;

    /// The magic, the version, then three bytes the layout uses itself (zero if it does not).
    pub fn head(&self, own: [u8; 3]) -> [u8; Tag::LEN] {
        let m = self.magic;
        let [a, b, c] = own;
        [m[0], m[1], m[2], m[3], self.version, a, b, c]
    }

    /// Checks the magic and version at the start of `b`; returns the layout's three bytes.
    pub fn check(&self, b: &[u8]) -> Result<[u8; 3], String> {
        if b.len() < Tag::LEN {
            return Err(format!(
                "{} bytes is too short for a {}",
                b.len(),
                self.what
            ));
        }
        if &b[..4] != self.magic {
            return Err(format!("not a {} (bad magic)", self.what));
        }
        if b[4] != self.version {
            return Err(format!("{} version {} is not supported", self.what, b[4]));
        }
        Ok([b[5], b[6], b[7]])
    }
}

/// A sealed list of fixed-size entries (little endian):
///
/// ```text
/// 0            8  tag (own bytes zero)
/// 8            4  entry count n (u32), at most `max`
/// 12       n*len  the entries
/// 12+n*len    32  SHA-256 of everything before it
/// ```
pub(crate) struct Table {
    pub tag: Tag,
    /// Bytes per entry.
    pub entry: usize,
    /// The most entries a reader accepts (a damaged count must not size an allocation).
    pub max: usize,
}

impl Table {
    pub const HEAD: usize = Tag::LEN + 4;
    pub const SUM: usize = 32;

    /// The length of a table of `n` entries.
    pub const fn len(&self, n: usize) -> usize {
        Table::HEAD + n * self.entry + Table::SUM
    }

    /// The table of `entries`, each `self.entry` bytes long.
    pub fn encode<E: AsRef<[u8]>>(&self, entries: impl ExactSizeIterator<Item = E>) -> Vec<u8> {
        let n = entries.len();
        assert!(n <= self.max, "{n} {} entries over the cap", self.tag.what);
        let mut out = Vec::with_capacity(self.len(n));
        out.extend_from_slice(&self.tag.head([0; 3]));
        out.extend_from_slice(&(n as u32).to_le_bytes());
        for e in entries {
            let e = e.as_ref();
            assert_eq!(e.len(), self.entry, "a {} entry", self.tag.what);
            out.extend_from_slice(e);
        }
        let sum = Sha256::digest(&out);
        out.extend_from_slice(&sum);
        out
    }

    /// The entry count the first [`Table::HEAD`] bytes of `b` announce, checked against the cap.
    pub fn count(&self, b: &[u8]) -> Result<usize, String> {
        self.tag.check(b)?;
        if b.len() < Table::HEAD {
            return Err(format!(
                "{} bytes is too short for a {}",
                b.len(),
                self.tag.what
            ));
        }
        let n = u32::from_le_bytes(b[Tag::LEN..Table::HEAD].try_into().expect("4 bytes")) as usize;
        if n > self.max {
            return Err(format!("{n} entries is over the cap of {}", self.max));
        }
        Ok(n)
    }

    /// The entries of a whole table `b`, once its length and checksum hold.
    pub fn open<'a>(&self, b: &'a [u8]) -> Result<std::slice::ChunksExact<'a, u8>, String> {
        if b.len() < self.len(0) {
            return Err(format!(
                "{} bytes is too short for a {}",
                b.len(),
                self.tag.what
            ));
        }
        let n = self.count(b)?;
        if b.len() != self.len(n) {
            return Err(format!(
                "{} bytes do not hold the {n} entries the header says",
                b.len()
            ));
        }
        let (body, sum) = b.split_at(b.len() - Table::SUM);
        if Sha256::digest(body).as_slice() != sum {
            return Err(format!("{} checksum mismatch", self.tag.what));
        }
        Ok(body[Table::HEAD..].chunks_exact(self.entry))
    }
}

/// A time as signed Unix nanoseconds (the layouts' time fields).
pub(crate) fn time_to_nanos(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_nanos()).unwrap_or(i64::MAX),
    }
}

pub(crate) fn nanos_to_time(n: i64) -> SystemTime {
    if n >= 0 {
        UNIX_EPOCH + Duration::from_nanos(n as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(n.unsigned_abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{ActionId, OutputId};

    fn sha(b: &[u8]) -> String {
        crate::ids::encode_hex(&Sha256::digest(b))
    }

    /// The bytes each layout writes, pinned: digests computed from the byte tables alone
    /// (by a short Python script, not by this code), so a refactor cannot change a layout
    /// that other machines' caches and stores already hold.
    #[test]
    fn every_layout_writes_the_bytes_its_table_describes() {
        let record = record::Record {
            output_id: OutputId::of(b"x"),
            size: 12345,
            time: nanos_to_time(1_700_000_000_123_456_789),
        };
        assert_eq!(
            sha(&record.encode()),
            "7c5031d2a89f01260bf4705747f48acef3fc7a39cfd8cdc8211a7c5b80aa1ad9"
        );
        let header = object::Header {
            codec: object::Codec::Lz4,
            action_id: ActionId::from_bytes(&[1; 32]).unwrap(),
            output_id: OutputId::from_bytes(&[2; 32]).unwrap(),
            size: 7,
            time: nanos_to_time(5),
        };
        assert_eq!(
            sha(&header.encode()),
            "220e417c62b45a3ec8edb08f3e78b40c261f925686453eee4cc0d21169f8941e"
        );
        let (one, two) = (
            ActionId::from_bytes(&[1; 32]).unwrap(),
            ActionId::from_bytes(&[2; 32]).unwrap(),
        );
        let m = manifest::Manifest {
            entries: vec![(one, 0), (two, 3)],
        };
        let b = m.encode();
        assert_eq!(b.len(), 110);
        assert_eq!(
            sha(&b),
            "330c216f63f8618de1dd56895224a2a4b0ee901025f2a3d4474528e896c2dee5"
        );
        let b = pack::encode_index(&[(one, 500), (two, 0)]);
        assert_eq!(b.len(), 124);
        assert_eq!(
            sha(&b),
            "a3a497a8ebd2aec804cd8c0d81493626c633b270a6da7060c493b5e3bd22d9d1"
        );
    }

    #[test]
    fn a_table_refuses_what_is_not_whole_and_its_own() {
        let t = Table {
            tag: Tag {
                magic: b"TEST",
                version: 2,
                what: "test table",
            },
            entry: 3,
            max: 4,
        };
        let b = t.encode([[1u8, 2, 3], [4, 5, 6]].iter());
        let got: Vec<&[u8]> = t.open(&b).unwrap().collect();
        assert_eq!(got, [&[1u8, 2, 3][..], &[4, 5, 6][..]]);
        for i in 0..b.len() {
            let mut d = b.clone();
            d[i] ^= 0x20;
            assert!(t.open(&d).is_err(), "flip at {i} accepted");
        }
        let err = |b: &[u8]| t.open(b).unwrap_err();
        assert!(err(&b[..b.len() - 1]).contains("do not hold"));
        assert!(err(b"TEST").contains("too short"));
        assert!(err(&[b"XXXX", &b[4..]].concat()).contains("bad magic"));
        let mut v3 = b.clone();
        v3[4] = 3;
        assert!(err(&v3).contains("version 3 is not supported"));
        let mut many = t.encode(std::iter::empty::<[u8; 3]>());
        many[8..12].copy_from_slice(&5u32.to_le_bytes());
        assert!(err(&many).contains("over the cap"));
    }
}
