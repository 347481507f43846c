//! The warm start: what makes a fresh machine behave as if its cache were already warm.
//!
//! At close a run publishes what it used (a [`crate::format::manifest`] under a name from
//! the module, platform and CI branch: [`names`]) and, when it had to fetch much of it one by one, a [`pack`]
//! of those entries; at open the next fresh machine reads the newest manifests and fetches
//! their entries into the local tier ahead of the go command (`prefetch`). Built on the
//! remote tier ([`crate::remote`]); the tier knows nothing of it.

pub mod names;
pub mod pack;
pub(crate) mod prefetch;
