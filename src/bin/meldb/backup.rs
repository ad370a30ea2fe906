//! `meldb backup`: a consistent copy of a live database, or of one
//! namespace of a relay's data directory, in a new file (the library's
//! `Store::backup_file`: one snapshot, checked, never a half file under
//! the backup's name, never overwriting). Opens nothing for writing and
//! needs no schema.

use crate::cli::BackupArgs;
use crate::error::{CliError, Result};
use crate::output::count;
use meldb::sync::{DirectoryProvider, Namespace};
use meldb::Store;
use std::io::Write;
use std::path::PathBuf;

/// `meldb backup`.
pub fn backup(args: &BackupArgs, out: &mut dyn Write) -> Result<()> {
    let from = source(args)?;
    let report = Store::backup_file(&from, &args.to)?;
    let bytes = report.bytes;
    if args.json {
        let value = serde_json::json!({
            "source": from,
            "backup": report.path,
            "pages": report.pages,
            "bytes": bytes,
            "format": report.format,
            "schema": { "name": report.schema.0, "version": report.schema.1 },
            "rows": report
                .rows
                .iter()
                .map(|(t, n)| (t.clone(), (*n).into()))
                .collect::<serde_json::Map<_, _>>(),
            "integrity": "ok",
        });
        writeln!(out, "{value}")?;
        return Ok(());
    }
    let rows: Vec<String> = report
        .rows
        .iter()
        .map(|(t, n)| format!("{t} {n}"))
        .collect();
    writeln!(
        out,
        "backed up {} to {}",
        from.display(),
        report.path.display()
    )?;
    writeln!(
        out,
        "  copied    {} ({})",
        count(report.pages as usize, "page"),
        count(bytes as usize, "byte")
    )?;
    writeln!(
        out,
        "  schema    {} v{} (database format {})",
        report.schema.0, report.schema.1, report.format
    )?;
    writeln!(out, "  rows      {}", rows.join(", "))?;
    writeln!(out, "  check     integrity ok")?;
    Ok(())
}

/// The database file to copy: `--db`, or the namespace's file under
/// `--data-dir`.
fn source(args: &BackupArgs) -> Result<PathBuf> {
    match (&args.db, &args.data_dir, &args.namespace) {
        (Some(db), _, _) => Ok(db.clone()),
        (None, Some(dir), Some(name)) => {
            let path = DirectoryProvider::file_in(dir, &Namespace::new(name))
                .ok_or_else(|| CliError::BadNamespace { name: name.clone() })?;
            if !path.is_file() {
                return Err(CliError::NoNamespace {
                    name: name.clone(),
                    dir: dir.clone(),
                    path,
                });
            }
            Ok(path)
        }
        // clap requires --db, or --data-dir with --namespace.
        _ => Err(CliError::NoDatabase {
            path: PathBuf::from("(give --db FILE, or --data-dir DIR --namespace NAME)"),
        }),
    }
}
