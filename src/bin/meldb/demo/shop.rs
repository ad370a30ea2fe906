//! The shop: its items and what each till does while offline.

use super::Till;
use crate::{error::Result, output::cell};
use meldb::{ManualTime, Store, Value};
use std::{io::Write, time::Duration};

/// One item on the shelf, as till 1 enters it.
pub(super) struct Item {
    pub(super) sku: &'static str,
    pub(super) name: &'static str,
    pub(super) price: f64,
    pub(super) stock: i64,
    pub(super) tags: &'static str,
}

pub(super) const ITEMS: [Item; 3] = [
    Item {
        sku: "BEAN-1kg",
        name: "Espresso beans 1kg",
        price: 18.5,
        stock: 10,
        tags: r#"["coffee","sale"]"#,
    },
    Item {
        sku: "FILTER-100",
        name: "Paper filters x100",
        price: 3.5,
        stock: 20,
        tags: "[]",
    },
    Item {
        sku: "MUG-white",
        name: "White mug",
        price: 9.0,
        stock: 2,
        tags: r#"["kitchen"]"#,
    },
];

/// Indexes into [`ITEMS`]; the mug's last two units are sold by two tills at once.
pub(super) const BEAN: usize = 0;
const FILTER: usize = 1;
const MUG: usize = 2;

/// One offline action at a till; items are indexes into [`ITEMS`].
#[derive(Clone, Copy)]
enum Op {
    Sell(usize, i64),
    Restock(usize, i64),
    Tag(usize, &'static str),
    Untag(usize, &'static str),
}

/// What till `till` (from 0) does offline, one action per round. Tills
/// after the third repeat the pattern.
fn script(till: usize) -> [Op; 3] {
    match till % 3 {
        0 => [Op::Sell(BEAN, 2), Op::Sell(MUG, 2), Op::Untag(BEAN, "sale")],
        1 => [Op::Sell(BEAN, 3), Op::Sell(MUG, 2), Op::Tag(BEAN, "sale")],
        _ => [Op::Sell(BEAN, 1), Op::Restock(BEAN, 6), Op::Sell(FILTER, 5)],
    }
}

/// The last plain write of each item's stock figure, as last-writer-wins
/// would keep it: (till, the stock that till saw after its write).
pub(super) type LastWriter = [Option<(usize, i64)>; 3];

/// Runs every till's script, round by round, one minute per action.
pub(super) fn sell_offline(
    tills: &mut [Till],
    time: &ManualTime,
    out: &mut dyn Write,
) -> Result<LastWriter> {
    let mut last: LastWriter = [None; 3];
    let mut minute = 0;
    for round in 0..3 {
        for (t, till) in tills.iter_mut().enumerate() {
            minute += 1;
            time.advance(Duration::from_secs(60));
            let op = script(t)[round];
            let (what, sku) = match op {
                Op::Sell(i, n) => (format!("sells {n} x"), ITEMS[i].sku),
                Op::Restock(i, n) => (format!("restocks {n} x"), ITEMS[i].sku),
                Op::Tag(i, tag) => (format!("tags {tag:?} on"), ITEMS[i].sku),
                Op::Untag(i, tag) => (format!("untags {tag:?} from"), ITEMS[i].sku),
            };
            till.store.write(|tx| match op {
                Op::Sell(_, n) => {
                    tx.increment("item", sku, "stock", -n)?;
                    tx.increment("item", sku, "sold", n)
                }
                Op::Restock(_, n) => tx.increment("item", sku, "stock", n),
                Op::Tag(_, tag) => tx.add_to_set("item", sku, "tags", tag),
                Op::Untag(_, tag) => tx.remove_from_set("item", sku, "tags", tag),
            })?;
            let seen = match op {
                Op::Sell(i, n) | Op::Restock(i, n) => {
                    let stock = column(&till.store, sku, "stock")?;
                    if matches!(op, Op::Sell(..)) {
                        till.sold[i] += n;
                    } else {
                        till.restocked[i] += n;
                    }
                    last[i] = Some((t, integer(&stock)));
                    format!("stock here {}", cell(&stock))
                }
                Op::Tag(..) | Op::Untag(..) => {
                    let tags = column(&till.store, sku, "tags")?;
                    format!("tags here {}", cell(&tags))
                }
            };
            let clock = format!("{:02}:{:02}", 9 + minute / 60, minute % 60);
            let action = format!("{what} {sku}");
            writeln!(out, "  {clock}  {}  {action:<28} {seen}", till.name)?;
        }
    }
    Ok(last)
}

fn column(store: &Store, sku: &str, name: &str) -> Result<Value> {
    let row = store.get("item", sku)?.unwrap_or_default();
    Ok(row
        .into_iter()
        .find(|(n, _)| n == name)
        .map_or(Value::Null, |(_, v)| v))
}

pub(super) fn integer(value: &Value) -> i64 {
    match value {
        Value::Integer(i) => *i,
        _ => 0,
    }
}
