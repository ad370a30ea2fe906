//! Carrying out the schema's row-level rules where the store must: who
//! local writes are by ([`Store::set_writer`]), the authority's
//! stamps on the changes it accepts ([`Store::add_stamp`]), and existing
//! rows that break a unique set a schema upgrade added
//! ([`Store::rule_violations`]). The rules themselves are the engine's
//! (`meldb_core::engine::rules`).
//!
//! Invariant: a stamp sets only authority-owned columns, runs only on the
//! authority and only on an accepted change (the decided row is live and
//! differs from the local one), and its values are written in the same
//! correcting local change as the decision, never logged as a conflict.

use super::layout::{self, TableLayout};
use super::write;
use super::Store;
use crate::error::{ResolveError, Result, WriteError};
use crate::resolve::{Row, Writer};
use crate::value::{Key, Value};
use std::fmt;
use std::sync::Arc;

type StampFn = dyn Fn(&StampContext<'_>) -> Vec<(String, Value)> + Send + Sync;

/// A named hook the authority runs on each change it accepts.
#[derive(Clone)]
pub(crate) struct Stamp {
    name: Arc<str>,
    f: Arc<StampFn>,
}

impl fmt::Debug for Stamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Stamp").field(&self.name).finish()
    }
}

/// What a stamp sees: the change the authority accepted.
#[derive(Debug)]
#[non_exhaustive]
pub struct StampContext<'a> {
    /// The table.
    pub table: &'a str,
    /// The row's key.
    pub key: &'a [Value],
    /// The row as accepted (before the stamp's values).
    pub row: &'a Row,
    /// Who wrote the change (what the connection authenticated).
    pub writer: &'a Writer,
    /// The wall time of the authority's hybrid logical clock, in
    /// milliseconds since the Unix epoch: for `updated_at` columns.
    pub now_ms: u64,
}

/// An existing row that breaks a rule the schema now declares (see
/// [`Store::rule_violations`]).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct RuleViolation {
    /// The table.
    pub table: String,
    /// The rule, as the conflict log names it (`rule unique (user, day)`).
    pub rule: String,
    /// The values the rows share.
    pub values: Key,
    /// The keys of the rows sharing them, in key order.
    pub keys: Vec<Key>,
}

impl Store {
    /// Registers a stamp for `table`: on the authority, `f` runs on each
    /// change to the table it accepts, sees the accepted row and its
    /// writer, and returns values for the table's authority-owned columns
    /// (`owner = "authority"`), such as `updated_at` from
    /// [`StampContext::now_ms`]. They are written with the decision as the
    /// authority's own change, so they reach every client over sync; no
    /// conflict is logged for them. Returning another column fails the
    /// apply with [`ResolveError::Stamp`], as does a panic. Stamps live in
    /// memory: register them each time the store is opened. Clients may
    /// register them too; they run only where `set_authority(true)`.
    ///
    /// ```
    /// use meldb_store::schema::Schema;
    /// use meldb_store::store::Store;
    ///
    /// # fn main() -> meldb_store::error::Result<()> {
    /// let schema = Schema::from_toml_str(r#"
    ///     name = "shop"
    ///     version = 1
    ///     [[table]]
    ///     name = "item"
    ///     primary_key = ["sku"]
    ///     authority = true
    ///     [[table.column]]
    ///     name = "sku"
    ///     type = "text"
    ///     [[table.column]]
    ///     name = "price"
    ///     type = "integer"
    ///     [[table.column]]
    ///     name = "updated_at"
    ///     type = "integer"
    ///     owner = "authority"
    /// "#, "shop.toml")?;
    /// let (mut server, mut phone) = (Store::open_in_memory(&schema)?, Store::open_in_memory(&schema)?);
    /// server.set_authority(true);
    /// server.add_stamp("item", "updated_at", |c| vec![("updated_at".into(), (c.now_ms as i64).into())])?;
    ///
    /// // The client may not write it ...
    /// let refused = phone.write(|tx| {
    ///     tx.insert("item", &[("sku", "A1".into()), ("updated_at", 1.into())])
    /// });
    /// assert!(matches!(
    ///     refused,
    ///     Err(meldb_store::Error::Write(meldb_store::error::WriteError::AuthorityOwned { .. }))
    /// ));
    /// phone.write(|tx| tx.insert("item", &[("sku", "A1".into()), ("price", 10.into())]))?;
    /// // ... the authority stamps the change it accepts, and the stamp comes back.
    /// server.apply(&phone.changes_since(&server.version_vector())?)?;
    /// phone.apply(&server.changes_since(&phone.version_vector())?)?;
    /// let stamped: Option<i64> =
    ///     phone.conn().query_row("SELECT updated_at FROM item", [], |r| r.get(0))?;
    /// assert!(stamped.is_some());
    /// assert!(server.conflicts(None, None, 10)?.is_empty());
    /// # Ok(())
    /// # }
    /// ```
    pub fn add_stamp(
        &mut self,
        table: &str,
        name: &str,
        f: impl Fn(&StampContext<'_>) -> Vec<(String, Value)> + Send + Sync + 'static,
    ) -> Result<()> {
        let layout = self.table(table).ok_or_else(|| WriteError::UnknownTable {
            table: table.into(),
        })?;
        let table = layout.name().to_owned();
        if !layout.table.columns.iter().any(|c| c.rules.authority_owned) {
            return Err(ResolveError::Stamp {
                stamp: name.into(),
                table,
                problem: "the table declares no authority-owned column \
                          (owner = \"authority\") for a stamp to set"
                    .into(),
            }
            .into());
        }
        self.stamps.push((
            table,
            Stamp {
                name: name.into(),
                f: Arc::new(f),
            },
        ));
        Ok(())
    }

    /// Whether the authority stamps accepted changes to `layout`'s table.
    pub(super) fn stamps_table(&self, layout: &TableLayout) -> bool {
        self.authority && self.stamps.iter().any(|(t, _)| t == layout.name())
    }

    /// Runs the table's stamps on `row`, an accepted change, and sets what
    /// they return.
    pub(super) fn stamp_row(
        &mut self,
        layout: &TableLayout,
        key: &[Value],
        row: &mut Row,
        writer: &Writer,
    ) -> Result<()> {
        let now_ms = self.clock.tick().physical_ms();
        let stamps: Vec<Stamp> = self
            .stamps
            .iter()
            .filter(|(t, _)| t == layout.name())
            .map(|(_, s)| s.clone())
            .collect();
        for stamp in stamps {
            let failed = |problem: String| ResolveError::Stamp {
                stamp: stamp.name.to_string(),
                table: layout.name().into(),
                problem: format!("key {}: {problem}", Key(key.to_vec())),
            };
            let ctx = StampContext {
                table: layout.name(),
                key,
                row,
                writer,
                now_ms,
            };
            // Caught, and not printed (`meldb_core::app_panic`).
            let values = meldb_core::app_panic::catch(|| (stamp.f)(&ctx))
                .map_err(|message| failed(format!("panicked: {message}")))?;
            for (name, value) in values {
                let owned = layout
                    .table
                    .column(&name)
                    .filter(|(_, c)| c.rules.authority_owned);
                let Some((i, column)) = owned else {
                    return Err(failed(format!(
                        "it set column {name:?}, which is not an authority-owned column \
                         (owner = \"authority\")"
                    ))
                    .into());
                };
                let value =
                    write::check_value(layout, i, &value).map_err(|e| failed(e.to_string()))?;
                let column = column.name.clone();
                row.set_value(&column, value);
            }
        }
        Ok(())
    }

    /// Existing live rows that break a row-level rule the schema declares:
    /// rows sharing the values of a `[[table.unique]]` set (a set holding
    /// NULL collides with none). A rule added by a schema upgrade judges new
    /// writes only; rows already stored are reported here, never
    /// rewritten. (Frozen rows, delete rules, transitions and owned
    /// columns judge changes, so no row at rest breaks them.)
    pub fn rule_violations(&self) -> Result<Vec<RuleViolation>> {
        let mut out = Vec::new();
        for layout in &self.tables {
            let table = &layout.table;
            let key_names: Vec<String> = table
                .primary_key
                .iter()
                .map(|&i| layout::quote(&table.columns[i].name))
                .collect();
            for columns in &table.rules.unique {
                let quoted: Vec<String> = columns.iter().map(|c| layout::quote(c)).collect();
                let sql = format!(
                    "SELECT {cols}, {keys} FROM {t} AS a WHERE {not_null} AND EXISTS \
                     (SELECT 1 FROM {t} AS b WHERE {same} AND NOT ({same_key})) \
                     ORDER BY {cols}, {keys}",
                    cols = quoted.join(", "),
                    keys = key_names.join(", "),
                    t = layout::quote(&table.name),
                    not_null = quoted
                        .iter()
                        .map(|c| format!("{c} IS NOT NULL"))
                        .collect::<Vec<_>>()
                        .join(" AND "),
                    same = quoted
                        .iter()
                        .map(|c| format!("b.{c} = a.{c}"))
                        .collect::<Vec<_>>()
                        .join(" AND "),
                    same_key = key_names
                        .iter()
                        .map(|k| format!("b.{k} = a.{k}"))
                        .collect::<Vec<_>>()
                        .join(" AND "),
                );
                let width = columns.len();
                let mut stmt = self.conn.prepare(&sql)?;
                let rows = stmt.query_map([], |r| {
                    (0..width + key_names.len())
                        .map(|i| r.get_ref(i).map(Value::from))
                        .collect::<rusqlite::Result<Vec<_>>>()
                })?;
                let rule = format!("rule unique ({})", columns.join(", "));
                for row in rows {
                    let mut row = row?;
                    let key = Key(row.split_off(width));
                    let values = Key(row);
                    match out.last_mut() {
                        Some(RuleViolation {
                            table: t,
                            rule: r,
                            values: v,
                            keys,
                        }) if *t == table.name && *r == rule && *v == values => keys.push(key),
                        _ => out.push(RuleViolation {
                            table: table.name.clone(),
                            rule: rule.clone(),
                            values,
                            keys: vec![key],
                        }),
                    }
                }
            }
        }
        Ok(out)
    }
}
