//! Live queries: a read-only query re-run after each commit that touched a
//! table it reads, its callback called when the result changed.
//!
//! The tables a query reads are learned once, when it is registered, from
//! SQLite's authorizer (every `SQLITE_READ` while the statement is
//! prepared; a view's reads name the base tables under it, which map back
//! to the schema's tables). Invariants: a watch's callback runs once at
//! registration and then only after a commit succeeded, outside the write
//! transaction, and only when the re-run result differs from the rows the
//! callback last got; a commit that touched none of its tables does not
//! re-run it. Dropping the [`WatchHandle`] ends the watch: the store holds
//! only a weak reference to it and prunes it at the next commit.
//!
//! The diff is by key. A result row's key is the values of its columns
//! named as the primary-key columns of a table the query reads (the first
//! such table in schema order whose every key column is in the result,
//! compared case-insensitively); a query without such columns keys each
//! row by its whole value, so a changed row is one removed and one added.
//! Rows with equal keys pair up in result order.

use super::feed::Change;
use super::read::Reader;
use super::Store;
use crate::error::Result;
use crate::typed::{from_row, TypedError};
use crate::value::Value;
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};

/// How a live query's result changed since the callback last ran.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RowDiff<R> {
    /// Rows whose key was not in the previous result.
    pub added: Vec<R>,
    /// Rows of the previous result whose key is gone.
    pub removed: Vec<R>,
    /// Rows whose key stayed and whose values changed: (before, after).
    pub changed: Vec<(R, R)>,
}

impl<R> RowDiff<R> {
    fn map<S>(self, mut f: impl FnMut(R) -> std::result::Result<S, TypedError>) -> DiffResult<S> {
        Ok(RowDiff {
            added: self
                .added
                .into_iter()
                .map(&mut f)
                .collect::<Result<_, _>>()?,
            removed: self
                .removed
                .into_iter()
                .map(&mut f)
                .collect::<Result<_, _>>()?,
            changed: self
                .changed
                .into_iter()
                .map(|(a, b)| Ok((f(a)?, f(b)?)))
                .collect::<Result<_, TypedError>>()?,
        })
    }

    /// Whether nothing was added, removed or changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

type DiffResult<S> = std::result::Result<RowDiff<S>, TypedError>;

/// What a live query's callback gets: the whole result and its diff.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Update<R> {
    /// The result's column names, in order.
    pub columns: Vec<String>,
    /// The result rows, in the query's order.
    pub rows: Vec<R>,
    /// How they differ from the rows of the previous call (at registration:
    /// every row added).
    pub diff: RowDiff<R>,
}

/// Keeps a live query registered; dropping it unsubscribes.
#[derive(Debug)]
#[must_use = "dropping the handle ends the live query"]
pub struct WatchHandle {
    state: Arc<WatchState>,
}

impl WatchHandle {
    /// The tables the query reads, as the schema names them.
    pub fn tables(&self) -> &[String] {
        &self.state.tables
    }

    /// Why the last re-run failed (a row that no longer fits the type of
    /// [`Store::watch_as`], say), if it did; the callback was not called
    /// then, and the next change re-runs the query again.
    pub fn failure(&self) -> Option<String> {
        self.state
            .failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[derive(Debug)]
struct WatchState {
    tables: Vec<String>,
    failure: Mutex<Option<String>>,
}

/// Hands one update to the application (mapping rows to its type first).
type Deliver =
    Box<dyn FnMut(&Reader<'_>, Update<Vec<Value>>) -> std::result::Result<(), TypedError> + Send>;

/// One registered live query, as the store keeps it.
pub(super) struct Watch {
    sql: String,
    params: Vec<Value>,
    columns: Vec<String>,
    /// Result positions of the key columns (`None`: the whole row).
    key: Option<Vec<usize>>,
    rows: Vec<Vec<Value>>,
    deliver: Deliver,
    state: Weak<WatchState>,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("sql", &self.sql)
            .field("rows", &self.rows.len())
            .finish_non_exhaustive()
    }
}

impl Watch {
    fn reads_any(&self, state: &WatchState, changes: &[Change]) -> bool {
        changes.iter().any(|c| {
            state
                .tables
                .iter()
                .any(|t| t.eq_ignore_ascii_case(&c.table))
        })
    }

    /// Re-runs the query; calls back when the result changed.
    fn rerun(&mut self, reader: &Reader<'_>, state: &WatchState) {
        let outcome = run(reader.conn(), &self.sql, &self.params).and_then(|rows| {
            if rows == self.rows {
                return Ok(None);
            }
            let diff = diff(self.key.as_deref(), &self.rows, &rows);
            let update = Update {
                columns: self.columns.clone(),
                rows: rows.clone(),
                diff,
            };
            // The app's callback: a panic is caught (the commit is done;
            // the other watches still run) and shown as this watch's
            // failure, and the result it was given counts as delivered.
            let delivered = meldb_core::app_panic::catch(|| (self.deliver)(reader, update));
            self.rows = rows;
            match delivered {
                Ok(result) => result.map(|()| None).map_err(Into::into),
                Err(message) => Ok(Some(format!("the callback panicked: {message}"))),
            }
        });
        let mut failure = state.failure.lock().unwrap_or_else(PoisonError::into_inner);
        *failure = match outcome {
            Ok(panicked) => panicked,
            Err(e) => Some(e.to_string()),
        };
    }
}

impl Store {
    /// A new receiver of the changes feed: after each commit that wrote
    /// rows, one [`Change`] per table and origin, with the keys written.
    /// Any number of receivers; a dropped one is pruned at the next commit.
    pub fn changes(&mut self) -> std::sync::mpsc::Receiver<Change> {
        self.feed.subscribe()
    }

    /// The changes feed into `sink`: called with each [`Change`] after
    /// each commit, on the committing thread, before the commit returns
    /// (keep it short: hand the change on); it ends when `sink` answers
    /// `false`. What [`Store::changes`] is built on, for channels of other
    /// kinds (an async one, say).
    pub fn changes_to(&mut self, sink: impl FnMut(&Change) -> bool + Send + 'static) {
        self.feed.subscribe_with(sink);
    }

    /// Registers a live query: `callback` gets the rows of `sql` (run with
    /// `params`) now, and again after each commit that touched a table it
    /// reads and changed its result, with the diff (see [`crate::store`]'s
    /// `watch` rules: the key is the query's primary-key columns, or the
    /// whole row). It runs after the commit, outside the transaction, and
    /// may read through the [`Reader`] it gets (the writer's connection;
    /// it cannot write). Dropping the handle ends the watch.
    ///
    /// ```
    /// use meldb_store::{schema::Schema, Store};
    /// use std::sync::{Arc, Mutex};
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let schema = Schema::from_toml_str(r#"
    /// #     name = "todo"
    /// #     version = 1
    /// #     [[table]]
    /// #     name = "task"
    /// #     primary_key = ["id"]
    /// #     [[table.column]]
    /// #     name = "id"
    /// #     type = "text"
    /// #     [[table.column]]
    /// #     name = "title"
    /// #     type = "text"
    /// # "#, "todo.toml")?;
    /// let mut store = Store::open_in_memory(&schema)?;
    /// let seen = Arc::new(Mutex::new(Vec::new()));
    /// let log = seen.clone();
    /// let handle = store.watch("SELECT id, title FROM task ORDER BY id", &[], move |_, update| {
    ///     log.lock().unwrap().push((update.rows.len(), update.diff.added.len()));
    /// })?;
    /// store.write(|tx| tx.insert("task", &[("id", "t1".into()), ("title", "Call".into())]))?;
    /// assert_eq!(*seen.lock().unwrap(), vec![(0, 0), (1, 1)]);
    /// drop(handle);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`TypedError`] (as [`crate::Error::Typed`]) for a statement that
    /// could write; [`crate::Error::Storage`] when it does not prepare.
    pub fn watch(
        &mut self,
        sql: &str,
        params: &[Value],
        mut callback: impl FnMut(&Reader<'_>, Update<Vec<Value>>) + Send + 'static,
    ) -> Result<WatchHandle> {
        self.add_watch(
            sql,
            params,
            Box::new(move |reader, update| {
                callback(reader, update);
                Ok(())
            }),
        )
    }

    /// [`Store::watch`] with every row read as a `T`, as
    /// [`Store::query_as`] reads rows (fields by column name).
    ///
    /// # Errors
    ///
    /// As [`Store::watch`], and [`TypedError`] when the first result does
    /// not fit `T`. A later result that does not fit is not delivered; the
    /// handle's [`WatchHandle::failure`] says why.
    pub fn watch_as<T: DeserializeOwned + 'static>(
        &mut self,
        sql: &str,
        params: &[Value],
        mut callback: impl FnMut(&Reader<'_>, Update<T>) + Send + 'static,
    ) -> Result<WatchHandle> {
        let source_of = format!("watch {sql:?}");
        self.add_watch(
            sql,
            params,
            Box::new(move |reader, update| {
                let columns = update.columns;
                let typed = |row: Vec<Value>| -> std::result::Result<T, TypedError> {
                    let named: Vec<(String, Value)> = columns.iter().cloned().zip(row).collect();
                    from_row(&named, &source_of)
                };
                let rows = update
                    .rows
                    .into_iter()
                    .map(typed)
                    .collect::<std::result::Result<_, _>>()?;
                let diff = update.diff.map(typed)?;
                callback(
                    reader,
                    Update {
                        columns: columns.clone(),
                        rows,
                        diff,
                    },
                );
                Ok(())
            }),
        )
    }

    fn add_watch(&mut self, sql: &str, params: &[Value], deliver: Deliver) -> Result<WatchHandle> {
        let (tables, columns) = self.prepare_watch(sql)?;
        let key = key_columns(self, &tables, &columns);
        let rows = run(&self.conn, sql, params)?;
        let state = Arc::new(WatchState {
            tables,
            failure: Mutex::new(None),
        });
        let mut watch = Watch {
            sql: sql.to_owned(),
            params: params.to_vec(),
            columns: columns.clone(),
            key,
            rows: Vec::new(),
            deliver,
            state: Arc::downgrade(&state),
        };
        let update = Update {
            columns,
            diff: RowDiff {
                added: rows.clone(),
                removed: Vec::new(),
                changed: Vec::new(),
            },
            rows: rows.clone(),
        };
        (watch.deliver)(&self.reader(), update)?;
        watch.rows = rows;
        self.watches.push(watch);
        self.feed.set_watched(true);
        Ok(WatchHandle { state })
    }

    /// Prepares `sql` with an authorizer that lists the tables it reads;
    /// returns them (schema names) and the result's column names.
    fn prepare_watch(&mut self, sql: &str) -> Result<(Vec<String>, Vec<String>)> {
        let read = Arc::new(Mutex::new(Vec::<String>::new()));
        let sink = read.clone();
        self.conn.authorizer(Some(move |ctx: AuthContext<'_>| {
            if let AuthAction::Read { table_name, .. } = ctx.action {
                let mut read = sink.lock().unwrap_or_else(PoisonError::into_inner);
                if !read.iter().any(|t| t == table_name) {
                    read.push(table_name.to_owned());
                }
            }
            Authorization::Allow
        }))?;
        let prepared = self.conn.prepare(sql).map(|stmt| {
            let columns: Vec<String> = stmt.column_names().map(str::to_owned).collect();
            (stmt.readonly(), columns)
        });
        self.conn
            .authorizer(None::<fn(AuthContext<'_>) -> Authorization>)?;
        let (readonly, columns) = prepared?;
        if !readonly {
            return Err(TypedError {
                source_of: format!("watch {sql:?}"),
                field: None,
                column: None,
                problem: "a live query runs only statements that read".to_owned(),
            }
            .into());
        }
        let read = read.lock().unwrap_or_else(PoisonError::into_inner);
        // meldb's own tables (the conflict log, the pending queue, ...)
        // change without a feed entry: a watch over them would never
        // re-run, so it is refused rather than left silent.
        // The schema table a name the authorizer saw belongs to: the
        // table's view, or the base table beneath it.
        let owner = |r: &str| {
            self.tables.iter().find(|t| {
                r.eq_ignore_ascii_case(t.name())
                    || r.eq_ignore_ascii_case(&super::layout::base_name(t.name()))
            })
        };
        let mut tables: Vec<String> = Vec::new();
        for r in read.iter() {
            match owner(r) {
                Some(t) if !tables.iter().any(|n| n == t.name()) => {
                    tables.push(t.name().to_owned())
                }
                Some(_) => {}
                // meldb's own tables (the conflict log, the pending queue,
                // ...) change without a feed entry: a watch over them would
                // never re-run, so it is refused rather than left silent.
                None if r.to_ascii_lowercase().starts_with("meldb_") => {
                    return Err(TypedError {
                        source_of: format!("watch {sql:?}"),
                        field: None,
                        column: None,
                        problem: format!(
                            "a live query re-runs after changes to the schema's tables only; it \
                             reads {r:?}, meldb's own table, which it would never see change"
                        ),
                    }
                    .into());
                }
                None => {}
            }
        }
        // In the schema's order: the diff's key is the first of them whose
        // key columns the result names.
        tables.sort_by_key(|name| self.tables.iter().position(|t| t.name() == name));
        Ok((tables, columns))
    }

    /// After a commit: publishes its changes and re-runs the live queries
    /// that read a table it touched.
    pub(super) fn after_commit(&mut self) {
        let changes = self.feed.take(&self.tables);
        if changes.is_empty() {
            return;
        }
        self.feed.publish(&changes);
        if self.watches.is_empty() {
            return;
        }
        // Taken out so callbacks can read the store through a `Reader`.
        let mut watches = std::mem::take(&mut self.watches);
        watches.retain(|w| w.state.strong_count() > 0);
        {
            let reader = self.reader();
            for watch in &mut watches {
                let Some(state) = watch.state.upgrade() else {
                    continue;
                };
                if watch.reads_any(&state, &changes) {
                    watch.rerun(&reader, &state);
                }
            }
        }
        self.feed.set_watched(!watches.is_empty());
        self.watches = watches;
    }
}

/// The result positions of the key (see the module doc).
fn key_columns(store: &Store, tables: &[String], columns: &[String]) -> Option<Vec<usize>> {
    tables.iter().find_map(|name| {
        let table = &store.table(name)?.table;
        table
            .primary_key
            .iter()
            .map(|&i| {
                let key = &table.columns[i].name;
                columns.iter().position(|c| c.eq_ignore_ascii_case(key))
            })
            .collect()
    })
}

fn run(conn: &rusqlite::Connection, sql: &str, params: &[Value]) -> Result<Vec<Vec<Value>>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let width = stmt.column_count();
    let mut rows = stmt.query(rusqlite::params_from_iter(params))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(
            (0..width)
                .map(|i| row.get_ref(i).map(Value::from))
                .collect::<rusqlite::Result<Vec<_>>>()?,
        );
    }
    Ok(out)
}

/// The rows' identity for the diff: their key's values (or all of them).
fn identity(key: Option<&[usize]>, row: &[Value]) -> String {
    // Values have no total order or hash; their debug text tells every
    // distinct value apart, types included.
    match key {
        Some(key) => format!("{:?}", key.iter().map(|&i| &row[i]).collect::<Vec<_>>()),
        None => format!("{row:?}"),
    }
}

/// How `new` differs from `old`, by key (equal keys pair up in order).
fn diff(key: Option<&[usize]>, old: &[Vec<Value>], new: &[Vec<Value>]) -> RowDiff<Vec<Value>> {
    let mut before: HashMap<String, std::collections::VecDeque<&Vec<Value>>> = HashMap::new();
    for row in old {
        before.entry(identity(key, row)).or_default().push_back(row);
    }
    let mut out = RowDiff {
        added: Vec::new(),
        removed: Vec::new(),
        changed: Vec::new(),
    };
    for row in new {
        match before
            .get_mut(&identity(key, row))
            .and_then(|rows| rows.pop_front())
        {
            Some(was) if was == row => {}
            Some(was) => out.changed.push((was.clone(), row.clone())),
            None => out.added.push(row.clone()),
        }
    }
    // What is left of the old rows, in their order.
    for row in old {
        if let Some(rows) = before.get_mut(&identity(key, row)) {
            if rows.front().is_some_and(|r| std::ptr::eq(*r, row)) {
                rows.pop_front();
                out.removed.push(row.clone());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(values: &[i64]) -> Vec<Value> {
        values.iter().map(|&v| Value::Integer(v)).collect()
    }

    #[test]
    fn diff_by_key_tells_added_removed_and_changed_apart() {
        let old = vec![row(&[1, 10]), row(&[2, 20]), row(&[3, 30])];
        let new = vec![row(&[1, 10]), row(&[3, 31]), row(&[4, 40])];
        let d = diff(Some(&[0]), &old, &new);
        assert_eq!(d.added, vec![row(&[4, 40])]);
        assert_eq!(d.removed, vec![row(&[2, 20])]);
        assert_eq!(d.changed, vec![(row(&[3, 30]), row(&[3, 31]))]);
    }

    #[test]
    fn diff_without_a_key_is_by_whole_row_and_counts_repeats() {
        let old = vec![row(&[1]), row(&[1]), row(&[2])];
        let new = vec![row(&[1]), row(&[2]), row(&[2])];
        let d = diff(None, &old, &new);
        assert_eq!(d.added, vec![row(&[2])]);
        assert_eq!(d.removed, vec![row(&[1])]);
        assert!(d.changed.is_empty());
    }
}
