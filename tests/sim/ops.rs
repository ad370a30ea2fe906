//! Local writes: the raw form generators produce, its resolution against
//! a table, what the reference model predicts for it, and running it.

use super::model::{Effect, Model, RowId, Spec, TableSpec, ELEMS};
use meldb::{Kind, Value};
use std::collections::BTreeSet;

/// The kind of a generated local write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    Insert,
    Upsert,
    Update,
    Set,
    Increment,
    AddToSet,
    RemoveFromSet,
    Delete,
}

/// A local write in raw form: indexes are reduced modulo what the chosen
/// table has, so any generated value is meaningful for any schema.
#[derive(Clone, Debug)]
pub struct RawOp {
    pub kind: OpKind,
    pub table: u8,
    pub key: u8,
    /// (column, value) index pairs.
    pub cols: Vec<(u8, u8)>,
    pub amount: i8,
    pub elem: u8,
}

/// A write resolved against the spec: value-column indexes and values.
#[derive(Clone, Debug)]
pub enum Op {
    Insert(Vec<(usize, Value)>),
    Upsert(Vec<(usize, Value)>),
    Update(Vec<(usize, Value)>),
    Set(usize, Value),
    Increment(usize, i64),
    Add(usize, String),
    Remove(usize, String),
    Delete,
}

/// What the model says a write must do.
#[derive(Clone, Debug)]
pub enum Expect {
    Event { cl: u64, effects: Vec<Effect> },
    NoChange,
    Exists,
    NotFound,
    Missing,
}

/// The JSON array text of a set of elements, as inserts take it.
fn set_json(elems: &BTreeSet<String>) -> Value {
    Value::Text(serde_json::to_string(elems).unwrap_or_default())
}

fn parse_json(value: &Value) -> BTreeSet<String> {
    match value {
        Value::Text(t) => serde_json::from_str(t).unwrap_or_default(),
        _ => BTreeSet::new(),
    }
}

/// Picks the elements whose bits are set in `bits`.
fn elems_of(bits: u8) -> BTreeSet<String> {
    ELEMS
        .iter()
        .enumerate()
        .filter(|(i, _)| bits & (1 << i) != 0)
        .map(|(_, e)| (*e).to_owned())
        .collect()
}

pub fn resolve(spec: &Spec, raw: &RawOp) -> (RowId, Op) {
    let t = raw.table as usize % spec.tables.len();
    let table = &spec.tables[t];
    let row = RowId {
        table: t,
        key: raw.key as usize % table.keys.len(),
    };
    let of_kind = |pred: &dyn Fn(Kind) -> bool| -> Vec<usize> {
        (0..table.cols.len())
            .filter(|&j| pred(table.cols[j].kind))
            .collect()
    };
    let counters = of_kind(&|k| matches!(k, Kind::GCounter | Kind::PnCounter));
    let sets = of_kind(&|k| k == Kind::OrSet);
    let assignable = of_kind(&|k| matches!(k, Kind::Lww | Kind::OrSet));
    let pick = |from: &[usize], n: u8| from[n as usize % from.len()];
    let value_for = |j: usize, v: u8| -> Value {
        let col = &table.cols[j];
        match col.kind {
            Kind::Lww => col.values[v as usize % col.values.len()].clone(),
            Kind::OrSet => set_json(&elems_of(v)),
            Kind::GCounter => Value::Integer(i64::from(v % 5)),
            Kind::PnCounter => Value::Integer(i64::from(v % 9) - 4),
            other => panic!("the simulation does not model the {other} column kind"),
        }
    };
    // Distinct columns, in generated order; counters only where allowed.
    let values = |allow_counters: bool| -> Vec<(usize, Value)> {
        let mut out: Vec<(usize, Value)> = Vec::new();
        for &(c, v) in raw.cols.iter().filter(|_| !table.cols.is_empty()) {
            let j = c as usize % table.cols.len();
            let counter = matches!(table.cols[j].kind, Kind::GCounter | Kind::PnCounter);
            if (counter && !allow_counters) || out.iter().any(|(k, _)| *k == j) {
                continue;
            }
            out.push((j, value_for(j, v)));
        }
        out
    };
    let elem = ELEMS[raw.elem as usize % ELEMS.len()].to_owned();
    let op = match raw.kind {
        OpKind::Insert => {
            let mut vals = values(true);
            for (j, col) in table.cols.iter().enumerate() {
                if col.required && !vals.iter().any(|(k, _)| *k == j) {
                    vals.push((j, value_for(j, raw.elem)));
                }
            }
            Op::Insert(vals)
        }
        OpKind::Upsert => Op::Upsert(values(false)),
        OpKind::Update => Op::Update(values(false)),
        OpKind::Set if !assignable.is_empty() => {
            let (c, v) = raw.cols.first().copied().unwrap_or((raw.elem, raw.key));
            let j = pick(&assignable, c);
            Op::Set(j, value_for(j, v))
        }
        OpKind::Increment if !counters.is_empty() => {
            let j = pick(&counters, raw.elem);
            let amount = i64::from(raw.amount);
            let amount = if table.cols[j].kind == Kind::GCounter {
                amount.abs()
            } else {
                amount
            };
            Op::Increment(j, amount)
        }
        OpKind::AddToSet if !sets.is_empty() => Op::Add(pick(&sets, raw.key), elem),
        OpKind::RemoveFromSet if !sets.is_empty() => Op::Remove(pick(&sets, raw.key), elem),
        OpKind::Delete => Op::Delete,
        // The table lacks the column kind the op needs.
        _ => Op::Update(values(false)),
    };
    (row, op)
}

/// What the model predicts for `op` on replica `r`'s view of `row`.
pub fn predict(spec: &Spec, model: &Model, r: usize, row: RowId, op: &Op) -> Expect {
    let table = &spec.tables[row.table];
    let known = model.known(r, row);
    let cl = model.cl(known);
    let live = cl % 2 == 1;
    // Column writes: lww sets, or_set assignments against the current view.
    let writes = |vals: &[(usize, Value)], view_life: Option<u64>| -> Vec<Effect> {
        let mut effects = Vec::new();
        for (j, value) in vals {
            match table.cols[*j].kind {
                Kind::Lww => effects.push(Effect::Lww {
                    col: *j,
                    value: value.clone(),
                    stamp: None,
                }),
                Kind::GCounter | Kind::PnCounter => {
                    if let Value::Integer(amount) = value {
                        effects.push(Effect::Count {
                            col: *j,
                            amount: *amount,
                        });
                    }
                }
                Kind::OrSet => {
                    let wanted = parse_json(value);
                    let view = view_life
                        .map(|life| model.set_view(known, *j, life))
                        .unwrap_or_default();
                    for e in view.difference(&wanted) {
                        effects.push(Effect::Kill {
                            col: *j,
                            elem: e.clone(),
                        });
                    }
                    for e in wanted.difference(&view) {
                        effects.push(Effect::Add {
                            col: *j,
                            elem: e.clone(),
                        });
                    }
                }
                other => panic!("the simulation does not model the {other} column kind"),
            }
        }
        effects
    };
    let missing_required = |vals: &[(usize, Value)]| {
        table
            .cols
            .iter()
            .enumerate()
            .any(|(j, c)| c.required && !vals.iter().any(|(k, _)| *k == j))
    };
    match op {
        Op::Insert(_) | Op::Upsert(_) if !live => {
            let (Op::Insert(vals) | Op::Upsert(vals)) = op else {
                unreachable!()
            };
            if missing_required(vals) {
                Expect::Missing
            } else {
                Expect::Event {
                    cl: cl + 1,
                    effects: writes(vals, None),
                }
            }
        }
        Op::Insert(_) => Expect::Exists,
        _ if !live => Expect::NotFound,
        Op::Upsert(vals) | Op::Update(vals) => Expect::Event {
            cl,
            effects: writes(vals, Some(cl)),
        },
        Op::Set(j, v) => Expect::Event {
            cl,
            effects: writes(&[(*j, v.clone())], Some(cl)),
        },
        Op::Increment(_, 0) => Expect::NoChange,
        Op::Increment(j, amount) => Expect::Event {
            cl,
            effects: vec![Effect::Count {
                col: *j,
                amount: *amount,
            }],
        },
        Op::Add(j, e) => Expect::Event {
            cl,
            effects: vec![
                Effect::Kill {
                    col: *j,
                    elem: e.clone(),
                },
                Effect::Add {
                    col: *j,
                    elem: e.clone(),
                },
            ],
        },
        Op::Remove(j, e) => Expect::Event {
            cl,
            effects: vec![Effect::Kill {
                col: *j,
                elem: e.clone(),
            }],
        },
        Op::Delete => Expect::Event {
            cl: cl + 1,
            effects: Vec::new(),
        },
    }
}

pub fn execute(
    tx: &mut meldb::Transaction<'_>,
    table: &TableSpec,
    key: &[Value],
    op: &Op,
) -> meldb::Result<()> {
    let name = |j: usize| table.cols[j].name.as_str();
    let row = |vals: &[(usize, Value)], with_key: bool| -> Vec<(&str, Value)> {
        let keys = table
            .key_cols
            .iter()
            .zip(key)
            .map(|(c, v)| (c.as_str(), v.clone()))
            .filter(|_| with_key);
        keys.chain(vals.iter().map(|(j, v)| (name(*j), v.clone())))
            .collect()
    };
    match op {
        Op::Insert(vals) => tx.insert(&table.name, &row(vals, true)),
        Op::Upsert(vals) => tx.upsert(&table.name, &row(vals, true)),
        Op::Update(vals) => tx.update(&table.name, key.to_vec(), &row(vals, false)),
        Op::Set(j, v) => tx.set(&table.name, key.to_vec(), name(*j), v.clone()),
        Op::Increment(j, amount) => tx.increment(&table.name, key.to_vec(), name(*j), *amount),
        Op::Add(j, e) => tx.add_to_set(&table.name, key.to_vec(), name(*j), e),
        Op::Remove(j, e) => tx.remove_from_set(&table.name, key.to_vec(), name(*j), e),
        Op::Delete => tx.delete(&table.name, key.to_vec()),
    }
}
