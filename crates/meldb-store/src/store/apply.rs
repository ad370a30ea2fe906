//! Applying a changeset from another replica.
//!
//! Each row is validated against the schema, checked against the clock
//! drift bound, classified against the local row (already seen,
//! fast-forward, concurrent) and merged with `merge_crdt_columns`. Its
//! covers then join the version vector. All of it is one transaction: an
//! invalid row anywhere rejects the whole changeset and changes nothing.
//!
//! A row whose timestamp is more than the drift bound ahead of the local
//! clock is *held*: stored aside in `meldb_held`, reported with its site and
//! offset, not applied, not covered (so peers will offer it again), and
//! never allowed to move the local clock. Held rows are retried at every
//! apply and by [`Store::release_held`] once the local clock has caught up.

use super::layout::TableLayout;
use super::resolve::Incoming;
use super::rows::{self, RowWriteError};
use super::write::Transaction;
use super::Store;
use crate::changeset::{Changeset, RowChange, TableChanges};
use crate::clock::SiteId;
use crate::crdt::{Causality, ColumnState};
use crate::error::{ApplyError, Result, StorageError};
use crate::merge::{check_shape, merge_row, RowState};
pub use crate::report::{ApplyReport, HeldChange};
use crate::resolve::Writer;
use crate::value::{Key, Value};
use meldb_core::codec;
use rusqlite::params;

impl Store {
    /// Merges a changeset into this replica. Invalid input is an error and
    /// changes nothing; rows too far ahead in time are held (see the report).
    pub fn apply(&mut self, changeset: &Changeset) -> Result<ApplyReport> {
        self.apply_from(changeset, &Writer::default())
    }

    /// [`Store::apply`], telling resolvers who wrote the changes (for an
    /// authority: what the connection authenticated).
    pub fn apply_from(&mut self, changeset: &Changeset, writer: &Writer) -> Result<ApplyReport> {
        let mut tx = self.transaction()?;
        let report = tx.apply_from(changeset, writer)?;
        tx.commit()?;
        Ok(report)
    }

    /// Decodes one or more changeset frames (as
    /// [`codec::encode_changeset_frames`] writes them) and applies them all
    /// in one transaction. Nothing is applied unless every frame decodes.
    pub fn apply_bytes(&mut self, bytes: &[u8]) -> Result<ApplyReport> {
        let changesets = codec::decode_changeset_frames(bytes)?;
        let mut tx = self.transaction()?;
        let mut report = ApplyReport::default();
        for changeset in &changesets {
            report.add(tx.apply_from(changeset, &Writer::default())?);
        }
        tx.commit()?;
        Ok(report)
    }

    /// Applies held rows whose clock the local clock has caught up with.
    pub fn release_held(&mut self) -> Result<ApplyReport> {
        let mut tx = self.transaction()?;
        let report = tx.release_held()?;
        tx.commit()?;
        Ok(report)
    }

    /// How many rows are held back.
    pub fn held_count(&self) -> Result<usize> {
        let n: i64 = self
            .conn
            .query_row("SELECT count(*) FROM meldb_held", [], |r| r.get(0))?;
        Ok(n as usize)
    }
}

impl Transaction<'_> {
    /// Applies a changeset inside this transaction (see [`Store::apply`]).
    /// All or nothing: if it fails, the transaction is as it was before the
    /// call, and may still be committed with its other writes.
    pub fn apply(&mut self, changeset: &Changeset) -> Result<ApplyReport> {
        self.apply_from(changeset, &Writer::default())
    }

    /// [`Transaction::apply`] with the changes' writer (see
    /// [`Store::apply_from`]).
    pub fn apply_from(&mut self, changeset: &Changeset, writer: &Writer) -> Result<ApplyReport> {
        self.savepoint(|tx| {
            let mut report = tx.release_held()?;
            report.add(tx.apply_tables(changeset, writer)?);
            Ok(report)
        })
    }

    /// Runs `f` in a savepoint: if it fails, SQLite and this store's
    /// in-memory state are as they were before, and the enclosing
    /// transaction can go on.
    pub(super) fn savepoint<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        self.store.conn.execute_batch("SAVEPOINT meldb_apply")?;
        let before = self.store.snapshot();
        match f(self) {
            Ok(value) => {
                self.store.conn.execute_batch("RELEASE meldb_apply")?;
                Ok(value)
            }
            Err(e) => {
                self.store
                    .conn
                    .execute_batch("ROLLBACK TO meldb_apply; RELEASE meldb_apply")?;
                self.store.restore(before);
                Err(e)
            }
        }
    }

    fn apply_tables(&mut self, changeset: &Changeset, writer: &Writer) -> Result<ApplyReport> {
        let mut report = ApplyReport::default();
        for table in &changeset.tables {
            report.add(self.apply_table(changeset.origin, table, writer)?);
        }
        Ok(report)
    }

    fn release_held(&mut self) -> Result<ApplyReport> {
        let store = &mut *self.store;
        let horizon = store
            .clock
            .now_ms()
            .saturating_add(store.clock.max_drift_ms());
        let held: Vec<(i64, Vec<u8>)> = {
            let mut stmt = store.conn.prepare_cached(
                "SELECT id, frame FROM meldb_held WHERE physical_ms <= ?1 ORDER BY id",
            )?;
            let rows = stmt.query_map([horizon as i64], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let mut report = ApplyReport::default();
        for (id, frame) in held {
            let changeset = codec::decode_changeset(&frame).map_err(|e| StorageError::Corrupt {
                what: format!("meldb_held row {id}"),
                problem: e.to_string(),
            })?;
            self.store
                .conn
                .execute("DELETE FROM meldb_held WHERE id = ?1", [id])?;
            // Each held row in its own savepoint: one that no longer applies
            // (it was checked against the schema, but e.g. claims a dot that
            // another row has since taken) is dropped and reported, instead
            // of failing every apply from now on.
            // The writer of a held row is not kept; resolvers see an
            // unknown writer.
            match self.savepoint(|tx| tx.apply_tables(&changeset, &Writer::default())) {
                Ok(released) => {
                    report.released += released.applied() + released.already_seen;
                    report.held.extend(released.held);
                }
                Err(crate::Error::Apply(e)) => report.discarded.push(e.to_string()),
                Err(e) => return Err(e),
            }
        }
        Ok(report)
    }

    fn apply_table(
        &mut self,
        origin: SiteId,
        changes: &TableChanges,
        writer: &Writer,
    ) -> Result<ApplyReport> {
        let store = &mut *self.store;
        let origin_name = origin.to_string();
        let layout =
            store
                .table(&changes.table)
                .cloned()
                .ok_or_else(|| ApplyError::UnknownTable {
                    origin: origin_name.clone(),
                    table: changes.table.clone(),
                })?;
        let mapping = column_mapping(&layout, &origin_name, changes)?;
        let every_change = store.checks_every_change(&layout);
        let mut report = ApplyReport::default();
        for row in &changes.rows {
            let invalid = |problem: String| ApplyError::InvalidRow {
                origin: origin_name.clone(),
                table: changes.table.clone(),
                key: Key(row.key.clone()).to_string(),
                problem,
            };
            let state = localize(&layout, &mapping, row).map_err(invalid)?;
            let store = &mut *self.store;
            let local = store.local;
            let seen = row
                .covers
                .iter()
                .filter(|c| c.site == local)
                .map(|c| c.last)
                .chain([state.clock.get(&local)])
                .max()
                .unwrap_or(0);
            if seen > store.replica.last_seq {
                return Err(ApplyError::LostHistory {
                    site: local.to_string(),
                    last: store.replica.last_seq,
                    seen,
                }
                .into());
            }
            if let Err(ahead) = store.clock.check(state.hlc) {
                // Stored in the local column layout, so two deliveries of
                // the same row from the same sender are the same bytes.
                let single = Changeset {
                    origin,
                    tables: vec![TableChanges {
                        table: layout.table.name.clone(),
                        columns: layout
                            .value_cols
                            .iter()
                            .map(|&i| layout.table.columns[i].name.clone())
                            .collect(),
                        rows: vec![RowChange {
                            key: row.key.clone(),
                            state: state.clone(),
                            covers: row.covers.clone(),
                        }],
                    }],
                };
                // The row is not covered while held, so peers offer it again
                // on every sync; keep one copy.
                store.conn.execute(
                    "INSERT INTO meldb_held (physical_ms, frame) SELECT ?1, ?2 \
                     WHERE NOT EXISTS (SELECT 1 FROM meldb_held WHERE frame = ?2)",
                    params![
                        state.hlc.physical_ms() as i64,
                        codec::encode_changeset(&single)
                    ],
                )?;
                report.held.push(HeldChange {
                    table: changes.table.clone(),
                    key: Key(row.key.clone()),
                    site: if state.writer.0.is_nil() {
                        origin
                    } else {
                        state.writer
                    },
                    offset_ms: ahead.offset_ms,
                });
                continue;
            }
            // Try the row as new first: a replica catching up mostly
            // receives rows it lacks, and the insert probes the key anyway.
            let mut causality = Causality::FastForward;
            let mut local_state = None;
            let mut merged_state = None;
            let mut outcome = rows::write_row(
                &store.conn,
                &layout,
                &mut store.sites,
                &row.key,
                None,
                &state,
            );
            if let Err(RowWriteError::KeyExists) = outcome {
                let existing = rows::load_by_key(&store.conn, &layout, &store.sites, &row.key)?
                    .ok_or_else(|| invalid("key collides with a row that cannot be read".into()))?;
                let (kind, merged) = merge_row(Some(&existing.state), &state, &layout.rules);
                causality = kind;
                outcome = if kind == Causality::Duplicate {
                    Ok(existing.rid)
                } else {
                    let previous = Some((existing.rid, &existing.state.clock));
                    rows::write_row(
                        &store.conn,
                        &layout,
                        &mut store.sites,
                        &row.key,
                        previous,
                        &merged,
                    )
                };
                local_state = Some(existing.state);
                merged_state = Some(merged);
            }
            let rid = match outcome {
                Ok(rid) => rid,
                Err(RowWriteError::DotTaken(site, seq)) => {
                    return Err(invalid(format!(
                        "dot ({site}, {seq}) already belongs to another row"
                    ))
                    .into())
                }
                Err(RowWriteError::KeyExists) => {
                    return Err(invalid("key collides with an existing row".into()).into())
                }
                Err(RowWriteError::Sqlite(e)) => return Err(e.into()),
            };
            match causality {
                Causality::Duplicate => report.already_seen += 1,
                Causality::FastForward => report.fast_forward += 1,
                Causality::Concurrent => report.concurrent += 1,
            }
            // Checked against the drift bound above, so this cannot fail.
            let _ = store.clock.observe(state.hlc);
            for cover in &row.covers {
                if cover.site != store.local {
                    store
                        .replica
                        .coverage
                        .insert(cover.site, cover.first, cover.last);
                    store.replica.coverage_dirty = true;
                }
            }
            let concurrent = causality == Causality::Concurrent;
            if concurrent || (causality == Causality::FastForward && every_change) {
                let change = Incoming {
                    rid,
                    key: &row.key,
                    local: local_state.as_ref(),
                    incoming: &state,
                    merged: merged_state.unwrap_or_else(|| state.clone()),
                    concurrent,
                    writer,
                };
                if let Some(outcome) = self.resolve_incoming(&layout, change)? {
                    *report.outcomes.entry(outcome).or_default() += 1;
                }
            }
        }
        Ok(report)
    }
}

/// For each column position in the changeset, the local value column.
fn column_mapping(
    layout: &TableLayout,
    origin: &str,
    changes: &TableChanges,
) -> Result<Vec<usize>, ApplyError> {
    let mut mapping = Vec::with_capacity(changes.columns.len());
    for name in &changes.columns {
        let j = layout
            .value_index(name)
            .ok_or_else(|| ApplyError::UnknownColumn {
                origin: origin.to_owned(),
                table: changes.table.clone(),
                column: name.clone(),
            })?;
        if mapping.contains(&j) {
            return Err(ApplyError::InvalidRow {
                origin: origin.to_owned(),
                table: changes.table.clone(),
                key: "(all rows)".into(),
                problem: format!("column {name:?} is listed twice"),
            });
        }
        mapping.push(j);
    }
    Ok(mapping)
}

/// Validates an incoming row and lays its columns out in local order.
fn localize(layout: &TableLayout, mapping: &[usize], row: &RowChange) -> Result<RowState, String> {
    let table = &layout.table;
    if row.key.len() != table.primary_key.len() {
        return Err(format!(
            "key has {} parts, the primary key has {}",
            row.key.len(),
            table.primary_key.len()
        ));
    }
    for (value, &i) in row.key.iter().zip(&table.primary_key) {
        let col = &table.columns[i];
        if matches!(value, Value::Real(r) if r.is_nan()) || !col.sql_type.admits(value) {
            return Err(format!(
                "key column {:?} expects {}, got {}",
                col.name,
                col.sql_type,
                value.type_name()
            ));
        }
    }
    let incoming = &row.state;
    if incoming.columns.len() != mapping.len() {
        return Err(format!(
            "{} column states for {} listed columns",
            incoming.columns.len(),
            mapping.len()
        ));
    }
    let mut columns = vec![None; layout.value_cols.len()];
    for (col, &j) in incoming.columns.iter().zip(mapping) {
        columns[j] = col.clone();
    }
    let state = RowState {
        cl: incoming.cl,
        clock: incoming.clock.clone(),
        hlc: incoming.hlc,
        writer: incoming.writer,
        columns,
    };
    check_shape(&state, &layout.kinds)?;
    // Far beyond any real history (2^62 deletes, writes or milliseconds), and
    // far enough below 2^63 that nothing derived from them overflows when
    // stored as an SQLite integer.
    let too_big = |n: u64| n >= 1 << 62;
    if too_big(state.cl)
        || state.clock.entries().iter().any(|&(_, seq)| too_big(seq))
        || too_big(state.hlc.0)
    {
        return Err("a causal length, sequence number or timestamp is 2^62 or more".into());
    }
    for cover in &row.covers {
        if cover.first == 0 || cover.first > cover.last || too_big(cover.last) {
            return Err(format!(
                "invalid cover {}..={} for site {}",
                cover.first, cover.last, cover.site
            ));
        }
    }
    for (j, col) in state.columns.iter().enumerate() {
        let schema_col = &table.columns[layout.value_cols[j]];
        let required = schema_col.kind == crate::schema::Kind::Lww
            && !schema_col.nullable
            && schema_col.default.is_none();
        if state.is_live() && required && col.is_none() {
            return Err(format!(
                "no value for NOT NULL column {:?}",
                schema_col.name
            ));
        }
        if let Some(ColumnState::Lww(lww)) = col {
            let ok = match &lww.value {
                Value::Null => schema_col.nullable,
                Value::Real(r) if r.is_nan() => false,
                v => schema_col.sql_type.admits(v),
            };
            if !ok {
                return Err(format!(
                    "column {:?} ({}{}) cannot hold {}",
                    schema_col.name,
                    schema_col.sql_type,
                    if schema_col.nullable {
                        ""
                    } else {
                        ", NOT NULL"
                    },
                    lww.value.type_name()
                ));
            }
            if lww.hlc > state.hlc {
                return Err(format!(
                    "column {:?} is newer than the row's timestamp",
                    schema_col.name
                ));
            }
        }
    }
    Ok(state)
}
