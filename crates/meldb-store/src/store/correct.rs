//! Writing a decided row. A resolver's (or a deferred decision's) target
//! row is checked against the schema and turned into column values; where
//! it differs from what the merge wrote, one correcting local change makes
//! the stored row equal the decision. Shared by the resolver pipeline
//! (`resolve`) and by later decisions on deferred conflicts (`conflicts`).

use super::layout::TableLayout;
use super::rows;
use super::write::{self, ColumnOp};
use super::Store;
use crate::crdt::{Dot, Op};
use crate::error::{ResolveError, Result, StorageError};
use crate::merge::RowState;
use crate::resolve::{Mode, Row};
use crate::value::{Key, Value};

/// A full row's value columns in state order, checked against the schema.
pub(super) fn target_values(
    layout: &TableLayout,
    key: &[Value],
    row: &Row,
    resolver: &str,
) -> Result<Vec<Value>> {
    let invalid = |problem: String| ResolveError::InvalidRow {
        resolver: resolver.into(),
        table: layout.name().into(),
        key: Key(key.to_vec()),
        problem,
    };
    let mut values = Vec::with_capacity(layout.value_cols.len());
    for (j, &i) in layout.value_cols.iter().enumerate() {
        let col = &layout.table.columns[i];
        let value = row
            .get(&col.name)
            .cloned()
            .unwrap_or_else(|| rows::materialize(col, None));
        let kind = layout.kinds[j];
        let value = match kind.fixed_type() {
            None => write::check_value(layout, i, &value).map_err(|e| invalid(e.to_string()))?,
            Some(_) => {
                kind.check_target(&col.name, &value).map_err(invalid)?;
                value
            }
        };
        values.push(value);
    }
    Ok(values)
}

/// A state's row as users read it (`None` if deleted).
pub(super) fn live_row(layout: &TableLayout, key: &[Value], state: &RowState) -> Option<Row> {
    state.is_live().then(|| row_of(layout, key, state))
}

/// A state's row as users read it.
pub(super) fn row_of(layout: &TableLayout, key: &[Value], state: &RowState) -> Row {
    let table = &layout.table;
    let columns = table
        .columns
        .iter()
        .enumerate()
        .map(|(i, col)| {
            let value = match table.primary_key.iter().position(|&k| k == i) {
                Some(n) => key.get(n).cloned().unwrap_or(Value::Null),
                None => {
                    let j = layout.value_cols.iter().position(|&v| v == i);
                    let state = j
                        .and_then(|j| state.columns.get(j))
                        .and_then(Option::as_ref);
                    rows::materialize(col, state)
                }
            };
            (col.name.clone(), value)
        })
        .collect();
    Row::new(columns)
}

/// Writes the row `target` (value columns in state order; `None`: deleted)
/// as a new local change on top of `merged`, the state stored at `rid`, so
/// that it supersedes every version `merged` joined. Returns the change's
/// sequence number.
pub(super) fn write_correction(
    store: &mut Store,
    layout: &TableLayout,
    rid: i64,
    key: &[Value],
    merged: &RowState,
    target: Option<&[Value]>,
    mode: Mode,
) -> Result<u64> {
    let not_convergent = |problem: String| ResolveError::NotConvergent {
        table: layout.name().into(),
        key: Key(key.to_vec()),
        problem,
    };
    let dot = Dot {
        site: store.local,
        seq: store.replica.last_seq + 1,
    };
    let hlc = store.clock.tick();
    let width = layout.value_cols.len();
    let fresh = |cl: u64| RowState {
        cl,
        clock: merged.clock.clone(),
        hlc: merged.hlc,
        writer: merged.writer,
        columns: vec![None; width],
        meta: None,
    };
    let (mut state, ops) = match target {
        None if merged.is_live() => (fresh(merged.cl + 1), Vec::new()),
        None => (merged.clone(), Vec::new()),
        Some(values) if !merged.is_live() => (fresh(merged.cl + 1), all_ops(layout, values)),
        Some(values) => match column_ops(layout, merged, values) {
            Some(ops) => (merged.clone(), ops),
            // Some column cannot move there by a write: a new life, which
            // wins over every version of the old one.
            None => (fresh(merged.cl + 2), all_ops(layout, values)),
        },
    };
    if mode == Mode::Leaderless {
        // Every replica writes its own correction: counter changes would add up.
        for op in &ops {
            if let Op::Increment(_) = op.op {
                let name = &layout.table.columns[layout.value_cols[op.column]].name;
                return Err(not_convergent(format!(
                    "a resolution without an authority cannot change counter {name:?}: \
                     each replica would apply it once"
                ))
                .into());
            }
        }
    }
    for op in &ops {
        write::apply_op(layout, &mut state, op, dot, hlc, false)?;
    }
    state.clock.observe(dot);
    state.hlc = hlc;
    state.writer = dot.site;
    match rows::write_row(
        &store.conn,
        layout,
        &mut store.sites,
        key,
        Some((rid, &merged.clock)),
        &state,
    ) {
        Ok(_) => store.feed.record(layout.id, key),
        Err(rows::RowWriteError::Sqlite(e)) => return Err(e.into()),
        Err(e) => {
            return Err(StorageError::Corrupt {
                what: format!("table {:?}", layout.name()),
                problem: format!("a resolution write failed: {e:?}"),
            }
            .into())
        }
    }
    store.replica.last_seq = dot.seq;
    Ok(dot.seq)
}

/// The ops that build `values` from nothing (a fresh life).
fn all_ops(layout: &TableLayout, values: &[Value]) -> Vec<ColumnOp> {
    values
        .iter()
        .enumerate()
        .filter_map(|(column, value)| {
            let op = layout.kinds[column].rebuild(value)?;
            Some(ColumnOp { column, op })
        })
        .collect()
}

/// The ops that move `merged`'s columns to `values` by writes that win the
/// merge everywhere, or `None` if some column cannot move that way.
fn column_ops(layout: &TableLayout, merged: &RowState, values: &[Value]) -> Option<Vec<ColumnOp>> {
    let mut ops = Vec::new();
    for (j, target) in values.iter().enumerate() {
        let col = &layout.table.columns[layout.value_cols[j]];
        let current = rows::materialize(col, merged.columns[j].as_ref());
        if *target == current {
            continue;
        }
        let op = layout.kinds[j].reach(&current, target, &layout.rules[j])?;
        ops.push(ColumnOp { column: j, op });
    }
    Some(ops)
}
