//! Bytes: the one module that knows how anything meldb writes is laid out.
//!
//! Every layout is written by hand, field by field, in the primitives of
//! `bin`; no derive decides a byte, so changing an API struct cannot change
//! a format by accident. The formats, each with its version:
//!
//! - changeset *frames* (files, held rows): the payload is `wire`'s layout;
//!   frame format [`FORMAT_VERSION`].
//! - sync protocol *messages* (the network): the same frame layout with
//!   their own magic and version, laid out by the sync layer (`meldb`'s
//!   `sync::wire`) in these primitives; batches inside them use the
//!   `compact` layout.
//! - bytes stored inside SQLite (`stored`: packed row metadata and undo
//!   images) and the digest input (`digest`): versioned with the database
//!   format (`meldb_meta.format`).
//!
//! Golden fixtures in `tests/fixtures/` pin every one of them: a change
//! that alters bytes fails those tests, and must come with a new version.
//!
//! A frame is `MAGIC (4) | format version (u16 LE) | payload length (u32 LE)
//! | blake3(payload) (32) | payload`. Decoding checks, in order: enough bytes
//! for a header ([`DecodeError::Truncated`]), the magic, the version (a newer
//! format is refused, never guessed at), the length against
//! [`MAX_FRAME_PAYLOAD`] before anything is allocated, the checksum, and only
//! then decodes the payload, every count checked against the bytes left, so
//! no length field inside it can claim more elements than the frame has.

#[doc(hidden)]
pub mod bin;
mod column;
#[doc(hidden)]
pub mod compact;
mod digest;
#[doc(hidden)]
pub mod stored;
mod wire;

#[doc(hidden)]
pub use digest::digest_row;

use crate::changeset::Changeset;
use thiserror::Error;

/// The first bytes of every frame.
pub const MAGIC: [u8; 4] = *b"MLDB";
/// The frame format this build writes and the newest it reads.
///
/// Version 2 added each row's write metadata (`RowState::meta`) at the
/// end of the row.
pub const FORMAT_VERSION: u16 = 2;
/// The oldest frame format this build reads: the version before
/// [`FORMAT_VERSION`]. See [`Versions`].
pub const OLDEST_FORMAT_VERSION: u16 = 1;

/// The versions of one format a build reads, and the rule they follow:
/// every format carries its version; a build writes its newest and reads
/// that and the one before, so files and peers one version behind keep
/// working while everyone upgrades; anything outside the range is refused
/// with an error that names the version needed
/// ([`DecodeError::UnsupportedVersion`], [`DecodeError::ObsoleteVersion`]),
/// never guessed at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Versions {
    /// The format's name, for errors.
    pub format: &'static str,
    /// The oldest version read.
    pub oldest: u16,
    /// The newest version read, and the one written.
    pub newest: u16,
}

impl Versions {
    /// Changeset frames (files, held rows).
    pub const CHANGESET: Versions = Versions {
        format: "changeset frame format",
        oldest: OLDEST_FORMAT_VERSION,
        newest: FORMAT_VERSION,
    };

    /// Checks a version read from a frame header.
    pub fn check(&self, found: u16) -> Result<u16, DecodeError> {
        if found > self.newest {
            Err(DecodeError::UnsupportedVersion {
                format: self.format,
                found,
                supported: self.newest,
            })
        } else if found < self.oldest {
            Err(DecodeError::ObsoleteVersion {
                format: self.format,
                found,
                oldest: self.oldest,
            })
        } else {
            Ok(found)
        }
    }
}
/// Header size: magic, version, length, checksum.
pub const HEADER_LEN: usize = 4 + 2 + 4 + 32;
/// The largest payload accepted (64 MiB: about 600,000 rows of a
/// 3-column table). Decoded structures take more memory than their
/// encoding (up to tens of times for payloads of tiny fields), so this
/// bound is also the bound on what a hostile frame can make us allocate;
/// larger exports are sent as several frames (`Changeset::split`).
pub const MAX_FRAME_PAYLOAD: usize = 64 << 20;

/// Why bytes could not be decoded.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// Fewer bytes than the header or the declared length needs.
    #[error("truncated frame: need {needed} bytes, have {available}")]
    Truncated {
        /// Bytes needed.
        needed: usize,
        /// Bytes present.
        available: usize,
    },
    /// Not a meldb frame.
    #[error("not a meldb frame: bad magic bytes {found:02x?} at offset 0")]
    BadMagic {
        /// What was there instead.
        found: [u8; 4],
    },
    /// A frame from a newer meldb.
    #[error("{format} version {found} is newer than this meldb reads (up to version {supported}); upgrade to a meldb that reads version {found}")]
    UnsupportedVersion {
        /// Which format: "changeset frame format" or "sync protocol".
        format: &'static str,
        /// The frame's version.
        found: u16,
        /// The newest this build reads.
        supported: u16,
    },
    /// A frame from a meldb older than this build still reads.
    #[error("{format} version {found} is older than this meldb reads (versions {oldest} and up); the peer or file needs a meldb that speaks version {oldest} or newer")]
    ObsoleteVersion {
        /// Which format: "changeset frame format" or "sync protocol".
        format: &'static str,
        /// The frame's version.
        found: u16,
        /// The oldest this build reads.
        oldest: u16,
    },
    /// The declared payload is larger than allowed.
    #[error("frame payload of {declared} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Declared payload size.
        declared: usize,
        /// The limit.
        limit: usize,
    },
    /// The payload does not match its checksum.
    #[error("frame checksum mismatch: the payload is corrupt")]
    Checksum,
    /// Bytes after the declared payload.
    #[error("{extra} unexpected bytes after the frame payload at offset {offset}")]
    TrailingBytes {
        /// Where they start.
        offset: usize,
        /// How many.
        extra: usize,
    },
    /// The payload's structure is invalid.
    #[error("malformed {what}: {message}")]
    Malformed {
        /// What was being decoded.
        what: &'static str,
        /// What was wrong, and at which byte of the payload.
        message: String,
    },
}

/// Encodes a changeset as one frame.
pub fn encode_changeset(changeset: &Changeset) -> Vec<u8> {
    frame(&wire::encode(changeset, FORMAT_VERSION))
}

/// Encodes a changeset as one frame of format `version` (one this build
/// reads: [`Versions::CHANGESET`]), for files an older meldb must read.
/// Version 1 has no write metadata: the rows' metadata is left out.
pub fn encode_changeset_as(changeset: &Changeset, version: u16) -> Result<Vec<u8>, DecodeError> {
    let version = Versions::CHANGESET.check(version)?;
    Ok(frame_as(MAGIC, version, &wire::encode(changeset, version)))
}

/// Encodes a changeset as one frame, or, when its payload would exceed
/// [`MAX_FRAME_PAYLOAD`], as several frames back to back (split by rows),
/// each decodable on its own. [`decode_changeset_frames`] reads them. A
/// single row larger than the limit still makes a frame the decoder refuses.
pub fn encode_changeset_frames(changeset: &Changeset) -> Vec<u8> {
    let payload = wire::encode(changeset, FORMAT_VERSION);
    if payload.len() <= MAX_FRAME_PAYLOAD || changeset.len() <= 1 {
        return frame(&payload);
    }
    changeset
        .split(changeset.len().div_ceil(2))
        .iter()
        .flat_map(encode_changeset_frames)
        .collect()
}

/// Decodes one or more frames written back to back.
pub fn decode_changeset_frames(mut bytes: &[u8]) -> Result<Vec<Changeset>, DecodeError> {
    let mut out = Vec::new();
    loop {
        let header = bytes.get(..HEADER_LEN).ok_or(DecodeError::Truncated {
            needed: HEADER_LEN,
            available: bytes.len(),
        })?;
        let declared = u32::from_le_bytes([header[6], header[7], header[8], header[9]]) as usize;
        let end = HEADER_LEN.saturating_add(declared).min(bytes.len());
        // A frame longer than what is left fails inside decode_changeset as
        // truncated; a bad header fails there too, before any allocation.
        let (this, rest) = bytes.split_at(if declared > MAX_FRAME_PAYLOAD {
            bytes.len()
        } else {
            end
        });
        out.push(decode_changeset(this)?);
        if rest.is_empty() {
            return Ok(out);
        }
        bytes = rest;
    }
}

/// Wraps a payload in a frame header. Public so fuzz targets can reach the
/// payload decoder past the checksum.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    frame_as(MAGIC, FORMAT_VERSION, payload)
}

/// A frame with the given magic and version (changeset files and protocol
/// messages share the layout, not the magic).
#[doc(hidden)]
pub fn frame_as(magic: [u8; 4], version: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&magic);
    out.extend_from_slice(&version.to_le_bytes());
    // Payloads over 4 GiB cannot be expressed; they are far over
    // MAX_FRAME_PAYLOAD anyway, so a saturated length is refused on decode.
    out.extend_from_slice(
        &u32::try_from(payload.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    out.extend_from_slice(blake3::hash(payload).as_bytes());
    out.extend_from_slice(payload);
    out
}

/// Checks a frame's header and checksum and returns its payload.
pub fn unframe(bytes: &[u8]) -> Result<&[u8], DecodeError> {
    unframe_as(bytes, MAGIC, Versions::CHANGESET, MAX_FRAME_PAYLOAD).map(|(_, payload)| payload)
}

/// Checks a header's magic, version and declared length (against `limit`)
/// and returns the version and the payload length. Reads nothing past the
/// header, so a stream reader can call it before allocating the payload.
#[doc(hidden)]
pub fn check_header(
    header: &[u8],
    magic: [u8; 4],
    versions: Versions,
    limit: usize,
) -> Result<(u16, usize), DecodeError> {
    let header = header.get(..HEADER_LEN).ok_or(DecodeError::Truncated {
        needed: HEADER_LEN,
        available: header.len(),
    })?;
    if header[..4] != magic {
        let mut found = [0; 4];
        found.copy_from_slice(&header[..4]);
        return Err(DecodeError::BadMagic { found });
    }
    let version = versions.check(u16::from_le_bytes([header[4], header[5]]))?;
    let declared = u32::from_le_bytes([header[6], header[7], header[8], header[9]]) as usize;
    if declared > limit {
        return Err(DecodeError::TooLarge { declared, limit });
    }
    Ok((version, declared))
}

#[doc(hidden)]
pub fn unframe_as(
    bytes: &[u8],
    magic: [u8; 4],
    versions: Versions,
    limit: usize,
) -> Result<(u16, &[u8]), DecodeError> {
    let (version, declared) = check_header(bytes, magic, versions, limit)?;
    let end = HEADER_LEN + declared;
    let payload = bytes.get(HEADER_LEN..end).ok_or(DecodeError::Truncated {
        needed: end,
        available: bytes.len(),
    })?;
    if bytes.len() > end {
        return Err(DecodeError::TrailingBytes {
            offset: end,
            extra: bytes.len() - end,
        });
    }
    if blake3::hash(payload).as_bytes()[..] != bytes[10..HEADER_LEN] {
        return Err(DecodeError::Checksum);
    }
    Ok((version, payload))
}

/// Decodes one changeset frame, of any format version this build reads.
pub fn decode_changeset(bytes: &[u8]) -> Result<Changeset, DecodeError> {
    decode_changeset_versioned(bytes).map(|(_, cs)| cs)
}

/// Decodes one changeset frame and says which format version it was
/// written in: the layout is chosen by the version `unframe_as` checked.
pub fn decode_changeset_versioned(bytes: &[u8]) -> Result<(u16, Changeset), DecodeError> {
    let (version, payload) = unframe_as(bytes, MAGIC, Versions::CHANGESET, MAX_FRAME_PAYLOAD)?;
    Ok((version, wire::decode(payload, version)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SiteId;

    #[test]
    fn frame_round_trips_and_every_corruption_is_caught() -> Result<(), DecodeError> {
        let cs = Changeset::new(SiteId::from_bytes([7; 16]));
        let bytes = encode_changeset(&cs);
        assert_eq!(decode_changeset(&bytes)?, cs);

        for cut in 0..bytes.len() {
            assert!(decode_changeset(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut flipped = bytes.clone();
        if let Some(last) = flipped.last_mut() {
            *last ^= 1;
        }
        assert_eq!(decode_changeset(&flipped), Err(DecodeError::Checksum));

        let mut newer = bytes.clone();
        newer[4..6].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
        assert!(matches!(
            decode_changeset(&newer),
            Err(DecodeError::UnsupportedVersion { found, .. }) if found == FORMAT_VERSION + 1
        ));

        let mut huge = bytes.clone();
        huge[6..10].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decode_changeset(&huge),
            Err(DecodeError::TooLarge { .. })
        ));

        let mut trailing = bytes;
        trailing.push(0);
        assert!(matches!(
            decode_changeset(&trailing),
            Err(DecodeError::TrailingBytes { .. })
        ));
        Ok(())
    }

    #[test]
    fn several_frames_back_to_back_decode_in_order() -> Result<(), DecodeError> {
        let a = Changeset::new(SiteId::from_bytes([1; 16]));
        let b = Changeset::new(SiteId::from_bytes([2; 16]));
        let mut bytes = encode_changeset(&a);
        bytes.extend(encode_changeset(&b));
        assert_eq!(decode_changeset_frames(&bytes)?, vec![a.clone(), b]);
        assert_eq!(
            decode_changeset_frames(&encode_changeset_frames(&a))?,
            vec![a]
        );
        assert!(decode_changeset_frames(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode_changeset_frames(&[]).is_err());
        Ok(())
    }

    fn metadata_changeset(meta: Option<&str>) -> Changeset {
        use crate::changeset::{Cover, RowChange, TableChanges};
        use crate::clock::Hlc;
        use crate::crdt::{ColumnState, Lww, RowClock};
        use crate::merge::RowState;
        use crate::resolve::WriteMetadata;
        use crate::value::Value;
        let site = SiteId::from_bytes([3; 16]);
        let mut cs = Changeset::new(site);
        cs.tables.push(TableChanges {
            table: "seat".into(),
            columns: vec!["note".into()],
            rows: vec![RowChange {
                key: vec![Value::Text("A1".into())],
                state: RowState {
                    cl: 1,
                    clock: RowClock::from_entries([(site, 4)]),
                    hlc: Hlc(1 << 40),
                    writer: site,
                    columns: vec![Some(ColumnState::Lww(Lww {
                        hlc: Hlc(1 << 40),
                        site,
                        value: Value::Text("aisle".into()),
                    }))],
                    meta: meta.map(|m| WriteMetadata::new(m).expect("small")),
                },
                covers: vec![Cover {
                    site,
                    first: 1,
                    last: 4,
                }],
            }],
        });
        cs
    }

    /// Changeset format 2 ends each row with its write metadata; format 1,
    /// still read and still written on request, has none.
    #[test]
    fn format_2_carries_write_metadata_and_format_1_leaves_it_out() -> Result<(), DecodeError> {
        let with = metadata_changeset(Some(r#"{"device":"till-2"}"#));
        let bytes = encode_changeset(&with);
        assert_eq!(bytes[4..6], 2u16.to_le_bytes());
        assert_eq!(decode_changeset_versioned(&bytes)?, (2, with.clone()));
        for cut in 0..bytes.len() {
            assert!(decode_changeset(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let v1 = encode_changeset_as(&with, 1)?;
        assert_eq!(
            decode_changeset_versioned(&v1)?,
            (1, metadata_changeset(None))
        );
        // Without metadata, format 2 is format 1 plus one `None` byte per row.
        let none = metadata_changeset(None);
        let (a, b) = (encode_changeset_as(&none, 1)?, encode_changeset(&none));
        assert_eq!(b.len(), a.len() + 1);
        assert_eq!(b[HEADER_LEN..b.len() - 1], a[HEADER_LEN..]);
        assert!(matches!(
            encode_changeset_as(&none, 3),
            Err(DecodeError::UnsupportedVersion { found: 3, .. })
        ));
        // Metadata over the bound, with a valid checksum, is refused.
        let big = metadata_changeset(None);
        let mut payload = wire::encode(&big, 2);
        payload.pop();
        payload.push(1);
        let mut e = bin::Enc::new();
        e.str(&"x".repeat(crate::resolve::WriteMetadata::MAX_BYTES + 1));
        payload.extend(e.into_bytes());
        assert!(matches!(
            decode_changeset(&frame(&payload)),
            Err(DecodeError::Malformed { .. })
        ));
        Ok(())
    }

    /// The compact batch layout: with metadata (protocol 3) a row's
    /// metadata round-trips behind flag 0x80; without it the metadata is
    /// left out and the flag refused.
    #[test]
    fn compact_batches_carry_metadata_only_when_asked() -> Result<(), DecodeError> {
        let with = metadata_changeset(Some("screen=map"));
        let bytes = compact::encode_as(&with, true);
        assert_eq!(compact::decode_as(&bytes, true)?, with);
        for cut in 0..bytes.len() {
            assert!(
                compact::decode_as(&bytes[..cut], true).is_err(),
                "cut at {cut}"
            );
        }
        assert!(matches!(
            compact::decode_as(&bytes, false),
            Err(DecodeError::Malformed { .. })
        ));
        let without = compact::encode_as(&with, false);
        assert_eq!(
            compact::decode_as(&without, false)?,
            metadata_changeset(None)
        );
        assert_eq!(
            compact::decode_as(&without, true)?,
            metadata_changeset(None)
        );
        assert_eq!(
            without,
            compact::encode_as(&metadata_changeset(None), true),
            "a row without metadata costs nothing"
        );
        Ok(())
    }

    /// Stored row metadata: format 3 appends the write metadata when there
    /// is some; a blob without it (every format-1 and format-2 blob) reads
    /// as a row without.
    #[test]
    fn stored_blobs_end_with_write_metadata_only_when_there_is_some() -> Result<(), DecodeError> {
        use std::convert::Infallible;
        let site = |idx: u32| Some(SiteId(uuid::Uuid::from_u128(idx.into())));
        let index = |s: SiteId| Ok::<u32, Infallible>(s.0.as_u128() as u32);
        let with = metadata_changeset(Some("approved")).tables[0].rows[0]
            .state
            .clone();
        let without = metadata_changeset(None).tables[0].rows[0].state.clone();
        let values = || vec![crate::value::Value::Text("aisle".into())];
        let Ok(a) = stored::encode_meta(&without, index);
        let Ok(b) = stored::encode_meta(&with, index);
        assert_eq!(b[..a.len()], a[..], "the metadata is appended");
        assert_eq!(stored::decode_meta(&a, site, values())?.meta, None);
        let read = stored::decode_meta(&b, site, values())?;
        assert_eq!(read.meta.as_ref().map(|m| m.as_str()), Some("approved"));
        for cut in a.len() + 1..b.len() {
            assert!(
                stored::decode_meta(&b[..cut], site, values()).is_err(),
                "cut at {cut}"
            );
        }
        Ok(())
    }

    #[test]
    fn hostile_length_inside_a_valid_frame_does_not_allocate() {
        // A payload claiming a vector of 2^60 tables, with a correct checksum.
        let mut payload = vec![7u8; 16];
        payload.push(0xff);
        payload.extend_from_slice(&(1u64 << 60).to_le_bytes());
        let result = decode_changeset(&frame(&payload));
        assert!(
            matches!(result, Err(DecodeError::Malformed { .. })),
            "{result:?}"
        );
    }
}
