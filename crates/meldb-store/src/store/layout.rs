//! How meldb lays tables out in SQLite, and the SQL it runs against them.
//!
//! For a schema table `t`, meldb keeps one *base table* `t__meldb` with an
//! explicit `_meldb_rid INTEGER PRIMARY KEY` (stable across VACUUM), the key
//! columns (UNIQUE), the materialized value columns, `_meldb_cl` (causal
//! length; odd = live) and `_meldb_state` (the packed CRDT metadata: row
//! clock, timestamps, counter and set internals; register values are not
//! repeated there). Users query the view `t`, which shows the live rows with
//! the schema's columns in the schema's order. Keeping the metadata in the
//! same row costs one B-tree insert per write beyond plain SQLite's (the dot
//! index, an append), instead of one per column.
//!
//! Internal tables: `meldb_meta` (format, site id, clock, schema),
//! `meldb_sites` (site UUID ↔ small integer), `meldb_dots` (for each row and
//! each site in its clock, that site's latest dot: the index delta sync
//! walks), `meldb_coverage` (the version vector for remote sites) and
//! `meldb_held` (remote changes waiting for the local clock to catch up).
//!
//! The base table's column order is physical: columns added by a schema
//! upgrade are appended there, while the view follows the new schema.

use crate::schema::{Kind, Schema, Table};
use meldb_core::engine::TableShape;

/// Internal tables, created once per database.
pub const INTERNAL_DDL: &str = "
CREATE TABLE meldb_meta (key TEXT PRIMARY KEY, value ANY) STRICT;
CREATE TABLE meldb_sites (idx INTEGER PRIMARY KEY, site BLOB NOT NULL UNIQUE) STRICT;
CREATE TABLE meldb_dots (
    site INTEGER NOT NULL, seq INTEGER NOT NULL, tbl INTEGER NOT NULL, rid INTEGER NOT NULL,
    PRIMARY KEY (site, seq)) STRICT, WITHOUT ROWID;
CREATE TABLE meldb_coverage (
    site INTEGER NOT NULL, first INTEGER NOT NULL, last INTEGER NOT NULL,
    PRIMARY KEY (site, first)) STRICT, WITHOUT ROWID;
CREATE TABLE meldb_held (
    id INTEGER PRIMARY KEY, physical_ms INTEGER NOT NULL, frame BLOB NOT NULL) STRICT;
";

/// Quotes an SQL identifier. Schema validation allows only
/// `[A-Za-z_][A-Za-z0-9_]*`, so this is belt and braces.
pub fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The base table's name for schema table `table`.
pub fn base_name(table: &str) -> String {
    format!("{table}__meldb")
}

/// One table as stored: its physical column order and prepared SQL.
#[derive(Debug, Clone)]
pub struct TableLayout {
    /// Position in the physical schema; the id stored in `meldb_dots`.
    pub id: i64,
    /// The table with columns in physical order.
    pub table: Table,
    /// Physical indexes of the value (non-key) columns; a row state's
    /// column `j` is column `value_cols[j]`.
    pub value_cols: Vec<usize>,
    /// The kind of each value column.
    pub kinds: Vec<Kind>,
    /// How each value column's register merges (its policy's rule).
    pub rules: Vec<crate::crdt::RegisterRule>,
    /// SQL statements, built once.
    pub sql: TableSql,
}

/// The statements meldb runs against one base table.
#[derive(Debug, Clone)]
pub struct TableSql {
    /// Insert a row: keys, values, cl, state.
    pub insert: String,
    /// Select rid, cl, state, values by key.
    pub select_by_key: String,
    /// Select keys, cl, state, values of rids `?1..=?2`, in rid order.
    pub select_rid_range: String,
    /// Select keys, cl, state, values of every row in key order.
    pub select_all: String,
    /// Update values, cl, state by rid.
    pub update: String,
}

impl TableLayout {
    /// Builds the layout of physical table `id`.
    pub fn new(id: i64, table: Table) -> Self {
        let value_cols: Vec<usize> = table.value_columns().collect();
        let kinds = value_cols.iter().map(|&i| table.columns[i].kind).collect();
        let rules = value_cols
            .iter()
            .map(|&i| table.columns[i].policy.register_rule())
            .collect();
        let base = quote(&base_name(&table.name));
        let names = |idx: &[usize]| -> Vec<String> {
            idx.iter().map(|&i| quote(&table.columns[i].name)).collect()
        };
        let keys = names(&table.primary_key);
        let values = names(&value_cols);
        let all_cols: Vec<String> = keys
            .iter()
            .chain(&values)
            .cloned()
            .chain(["_meldb_cl".into(), "_meldb_state".into()])
            .collect();
        let placeholders = (1..=all_cols.len())
            .map(|i| format!("?{i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let key_match = keys
            .iter()
            .enumerate()
            .map(|(i, k)| format!("{k} = ?{}", i + 1))
            .collect::<Vec<_>>()
            .join(" AND ");
        let value_list = |prefix: &str| {
            values
                .iter()
                .map(|v| format!("{prefix}{v}"))
                .collect::<Vec<_>>()
                .join("")
        };
        let sets = values
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{v} = ?{}, ", i + 1))
            .collect::<String>();
        let n = values.len();
        let sql = TableSql {
            insert: format!(
                "INSERT INTO {base} ({}) VALUES ({placeholders})",
                all_cols.join(", ")
            ),
            select_by_key: format!(
                "SELECT _meldb_rid, _meldb_cl, _meldb_state{} FROM {base} WHERE {key_match}",
                value_list(", ")
            ),
            select_rid_range: format!(
                "SELECT {}, _meldb_cl, _meldb_state{} FROM {base} \
                 WHERE _meldb_rid BETWEEN ?1 AND ?2 ORDER BY _meldb_rid",
                keys.join(", "),
                value_list(", ")
            ),
            select_all: format!(
                "SELECT {}, _meldb_cl, _meldb_state{} FROM {base} ORDER BY {}",
                keys.join(", "),
                value_list(", "),
                keys.join(", ")
            ),
            update: format!(
                "UPDATE {base} SET {sets}_meldb_cl = ?{}, _meldb_state = ?{} WHERE _meldb_rid = ?{}",
                n + 1,
                n + 2,
                n + 3
            ),
        };
        TableLayout {
            id,
            table,
            value_cols,
            kinds,
            rules,
            sql,
        }
    }

    /// The table's name.
    pub fn name(&self) -> &str {
        &self.table.name
    }

    /// The value-column position (`j`) of the column named `name`.
    pub fn value_index(&self, name: &str) -> Option<usize> {
        self.shape().value_index(name)
    }

    /// The table as the engine's decisions see it (no SQL).
    pub fn shape(&self) -> TableShape<'_> {
        TableShape {
            table: &self.table,
            value_cols: &self.value_cols,
            kinds: &self.kinds,
        }
    }
}

/// `CREATE TABLE` for a new base table.
pub fn create_base_table(table: &Table) -> String {
    let mut cols = vec!["_meldb_rid INTEGER PRIMARY KEY".to_owned()];
    for (i, c) in table.columns.iter().enumerate() {
        let not_null = if table.is_key(i) { " NOT NULL" } else { "" };
        cols.push(format!("{} {}{not_null}", quote(&c.name), c.sql_type.sql()));
    }
    cols.push("_meldb_cl INTEGER NOT NULL".into());
    cols.push("_meldb_state BLOB NOT NULL".into());
    let keys: Vec<String> = table
        .primary_key
        .iter()
        .map(|&i| quote(&table.columns[i].name))
        .collect();
    cols.push(format!("UNIQUE ({})", keys.join(", ")));
    format!(
        "CREATE TABLE {} ({}) STRICT",
        quote(&base_name(&table.name)),
        cols.join(", ")
    )
}

/// `ALTER TABLE ... ADD COLUMN` for a column added by an upgrade. Base value
/// columns are nullable: deleted rows keep only their key.
pub fn add_column(table: &str, column: &crate::schema::Column) -> String {
    format!(
        "ALTER TABLE {} ADD COLUMN {} {}",
        quote(&base_name(table)),
        quote(&column.name),
        column.sql_type.sql()
    )
}

/// `DROP VIEW` + `CREATE VIEW` for every table of the (user's) schema.
pub fn create_views(schema: &Schema) -> String {
    let mut sql = String::new();
    for table in &schema.tables {
        let cols: Vec<String> = table.columns.iter().map(|c| quote(&c.name)).collect();
        sql.push_str(&format!(
            "DROP VIEW IF EXISTS {view};\nCREATE VIEW {view} AS SELECT {} FROM {} WHERE _meldb_cl % 2 = 1;\n",
            cols.join(", "),
            quote(&base_name(&table.name)),
            view = quote(&table.name),
        ));
    }
    sql
}
