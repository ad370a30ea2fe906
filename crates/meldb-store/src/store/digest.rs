//! Reading rows back and hashing the canonical state.
//!
//! [`Store::digest`] hashes every row of every table, deleted rows
//! included: table names in order, rows in key order, and each row's key,
//! causal length, clock, timestamp and column states with columns ordered by
//! name (so replicas whose schema upgrades appended columns in different
//! orders still agree). Two replicas with equal digests hold equal states.

use super::layout::{quote, TableLayout};
use super::rows::{self, Sites};
use super::Store;
use crate::error::{ResolveError, Result, WriteError};
use crate::resolve::{ReadView, Row};
use crate::schema::Schema;
use crate::value::{Key, Value};
use meldb_core::codec;
use rusqlite::Connection;

impl Store {
    /// A blake3 hash of the canonical CRDT state.
    ///
    /// # Errors
    ///
    /// Only [`Error::Storage`](crate::Error::Storage), as for
    /// [`Store::changes_since`].
    pub fn digest(&self) -> Result<[u8; 32]> {
        digest_of(&self.conn, &self.tables, &self.sites)
    }

    /// A live row's columns, in schema order, or `None` if there is none.
    pub fn get(&self, table: &str, key: impl Into<Key>) -> Result<Option<Vec<(String, Value)>>> {
        get_row(&self.conn, &self.schema, table, &key.into())
    }
}

/// [`Store::digest`] over any connection to the database (a reader's
/// snapshot reads with the same code), given its tables and sites.
pub(super) fn digest_of(
    conn: &Connection,
    tables: &[TableLayout],
    sites: &Sites,
) -> Result<[u8; 32]> {
    let mut hasher = blake3::Hasher::new();
    let mut tables: Vec<_> = tables.iter().collect();
    tables.sort_by(|a, b| a.table.name.cmp(&b.table.name));
    for layout in tables {
        hasher.update(layout.table.name.as_bytes());
        hasher.update(&[0]);
        let mut names: Vec<(&str, usize)> = layout
            .value_cols
            .iter()
            .enumerate()
            .map(|(j, &i)| (layout.table.columns[i].name.as_str(), j))
            .collect();
        names.sort();
        rows::read_rows(
            conn,
            layout,
            sites,
            &layout.sql.select_all,
            [],
            |key, state| {
                let columns: Vec<_> = names
                    .iter()
                    .map(|&(name, j)| (name, state.columns[j].as_ref()))
                    .collect();
                let bytes = codec::digest_row(&key, &state, &columns);
                hasher.update(&(bytes.len() as u64).to_le_bytes());
                hasher.update(&bytes);
                Ok(())
            },
        )?;
    }
    Ok(*hasher.finalize().as_bytes())
}

/// [`Store::get`] over any connection to the database.
pub(super) fn get_row(
    conn: &Connection,
    schema: &Schema,
    table: &str,
    key: &Key,
) -> Result<Option<Vec<(String, Value)>>> {
    let schema_table = schema
        .table(table)
        .ok_or_else(|| WriteError::UnknownTable {
            table: table.into(),
        })?;
    if key.0.len() != schema_table.primary_key.len() {
        return Err(WriteError::KeyArity {
            table: table.into(),
            key: key.clone(),
            expected: schema_table.primary_key.len(),
            found: key.0.len(),
        }
        .into());
    }
    let key_match = schema_table
        .primary_key
        .iter()
        .enumerate()
        .map(|(n, &i)| format!("{} = ?{}", quote(&schema_table.columns[i].name), n + 1))
        .collect::<Vec<_>>()
        .join(" AND ");
    let sql = format!("SELECT * FROM {} WHERE {key_match}", quote(table));
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(rusqlite::params_from_iter(&key.0))?;
    let Some(row) = rows.next()? else {
        return Ok(None);
    };
    schema_table
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| Ok((c.name.clone(), Value::from(row.get_ref(i)?))))
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

/// Resolvers read the store through this view (see [`ReadView`]): rows as
/// `get` returns them, and statements SQLite itself deems read-only.
impl ReadView for Store {
    type Error = crate::Error;

    fn get_row(&self, table: &str, key: &Key) -> Result<Option<Row>> {
        Ok(self.get(table, key.clone())?.map(Row::from))
    }

    fn query_rows(&self, table: &str, sql: &str, params: &[Value]) -> Result<Vec<Vec<Value>>> {
        let mut stmt = self.conn.prepare(sql)?;
        if !stmt.readonly() {
            return Err(ResolveError::NotReadOnly {
                table: table.to_owned(),
                sql: sql.to_owned(),
            }
            .into());
        }
        let width = stmt.column_count();
        let rows = stmt.query_map(rusqlite::params_from_iter(params), |r| {
            (0..width)
                .map(|i| r.get_ref(i).map(Value::from))
                .collect::<rusqlite::Result<Vec<_>>>()
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}
