//! Speculative effects: the canonical before-image of every row a pending
//! mutation touched, so a pull can take the optimistic effects off, and so
//! nothing speculative is ever sent as a change.
//!
//! The first time a speculative write touches a row, its whole base-table
//! row (or the fact that it did not exist) and its dot-index entries go to
//! `meldb_undo`; later writes to the same row keep that first image.
//! Restoring puts every image back and empties the table. Sequence numbers
//! that speculative writes used are never handed out again: they become
//! gaps that delta sync covers like superseded writes.

use super::layout::{base_name, quote, TableLayout};
use super::Store;
use crate::error::{Result, StorageError};
use crate::value::Value;
use meldb_core::codec;
use rusqlite::{params, Connection, OptionalExtension};

/// Tables of the mutator machinery (`IF NOT EXISTS`: added to older
/// databases when they are opened).
pub const MUTATOR_DDL: &str = "
CREATE TABLE IF NOT EXISTS meldb_undo (
    tbl INTEGER NOT NULL, rid INTEGER NOT NULL, row BLOB,
    PRIMARY KEY (tbl, rid)) STRICT, WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meldb_pending (
    id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, args TEXT NOT NULL,
    at_ms INTEGER NOT NULL, meta TEXT) STRICT;
CREATE TABLE IF NOT EXISTS meldb_mutation_failures (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, error TEXT NOT NULL,
    acknowledged INTEGER NOT NULL DEFAULT 0) STRICT;
";

/// The authority's per-client mutation state, keyed by (token, site): the
/// name of the token the client connected with (`''` without tokens) and
/// its site id. `token` is NULL only in rows carried over from format 1,
/// which kept no token: such a row belongs to the first token that pushes
/// as its site (see `mutate.rs`). Format 2; format 1 had `client` alone.
pub const MUTATION_CLIENT_DDL: &str = "
CREATE TABLE IF NOT EXISTS meldb_clients (
    token TEXT, client BLOB NOT NULL, last_processed INTEGER NOT NULL,
    UNIQUE (token, client)) STRICT;
CREATE TABLE IF NOT EXISTS meldb_mutation_rejects (
    token TEXT, client BLOB NOT NULL, id INTEGER NOT NULL, name TEXT NOT NULL,
    error TEXT NOT NULL, UNIQUE (token, client, id)) STRICT;
";

/// Format 1 to 2: the mutation state gains its token column. Old rows are
/// kept with a NULL token (unclaimed), so no mutation an authority ran
/// runs again after the upgrade.
pub(super) fn upgrade_mutation_clients(conn: &Connection) -> Result<()> {
    // Format 1's shape, in case a database of it never had them.
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS meldb_clients (
             client BLOB PRIMARY KEY, last_processed INTEGER NOT NULL) STRICT;
         CREATE TABLE IF NOT EXISTS meldb_mutation_rejects (
             client BLOB NOT NULL, id INTEGER NOT NULL, name TEXT NOT NULL, error TEXT NOT NULL,
             PRIMARY KEY (client, id)) STRICT, WITHOUT ROWID;
         ALTER TABLE meldb_clients RENAME TO meldb_clients_format_1;
         ALTER TABLE meldb_mutation_rejects RENAME TO meldb_mutation_rejects_format_1;",
    )?;
    conn.execute_batch(MUTATION_CLIENT_DDL)?;
    conn.execute_batch(
        "INSERT INTO meldb_clients (token, client, last_processed)
             SELECT NULL, client, last_processed FROM meldb_clients_format_1;
         INSERT INTO meldb_mutation_rejects (token, client, id, name, error)
             SELECT NULL, client, id, name, error FROM meldb_mutation_rejects_format_1;
         DROP TABLE meldb_clients_format_1;
         DROP TABLE meldb_mutation_rejects_format_1;",
    )?;
    Ok(())
}

/// Records the before-image of row `rid` of `layout` unless one is kept.
pub(super) fn capture(conn: &Connection, layout: &TableLayout, rid: i64) -> Result<()> {
    // Claim the slot first: only the first write to a row keeps its image.
    let claimed = conn
        .prepare_cached("INSERT OR IGNORE INTO meldb_undo (tbl, rid, row) VALUES (?1, ?2, NULL)")?
        .execute(params![layout.id, rid])?;
    if claimed == 0 {
        return Ok(());
    }
    let select = format!(
        "SELECT * FROM {} WHERE _meldb_rid = ?1",
        quote(&base_name(layout.name()))
    );
    let mut stmt = conn.prepare_cached(&select)?;
    let width = stmt.column_count();
    let row: Option<Vec<Value>> = stmt
        .query_row([rid], |r| {
            (0..width)
                .map(|i| r.get_ref(i).map(Value::from))
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .optional()?;
    conn.prepare_cached("UPDATE meldb_undo SET row = ?3 WHERE tbl = ?1 AND rid = ?2")?
        .execute(params![
            layout.id,
            rid,
            row.map(|r| codec::stored::encode_undo(&r))
        ])?;
    Ok(())
}

/// Records that row `rid` was created by a speculative write.
pub(super) fn capture_new(conn: &Connection, layout: &TableLayout, rid: i64) -> Result<()> {
    conn.prepare_cached("INSERT OR IGNORE INTO meldb_undo (tbl, rid, row) VALUES (?1, ?2, NULL)")?
        .execute(params![layout.id, rid])?;
    Ok(())
}

/// Whether any speculative effect is applied.
pub(super) fn has_speculation(conn: &Connection) -> Result<bool> {
    Ok(conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM meldb_undo)")?
        .query_row([], |r| r.get(0))?)
}

/// The (table, rid) of every row speculative effects touched.
pub(super) fn touched(conn: &Connection) -> Result<Vec<(i64, i64)>> {
    Ok(conn
        .prepare_cached("SELECT tbl, rid FROM meldb_undo")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?)
}

/// The index of the packed-metadata column in a base row as `SELECT *`
/// returns it (upgrades append columns after it, so it is looked up).
fn state_column(conn: &Connection, layout: &TableLayout) -> Result<usize> {
    let sql = format!("SELECT * FROM {} LIMIT 0", quote(&base_name(layout.name())));
    Ok(conn.prepare_cached(&sql)?.column_index("_meldb_state")?)
}

/// Deletes the dot-index entries of a row, as its stored metadata lists them.
fn drop_dots(conn: &Connection, layout: &TableLayout, rid: i64) -> Result<()> {
    let sql = format!(
        "SELECT _meldb_state FROM {} WHERE _meldb_rid = ?1",
        quote(&base_name(layout.name()))
    );
    let blob: Option<Vec<u8>> = conn
        .prepare_cached(&sql)?
        .query_row([rid], |r| r.get(0))
        .optional()?;
    if let Some(blob) = blob {
        for (site, seq) in super::rows::stored_dots(&blob)? {
            conn.prepare_cached("DELETE FROM meldb_dots WHERE site = ?1 AND seq = ?2")?
                .execute(params![site, seq as i64])?;
        }
    }
    Ok(())
}

/// Puts every before-image back and forgets them.
pub(super) fn restore_all(conn: &Connection, tables: &[TableLayout]) -> Result<usize> {
    let images: Vec<(i64, i64, Option<Vec<u8>>)> = conn
        .prepare_cached("SELECT tbl, rid, row FROM meldb_undo")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let layout_of = |tbl: i64| {
        tables
            .iter()
            .find(|t| t.id == tbl)
            .ok_or_else(|| StorageError::Corrupt {
                what: "meldb_undo".into(),
                problem: format!("unknown table id {tbl}"),
            })
    };
    // First every speculative dot goes, then the images come back: a dot a
    // speculative write moved off one row may be restored on another.
    for (tbl, rid, _) in &images {
        drop_dots(conn, layout_of(*tbl)?, *rid)?;
    }
    for (tbl, rid, row) in &images {
        let layout = layout_of(*tbl)?;
        let base = quote(&base_name(layout.name()));
        conn.prepare_cached(&format!("DELETE FROM {base} WHERE _meldb_rid = ?1"))?
            .execute([rid])?;
        let Some(row) = row else { continue };
        let values: Vec<Value> = codec::stored::decode_undo(row)?;
        let marks = vec!["?"; values.len()].join(", ");
        conn.prepare_cached(&format!("INSERT INTO {base} VALUES ({marks})"))?
            .execute(rusqlite::params_from_iter(&values))?;
        let Some(Value::Blob(state)) = values.get(state_column(conn, layout)?) else {
            return Err(StorageError::Corrupt {
                what: "meldb_undo".into(),
                problem: format!(
                    "the image of row {rid} of {:?} has no metadata",
                    layout.name()
                ),
            }
            .into());
        };
        // Not through `write_row`, so no `Sites` bound is raised: none
        // needs to be. These dots were in `meldb_dots` when the image was
        // taken, and a site's bound never drops below a dot it once had
        // (clocks only grow, and `write_row` raises the bound).
        for (site, seq) in super::rows::stored_dots(state)? {
            conn.prepare_cached(
                "INSERT INTO meldb_dots (site, seq, tbl, rid) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![site, seq as i64, tbl, rid])?;
        }
    }
    conn.execute("DELETE FROM meldb_undo", [])?;
    Ok(images.len())
}

/// While alive, the connection shows the canonical state: speculative
/// effects are taken off inside a savepoint that is rolled back on drop.
pub(super) struct Canonical<'c> {
    conn: Option<&'c Connection>,
}

impl Store {
    /// Shows the canonical state until the guard drops (a no-op when there
    /// is no speculation).
    pub(super) fn canonical_view(&self) -> Result<Canonical<'_>> {
        if !has_speculation(&self.conn)? {
            return Ok(Canonical { conn: None });
        }
        self.conn.execute_batch("SAVEPOINT meldb_canonical")?;
        let guard = Canonical {
            conn: Some(&self.conn),
        };
        restore_all(&self.conn, &self.tables)?;
        Ok(guard)
    }
}

impl Drop for Canonical<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn {
            // Nothing was written that must stay: roll every change back.
            let _ = conn.execute_batch("ROLLBACK TO meldb_canonical; RELEASE meldb_canonical");
        }
    }
}
