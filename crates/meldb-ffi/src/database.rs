//! The [`Database`] object: one replica, shared by every thread of the
//! foreign program, and what each language calls.
//!
//! Invariant: every call takes the handle's state for its own duration
//! only; nothing across the boundary holds the store's lock between
//! calls. A closed database refuses every call with
//! [`MeldbError::Closed`] and has stopped its syncs and servers; a call
//! from inside one of its own resolvers or mutators is refused
//! ([`crate::guard`]) rather than left waiting for itself.

use crate::error::MeldbError;
use crate::guard;
use crate::runtime::Runtime;
use crate::value::{self, DbRow, DbValue};
use meldb::sync::SharedStore;
use meldb::{EncryptionKey, Key, Schema, StoreOptions, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};

/// A schema, parsed and checked: TOML text or a file.
#[derive(Debug, uniffi::Object)]
pub struct DbSchema {
    pub(crate) schema: Schema,
}

#[uniffi::export]
impl DbSchema {
    /// A schema from TOML text.
    #[uniffi::constructor]
    pub fn from_toml(text: String) -> Result<Arc<DbSchema>, MeldbError> {
        Ok(Arc::new(DbSchema {
            schema: Schema::from_toml_str(&text, "schema text")?,
        }))
    }

    /// A schema from a TOML file.
    #[uniffi::constructor]
    pub fn from_file(path: String) -> Result<Arc<DbSchema>, MeldbError> {
        let text = std::fs::read_to_string(&path).map_err(|e| MeldbError::Schema {
            message: format!("{path}: {e}"),
        })?;
        Ok(Arc::new(DbSchema {
            schema: Schema::from_toml_str(&text, &path)?,
        }))
    }

    /// The schema's name.
    pub fn name(&self) -> String {
        self.schema.name.clone()
    }

    /// Its tables' names, in the schema's order.
    pub fn tables(&self) -> Vec<String> {
        self.schema.tables.iter().map(|t| t.name.clone()).collect()
    }
}

/// How a database opens.
#[derive(Debug, Clone, Default, uniffi::Record)]
pub struct DatabaseOptions {
    /// A passphrase for SQLCipher (the library built with its `encryption`
    /// feature): a wrong one, a key for a plain file or none for an
    /// encrypted one is [`MeldbError::Key`].
    #[uniffi(default = None)]
    pub encryption_key: Option<String>,
    /// Read-only connections beside the writer (file databases; default 4):
    /// reads do not wait for a write or a sync in progress.
    #[uniffi(default = None)]
    pub readers: Option<u32>,
}

/// Each database's number, for the re-entrancy guard.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// One replica: a SQLite file (or an in-memory database) with its schema.
/// Thread-safe: any thread may call it, at the same time as others.
#[derive(uniffi::Object)]
pub struct Database {
    pub(crate) id: u64,
    pub(crate) schema: Schema,
    shared: RwLock<Option<SharedStore>>,
    runtime: OnceLock<Arc<Runtime>>,
    /// What to stop when it closes: its syncs and servers.
    stoppers: Mutex<Vec<Box<dyn FnOnce() + Send>>>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database").field("id", &self.id).finish()
    }
}

impl Database {
    fn from_store(store: meldb::Store, schema: &Schema, readers: Option<u32>) -> Arc<Database> {
        let shared = match readers {
            Some(n) => SharedStore::with_readers(store, n as usize),
            None => SharedStore::new(store),
        };
        Arc::new(Database {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            schema: schema.clone(),
            shared: RwLock::new(Some(shared)),
            runtime: OnceLock::new(),
            stoppers: Mutex::new(Vec::new()),
        })
    }

    fn store_options(options: &DatabaseOptions) -> StoreOptions {
        let mut store = StoreOptions::new();
        if let Some(key) = &options.encryption_key {
            store = store.encryption_key(EncryptionKey::passphrase(key.clone()));
        }
        store
    }

    /// The shared store, for a call named `call`: refused when closed or
    /// from inside this database's own locked callbacks.
    pub(crate) fn shared(&self, call: &str) -> Result<SharedStore, MeldbError> {
        guard::check(self.id, call)?;
        self.shared
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(|| MeldbError::closed(format!("{call}: the database is closed")))
    }

    /// The runtime sync and servers run on, started on first use.
    pub(crate) fn runtime(&self) -> Result<Arc<Runtime>, MeldbError> {
        if let Some(rt) = self.runtime.get() {
            return Ok(rt.clone());
        }
        let rt = Arc::new(Runtime::new()?);
        Ok(self.runtime.get_or_init(|| rt).clone())
    }

    /// Runs `stop` when the database closes (or now, if it has).
    pub(crate) fn on_close(&self, stop: Box<dyn FnOnce() + Send>) {
        // Under the list's lock, which `close` holds while it closes: a
        // stopper is either in the list it takes or run here.
        let mut stoppers = self.stoppers.lock().unwrap_or_else(PoisonError::into_inner);
        let open = self
            .shared
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some();
        if open {
            stoppers.push(stop);
        } else {
            drop(stoppers);
            stop();
        }
    }

    /// Runs `f` on the writer, locked (for resolvers, mutators and the
    /// authority's settings, which live on the store).
    pub(crate) fn with_store<T>(
        &self,
        call: &str,
        f: impl FnOnce(&mut meldb::Store) -> Result<T, MeldbError>,
    ) -> Result<T, MeldbError> {
        let shared = self.shared(call)?;
        let mut store = shared.lock();
        f(&mut store)
    }
}

#[uniffi::export]
impl Database {
    /// Opens (or creates) the database file at `path` with `schema`.
    #[uniffi::constructor(default(options = None))]
    pub fn open(
        path: String,
        schema: Arc<DbSchema>,
        options: Option<DatabaseOptions>,
    ) -> Result<Arc<Database>, MeldbError> {
        let options = options.unwrap_or_default();
        let store = Database::store_options(&options).open(&path, &schema.schema)?;
        Ok(Database::from_store(store, &schema.schema, options.readers))
    }

    /// Opens a new in-memory database with `schema` (gone when closed).
    #[uniffi::constructor(default(options = None))]
    pub fn open_in_memory(
        schema: Arc<DbSchema>,
        options: Option<DatabaseOptions>,
    ) -> Result<Arc<Database>, MeldbError> {
        let options = options.unwrap_or_default();
        let store = Database::store_options(&options).open_in_memory(&schema.schema)?;
        Ok(Database::from_store(store, &schema.schema, options.readers))
    }

    /// This replica's site id (a UUID).
    pub fn site_id(&self) -> Result<String, MeldbError> {
        Ok(self.shared("site_id")?.lock().site_id().to_string())
    }

    /// A live row of `table` by its key (one value per key column), `or_set`
    /// columns as sets; `None` if there is none.
    pub fn get(&self, table: String, key: Vec<DbValue>) -> Result<Option<DbRow>, MeldbError> {
        self.get_row(&table, Key(value::values(key)?))
    }

    /// [`Database::get`] as a JSON object (sets as arrays), for each
    /// language's own typed layer; `None` if there is no such row.
    pub fn get_json(&self, table: String, key: Vec<DbValue>) -> Result<Option<String>, MeldbError> {
        self.get_row_json(table, Key(value::values(key)?))
    }

    /// The rows of a read-only SQL query with `?` parameters, each as its
    /// columns by name (an `or_set` column as SQL reads it: JSON array text).
    pub fn query(&self, sql: String, params: Vec<DbValue>) -> Result<Vec<DbRow>, MeldbError> {
        let (names, rows) = self.query_values(&sql, params)?;
        Ok(rows
            .into_iter()
            .map(|row| {
                names
                    .iter()
                    .cloned()
                    .zip(row.into_iter().map(DbValue::from_value))
                    .collect()
            })
            .collect())
    }

    /// [`Database::query`] as a JSON array of objects.
    pub fn query_json(&self, sql: String, params: Vec<DbValue>) -> Result<String, MeldbError> {
        let rows = self.query(sql, params)?;
        Ok(serde_json::Value::Array(rows.iter().map(value::row_json).collect()).to_string())
    }

    /// The state's digest (hex): equal on replicas that hold the same data.
    pub fn digest(&self) -> Result<String, MeldbError> {
        let digest = self.shared("digest")?.digest()?;
        Ok(digest.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// Makes this replica the authority for tables declared with
    /// `authority = true` (or not): resolvers that reject, and mutators
    /// pushed by clients, are decided here.
    pub fn set_authority(&self, authority: bool) -> Result<(), MeldbError> {
        self.with_store("set_authority", |store| {
            store.set_authority(authority);
            Ok(())
        })
    }

    /// Closes the database: stops its syncs and servers, rolls back its
    /// open transactions (their commit fails), and refuses later calls.
    /// Closing twice is a no-op. Called from inside one of its resolvers or
    /// mutators, it closes at once and its syncs stop in the background.
    pub fn close(&self) {
        // Closed first, so that nothing new starts while the syncs stop,
        // and under the stoppers' lock (see `on_close`).
        let stoppers = {
            let mut list = self.stoppers.lock().unwrap_or_else(PoisonError::into_inner);
            self.shared
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            std::mem::take(&mut *list)
        };
        if guard::check(self.id, "close").is_err() {
            // Inside one of its own resolvers or mutators, which holds the
            // lock its syncs may be waiting for: they stop on a thread of
            // their own once it is released, and close returns now.
            let spawned = std::thread::Builder::new()
                .name("meldb-close".into())
                .spawn(move || stoppers.into_iter().for_each(|stop| stop()));
            if let Err(e) = spawned {
                eprintln!("meldb: could not start a thread to stop syncs at close: {e}");
            }
            return;
        }
        for stop in stoppers {
            stop();
        }
    }

    /// Whether [`Database::close`] has run.
    pub fn is_closed(&self) -> bool {
        self.shared
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_none()
    }
}

impl Database {
    /// A live row by its key, `or_set` columns as sets.
    fn get_row(&self, table: &str, key: Key) -> Result<Option<DbRow>, MeldbError> {
        let row = self.shared("get")?.get(table, key)?;
        Ok(row.map(|row| value::table_row(&self.schema, table, row)))
    }

    /// [`Database::get_row`] as a JSON object.
    pub(crate) fn get_row_json(
        &self,
        table: String,
        key: Key,
    ) -> Result<Option<String>, MeldbError> {
        Ok(self
            .get_row(&table, key)?
            .map(|row| value::row_json(&row).to_string()))
    }

    /// A read-only query's column names and rows, from one snapshot.
    pub(crate) fn query_values(
        &self,
        sql: &str,
        params: Vec<DbValue>,
    ) -> Result<(Vec<String>, Vec<Vec<Value>>), MeldbError> {
        let params = value::values(params)?;
        let shared = self.shared("query")?;
        let query_error = |e: meldb::rusqlite::Error| MeldbError::Query {
            message: format!("query {sql:?}: {e}"),
        };
        // The read's own error is the store's; the query's is ours, carried
        // out of the snapshot as a value.
        shared.read(|reader| {
            Ok((|| {
                let mut stmt = reader.conn().prepare(sql).map_err(query_error)?;
                if !stmt.readonly() {
                    return Err(MeldbError::Query {
                        message: format!(
                            "query {sql:?} does not only read: write through a transaction \
                             (writes in SQL are not replicated)"
                        ),
                    });
                }
                let names: Vec<String> = stmt.column_names().map(String::from).collect();
                let width = names.len();
                let mut rows = stmt
                    .query(meldb::rusqlite::params_from_iter(params.iter()))
                    .map_err(query_error)?;
                let mut list = Vec::new();
                while let Some(row) = rows.next().map_err(query_error)? {
                    let mut values = Vec::with_capacity(width);
                    for i in 0..width {
                        values.push(row.get::<_, Value>(i).map_err(query_error)?);
                    }
                    list.push(values);
                }
                Ok((names, list))
            })())
        })?
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        self.close();
    }
}
