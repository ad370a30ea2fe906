//! Bytes: every layout meldb writes, each with its version. The changeset
//! frames, stored metadata and digest input are the core's
//! ([`meldb_core::codec`], re-exported here whole); the sync protocol's
//! messages are the sync layer's (`sync::wire`), re-exported here so every
//! byte format is reachable from one place.

pub use crate::sync::wire::{
    decode_message, decode_message_versioned, encode_message, encode_message_as, frame_message,
    message_header, message_payload_len, ProtocolVersion, MAX_MESSAGE_PAYLOAD, MESSAGE_MAGIC,
    OLDEST_PROTOCOL_VERSION, PROTOCOL_VERSION,
};
pub use meldb_core::codec::*;

#[cfg(test)]
mod compact_tests;
