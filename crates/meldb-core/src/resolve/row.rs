//! [`Row`]: a row as resolvers and the conflict log see it, column names
//! with the values users read (counters as integers, sets as JSON arrays).

use crate::value::Value;
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

    #[test]
    fn sets_are_sorted_json_arrays() {
        let row = Row::new(vec![]).with_set("tags", &["b", "a", "b"]);
        assert_eq!(row.text("tags"), Some(r#"["a","b"]"#));
        assert_eq!(row.set("tags"), vec!["a", "b"]);
    }
}
