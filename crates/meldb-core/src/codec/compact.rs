//! The compact changeset layout that sync messages carry.
//!
//! Changeset files keep the simple serde layout of `wire`; on the network
//! every byte of metadata is paid per row, so batches use this hand-written
//! layout instead. Site ids are written once, in a table, and referred to
//! by position. Rows are written one after another with a *context* of the
//! previous row of the same table: the writer is omitted when it repeats,
//! the row timestamp is a zigzag delta from the previous one, and a row
//! whose clock is its writer's single dot writes only the delta from that
//! writer's previous sequence number. One flags byte per row says which
//! shortcuts apply; the common row (one writer, registers all stamped by
//! that write, covering its own dot) costs the flags byte, two or three
//! one-byte deltas, and its values.
//!
//! Values: a tag byte, then a zigzag varint (integer), 8 little-endian
//! bytes (real), or a varint length and the bytes (text, blob).
//!
//! Two layouts, chosen by the caller (the protocol version): without
//! metadata (protocol versions 1 and 2: a row's [`RowState::meta`] is not
//! sent, and the flag bit `0x80` is refused) and with it (version 3: flag
//! `0x80` says the row's write metadata follows its covers, as a length and
//! UTF-8 bytes, at most `WriteMetadata::MAX_BYTES`).
//!
//! Decoding checks every read against the bytes left, every count against
//! what that many elements need at least (so no count allocates more than
//! the input can fill), every site index against the table, and the flags
//! against each other; arithmetic on deltas wraps, so hostile deltas give
//! odd values for `apply` to reject, never a panic.

use super::bin::capped;
use super::DecodeError;
use crate::changeset::{Changeset, Cover, RowChange, TableChanges};
use crate::clock::{Hlc, SiteId};
use crate::crdt::{ColumnState, Kind, Lww, RowClock, StateSink, StateSource};
use crate::merge::RowState;
use crate::resolve::WriteMetadata;
use crate::value::Value;
use std::collections::HashMap;

/// The writer is the previous row's.
const SAME_WRITER: u8 = 0x01;
/// Causal length 1 (a row in its first life).
const CL_ONE: u8 = 0x02;
/// The clock is exactly the writer's dot.
const CLOCK_SINGLE: u8 = 0x04;
/// Every set column is a register stamped at the row's timestamp by the
/// writer: only values follow.
const COLS_SIMPLE: u8 = 0x08;
/// With `COLS_SIMPLE`: every column is set (no presence bytes).
const ALL_PRESENT: u8 = 0x10;
/// With `CLOCK_SINGLE`: the only cover is the writer's, ending at its dot.
const COVER_OWN: u8 = 0x20;
/// The key's arity differs from the table's (it follows).
const OTHER_ARITY: u8 = 0x40;
/// The row's latest write carried metadata: it follows the covers, as a
/// length and UTF-8 bytes (protocol version 3 on; before, the flag is
/// unknown and refused).
const HAS_META: u8 = 0x80;

const NIL: SiteId = SiteId(uuid::Uuid::nil());

fn malformed(message: impl Into<String>) -> DecodeError {
    DecodeError::Malformed {
        what: "changes",
        message: message.into(),
    }
}

// ------------------------------------------------------------------ encode

struct Out {
    bytes: Vec<u8>,
    sites: Vec<SiteId>,
    index: HashMap<SiteId, u64>,
}

impl Out {
    fn u8(&mut self, b: u8) {
        self.bytes.push(b);
    }

    fn varint(&mut self, mut n: u64) {
        while n >= 0x80 {
            self.bytes.push((n as u8) | 0x80);
            n >>= 7;
        }
        self.bytes.push(n as u8);
    }

    fn zigzag(&mut self, n: i64) {
        self.varint(((n << 1) ^ (n >> 63)) as u64);
    }

    fn raw(&mut self, bytes: &[u8]) {
        self.varint(bytes.len() as u64);
        self.bytes.extend_from_slice(bytes);
    }

    fn site(&mut self, site: SiteId) -> u64 {
        let next = self.sites.len() as u64;
        *self.index.entry(site).or_insert_with(|| {
            self.sites.push(site);
            next
        })
    }

    fn value(&mut self, value: &Value) {
        match value {
            Value::Null => self.u8(0),
            Value::Integer(i) => {
                self.u8(1);
                self.zigzag(*i);
            }
            Value::Real(r) => {
                self.u8(2);
                self.bytes.extend_from_slice(&r.to_le_bytes());
            }
            Value::Text(s) => {
                self.u8(3);
                self.raw(s.as_bytes());
            }
            Value::Blob(b) => {
                self.u8(4);
                self.raw(b);
            }
        }
    }
}

/// The bytes this layout spends on `values` alone (tests measure the
/// metadata around them).
#[doc(hidden)]
pub fn values_len<'a>(values: impl IntoIterator<Item = &'a Value>) -> usize {
    let mut out = Out {
        bytes: Vec::new(),
        sites: Vec::new(),
        index: HashMap::new(),
    };
    for v in values {
        out.value(v);
    }
    out.bytes.len()
}

/// Per-table delta context, shared by the encoder and the decoder.
struct Context {
    hlc: u64,
    writer: Option<u64>,
    last_seq: HashMap<u64, u64>,
}

impl Context {
    fn new() -> Context {
        Context {
            hlc: 0,
            writer: None,
            last_seq: HashMap::new(),
        }
    }
}

/// Encodes a changeset in the newest layout (with write metadata).
pub fn encode(cs: &Changeset) -> Vec<u8> {
    encode_as(cs, true)
}

/// Encodes a changeset: `origin | site table | tables`, the site table
/// written after the tables are (it is only known then) but placed first.
/// `metadata`: whether rows carry their write metadata (protocol 3 on);
/// without it, metadata is left out.
pub fn encode_as(cs: &Changeset, metadata: bool) -> Vec<u8> {
    let mut out = Out {
        bytes: Vec::new(),
        sites: Vec::new(),
        index: HashMap::new(),
    };
    out.varint(cs.tables.len() as u64);
    for table in &cs.tables {
        encode_table(&mut out, table, metadata);
    }
    let mut head = Vec::with_capacity(16 + 17 * out.sites.len() + 4);
    head.extend_from_slice(cs.origin.as_bytes());
    let mut sites = Out {
        bytes: head,
        sites: Vec::new(),
        index: HashMap::new(),
    };
    sites.varint(out.sites.len() as u64);
    for site in &out.sites {
        sites.bytes.extend_from_slice(site.as_bytes());
    }
    let mut bytes = sites.bytes;
    bytes.extend_from_slice(&out.bytes);
    bytes
}

fn encode_table(out: &mut Out, table: &TableChanges, metadata: bool) {
    out.raw(table.table.as_bytes());
    out.varint(table.columns.len() as u64);
    for c in &table.columns {
        out.raw(c.as_bytes());
    }
    let arity = table.rows.first().map_or(0, |r| r.key.len());
    out.varint(arity as u64);
    out.varint(table.rows.len() as u64);
    let mut ctx = Context::new();
    for row in &table.rows {
        encode_row(out, &mut ctx, row, arity, metadata);
    }
}

fn encode_row(out: &mut Out, ctx: &mut Context, row: &RowChange, arity: usize, metadata: bool) {
    let state = &row.state;
    let writer = (state.writer != NIL).then(|| out.site(state.writer));
    let mut flags = 0;
    if writer == ctx.writer && writer.is_some() {
        flags |= SAME_WRITER;
    }
    if state.cl == 1 {
        flags |= CL_ONE;
    }
    let clock = state.clock.entries();
    let single = match (clock, writer) {
        ([(site, seq)], Some(_)) if *site == state.writer => Some(*seq),
        _ => None,
    };
    if single.is_some() {
        flags |= CLOCK_SINGLE;
    }
    let simple = writer.is_some()
        && state.columns.iter().all(|c| match c {
            None => true,
            Some(ColumnState::Lww(l)) => l.hlc == state.hlc && l.site == state.writer,
            Some(_) => false,
        });
    if simple {
        flags |= COLS_SIMPLE;
        if state.columns.iter().all(Option::is_some) {
            flags |= ALL_PRESENT;
        }
    }
    let own_cover = match (single, row.covers.as_slice()) {
        (Some(seq), [c]) if c.site == state.writer && c.last == seq && c.first <= seq => {
            Some(seq - c.first)
        }
        _ => None,
    };
    if own_cover.is_some() {
        flags |= COVER_OWN;
    }
    if row.key.len() != arity {
        flags |= OTHER_ARITY;
    }
    let meta = state.meta.as_ref().filter(|_| metadata);
    if meta.is_some() {
        flags |= HAS_META;
    }
    out.u8(flags);
    if flags & SAME_WRITER == 0 {
        out.varint(writer.map_or(0, |w| w + 1));
    }
    ctx.writer = writer;
    if flags & CL_ONE == 0 {
        out.varint(state.cl);
    }
    out.zigzag(state.hlc.0.wrapping_sub(ctx.hlc) as i64);
    ctx.hlc = state.hlc.0;
    match (single, writer) {
        (Some(seq), Some(w)) => {
            let last = ctx.last_seq.entry(w).or_insert(0);
            out.zigzag(seq.wrapping_sub(*last) as i64);
            *last = seq;
        }
        _ => {
            out.varint(clock.len() as u64);
            for &(site, seq) in clock {
                let idx = out.site(site);
                out.varint(idx);
                out.varint(seq);
            }
        }
    }
    if flags & OTHER_ARITY != 0 {
        out.varint(row.key.len() as u64);
    }
    for v in &row.key {
        out.value(v);
    }
    for column in &state.columns {
        if simple {
            match column {
                Some(ColumnState::Lww(l)) => {
                    if flags & ALL_PRESENT == 0 {
                        out.u8(1);
                    }
                    out.value(&l.value);
                }
                _ => out.u8(0),
            }
        } else {
            encode_column(out, state.hlc, column.as_ref());
        }
    }
    match own_cover {
        Some(back) => out.varint(back),
        None => {
            out.varint(row.covers.len() as u64);
            for c in &row.covers {
                let idx = out.site(c.site);
                out.varint(idx);
                out.varint(c.first);
                out.varint(c.last.wrapping_sub(c.first));
            }
        }
    }
    if let Some(meta) = meta {
        out.raw(meta.as_str().as_bytes());
    }
}

fn encode_column(out: &mut Out, row_hlc: Hlc, column: Option<&ColumnState>) {
    match column {
        None => out.u8(0),
        Some(state) => {
            out.u8(state.kind().tag() + 1);
            state.encode(&mut ColumnOut { out, row_hlc });
        }
    }
}

/// A column state's fields in this layout: varints, sites by position,
/// a register's timestamp as its age.
struct ColumnOut<'o> {
    out: &'o mut Out,
    row_hlc: Hlc,
}

impl StateSink for ColumnOut<'_> {
    fn len(&mut self, n: usize) {
        self.out.varint(n as u64);
    }

    fn uint(&mut self, n: u64) {
        self.out.varint(n);
    }

    fn site(&mut self, site: SiteId) {
        let idx = self.out.site(site);
        self.out.varint(idx);
    }

    fn text(&mut self, s: &str) {
        self.out.raw(s.as_bytes());
    }

    fn stamp(&mut self, hlc: Hlc) {
        self.out.varint(self.row_hlc.0.wrapping_sub(hlc.0));
    }

    fn column_value(&mut self, value: &Value) {
        self.out.value(value);
    }
}

// ------------------------------------------------------------------ decode

struct In<'a> {
    bytes: &'a [u8],
    pos: usize,
    sites: Vec<SiteId>,
}

impl<'a> In<'a> {
    fn left(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| {
                malformed(format!(
                    "{n} bytes needed at offset {}, {} left",
                    self.pos,
                    self.left()
                ))
            })?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut n: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            n |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                if shift == 63 && b > 1 {
                    break;
                }
                return Ok(n);
            }
        }
        Err(malformed(format!("varint too long at offset {}", self.pos)))
    }

    fn zigzag(&mut self) -> Result<i64, DecodeError> {
        let n = self.varint()?;
        Ok((n >> 1) as i64 ^ -((n & 1) as i64))
    }

    /// A count of elements that take at least `min_bytes` each.
    fn count(&mut self, min_bytes: usize, what: &str) -> Result<usize, DecodeError> {
        let n = self.varint()?;
        if n > (self.left() / min_bytes.max(1)) as u64 {
            return Err(malformed(format!(
                "{what} count {n} at offset {} exceeds what {} bytes can hold",
                self.pos,
                self.left()
            )));
        }
        Ok(n as usize)
    }

    fn raw(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.count(1, "byte")?;
        self.take(n)
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        let at = self.pos;
        std::str::from_utf8(self.raw()?)
            .map(str::to_owned)
            .map_err(|e| malformed(format!("text at offset {at} is not UTF-8: {e}")))
    }

    fn site_id(&mut self) -> Result<SiteId, DecodeError> {
        let mut b = [0u8; 16];
        b.copy_from_slice(self.take(16)?);
        Ok(SiteId::from_bytes(b))
    }

    fn site(&mut self) -> Result<SiteId, DecodeError> {
        let idx = self.varint()?;
        self.sites.get(idx as usize).copied().ok_or_else(|| {
            malformed(format!(
                "site index {idx} is outside the table of {} sites",
                self.sites.len()
            ))
        })
    }

    fn value(&mut self) -> Result<Value, DecodeError> {
        Ok(match self.u8()? {
            0 => Value::Null,
            1 => Value::Integer(self.zigzag()?),
            2 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(self.take(8)?);
                Value::Real(f64::from_le_bytes(b))
            }
            3 => Value::Text(self.string()?),
            4 => Value::Blob(self.raw()?.to_vec()),
            tag => {
                return Err(malformed(format!(
                    "unknown value tag {tag} at offset {}",
                    self.pos - 1
                )))
            }
        })
    }
}

/// Decodes what [`encode`] wrote (the newest layout).
pub fn decode(bytes: &[u8]) -> Result<Changeset, DecodeError> {
    decode_as(bytes, true)
}

/// Decodes what [`encode_as`] wrote with the same `metadata`.
pub fn decode_as(bytes: &[u8], metadata: bool) -> Result<Changeset, DecodeError> {
    let mut input = In {
        bytes,
        pos: 0,
        sites: Vec::new(),
    };
    let origin = input.site_id()?;
    let nsites = input.count(16, "site")?;
    let mut sites = capped(nsites);
    for _ in 0..nsites {
        sites.push(input.site_id()?);
    }
    input.sites = sites;
    let ntables = input.count(4, "table")?;
    let mut tables = capped(ntables);
    for _ in 0..ntables {
        tables.push(decode_table(&mut input, metadata)?);
    }
    if input.left() > 0 {
        return Err(DecodeError::TrailingBytes {
            offset: input.pos,
            extra: input.left(),
        });
    }
    Ok(Changeset { origin, tables })
}

fn decode_table(input: &mut In<'_>, metadata: bool) -> Result<TableChanges, DecodeError> {
    let table = input.string()?;
    let ncols = input.count(1, "column")?;
    let mut columns = capped(ncols);
    for _ in 0..ncols {
        columns.push(input.string()?);
    }
    let arity = input.count(1, "key part")?;
    // A row takes at least its flags, a timestamp, a sequence delta, one
    // byte per column and a cover.
    let nrows = input.count(4 + ncols, "row")?;
    let mut rows = capped(nrows);
    let mut ctx = Context::new();
    for _ in 0..nrows {
        rows.push(decode_row(input, &mut ctx, arity, ncols, metadata)?);
    }
    Ok(TableChanges {
        table,
        columns,
        rows,
    })
}

fn decode_row(
    input: &mut In<'_>,
    ctx: &mut Context,
    arity: usize,
    ncols: usize,
    metadata: bool,
) -> Result<RowChange, DecodeError> {
    let at = input.pos;
    let flags = input.u8()?;
    if flags & HAS_META != 0 && !metadata {
        return Err(malformed(format!(
            "unknown row flags {flags:#04x} at offset {at}"
        )));
    }
    let writer_idx = if flags & SAME_WRITER != 0 {
        ctx.writer.ok_or_else(|| {
            malformed(format!(
                "row at offset {at} repeats a writer it has none of"
            ))
        })?
    } else {
        match input.varint()? {
            0 => u64::MAX,
            n => n - 1,
        }
    };
    let writer = if writer_idx == u64::MAX {
        ctx.writer = None;
        None
    } else {
        ctx.writer = Some(writer_idx);
        Some(
            input
                .sites
                .get(writer_idx as usize)
                .copied()
                .ok_or_else(|| {
                    malformed(format!(
                        "writer index {writer_idx} is outside the table of {} sites",
                        input.sites.len()
                    ))
                })?,
        )
    };
    let needs_writer = flags & (CLOCK_SINGLE | COLS_SIMPLE | COVER_OWN) != 0;
    if needs_writer && writer.is_none() {
        return Err(malformed(format!(
            "row at offset {at}: flags {flags:#04x} need a writer"
        )));
    }
    if (flags & ALL_PRESENT != 0 && flags & COLS_SIMPLE == 0)
        || (flags & COVER_OWN != 0 && flags & CLOCK_SINGLE == 0)
    {
        return Err(malformed(format!(
            "row at offset {at}: inconsistent flags {flags:#04x}"
        )));
    }
    let writer_site = writer.unwrap_or(NIL);
    let cl = if flags & CL_ONE != 0 {
        1
    } else {
        input.varint()?
    };
    let hlc = ctx.hlc.wrapping_add(input.zigzag()? as u64);
    ctx.hlc = hlc;
    let mut single = None;
    let clock = if flags & CLOCK_SINGLE != 0 {
        let last = ctx.last_seq.entry(writer_idx).or_insert(0);
        let seq = last.wrapping_add(input.zigzag()? as u64);
        *last = seq;
        single = Some(seq);
        RowClock::from_entries([(writer_site, seq)])
    } else {
        let n = input.count(2, "clock entry")?;
        let mut entries = capped(n);
        for _ in 0..n {
            entries.push((input.site()?, input.varint()?));
        }
        RowClock::from_entries(entries)
    };
    let arity = if flags & OTHER_ARITY != 0 {
        input.count(1, "key part")?
    } else {
        arity
    };
    let mut key = capped(arity.min(input.left()));
    for _ in 0..arity {
        key.push(input.value()?);
    }
    let mut columns = capped(ncols);
    for _ in 0..ncols {
        columns.push(if flags & COLS_SIMPLE != 0 {
            let present = flags & ALL_PRESENT != 0 || input.u8()? != 0;
            if present {
                Some(ColumnState::Lww(Lww {
                    hlc: Hlc(hlc),
                    site: writer_site,
                    value: input.value()?,
                }))
            } else {
                None
            }
        } else {
            decode_column(input, hlc)?
        });
    }
    let covers = match single {
        Some(seq) if flags & COVER_OWN != 0 => {
            let back = input.varint()?;
            vec![Cover {
                site: writer_site,
                first: seq.checked_sub(back).ok_or_else(|| {
                    malformed(format!("row at offset {at}: cover starts before 0"))
                })?,
                last: seq,
            }]
        }
        _ => {
            let n = input.count(3, "cover")?;
            let mut covers = capped(n);
            for _ in 0..n {
                let site = input.site()?;
                let first = input.varint()?;
                let last = first.wrapping_add(input.varint()?);
                covers.push(Cover { site, first, last });
            }
            covers
        }
    };
    let meta = if flags & HAS_META != 0 {
        let text = input.string()?;
        Some(WriteMetadata::new(text).map_err(|e| malformed(format!("row at offset {at}: {e}")))?)
    } else {
        None
    };
    Ok(RowChange {
        key,
        state: RowState {
            cl,
            clock,
            hlc: Hlc(hlc),
            writer: writer_site,
            columns,
            meta,
        },
        covers,
    })
}

fn decode_column(input: &mut In<'_>, row_hlc: u64) -> Result<Option<ColumnState>, DecodeError> {
    let at = input.pos;
    let tag = input.u8()?;
    if tag == 0 {
        return Ok(None);
    }
    let Some(kind) = Kind::from_tag(tag - 1) else {
        return Err(malformed(format!(
            "unknown column tag {tag} at offset {at}"
        )));
    };
    kind.decode(&mut ColumnIn { input, row_hlc }).map(Some)
}

/// Reads what [`ColumnOut`] writes.
struct ColumnIn<'i, 'a> {
    input: &'i mut In<'a>,
    row_hlc: u64,
}

impl StateSource for ColumnIn<'_, '_> {
    type Error = DecodeError;

    fn len(&mut self, min_bytes: usize, what: &'static str) -> Result<usize, DecodeError> {
        self.input.count(min_bytes, what)
    }

    fn uint(&mut self) -> Result<u64, DecodeError> {
        self.input.varint()
    }

    fn site(&mut self) -> Result<SiteId, DecodeError> {
        self.input.site()
    }

    fn text(&mut self) -> Result<String, DecodeError> {
        self.input.string()
    }

    fn stamp(&mut self) -> Result<Hlc, DecodeError> {
        let age = self.input.varint()?;
        self.row_hlc.checked_sub(age).map(Hlc).ok_or_else(|| {
            malformed(format!(
                "register age {age} exceeds the row timestamp {}",
                self.row_hlc
            ))
        })
    }

    fn column_value(&mut self) -> Result<Value, DecodeError> {
        self.input.value()
    }
}
