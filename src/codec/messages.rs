//! Sync protocol messages as bytes.
//!
//! Each message is one frame with the changeset frame's layout (`MLDP |
//! protocol version | payload length | blake3(payload) | payload`) and a
//! bincode payload. A stream reader calls [`message_payload_len`] on the
//! 42-byte header first, so a declared length over the connection's limit
//! is refused before anything is allocated; [`decode_message`] then checks
//! the checksum and decodes with bincode's byte limit. Batches of changes
//! travel in the `compact` layout (a flags byte per row, delta-encoded
//! clocks and timestamps, a site table), as one byte string.

use super::compact;
use super::{check_header, decode_value, encode_value, frame_as, unframe_as, DecodeError};
use crate::mutator::{Push, PushResult};
use crate::resolve::Rejection;
use crate::sync::message::{Ack, Batch, Hello, Message, Notice, Sent, Want};
use serde::{Deserialize, Serialize};

/// The first bytes of every protocol message frame.
pub const MESSAGE_MAGIC: [u8; 4] = *b"MLDP";
/// The protocol version this build speaks and the newest it reads.
pub const PROTOCOL_VERSION: u16 = 1;
/// The largest message payload any connection accepts (64 MiB);
/// connections may set a lower limit.
pub const MAX_MESSAGE_PAYLOAD: usize = 64 << 20;

/// The payload layout. Variants keep their positions (bincode writes the
/// index); new ones go at the end.
#[derive(Serialize, Deserialize)]
enum WireMessage {
    Hello(Hello),
    Want(Want),
    Changes { seq: u64, changes: Bytes },
    Ack(Ack),
    Sent(Sent),
    Caught(u64),
    Notice(Notice),
    Rejections(Vec<Rejection>),
    Push(Push),
    PushAck(PushResult),
}

/// A byte string that serde hands to bincode whole (a length and the
/// bytes), not element by element.
struct Bytes(Vec<u8>);

impl Serialize for Bytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = Bytes;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Bytes, E> {
                Ok(Bytes(v.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
                Ok(Bytes(v))
            }
        }
        d.deserialize_byte_buf(Visit)
    }
}

/// Encodes a message as one frame.
pub fn encode_message(message: &Message) -> Vec<u8> {
    let wire = match message {
        Message::Hello(h) => WireMessage::Hello(h.clone()),
        Message::Want(w) => WireMessage::Want(w.clone()),
        Message::Changes(b) => WireMessage::Changes {
            seq: b.seq,
            changes: Bytes(compact::encode(&b.changes)),
        },
        Message::Ack(a) => WireMessage::Ack(*a),
        Message::Sent(s) => WireMessage::Sent(s.clone()),
        Message::Caught(id) => WireMessage::Caught(*id),
        Message::Notice(n) => WireMessage::Notice(n.clone()),
        Message::Rejections(r) => WireMessage::Rejections(r.clone()),
        Message::Push(p) => WireMessage::Push(p.clone()),
        Message::PushAck(r) => WireMessage::PushAck(r.clone()),
    };
    frame_as(MESSAGE_MAGIC, PROTOCOL_VERSION, &encode_value(&wire))
}

/// Wraps a payload in a message frame header with a valid checksum. Public
/// so fuzz targets reach the message decoder past the checksum.
pub fn frame_message(payload: &[u8]) -> Vec<u8> {
    frame_as(MESSAGE_MAGIC, PROTOCOL_VERSION, payload)
}

/// Checks a message frame's header (the first [`super::HEADER_LEN`] bytes):
/// magic, version and the declared payload length against `limit` (capped
/// at [`MAX_MESSAGE_PAYLOAD`]). Returns the payload length.
pub fn message_payload_len(header: &[u8], limit: usize) -> Result<usize, DecodeError> {
    check_header(
        header,
        MESSAGE_MAGIC,
        PROTOCOL_VERSION,
        limit.min(MAX_MESSAGE_PAYLOAD),
    )
}

/// Decodes one whole message frame whose payload is at most `limit` bytes.
pub fn decode_message(frame: &[u8], limit: usize) -> Result<Message, DecodeError> {
    let payload = unframe_as(
        frame,
        MESSAGE_MAGIC,
        PROTOCOL_VERSION,
        limit.min(MAX_MESSAGE_PAYLOAD),
    )?;
    Ok(
        match decode_value::<WireMessage, MAX_MESSAGE_PAYLOAD>(payload, "message")? {
            WireMessage::Hello(h) => Message::Hello(h),
            WireMessage::Want(w) => Message::Want(w),
            WireMessage::Changes { seq, changes } => Message::Changes(Batch {
                seq,
                changes: compact::decode(&changes.0)?,
            }),
            WireMessage::Ack(a) => Message::Ack(a),
            WireMessage::Sent(s) => Message::Sent(s),
            WireMessage::Caught(id) => Message::Caught(id),
            WireMessage::Notice(n) => Message::Notice(n),
            WireMessage::Rejections(r) => Message::Rejections(r),
            WireMessage::Push(p) => Message::Push(p),
            WireMessage::PushAck(r) => Message::PushAck(r),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::changeset::{Changeset, Cover, RowChange, TableChanges};
    use crate::clock::{Hlc, SiteId};
    use crate::codec::HEADER_LEN;
    use crate::crdt::{ColumnState, Lww, RowClock};
    use crate::merge::RowState;
    use crate::mutator::{MutationRejection, PendingMutation};
    use crate::sync::message::{NoticeCode, Processed};
    use crate::value::Value;
    use crate::version::VersionVector;

    fn site(n: u8) -> SiteId {
        SiteId::from_bytes([n; 16])
    }

    fn every_message() -> Vec<Message> {
        let mut have = VersionVector::new();
        have.insert(site(1), 1, 7);
        have.insert(site(2), 3, 4);
        let mut changes = Changeset::new(site(1));
        changes.tables.push(TableChanges {
            table: "item".into(),
            columns: vec!["name".into()],
            rows: vec![RowChange {
                key: vec![Value::Text("A1".into())],
                state: RowState {
                    cl: 1,
                    clock: RowClock::from_entries(vec![(site(1), 7)]),
                    hlc: Hlc(1 << 40),
                    writer: site(1),
                    columns: vec![Some(ColumnState::Lww(Lww {
                        hlc: Hlc(1 << 40),
                        site: site(1),
                        value: Value::Text("Apple".into()),
                    }))],
                },
                covers: vec![Cover {
                    site: site(1),
                    first: 1,
                    last: 7,
                }],
            }],
        });
        vec![
            Message::Hello(Hello {
                site: site(1),
                schema: "inventory".into(),
                schema_version: 2,
                token: Some("secret".into()),
                accepts_changes: true,
                live: false,
            }),
            Message::Want(Want {
                id: 3,
                have,
                first_pending: Some(17),
            }),
            Message::Changes(Batch { seq: 9, changes }),
            Message::Ack(Ack { seq: 9, applied: 1 }),
            Message::Sent(Sent {
                want: 3,
                first: 9,
                last: 9,
                mutations: Some(Processed {
                    last_processed: 18,
                    rejected: vec![MutationRejection {
                        id: 17,
                        name: "book".into(),
                        error: "taken".into(),
                    }],
                }),
            }),
            Message::Push(Push {
                client: site(1),
                mutations: vec![PendingMutation {
                    id: 17,
                    name: "book".into(),
                    args: r#"["A1","alice"]"#.into(),
                }],
            }),
            Message::PushAck(PushResult {
                last_processed: 18,
                applied: vec![18],
                rejected: vec![],
                duplicates: 1,
            }),
            Message::Caught(3),
            Message::Notice(Notice {
                code: NoticeCode::ReadOnly,
                message: "token is read-only".into(),
            }),
            Message::Rejections(vec![Rejection {
                authority: site(9),
                seq: 4,
                writer: site(1),
                table: "item".into(),
                key: crate::value::Key(vec![Value::Text("A1".into())]),
                reason: "sold out".into(),
                rejected: r#"{"sku":"A1"}"#.into(),
                at_ms: 1_700_000_000_000,
            }]),
        ]
    }

    #[test]
    fn every_message_round_trips() -> Result<(), DecodeError> {
        for message in every_message() {
            let bytes = encode_message(&message);
            let len = message_payload_len(&bytes[..HEADER_LEN], MAX_MESSAGE_PAYLOAD)?;
            assert_eq!(len + HEADER_LEN, bytes.len());
            assert_eq!(decode_message(&bytes, MAX_MESSAGE_PAYLOAD)?, message);
        }
        Ok(())
    }

    #[test]
    fn damaged_frames_are_errors() {
        for message in every_message() {
            let bytes = encode_message(&message);
            for cut in 0..bytes.len() {
                assert!(decode_message(&bytes[..cut], MAX_MESSAGE_PAYLOAD).is_err());
            }
            for i in 0..bytes.len() {
                let mut bad = bytes.clone();
                bad[i] ^= 0x40;
                assert!(
                    decode_message(&bad, MAX_MESSAGE_PAYLOAD).is_err(),
                    "{} with byte {i} flipped decoded",
                    message.name()
                );
            }
        }
    }

    #[test]
    fn newer_version_oversize_and_changeset_frames_are_refused() {
        let bytes = encode_message(&Message::Caught(1));
        let mut newer = bytes.clone();
        newer[4..6].copy_from_slice(&(PROTOCOL_VERSION + 1).to_le_bytes());
        assert_eq!(
            decode_message(&newer, MAX_MESSAGE_PAYLOAD),
            Err(DecodeError::UnsupportedVersion {
                found: PROTOCOL_VERSION + 1,
                supported: PROTOCOL_VERSION
            })
        );
        let big = encode_message(&every_message()[2]);
        assert!(matches!(
            message_payload_len(&big[..HEADER_LEN], 8),
            Err(DecodeError::TooLarge { limit: 8, .. })
        ));
        let changeset_frame = crate::codec::encode_changeset(&Changeset::new(site(1)));
        assert!(matches!(
            decode_message(&changeset_frame, MAX_MESSAGE_PAYLOAD),
            Err(DecodeError::BadMagic { .. })
        ));
    }

    #[test]
    fn hostile_counts_inside_a_valid_frame_are_malformed() {
        // Variant 1 (Want), id 1, then a version vector claiming 2^60 sites.
        let mut payload = vec![1u8, 1];
        payload.push(0xff);
        payload.extend_from_slice(&(1u64 << 60).to_le_bytes());
        let frame = frame_as(MESSAGE_MAGIC, PROTOCOL_VERSION, &payload);
        assert!(matches!(
            decode_message(&frame, MAX_MESSAGE_PAYLOAD),
            Err(DecodeError::Malformed { .. })
        ));
        let unknown_variant = frame_as(MESSAGE_MAGIC, PROTOCOL_VERSION, &[200]);
        assert!(decode_message(&unknown_variant, MAX_MESSAGE_PAYLOAD).is_err());
    }
}
