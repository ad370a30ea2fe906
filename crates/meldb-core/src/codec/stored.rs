//! Bytes kept inside the database, format versions 1 to 3: each row's packed
//! metadata (in its `_meldb_state` column) and the undo images of
//! speculative writes (`meldb_undo.row`). No frame: SQLite checks its own
//! pages, and the database's format version (in `meldb_meta`) covers these
//! layouts.
//!
//! ```text
//! meta   = clock:seq<(site_ix:uint, seq:uint)>  hlc:uint  writer:site_ix
//!          columns:seq<column>  [format 3] write_meta:str (only if any)
//! column = 0 unset
//!        | 1 + kind tag, the kind's fields    (see `column`: registers leave
//!                                             their value to its SQL column)
//! undo   = seq<value>                        (the base table's whole row)
//! ```
//!
//! Site indices refer to `meldb_sites` (0: no writer); `age` is the row's
//! timestamp minus the register's. Database format 3 appends the row's
//! write metadata when its latest write carried some (at most
//! `WriteMetadata::MAX_BYTES`); a blob without it ends after its columns,
//! so every format-1 and format-2 blob is a format-3 blob of a row without
//! metadata and the upgrade rewrites none.

use super::bin::{Dec, Enc};
use super::{column, DecodeError};
use crate::clock::{Hlc, SiteId};
use crate::crdt::{ColumnState, Dot};
use crate::merge::RowState;
use crate::resolve::WriteMetadata;
use crate::value::Value;

/// A row's metadata as stored, sites resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredMeta {
    /// The row clock's entries, in stored order.
    pub clock: Vec<Dot>,
    /// The row's timestamp.
    pub hlc: Hlc,
    /// The row's last writer (nil: none).
    pub writer: SiteId,
    /// The value columns' states; a column added to the schema after the
    /// row was written is unset.
    pub columns: Vec<Option<ColumnState>>,
    /// The latest write's metadata (format 3), if it carried any.
    pub meta: Option<WriteMetadata>,
}

const NO_SITE: SiteId = SiteId(uuid::Uuid::nil());

/// Packs a row's metadata (everything but its causal length, which has its
/// own SQL column). `site_ix` gives each site's index, registering new
/// ones; sites are met in the order clock, writer, columns.
pub fn encode_meta<E>(
    state: &RowState,
    mut site_ix: impl FnMut(SiteId) -> Result<u32, E>,
) -> Result<Vec<u8>, E> {
    let mut e = Enc::new();
    e.len(state.clock.entries().len());
    for &(site, seq) in state.clock.entries() {
        e.uint(site_ix(site)?.into());
        e.uint(seq);
    }
    e.uint(state.hlc.0);
    let writer = if state.writer == NO_SITE {
        0
    } else {
        site_ix(state.writer)?
    };
    e.uint(writer.into());
    e.len(state.columns.len());
    for col in &state.columns {
        column::encode(&mut e, col.as_ref(), state.hlc.0, false, &mut site_ix)?;
    }
    if let Some(meta) = &state.meta {
        e.str(meta.as_str());
    }
    Ok(e.into_bytes())
}

/// Reads metadata written by [`encode_meta`]. `site` resolves a site index
/// (0 is no writer); `values` are the value columns' SQL values, where
/// registers keep theirs.
pub fn decode_meta(
    bytes: &[u8],
    site: impl Fn(u32) -> Option<SiteId>,
    values: Vec<Value>,
) -> Result<StoredMeta, DecodeError> {
    let mut d = Dec::new(bytes, "row metadata");
    let resolve = |d: &Dec<'_>, idx: u32| {
        site(idx).ok_or_else(|| d.malformed(format!("unknown site index {idx}")))
    };
    let n = d.count()?;
    let mut clock = super::bin::capped(n);
    for _ in 0..n {
        let idx = d.u32()?;
        clock.push(Dot {
            site: resolve(&d, idx)?,
            seq: d.uint()?,
        });
    }
    let hlc = d.uint()?;
    let writer = match d.u32()? {
        0 => NO_SITE,
        idx => resolve(&d, idx)?,
    };
    let stored = d.count()?;
    let mut columns = Vec::with_capacity(values.len().max(stored.min(1024)));
    let mut values = values.into_iter();
    for _ in 0..stored {
        let value = values.next().unwrap_or(Value::Null);
        columns.push(column::decode(&mut d, hlc, &site, Some(value))?);
    }
    // Columns added by a schema upgrade are missing from older blobs.
    columns.extend(values.map(|_| None));
    let meta = if d.at_end() {
        None
    } else {
        let text = d.string()?;
        Some(WriteMetadata::new(text).map_err(|e| d.malformed(e.to_string()))?)
    };
    d.finish()?;
    Ok(StoredMeta {
        clock,
        hlc: Hlc(hlc),
        writer,
        columns,
        meta,
    })
}

/// The row clock's `(site index, seq)` entries: the keys of the row's
/// entries in the dot index. The whole blob is checked, not the clock
/// alone.
pub fn decode_clock(bytes: &[u8]) -> Result<Vec<(u32, u64)>, DecodeError> {
    // Sites stand for their own index: every index resolves, and maps back.
    let meta = decode_meta(
        bytes,
        |idx| Some(SiteId(uuid::Uuid::from_u128(idx.into()))),
        Vec::new(),
    )?;
    Ok(meta
        .clock
        .iter()
        .map(|d| (d.site.0.as_u128() as u32, d.seq))
        .collect())
}

/// An undo image: the base table's row as it was.
pub fn encode_undo(values: &[Value]) -> Vec<u8> {
    let mut e = Enc::new();
    e.values(values);
    e.into_bytes()
}

/// Reads an undo image back.
pub fn decode_undo(bytes: &[u8]) -> Result<Vec<Value>, DecodeError> {
    let mut d = Dec::new(bytes, "meldb_undo row");
    let values = d.values()?;
    d.finish()?;
    Ok(values)
}
