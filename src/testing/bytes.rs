//! Fuzzer bytes to ops, over deliberately small domains so writes collide.

use super::*;

// ---------------------------------------------------------------------------
// Fuzzer bytes to ops
// ---------------------------------------------------------------------------

/// A table name no schema here has.
pub const UNKNOWN_TABLE: &str = "shipment";
/// A column name no table here has.
pub const UNKNOWN_COLUMN: &str = "colour";
/// Key parts: three one-part keys for `item`, two by two for `location`.
const KEY_PARTS: [&str; 3] = ["k0", "k1", "k2"];
const WAREHOUSES: [&str; 2] = ["w0", "w1"];
/// Set elements: three common ones, then rarer ones that test JSON escaping.
const ELEMENTS: [&str; 6] = ["a", "b", "c", "", "q\"uo\\te", "ü"];
const SMALL_AMOUNTS: [i64; 10] = [0, 1, 2, 3, 7, -1, -2, -3, -7, 100];
/// Mostly positive, so that a few in a row overflow a site's 64-bit total.
const BIG_AMOUNTS: [i64; 6] = [
    i64::MAX,
    i64::MAX,
    i64::MAX - 1,
    1 << 62,
    i64::MIN,
    -i64::MAX,
];

/// Reads bytes, and zeros once they run out, so every prefix decodes.
struct Input<'a, 'b>(&'a mut &'b [u8]);

impl Input<'_, '_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                *self.0 = rest;
                b
            }
            None => 0,
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Want {
    Any,
    /// Columns an update or upsert may assign: `lww` and `or_set`.
    Assignable,
    Counter,
    Set,
}

fn pick_table(b: u8) -> Option<&'static Table> {
    let schema = inventory();
    match b {
        0..=143 => schema.table("item"),
        144..=247 => schema.table("location"),
        _ => None,
    }
}

fn table_name(table: Option<&Table>) -> String {
    table.map_or(UNKNOWN_TABLE, |t| t.name.as_str()).to_owned()
}

/// A key from the small domain; rarely a NULL, wrongly typed or NaN first
/// part (from `a`) or a key of the wrong width (from `b`).
fn pick_key(table: Option<&Table>, a: u8, b: u8) -> Vec<Value> {
    let width = table.map_or(1, |t| t.primary_key.len());
    let part = |byte: u8, j: usize| -> Value {
        let names: &[&str] = match (width, j) {
            (1, _) => &KEY_PARTS,
            (_, 0) => &WAREHOUSES,
            _ => &KEY_PARTS[..2],
        };
        match byte {
            0..=247 => names[usize::from(byte) % names.len()].into(),
            248 | 249 => Value::Null,
            250 | 251 => Value::Integer(1),
            252 | 253 => Value::Real(f64::NAN),
            _ => "K9".into(),
        }
    };
    let mut key: Vec<Value> = (0..width)
        .map(|j| part(if j == 0 { a } else { b }, j))
        .collect();
    match b {
        255 => {
            key.pop();
        }
        254 => key.push("k0".into()),
        _ => {}
    }
    key
}

/// A column: usually a non-key column of the wanted kind, sometimes any
/// non-key column, rarely a key column or an unknown name.
fn pick_column(
    table: Option<&'static Table>,
    b: u8,
    want: Want,
) -> (String, Option<&'static Column>) {
    let Some(table) = table else {
        return (UNKNOWN_COLUMN.to_owned(), None);
    };
    let fits = |c: &Column| match want {
        Want::Any => true,
        Want::Assignable => matches!(c.kind, Kind::Lww | Kind::OrSet),
        Want::Counter => matches!(c.kind, Kind::GCounter | Kind::PnCounter),
        Want::Set => c.kind == Kind::OrSet,
    };
    let all: Vec<&'static Column> = table.value_columns().map(|i| &table.columns[i]).collect();
    let wanted: Vec<&'static Column> = all.iter().copied().filter(|c| fits(c)).collect();
    let candidates = if wanted.is_empty() {
        all.clone()
    } else {
        wanted
    };
    match (b, candidates.is_empty()) {
        (0..=207, false) => {
            let c = candidates[usize::from(b) % candidates.len()];
            (c.name.clone(), Some(c))
        }
        (208..=223, _) if !all.is_empty() => {
            let c = all[usize::from(b) % all.len()];
            (c.name.clone(), Some(c))
        }
        (224..=239, _) => {
            let i = table.primary_key[usize::from(b) % table.primary_key.len()];
            (table.columns[i].name.clone(), Some(&table.columns[i]))
        }
        _ => (UNKNOWN_COLUMN.to_owned(), None),
    }
}

fn pick_amount(b: u8) -> i64 {
    match b {
        0..=179 => SMALL_AMOUNTS[usize::from(b) % SMALL_AMOUNTS.len()],
        _ => BIG_AMOUNTS[usize::from(b) % BIG_AMOUNTS.len()],
    }
}

fn pick_element(b: u8) -> String {
    match b {
        0..=231 => ELEMENTS[usize::from(b) % 3],
        _ => ELEMENTS[3 + usize::from(b) % 3],
    }
    .to_owned()
}

/// A JSON array of elements, sometimes unsorted or with repeats.
fn set_json(b: u8) -> String {
    let mut elems: Vec<&str> = (0..3)
        .filter(|k| b & (1 << k) != 0)
        .map(|k| ELEMENTS[k])
        .collect();
    if b & 0x08 != 0 {
        elems.push(ELEMENTS[3 + usize::from(b >> 6) % 3]);
    }
    if b & 0x10 != 0 {
        elems.reverse();
    }
    if b & 0x20 != 0 {
        if let Some(&first) = elems.first() {
            elems.push(first);
        }
    }
    serde_json::to_string(&elems).unwrap_or_else(|_| "[]".into())
}

/// A value for `column`: usually one of its type and kind, rarely anything.
fn pick_value(column: Option<&Column>, b: u8) -> Value {
    let odd = || -> Value {
        let odd: [Value; 11] = [
            Value::Null,
            Value::Integer(0),
            Value::Integer(-4),
            Value::Real(0.5),
            Value::Real(f64::NAN),
            Value::Real(-0.0),
            "a".into(),
            r#"["a"]"#.into(),
            "[1]".into(),
            "{".into(),
            Value::Blob(vec![0xff]),
        ];
        odd[usize::from(b) % odd.len()].clone()
    };
    let Some(column) = column.filter(|_| b < 232) else {
        return odd();
    };
    let mut choices: Vec<Value> = match (column.kind, column.sql_type) {
        (Kind::GCounter | Kind::PnCounter, _) => return Value::Integer(pick_amount(b)),
        (Kind::OrSet, _) => return Value::Text(set_json(b)),
        (Kind::Lww, SqlType::Text) => ["", "a", "b", "Zz"].map(Value::from).to_vec(),
        (Kind::Lww, SqlType::Real) => [0.0, -0.0, 1.5, -2.25, 1e300, f64::INFINITY]
            .map(Value::Real)
            .to_vec(),
        (Kind::Lww, SqlType::Integer) => [0, 1, -1, i64::MAX].map(Value::Integer).to_vec(),
        (Kind::Lww, SqlType::Blob) => vec![Value::Blob(vec![]), Value::Blob(vec![0, 1])],
        (other, _) => panic!("the fuzz value picker does not know the {other} column kind"),
    };
    if column.nullable {
        choices.push(Value::Null);
    }
    choices[usize::from(b) % choices.len()].clone()
}

/// Up to three `(column, value)` pairs. The columns are consecutive
/// choices from one start byte, and a repeated column is dropped unless the
/// start byte asks for repeats (rarely), so that most writes are valid.
fn pick_values(
    table: Option<&'static Table>,
    want: Want,
    input: &mut Input<'_, '_>,
) -> Vec<(String, Value)> {
    let n = input.byte() % 4;
    let start = input.byte();
    let mut values: Vec<(String, Value)> = Vec::new();
    for k in 0..n {
        let (name, column) = pick_column(table, start.wrapping_add(k), want);
        let value = pick_value(column, input.byte());
        if start >= 248 || values.iter().all(|(seen, _)| *seen != name) {
            values.push((name, value));
        }
    }
    values
}

/// Decodes one op from the front of `data`, consuming what it reads; `None`
/// once `data` is empty. Missing bytes read as zero, so any non-empty input
/// gives an op. Tables, keys, columns, values and set elements come from
/// small domains over the inventory schema, with rare invalid choices
/// (unknown names, key columns, NULL, NaN, wrong types, wrong key width,
/// huge counter amounts) so that the rejection rules are exercised too.
pub fn op_from_bytes(data: &mut &[u8]) -> Option<Op> {
    let (&tag, rest) = data.split_first()?;
    *data = rest;
    let mut input = Input(data);
    let t = pick_table(input.byte());
    let table = table_name(t);
    let key = pick_key(t, input.byte(), input.byte());
    Some(match tag % 16 {
        0..=2 | 15 => Op::Insert {
            table,
            key,
            values: pick_values(t, Want::Any, &mut input),
        },
        3..=5 => Op::Upsert {
            table,
            key,
            values: pick_values(t, Want::Assignable, &mut input),
        },
        6 | 7 => Op::Update {
            table,
            key,
            values: pick_values(t, Want::Assignable, &mut input),
        },
        8 | 9 => Op::Increment {
            table,
            key,
            column: pick_column(t, input.byte(), Want::Counter).0,
            amount: pick_amount(input.byte()),
        },
        10..=12 => {
            let column = pick_column(t, input.byte(), Want::Set).0;
            let element = pick_element(input.byte());
            if tag % 16 == 12 {
                Op::RemoveFromSet {
                    table,
                    key,
                    column,
                    element,
                }
            } else {
                Op::AddToSet {
                    table,
                    key,
                    column,
                    element,
                }
            }
        }
        _ => Op::Delete { table, key },
    })
}

/// Decodes a delete of a valid key followed by an insert of the same key,
/// the sequence that revives a row; `None` once `data` is empty.
pub fn reinsert_from_bytes(data: &mut &[u8]) -> Option<[Op; 2]> {
    let (&tag, rest) = data.split_first()?;
    *data = rest;
    let mut input = Input(data);
    let t = pick_table(if tag % 2 == 0 { 0 } else { 200 });
    let table = table_name(t);
    let key = pick_key(t, input.byte() % 248, input.byte() % 248);
    let values = pick_values(t, Want::Any, &mut input);
    Some([
        Op::Delete {
            table: table.clone(),
            key: key.clone(),
        },
        Op::Insert { table, key, values },
    ])
}
