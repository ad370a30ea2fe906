//! A `serde::Serializer` that turns a struct or a map into the named
//! cells of one row: `Vec<(field name, Cell)>`.
//!
//! It knows nothing of the schema: a [`Cell`] is what the Rust value was
//! (an integer, a bool, a sequence, ...), and `typed::write` decides what
//! it means for the column it lands in. The conventions are
//! serde_rusqlite's: `None` and `()` are NULL, a unit enum variant is its
//! name as text, a newtype is what it wraps, `serde_bytes` values are
//! bytes, and an integer beyond SQLite's 64-bit signed range is an error
//! (never a wrapped value).
//!
//! Invariant: only a struct, a map with string keys, or a newtype around
//! either is a row; anything else is an error saying what it was. A field
//! that serde skips (`skip_serializing`, `skip_serializing_if`) is absent,
//! not NULL.

use serde::ser::{self, Impossible, Serialize};
use std::fmt;

/// One field's value, before the column it goes to is known.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cell {
    Null,
    Bool(bool),
    Int(i64),
    Real(f64),
    Text(String),
    Bytes(Vec<u8>),
    Seq(Vec<Cell>),
}

impl Cell {
    /// What the value was, for an error message.
    pub(crate) fn describe(&self) -> String {
        match self {
            Cell::Null => "None (NULL)".to_owned(),
            Cell::Bool(b) => format!("bool {b}"),
            Cell::Int(n) => format!("integer {n}"),
            Cell::Real(x) => format!("real {x}"),
            Cell::Text(t) if t.chars().count() > 40 => {
                let cut: String = t.chars().take(40).collect();
                format!("text {cut:?}…")
            }
            Cell::Text(t) => format!("text {t:?}"),
            Cell::Bytes(b) => format!("{} bytes", b.len()),
            Cell::Seq(items) => format!("a sequence of {} elements", items.len()),
        }
    }
}

/// Why a value is not a row, and in which field, when in one.
#[derive(Debug)]
pub(crate) struct SerError {
    pub field: Option<String>,
    pub problem: String,
}

impl SerError {
    fn in_field(mut self, field: &str) -> SerError {
        if self.field.is_none() {
            self.field = Some(field.to_owned());
        }
        self
    }

    fn not_a_row(what: &str) -> SerError {
        SerError {
            field: None,
            problem: format!(
                "a row to write must be a struct or a map with string keys, not {what}"
            ),
        }
    }

    fn not_a_value(what: &str) -> SerError {
        SerError {
            field: None,
            problem: format!(
                "{what} cannot be a column's value (a column holds a scalar, an Option, a \
                 unit enum variant, bytes, or a sequence for an or_set or a blob)"
            ),
        }
    }
}

impl fmt::Display for SerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.problem)
    }
}

impl std::error::Error for SerError {}

impl ser::Error for SerError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        SerError {
            field: None,
            problem: msg.to_string(),
        }
    }
}

/// `value`'s fields in the order serde gives them.
pub(crate) fn to_cells<T: Serialize + ?Sized>(value: &T) -> Result<Vec<(String, Cell)>, SerError> {
    value.serialize(RowSer)
}

/// The row itself: a struct or a map.
struct RowSer;

/// The fields gathered so far (and, for a map, the key waiting for its
/// value).
#[derive(Default)]
struct Fields {
    cells: Vec<(String, Cell)>,
    key: Option<String>,
}

type RowResult = Result<Vec<(String, Cell)>, SerError>;

impl ser::Serializer for RowSer {
    type Ok = Vec<(String, Cell)>;
    type Error = SerError;
    type SerializeSeq = Impossible<Self::Ok, SerError>;
    type SerializeTuple = Impossible<Self::Ok, SerError>;
    type SerializeTupleStruct = Impossible<Self::Ok, SerError>;
    type SerializeTupleVariant = Impossible<Self::Ok, SerError>;
    type SerializeMap = Fields;
    type SerializeStruct = Fields;
    type SerializeStructVariant = Impossible<Self::Ok, SerError>;

    fn serialize_struct(self, _: &'static str, len: usize) -> Result<Fields, SerError> {
        Ok(Fields {
            cells: Vec::with_capacity(len),
            key: None,
        })
    }

    fn serialize_map(self, len: Option<usize>) -> Result<Fields, SerError> {
        Ok(Fields {
            cells: Vec::with_capacity(len.unwrap_or(0)),
            key: None,
        })
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> RowResult {
        value.serialize(self)
    }

    fn serialize_bool(self, _: bool) -> RowResult {
        Err(SerError::not_a_row("a bool"))
    }
    fn serialize_i8(self, _: i8) -> RowResult {
        Err(SerError::not_a_row("an integer"))
    }
    fn serialize_i16(self, _: i16) -> RowResult {
        Err(SerError::not_a_row("an integer"))
    }
    fn serialize_i32(self, _: i32) -> RowResult {
        Err(SerError::not_a_row("an integer"))
    }
    fn serialize_i64(self, _: i64) -> RowResult {
        Err(SerError::not_a_row("an integer"))
    }
    fn serialize_u8(self, _: u8) -> RowResult {
        Err(SerError::not_a_row("an integer"))
    }
    fn serialize_u16(self, _: u16) -> RowResult {
        Err(SerError::not_a_row("an integer"))
    }
    fn serialize_u32(self, _: u32) -> RowResult {
        Err(SerError::not_a_row("an integer"))
    }
    fn serialize_u64(self, _: u64) -> RowResult {
        Err(SerError::not_a_row("an integer"))
    }
    fn serialize_f32(self, _: f32) -> RowResult {
        Err(SerError::not_a_row("a number"))
    }
    fn serialize_f64(self, _: f64) -> RowResult {
        Err(SerError::not_a_row("a number"))
    }
    fn serialize_char(self, _: char) -> RowResult {
        Err(SerError::not_a_row("a char"))
    }
    fn serialize_str(self, _: &str) -> RowResult {
        Err(SerError::not_a_row("a string"))
    }
    fn serialize_bytes(self, _: &[u8]) -> RowResult {
        Err(SerError::not_a_row("bytes"))
    }
    fn serialize_none(self) -> RowResult {
        Err(SerError::not_a_row("None"))
    }
    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> RowResult {
        Err(SerError::not_a_row("an Option"))
    }
    fn serialize_unit(self) -> RowResult {
        Err(SerError::not_a_row("()"))
    }
    fn serialize_unit_struct(self, name: &'static str) -> RowResult {
        Err(SerError::not_a_row(&format!("the unit struct {name}")))
    }
    fn serialize_unit_variant(
        self,
        name: &'static str,
        _: u32,
        variant: &'static str,
    ) -> RowResult {
        Err(SerError::not_a_row(&format!(
            "the enum variant {name}::{variant}"
        )))
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        _: u32,
        variant: &'static str,
        _: &T,
    ) -> RowResult {
        Err(SerError::not_a_row(&format!(
            "the enum variant {name}::{variant}"
        )))
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, SerError> {
        Err(SerError::not_a_row("a sequence"))
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, SerError> {
        Err(SerError::not_a_row("a tuple"))
    }
    fn serialize_tuple_struct(
        self,
        name: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, SerError> {
        Err(SerError::not_a_row(&format!("the tuple struct {name}")))
    }
    fn serialize_tuple_variant(
        self,
        name: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, SerError> {
        Err(SerError::not_a_row(&format!(
            "the enum variant {name}::{variant}"
        )))
    }
    fn serialize_struct_variant(
        self,
        name: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, SerError> {
        Err(SerError::not_a_row(&format!(
            "the enum variant {name}::{variant}"
        )))
    }
}

impl ser::SerializeStruct for Fields {
    type Ok = Vec<(String, Cell)>;
    type Error = SerError;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), SerError> {
        let cell = value.serialize(CellSer).map_err(|e| e.in_field(key))?;
        self.cells.push((key.to_owned(), cell));
        Ok(())
    }

    fn end(self) -> RowResult {
        Ok(self.cells)
    }
}

impl ser::SerializeMap for Fields {
    type Ok = Vec<(String, Cell)>;
    type Error = SerError;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), SerError> {
        match key.serialize(CellSer) {
            Ok(Cell::Text(name)) => {
                self.key = Some(name);
                Ok(())
            }
            Ok(other) => Err(SerError::not_a_row(&format!(
                "a map whose key is {}",
                other.describe()
            ))),
            Err(_) => Err(SerError::not_a_row("a map whose keys are not strings")),
        }
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), SerError> {
        let Some(key) = self.key.take() else {
            return Err(ser::Error::custom("a map value came without its key"));
        };
        let cell = value.serialize(CellSer).map_err(|e| e.in_field(&key))?;
        self.cells.push((key, cell));
        Ok(())
    }

    fn end(self) -> RowResult {
        Ok(self.cells)
    }
}

/// One field's value.
struct CellSer;

type CellResult = Result<Cell, SerError>;

fn int<N: Copy + fmt::Display>(n: N) -> CellResult
where
    i64: TryFrom<N>,
{
    i64::try_from(n).map(Cell::Int).map_err(|_| SerError {
        field: None,
        problem: format!("{n} is beyond SQLite's 64-bit signed integers"),
    })
}

impl ser::Serializer for CellSer {
    type Ok = Cell;
    type Error = SerError;
    type SerializeSeq = Elements;
    type SerializeTuple = Elements;
    type SerializeTupleStruct = Elements;
    type SerializeTupleVariant = Impossible<Cell, SerError>;
    type SerializeMap = Impossible<Cell, SerError>;
    type SerializeStruct = Impossible<Cell, SerError>;
    type SerializeStructVariant = Impossible<Cell, SerError>;

    fn serialize_bool(self, v: bool) -> CellResult {
        Ok(Cell::Bool(v))
    }
    fn serialize_i8(self, v: i8) -> CellResult {
        Ok(Cell::Int(v.into()))
    }
    fn serialize_i16(self, v: i16) -> CellResult {
        Ok(Cell::Int(v.into()))
    }
    fn serialize_i32(self, v: i32) -> CellResult {
        Ok(Cell::Int(v.into()))
    }
    fn serialize_i64(self, v: i64) -> CellResult {
        Ok(Cell::Int(v))
    }
    fn serialize_i128(self, v: i128) -> CellResult {
        int(v)
    }
    fn serialize_u8(self, v: u8) -> CellResult {
        Ok(Cell::Int(v.into()))
    }
    fn serialize_u16(self, v: u16) -> CellResult {
        Ok(Cell::Int(v.into()))
    }
    fn serialize_u32(self, v: u32) -> CellResult {
        Ok(Cell::Int(v.into()))
    }
    fn serialize_u64(self, v: u64) -> CellResult {
        int(v)
    }
    fn serialize_u128(self, v: u128) -> CellResult {
        int(v)
    }
    fn serialize_f32(self, v: f32) -> CellResult {
        Ok(Cell::Real(v.into()))
    }
    fn serialize_f64(self, v: f64) -> CellResult {
        Ok(Cell::Real(v))
    }
    fn serialize_char(self, v: char) -> CellResult {
        Ok(Cell::Text(v.to_string()))
    }
    fn serialize_str(self, v: &str) -> CellResult {
        Ok(Cell::Text(v.to_owned()))
    }
    fn serialize_bytes(self, v: &[u8]) -> CellResult {
        Ok(Cell::Bytes(v.to_vec()))
    }
    fn serialize_none(self) -> CellResult {
        Ok(Cell::Null)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> CellResult {
        value.serialize(self)
    }
    fn serialize_unit(self) -> CellResult {
        Ok(Cell::Null)
    }
    fn serialize_unit_struct(self, _: &'static str) -> CellResult {
        Ok(Cell::Null)
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, variant: &'static str) -> CellResult {
        Ok(Cell::Text(variant.to_owned()))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> CellResult {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        _: u32,
        variant: &'static str,
        _: &T,
    ) -> CellResult {
        Err(SerError::not_a_value(&format!(
            "the enum variant {name}::{variant} with data"
        )))
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<Elements, SerError> {
        Ok(Elements(Vec::with_capacity(len.unwrap_or(0))))
    }
    fn serialize_tuple(self, len: usize) -> Result<Elements, SerError> {
        Ok(Elements(Vec::with_capacity(len)))
    }
    fn serialize_tuple_struct(self, _: &'static str, len: usize) -> Result<Elements, SerError> {
        Ok(Elements(Vec::with_capacity(len)))
    }
    fn serialize_tuple_variant(
        self,
        name: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, SerError> {
        Err(SerError::not_a_value(&format!(
            "the enum variant {name}::{variant} with data"
        )))
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, SerError> {
        Err(SerError::not_a_value("a map"))
    }
    fn serialize_struct(
        self,
        name: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStruct, SerError> {
        Err(SerError::not_a_value(&format!("the struct {name}")))
    }
    fn serialize_struct_variant(
        self,
        name: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, SerError> {
        Err(SerError::not_a_value(&format!(
            "the enum variant {name}::{variant} with data"
        )))
    }
}

/// A sequence's elements, each a cell.
struct Elements(Vec<Cell>);

impl Elements {
    fn push<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), SerError> {
        match value.serialize(CellSer)? {
            Cell::Seq(_) => Err(SerError::not_a_value("a sequence of sequences")),
            cell => {
                self.0.push(cell);
                Ok(())
            }
        }
    }
}

impl ser::SerializeSeq for Elements {
    type Ok = Cell;
    type Error = SerError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), SerError> {
        self.push(value)
    }
    fn end(self) -> CellResult {
        Ok(Cell::Seq(self.0))
    }
}

impl ser::SerializeTuple for Elements {
    type Ok = Cell;
    type Error = SerError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), SerError> {
        self.push(value)
    }
    fn end(self) -> CellResult {
        Ok(Cell::Seq(self.0))
    }
}

impl ser::SerializeTupleStruct for Elements {
    type Ok = Cell;
    type Error = SerError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), SerError> {
        self.push(value)
    }
    fn end(self) -> CellResult {
        Ok(Cell::Seq(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;
    use std::collections::{BTreeMap, BTreeSet};

    #[derive(Serialize)]
    #[serde(rename_all = "lowercase")]
    enum State {
        Open,
    }

    #[derive(Serialize)]
    struct Id(String);

    #[derive(Serialize)]
    struct Row {
        id: Id,
        n: u8,
        x: f32,
        ok: bool,
        note: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        skipped: Option<String>,
        state: State,
        tags: BTreeSet<String>,
        pair: (i32, i32),
    }

    #[test]
    fn a_struct_is_its_fields_in_order_and_a_skipped_field_is_absent() -> Result<(), SerError> {
        let row = Row {
            id: Id("a".into()),
            n: 7,
            x: 0.5,
            ok: true,
            note: None,
            skipped: None,
            state: State::Open,
            tags: ["b".to_string(), "a".to_string()].into(),
            pair: (1, -2),
        };
        let cells = to_cells(&row)?;
        let names: Vec<&str> = cells.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["id", "n", "x", "ok", "note", "state", "tags", "pair"]
        );
        let values: Vec<Cell> = cells.into_iter().map(|(_, c)| c).collect();
        assert_eq!(
            values,
            [
                Cell::Text("a".into()),
                Cell::Int(7),
                Cell::Real(0.5),
                Cell::Bool(true),
                Cell::Null,
                Cell::Text("open".into()),
                Cell::Seq(vec![Cell::Text("a".into()), Cell::Text("b".into())]),
                Cell::Seq(vec![Cell::Int(1), Cell::Int(-2)]),
            ]
        );
        Ok(())
    }

    #[test]
    fn a_map_with_string_keys_is_a_row_and_other_shapes_are_not() -> Result<(), SerError> {
        let map: BTreeMap<&str, i64> = [("a", 1), ("b", 2)].into();
        assert_eq!(
            to_cells(&map)?,
            [
                ("a".to_string(), Cell::Int(1)),
                ("b".to_string(), Cell::Int(2))
            ]
        );
        for (problem, what) in [
            (to_cells(&vec![1, 2]).err(), "a sequence"),
            (to_cells(&(1, "a")).err(), "a tuple"),
            (to_cells(&5).err(), "an integer"),
            (
                to_cells(&BTreeMap::from([(1, 2)])).err(),
                "a map whose key is integer 1",
            ),
        ] {
            let problem = problem.map(|e| e.problem).unwrap_or_default();
            assert!(problem.contains(what), "{problem}");
            assert!(problem.contains("must be a struct or a map"), "{problem}");
        }
        Ok(())
    }

    #[test]
    fn a_value_no_column_holds_names_its_field() {
        #[derive(Serialize)]
        struct Inner {
            a: i64,
        }
        #[derive(Serialize)]
        struct Outer {
            inner: Inner,
        }
        #[derive(Serialize)]
        struct Big {
            n: u64,
        }
        let e = to_cells(&Outer {
            inner: Inner { a: 1 },
        })
        .err();
        let e = e.map(|e| (e.field, e.problem)).unwrap_or_default();
        assert_eq!(e.0.as_deref(), Some("inner"));
        assert!(
            e.1.contains("the struct Inner cannot be a column's value"),
            "{}",
            e.1
        );
        let e = to_cells(&Big { n: u64::MAX }).err();
        let e = e.map(|e| (e.field, e.problem)).unwrap_or_default();
        assert_eq!(e.0.as_deref(), Some("n"));
        assert!(e.1.contains("beyond SQLite's 64-bit"), "{}", e.1);
    }
}
