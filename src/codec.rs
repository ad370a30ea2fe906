//! Bytes: every format meldb writes, each with its version, reachable
//! from one place. Changeset frames are the core's
//! ([`meldb_core::codec`]); the sync protocol's messages are the sync
//! layer's (`sync::wire`, with the `sync` feature). This module only re-exports, for applications:
//! nothing inside meldb imports it, so it adds no arrow between layers.

#[cfg(feature = "sync")]
pub use crate::sync::wire::{
    decode_message, decode_message_on, decode_message_versioned, encode_batch_body, encode_message,
    encode_message_as, encode_message_on, message_header, message_payload_len, Compression,
    Incoming, Outgoing, ProtocolVersion, COMPRESS_FROM, MAX_MESSAGE_PAYLOAD, MESSAGE_MAGIC,
    OLDEST_PROTOCOL_VERSION, PROTOCOL_VERSION,
};
// The test kit's: a valid header around any payload, for tests and
// fuzzing that craft bad payloads. Not for applications.
#[cfg(feature = "testkit")]
#[doc(hidden)]
pub use crate::sync::wire::{frame_body, frame_compressed_batch, frame_message};
pub use meldb_core::codec::{
    decode_changeset, decode_changeset_frames, decode_changeset_versioned, encode_changeset,
    encode_changeset_as, encode_changeset_frames, DecodeError, Versions, FORMAT_VERSION,
    HEADER_LEN, MAGIC, MAX_FRAME_PAYLOAD, OLDEST_FORMAT_VERSION,
};
#[cfg(any(test, feature = "testkit"))]
#[doc(hidden)]
pub use meldb_core::codec::{frame, unframe};

#[cfg(test)]
mod compact_tests;
