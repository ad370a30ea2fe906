//! Access tokens for the relay: who may connect, and whether they may write.
//!
//! A tokens file is TOML, one `[[token]]` per client:
//!
//! ```toml
//! [[token]]
//! name = "till-1"            # for the logs
//! token = "s3cret-till-1"
//! access = "read-write"      # or "read-only"
//! user = "alice"             # optional: the writer resolvers see (default: name)
//! roles = ["clerk"]          # optional: the writer's roles
//! ```
//!
//! The user and roles become the [`Writer`] of every change that arrives
//! through the token, so a client cannot claim roles it was not given.
//!
//! Tokens are compared by their blake3 hashes (constant-time equality), and
//! only the hashes are kept in memory.

use super::error::SyncError;
use super::provider::Namespace;
use super::session::{Access, Authorize, Grant};
use crate::resolve::Writer;
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
    grant: Grant,
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
    user: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
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

    /// Adds a client's token; its changes are written by `grant.writer`.
    pub fn add(&mut self, name: impl Into<String>, token: &str, grant: Grant) {
        self.entries.push(Entry {
            name: name.into(),
            hash: blake3::hash(token.as_bytes()),
            grant,
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
            let mut writer = Writer::user(entry.user.as_deref().unwrap_or(&entry.name));
            writer.roles = entry.roles;
            tokens.add(
                entry.name,
                &entry.token,
                Grant {
                    access,
                    writer,
                    namespace: Namespace::default(),
                },
            );
        }
        Ok(tokens)
    }

    /// The client a token belongs to and what it grants.
    pub fn check(&self, token: Option<&str>) -> Option<(&str, &Grant)> {
        let hash = blake3::hash(token?.as_bytes());
        self.entries
            .iter()
            .find(|e| e.hash == hash)
            .map(|e| (e.name.as_str(), &e.grant))
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
        Arc::new(move |token| tokens.check(token).map(|(_, grant)| grant.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_file_parses_and_checks() -> Result<(), Box<dyn std::error::Error>> {
        let tokens = Tokens::from_toml_str(
            r#"
            [[token]]
            name = "till-1"
            token = "secret-one"
            access = "read-write"
            user = "alice"
            roles = ["clerk"]
            [[token]]
            name = "dashboard"
            token = "secret-two"
            access = "read-only"
            "#,
            "tokens.toml",
        )?;
        let (name, grant) = tokens.check(Some("secret-one")).ok_or("no till-1")?;
        assert_eq!((name, grant.access), ("till-1", Access::ReadWrite));
        assert_eq!(grant.writer, Writer::user("alice").with_role("clerk"));
        let (name, grant) = tokens.check(Some("secret-two")).ok_or("no dashboard")?;
        assert_eq!((name, grant.access), ("dashboard", Access::ReadOnly));
        assert_eq!(grant.writer, Writer::user("dashboard"));
        assert!(tokens.check(Some("secret-thre")).is_none());
        assert!(tokens.check(None).is_none());
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
