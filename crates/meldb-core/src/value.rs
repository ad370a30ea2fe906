//! SQL values and primary keys as meldb sees them.
//!
//! A [`Value`] is one SQLite scalar. Reals are never NaN (SQLite stores NaN as
//! NULL, which would silently change what a replica merges), so writes refuse
//! them. [`Value::total_cmp`] gives the total order used as the last tiebreak
//! between two register writes that carry the same timestamp.

use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::fmt;

/// One SQLite scalar value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// A 64-bit signed integer.
    Integer(i64),
    /// A finite or infinite float; never NaN.
    Real(f64),
    /// UTF-8 text.
    Text(String),
    /// Raw bytes.
    Blob(Vec<u8>),
}

impl Value {
    /// About how many bytes the value costs in a sync batch: text and
    /// blobs at their length, everything else at a varint's most.
    pub fn size_hint(&self) -> usize {
        match self {
            Value::Text(s) => s.len() + 2,
            Value::Blob(b) => b.len() + 2,
            _ => 9,
        }
    }

    /// The storage class name SQLite would report for this value.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Integer(_) => "integer",
            Value::Real(_) => "real",
            Value::Text(_) => "text",
            Value::Blob(_) => "blob",
        }
    }

    /// A total order over values: NULL < integer < real < text < blob, then by
    /// content. Used only to break ties deterministically.
    pub fn total_cmp(&self, other: &Value) -> Ordering {
        fn rank(v: &Value) -> u8 {
            match v {
                Value::Null => 0,
                Value::Integer(_) => 1,
                Value::Real(_) => 2,
                Value::Text(_) => 3,
                Value::Blob(_) => 4,
            }
        }
        match (self, other) {
            (Value::Integer(a), Value::Integer(b)) => a.cmp(b),
            (Value::Real(a), Value::Real(b)) => a.total_cmp(b),
            (Value::Text(a), Value::Text(b)) => a.cmp(b),
            (Value::Blob(a), Value::Blob(b)) => a.cmp(b),
            _ => rank(self).cmp(&rank(other)),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("NULL"),
            Value::Integer(i) => write!(f, "{i}"),
            Value::Real(r) => write!(f, "{r}"),
            Value::Text(s) => write!(f, "{s:?}"),
            Value::Blob(b) => {
                f.write_str("x'")?;
                for byte in b {
                    write!(f, "{byte:02x}")?;
                }
                f.write_str("'")
            }
        }
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Integer(v)
    }
}
impl From<i32> for Value {
    fn from(v: i32) -> Self {
        Value::Integer(v.into())
    }
}
/// As SQLite stores a boolean: 1 for `true`, 0 for `false`.
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Integer(v.into())
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Real(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_owned())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}
impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Value::Blob(v)
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// A primary key: one value per primary-key column, in schema order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Key(pub Vec<Value>);

impl Key {
    /// The key's values in primary-key column order.
    pub fn values(&self) -> &[Value] {
        &self.0
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(")?;
        for (i, v) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{v}")?;
        }
        f.write_str(")")
    }
}

impl From<&str> for Key {
    fn from(v: &str) -> Self {
        Key(vec![v.into()])
    }
}
impl From<String> for Key {
    fn from(v: String) -> Self {
        Key(vec![v.into()])
    }
}
impl From<i64> for Key {
    fn from(v: i64) -> Self {
        Key(vec![v.into()])
    }
}
impl From<Value> for Key {
    fn from(v: Value) -> Self {
        Key(vec![v])
    }
}
impl From<Vec<Value>> for Key {
    fn from(v: Vec<Value>) -> Self {
        Key(v)
    }
}
impl From<&[Value]> for Key {
    fn from(v: &[Value]) -> Self {
        Key(v.to_vec())
    }
}
impl From<&Key> for Key {
    fn from(v: &Key) -> Self {
        v.clone()
    }
}

/// A column's SQL type (SQLite STRICT types).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SqlType {
    /// 64-bit signed integer.
    Integer,
    /// 64-bit float.
    Real,
    /// UTF-8 text.
    Text,
    /// Bytes.
    Blob,
}

impl SqlType {
    /// The SQL spelling.
    pub fn sql(self) -> &'static str {
        match self {
            SqlType::Integer => "INTEGER",
            SqlType::Real => "REAL",
            SqlType::Text => "TEXT",
            SqlType::Blob => "BLOB",
        }
    }

    /// Parses a schema-file name (case-insensitive).
    pub fn from_name(name: &str) -> Option<SqlType> {
        match name.to_ascii_lowercase().as_str() {
            "integer" | "int" => Some(SqlType::Integer),
            "real" | "float" => Some(SqlType::Real),
            "text" => Some(SqlType::Text),
            "blob" => Some(SqlType::Blob),
            _ => None,
        }
    }

    /// Whether a non-NULL value belongs to this type.
    pub fn admits(self, value: &Value) -> bool {
        matches!(
            (self, value),
            (SqlType::Integer, Value::Integer(_))
                | (SqlType::Real, Value::Real(_))
                | (SqlType::Text, Value::Text(_))
                | (SqlType::Blob, Value::Blob(_))
        )
    }
}

impl fmt::Display for SqlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.sql().to_ascii_lowercase())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_bool_is_stored_as_sqlite_stores_it() {
        assert_eq!(Value::from(true), Value::Integer(1));
        assert_eq!(Value::from(false), Value::Integer(0));
        assert_eq!(Value::from(Some(true)), Value::Integer(1));
        assert_eq!(Value::from(None::<bool>), Value::Null);
    }

    use super::*;

    #[test]
    fn total_order_ranks_types_then_content() {
        assert_eq!(Value::Null.total_cmp(&Value::Integer(0)), Ordering::Less);
        assert_eq!(
            Value::Integer(9).total_cmp(&Value::Real(0.0)),
            Ordering::Less
        );
        assert_eq!(
            Value::from("b").total_cmp(&Value::from("a")),
            Ordering::Greater
        );
        assert_eq!(
            Value::Real(-0.0).total_cmp(&Value::Real(0.0)),
            Ordering::Less
        );
    }

    #[test]
    fn key_display_names_every_part() {
        let k = Key(vec!["A1".into(), 7.into()]);
        assert_eq!(k.to_string(), "(\"A1\", 7)");
    }
}

/// `Value` as SQLite sees it: how the store binds and reads values.
#[cfg(feature = "sqlite")]
mod sqlite {
    use super::Value;
    use rusqlite::types::{FromSql, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

    impl ToSql for Value {
        fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
            Ok(match self {
                Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
                Value::Integer(i) => ToSqlOutput::Borrowed(ValueRef::Integer(*i)),
                Value::Real(r) => ToSqlOutput::Borrowed(ValueRef::Real(*r)),
                Value::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
                Value::Blob(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
            })
        }
    }

    impl From<ValueRef<'_>> for Value {
        /// What SQLite returned, as a [`Value`] (invalid UTF-8 in TEXT is
        /// replaced, never a panic).
        fn from(v: ValueRef<'_>) -> Self {
            match v {
                ValueRef::Null => Value::Null,
                ValueRef::Integer(i) => Value::Integer(i),
                ValueRef::Real(r) => Value::Real(r),
                ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
                ValueRef::Blob(b) => Value::Blob(b.to_vec()),
            }
        }
    }

    impl FromSql for Value {
        fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
            Ok(Value::from(v))
        }
    }
}
