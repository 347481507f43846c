//! The warm-start manifest: the ActionIDs recent runs used, in the order to fetch them, each
//! with its age (publishes since a run last used it). A table (`format/mod.rs`) of 33-byte
//! entries:
//!
//! ```text
//! 0        12  table head: magic "GBCM", version 1, three bytes zero, entry count (u32)
//! 12   33 * n  per entry: ActionID (32), age (1)
//! ...      32  SHA-256 of everything before it
//! ```

use std::collections::HashMap;

use super::{Table, Tag};
use crate::ids::ActionId;

const ENTRY: usize = 33;
const TABLE: Table = Table {
    tag: Tag {
        magic: b"GBCM",
        version: 1,
        what: "manifest",
    },
    entry: ENTRY,
    max: MAX_ENTRIES,
};

/// Entries kept per manifest: ~3.3 MB, far beyond what one module's builds use
/// (`go build std` uses ~1,100), small enough to read at every start.
pub const MAX_ENTRIES: usize = 100_000;
/// The largest object that can be a valid manifest; anything bigger is not read in full.
pub const MAX_BYTES: u64 = TABLE.len(MAX_ENTRIES) as u64;
/// An entry no run used in this many publishes is dropped: the code it came from is gone.
pub const MAX_AGE: u8 = 10;

/// ActionIDs in the order they should be fetched, with their ages.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Manifest {
    pub entries: Vec<(ActionId, u8)>,
}

impl Manifest {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn encode(&self) -> Vec<u8> {
        let n = self.entries.len().min(MAX_ENTRIES);
        TABLE.encode(self.entries[..n].iter().map(|(id, age)| {
            let mut e = [0u8; ENTRY];
            e[..32].copy_from_slice(id.as_bytes());
            e[32] = *age;
            e
        }))
    }

    pub fn decode(b: &[u8]) -> Result<Manifest, String> {
        let entries = TABLE
            .open(b)?
            .map(|c| {
                let id = ActionId::from_bytes(&c[..32]).expect("32 bytes");
                (id, c[32])
            })
            .collect();
        Ok(Manifest { entries })
    }

    /// The union of several manifests (newest first): each ActionID once, at its first
    /// position, with its smallest age.
    pub fn merge<'a>(newest_first: impl IntoIterator<Item = &'a Manifest>) -> Manifest {
        let mut pos: HashMap<ActionId, usize> = HashMap::new();
        let mut entries: Vec<(ActionId, u8)> = Vec::new();
        for m in newest_first {
            for &(id, age) in &m.entries {
                match pos.get(&id) {
                    Some(&i) => entries[i].1 = entries[i].1.min(age),
                    None => {
                        pos.insert(id, entries.len());
                        entries.push((id, age));
                    }
                }
            }
        }
        Manifest { entries }
    }

    /// What this run publishes: the IDs it used (in order of use, age 0) followed by the
    /// older entries it did not use, one publish older; stale ones dropped, capped.
    pub fn next(&self, used: &[ActionId]) -> Manifest {
        let fresh = Manifest {
            entries: used.iter().map(|&id| (id, 0)).collect(),
        };
        let older = Manifest {
            entries: self
                .entries
                .iter()
                .filter(|(_, age)| *age < MAX_AGE)
                .map(|&(id, age)| (id, age + 1))
                .collect(),
        };
        let mut m = Manifest::merge([&fresh, &older]);
        m.entries.truncate(MAX_ENTRIES);
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> ActionId {
        ActionId::from_bytes(&[n; 32]).unwrap()
    }

    #[test]
    fn round_trip_and_damage() {
        let m = Manifest {
            entries: vec![(id(1), 0), (id(2), 3)],
        };
        let b = m.encode();
        assert_eq!(Manifest::decode(&b).unwrap(), m);
        for i in [0, 4, 8, 12, 40, b.len() - 1] {
            let mut bad = b.clone();
            bad[i] ^= 1;
            assert!(Manifest::decode(&bad).is_err(), "flip at {i} accepted");
        }
        assert!(Manifest::decode(&b[..b.len() - 1]).is_err());
        assert!(Manifest::decode(b"GBCM").is_err());
        // A header claiming more than the cap is refused before anything is allocated.
        let mut huge = b.clone();
        huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Manifest::decode(&huge).unwrap_err().contains("cap"));
    }

    #[test]
    fn merge_keeps_first_position_and_youngest_age() {
        let a = Manifest {
            entries: vec![(id(1), 2), (id(2), 0)],
        };
        let b = Manifest {
            entries: vec![(id(3), 0), (id(1), 0)],
        };
        let m = Manifest::merge([&a, &b]);
        assert_eq!(m.entries, vec![(id(1), 0), (id(2), 0), (id(3), 0)]);
    }

    #[test]
    fn next_puts_used_first_ages_the_rest_and_drops_stale() {
        let old = Manifest {
            entries: vec![(id(1), 0), (id(2), MAX_AGE), (id(3), 4)],
        };
        let m = old.next(&[id(3), id(9)]);
        assert_eq!(m.entries, vec![(id(3), 0), (id(9), 0), (id(1), 1)]);
    }

    #[test]
    fn next_is_capped() {
        let used: Vec<ActionId> = (0..MAX_ENTRIES as u32 + 10)
            .map(|i| {
                let mut b = [0u8; 32];
                b[..4].copy_from_slice(&i.to_le_bytes());
                ActionId::from_bytes(&b).unwrap()
            })
            .collect();
        let m = Manifest::default().next(&used);
        assert_eq!(m.len(), MAX_ENTRIES);
        assert_eq!(Manifest::decode(&m.encode()).unwrap().len(), MAX_ENTRIES);
    }
}
