//! How values and result sets are printed: aligned tables for people, one
//! JSON object per row for scripts.

use crate::error::Result;
use meldb::Value;
use rusqlite::Connection;
use std::io::Write;

/// A result set: column names and rows of values.
#[derive(Debug, Clone, PartialEq)]
pub struct Rows {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
}

impl Rows {
    /// Runs a prepared statement to completion.
    pub fn collect(stmt: &mut rusqlite::Statement<'_>) -> Result<Rows> {
        let columns: Vec<String> = stmt.column_names().map(String::from).collect();
        let mut rows = Vec::new();
        let mut cursor = stmt.query([])?;
        while let Some(row) = cursor.next()? {
            let values = (0..columns.len())
                .map(|i| row.get_ref(i).map(Value::from))
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.push(values);
        }
        Ok(Rows { columns, rows })
    }

    /// Runs `sql` (no parameters).
    pub fn query(conn: &Connection, sql: &str) -> Result<Rows> {
        Rows::collect(&mut conn.prepare(sql)?)
    }

    /// Writes an aligned table with a header; numbers are right-aligned.
    pub fn write_table(&self, out: &mut dyn Write, indent: &str) -> Result<()> {
        let cells: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|row| row.iter().map(cell).collect())
            .collect();
        let widths: Vec<usize> = (0..self.columns.len())
            .map(|i| {
                cells
                    .iter()
                    .map(|row| width(&row[i]))
                    .chain([width(&self.columns[i])])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let numeric: Vec<bool> = (0..self.columns.len())
            .map(|i| {
                self.rows.iter().any(|r| !matches!(r[i], Value::Null))
                    && self
                        .rows
                        .iter()
                        .all(|r| matches!(r[i], Value::Null | Value::Integer(_) | Value::Real(_)))
            })
            .collect();
        let rule: Vec<String> = widths.iter().map(|&w| "-".repeat(w)).collect();
        write_line(out, indent, &self.columns, &widths, &numeric)?;
        write_line(out, indent, &rule, &widths, &numeric)?;
        for row in &cells {
            write_line(out, indent, row, &widths, &numeric)?;
        }
        Ok(())
    }

    /// Writes one JSON object per row, keys in column order.
    pub fn write_json_lines(&self, out: &mut dyn Write) -> Result<()> {
        for row in &self.rows {
            let fields: Vec<String> = self
                .columns
                .iter()
                .zip(row)
                .map(|(name, value)| format!("{}:{}", json_string(name), json(value)))
                .collect();
            writeln!(out, "{{{}}}", fields.join(","))?;
        }
        Ok(())
    }
}

fn write_line(
    out: &mut dyn Write,
    indent: &str,
    cells: &[String],
    widths: &[usize],
    numeric: &[bool],
) -> Result<()> {
    let mut line = String::from(indent);
    for (i, text) in cells.iter().enumerate() {
        if i > 0 {
            line.push_str("  ");
        }
        let pad = " ".repeat(widths[i].saturating_sub(width(text)));
        if numeric[i] {
            line.push_str(&pad);
            line.push_str(text);
        } else {
            line.push_str(text);
            line.push_str(&pad);
        }
    }
    writeln!(out, "{}", line.trim_end())?;
    Ok(())
}

fn width(text: &str) -> usize {
    text.chars().count()
}

/// A value as a table cell: text unquoted (control characters escaped),
/// reals always with a decimal point, blobs as `x'..'`.
pub fn cell(value: &Value) -> String {
    match value {
        Value::Null => "NULL".into(),
        Value::Integer(i) => i.to_string(),
        Value::Real(r) => format!("{r:?}"),
        Value::Text(s) => s
            .chars()
            .flat_map(|c| {
                let escaped: Vec<char> = if c.is_control() {
                    c.escape_default().collect()
                } else {
                    vec![c]
                };
                escaped
            })
            .collect(),
        Value::Blob(b) => format!("x'{}'", hex(b)),
    }
}

/// A value as JSON: NULL is null, blobs are `"x'..'"` strings, infinite
/// reals (which JSON lacks) are null.
pub fn json(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Integer(i) => i.to_string(),
        Value::Real(r) if r.is_finite() => format!("{r:?}"),
        Value::Real(_) => "null".into(),
        Value::Text(s) => json_string(s),
        Value::Blob(b) => json_string(&format!("x'{}'", hex(b))),
    }
}

fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `1 row`, `2 rows`.
pub fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("{n} {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_right_align_numbers() -> Result<()> {
        let rows = Rows {
            columns: vec!["sku".into(), "stock".into()],
            rows: vec![
                vec!["BEAN-1kg".into(), Value::Integer(10)],
                vec!["MUG".into(), Value::Integer(-2)],
            ],
        };
        let mut out = Vec::new();
        rows.write_table(&mut out, "")?;
        let text = String::from_utf8_lossy(&out);
        assert_eq!(
            text,
            "sku       stock\n--------  -----\nBEAN-1kg     10\nMUG          -2\n"
        );
        Ok(())
    }

    #[test]
    fn json_lines_keep_column_order() -> Result<()> {
        let rows = Rows {
            columns: vec!["z".into(), "a".into(), "b".into()],
            rows: vec![vec![Value::Real(1.0), Value::Null, Value::Blob(vec![1])]],
        };
        let mut out = Vec::new();
        rows.write_json_lines(&mut out)?;
        assert_eq!(
            String::from_utf8_lossy(&out),
            "{\"z\":1.0,\"a\":null,\"b\":\"x'01'\"}\n"
        );
        Ok(())
    }
}
