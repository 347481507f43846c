//! The per-ActionID entry record: 64 bytes, checksummed, written atomically.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::ids::{OutputId, ID_LEN};

pub(crate) const RECORD_LEN: usize = 64;
const MAGIC: &[u8; 4] = b"GBCA";
const VERSION: u8 = 1;

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
        b[0..4].copy_from_slice(MAGIC);
        b[4] = VERSION;
        b[8..40].copy_from_slice(self.output_id.as_bytes());
        b[40..48].copy_from_slice(&self.size.to_le_bytes());
        b[48..56].copy_from_slice(&time_to_nanos(self.time).to_le_bytes());
        let sum = Sha256::digest(&b[..56]);
        b[56..64].copy_from_slice(&sum[..8]);
        b
    }

    /// `None` for anything that is not a whole record of this version.
    pub fn decode(b: &[u8]) -> Option<Record> {
        if b.len() != RECORD_LEN || &b[0..4] != MAGIC || b[4] != VERSION {
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
