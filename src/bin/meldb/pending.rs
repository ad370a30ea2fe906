//! `meldb pending`: this replica's mutations that wait for the authority
//! and those it refused, oldest first.
//!
//! A pending mutation shows its arguments as queued. A refused one shows
//! the authority's reason and no arguments: once the authority has answered,
//! the client keeps only the mutation's id, name and error
//! (`Store::mutation_failures`), until the app acknowledges it.

use crate::{
    cli::PendingArgs,
    commands::open,
    error::{CliError, Result},
    output::Rows,
};
use meldb::Value;
use std::io::Write;

/// One line of the listing.
struct Entry {
    id: u64,
    state: &'static str,
    name: String,
    /// The arguments as JSON text (pending mutations only).
    args: Option<String>,
    /// The authority's error (refused mutations only).
    reason: Option<String>,
}

/// Lists pending and refused mutations as a table, or with `--json` one
/// object per line (`args` as the JSON value it was queued with).
pub fn pending(args: &PendingArgs, out: &mut dyn Write) -> Result<()> {
    let store = open(&args.db)?;
    let mut entries: Vec<Entry> = store
        .pending_mutations()?
        .into_iter()
        .map(|m| Entry {
            id: m.id,
            state: "pending",
            name: m.name,
            args: Some(m.args),
            reason: None,
        })
        .chain(store.mutation_failures()?.into_iter().map(|r| Entry {
            id: r.id,
            state: "refused",
            name: r.name,
            args: None,
            reason: Some(r.error),
        }))
        .collect();
    entries.sort_by_key(|e| e.id);
    if args.json {
        for e in &entries {
            let args = match &e.args {
                None => serde_json::Value::Null,
                Some(text) => serde_json::from_str(text).map_err(|source| {
                    CliError::Output(std::io::Error::other(format!(
                        "pending mutation {} has arguments that are not JSON: {source}",
                        e.id
                    )))
                })?,
            };
            let line = serde_json::json!({
                "id": e.id,
                "state": e.state,
                "name": e.name,
                "args": args,
                "reason": e.reason,
            });
            writeln!(out, "{line}")?;
        }
        return Ok(());
    }
    if entries.is_empty() {
        writeln!(out, "no pending or refused mutations")?;
        return Ok(());
    }
    let text = |s: &Option<String>| s.clone().map_or(Value::Null, Value::Text);
    Rows {
        columns: ["id", "state", "name", "args", "reason"]
            .map(String::from)
            .to_vec(),
        rows: entries
            .iter()
            .map(|e| {
                vec![
                    Value::Integer(e.id as i64),
                    Value::Text(e.state.into()),
                    Value::Text(e.name.clone()),
                    text(&e.args),
                    text(&e.reason),
                ]
            })
            .collect(),
    }
    .write_table(out, "")
}
