//! Opening a database, creating one, writing rows and querying.
//!
//! Every write parses its arguments against the schema before the database
//! is opened, runs as one transaction, and prints nothing unless
//! `--verbose` asks for the row as it is afterwards.

use crate::{
    cli::{DbArgs, IncrementArgs, InitArgs, KeyArgs, QueryArgs, RowArgs, SetArgs, UpdateArgs},
    error::{in_file, CliError, Result},
    output::{cell, count, Rows},
    values,
};
use meldb::{Key, Schema, SiteId, Store, StoreOptions, Transaction, Value};
use std::{io::Write, path::Path};

/// Loads the schema named by `--schema` or `MELDB_SCHEMA`.
pub fn load_schema(db: &DbArgs) -> Result<Schema> {
    load_schema_at(db.schema_path())
}

/// Loads the schema a command names (`None`: it names none).
pub fn load_schema_at(path: Option<std::path::PathBuf>) -> Result<Schema> {
    Ok(Schema::load(path.ok_or(CliError::NoSchema)?)?)
}

/// Opens an existing database with the given schema.
pub fn open(db: &DbArgs) -> Result<Store> {
    let schema = load_schema(db)?;
    open_existing(&db.db, &schema)
}

fn open_existing(path: &Path, schema: &Schema) -> Result<Store> {
    if !path.exists() {
        return Err(CliError::NoDatabase {
            path: path.to_owned(),
        });
    }
    Store::open(path, schema).map_err(in_file(path))
}

/// `meldb init`.
pub fn init(args: &InitArgs, out: &mut dyn Write) -> Result<()> {
    let path = &args.db.db;
    let schema = load_schema(&args.db)?;
    let existed = std::fs::metadata(path).is_ok_and(|m| m.len() > 0);
    let mut options = StoreOptions::new();
    if let Some(id) = args.site_id {
        options = options.site_id(SiteId(id));
    }
    let store = options.open(path, &schema).map_err(in_file(path))?;
    if existed && args.site_id.is_some_and(|id| SiteId(id) != store.site_id()) {
        return Err(CliError::SiteIdMismatch {
            path: path.clone(),
            existing: store.site_id().to_string(),
        });
    }
    writeln!(
        out,
        "{} {} (schema {} v{}, site {})",
        if existed { "opened" } else { "created" },
        path.display(),
        schema.name,
        schema.version,
        store.site_id()
    )?;
    Ok(())
}

/// One row write, already parsed against the schema.
enum RowOp {
    Insert(Vec<(String, Value)>),
    Upsert(Vec<(String, Value)>),
    Update(Key, Vec<(String, Value)>),
    Increment(Key, String, i64),
    SetAdd(Key, String, String),
    SetRemove(Key, String, String),
    Delete(Key),
}

impl RowOp {
    fn run(&self, tx: &mut Transaction<'_>, table: &str) -> meldb::Result<()> {
        fn named(values: &[(String, Value)]) -> Vec<(&str, Value)> {
            values
                .iter()
                .map(|(n, v)| (n.as_str(), v.clone()))
                .collect()
        }
        match self {
            RowOp::Insert(values) => tx.insert(table, &named(values)),
            RowOp::Upsert(values) => tx.upsert(table, &named(values)),
            RowOp::Update(key, values) => tx.update(table, key, &named(values)),
            RowOp::Increment(key, column, amount) => tx.increment(table, key, column, *amount),
            RowOp::SetAdd(key, column, element) => tx.add_to_set(table, key, column, element),
            RowOp::SetRemove(key, column, element) => {
                tx.remove_from_set(table, key, column, element)
            }
            RowOp::Delete(key) => tx.delete(table, key),
        }
    }

    fn verb(&self) -> &'static str {
        match self {
            RowOp::Insert(_) => "inserted",
            RowOp::Upsert(_) => "upserted",
            RowOp::Update(..) => "updated",
            RowOp::Increment(..) => "incremented",
            RowOp::SetAdd(..) => "added to",
            RowOp::SetRemove(..) => "removed from",
            RowOp::Delete(_) => "deleted",
        }
    }

    fn key(&self, table: &meldb::Table) -> Option<Key> {
        match self {
            RowOp::Insert(values) | RowOp::Upsert(values) => values::key_of(table, values),
            RowOp::Update(key, _)
            | RowOp::Increment(key, ..)
            | RowOp::SetAdd(key, ..)
            | RowOp::SetRemove(key, ..)
            | RowOp::Delete(key) => Some(key.clone()),
        }
    }
}

/// Runs one write in its own transaction.
fn write(
    db: &DbArgs,
    schema: &Schema,
    table: &str,
    op: RowOp,
    verbose: bool,
    out: &mut dyn Write,
) -> Result<()> {
    let mut store = open_existing(&db.db, schema)?;
    store.write(|tx| op.run(tx, table))?;
    if !verbose {
        return Ok(());
    }
    let key = values::table(schema, table)
        .ok()
        .and_then(|t| op.key(t))
        .unwrap_or_else(|| Key(Vec::new()));
    let row = match &op {
        RowOp::Delete(_) => None,
        _ => store.get(table, &key)?,
    };
    match row {
        Some(columns) => {
            let shown: Vec<String> = columns
                .iter()
                .map(|(n, v)| format!("{n}={}", cell(v)))
                .collect();
            writeln!(out, "{} {table} {key}: {}", op.verb(), shown.join(", "))?;
        }
        None => writeln!(out, "{} {table} {key}", op.verb())?,
    }
    Ok(())
}

/// `meldb insert` and `meldb upsert`.
pub fn insert(args: &RowArgs, upsert: bool, verbose: bool, out: &mut dyn Write) -> Result<()> {
    let schema = load_schema(&args.db)?;
    let table = values::table(&schema, &args.table)?;
    let values = values::assignments(table, &args.values)?;
    let op = if upsert {
        RowOp::Upsert(values)
    } else {
        RowOp::Insert(values)
    };
    write(&args.db, &schema, &args.table, op, verbose, out)
}

/// Loads the schema and parses the table and key of a keyed command.
fn keyed(args: &KeyArgs) -> Result<(Schema, Key)> {
    let schema = load_schema(&args.db)?;
    let key = values::key(values::table(&schema, &args.table)?, &args.keys)?;
    Ok((schema, key))
}

/// `meldb update`.
pub fn update(args: &UpdateArgs, verbose: bool, out: &mut dyn Write) -> Result<()> {
    let (schema, key) = keyed(&args.row)?;
    let table = values::table(&schema, &args.row.table)?;
    let values = values::assignments(table, &args.values)?;
    let op = RowOp::Update(key, values);
    write(&args.row.db, &schema, &args.row.table, op, verbose, out)
}

/// `meldb increment`.
pub fn increment(args: &IncrementArgs, verbose: bool, out: &mut dyn Write) -> Result<()> {
    let (schema, key) = keyed(&args.row)?;
    let op = RowOp::Increment(key, args.column.clone(), args.amount);
    write(&args.row.db, &schema, &args.row.table, op, verbose, out)
}

/// `meldb set-add` and `meldb set-remove`.
pub fn set_op(args: &SetArgs, add: bool, verbose: bool, out: &mut dyn Write) -> Result<()> {
    let (schema, key) = keyed(&args.row)?;
    let (column, element) = (args.column.clone(), args.element.clone());
    let op = if add {
        RowOp::SetAdd(key, column, element)
    } else {
        RowOp::SetRemove(key, column, element)
    };
    write(&args.row.db, &schema, &args.row.table, op, verbose, out)
}

/// `meldb delete`.
pub fn delete(args: &KeyArgs, verbose: bool, out: &mut dyn Write) -> Result<()> {
    let (schema, key) = keyed(args)?;
    write(
        &args.db,
        &schema,
        &args.table,
        RowOp::Delete(key),
        verbose,
        out,
    )
}

/// `meldb query`: one statement, refused unless SQLite says it is read-only.
pub fn query(args: &QueryArgs, out: &mut dyn Write) -> Result<()> {
    let store = open(&args.db)?;
    let conn = store.conn();
    // A second guard behind the read-only check: this connection can no
    // longer change the file, whatever the statement turns out to do.
    conn.execute_batch("PRAGMA query_only = ON")?;
    let mut stmt = conn.prepare(&args.sql)?;
    // ATTACH, DETACH, BEGIN and the like count as read-only to SQLite but
    // change the connection (ATTACH even creates files): allow reads only.
    let reading = ["SELECT", "WITH", "VALUES", "EXPLAIN", "PRAGMA"]
        .contains(&first_keyword(&args.sql).as_str());
    if !reading || !stmt.readonly() {
        return Err(CliError::NotReadOnly);
    }
    let rows = Rows::collect(&mut stmt)?;
    if args.json {
        rows.write_json_lines(out)
    } else {
        if !rows.columns.is_empty() {
            rows.write_table(out, "")?;
        }
        writeln!(out, "({})", count(rows.rows.len(), "row"))?;
        Ok(())
    }
}

/// The statement's first word in upper case, after blanks and comments.
fn first_keyword(sql: &str) -> String {
    let mut rest = sql;
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix("--") {
            rest = after.split_once('\n').map_or("", |(_, r)| r);
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after.split_once("*/").map_or("", |(_, r)| r);
        } else {
            break;
        }
    }
    rest.chars()
        .take_while(|c| c.is_ascii_alphabetic())
        .collect::<String>()
        .to_ascii_uppercase()
}

#[cfg(test)]
mod tests {
    use super::first_keyword;

    #[test]
    fn first_keyword_skips_comments() {
        assert_eq!(first_keyword("  select 1"), "SELECT");
        assert_eq!(first_keyword("-- hi\n/* x */ With t AS (SELECT 1)"), "WITH");
        assert_eq!(first_keyword("ATTACH 'x' AS y"), "ATTACH");
        assert_eq!(first_keyword("/* open"), "");
    }
}
