//! The fuzz targets' bodies, and the seed corpus.

use super::*;

// ---------------------------------------------------------------------------
// Fuzz target bodies
// ---------------------------------------------------------------------------

/// Ops per input at most, so one input stays fast.
pub const MAX_OPS: usize = 400;

/// The `ops_vs_model` fuzz target: decodes ops from `data` and runs them on
/// a [`Harness`]. Before each op a control byte chooses: mostly one op in
/// its own transaction; sometimes a delete and re-insert of one key
/// ([`reinsert_from_bytes`]); sometimes 2–4 ops in one transaction that is
/// committed or rolled back. Ends with [`Harness::check_export`].
pub fn check_ops_bytes(data: &[u8]) -> Result<(), String> {
    let mut h = Harness::new()?;
    let mut data = data;
    while let Some((&control, rest)) = data.split_first() {
        data = rest;
        if h.steps() >= MAX_OPS {
            break;
        }
        match control % 8 {
            0 => {
                let n = 2 + usize::from(control >> 3) % 3;
                let ops: Vec<Op> = (0..n).map_while(|_| op_from_bytes(&mut data)).collect();
                h.batch(&ops, control & 0x80 == 0)?;
            }
            1 => {
                if let Some(ops) = reinsert_from_bytes(&mut data) {
                    for op in &ops {
                        h.step(op)?;
                    }
                }
            }
            _ => match op_from_bytes(&mut data) {
                Some(op) => h.step(&op)?,
                None => break,
            },
        }
    }
    h.check_export()
}

/// The `decode_frame` fuzz target: decoding must not panic, a frame that
/// decodes must also unframe, and a decoded changeset must survive
/// re-encoding unchanged.
pub fn check_decode_bytes(data: &[u8]) -> Result<(), String> {
    let unframed = codec::unframe(data);
    let decoded = codec::decode_changeset(data);
    if let (Err(e), Ok(_)) = (&unframed, &decoded) {
        return Err(format!(
            "decode_changeset accepted a frame that unframe rejects: {e}"
        ));
    }
    if let Ok(changeset) = decoded {
        check_reencode(&changeset)?;
    }
    Ok(())
}

/// The `decode_message` fuzz target: sync protocol messages from `data`,
/// as a whole frame and wrapped in a valid header and checksum. Decoding
/// must not panic, and a decoded message must re-encode to bytes that
/// decode to the same bytes again (compared as bytes: a real may be NaN).
pub fn check_message_bytes(data: &[u8]) -> Result<(), String> {
    let limit = codec::MAX_MESSAGE_PAYLOAD;
    for frame in [data.to_vec(), codec::frame_message(data)] {
        if let Ok(message) = codec::decode_message(&frame, limit) {
            let bytes = codec::encode_message(&message);
            let again = codec::decode_message(&bytes, limit).map_err(|e| {
                format!(
                    "a decoded {} message does not decode after re-encoding: {e}",
                    message.name()
                )
            })?;
            if codec::encode_message(&again) != bytes {
                return Err(format!(
                    "a decoded {} message changes when re-encoded twice",
                    message.name()
                ));
            }
        }
    }
    Ok(())
}

/// The `decode_compressed` fuzz target: `data` as the body of a protocol-4
/// `Changes` and `Push` (an encoding byte, then plain bytes or a claimed
/// length and a zstd frame), under a 1 MiB limit, and `data` compressed
/// whole into a batch body claiming its true length and one byte less.
/// Decoding must not panic; a body decoded must re-encode, compressed,
/// to a frame that decodes to the same message; a claim short of the
/// truth is refused.
pub fn check_compressed_bytes(data: &[u8]) -> Result<(), String> {
    const LIMIT: usize = 1 << 20;
    let frames = [
        codec::frame_body(false, data),
        codec::frame_body(true, data),
        codec::frame_compressed_batch(1, data.len() as u64, data),
    ];
    for frame in frames {
        if let Ok((version, message)) = codec::decode_message_versioned(&frame, LIMIT) {
            let mut out = codec::Outgoing::default();
            out.set_compress(true);
            let bytes = codec::encode_message_on(&message, version, &mut out);
            let again = codec::decode_message(&bytes, LIMIT).map_err(|e| {
                format!(
                    "a decoded {} does not decode compressed: {e}",
                    message.name()
                )
            })?;
            if again != message && codec::encode_message(&again) != codec::encode_message(&message)
            {
                return Err(format!(
                    "a decoded {} changes when compressed",
                    message.name()
                ));
            }
        }
    }
    if !data.is_empty() {
        let short = codec::frame_compressed_batch(1, data.len() as u64 - 1, data);
        if codec::decode_message(&short, LIMIT).is_ok() {
            return Err(format!(
                "a body of {} bytes claiming one byte less decoded",
                data.len()
            ));
        }
    }
    Ok(())
}

/// The `decode_stored` fuzz target: bytes read as what a database keeps
/// (packed row metadata, an undo image). Decoding must not panic, and what
/// decodes must re-encode to bytes that decode to the same value and
/// re-encode to themselves (the input itself may use longer integer forms
/// than the encoder writes).
pub fn check_stored_bytes(data: &[u8]) -> Result<(), String> {
    use crate::crdt::RowClock;
    use crate::crdt::RowState;
    use meldb_core::codec::stored::{decode_meta, decode_undo, encode_meta, encode_undo};
    use std::convert::Infallible;
    // Sites stand for their own index, so every index resolves and
    // re-encodes to itself; registers read NULL (their values live in SQL).
    let site = |idx: u32| Some(SiteId(uuid::Uuid::from_u128(idx.into())));
    let index = |s: SiteId| Ok::<u32, Infallible>(s.0.as_u128() as u32);
    let state = |bytes: &[u8]| {
        decode_meta(bytes, site, Vec::new()).map(|meta| RowState {
            cl: 1,
            clock: RowClock::from_entries(meta.clock.iter().map(|d| (d.site, d.seq))),
            hlc: meta.hlc,
            writer: meta.writer,
            columns: meta.columns,
            meta: meta.meta,
        })
    };
    if let Ok(first) = state(data) {
        let Ok(bytes) = encode_meta(&first, index);
        let again = state(&bytes)
            .map_err(|e| format!("decoded row metadata does not decode after re-encoding: {e}"))?;
        let Ok(rewritten) = encode_meta(&again, index);
        if again != first || rewritten != bytes {
            return Err("decoded row metadata changes when re-encoded".into());
        }
    }
    if let Ok(values) = decode_undo(data) {
        let bytes = encode_undo(&values);
        let again = decode_undo(&bytes)
            .map_err(|e| format!("a decoded undo image does not decode after re-encoding: {e}"))?;
        if encode_undo(&again) != bytes {
            return Err("a decoded undo image changes when re-encoded".into());
        }
    }
    Ok(())
}

/// The `apply_message` fuzz target: bytes decoded as a sync protocol
/// message (raw, and wrapped in a valid header and checksum); a batch of
/// changes is applied to a seeded store, where a failed apply must change
/// nothing and a successful one must be idempotent, as for changeset files.
pub fn check_apply_message_bytes(data: &[u8]) -> Result<(), String> {
    let limit = codec::MAX_MESSAGE_PAYLOAD;
    for frame in [data.to_vec(), codec::frame_message(data)] {
        if let Ok(crate::sync::Message::Changes(batch)) = codec::decode_message(&frame, limit) {
            check_apply(&batch.changes)?;
        }
    }
    Ok(())
}

fn check_reencode(changeset: &Changeset) -> Result<(), String> {
    let bytes = codec::encode_changeset(changeset);
    let again = codec::decode_changeset(&bytes)
        .map_err(|e| format!("a decoded changeset does not decode after re-encoding: {e}"))?;
    if codec::encode_changeset(&again) != bytes {
        return Err("a decoded changeset changes when re-encoded twice".into());
    }
    Ok(())
}

/// The `apply_changeset` fuzz target. `data` is decoded as a frame and, to
/// get past the checksum, also framed as a payload; every changeset that
/// decodes is applied to a store that already has rows. An apply that
/// fails must leave the store exactly as it was (digest, rows, version
/// vector, held rows) and usable; one that succeeds must be idempotent
/// (applying it again applies nothing and changes nothing), and a full
/// export of the result must rebuild the same state in a fresh replica.
pub fn check_apply_bytes(data: &[u8]) -> Result<(), String> {
    check_decode_bytes(data)?;
    if let Ok(changeset) = codec::decode_changeset(data) {
        check_apply(&changeset)?;
    }
    if data.len() > codec::MAX_FRAME_PAYLOAD {
        return Ok(());
    }
    let framed = codec::frame(data);
    if codec::unframe(&framed) != Ok(data) {
        return Err("unframe(frame(payload)) is not the payload".into());
    }
    check_decode_bytes(&framed)?;
    if let Ok(changeset) = codec::decode_changeset(&framed) {
        check_apply(&changeset)?;
    }
    Ok(())
}

/// What must not change when an apply fails.
#[derive(Debug, PartialEq)]
struct Snapshot {
    digest: [u8; 32],
    rows: Vec<Vec<Vec<Value>>>,
    version: VersionVector,
    held: usize,
}

impl Snapshot {
    fn of(store: &Store) -> Result<Snapshot, String> {
        Ok(Snapshot {
            digest: digest(store)?,
            rows: inventory()
                .tables
                .iter()
                .map(|t| sql_rows(store, &t.name))
                .collect::<crate::Result<_>>()
                .map_err(|e| format!("reading rows: {e}"))?,
            version: store.version_vector(),
            held: store.held_count().map_err(|e| format!("held_count: {e}"))?,
        })
    }
}

fn check_apply(changeset: &Changeset) -> Result<(), String> {
    let mut store = seeded_store()?;
    let before = Snapshot::of(&store)?;
    match store.apply(changeset) {
        Err(e) => {
            if !matches!(e, Error::Apply(_)) {
                return Err(format!(
                    "a decoded changeset failed to apply with a non-apply error: {e}"
                ));
            }
            let after = Snapshot::of(&store)?;
            if after != before {
                return Err(format!(
                    "a failed apply ({e}) changed the store:\n  before: {before:?}\n  after:  {after:?}"
                ));
            }
            store
                .write(|tx| tx.upsert("item", &[("sku", "after-error".into())]))
                .map_err(|e| format!("writing after a failed apply: {e}"))?;
        }
        Ok(_) => {
            let first = Snapshot::of(&store)?;
            let again = store
                .apply(changeset)
                .map_err(|e| format!("a changeset that applied once fails the second time: {e}"))?;
            if again.applied() != 0 {
                return Err(format!(
                    "applying a changeset twice applied rows again: {again:?}"
                ));
            }
            let second = Snapshot::of(&store)?;
            if second.digest != first.digest || second.rows != first.rows {
                return Err("applying a changeset twice changed the state".into());
            }
            export_to_fresh(&store)?;
        }
    }
    Ok(())
}

/// The rows a second replica (site `0xB2`) wrote, exported once.
fn peer_changes() -> Result<&'static Changeset, String> {
    static CHANGES: OnceLock<Result<Changeset, String>> = OnceLock::new();
    CHANGES
        .get_or_init(|| {
            let mut peer = fixed_store(0xB2).map_err(|e| e.to_string())?;
            peer.write(|tx| {
                tx.insert(
                    "item",
                    &[
                        ("sku", "k1".into()),
                        ("name", "pear".into()),
                        ("stock", 3.into()),
                        ("tags", r#"["a","b"]"#.into()),
                    ],
                )?;
                tx.increment("item", "k1", "sold", 2)?;
                tx.insert("item", &[("sku", "k2".into()), ("price", 1.25.into())])?;
                tx.delete("item", "k2")?;
                tx.insert(
                    "location",
                    &[
                        ("warehouse", "w0".into()),
                        ("sku", "k1".into()),
                        ("shelf", "s1".into()),
                        ("quantity", 5.into()),
                    ],
                )
            })
            .map_err(|e| e.to_string())?;
            peer.changes_since(&VersionVector::new())
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| format!("building the peer's changes: {e}"))
}

/// A store (site `0xA1`) with local rows, a local delete, and the peer's
/// rows merged in: the starting point of every `apply_changeset` check.
pub fn seeded_store() -> Result<Store, String> {
    let peer = peer_changes()?;
    let mut store = fixed_store(0xA1).map_err(|e| format!("opening the store: {e}"))?;
    store
        .write(|tx| {
            tx.insert(
                "item",
                &[
                    ("sku", "k0".into()),
                    ("price", 2.5.into()),
                    ("tags", r#"["c"]"#.into()),
                ],
            )?;
            tx.insert("item", &[("sku", "k2".into()), ("name", "two".into())])?;
            tx.increment("item", "k2", "stock", -1)?;
            tx.delete("item", "k0")?;
            tx.insert("item", &[("sku", "k0".into()), ("sold", 4.into())])?;
            tx.apply(peer).map(|_| ())
        })
        .map_err(|e| format!("seeding the store: {e}"))?;
    Ok(store)
}

/// Real changesets for seeding the `apply_changeset` corpus: the peer's
/// export, the seeded store's full export, and that export split into
/// one-row pieces.
pub fn seed_changesets() -> Result<Vec<Changeset>, String> {
    let store = seeded_store()?;
    let full = store
        .changes_since(&VersionVector::new())
        .map_err(|e| format!("changes_since: {e}"))?;
    let mut out = vec![peer_changes()?.clone(), full.clone()];
    out.extend(full.split(1));
    Ok(out)
}

/// The seed changesets as sync batches (`Changes` messages), framed: the
/// starting corpus of the `apply_message` fuzz target.
pub fn seed_messages() -> Result<Vec<Vec<u8>>, String> {
    Ok(seed_changesets()?
        .into_iter()
        .map(|changes| {
            codec::encode_message(&crate::sync::Message::Changes(
                crate::sync::message::Batch { seq: 1, changes },
            ))
        })
        .collect())
}

/// The seed changesets as encoded payloads (no frame header): the starting
/// corpus of the changeset fuzz targets.
pub fn seed_payloads() -> Result<Vec<Vec<u8>>, String> {
    Ok(seed_changesets()?
        .iter()
        .map(|c| codec::encode_changeset(c)[codec::HEADER_LEN..].to_vec())
        .collect())
}
