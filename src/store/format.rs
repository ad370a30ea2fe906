//! The database format version, and how a database of an older one is
//! brought up to date on open.
//!
//! `meldb_meta.format` names the layout a database file holds: its
//! internal tables, the packed row metadata and undo images
//! (`codec::stored`) and the digest input (`codec::digest`). The rule:
//!
//! - this build writes [`FORMAT`] and opens it and the version before it
//!   ([`OLDEST_FORMAT`]);
//! - a database of the older version is upgraded on open: first a copy of
//!   the file is kept beside it (`<file>.format-<n>.backup`, written by
//!   `VACUUM INTO`, a consistent copy even while the file is in WAL mode),
//!   then every upgrade step runs inside the one transaction that opens the
//!   store, so a failed step leaves the file exactly as it was;
//! - a database older than that, or newer than [`FORMAT`], is refused with
//!   an error that names the version it needs.
//!
//! Format 1 is the first, so today there is no step to run; the machinery
//! is tested with steps of its own (see the tests below).

use crate::error::{Result, StorageError};
use rusqlite::{Connection, OptionalExtension};
use std::path::{Path, PathBuf};

/// The database format this build writes.
pub(super) const FORMAT: i64 = 1;
/// The oldest database format this build opens (and upgrades).
pub(super) const OLDEST_FORMAT: i64 = 1;

/// One upgrade step: brings a database from format `n` to `n + 1`, inside
/// the opening transaction.
pub(super) type Step = fn(&Connection) -> Result<()>;

/// What a build reads and how it upgrades.
pub(super) struct Rules {
    pub(super) newest: i64,
    pub(super) oldest: i64,
    /// `steps[i]` upgrades format `oldest + i` to `oldest + i + 1`.
    pub(super) steps: &'static [Step],
}

/// This build's rules.
pub(super) const CURRENT: Rules = Rules {
    newest: FORMAT,
    oldest: OLDEST_FORMAT,
    steps: &[],
};

/// An upgrade decided before the opening transaction begins.
#[derive(Debug)]
pub(super) struct Upgrade {
    from: i64,
    backup: Option<PathBuf>,
}

/// The format a database holds, `None` for a database meldb never
/// initialized.
fn stored_format(conn: &Connection) -> Result<Option<i64>> {
    let has_meta: bool = conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'meldb_meta'",
        [],
        |r| r.get(0),
    )?;
    if !has_meta {
        return Ok(None);
    }
    Ok(conn
        .query_row(
            "SELECT value FROM meldb_meta WHERE key = 'format'",
            [],
            |r| r.get(0),
        )
        .optional()?)
}

impl Rules {
    /// Checks the database's format before it is opened: `Ok(None)` when it
    /// is current (or new), an [`Upgrade`] (with its backup already
    /// written, for a file) when it is the older version, an error when
    /// this build cannot open it. Runs outside any transaction (`VACUUM
    /// INTO` cannot run inside one).
    pub(super) fn prepare(&self, conn: &Connection, path: &str) -> Result<Option<Upgrade>> {
        let Some(found) = stored_format(conn)? else {
            return Ok(None);
        };
        if found > self.newest {
            return Err(StorageError::FormatTooNew {
                path: path.to_owned(),
                found,
                newest: self.newest,
            }
            .into());
        }
        if found < self.oldest {
            return Err(StorageError::FormatTooOld {
                path: path.to_owned(),
                found,
                oldest: self.oldest,
            }
            .into());
        }
        if found == self.newest {
            return Ok(None);
        }
        let backup = if path == ":memory:" {
            None
        } else {
            Some(write_backup(conn, path, found)?)
        };
        Ok(Some(Upgrade {
            from: found,
            backup,
        }))
    }

    /// Runs the steps of `upgrade` and records the new format. Called
    /// inside the opening transaction: an error rolls everything back.
    pub(super) fn finish(&self, conn: &Connection, path: &str, upgrade: &Upgrade) -> Result<()> {
        for from in upgrade.from..self.newest {
            let step = usize::try_from(from - self.oldest)
                .ok()
                .and_then(|i| self.steps.get(i));
            let result = match step {
                Some(step) => step(conn),
                None => Err(StorageError::Corrupt {
                    what: "format upgrade".into(),
                    problem: format!("this build has no step from format {from}"),
                }
                .into()),
            };
            result.map_err(|e| StorageError::UpgradeFailed {
                path: path.to_owned(),
                from,
                to: from + 1,
                backup: upgrade
                    .backup
                    .as_ref()
                    .map_or_else(|| "none (in memory)".into(), |b| b.display().to_string()),
                problem: e.to_string(),
            })?;
        }
        conn.execute(
            "UPDATE meldb_meta SET value = ?1 WHERE key = 'format'",
            [self.newest],
        )?;
        Ok(())
    }
}

/// Copies the database to the first free `<path>.format-<n>.backup[.k]`.
fn write_backup(conn: &Connection, path: &str, format: i64) -> Result<PathBuf> {
    let base = format!("{path}.format-{format}.backup");
    let target = std::iter::once(PathBuf::from(&base))
        .chain((1..).map(|k| PathBuf::from(format!("{base}.{k}"))))
        .find(|p| !Path::new(p).exists())
        .unwrap_or_else(|| PathBuf::from(&base));
    conn.execute("VACUUM INTO ?1", [target.to_string_lossy().as_ref()])
        .map_err(|e| StorageError::UpgradeFailed {
            path: path.to_owned(),
            from: format,
            to: format + 1,
            backup: target.display().to_string(),
            problem: format!("could not write the backup copy: {e}"),
        })?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Schema;
    use crate::store::{Store, StoreOptions};

    fn schema() -> Schema {
        Schema::from_toml_str(
            r#"
            name = "t"
            version = 1
            [[table]]
            name = "item"
            primary_key = ["sku"]
            [[table.column]]
            name = "sku"
            type = "text"
            [[table.column]]
            name = "n"
            type = "integer"
            kind = "pn_counter"
            "#,
            "t.toml",
        )
        .expect("schema")
    }

    /// A format-1 database with one row, closed.
    fn format_1_file(dir: &Path) -> Result<String> {
        let path = dir.join("app.db").display().to_string();
        let mut store = Store::open(&path, &schema())?;
        store.write(|tx| tx.insert("item", &[("sku", "a".into()), ("n", 3.into())]))?;
        Ok(path)
    }

    fn add_marker(conn: &Connection) -> Result<()> {
        conn.execute_batch(
            "CREATE TABLE upgraded_marker (x); INSERT INTO upgraded_marker VALUES (1);",
        )?;
        Ok(())
    }

    fn fail(conn: &Connection) -> Result<()> {
        add_marker(conn)?;
        Err(StorageError::Corrupt {
            what: "test step".into(),
            problem: "refuses".into(),
        }
        .into())
    }

    fn format_of(path: &str) -> Result<i64> {
        let conn = Connection::open(path)?;
        Ok(conn.query_row(
            "SELECT value FROM meldb_meta WHERE key = 'format'",
            [],
            |r| r.get(0),
        )?)
    }

    #[test]
    fn an_older_format_is_backed_up_then_upgraded_in_one_transaction() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| StorageError::Corrupt {
            what: "tempdir".into(),
            problem: e.to_string(),
        })?;
        let path = format_1_file(dir.path())?;
        let before = Store::open(&path, &schema())?.digest()?;
        const STEPS: &[Step] = &[add_marker];
        let rules = Rules {
            newest: 2,
            oldest: 1,
            steps: STEPS,
        };
        let conn = Connection::open(&path)?;
        let store = Store::init_with(conn, path.clone(), &schema(), StoreOptions::new(), &rules)?;
        assert_eq!(store.digest()?, before);
        let marker: i64 = store
            .conn()
            .query_row("SELECT x FROM upgraded_marker", [], |r| r.get(0))?;
        assert_eq!(marker, 1);
        drop(store);
        assert_eq!(format_of(&path)?, 2);
        // The backup is the database as it was: format 1, same rows.
        let backup = format!("{path}.format-1.backup");
        assert_eq!(format_of(&backup)?, 1);
        assert_eq!(Store::open(&backup, &schema())?.digest()?, before);
        Ok(())
    }

    #[test]
    fn a_failed_step_leaves_the_file_as_it_was_and_names_the_backup() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| StorageError::Corrupt {
            what: "tempdir".into(),
            problem: e.to_string(),
        })?;
        let path = format_1_file(dir.path())?;
        const STEPS: &[Step] = &[fail];
        let rules = Rules {
            newest: 2,
            oldest: 1,
            steps: STEPS,
        };
        let conn = Connection::open(&path)?;
        let err = Store::init_with(conn, path.clone(), &schema(), StoreOptions::new(), &rules)
            .expect_err("the step fails");
        let text = err.to_string();
        assert!(text.contains("format 1 to 2"), "{text}");
        assert!(text.contains("app.db.format-1.backup"), "{text}");
        assert_eq!(format_of(&path)?, 1);
        let conn = Connection::open(&path)?;
        let marker: bool = conn.query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE name = 'upgraded_marker'",
            [],
            |r| r.get(0),
        )?;
        assert!(!marker, "the failed step's table was rolled back");
        // A second attempt keeps the first backup and writes another.
        let conn = Connection::open(&path)?;
        assert!(
            Store::init_with(conn, path.clone(), &schema(), StoreOptions::new(), &rules).is_err()
        );
        assert!(Path::new(&format!("{path}.format-1.backup.1")).exists());
        // This build still opens it: format 1 is current.
        assert!(Store::open(&path, &schema()).is_ok());
        Ok(())
    }

    #[test]
    fn formats_this_build_cannot_read_are_refused_with_the_version_needed() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| StorageError::Corrupt {
            what: "tempdir".into(),
            problem: e.to_string(),
        })?;
        let path = format_1_file(dir.path())?;
        let set = |f: i64| -> Result<()> {
            Connection::open(&path)?
                .execute("UPDATE meldb_meta SET value = ?1 WHERE key = 'format'", [f])?;
            Ok(())
        };
        set(FORMAT + 1)?;
        let err = Store::open(&path, &schema()).expect_err("newer");
        assert!(
            matches!(err, crate::Error::Storage(StorageError::FormatTooNew { found, newest, .. })
                if found == FORMAT + 1 && newest == FORMAT),
            "{err}"
        );
        assert!(
            err.to_string().contains(&format!("format {}", FORMAT + 1)),
            "{err}"
        );
        set(OLDEST_FORMAT - 1)?;
        let err = Store::open(&path, &schema()).expect_err("older");
        assert!(
            matches!(err, crate::Error::Storage(StorageError::FormatTooOld { found, oldest, .. })
                if found == OLDEST_FORMAT - 1 && oldest == OLDEST_FORMAT),
            "{err}"
        );
        // Neither refusal wrote anything: no backup, format unchanged.
        assert_eq!(format_of(&path)?, OLDEST_FORMAT - 1);
        assert!(!Path::new(&format!("{path}.format-0.backup")).exists());
        Ok(())
    }
}
