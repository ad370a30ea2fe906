//! A reference model of one replica's SQL-visible state, for tests and
//! fuzzing.
//!
//! [`Model`] computes what a single replica should show through plain SQL
//! after a sequence of local writes, without SQLite, clocks, dots or CRDT
//! metadata: per table, a `BTreeMap` from key to row, where each column is
//! kept as SQL shows it (an `lww` value, its default or NULL; a counter's
//! increment and decrement totals, shown as their sum; a set of strings,
//! shown as a sorted JSON array). A deleted row is simply gone, so a
//! re-insert starts again from defaults, zero counters and empty sets.
//!
//! [`Model::apply`] accepts or rejects each [`Op`] by the rules documented
//! for local writes on [`crate::Transaction`], checked in the order the store
//! checks them, so the model and the store must agree on whether an op is
//! accepted and, if not, on the kind of rejection ([`Rejection`]). A
//! rejected op changes nothing. Column types, nullability and defaults come
//! from a [`Schema`]; tests and fuzz targets use the `inventory` example
//! schema ([`inventory_schema`]).
//!
//! The rest is plumbing shared by `tests/model.rs`,
//! `tests/fuzz_regressions.rs` and the cargo-fuzz crate in `fuzz/`:
//! [`run_op`] performs an op through the real API, [`sql_rows`] reads a
//! table back in the model's shape, [`op_from_bytes`] decodes fuzzer bytes
//! into ops over deliberately small domains (three keys, three common set
//! elements) so that writes collide, [`Harness`] drives a store and a model
//! side by side, and [`check_ops_bytes`], [`check_apply_bytes`] and
//! [`check_decode_bytes`] are the fuzz targets' bodies, returning the first
//! disagreement as a message. Applications never need this module.

use crate::changeset::Changeset;
use crate::clock::{ManualTime, SiteId};
use crate::codec;
use crate::error::{Error, WriteError};
use crate::schema::{Column, Kind, Schema, SqlType, Table};
use crate::store::layout::quote;
use crate::store::{Store, StoreOptions, Transaction};
use crate::value::Value;
use crate::version::VersionVector;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};
use thiserror::Error as ThisError;

const INVENTORY_TOML: &str = include_str!("../schema/inventory.toml");

/// The wall-clock reading (ms) of every store this module opens, so runs
/// are deterministic.
pub const START_MS: u64 = 1_700_000_000_000;

/// The `inventory` example schema (`schema/inventory.toml`, embedded at
/// compile time): an `item` table keyed by `sku` with a column of every
/// kind, and a `location` table with a two-part key.
pub fn inventory_schema() -> Schema {
    inventory().clone()
}

fn inventory() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        // Compiled-in text that every model test parses: not input.
        Schema::from_toml_str(INVENTORY_TOML, "schema/inventory.toml")
            .expect("the embedded inventory schema parses")
    })
}

/// An in-memory store for the inventory schema with site id `[site; 16]`
/// and a manual clock at [`START_MS`].
pub fn fixed_store(site: u8) -> crate::Result<Store> {
    StoreOptions::new()
        .site_id(SiteId::from_bytes([site; 16]))
        .time_source(Arc::new(ManualTime::new(START_MS)))
        .open_in_memory(inventory())
}

// ---------------------------------------------------------------------------
// Ops
// ---------------------------------------------------------------------------

/// One local write.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// `tx.insert(table, key columns ++ values)`.
    Insert {
        /// The table.
        table: String,
        /// Values of the primary-key columns, in key order.
        key: Vec<Value>,
        /// Other columns, by name (unknown and key names are rejected).
        values: Vec<(String, Value)>,
    },
    /// `tx.upsert(table, key columns ++ values)`.
    Upsert {
        /// The table.
        table: String,
        /// Values of the primary-key columns, in key order.
        key: Vec<Value>,
        /// Other columns, by name.
        values: Vec<(String, Value)>,
    },
    /// `tx.update(table, key, values)`.
    Update {
        /// The table.
        table: String,
        /// The row's key.
        key: Vec<Value>,
        /// Columns to set.
        values: Vec<(String, Value)>,
    },
    /// `tx.increment(table, key, column, amount)`.
    Increment {
        /// The table.
        table: String,
        /// The row's key.
        key: Vec<Value>,
        /// The counter column.
        column: String,
        /// What to add; negative decrements.
        amount: i64,
    },
    /// `tx.add_to_set(table, key, column, element)`.
    AddToSet {
        /// The table.
        table: String,
        /// The row's key.
        key: Vec<Value>,
        /// The `or_set` column.
        column: String,
        /// The element.
        element: String,
    },
    /// `tx.remove_from_set(table, key, column, element)`.
    RemoveFromSet {
        /// The table.
        table: String,
        /// The row's key.
        key: Vec<Value>,
        /// The `or_set` column.
        column: String,
        /// The element.
        element: String,
    },
    /// `tx.delete(table, key)`.
    Delete {
        /// The table.
        table: String,
        /// The row's key.
        key: Vec<Value>,
    },
}

impl Op {
    /// The table the op writes.
    pub fn table(&self) -> &str {
        match self {
            Op::Insert { table, .. }
            | Op::Upsert { table, .. }
            | Op::Update { table, .. }
            | Op::Increment { table, .. }
            | Op::AddToSet { table, .. }
            | Op::RemoveFromSet { table, .. }
            | Op::Delete { table, .. } => table,
        }
    }

    /// The key of the row the op writes.
    pub fn key(&self) -> &[Value] {
        match self {
            Op::Insert { key, .. }
            | Op::Upsert { key, .. }
            | Op::Update { key, .. }
            | Op::Increment { key, .. }
            | Op::AddToSet { key, .. }
            | Op::RemoveFromSet { key, .. }
            | Op::Delete { key, .. } => key,
        }
    }
}

/// The `(column, value)` list an insert or upsert hands the store: key
/// parts named after the table's primary-key columns (parts beyond the
/// key's width get a name no table has), then the other values.
pub fn row_values(
    schema: &Schema,
    table: &str,
    key: &[Value],
    values: &[(String, Value)],
) -> Vec<(String, Value)> {
    let pk: Vec<&str> = schema.table(table).map_or_else(Vec::new, |t| {
        t.primary_key
            .iter()
            .map(|&i| t.columns[i].name.as_str())
            .collect()
    });
    key.iter()
        .enumerate()
        .map(|(i, v)| {
            let name = pk
                .get(i)
                .map_or_else(|| format!("_key_part_{i}"), |n| (*n).to_owned());
            (name, v.clone())
        })
        .chain(values.iter().cloned())
        .collect()
}

/// Performs `op` through the real API in a transaction of its own.
pub fn run_op(store: &mut Store, op: &Op) -> crate::Result<()> {
    let schema = store.schema().clone();
    store.write(|tx| run_op_in(tx, &schema, op))
}

/// Performs `op` through the real API inside `tx`; `schema` names the key
/// columns of inserts and upserts.
pub fn run_op_in(tx: &mut Transaction<'_>, schema: &Schema, op: &Op) -> crate::Result<()> {
    fn refs(values: &[(String, Value)]) -> Vec<(&str, Value)> {
        values
            .iter()
            .map(|(n, v)| (n.as_str(), v.clone()))
            .collect()
    }
    match op {
        Op::Insert { table, key, values } => {
            tx.insert(table, &refs(&row_values(schema, table, key, values)))
        }
        Op::Upsert { table, key, values } => {
            tx.upsert(table, &refs(&row_values(schema, table, key, values)))
        }
        Op::Update { table, key, values } => tx.update(table, key.clone(), &refs(values)),
        Op::Increment {
            table,
            key,
            column,
            amount,
        } => tx.increment(table, key.clone(), column, *amount),
        Op::AddToSet {
            table,
            key,
            column,
            element,
        } => tx.add_to_set(table, key.clone(), column, element),
        Op::RemoveFromSet {
            table,
            key,
            column,
            element,
        } => tx.remove_from_set(table, key.clone(), column, element),
        Op::Delete { table, key } => tx.delete(table, key.clone()),
    }
}

// ---------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------

/// Why a write is rejected; one per [`WriteError`] variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rejection {
    /// [`WriteError::UnknownTable`].
    UnknownTable,
    /// [`WriteError::UnknownColumn`].
    UnknownColumn,
    /// [`WriteError::TypeMismatch`].
    TypeMismatch,
    /// [`WriteError::NullNotAllowed`].
    NullNotAllowed,
    /// [`WriteError::NotANumber`].
    NotANumber,
    /// [`WriteError::MissingValue`].
    MissingValue,
    /// [`WriteError::KeyArity`].
    KeyArity,
    /// [`WriteError::DuplicateColumn`].
    DuplicateColumn,
    /// [`WriteError::RowExists`].
    RowExists,
    /// [`WriteError::RowNotFound`].
    RowNotFound,
    /// [`WriteError::KeyUpdate`].
    KeyUpdate,
    /// [`WriteError::WrongKind`].
    WrongKind,
    /// [`WriteError::NegativeIncrement`].
    NegativeIncrement,
    /// [`WriteError::CounterOverflow`].
    CounterOverflow,
    /// [`WriteError::BadSetValue`].
    BadSetValue,
    /// [`WriteError::Policy`] (the model's schemas declare no policies, so
    /// the model never expects it).
    Policy,
}

/// The kind of rejection a store error is, or `None` if it is not a write
/// rejection at all (SQLite failed, say).
pub fn rejection_of(error: &Error) -> Option<Rejection> {
    let Error::Write(w) = error else { return None };
    Some(match w {
        WriteError::UnknownTable { .. } => Rejection::UnknownTable,
        WriteError::UnknownColumn { .. } => Rejection::UnknownColumn,
        WriteError::TypeMismatch { .. } => Rejection::TypeMismatch,
        WriteError::NullNotAllowed { .. } => Rejection::NullNotAllowed,
        WriteError::NotANumber { .. } => Rejection::NotANumber,
        WriteError::MissingValue { .. } => Rejection::MissingValue,
        WriteError::KeyArity { .. } => Rejection::KeyArity,
        WriteError::DuplicateColumn { .. } => Rejection::DuplicateColumn,
        WriteError::RowExists { .. } => Rejection::RowExists,
        WriteError::RowNotFound { .. } => Rejection::RowNotFound,
        WriteError::KeyUpdate { .. } => Rejection::KeyUpdate,
        WriteError::WrongKind { .. } => Rejection::WrongKind,
        WriteError::NegativeIncrement { .. } => Rejection::NegativeIncrement,
        WriteError::CounterOverflow { .. } => Rejection::CounterOverflow,
        WriteError::BadSetValue { .. } => Rejection::BadSetValue,
        WriteError::Policy { .. } => Rejection::Policy,
    })
}

/// The model's refusal of an op.
#[derive(Debug, Clone, PartialEq, Eq, ThisError)]
#[error("table {table:?}: {rejection:?}: {detail}")]
pub struct ModelError {
    /// What kind of refusal.
    pub rejection: Rejection,
    /// The table the op named.
    pub table: String,
    /// The column, key or value at fault.
    pub detail: String,
}

fn reject(table: &Table, rejection: Rejection, detail: impl Into<String>) -> ModelError {
    ModelError {
        rejection,
        table: table.name.clone(),
        detail: detail.into(),
    }
}

/// One column of a model row.
#[derive(Debug, Clone, PartialEq)]
enum Cell {
    /// A key part or an `lww` value.
    Plain(Value),
    /// A counter's totals; one replica's counter is one `(up, down)` pair
    /// of 64-bit totals, and an increment that would overflow either is
    /// refused.
    Counter { up: u64, down: u64 },
    /// An `or_set`'s elements.
    Set(BTreeSet<String>),
}

impl Cell {
    /// What a column holds before anything is written to it.
    fn fresh(column: &Column) -> Cell {
        match column.kind {
            Kind::Lww => Cell::Plain(column.default.clone().unwrap_or(Value::Null)),
            Kind::GCounter | Kind::PnCounter => Cell::Counter { up: 0, down: 0 },
            Kind::OrSet => Cell::Set(BTreeSet::new()),
        }
    }

    /// The value SQL shows (writes keep counter sums within i64).
    fn shown(&self) -> Value {
        match self {
            Cell::Plain(v) => v.clone(),
            Cell::Counter { up, down } => {
                let sum = i128::from(*up) - i128::from(*down);
                Value::Integer(i64::try_from(sum).unwrap_or(if sum < 0 {
                    i64::MIN
                } else {
                    i64::MAX
                }))
            }
            Cell::Set(elems) => {
                let sorted: Vec<&str> = elems.iter().map(String::as_str).collect();
                Value::Text(serde_json::to_string(&sorted).unwrap_or_else(|_| "[]".into()))
            }
        }
    }
}

/// A value a write gives one column (by its index in `Table::columns`).
#[derive(Debug, Clone)]
enum Assign {
    Value(usize, Value),
    Add(usize, i64),
    Set(usize, BTreeSet<String>),
}

impl Assign {
    fn column(&self) -> usize {
        match self {
            Assign::Value(i, _) | Assign::Add(i, _) | Assign::Set(i, _) => *i,
        }
    }
}

/// A primary key ordered as SQLite orders the key columns (every key the
/// model holds passed the type check, so `total_cmp` within one type).
#[derive(Debug, Clone)]
struct RowKey(Vec<Value>);

impl Ord for RowKey {
    fn cmp(&self, other: &Self) -> Ordering {
        cmp_values(&self.0, &other.0)
    }
}
impl PartialOrd for RowKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl PartialEq for RowKey {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for RowKey {}

fn cmp_values(a: &[Value], b: &[Value]) -> Ordering {
    a.iter()
        .zip(b)
        .map(|(x, y)| x.total_cmp(y))
        .find(|o| o.is_ne())
        .unwrap_or_else(|| a.len().cmp(&b.len()))
}

/// What an accepted op does to the model.
enum Change {
    Put(RowKey, Vec<Cell>),
    Remove(RowKey),
    Nothing,
}

/// The reference model: the live rows of one replica, as SQL shows them.
#[derive(Debug, Clone)]
pub struct Model {
    schema: Schema,
    tables: BTreeMap<String, BTreeMap<RowKey, Vec<Cell>>>,
}

impl Model {
    /// An empty database with `schema`.
    pub fn new(schema: &Schema) -> Self {
        Model {
            schema: schema.clone(),
            tables: schema
                .tables
                .iter()
                .map(|t| (t.name.clone(), BTreeMap::new()))
                .collect(),
        }
    }

    /// The schema the model follows.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// The live rows of `table` in key order, each with the schema's columns
    /// in schema order: the shape of `SELECT * FROM table ORDER BY key`.
    /// Empty for a table the schema lacks.
    pub fn rows(&self, table: &str) -> Vec<Vec<Value>> {
        self.tables.get(table).map_or_else(Vec::new, |rows| {
            rows.values()
                .map(|row| row.iter().map(Cell::shown).collect())
                .collect()
        })
    }

    /// The live row with `key`, in the shape of [`Model::rows`].
    pub fn row(&self, table: &str, key: &[Value]) -> Option<Vec<Value>> {
        self.live(table, key)
            .map(|row| row.iter().map(Cell::shown).collect())
    }

    fn live(&self, table: &str, key: &[Value]) -> Option<&Vec<Cell>> {
        self.tables.get(table)?.get(&RowKey(key.to_vec()))
    }

    /// Applies `op` if the store's rules accept it; a refused op changes
    /// nothing.
    pub fn apply(&mut self, op: &Op) -> Result<(), ModelError> {
        let table = self
            .schema
            .table(op.table())
            .cloned()
            .ok_or_else(|| ModelError {
                rejection: Rejection::UnknownTable,
                table: op.table().to_owned(),
                detail: "no such table".into(),
            })?;
        let change = self.plan(&table, op)?;
        let rows = self.tables.entry(table.name).or_default();
        match change {
            Change::Put(key, row) => {
                rows.insert(key, row);
            }
            Change::Remove(key) => {
                rows.remove(&key);
            }
            Change::Nothing => {}
        }
        Ok(())
    }

    /// Decides what `op` does without changing anything. The checks run in
    /// the store's order, so that when several apply both name the same.
    fn plan(&self, table: &Table, op: &Op) -> Result<Change, ModelError> {
        let missing = |key: &[Value]| reject(table, Rejection::RowNotFound, format!("{key:?}"));
        match op {
            Op::Insert { key, values, .. } => {
                let row = row_values(&self.schema, &table.name, key, values);
                let (key, assigns) = split_row(table, &row, true)?;
                let key = check_key(table, &key)?;
                check_required(table, &assigns)?;
                if self.live(&table.name, &key).is_some() {
                    return Err(reject(table, Rejection::RowExists, format!("{key:?}")));
                }
                let row = with_assigns(table, fresh_row(table, &key), &assigns)?;
                Ok(Change::Put(RowKey(key), row))
            }
            Op::Upsert { key, values, .. } => {
                let row = row_values(&self.schema, &table.name, key, values);
                let (key, assigns) = split_row(table, &row, false)?;
                let key = check_key(table, &key)?;
                let before = match self.live(&table.name, &key) {
                    Some(row) => row.clone(),
                    None => {
                        check_required(table, &assigns)?;
                        fresh_row(table, &key)
                    }
                };
                let row = with_assigns(table, before, &assigns)?;
                Ok(Change::Put(RowKey(key), row))
            }
            Op::Update { key, values, .. } => {
                let assigns = values
                    .iter()
                    .map(|(name, value)| assign(table, name, value, false))
                    .collect::<Result<Vec<_>, _>>()?;
                check_distinct(table, &assigns)?;
                let key = check_key(table, key)?;
                let before = self.live(&table.name, &key).ok_or_else(|| missing(&key))?;
                let row = with_assigns(table, before.clone(), &assigns)?;
                Ok(Change::Put(RowKey(key), row))
            }
            Op::Increment {
                key,
                column,
                amount,
                ..
            } => {
                let i = value_column(table, column)?;
                match table.columns[i].kind {
                    Kind::GCounter if *amount < 0 => {
                        return Err(reject(
                            table,
                            Rejection::NegativeIncrement,
                            format!("{column}: {amount}"),
                        ))
                    }
                    Kind::GCounter | Kind::PnCounter => {}
                    Kind::Lww | Kind::OrSet => {
                        return Err(reject(table, Rejection::WrongKind, column.as_str()))
                    }
                }
                let key = check_key(table, key)?;
                let before = self.live(&table.name, &key).ok_or_else(|| missing(&key))?;
                if *amount == 0 {
                    return Ok(Change::Nothing);
                }
                let row = with_assigns(table, before.clone(), &[Assign::Add(i, *amount)])?;
                Ok(Change::Put(RowKey(key), row))
            }
            Op::AddToSet {
                key,
                column,
                element,
                ..
            }
            | Op::RemoveFromSet {
                key,
                column,
                element,
                ..
            } => {
                let i = value_column(table, column)?;
                if table.columns[i].kind != Kind::OrSet {
                    return Err(reject(table, Rejection::WrongKind, column.as_str()));
                }
                let key = check_key(table, key)?;
                let mut row = self
                    .live(&table.name, &key)
                    .ok_or_else(|| missing(&key))?
                    .clone();
                if let Cell::Set(elems) = &mut row[i] {
                    if matches!(op, Op::AddToSet { .. }) {
                        elems.insert(element.clone());
                    } else {
                        elems.remove(element);
                    }
                }
                Ok(Change::Put(RowKey(key), row))
            }
            Op::Delete { key, .. } => {
                let key = check_key(table, key)?;
                if self.live(&table.name, &key).is_none() {
                    return Err(missing(&key));
                }
                Ok(Change::Remove(RowKey(key)))
            }
        }
    }
}

/// A new row: the key, then every other column as it is before any write.
fn fresh_row(table: &Table, key: &[Value]) -> Vec<Cell> {
    let mut row: Vec<Cell> = table.columns.iter().map(Cell::fresh).collect();
    for (&i, v) in table.primary_key.iter().zip(key) {
        row[i] = Cell::Plain(v.clone());
    }
    row
}

fn with_assigns(
    table: &Table,
    mut row: Vec<Cell>,
    assigns: &[Assign],
) -> Result<Vec<Cell>, ModelError> {
    for a in assigns {
        let name = &table.columns[a.column()].name;
        match a {
            Assign::Value(i, v) => row[*i] = Cell::Plain(v.clone()),
            Assign::Set(i, elems) => row[*i] = Cell::Set(elems.clone()),
            Assign::Add(i, amount) => {
                let Cell::Counter { up, down } = &mut row[*i] else {
                    return Err(reject(table, Rejection::WrongKind, name.as_str()));
                };
                let total = if *amount >= 0 { &mut *up } else { &mut *down };
                *total = total
                    .checked_add(amount.unsigned_abs())
                    .ok_or_else(|| reject(table, Rejection::CounterOverflow, name.as_str()))?;
                // The sum SQL shows must stay an INTEGER.
                if i64::try_from(i128::from(*up) - i128::from(*down)).is_err() {
                    return Err(reject(table, Rejection::CounterOverflow, name.as_str()));
                }
            }
        }
    }
    Ok(row)
}

/// Splits an insert's or upsert's `(column, value)` list into the key and
/// the other columns' values, as the store does: a key column given twice,
/// then any column's value check, then duplicates, then a missing key part.
fn split_row(
    table: &Table,
    row: &[(String, Value)],
    insert: bool,
) -> Result<(Vec<Value>, Vec<Assign>), ModelError> {
    let mut key: Vec<Option<Value>> = vec![None; table.primary_key.len()];
    let mut assigns = Vec::new();
    for (name, value) in row {
        let part = table
            .primary_key
            .iter()
            .position(|&i| table.columns[i].name == *name);
        match part {
            Some(k) => {
                if key[k].replace(value.clone()).is_some() {
                    return Err(reject(table, Rejection::DuplicateColumn, name.as_str()));
                }
            }
            None => assigns.push(assign(table, name, value, insert)?),
        }
    }
    check_distinct(table, &assigns)?;
    let key = key
        .into_iter()
        .zip(&table.primary_key)
        .map(|(v, &i)| {
            v.ok_or_else(|| {
                reject(
                    table,
                    Rejection::MissingValue,
                    table.columns[i].name.as_str(),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((key, assigns))
}

/// Checks one non-key column's value. Counters take an initial amount on
/// insert only (an upsert might update, and a counter is never assigned).
fn assign(table: &Table, name: &str, value: &Value, insert: bool) -> Result<Assign, ModelError> {
    let i = value_column(table, name)?;
    let col = &table.columns[i];
    match col.kind {
        Kind::Lww => Ok(Assign::Value(i, check_value(table, col, value)?)),
        Kind::OrSet => {
            let Value::Text(text) = value else {
                return Err(reject(table, Rejection::BadSetValue, name));
            };
            serde_json::from_str::<Vec<String>>(text)
                .map(|elems| Assign::Set(i, elems.into_iter().collect()))
                .map_err(|e| reject(table, Rejection::BadSetValue, format!("{name}: {e}")))
        }
        Kind::GCounter | Kind::PnCounter => {
            if !insert {
                return Err(reject(table, Rejection::WrongKind, name));
            }
            let Value::Integer(amount) = value else {
                return Err(reject(table, Rejection::TypeMismatch, name));
            };
            if col.kind == Kind::GCounter && *amount < 0 {
                return Err(reject(table, Rejection::NegativeIncrement, name));
            }
            Ok(Assign::Add(i, *amount))
        }
    }
}

/// The index of the non-key column `name`.
fn value_column(table: &Table, name: &str) -> Result<usize, ModelError> {
    match table.column(name) {
        None => Err(reject(table, Rejection::UnknownColumn, name)),
        Some((i, _)) if table.is_key(i) => Err(reject(table, Rejection::KeyUpdate, name)),
        Some((i, _)) => Ok(i),
    }
}

/// What a column stores for `value`: NULL only where nullable, never NaN,
/// only the column's type, and `-0.0` as `0.0`.
fn check_value(table: &Table, col: &Column, value: &Value) -> Result<Value, ModelError> {
    let bad = |rejection| Err(reject(table, rejection, col.name.as_str()));
    match value {
        Value::Null if col.nullable => Ok(Value::Null),
        Value::Null => bad(Rejection::NullNotAllowed),
        Value::Real(r) if r.is_nan() => bad(Rejection::NotANumber),
        Value::Integer(i) if col.sql_type == crate::schema::SqlType::Real => {
            Ok(Value::Real(*i as f64))
        }
        v if !col.sql_type.admits(v) => bad(Rejection::TypeMismatch),
        Value::Real(r) if *r == 0.0 => Ok(Value::Real(0.0)),
        v => Ok(v.clone()),
    }
}

fn check_key(table: &Table, key: &[Value]) -> Result<Vec<Value>, ModelError> {
    if key.len() != table.primary_key.len() {
        return Err(reject(table, Rejection::KeyArity, format!("{key:?}")));
    }
    table
        .primary_key
        .iter()
        .zip(key)
        .map(|(&i, v)| check_value(table, &table.columns[i], v))
        .collect()
}

fn check_distinct(table: &Table, assigns: &[Assign]) -> Result<(), ModelError> {
    let mut seen = BTreeSet::new();
    for a in assigns {
        if !seen.insert(a.column()) {
            let name = table.columns[a.column()].name.as_str();
            return Err(reject(table, Rejection::DuplicateColumn, name));
        }
    }
    Ok(())
}

/// A new row needs every NOT NULL `lww` column that has no default.
fn check_required(table: &Table, assigns: &[Assign]) -> Result<(), ModelError> {
    for i in table.value_columns() {
        let col = &table.columns[i];
        if col.kind == Kind::Lww
            && !col.nullable
            && col.default.is_none()
            && !assigns.iter().any(|a| a.column() == i)
        {
            return Err(reject(table, Rejection::MissingValue, col.name.as_str()));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Reading the store back
// ---------------------------------------------------------------------------

/// `SELECT * FROM table ORDER BY <primary key>`: what an app reads, in the
/// shape of [`Model::rows`].
pub fn sql_rows(store: &Store, table: &str) -> crate::Result<Vec<Vec<Value>>> {
    let t = store
        .schema()
        .table(table)
        .ok_or_else(|| WriteError::UnknownTable {
            table: table.into(),
        })?;
    let order: Vec<String> = t
        .primary_key
        .iter()
        .map(|&i| quote(&t.columns[i].name))
        .collect();
    let sql = format!(
        "SELECT * FROM {} ORDER BY {}",
        quote(table),
        order.join(", ")
    );
    let mut stmt = store.conn().prepare(&sql)?;
    let n = stmt.column_count();
    let rows = stmt.query_map([], |r| {
        (0..n)
            .map(|i| r.get_ref(i).map(Value::from))
            .collect::<rusqlite::Result<Vec<_>>>()
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Whether two row lists are equal value for value, with no conversions:
/// `0.0` is not `-0.0` and `1` is not `1.0`.
pub fn same_rows(a: &[Vec<Value>], b: &[Vec<Value>]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| cmp_values(x, y).is_eq())
}

// ---------------------------------------------------------------------------
// Fuzzer bytes to ops
// ---------------------------------------------------------------------------

/// A table name no schema here has.
pub const UNKNOWN_TABLE: &str = "shipment";
/// A column name no table here has.
pub const UNKNOWN_COLUMN: &str = "colour";
/// Key parts: three one-part keys for `item`, two by two for `location`.
const KEY_PARTS: [&str; 3] = ["k0", "k1", "k2"];
const WAREHOUSES: [&str; 2] = ["w0", "w1"];
/// Set elements: three common ones, then rarer ones that test JSON escaping.
const ELEMENTS: [&str; 6] = ["a", "b", "c", "", "q\"uo\\te", "ü"];
const SMALL_AMOUNTS: [i64; 10] = [0, 1, 2, 3, 7, -1, -2, -3, -7, 100];
/// Mostly positive, so that a few in a row overflow a site's 64-bit total.
const BIG_AMOUNTS: [i64; 6] = [
    i64::MAX,
    i64::MAX,
    i64::MAX - 1,
    1 << 62,
    i64::MIN,
    -i64::MAX,
];

/// Reads bytes, and zeros once they run out, so every prefix decodes.
struct Input<'a, 'b>(&'a mut &'b [u8]);

impl Input<'_, '_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                *self.0 = rest;
                b
            }
            None => 0,
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Want {
    Any,
    /// Columns an update or upsert may assign: `lww` and `or_set`.
    Assignable,
    Counter,
    Set,
}

fn pick_table(b: u8) -> Option<&'static Table> {
    let schema = inventory();
    match b {
        0..=143 => schema.table("item"),
        144..=247 => schema.table("location"),
        _ => None,
    }
}

fn table_name(table: Option<&Table>) -> String {
    table.map_or(UNKNOWN_TABLE, |t| t.name.as_str()).to_owned()
}

/// A key from the small domain; rarely a NULL, wrongly typed or NaN first
/// part (from `a`) or a key of the wrong width (from `b`).
fn pick_key(table: Option<&Table>, a: u8, b: u8) -> Vec<Value> {
    let width = table.map_or(1, |t| t.primary_key.len());
    let part = |byte: u8, j: usize| -> Value {
        let names: &[&str] = match (width, j) {
            (1, _) => &KEY_PARTS,
            (_, 0) => &WAREHOUSES,
            _ => &KEY_PARTS[..2],
        };
        match byte {
            0..=247 => names[usize::from(byte) % names.len()].into(),
            248 | 249 => Value::Null,
            250 | 251 => Value::Integer(1),
            252 | 253 => Value::Real(f64::NAN),
            _ => "K9".into(),
        }
    };
    let mut key: Vec<Value> = (0..width)
        .map(|j| part(if j == 0 { a } else { b }, j))
        .collect();
    match b {
        255 => {
            key.pop();
        }
        254 => key.push("k0".into()),
        _ => {}
    }
    key
}

/// A column: usually a non-key column of the wanted kind, sometimes any
/// non-key column, rarely a key column or an unknown name.
fn pick_column(
    table: Option<&'static Table>,
    b: u8,
    want: Want,
) -> (String, Option<&'static Column>) {
    let Some(table) = table else {
        return (UNKNOWN_COLUMN.to_owned(), None);
    };
    let fits = |c: &Column| match want {
        Want::Any => true,
        Want::Assignable => matches!(c.kind, Kind::Lww | Kind::OrSet),
        Want::Counter => matches!(c.kind, Kind::GCounter | Kind::PnCounter),
        Want::Set => c.kind == Kind::OrSet,
    };
    let all: Vec<&'static Column> = table.value_columns().map(|i| &table.columns[i]).collect();
    let wanted: Vec<&'static Column> = all.iter().copied().filter(|c| fits(c)).collect();
    let candidates = if wanted.is_empty() {
        all.clone()
    } else {
        wanted
    };
    match (b, candidates.is_empty()) {
        (0..=207, false) => {
            let c = candidates[usize::from(b) % candidates.len()];
            (c.name.clone(), Some(c))
        }
        (208..=223, _) if !all.is_empty() => {
            let c = all[usize::from(b) % all.len()];
            (c.name.clone(), Some(c))
        }
        (224..=239, _) => {
            let i = table.primary_key[usize::from(b) % table.primary_key.len()];
            (table.columns[i].name.clone(), Some(&table.columns[i]))
        }
        _ => (UNKNOWN_COLUMN.to_owned(), None),
    }
}

fn pick_amount(b: u8) -> i64 {
    match b {
        0..=179 => SMALL_AMOUNTS[usize::from(b) % SMALL_AMOUNTS.len()],
        _ => BIG_AMOUNTS[usize::from(b) % BIG_AMOUNTS.len()],
    }
}

fn pick_element(b: u8) -> String {
    match b {
        0..=231 => ELEMENTS[usize::from(b) % 3],
        _ => ELEMENTS[3 + usize::from(b) % 3],
    }
    .to_owned()
}

/// A JSON array of elements, sometimes unsorted or with repeats.
fn set_json(b: u8) -> String {
    let mut elems: Vec<&str> = (0..3)
        .filter(|k| b & (1 << k) != 0)
        .map(|k| ELEMENTS[k])
        .collect();
    if b & 0x08 != 0 {
        elems.push(ELEMENTS[3 + usize::from(b >> 6) % 3]);
    }
    if b & 0x10 != 0 {
        elems.reverse();
    }
    if b & 0x20 != 0 {
        if let Some(&first) = elems.first() {
            elems.push(first);
        }
    }
    serde_json::to_string(&elems).unwrap_or_else(|_| "[]".into())
}

/// A value for `column`: usually one of its type and kind, rarely anything.
fn pick_value(column: Option<&Column>, b: u8) -> Value {
    let odd = || -> Value {
        let odd: [Value; 11] = [
            Value::Null,
            Value::Integer(0),
            Value::Integer(-4),
            Value::Real(0.5),
            Value::Real(f64::NAN),
            Value::Real(-0.0),
            "a".into(),
            r#"["a"]"#.into(),
            "[1]".into(),
            "{".into(),
            Value::Blob(vec![0xff]),
        ];
        odd[usize::from(b) % odd.len()].clone()
    };
    let Some(column) = column.filter(|_| b < 232) else {
        return odd();
    };
    let mut choices: Vec<Value> = match (column.kind, column.sql_type) {
        (Kind::GCounter | Kind::PnCounter, _) => return Value::Integer(pick_amount(b)),
        (Kind::OrSet, _) => return Value::Text(set_json(b)),
        (Kind::Lww, SqlType::Text) => ["", "a", "b", "Zz"].map(Value::from).to_vec(),
        (Kind::Lww, SqlType::Real) => [0.0, -0.0, 1.5, -2.25, 1e300, f64::INFINITY]
            .map(Value::Real)
            .to_vec(),
        (Kind::Lww, SqlType::Integer) => [0, 1, -1, i64::MAX].map(Value::Integer).to_vec(),
        (Kind::Lww, SqlType::Blob) => vec![Value::Blob(vec![]), Value::Blob(vec![0, 1])],
    };
    if column.nullable {
        choices.push(Value::Null);
    }
    choices[usize::from(b) % choices.len()].clone()
}

/// Up to three `(column, value)` pairs. The columns are consecutive
/// choices from one start byte, and a repeated column is dropped unless the
/// start byte asks for repeats (rarely), so that most writes are valid.
fn pick_values(
    table: Option<&'static Table>,
    want: Want,
    input: &mut Input<'_, '_>,
) -> Vec<(String, Value)> {
    let n = input.byte() % 4;
    let start = input.byte();
    let mut values: Vec<(String, Value)> = Vec::new();
    for k in 0..n {
        let (name, column) = pick_column(table, start.wrapping_add(k), want);
        let value = pick_value(column, input.byte());
        if start >= 248 || values.iter().all(|(seen, _)| *seen != name) {
            values.push((name, value));
        }
    }
    values
}

/// Decodes one op from the front of `data`, consuming what it reads; `None`
/// once `data` is empty. Missing bytes read as zero, so any non-empty input
/// gives an op. Tables, keys, columns, values and set elements come from
/// small domains over the inventory schema, with rare invalid choices
/// (unknown names, key columns, NULL, NaN, wrong types, wrong key width,
/// huge counter amounts) so that the rejection rules are exercised too.
pub fn op_from_bytes(data: &mut &[u8]) -> Option<Op> {
    let (&tag, rest) = data.split_first()?;
    *data = rest;
    let mut input = Input(data);
    let t = pick_table(input.byte());
    let table = table_name(t);
    let key = pick_key(t, input.byte(), input.byte());
    Some(match tag % 16 {
        0..=2 | 15 => Op::Insert {
            table,
            key,
            values: pick_values(t, Want::Any, &mut input),
        },
        3..=5 => Op::Upsert {
            table,
            key,
            values: pick_values(t, Want::Assignable, &mut input),
        },
        6 | 7 => Op::Update {
            table,
            key,
            values: pick_values(t, Want::Assignable, &mut input),
        },
        8 | 9 => Op::Increment {
            table,
            key,
            column: pick_column(t, input.byte(), Want::Counter).0,
            amount: pick_amount(input.byte()),
        },
        10..=12 => {
            let column = pick_column(t, input.byte(), Want::Set).0;
            let element = pick_element(input.byte());
            if tag % 16 == 12 {
                Op::RemoveFromSet {
                    table,
                    key,
                    column,
                    element,
                }
            } else {
                Op::AddToSet {
                    table,
                    key,
                    column,
                    element,
                }
            }
        }
        _ => Op::Delete { table, key },
    })
}

/// Decodes a delete of a valid key followed by an insert of the same key,
/// the sequence that revives a row; `None` once `data` is empty.
pub fn reinsert_from_bytes(data: &mut &[u8]) -> Option<[Op; 2]> {
    let (&tag, rest) = data.split_first()?;
    *data = rest;
    let mut input = Input(data);
    let t = pick_table(if tag % 2 == 0 { 0 } else { 200 });
    let table = table_name(t);
    let key = pick_key(t, input.byte() % 248, input.byte() % 248);
    let values = pick_values(t, Want::Any, &mut input);
    Some([
        Op::Delete {
            table: table.clone(),
            key: key.clone(),
        },
        Op::Insert { table, key, values },
    ])
}

// ---------------------------------------------------------------------------
// Store and model side by side
// ---------------------------------------------------------------------------

/// Compares the model's verdict on an op with the store's.
fn agree(
    step: usize,
    op: &Op,
    model: &Result<(), ModelError>,
    store: &crate::Result<()>,
) -> Result<(), String> {
    match (model, store) {
        (Ok(()), Ok(())) => Ok(()),
        (Err(m), Err(e)) => match rejection_of(e) {
            Some(r) if r == m.rejection => Ok(()),
            Some(r) => Err(format!(
                "step {step}: {op:?}: both reject it, but the model says {m} and the store says {r:?}: {e}"
            )),
            None => Err(format!(
                "step {step}: {op:?}: the store failed outside the write rules: {e}"
            )),
        },
        (Ok(()), Err(e)) => Err(format!(
            "step {step}: {op:?}: the model accepts it, the store rejects it: {e}"
        )),
        (Err(m), Ok(())) => Err(format!(
            "step {step}: {op:?}: the model rejects it ({m}), the store accepts it"
        )),
    }
}

/// A store and a [`Model`] receiving the same ops; every method returns
/// the first disagreement as a message.
#[derive(Debug)]
pub struct Harness {
    /// The store under test.
    pub store: Store,
    /// The reference.
    pub model: Model,
    steps: usize,
}

impl Harness {
    /// A fresh in-memory store ([`fixed_store`]) and an empty model.
    pub fn new() -> Result<Self, String> {
        let store = fixed_store(1).map_err(|e| format!("opening the store: {e}"))?;
        Ok(Harness {
            model: Model::new(store.schema()),
            store,
            steps: 0,
        })
    }

    /// How many ops have been run.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// Runs `op` in its own transaction on both sides, then compares every
    /// table.
    pub fn step(&mut self, op: &Op) -> Result<(), String> {
        self.steps += 1;
        let expected = self.model.apply(op);
        let actual = run_op(&mut self.store, op);
        agree(self.steps, op, &expected, &actual)?;
        self.check_tables()
    }

    /// Runs `ops` in one transaction, carrying on past rejected ones (a
    /// rejected write leaves no trace), comparing each op's row as the
    /// transaction sees it; then commits, or rolls back and expects the
    /// state from before, and compares every table.
    pub fn batch(&mut self, ops: &[Op], commit: bool) -> Result<(), String> {
        let before = self.model.clone();
        let schema = self.model.schema().clone();
        let mut tx = self
            .store
            .transaction()
            .map_err(|e| format!("starting a transaction: {e}"))?;
        for op in ops {
            self.steps += 1;
            let expected = self.model.apply(op);
            let actual = run_op_in(&mut tx, &schema, op);
            agree(self.steps, op, &expected, &actual)?;
            let Some(table) = schema.table(op.table()) else {
                continue;
            };
            if op.key().len() != table.primary_key.len() {
                continue;
            }
            let seen = tx
                .get(op.table(), op.key().to_vec())
                .map_err(|e| format!("step {}: reading back {op:?}: {e}", self.steps))?
                .map(|row| row.into_iter().map(|(_, v)| v).collect::<Vec<_>>());
            let want = self.model.row(op.table(), op.key());
            let same = match (&seen, &want) {
                (Some(a), Some(b)) => cmp_values(a, b).is_eq(),
                (None, None) => true,
                _ => false,
            };
            if !same {
                return Err(format!(
                    "step {}: after {op:?} inside a transaction the row reads {seen:?}, the model has {want:?}",
                    self.steps
                ));
            }
        }
        if commit {
            tx.commit().map_err(|e| format!("committing: {e}"))?;
        } else {
            tx.rollback();
            self.model = before;
        }
        self.check_tables()
    }

    /// Compares every table as SQL shows it with the model.
    pub fn check_tables(&self) -> Result<(), String> {
        compare_tables(
            &self.store,
            &self.model,
            &format!("after step {}", self.steps),
        )
    }

    /// Exports everything (`changes_since` an empty version vector) through
    /// the codec into a fresh replica, which must end with the same digest
    /// and show the same rows.
    pub fn check_export(&self) -> Result<(), String> {
        let copy = export_to_fresh(&self.store)?;
        compare_tables(
            &copy,
            &self.model,
            "in a replica that applied a full export",
        )
    }
}

fn compare_tables(store: &Store, model: &Model, when: &str) -> Result<(), String> {
    for table in &model.schema().tables {
        let sql =
            sql_rows(store, &table.name).map_err(|e| format!("reading {}: {e}", table.name))?;
        let want = model.rows(&table.name);
        if !same_rows(&sql, &want) {
            return Err(format!(
                "{when}: table {:?} differs\n  sql:   {sql:?}\n  model: {want:?}",
                table.name
            ));
        }
    }
    Ok(())
}

/// Applies `changes_since(empty)` of `store`, encoded and decoded, to a
/// fresh replica and checks that the digests match.
pub fn export_to_fresh(store: &Store) -> Result<Store, String> {
    let changes = store
        .changes_since(&VersionVector::new())
        .map_err(|e| format!("changes_since: {e}"))?;
    // A random site id: a fixed one can appear in fuzzed input, and a
    // replica rightly refuses rows claiming writes of its own it lacks.
    let mut copy = StoreOptions::new()
        .time_source(Arc::new(ManualTime::new(START_MS)))
        .open_in_memory(inventory())
        .map_err(|e| format!("opening a replica: {e}"))?;
    copy.apply_bytes(&codec::encode_changeset(&changes))
        .map_err(|e| format!("applying a full export: {e}"))?;
    let (a, b) = (digest(store)?, digest(&copy)?);
    if a != b {
        return Err(format!(
            "a replica that applied a full export has digest {} instead of {}",
            hex(&b),
            hex(&a)
        ));
    }
    Ok(copy)
}

fn digest(store: &Store) -> Result<[u8; 32], String> {
    store.digest().map_err(|e| format!("digest: {e}"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

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

/// The bincode payloads (frames without their header) of
/// [`seed_changesets`]: `apply_changeset` frames its input as a payload.
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
