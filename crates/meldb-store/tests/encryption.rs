//! Encryption at rest (SQLCipher, the `encryption` feature): run with
//! `cargo test -p meldb-store --features encryption --test encryption`.
#![cfg(feature = "encryption")]

use meldb_store::error::{BackupError, OpenError};
use meldb_store::schema::Schema;
use meldb_store::store::{EncryptionKey, Store, StoreOptions};
use std::path::Path;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A value that must never be on disk in the clear.
const SECRET: &str = "patient-record-7f3a9c";

fn schema() -> Result<Schema, Box<dyn std::error::Error>> {
    Ok(Schema::from_toml_str(
        r#"
        name = "notes"
        version = 1
        [[table]]
        name = "note"
        primary_key = ["id"]
        [[table.column]]
        name = "id"
        type = "text"
        [[table.column]]
        name = "body"
        type = "text"
        "#,
        "notes.toml",
    )?)
}

fn key() -> EncryptionKey {
    EncryptionKey::passphrase("correct horse battery staple")
}

fn keyed() -> StoreOptions {
    StoreOptions::new().encryption_key(key())
}

/// An encrypted store at `path` holding one note with [`SECRET`], closed.
fn write_encrypted(path: &Path) -> TestResult {
    let mut store = keyed().open(path, &schema()?)?;
    store.write(|tx| tx.insert("note", &[("id", "n1".into()), ("body", SECRET.into())]))?;
    Ok(())
}

fn body(store: &Store) -> Result<String, Box<dyn std::error::Error>> {
    Ok(store
        .conn()
        .query_row("SELECT body FROM note WHERE id = 'n1'", [], |r| r.get(0))?)
}

/// Whether `needle` occurs in any file of `dir` (the database, its WAL,
/// its shared memory, a backup).
fn on_disk(dir: &Path, needle: &str) -> Result<bool, Box<dyn std::error::Error>> {
    for entry in std::fs::read_dir(dir)? {
        let bytes = std::fs::read(entry?.path())?;
        if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
            return Ok(true);
        }
    }
    Ok(false)
}

#[test]
fn a_store_reopens_with_its_key_and_reads_what_it_wrote() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("notes.db");
    write_encrypted(&path)?;
    let store = keyed().open(&path, &schema()?)?;
    assert_eq!(body(&store)?, SECRET);
    // The same key given as another value of the same passphrase opens it.
    drop(store);
    let again = StoreOptions::new()
        .encryption_key(EncryptionKey::passphrase(String::from(
            "correct horse battery staple",
        )))
        .open(&path, &schema()?)?;
    assert_eq!(body(&again)?, SECRET);
    Ok(())
}

#[test]
fn a_raw_key_opens_what_it_created_and_a_passphrase_does_not() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("raw.db");
    let raw = EncryptionKey::raw([7; 32]);
    let mut store = StoreOptions::new()
        .encryption_key(raw.clone())
        .open(&path, &schema()?)?;
    store.write(|tx| tx.insert("note", &[("id", "n1".into()), ("body", SECRET.into())]))?;
    drop(store);
    let store = StoreOptions::new()
        .encryption_key(raw)
        .open(&path, &schema()?)?;
    assert_eq!(body(&store)?, SECRET);
    drop(store);
    let err = keyed().open(&path, &schema()?).err().ok_or("opened")?;
    assert!(matches!(err, OpenError::WrongKey { .. }), "{err}");
    Ok(())
}

#[test]
fn a_wrong_key_is_a_clear_error_that_does_not_show_either_key() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("notes.db");
    write_encrypted(&path)?;
    let err = StoreOptions::new()
        .encryption_key(EncryptionKey::passphrase("tr0ub4dor"))
        .open(&path, &schema()?)
        .err()
        .ok_or("a wrong key opened the store")?;
    assert!(matches!(err, OpenError::WrongKey { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("encryption key does not open"),
        "{message}"
    );
    assert!(
        !message.contains("tr0ub4dor") && !message.contains("horse"),
        "{message}"
    );
    assert!(!format!("{err:?}").contains("tr0ub4dor"));
    // The file is untouched: the right key still opens it.
    assert_eq!(body(&keyed().open(&path, &schema()?)?)?, SECRET);
    Ok(())
}

#[test]
fn a_plain_database_opened_with_a_key_is_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("plain.db");
    let mut plain = Store::open(&path, &schema()?)?;
    plain.write(|tx| tx.insert("note", &[("id", "n1".into()), ("body", SECRET.into())]))?;
    drop(plain);
    let err = keyed().open(&path, &schema()?).err().ok_or("opened")?;
    assert!(matches!(err, OpenError::NotEncrypted { .. }), "{err}");
    assert!(err.to_string().contains("not encrypted"), "{err}");
    // Still a plain database, as it was.
    assert_eq!(body(&Store::open(&path, &schema()?)?)?, SECRET);
    Ok(())
}

#[test]
fn an_encrypted_database_opened_without_a_key_is_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("notes.db");
    write_encrypted(&path)?;
    let err = Store::open(&path, &schema()?).err().ok_or("opened")?;
    assert!(matches!(err, OpenError::Encrypted { .. }), "{err}");
    assert!(err.to_string().contains("open it with its key"), "{err}");
    Ok(())
}

#[test]
fn no_written_value_is_on_disk_in_the_clear() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("notes.db");
    // While the store is open (its WAL holds the write) and after.
    let mut store = keyed().open(&path, &schema()?)?;
    store.write(|tx| tx.insert("note", &[("id", "n1".into()), ("body", SECRET.into())]))?;
    assert!(
        !on_disk(dir.path(), SECRET)?,
        "plaintext in the WAL or file"
    );
    drop(store);
    assert!(!on_disk(dir.path(), SECRET)?, "plaintext in the file");
    let header = std::fs::read(&path)?;
    assert!(!header.starts_with(b"SQLite format 3"));
    // The check can fail: a plain store holds the value in the clear.
    let plain_dir = tempfile::tempdir()?;
    let mut plain = Store::open(plain_dir.path().join("plain.db"), &schema()?)?;
    plain.write(|tx| tx.insert("note", &[("id", "n1".into()), ("body", SECRET.into())]))?;
    drop(plain);
    assert!(on_disk(plain_dir.path(), SECRET)?);
    Ok(())
}

#[test]
fn readers_of_a_read_pool_read_an_encrypted_store() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("notes.db");
    let mut store = keyed().open(&path, &schema()?)?;
    store.write(|tx| tx.insert("note", &[("id", "n1".into()), ("body", SECRET.into())]))?;
    let pool = store.read_pool(2).ok_or("a file store has readers")?;
    let got: Option<(String, String)> = pool.read(|r| r.get_as("note", "n1"))?;
    assert_eq!(got, Some(("n1".into(), SECRET.into())));
    // Two readers at once, each keyed.
    let both = pool.read(|a| {
        let inner = pool.read(|b| b.digest())?;
        Ok((a.digest()?, inner))
    })?;
    assert_eq!(both.0, both.1);
    assert_eq!(both.0, store.digest()?);
    // A later write is seen by the next read.
    store.write(|tx| tx.insert("note", &[("id", "n2".into()), ("body", "b".into())]))?;
    let count: i64 = pool.read(|r| {
        Ok(r.conn()
            .query_row("SELECT count(*) FROM note", [], |x| x.get(0))?)
    })?;
    assert_eq!(count, 2);
    Ok(())
}

#[test]
fn a_backup_of_an_encrypted_store_is_encrypted_with_its_key() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("notes.db");
    let store = {
        write_encrypted(&path)?;
        keyed().open(&path, &schema()?)?
    };
    let backups = tempfile::tempdir()?;
    let copy = backups.path().join("copy.db");
    let report = store.backup_to(&copy)?;
    assert_eq!(report.rows, vec![("note".to_string(), 1)]);
    assert!(
        !on_disk(backups.path(), SECRET)?,
        "the backup holds plaintext"
    );
    let err = Store::open(&copy, &schema()?).err().ok_or("opened")?;
    assert!(matches!(err, OpenError::Encrypted { .. }), "{err}");
    assert_eq!(body(&keyed().open(&copy, &schema()?)?)?, SECRET);
    Ok(())
}

#[test]
fn a_backup_of_an_encrypted_file_needs_its_key() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("notes.db");
    write_encrypted(&path)?;
    let backups = tempfile::tempdir()?;
    let without = Store::backup_file(&path, backups.path().join("a.db"))
        .err()
        .ok_or("copied without a key")?;
    assert!(matches!(without, BackupError::Key { .. }), "{without}");
    let wrong = Store::backup_file_with_key(
        &path,
        backups.path().join("b.db"),
        &EncryptionKey::passphrase("nope"),
    )
    .err()
    .ok_or("copied with a wrong key")?;
    assert!(matches!(wrong, BackupError::Key { .. }), "{wrong}");
    assert_eq!(
        std::fs::read_dir(backups.path())?.count(),
        0,
        "nothing left"
    );
    let copy = backups.path().join("c.db");
    Store::backup_file_with_key(&path, &copy, &key())?;
    assert!(!on_disk(backups.path(), SECRET)?);
    assert_eq!(body(&keyed().open(&copy, &schema()?)?)?, SECRET);
    Ok(())
}

#[test]
fn an_in_memory_store_refuses_a_key() -> TestResult {
    let err = keyed().open_in_memory(&schema()?).err().ok_or("opened")?;
    assert!(
        matches!(err, OpenError::EncryptionUnavailable { .. }),
        "{err}"
    );
    Ok(())
}
