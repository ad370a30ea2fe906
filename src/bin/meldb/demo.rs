//! `meldb demo`: shop tills that sell the same stock while offline, then
//! converge.
//!
//! Till 1 seeds three items and syncs them to the others. Every till then
//! sells and restocks offline, two of them selling the last two mugs, and
//! one removes a tag while another adds it again. The tills exchange
//! encoded changeset frames pairwise (the same bytes `meldb export` writes),
//! after which every till must show the same table and the same digest.
//! Finally the demo works out what last-writer-wins on a plain `stock`
//! column would have kept: the stock figure of whichever till wrote last.
//!
//! Site ids and the clock are fixed, so every run prints the same output.

mod compare;
mod shop;

use crate::{
    cli::DemoArgs,
    error::{file_error, in_file, CliError, Result},
    output::{count, hex, Rows},
    sync::write_report,
};
use meldb::{codec, Durability, ManualTime, Schema, SiteId, Store, StoreOptions};
use shop::ITEMS;
use std::{io::Write, path::Path, sync::Arc};

const SCHEMA: &str = include_str!("../../../schema/inventory.toml");
/// 2026-01-01 09:00 UTC: a fixed clock makes every run print the same.
const OPENING_MS: u64 = 1_767_258_000_000;
const LOCAL_VIEW: &str = "SELECT sku, stock, sold, tags FROM item ORDER BY sku";
const FULL_VIEW: &str = "SELECT sku, name, price, stock, sold, tags FROM item ORDER BY sku";

struct Till {
    name: String,
    store: Store,
    /// Units sold and restocked here, per item.
    sold: [i64; 3],
    restocked: [i64; 3],
}

/// `meldb demo`.
pub fn run(args: &DemoArgs, out: &mut dyn Write) -> Result<()> {
    let schema = Schema::from_toml_str(SCHEMA, "schema/inventory.toml")?;
    let time = ManualTime::new(OPENING_MS);
    let mut tills = open_tills(args, &schema, &time)?;
    let n = tills.len();
    writeln!(
        out,
        "meldb demo: {n} shop tills (replicas) share one stock list, schema/inventory.toml"
    )?;
    writeln!(
        out,
        "  item.stock is a pn_counter, item.sold a g_counter, item.tags an or_set\n"
    )?;
    for till in &tills {
        writeln!(out, "  {}  site {}", till.name, till.store.site_id())?;
    }

    writeln!(
        out,
        "\n1. Till 1 enters the items and syncs them to the other tills\n"
    )?;
    tills[0].store.write(|tx| {
        for item in &ITEMS {
            tx.insert(
                "item",
                &[
                    ("sku", item.sku.into()),
                    ("name", item.name.into()),
                    ("price", item.price.into()),
                    ("stock", item.stock.into()),
                    ("tags", item.tags.into()),
                ],
            )?;
        }
        Ok(())
    })?;
    Rows::query(tills[0].store.conn(), FULL_VIEW)?.write_table(out, "    ")?;
    writeln!(out)?;
    for b in 1..n {
        send(&mut tills, 0, b, out)?;
    }

    writeln!(
        out,
        "\n2. The network goes down; every till keeps selling\n"
    )?;
    let last = shop::sell_offline(&mut tills, &time, out)?;
    for till in &tills {
        writeln!(out, "\n  {} sees:", till.name)?;
        Rows::query(till.store.conn(), LOCAL_VIEW)?.write_table(out, "    ")?;
    }

    writeln!(
        out,
        "\n3. The network is back: each pair of tills swaps changeset frames\n"
    )?;
    for a in 0..n {
        for b in a + 1..n {
            send(&mut tills, a, b, out)?;
            send(&mut tills, b, a, out)?;
        }
    }

    writeln!(out, "\n4. Every till now shows the same table\n")?;
    let table = Rows::query(tills[0].store.conn(), FULL_VIEW)?;
    table.write_table(out, "    ")?;
    writeln!(out)?;
    check_converged(&tills, &table, out)?;

    writeln!(
        out,
        "\n5. What last-writer-wins on a plain stock column would have kept\n"
    )?;
    writeln!(
        out,
        "  (each till writes the stock figure it sees; the latest write replaces the others)\n"
    )?;
    compare::compare_with_lww(&tills, &table, &last, out)?;
    compare::tags_note(&tills, &table, out)?;
    Ok(())
}

fn open_tills(args: &DemoArgs, schema: &Schema, time: &ManualTime) -> Result<Vec<Till>> {
    if let Some(dir) = &args.dir {
        std::fs::create_dir_all(dir).map_err(file_error(dir))?;
    }
    (0..usize::from(args.replicas))
        .map(|i| {
            let mut site = [0u8; 16];
            site[15] = i as u8 + 1;
            let options = StoreOptions::new()
                .site_id(SiteId::from_bytes(site))
                .time_source(Arc::new(time.clone()))
                .durability(Durability::Normal);
            let store = match &args.dir {
                Some(dir) => open_file(options, dir, i, schema)?,
                None => options.open_in_memory(schema)?,
            };
            Ok(Till {
                name: format!("till {}", i + 1),
                store,
                sold: [0; 3],
                restocked: [0; 3],
            })
        })
        .collect()
}

fn open_file(options: StoreOptions, dir: &Path, i: usize, schema: &Schema) -> Result<Store> {
    let file = dir.join(format!("till-{}.meldb", i + 1));
    if file.exists() {
        return Err(CliError::DemoDirInUse {
            dir: dir.to_owned(),
            file,
        });
    }
    options.open(&file, schema).map_err(in_file(&file))
}

/// Sends what till `b` lacks from till `a` as one encoded frame.
fn send(tills: &mut [Till], a: usize, b: usize, out: &mut dyn Write) -> Result<()> {
    let changes = tills[a]
        .store
        .changes_since(&tills[b].store.version_vector())?;
    let frame = codec::encode_changeset(&changes);
    let report = tills[b].store.apply_bytes(&frame)?;
    writeln!(
        out,
        "  {} -> {}  {:>7}  {:>10}:  {} fast-forward, {} concurrent, {} already seen",
        tills[a].name,
        tills[b].name,
        count(changes.len(), "row"),
        count(frame.len(), "byte"),
        report.fast_forward,
        report.concurrent,
        report.already_seen,
    )?;
    if !report.held.is_empty() || report.released > 0 {
        write_report(&report, out)?;
    }
    Ok(())
}

/// Fails unless every till has the same digest and the same table.
fn check_converged(tills: &[Till], table: &Rows, out: &mut dyn Write) -> Result<()> {
    let mut digests = Vec::new();
    for till in tills {
        let digest = hex(&till.store.digest()?);
        writeln!(out, "  {}  digest {digest}", till.name)?;
        digests.push(digest);
    }
    for (till, digest) in tills.iter().zip(&digests).skip(1) {
        if *digest != digests[0] {
            return Err(CliError::NotConverged {
                detail: format!("{} and {} have different digests", tills[0].name, till.name),
            });
        }
        if Rows::query(till.store.conn(), FULL_VIEW)? != *table {
            return Err(CliError::NotConverged {
                detail: format!("{} and {} show different tables", tills[0].name, till.name),
            });
        }
    }
    writeln!(
        out,
        "  all {} tills converged: same digest, same rows",
        tills.len()
    )?;
    Ok(())
}
