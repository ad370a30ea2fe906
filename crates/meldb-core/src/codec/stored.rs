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

/// One column's state in [`StoredMeta`].
#[derive(Debug, Clone, PartialEq)]
pub enum StoredColumn {
    Unset,
    /// `age` is the row's timestamp minus the register's: 0 (one byte) for
    /// every register the row's latest write set.
    Lww {
        age: u64,
        site: u32,
    },
    GCounter(Vec<(u32, u64)>),
    PnCounter(Vec<(u32, u64, u64)>),
    OrSet(Vec<(String, Vec<(u32, u64)>)>),
}

impl StoredMeta {
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc::new();
        e.pairs(&self.clock);
        e.uint(self.hlc);
        e.uint(self.writer.into());
        e.seq(&self.columns, |e, c| match c {
            StoredColumn::Unset => e.u8(0),
            StoredColumn::Lww { age, site } => {
                e.u8(1);
                e.uint(*age);
                e.uint((*site).into());
            }
            StoredColumn::GCounter(entries) => {
                e.u8(2);
                e.pairs(entries);
            }
            StoredColumn::PnCounter(entries) => {
                e.u8(3);
                e.triples(entries);
            }
            StoredColumn::OrSet(entries) => {
                e.u8(4);
                e.tagged(entries);
            }
        });
        e.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<StoredMeta, DecodeError> {
        let mut d = Dec::new(bytes, "row metadata");
        let meta = StoredMeta {
            clock: d.pairs()?,
            hlc: d.uint()?,
            writer: d.u32()?,
            columns: d.seq(|d| {
                Ok(match d.variant(5, "column")? {
                    0 => StoredColumn::Unset,
                    1 => StoredColumn::Lww {
                        age: d.uint()?,
                        site: d.u32()?,
                    },
                    2 => StoredColumn::GCounter(d.pairs()?),
                    3 => StoredColumn::PnCounter(d.triples()?),
                    _ => StoredColumn::OrSet(d.tagged()?),
                })
            })?,
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
