//! `meldb conflicts`: the conflict log, counted or listed, and settling a
//! deferred conflict.

use crate::{
    cli::{ConflictsArgs, KeepVersion},
    commands::open,
    error::{CliError, Result},
    output::Rows,
};
use meldb::{ConflictRecord, DeferredShows, Outcome, Value};
use std::io::Write;

/// Counts per table and outcome (the default), the latest entries
/// (`--list N`), the conflicts waiting for a person (`--deferred`), or
/// settles one (`--resolve ID --keep VERSION`).
pub fn conflicts(args: &ConflictsArgs, out: &mut dyn Write) -> Result<()> {
    let mut store = open(&args.db)?;
    if let (Some(id), Some(keep)) = (args.resolve, args.keep) {
        return resolve(&mut store, id, keep, args.json, out);
    }
    let outcome = match &args.outcome {
        None => None,
        Some(name) => Some(Outcome::from_name(name).ok_or_else(|| {
            CliError::BadOutcome {
                name: name.clone(),
                expected: Outcome::ALL
                    .iter()
                    .map(|o| o.name())
                    .collect::<Vec<_>>()
                    .join(", "),
            }
        })?),
    };
    let rows = if args.deferred {
        records(&store.deferred_conflicts()?, true)
    } else if let Some(limit) = args.list {
        let mut entries = store.conflicts(args.table.as_deref(), outcome, limit)?;
        entries.reverse();
        records(&entries, false)
    } else {
        let counts = store
            .conflict_counts()?
            .into_iter()
            .filter(|c| {
                args.table
                    .as_deref()
                    .is_none_or(|t| c.table.eq_ignore_ascii_case(t))
                    && outcome.is_none_or(|o| c.outcome == o)
            })
            .map(|c| {
                vec![
                    Value::Text(c.table),
                    Value::Text(c.outcome.name().into()),
                    Value::Integer(c.count as i64),
                ]
            })
            .collect();
        Rows {
            columns: vec!["table".into(), "outcome".into(), "count".into()],
            rows: counts,
        }
    };
    if args.json {
        rows.write_json_lines(out)
    } else if rows.rows.is_empty() {
        writeln!(out, "no conflicts")?;
        Ok(())
    } else {
        rows.write_table(out, "")
    }
}

/// Settles deferred conflict `id` to `keep` and says what the row became.
fn resolve(
    store: &mut meldb::Store,
    id: i64,
    keep: KeepVersion,
    json: bool,
    out: &mut dyn Write,
) -> Result<()> {
    let version = match keep {
        KeepVersion::Local => DeferredShows::Local,
        KeepVersion::Incoming => DeferredShows::Incoming,
        KeepVersion::Merged => DeferredShows::Merged,
    };
    store.keep_deferred(id, version)?;
    let record =
        store
            .conflict(id)?
            .ok_or(meldb::Error::from(meldb::ResolveError::UnknownConflict {
                id,
            }))?;
    let row = record
        .result
        .as_ref()
        .map_or_else(|| "null".to_owned(), |r| r.to_json().to_string());
    if json {
        let fields = serde_json::json!({
            "id": id,
            "table": record.table,
            "key": record.key.to_string(),
            "kept": version.name(),
            "row": record.result.as_ref().map(meldb::Row::to_json),
        });
        writeln!(out, "{fields}")?;
    } else {
        writeln!(
            out,
            "settled conflict {id}: {} {} keeps the {} version: {row}",
            record.table,
            record.key,
            version.name()
        )?;
    }
    Ok(())
}

fn records(entries: &[ConflictRecord], versions: bool) -> Rows {
    let mut columns: Vec<String> = [
        "id", "at_ms", "table", "key", "outcome", "resolver", "reason",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    if versions {
        columns.extend(["writer", "local", "incoming", "merged", "shown"].map(String::from));
    }
    let text = |s: Option<&str>| s.map_or(Value::Null, |s| Value::Text(s.to_owned()));
    let json = |r: &Option<meldb::Row>| {
        r.as_ref()
            .map_or(Value::Null, |r| Value::Text(r.to_json().to_string()))
    };
    let rows = entries
        .iter()
        .map(|e| {
            let mut row = vec![
                Value::Integer(e.id),
                Value::Integer(e.at_ms as i64),
                Value::Text(e.table.clone()),
                Value::Text(e.key.to_string()),
                Value::Text(e.outcome.name().into()),
                text(e.resolver.as_deref()),
                text(e.reason.as_deref()),
            ];
            if versions {
                let writer = e
                    .writer
                    .user
                    .clone()
                    .unwrap_or_else(|| format!("site {}", e.writer_site));
                row.extend([
                    Value::Text(writer),
                    json(&e.local),
                    json(&e.incoming),
                    json(&e.merged),
                    json(&e.result),
                ]);
            }
            row
        })
        .collect();
    Rows { columns, rows }
}
