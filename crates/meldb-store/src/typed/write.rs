//! Typed writes: a `serde::Serialize` struct or map written as one row
//! ([`Transaction::insert_row`], [`Transaction::upsert_row`],
//! [`Transaction::update_row`]).
//!
//! `ser` turns the value into named cells; this module binds each cell to
//! the table's column of the same name (case-insensitive, as every write
//! is; `#[serde(rename)]` picks another, and a field is named in errors as
//! serde names it, the only name a serializer sees) and converts it as the column's
//! kind and type say, then hands the row to the untyped write of the same
//! name, which checks and writes it as it checks any write:
//!
//! - an `lww` column takes its SQL type: an integer (or a `bool`, as 0
//!   or 1) for `integer`, a number for `real`, a string, `char` or unit
//!   enum variant (its name) for `text`, bytes (`Vec<u8>`, `serde_bytes`)
//!   for `blob`; `None` is NULL, refused for a NOT NULL column;
//! - an `or_set` column takes a sequence of strings (`Vec<String>`,
//!   `BTreeSet<String>`, `HashSet<String>`, ...) and becomes exactly it;
//! - a counter takes an `i64`: on `insert_row` its initial amount, as
//!   [`Transaction::insert`] takes it. `upsert_row` and `update_row`
//!   refuse a counter field, as [`Transaction::upsert`] and
//!   [`Transaction::update`] refuse to assign a counter (its value is a
//!   sum of increments, not a register): increment it with
//!   [`Transaction::increment`], and leave the field out of the value
//!   written (`#[serde(skip_serializing)]`, or a struct of its own).
//!
//! A field serde skips (`skip_serializing`, `skip_serializing_if =
//! "Option::is_none"`) is not written at all: on `update_row` its column
//! keeps its value, while a `None` that is serialized sets it NULL.
//!
//! Invariant: nothing is written unless every field has found its column
//! and fits it; a field that does not is a [`TypedError`] naming the
//! table, the field and (when there is one) the column.

use super::ser::{to_cells, Cell, SerError};
use super::TypedError;
use crate::error::Result;
use crate::schema::{Column, Kind, SqlType, Table};
use crate::store::Transaction;
use crate::value::{Key, Value};
use serde::Serialize;

/// Which typed write is binding its row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Insert,
    Upsert,
    Update,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::Insert => "insert_row",
            Method::Upsert => "upsert_row",
            Method::Update => "update_row",
        }
    }
}

/// One field, bound to its column (`index` into the table's columns).
struct Bound {
    index: usize,
    column: String,
    value: Value,
}

impl<'s> Transaction<'s> {
    /// Inserts `row`, a struct or a map whose fields name the table's
    /// columns (see [`crate::typed`]'s `write`): the key columns, composite
    /// ones included, are fields like any other; columns it leaves out get
    /// their default, as with [`Transaction::insert`]. A counter field is
    /// the counter's initial amount; an `or_set` field is a sequence of
    /// strings; a `bool` is 0 or 1; `None` is NULL.
    ///
    /// ```
    /// # use meldb_store::{Store, schema::Schema};
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Serialize, Deserialize, Debug, PartialEq)]
    /// struct Todo { id: String, title: String, done: bool, tags: Vec<String>, due: Option<i64> }
    ///
    /// /// Only the fields present are written by `update_row`.
    /// #[derive(Serialize)]
    /// struct Finish<'a> { id: &'a str, done: bool }
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
    ///     [[table.column]]
    ///     name = "due"
    ///     type = "integer"
    /// "#, "todos.toml")?;
    /// let mut store = Store::open_in_memory(&schema)?;
    /// let milk = Todo { id: "t1".into(), title: "milk".into(), done: false, tags: vec!["shop".into()], due: None };
    /// store.write(|tx| tx.insert_row("todo", &milk))?;
    /// store.write(|tx| tx.update_row("todo", &Finish { id: "t1", done: true }))?;
    /// let todo: Todo = store.get_as("todo", "t1")?.ok_or("no todo t1")?;
    /// assert_eq!(todo, Todo { done: true, ..milk });
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`TypedError`] (as [`crate::Error::Typed`]) for a `row` that is not
    /// a struct or a map, a field naming no column (the error names the
    /// field and the table) or a value that does not fit its column (the
    /// field and the column); then what [`Transaction::insert`] returns
    /// (an existing key, a missing key column, a policy, ...). Nothing is
    /// written on an error.
    pub fn insert_row<T: Serialize + ?Sized>(&mut self, table: &str, row: &T) -> Result<()> {
        let bound = bind(self.table_schema(table)?, row, Method::Insert)?;
        let (names, values) = split(bound);
        self.insert(table, &pairs(&names, values))
    }

    /// Inserts `row`, or, if its key is live, sets the columns its fields
    /// name (fields as in [`Transaction::insert_row`]). A counter field is
    /// refused, as [`Transaction::upsert`] refuses one: leave it out and
    /// use [`Transaction::increment`].
    ///
    /// # Errors
    ///
    /// As [`Transaction::insert_row`], and [`TypedError`] naming a counter
    /// field and its column; then what [`Transaction::upsert`] returns.
    pub fn upsert_row<T: Serialize + ?Sized>(&mut self, table: &str, row: &T) -> Result<()> {
        let bound = bind(self.table_schema(table)?, row, Method::Upsert)?;
        let (names, values) = split(bound);
        self.upsert(table, &pairs(&names, values))
    }

    /// Updates the live row whose key `row`'s key fields give, setting
    /// only the columns of the fields present: a field serde skips
    /// (`#[serde(skip_serializing_if = "Option::is_none")]`) leaves its
    /// column as it is, a `None` that is serialized sets it NULL, and an
    /// `or_set` field becomes exactly the given elements. A counter field
    /// is refused, as [`Transaction::update`] refuses to assign a counter:
    /// use [`Transaction::increment`]. A row of key fields only writes
    /// nothing but the row's new version, as `update` with no columns does.
    ///
    /// # Errors
    ///
    /// As [`Transaction::upsert_row`], [`TypedError`] naming a key column
    /// no field gives; then what [`Transaction::update`] returns (no live
    /// row with that key, ...).
    pub fn update_row<T: Serialize + ?Sized>(&mut self, table: &str, row: &T) -> Result<()> {
        let schema = self.table_schema(table)?;
        let bound = bind(schema, row, Method::Update)?;
        let mut key = Vec::with_capacity(schema.primary_key.len());
        for &k in &schema.primary_key {
            match bound.iter().find(|b| b.index == k) {
                Some(b) => key.push(b.value.clone()),
                None => {
                    return Err(TypedError {
                        source_of: format!("table {table:?}"),
                        field: None,
                        column: Some(schema.columns[k].name.clone()),
                        problem: "update_row finds its row by the key, and no field gives \
                                  this key column"
                            .to_owned(),
                    }
                    .into())
                }
            }
        }
        let values: Vec<Bound> = bound
            .into_iter()
            .filter(|b| !schema.primary_key.contains(&b.index))
            .collect();
        let (names, values) = split(values);
        self.update(table, Key::from(key), &pairs(&names, values))
    }
}

fn split(bound: Vec<Bound>) -> (Vec<String>, Vec<Value>) {
    bound.into_iter().map(|b| (b.column, b.value)).unzip()
}

fn pairs(names: &[String], values: Vec<Value>) -> Vec<(&str, Value)> {
    names.iter().map(String::as_str).zip(values).collect()
}

/// `row`'s fields, each bound to its column of `table` and converted for
/// it (see the module doc).
fn bind<T: Serialize + ?Sized>(
    table: &Table,
    row: &T,
    method: Method,
) -> std::result::Result<Vec<Bound>, TypedError> {
    let source_of = format!("table {:?}", table.name);
    let cells = to_cells(row).map_err(|SerError { field, problem }| TypedError {
        source_of: source_of.clone(),
        column: field
            .as_ref()
            .and_then(|f| table.column(f))
            .map(|(_, c)| c.name.clone()),
        field,
        problem,
    })?;
    let mut seen = vec![false; table.columns.len()];
    let mut bound = Vec::with_capacity(cells.len());
    for (field, cell) in cells {
        let Some((index, column)) = table.column(&field) else {
            let names: Vec<&str> = table.columns.iter().map(|c| c.name.as_str()).collect();
            return Err(TypedError {
                source_of,
                field: Some(field),
                column: None,
                problem: format!(
                    "the table has no column of that name (its columns: {})",
                    names.join(", ")
                ),
            });
        };
        let refuse = |problem: String| TypedError {
            source_of: source_of.clone(),
            field: Some(field.clone()),
            column: Some(column.name.clone()),
            problem,
        };
        if std::mem::replace(&mut seen[index], true) {
            return Err(refuse("another field already names this column".to_owned()));
        }
        let counter = matches!(column.kind, Kind::GCounter | Kind::PnCounter);
        if counter && method != Method::Insert {
            return Err(refuse(format!(
                "{} cannot assign a {} (its value is a sum of increments): increment it with \
                 Transaction::increment and leave the field out of the value written \
                 (#[serde(skip_serializing)])",
                method.name(),
                column.kind.name()
            )));
        }
        let value = value_of(column, cell).map_err(refuse)?;
        bound.push(Bound {
            index,
            column: column.name.clone(),
            value,
        });
    }
    Ok(bound)
}

/// `cell` as a value of `column`, or what is wrong with it.
fn value_of(column: &Column, cell: Cell) -> std::result::Result<Value, String> {
    if cell == Cell::Null {
        return match (column.nullable, column.kind) {
            (true, _) => Ok(Value::Null),
            (false, Kind::Lww) => Err("found None (NULL), but the column is NOT NULL".to_owned()),
            (false, kind) => Err(format!(
                "found None (NULL), but {} {} is never NULL: leave the field out instead \
                 (#[serde(skip_serializing_if = \"Option::is_none\")])",
                kind.article(),
                kind.name()
            )),
        };
    }
    match column.kind {
        Kind::Lww => register(column.sql_type, cell),
        Kind::OrSet => set_elements(cell),
        Kind::GCounter | Kind::PnCounter => match cell {
            Cell::Int(n) => Ok(Value::Integer(n)),
            other => Err(format!(
                "expected an integer (the {}'s amount), found {}",
                column.kind.name(),
                other.describe()
            )),
        },
        other => Err(format!("typed writes do not know {} columns", other.name())),
    }
}

/// An `lww` column's value, by its SQL type.
fn register(sql_type: SqlType, cell: Cell) -> std::result::Result<Value, String> {
    let expected = match (sql_type, cell) {
        (SqlType::Integer, Cell::Int(n)) => return Ok(Value::Integer(n)),
        (SqlType::Integer, Cell::Bool(b)) => return Ok(Value::Integer(i64::from(b))),
        (SqlType::Real, Cell::Real(x)) if x.is_nan() => {
            return Err("found NaN, which no column holds".to_owned())
        }
        (SqlType::Real, Cell::Real(x)) => return Ok(Value::Real(x)),
        (SqlType::Real, Cell::Int(n)) => return Ok(Value::Integer(n)),
        (SqlType::Text, Cell::Text(t)) => return Ok(Value::Text(t)),
        (SqlType::Blob, Cell::Bytes(b)) => return Ok(Value::Blob(b)),
        (SqlType::Blob, Cell::Seq(items)) => return blob(items),
        (SqlType::Integer, other) => ("an integer or a bool", other),
        (SqlType::Real, other) => ("a number", other),
        (SqlType::Text, other) => ("a string, a char or a unit enum variant", other),
        (SqlType::Blob, other) => ("bytes (Vec<u8>, serde_bytes)", other),
    };
    let (wanted, found) = expected;
    Err(format!(
        "expected {wanted} (the column is {}), found {}",
        sql_type.sql(),
        found.describe()
    ))
}

/// A `Vec<u8>` serializes as a sequence of integers.
fn blob(items: Vec<Cell>) -> std::result::Result<Value, String> {
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            match item {
                Cell::Int(n) => u8::try_from(n).map_err(|_| n.to_string()),
                other => Err(other.describe()),
            }
            .map_err(|found| format!("expected bytes for a BLOB column; element {i} is {found}"))
        })
        .collect::<std::result::Result<Vec<u8>, String>>()
        .map(Value::Blob)
}

/// An `or_set`'s content, as the JSON array of strings the untyped writes
/// take.
fn set_elements(cell: Cell) -> std::result::Result<Value, String> {
    let Cell::Seq(items) = cell else {
        return Err(format!(
            "expected a sequence of strings (Vec<String>, BTreeSet<String>, HashSet<String>) \
             for an or_set, found {}",
            cell.describe()
        ));
    };
    let elements = items
        .into_iter()
        .enumerate()
        .map(|(i, item)| match item {
            Cell::Text(t) => Ok(t),
            other => Err(format!(
                "an or_set holds strings; element {i} is {}",
                other.describe()
            )),
        })
        .collect::<std::result::Result<Vec<String>, String>>()?;
    serde_json::to_string(&elements)
        .map(Value::Text)
        .map_err(|e| format!("the elements cannot be written as JSON: {e}"))
}

#[cfg(test)]
mod tests {
    use crate::error::{Error, WriteError};
    use crate::schema::Schema;
    use crate::store::Store;
    use crate::value::Value;
    use serde::{Deserialize, Serialize};
    use std::collections::{BTreeMap, BTreeSet, HashSet};

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
            name = "qty"
            type = "integer"
            [[table.column]]
            name = "price"
            type = "real"
            [[table.column]]
            name = "photo"
            type = "blob"
            [[table.column]]
            name = "active"
            type = "integer"
            [[table.column]]
            name = "note"
            type = "text"
            [[table.column]]
            name = "stock"
            type = "integer"
            kind = "pn_counter"
            [[table.column]]
            name = "sold"
            type = "integer"
            kind = "g_counter"
            [[table.column]]
            name = "tags"
            type = "text"
            kind = "or_set"
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
            nullable = false
            [[table.column]]
            name = "labels"
            type = "text"
            kind = "or_set"
            "#,
            "shop.toml",
        )?;
        Ok(Store::open_in_memory(&schema)?)
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Item {
        sku: String,
        name: String,
        qty: i32,
        price: f64,
        photo: Vec<u8>,
        active: bool,
        note: Option<String>,
        stock: i64,
        sold: i64,
        tags: Vec<String>,
    }

    fn apple() -> Item {
        Item {
            sku: "a1".into(),
            name: "apple".into(),
            qty: -3,
            price: 0.5,
            photo: vec![0, 1, 255],
            active: true,
            note: None,
            stock: 7,
            sold: 2,
            tags: vec!["fruit".into(), "red".into()],
        }
    }

    /// `e`'s message, checked to be a typed error (not a write error).
    fn typed_message(e: Option<Error>) -> String {
        match e {
            Some(Error::Typed(e)) => e.to_string(),
            other => format!("not a TypedError: {other:?}"),
        }
    }

    #[test]
    fn every_column_kind_round_trips_through_insert_row_and_get_as() -> TestResult {
        let mut store = store()?;
        let apple = apple();
        let pear = Item {
            sku: "p1".into(),
            name: "pear".into(),
            qty: 0,
            price: 2.0,
            photo: Vec::new(),
            active: false,
            note: Some("ripe".into()),
            stock: -4,
            sold: 0,
            tags: Vec::new(),
        };
        store.write(|tx| {
            tx.insert_row("item", &apple)?;
            tx.insert_row("item", &pear)
        })?;
        assert_eq!(store.get_as::<Item>("item", "a1")?, Some(apple));
        assert_eq!(store.get_as::<Item>("item", "p1")?, Some(pear));
        // The stored values are SQLite's: the bool an integer, the set JSON.
        let row = store.get("item", "a1")?.ok_or("no a1")?;
        let active = row.iter().find(|(n, _)| n == "active").map(|(_, v)| v);
        assert_eq!(active, Some(&Value::Integer(1)));
        // The counters are counters: an increment adds to the initial amount.
        store.write(|tx| tx.increment("item", "a1", "stock", 3))?;
        let item: Item = store.get_as("item", "a1")?.ok_or("no a1")?;
        assert_eq!(item.stock, 10);
        Ok(())
    }

    #[test]
    fn an_or_set_is_written_from_a_btreeset_a_hashset_or_a_map_field() -> TestResult {
        #[derive(Serialize)]
        struct Tagged<S> {
            sku: &'static str,
            name: &'static str,
            tags: S,
        }
        #[derive(Debug, PartialEq, Deserialize)]
        struct Tags {
            tags: BTreeSet<String>,
        }
        let mut store = store()?;
        let set: BTreeSet<String> = ["b".to_string(), "a".to_string()].into();
        let hashed: HashSet<&str> = ["z", "y", "z"].into();
        store.write(|tx| {
            tx.insert_row(
                "item",
                &Tagged {
                    sku: "s1",
                    name: "one",
                    tags: set.clone(),
                },
            )?;
            tx.insert_row(
                "item",
                &Tagged {
                    sku: "s2",
                    name: "two",
                    tags: hashed,
                },
            )
        })?;
        assert_eq!(store.get_as("item", "s1")?, Some(Tags { tags: set }));
        let two: Tags = store.get_as("item", "s2")?.ok_or("no s2")?;
        assert_eq!(two.tags, ["y".to_string(), "z".to_string()].into());
        // A map is a row too (`Value`s are not Serialize; serde_json's are).
        let row: BTreeMap<&str, serde_json::Value> = [
            ("sku", "m1".into()),
            ("name", "map".into()),
            ("qty", 5.into()),
            ("tags", serde_json::json!(["x"])),
        ]
        .into();
        store.write(|tx| tx.insert_row("item", &row))?;
        let (qty, tags): (i64, Vec<String>) = store
            .query_as("SELECT qty, tags FROM item WHERE sku = 'm1'", [])?
            .pop()
            .ok_or("no m1")?;
        assert_eq!((qty, tags), (5, vec!["x".to_string()]));
        Ok(())
    }

    #[test]
    fn a_composite_key_is_given_by_its_fields_in_every_typed_write() -> TestResult {
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        struct Shelf {
            slot: u16,
            room: String,
            sku: String,
            labels: BTreeSet<String>,
        }
        #[derive(Serialize)]
        struct Move<'a> {
            room: &'a str,
            slot: u16,
            sku: &'a str,
        }
        let mut store = store()?;
        let b3 = Shelf {
            slot: 3,
            room: "b".into(),
            sku: "a1".into(),
            labels: ["top".to_string()].into(),
        };
        store.write(|tx| tx.insert_row("shelf", &b3))?;
        let key = vec![Value::from("b"), Value::from(3)];
        assert_eq!(
            store.get_as::<Shelf>("shelf", key.clone())?,
            Some(b3.clone())
        );
        store.write(|tx| {
            tx.update_row(
                "shelf",
                &Move {
                    room: "b",
                    slot: 3,
                    sku: "p1",
                },
            )
        })?;
        let moved: Shelf = store.get_as("shelf", key.clone())?.ok_or("no b3")?;
        assert_eq!(
            moved,
            Shelf {
                sku: "p1".into(),
                ..b3.clone()
            }
        );
        // upsert_row: a new composite key inserts, a live one updates.
        store.write(|tx| {
            tx.upsert_row(
                "shelf",
                &Move {
                    room: "c",
                    slot: 1,
                    sku: "x",
                },
            )?;
            tx.upsert_row(
                "shelf",
                &Move {
                    room: "b",
                    slot: 3,
                    sku: "y",
                },
            )
        })?;
        let c1: Option<Shelf> = store.get_as("shelf", vec![Value::from("c"), Value::from(1)])?;
        assert_eq!(c1.map(|s| (s.sku, s.labels.len())), Some(("x".into(), 0)));
        let b3: Shelf = store.get_as("shelf", key)?.ok_or("no b3")?;
        assert_eq!((b3.sku.as_str(), b3.labels.len()), ("y", 1));
        // update_row needs every key field.
        #[derive(Serialize)]
        struct NoSlot {
            room: &'static str,
            sku: &'static str,
        }
        let shown = typed_message(
            store
                .write(|tx| {
                    tx.update_row(
                        "shelf",
                        &NoSlot {
                            room: "b",
                            sku: "z",
                        },
                    )
                })
                .err(),
        );
        assert!(
            shown.starts_with(
                "table \"shelf\", column \"slot\": update_row finds its row by the key"
            ),
            "{shown}"
        );
        Ok(())
    }

    #[test]
    fn update_row_touches_only_the_fields_present() -> TestResult {
        #[derive(Serialize, Default)]
        struct Patch {
            sku: &'static str,
            #[serde(skip_serializing_if = "Option::is_none")]
            name: Option<&'static str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            price: Option<f64>,
            #[serde(skip_serializing_if = "Option::is_none")]
            tags: Option<Vec<&'static str>>,
        }
        #[derive(Serialize)]
        struct ClearNote {
            sku: &'static str,
            note: Option<String>,
        }
        let mut store = store()?;
        let apple = Item {
            note: Some("crisp".into()),
            ..apple()
        };
        store.write(|tx| tx.insert_row("item", &apple))?;
        store.write(|tx| {
            tx.update_row(
                "item",
                &Patch {
                    sku: "a1",
                    price: Some(0.75),
                    ..Patch::default()
                },
            )
        })?;
        let after: Item = store.get_as("item", "a1")?.ok_or("no a1")?;
        assert_eq!(
            after,
            Item {
                price: 0.75,
                ..apple.clone()
            }
        );
        // A set field becomes exactly its elements; a serialized None is NULL.
        store.write(|tx| {
            tx.update_row(
                "item",
                &Patch {
                    sku: "a1",
                    name: Some("green apple"),
                    tags: Some(vec!["green"]),
                    ..Patch::default()
                },
            )?;
            tx.update_row(
                "item",
                &ClearNote {
                    sku: "a1",
                    note: None,
                },
            )
        })?;
        let after: Item = store.get_as("item", "a1")?.ok_or("no a1")?;
        assert_eq!(
            after,
            Item {
                name: "green apple".into(),
                price: 0.75,
                tags: vec!["green".into()],
                note: None,
                ..apple
            }
        );
        // An update of a key that is not there is the untyped update's error.
        let e = store
            .write(|tx| {
                tx.update_row(
                    "item",
                    &Patch {
                        sku: "nope",
                        ..Patch::default()
                    },
                )
            })
            .err();
        assert!(
            matches!(e, Some(Error::Write(WriteError::RowNotFound { .. }))),
            "{e:?}"
        );
        Ok(())
    }

    #[test]
    fn upsert_row_inserts_then_updates_and_counters_are_refused_outside_insert_row() -> TestResult {
        #[derive(Serialize)]
        struct Named {
            sku: &'static str,
            name: &'static str,
            active: bool,
        }
        let mut store = store()?;
        store.write(|tx| {
            tx.upsert_row(
                "item",
                &Named {
                    sku: "u1",
                    name: "first",
                    active: false,
                },
            )
        })?;
        store.write(|tx| {
            tx.upsert_row(
                "item",
                &Named {
                    sku: "u1",
                    name: "second",
                    active: true,
                },
            )
        })?;
        let rows: Vec<(String, bool, i64)> =
            store.query_as("SELECT name, active, stock FROM item WHERE sku = 'u1'", [])?;
        assert_eq!(rows, [("second".to_string(), true, 0)]);
        // A struct with a counter field is refused by upsert_row and
        // update_row, naming the field and the way to change a counter.
        let mut apple = apple();
        store.write(|tx| tx.insert_row("item", &apple))?;
        apple.name = "renamed".into();
        for e in [
            store.write(|tx| tx.upsert_row("item", &apple)).err(),
            store.write(|tx| tx.update_row("item", &apple)).err(),
        ] {
            let shown = typed_message(e);
            assert!(
                shown.contains("table \"item\", field \"stock\" (column \"stock\")"),
                "{shown}"
            );
            assert!(shown.contains("cannot assign a pn_counter"), "{shown}");
            assert!(shown.contains("Transaction::increment"), "{shown}");
        }
        let name: Vec<(String,)> = store.query_as("SELECT name FROM item WHERE sku = 'a1'", [])?;
        assert_eq!(name, [("apple".to_string(),)], "nothing was written");
        Ok(())
    }

    #[test]
    fn an_unknown_field_names_itself_and_the_table() -> TestResult {
        #[derive(Serialize)]
        struct Coloured {
            sku: &'static str,
            name: &'static str,
            colour: &'static str,
        }
        let mut store = store()?;
        let shown = typed_message(
            store
                .write(|tx| {
                    tx.insert_row(
                        "item",
                        &Coloured {
                            sku: "c1",
                            name: "c",
                            colour: "red",
                        },
                    )
                })
                .err(),
        );
        assert!(
            shown.starts_with("table \"item\", field \"colour\": the table has no column"),
            "{shown}"
        );
        assert!(shown.contains("sku, name, qty"), "{shown}");
        assert_eq!(store.get("item", "c1")?, None);
        // An unknown table is the untyped writes' error.
        let e = store.write(|tx| tx.insert_row("nope", &apple())).err();
        assert!(
            matches!(e, Some(Error::Write(WriteError::UnknownTable { .. }))),
            "{e:?}"
        );
        Ok(())
    }

    #[test]
    fn a_value_of_the_wrong_kind_names_the_field_and_the_column() -> TestResult {
        #[derive(Serialize)]
        struct Row<A, B> {
            sku: &'static str,
            name: &'static str,
            qty: A,
            tags: B,
        }
        let mut store = store()?;
        let cases: Vec<(Option<Error>, &str)> = vec![
            (
                store
                    .write(|tx| tx.insert_row("item", &Row { sku: "w", name: "w", qty: "many", tags: ["a"] }))
                    .err(),
                "field \"qty\" (column \"qty\"): expected an integer or a bool (the column is INTEGER), found text \"many\"",
            ),
            (
                store
                    .write(|tx| tx.insert_row("item", &Row { sku: "w", name: "w", qty: 1, tags: "a" }))
                    .err(),
                "field \"tags\" (column \"tags\"): expected a sequence of strings",
            ),
            (
                store
                    .write(|tx| tx.insert_row("item", &Row { sku: "w", name: "w", qty: 1, tags: [1, 2] }))
                    .err(),
                "field \"tags\" (column \"tags\"): an or_set holds strings; element 0 is integer 1",
            ),
            (
                store
                    .write(|tx| tx.insert_row("item", &Row { sku: "w", name: "w", qty: 1.5, tags: ["a"] }))
                    .err(),
                "column \"qty\"): expected an integer or a bool (the column is INTEGER), found real 1.5",
            ),
            (
                store
                    .write(|tx| {
                        tx.insert_row("item", &Row { sku: "w", name: "w", qty: 1, tags: None::<Vec<String>> })
                    })
                    .err(),
                "field \"tags\" (column \"tags\"): found None (NULL), but an or_set is never NULL",
            ),
        ];
        for (e, wanted) in cases {
            let shown = typed_message(e);
            assert!(shown.starts_with("table \"item\", "), "{shown}");
            assert!(shown.contains(wanted), "{shown}\nwanted: {wanted}");
        }
        // A counter takes an integer; a NOT NULL lww column refuses None.
        #[derive(Serialize)]
        struct Stock {
            sku: &'static str,
            name: &'static str,
            stock: f64,
        }
        let shown = typed_message(
            store
                .write(|tx| {
                    tx.insert_row(
                        "item",
                        &Stock {
                            sku: "w",
                            name: "w",
                            stock: 1.0,
                        },
                    )
                })
                .err(),
        );
        assert!(
            shown.contains("field \"stock\" (column \"stock\"): expected an integer (the pn_counter's amount), found real 1"),
            "{shown}"
        );
        #[derive(Serialize)]
        struct Shelf {
            room: &'static str,
            slot: i64,
            sku: Option<String>,
        }
        let shown = typed_message(
            store
                .write(|tx| {
                    tx.insert_row(
                        "shelf",
                        &Shelf {
                            room: "r",
                            slot: 1,
                            sku: None,
                        },
                    )
                })
                .err(),
        );
        assert!(
            shown.contains("table \"shelf\", field \"sku\" (column \"sku\"): found None (NULL), but the column is NOT NULL"),
            "{shown}"
        );
        // A field is named as serde names it (after a rename), which may
        // differ from the column's spelling.
        #[derive(Serialize)]
        struct Renamed {
            sku: &'static str,
            #[serde(rename = "QTY")]
            quantity: &'static str,
        }
        let shown = typed_message(
            store
                .write(|tx| {
                    tx.insert_row(
                        "item",
                        &Renamed {
                            sku: "w",
                            quantity: "x",
                        },
                    )
                })
                .err(),
        );
        assert!(shown.contains("field \"QTY\" (column \"qty\")"), "{shown}");
        assert_eq!(store.get("item", "w")?, None, "nothing was written");
        Ok(())
    }

    #[test]
    fn a_value_that_is_not_a_struct_or_map_is_refused_clearly() -> TestResult {
        let mut store = store()?;
        for (e, what) in [
            (
                store
                    .write(|tx| tx.insert_row("item", &("a1", "apple")))
                    .err(),
                "not a tuple",
            ),
            (
                store.write(|tx| tx.insert_row("item", &vec!["a1"])).err(),
                "not a sequence",
            ),
            (
                store.write(|tx| tx.upsert_row("item", "a1")).err(),
                "not a string",
            ),
            (
                store.write(|tx| tx.update_row("item", &7)).err(),
                "not an integer",
            ),
        ] {
            let shown = typed_message(e);
            assert!(
                shown.starts_with("table \"item\": a row to write must be a struct or a map"),
                "{shown}"
            );
            assert!(shown.contains(what), "{shown}");
        }
        // A field that is itself a struct names the field.
        #[derive(Serialize)]
        struct Inner {
            first: &'static str,
        }
        #[derive(Serialize)]
        struct Nested {
            sku: &'static str,
            name: Inner,
        }
        let shown = typed_message(
            store
                .write(|tx| {
                    tx.insert_row(
                        "item",
                        &Nested {
                            sku: "n",
                            name: Inner { first: "x" },
                        },
                    )
                })
                .err(),
        );
        assert!(
            shown.starts_with("table \"item\", field \"name\" (column \"name\"): the struct Inner cannot be a column's value"),
            "{shown}"
        );
        Ok(())
    }

    #[test]
    fn two_fields_naming_one_column_are_refused() -> TestResult {
        let mut store = store()?;
        let row: BTreeMap<&str, &str> = [("sku", "d"), ("name", "x"), ("NAME", "y")].into();
        let shown = typed_message(store.write(|tx| tx.insert_row("item", &row)).err());
        assert!(
            shown.contains("another field already names this column"),
            "{shown}"
        );
        Ok(())
    }
}
