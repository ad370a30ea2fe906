//! Values and rows as they cross the boundary, and their conversions to
//! and from the library's [`Value`].
//!
//! Invariant: a conversion never guesses. A [`DbValue::Set`] becomes the
//! JSON array text an `or_set` column is written as; a real that is NaN is
//! refused (the store keeps no NaN); an `or_set` column read from a table
//! becomes a `Set`, and everything else reads as SQLite stored it.

use crate::error::MeldbError;
use meldb::{Kind, Schema, Value};
use std::collections::HashMap;

/// One value of a column, a key or a query parameter.
#[derive(Debug, Clone, PartialEq, uniffi::Enum)]
pub enum DbValue {
    /// SQL NULL.
    Null,
    /// A 64-bit integer (counters too).
    Integer { value: i64 },
    /// A float (never NaN).
    Real { value: f64 },
    /// UTF-8 text.
    Text { value: String },
    /// Bytes.
    Blob { value: Vec<u8> },
    /// A boolean, stored as the integer 0 or 1 (read back as `Integer`).
    Bool { value: bool },
    /// The elements of an `or_set` column.
    Set { members: Vec<String> },
}

/// A row: each column's value by name.
pub type DbRow = HashMap<String, DbValue>;

impl DbValue {
    /// The library's value, for a write or a parameter.
    pub(crate) fn into_value(self) -> Result<Value, MeldbError> {
        Ok(match self {
            DbValue::Null => Value::Null,
            DbValue::Integer { value } => Value::Integer(value),
            DbValue::Real { value } if value.is_nan() => {
                return Err(MeldbError::invalid(
                    "a real value is NaN, which meldb does not store",
                ))
            }
            DbValue::Real { value } => Value::Real(value),
            DbValue::Text { value } => Value::Text(value),
            DbValue::Blob { value } => Value::Blob(value),
            DbValue::Bool { value } => Value::Integer(i64::from(value)),
            DbValue::Set { members } => Value::Text(
                serde_json::Value::Array(
                    members.into_iter().map(serde_json::Value::String).collect(),
                )
                .to_string(),
            ),
        })
    }

    /// A value as the store read it.
    pub(crate) fn from_value(value: Value) -> DbValue {
        match value {
            Value::Null => DbValue::Null,
            Value::Integer(value) => DbValue::Integer { value },
            Value::Real(value) => DbValue::Real { value },
            Value::Text(value) => DbValue::Text { value },
            Value::Blob(value) => DbValue::Blob { value },
        }
    }

    /// An `or_set` column's value (JSON array text) as its members; any
    /// other text stays text.
    fn set_from_text(value: Value) -> DbValue {
        if let Value::Text(text) = &value {
            if let Ok(serde_json::Value::Array(items)) = serde_json::from_str(text) {
                let members: Option<Vec<String>> = items
                    .into_iter()
                    .map(|item| match item {
                        serde_json::Value::String(s) => Some(s),
                        _ => None,
                    })
                    .collect();
                if let Some(members) = members {
                    return DbValue::Set { members };
                }
            }
        }
        DbValue::from_value(value)
    }
}

/// Values for a key or parameters.
pub(crate) fn values(list: Vec<DbValue>) -> Result<Vec<Value>, MeldbError> {
    list.into_iter().map(DbValue::into_value).collect()
}

/// A write's columns, in a stable order (by name), as the library takes
/// them.
pub(crate) fn columns(row: DbRow) -> Result<Vec<(String, Value)>, MeldbError> {
    let mut out = row
        .into_iter()
        .map(|(name, value)| Ok((name, value.into_value()?)))
        .collect::<Result<Vec<_>, MeldbError>>()?;
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// A row of `table` as the store read it: `or_set` columns as sets.
pub(crate) fn table_row(schema: &Schema, table: &str, row: Vec<(String, Value)>) -> DbRow {
    let kinds = schema.table(table);
    row.into_iter()
        .map(|(name, value)| {
            let is_set = kinds
                .and_then(|t| t.columns.iter().find(|c| c.name == name))
                .is_some_and(|c| c.kind == Kind::OrSet);
            let value = if is_set {
                DbValue::set_from_text(value)
            } else {
                DbValue::from_value(value)
            };
            (name, value)
        })
        .collect()
}

/// A value as JSON: sets as arrays, blobs as arrays of bytes.
pub(crate) fn to_json(value: &DbValue) -> serde_json::Value {
    use serde_json::Value as J;
    match value {
        DbValue::Null => J::Null,
        DbValue::Integer { value } => J::from(*value),
        DbValue::Real { value } => serde_json::Number::from_f64(*value).map_or(J::Null, J::Number),
        DbValue::Text { value } => J::String(value.clone()),
        DbValue::Blob { value } => J::Array(value.iter().map(|b| J::from(*b)).collect()),
        DbValue::Bool { value } => J::Bool(*value),
        DbValue::Set { members } => J::Array(members.iter().cloned().map(J::String).collect()),
    }
}

/// A row as a JSON object.
pub(crate) fn row_json(row: &DbRow) -> serde_json::Value {
    let mut names: Vec<&String> = row.keys().collect();
    names.sort();
    serde_json::Value::Object(
        names
            .into_iter()
            .map(|name| (name.clone(), to_json(&row[name])))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_is_written_as_json_array_text_and_read_back_as_members() {
        let written = DbValue::Set {
            members: vec!["a".into(), "b\"c".into()],
        }
        .into_value()
        .expect("a set converts");
        assert_eq!(written, Value::Text(r#"["a","b\"c"]"#.into()));
        assert_eq!(
            DbValue::set_from_text(written),
            DbValue::Set {
                members: vec!["a".into(), "b\"c".into()]
            }
        );
    }

    #[test]
    fn nan_is_refused_and_bool_is_an_integer() {
        let nan = DbValue::Real { value: f64::NAN }.into_value();
        assert!(
            matches!(nan, Err(MeldbError::InvalidArgument { .. })),
            "{nan:?}"
        );
        assert_eq!(
            DbValue::Bool { value: true }
                .into_value()
                .expect("bool converts"),
            Value::Integer(1)
        );
    }

    #[test]
    fn text_that_is_not_a_string_array_stays_text() {
        let v = DbValue::set_from_text(Value::Text("[1, 2]".into()));
        assert_eq!(
            v,
            DbValue::Text {
                value: "[1, 2]".into()
            }
        );
    }
}
