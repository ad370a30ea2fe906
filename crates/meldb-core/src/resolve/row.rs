//! [`Row`]: a row as resolvers and the conflict log see it, column names
//! with the values users read (counters as integers, sets as JSON arrays).

use crate::value::Value;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{json, Map, Value as Json};

/// A row's columns, in schema order, as users read them.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    columns: Vec<(String, Value)>,
}

impl Row {
    /// A row from `(column, value)` pairs.
    pub fn new(columns: Vec<(String, Value)>) -> Row {
        Row { columns }
    }

    /// The value of `column` (names compare case-insensitively).
    pub fn get(&self, column: &str) -> Option<&Value> {
        self.columns
            .iter()
            .find(|(c, _)| c.eq_ignore_ascii_case(column))
            .map(|(_, v)| v)
    }

    /// The text in `column`, if it holds text.
    pub fn text(&self, column: &str) -> Option<&str> {
        match self.get(column) {
            Some(Value::Text(s)) => Some(s),
            _ => None,
        }
    }

    /// The integer in `column`, if it holds one.
    pub fn integer(&self, column: &str) -> Option<i64> {
        match self.get(column) {
            Some(Value::Integer(i)) => Some(*i),
            _ => None,
        }
    }

    /// The elements of an `or_set` column (or any column holding a JSON
    /// array of strings); empty if it holds something else.
    pub fn set(&self, column: &str) -> Vec<String> {
        self.text(column)
            .and_then(|t| serde_json::from_str::<Vec<String>>(t).ok())
            .unwrap_or_default()
    }

    /// Sets `column` (adding it if the row lacks it).
    pub fn set_value(&mut self, column: &str, value: impl Into<Value>) {
        let value = value.into();
        match self
            .columns
            .iter_mut()
            .find(|(c, _)| c.eq_ignore_ascii_case(column))
        {
            Some((_, v)) => *v = value,
            None => self.columns.push((column.to_owned(), value)),
        }
    }

    /// This row with `column` set to `value`.
    #[must_use]
    pub fn with(mut self, column: &str, value: impl Into<Value>) -> Row {
        self.set_value(column, value);
        self
    }

    /// This row with an `or_set` column set to `elements`.
    #[must_use]
    pub fn with_set<S: AsRef<str>>(self, column: &str, elements: &[S]) -> Row {
        let mut sorted: Vec<&str> = elements.iter().map(AsRef::as_ref).collect();
        sorted.sort_unstable();
        sorted.dedup();
        let text = serde_json::to_string(&sorted).unwrap_or_else(|_| "[]".into());
        self.with(column, text)
    }

    /// The columns in order.
    pub fn columns(&self) -> &[(String, Value)] {
        &self.columns
    }

    /// The row as a JSON object (blobs as `{"blob": "<hex>"}`), as the
    /// conflict log stores it.
    pub fn to_json(&self) -> Json {
        let mut map = Map::new();
        for (name, value) in &self.columns {
            map.insert(name.clone(), value_to_json(value));
        }
        Json::Object(map)
    }

    /// [`Row::to_json`] as text, written straight from the row: the same
    /// characters as `to_json().to_string()` (keys in name order, as a
    /// JSON object keeps them), without building the object first. The
    /// conflict log writes several rows per conflict, so this is on the
    /// path of every concurrent change an apply merges.
    pub fn to_json_text(&self) -> String {
        let mut columns: Vec<(&str, &Value)> =
            self.columns.iter().map(|(n, v)| (n.as_str(), v)).collect();
        // A JSON object keeps one entry per key, the last one inserted.
        columns.reverse();
        columns.sort_by(|a, b| a.0.cmp(b.0));
        columns.dedup_by(|later, earlier| later.0 == earlier.0);
        serde_json::to_string(&Entries(&columns)).unwrap_or_else(|_| self.to_json().to_string())
    }

    /// Reads a row back from [`Row::to_json`]'s form.
    pub fn from_json(json: &Json) -> Option<Row> {
        let map = json.as_object()?;
        let columns = map
            .iter()
            .map(|(k, v)| Some((k.clone(), value_from_json(v)?)))
            .collect::<Option<Vec<_>>>()?;
        Some(Row { columns })
    }
}

impl From<Vec<(String, Value)>> for Row {
    fn from(columns: Vec<(String, Value)>) -> Row {
        Row { columns }
    }
}

/// A value as the conflict log writes it.
pub fn value_to_json(value: &Value) -> Json {
    match value {
        Value::Null => Json::Null,
        Value::Integer(i) => json!(i),
        Value::Real(r) => json!(r),
        Value::Text(s) => json!(s),
        Value::Blob(b) => {
            let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
            json!({ "blob": hex })
        }
    }
}

/// A list of values as a JSON array of [`value_to_json`]'s forms, as text.
pub fn values_to_json_text(values: &[Value]) -> String {
    let items: Vec<JsonValue<'_>> = values.iter().map(JsonValue).collect();
    serde_json::to_string(&items)
        .unwrap_or_else(|_| Json::Array(values.iter().map(value_to_json).collect()).to_string())
}

/// Serializes as [`value_to_json`] builds: serde_json writes a float that
/// is not finite as `null`, as `json!` makes it.
struct JsonValue<'a>(&'a Value);

impl Serialize for JsonValue<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Null => s.serialize_unit(),
            Value::Integer(i) => s.serialize_i64(*i),
            Value::Real(r) => s.serialize_f64(*r),
            Value::Text(t) => s.serialize_str(t),
            Value::Blob(b) => {
                let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
                let mut map = s.serialize_map(Some(1))?;
                map.serialize_entry("blob", &hex)?;
                map.end()
            }
        }
    }
}

/// A row's columns, sorted by name, as a JSON object.
struct Entries<'a>(&'a [(&'a str, &'a Value)]);

impl Serialize for Entries<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (name, value) in self.0 {
            map.serialize_entry(name, &JsonValue(value))?;
        }
        map.end()
    }
}

/// Reads [`value_to_json`]'s form back.
pub fn value_from_json(json: &Json) -> Option<Value> {
    Some(match json {
        Json::Null => Value::Null,
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            None => Value::Real(n.as_f64()?),
        },
        Json::String(s) => Value::Text(s.clone()),
        Json::Object(map) => {
            let hex = map.get("blob")?.as_str()?;
            if hex.len() % 2 != 0 {
                return None;
            }
            let bytes = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
                .collect::<Option<Vec<u8>>>()?;
            Value::Blob(bytes)
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn json_round_trip_keeps_every_type() {
        let row = Row::new(vec![
            // In name order: JSON objects keep keys sorted.
            ("a".into(), Value::Null),
            ("b".into(), Value::Integer(-3)),
            ("c".into(), Value::Real(1.5)),
            ("d".into(), "x".into()),
            ("e".into(), Value::Blob(vec![0, 0xca, 0xfe])),
        ]);
        assert_eq!(Row::from_json(&row.to_json()), Some(row));
    }

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<i64>().prop_map(Value::Integer),
            any::<f64>().prop_map(Value::Real),
            Just(Value::Real(f64::NAN)),
            Just(Value::Real(-0.0)),
            Just(Value::Real(f64::INFINITY)),
            ".{0,12}".prop_map(Value::Text),
            r#"[\\"a-z\x00-\x1f\u{e9}\u{1f600}]{0,8}"#.prop_map(Value::Text),
            proptest::collection::vec(any::<u8>(), 0..6).prop_map(Value::Blob),
        ]
    }

    proptest! {
        /// The text written straight from a row is the text of its JSON
        /// object, byte for byte: the conflict log's stored form does not
        /// change with the faster writer.
        #[test]
        fn json_text_is_the_objects_text(
            columns in proptest::collection::vec(("[a-dA-D_]{0,3}", value()), 0..6),
        ) {
            let row = Row::new(columns.clone());
            prop_assert_eq!(row.to_json_text(), row.to_json().to_string());
            let values: Vec<Value> = columns.into_iter().map(|(_, v)| v).collect();
            prop_assert_eq!(
                values_to_json_text(&values),
                Json::Array(values.iter().map(value_to_json).collect()).to_string()
            );
        }
    }

    #[test]
    fn sets_are_sorted_json_arrays() {
        let row = Row::new(vec![]).with_set("tags", &["b", "a", "b"]);
        assert_eq!(row.text("tags"), Some(r#"["a","b"]"#));
        assert_eq!(row.set("tags"), vec!["a", "b"]);
    }
}
