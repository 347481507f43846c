//! The remote tier: what the cache does with a store.
//!
//! Above [`crate::store`] (bytes under keys), below [`crate::Cache`] and the warm start
//! ([`crate::warm`]): the tier fetches objects into the local tier and uploads puts in the
//! background, with single-flight and file locks (`tier`), weighs whether fetching still
//! pays ([`pace`]), and lets a get wait for an entry a stream has promised (`slots`). The
//! objects' bytes are [`crate::format::object`].

pub mod pace;
pub(crate) mod slots;
pub(crate) mod tier;
