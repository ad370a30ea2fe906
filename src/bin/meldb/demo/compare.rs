//! What last-writer-wins would have kept, and the or_set story.

use super::shop::{integer, LastWriter, BEAN, ITEMS};
use super::Till;
use crate::error::Result;
use crate::output::{cell, count, Rows};
use meldb::Value;
use std::io::Write;

pub(super) fn compare_with_lww(
    tills: &[Till],
    table: &Rows,
    last: &LastWriter,
    out: &mut dyn Write,
) -> Result<()> {
    let width = ITEMS.iter().map(|i| i.sku.len()).max().unwrap_or(0);
    let mut total_lost = 0;
    for (i, item) in ITEMS.iter().enumerate() {
        let stock = converged(table, item.sku, "stock");
        let sold: i64 = tills.iter().map(|t| t.sold[i]).sum();
        let restocked: i64 = tills.iter().map(|t| t.restocked[i]).sum();
        let mut how = format!("{} seeded", item.stock);
        if sold > 0 {
            how.push_str(&format!(" - {sold} sold"));
        }
        if restocked > 0 {
            how.push_str(&format!(" + {restocked} restocked"));
        }
        if stock < 0 {
            how.push_str(&format!(
                ": oversold by {}, and every till can see it",
                -stock
            ));
        }
        let sku = item.sku;
        writeln!(out, "  {sku:<width$}  meldb {stock:>4} = {how}")?;
        let blank = "";
        let Some((winner, lww)) = last[i] else {
            writeln!(
                out,
                "  {blank:<width$}  LWW   {:>4}   nobody changed it",
                item.stock
            )?;
            continue;
        };
        let mut lost: Vec<String> = tills
            .iter()
            .enumerate()
            .filter(|&(t, till)| t != winner && till.sold[i] > 0)
            .map(|(_, till)| format!("{}: {}", till.name, till.sold[i]))
            .collect();
        if lost.len() > 3 {
            lost = vec![format!("from {} tills", lost.len())];
        }
        let lost_sales: i64 = (0..tills.len())
            .filter(|&t| t != winner)
            .map(|t| tills[t].sold[i])
            .sum();
        let lost_restock: i64 = (0..tills.len())
            .filter(|&t| t != winner)
            .map(|t| tills[t].restocked[i])
            .sum();
        total_lost += lost_sales;
        let verdict = match (lost_sales, lost_restock) {
            (0, 0) => "nothing lost".to_owned(),
            (s, 0) => format!("forgets {} sold ({})", units(s), lost.join(", ")),
            (0, r) => format!("forgets {} restocked", units(r)),
            (s, r) => format!(
                "forgets {} sold ({}) and {} restocked",
                units(s),
                lost.join(", "),
                units(r)
            ),
        };
        let hidden = if stock < 0 && lww >= 0 {
            ", hides the oversell"
        } else {
            ""
        };
        let who = if tills
            .iter()
            .enumerate()
            .all(|(t, till)| t == winner || (till.sold[i] == 0 && till.restocked[i] == 0))
        {
            format!("only {} changed it", tills[winner].name)
        } else {
            format!("{} wrote last", tills[winner].name)
        };
        writeln!(
            out,
            "  {blank:<width$}  LWW   {lww:>4}   {who}: {verdict}{hidden}"
        )?;
    }
    writeln!(
        out,
        "\n  meldb counted every unit sold; last-writer-wins would have forgotten {}.",
        units(total_lost)
    )?;
    Ok(())
}

fn units(n: i64) -> String {
    count(usize::try_from(n).unwrap_or(0), "unit")
}

fn converged(table: &Rows, sku: &str, column: &str) -> i64 {
    let Some(c) = table.columns.iter().position(|n| n == column) else {
        return 0;
    };
    table
        .rows
        .iter()
        .find(|row| row.first() == Some(&Value::from(sku)))
        .map_or(0, |row| integer(&row[c]))
}

/// The or_set story: one till removed a tag while another added it again.
pub(super) fn tags_note(tills: &[Till], table: &Rows, out: &mut dyn Write) -> Result<()> {
    let (Some(remover), Some(adder)) = (tills.first(), tills.get(1)) else {
        return Ok(());
    };
    let c = table.columns.iter().position(|n| n == "tags");
    let tags = table
        .rows
        .iter()
        .find(|row| row.first() == Some(&Value::from(ITEMS[BEAN].sku)))
        .zip(c)
        .map_or(String::new(), |(row, c)| cell(&row[c]));
    writeln!(
        out,
        "\n  tags: {} removed \"sale\" from {} while {} added it again, concurrently;",
        remover.name, ITEMS[BEAN].sku, adder.name
    )?;
    writeln!(
        out,
        "  an or_set lets the add win, so every till shows {tags}."
    )?;
    Ok(())
}
