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
//! disagreement as a message. Applications never need this module: it is
//! compiled only with the `testkit` feature, which meldb's dev-dependency
//! on itself turns on for its tests, and `fuzz/Cargo.toml` for the fuzz
//! targets.

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

mod bytes;
mod checks;
mod harness;
mod model;

pub use bytes::{op_from_bytes, reinsert_from_bytes, UNKNOWN_COLUMN, UNKNOWN_TABLE};
pub use checks::{
    check_apply_bytes, check_apply_message_bytes, check_compressed_bytes, check_decode_bytes,
    check_message_bytes, check_ops_bytes, check_stored_bytes, seed_changesets, seed_messages,
    seed_payloads, seeded_store, MAX_OPS,
};
use harness::digest;
pub use harness::{export_to_fresh, Harness};
use model::cmp_values;
pub use model::{rejection_of, same_rows, sql_rows, Model, ModelError, Rejection};

const INVENTORY_TOML: &str = include_str!("../../schema/inventory.toml");

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
    Ok(StoreOptions::new()
        .site_id(SiteId::from_bytes([site; 16]))
        .time_source(Arc::new(ManualTime::new(START_MS)))
        .open_in_memory(inventory())?)
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
