//! Local writes. A [`Transaction`] is a guard: it rolls back on drop unless
//! [`Transaction::commit`] is called, and every write checks the schema
//! before changing anything, so a rejected write leaves no trace.
//!
//! Each row write gets a dot `(local site, next seq)` and a fresh HLC
//! timestamp, updates the row's materialized values and packed metadata in
//! one statement, and moves the row's entry in the dot index.

use super::layout::TableLayout;
use super::rows::{self, RowWriteError};
use super::{Snapshot, Store};
use crate::crdt::{ColumnState, Dot, Op, OpError, Stamp};
use crate::error::{Error, Result, WriteError};
use crate::merge::{fresh_state, RowState};
use crate::resolve::{WriteMetadata, Writer};
use crate::schema::{Kind, Policy, SqlType};
use crate::value::{Key, Value};
use meldb_core::engine::{self, Violation};

/// A write transaction on a [`Store`].
#[derive(Debug)]
pub struct Transaction<'s> {
    pub(super) store: &'s mut Store,
    undo: Option<Snapshot>,
    /// Set when a write failed after it had changed SQLite (only a storage
    /// error can do that): such a transaction can only roll back.
    poisoned: Option<String>,
    /// Whether writes are a pending mutation's speculative effects (their
    /// rows' canonical before-images are kept; see `speculate`).
    pub(super) speculative: bool,
    /// The metadata the next writes carry ([`Transaction::set_metadata`];
    /// while a mutation runs, the mutation's).
    pub(super) meta: Option<WriteMetadata>,
    /// While the authority runs a pushed mutation, the pushing client's
    /// writer; otherwise `None`, and the store's own ([`Store::set_writer`])
    /// is the writer (not copied into every transaction).
    pub(super) writer: Option<Writer>,
    /// While the authority runs a pushed mutation: every row it writes,
    /// with its state before the first write, so each effect can be judged
    /// as an incoming change (`mutate.rs`).
    pub(super) effects: Option<Vec<Effect>>,
}

/// One row a mutation wrote, as it was before its first write.
#[derive(Debug, Clone)]
pub(super) struct Effect {
    /// The table's position in the store's layouts.
    pub table: usize,
    /// The row's key.
    pub key: Vec<Value>,
    /// Its state before the mutation (`None`: no such row, not even a
    /// tombstone).
    pub before: Option<RowState>,
}

/// One change to one value column (`column`, its position among the
/// table's value columns), checked against the schema and the column's
/// kind.
#[derive(Debug, Clone)]
pub(super) struct ColumnOp {
    pub column: usize,
    pub op: Op,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Insert,
    Update,
    Upsert,
    Delete,
}

impl<'s> Transaction<'s> {
    pub(super) fn begin(store: &'s mut Store) -> Result<Self> {
        store.conn.execute_batch("BEGIN IMMEDIATE")?;
        if let Err(e) = store.refresh_if_changed() {
            let _ = store.conn.execute_batch("ROLLBACK");
            return Err(e);
        }
        let undo = Some(store.snapshot());
        Ok(Transaction {
            store,
            undo,
            poisoned: None,
            speculative: false,
            writer: None,
            effects: None,
            meta: None,
        })
    }

    /// Attaches app metadata to the writes after this call in this
    /// transaction (each row written keeps it with its latest write, sync
    /// carries it, the authority's resolvers read it as
    /// [`Conflict::metadata`](crate::resolve::Conflict) and its conflict log
    /// keeps it). At most [`WriteMetadata::MAX_BYTES`] bytes, usually JSON.
    ///
    /// It is **client-asserted**: it never changes who the writer is. The
    /// `Writer` a resolver sees (user, roles) comes from whoever delivers
    /// the change (the relay, from the token), whatever the metadata says.
    ///
    /// # Errors
    ///
    /// [`WriteError::MetadataTooLarge`] over the bound; nothing is changed.
    pub fn set_metadata(&mut self, meta: impl Into<String>) -> Result<()> {
        let meta = WriteMetadata::new(meta).map_err(|e| WriteError::MetadataTooLarge {
            len: e.len,
            limit: e.limit,
        })?;
        self.meta = Some(meta);
        Ok(())
    }

    /// Writes after this call carry no metadata.
    pub fn clear_metadata(&mut self) {
        self.meta = None;
    }

    /// The metadata the next writes carry: what [`Transaction::set_metadata`]
    /// set, or, while a pushed mutation runs at the authority (or queued on
    /// a client), the metadata the mutation was queued with
    /// (`Store::mutate_with`). Client-asserted, never identity.
    pub fn metadata(&self) -> Option<&WriteMetadata> {
        self.meta.as_ref()
    }

    /// Makes every write of the transaction durable and visible.
    pub fn commit(mut self) -> Result<()> {
        if let Some(reason) = self.poisoned.take() {
            return Err(crate::error::StorageError::Aborted { reason }.into());
        }
        self.store.save_replica_state()?;
        self.store.conn.execute_batch("COMMIT")?;
        self.undo = None;
        self.store.committed();
        self.store.after_commit();
        Ok(())
    }

    /// Discards every write of the transaction (dropping it does the same).
    pub fn rollback(self) {}

    /// Inserts a row. `values` must include every key column; columns left
    /// out get their default (NULL, 0 for counters, `[]` for sets). Counter
    /// values count as increments from 0; an `or_set` value is a JSON array
    /// of strings. Inserting a key that was deleted brings the row back with
    /// these values only.
    pub fn insert(&mut self, table: &str, values: &[(&str, Value)]) -> Result<()> {
        let layout = self.layout(table)?;
        let (key, ops) = split_row(layout, values, Target::Insert)?;
        self.modify(table, key, Target::Insert, ops)
    }

    /// Inserts the row, or updates the given columns if it exists. Counter
    /// columns cannot be assigned on update; use [`Transaction::increment`].
    pub fn upsert(&mut self, table: &str, values: &[(&str, Value)]) -> Result<()> {
        let layout = self.layout(table)?;
        let (key, ops) = split_row(layout, values, Target::Upsert)?;
        self.modify(table, key, Target::Upsert, ops)
    }

    /// Updates columns of an existing row (`lww` columns are set, `or_set`
    /// columns become exactly the given JSON array).
    pub fn update(
        &mut self,
        table: &str,
        key: impl Into<Key>,
        values: &[(&str, Value)],
    ) -> Result<()> {
        let key = key.into();
        let layout = self.layout(table)?;
        let ops = values
            .iter()
            .map(|(name, value)| column_op(layout, name, value, Target::Update))
            .collect::<Result<Vec<_>>>()?;
        check_distinct(layout, &ops)?;
        self.modify(table, key, Target::Update, ops)
    }

    /// Sets one `lww` (or `or_set`) column of an existing row.
    pub fn set(
        &mut self,
        table: &str,
        key: impl Into<Key>,
        column: &str,
        value: impl Into<Value>,
    ) -> Result<()> {
        self.update(table, key, &[(column, value.into())])
    }

    /// Adds `amount` to a counter: any amount for a `pn_counter`, a
    /// non-negative one for a `g_counter`.
    pub fn increment(
        &mut self,
        table: &str,
        key: impl Into<Key>,
        column: &str,
        amount: i64,
    ) -> Result<()> {
        if amount == 0 {
            // Checked like any increment, but nothing to write.
            let layout = self.layout(table)?;
            checked(layout, value_column(layout, column)?, Op::Increment(0))?;
            return self.require_live(table, key.into());
        }
        self.change_column(table, key.into(), column, Op::Increment(amount))
    }

    /// Adds `element` to an `or_set` column.
    pub fn add_to_set(
        &mut self,
        table: &str,
        key: impl Into<Key>,
        column: &str,
        element: &str,
    ) -> Result<()> {
        self.change_column(table, key.into(), column, Op::Add(element.into()))
    }

    /// Removes `element` from an `or_set` column (every add of it this
    /// replica has seen; a concurrent add elsewhere survives).
    pub fn remove_from_set(
        &mut self,
        table: &str,
        key: impl Into<Key>,
        column: &str,
        element: &str,
    ) -> Result<()> {
        self.change_column(table, key.into(), column, Op::Remove(element.into()))
    }

    /// Deletes a row. It stays deleted unless someone who has seen the
    /// delete inserts the key again; updates concurrent with the delete are
    /// dropped with it.
    pub fn delete(&mut self, table: &str, key: impl Into<Key>) -> Result<()> {
        self.modify(table, key.into(), Target::Delete, Vec::new())
    }

    /// Who is writing. On the authority, while a pushed mutation runs, the
    /// pushing client as its token describes it (so a mutator can say "only
    /// admins may do this" once, for every client); elsewhere the store's
    /// own writer ([`Store::set_writer`], empty by default), which the
    /// application asserts for itself.
    pub fn writer(&self) -> &Writer {
        self.writer.as_ref().unwrap_or(&self.store.writer)
    }

    /// Reads a live row's columns (in schema order) as this transaction sees it.
    pub fn get(&self, table: &str, key: impl Into<Key>) -> Result<Option<Vec<(String, Value)>>> {
        self.store.get(table, key)
    }

    /// The schema of `table` as this transaction sees it (typed writes map
    /// fields to its columns).
    pub(crate) fn table_schema(&self, table: &str) -> Result<&crate::schema::Table> {
        self.layout(table).map(|layout| &layout.table)
    }

    fn layout(&self, table: &str) -> Result<&TableLayout> {
        self.store.table(table).ok_or_else(|| {
            WriteError::UnknownTable {
                table: table.into(),
            }
            .into()
        })
    }

    /// One change to one column of an existing row, checked against the
    /// column's kind before the row is read.
    fn change_column(&mut self, table: &str, key: Key, column: &str, op: Op) -> Result<()> {
        let layout = self.layout(table)?;
        let op = checked(layout, value_column(layout, column)?, op)?;
        self.modify(table, key, Target::Update, vec![op])
    }

    fn require_live(&self, table: &str, key: Key) -> Result<()> {
        let layout = self.layout(table)?;
        let key = check_key(layout, key)?;
        match rows::load_by_key(&self.store.conn, layout, &self.store.sites, &key)? {
            Some(row) if row.state.is_live() => Ok(()),
            _ => Err(not_found(table, &key)),
        }
    }

    fn modify(&mut self, table: &str, key: Key, target: Target, ops: Vec<ColumnOp>) -> Result<()> {
        let result = self.modify_row(table, key, target, ops);
        if let Err(Error::Storage(e)) = &result {
            self.poisoned = Some(format!("table {table:?}: {e}"));
        }
        result
    }

    fn modify_row(
        &mut self,
        table: &str,
        key: Key,
        target: Target,
        ops: Vec<ColumnOp>,
    ) -> Result<()> {
        let speculative = self.speculative;
        let meta = &self.meta;
        let store = &mut *self.store;
        let (index, layout) = store
            .tables
            .iter()
            .enumerate()
            .find(|(_, t)| t.table.name.eq_ignore_ascii_case(table))
            .ok_or_else(|| WriteError::UnknownTable {
                table: table.into(),
            })?;
        let key = check_key(layout, key)?;
        let dot = Dot {
            site: store.local,
            seq: store.replica.last_seq + 1,
        };
        let hlc = store.clock.tick();
        let width = layout.value_cols.len();

        // Fast path: a plain insert of a new key needs no read.
        let mut existing = None;
        let tracked = self.effects.as_ref().is_some_and(|effects| {
            !effects
                .iter()
                .any(|e| e.table == index && e.key.as_slice() == key.as_slice())
        });
        if target != Target::Insert || tracked {
            existing = rows::load_by_key(&store.conn, layout, &store.sites, &key)?;
        }
        if let (true, Some(effects)) = (tracked, self.effects.as_mut()) {
            effects.push(Effect {
                table: index,
                key: key.clone(),
                before: existing.as_ref().map(|r| r.state.clone()),
            });
        }
        let ruled = layout.table.has_row_rules();
        loop {
            // The row as users read it before the write, for the row-level
            // rules (only tables that declare some pay for it).
            let before = existing
                .as_ref()
                .filter(|r| ruled && r.state.is_live())
                .map(|r| super::correct::row_of(layout, &key, &r.state));
            // Only the old clock is needed after the state is taken: the
            // write moves the row's dot-index entries from it.
            let previous = existing.as_ref().map(|r| (r.rid, r.state.clock.clone()));
            let mut state: RowState = match (target, existing.take()) {
                (Target::Insert, Some(row)) if row.state.is_live() => {
                    return Err(WriteError::RowExists {
                        table: table.into(),
                        key: Key(key),
                    }
                    .into())
                }
                (Target::Update | Target::Upsert, Some(row)) if row.state.is_live() => row.state,
                (Target::Delete, Some(row)) if row.state.is_live() => RowState {
                    cl: row.state.cl.saturating_add(1),
                    columns: vec![None; width],
                    ..row.state
                },
                (Target::Insert | Target::Upsert, deleted) => {
                    check_required(layout, &ops)?;
                    fresh_state(deleted.as_ref().map(|r| &r.state), width)
                }
                (Target::Update | Target::Delete, _) => return Err(not_found(table, &key)),
            };
            for op in &ops {
                apply_op(layout, &mut state, op, dot, hlc, true)?;
            }
            if ruled {
                let after = super::correct::live_row(layout, &key, &state);
                let written: Vec<&str> = ops
                    .iter()
                    .map(|op| {
                        layout.table.columns[layout.value_cols[op.column]]
                            .name
                            .as_str()
                    })
                    .collect();
                engine::check_local_write(
                    &layout.table,
                    store.authority,
                    self.writer.as_ref().unwrap_or(&store.writer),
                    before.as_ref(),
                    after.as_ref(),
                    &written,
                )
                .map_err(|v| violation(layout, &key, v))?;
            }
            state.clock.observe(dot);
            state.hlc = hlc;
            state.writer = dot.site;
            state.meta = meta.clone();
            if let (true, Some((rid, _))) = (speculative, &previous) {
                super::speculate::capture(&store.conn, layout, *rid)?;
            }
            match rows::write_row(
                &store.conn,
                layout,
                &mut store.sites,
                &key,
                previous.as_ref().map(|(rid, clock)| (*rid, clock)),
                &state,
            ) {
                Ok(rid) => {
                    store.feed.record(layout.id, &key);
                    if speculative && previous.is_none() {
                        super::speculate::capture_new(&store.conn, layout, rid)?;
                    }
                    break;
                }
                Err(RowWriteError::KeyExists) if previous.is_none() => {
                    existing = rows::load_by_key(&store.conn, layout, &store.sites, &key)?;
                    if existing.is_none() {
                        return Err(crate::error::StorageError::Corrupt {
                            what: format!("table {table:?}"),
                            problem: "insert conflicted but the key is not there".into(),
                        }
                        .into());
                    }
                }
                Err(RowWriteError::KeyExists) => {
                    return Err(crate::error::StorageError::Corrupt {
                        what: format!("table {table:?}"),
                        problem: "an update reported a duplicate key".into(),
                    }
                    .into())
                }
                Err(RowWriteError::DotTaken(site, seq)) => {
                    return Err(crate::error::StorageError::Corrupt {
                        what: "meldb_dots".into(),
                        problem: format!("local dot ({site}, {seq}) already belongs to a row"),
                    }
                    .into())
                }
                Err(RowWriteError::Sqlite(e)) => return Err(e.into()),
            }
        }
        store.replica.last_seq = dot.seq;
        Ok(())
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        if let Some(snapshot) = self.undo.take() {
            // A failed ROLLBACK means the connection is already outside a
            // transaction (SQLite rolled back on its own); nothing is left.
            let _ = self.store.conn.execute_batch("ROLLBACK");
            self.store.restore(snapshot);
        }
    }
}

/// A row-level rule's refusal of a local write, with the table and key.
fn violation(layout: &TableLayout, key: &[Value], v: Violation) -> Error {
    let problem = v.to_string();
    let table = layout.name().to_owned();
    let key = Key(key.to_vec());
    match v {
        Violation::Frozen { column, state } => WriteError::Frozen {
            table,
            key,
            column,
            state: state.to_string(),
        },
        Violation::Transition { column, .. } => WriteError::Transition {
            table,
            key,
            column,
            problem,
        },
        Violation::AuthorityOwned { column } => WriteError::AuthorityOwned { table, column },
        _ => WriteError::DeleteRefused {
            table,
            key,
            problem,
        },
    }
    .into()
}

fn not_found(table: &str, key: &[Value]) -> Error {
    WriteError::RowNotFound {
        table: table.into(),
        key: Key(key.to_vec()),
    }
    .into()
}

/// Checks `op` against value column `j`'s kind.
fn checked(layout: &TableLayout, j: usize, op: Op) -> Result<ColumnOp> {
    let op = layout.kinds[j]
        .check(op)
        .map_err(|e| op_error(layout, j, e))?;
    Ok(ColumnOp { column: j, op })
}

/// A kind's refusal, with the table and the column.
fn op_error(layout: &TableLayout, j: usize, e: OpError) -> Error {
    let table = layout.name().to_owned();
    let column = layout.table.columns[layout.value_cols[j]].name.clone();
    match e {
        OpError::Unsupported { hint } => WriteError::WrongKind {
            table,
            column,
            kind: layout.kinds[j],
            hint,
        },
        OpError::TypeMismatch { expected, found } => WriteError::TypeMismatch {
            table,
            column,
            expected,
            found,
        },
        OpError::Negative { amount } => WriteError::NegativeIncrement {
            table,
            column,
            amount,
        },
        OpError::BadSet { problem } => WriteError::BadSetValue {
            table,
            column,
            problem,
        },
        OpError::Overflow => WriteError::CounterOverflow { table, column },
    }
    .into()
}

fn value_column(layout: &TableLayout, column: &str) -> Result<usize> {
    match layout.value_index(column) {
        Some(j) => Ok(j),
        None if layout.table.column(column).is_some() => Err(WriteError::KeyUpdate {
            table: layout.name().into(),
            column: column.into(),
        }
        .into()),
        None => Err(WriteError::UnknownColumn {
            table: layout.name().into(),
            column: column.into(),
        }
        .into()),
    }
}

/// Checks a value against a column's type and nullability; canonicalizes
/// -0.0 to 0.0 so every replica stores the same bits.
pub(super) fn check_value(layout: &TableLayout, index: usize, value: &Value) -> Result<Value> {
    let col = &layout.table.columns[index];
    let err = |e: WriteError| Err(e.into());
    match value {
        Value::Null if col.nullable => Ok(Value::Null),
        Value::Null => err(WriteError::NullNotAllowed {
            table: layout.name().into(),
            column: col.name.clone(),
        }),
        Value::Real(r) if r.is_nan() => err(WriteError::NotANumber {
            table: layout.name().into(),
            column: col.name.clone(),
        }),
        Value::Real(r) if col.sql_type == SqlType::Real => {
            Ok(Value::Real(if *r == 0.0 { 0.0 } else { *r }))
        }
        // As SQLite would: an integer stored in a REAL column is a real.
        Value::Integer(i) if col.sql_type == SqlType::Real => Ok(Value::Real(*i as f64)),
        v if col.sql_type.admits(v) => Ok(v.clone()),
        v => err(WriteError::TypeMismatch {
            table: layout.name().into(),
            column: col.name.clone(),
            expected: col.sql_type,
            found: v.type_name(),
        }),
    }
}

fn check_key(layout: &TableLayout, key: Key) -> Result<Vec<Value>> {
    let pk = &layout.table.primary_key;
    if key.0.len() != pk.len() {
        return Err(WriteError::KeyArity {
            table: layout.name().into(),
            key: key.clone(),
            expected: pk.len(),
            found: key.0.len(),
        }
        .into());
    }
    pk.iter()
        .zip(&key.0)
        .map(|(&i, v)| check_value(layout, i, v))
        .collect()
}

fn column_op(layout: &TableLayout, name: &str, value: &Value, target: Target) -> Result<ColumnOp> {
    let j = value_column(layout, name)?;
    let value = match layout.kinds[j].fixed_type() {
        None => check_value(layout, layout.value_cols[j], value)?,
        Some(_) => value.clone(),
    };
    let initial = target == Target::Insert;
    checked(layout, j, Op::Assign { value, initial })
}

fn check_distinct(layout: &TableLayout, ops: &[ColumnOp]) -> Result<()> {
    let mut seen = vec![false; layout.value_cols.len()];
    for op in ops {
        let j = op.column;
        if std::mem::replace(&mut seen[j], true) {
            return Err(WriteError::DuplicateColumn {
                table: layout.name().into(),
                column: layout.table.columns[layout.value_cols[j]].name.clone(),
            }
            .into());
        }
    }
    Ok(())
}

/// Splits an insert/upsert row into its key and its column ops.
fn split_row(
    layout: &TableLayout,
    values: &[(&str, Value)],
    target: Target,
) -> Result<(Key, Vec<ColumnOp>)> {
    let pk = &layout.table.primary_key;
    let mut key: Vec<Option<Value>> = vec![None; pk.len()];
    let mut ops = Vec::with_capacity(values.len());
    for (name, value) in values {
        match pk
            .iter()
            .position(|&i| layout.table.columns[i].name.eq_ignore_ascii_case(name))
        {
            Some(k) => {
                if key[k].replace(value.clone()).is_some() {
                    return Err(WriteError::DuplicateColumn {
                        table: layout.name().into(),
                        column: (*name).into(),
                    }
                    .into());
                }
            }
            None => {
                // An upsert may create the row, so counters are allowed as
                // initial amounts only when the row turns out to be new; we
                // treat them as increments in both cases for insert, and
                // refuse them for upsert to keep "assign" and "add" apart.
                let op_target = if target == Target::Insert {
                    Target::Insert
                } else {
                    Target::Update
                };
                ops.push(column_op(layout, name, value, op_target)?);
            }
        }
    }
    check_distinct(layout, &ops)?;
    let key = key
        .into_iter()
        .zip(pk)
        .map(|(v, &i)| {
            v.ok_or_else(|| {
                Error::from(WriteError::MissingValue {
                    table: layout.name().into(),
                    column: layout.table.columns[i].name.clone(),
                })
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((Key(key), ops))
}

/// An insert must give every NOT NULL `lww` column without a default.
fn check_required(layout: &TableLayout, ops: &[ColumnOp]) -> Result<()> {
    for (j, &index) in layout.value_cols.iter().enumerate() {
        let col = &layout.table.columns[index];
        if col.kind == Kind::Lww
            && !col.nullable
            && col.default.is_none()
            && !ops.iter().any(|op| op.column == j)
        {
            return Err(WriteError::MissingValue {
                table: layout.name().into(),
                column: col.name.clone(),
            }
            .into());
        }
    }
    Ok(())
}

/// Applies one column change to a row state. `enforce` checks the column's
/// policy (off for resolution writes, which may re-assert any value).
pub(super) fn apply_op(
    layout: &TableLayout,
    state: &mut RowState,
    op: &ColumnOp,
    dot: Dot,
    hlc: crate::clock::Hlc,
    enforce: bool,
) -> Result<()> {
    let j = op.column;
    let slot = &mut state.columns[j];
    let policy = &layout.table.columns[layout.value_cols[j]].policy;
    if let (true, Op::Assign { value, .. }) = (enforce && *policy != Policy::LastWriteWins, &op.op)
    {
        let refused = |problem: String| -> Error {
            WriteError::Policy {
                table: layout.name().into(),
                column: layout.table.columns[layout.value_cols[j]].name.clone(),
                value: value.to_string(),
                problem,
            }
            .into()
        };
        if let Policy::Forward(order) = policy {
            if *value != Value::Null && !order.is_state(value) {
                return Err(refused(
                    "it is not one of the column's declared states".into(),
                ));
            }
        }
        let current = slot.as_ref().map_or(Value::Null, ColumnState::read);
        policy.check_write(&current, value).map_err(refused)?;
    }
    layout.kinds[j]
        .apply(slot, &op.op, Stamp { dot, hlc })
        .map_err(|e| op_error(layout, j, e))
}
