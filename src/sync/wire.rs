//! Sync protocol messages as bytes: the protocol's own layout, built on
//! `codec`'s frames and primitives.
//!
//! Each message is one frame with the changeset frame's layout (`MLDP |
//! protocol version | payload length | blake3(payload) | payload`) and a
//! positional payload written field by field (the layout is below, at
//! `encode_payload`). A stream reader calls [`message_payload_len`] on the
//! 42-byte header first, so a declared length over the connection's limit
//! is refused before anything is allocated; [`decode_message`] then checks
//! the checksum and decodes, every count checked against the bytes left. Batches of changes
//! travel in the `compact` layout (a flags byte per row, delta-encoded
//! clocks and timestamps, a site table), as one byte string.

use crate::mutator::{MutationRejection, PendingMutation, Push, PushResult};
use crate::resolve::{NoticeKind, Rejection, WriteMetadata};
use crate::sync::message::{Ack, Batch, Hello, Message, Notice, NoticeCode, Processed, Sent, Want};
use crate::value::Key;
use crate::version::VersionVector;
use meldb_core::codec::bin::{Dec, Enc};
use meldb_core::codec::{check_header, compact, frame_as, unframe_as, DecodeError, Versions};

/// The first bytes of every protocol message frame.
pub const MESSAGE_MAGIC: [u8; 4] = *b"MLDP";
/// The newest protocol version this build speaks (see [`ProtocolVersion`]).
///
/// Version 2 added the namespace of a `Hello` (a client of a relay
/// serving several names the one it syncs). Version 3 added per-write
/// metadata (on rows in `Changes` batches and on pushed mutations) and the
/// kind of a rejection notice. Version 4 added compressed bodies of
/// `Changes` and `Push` (offered in the `Hello`: [`Compression`]) and a
/// `Want` whose version vector is a diff against the previous `Want` on
/// the connection ([`Outgoing`], [`Incoming`]).
pub const PROTOCOL_VERSION: u16 = 4;
/// The oldest protocol version this build speaks. Version 4 still speaks
/// 1 to 3 (their peers' metadata is not sent, their notices are
/// rejections, their bodies are never compressed), so clients of older
/// releases keep syncing.
pub const OLDEST_PROTOCOL_VERSION: u16 = 1;
/// The largest message payload any connection accepts (64 MiB);
/// connections may set a lower limit.
pub const MAX_MESSAGE_PAYLOAD: usize = 64 << 20;

/// Bodies (of `Changes` and `Push`, protocol 4) shorter than this are
/// sent plain even to a peer that accepts compression: measured on batches
/// of 32-hex-key rows, zstd saves nothing under 128 bytes and about 12%
/// at 256.
pub const COMPRESS_FROM: usize = 256;

/// zstd's level for bodies: level 1 compressed the measured batches as
/// well as level 3 (ratio 2.06 against 2.02) at over twice the speed.
const ZSTD_LEVEL: i32 = 1;

/// A codec for the bodies of `Changes` and `Push` (protocol 4), as a
/// `Hello` offers it: the receiver of a body must have offered its codec.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Compression {
    /// Zstandard (level 1), encoding byte 1.
    Zstd,
}

impl Compression {
    /// Every codec this build decodes, as its `Hello` offers them.
    pub const ACCEPTED: &'static [Compression] = &[Compression::Zstd];

    fn number(self) -> u64 {
        match self {
            Compression::Zstd => 1,
        }
    }

    fn from_number(n: u64) -> Option<Compression> {
        (n == 1).then_some(Compression::Zstd)
    }
}

/// What one side of a connection remembers of the messages it sent, for
/// protocol 4: whether the peer accepts compressed bodies and the version
/// vector of the last `Want` (the next one is sent as a diff against it).
/// One per connection, never shared.
#[derive(Debug, Default)]
pub struct Outgoing {
    compress: bool,
    last_want: Option<VersionVector>,
}

impl Outgoing {
    /// Whether bodies may be compressed: only once the peer's `Hello`
    /// offered [`Compression::Zstd`].
    pub fn set_compress(&mut self, compress: bool) {
        self.compress = compress;
    }
}

/// What one side of a connection remembers of the messages it received:
/// the version vector of the peer's last `Want`, which a diff applies to.
#[derive(Debug, Default)]
pub struct Incoming {
    last_want: Option<VersionVector>,
}

/// Encodes a message as one frame, in the newest protocol version.
pub fn encode_message(message: &Message) -> Vec<u8> {
    encode_message_as(message, ProtocolVersion::NEWEST)
}

/// Encodes a message as one frame in the given protocol version (the one a
/// session agreed on: see [`ProtocolVersion`]), on its own: bodies plain,
/// a `Want` whole.
pub fn encode_message_as(message: &Message, version: ProtocolVersion) -> Vec<u8> {
    encode_message_on(message, version, &mut Outgoing::default())
}

/// Encodes a message as the next frame of a connection: in protocol 4,
/// bodies compressed if `out` allows it and a `Want` as a diff against the
/// last one `out` sent (which it then remembers).
pub fn encode_message_on(
    message: &Message,
    version: ProtocolVersion,
    out: &mut Outgoing,
) -> Vec<u8> {
    frame_as(
        MESSAGE_MAGIC,
        version.0,
        &encode_payload(message, version, out),
    )
}

/// A `Changes` body in protocol 4, self-contained: an encoding byte, then
/// the batch's `compact` bytes (0: plain) or their decompressed length and
/// their zstd frame (1: compressed, when `compress` and the bytes are at
/// least [`COMPRESS_FROM`] long and compress smaller). The same body can be
/// sent in every session of protocol 4 whose peer accepts it.
pub fn encode_batch_body(changes: &crate::changeset::Changeset, compress: bool) -> Vec<u8> {
    body(compact::encode_as(changes, true), compress)
}

fn body(inner: Vec<u8>, compress: bool) -> Vec<u8> {
    if compress && inner.len() >= COMPRESS_FROM {
        if let Ok(packed) = zstd::bulk::compress(&inner, ZSTD_LEVEL) {
            if packed.len() + 10 < inner.len() {
                let mut e = Enc::new();
                e.u8(1);
                e.len(inner.len());
                e.bytes(&packed);
                return e.into_bytes();
            }
        }
    }
    let mut plain = Vec::with_capacity(inner.len() + 1);
    plain.push(0);
    plain.extend_from_slice(&inner);
    plain
}

/// The bytes inside a body: plain, or decompressed after its claimed
/// length was checked against `limit` and against the size the zstd
/// frame's header declares (nothing is allocated for a claim over the
/// limit or one the frame does not back), refusing a frame that
/// decompresses past or short of its claim.
fn unbody<'a>(
    raw: &'a [u8],
    limit: usize,
    what: &'static str,
) -> Result<std::borrow::Cow<'a, [u8]>, DecodeError> {
    let mut d = Dec::new(raw, what);
    match d.u8()? {
        0 => Ok(std::borrow::Cow::Borrowed(&raw[1..])),
        1 => {
            let claimed = d.uint()?;
            let bad = |message: String| DecodeError::Malformed { what, message };
            let claimed = usize::try_from(claimed)
                .ok()
                .filter(|&n| n <= limit)
                .ok_or_else(|| {
                    bad(format!(
                        "a compressed body claims {claimed} bytes decompressed, over the \
                         connection's limit of {limit} bytes"
                    ))
                })?;
            let packed = d.bytes()?;
            d.finish()?;
            // The frame's own header must declare the claimed size, so that a
            // few bytes claiming the whole limit are refused before the
            // buffer for it is allocated (our encoder always declares it).
            match zstd::zstd_safe::get_frame_content_size(packed) {
                Ok(Some(declared)) if declared == claimed as u64 => {}
                Ok(Some(declared)) => {
                    return Err(bad(format!(
                        "a compressed body claims {claimed} bytes decompressed but its zstd \
                         frame declares {declared}"
                    )))
                }
                Ok(None) => {
                    return Err(bad(format!(
                        "a compressed body claims {claimed} bytes decompressed but its zstd \
                         frame does not declare its size"
                    )))
                }
                Err(_) => {
                    return Err(bad(format!(
                        "a compressed body of {} bytes is no zstd frame",
                        packed.len()
                    )))
                }
            }
            let mut out = vec![0u8; claimed];
            let written = zstd::bulk::decompress_to_buffer(packed, &mut out[..]).map_err(|e| {
                bad(format!(
                    "a compressed body of {} bytes does not decompress within its claimed \
                     {claimed} bytes: {e}",
                    packed.len()
                ))
            })?;
            if written != claimed {
                return Err(bad(format!(
                    "a compressed body decompressed to {written} bytes but claims {claimed}"
                )));
            }
            Ok(std::borrow::Cow::Owned(out))
        }
        b => Err(d.malformed(format!("unknown body encoding {b}"))),
    }
}

fn write_version_vector(e: &mut Enc, have: &VersionVector) {
    e.len(have.iter().count());
    for (site, ranges) in have.iter() {
        e.site(*site);
        e.seq(ranges.ranges(), |e, &(first, last)| {
            e.uint(first);
            e.uint(last);
        });
    }
}

fn write_mutations(e: &mut Enc, mutations: &[PendingMutation], version: ProtocolVersion) {
    e.seq(mutations, |e, m| {
        e.uint(m.id);
        e.str(&m.name);
        e.str(&m.args);
        if version.0 >= 3 {
            e.option(m.meta.as_ref(), |e, meta| e.str(meta.as_str()));
        }
    });
}

fn read_mutations(
    d: &mut Dec<'_>,
    version: ProtocolVersion,
) -> Result<Vec<PendingMutation>, DecodeError> {
    d.seq(|d| {
        Ok(PendingMutation {
            id: d.uint()?,
            name: d.string()?,
            args: d.string()?,
            meta: if version.0 >= 3 {
                read_write_metadata(d)?
            } else {
                None
            },
        })
    })
}

/// A sync protocol version this build speaks; nothing else can be made
/// into one.
///
/// The rule: every message frame carries the version it is written in. A
/// build speaks [`PROTOCOL_VERSION`] and the version before it
/// ([`OLDEST_PROTOCOL_VERSION`]). The side that connects opens with its
/// `Hello` in its newest version; the other side answers in that version
/// if it speaks it (the highest both speak, since the connecting side
/// speaks nothing newer) and refuses it otherwise, with a notice in its
/// oldest version (which the peer, one version ahead, still reads) naming
/// both. From the peer's first frame on, each side speaks the version of
/// that frame and refuses frames in any other (the transport's business).
/// So a relay one version ahead serves the clients one version behind, in
/// their version. A client one version ahead of its relay is refused, not
/// downgraded: relays are upgraded before the apps that use them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProtocolVersion(u16);

impl ProtocolVersion {
    /// The newest version this build speaks (and opens sessions in).
    pub const NEWEST: ProtocolVersion = ProtocolVersion(PROTOCOL_VERSION);
    /// The oldest version this build speaks.
    pub const OLDEST: ProtocolVersion = ProtocolVersion(OLDEST_PROTOCOL_VERSION);
    /// The range, for header checks and errors.
    pub const VERSIONS: Versions = Versions {
        format: "sync protocol",
        oldest: OLDEST_PROTOCOL_VERSION,
        newest: PROTOCOL_VERSION,
    };

    /// The version number as it appears in frame headers.
    pub fn number(self) -> u16 {
        self.0
    }

    /// A version number this build speaks, or the error that says why not.
    pub fn new(number: u16) -> Result<ProtocolVersion, DecodeError> {
        Self::VERSIONS.check(number).map(ProtocolVersion)
    }
}

// The payload: a variant index, then the message's fields in order, in the
// primitives of `codec::bin`. Protocol version 2 is version 1 with one
// field more at the end of a Hello (marked [v2]). Version 3 adds fields at
// the end of a rejection and of a pushed mutation, and `Changes` batches
// in the compact layout with write metadata (marked [v3]); everything else
// is the same in all three. Version 4 (marked [v4]) adds the codecs a
// Hello accepts, a Want's version vector as a diff, and bodies.
//
//   0 Hello       site:site schema:str schema_version:uint token:option<str>
//                 accepts_changes:bool live:bool authority:bool
//                 [v2] namespace:option<str>
//                 [v4] compression:seq<uint> (codecs accepted: 1 zstd;
//                 unknown ones are skipped)
//   1 Want        id:uint [v4] form:u8 (0 whole, 1 diff against the
//                 previous Want on the connection) have:vv
//                 first_pending:option<uint>
//   2 Changes     seq:uint changes:bytes (the `compact` layout; [v3] with
//                 write metadata, flag 0x80; [v4] a body of it)
//   3 Ack         seq:uint applied:uint
//   4 Sent        want:uint first:uint last:uint mutations:option<processed>
//   5 Caught      want:uint
//   6 Notice      code:uint message:str
//   7 Rejections  seq<authority:site seq:uint writer:site table:str
//                     key:seq<value> reason:str rejected:str at_ms:uint
//                     [v3] kind:uint (0 rejected, 1 overruled, 2 deferred)>
//   8 Push        client:site seq<id:uint name:str args:str
//                     [v3] meta:option<str>> ([v4] in a body:bytes)
//   9 PushAck     last_processed:uint applied:seq<uint> rejected:seq<failure>
//                 duplicates:uint
//
//   vv        = seq<(site, seq<(first:uint, last:uint)>)>, sites ascending
//   processed = last_processed:uint rejected:seq<failure>
//   failure   = id:uint name:str error:str
//   body      = 0 bytes-to-the-end (plain) | 1 len:uint zstd:bytes
//               (compressed; len, the decompressed size, is checked
//               against the connection's limit before anything else)
//
// Variants and notice codes keep their numbers; new ones go at the end.
fn encode_payload(message: &Message, version: ProtocolVersion, out: &mut Outgoing) -> Vec<u8> {
    let mut e = Enc::new();
    match message {
        Message::Hello(h) => {
            e.u8(0);
            e.site(h.site);
            e.str(&h.schema);
            e.uint(h.schema_version.into());
            e.option(h.token.as_deref(), Enc::str);
            e.bool(h.accepts_changes);
            e.bool(h.live);
            e.bool(h.authority);
            if version.0 >= 2 {
                e.option(h.namespace.as_deref(), Enc::str);
            } else {
                // A session speaks version 1 only when its peer opened in
                // it; the side that names a namespace is the one that
                // connected, and it opens in its newest version.
                debug_assert!(
                    h.namespace.is_none(),
                    "a version-1 hello cannot name a namespace"
                );
            }
            if version.0 >= 4 {
                e.seq(&h.compression, |e, c| e.uint(c.number()));
            }
        }
        Message::Want(w) => {
            e.u8(1);
            e.uint(w.id);
            if version.0 >= 4 {
                let diff = out
                    .last_want
                    .as_ref()
                    .and_then(|previous| super::vv_diff::diff(previous, &w.have));
                match diff {
                    Some(diff) => {
                        e.u8(1);
                        write_version_vector(&mut e, &diff);
                    }
                    None => {
                        e.u8(0);
                        write_version_vector(&mut e, &w.have);
                    }
                }
                out.last_want = Some(w.have.clone());
            } else {
                write_version_vector(&mut e, &w.have);
            }
            e.option(w.first_pending, Enc::uint);
        }
        Message::Changes(b) => {
            e.u8(2);
            e.uint(b.seq);
            if version.0 >= 4 {
                e.bytes(&encode_batch_body(&b.changes, out.compress));
            } else {
                e.bytes(&compact::encode_as(&b.changes, version.0 >= 3));
            }
        }
        Message::Ack(a) => {
            e.u8(3);
            e.uint(a.seq);
            e.uint(a.applied);
        }
        Message::Sent(s) => {
            e.u8(4);
            e.uint(s.want);
            e.uint(s.first);
            e.uint(s.last);
            e.option(s.mutations.as_ref(), |e, p| {
                e.uint(p.last_processed);
                e.seq(&p.rejected, failure);
            });
        }
        Message::Caught(want) => {
            e.u8(5);
            e.uint(*want);
        }
        Message::Notice(n) => {
            e.u8(6);
            e.uint(notice_number(n.code));
            e.str(&n.message);
        }
        Message::Rejections(rs) => {
            e.u8(7);
            e.seq(rs, |e, r| {
                e.site(r.authority);
                e.uint(r.seq);
                e.site(r.writer);
                e.str(&r.table);
                e.values(r.key.values());
                e.str(&r.reason);
                e.str(&r.rejected);
                e.uint(r.at_ms);
                if version.0 >= 3 {
                    e.uint(notice_kind_number(r.kind));
                }
            });
        }
        Message::Push(p) => {
            e.u8(8);
            e.site(p.client);
            if version.0 >= 4 {
                let mut inner = Enc::new();
                write_mutations(&mut inner, &p.mutations, version);
                e.bytes(&body(inner.into_bytes(), out.compress));
            } else {
                write_mutations(&mut e, &p.mutations, version);
            }
        }
        Message::PushAck(r) => {
            e.u8(9);
            e.uint(r.last_processed);
            e.seq(&r.applied, |e, &id| e.uint(id));
            e.seq(&r.rejected, failure);
            e.len(r.duplicates);
        }
    }
    e.into_bytes()
}

fn failure(e: &mut Enc, f: &MutationRejection) {
    e.uint(f.id);
    e.str(&f.name);
    e.str(&f.error);
}

fn read_failure(d: &mut Dec<'_>) -> Result<MutationRejection, DecodeError> {
    Ok(MutationRejection {
        id: d.uint()?,
        name: d.string()?,
        error: d.string()?,
    })
}

fn notice_number(code: NoticeCode) -> u64 {
    match code {
        NoticeCode::Unauthorized => 0,
        NoticeCode::ReadOnly => 1,
        NoticeCode::Protocol => 2,
        NoticeCode::Incompatible => 3,
        NoticeCode::Apply => 4,
        NoticeCode::Busy => 5,
        NoticeCode::Shutdown => 6,
    }
}

fn notice_kind_number(kind: NoticeKind) -> u64 {
    match kind {
        NoticeKind::Overruled => 1,
        NoticeKind::Deferred => 2,
        _ => 0,
    }
}

fn read_notice_kind(d: &mut Dec<'_>) -> Result<NoticeKind, DecodeError> {
    Ok(match d.variant(3, "notice kind")? {
        0 => NoticeKind::Rejected,
        1 => NoticeKind::Overruled,
        _ => NoticeKind::Deferred,
    })
}

fn read_write_metadata(d: &mut Dec<'_>) -> Result<Option<WriteMetadata>, DecodeError> {
    match d.option(Dec::string)? {
        None => Ok(None),
        Some(text) => WriteMetadata::new(text)
            .map(Some)
            .map_err(|e| d.malformed(e.to_string())),
    }
}

fn read_notice_code(d: &mut Dec<'_>) -> Result<NoticeCode, DecodeError> {
    Ok(match d.variant(7, "notice code")? {
        0 => NoticeCode::Unauthorized,
        1 => NoticeCode::ReadOnly,
        2 => NoticeCode::Protocol,
        3 => NoticeCode::Incompatible,
        4 => NoticeCode::Apply,
        5 => NoticeCode::Busy,
        _ => NoticeCode::Shutdown,
    })
}

/// Sites come in ascending order, each once (as a `BTreeMap` writes them);
/// anything else is refused rather than silently merged.
fn read_version_vector(d: &mut Dec<'_>) -> Result<VersionVector, DecodeError> {
    let mut have = VersionVector::new();
    let mut previous = None;
    for _ in 0..d.count()? {
        let site = d.site()?;
        if previous.is_some_and(|p| p >= site) {
            return Err(d.malformed(format!(
                "version vector site {site} out of order or repeated"
            )));
        }
        previous = Some(site);
        // Ranges come as `SeqRanges` keeps them: ascending, non-empty,
        // neither overlapping nor touching. Anything else is refused, so
        // every insert appends (ranges in descending order would cost a
        // quadratic run of inserts at the front).
        let mut after = 0u64;
        for _ in 0..d.count()? {
            let (first, last) = (d.uint()?, d.uint()?);
            if first == 0 || first > last || (after > 0 && first <= after.saturating_add(1)) {
                return Err(d.malformed(format!(
                    "version vector of site {site}: range {first}..={last} is empty, \
                     out of order or touches the one before"
                )));
            }
            after = last;
            have.insert(site, first, last);
        }
    }
    Ok(have)
}

fn decode_payload(
    payload: &[u8],
    version: ProtocolVersion,
    limit: usize,
    inc: &Incoming,
) -> Result<Message, DecodeError> {
    let mut d = Dec::new(payload, "message");
    let message = match d.variant(10, "message")? {
        0 => Message::Hello(Hello {
            site: d.site()?,
            schema: d.string()?,
            schema_version: d.u32()?,
            token: d.option(Dec::string)?,
            accepts_changes: d.bool()?,
            live: d.bool()?,
            authority: d.bool()?,
            namespace: if version.0 >= 2 {
                d.option(Dec::string)?
            } else {
                None
            },
            compression: if version.0 >= 4 {
                let mut codecs = Vec::new();
                for n in d.seq(Dec::uint)? {
                    if let Some(c) = Compression::from_number(n) {
                        if !codecs.contains(&c) {
                            codecs.push(c);
                        }
                    }
                }
                codecs
            } else {
                Vec::new()
            },
        }),
        1 => {
            let id = d.uint()?;
            let have = if version.0 >= 4 {
                match d.u8()? {
                    0 => read_version_vector(&mut d)?,
                    1 => {
                        let diff = read_version_vector(&mut d)?;
                        let previous = inc.last_want.as_ref().ok_or_else(|| {
                            d.malformed("a Want diff with no previous Want on this connection")
                        })?;
                        super::vv_diff::apply(previous, &diff)
                            .map_err(|e| d.malformed(format!("a Want diff: {e}")))?
                    }
                    b => return Err(d.malformed(format!("unknown Want form {b}"))),
                }
            } else {
                read_version_vector(&mut d)?
            };
            Message::Want(Want {
                id,
                have,
                first_pending: d.option(Dec::uint)?,
            })
        }
        2 => {
            let seq = d.uint()?;
            let changes = if version.0 >= 4 {
                compact::decode_as(&unbody(d.bytes()?, limit, "Changes body")?, true)?
            } else {
                compact::decode_as(d.bytes()?, version.0 >= 3)?
            };
            Message::Changes(Batch { seq, changes })
        }
        3 => Message::Ack(Ack {
            seq: d.uint()?,
            applied: d.uint()?,
        }),
        4 => Message::Sent(Sent {
            want: d.uint()?,
            first: d.uint()?,
            last: d.uint()?,
            mutations: d.option(|d| {
                Ok(Processed {
                    last_processed: d.uint()?,
                    rejected: d.seq(read_failure)?,
                })
            })?,
        }),
        5 => Message::Caught(d.uint()?),
        6 => Message::Notice(Notice {
            code: read_notice_code(&mut d)?,
            message: d.string()?,
        }),
        7 => Message::Rejections(d.seq(|d| {
            Ok(Rejection {
                authority: d.site()?,
                seq: d.uint()?,
                writer: d.site()?,
                table: d.string()?,
                key: Key(d.values()?),
                reason: d.string()?,
                rejected: d.string()?,
                at_ms: d.uint()?,
                kind: if version.0 >= 3 {
                    read_notice_kind(d)?
                } else {
                    NoticeKind::Rejected
                },
            })
        })?),
        8 => {
            let client = d.site()?;
            let mutations = if version.0 >= 4 {
                let inner = unbody(d.bytes()?, limit, "Push body")?;
                let mut b = Dec::new(&inner, "Push body");
                let mutations = read_mutations(&mut b, version)?;
                b.finish()?;
                mutations
            } else {
                read_mutations(&mut d, version)?
            };
            Message::Push(Push { client, mutations })
        }
        _ => {
            let last_processed = d.uint()?;
            let applied = d.seq(Dec::uint)?;
            let rejected = d.seq(read_failure)?;
            let duplicates = d.uint()?;
            Message::PushAck(PushResult {
                last_processed,
                applied,
                rejected,
                duplicates: usize::try_from(duplicates)
                    .map_err(|_| d.malformed(format!("{duplicates} duplicates")))?,
            })
        }
    };
    d.finish()?;
    Ok(message)
}

/// Wraps a payload in a message frame header with a valid checksum, so
/// fuzz targets reach the message decoder past the checksum. Part of the
/// test kit (the `testkit` feature), not of the library.
#[cfg(any(test, feature = "testkit"))]
#[doc(hidden)]
pub fn frame_message(payload: &[u8]) -> Vec<u8> {
    frame_as(MESSAGE_MAGIC, PROTOCOL_VERSION, payload)
}

/// Checks a message frame's header (the first [`crate::codec::HEADER_LEN`] bytes):
/// magic, version and the declared payload length against `limit` (capped
/// at [`MAX_MESSAGE_PAYLOAD`]). Returns the payload length.
pub fn message_payload_len(header: &[u8], limit: usize) -> Result<usize, DecodeError> {
    message_header(header, limit).map(|(_, len)| len)
}

/// Like [`message_payload_len`], and also returns the frame's protocol
/// version (one this build speaks: others are refused here).
pub fn message_header(
    header: &[u8],
    limit: usize,
) -> Result<(ProtocolVersion, usize), DecodeError> {
    let (version, len) = check_header(
        header,
        MESSAGE_MAGIC,
        ProtocolVersion::VERSIONS,
        limit.min(MAX_MESSAGE_PAYLOAD),
    )?;
    Ok((ProtocolVersion(version), len))
}

/// Decodes one whole message frame whose payload is at most `limit` bytes,
/// in any protocol version this build speaks.
pub fn decode_message(frame: &[u8], limit: usize) -> Result<Message, DecodeError> {
    decode_message_versioned(frame, limit).map(|(_, message)| message)
}

/// Decodes one whole message frame and says which protocol version it was
/// written in.
pub fn decode_message_versioned(
    frame: &[u8],
    limit: usize,
) -> Result<(ProtocolVersion, Message), DecodeError> {
    let (version, payload) = unframe_as(
        frame,
        MESSAGE_MAGIC,
        ProtocolVersion::VERSIONS,
        limit.min(MAX_MESSAGE_PAYLOAD),
    )?;
    let version = ProtocolVersion(version);
    let limit = limit.min(MAX_MESSAGE_PAYLOAD);
    Ok((
        version,
        decode_payload(payload, version, limit, &Incoming::default())?,
    ))
}

/// Decodes the next frame of a connection: like
/// [`decode_message_versioned`], and in protocol 4 a `Want` diff is
/// applied to the peer's last `Want` that `inc` remembers (a diff with
/// none before it, or one that would drop a dot, is refused), and the
/// `Want` decoded becomes the one remembered. Decompressed bodies are
/// bounded by `limit` too.
pub fn decode_message_on(
    frame: &[u8],
    limit: usize,
    inc: &mut Incoming,
) -> Result<(ProtocolVersion, Message), DecodeError> {
    let (version, payload) = unframe_as(
        frame,
        MESSAGE_MAGIC,
        ProtocolVersion::VERSIONS,
        limit.min(MAX_MESSAGE_PAYLOAD),
    )?;
    let version = ProtocolVersion(version);
    let message = decode_payload(payload, version, limit.min(MAX_MESSAGE_PAYLOAD), inc)?;
    if let Message::Want(w) = &message {
        if version.0 >= 4 {
            inc.last_want = Some(w.have.clone());
        }
    }
    Ok((version, message))
}

/// A protocol-4 frame of a `Changes` (`push`: a `Push` from site 0)
/// whose body is `body`, byte for byte: for fuzzing the body decoder.
/// Part of the test kit, not of the library.
#[cfg(any(test, feature = "testkit"))]
#[doc(hidden)]
pub fn frame_body(push: bool, body: &[u8]) -> Vec<u8> {
    let mut e = Enc::new();
    if push {
        e.u8(8);
        e.site(crate::clock::SiteId::from_bytes([0; 16]));
    } else {
        e.u8(2);
        e.uint(1);
    }
    e.bytes(body);
    frame_as(MESSAGE_MAGIC, 4, &e.into_bytes())
}

/// A protocol-4 `Changes` frame whose body claims `claimed` decompressed
/// bytes and holds `plain` zstd-compressed: for attack tests of what a
/// peer can claim. Part of the test kit, not of the library.
#[cfg(any(test, feature = "testkit"))]
#[doc(hidden)]
pub fn frame_compressed_batch(seq: u64, claimed: u64, plain: &[u8]) -> Vec<u8> {
    let mut body = Enc::new();
    body.u8(1);
    body.uint(claimed);
    body.bytes(&zstd::bulk::compress(plain, ZSTD_LEVEL).unwrap_or_default());
    let mut e = Enc::new();
    e.u8(2);
    e.uint(seq);
    e.bytes(&body.into_bytes());
    frame_as(MESSAGE_MAGIC, 4, &e.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::changeset::{Changeset, Cover, RowChange, TableChanges};
    use crate::clock::{Hlc, SiteId};
    use crate::crdt::RowState;
    use crate::crdt::{ColumnState, Lww, RowClock};
    use crate::mutator::{MutationRejection, PendingMutation};
    use crate::sync::message::{NoticeCode, Processed};
    use crate::value::Value;
    use crate::version::VersionVector;
    use meldb_core::codec::HEADER_LEN;

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
                    meta: Some(meta(r#"{"device":"till-2"}"#)),
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
                authority: false,
                namespace: Some("team-7".into()),
                compression: vec![Compression::Zstd],
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
                    meta: Some(meta("screen=checkout")),
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
                kind: NoticeKind::Overruled,
            }]),
        ]
    }

    fn meta(text: &str) -> WriteMetadata {
        WriteMetadata::new(text).expect("small")
    }

    /// `message` as a peer of `version` receives it: versions before 3
    /// carry no write metadata and no notice kind (a notice is a
    /// rejection), version 1 no namespace.
    fn as_spoken_in(mut message: Message, version: u16) -> Message {
        if let Message::Hello(h) = &mut message {
            if version < 4 {
                h.compression.clear();
            }
        }
        match &mut message {
            Message::Hello(h) if version < 2 => h.namespace = None,
            Message::Changes(b) if version < 3 => {
                for row in b.changes.tables.iter_mut().flat_map(|t| t.rows.iter_mut()) {
                    row.state.meta = None;
                }
            }
            Message::Rejections(rs) if version < 3 => {
                for r in rs {
                    r.kind = NoticeKind::Rejected;
                }
            }
            Message::Push(p) if version < 3 => {
                for m in &mut p.mutations {
                    m.meta = None;
                }
            }
            _ => {}
        }
        message
    }

    /// Version 3's new fields: every notice kind and metadata on rows and
    /// mutations round-trip; older versions drop them; a metadata flag in
    /// a version-2 batch, and metadata over the bound, are refused; every
    /// truncation of a version-3 frame is an error.
    #[test]
    fn version_3_carries_metadata_and_notice_kinds_and_older_versions_drop_them(
    ) -> Result<(), DecodeError> {
        let v3 = ProtocolVersion::new(3)?;
        let v2 = ProtocolVersion::new(2)?;
        for kind in NoticeKind::ALL {
            let mut message = every_message().pop().expect("rejections");
            if let Message::Rejections(rs) = &mut message {
                rs[0].kind = kind;
            }
            let bytes = encode_message_as(&message, v3);
            assert_eq!(decode_message(&bytes, MAX_MESSAGE_PAYLOAD)?, message);
            let old = encode_message_as(&message, v2);
            assert_eq!(
                decode_message(&old, MAX_MESSAGE_PAYLOAD)?,
                as_spoken_in(message.clone(), 2)
            );
        }
        for message in every_message() {
            let message = as_spoken_in(message, 3);
            let bytes = encode_message_as(&message, v3);
            assert_eq!(decode_message(&bytes, MAX_MESSAGE_PAYLOAD)?, message);
            for cut in 0..bytes.len() {
                assert!(decode_message(&bytes[..cut], MAX_MESSAGE_PAYLOAD).is_err());
            }
        }
        // A version-3 batch with metadata, relabelled version 2: the flag
        // is unknown there.
        let batch = every_message()[2].clone();
        let bytes = encode_message_as(&batch, v3);
        let as_v2 = frame_as(MESSAGE_MAGIC, 2, &bytes[HEADER_LEN..]);
        assert!(matches!(
            decode_message(&as_v2, MAX_MESSAGE_PAYLOAD),
            Err(DecodeError::Malformed { .. })
        ));
        // Metadata over the bound is refused by the decoder.
        let mut push = Enc::new();
        push.u8(8);
        push.site(site(1));
        push.len(1);
        push.uint(1);
        push.str("m");
        push.str("null");
        push.option(Some(()), |e, ()| {
            e.str(&"x".repeat(WriteMetadata::MAX_BYTES + 1))
        });
        let frame = frame_as(MESSAGE_MAGIC, 3, &push.into_bytes());
        assert!(matches!(
            decode_message(&frame, MAX_MESSAGE_PAYLOAD),
            Err(DecodeError::Malformed { .. })
        ));
        Ok(())
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

    /// Version 1 is still spoken: every message but a hello naming a
    /// namespace round-trips in it, and a version-1 hello is a version-2
    /// hello without the namespace, byte for byte up to the field.
    #[test]
    fn every_message_round_trips_in_version_1_and_a_hello_gains_a_namespace_in_2(
    ) -> Result<(), DecodeError> {
        let v1 = ProtocolVersion::OLDEST;
        assert_eq!(v1.number(), 1);
        for message in every_message() {
            let message = as_spoken_in(message, 1);
            let bytes = encode_message_as(&message, v1);
            assert_eq!(
                decode_message_versioned(&bytes, MAX_MESSAGE_PAYLOAD)?,
                (v1, message.clone())
            );
            if let Message::Hello(h) = &message {
                let newest = encode_message_as(
                    &Message::Hello(h.clone()),
                    ProtocolVersion::new(2).expect("spoken"),
                );
                // Version 2 appends one `None` byte to the same payload.
                assert_eq!(newest[HEADER_LEN..].len(), bytes[HEADER_LEN..].len() + 1);
                assert_eq!(&newest[HEADER_LEN..newest.len() - 1], &bytes[HEADER_LEN..]);
            }
        }
        // A version-2 hello's namespace is part of the payload, so a
        // version-1 reader of the same payload finds a byte too many.
        let named = &as_spoken_in(every_message()[0].clone(), 2);
        let bytes = encode_message_as(named, ProtocolVersion::new(2)?);
        assert!(matches!(named, Message::Hello(h) if h.namespace.is_some()));
        let as_v1 = frame_as(MESSAGE_MAGIC, 1, &bytes[HEADER_LEN..]);
        assert!(decode_message(&as_v1, MAX_MESSAGE_PAYLOAD).is_err());
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
                format: "sync protocol",
                found: PROTOCOL_VERSION + 1,
                supported: PROTOCOL_VERSION
            })
        );
        let big = encode_message(&every_message()[2]);
        assert!(matches!(
            message_payload_len(&big[..HEADER_LEN], 8),
            Err(DecodeError::TooLarge { limit: 8, .. })
        ));
        let changeset_frame = meldb_core::codec::encode_changeset(&Changeset::new(site(1)));
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

    #[test]
    fn version_vector_ranges_out_of_canonical_order_are_malformed() {
        let mut have = VersionVector::new();
        have.insert(site(1), 1, 1);
        have.insert(site(1), 3, 3);
        let want = Message::Want(Want {
            id: 1,
            have,
            first_pending: None,
        });
        let good = encode_message(&want);
        assert_eq!(decode_message(&good, MAX_MESSAGE_PAYLOAD), Ok(want));
        // Two ranges, 1..=1 then 3..=3, as the encoder writes them.
        let at = good
            .windows(5)
            .rposition(|w| w == [2, 1, 1, 3, 3])
            .expect("the ranges in the bytes");
        for swapped in [
            [2, 3, 3, 1, 1],
            [2, 1, 1, 2, 2],
            [2, 1, 1, 1, 1],
            [2, 0, 0, 3, 3],
            [2, 3, 1, 5, 5],
        ] {
            let mut bad = good.clone();
            bad[at..at + 5].copy_from_slice(&swapped);
            let frame = frame_as(MESSAGE_MAGIC, PROTOCOL_VERSION, &bad[HEADER_LEN..]);
            assert!(
                matches!(
                    decode_message(&frame, MAX_MESSAGE_PAYLOAD),
                    Err(DecodeError::Malformed { .. })
                ),
                "{swapped:?}"
            );
        }
    }

    #[test]
    fn every_version_this_build_speaks_round_trips_and_no_other_is_made() {
        for n in OLDEST_PROTOCOL_VERSION..=PROTOCOL_VERSION {
            let version = ProtocolVersion::new(n).expect("spoken");
            for message in every_message() {
                let message = as_spoken_in(message, n);
                let bytes = encode_message_as(&message, version);
                assert_eq!(bytes[4..6], n.to_le_bytes());
                assert_eq!(
                    decode_message_versioned(&bytes, MAX_MESSAGE_PAYLOAD),
                    Ok((version, message))
                );
            }
        }
        assert!(ProtocolVersion::new(0).is_err());
        assert!(ProtocolVersion::new(PROTOCOL_VERSION + 1).is_err());
        let frame = frame_as(MESSAGE_MAGIC, 0, &[5, 1]);
        assert!(matches!(
            decode_message(&frame, MAX_MESSAGE_PAYLOAD),
            Err(DecodeError::ObsoleteVersion { found: 0, .. })
        ));
    }

    /// Every field of every message with a value of its own, so a field
    /// moved, dropped or widened in the layout changes these bytes (the
    /// recorded conversation in the fixtures repeats some values, such as a
    /// `Sent` whose `want` and `first` are both 1).
    fn distinct_messages() -> Vec<Message> {
        let mut have = VersionVector::new();
        have.insert(site(4), 5, 6);
        have.insert(site(4), 8, 9);
        let failure = |id, name: &str, error: &str| MutationRejection {
            id,
            name: name.into(),
            error: error.into(),
        };
        let mut out = vec![
            Message::Hello(Hello {
                site: site(1),
                schema: "s".into(),
                schema_version: 2,
                token: Some("t".into()),
                accepts_changes: true,
                live: false,
                authority: true,
                namespace: Some("ns".into()),
                compression: vec![Compression::Zstd],
            }),
            Message::Want(Want {
                id: 3,
                have,
                first_pending: Some(7),
            }),
            Message::Changes(Batch {
                seq: 10,
                changes: Changeset::new(site(2)),
            }),
            Message::Ack(Ack {
                seq: 11,
                applied: 12,
            }),
            Message::Sent(Sent {
                want: 13,
                first: 14,
                last: 15,
                mutations: Some(Processed {
                    last_processed: 16,
                    rejected: vec![failure(17, "n", "e")],
                }),
            }),
            Message::Caught(18),
            Message::Rejections(vec![Rejection {
                authority: site(5),
                seq: 19,
                writer: site(6),
                table: "tb".into(),
                key: crate::value::Key(vec![Value::Integer(20)]),
                reason: "r".into(),
                rejected: "j".into(),
                at_ms: 21,
                kind: NoticeKind::Overruled,
            }]),
            Message::Push(Push {
                client: site(7),
                mutations: vec![PendingMutation {
                    id: 22,
                    name: "a".into(),
                    args: "b".into(),
                    meta: Some(meta("c")),
                }],
            }),
            Message::PushAck(PushResult {
                last_processed: 23,
                applied: vec![24],
                rejected: vec![failure(25, "x", "y")],
                duplicates: 26,
            }),
        ];
        for code in [
            NoticeCode::Unauthorized,
            NoticeCode::ReadOnly,
            NoticeCode::Protocol,
            NoticeCode::Incompatible,
            NoticeCode::Apply,
            NoticeCode::Busy,
            NoticeCode::Shutdown,
        ] {
            out.push(Message::Notice(Notice {
                code,
                message: "m".into(),
            }));
        }
        out
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The payload bytes of [`distinct_messages`] in protocol version 1,
    /// pinned: these are the layout of version 1 and never change.
    const PINNED_V1: &[&str] = &[
        "001001010101010101010101010101010101017302010174010001",
        "010301100404040404040404040404040404040402050608090107",
        "020a12020202020202020202020202020202020000",
        "030b0c",
        "040d0e0f01100111016e0165",
        "0512",
        "070110050505050505050505050505050505051310060606060606060606060606060606060274620101280172016a15",
        "081007070707070707070707070707070707011601610162",
        "091701180119017801791a",
        "0600016d",
        "0601016d",
        "0602016d",
        "0603016d",
        "0604016d",
        "0605016d",
        "0606016d",
    ];

    /// Version 2's payloads: version 1's, with the hello's namespace
    /// (`Some("ns")`: `01 02 6e 73`) at its end.
    fn pinned_v2() -> Vec<String> {
        let mut v2: Vec<String> = PINNED_V1.iter().map(|h| (*h).to_owned()).collect();
        v2[0].push_str("01026e73");
        v2
    }

    /// Version 3's payloads: version 2's, with the rejection's kind
    /// (overruled: `01`) and the pushed mutation's metadata (`Some("c")`:
    /// `01 01 63`) at their ends.
    fn pinned_v3() -> Vec<String> {
        let mut v3 = pinned_v2();
        v3[6].push_str("01");
        v3[7].push_str("010163");
        v3
    }

    /// Version 4's payloads: version 3's, with the hello's codecs (`[zstd]`:
    /// `01 01`) at its end, the Want's form (whole: `00`) after its id, and
    /// the batch's and the pushed mutations' bytes in a plain body (`00`
    /// first, the length one more).
    fn pinned_v4() -> Vec<String> {
        let mut v4 = pinned_v3();
        v4[0].push_str("0101");
        v4[1].insert_str(4, "00");
        v4[2] = v4[2].replacen("0a12", "0a1300", 1);
        v4[7] = v4[7].replacen("070701160161", "07070a0001160161", 1);
        v4
    }

    #[test]
    fn every_field_of_every_message_is_pinned() {
        let in_version = |version: ProtocolVersion, messages: &[Message]| -> Vec<String> {
            messages
                .iter()
                .map(|m| hex(&encode_message_as(m, version)[HEADER_LEN..]))
                .collect()
        };
        // Version 1 has no namespace to carry.
        let v1_messages: Vec<Message> = distinct_messages()
            .into_iter()
            .map(|m| as_spoken_in(m, 1))
            .collect();
        let v2_messages: Vec<Message> = distinct_messages()
            .into_iter()
            .map(|m| as_spoken_in(m, 2))
            .collect();
        let v2 = ProtocolVersion::new(2).expect("spoken");
        let got = in_version(ProtocolVersion::OLDEST, &v1_messages);
        if PINNED_V1.is_empty() {
            panic!(
                "pin these:\n{}",
                got.iter()
                    .map(|h| format!("        \"{h}\","))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        assert_eq!(got, PINNED_V1);
        assert_eq!(in_version(v2, &v2_messages), pinned_v2());
        let v3 = ProtocolVersion::new(3).expect("spoken");
        let v3_messages: Vec<Message> = distinct_messages()
            .into_iter()
            .map(|m| as_spoken_in(m, 3))
            .collect();
        assert_eq!(in_version(v3, &v3_messages), pinned_v3());
        assert_eq!(
            in_version(ProtocolVersion::NEWEST, &distinct_messages()),
            pinned_v4()
        );
        for (version, messages) in [
            (ProtocolVersion::OLDEST, v1_messages),
            (v2, v2_messages),
            (v3, v3_messages),
            (ProtocolVersion::NEWEST, distinct_messages()),
        ] {
            for m in messages {
                assert_eq!(
                    decode_message_versioned(&encode_message_as(&m, version), MAX_MESSAGE_PAYLOAD),
                    Ok((version, m))
                );
            }
        }
    }

    /// A batch of `n` rows with 32-hex text keys, as a catch-up carries.
    fn big_batch(n: usize) -> Message {
        let Message::Changes(mut b) = every_message()[2].clone() else {
            unreachable!("every_message()[2] is a batch")
        };
        let row = b.changes.tables[0].rows[0].clone();
        b.changes.tables[0].rows = (0..n)
            .map(|i| {
                let mut r = row.clone();
                r.key = vec![Value::Text(format!(
                    "{:032x}",
                    (i as u128) * 0x9e37_79b9_7f4a_7c15
                ))];
                r
            })
            .collect();
        Message::Changes(b)
    }

    fn compressing() -> Outgoing {
        let mut out = Outgoing::default();
        out.set_compress(true);
        out
    }

    #[test]
    fn version_4_compresses_bodies_for_a_peer_that_accepts_and_round_trips(
    ) -> Result<(), DecodeError> {
        let v4 = ProtocolVersion::NEWEST;
        for message in [big_batch(500), every_message()[5].clone()] {
            let plain = encode_message_as(&message, v4);
            let packed = encode_message_on(&message, v4, &mut compressing());
            let got = decode_message_on(&packed, MAX_MESSAGE_PAYLOAD, &mut Incoming::default())?;
            assert_eq!(got, (v4, message.clone()));
            if matches!(message, Message::Changes(_)) {
                assert!(
                    packed.len() * 2 < plain.len(),
                    "{} vs {}",
                    packed.len(),
                    plain.len()
                );
            }
            // Every truncation of a compressed frame is an error.
            for cut in (0..packed.len()).step_by(7) {
                assert!(decode_message(&packed[..cut], MAX_MESSAGE_PAYLOAD).is_err());
            }
        }
        // Under the threshold a body is plain even when compression is allowed.
        let Message::Changes(small) = every_message()[2].clone() else {
            unreachable!()
        };
        let body = encode_batch_body(&small.changes, true);
        assert!(body.len() < COMPRESS_FROM);
        assert_eq!(body[0], 0, "a small body is plain");
        let Message::Changes(big) = big_batch(500) else {
            unreachable!()
        };
        assert_eq!(encode_batch_body(&big.changes, true)[0], 1);
        assert_eq!(encode_batch_body(&big.changes, false)[0], 0);
        // Older versions never compress, whatever the connection allows.
        let v3 = ProtocolVersion::new(3)?;
        assert_eq!(
            encode_message_on(&big_batch(500), v3, &mut compressing()),
            encode_message_as(&big_batch(500), v3)
        );
        Ok(())
    }

    /// A compressed body is refused when it claims more than the limit
    /// (before anything is allocated), decompresses past or short of its
    /// claim, or is no zstd frame.
    #[test]
    fn compressed_bodies_that_lie_about_their_size_are_refused() {
        let refused = |frame: &[u8], limit: usize, says: &str| match decode_message(frame, limit) {
            Err(DecodeError::Malformed { what, message }) => {
                assert_eq!(what, "Changes body");
                assert!(message.contains(says), "{message}");
            }
            other => panic!("{other:?}"),
        };
        refused(
            &frame_compressed_batch(1, 4 << 30, b"x"),
            MAX_MESSAGE_PAYLOAD,
            "claims 4294967296 bytes decompressed, over the connection's limit of 67108864",
        );
        refused(
            &frame_compressed_batch(1, u64::MAX, b"x"),
            MAX_MESSAGE_PAYLOAD,
            "over the connection's limit",
        );
        // A claim within the message limit but over the connection's own.
        refused(
            &frame_compressed_batch(1, 5000, &[0; 5000]),
            4096,
            "limit of 4096",
        );
        refused(
            &frame_compressed_batch(1, 100, &[0; 100_000]),
            MAX_MESSAGE_PAYLOAD,
            "claims 100 bytes decompressed but its zstd frame declares 100000",
        );
        refused(
            &frame_compressed_batch(1, 1000, &[0; 10]),
            MAX_MESSAGE_PAYLOAD,
            "claims 1000 bytes decompressed but its zstd frame declares 10",
        );
        // A tiny frame claiming the whole limit: refused from its header,
        // before a buffer of the claimed size exists. A zstd stream frame
        // leaves its size undeclared; one that declares it falsely is
        // caught the same way as above.
        let mut undeclared = Vec::new();
        {
            use std::io::Write as _;
            let mut encoder = zstd::stream::write::Encoder::new(&mut undeclared, ZSTD_LEVEL)
                .expect("a zstd encoder on a Vec");
            encoder.write_all(&[0; 1000]).expect("writing to a Vec");
            encoder.finish().expect("finishing into a Vec");
        }
        let mut body = Enc::new();
        body.u8(1);
        body.len(MAX_MESSAGE_PAYLOAD);
        body.bytes(&undeclared);
        let mut frame = Enc::new();
        frame.u8(2);
        frame.uint(1);
        frame.bytes(&body.into_bytes());
        refused(
            &frame_as(MESSAGE_MAGIC, 4, &frame.into_bytes()),
            MAX_MESSAGE_PAYLOAD,
            "frame does not declare its size",
        );
        // Trailing bytes after the frame: the size still matches the
        // header, so the decoder itself must refuse the rest.
        let mut trailing = zstd::bulk::compress(&[7; 1000], ZSTD_LEVEL).expect("compressing");
        trailing
            .extend_from_slice(&zstd::bulk::compress(&[8; 1000], ZSTD_LEVEL).expect("compressing"));
        let mut body = Enc::new();
        body.u8(1);
        body.len(1000);
        body.bytes(&trailing);
        let mut frame = Enc::new();
        frame.u8(2);
        frame.uint(1);
        frame.bytes(&body.into_bytes());
        refused(
            &frame_as(MESSAGE_MAGIC, 4, &frame.into_bytes()),
            MAX_MESSAGE_PAYLOAD,
            "does not decompress within its claimed 1000 bytes",
        );
        let mut garbage = Enc::new();
        garbage.u8(2);
        garbage.uint(1);
        garbage.bytes(&[1, 10, 3, 1, 2, 3]);
        refused(
            &frame_as(MESSAGE_MAGIC, 4, &garbage.into_bytes()),
            MAX_MESSAGE_PAYLOAD,
            "is no zstd frame",
        );
        let mut unknown = Enc::new();
        unknown.u8(2);
        unknown.uint(1);
        unknown.bytes(&[7]);
        refused(
            &frame_as(MESSAGE_MAGIC, 4, &unknown.into_bytes()),
            MAX_MESSAGE_PAYLOAD,
            "unknown body encoding 7",
        );
    }

    #[test]
    fn version_4_wants_are_diffs_against_the_last_want_on_the_connection() -> Result<(), DecodeError>
    {
        let want = |id, entries: &[(u8, u64, u64)]| {
            let mut have = VersionVector::new();
            for &(s, first, last) in entries {
                have.insert(site(s), first, last);
            }
            Message::Want(Want {
                id,
                have,
                first_pending: None,
            })
        };
        let many: Vec<(u8, u64, u64)> = (1..=50).map(|s| (s, 1, 100)).collect();
        let mut grown = many.clone();
        grown[7].2 = 200;
        grown.push((60, 1, 1));
        let (mut out, mut inc) = (Outgoing::default(), Incoming::default());
        let first = encode_message_on(&want(1, &many), ProtocolVersion::NEWEST, &mut out);
        let second = encode_message_on(&want(2, &grown), ProtocolVersion::NEWEST, &mut out);
        assert!(
            second.len() * 10 < first.len(),
            "{} vs {}",
            second.len(),
            first.len()
        );
        assert_eq!(
            decode_message_on(&first, MAX_MESSAGE_PAYLOAD, &mut inc)?.1,
            want(1, &many)
        );
        assert_eq!(
            decode_message_on(&second, MAX_MESSAGE_PAYLOAD, &mut inc)?.1,
            want(2, &grown)
        );
        // A vector that shrank goes whole, and is read as it is.
        let shrunk = encode_message_on(&want(3, &many[..3]), ProtocolVersion::NEWEST, &mut out);
        assert_eq!(
            decode_message_on(&shrunk, MAX_MESSAGE_PAYLOAD, &mut inc)?.1,
            want(3, &many[..3])
        );
        // A diff with nothing before it refers to nothing.
        match decode_message_on(&second, MAX_MESSAGE_PAYLOAD, &mut Incoming::default()) {
            Err(DecodeError::Malformed { message, .. }) => {
                assert!(message.contains("no previous Want"), "{message}")
            }
            other => panic!("{other:?}"),
        }
        // A diff that drops dots the previous Want had is refused.
        let mut inc = Incoming::default();
        decode_message_on(&first, MAX_MESSAGE_PAYLOAD, &mut inc)?;
        let mut e = Enc::new();
        e.u8(1);
        e.uint(4);
        e.u8(1);
        let mut lower = VersionVector::new();
        lower.insert(site(1), 1, 50);
        write_version_vector(&mut e, &lower);
        e.option(None, Enc::uint);
        let frame = frame_as(MESSAGE_MAGIC, 4, &e.into_bytes());
        match decode_message_on(&frame, MAX_MESSAGE_PAYLOAD, &mut inc) {
            Err(DecodeError::Malformed { message, .. }) => {
                assert!(message.contains("drops dots 1..=100"), "{message}")
            }
            other => panic!("{other:?}"),
        }
        // Before version 4 a Want is always whole: no state is kept.
        let v3 = ProtocolVersion::new(3)?;
        let mut out = Outgoing::default();
        let a = encode_message_on(&want(1, &many), v3, &mut out);
        let b = encode_message_on(&want(1, &many), v3, &mut out);
        assert_eq!(a, b);
        Ok(())
    }
}
