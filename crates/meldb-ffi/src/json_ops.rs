//! Writes and key lookups given as JSON text: the operations of
//! [`WriteOp`] and the keys of [`Database::get`], carried across the
//! boundary as one string instead of a tree of values.
//!
//! Why: a foreign language's generated bindings lower every value of a
//! [`WriteOp`] one field at a time (in Python, several interpreted calls
//! per field), which costs far more than the write itself; a JSON string
//! is lowered once. Invariant: the JSON is read against the schema, never
//! guessed: a column's value must be what its type and kind take (an
//! `or_set` an array of strings, a `blob` an array of bytes, an `integer`
//! a whole number, a `real` any number, `text` a string; `null` where
//! nullable); anything else is [`MeldbError::InvalidArgument`] naming the
//! operation, the column and what it got, and nothing is written. Output
//! is the JSON [`Database::get_json`] returns, so a row read can be
//! written back as it is.

use crate::database::Database;
use crate::error::MeldbError;
use crate::transaction::WriteOp;
use crate::value::{DbRow, DbValue};
use meldb::{Kind, Schema, SqlType, Table};
use serde_json::{Map, Value as Json};

/// One value of `column` in `table` from JSON.
fn value(table: &Table, column: &str, json: &Json) -> Result<DbValue, String> {
    let Some(spec) = table.columns.iter().find(|c| c.name == column) else {
        return Err(format!("table {:?} has no column {column:?}", table.name));
    };
    let wrong = |want: &str| format!("column {column:?} takes {want}, not {json}");
    Ok(match (json, spec.kind, spec.sql_type) {
        (Json::Null, _, _) if spec.nullable => DbValue::Null,
        (Json::Null, _, _) => return Err(format!("column {column:?} is not nullable, not null")),
        (Json::Array(items), Kind::OrSet, _) => DbValue::Set {
            members: items
                .iter()
                .map(|item| item.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| wrong("an array of strings (an or_set)"))?,
        },
        (_, Kind::OrSet, _) => return Err(wrong("an array of strings (an or_set)")),
        (Json::Number(n), _, SqlType::Integer) => DbValue::Integer {
            value: whole(n).ok_or_else(|| wrong("a whole number"))?,
        },
        (Json::Bool(b), Kind::Lww, SqlType::Integer) => DbValue::Bool { value: *b },
        (Json::Number(n), _, SqlType::Real) => DbValue::Real {
            value: n.as_f64().ok_or_else(|| wrong("a number"))?,
        },
        (Json::String(s), _, SqlType::Text) => DbValue::Text { value: s.clone() },
        (Json::Array(items), _, SqlType::Blob) => DbValue::Blob {
            value: items
                .iter()
                .map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
                .collect::<Option<Vec<u8>>>()
                .ok_or_else(|| wrong("an array of bytes (0 to 255)"))?,
        },
        (_, Kind::Lww, SqlType::Integer) => return Err(wrong("a whole number or a boolean")),
        (_, _, SqlType::Integer) => return Err(wrong("a whole number (a counter)")),
        (_, _, SqlType::Real) => return Err(wrong("a number")),
        (_, _, SqlType::Text) => return Err(wrong("a string")),
        (_, _, SqlType::Blob) => return Err(wrong("an array of bytes (0 to 255)")),
    })
}

/// A JSON number that is a whole 64-bit integer (`3`, and `3.0` or `3e0`
/// as a float-minded encoder writes it), or `None`.
fn whole(n: &serde_json::Number) -> Option<i64> {
    n.as_i64().or_else(|| {
        let f = n.as_f64()?;
        // i64::MAX as f64 rounds up to 2^63, which is out of range.
        (f.fract() == 0.0 && f >= i64::MIN as f64 && f < i64::MAX as f64).then_some(f as i64)
    })
}

/// A row's columns from a JSON object.
fn row(table: &Table, json: Option<&Json>) -> Result<DbRow, String> {
    let Some(Json::Object(fields)) = json else {
        return Err("\"values\" must be an object of columns".into());
    };
    fields
        .iter()
        .map(|(name, v)| Ok((name.clone(), value(table, name, v)?)))
        .collect()
}

/// A key from a JSON array, one value per key column in the schema's
/// order (a single-column key may also be the bare value).
fn key(table: &Table, json: Option<&Json>) -> Result<Vec<DbValue>, String> {
    let Some(json) = json else {
        return Err("\"key\" is missing".into());
    };
    let one_blob = table.primary_key.len() == 1
        && table.columns[table.primary_key[0]].sql_type == SqlType::Blob;
    let parts: Vec<&Json> = match json {
        // A one-blob key given bare: the array is the blob's bytes.
        Json::Array(items) if one_blob && items.iter().all(Json::is_number) => vec![json],
        Json::Array(items) => items.iter().collect(),
        bare => vec![bare],
    };
    if parts.len() != table.primary_key.len() {
        return Err(format!(
            "the key of table {:?} has {} column(s), not {}",
            table.name,
            table.primary_key.len(),
            parts.len()
        ));
    }
    table
        .primary_key
        .iter()
        .zip(parts)
        .map(|(&i, part)| value(table, &table.columns[i].name, part))
        .collect()
}

fn text_field(op: &Map<String, Json>, name: &str) -> Result<String, String> {
    op.get(name)
        .and_then(Json::as_str)
        .map(str::to_owned)
        .ok_or_else(|| format!("{name:?} must be a string"))
}

/// One operation from its JSON object.
fn operation(schema: &Schema, json: &Json) -> Result<WriteOp, String> {
    let Json::Object(op) = json else {
        return Err("an operation must be an object with \"op\" and \"table\"".into());
    };
    let kind = text_field(op, "op")?;
    let table_name = text_field(op, "table")?;
    let table = schema
        .table(&table_name)
        .ok_or_else(|| format!("the schema has no table {table_name:?}"))?;
    let column = || text_field(op, "column");
    let element = || text_field(op, "element");
    Ok(match kind.as_str() {
        "insert" => WriteOp::Insert {
            values: row(table, op.get("values"))?,
            table: table_name,
        },
        "upsert" => WriteOp::Upsert {
            values: row(table, op.get("values"))?,
            table: table_name,
        },
        "update" => WriteOp::Update {
            key: key(table, op.get("key"))?,
            values: row(table, op.get("values"))?,
            table: table_name,
        },
        "increment" => WriteOp::Increment {
            key: key(table, op.get("key"))?,
            column: column()?,
            by: match op.get("by") {
                Some(Json::Number(n)) => whole(n),
                _ => None,
            }
            .ok_or("\"by\" must be a whole number")?,
            table: table_name,
        },
        "add_to_set" => WriteOp::AddToSet {
            key: key(table, op.get("key"))?,
            column: column()?,
            element: element()?,
            table: table_name,
        },
        "remove_from_set" => WriteOp::RemoveFromSet {
            key: key(table, op.get("key"))?,
            column: column()?,
            element: element()?,
            table: table_name,
        },
        "delete" => WriteOp::Delete {
            key: key(table, op.get("key"))?,
            table: table_name,
        },
        other => {
            return Err(format!(
                "unknown op {other:?} (insert, upsert, update, increment, add_to_set, \
                 remove_from_set, delete)"
            ))
        }
    })
}

/// The operations of a JSON array (or of one JSON object).
pub(crate) fn operations(schema: &Schema, text: &str) -> Result<Vec<WriteOp>, MeldbError> {
    let json: Json = serde_json::from_str(text)
        .map_err(|e| MeldbError::invalid(format!("write_json: not JSON: {e}")))?;
    let list = match json {
        Json::Array(list) => list,
        one @ Json::Object(_) => vec![one],
        _ => {
            return Err(MeldbError::invalid(
                "write_json: expected an array of operations (or one operation object)",
            ))
        }
    };
    list.iter()
        .enumerate()
        .map(|(i, op)| {
            operation(schema, op)
                .map_err(|e| MeldbError::invalid(format!("write_json: operation {}: {e}", i + 1)))
        })
        .collect()
}

#[uniffi::export]
impl Database {
    /// Runs the operations of `ops_json` in one transaction, as
    /// [`Database::write`] does: a JSON array of objects such as
    /// `{"op": "insert", "table": "item", "values": {"sku": "A1"}}`,
    /// `{"op": "increment", "table": "item", "key": ["A1"], "column":
    /// "stock", "by": -1}` (also `upsert`, `update` with `key` and
    /// `values`, `add_to_set` and `remove_from_set` with `column` and
    /// `element`, `delete` with `key`). Values are read against the schema:
    /// sets and blobs as arrays, as [`Database::get_json`] writes them.
    pub fn write_json(&self, ops_json: String) -> Result<(), MeldbError> {
        let ops = operations(&self.schema, &ops_json)?;
        self.write(ops)
    }

    /// [`Database::get_json`] with the key as JSON: an array of the key's
    /// values (or, for a one-column key, the bare value).
    pub fn get_json_by_key(
        &self,
        table: String,
        key_json: String,
    ) -> Result<Option<String>, MeldbError> {
        let json: Json = serde_json::from_str(&key_json).map_err(|e| {
            MeldbError::invalid(format!("get_json_by_key: the key is not JSON: {e}"))
        })?;
        let spec = self
            .schema
            .table(&table)
            .ok_or_else(|| MeldbError::invalid(format!("the schema has no table {table:?}")))?;
        let key = key(spec, Some(&json))
            .map_err(|e| MeldbError::invalid(format!("get_json_by_key: {e}")))?;
        self.get_json(table, key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMA: &str = r#"
name = "s"
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
name = "price"
type = "real"
[[table.column]]
name = "photo"
type = "blob"
[[table.column]]
name = "tags"
type = "text"
kind = "or_set"
[[table]]
name = "pair"
primary_key = ["a", "b"]
[[table.column]]
name = "a"
type = "text"
[[table.column]]
name = "b"
type = "integer"
"#;

    fn schema() -> Schema {
        Schema::from_toml_str(SCHEMA, "test").expect("the test schema parses")
    }

    #[test]
    fn values_are_read_by_the_columns_type_and_kind() {
        let ops = operations(
            &schema(),
            r#"[{"op": "insert", "table": "item", "values": {"sku": "A", "price": 2,
                 "photo": [0, 255], "tags": ["x"]}},
                {"op": "increment", "table": "item", "key": "A", "column": "stock", "by": -2.0},
                {"op": "delete", "table": "pair", "key": ["k", 3]}]"#,
        )
        .expect("valid operations");
        let WriteOp::Insert { values, .. } = &ops[0] else {
            panic!("first is an insert: {ops:?}")
        };
        assert_eq!(values["price"], DbValue::Real { value: 2.0 });
        assert_eq!(
            values["photo"],
            DbValue::Blob {
                value: vec![0, 255]
            }
        );
        assert_eq!(
            values["tags"],
            DbValue::Set {
                members: vec!["x".into()]
            }
        );
        assert!(
            matches!(&ops[1], WriteOp::Increment { key, by: -2, .. } if key == &[DbValue::Text { value: "A".into() }])
        );
        assert!(matches!(&ops[2], WriteOp::Delete { key, .. } if key.len() == 2));
    }

    #[test]
    fn a_value_of_the_wrong_shape_names_the_operation_and_the_column() {
        for (json, says) in [
            (
                r#"[{"op": "insert", "table": "item", "values": {"sku": "A"}},
                    {"op": "insert", "table": "item", "values": {"sku": "B", "tags": "x"}}]"#,
                "operation 2: column \"tags\" takes an array of strings",
            ),
            (
                r#"{"op": "insert", "table": "item", "values": {"sku": 7}}"#,
                "column \"sku\" takes a string",
            ),
            (
                r#"{"op": "update", "table": "item", "key": "A", "values": {"photo": [256]}}"#,
                "an array of bytes",
            ),
            (
                r#"{"op": "delete", "table": "pair", "key": ["only one"]}"#,
                "has 2 column(s), not 1",
            ),
            (r#"{"op": "drop", "table": "item"}"#, "unknown op \"drop\""),
            (
                r#"{"op": "insert", "table": "item", "values": {"sku": null}}"#,
                "column \"sku\" is not nullable",
            ),
            (
                r#"{"op": "insert", "table": "item", "values": {"sku": "A", "stock": true}}"#,
                "column \"stock\" takes a whole number (a counter)",
            ),
            (
                r#"{"op": "increment", "table": "item", "key": "A", "column": "stock", "by": 1.5}"#,
                "\"by\" must be a whole number",
            ),
            (r#"{"op": "insert", "table": "nope"}"#, "no table \"nope\""),
            (r#"[1]"#, "must be an object"),
            ("{", "not JSON"),
        ] {
            match operations(&schema(), json) {
                Err(MeldbError::InvalidArgument { message }) => {
                    assert!(message.contains(says), "{json}: {message}")
                }
                other => panic!("{json}: expected an invalid argument, got {other:?}"),
            }
        }
    }
}
