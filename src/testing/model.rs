//! The reference model of one replica's SQL-visible state, and reading
//! the store back in the model's shape.

use super::*;

// ---------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------

/// Why a write is rejected; one per [`WriteError`] variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rejection {
    /// [`WriteError::UnknownTable`].
    UnknownTable,
    /// [`WriteError::UnknownColumn`].
    UnknownColumn,
    /// [`WriteError::TypeMismatch`].
    TypeMismatch,
    /// [`WriteError::NullNotAllowed`].
    NullNotAllowed,
    /// [`WriteError::NotANumber`].
    NotANumber,
    /// [`WriteError::MissingValue`].
    MissingValue,
    /// [`WriteError::KeyArity`].
    KeyArity,
    /// [`WriteError::DuplicateColumn`].
    DuplicateColumn,
    /// [`WriteError::RowExists`].
    RowExists,
    /// [`WriteError::RowNotFound`].
    RowNotFound,
    /// [`WriteError::KeyUpdate`].
    KeyUpdate,
    /// [`WriteError::WrongKind`].
    WrongKind,
    /// [`WriteError::NegativeIncrement`].
    NegativeIncrement,
    /// [`WriteError::CounterOverflow`].
    CounterOverflow,
    /// [`WriteError::BadSetValue`].
    BadSetValue,
    /// [`WriteError::Policy`] (the model's schemas declare no policies, so
    /// the model never expects it).
    Policy,
}

/// The kind of rejection a store error is, or `None` if it is not a write
/// rejection at all (SQLite failed, say).
pub fn rejection_of(error: &Error) -> Option<Rejection> {
    let Error::Write(w) = error else { return None };
    Some(match w {
        WriteError::UnknownTable { .. } => Rejection::UnknownTable,
        WriteError::UnknownColumn { .. } => Rejection::UnknownColumn,
        WriteError::TypeMismatch { .. } => Rejection::TypeMismatch,
        WriteError::NullNotAllowed { .. } => Rejection::NullNotAllowed,
        WriteError::NotANumber { .. } => Rejection::NotANumber,
        WriteError::MissingValue { .. } => Rejection::MissingValue,
        WriteError::KeyArity { .. } => Rejection::KeyArity,
        WriteError::DuplicateColumn { .. } => Rejection::DuplicateColumn,
        WriteError::RowExists { .. } => Rejection::RowExists,
        WriteError::RowNotFound { .. } => Rejection::RowNotFound,
        WriteError::KeyUpdate { .. } => Rejection::KeyUpdate,
        WriteError::WrongKind { .. } => Rejection::WrongKind,
        WriteError::NegativeIncrement { .. } => Rejection::NegativeIncrement,
        WriteError::CounterOverflow { .. } => Rejection::CounterOverflow,
        WriteError::BadSetValue { .. } => Rejection::BadSetValue,
        WriteError::Policy { .. } => Rejection::Policy,
        // `WriteError` is non-exhaustive across the crate boundary; a new
        // variant reads as "not a rejection the model knows", which the
        // model tests then report as a disagreement.
        _ => return None,
    })
}

/// The model's refusal of an op.
#[derive(Debug, Clone, PartialEq, Eq, ThisError)]
#[error("table {table:?}: {rejection:?}: {detail}")]
pub struct ModelError {
    /// What kind of refusal.
    pub rejection: Rejection,
    /// The table the op named.
    pub table: String,
    /// The column, key or value at fault.
    pub detail: String,
}

fn reject(table: &Table, rejection: Rejection, detail: impl Into<String>) -> ModelError {
    ModelError {
        rejection,
        table: table.name.clone(),
        detail: detail.into(),
    }
}

/// One column of a model row.
#[derive(Debug, Clone, PartialEq)]
enum Cell {
    /// A key part or an `lww` value.
    Plain(Value),
    /// A counter's totals; one replica's counter is one `(up, down)` pair
    /// of 64-bit totals, and an increment that would overflow either is
    /// refused.
    Counter { up: u64, down: u64 },
    /// An `or_set`'s elements.
    Set(BTreeSet<String>),
}

impl Cell {
    /// What a column holds before anything is written to it.
    fn fresh(column: &Column) -> Cell {
        match column.kind {
            Kind::Lww => Cell::Plain(column.default.clone().unwrap_or(Value::Null)),
            Kind::GCounter | Kind::PnCounter => Cell::Counter { up: 0, down: 0 },
            Kind::OrSet => Cell::Set(BTreeSet::new()),
            other => unknown_kind(other),
        }
    }

    /// The value SQL shows (writes keep counter sums within i64).
    fn shown(&self) -> Value {
        match self {
            Cell::Plain(v) => v.clone(),
            Cell::Counter { up, down } => {
                let sum = i128::from(*up) - i128::from(*down);
                Value::Integer(i64::try_from(sum).unwrap_or(if sum < 0 {
                    i64::MIN
                } else {
                    i64::MAX
                }))
            }
            Cell::Set(elems) => {
                let sorted: Vec<&str> = elems.iter().map(String::as_str).collect();
                Value::Text(serde_json::to_string(&sorted).unwrap_or_else(|_| "[]".into()))
            }
        }
    }
}

/// A value a write gives one column (by its index in `Table::columns`).
#[derive(Debug, Clone)]
enum Assign {
    Value(usize, Value),
    Add(usize, i64),
    Set(usize, BTreeSet<String>),
}

impl Assign {
    fn column(&self) -> usize {
        match self {
            Assign::Value(i, _) | Assign::Add(i, _) | Assign::Set(i, _) => *i,
        }
    }
}

/// A primary key ordered as SQLite orders the key columns (every key the
/// model holds passed the type check, so `total_cmp` within one type).
#[derive(Debug, Clone)]
struct RowKey(Vec<Value>);

impl Ord for RowKey {
    fn cmp(&self, other: &Self) -> Ordering {
        cmp_values(&self.0, &other.0)
    }
}
impl PartialOrd for RowKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl PartialEq for RowKey {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for RowKey {}

pub(super) fn cmp_values(a: &[Value], b: &[Value]) -> Ordering {
    a.iter()
        .zip(b)
        .map(|(x, y)| x.total_cmp(y))
        .find(|o| o.is_ne())
        .unwrap_or_else(|| a.len().cmp(&b.len()))
}

/// What an accepted op does to the model.
enum Change {
    Put(RowKey, Vec<Cell>),
    Remove(RowKey),
    Nothing,
}

/// The reference model: the live rows of one replica, as SQL shows them.
#[derive(Debug, Clone)]
pub struct Model {
    schema: Schema,
    tables: BTreeMap<String, BTreeMap<RowKey, Vec<Cell>>>,
}

impl Model {
    /// An empty database with `schema`.
    pub fn new(schema: &Schema) -> Self {
        Model {
            schema: schema.clone(),
            tables: schema
                .tables
                .iter()
                .map(|t| (t.name.clone(), BTreeMap::new()))
                .collect(),
        }
    }

    /// The schema the model follows.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// The live rows of `table` in key order, each with the schema's columns
    /// in schema order: the shape of `SELECT * FROM table ORDER BY key`.
    /// Empty for a table the schema lacks.
    pub fn rows(&self, table: &str) -> Vec<Vec<Value>> {
        self.tables.get(table).map_or_else(Vec::new, |rows| {
            rows.values()
                .map(|row| row.iter().map(Cell::shown).collect())
                .collect()
        })
    }

    /// The live row with `key`, in the shape of [`Model::rows`].
    pub fn row(&self, table: &str, key: &[Value]) -> Option<Vec<Value>> {
        self.live(table, key)
            .map(|row| row.iter().map(Cell::shown).collect())
    }

    fn live(&self, table: &str, key: &[Value]) -> Option<&Vec<Cell>> {
        self.tables.get(table)?.get(&RowKey(key.to_vec()))
    }

    /// Applies `op` if the store's rules accept it; a refused op changes
    /// nothing.
    pub fn apply(&mut self, op: &Op) -> Result<(), ModelError> {
        let table = self
            .schema
            .table(op.table())
            .cloned()
            .ok_or_else(|| ModelError {
                rejection: Rejection::UnknownTable,
                table: op.table().to_owned(),
                detail: "no such table".into(),
            })?;
        let change = self.plan(&table, op)?;
        let rows = self.tables.entry(table.name).or_default();
        match change {
            Change::Put(key, row) => {
                rows.insert(key, row);
            }
            Change::Remove(key) => {
                rows.remove(&key);
            }
            Change::Nothing => {}
        }
        Ok(())
    }

    /// Decides what `op` does without changing anything. The checks run in
    /// the store's order, so that when several apply both name the same.
    fn plan(&self, table: &Table, op: &Op) -> Result<Change, ModelError> {
        let missing = |key: &[Value]| reject(table, Rejection::RowNotFound, format!("{key:?}"));
        match op {
            Op::Insert { key, values, .. } => {
                let row = row_values(&self.schema, &table.name, key, values);
                let (key, assigns) = split_row(table, &row, true)?;
                let key = check_key(table, &key)?;
                check_required(table, &assigns)?;
                if self.live(&table.name, &key).is_some() {
                    return Err(reject(table, Rejection::RowExists, format!("{key:?}")));
                }
                let row = with_assigns(table, fresh_row(table, &key), &assigns)?;
                Ok(Change::Put(RowKey(key), row))
            }
            Op::Upsert { key, values, .. } => {
                let row = row_values(&self.schema, &table.name, key, values);
                let (key, assigns) = split_row(table, &row, false)?;
                let key = check_key(table, &key)?;
                let before = match self.live(&table.name, &key) {
                    Some(row) => row.clone(),
                    None => {
                        check_required(table, &assigns)?;
                        fresh_row(table, &key)
                    }
                };
                let row = with_assigns(table, before, &assigns)?;
                Ok(Change::Put(RowKey(key), row))
            }
            Op::Update { key, values, .. } => {
                let assigns = values
                    .iter()
                    .map(|(name, value)| assign(table, name, value, false))
                    .collect::<Result<Vec<_>, _>>()?;
                check_distinct(table, &assigns)?;
                let key = check_key(table, key)?;
                let before = self.live(&table.name, &key).ok_or_else(|| missing(&key))?;
                let row = with_assigns(table, before.clone(), &assigns)?;
                Ok(Change::Put(RowKey(key), row))
            }
            Op::Increment {
                key,
                column,
                amount,
                ..
            } => {
                let i = value_column(table, column)?;
                match table.columns[i].kind {
                    Kind::GCounter if *amount < 0 => {
                        return Err(reject(
                            table,
                            Rejection::NegativeIncrement,
                            format!("{column}: {amount}"),
                        ))
                    }
                    Kind::GCounter | Kind::PnCounter => {}
                    Kind::Lww | Kind::OrSet => {
                        return Err(reject(table, Rejection::WrongKind, column.as_str()))
                    }
                    other => unknown_kind(other),
                }
                let key = check_key(table, key)?;
                let before = self.live(&table.name, &key).ok_or_else(|| missing(&key))?;
                if *amount == 0 {
                    return Ok(Change::Nothing);
                }
                let row = with_assigns(table, before.clone(), &[Assign::Add(i, *amount)])?;
                Ok(Change::Put(RowKey(key), row))
            }
            Op::AddToSet {
                key,
                column,
                element,
                ..
            }
            | Op::RemoveFromSet {
                key,
                column,
                element,
                ..
            } => {
                let i = value_column(table, column)?;
                if table.columns[i].kind != Kind::OrSet {
                    return Err(reject(table, Rejection::WrongKind, column.as_str()));
                }
                let key = check_key(table, key)?;
                let mut row = self
                    .live(&table.name, &key)
                    .ok_or_else(|| missing(&key))?
                    .clone();
                if let Cell::Set(elems) = &mut row[i] {
                    if matches!(op, Op::AddToSet { .. }) {
                        elems.insert(element.clone());
                    } else {
                        elems.remove(element);
                    }
                }
                Ok(Change::Put(RowKey(key), row))
            }
            Op::Delete { key, .. } => {
                let key = check_key(table, key)?;
                if self.live(&table.name, &key).is_none() {
                    return Err(missing(&key));
                }
                Ok(Change::Remove(RowKey(key)))
            }
        }
    }
}

/// A new row: the key, then every other column as it is before any write.
fn fresh_row(table: &Table, key: &[Value]) -> Vec<Cell> {
    let mut row: Vec<Cell> = table.columns.iter().map(Cell::fresh).collect();
    for (&i, v) in table.primary_key.iter().zip(key) {
        row[i] = Cell::Plain(v.clone());
    }
    row
}

fn with_assigns(
    table: &Table,
    mut row: Vec<Cell>,
    assigns: &[Assign],
) -> Result<Vec<Cell>, ModelError> {
    for a in assigns {
        let name = &table.columns[a.column()].name;
        match a {
            Assign::Value(i, v) => row[*i] = Cell::Plain(v.clone()),
            Assign::Set(i, elems) => row[*i] = Cell::Set(elems.clone()),
            Assign::Add(i, amount) => {
                let Cell::Counter { up, down } = &mut row[*i] else {
                    return Err(reject(table, Rejection::WrongKind, name.as_str()));
                };
                let total = if *amount >= 0 { &mut *up } else { &mut *down };
                *total = total
                    .checked_add(amount.unsigned_abs())
                    .ok_or_else(|| reject(table, Rejection::CounterOverflow, name.as_str()))?;
                // The sum SQL shows must stay an INTEGER.
                if i64::try_from(i128::from(*up) - i128::from(*down)).is_err() {
                    return Err(reject(table, Rejection::CounterOverflow, name.as_str()));
                }
            }
        }
    }
    Ok(row)
}

/// Splits an insert's or upsert's `(column, value)` list into the key and
/// the other columns' values, as the store does: a key column given twice,
/// then any column's value check, then duplicates, then a missing key part.
fn split_row(
    table: &Table,
    row: &[(String, Value)],
    insert: bool,
) -> Result<(Vec<Value>, Vec<Assign>), ModelError> {
    let mut key: Vec<Option<Value>> = vec![None; table.primary_key.len()];
    let mut assigns = Vec::new();
    for (name, value) in row {
        let part = table
            .primary_key
            .iter()
            .position(|&i| table.columns[i].name == *name);
        match part {
            Some(k) => {
                if key[k].replace(value.clone()).is_some() {
                    return Err(reject(table, Rejection::DuplicateColumn, name.as_str()));
                }
            }
            None => assigns.push(assign(table, name, value, insert)?),
        }
    }
    check_distinct(table, &assigns)?;
    let key = key
        .into_iter()
        .zip(&table.primary_key)
        .map(|(v, &i)| {
            v.ok_or_else(|| {
                reject(
                    table,
                    Rejection::MissingValue,
                    table.columns[i].name.as_str(),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((key, assigns))
}

/// Checks one non-key column's value. Counters take an initial amount on
/// insert only (an upsert might update, and a counter is never assigned).
fn assign(table: &Table, name: &str, value: &Value, insert: bool) -> Result<Assign, ModelError> {
    let i = value_column(table, name)?;
    let col = &table.columns[i];
    match col.kind {
        Kind::Lww => Ok(Assign::Value(i, check_value(table, col, value)?)),
        Kind::OrSet => {
            let Value::Text(text) = value else {
                return Err(reject(table, Rejection::BadSetValue, name));
            };
            serde_json::from_str::<Vec<String>>(text)
                .map(|elems| Assign::Set(i, elems.into_iter().collect()))
                .map_err(|e| reject(table, Rejection::BadSetValue, format!("{name}: {e}")))
        }
        Kind::GCounter | Kind::PnCounter => {
            if !insert {
                return Err(reject(table, Rejection::WrongKind, name));
            }
            let Value::Integer(amount) = value else {
                return Err(reject(table, Rejection::TypeMismatch, name));
            };
            if col.kind == Kind::GCounter && *amount < 0 {
                return Err(reject(table, Rejection::NegativeIncrement, name));
            }
            Ok(Assign::Add(i, *amount))
        }
        other => unknown_kind(other),
    }
}

/// The model is an independent reference: a kind it does not model is a
/// test-kit bug to fix (teach it the kind), never a case to skip.
fn unknown_kind(kind: Kind) -> ! {
    panic!("the reference model does not know the {kind} column kind")
}

/// The index of the non-key column `name`.
fn value_column(table: &Table, name: &str) -> Result<usize, ModelError> {
    match table.column(name) {
        None => Err(reject(table, Rejection::UnknownColumn, name)),
        Some((i, _)) if table.is_key(i) => Err(reject(table, Rejection::KeyUpdate, name)),
        Some((i, _)) => Ok(i),
    }
}

/// What a column stores for `value`: NULL only where nullable, never NaN,
/// only the column's type, and `-0.0` as `0.0`.
fn check_value(table: &Table, col: &Column, value: &Value) -> Result<Value, ModelError> {
    let bad = |rejection| Err(reject(table, rejection, col.name.as_str()));
    match value {
        Value::Null if col.nullable => Ok(Value::Null),
        Value::Null => bad(Rejection::NullNotAllowed),
        Value::Real(r) if r.is_nan() => bad(Rejection::NotANumber),
        Value::Integer(i) if col.sql_type == crate::schema::SqlType::Real => {
            Ok(Value::Real(*i as f64))
        }
        v if !col.sql_type.admits(v) => bad(Rejection::TypeMismatch),
        Value::Real(r) if *r == 0.0 => Ok(Value::Real(0.0)),
        v => Ok(v.clone()),
    }
}

fn check_key(table: &Table, key: &[Value]) -> Result<Vec<Value>, ModelError> {
    if key.len() != table.primary_key.len() {
        return Err(reject(table, Rejection::KeyArity, format!("{key:?}")));
    }
    table
        .primary_key
        .iter()
        .zip(key)
        .map(|(&i, v)| check_value(table, &table.columns[i], v))
        .collect()
}

fn check_distinct(table: &Table, assigns: &[Assign]) -> Result<(), ModelError> {
    let mut seen = BTreeSet::new();
    for a in assigns {
        if !seen.insert(a.column()) {
            let name = table.columns[a.column()].name.as_str();
            return Err(reject(table, Rejection::DuplicateColumn, name));
        }
    }
    Ok(())
}

/// A new row needs every NOT NULL `lww` column that has no default.
fn check_required(table: &Table, assigns: &[Assign]) -> Result<(), ModelError> {
    for i in table.value_columns() {
        let col = &table.columns[i];
        if col.kind == Kind::Lww
            && !col.nullable
            && col.default.is_none()
            && !assigns.iter().any(|a| a.column() == i)
        {
            return Err(reject(table, Rejection::MissingValue, col.name.as_str()));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Reading the store back
// ---------------------------------------------------------------------------

/// `SELECT * FROM table ORDER BY <primary key>`: what an app reads, in the
/// shape of [`Model::rows`].
pub fn sql_rows(store: &Store, table: &str) -> crate::Result<Vec<Vec<Value>>> {
    let t = store
        .schema()
        .table(table)
        .ok_or_else(|| WriteError::UnknownTable {
            table: table.into(),
        })?;
    let order: Vec<String> = t
        .primary_key
        .iter()
        .map(|&i| quote(&t.columns[i].name))
        .collect();
    let sql = format!(
        "SELECT * FROM {} ORDER BY {}",
        quote(table),
        order.join(", ")
    );
    let mut stmt = store.conn().prepare(&sql)?;
    let n = stmt.column_count();
    let rows = stmt.query_map([], |r| {
        (0..n)
            .map(|i| r.get_ref(i).map(Value::from))
            .collect::<rusqlite::Result<Vec<_>>>()
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Whether two row lists are equal value for value, with no conversions:
/// `0.0` is not `-0.0` and `1` is not `1.0`.
pub fn same_rows(a: &[Vec<Value>], b: &[Vec<Value>]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| cmp_values(x, y).is_eq())
}
