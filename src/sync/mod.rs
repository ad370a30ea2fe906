//! Sync over a network: one protocol for peer-to-peer and the relay.
//!
//! Layers, each in its own module:
//!
//! - [`message`]: what the two sides say (the bytes are
//!   [`crate::codec::encode_message`]'s business);
//! - [`session`]: the protocol core, a state machine with no I/O that
//!   brings two replicas up to date in both directions in bounded batches,
//!   each applied atomically and acknowledged after it committed;
//! - `batch`: cutting changesets into batches.
//!
//! An interrupted sync loses nothing: every applied batch is committed,
//! and the next session's version-vector exchange sends only what is still
//! missing.

mod batch;
pub mod error;
pub mod message;
pub mod session;

pub use error::SyncError;
pub use message::{Message, NoticeCode};
pub use session::{Access, Authorize, PeerInfo, Session, SessionConfig, SyncStats};

#[cfg(test)]
mod tests;
