//! Typed rows: a row's columns read as any `serde::Deserialize` type, and
//! written from any `serde::Serialize` one (`write`: `insert_row`,
//! `upsert_row`, `update_row` on a [`Transaction`](crate::store::Transaction)).
//!
//! A row, as [`Store::get`] returns it or a query's result row, is a list
//! of `(column name, value)`. [`from_row`] reads it as a struct (fields by
//! column name, as `serde_rusqlite` and sqlx's `FromRow` do), a map, or a
//! tuple (columns in order). Each value converts as SQLite's types
//! suggest:
//!
//! - `INTEGER` to any integer type (out of range is an error), to `f64`,
//!   and to `bool` when it is 0 or 1 (how SQLite stores booleans);
//!   counters are integers;
//! - `REAL` to `f64`/`f32`; `TEXT` to `String`/`&str`, and to a unit enum
//!   variant by name; `BLOB` to `Vec<u8>`;
//! - `NULL` to `None` (and an error for a field that is not an `Option`);
//! - an `or_set` column (JSON array text, as the store reads it) to
//!   `Vec<String>`, `BTreeSet<String>` or any sequence.
//!
//! Invariant: a value that does not fit its field is an error naming the
//! column and what was found, never a silent default; a missing column is
//! serde's "missing field" error naming the field.

mod ser;
mod write;

use crate::store::Store;
use crate::value::{Key, Value};
use rusqlite::Connection;
use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};
use serde::forward_to_deserialize_any;
use std::fmt;

/// A row that did not fit the type asked for, or a value that did not fit
/// the row it was written to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.describe())]
#[non_exhaustive]
pub struct TypedError {
    /// The table or query the row came from (or, for a write, went to).
    pub source_of: String,
    /// The Rust field whose value did not fit (typed writes), when one did.
    pub field: Option<String>,
    /// The column whose value did not fit, when one did.
    pub column: Option<String>,
    /// What went wrong.
    pub problem: String,
}

impl TypedError {
    fn describe(&self) -> String {
        let source_of = &self.source_of;
        let problem = &self.problem;
        match (&self.field, &self.column) {
            (Some(field), Some(column)) => {
                format!("{source_of}, field {field:?} (column {column:?}): {problem}")
            }
            (Some(field), None) => format!("{source_of}, field {field:?}: {problem}"),
            (None, Some(column)) => format!("{source_of}, column {column:?}: {problem}"),
            (None, None) => format!("{source_of}: {problem}"),
        }
    }
}

/// The deserializer's own error, before it knows the row's source.
#[derive(Debug)]
struct DeError {
    column: Option<String>,
    problem: String,
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.problem)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError {
            column: None,
            problem: msg.to_string(),
        }
    }
}

/// Reads `row` as a `T` (see the module doc); `source_of` names where the
/// row came from in the error (`table "item"`, `query "SELECT …"`).
///
/// # Errors
///
/// [`TypedError`] naming the column that did not fit, or the field that
/// had no column.
pub fn from_row<T: DeserializeOwned>(
    row: &[(String, Value)],
    source_of: &str,
) -> Result<T, TypedError> {
    T::deserialize(RowDe { row }).map_err(|e| TypedError {
        source_of: source_of.to_owned(),
        field: None,
        column: e.column,
        problem: e.problem,
    })
}

struct RowDe<'a> {
    row: &'a [(String, Value)],
}

impl<'de> de::Deserializer<'de> for RowDe<'de> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_map(Columns {
            row: self.row,
            next: 0,
        })
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_seq(Columns {
            row: self.row,
            next: 0,
        })
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct map struct enum identifier
        ignored_any
    }
}

/// The row's columns, as a map (by name) or a sequence (in order).
struct Columns<'a> {
    row: &'a [(String, Value)],
    next: usize,
}

impl<'a> Columns<'a> {
    fn value(&mut self) -> Option<&'a (String, Value)> {
        let item = self.row.get(self.next)?;
        self.next += 1;
        Some(item)
    }
}

impl<'de> de::MapAccess<'de> for Columns<'de> {
    type Error = DeError;

    fn next_key_seed<K: de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        match self.row.get(self.next) {
            None => Ok(None),
            Some((name, _)) => seed
                .deserialize(de::value::BorrowedStrDeserializer::new(name))
                .map(Some),
        }
    }

    fn next_value_seed<V: de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, DeError> {
        let Some((name, value)) = self.value() else {
            return Err(de::Error::custom(
                "a value was asked for past the last column",
            ));
        };
        seed.deserialize(ValueDe { value })
            .map_err(|e| e.in_column(name))
    }
}

impl<'de> de::SeqAccess<'de> for Columns<'de> {
    type Error = DeError;

    fn next_element_seed<T: de::DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        match self.value() {
            None => Ok(None),
            Some((name, value)) => seed
                .deserialize(ValueDe { value })
                .map(Some)
                .map_err(|e| e.in_column(name)),
        }
    }
}

impl DeError {
    /// The error, said of `column` (the innermost column named wins).
    fn in_column(mut self, column: &str) -> DeError {
        if self.column.is_none() {
            self.column = Some(column.to_owned());
        }
        self
    }
}

/// One column's value.
struct ValueDe<'a> {
    value: &'a Value,
}

fn found(value: &Value) -> String {
    match value {
        Value::Null => "NULL".to_owned(),
        Value::Integer(n) => format!("integer {n}"),
        Value::Real(x) => format!("real {x}"),
        Value::Text(t) if t.chars().count() > 40 => {
            let cut: String = t.chars().take(40).collect();
            format!("text {cut:?}…")
        }
        Value::Text(t) => format!("text {t:?}"),
        Value::Blob(b) => format!("a blob of {} bytes", b.len()),
    }
}

impl<'de> de::Deserializer<'de> for ValueDe<'de> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.value {
            Value::Null => visitor.visit_unit(),
            Value::Integer(n) => visitor.visit_i64(*n),
            Value::Real(x) => visitor.visit_f64(*x),
            Value::Text(t) => visitor.visit_borrowed_str(t),
            Value::Blob(b) => visitor.visit_borrowed_bytes(b),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.value {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.value {
            Value::Integer(0) => visitor.visit_bool(false),
            Value::Integer(1) => visitor.visit_bool(true),
            other => Err(de::Error::custom(format!(
                "expected a boolean (integer 0 or 1), found {}",
                found(other)
            ))),
        }
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.value {
            // An or_set reads as the JSON array of its elements.
            Value::Text(t) => {
                let elements: Vec<serde_json::Value> = serde_json::from_str(t).map_err(|_| {
                    de::Error::custom(format!(
                        "expected a sequence (an or_set's JSON array), found {}",
                        found(self.value)
                    ))
                })?;
                visitor
                    .visit_seq(de::value::SeqDeserializer::new(elements.into_iter()))
                    .map_err(|e: serde_json::Error| de::Error::custom(e))
            }
            Value::Blob(b) => visitor.visit_seq(de::value::SeqDeserializer::new(b.iter().copied())),
            other => Err(de::Error::custom(format!(
                "expected a sequence, found {}",
                found(other)
            ))),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match self.value {
            Value::Text(t) => visitor.visit_enum(t.as_str().into_deserializer()),
            other => Err(de::Error::custom(format!(
                "expected a variant name, found {}",
                found(other)
            ))),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    forward_to_deserialize_any! {
        i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct tuple tuple_struct map struct identifier
        ignored_any
    }
}

/// A row `get` returned for `table`, read as a `T` (`get_as` on the store
/// and on a reader).
pub(crate) fn row_as<T: DeserializeOwned>(
    row: Option<Vec<(String, Value)>>,
    table: &str,
) -> crate::Result<Option<T>> {
    match row {
        None => Ok(None),
        Some(row) => Ok(Some(from_row(&row, &format!("table {table:?}"))?)),
    }
}

/// Runs a read-only `sql` on `conn` and reads each result row as a `T`.
pub(crate) fn query_as<T: DeserializeOwned>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> crate::Result<Vec<T>> {
    let source_of = format!("query {:?}", shorten(sql));
    let mut stmt = conn.prepare(sql)?;
    if !stmt.readonly() {
        return Err(TypedError {
            source_of,
            field: None,
            column: None,
            problem: "query_as runs only statements that read; write through a transaction"
                .to_owned(),
        }
        .into());
    }
    let names: Vec<String> = stmt.column_names().map(str::to_owned).collect();
    let mut rows = stmt.query(params)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let mut values = Vec::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            values.push((name.clone(), Value::from(row.get_ref(i)?)));
        }
        out.push(from_row(&values, &source_of)?);
    }
    Ok(out)
}

fn shorten(sql: &str) -> String {
    let one_line = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(60) {
        None => one_line,
        Some((end, _)) => format!("{}…", &one_line[..end]),
    }
}

impl Store {
    /// A live row read as a `T` (see [`crate::typed`]), or `None` if
    /// there is none.
    ///
    /// ```
    /// # use meldb_store::{Store, schema::Schema};
    /// #[derive(serde::Deserialize)]
    /// struct Todo { id: String, title: String, done: bool, tags: Vec<String> }
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let schema = Schema::from_toml_str(r#"
    ///     name = "todos"
    ///     version = 1
    ///     [[table]]
    ///     name = "todo"
    ///     primary_key = ["id"]
    ///     [[table.column]]
    ///     name = "id"
    ///     type = "text"
    ///     [[table.column]]
    ///     name = "title"
    ///     type = "text"
    ///     [[table.column]]
    ///     name = "done"
    ///     type = "integer"
    ///     [[table.column]]
    ///     name = "tags"
    ///     type = "text"
    ///     kind = "or_set"
    /// "#, "todos.toml")?;
    /// let mut store = Store::open_in_memory(&schema)?;
    /// store.write(|tx| {
    ///     tx.insert("todo", &[("id", "t1".into()), ("title", "milk".into()), ("done", false.into())])?;
    ///     tx.add_to_set("todo", "t1", "tags", "shop")
    /// })?;
    /// let todo: Todo = store.get_as("todo", "t1")?.ok_or("no todo t1")?;
    /// assert_eq!((todo.title.as_str(), todo.done, todo.tags), ("milk", false, vec!["shop".to_string()]));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Store::get`], and [`TypedError`] (as
    /// [`crate::Error::Typed`]) when the row does not fit `T`.
    pub fn get_as<T: DeserializeOwned>(
        &self,
        table: &str,
        key: impl Into<Key>,
    ) -> crate::Result<Option<T>> {
        row_as(self.get(table, key)?, table)
    }

    /// Runs a read-only `sql` and reads each result row as a `T`, fields
    /// by column name (see [`crate::typed`]). An `or_set` column reads as
    /// its JSON array text, which a `Vec<String>` field takes.
    ///
    /// # Errors
    ///
    /// [`TypedError`] (as [`crate::Error::Typed`]) for a statement that
    /// could write or a row that does not fit `T`, naming the column;
    /// [`crate::Error::Storage`] when SQLite fails.
    pub fn query_as<T: DeserializeOwned>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> crate::Result<Vec<T>> {
        query_as(self.conn(), sql, params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Schema;
    use serde::Deserialize;
    use std::collections::BTreeSet;

    type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

    fn store() -> std::result::Result<Store, Box<dyn std::error::Error>> {
        let schema = Schema::from_toml_str(
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
            name = "name"
            type = "text"
            [[table.column]]
            name = "price"
            type = "real"
            [[table.column]]
            name = "stock"
            type = "integer"
            kind = "pn_counter"
            [[table.column]]
            name = "tags"
            type = "text"
            kind = "or_set"
            [[table.column]]
            name = "active"
            type = "integer"
            [[table.column]]
            name = "note"
            type = "text"
            [[table]]
            name = "shelf"
            primary_key = ["room", "slot"]
            [[table.column]]
            name = "room"
            type = "text"
            [[table.column]]
            name = "slot"
            type = "integer"
            [[table.column]]
            name = "sku"
            type = "text"
            "#,
            "shop.toml",
        )?;
        let mut store = Store::open_in_memory(&schema)?;
        store.write(|tx| {
            tx.insert(
                "item",
                &[
                    ("sku", "a1".into()),
                    ("name", "apple".into()),
                    ("price", 0.5.into()),
                    ("active", true.into()),
                ],
            )?;
            tx.increment("item", "a1", "stock", 7)?;
            tx.add_to_set("item", "a1", "tags", "fruit")?;
            tx.add_to_set("item", "a1", "tags", "red")?;
            tx.insert(
                "shelf",
                &[
                    ("room", "b".into()),
                    ("slot", 3.into()),
                    ("sku", "a1".into()),
                ],
            )
        })?;
        Ok(store)
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Item {
        sku: String,
        name: String,
        price: f64,
        stock: i64,
        tags: BTreeSet<String>,
        active: bool,
        note: Option<String>,
    }

    #[test]
    fn a_row_reads_as_a_struct_with_every_kind_of_column() -> TestResult {
        let store = store()?;
        let item: Option<Item> = store.get_as("item", "a1")?;
        assert_eq!(
            item,
            Some(Item {
                sku: "a1".into(),
                name: "apple".into(),
                price: 0.5,
                stock: 7,
                tags: ["fruit".to_string(), "red".to_string()].into(),
                active: true,
                note: None,
            })
        );
        assert_eq!(store.get_as::<Item>("item", "nope")?, None);
        Ok(())
    }

    #[test]
    fn a_composite_key_and_a_query_read_typed_rows() -> TestResult {
        #[derive(Debug, Deserialize, PartialEq)]
        struct Shelf {
            room: String,
            slot: u32,
            sku: String,
        }
        let store = store()?;
        let key = vec![Value::from("b"), Value::from(3)];
        let shelf: Option<Shelf> = store.get_as("shelf", key)?;
        assert_eq!(
            shelf.map(|s| (s.room, s.slot, s.sku)),
            Some(("b".into(), 3, "a1".into()))
        );
        // A join, read as tuples (columns in order) and as a struct.
        let rows: Vec<(String, i64, Vec<String>)> = store.query_as(
            "SELECT s.room, i.stock, i.tags FROM shelf s JOIN item i ON i.sku = s.sku WHERE s.slot = ?1",
            [3],
        )?;
        assert_eq!(
            rows,
            [(
                "b".to_string(),
                7,
                vec!["fruit".to_string(), "red".to_string()]
            )]
        );
        #[derive(Deserialize)]
        struct Named {
            name: String,
        }
        let named: Vec<Named> = store.query_as("SELECT name FROM item", [])?;
        assert_eq!(named.len(), 1);
        assert_eq!(named[0].name, "apple");
        Ok(())
    }

    #[test]
    fn a_value_that_does_not_fit_names_its_column() -> TestResult {
        let store = store()?;
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct WrongPrice {
            price: i64,
        }
        let e = store
            .query_as::<WrongPrice>("SELECT price FROM item", [])
            .err()
            .ok_or("a real in an i64 field")?;
        let shown = e.to_string();
        assert!(shown.contains("column \"price\""), "{shown}");
        assert!(shown.contains("SELECT price FROM item"), "{shown}");
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct NotABool {
            stock: bool,
        }
        let shown = store
            .query_as::<NotABool>("SELECT stock FROM item", [])
            .err()
            .ok_or("7 is not a bool")?
            .to_string();
        assert!(
            shown
                .contains("column \"stock\": expected a boolean (integer 0 or 1), found integer 7"),
            "{shown}"
        );
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct NeedsNote {
            note: String,
        }
        let shown = store
            .get_as::<NeedsNote>("item", "a1")
            .err()
            .ok_or("NULL in a String field")?
            .to_string();
        assert!(
            shown.starts_with("table \"item\", column \"note\""),
            "{shown}"
        );
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Missing {
            colour: String,
        }
        let shown = store
            .get_as::<Missing>("item", "a1")
            .err()
            .ok_or("no colour column")?
            .to_string();
        assert!(shown.contains("missing field `colour`"), "{shown}");
        Ok(())
    }

    #[test]
    fn a_text_column_reads_as_an_enum_by_variant_name() -> TestResult {
        #[derive(Debug, Deserialize, PartialEq)]
        #[serde(rename_all = "lowercase")]
        enum Fruit {
            Apple,
            Pear,
        }
        #[derive(Debug, Deserialize)]
        struct Named {
            name: Fruit,
        }
        let store = store()?;
        let rows: Vec<Named> = store.query_as("SELECT name FROM item", [])?;
        assert_eq!(rows[0].name, Fruit::Apple);
        assert_ne!(rows[0].name, Fruit::Pear);
        Ok(())
    }

    #[test]
    fn query_as_refuses_a_statement_that_writes() -> TestResult {
        let store = store()?;
        let e = store
            .query_as::<(i64,)>("CREATE TEMP TABLE scratch (a INTEGER)", [])
            .err()
            .ok_or("a write through query_as")?;
        assert!(e.to_string().contains("only statements that read"), "{e}");
        let made: Vec<(String,)> = store.query_as(
            "SELECT name FROM sqlite_temp_master WHERE name = 'scratch'",
            [],
        )?;
        assert!(made.is_empty(), "the statement did not run");
        Ok(())
    }
}
