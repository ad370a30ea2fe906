//! Reading beside the writer: read-only connections on the same database.
//!
//! A [`ReadPool`] holds up to `size` connections opened with
//! `SQLITE_OPEN_READ_ONLY` on the store's file. Each [`ReadPool::read`]
//! runs its closure in one read transaction, so everything it reads comes
//! from one snapshot: the last commit before its first statement, never a
//! part of a transaction still running (WAL mode, which file stores always
//! use, lets readers go on while the writer writes). A [`Reader`] is what
//! the closure gets: the connection, and the store's own row and digest
//! code run on it ([`Reader::get`], [`Reader::digest`]), the same code
//! [`Store::get`] and [`Store::digest`] run.
//!
//! A reader of an encrypted store is given the store's key before
//! anything else (see `cipher`).
//!
//! In-memory stores have no file to open a second connection on (a
//! shared-cache in-memory database would lock tables against the writer
//! rather than give readers a snapshot): [`Store::read_pool`] gives them
//! none, and their reads go through the writer ([`Store::reader`]).

use super::layout::TableLayout;
use super::rows::Sites;
use super::{digest, Store};
use crate::error::Result;
use crate::schema::Schema;
use crate::value::{Key, Value};
use rusqlite::{Connection, OpenFlags};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// How long a reader waits for a lock SQLite holds briefly (WAL recovery,
/// a checkpoint's start), as the writer's `busy_timeout`.
const BUSY: Duration = Duration::from_secs(5);

/// A read of one snapshot: the connection and the store's read code on it.
#[derive(Debug, Clone, Copy)]
pub struct Reader<'a> {
    conn: &'a Connection,
    schema: &'a Schema,
    tables: &'a [TableLayout],
}

impl<'a> Reader<'a> {
    /// The connection, for reading with plain SQL (read-only: a write is
    /// an SQLite error, `SQLITE_READONLY`, when it comes from a pool).
    pub fn conn(&self) -> &'a Connection {
        self.conn
    }

    /// A live row's columns, in schema order, as [`Store::get`] reads it.
    ///
    /// # Errors
    ///
    /// As [`Store::get`]: an unknown table, a key of the wrong arity, or
    /// SQLite failing.
    pub fn get(&self, table: &str, key: impl Into<Key>) -> Result<Option<Vec<(String, Value)>>> {
        digest::get_row(self.conn, self.schema, table, &key.into())
    }

    /// A live row read as a `T`, as [`Store::get_as`] reads it.
    ///
    /// # Errors
    ///
    /// As [`Store::get_as`].
    pub fn get_as<T: serde::de::DeserializeOwned>(
        &self,
        table: &str,
        key: impl Into<Key>,
    ) -> Result<Option<T>> {
        crate::typed::row_as(self.get(table, key)?, table)
    }

    /// A read-only query's rows read as `T`s, as [`Store::query_as`]
    /// reads them.
    ///
    /// # Errors
    ///
    /// As [`Store::query_as`].
    pub fn query_as<T: serde::de::DeserializeOwned>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<T>> {
        crate::typed::query_as(self.conn, sql, params)
    }

    /// The digest of this snapshot's state, as [`Store::digest`] computes
    /// it.
    ///
    /// # Errors
    ///
    /// Only [`Error::Storage`](crate::Error::Storage).
    pub fn digest(&self) -> Result<[u8; 32]> {
        let sites = Sites::load(self.conn)?;
        digest::digest_of(self.conn, self.tables, &sites)
    }
}

/// Read-only connections on a file store's database; see the module doc.
/// Connections open when first needed, up to `size`; a read that finds
/// them all busy waits for one.
#[derive(Debug)]
pub struct ReadPool {
    path: String,
    schema: Schema,
    tables: Arc<[TableLayout]>,
    size: usize,
    /// The database's key: each reader is keyed before its first read.
    key: Option<super::EncryptionKey>,
    idle: Mutex<Idle>,
    freed: Condvar,
}

#[derive(Debug, Default)]
struct Idle {
    conns: Vec<Connection>,
    /// Connections open, idle or lent.
    open: usize,
}

/// A connection lent to one read; back to the pool when dropped (rolled
/// back first if a read left its transaction open; closed if that fails).
struct Lease<'p> {
    pool: &'p ReadPool,
    conn: Option<Connection>,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        let clean = conn.is_autocommit() || conn.execute_batch("ROLLBACK").is_ok();
        let mut idle = self.pool.lock();
        if clean && conn.is_autocommit() {
            idle.conns.push(conn);
        } else {
            idle.open -= 1;
        }
        drop(idle);
        self.pool.freed.notify_one();
    }
}

impl ReadPool {
    /// How many connections it may open.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Runs `f` over one snapshot, on a read-only connection.
    ///
    /// # Errors
    ///
    /// What `f` returned, or [`Error::Storage`](crate::Error::Storage)
    /// when the connection could not be opened or SQLite failed.
    pub fn read<T>(&self, f: impl FnOnce(&Reader<'_>) -> Result<T>) -> Result<T> {
        let lease = self.lease()?;
        let Some(conn) = lease.conn.as_ref() else {
            unreachable!("a lease holds its connection until dropped");
        };
        conn.execute_batch("BEGIN DEFERRED")?;
        let out = f(&Reader {
            conn,
            schema: &self.schema,
            tables: &self.tables,
        })?;
        conn.execute_batch("COMMIT")?;
        Ok(out)
    }

    fn lock(&self) -> MutexGuard<'_, Idle> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lease(&self) -> Result<Lease<'_>> {
        let mut idle = self.lock();
        loop {
            if let Some(conn) = idle.conns.pop() {
                return Ok(Lease {
                    pool: self,
                    conn: Some(conn),
                });
            }
            if idle.open < self.size {
                idle.open += 1;
                drop(idle);
                return match self.open() {
                    Ok(conn) => Ok(Lease {
                        pool: self,
                        conn: Some(conn),
                    }),
                    Err(e) => {
                        self.lock().open -= 1;
                        self.freed.notify_one();
                        Err(e)
                    }
                };
            }
            idle = self
                .freed
                .wait(idle)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn open(&self) -> Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        if let Some(key) = &self.key {
            super::cipher::key_connection(&conn, key)?;
        }
        conn.busy_timeout(BUSY)?;
        super::fix_plans(&conn)?;
        Ok(conn)
    }
}

impl Store {
    /// A pool of up to `size` read-only connections on this store's
    /// database, or `None` for an in-memory store (or `size` 0): read
    /// through [`Store::reader`] then. Nothing opens until the first read.
    pub fn read_pool(&self, size: usize) -> Option<ReadPool> {
        if size == 0 || self.path == ":memory:" || self.path.is_empty() {
            return None;
        }
        // SQLite's own name for the open file is absolute, so the readers
        // open the writer's file even if the process changes directory
        // after a store was opened by a relative path.
        let path = match self.conn.path() {
            Some(file) if !file.is_empty() => file.to_owned(),
            _ => return None,
        };
        Some(ReadPool {
            path,
            schema: self.schema.clone(),
            tables: self.tables.clone().into(),
            size,
            key: self.key.clone(),
            idle: Mutex::new(Idle::default()),
            freed: Condvar::new(),
        })
    }

    /// A [`Reader`] over this store's own connection: what it reads is
    /// the committed state, or a transaction's state while one is open.
    pub fn reader(&self) -> Reader<'_> {
        Reader {
            conn: &self.conn,
            schema: &self.schema,
            tables: &self.tables,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Component, PathBuf};

    fn schema() -> std::result::Result<Schema, Box<dyn std::error::Error>> {
        Ok(Schema::from_toml_str(
            "name = \"t\"\nversion = 1\n[[table]]\nname = \"item\"\nprimary_key = [\"sku\"]\n\
             [[table.column]]\nname = \"sku\"\ntype = \"text\"\n",
            "t.toml",
        )?)
    }

    /// `to` as a path relative to the current directory (`..` up to the
    /// root, then down).
    fn relative(to: &std::path::Path) -> std::io::Result<PathBuf> {
        let up = std::env::current_dir()?
            .components()
            .filter(|c| matches!(c, Component::Normal(_)))
            .count();
        let mut path: PathBuf = std::iter::repeat_n("..", up).collect();
        path.extend(
            to.components()
                .filter(|c| matches!(c, Component::Normal(_))),
        );
        Ok(path)
    }

    #[test]
    fn readers_open_the_writers_file_by_its_absolute_name(
    ) -> std::result::Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let by_relative_name = relative(&dir.path().join("r.db"))?;
        assert!(by_relative_name.is_relative());
        let mut store = Store::open(&by_relative_name, &schema()?)?;
        store.write(|tx| tx.insert("item", &[("sku", "a".into())]))?;
        let pool = store.read_pool(1).ok_or("a file store has readers")?;
        assert!(
            std::path::Path::new(&pool.path).is_absolute(),
            "{}",
            pool.path
        );
        let got = pool.read(|r| r.get("item", "a"))?;
        assert!(got.is_some(), "the reader sees the writer's row");
        // The typed reads run on the reader's snapshot too.
        let typed: Option<(String,)> = pool.read(|r| r.get_as("item", "a"))?;
        assert_eq!(typed, Some(("a".to_string(),)));
        let skus: Vec<(String,)> = pool.read(|r| r.query_as("SELECT sku FROM item", []))?;
        assert_eq!(skus, [("a".to_string(),)]);
        let refused = pool.read(|r| r.query_as::<(i64,)>("CREATE TEMP TABLE t (a)", []));
        assert!(refused.is_err(), "a reader's query_as reads only");
        Ok(())
    }

    /// Readers fix their statements' plans as the writer does
    /// (`fix_plans`), so a cached statement is not compiled again when its
    /// bound values change.
    #[test]
    fn readers_and_the_writer_fix_their_plans(
    ) -> std::result::Result<(), Box<dyn std::error::Error>> {
        use rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG as QPSG;
        let dir = tempfile::tempdir()?;
        let store = Store::open(dir.path().join("p.db"), &schema()?)?;
        assert!(store.reader().conn().db_config(QPSG)?);
        let pool = store.read_pool(1).ok_or("a file store has readers")?;
        assert!(pool.read(|r| Ok(r.conn().db_config(QPSG)?))?);
        Ok(())
    }

    #[test]
    fn an_in_memory_store_has_no_readers() -> std::result::Result<(), Box<dyn std::error::Error>> {
        let store = Store::open_in_memory(&schema()?)?;
        assert!(store.read_pool(4).is_none());
        Ok(())
    }
}
