//! Whether a database created with one schema may be opened with another.
//!
//! Replicas that run different versions of an app must keep merging each
//! other's changes, so an upgrade may only add: new tables, and new columns
//! that existing rows can do without (nullable, defaulted, or a counter or
//! set, which read 0 or `[]`). Everything already stored must keep its
//! meaning: the schema name, every table with the same primary key, every
//! column with the same type, kind, nullability and default. The version may
//! stay or rise, never fall. Tables and columns may be declared in any
//! order, but a name may not change case: SQLite would see the same
//! identifier while meldb's stored schema would not. Row-level rules
//! (`frozen_when_final`, `delete`, `unique`, `transitions`, `owner`) may be
//! added, changed or removed by any upgrade: they judge new writes only,
//! and [`Upgrade::changed_rules`] lists the tables whose rules changed.
//!
//! A table's `deferred_shows` may change: it says what the deciding
//! replica shows while a conflict waits, stores nothing, and applies to
//! conflicts deferred after the upgrade.

use super::{Column, Kind, Schema, SchemaError, Table};
use crate::value::Value;
use std::cmp::Ordering;

/// What opening a database with a newer schema adds to it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[must_use]
pub struct Upgrade {
    /// Tables the new schema declares that the database lacks, in the new
    /// schema's order.
    pub new_tables: Vec<String>,
    /// `(table, column)` for each column added to a table the database
    /// already has, in the new schema's order.
    pub new_columns: Vec<(String, String)>,
    /// Tables the database already has whose row-level rules (the table's
    /// or a column's) the new schema changes, in the new schema's order.
    /// A rule applies to new writes; rows already stored are not rewritten.
    pub changed_rules: Vec<String>,
}

impl Upgrade {
    /// Whether nothing needs adding (the version may still have risen).
    pub fn is_empty(&self) -> bool {
        self.new_tables.is_empty() && self.new_columns.is_empty()
    }
}

impl Schema {
    /// Checks that `new` may replace `self`, the schema stored in
    /// `database`, and says which tables and columns it adds.
    pub fn check_upgrade(&self, new: &Schema, database: &str) -> Result<Upgrade, SchemaError> {
        let incompatible = |reason: String| SchemaError::Incompatible {
            database: database.to_owned(),
            stored_schema: format!("{} v{}", self.name, self.version),
            new_schema: format!("{} v{}", new.name, new.version),
            reason,
        };
        if new.name != self.name {
            return Err(incompatible(format!(
                "the schema was renamed from {:?} to {:?}",
                self.name, new.name
            )));
        }
        if new.version < self.version {
            return Err(incompatible(format!(
                "the version went down from {} to {}",
                self.version, new.version
            )));
        }

        for stored in &self.tables {
            let Some(table) = find_table(new, &stored.name) else {
                return Err(incompatible(format!("table {:?} was removed", stored.name)));
            };
            check_table(stored, table).map_err(incompatible)?;
        }

        let mut upgrade = Upgrade::default();
        for table in &new.tables {
            match find_table(self, &table.name) {
                None => upgrade.new_tables.push(table.name.clone()),
                Some(stored) => {
                    if rules_of(stored) != rules_of(table) {
                        upgrade.changed_rules.push(table.name.clone());
                    }
                    for column in &table.columns {
                        if find_column(stored, &column.name).is_some() {
                            continue;
                        }
                        if !can_add(column) {
                            return Err(incompatible(format!(
                                "table {:?}: new column {:?} is NOT NULL without a default",
                                table.name, column.name
                            )));
                        }
                        upgrade
                            .new_columns
                            .push((table.name.clone(), column.name.clone()));
                    }
                }
            }
        }
        Ok(upgrade)
    }
}

/// Why `new` cannot replace `stored`, if it cannot.
fn check_table(stored: &Table, new: &Table) -> Result<(), String> {
    let t = &stored.name;
    if new.name != *t {
        return Err(format!("table {t:?} was renamed to {:?}", new.name));
    }
    for old in &stored.columns {
        let c = &old.name;
        let Some(now) = find_column(new, c) else {
            return Err(format!("table {t:?}, column {c:?} was removed"));
        };
        if now.name != *c {
            return Err(format!(
                "table {t:?}, column {c:?} was renamed to {:?}",
                now.name
            ));
        }
        if now.sql_type != old.sql_type {
            return Err(format!(
                "table {t:?}, column {c:?}: type changed from {} to {}",
                old.sql_type, now.sql_type
            ));
        }
        if now.kind != old.kind {
            return Err(format!(
                "table {t:?}, column {c:?}: kind changed from {} to {}",
                old.kind, now.kind
            ));
        }
        if now.nullable != old.nullable {
            return Err(format!(
                "table {t:?}, column {c:?}: changed from {} to {}",
                nullability(old.nullable),
                nullability(now.nullable)
            ));
        }
        if now.policy != old.policy {
            return Err(format!(
                "table {t:?}, column {c:?}: policy changed from {} to {}",
                old.policy.name(),
                now.policy.name()
            ));
        }
        if !same_default(old.default.as_ref(), now.default.as_ref()) {
            return Err(format!(
                "table {t:?}, column {c:?}: default changed from {} to {}",
                describe_default(old.default.as_ref()),
                describe_default(now.default.as_ref())
            ));
        }
    }
    if stored.authority != new.authority {
        return Err(format!(
            "table {t:?}: authority changed from {} to {}",
            stored.authority, new.authority
        ));
    }
    let old_key = key_names(stored);
    let new_key = key_names(new);
    if old_key != new_key {
        return Err(format!(
            "table {t:?}: primary key changed from ({}) to ({})",
            old_key.join(", "),
            new_key.join(", ")
        ));
    }
    Ok(())
}

/// A table's row-level rules, with its columns' by lower-cased name.
fn rules_of(table: &Table) -> (super::RowRules, Vec<(String, super::ColumnRules)>) {
    let mut columns: Vec<(String, super::ColumnRules)> = table
        .columns
        .iter()
        .filter(|c| !c.rules.is_empty())
        .map(|c| (c.name.to_ascii_lowercase(), c.rules.clone()))
        .collect();
    columns.sort_by(|a, b| a.0.cmp(&b.0));
    (table.rules.clone(), columns)
}

/// Whether rows that existed before `column` did can do without a value.
fn can_add(column: &Column) -> bool {
    column.kind != Kind::Lww || column.nullable || column.default.is_some()
}

/// Tables and columns are matched case-insensitively, as SQLite matches
/// identifiers; a change of case is then reported as a rename.
fn find_table<'s>(schema: &'s Schema, name: &str) -> Option<&'s Table> {
    schema
        .tables
        .iter()
        .find(|t| t.name.eq_ignore_ascii_case(name))
}

fn find_column<'t>(table: &'t Table, name: &str) -> Option<&'t Column> {
    table
        .columns
        .iter()
        .find(|c| c.name.eq_ignore_ascii_case(name))
}

fn key_names(table: &Table) -> Vec<&str> {
    table
        .primary_key
        .iter()
        .filter_map(|&i| table.columns.get(i))
        .map(|c| c.name.as_str())
        .collect()
}

fn nullability(nullable: bool) -> &'static str {
    if nullable {
        "nullable"
    } else {
        "NOT NULL"
    }
}

/// Defaults must be identical, down to the sign of a zero real.
fn same_default(a: Option<&Value>, b: Option<&Value>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => a.total_cmp(b) == Ordering::Equal,
        _ => false,
    }
}

fn describe_default(default: Option<&Value>) -> String {
    default.map_or_else(|| "none".to_owned(), ToString::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::SqlType;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    const DB: &str = "shop.db";

    fn inventory() -> Result<Schema, SchemaError> {
        Schema::load(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../schema/inventory.toml"
        ))
    }

    fn table_mut<'s>(schema: &'s mut Schema, name: &str) -> Result<&'s mut Table, String> {
        schema
            .tables
            .iter_mut()
            .find(|t| t.name == name)
            .ok_or_else(|| format!("no table {name}"))
    }

    fn column_mut<'s>(
        schema: &'s mut Schema,
        table: &str,
        column: &str,
    ) -> Result<&'s mut Column, String> {
        table_mut(schema, table)?
            .columns
            .iter_mut()
            .find(|c| c.name == column)
            .ok_or_else(|| format!("no column {table}.{column}"))
    }

    fn lww(name: &str, sql_type: SqlType, nullable: bool, default: Option<Value>) -> Column {
        Column {
            name: name.to_owned(),
            sql_type,
            kind: Kind::Lww,
            nullable,
            default,
            policy: Default::default(),
            rules: Default::default(),
        }
    }

    /// Checks that `new` cannot replace `stored`, and that the message names
    /// the database, both versions and every one of `needles`.
    fn refused(stored: &Schema, new: &Schema, needles: &[&str]) {
        let err = match stored.check_upgrade(new, DB) {
            Ok(upgrade) => panic!("accepted, adding {upgrade:?}"),
            Err(err) => err,
        };
        assert!(matches!(err, SchemaError::Incompatible { .. }), "{err:?}");
        let message = err.to_string();
        let stored_version = format!("{} v{}", stored.name, stored.version);
        let new_version = format!("{} v{}", new.name, new.version);
        for needle in [DB, &stored_version, &new_version]
            .into_iter()
            .chain(needles.iter().copied())
        {
            assert!(
                message.contains(needle),
                "{message:?} does not mention {needle:?}"
            );
        }
    }

    #[test]
    fn identical_schema_adds_nothing() -> TestResult {
        let stored = inventory()?;
        let upgrade = stored.check_upgrade(&stored.clone(), DB)?;
        assert!(upgrade.is_empty(), "{upgrade:?}");
        assert_eq!(upgrade, Upgrade::default());
        Ok(())
    }

    #[test]
    fn version_bump_alone_adds_nothing() -> TestResult {
        let stored = inventory()?;
        let mut new = stored.clone();
        new.version = 7;
        assert!(stored.check_upgrade(&new, DB)?.is_empty());
        Ok(())
    }

    #[test]
    fn reordered_tables_and_columns_add_nothing() -> TestResult {
        let stored = Schema::from_toml_str(
            r#"
            name = "shop"
            version = 1
            [[table]]
            name = "item"
            primary_key = ["sku"]
            [[table.column]]
            name = "sku"
            type = "text"
            [[table.column]]
            name = "price"
            type = "real"
            [[table]]
            name = "note"
            primary_key = ["id"]
            [[table.column]]
            name = "id"
            type = "integer"
            "#,
            "v1.toml",
        )?;
        let new = Schema::from_toml_str(
            r#"
            name = "shop"
            version = 2
            [[table]]
            name = "note"
            primary_key = ["id"]
            [[table.column]]
            name = "id"
            type = "integer"
            [[table]]
            name = "item"
            primary_key = ["sku"]
            [[table.column]]
            name = "price"
            type = "real"
            [[table.column]]
            name = "sku"
            type = "text"
            "#,
            "v2.toml",
        )?;
        assert!(stored.check_upgrade(&new, DB)?.is_empty());
        Ok(())
    }

    #[test]
    fn added_table() -> TestResult {
        let stored = inventory()?;
        let mut new = stored.clone();
        new.version = 2;
        new.tables.insert(
            1,
            Table {
                name: "supplier".to_owned(),
                columns: vec![
                    lww("id", SqlType::Text, false, None),
                    // A NOT NULL column without default is fine in a new table.
                    lww("name", SqlType::Text, false, None),
                ],
                primary_key: vec![0],
                authority: false,
                deferred_shows: None,
                rules: Default::default(),
            },
        );
        let upgrade = stored.check_upgrade(&new, DB)?;
        assert_eq!(upgrade.new_tables, ["supplier"]);
        assert!(upgrade.new_columns.is_empty());
        assert!(!upgrade.is_empty());
        Ok(())
    }

    #[test]
    fn added_nullable_defaulted_and_counter_columns() -> TestResult {
        let stored = inventory()?;
        let mut new = stored.clone();
        new.version = 2;
        let item = table_mut(&mut new, "item")?;
        // Right after the key column, so no key index moves.
        item.columns
            .insert(1, lww("color", SqlType::Text, true, None));
        item.columns
            .push(lww("weight", SqlType::Real, false, Some(Value::Real(1.0))));
        item.columns.push(Column {
            name: "returns".to_owned(),
            sql_type: SqlType::Integer,
            kind: Kind::GCounter,
            nullable: false,
            default: None,
            policy: Default::default(),
            rules: Default::default(),
        });
        table_mut(&mut new, "location")?.columns.push(Column {
            name: "labels".to_owned(),
            sql_type: SqlType::Text,
            kind: Kind::OrSet,
            nullable: false,
            default: None,
            policy: Default::default(),
            rules: Default::default(),
        });
        let upgrade = stored.check_upgrade(&new, DB)?;
        assert!(upgrade.new_tables.is_empty());
        let pairs: Vec<(&str, &str)> = upgrade
            .new_columns
            .iter()
            .map(|(t, c)| (t.as_str(), c.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("item", "color"),
                ("item", "weight"),
                ("item", "returns"),
                ("location", "labels"),
            ]
        );
        Ok(())
    }

    #[test]
    fn added_column_before_the_key_keeps_the_key() -> TestResult {
        let stored = inventory()?;
        let mut new = stored.clone();
        let location = table_mut(&mut new, "location")?;
        location
            .columns
            .insert(0, lww("aisle", SqlType::Integer, true, None));
        // Same key columns, now at indexes 1 and 2.
        location.primary_key = vec![1, 2];
        let upgrade = stored.check_upgrade(&new, DB)?;
        assert_eq!(
            upgrade.new_columns,
            [("location".to_owned(), "aisle".to_owned())]
        );
        Ok(())
    }

    #[test]
    fn added_column_from_toml_in_the_middle() -> TestResult {
        let v1 = r#"
            name = "shop"
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
        "#;
        let v2 = v1.replace("version = 1", "version = 2").replace(
            "[[table.column]]\n            name = \"stock\"",
            "[[table.column]]\n            name = \"size\"\n            type = \"text\"\n            default = \"M\"\n            [[table.column]]\n            name = \"stock\"",
        );
        let stored = Schema::from_toml_str(v1, "v1.toml")?;
        let new = Schema::from_toml_str(&v2, "v2.toml")?;
        assert_eq!(new.tables[0].columns[1].name, "size");
        let upgrade = stored.check_upgrade(&new, DB)?;
        assert_eq!(
            upgrade.new_columns,
            [("item".to_owned(), "size".to_owned())]
        );
        Ok(())
    }

    #[test]
    fn removed_table() -> TestResult {
        let stored = inventory()?;
        let mut new = stored.clone();
        new.tables.retain(|t| t.name != "location");
        refused(&stored, &new, &["table \"location\" was removed"]);
        Ok(())
    }

    #[test]
    fn removed_column() -> TestResult {
        let stored = inventory()?;
        let mut new = stored.clone();
        table_mut(&mut new, "item")?
            .columns
            .retain(|c| c.name != "tags");
        refused(&stored, &new, &["\"item\"", "\"tags\"", "removed"]);
        Ok(())
    }

    #[test]
    fn changed_type() -> TestResult {
        let stored = inventory()?;
        let mut new = stored.clone();
        let price = column_mut(&mut new, "item", "price")?;
        price.sql_type = SqlType::Integer;
        price.default = Some(Value::Integer(0));
        refused(
            &stored,
            &new,
            &["\"item\"", "\"price\"", "type changed from real to integer"],
        );
        Ok(())
    }

    #[test]
    fn changed_kind() -> TestResult {
        let stored = inventory()?;
        let mut new = stored.clone();
        column_mut(&mut new, "item", "stock")?.kind = Kind::Lww;
        refused(
            &stored,
            &new,
            &["table \"item\", column \"stock\": kind changed from pn_counter to lww"],
        );
        Ok(())
    }

    #[test]
    fn changed_nullability() -> TestResult {
        let stored = inventory()?;
        let mut new = stored.clone();
        column_mut(&mut new, "location", "shelf")?.nullable = false;
        refused(
            &stored,
            &new,
            &["\"location\"", "\"shelf\"", "from nullable to NOT NULL"],
        );
        Ok(())
    }

    #[test]
    fn changed_default() -> TestResult {
        let stored = inventory()?;
        let mut new = stored.clone();
        column_mut(&mut new, "item", "name")?.default = Some(Value::from("unnamed"));
        refused(
            &stored,
            &new,
            &[
                "\"item\"",
                "\"name\"",
                "default changed from \"\" to \"unnamed\"",
            ],
        );
        let mut new = stored.clone();
        column_mut(&mut new, "item", "price")?.default = None;
        refused(&stored, &new, &["\"item\"", "\"price\"", "to none"]);
        Ok(())
    }

    #[test]
    fn changed_key() -> TestResult {
        let stored = inventory()?;
        let mut new = stored.clone();
        table_mut(&mut new, "location")?.primary_key = vec![1, 0];
        refused(
            &stored,
            &new,
            &["table \"location\": primary key changed from (warehouse, sku) to (sku, warehouse)"],
        );
        let mut new = stored.clone();
        table_mut(&mut new, "location")?.primary_key = vec![0];
        refused(
            &stored,
            &new,
            &["\"location\"", "primary key", "(warehouse)"],
        );
        Ok(())
    }

    #[test]
    fn added_not_null_column_without_default() -> TestResult {
        let stored = inventory()?;
        let mut new = stored.clone();
        table_mut(&mut new, "item")?
            .columns
            .push(lww("color", SqlType::Text, false, None));
        refused(
            &stored,
            &new,
            &["table \"item\": new column \"color\" is NOT NULL without a default"],
        );
        Ok(())
    }

    #[test]
    fn renamed_schema() -> TestResult {
        let stored = inventory()?;
        let mut new = stored.clone();
        new.name = "stock".to_owned();
        refused(&stored, &new, &["renamed", "\"inventory\"", "\"stock\""]);
        Ok(())
    }

    #[test]
    fn lower_version() -> TestResult {
        let mut stored = inventory()?;
        stored.version = 3;
        let mut new = stored.clone();
        new.version = 2;
        refused(&stored, &new, &["version went down from 3 to 2"]);
        Ok(())
    }

    #[test]
    fn changed_case_of_a_name() -> TestResult {
        let stored = inventory()?;
        let mut new = stored.clone();
        table_mut(&mut new, "item")?.name = "Item".to_owned();
        refused(&stored, &new, &["table \"item\" was renamed to \"Item\""]);
        let mut new = stored.clone();
        column_mut(&mut new, "item", "sold")?.name = "SOLD".to_owned();
        refused(
            &stored,
            &new,
            &["\"item\"", "\"sold\"", "renamed to \"SOLD\""],
        );
        Ok(())
    }

    #[test]
    fn changed_deferred_shows_adds_nothing() -> TestResult {
        let stored = inventory()?;
        let mut new = stored.clone();
        new.version = 2;
        let item = table_mut(&mut new, "item")?;
        item.deferred_shows = Some(crate::schema::DeferredShows::Merged);
        assert!(stored.check_upgrade(&new, DB)?.is_empty());
        assert_ne!(stored.fingerprint(), new.fingerprint());
        Ok(())
    }
}
