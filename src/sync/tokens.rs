//! Access tokens for the relay: who may connect, and whether they may write.
//!
//! A tokens file is TOML, one `[[token]]` per client:
//!
//! ```toml
//! [[token]]
//! name = "till-1"            # for the logs
//! token = "s3cret-till-1"
//! access = "read-write"      # or "read-only"
//! ```
//!
//! Tokens are compared by their blake3 hashes (constant-time equality), and
//! only the hashes are kept in memory.

use super::error::SyncError;
use super::session::{Access, Authorize};
use serde::Deserialize;
use std::path::Path;
use std::sync::Arc;

/// The tokens a relay accepts.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    entries: Vec<Entry>,
}

#[derive(Debug, Clone)]
struct Entry {
    name: String,
    hash: blake3::Hash,
    access: Access,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    token: Vec<FileEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEntry {
    name: String,
    token: String,
    access: FileAccess,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
enum FileAccess {
    ReadWrite,
    ReadOnly,
}

impl Tokens {
    /// No tokens (every connection is refused until some are added).
    pub fn new() -> Tokens {
        Tokens::default()
    }

    /// Adds a client's token.
    pub fn add(&mut self, name: impl Into<String>, token: &str, access: Access) {
        self.entries.push(Entry {
            name: name.into(),
            hash: blake3::hash(token.as_bytes()),
            access,
        });
    }

    /// Reads a tokens file.
    pub fn load(path: impl AsRef<Path>) -> Result<Tokens, SyncError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| SyncError::Tokens {
            origin: path.display().to_string(),
            message: e.to_string(),
        })?;
        Tokens::from_toml_str(&text, &path.display().to_string())
    }

    /// Parses a tokens file's text; `origin` names it in errors.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Tokens, SyncError> {
        let error = |message: String| SyncError::Tokens {
            origin: origin.to_string(),
            message,
        };
        let file: File = toml::from_str(text).map_err(|e| error(e.to_string()))?;
        let mut tokens = Tokens::new();
        for entry in file.token {
            if entry.token.len() < 8 {
                return Err(error(format!(
                    "token of {:?} is shorter than 8 characters",
                    entry.name
                )));
            }
            if tokens.entries.iter().any(|e| e.name == entry.name) {
                return Err(error(format!("client name {:?} appears twice", entry.name)));
            }
            let access = match entry.access {
                FileAccess::ReadWrite => Access::ReadWrite,
                FileAccess::ReadOnly => Access::ReadOnly,
            };
            tokens.add(entry.name, &entry.token, access);
        }
        Ok(tokens)
    }

    /// The client a token belongs to and its access.
    pub fn check(&self, token: Option<&str>) -> Option<(&str, Access)> {
        let hash = blake3::hash(token?.as_bytes());
        self.entries
            .iter()
            .find(|e| e.hash == hash)
            .map(|e| (e.name.as_str(), e.access))
    }

    /// The number of tokens.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// A session authorizer checking against these tokens.
    pub fn authorizer(self: &Arc<Self>) -> Authorize {
        let tokens = Arc::clone(self);
        Arc::new(move |token| tokens.check(token).map(|(_, access)| access))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_file_parses_and_checks() -> Result<(), SyncError> {
        let tokens = Tokens::from_toml_str(
            r#"
            [[token]]
            name = "till-1"
            token = "secret-one"
            access = "read-write"
            [[token]]
            name = "dashboard"
            token = "secret-two"
            access = "read-only"
            "#,
            "tokens.toml",
        )?;
        assert_eq!(
            tokens.check(Some("secret-one")),
            Some(("till-1", Access::ReadWrite))
        );
        assert_eq!(
            tokens.check(Some("secret-two")),
            Some(("dashboard", Access::ReadOnly))
        );
        assert_eq!(tokens.check(Some("secret-thre")), None);
        assert_eq!(tokens.check(None), None);
        Ok(())
    }

    #[test]
    fn bad_tokens_files_name_the_problem() {
        for (text, needle) in [
            (
                "[[token]]\nname = \"a\"\ntoken = \"short\"\naccess = \"read-write\"",
                "shorter",
            ),
            (
                "[[token]]\nname = \"a\"\ntoken = \"longenough\"\naccess = \"admin\"",
                "admin",
            ),
            (
                "[[token]]\nname = \"a\"\ntoken = \"longenough\"\naccess = \"read-only\"\n\
                 [[token]]\nname = \"a\"\ntoken = \"longenough2\"\naccess = \"read-only\"",
                "twice",
            ),
        ] {
            let err = Tokens::from_toml_str(text, "t.toml").map(|_| ());
            let message = format!("{err:?}");
            assert!(
                message.contains(needle) && message.contains("t.toml"),
                "{message}"
            );
        }
    }
}
