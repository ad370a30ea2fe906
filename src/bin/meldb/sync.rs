//! Moving changes between replicas through files, and describing a replica.
//!
//! The receiver runs `meldb vv > vv.json`; the sender runs
//! `meldb export --since vv.json --out changes.mldb` (exactly what the
//! receiver lacks); the receiver runs `meldb import changes.mldb`. Equal
//! `meldb digest` output means equal state.

use crate::{
    cli::{DbArgs, ExportArgs, ImportArgs, InfoArgs},
    commands::open,
    error::{file_error, in_file, CliError, Result},
    output::{count, hex},
};
use meldb::{codec, ApplyReport, Store, VersionVector};
use std::io::Write;

/// `meldb export`.
pub fn export(args: &ExportArgs, out: &mut dyn Write) -> Result<()> {
    let vv = match &args.since {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(file_error(path))?;
            serde_json::from_str::<VersionVector>(&text).map_err(|source| {
                CliError::BadVersionVector {
                    path: path.clone(),
                    source,
                }
            })?
        }
        None => VersionVector::new(),
    };
    let store = open(&args.db)?;
    let changes = store.changes_since(&vv)?;
    let bytes = codec::encode_changeset_frames(&changes);
    std::fs::write(&args.out, &bytes).map_err(file_error(&args.out))?;
    writeln!(
        out,
        "exported {} ({}) to {}",
        count(changes.len(), "row"),
        count(bytes.len(), "byte"),
        args.out.display()
    )?;
    Ok(())
}

/// `meldb import`: decodes, then applies in one transaction.
pub fn import(args: &ImportArgs, out: &mut dyn Write) -> Result<()> {
    let bytes = std::fs::read(&args.file).map_err(file_error(&args.file))?;
    let frames = codec::decode_changeset_frames(&bytes).map_err(in_file(&args.file))?;
    let mut store = open(&args.db)?;
    let report = store.apply_bytes(&bytes).map_err(in_file(&args.file))?;
    let rows: usize = frames.iter().map(|c| c.len()).sum();
    let origin = frames
        .first()
        .map_or_else(|| "(none)".to_owned(), |c| c.origin.to_string());
    writeln!(
        out,
        "imported {} ({}) from site {}",
        count(rows, "row"),
        count(bytes.len(), "byte"),
        origin
    )?;
    write_report(&report, out)
}

/// Prints an apply report, one aligned line per outcome.
pub fn write_report(report: &ApplyReport, out: &mut dyn Write) -> Result<()> {
    let lines = [
        ("fast-forward", report.fast_forward),
        ("concurrent", report.concurrent),
        ("already seen", report.already_seen),
        ("held", report.held.len()),
        ("released", report.released),
    ];
    for (what, n) in lines {
        writeln!(out, "  {what:<13} {n}")?;
    }
    for held in &report.held {
        writeln!(
            out,
            "  held {} {} from site {}: its clock is {} ms ahead of ours",
            held.table, held.key, held.site, held.offset_ms
        )?;
    }
    if !report.outcomes.is_empty() {
        let outcomes: Vec<String> = report
            .outcomes
            .iter()
            .map(|(outcome, n)| format!("{outcome} {n}"))
            .collect();
        writeln!(out, "  conflicts     {}", outcomes.join(", "))?;
    }
    for why in &report.discarded {
        writeln!(out, "  discarded a held row that no longer applies: {why}")?;
    }
    Ok(())
}

/// `meldb vv` (and `info --vv-only`): the JSON `export --since` reads.
pub fn vv(db: &DbArgs, out: &mut dyn Write) -> Result<()> {
    let store = open(db)?;
    writeln!(out, "{}", vv_json(&store.version_vector())?)?;
    Ok(())
}

fn vv_json(vv: &VersionVector) -> Result<String> {
    serde_json::to_string(vv).map_err(|e| CliError::Output(e.into()))
}

/// `meldb digest`.
pub fn digest(db: &DbArgs, out: &mut dyn Write) -> Result<()> {
    let store = open(db)?;
    writeln!(out, "{}", hex(&store.digest()?))?;
    Ok(())
}

/// Gives the replica a new site id.
pub fn rotate_site_id(db: &DbArgs, out: &mut dyn Write) -> Result<()> {
    let mut store = open(db)?;
    let old = store.site_id();
    let new = store.rotate_site_id()?;
    writeln!(out, "site id {old} -> {new}")?;
    writeln!(out, "now export everything (no --since) to each peer once")?;
    Ok(())
}

/// Live rows per table, in schema order.
fn row_counts(store: &Store) -> Result<Vec<(String, i64)>> {
    store
        .schema()
        .tables
        .iter()
        .map(|t| {
            let sql = format!("SELECT count(*) FROM \"{}\"", t.name.replace('"', "\"\""));
            let n: i64 = store.conn().query_row(&sql, [], |r| r.get(0))?;
            Ok((t.name.clone(), n))
        })
        .collect()
}

/// What waits on a replica: mutations queued for the authority, refusals
/// of its mutations not yet acknowledged, and conflicts deferred to a
/// person (`meldb pending` and `meldb conflicts --deferred` list them).
struct Work {
    pending: usize,
    refused: usize,
    deferred: usize,
}

impl Work {
    fn of(store: &Store) -> Result<Work> {
        Ok(Work {
            pending: store.pending_mutations()?.len(),
            refused: store.mutation_failures()?.len(),
            deferred: store.deferred_conflicts()?.len(),
        })
    }
}

/// `meldb info`.
pub fn info(args: &InfoArgs, out: &mut dyn Write) -> Result<()> {
    if args.vv_only {
        return vv(&args.db, out);
    }
    let store = open(&args.db)?;
    let schema = store.schema();
    let digest = hex(&store.digest()?);
    let clock = store.clock();
    let held = store.held_count()?;
    let work = Work::of(&store)?;
    let rows = row_counts(&store)?;
    let vv = store.version_vector();
    if args.json {
        let value = serde_json::json!({
            "database": store.path(),
            "schema": { "name": schema.name, "version": schema.version },
            "site": store.site_id().to_string(),
            "digest": digest,
            // The packed HLC is above 2^53, where JSON parsers (JavaScript,
            // jq) round integers, so it goes out as a decimal string; its two
            // parts are below 2^48 and compare as (physical_ms, logical).
            "clock": {
                "hlc": clock.0.to_string(),
                "physical_ms": clock.physical_ms(),
                "logical": clock.logical(),
            },
            "held": held,
            "pending": work.pending,
            "refused": work.refused,
            "deferred": work.deferred,
            "rows": rows
                .iter()
                .map(|(t, n)| (t.clone(), (*n).into()))
                .collect::<serde_json::Map<_, _>>(),
            "version_vector": serde_json::to_value(&vv).map_err(|e| CliError::Output(e.into()))?,
        });
        writeln!(out, "{value}")?;
        return Ok(());
    }
    writeln!(out, "database  {}", store.path())?;
    writeln!(out, "schema    {} v{}", schema.name, schema.version)?;
    writeln!(out, "site      {}", store.site_id())?;
    writeln!(out, "digest    {digest}")?;
    writeln!(out, "clock     {clock}")?;
    writeln!(out, "held      {held}")?;
    writeln!(out, "pending   {}", work.pending)?;
    writeln!(out, "refused   {}", work.refused)?;
    writeln!(out, "deferred  {}", work.deferred)?;
    let counts: Vec<String> = rows.iter().map(|(t, n)| format!("{t} {n}")).collect();
    writeln!(out, "rows      {}", counts.join(", "))?;
    writeln!(out, "version vector")?;
    for (site, ranges) in vv.iter() {
        let spans: Vec<String> = ranges
            .ranges()
            .iter()
            .map(|&(first, last)| {
                if first == last {
                    first.to_string()
                } else {
                    format!("{first}-{last}")
                }
            })
            .collect();
        let mine = if *site == store.site_id() {
            "  (this replica)"
        } else {
            ""
        };
        writeln!(out, "  {site}  {}{mine}", spans.join(", "))?;
    }
    Ok(())
}
