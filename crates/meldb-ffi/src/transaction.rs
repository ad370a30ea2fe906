//! Writes: a batch of operations, or a transaction object that collects
//! them and commits them at once.
//!
//! Invariant: a transaction's operations are all written, in one SQLite
//! transaction, or none is. Nothing is written before `commit`; a
//! transaction dropped, rolled back or left open when its database closes
//! writes nothing; an operation that fails at commit fails the commit
//! (the error names it by position) and nothing of the others stays.

use crate::database::Database;
use crate::error::MeldbError;
use crate::value::{self, DbRow, DbValue};
use meldb::{Key, Value};
use std::sync::{Arc, Mutex, PoisonError};

/// One write.
#[derive(Debug, Clone, PartialEq, uniffi::Enum)]
pub enum WriteOp {
    /// A new row: every key column and any others (counters count from 0,
    /// a set is its members). A live row with that key is an error.
    Insert { table: String, values: DbRow },
    /// A row inserted, or its given columns set if it exists.
    Upsert { table: String, values: DbRow },
    /// Columns of an existing row set (`lww` and `or_set` columns).
    Update {
        table: String,
        key: Vec<DbValue>,
        values: DbRow,
    },
    /// One column of an existing row set.
    Set {
        table: String,
        key: Vec<DbValue>,
        column: String,
        value: DbValue,
    },
    /// A counter column moved by `by` (a `g_counter` only up).
    Increment {
        table: String,
        key: Vec<DbValue>,
        column: String,
        by: i64,
    },
    /// An element added to an `or_set` column.
    AddToSet {
        table: String,
        key: Vec<DbValue>,
        column: String,
        element: String,
    },
    /// An element removed from an `or_set` column (the adds this replica
    /// has seen).
    RemoveFromSet {
        table: String,
        key: Vec<DbValue>,
        column: String,
        element: String,
    },
    /// A row deleted.
    Delete { table: String, key: Vec<DbValue> },
}

/// A write with its values converted, ready to run. The `*Row` ones carry
/// a JSON row (crate::json_ops) that the library's typed writes convert.
pub(crate) enum Op {
    Insert(String, Vec<(String, Value)>),
    InsertRow(String, serde_json::Value),
    UpsertRow(String, serde_json::Value),
    UpdateRow(String, serde_json::Value),
    Upsert(String, Vec<(String, Value)>),
    Update(String, Key, Vec<(String, Value)>),
    Increment(String, Key, String, i64),
    AddToSet(String, Key, String, String),
    RemoveFromSet(String, Key, String, String),
    Delete(String, Key),
}

impl Op {
    fn from_write(op: WriteOp) -> Result<Op, MeldbError> {
        let key = |k: Vec<DbValue>| value::values(k).map(Key);
        Ok(match op {
            WriteOp::Insert { table, values } => Op::Insert(table, value::columns(values)?),
            WriteOp::Upsert { table, values } => Op::Upsert(table, value::columns(values)?),
            WriteOp::Update {
                table,
                key: k,
                values,
            } => Op::Update(table, key(k)?, value::columns(values)?),
            WriteOp::Set {
                table,
                key: k,
                column,
                value,
            } => Op::Update(table, key(k)?, vec![(column, value.into_value()?)]),
            WriteOp::Increment {
                table,
                key: k,
                column,
                by,
            } => Op::Increment(table, key(k)?, column, by),
            WriteOp::AddToSet {
                table,
                key: k,
                column,
                element,
            } => Op::AddToSet(table, key(k)?, column, element),
            WriteOp::RemoveFromSet {
                table,
                key: k,
                column,
                element,
            } => Op::RemoveFromSet(table, key(k)?, column, element),
            WriteOp::Delete { table, key: k } => Op::Delete(table, key(k)?),
        })
    }

    /// What it is, for an error's message.
    fn describe(&self) -> String {
        match self {
            Op::Insert(t, _) | Op::InsertRow(t, _) => format!("insert into {t:?}"),
            Op::Upsert(t, _) | Op::UpsertRow(t, _) => format!("upsert into {t:?}"),
            Op::Update(t, _, _) | Op::UpdateRow(t, _) => format!("update of {t:?}"),
            Op::Increment(t, _, c, _) => format!("increment of {t:?}.{c:?}"),
            Op::AddToSet(t, _, c, _) => format!("add to {t:?}.{c:?}"),
            Op::RemoveFromSet(t, _, c, _) => format!("remove from {t:?}.{c:?}"),
            Op::Delete(t, _) => format!("delete from {t:?}"),
        }
    }

    fn run(&self, tx: &mut meldb::Transaction<'_>) -> meldb::Result<()> {
        match self {
            Op::Insert(t, values) => tx.insert(t, &borrowed(values)),
            Op::InsertRow(t, row) => tx.insert_row(t, row),
            Op::UpsertRow(t, row) => tx.upsert_row(t, row),
            Op::UpdateRow(t, row) => tx.update_row(t, row),
            Op::Upsert(t, values) => tx.upsert(t, &borrowed(values)),
            Op::Update(t, key, values) => tx.update(t, key, &borrowed(values)),
            Op::Increment(t, key, c, by) => tx.increment(t, key, c, *by),
            Op::AddToSet(t, key, c, e) => tx.add_to_set(t, key, c, e),
            Op::RemoveFromSet(t, key, c, e) => tx.remove_from_set(t, key, c, e),
            Op::Delete(t, key) => tx.delete(t, key),
        }
    }
}

/// Columns as the library's write calls take them.
fn borrowed(values: &[(String, Value)]) -> Vec<(&str, Value)> {
    values
        .iter()
        .map(|(n, v)| (n.as_str(), v.clone()))
        .collect()
}

/// Runs one operation on a transaction in progress (a mutator's).
pub(crate) fn run_one(tx: &mut meldb::Transaction<'_>, op: WriteOp) -> Result<(), MeldbError> {
    let op = Op::from_write(op)?;
    op.run(tx)
        .map_err(|e| at(0, &op.describe(), MeldbError::from(e)))
}

/// Runs `ops` in one transaction on `db`: all or nothing.
fn commit(db: &Database, ops: Vec<WriteOp>) -> Result<(), MeldbError> {
    let ops = ops
        .into_iter()
        .enumerate()
        .map(|(i, op)| Op::from_write(op).map_err(|e| at(i, "write", e)))
        .collect::<Result<Vec<_>, MeldbError>>()?;
    commit_ops(db, ops)
}

/// Runs converted `ops` in one transaction on `db`: all or nothing, the
/// error naming the operation that failed.
pub(crate) fn commit_ops(db: &Database, ops: Vec<Op>) -> Result<(), MeldbError> {
    let shared = db.shared("write")?;
    let mut failed = None;
    let result = shared.write(|tx| {
        for (i, op) in ops.iter().enumerate() {
            if let Err(e) = op.run(tx) {
                failed = Some((i, op.describe()));
                return Err(e);
            }
        }
        Ok(())
    });
    result.map_err(|e| {
        let e = MeldbError::from(e);
        match failed {
            Some((i, what)) => at(i, &what, e),
            None => e,
        }
    })
}

/// `e` with the operation it came from named in its message, counting
/// from 1 (the list's first operation is "operation 1").
fn at(index: usize, what: &str, e: MeldbError) -> MeldbError {
    let position = index + 1;
    let prefix = |m: String| format!("operation {position} ({what}): {m}");
    match e {
        MeldbError::Write { message } => MeldbError::Write {
            message: prefix(message),
        },
        MeldbError::Apply { message } => MeldbError::Apply {
            message: prefix(message),
        },
        MeldbError::InvalidArgument { message } => MeldbError::InvalidArgument {
            message: prefix(message),
        },
        MeldbError::Storage { message } => MeldbError::Storage {
            message: prefix(message),
        },
        other => other,
    }
}

#[uniffi::export]
impl Database {
    /// Runs `ops` in one transaction: all are written, or none (the error
    /// names the operation that failed).
    pub fn write(&self, ops: Vec<WriteOp>) -> Result<(), MeldbError> {
        commit(self, ops)
    }

    /// A transaction: operations collected until `commit`.
    pub fn begin(self: Arc<Self>) -> Result<Arc<WriteTransaction>, MeldbError> {
        self.shared("begin")?;
        Ok(Arc::new(WriteTransaction {
            db: self,
            ops: Mutex::new(Some(Vec::new())),
        }))
    }
}

/// Operations collected for one commit. Nothing is written before
/// [`WriteTransaction::commit`]; dropping it writes nothing.
#[derive(uniffi::Object)]
pub struct WriteTransaction {
    db: Arc<Database>,
    /// `None` once committed or rolled back.
    ops: Mutex<Option<Vec<WriteOp>>>,
}

impl WriteTransaction {
    fn push(&self, op: WriteOp) -> Result<(), MeldbError> {
        let mut ops = self.ops.lock().unwrap_or_else(PoisonError::into_inner);
        let list = ops.as_mut().ok_or_else(|| {
            MeldbError::closed("the transaction is already committed or rolled back")
        })?;
        // Checked now, so a bad value fails at the call that gave it.
        Op::from_write(op.clone())?;
        list.push(op);
        Ok(())
    }
}

#[uniffi::export]
impl WriteTransaction {
    /// Adds any operation.
    pub fn add(&self, op: WriteOp) -> Result<(), MeldbError> {
        self.push(op)
    }

    /// Inserts a row.
    pub fn insert(&self, table: String, values: DbRow) -> Result<(), MeldbError> {
        self.push(WriteOp::Insert { table, values })
    }

    /// Inserts a row, or sets its given columns.
    pub fn upsert(&self, table: String, values: DbRow) -> Result<(), MeldbError> {
        self.push(WriteOp::Upsert { table, values })
    }

    /// Sets columns of an existing row.
    pub fn update(
        &self,
        table: String,
        key: Vec<DbValue>,
        values: DbRow,
    ) -> Result<(), MeldbError> {
        self.push(WriteOp::Update { table, key, values })
    }

    /// Sets one column of an existing row.
    pub fn set(
        &self,
        table: String,
        key: Vec<DbValue>,
        column: String,
        value: DbValue,
    ) -> Result<(), MeldbError> {
        self.push(WriteOp::Set {
            table,
            key,
            column,
            value,
        })
    }

    /// Moves a counter.
    pub fn increment(
        &self,
        table: String,
        key: Vec<DbValue>,
        column: String,
        by: i64,
    ) -> Result<(), MeldbError> {
        self.push(WriteOp::Increment {
            table,
            key,
            column,
            by,
        })
    }

    /// Adds an element to a set.
    pub fn add_to_set(
        &self,
        table: String,
        key: Vec<DbValue>,
        column: String,
        element: String,
    ) -> Result<(), MeldbError> {
        self.push(WriteOp::AddToSet {
            table,
            key,
            column,
            element,
        })
    }

    /// Removes an element from a set.
    pub fn remove_from_set(
        &self,
        table: String,
        key: Vec<DbValue>,
        column: String,
        element: String,
    ) -> Result<(), MeldbError> {
        self.push(WriteOp::RemoveFromSet {
            table,
            key,
            column,
            element,
        })
    }

    /// Deletes a row.
    pub fn delete(&self, table: String, key: Vec<DbValue>) -> Result<(), MeldbError> {
        self.push(WriteOp::Delete { table, key })
    }

    /// Writes every operation, in order, in one SQLite transaction: all or
    /// none. The transaction is done either way, except when the call is
    /// refused before it starts (`Reentrant`, from inside a resolver or
    /// mutator of the same database): then it can be committed later.
    pub fn commit(&self) -> Result<(), MeldbError> {
        self.db.shared("commit")?;
        let ops = self
            .ops
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .ok_or_else(|| {
                MeldbError::closed("the transaction is already committed or rolled back")
            })?;
        commit(&self.db, ops)
    }

    /// Drops every operation; nothing is written. A no-op once done.
    pub fn rollback(&self) {
        self.ops
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }

    /// How many operations wait for the commit.
    pub fn len(&self) -> u64 {
        self.ops
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map_or(0, |ops| ops.len() as u64)
    }

    /// Whether none does.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
