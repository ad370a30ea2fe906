//! Reading schema files: TOML text in, a validated [`Schema`] out.
//!
//! A schema file names the schema, gives it a version, and declares each
//! table with its primary key and columns:
//!
//! ```toml
//! name = "inventory"      # schema name, required, a valid identifier
//! version = 1             # required, integer >= 1
//!
//! [[table]]
//! name = "item"
//! primary_key = ["sku"]   # one or more column names, in key order
//!
//! [[table.column]]
//! name = "sku"
//! type = "text"           # integer | real | text | blob (case-insensitive; int/float accepted as aliases)
//!
//! [[table.column]]
//! name = "stock"
//! type = "integer"
//! kind = "pn_counter"     # lww (default) | g_counter | pn_counter | or_set
//!
//! [[table.column]]
//! name = "note"
//! type = "text"
//! nullable = false        # lww columns only; default true for lww non-key columns
//! default = "n/a"         # lww columns only; a TOML value of the column's type
//! ```
//!
//! A table may also say `authority = true` (one replica decides its
//! conflicts) and `deferred_shows = "local" | "incoming" | "merged"`: the
//! row it shows while a conflict a resolver deferred waits for a person
//! (default: `local` with an authority, `merged` without one, the only
//! choice allowed there).
//!
//! Tables with an authority may declare row-level rules (see
//! `schema::RowRules` and `schema::ColumnRules`; validated in `rules`):
//!
//! ```toml
//! [[table]]
//! name = "orders"
//! primary_key = ["id"]
//! authority = true
//! frozen_when_final = "status"  # a forward column with absorbing states
//! delete_roles = ["admin"]      # or delete = "never"
//!
//! [[table.unique]]              # no two live rows share these values
//! columns = ["customer", "day"] # not the whole primary key
//!
//! [[table.column]]
//! name = "status"
//! type = "text"
//! order = ["pending < processing < shipped", "pending < cancelled"]
//! absorbing = ["shipped", "cancelled"]
//! transitions = { pending = ["processing", "cancelled"], processing = ["shipped"] }
//!
//! [[table.column]]
//! name = "updated_at"
//! type = "integer"
//! owner = "authority"           # lww, nullable or defaulted, not a key
//! ```
//!
//! The file is first read into private structs that refuse unknown fields
//! (a misspelt `nulable` is a [`SchemaError::Syntax`], not silently
//! ignored), then validated. The rules, each reported as the matching
//! [`SchemaError`] naming the file, table and column:
//!
//! - Names are identifiers: `[A-Za-z_][A-Za-z0-9_]*`, at most 64 characters.
//!   SQLite identifiers are case-insensitive, so names are compared
//!   case-insensitively for duplicates, and `primary_key` may spell a column
//!   in any case. Tables named `meldb_*` or `sqlite_*`, or containing
//!   `__meldb`, and columns named `_meldb*`, `rowid`, `oid` or `_rowid_` are
//!   reserved.
//! - Kind names are case-insensitive, like type names.
//! - Primary-key columns are `lww`, of type integer, text or blob, listed
//!   once, and are never NULL and never defaulted.
//! - Counters are integer and sets are text. Neither is ever NULL (a counter
//!   reads 0, a set reads `[]`), so neither takes `nullable = true` or a
//!   `default`.
//! - A `default` matches the column's type: an integer for integer; a float
//!   or an integer (converted) for real, never NaN; a string for text. TOML
//!   has no byte strings, so a blob default is an array of integers 0..=255
//!   (`default = [0xCA, 0xFE]`).

use super::rules::{self, RawColumnRules, RawRowRules};
use super::{
    Column, ColumnRules, DeferredShows, Kind, Policy, RowRules, Schema, SchemaError, SqlType, Table,
};
use crate::value::Value;
use serde::Deserialize;
use std::path::Path;

/// Parses `"pending < processing < shipped"` into its states.
fn parse_chain(text: &str) -> Result<Vec<String>, String> {
    let states: Vec<String> = text.split('<').map(|s| s.trim().to_owned()).collect();
    if states.iter().any(String::is_empty) {
        return Err(format!(
            "order {text:?} has an empty state (write states separated by '<')"
        ));
    }
    Ok(states)
}

/// The longest table or column name accepted.
const MAX_NAME_LEN: usize = 64;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchema {
    name: String,
    version: i64,
    #[serde(default)]
    table: Vec<RawTable>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTable {
    name: String,
    primary_key: Option<Vec<String>>,
    authority: Option<bool>,
    deferred_shows: Option<String>,
    frozen_when_final: Option<String>,
    delete: Option<String>,
    delete_roles: Option<Vec<String>>,
    #[serde(default)]
    unique: Vec<RawUnique>,
    #[serde(default)]
    column: Vec<RawColumn>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUnique {
    columns: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawColumn {
    name: String,
    #[serde(rename = "type")]
    sql_type: String,
    kind: Option<String>,
    nullable: Option<bool>,
    default: Option<toml::Value>,
    policy: Option<String>,
    order: Option<Vec<String>>,
    absorbing: Option<Vec<String>>,
    transitions: Option<std::collections::BTreeMap<String, Vec<String>>>,
    owner: Option<String>,
}

impl Schema {
    /// Parses and validates a schema file's text. `file` names the file in
    /// error messages.
    pub fn from_toml_str(text: &str, file: &str) -> Result<Schema, SchemaError> {
        let raw: RawSchema = toml::from_str(text).map_err(|e| SchemaError::Syntax {
            file: file.to_owned(),
            message: e.to_string(),
        })?;
        Validator { file }.schema(raw)
    }

    /// Reads, parses and validates the schema file at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Schema, SchemaError> {
        let path = path.as_ref();
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| SchemaError::Io {
            file: file.clone(),
            source,
        })?;
        Schema::from_toml_str(&text, &file)
    }
}

/// Turns raw file contents into a [`Schema`], checking every rule.
struct Validator<'a> {
    file: &'a str,
}

impl Validator<'_> {
    fn schema(&self, raw: RawSchema) -> Result<Schema, SchemaError> {
        if !is_identifier(&raw.name) {
            return Err(SchemaError::InvalidName {
                file: self.file.to_owned(),
                place: "schema".to_owned(),
                name: raw.name,
            });
        }
        let version = u32::try_from(raw.version)
            .ok()
            .filter(|v| *v >= 1)
            .ok_or_else(|| SchemaError::InvalidVersion {
                file: self.file.to_owned(),
                version: raw.version,
            })?;
        if raw.table.is_empty() {
            return Err(SchemaError::NoTables {
                file: self.file.to_owned(),
            });
        }
        let mut tables: Vec<Table> = Vec::with_capacity(raw.table.len());
        for raw_table in raw.table {
            let table = self.table(raw_table)?;
            if tables
                .iter()
                .any(|t| t.name.eq_ignore_ascii_case(&table.name))
            {
                return Err(SchemaError::DuplicateTable {
                    file: self.file.to_owned(),
                    table: table.name,
                });
            }
            tables.push(table);
        }
        Ok(Schema {
            name: raw.name,
            version,
            tables,
        })
    }

    fn table(&self, raw: RawTable) -> Result<Table, SchemaError> {
        let place = format!("table {:?}", raw.name);
        self.check_name(&raw.name, &place)?;
        if let Some(why) = reserved_table_name(&raw.name) {
            return Err(SchemaError::ReservedName {
                file: self.file.to_owned(),
                place,
                name: raw.name,
                why,
            });
        }

        // Kept beside each column: whether the file said `nullable = true`,
        // which the key check must refuse but `Column` cannot show.
        let mut columns: Vec<(Column, Option<bool>)> = Vec::with_capacity(raw.column.len());
        for raw_column in raw.column {
            let declared_nullable = raw_column.nullable;
            let column = self.column(&raw.name, raw_column)?;
            if columns
                .iter()
                .any(|(c, _)| c.name.eq_ignore_ascii_case(&column.name))
            {
                return Err(SchemaError::DuplicateColumn {
                    file: self.file.to_owned(),
                    table: raw.name,
                    column: column.name,
                });
            }
            columns.push((column, declared_nullable));
        }

        let key_names = match raw.primary_key {
            Some(names) if !names.is_empty() => names,
            _ => {
                return Err(SchemaError::MissingPrimaryKey {
                    file: self.file.to_owned(),
                    table: raw.name,
                })
            }
        };
        let mut primary_key = Vec::with_capacity(key_names.len());
        for key_name in key_names {
            let Some(index) = columns
                .iter()
                .position(|(c, _)| c.name.eq_ignore_ascii_case(&key_name))
            else {
                return Err(SchemaError::UnknownKeyColumn {
                    file: self.file.to_owned(),
                    table: raw.name,
                    column: key_name,
                });
            };
            let (column, declared_nullable) = &mut columns[index];
            let problem = if primary_key.contains(&index) {
                Some("is listed twice in primary_key".to_owned())
            } else if column.kind != Kind::Lww {
                Some(format!("must be lww, not {}", column.kind))
            } else if column.sql_type == SqlType::Real {
                Some("must be integer, text or blob, not real".to_owned())
            } else if *declared_nullable == Some(true) {
                Some("cannot be nullable".to_owned())
            } else if column.default.is_some() {
                Some("cannot have a default".to_owned())
            } else if column.policy != Policy::LastWriteWins {
                Some("cannot have a policy".to_owned())
            } else if column.rules.authority_owned {
                Some(
                    "cannot be owned by the authority (keys are written by whoever inserts)"
                        .to_owned(),
                )
            } else {
                None
            };
            if let Some(problem) = problem {
                return Err(SchemaError::BadKeyColumn {
                    file: self.file.to_owned(),
                    table: raw.name,
                    column: column.name.clone(),
                    problem,
                });
            }
            column.nullable = false;
            primary_key.push(index);
        }

        let authority = raw.authority.unwrap_or(false);
        if !authority {
            let needs = columns.iter().map(|(c, _)| c).find(|c| {
                matches!(
                    c.policy,
                    Policy::AuthorityWins | Policy::Conditional | Policy::ConditionalColumn
                )
            });
            if let Some(c) = needs {
                return Err(SchemaError::BadPolicy {
                    file: self.file.to_owned(),
                    table: raw.name.clone(),
                    column: c.name.clone(),
                    problem: format!(
                        "policy {:?} needs an authority to decide; add `authority = true` to the table",
                        c.policy.name()
                    ),
                });
            }
        }
        let deferred_shows = raw
            .deferred_shows
            .map(|name| self.deferred_shows(&raw.name, authority, &name))
            .transpose()?;
        let mut table = Table {
            name: raw.name,
            columns: columns.into_iter().map(|(c, _)| c).collect(),
            primary_key,
            authority,
            deferred_shows,
            rules: RowRules::default(),
        };
        let raw_rules = RawRowRules {
            frozen_when_final: raw.frozen_when_final,
            delete: raw.delete,
            delete_roles: raw.delete_roles,
            unique: raw.unique.into_iter().map(|u| u.columns).collect(),
        };
        table.rules = rules::table_rules(self.file, &table, raw_rules)?;
        Ok(table)
    }

    /// A table's `deferred_shows`: a known choice, and on a table without
    /// an authority only the one replicas agree on.
    fn deferred_shows(
        &self,
        table: &str,
        authority: bool,
        name: &str,
    ) -> Result<DeferredShows, SchemaError> {
        let bad = |problem: String| SchemaError::BadDeferredShows {
            file: self.file.to_owned(),
            table: table.to_owned(),
            problem,
        };
        let shows = DeferredShows::from_name(name).ok_or_else(|| {
            bad(format!(
                "unknown choice {name:?} (expected local, incoming or merged)"
            ))
        })?;
        if !authority && shows != DeferredShows::Merged {
            return Err(bad(format!(
                "{:?} needs an authority: without one, every replica that finds the \
                 conflict would show its own side and correct the others', so only \
                 \"merged\" converges; add `authority = true` to the table or show \"merged\"",
                shows.name()
            )));
        }
        Ok(shows)
    }

    fn column(&self, table: &str, raw: RawColumn) -> Result<Column, SchemaError> {
        let place = format!("table {table:?}, column {:?}", raw.name);
        self.check_name(&raw.name, &place)?;
        if let Some(why) = reserved_column_name(&raw.name) {
            return Err(SchemaError::ReservedName {
                file: self.file.to_owned(),
                place,
                name: raw.name,
                why,
            });
        }
        let Some(sql_type) = SqlType::from_name(&raw.sql_type) else {
            return Err(SchemaError::UnknownType {
                file: self.file.to_owned(),
                table: table.to_owned(),
                column: raw.name,
                sql_type: raw.sql_type,
            });
        };
        let kind = match raw.kind {
            None => Kind::Lww,
            Some(name) => match Kind::from_name(&name.to_ascii_lowercase()) {
                Some(kind) => kind,
                None => {
                    return Err(SchemaError::UnknownKind {
                        file: self.file.to_owned(),
                        table: table.to_owned(),
                        column: raw.name,
                        kind: name,
                    })
                }
            },
        };

        let mismatch = |problem: String| SchemaError::KindMismatch {
            file: self.file.to_owned(),
            table: table.to_owned(),
            column: raw.name.clone(),
            problem,
        };
        if let Some(required) = kind.fixed_type() {
            if sql_type != required {
                return Err(mismatch(format!(
                    "{} {kind} must be {required}, not {sql_type}",
                    kind.article()
                )));
            }
            let reads = match kind.unset(None) {
                Value::Text(text) => text,
                other => other.to_string(),
            };
            if raw.nullable == Some(true) {
                return Err(mismatch(format!(
                    "{} {kind} is never NULL (it reads {reads}), so it cannot be nullable",
                    kind.article()
                )));
            }
            if raw.default.is_some() {
                return Err(mismatch(format!(
                    "{} {kind} takes no default (it reads {reads} until written)",
                    kind.article()
                )));
            }
        }

        let default = match raw.default {
            None => None,
            Some(value) => match default_value(sql_type, &value) {
                Some(v) => Some(v),
                None => {
                    return Err(SchemaError::BadDefault {
                        file: self.file.to_owned(),
                        table: table.to_owned(),
                        column: raw.name,
                        value: value.to_string(),
                        sql_type: sql_type.to_string(),
                    })
                }
            },
        };
        let policy = self.policy(
            table,
            &raw.name,
            kind,
            sql_type,
            raw.policy,
            raw.order,
            raw.absorbing,
        )?;
        let mut column = Column {
            name: raw.name,
            sql_type,
            kind,
            // Only lww columns may hold NULL; key columns are set to false
            // by the table once the key is known.
            nullable: kind == Kind::Lww && raw.nullable.unwrap_or(true),
            default,
            policy,
            rules: ColumnRules::default(),
        };
        let raw_rules = RawColumnRules {
            transitions: raw.transitions,
            owner: raw.owner,
        };
        column.rules = rules::column_rules(self.file, table, &column, raw_rules)?;
        Ok(column)
    }

    #[allow(clippy::too_many_arguments)]
    fn policy(
        &self,
        table: &str,
        column: &str,
        kind: Kind,
        sql_type: SqlType,
        name: Option<String>,
        order: Option<Vec<String>>,
        absorbing: Option<Vec<String>>,
    ) -> Result<Policy, SchemaError> {
        let bad = |problem: String| SchemaError::BadPolicy {
            file: self.file.to_owned(),
            table: table.to_owned(),
            column: column.to_owned(),
            problem,
        };
        let states = order.is_some() || absorbing.is_some();
        let name = match (name, states) {
            (None, false) => return Ok(Policy::LastWriteWins),
            (None, true) => "forward".to_owned(),
            (Some(n), _) => n.to_ascii_lowercase(),
        };
        if kind != Kind::Lww {
            return Err(bad(format!("policies apply to lww columns, not {kind}")));
        }
        let policy = match name.as_str() {
            "last_write_wins" => Policy::LastWriteWins,
            "first_write_wins" => Policy::FirstWriteWins,
            "immutable" => Policy::Immutable,
            "authority_wins" => Policy::AuthorityWins,
            "conditional" => Policy::Conditional,
            "conditional_column" => Policy::ConditionalColumn,
            "forward" => {
                if sql_type != SqlType::Text {
                    return Err(bad(format!("a state column must be text, not {sql_type}")));
                }
                let chains = order
                    .unwrap_or_default()
                    .iter()
                    .map(|chain| parse_chain(chain))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(bad)?;
                let absorbing = absorbing.unwrap_or_default();
                if chains.is_empty() && absorbing.is_empty() {
                    return Err(bad(
                        "policy \"forward\" needs `order` (e.g. [\"pending < shipped\"]) or `absorbing`"
                            .into(),
                    ));
                }
                return crate::crdt::StateOrder::new(chains, absorbing)
                    .map(Policy::Forward)
                    .map_err(bad);
            }
            other => {
                return Err(bad(format!(
                    "unknown policy {other:?} (expected last_write_wins, first_write_wins, \
                     immutable, authority_wins, conditional, conditional_column or forward)"
                )))
            }
        };
        if states {
            return Err(bad(format!(
                "`order` and `absorbing` belong to policy \"forward\", not {name:?}"
            )));
        }
        Ok(policy)
    }

    fn check_name(&self, name: &str, place: &str) -> Result<(), SchemaError> {
        if is_identifier(name) {
            Ok(())
        } else {
            Err(SchemaError::InvalidName {
                file: self.file.to_owned(),
                place: place.to_owned(),
                name: name.to_owned(),
            })
        }
    }
}

/// Whether `name` matches `^[A-Za-z_][A-Za-z0-9_]*$` and is at most
/// [`MAX_NAME_LEN`] characters long.
fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    name.len() <= MAX_NAME_LEN
        && (first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn reserved_table_name(name: &str) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase();
    if lower.starts_with("meldb_") {
        Some("tables starting with meldb_ hold meldb's own state")
    } else if lower.starts_with("sqlite_") {
        Some("tables starting with sqlite_ belong to SQLite")
    } else if lower.contains("__meldb") {
        Some("names containing __meldb are meldb's per-table companions")
    } else {
        None
    }
}

fn reserved_column_name(name: &str) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase();
    if lower.starts_with("_meldb") {
        Some("columns starting with _meldb hold meldb's bookkeeping")
    } else if matches!(lower.as_str(), "rowid" | "oid" | "_rowid_") {
        Some("rowid, oid and _rowid_ name SQLite's implicit row id")
    } else {
        None
    }
}

/// Converts a TOML default into a value of `sql_type`, or `None` if it is
/// not one.
fn default_value(sql_type: SqlType, value: &toml::Value) -> Option<Value> {
    match (sql_type, value) {
        (SqlType::Integer, toml::Value::Integer(i)) => Some(Value::Integer(*i)),
        (SqlType::Real, toml::Value::Float(f)) if !f.is_nan() => Some(Value::Real(*f)),
        // An integer default for a real column means the nearest f64; large
        // ones round, as SQLite rounds them.
        (SqlType::Real, toml::Value::Integer(i)) => Some(Value::Real(*i as f64)),
        (SqlType::Text, toml::Value::String(s)) => Some(Value::Text(s.clone())),
        (SqlType::Blob, toml::Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                toml::Value::Integer(i) => u8::try_from(*i).ok(),
                _ => None,
            })
            .collect::<Option<Vec<u8>>>()
            .map(Value::Blob),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "shop.toml";

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    /// A `[[table.column]]` entry; `extra` holds further `key = value` lines.
    fn col(name: &str, sql_type: &str, extra: &str) -> String {
        format!("[[table.column]]\nname = \"{name}\"\ntype = \"{sql_type}\"\n{extra}\n")
    }

    /// A schema "shop" v1 with one table named `table`, keyed on `key` (a
    /// TOML array, or "" for none).
    fn one_table(table: &str, key: &str, columns: &[String]) -> String {
        let key = if key.is_empty() {
            String::new()
        } else {
            format!("primary_key = {key}\n")
        };
        format!(
            "name = \"shop\"\nversion = 1\n\n[[table]]\nname = \"{table}\"\n{key}\n{}",
            columns.concat()
        )
    }

    /// A table "item" keyed on `sku`, with `column` added.
    fn item_with(column: String) -> String {
        one_table("item", r#"["sku"]"#, &[col("sku", "text", ""), column])
    }

    /// Parses `text`, which must fail, and checks that the message names the
    /// file and every one of `needles`.
    fn fail(text: &str, needles: &[&str]) -> SchemaError {
        let err = match Schema::from_toml_str(text, FILE) {
            Ok(schema) => panic!("accepted {schema:?} from\n{text}"),
            Err(err) => err,
        };
        let message = err.to_string();
        for needle in std::iter::once(&FILE).chain(needles) {
            assert!(
                message.contains(needle),
                "{message:?} does not mention {needle:?}"
            );
        }
        err
    }

    fn load_shipped(name: &str) -> Result<Schema, SchemaError> {
        Schema::load(format!(
            "{}/../../schema/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
    }

    /// `(name, type, kind, nullable, default)` for each column of `table`.
    fn shape(table: &Table) -> Vec<(&str, SqlType, Kind, bool, Option<Value>)> {
        table
            .columns
            .iter()
            .map(|c| {
                (
                    c.name.as_str(),
                    c.sql_type,
                    c.kind,
                    c.nullable,
                    c.default.clone(),
                )
            })
            .collect()
    }

    fn key(table: &Table) -> Vec<&str> {
        table
            .primary_key
            .iter()
            .map(|&i| table.columns[i].name.as_str())
            .collect()
    }

    #[test]
    fn todo_schema_loads() -> TestResult {
        let schema = Schema::load(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../schema/todo.toml"
        ))?;
        assert_eq!((schema.name.as_str(), schema.version), ("todo", 1));
        let todo = schema.table("todo").ok_or("no table todo")?;
        assert_eq!(key(todo), ["id"]);
        use {Kind::*, SqlType::*};
        assert_eq!(
            shape(todo),
            [
                ("id", Text, Lww, false, None),
                ("title", Text, Lww, false, Some(Value::from(""))),
                ("done", Integer, Lww, true, Some(Value::Integer(0))),
                ("urgent", Integer, Lww, true, Some(Value::Integer(0))),
                ("note", Text, Lww, true, None),
                ("likes", Integer, GCounter, false, None),
                ("tags", Text, OrSet, false, None),
            ]
        );
        let list = schema.table("list").ok_or("no table list")?;
        assert_eq!(key(list), ["id"]);
        assert_eq!(
            shape(list),
            [
                ("id", Text, Lww, false, None),
                ("name", Text, Lww, false, Some(Value::from(""))),
                ("members", Text, OrSet, false, None),
            ]
        );
        Ok(())
    }

    #[test]
    fn inventory_schema_loads() -> TestResult {
        let schema = Schema::load(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../schema/inventory.toml"
        ))?;
        assert_eq!((schema.name.as_str(), schema.version), ("inventory", 1));
        use {Kind::*, SqlType::*};
        let item = schema.table("item").ok_or("no table item")?;
        assert_eq!(key(item), ["sku"]);
        assert_eq!(
            shape(item),
            [
                ("sku", Text, Lww, false, None),
                ("name", Text, Lww, false, Some(Value::from(""))),
                ("price", Real, Lww, true, Some(Value::Real(0.0))),
                ("stock", Integer, PnCounter, false, None),
                ("sold", Integer, GCounter, false, None),
                ("tags", Text, OrSet, false, None),
            ]
        );
        let location = schema.table("location").ok_or("no table location")?;
        assert_eq!(key(location), ["warehouse", "sku"]);
        assert_eq!(
            shape(location),
            [
                ("warehouse", Text, Lww, false, None),
                ("sku", Text, Lww, false, None),
                ("shelf", Text, Lww, true, None),
                ("quantity", Integer, PnCounter, false, None),
            ]
        );
        Ok(())
    }

    #[test]
    fn booking_schema_loads() -> TestResult {
        let schema = Schema::load(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../schema/booking.toml"
        ))?;
        assert_eq!((schema.name.as_str(), schema.version), ("booking", 1));
        use {Kind::*, SqlType::*};
        let seat = schema.table("seat").ok_or("no table seat")?;
        assert_eq!(key(seat), ["show", "seat"]);
        assert_eq!(
            shape(seat),
            [
                ("show", Text, Lww, false, None),
                ("seat", Text, Lww, false, None),
                ("status", Text, Lww, false, Some(Value::from("free"))),
                ("booked_by", Text, Lww, true, None),
                ("hold_expires", Integer, Lww, true, None),
            ]
        );
        let booking = schema.table("booking").ok_or("no table booking")?;
        assert_eq!(key(booking), ["id"]);
        assert_eq!(
            shape(booking),
            [
                ("id", Text, Lww, false, None),
                ("show", Text, Lww, false, None),
                ("seat", Text, Lww, false, None),
                ("customer", Text, Lww, false, None),
                ("status", Text, Lww, false, Some(Value::from("active"))),
                ("expires_at", Integer, Lww, true, None),
                ("notes", Text, Lww, true, None),
                ("guests", Text, OrSet, false, None),
            ]
        );
        Ok(())
    }

    /// `item` with `lines` added to its `[[table]]` (before its columns).
    fn item_saying(lines: &str) -> String {
        item_with(col("note", "text", "")).replace(
            "primary_key = [\"sku\"]\n",
            &format!("primary_key = [\"sku\"]\n{lines}\n"),
        )
    }

    #[test]
    fn deferred_shows_defaults_by_authority_and_parses_each_choice() -> TestResult {
        let plain = Schema::from_toml_str(&item_saying(""), FILE)?;
        let table = plain.table("item").ok_or("no item")?;
        assert_eq!(table.deferred_shows, None);
        assert_eq!(table.shown_while_deferred(), DeferredShows::Merged);
        let guarded = Schema::from_toml_str(&item_saying("authority = true"), FILE)?;
        let table = guarded.table("item").ok_or("no item")?;
        assert_eq!(table.shown_while_deferred(), DeferredShows::Local);
        for shows in DeferredShows::ALL {
            let text = format!(
                "authority = true\ndeferred_shows = \"{}\"",
                shows.name().to_uppercase()
            );
            let schema = Schema::from_toml_str(&item_saying(&text), FILE)?;
            let table = schema.table("item").ok_or("no item")?;
            assert_eq!(table.deferred_shows, Some(shows));
            assert_eq!(table.shown_while_deferred(), shows);
        }
        // Merged is what a leaderless table shows anyway; saying so is fine.
        let said = Schema::from_toml_str(&item_saying("deferred_shows = \"merged\""), FILE)?;
        assert_eq!(
            said.table("item").map(Table::shown_while_deferred),
            Some(DeferredShows::Merged)
        );
        Ok(())
    }

    #[test]
    fn deferred_shows_refuses_unknown_choices_and_one_side_without_an_authority() {
        let err = fail(
            &item_saying("authority = true\ndeferred_shows = \"theirs\""),
            &[
                "item",
                "deferred_shows",
                "\"theirs\"",
                "local, incoming or merged",
            ],
        );
        assert!(
            matches!(err, SchemaError::BadDeferredShows { .. }),
            "{err:?}"
        );
        for side in ["local", "incoming"] {
            let err = fail(
                &item_saying(&format!("deferred_shows = \"{side}\"")),
                &["item", side, "needs an authority", "authority = true"],
            );
            assert!(
                matches!(err, SchemaError::BadDeferredShows { .. }),
                "{err:?}"
            );
        }
    }

    #[test]
    fn deferred_shows_is_hashed_only_when_said() -> Result<(), SchemaError> {
        // The fingerprint stored in the golden fixtures (written before the
        // key existed) is still the shipped schema's.
        let stored = "848a4613eb9b0e759baf8d387cb5cb579447b054c394a88649da4442bd16b5dc";
        let hex: String = load_shipped("inventory.toml")?
            .fingerprint()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(hex, stored);
        let plain = Schema::from_toml_str(&item_saying("authority = true"), FILE)?;
        let mut fingerprints = vec![plain.fingerprint()];
        for shows in DeferredShows::ALL {
            let text = format!("authority = true\ndeferred_shows = \"{shows}\"");
            let said = Schema::from_toml_str(&item_saying(&text), FILE)?.fingerprint();
            assert!(!fingerprints.contains(&said), "{shows}");
            fingerprints.push(said);
        }
        Ok(())
    }

    #[test]
    fn shipped_schemas_have_distinct_fingerprints() -> Result<(), SchemaError> {
        let todo = load_shipped("todo.toml")?.fingerprint();
        let inventory = load_shipped("inventory.toml")?.fingerprint();
        let booking = load_shipped("booking.toml")?.fingerprint();
        assert_ne!(todo, inventory);
        assert_ne!(inventory, booking);
        assert_ne!(todo, booking);
        Ok(())
    }

    #[test]
    fn module_doc_example_parses() -> Result<(), SchemaError> {
        let text = r#"
            name = "inventory"
            version = 1

            [[table]]
            name = "item"
            primary_key = ["sku"]

            [[table.column]]
            name = "sku"
            type = "text"

            [[table.column]]
            name = "stock"
            type = "integer"
            kind = "pn_counter"

            [[table.column]]
            name = "note"
            type = "text"
            nullable = false
            default = "n/a"
        "#;
        let schema = Schema::from_toml_str(text, FILE)?;
        let item = &schema.tables[0];
        assert_eq!(item.columns[1].kind, Kind::PnCounter);
        assert!(!item.columns[1].nullable);
        assert_eq!(
            (item.columns[2].nullable, item.columns[2].default.clone()),
            (false, Some(Value::from("n/a")))
        );
        Ok(())
    }

    #[test]
    fn lenient_spellings_are_accepted() -> Result<(), SchemaError> {
        let text = one_table(
            "Item",
            r#"["SKU", "Bin"]"#,
            &[
                col("sku", "TEXT", ""),
                col("bin", "Int", ""),
                col("weight", "float", "default = 2"),
                col("hits", "INTEGER", "kind = \"G_Counter\"\nnullable = false"),
                col("photo", "blob", "default = [0, 0xff, 7]"),
                col("empty", "blob", "default = []"),
            ],
        );
        let schema = Schema::from_toml_str(&text, FILE)?;
        let table = &schema.tables[0];
        assert_eq!(table.primary_key, [0, 1]);
        assert_eq!(table.columns[1].sql_type, SqlType::Integer);
        assert_eq!(table.columns[2].default, Some(Value::Real(2.0)));
        assert_eq!(table.columns[3].kind, Kind::GCounter);
        assert_eq!(table.columns[4].default, Some(Value::Blob(vec![0, 255, 7])));
        assert_eq!(table.columns[5].default, Some(Value::Blob(Vec::new())));
        Ok(())
    }

    #[test]
    fn key_column_declared_not_null_is_fine() -> Result<(), SchemaError> {
        let text = one_table(
            "item",
            r#"["sku"]"#,
            &[col("sku", "text", "nullable = false")],
        );
        let schema = Schema::from_toml_str(&text, FILE)?;
        assert!(!schema.tables[0].columns[0].nullable);
        Ok(())
    }

    #[test]
    fn real_default_accepts_infinity() -> Result<(), SchemaError> {
        let schema = Schema::from_toml_str(&item_with(col("cap", "real", "default = inf")), FILE)?;
        assert_eq!(
            schema.tables[0].columns[1].default,
            Some(Value::Real(f64::INFINITY))
        );
        Ok(())
    }

    #[test]
    fn load_missing_file_is_io_error() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../schema/no-such-file.toml"
        );
        let err = Schema::load(path);
        assert!(
            matches!(&err, Err(SchemaError::Io { file, .. }) if file == path),
            "{err:?}"
        );
    }

    // One test per mistake.

    #[test]
    fn toml_syntax_error() {
        let err = fail("name = \"shop\"\nversion = \n", &["line 2"]);
        assert!(matches!(err, SchemaError::Syntax { .. }), "{err:?}");
    }

    #[test]
    fn unknown_field() {
        let err = fail(
            &item_with(col("note", "text", "nulable = true")),
            &["nulable"],
        );
        assert!(matches!(err, SchemaError::Syntax { .. }), "{err:?}");
        let err = fail(
            &format!("colour = 1\n{}", item_with(String::new())),
            &["colour"],
        );
        assert!(matches!(err, SchemaError::Syntax { .. }), "{err:?}");
    }

    #[test]
    fn wrong_field_type() {
        let err = fail(
            &item_with(col("note", "text", "nullable = \"yes\"")),
            &["line"],
        );
        assert!(matches!(err, SchemaError::Syntax { .. }), "{err:?}");
    }

    #[test]
    fn missing_required_field() {
        let err = fail("version = 1\n", &["name"]);
        assert!(matches!(err, SchemaError::Syntax { .. }), "{err:?}");
        let text = item_with(String::new()).replace("version = 1\n", "");
        let err = fail(&text, &["version"]);
        assert!(matches!(err, SchemaError::Syntax { .. }), "{err:?}");
        let err = fail(
            &item_with("[[table.column]]\nname = \"x\"\n".to_owned()),
            &["type"],
        );
        assert!(matches!(err, SchemaError::Syntax { .. }), "{err:?}");
    }

    #[test]
    fn no_tables() {
        let err = fail("name = \"shop\"\nversion = 1\n", &["no table"]);
        assert!(matches!(err, SchemaError::NoTables { .. }), "{err:?}");
        let err = fail("name = \"shop\"\nversion = 1\ntable = []\n", &[]);
        assert!(matches!(err, SchemaError::NoTables { .. }), "{err:?}");
    }

    #[test]
    fn invalid_version() {
        for version in ["0", "-3", "4294967296"] {
            let text =
                item_with(String::new()).replace("version = 1", &format!("version = {version}"));
            let err = fail(&text, &[version]);
            assert!(matches!(err, SchemaError::InvalidVersion { .. }), "{err:?}");
        }
    }

    #[test]
    fn invalid_schema_name() {
        let text = item_with(String::new()).replace("\"shop\"", "\"my shop\"");
        let err = fail(&text, &["schema", "my shop"]);
        assert!(matches!(err, SchemaError::InvalidName { .. }), "{err:?}");
    }

    #[test]
    fn invalid_table_name() {
        for name in ["2items", "item-list", "", "ítem"] {
            let text = one_table(name, r#"["sku"]"#, &[col("sku", "text", "")]);
            let err = fail(&text, &["table", &format!("{name:?}")]);
            assert!(matches!(err, SchemaError::InvalidName { .. }), "{err:?}");
        }
    }

    #[test]
    fn invalid_column_name() {
        let long = "c".repeat(65);
        for name in ["unit price", "9lives", long.as_str()] {
            let err = fail(&item_with(col(name, "text", "")), &["item", name]);
            assert!(matches!(err, SchemaError::InvalidName { .. }), "{err:?}");
        }
        // 64 characters is the limit, not past it.
        let ok = "c".repeat(64);
        assert!(Schema::from_toml_str(&item_with(col(&ok, "text", "")), FILE).is_ok());
    }

    #[test]
    fn reserved_table_name() {
        for name in [
            "meldb_sites",
            "MELDB_x",
            "sqlite_stat1",
            "Sqlite_Master",
            "item__meldb_log",
            "x__MELDB",
        ] {
            let text = one_table(name, r#"["sku"]"#, &[col("sku", "text", "")]);
            let err = fail(&text, &["table", name, "reserved"]);
            assert!(matches!(err, SchemaError::ReservedName { .. }), "{err:?}");
        }
    }

    #[test]
    fn reserved_column_name() {
        for name in [
            "_meldb_clock",
            "_MELDBx",
            "rowid",
            "ROWID",
            "oid",
            "_rowid_",
        ] {
            let err = fail(
                &item_with(col(name, "integer", "")),
                &["item", name, "reserved"],
            );
            assert!(matches!(err, SchemaError::ReservedName { .. }), "{err:?}");
        }
    }

    #[test]
    fn duplicate_table() {
        let item = one_table("item", r#"["sku"]"#, &[col("sku", "text", "")]);
        let text = format!(
            "{item}\n[[table]]\nname = \"ITEM\"\nprimary_key = [\"sku\"]\n{}",
            col("sku", "text", "")
        );
        let err = fail(&text, &["ITEM", "twice"]);
        assert!(matches!(err, SchemaError::DuplicateTable { .. }), "{err:?}");
    }

    #[test]
    fn duplicate_column() {
        let err = fail(
            &item_with(col("SKU", "integer", "")),
            &["item", "SKU", "twice"],
        );
        assert!(
            matches!(err, SchemaError::DuplicateColumn { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn missing_primary_key() {
        let err = fail(&one_table("item", "", &[col("sku", "text", "")]), &["item"]);
        assert!(
            matches!(err, SchemaError::MissingPrimaryKey { .. }),
            "{err:?}"
        );
        let err = fail(
            &one_table("item", "[]", &[col("sku", "text", "")]),
            &["item"],
        );
        assert!(
            matches!(err, SchemaError::MissingPrimaryKey { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn unknown_key_column() {
        let text = one_table("item", r#"["sku", "bin"]"#, &[col("sku", "text", "")]);
        let err = fail(&text, &["item", "bin"]);
        assert!(
            matches!(err, SchemaError::UnknownKeyColumn { .. }),
            "{err:?}"
        );
    }

    fn bad_key(key: &str, columns: &[String], needles: &[&str]) {
        let err = fail(&one_table("item", key, columns), needles);
        assert!(matches!(err, SchemaError::BadKeyColumn { .. }), "{err:?}");
    }

    #[test]
    fn key_column_listed_twice() {
        bad_key(
            r#"["sku", "Sku"]"#,
            &[col("sku", "text", "")],
            &["item", "sku", "twice"],
        );
    }

    #[test]
    fn key_column_not_lww() {
        let counter = col("n", "integer", "kind = \"pn_counter\"");
        bad_key(r#"["n"]"#, &[counter], &["item", "\"n\"", "pn_counter"]);
    }

    #[test]
    fn key_column_real() {
        bad_key(
            r#"["w"]"#,
            &[col("w", "real", "")],
            &["item", "\"w\"", "real"],
        );
    }

    #[test]
    fn key_column_nullable() {
        let sku = col("sku", "text", "nullable = true");
        bad_key(r#"["sku"]"#, &[sku], &["item", "sku", "nullable"]);
    }

    #[test]
    fn key_column_default() {
        let sku = col("sku", "text", "default = \"x\"");
        bad_key(r#"["sku"]"#, &[sku], &["item", "sku", "default"]);
    }

    #[test]
    fn unknown_kind() {
        let err = fail(
            &item_with(col("n", "integer", "kind = \"counter\"")),
            &["item", "\"n\"", "counter"],
        );
        assert!(matches!(err, SchemaError::UnknownKind { .. }), "{err:?}");
    }

    #[test]
    fn unknown_type() {
        let err = fail(
            &item_with(col("at", "datetime", "")),
            &["item", "\"at\"", "datetime"],
        );
        assert!(matches!(err, SchemaError::UnknownType { .. }), "{err:?}");
    }

    fn mismatch(column: String, needles: &[&str]) {
        let err = fail(&item_with(column), needles);
        assert!(matches!(err, SchemaError::KindMismatch { .. }), "{err:?}");
    }

    #[test]
    fn counter_must_be_integer() {
        mismatch(
            col("likes", "text", "kind = \"g_counter\""),
            &["item", "likes", "a g_counter must be integer, not text"],
        );
        mismatch(
            col("stock", "real", "kind = \"pn_counter\""),
            &["item", "stock", "a pn_counter must be integer, not real"],
        );
    }

    #[test]
    fn set_must_be_text() {
        mismatch(
            col("tags", "integer", "kind = \"or_set\""),
            &["item", "tags", "an or_set must be text, not integer"],
        );
    }

    #[test]
    fn counter_and_set_cannot_be_nullable() {
        mismatch(
            col("likes", "integer", "kind = \"g_counter\"\nnullable = true"),
            &["item", "likes", "NULL"],
        );
        mismatch(
            col("tags", "text", "kind = \"or_set\"\nnullable = true"),
            &["item", "tags", "[]"],
        );
    }

    #[test]
    fn counter_and_set_take_no_default() {
        mismatch(
            col("stock", "integer", "kind = \"pn_counter\"\ndefault = 5"),
            &["item", "stock", "default"],
        );
        mismatch(
            col("tags", "text", "kind = \"or_set\"\ndefault = \"a\""),
            &["item", "tags", "default"],
        );
    }

    fn bad_default(column: String, needles: &[&str]) {
        let err = fail(&item_with(column), needles);
        assert!(matches!(err, SchemaError::BadDefault { .. }), "{err:?}");
    }

    #[test]
    fn default_of_wrong_type() {
        bad_default(
            col("qty", "integer", "default = \"3\""),
            &["item", "qty", "integer"],
        );
        bad_default(
            col("qty", "integer", "default = 1.5"),
            &["item", "qty", "1.5"],
        );
        bad_default(
            col("done", "integer", "default = true"),
            &["item", "done", "true"],
        );
        bad_default(
            col("price", "real", "default = \"free\""),
            &["item", "price", "real"],
        );
        bad_default(
            col("label", "text", "default = 7"),
            &["item", "label", "text"],
        );
    }

    #[test]
    fn real_default_nan() {
        bad_default(
            col("price", "real", "default = nan"),
            &["item", "price", "nan"],
        );
    }

    #[test]
    fn blob_default_not_bytes() {
        bad_default(
            col("photo", "blob", "default = \"cafe\""),
            &["item", "photo", "blob"],
        );
        bad_default(
            col("photo", "blob", "default = [1, 256]"),
            &["item", "photo", "256"],
        );
        bad_default(
            col("photo", "blob", "default = [-1]"),
            &["item", "photo", "blob"],
        );
        bad_default(
            col("photo", "blob", "default = [\"a\"]"),
            &["item", "photo", "blob"],
        );
    }
}
