//! Encryption at rest: the key of a store's database, and keying each
//! connection opened on it (SQLCipher, behind the `encryption` feature).
//!
//! Invariants:
//!
//! - Every connection meldb opens on a keyed store's file (the writer,
//!   each reader of a [`ReadPool`](super::ReadPool), a backup's copy and
//!   its check) runs `PRAGMA key` before any other statement.
//! - A file is checked against the key before SQLite opens it: a plain
//!   SQLite file (its header is `"SQLite format 3\0"`) opened with a key,
//!   or any other non-empty file opened without one, is refused with an
//!   [`OpenError`] that says which; a key that does not decrypt the file
//!   is [`OpenError::WrongKey`], found by reading `sqlite_master` first.
//! - The key never appears in `Debug` output or in an error message; its
//!   bytes are overwritten when the last copy of it is dropped.
//!
//! Without the `encryption` feature the build has no SQLCipher: a key is
//! refused at open ([`OpenError::EncryptionUnavailable`]), never ignored.

use crate::error::{OpenError, StorageError};
use rusqlite::Connection;
use std::fmt;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

/// The first 16 bytes of every plain (unencrypted) SQLite database file.
const PLAIN_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// The key a store's database is encrypted with
/// ([`StoreOptions::encryption_key`](super::StoreOptions::encryption_key)).
///
/// Either a passphrase, from which SQLCipher derives the key (PBKDF2-HMAC-SHA512,
/// 256,000 iterations, a random salt kept in the file: slow to open on
/// purpose, safe for a human-chosen secret), or 32 raw key bytes used as
/// they are (no derivation: open is fast; for a key from a platform
/// keystore, which must be random). A database opens only with the same
/// kind and value it was created with. Its `Debug` output shows neither.
#[derive(Clone)]
pub struct EncryptionKey(Arc<Secret>);

enum Secret {
    Passphrase(String),
    Raw([u8; 32]),
}

impl EncryptionKey {
    /// A passphrase (SQLCipher derives the key from it).
    pub fn passphrase(passphrase: impl Into<String>) -> EncryptionKey {
        EncryptionKey(Arc::new(Secret::Passphrase(passphrase.into())))
    }

    /// 32 random key bytes, used without derivation.
    pub fn raw(key: [u8; 32]) -> EncryptionKey {
        EncryptionKey(Arc::new(Secret::Raw(key)))
    }

    /// What `PRAGMA key` is given: the passphrase, or SQLCipher's
    /// `x'<64 hex digits>'` form of a raw key.
    fn pragma_value(&self) -> Wiped {
        match &*self.0 {
            Secret::Passphrase(p) => Wiped(p.clone()),
            Secret::Raw(bytes) => {
                let mut hex = String::with_capacity(67);
                hex.push_str("x'");
                for b in bytes {
                    hex.push(char::from(HEX[usize::from(b >> 4)]));
                    hex.push(char::from(HEX[usize::from(b & 0xf)]));
                }
                hex.push('\'');
                Wiped(hex)
            }
        }
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EncryptionKey(<redacted>)")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        match self {
            Secret::Passphrase(p) => wipe(std::mem::take(p)),
            Secret::Raw(bytes) => {
                bytes.fill(0);
                std::hint::black_box(bytes);
            }
        }
    }
}

/// A copy of the key's text, overwritten when dropped.
struct Wiped(String);

impl Drop for Wiped {
    fn drop(&mut self) {
        wipe(std::mem::take(&mut self.0));
    }
}

/// Overwrites a string's bytes before freeing them (best effort: the
/// optimizer is kept from dropping the writes; copies SQLite made are
/// SQLCipher's to wipe).
fn wipe(text: String) {
    let mut bytes = text.into_bytes();
    bytes.fill(0);
    std::hint::black_box(&bytes);
}

/// Checks the file at `path` against the key before SQLite opens it: a
/// missing or empty file is new (it is created encrypted when a key is
/// given); otherwise a key needs an encrypted file and no key a plain one.
pub(super) fn check_file(
    path: &Path,
    shown: &str,
    key: Option<&EncryptionKey>,
) -> Result<(), OpenError> {
    if key.is_some() && !cfg!(feature = "encryption") {
        return Err(OpenError::EncryptionUnavailable {
            path: shown.to_owned(),
            reason: "this build of meldb has no encryption (the `encryption` feature is off)",
        });
    }
    let Some(plain) = is_plain(path).map_err(|e| OpenError::Storage(io_error(shown, &e)))? else {
        return Ok(());
    };
    match (plain, key) {
        (true, Some(_)) => Err(OpenError::NotEncrypted {
            path: shown.to_owned(),
        }),
        (false, None) => Err(OpenError::Encrypted {
            path: shown.to_owned(),
        }),
        _ => Ok(()),
    }
}

/// Whether the file at `path` starts with the plain SQLite header; `None`
/// for a missing or empty file.
pub(super) fn is_plain(path: &Path) -> std::io::Result<Option<bool>> {
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut header = Vec::with_capacity(PLAIN_HEADER.len());
    (&mut file)
        .take(PLAIN_HEADER.len() as u64)
        .read_to_end(&mut header)?;
    if header.is_empty() {
        return Ok(None);
    }
    Ok(Some(header == PLAIN_HEADER))
}

fn io_error(shown: &str, e: &std::io::Error) -> StorageError {
    StorageError::Corrupt {
        what: shown.to_owned(),
        problem: format!("cannot read the file's header: {e}"),
    }
}

/// Gives `conn` the key: the first statement on a new connection.
/// SQLCipher's own log (which would print a wrong key's failed page check
/// on stderr) is turned off: the caller reports it as an error.
pub(super) fn key_connection(conn: &Connection, key: &EncryptionKey) -> rusqlite::Result<()> {
    // Not in a build without SQLCipher, where no key gets this far
    // (`check_file` refuses it), and the pragmas would be ignored.
    if cfg!(feature = "encryption") {
        conn.pragma_update(None, "cipher_log_level", "NONE")?;
        conn.pragma_update(None, "key", &*key.pragma_value().0)?;
    }
    Ok(())
}

/// Reads `sqlite_master` through a keyed connection: the first read that
/// decrypts a page. SQLite's "file is not a database" here means the key
/// does not decrypt the file.
pub(super) fn verify(conn: &Connection, shown: &str) -> Result<(), OpenError> {
    if decrypts(conn)? {
        Ok(())
    } else {
        Err(OpenError::WrongKey {
            path: shown.to_owned(),
        })
    }
}

/// Whether the keyed `conn` reads its schema: `false` when the key does
/// not decrypt the file (SQLite's "not a database"), an error when SQLite
/// failed otherwise (I/O, busy), which is not the key's fault.
pub(super) fn decrypts(conn: &Connection) -> Result<bool, rusqlite::Error> {
    match conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
        r.get::<_, i64>(0)
    }) {
        Ok(_) => Ok(true),
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::NotADatabase =>
        {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_kept_out_of_debug_output() {
        let key = EncryptionKey::passphrase("correct horse");
        let shown = format!("{key:?}");
        assert!(!shown.contains("correct"), "{shown}");
        let raw = format!("{:?}", EncryptionKey::raw([0xab; 32]));
        assert_eq!(raw, "EncryptionKey(<redacted>)");
        assert_eq!(shown, "EncryptionKey(<redacted>)");
    }

    /// Without SQLCipher a key is refused, never ignored (which would
    /// write the database in the clear).
    #[cfg(not(feature = "encryption"))]
    #[test]
    fn a_build_without_encryption_refuses_a_key() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("x.db");
        let schema = crate::schema::Schema::from_toml_str(
            "name = \"t\"\nversion = 1\n[[table]]\nname = \"item\"\nprimary_key = [\"sku\"]\n\
             [[table.column]]\nname = \"sku\"\ntype = \"text\"\n",
            "t.toml",
        )?;
        let err = super::super::StoreOptions::new()
            .encryption_key(EncryptionKey::passphrase("k"))
            .open(&path, &schema)
            .err()
            .ok_or("opened")?;
        assert!(
            matches!(err, OpenError::EncryptionUnavailable { .. }),
            "{err}"
        );
        assert!(!path.exists(), "no file was created");
        Ok(())
    }

    #[test]
    fn a_raw_key_is_given_in_sqlciphers_hex_form() {
        let mut bytes = [0u8; 32];
        bytes[0] = 0x0f;
        bytes[31] = 0xa0;
        let value = EncryptionKey::raw(bytes).pragma_value();
        assert_eq!(value.0.len(), 67);
        assert!(value.0.starts_with("x'0f00"), "{}", value.0);
        assert!(value.0.ends_with("00a0'"), "{}", value.0);
    }

    #[test]
    fn a_missing_or_empty_file_is_new_and_a_short_one_is_not_plain(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("x.db");
        assert_eq!(is_plain(&path)?, None);
        std::fs::write(&path, b"")?;
        assert_eq!(is_plain(&path)?, None);
        std::fs::write(&path, b"SQLite")?;
        assert_eq!(is_plain(&path)?, Some(false));
        std::fs::write(&path, b"SQLite format 3\0 and pages")?;
        assert_eq!(is_plain(&path)?, Some(true));
        Ok(())
    }

    #[test]
    fn a_plain_file_opened_without_a_key_passes_and_any_other_is_refused(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("x.db");
        std::fs::write(&path, b"SQLite format 3\0 and pages")?;
        check_file(&path, "x.db", None)?;
        std::fs::write(&path, b"random bytes of an encrypted file")?;
        let err = check_file(&path, "x.db", None).err().ok_or("refused")?;
        assert!(matches!(err, OpenError::Encrypted { .. }), "{err}");
        Ok(())
    }
}
