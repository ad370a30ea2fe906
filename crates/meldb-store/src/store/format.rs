//! The database format version, and how a database of an older one is
//! brought up to date on open.
//!
//! `meldb_meta.format` names the layout a database file holds: its
//! internal tables, the packed row metadata and undo images
//! (`codec::stored`) and the digest input (`codec::digest`). The rule:
//!
//! - this build writes [`FORMAT`] and opens it and the versions before it
//!   down to [`OLDEST_FORMAT`], upgrading step by step (format 3 still
//!   opens format 1, whose step is small and tested by the fixtures);
//! - a database of the older version is upgraded on open: first a copy of
//!   the file is kept beside it (`<file>.format-<n>.backup`, written by
//!   `VACUUM INTO`, a consistent copy even while the file is in WAL mode),
//!   then every upgrade step runs inside the one transaction that opens the
//!   store, so a failed step leaves the file exactly as it was;
//! - a database older than that, or newer than [`FORMAT`], is refused with
//!   an error that names the version it needs.
//!
//! Formats:
//!
//! - 1: the first.
//! - 2: the authority's mutation state (`meldb_clients`,
//!   `meldb_mutation_rejects`) is keyed by (token, site) instead of site
//!   alone, and `meldb_site_bindings` records which token each site id
//!   belongs to. The step from 1 keeps every old row, with a NULL token
//!   (claimed by the first token that pushes as that site), so no
//!   mutation already run runs again.
//! - 3: per-write metadata and notice kinds. A row's packed metadata may
//!   end with its latest write's metadata (`codec::stored`; a blob without
//!   it reads as before, so no row is rewritten); the conflict log keeps
//!   each version's metadata (`meldb_conflicts.local_meta`,
//!   `incoming_meta`); queued mutations keep theirs (`meldb_pending.meta`);
//!   received notices keep their kind (`meldb_rejections.kind`, `rejected`
//!   for every notice received before). The step from 2 adds the columns
//!   and keeps every row.
//!
//! The machinery is also tested with synthetic steps of its own (see the
//! tests below).

use crate::error::{OpenError, Result, StorageError};
use rusqlite::{Connection, OptionalExtension};
use std::path::PathBuf;

/// The database format this build writes.
pub(super) const FORMAT: i64 = 3;
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
    steps: &[upgrade_1_to_2, upgrade_2_to_3],
};

/// Format 1 to 2: mutation state by (token, site), and site bindings.
fn upgrade_1_to_2(conn: &Connection) -> Result<()> {
    super::speculate::upgrade_mutation_clients(conn)?;
    conn.execute_batch(super::bindings::BINDING_DDL)?;
    Ok(())
}

/// Format 2 to 3: the columns of per-write metadata and notice kinds. A
/// table the database never had is left to its `CREATE TABLE IF NOT
/// EXISTS`, which runs after the steps with every column.
fn upgrade_2_to_3(conn: &Connection) -> Result<()> {
    for (table, column, decl) in [
        ("meldb_conflicts", "local_meta", "TEXT"),
        ("meldb_conflicts", "incoming_meta", "TEXT"),
        (
            "meldb_rejections",
            "kind",
            "TEXT NOT NULL DEFAULT 'rejected'",
        ),
        ("meldb_pending", "meta", "TEXT"),
    ] {
        let (exists, has): (bool, bool) = conn.query_row(
            "SELECT (SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ?1), \
                    (SELECT count(*) > 0 FROM pragma_table_info(?1) WHERE name = ?2)",
            [table, column],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        if exists && !has {
            conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}"))?;
        }
    }
    Ok(())
}

// Checked when the crate compiles: a step for every format this build
// upgrades.
const _: () = assert!(CURRENT.steps.len() as i64 == CURRENT.newest - CURRENT.oldest);
const _: () = assert!(CURRENT.oldest >= 1 && CURRENT.oldest <= CURRENT.newest);

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
    /// The error for a format this build cannot open, `None` for one it
    /// can.
    fn refusal(&self, path: &str, found: i64) -> Option<OpenError> {
        if found > self.newest {
            Some(OpenError::FormatTooNew {
                path: path.to_owned(),
                found,
                newest: self.newest,
            })
        } else if found < self.oldest {
            Some(OpenError::FormatTooOld {
                path: path.to_owned(),
                found,
                oldest: self.oldest,
            })
        } else {
            None
        }
    }

    /// Checks the database's format before it is opened: `Ok(None)` when it
    /// is current (or new), an [`Upgrade`] (with its backup already
    /// written, for a file) when it is the older version, an error when
    /// this build cannot open it. Runs outside any transaction (`VACUUM
    /// INTO` cannot run inside one); [`Rules::finish`] checks again under
    /// the write lock.
    pub(super) fn prepare(&self, conn: &Connection, path: &str) -> Result<Option<Upgrade>> {
        let Some(found) = stored_format(conn)? else {
            return Ok(None);
        };
        if let Some(refusal) = self.refusal(path, found) {
            return Err(refusal.into());
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

    /// Called first inside the opening transaction, which holds the write
    /// lock: reads the format again (another process may have upgraded the
    /// file since [`Rules::prepare`], or a newer build rewritten it), then
    /// runs the steps still needed and records the new format. An error
    /// rolls everything back.
    pub(super) fn finish(
        &self,
        conn: &Connection,
        path: &str,
        upgrade: Option<&Upgrade>,
    ) -> Result<()> {
        let Some(found) = stored_format(conn)? else {
            return Ok(());
        };
        if let Some(refusal) = self.refusal(path, found) {
            return Err(refusal.into());
        }
        if found == self.newest {
            // Current, or upgraded by another process meanwhile.
            return Ok(());
        }
        let Some(upgrade) = upgrade.filter(|u| u.from == found) else {
            // Older than current, but not what `prepare` saw (and backed
            // up): it changed under us; opening again starts over.
            return Err(OpenError::UpgradeFailed {
                path: path.to_owned(),
                from: found,
                to: self.newest,
                backup: "none".into(),
                problem: "the database's format changed while it was being opened; open it again"
                    .into(),
            }
            .into());
        };
        for from in found..self.newest {
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
            result.map_err(|e| OpenError::UpgradeFailed {
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

/// Copies the database to `<path>.format-<n>.backup`, replacing an earlier
/// copy of the same format (the file has not changed format since, so the
/// newest copy is the one worth keeping; retries never pile up copies).
/// The copy is written under a temporary name with the database's own
/// permissions, then renamed into place, so no reader ever sees half a
/// copy and a private database never gets a world-readable one.
fn write_backup(conn: &Connection, path: &str, format: i64) -> Result<PathBuf> {
    let target = PathBuf::from(format!("{path}.format-{format}.backup"));
    let partial = PathBuf::from(format!(
        "{path}.format-{format}.backup.partial-{}",
        std::process::id()
    ));
    let failed = |problem: String| OpenError::UpgradeFailed {
        path: path.to_owned(),
        from: format,
        to: format + 1,
        backup: target.display().to_string(),
        problem: format!("could not write the backup copy: {problem}"),
    };
    let result = (|| -> std::result::Result<(), String> {
        let permissions = std::fs::metadata(path)
            .map_err(|e| format!("{path}: {e}"))?
            .permissions();
        // SQLite writes into an existing empty file, keeping its mode.
        std::fs::File::create(&partial).map_err(|e| format!("{}: {e}", partial.display()))?;
        std::fs::set_permissions(&partial, permissions)
            .map_err(|e| format!("{}: {e}", partial.display()))?;
        conn.execute("VACUUM INTO ?1", [partial.to_string_lossy().as_ref()])
            .map_err(|e| e.to_string())?;
        std::fs::rename(&partial, &target).map_err(|e| format!("{}: {e}", target.display()))
    })();
    if let Err(problem) = result {
        let _ = std::fs::remove_file(&partial);
        return Err(failed(problem).into());
    }
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Schema;
    use crate::store::{Store, StoreOptions};
    use std::path::Path;

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

    /// A database of this build's format with one row, closed, in a
    /// directory of its own.
    fn current_format_file() -> Result<(tempfile::TempDir, String)> {
        let dir = tempfile::tempdir().map_err(|e| StorageError::Corrupt {
            what: "tempdir".into(),
            problem: e.to_string(),
        })?;
        let path = dir.path().join("app.db").display().to_string();
        let mut store = Store::open(&path, &schema())?;
        store.write(|tx| tx.insert("item", &[("sku", "a".into()), ("n", 3.into())]))?;
        Ok((dir, path))
    }

    /// Rules of a build one format ahead, upgrading with `steps`.
    fn one_ahead(steps: &'static [Step]) -> Rules {
        Rules {
            newest: FORMAT + 1,
            oldest: FORMAT,
            steps,
        }
    }

    /// Opens `path` as a build with `rules` would.
    fn open_with(path: &str, rules: &Rules) -> Result<Store> {
        let conn = Connection::open(path)?;
        Store::init_with(conn, path.to_owned(), &schema(), StoreOptions::new(), rules)
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
        let (_dir, path) = current_format_file()?;
        let before = Store::open(&path, &schema())?.digest()?;
        let rules = one_ahead(&[add_marker]);
        let store = open_with(&path, &rules)?;
        assert_eq!(store.digest()?, before);
        let marker: i64 = store
            .conn()
            .query_row("SELECT x FROM upgraded_marker", [], |r| r.get(0))?;
        assert_eq!(marker, 1);
        drop(store);
        assert_eq!(format_of(&path)?, FORMAT + 1);
        // The backup is the database as it was: same format, same rows.
        let backup = format!("{path}.format-{FORMAT}.backup");
        assert_eq!(format_of(&backup)?, FORMAT);
        assert_eq!(Store::open(&backup, &schema())?.digest()?, before);
        Ok(())
    }

    #[test]
    fn a_failed_step_leaves_the_file_as_it_was_and_names_the_backup() -> Result<()> {
        let (dir, path) = current_format_file()?;
        let rules = one_ahead(&[fail]);
        let err = open_with(&path, &rules).expect_err("the step fails");
        let text = err.to_string();
        assert!(
            text.contains(&format!("format {FORMAT} to {}", FORMAT + 1)),
            "{text}"
        );
        assert!(
            text.contains(&format!("app.db.format-{FORMAT}.backup")),
            "{text}"
        );
        assert_eq!(format_of(&path)?, FORMAT);
        let conn = Connection::open(&path)?;
        let marker: bool = conn.query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE name = 'upgraded_marker'",
            [],
            |r| r.get(0),
        )?;
        assert!(!marker, "the failed step's table was rolled back");
        // A second attempt replaces the backup instead of piling up copies,
        // and leaves no partial file behind.
        assert!(open_with(&path, &rules).is_err());
        let backups: Vec<String> = std::fs::read_dir(dir.path())
            .map_err(|e| StorageError::Corrupt {
                what: "listing".into(),
                problem: e.to_string(),
            })?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("backup"))
            .collect();
        assert_eq!(backups, [format!("app.db.format-{FORMAT}.backup")]);
        // This build still opens it: its format is current.
        assert!(Store::open(&path, &schema()).is_ok());
        Ok(())
    }

    #[test]
    fn formats_this_build_cannot_read_are_refused_with_the_version_needed() -> Result<()> {
        let (_dir, path) = current_format_file()?;
        let set = |f: i64| -> Result<()> {
            Connection::open(&path)?
                .execute("UPDATE meldb_meta SET value = ?1 WHERE key = 'format'", [f])?;
            Ok(())
        };
        set(FORMAT + 1)?;
        let err = Store::open(&path, &schema()).expect_err("newer");
        assert!(
            matches!(err, OpenError::FormatTooNew { found, newest, .. }
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
            matches!(err, OpenError::FormatTooOld { found, oldest, .. }
                if found == OLDEST_FORMAT - 1 && oldest == OLDEST_FORMAT),
            "{err}"
        );
        // Neither refusal wrote anything: no backup, format unchanged.
        assert_eq!(format_of(&path)?, OLDEST_FORMAT - 1);
        assert!(!Path::new(&format!("{path}.format-0.backup")).exists());
        Ok(())
    }

    #[test]
    fn an_upgrade_another_process_finished_first_is_not_run_again() -> Result<()> {
        let (_dir, path) = current_format_file()?;
        let rules = one_ahead(&[add_marker]);
        // Process A decides to upgrade...
        let a = Connection::open(&path)?;
        let planned = rules.prepare(&a, &path)?;
        assert!(planned.is_some());
        // ...process B upgrades first...
        drop(open_with(&path, &rules)?);
        // ...and A, once it holds the write lock, finds nothing to do: the
        // step (which cannot run twice) is not run again.
        a.execute_batch("BEGIN IMMEDIATE")?;
        rules.finish(&a, &path, planned.as_ref())?;
        a.execute_batch("COMMIT")?;
        let markers: i64 = a.query_row("SELECT count(*) FROM upgraded_marker", [], |r| r.get(0))?;
        assert_eq!(markers, 1);
        Ok(())
    }

    #[test]
    fn a_format_that_moved_past_this_build_meanwhile_is_refused_under_the_lock() -> Result<()> {
        let (_dir, path) = current_format_file()?;
        let conn = Connection::open(&path)?;
        assert!(CURRENT.prepare(&conn, &path)?.is_none());
        // A newer build rewrites the file between the check and the lock.
        Connection::open(&path)?.execute(
            "UPDATE meldb_meta SET value = ?1 WHERE key = 'format'",
            [FORMAT + 1],
        )?;
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let err = CURRENT.finish(&conn, &path, None).expect_err("newer");
        assert!(
            matches!(&err, crate::Error::Open(e) if matches!(**e, OpenError::FormatTooNew { .. })),
            "{err}"
        );
        Ok(())
    }

    #[cfg(unix)]
    #[test]
    fn the_backup_keeps_the_database_private() -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let (_dir, path) = current_format_file()?;
        let io = |e: std::io::Error| StorageError::Corrupt {
            what: "permissions".into(),
            problem: e.to_string(),
        };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        let rules = one_ahead(&[add_marker]);
        drop(open_with(&path, &rules)?);
        let mode = std::fs::metadata(format!("{path}.format-{FORMAT}.backup"))
            .map_err(io)?
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        Ok(())
    }

    /// Turns a database of this build into one of format 1 as format 1
    /// wrote it: mutation state keyed by site alone, no bindings table;
    /// one client's state (`last_processed` 7, mutation 5 refused).
    fn make_format_1(path: &str, client: crate::clock::SiteId) -> Result<()> {
        let conn = Connection::open(path)?;
        conn.execute_batch(
            "DROP TABLE meldb_clients; DROP TABLE meldb_mutation_rejects;
             DROP TABLE meldb_site_bindings;
             CREATE TABLE meldb_clients (
                 client BLOB PRIMARY KEY, last_processed INTEGER NOT NULL) STRICT;
             CREATE TABLE meldb_mutation_rejects (
                 client BLOB NOT NULL, id INTEGER NOT NULL, name TEXT NOT NULL,
                 error TEXT NOT NULL, PRIMARY KEY (client, id)) STRICT, WITHOUT ROWID;
             UPDATE meldb_meta SET value = 1 WHERE key = 'format';",
        )?;
        let key = client.as_bytes().as_slice();
        conn.execute("INSERT INTO meldb_clients VALUES (?1, 7)", [key])?;
        conn.execute(
            "INSERT INTO meldb_mutation_rejects VALUES (?1, 5, 'book', 'taken')",
            [key],
        )?;
        Ok(())
    }

    #[test]
    fn format_1_mutation_state_is_kept_and_claimed_by_the_first_token_to_push() -> Result<()> {
        use crate::mutator::{PendingMutation, Push};
        let client = crate::clock::SiteId::from_bytes([9; 16]);
        let (_dir, path) = current_format_file()?;
        make_format_1(&path, client)?;
        let mut store = Store::open(&path, &schema())?;
        assert_eq!(format_of(&path)?, FORMAT);
        assert_eq!(format_of(&format!("{path}.format-1.backup"))?, 1);
        let token: Option<String> =
            store
                .conn()
                .query_row("SELECT token FROM meldb_clients", [], |r| r.get(0))?;
        assert_eq!(token, None, "an old row is unclaimed");
        // Until claimed, any token's pull of the site reads it...
        let pull = store.pull_for_as("till-1", client, &Default::default(), 1)?;
        assert_eq!(pull.last_processed, 7);
        assert_eq!(pull.rejected.len(), 1);
        // ...and the first push claims it: mutations 1..=7 ran before the
        // upgrade and do not run again.
        let push = Push {
            client,
            mutations: (6..=8)
                .map(|id| PendingMutation {
                    id,
                    name: "unknown".into(),
                    args: "null".into(),
                    meta: None,
                })
                .collect(),
        };
        let result = store.process_push_as("till-1", &push)?;
        assert_eq!((result.duplicates, result.last_processed), (2, 8));
        // Claimed: another token now starts from nothing, and sees none of it.
        let other = store.pull_for_as("till-2", client, &Default::default(), 1)?;
        assert_eq!((other.last_processed, other.rejected.len()), (0, 0));
        let mine = store.pull_for_as("till-1", client, &Default::default(), 1)?;
        assert_eq!(mine.last_processed, 8);
        assert_eq!(
            mine.rejected.iter().map(|r| r.id).collect::<Vec<_>>(),
            [5, 8],
            "the old refusal and the new one (unknown mutator)"
        );
        // The upgraded tables are exactly those a new database gets.
        let fresh_dir = tempfile::tempdir().map_err(|e| StorageError::Corrupt {
            what: "tempdir".into(),
            problem: e.to_string(),
        })?;
        let fresh_path = fresh_dir.path().join("fresh.db");
        let fresh = Store::open(&fresh_path, &schema())?;
        let ddl = |conn: &Connection| -> Result<Vec<String>> {
            let mut stmt = conn.prepare(
                "SELECT sql FROM sqlite_master WHERE name LIKE 'meldb_%' AND sql IS NOT NULL \
                 ORDER BY name",
            )?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        };
        assert_eq!(ddl(store.conn())?, ddl(fresh.conn())?);
        Ok(())
    }
}
