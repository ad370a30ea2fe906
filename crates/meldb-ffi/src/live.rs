//! Live queries: a foreign listener called with the rows and the diff each
//! time a query's result changes.
//!
//! Invariant: the listener runs after the commit that changed the result,
//! with no lock of the database held, one call at a time in commit order;
//! it may read and write the same database. An exception it throws is
//! kept ([`LiveQuery::last_error`]) and stops nothing: the write that
//! caused the update has committed. Dropping or cancelling the
//! [`LiveQuery`] ends it: the listener is never called again, and it is
//! released at the database's next commit (the store prunes ended
//! watches then) or when the database closes, not at once.

use crate::database::Database;
use crate::error::{CallbackError, MeldbError};
use crate::value::{self, DbRow, DbValue};
use meldb::{Update, Value, WatchHandle};
use std::sync::{Arc, Mutex, PoisonError};

/// A row of a live query's result that stayed and changed.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct ChangedRow {
    pub before: DbRow,
    pub after: DbRow,
}

/// What a live query's listener gets: the whole result and how it differs
/// from the previous call's (at registration: every row added).
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct QueryUpdate {
    /// The result's column names, in order.
    pub columns: Vec<String>,
    /// The rows, in the query's order.
    pub rows: Vec<DbRow>,
    /// Rows whose key was not there before.
    pub added: Vec<DbRow>,
    /// Rows whose key is gone.
    pub removed: Vec<DbRow>,
    /// Rows whose key stayed and whose values changed.
    pub changed: Vec<ChangedRow>,
}

/// The foreign side of a live query.
#[uniffi::export(callback_interface)]
pub trait QueryListener: Send + Sync {
    /// Called once at registration, then after each commit that changed
    /// the result.
    fn on_update(&self, update: QueryUpdate) -> Result<(), CallbackError>;
}

/// A registered live query; dropping it (or [`LiveQuery::cancel`]) ends it.
#[derive(uniffi::Object)]
pub struct LiveQuery {
    handle: Mutex<Option<WatchHandle>>,
    errors: Arc<Mutex<Option<String>>>,
}

fn rows(columns: &[String], rows: Vec<Vec<Value>>) -> Vec<DbRow> {
    rows.into_iter().map(|row| row_of(columns, row)).collect()
}

fn row_of(columns: &[String], row: Vec<Value>) -> DbRow {
    columns
        .iter()
        .cloned()
        .zip(row.into_iter().map(DbValue::from_value))
        .collect()
}

fn update_record(update: Update<Vec<Value>>) -> QueryUpdate {
    let columns = update.columns;
    QueryUpdate {
        rows: rows(&columns, update.rows),
        added: rows(&columns, update.diff.added),
        removed: rows(&columns, update.diff.removed),
        changed: update
            .diff
            .changed
            .into_iter()
            .map(|(before, after)| ChangedRow {
                before: row_of(&columns, before),
                after: row_of(&columns, after),
            })
            .collect(),
        columns,
    }
}

#[uniffi::export]
impl Database {
    /// Registers a live query: `listener` gets the result now, then each
    /// time a commit changes it (local writes, mutations, sync batches,
    /// rebases), never when it did not change.
    pub fn watch(
        &self,
        sql: String,
        params: Vec<DbValue>,
        listener: Box<dyn QueryListener>,
    ) -> Result<Arc<LiveQuery>, MeldbError> {
        let params = value::values(params)?;
        let shared = self.shared("watch")?;
        let errors: Arc<Mutex<Option<String>>> = Arc::default();
        let kept = errors.clone();
        let handle = shared.watch(&sql, &params, move |update| {
            if let Err(e) = listener.on_update(update_record(update)) {
                *kept.lock().unwrap_or_else(PoisonError::into_inner) = Some(e.to_string());
            }
        })?;
        Ok(Arc::new(LiveQuery {
            handle: Mutex::new(Some(handle)),
            errors,
        }))
    }
}

#[uniffi::export]
impl LiveQuery {
    /// Ends the live query: the listener is not called again.
    pub fn cancel(&self) {
        self.handle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }

    /// The tables the query reads (a write elsewhere does not re-run it).
    pub fn tables(&self) -> Vec<String> {
        self.handle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|h| h.tables().to_vec())
            .unwrap_or_default()
    }

    /// The last error: the listener's exception, or a re-run that failed.
    pub fn last_error(&self) -> Option<String> {
        if let Some(e) = self
            .errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
        {
            return Some(e);
        }
        self.handle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .and_then(|h| h.failure())
    }
}
