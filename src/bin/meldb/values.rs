//! Turning command-line text into meldb values, by the column's declared type.
//!
//! `integer` parses as i64, `real` as f64, `text` is taken as is, `blob` is
//! hex written `x'00ff'`; the literal `NULL` is SQL NULL in any column (so a
//! text column cannot be given the four letters NULL from the command line).

use crate::error::{CliError, Result};
use meldb::{Column, Key, Schema, SqlType, Table, Value, WriteError};

/// The table named `name`, or meldb's own "unknown table" error.
pub fn table<'s>(schema: &'s Schema, name: &str) -> Result<&'s Table> {
    schema.table(name).ok_or_else(|| {
        meldb::Error::from(WriteError::UnknownTable {
            table: name.to_owned(),
        })
        .into()
    })
}

/// Parses `COLUMN=VALUE` arguments.
pub fn assignments(table: &Table, args: &[String]) -> Result<Vec<(String, Value)>> {
    args.iter()
        .map(|arg| {
            let (name, text) = arg
                .split_once('=')
                .filter(|(name, _)| !name.is_empty())
                .ok_or_else(|| CliError::NotAnAssignment { arg: arg.clone() })?;
            let (_, column) = table.column(name).ok_or_else(|| {
                meldb::Error::from(WriteError::UnknownColumn {
                    table: table.name.clone(),
                    column: name.to_owned(),
                })
            })?;
            Ok((name.to_owned(), parse(table, column, text)?))
        })
        .collect()
}

/// Parses one `--key` per primary-key column, in key order.
pub fn key(table: &Table, parts: &[String]) -> Result<Key> {
    if parts.len() != table.primary_key.len() {
        return Err(meldb::Error::from(WriteError::KeyArity {
            table: table.name.clone(),
            key: Key(parts.iter().map(|p| Value::Text(p.clone())).collect()),
            expected: table.primary_key.len(),
            found: parts.len(),
        })
        .into());
    }
    let values = table
        .primary_key
        .iter()
        .zip(parts)
        .map(|(&i, text)| parse(table, &table.columns[i], text))
        .collect::<Result<Vec<_>>>()?;
    Ok(Key(values))
}

/// The key of a row given as assignments (for reporting what was written);
/// `None` if a key column is missing, which the write itself reports.
pub fn key_of(table: &Table, values: &[(String, Value)]) -> Option<Key> {
    table
        .primary_key
        .iter()
        .map(|&i| {
            let name = &table.columns[i].name;
            values
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        })
        .collect::<Option<Vec<_>>>()
        .map(Key)
}

/// Parses `text` as a value of `column`'s type.
pub fn parse(table: &Table, column: &Column, text: &str) -> Result<Value> {
    if text == "NULL" {
        return Ok(Value::Null);
    }
    let bad = |expected, hint| CliError::BadValue {
        table: table.name.clone(),
        column: column.name.clone(),
        value: text.to_owned(),
        expected,
        hint,
    };
    match column.sql_type {
        SqlType::Integer => text
            .parse::<i64>()
            .map(Value::Integer)
            .map_err(|_| bad("an integer", "a whole number like 42 or -7, or NULL")),
        SqlType::Real => text
            .parse::<f64>()
            .map(Value::Real)
            .map_err(|_| bad("a real", "a number like 18.5 or 1e3, or NULL")),
        SqlType::Text => Ok(Value::Text(text.to_owned())),
        SqlType::Blob => hex_blob(text)
            .map(Value::Blob)
            .ok_or_else(|| bad("a blob", "hex digits written x'00ff', or NULL")),
    }
}

/// Parses `x'..'` (or `X'..'`) with an even number of hex digits.
fn hex_blob(text: &str) -> Option<Vec<u8>> {
    let hex = text
        .strip_prefix("x'")
        .or_else(|| text.strip_prefix("X'"))?
        .strip_suffix('\'')?;
    if hex.len() % 2 != 0 {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inventory() -> Schema {
        let text = include_str!("../../../schema/inventory.toml");
        match Schema::from_toml_str(text, "inventory.toml") {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn values_follow_the_declared_type() -> Result<()> {
        let schema = inventory();
        let item = table(&schema, "item")?;
        let args = ["sku=A1", "price=2.5", "stock=-3", "name=NULL"].map(String::from);
        let parsed = assignments(item, &args)?;
        assert_eq!(parsed[0].1, Value::from("A1"));
        assert_eq!(parsed[1].1, Value::Real(2.5));
        assert_eq!(parsed[2].1, Value::Integer(-3));
        assert_eq!(parsed[3].1, Value::Null);
        assert_eq!(key_of(item, &parsed), Some(Key::from("A1")));
        Ok(())
    }

    #[test]
    fn bad_input_names_the_column() {
        let schema = inventory();
        let Some(item) = schema.table("item") else {
            panic!("no item table")
        };
        let err = assignments(item, &["stock=abc".into()]).err();
        let msg = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("\"stock\"") && msg.contains("abc"), "{msg}");
        let err = assignments(item, &["nope=1".into()]).err();
        assert!(err.is_some_and(|e| e.to_string().contains("\"nope\"")));
        assert!(assignments(item, &["=1".into()]).is_err());
    }

    #[test]
    fn composite_keys_need_every_part() -> Result<()> {
        let schema = inventory();
        let location = table(&schema, "location")?;
        let k = key(location, &["north".into(), "A1".into()])?;
        assert_eq!(k.0, vec![Value::from("north"), Value::from("A1")]);
        assert!(key(location, &["north".into()]).is_err());
        Ok(())
    }

    #[test]
    fn blobs_are_hex() {
        assert_eq!(hex_blob("x'00ff'"), Some(vec![0, 255]));
        assert_eq!(hex_blob("X''"), Some(vec![]));
        assert_eq!(hex_blob("x'0'"), None);
        assert_eq!(hex_blob("x'zz'"), None);
        assert_eq!(hex_blob("00ff"), None);
    }
}
