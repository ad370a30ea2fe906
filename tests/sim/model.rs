//! A reference model of what every replica must show, independent of how
//! meldb stores or ships state.
//!
//! Every successful local write is an *event* on one row: the causal length
//! the row had on its replica after the write, its effects on columns, and
//! the events of that row its writer had seen (its causal past). Replicas
//! know sets of events per row: their own, plus the sender's whole set for
//! every row a delivered changeset piece carries (row states travel whole).
//! What a replica must show for a row is a pure function of the events it
//! knows:
//!
//! - causal length `L` = the greatest causal length among them; live iff odd;
//! - an `lww` column: the write with the greatest `(hlc, site)` among events
//!   of life `L`, or the column default if none;
//! - a counter: the sum of all increments made in life `L`;
//! - an `or_set`: elements with an add in life `L` that no event which had
//!   seen that add removed (or re-tagged) — add wins over concurrent remove.
//!
//! So "no acknowledged write is lost" is checked exactly: after full sync,
//! every replica must show the function of *all* events.

use meldb::{Hlc, Kind, Schema, SiteId, Value};
use std::collections::{BTreeMap, BTreeSet};

/// Index of an event in [`Model::events`].
pub type EventId = usize;

/// A row of the simulated key space: table index and key index in [`Spec`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RowId {
    pub table: usize,
    pub key: usize,
}

/// One write's effect on one column (`col` indexes [`TableSpec::cols`]).
#[derive(Clone, Debug)]
pub enum Effect {
    /// A register write; `stamp` is its `(hlc, site)`, known after commit.
    /// `None` for writes superseded inside their own transaction, which can
    /// never win.
    Lww {
        col: usize,
        value: Value,
        stamp: Option<(Hlc, SiteId)>,
    },
    /// A counter increment (insert amounts included).
    Count { col: usize, amount: i64 },
    /// An or_set add (a fresh tag).
    Add { col: usize, elem: String },
    /// Removes every tag of `elem` the writer had seen.
    Kill { col: usize, elem: String },
}

/// One successful write to one row.
#[derive(Clone, Debug)]
pub struct Event {
    pub row: RowId,
    pub replica: usize,
    /// The row's causal length on the writer right after the write.
    pub cl: u64,
    /// The events of this row the writer knew before writing.
    pub seen: BTreeSet<EventId>,
    pub effects: Vec<Effect>,
}

/// A value column as the simulation uses it.
#[derive(Clone, Debug)]
pub struct ColSpec {
    pub name: String,
    pub kind: Kind,
    /// Candidate values for `lww` writes.
    pub values: Vec<Value>,
    /// What SQL shows when the column was never written in the row's life.
    pub default: Value,
    /// A NOT NULL `lww` column without default: inserts must give it.
    pub required: bool,
}

/// Where a view column comes from.
#[derive(Clone, Copy, Debug)]
pub enum Slot {
    Key(usize),
    Col(usize),
}

/// A table of the simulated schema with its small key space.
#[derive(Clone, Debug)]
pub struct TableSpec {
    pub name: String,
    pub key_cols: Vec<String>,
    pub keys: Vec<Vec<Value>>,
    pub cols: Vec<ColSpec>,
    /// The view's columns in schema order.
    pub slots: Vec<Slot>,
}

/// Elements the simulation adds to sets.
pub const ELEMS: [&str; 3] = ["red", "green", "blue"];

/// The simulated schema.
#[derive(Clone, Debug)]
pub struct Spec {
    pub tables: Vec<TableSpec>,
}

fn candidates(column: &meldb::Column) -> Vec<Value> {
    use meldb::SqlType;
    let mut values = match column.sql_type {
        SqlType::Integer => vec![0.into(), 1.into(), 7.into(), (-3).into()],
        SqlType::Real => vec![0.0.into(), 1.5.into(), (-2.25).into()],
        SqlType::Text => vec!["".into(), "x".into(), "yy".into(), "zzz".into()],
        SqlType::Blob => vec![vec![].into(), vec![1u8].into(), vec![2u8, 3].into()],
    };
    if column.nullable {
        values.push(Value::Null);
    }
    values
}

fn key_space(table: &meldb::Table) -> Vec<Vec<Value>> {
    use meldb::SqlType;
    let parts: Vec<Vec<Value>> = table
        .primary_key
        .iter()
        .map(|&i| match table.columns[i].sql_type {
            SqlType::Integer => vec![1.into(), 2.into(), 3.into()],
            SqlType::Real => vec![0.5.into(), 1.5.into(), 2.5.into()],
            SqlType::Text => vec!["a".into(), "b".into(), "c".into()],
            SqlType::Blob => vec![vec![1u8].into(), vec![2u8].into(), vec![3u8].into()],
        })
        .collect();
    // Single keys: all three; composite keys: (a, a), (a, b), (b, a), so
    // rows collide often and keys share prefixes.
    if parts.len() == 1 {
        return parts[0].iter().map(|v| vec![v.clone()]).collect();
    }
    (0..3)
        .map(|n| {
            parts
                .iter()
                .enumerate()
                .map(|(p, values)| values[if p == 0 { n / 2 } else { n % 2 }].clone())
                .collect()
        })
        .collect()
}

impl Spec {
    /// Derives the simulation's view of a schema.
    pub fn new(schema: &Schema) -> Spec {
        let tables = schema
            .tables
            .iter()
            .map(|t| {
                let mut cols = Vec::new();
                let mut slots = Vec::new();
                for (i, c) in t.columns.iter().enumerate() {
                    match t.primary_key.iter().position(|&k| k == i) {
                        Some(k) => slots.push(Slot::Key(k)),
                        None => {
                            slots.push(Slot::Col(cols.len()));
                            cols.push(ColSpec {
                                name: c.name.clone(),
                                kind: c.kind,
                                values: candidates(c),
                                default: match c.kind {
                                    Kind::Lww => c.default.clone().unwrap_or(Value::Null),
                                    Kind::GCounter | Kind::PnCounter => Value::Integer(0),
                                    Kind::OrSet => Value::Text("[]".into()),
                                    other => panic!(
                                        "the simulation does not model the {other} column kind"
                                    ),
                                },
                                required: c.kind == Kind::Lww && !c.nullable && c.default.is_none(),
                            });
                        }
                    }
                }
                TableSpec {
                    name: t.name.clone(),
                    key_cols: t
                        .primary_key
                        .iter()
                        .map(|&i| t.columns[i].name.clone())
                        .collect(),
                    keys: key_space(t),
                    cols,
                    slots,
                }
            })
            .collect();
        Spec { tables }
    }

    /// The row id of a key as a changeset carries it.
    pub fn row_id(&self, table: &str, key: &[Value]) -> RowId {
        let t = self
            .tables
            .iter()
            .position(|s| s.name == table)
            .unwrap_or_else(|| panic!("changeset names table {table:?} outside the spec"));
        let k = self.tables[t]
            .keys
            .iter()
            .position(|k| k.as_slice() == key)
            .unwrap_or_else(|| panic!("changeset names key {key:?} outside the key space"));
        RowId { table: t, key: k }
    }

    /// Every row of the key space.
    pub fn rows(&self) -> impl Iterator<Item = RowId> + '_ {
        self.tables
            .iter()
            .enumerate()
            .flat_map(|(t, spec)| (0..spec.keys.len()).map(move |k| RowId { table: t, key: k }))
    }
}

/// All events, and which of them each replica knows per row.
#[derive(Clone, Debug)]
pub struct Model {
    pub events: Vec<Event>,
    pub known: Vec<BTreeMap<RowId, BTreeSet<EventId>>>,
}

/// Counters a run collects, to show the generator makes conflicts happen.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub committed_writes: usize,
    pub rejected_exists: usize,
    pub rejected_not_found: usize,
    pub rejected_missing: usize,
    pub rolled_back: usize,
    pub deliveries: usize,
    pub stale_deliveries: usize,
    pub held_rows: usize,
    pub concurrent_rows: usize,
    pub duplicate_rows: usize,
    pub lww_ties: usize,
    pub deletes: usize,
    pub revivals: usize,
}

impl Stats {
    pub fn add(&mut self, o: &Stats) {
        self.committed_writes += o.committed_writes;
        self.rejected_exists += o.rejected_exists;
        self.rejected_not_found += o.rejected_not_found;
        self.rejected_missing += o.rejected_missing;
        self.rolled_back += o.rolled_back;
        self.deliveries += o.deliveries;
        self.stale_deliveries += o.stale_deliveries;
        self.held_rows += o.held_rows;
        self.concurrent_rows += o.concurrent_rows;
        self.duplicate_rows += o.duplicate_rows;
        self.lww_ties += o.lww_ties;
        self.deletes += o.deletes;
        self.revivals += o.revivals;
    }
}

static EMPTY: BTreeSet<EventId> = BTreeSet::new();

impl Model {
    pub fn new(replicas: usize) -> Model {
        Model {
            events: Vec::new(),
            known: vec![BTreeMap::new(); replicas],
        }
    }

    /// The events of `row` replica `r` knows.
    pub fn known(&self, r: usize, row: RowId) -> &BTreeSet<EventId> {
        self.known[r].get(&row).unwrap_or(&EMPTY)
    }

    /// Every event of `row`.
    pub fn all_events(&self, row: RowId) -> BTreeSet<EventId> {
        (0..self.events.len())
            .filter(|&e| self.events[e].row == row)
            .collect()
    }

    /// The causal length of a row over a set of its events (0: never written).
    pub fn cl(&self, set: &BTreeSet<EventId>) -> u64 {
        set.iter().map(|&e| self.events[e].cl).max().unwrap_or(0)
    }

    /// Records a write of replica `r` (its causal past: what `r` knows).
    pub fn record(&mut self, r: usize, row: RowId, cl: u64, effects: Vec<Effect>) -> EventId {
        let id = self.events.len();
        let seen = self.known(r, row).clone();
        self.events.push(Event {
            row,
            replica: r,
            cl,
            seen,
            effects,
        });
        self.known[r].entry(row).or_default().insert(id);
        id
    }

    /// Replica `r` received a row state whose sender knew `events`.
    pub fn deliver(&mut self, r: usize, row: RowId, events: &BTreeSet<EventId>) {
        self.known[r]
            .entry(row)
            .or_default()
            .extend(events.iter().copied());
    }

    /// The elements of or_set column `col` over `set`, in life `life`.
    pub fn set_view(&self, set: &BTreeSet<EventId>, col: usize, life: u64) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for &a in set {
            let add = &self.events[a];
            if add.cl != life {
                continue;
            }
            for effect in &add.effects {
                let Effect::Add { col: c, elem } = effect else {
                    continue;
                };
                if *c != col || out.contains(elem) {
                    continue;
                }
                let killed = set.iter().any(|&b| {
                    self.events[b].seen.contains(&a)
                        && self.events[b].effects.iter().any(|e| {
                            matches!(e, Effect::Kill { col: c2, elem: e2 } if *c2 == col && e2 == elem)
                        })
                });
                if !killed {
                    out.insert(elem.clone());
                }
            }
        }
        out
    }

    /// The lww winner of column `col` over `set` in life `life`, and whether
    /// the top two candidates tied on timestamp (sites decided).
    pub fn lww_winner(
        &self,
        set: &BTreeSet<EventId>,
        col: usize,
        life: u64,
    ) -> (Option<Value>, bool) {
        let mut stamps: Vec<((Hlc, SiteId), &Value)> = set
            .iter()
            .map(|&e| &self.events[e])
            .filter(|ev| ev.cl == life)
            .flat_map(|ev| ev.effects.iter())
            .filter_map(|effect| match effect {
                Effect::Lww {
                    col: c,
                    value,
                    stamp: Some(stamp),
                } if *c == col => Some((*stamp, value)),
                _ => None,
            })
            .collect();
        stamps.sort_by_key(|s| s.0);
        let tie = stamps.len() >= 2 && {
            let n = stamps.len();
            stamps[n - 1].0 .0 == stamps[n - 2].0 .0
        };
        (stamps.last().map(|(_, v)| (*v).clone()), tie)
    }

    /// What SQL must show for a row over `set` (`None`: no live row): the
    /// view's columns in schema order, and whether an lww tie was decided
    /// by site id.
    pub fn expected_row(
        &self,
        spec: &Spec,
        row: RowId,
        set: &BTreeSet<EventId>,
    ) -> (Option<Vec<Value>>, bool) {
        let life = self.cl(set);
        if life.is_multiple_of(2) {
            return (None, false);
        }
        let table = &spec.tables[row.table];
        let mut any_tie = false;
        let values: Vec<Value> = table
            .cols
            .iter()
            .enumerate()
            .map(|(j, col)| match col.kind {
                Kind::Lww => {
                    let (winner, tie) = self.lww_winner(set, j, life);
                    any_tie |= tie;
                    winner.unwrap_or_else(|| col.default.clone())
                }
                Kind::GCounter | Kind::PnCounter => {
                    let sum: i64 = set
                        .iter()
                        .map(|&e| &self.events[e])
                        .filter(|ev| ev.cl == life)
                        .flat_map(|ev| ev.effects.iter())
                        .map(|effect| match effect {
                            Effect::Count { col: c, amount } if *c == j => *amount,
                            _ => 0,
                        })
                        .sum();
                    Value::Integer(sum)
                }
                Kind::OrSet => {
                    let elems: Vec<String> = self.set_view(set, j, life).into_iter().collect();
                    Value::Text(serde_json::to_string(&elems).unwrap_or_default())
                }
                other => panic!("the simulation does not model the {other} column kind"),
            })
            .collect();
        let out = table
            .slots
            .iter()
            .map(|slot| match *slot {
                Slot::Key(k) => table.keys[row.key][k].clone(),
                Slot::Col(j) => values[j].clone(),
            })
            .collect();
        (Some(out), any_tie)
    }
}
