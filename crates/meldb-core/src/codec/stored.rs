//! Bytes kept inside the database, format version 1: each row's packed
//! metadata (in its `_meldb_state` column) and the undo images of
//! speculative writes (`meldb_undo.row`). No frame: SQLite checks its own
//! pages, and the database's format version (in `meldb_meta`) covers these
//! layouts.
//!
//! ```text
//! meta   = clock:seq<(site_ix:uint, seq:uint)>  hlc:uint  writer:site_ix
//!          columns:seq<column>
//! column = 0 unset
//!        | 1 lww  age:uint site_ix          (the value is in its column)
//!        | 2 g_counter  seq<(site_ix, total:uint)>
//!        | 3 pn_counter seq<(site_ix, p:uint, n:uint)>
//!        | 4 or_set     seq<(element:str, tags:seq<(site_ix, seq:uint)>)>
//! undo   = seq<value>                        (the base table's whole row)
//! ```
//!
//! Site indices refer to `meldb_sites` (0: no writer); `age` is the row's
//! timestamp minus the register's.

use super::bin::{Dec, Enc};
use super::DecodeError;
use crate::value::Value;

/// The packed form of a row's metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredMeta {
    pub clock: Vec<(u32, u64)>,
    pub hlc: u64,
    pub writer: u32,
    pub columns: Vec<StoredColumn>,
}

/// One column's state, sites as indices into a site table: the layout
/// the changeset payload (`wire`, registers carry their value) and the
/// stored metadata (registers' values live in their SQL column: `V = ()`)
/// share.
///
/// ```text
/// column = 0 unset | 1 lww age:uint site_ix [value] | 2 g_counter seq<(site_ix, n)>
///        | 3 pn_counter seq<(site_ix, p, n)> | 4 or_set seq<(element, seq<(site_ix, seq)>)>
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum IndexedColumn<V> {
    Unset,
    /// `age` is the row's timestamp minus the register's: 0 (one byte) for
    /// every register the row's latest write set.
    Lww {
        age: u64,
        site: u32,
        value: V,
    },
    GCounter(Vec<(u32, u64)>),
    PnCounter(Vec<(u32, u64, u64)>),
    OrSet(Vec<(String, Vec<(u32, u64)>)>),
}

/// A column of the stored metadata: registers without their values.
pub type StoredColumn = IndexedColumn<()>;

impl<V> IndexedColumn<V> {
    /// Writes the column; `value` writes a register's value (nothing for
    /// `()`).
    pub fn encode(&self, e: &mut Enc, value: impl Fn(&mut Enc, &V)) {
        match self {
            IndexedColumn::Unset => e.u8(0),
            IndexedColumn::Lww {
                age,
                site,
                value: v,
            } => {
                e.u8(1);
                e.uint(*age);
                e.uint((*site).into());
                value(e, v);
            }
            IndexedColumn::GCounter(entries) => {
                e.u8(2);
                e.pairs(entries);
            }
            IndexedColumn::PnCounter(entries) => {
                e.u8(3);
                e.triples(entries);
            }
            IndexedColumn::OrSet(entries) => {
                e.u8(4);
                e.tagged(entries);
            }
        }
    }

    /// Reads a column written by [`IndexedColumn::encode`].
    pub fn decode<'a>(
        d: &mut Dec<'a>,
        value: impl FnOnce(&mut Dec<'a>) -> Result<V, DecodeError>,
    ) -> Result<Self, DecodeError> {
        Ok(match d.variant(5, "column")? {
            0 => IndexedColumn::Unset,
            1 => IndexedColumn::Lww {
                age: d.uint()?,
                site: d.u32()?,
                value: value(d)?,
            },
            2 => IndexedColumn::GCounter(d.pairs()?),
            3 => IndexedColumn::PnCounter(d.triples()?),
            _ => IndexedColumn::OrSet(d.tagged()?),
        })
    }
}

impl StoredMeta {
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc::new();
        e.pairs(&self.clock);
        e.uint(self.hlc);
        e.uint(self.writer.into());
        e.seq(&self.columns, |e, c| c.encode(e, |_, ()| {}));
        e.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<StoredMeta, DecodeError> {
        let mut d = Dec::new(bytes, "row metadata");
        let meta = StoredMeta {
            clock: d.pairs()?,
            hlc: d.uint()?,
            writer: d.u32()?,
            columns: d.seq(|d| StoredColumn::decode(d, |_| Ok(())))?,
        };
        d.finish()?;
        Ok(meta)
    }
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
