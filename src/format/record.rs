//! The local tier's entry record, one file per ActionID: 64 bytes, written atomically.
//!
//! ```text
//! 0   8  tag: magic "GBCA", version 1, three bytes zero
//! 8  32  OutputID
//! 40  8  body size, little endian
//! 48  8  put time, Unix nanoseconds, little endian
//! 56  8  the first 8 bytes of the SHA-256 of bytes 0..56
//! ```

use std::time::SystemTime;

use sha2::{Digest, Sha256};

use super::{nanos_to_time, time_to_nanos, Tag};
use crate::ids::{OutputId, ID_LEN};

pub(crate) const RECORD_LEN: usize = 64;
const TAG: Tag = Tag {
    magic: b"GBCA",
    version: 1,
    what: "entry record",
};

/// What an ActionID maps to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Record {
    pub output_id: OutputId,
    pub size: u64,
    /// When the entry was first put (go test uses it for cache expiry).
    pub time: SystemTime,
}

impl Record {
    pub fn encode(&self) -> [u8; RECORD_LEN] {
        let mut b = [0u8; RECORD_LEN];
        b[..Tag::LEN].copy_from_slice(&TAG.head([0; 3]));
        b[8..40].copy_from_slice(self.output_id.as_bytes());
        b[40..48].copy_from_slice(&self.size.to_le_bytes());
        b[48..56].copy_from_slice(&time_to_nanos(self.time).to_le_bytes());
        let sum = Sha256::digest(&b[..56]);
        b[56..64].copy_from_slice(&sum[..8]);
        b
    }

    /// `None` for anything that is not a whole record of this version.
    pub fn decode(b: &[u8]) -> Option<Record> {
        if b.len() != RECORD_LEN || TAG.check(b).is_err() {
            return None;
        }
        if Sha256::digest(&b[..56])[..8] != b[56..64] {
            return None;
        }
        let output_id = OutputId::from_bytes(&b[8..8 + ID_LEN]).ok()?;
        let size = u64::from_le_bytes(b[40..48].try_into().ok()?);
        let nanos = i64::from_le_bytes(b[48..56].try_into().ok()?);
        Some(Record {
            output_id,
            size,
            time: nanos_to_time(nanos),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_any_flipped_bit_is_rejected() {
        let r = Record {
            output_id: OutputId::of(b"x"),
            size: 12345,
            time: nanos_to_time(1_700_000_000_123_456_789),
        };
        let enc = r.encode();
        assert_eq!(Record::decode(&enc), Some(r));
        for i in 0..RECORD_LEN {
            if (5..8).contains(&i) {
                continue; // reserved bytes are covered by the checksum too, but check them below
            }
            let mut bad = enc;
            bad[i] ^= 0x40;
            assert_eq!(Record::decode(&bad), None, "flip at {i}");
        }
        let mut bad = enc;
        bad[6] = 1;
        assert_eq!(Record::decode(&bad), None);
        assert_eq!(Record::decode(&enc[..63]), None);
        assert_eq!(Record::decode(&[]), None);
    }
}
