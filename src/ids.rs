//! Action and output IDs.
//!
//! Both are SHA-256 sized. They come from untrusted input (the protocol, the C ABI) and end up
//! in file names, so they are checked once, when built, and only ever rendered as lowercase hex.

use std::fmt;

use crate::Error;

/// Length in bytes of every ID the go command uses (`cmd/go/internal/cache.HashSize`).
pub const ID_LEN: usize = 32;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name([u8; ID_LEN]);

        impl $name {
            /// Builds an ID from raw bytes; anything but exactly 32 bytes is rejected.
            pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
                let arr: [u8; ID_LEN] = bytes.try_into().map_err(|_| {
                    Error::InvalidId(format!(
                        concat!($what, " must be {} bytes, got {}"),
                        ID_LEN,
                        bytes.len()
                    ))
                })?;
                Ok(Self(arr))
            }

            /// Parses the 64-character lowercase or uppercase hex form.
            pub fn from_hex(s: &str) -> Result<Self, Error> {
                let bytes = decode_hex(s).ok_or_else(|| {
                    Error::InvalidId(format!(concat!($what, " is not 64 hex digits: {:?}"), truncate(s)))
                })?;
                Ok(Self(bytes))
            }

            pub fn as_bytes(&self) -> &[u8; ID_LEN] {
                &self.0
            }

            /// Lowercase hex: the only form that ever touches a path.
            pub fn to_hex(&self) -> String {
                encode_hex(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.to_hex())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }
    };
}

id_type!(
    /// The cache key: the go command's hash of an action's inputs.
    ActionId,
    "ActionID"
);
id_type!(
    /// The SHA-256 of an output body; bodies are stored under it.
    OutputId,
    "OutputID"
);

impl OutputId {
    /// The OutputID of a body, as the go command computes it.
    pub fn of(body: &[u8]) -> OutputId {
        use sha2::Digest;
        OutputId(sha2::Sha256::digest(body).into())
    }

    pub(crate) fn from_digest(d: [u8; ID_LEN]) -> OutputId {
        OutputId(d)
    }
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(80) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

pub(crate) fn encode_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

fn decode_hex(s: &str) -> Option<[u8; ID_LEN]> {
    let s = s.as_bytes();
    if s.len() != ID_LEN * 2 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let mut out = [0u8; ID_LEN];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_checked() {
        assert!(ActionId::from_bytes(&[0u8; 31]).is_err());
        assert!(ActionId::from_bytes(&[0u8; 33]).is_err());
        assert!(ActionId::from_bytes(&[]).is_err());
        assert!(ActionId::from_bytes(&[7u8; 32]).is_ok());
    }

    #[test]
    fn hex_round_trip_and_rejects_traversal() {
        let id = OutputId::of(b"hello");
        assert_eq!(OutputId::from_hex(&id.to_hex()).unwrap(), id);
        assert_eq!(
            id.to_hex(),
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert!(ActionId::from_hex("../../etc/passwd").is_err());
        let sneaky = format!("{}/..", &"a".repeat(61));
        assert!(ActionId::from_hex(&sneaky).is_err());
        assert!(ActionId::from_hex(&"g".repeat(64)).is_err());
    }
}
