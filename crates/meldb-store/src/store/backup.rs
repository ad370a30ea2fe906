//! Online backup: a consistent copy of a live database in a new file,
//! taken with SQLite's backup API while other connections (a relay, other
//! processes) keep writing.
//!
//! Invariants:
//!
//! - The copy is one snapshot: every page is copied in a single step, so
//!   it holds exactly the transactions committed when the step began (in
//!   WAL mode writers go on meanwhile; a step-by-step copy would start
//!   over on every write from another connection and might never end).
//! - A file under the destination's name is always a whole, checked
//!   backup: the pages go to a temporary file in the destination's
//!   directory, which is checked (`PRAGMA integrity_check`, meldb's
//!   metadata and the source's format), fsynced, and only then linked
//!   under the destination's name (and the directory fsynced). A crash
//!   leaves at most a temporary file, never a half backup.
//! - An existing destination is never overwritten, not even one created
//!   while the backup ran (the final link refuses to replace it).
//! - The source is only read: [`Store::backup_file`] opens it read-only,
//!   never upgrades it, needs no schema.
//!
//! - The copy of an encrypted store is encrypted with the same key (every
//!   connection on the copy is keyed before SQLite writes a page), and an
//!   encrypted source is never copied without its key: a copy never holds
//!   the plaintext of an encrypted store.
//!
//! The copy keeps the source's site id: it is the same replica at an
//! earlier point. A restored copy replaces the original; one used beside
//! it needs [`Store::rotate_site_id`] first.

use super::{cipher, EncryptionKey, Store};
use crate::error::{BackupError, OpenError};
use crate::schema::Schema;
use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a copy waits for a source that is locked (a checkpoint that
/// truncates the WAL, an exclusive transaction) before giving up.
const BUSY_LIMIT: Duration = Duration::from_secs(30);

/// What a backup copied.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackupReport {
    /// The backup file.
    pub path: PathBuf,
    /// The database pages copied.
    pub pages: u64,
    /// The size of the backup file in bytes.
    pub bytes: u64,
    /// The database format of the copy (the source's).
    pub format: i64,
    /// The schema stored in the copy: its name and version.
    pub schema: (String, u32),
    /// Live rows of each table in the copy, in schema order.
    pub rows: Vec<(String, u64)>,
}

impl Store {
    /// Copies this store's database to a new file at `to` (see the module
    /// docs: one snapshot, checked, fsynced, never a half file under
    /// `to`'s name, never overwriting). Other connections to the database
    /// may keep writing meanwhile; this handle is borrowed for the copy.
    ///
    /// ```
    /// # use meldb_store::schema::Schema;
    /// # use meldb_store::store::Store;
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let schema = Schema::from_toml_str(r#"
    /// #     name = "notes"
    /// #     version = 1
    /// #     [[table]]
    /// #     name = "note"
    /// #     primary_key = ["id"]
    /// #     [[table.column]]
    /// #     name = "id"
    /// #     type = "text"
    /// # "#, "notes.toml")?;
    /// let mut store = Store::open(dir.path().join("notes.db"), &schema)?;
    /// store.write(|tx| tx.insert("note", &[("id", "n1".into())]))?;
    /// let report = store.backup_to(dir.path().join("notes-backup.db"))?;
    /// assert_eq!(report.rows, vec![("note".to_string(), 1)]);
    /// // A second backup to the same name is refused.
    /// assert!(store.backup_to(dir.path().join("notes-backup.db")).is_err());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`BackupError`]: `to` exists, its directory cannot be written, the
    /// copy failed, or the copy failed its check (nothing is left under
    /// `to`'s name).
    pub fn backup_to(&self, to: impl AsRef<Path>) -> Result<BackupReport, BackupError> {
        backup(&self.conn, &self.path, to.as_ref(), self.key.as_ref())
    }

    /// Copies the meldb database at `from` to a new file at `to`, as
    /// [`Store::backup_to`] does, without opening it as a store: `from` is
    /// opened read-only (a relay's live namespace, say) and needs no
    /// schema.
    ///
    /// # Errors
    ///
    /// As [`Store::backup_to`], [`BackupError::NotMeldb`] when `from`
    /// does not exist or is not a meldb database, and [`BackupError::Key`]
    /// when it is encrypted ([`Store::backup_file_with_key`] copies it).
    pub fn backup_file(
        from: impl AsRef<Path>,
        to: impl AsRef<Path>,
    ) -> Result<BackupReport, BackupError> {
        backup_file(from.as_ref(), to.as_ref(), None)
    }

    /// [`Store::backup_file`] of an encrypted database: `from` is opened
    /// with `key`, and the copy is encrypted with it.
    ///
    /// # Errors
    ///
    /// As [`Store::backup_file`], and [`BackupError::Key`] when `from` is
    /// not encrypted or `key` does not decrypt it.
    pub fn backup_file_with_key(
        from: impl AsRef<Path>,
        to: impl AsRef<Path>,
        key: &EncryptionKey,
    ) -> Result<BackupReport, BackupError> {
        backup_file(from.as_ref(), to.as_ref(), Some(key))
    }
}

/// Opens `from` read-only (keyed when `key` is given) and backs it up.
fn backup_file(
    from: &Path,
    to: &Path,
    key: Option<&EncryptionKey>,
) -> Result<BackupReport, BackupError> {
    let shown = from.display().to_string();
    if !from.is_file() {
        return Err(BackupError::NotMeldb {
            path: shown,
            problem: "no such database file".into(),
        });
    }
    let conn = Connection::open_with_flags(
        from,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|source| BackupError::Source {
        path: shown.clone(),
        source,
    })?;
    match cipher::check_file(from, &shown, key) {
        Ok(()) => {}
        Err(OpenError::Encrypted { .. }) => {
            return Err(BackupError::Key {
                path: shown,
                problem: "not a meldb database, or an encrypted one (back that up with its key)",
            })
        }
        Err(OpenError::NotEncrypted { .. }) => {
            return Err(BackupError::Key {
                path: shown,
                problem: "it is not encrypted, but a key was given",
            })
        }
        Err(OpenError::EncryptionUnavailable { reason, .. }) => {
            return Err(BackupError::Key {
                path: shown,
                problem: reason,
            })
        }
        Err(e) => {
            return Err(BackupError::NotMeldb {
                path: shown,
                problem: e.to_string(),
            })
        }
    }
    let source = |source| BackupError::Source {
        path: shown.clone(),
        source,
    };
    if let Some(key) = key {
        cipher::key_connection(&conn, key).map_err(source)?;
        if !cipher::decrypts(&conn).map_err(source)? {
            return Err(BackupError::Key {
                path: shown,
                problem: "the key does not decrypt it",
            });
        }
    }
    conn.busy_timeout(Duration::from_secs(5)).map_err(source)?;
    backup(&conn, &shown, to, key)
}

/// The copy, its check and its move into place.
fn backup(
    src: &Connection,
    from: &str,
    to: &Path,
    key: Option<&EncryptionKey>,
) -> Result<BackupReport, BackupError> {
    let shown = to.display().to_string();
    let format = meldb_format(src, from).map_err(|problem| BackupError::NotMeldb {
        path: from.to_owned(),
        problem,
    })?;
    if to.symlink_metadata().is_ok() {
        return Err(BackupError::Exists { path: shown });
    }
    let name = to
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| BackupError::Io {
            path: shown.clone(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file name"),
        })?;
    let dir = match to.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(BackupError::Io {
            path: dir.display().to_string(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the directory for the backup does not exist",
            ),
        });
    }
    // The copy holds the same data: it gets the source's permissions (a
    // private database never gets a world-readable backup).
    let permissions = std::fs::metadata(from).ok().map(|m| m.permissions());
    let temp = Temp::create(&dir, name, permissions)?;
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| BackupError::Io { path, source }
    };
    let pages = copy(src, from, &temp.path, &shown, key)?;
    let check = |problem: String| BackupError::Check {
        from: from.to_owned(),
        to: shown.clone(),
        problem,
    };
    let rows = {
        let copy = Connection::open(&temp.path).map_err(|e| check(e.to_string()))?;
        if let Some(key) = key {
            cipher::key_connection(&copy, key).map_err(|e| check(e.to_string()))?;
        }
        // One self-contained file: no WAL beside it.
        copy.query_row("PRAGMA journal_mode = DELETE", [], |r| {
            r.get::<_, String>(0)
        })
        .map_err(|e| check(e.to_string()))?;
        let verdict: String = copy
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .map_err(|e| check(e.to_string()))?;
        if verdict != "ok" {
            return Err(check(format!("integrity check: {verdict}")));
        }
        let copied = meldb_format(&copy, &shown).map_err(&check)?;
        if copied != format {
            return Err(check(format!(
                "the copy has format {copied}, the source {format}"
            )));
        }
        let rows = row_counts(&copy).map_err(&check)?;
        copy.close().map_err(|(_, e)| check(e.to_string()))?;
        rows
    };
    File::open(&temp.path)
        .and_then(|f| f.sync_all())
        .map_err(io(&temp.path))?;
    let bytes = std::fs::metadata(&temp.path).map_err(io(&temp.path))?.len();
    temp.publish(to)?;
    // The new directory entry survives a crash too (where directories can
    // be opened: not on every platform).
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(BackupReport {
        path: to.to_path_buf(),
        pages,
        bytes,
        format,
        schema: rows.0,
        rows: rows.1,
    })
}

/// Copies every page of `src` into the file at `dest` in one step.
fn copy(
    src: &Connection,
    from: &str,
    dest: &Path,
    to: &str,
    key: Option<&EncryptionKey>,
) -> Result<u64, BackupError> {
    let failed = |source| BackupError::Copy {
        from: from.to_owned(),
        to: to.to_owned(),
        source,
    };
    let mut dst = Connection::open(dest).map_err(failed)?;
    if let Some(key) = key {
        cipher::key_connection(&dst, key).map_err(failed)?;
    }
    let backup = Backup::new(src, &mut dst).map_err(failed)?;
    let started = Instant::now();
    loop {
        // -1: every page at once, one snapshot (see the module docs).
        match backup.step(-1).map_err(failed)? {
            StepResult::Done => break,
            StepResult::More | StepResult::Busy | StepResult::Locked
                if started.elapsed() < BUSY_LIMIT =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            _ => {
                return Err(BackupError::Busy {
                    from: from.to_owned(),
                    seconds: BUSY_LIMIT.as_secs(),
                })
            }
        }
    }
    let pages = backup.progress().pagecount;
    drop(backup);
    dst.close().map_err(|(_, e)| failed(e))?;
    Ok(u64::try_from(pages).unwrap_or(0))
}

/// The meldb format `conn` holds, or why it is not a meldb database.
fn meldb_format(conn: &Connection, path: &str) -> Result<i64, String> {
    let has_meta: bool = conn
        .query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'meldb_meta'",
            [],
            |r| r.get(0),
        )
        .map_err(|e| format!("{path}: {e}"))?;
    if !has_meta {
        return Err("it has no meldb_meta table".into());
    }
    let format: Option<i64> = conn
        .query_row(
            "SELECT value FROM meldb_meta WHERE key = 'format'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| e.to_string())?;
    let format = format.ok_or("meldb_meta has no \"format\" entry")?;
    if !(super::format::OLDEST_FORMAT..=super::format::FORMAT).contains(&format) {
        return Err(format!(
            "database format {format} is not one this meldb reads ({} to {})",
            super::format::OLDEST_FORMAT,
            super::format::FORMAT
        ));
    }
    Ok(format)
}

/// The stored schema's name and version, and the live rows per table.
#[allow(clippy::type_complexity, reason = "one private helper's pair")]
fn row_counts(conn: &Connection) -> Result<((String, u32), Vec<(String, u64)>), String> {
    let json: String = conn
        .query_row(
            "SELECT value FROM meldb_meta WHERE key = 'schema'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| e.to_string())?
        .ok_or("meldb_meta has no \"schema\" entry")?;
    let schema: Schema = serde_json::from_str(&json)
        .map_err(|e| format!("the stored schema does not parse: {e}"))?;
    let mut rows = Vec::with_capacity(schema.tables.len());
    for table in &schema.tables {
        let sql = format!("SELECT count(*) FROM {}", super::layout::quote(&table.name));
        let n: i64 = conn
            .query_row(&sql, [], |r| r.get(0))
            .map_err(|e| format!("table {:?}: {e}", table.name))?;
        rows.push((table.name.clone(), u64::try_from(n).unwrap_or(0)));
    }
    Ok(((schema.name, schema.version), rows))
}

/// The temporary file a backup is written to: removed on drop unless it
/// was published under its final name.
struct Temp {
    path: PathBuf,
    published: bool,
}

impl Temp {
    /// A new, empty file beside the destination, created exclusively,
    /// readable by its owner only until given `permissions`.
    fn create(
        dir: &Path,
        name: &str,
        permissions: Option<std::fs::Permissions>,
    ) -> Result<Temp, BackupError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = dir.join(format!(".{name}.{}-{nanos}.partial", std::process::id()));
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let shown = path.display().to_string();
        let failed = |source| BackupError::Io {
            path: shown.clone(),
            source,
        };
        options.open(&path).map_err(failed)?;
        let temp = Temp {
            path,
            published: false,
        };
        if let Some(permissions) = permissions {
            // SQLite writes into the existing file, keeping its mode.
            std::fs::set_permissions(&temp.path, permissions).map_err(failed)?;
        }
        Ok(temp)
    }

    /// Gives the file its final name, refusing to replace anything there.
    fn publish(mut self, to: &Path) -> Result<(), BackupError> {
        let shown = to.display().to_string();
        match std::fs::hard_link(&self.path, to) {
            Ok(()) => {
                // The backup is in place; the temporary name goes (if that
                // fails, a stray hidden file stays, the backup is whole).
                let _ = std::fs::remove_file(&self.path);
                self.published = true;
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(BackupError::Exists { path: shown })
            }
            // No hard links here (some network and FAT file systems):
            // rename, which replaces, so look first.
            Err(_) => {
                if to.symlink_metadata().is_ok() {
                    return Err(BackupError::Exists { path: shown });
                }
                std::fs::rename(&self.path, to).map_err(|source| BackupError::Io {
                    path: shown,
                    source,
                })?;
                self.published = true;
                Ok(())
            }
        }
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        if !self.published {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Result;
    use crate::store::tests::test_schema;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    fn insert(store: &mut Store, sku: &str) -> Result<()> {
        store.write(|tx| tx.insert("item", &[("sku", sku.into()), ("stock", 1.into())]))
    }

    fn no_partial_files(dir: &Path) -> std::io::Result<bool> {
        for entry in std::fs::read_dir(dir)? {
            if entry?.file_name().to_string_lossy().ends_with(".partial") {
                return Ok(false);
            }
        }
        Ok(true)
    }

    #[test]
    fn a_backup_is_the_same_replica_checked_and_never_overwrites(
    ) -> std::result::Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let mut store = Store::open(dir.path().join("shop.db"), &test_schema())?;
        for i in 0..50 {
            insert(&mut store, &format!("sku-{i}"))?;
        }
        let to = dir.path().join("shop-backup.db");
        let report = store.backup_to(&to)?;
        assert_eq!(report.rows, vec![("item".to_string(), 50)]);
        assert_eq!(report.schema, ("shop".to_string(), 1));
        assert_eq!(report.format, super::super::format::FORMAT);
        assert!(report.pages > 0);
        assert_eq!(report.bytes, std::fs::metadata(&to)?.len());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).map(|m| m.permissions().mode() & 0o777);
            assert_eq!(mode(&to)?, mode(&dir.path().join("shop.db"))?);
            // A private database gets a private backup.
            let private = dir.path().join("private.db");
            let secret = Store::open(&private, &test_schema())?;
            std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600))?;
            let copy = secret.backup_to(dir.path().join("private-backup.db"))?;
            assert_eq!(mode(&copy.path)?, 0o600);
        }
        let copy = Store::open(&to, &test_schema())?;
        assert_eq!(copy.site_id(), store.site_id());
        assert_eq!(copy.digest()?, store.digest()?);
        assert_eq!(copy.version_vector(), store.version_vector());
        drop(copy);

        // The attacker here is a careless operator: a second backup to the
        // same name must not replace the first, nor leave a partial file.
        let before = std::fs::read(&to)?;
        insert(&mut store, "later")?;
        let err = store.backup_to(&to);
        assert!(matches!(err, Err(BackupError::Exists { .. })), "{err:?}");
        assert_eq!(std::fs::read(&to)?, before);
        let err = Store::backup_file(dir.path().join("shop.db"), &to);
        assert!(matches!(err, Err(BackupError::Exists { .. })), "{err:?}");
        assert!(no_partial_files(dir.path())?);
        // A destination in a directory that does not exist names it.
        let nowhere = store.backup_to(dir.path().join("missing").join("x.db"));
        assert!(
            matches!(&nowhere, Err(BackupError::Io { path, .. }) if path.ends_with("missing")),
            "{nowhere:?}"
        );
        Ok(())
    }

    #[test]
    fn a_file_backup_reads_the_source_without_a_schema_and_refuses_strangers(
    ) -> std::result::Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("shop.db");
        let mut store = Store::open(&path, &test_schema())?;
        insert(&mut store, "a")?;
        drop(store);
        let report = Store::backup_file(&path, dir.path().join("copy.db"))?;
        assert_eq!(report.rows, vec![("item".to_string(), 1)]);

        let missing = Store::backup_file(dir.path().join("nope.db"), dir.path().join("x.db"));
        assert!(
            matches!(&missing, Err(BackupError::NotMeldb { problem, .. }) if problem.contains("no such")),
            "{missing:?}"
        );
        let plain = dir.path().join("plain.db");
        Connection::open(&plain)?.execute_batch("CREATE TABLE t (x)")?;
        let stranger = Store::backup_file(&plain, dir.path().join("y.db"));
        assert!(
            matches!(&stranger, Err(BackupError::NotMeldb { .. })),
            "{stranger:?}"
        );
        assert!(!dir.path().join("x.db").exists() && !dir.path().join("y.db").exists());
        assert!(no_partial_files(dir.path())?);
        Ok(())
    }

    #[test]
    fn a_backup_taken_while_another_connection_writes_is_one_whole_snapshot(
    ) -> std::result::Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("shop.db");
        let mut store = Store::open(&path, &test_schema())?;
        for i in 0..200 {
            insert(&mut store, &format!("before-{i}"))?;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let stop = stop.clone();
            std::thread::spawn(move || -> Result<u64> {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    insert(&mut store, &format!("during-{n}"))?;
                    n += 1;
                }
                Ok(n)
            })
        };
        let mut reports = Vec::new();
        for i in 0..3 {
            reports.push(Store::backup_file(
                &path,
                dir.path().join(format!("b{i}.db")),
            )?);
        }
        stop.store(true, Ordering::Relaxed);
        let written = writer.join().map_err(|_| "the writer panicked")??;
        for report in reports {
            let copy = Store::open(&report.path, &test_schema())?;
            let rows: i64 = copy
                .conn()
                .query_row("SELECT count(*) FROM item", [], |r| r.get(0))?;
            assert_eq!(report.rows, vec![("item".to_string(), rows as u64)]);
            assert!(rows >= 200, "the copy lost rows committed before it began");
            assert!(rows as u64 <= 200 + written);
            // One snapshot: the rows and the replica's own version vector
            // agree (every write is one dot of this site).
            let vv = copy.version_vector();
            assert_eq!(vv.site(&copy.site_id()).map(|r| r.max()), Some(rows as u64));
        }
        Ok(())
    }
}
