//! Writes and key lookups given as JSON text: one string across the
//! boundary instead of a tree of [`crate::DbValue`]s.
//!
//! Why: a foreign language's generated bindings lower every value of a
//! [`crate::WriteOp`] one field at a time (in Python, several interpreted
//! calls per field), which costs far more than the write itself; a JSON
//! string is lowered once.
//!
//! Invariant: this module only takes the JSON apart into operations. A
//! row's values are converted and checked by the library's typed writes
//! (`Transaction::insert_row`, `upsert_row`, `update_row`: a `serde_json`
//! value is a serde value like any other), so JSON rows follow exactly
//! their rules: an `or_set` takes an array of strings, a `blob` an array
//! of bytes, a counter an integer (and only on insert), `null` only a
//! nullable column. A key's parts are plain values, which the store checks
//! against the key's columns as it checks every key. Anything that does
//! not fit fails the whole write, naming the operation; nothing is
//! written. A row [`Database::get_json`] returns can be written back as it
//! is.

use crate::database::Database;
use crate::error::MeldbError;
use crate::transaction::{self, Op};
use meldb::{Key, Value};
use serde_json::{Map, Value as Json};

/// One part of a key: a string, a whole number, a real, or (for a blob
/// key column) an array of bytes.
fn key_part(json: &Json) -> Result<Value, String> {
    Ok(match json {
        Json::String(s) => Value::Text(s.clone()),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            None => Value::Real(n.as_f64().ok_or("a key part is a number out of range")?),
        },
        Json::Array(bytes) => Value::Blob(
            bytes
                .iter()
                .map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
                .collect::<Option<Vec<u8>>>()
                .ok_or("an array in a key is a blob's bytes (0 to 255)")?,
        ),
        other => {
            return Err(format!(
                "a key part is a string, a number or bytes, not {other}"
            ))
        }
    })
}

/// A key: an array of its parts in the key columns' order, or a bare part
/// for a one-column key.
fn key(json: Option<&Json>) -> Result<Key, String> {
    match json {
        None => Err("\"key\" is missing".into()),
        Some(Json::Array(parts)) => {
            Ok(Key(parts.iter().map(key_part).collect::<Result<_, _>>()?))
        }
        Some(bare) => Ok(Key(vec![key_part(bare)?])),
    }
}

fn text_field(op: &Map<String, Json>, name: &str) -> Result<String, String> {
    op.get(name)
        .and_then(Json::as_str)
        .map(str::to_owned)
        .ok_or_else(|| format!("{name:?} must be a string"))
}

/// A row: the operation's `values` object, whole.
fn row(op: &Map<String, Json>) -> Result<Json, String> {
    match op.get("values") {
        Some(values @ Json::Object(_)) => Ok(values.clone()),
        _ => Err("\"values\" must be an object of columns".into()),
    }
}

/// One operation from its JSON object.
fn operation(json: &Json) -> Result<Op, String> {
    let Json::Object(op) = json else {
        return Err("an operation must be an object with \"op\" and \"table\"".into());
    };
    let kind = text_field(op, "op")?;
    let table = text_field(op, "table")?;
    Ok(match kind.as_str() {
        "insert" => Op::InsertRow(table, row(op)?),
        "upsert" => Op::UpsertRow(table, row(op)?),
        "update" if op.contains_key("key") => {
            return Err(
                "\"update\" finds its row by the key columns in \"values\"; \
                        give them there, not as \"key\""
                    .into(),
            )
        }
        "update" => Op::UpdateRow(table, row(op)?),
        "increment" => Op::Increment(
            table,
            key(op.get("key"))?,
            text_field(op, "column")?,
            op.get("by")
                .and_then(Json::as_i64)
                .ok_or("\"by\" must be a whole number")?,
        ),
        "add_to_set" => Op::AddToSet(
            table,
            key(op.get("key"))?,
            text_field(op, "column")?,
            text_field(op, "element")?,
        ),
        "remove_from_set" => Op::RemoveFromSet(
            table,
            key(op.get("key"))?,
            text_field(op, "column")?,
            text_field(op, "element")?,
        ),
        "delete" => Op::Delete(table, key(op.get("key"))?),
        other => {
            return Err(format!(
                "unknown op {other:?} (insert, upsert, update, increment, add_to_set, \
                 remove_from_set, delete)"
            ))
        }
    })
}

/// The operations of a JSON array (or of one JSON object).
fn operations(text: &str) -> Result<Vec<Op>, MeldbError> {
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
            operation(op)
                .map_err(|e| MeldbError::invalid(format!("write_json: operation {}: {e}", i + 1)))
        })
        .collect()
}

#[uniffi::export]
impl Database {
    /// Runs the operations of `ops_json` in one transaction, as
    /// [`Database::write`] does: a JSON array of objects such as
    /// `{"op": "insert", "table": "item", "values": {"sku": "A1"}}` (also
    /// `upsert`, and `update`, which finds its row by the key columns in
    /// `values`) and `{"op": "increment", "table": "item", "key": ["A1"],
    /// "column": "stock", "by": -1}` (also `add_to_set` and
    /// `remove_from_set` with `column` and `element`, and `delete`). Rows
    /// follow the library's typed writes: sets and blobs as arrays, as
    /// [`Database::get_json`] writes them.
    pub fn write_json(&self, ops_json: String) -> Result<(), MeldbError> {
        transaction::commit_ops(self, operations(&ops_json)?)
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
        let key =
            key(Some(&json)).map_err(|e| MeldbError::invalid(format!("get_json_by_key: {e}")))?;
        self.get_row_json(table, key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DbSchema;
    use std::sync::Arc;

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
[[table.column]]
name = "note"
type = "text"
"#;

    fn open() -> Arc<Database> {
        let schema = DbSchema::from_toml(SCHEMA.into()).expect("the test schema parses");
        Database::open_in_memory(schema, None).expect("an in-memory database opens")
    }

    fn read(db: &Database, table: &str, key: &str) -> Option<Json> {
        db.get_json_by_key(table.into(), key.into())
            .expect("the read runs")
            .map(|text| serde_json::from_str(&text).expect("a read is JSON"))
    }

    #[test]
    fn every_kind_is_written_and_a_row_read_writes_back_as_it_is() {
        let db = open();
        db.write_json(
            r#"[{"op": "insert", "table": "item", "values": {"sku": "A", "price": 2.5,
                 "photo": [0, 255], "tags": ["x"], "stock": 3}},
                {"op": "increment", "table": "item", "key": "A", "column": "stock", "by": -2},
                {"op": "add_to_set", "table": "item", "key": ["A"], "column": "tags", "element": "y"},
                {"op": "insert", "table": "pair", "values": {"a": "k", "b": 3, "note": "n"}},
                {"op": "update", "table": "pair", "values": {"a": "k", "b": 3, "note": "m"}}]"#
                .into(),
        )
        .expect("valid operations");
        let item = read(&db, "item", r#""A""#).expect("the row is there");
        assert_eq!(
            item,
            serde_json::json!({"sku": "A", "price": 2.5, "photo": [0, 255],
                               "tags": ["x", "y"], "stock": 1})
        );
        assert_eq!(
            read(&db, "pair", r#"["k", 3]"#).expect("the pair")["note"],
            "m"
        );
        // Back as it was read, under a new key (the counter left out: an
        // upsert does not assign one).
        let mut again = item;
        again["sku"] = "B".into();
        again.as_object_mut().expect("an object").remove("stock");
        let op = serde_json::json!({"op": "upsert", "table": "item", "values": again});
        db.write_json(op.to_string())
            .expect("a read row writes back");
        assert_eq!(
            read(&db, "item", r#""B""#).expect("B")["photo"],
            serde_json::json!([0, 255])
        );
        db.write_json(r#"{"op": "delete", "table": "pair", "key": ["k", 3]}"#.into())
            .expect("a delete");
        assert!(read(&db, "pair", r#"["k", 3]"#).is_none());
    }

    #[test]
    fn a_write_that_does_not_fit_names_the_operation_and_writes_nothing() {
        let db = open();
        for (json, says) in [
            (
                r#"[{"op": "insert", "table": "item", "values": {"sku": "A"}},
                    {"op": "insert", "table": "item", "values": {"sku": "B", "tags": "x"}}]"#,
                "operation 2",
            ),
            (
                r#"{"op": "insert", "table": "item", "values": {"sku": null}}"#,
                "NULL",
            ),
            (
                r#"{"op": "insert", "table": "item", "values": {"sku": "C", "stock": true}}"#,
                "integer",
            ),
            (
                r#"{"op": "insert", "table": "item", "values": {"sku": "D", "photo": [256]}}"#,
                "bytes",
            ),
            (
                r#"{"op": "update", "table": "item", "key": "A", "values": {}}"#,
                "key columns in",
            ),
            (
                r#"{"op": "delete", "table": "pair", "key": ["only one"]}"#,
                "pair",
            ),
            (
                r#"{"op": "increment", "table": "item", "key": "A", "column": "stock", "by": 1.5}"#,
                "\"by\"",
            ),
            (r#"{"op": "drop", "table": "item"}"#, "unknown op \"drop\""),
            (r#"{"op": "insert", "table": "nope", "values": {}}"#, "nope"),
            (r#"[1]"#, "must be an object"),
            ("{", "not JSON"),
        ] {
            match db.write_json(json.into()) {
                Err(e) => assert!(e.to_string().contains(says), "{json}: {e}"),
                Ok(()) => panic!("{json}: written"),
            }
        }
        assert_eq!(
            db.query_json("SELECT sku FROM item".into(), vec![])
                .expect("a query"),
            "[]"
        );
    }
}
