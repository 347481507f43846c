//! The warm-start pack: many remote objects in one, fetched in one streamed GET. An index
//! (a [`Table`] of 40-byte entries), then the frames in index order, each one remote
//! [`object`](super::object) exactly as it is stored under its own key:
//!
//! ```text
//! 0        12  table head: magic "GBCP", version 1, three bytes zero, entry count (u32)
//! 12   40 * n  per entry: ActionID (32), frame length (u64; 0: no frame)
//! ...      32  SHA-256 of the index before it
//! ...          the frames
//! ```
//!
//! The index is written first with zero lengths and overwritten once the frames are out
//! ([`index_len`] says how much room to leave).

use std::io::{self, Read};

use super::object::HEADER_LEN;
use super::{Table, Tag};
use crate::ids::ActionId;

const ENTRY: usize = 40;
const TABLE: Table = Table {
    tag: Tag {
        magic: b"GBCP",
        version: 1,
        what: "pack",
    },
    entry: ENTRY,
    max: MAX_ENTRIES,
};

/// Encoded bytes of frames per pack; a bigger warm start keeps its tail one by one.
pub const MAX_BYTES: u64 = 512 << 20;
/// Entries per pack, as many as a manifest holds.
pub const MAX_ENTRIES: usize = super::manifest::MAX_ENTRIES;

/// The bytes of the index of `n` entries.
pub fn index_len(n: usize) -> usize {
    TABLE.len(n)
}

/// The index of (ActionID, frame length) in stream order.
pub fn encode_index(items: &[(ActionId, u64)]) -> Vec<u8> {
    TABLE.encode(items.iter().map(|(action, len)| {
        let mut e = [0u8; ENTRY];
        e[..32].copy_from_slice(action.as_bytes());
        e[32..].copy_from_slice(&len.to_le_bytes());
        e
    }))
}

pub enum IndexError {
    /// Reading failed or ended early.
    Io(io::Error),
    /// The index is not a whole, valid one.
    Bad(String),
}

/// Reads and checks an index from the start of a pack: (ActionID, frame length) in stream
/// order. Reads nothing past it.
pub fn read_index<R: Read>(input: &mut R) -> Result<Vec<(ActionId, u64)>, IndexError> {
    let mut b = vec![0u8; Table::HEAD];
    input.read_exact(&mut b).map_err(IndexError::Io)?;
    let n = TABLE.count(&b).map_err(IndexError::Bad)?;
    b.resize(index_len(n), 0);
    input
        .read_exact(&mut b[Table::HEAD..])
        .map_err(IndexError::Io)?;
    let mut total = 0u64;
    let mut index = Vec::with_capacity(n);
    for c in TABLE.open(&b).map_err(IndexError::Bad)? {
        let action = ActionId::from_bytes(&c[..32]).expect("32 bytes");
        let len = u64::from_le_bytes(c[32..].try_into().expect("8 bytes"));
        if len != 0 && len < HEADER_LEN as u64 {
            return Err(IndexError::Bad(format!("a frame of {len} bytes")));
        }
        total = total.saturating_add(len);
        index.push((action, len));
    }
    if total > MAX_BYTES {
        return Err(IndexError::Bad(format!(
            "{total} bytes of frames is over the cap"
        )));
    }
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> ActionId {
        ActionId::from_bytes(&[n; 32]).unwrap()
    }

    fn bad(b: &[u8]) -> String {
        match read_index(&mut &b[..]) {
            Err(IndexError::Bad(m)) => m,
            Err(IndexError::Io(e)) => format!("io: {e}"),
            Ok(i) => panic!("accepted {i:?}"),
        }
    }

    #[test]
    fn an_index_round_trips_and_damage_is_refused() {
        let items = [(id(1), 500), (id(2), 0), (id(3), HEADER_LEN as u64)];
        let b = encode_index(&items);
        assert_eq!(b.len(), index_len(items.len()));
        let mut input = [&b[..], b"frames"].concat();
        let mut r = &input[..];
        assert_eq!(read_index(&mut r).ok().unwrap(), items);
        assert_eq!(r, b"frames", "reads the index only");
        for i in 0..b.len() {
            input[i] ^= 0x20;
            let _ = bad(&input); // every flipped bit is caught: magic, version, count or checksum
            input[i] ^= 0x20;
        }
        assert!(bad(&b[..b.len() - 1]).starts_with("io:"), "cut short");
        assert!(bad(&encode_index(&[(id(1), 10)])).contains("frame of 10"));
        let over = encode_index(&[(id(1), MAX_BYTES), (id(2), HEADER_LEN as u64)]);
        assert!(bad(&over).contains("over the cap"));
        let mut many = encode_index(&[]);
        many[8..12].copy_from_slice(&(MAX_ENTRIES as u32 + 1).to_le_bytes());
        assert!(bad(&many).contains("over the cap"));
    }
}
