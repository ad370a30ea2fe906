//! Creating and opening a database: internal tables, site id, clock,
//! version vector and the stored schema, and schema upgrades on open.
//!
//! The stored schema is the *physical* one: tables in creation order (a
//! table's position is its id in the dot index) and columns in the order
//! the base table has them. An upgrade appends new tables and columns to it
//! and rebuilds the views in the new schema's order.

use super::format::{self, FORMAT};
use super::layout::{self, TableLayout};
use super::rows::{corrupt, Sites};
use super::{Replica, Store, StoreOptions};
use crate::clock::{Clock, Hlc, SiteId};
use crate::error::{OpenError, Result, StorageError};
use crate::schema::{Schema, Table};
use crate::version::VersionVector;
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::BTreeSet;

fn get_meta<T: rusqlite::types::FromSql>(conn: &Connection, key: &str) -> Result<Option<T>> {
    Ok(conn
        .query_row("SELECT value FROM meldb_meta WHERE key = ?1", [key], |r| {
            r.get(0)
        })
        .optional()?)
}

fn set_meta(conn: &Connection, key: &str, value: impl rusqlite::ToSql) -> Result<()> {
    conn.prepare_cached("INSERT OR REPLACE INTO meldb_meta (key, value) VALUES (?1, ?2)")?
        .execute(params![key, value])?;
    Ok(())
}

/// A `meldb_meta` entry that a database must have to be meldb's, on open.
fn require<T>(path: &str, key: &str, value: Option<T>) -> Result<T> {
    value.ok_or_else(|| {
        OpenError::NotMeldb {
            path: path.to_owned(),
            problem: format!("meldb_meta has no {key:?} entry"),
        }
        .into()
    })
}

/// A `meldb_meta` entry that was there when the store opened: gone now,
/// the metadata is corrupt.
fn still_there<T>(key: &str, value: Option<T>) -> Result<T> {
    value.ok_or_else(|| corrupt("meldb_meta", format!("the {key:?} entry is gone")).into())
}

/// Saves the clock's last timestamp.
pub fn save_hlc(conn: &Connection, hlc: Hlc) -> Result<()> {
    set_meta(conn, "hlc", hlc.0 as i64)
}

/// Replaces the stored ranges of the `changed` sites with theirs in `vv`
/// (the version vector of remote sites); the other sites' rows stay as
/// they are. A commit changes the ranges of the few sites it received
/// from, and a relay knows every client's site: rewriting all of them on
/// every commit was most of a small apply's cost.
pub fn save_coverage(
    conn: &Connection,
    sites: &mut Sites,
    vv: &VersionVector,
    changed: &BTreeSet<SiteId>,
) -> Result<()> {
    let mut delete = conn.prepare_cached("DELETE FROM meldb_coverage WHERE site = ?1")?;
    let mut insert =
        conn.prepare_cached("INSERT INTO meldb_coverage (site, first, last) VALUES (?1, ?2, ?3)")?;
    for site in changed {
        let idx = sites.index(conn, *site)?;
        delete.execute(params![idx])?;
        for &(first, last) in vv.site(site).map_or(&[][..], |r| r.ranges()) {
            insert.execute(params![idx, first as i64, last as i64])?;
        }
    }
    Ok(())
}

fn load_coverage(conn: &Connection, sites: &Sites) -> Result<VersionVector> {
    let mut vv = VersionVector::new();
    let mut stmt = conn.prepare("SELECT site, first, last FROM meldb_coverage")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let idx: u32 = row.get(0)?;
        let site = sites
            .get(idx)
            .ok_or_else(|| corrupt("meldb_coverage", format!("unknown site index {idx}")))?;
        vv.insert(
            site,
            row.get::<_, i64>(1)? as u64,
            row.get::<_, i64>(2)? as u64,
        );
    }
    Ok(vv)
}

fn save_schema(conn: &Connection, physical: &Schema, user: &Schema) -> Result<()> {
    let json = serde_json::to_string(physical)
        .map_err(|e| corrupt("schema", format!("cannot serialize: {e}")))?;
    set_meta(conn, "schema", json)?;
    set_meta(conn, "fingerprint", user.fingerprint().to_vec())
}

fn create_table(conn: &Connection, table: &Table) -> Result<()> {
    conn.execute_batch(&layout::create_base_table(table))?;
    Ok(())
}

/// Brings the stored physical schema up to `user`'s, or refuses.
fn upgrade(conn: &Connection, path: &str, physical: &mut Schema, user: &Schema) -> Result<()> {
    let plan = physical.check_upgrade(user, path)?;
    for (table_name, column_name) in &plan.new_columns {
        let column = user
            .table(table_name)
            .and_then(|t| t.column(column_name))
            .map(|(_, c)| c.clone())
            .ok_or_else(|| {
                corrupt(
                    "schema upgrade",
                    format!("{table_name}.{column_name} vanished"),
                )
            })?;
        conn.execute_batch(&layout::add_column(table_name, &column))?;
        // Existing live rows read the new column's default, 0 or [] at once,
        // exactly as a replica created with the new schema shows them.
        let initial = super::rows::materialize(&column, None);
        if initial != crate::value::Value::Null {
            conn.execute(
                &format!(
                    "UPDATE {} SET {} = ?1 WHERE _meldb_cl % 2 = 1",
                    layout::quote(&layout::base_name(table_name)),
                    layout::quote(&column.name)
                ),
                [&initial],
            )?;
        }
        if let Some(t) = physical.tables.iter_mut().find(|t| &t.name == table_name) {
            t.columns.push(column);
        }
    }
    for name in &plan.new_tables {
        let table = user
            .table(name)
            .cloned()
            .ok_or_else(|| corrupt("schema upgrade", format!("table {name} vanished")))?;
        create_table(conn, &table)?;
        physical.tables.push(table);
    }
    // What a table shows while a conflict waits may change (it stores
    // nothing), and so may row-level rules: they judge new writes only
    // (existing rows that break them are reported by
    // `Store::rule_violations`, never rewritten). The physical tables,
    // which the store decides with, take the user schema's, table by table
    // and column by column.
    for table in &mut physical.tables {
        if let Some(new) = user.table(&table.name) {
            table.deferred_shows = new.deferred_shows;
            table.rules = new.rules.clone();
            for column in &mut table.columns {
                if let Some((_, c)) = new.column(&column.name) {
                    column.rules = c.rules.clone();
                }
            }
        }
    }
    physical.name = user.name.clone();
    physical.version = user.version;
    conn.execute_batch(&layout::create_views(user))?;
    save_schema(conn, physical, user)
}

/// The local site's last sequence number: its greatest dot still in the
/// index (a site's latest write always is).
fn load_last_seq(conn: &Connection, sites: &Sites, local: SiteId) -> Result<u64> {
    let Some(idx) = sites.find(&local) else {
        return Err(corrupt(
            "meldb_sites",
            format!("the local site {local} is not registered"),
        )
        .into());
    };
    let last: i64 = conn.query_row(
        "SELECT coalesce(max(seq), 0) FROM meldb_dots WHERE site = ?1",
        [idx],
        |r| r.get(0),
    )?;
    Ok(last as u64)
}

impl Store {
    /// Called with the write lock held: if another connection committed
    /// since this handle last looked, reload what this handle caches (sites,
    /// version vector, last sequence number, clock), so two handles on one
    /// file never reuse a dot or a timestamp.
    pub(super) fn refresh_if_changed(&mut self) -> Result<()> {
        let version: i64 = self
            .conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))?;
        if version == self.data_version {
            return Ok(());
        }
        let fingerprint: Vec<u8> =
            still_there("fingerprint", get_meta(&self.conn, "fingerprint")?)?;
        if fingerprint != self.schema.fingerprint() {
            return Err(StorageError::SchemaChanged {
                path: self.path.clone(),
            }
            .into());
        }
        self.sites = Sites::load(&self.conn)?;
        self.replica.coverage = load_coverage(&self.conn, &self.sites)?;
        self.replica.coverage_dirty.clear();
        let site_bytes: Vec<u8> = still_there("site_id", get_meta(&self.conn, "site_id")?)?;
        self.local = <[u8; 16]>::try_from(site_bytes.as_slice())
            .map(SiteId::from_bytes)
            .map_err(|_| corrupt("meldb_meta", "site_id is not 16 bytes"))?;
        self.replica.last_seq = load_last_seq(&self.conn, &self.sites, self.local)?;
        let hlc: i64 = still_there("hlc", get_meta(&self.conn, "hlc")?)?;
        self.saved_hlc = Hlc(hlc as u64);
        self.clock.reset(self.clock.last().max(self.saved_hlc));
        self.data_version = version;
        Ok(())
    }

    pub(super) fn init(
        conn: Connection,
        path: String,
        schema: &Schema,
        options: StoreOptions,
    ) -> Result<Store> {
        Store::init_with(conn, path, schema, options, &format::CURRENT)
    }

    /// Opens with the given format rules (tests bring their own upgrade
    /// steps; everything else uses [`format::CURRENT`]).
    pub(super) fn init_with(
        conn: Connection,
        path: String,
        schema: &Schema,
        options: StoreOptions,
        rules: &format::Rules,
    ) -> Result<Store> {
        super::fix_plans(&conn)?;
        let upgrade = rules.prepare(&conn, &path)?;
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let result = rules
            .finish(&conn, &path, upgrade.as_ref())
            .and_then(|()| Store::init_in_transaction(&conn, &path, schema, &options));
        match result {
            Ok(parts) => {
                conn.execute_batch("COMMIT")?;
                let (local, physical, hlc) = parts;
                // Read before the state it stands for: a commit by another
                // connection between the two then makes the state look
                // older than it is (reloaded at the next write, and change
                // reads do not trust it), never newer.
                let data_version = conn.query_row("PRAGMA data_version", [], |r| r.get(0))?;
                let sites = Sites::load(&conn)?;
                let coverage = load_coverage(&conn, &sites)?;
                let last_seq = load_last_seq(&conn, &sites, local)?;
                let tables = physical
                    .tables
                    .into_iter()
                    .enumerate()
                    .map(|(i, t)| TableLayout::new(i as i64, t))
                    .collect();
                Ok(Store {
                    conn,
                    path,
                    schema: schema.clone(),
                    tables,
                    sites,
                    local,
                    clock: Clock::new(hlc, options.max_drift, options.time.clone()),
                    saved_hlc: hlc,
                    replica: Replica {
                        last_seq,
                        coverage,
                        coverage_dirty: BTreeSet::new(),
                    },
                    data_version,
                    page_memo: Default::default(),
                    authority: options.authority,
                    resolvers: meldb_core::engine::Resolvers::new(),
                    mutators: Vec::new(),
                    subscribers: Vec::new(),
                    feed: super::feed::ChangeLog::default(),
                    watches: Vec::new(),
                    writer: crate::resolve::Writer::default(),
                    stamps: Vec::new(),
                    conflict_retention: super::conflicts::ConflictRetention::KEEP_ALL,
                    key: options.key,
                })
            }
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }

    fn init_in_transaction(
        conn: &Connection,
        path: &str,
        schema: &Schema,
        options: &StoreOptions,
    ) -> Result<(SiteId, Schema, Hlc)> {
        let exists: bool = conn.query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'meldb_meta'",
            [],
            |r| r.get(0),
        )?;
        if !exists {
            conn.execute_batch(layout::INTERNAL_DDL)?;
            conn.execute_batch(super::conflicts::CONFLICT_DDL)?;
            conn.execute_batch(super::speculate::MUTATOR_DDL)?;
            conn.execute_batch(super::speculate::MUTATION_CLIENT_DDL)?;
            conn.execute_batch(super::bindings::BINDING_DDL)?;
            let local = options.site_id.unwrap_or_else(SiteId::random);
            set_meta(conn, "format", FORMAT)?;
            set_meta(conn, "site_id", local.as_bytes().to_vec())?;
            save_hlc(conn, Hlc(0))?;
            conn.execute(
                "INSERT INTO meldb_sites (idx, site) VALUES (1, ?1)",
                [local.as_bytes().as_slice()],
            )?;
            for table in &schema.tables {
                create_table(conn, table)?;
            }
            conn.execute_batch(&layout::create_views(schema))?;
            save_schema(conn, schema, schema)?;
            return Ok((local, schema.clone(), Hlc(0)));
        }
        // `format::Rules::prepare` checked the version before the
        // transaction began (and `finish` upgraded an older one); a
        // database without one is not meldb's.
        let _: i64 = require(path, "format", get_meta(conn, "format")?)?;
        conn.execute_batch(super::conflicts::CONFLICT_DDL)?;
        conn.execute_batch(super::speculate::MUTATOR_DDL)?;
        conn.execute_batch(super::speculate::MUTATION_CLIENT_DDL)?;
        conn.execute_batch(super::bindings::BINDING_DDL)?;
        let site_bytes: Vec<u8> = require(path, "site_id", get_meta(conn, "site_id")?)?;
        let local = <[u8; 16]>::try_from(site_bytes.as_slice())
            .map(SiteId::from_bytes)
            .map_err(|_| corrupt("meldb_meta", "site_id is not 16 bytes"))?;
        let hlc: i64 = require(path, "hlc", get_meta(conn, "hlc")?)?;
        let json: String = require(path, "schema", get_meta(conn, "schema")?)?;
        let mut physical: Schema = serde_json::from_str(&json)
            .map_err(|e| corrupt("meldb_meta", format!("stored schema does not parse: {e}")))?;
        let fingerprint: Vec<u8> = require(path, "fingerprint", get_meta(conn, "fingerprint")?)?;
        if fingerprint != schema.fingerprint() {
            upgrade(conn, path, &mut physical, schema)?;
        }
        Ok((local, physical, Hlc(hlc as u64)))
    }
}

impl Store {
    /// Gives this replica a new site id, keeping its data. Its earlier writes
    /// stay attributed to the old id, which it now treats like any other
    /// site's. Needed when a database was restored from a backup or copied
    /// to a second device: both would otherwise reuse the same dots, and
    /// peers would take new writes for ones they already have
    /// ([`crate::error::ApplyError::LostHistory`] reports this). After
    /// rotating, send each peer everything once (`changes_since` of an empty
    /// version vector), so rows whose newer versions were lost reach them.
    pub fn rotate_site_id(&mut self) -> Result<SiteId> {
        let tx = self.transaction()?;
        let store = &mut *tx.store;
        let old = store.local;
        let new = SiteId::random();
        store
            .replica
            .coverage
            .insert(old, 1, store.replica.last_seq);
        store.replica.coverage_dirty.insert(old);
        store.sites.index(&store.conn, new)?;
        set_meta(&store.conn, "site_id", new.as_bytes().to_vec())?;
        store.local = new;
        store.replica.last_seq = 0;
        tx.commit()?;
        Ok(new)
    }
}
