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
//! max_sites = 16             # optional: site ids it binds on first use (default 16)
//! sites = ["4f1c…"]          # optional: site ids it writes as without binding them
//! forward = false            # optional: may send other replicas' new writes
//! namespace = "team-7"       # optional: the namespace it syncs (default "default")
//! # or, for a token that may sync several (the client names one in its
//! # hello; one that names none gets the first):
//! # namespaces = ["team-7", "team-8"]
//! ```
//!
//! The user and roles become the [`Writer`] of every change that arrives
//! through the token, so a client cannot claim roles it was not given.
//! Every token has an [`Identity`] named by its `name`: the site ids it may
//! write as (see [`super::identity`]); renaming a token therefore gives it
//! new bindings and new mutation state.
//!
//! A file is refused as a whole, naming the entries, if a name appears
//! twice, if two entries share a secret (the first would win, silently
//! giving the second client the first one's access and sites), or if a
//! site is listed for two tokens.
//!
//! Tokens are compared by their blake3 hashes (constant-time equality), and
//! only the hashes are kept in memory. A file may hold the hash instead of
//! the secret (`token_hash = "blake3:<hex>"`, what `meldb token add`
//! writes), so the file no longer gives the secrets away; such secrets
//! must be random and long, as that command makes them.

use super::error::SyncError;
use super::identity::{Identity, DEFAULT_MAX_SITES};
use super::provider::Namespace;
use super::session::{Access, Authorize, Grant};
use crate::clock::SiteId;
use crate::resolve::Writer;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// The tokens a relay accepts.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    entries: Vec<Entry>,
    /// Every listed site and the token it is listed for.
    listed: Arc<BTreeMap<SiteId, String>>,
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
    /// The secret in clear (at least 8 characters)...
    token: Option<String>,
    /// ...or its hash, `blake3:` and 64 hex digits (`meldb token add`
    /// writes these).
    token_hash: Option<String>,
    access: FileAccess,
    user: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
    max_sites: Option<usize>,
    #[serde(default)]
    sites: Vec<SiteId>,
    #[serde(default)]
    forward: bool,
    namespace: Option<String>,
    #[serde(default)]
    namespaces: Vec<String>,
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
    /// A grant without an identity gets [`Identity::new`]`(name)`: the
    /// token writes only as the sites it binds. A site already listed for
    /// another token stays that token's.
    pub fn add(&mut self, name: impl Into<String>, token: &str, grant: Grant) {
        self.add_hashed(name, blake3::hash(token.as_bytes()), grant);
    }

    /// Adds a client's token by the hash of its secret (what a tokens file
    /// with `token_hash` holds), as [`Tokens::add`] does.
    pub(crate) fn add_hashed(
        &mut self,
        name: impl Into<String>,
        hash: blake3::Hash,
        mut grant: Grant,
    ) {
        let name = name.into();
        let identity = grant
            .identity
            .get_or_insert_with(|| Identity::new(name.clone()));
        let listed = Arc::make_mut(&mut self.listed);
        for site in identity.listed_sites() {
            listed
                .entry(*site)
                .or_insert_with(|| identity.token().to_owned());
        }
        self.entries.push(Entry { name, hash, grant });
    }

    /// What a tokens file's `token_hash` holds for `secret`: `blake3:` and
    /// its hash in hex. The hash stands in for the secret, so the secret
    /// must be random and long (`meldb token add` makes 256-bit ones): an
    /// unsalted hash of a guessable secret could be guessed back.
    pub fn hash_line(secret: &str) -> String {
        format!("blake3:{}", blake3::hash(secret.as_bytes()).to_hex())
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
            let hash = match (&entry.token, &entry.token_hash) {
                (Some(token), None) if token.len() < 8 => {
                    return Err(error(format!(
                        "token of {:?} is shorter than 8 characters",
                        entry.name
                    )));
                }
                (Some(token), None) => blake3::hash(token.as_bytes()),
                (None, Some(hashed)) => parse_hash(hashed).ok_or_else(|| {
                    error(format!(
                        "token_hash of {:?} is not \"blake3:\" and 64 hex digits",
                        entry.name
                    ))
                })?,
                (Some(_), Some(_)) => {
                    return Err(error(format!(
                        "token {:?} gives both token and token_hash: keep one (the hash)",
                        entry.name
                    )));
                }
                (None, None) => {
                    return Err(error(format!(
                        "token {:?} has neither token nor token_hash",
                        entry.name
                    )));
                }
            };
            if entry.name.is_empty() {
                return Err(error("a token has an empty name".into()));
            }
            if tokens.entries.iter().any(|e| e.name == entry.name) {
                return Err(error(format!("client name {:?} appears twice", entry.name)));
            }
            if let Some(first) = tokens.entries.iter().find(|e| e.hash == hash) {
                return Err(error(format!(
                    "the same secret is given to {:?} ({}) and {:?} ({}): each client needs \
                     its own (the first would win, silently)",
                    first.name,
                    access_word(first.grant.access),
                    entry.name,
                    entry.access.word(),
                )));
            }
            for site in &entry.sites {
                if let Some(other) = tokens.listed.get(site) {
                    return Err(error(format!(
                        "site {site} is listed for both {other:?} and {:?}",
                        entry.name
                    )));
                }
            }
            let names = match (&entry.namespace, entry.namespaces.as_slice()) {
                (None, []) => vec![Namespace::default().as_str().to_owned()],
                (Some(one), []) => vec![one.clone()],
                (None, [_, ..]) => entry.namespaces.clone(),
                (Some(_), [_, ..]) => {
                    return Err(error(format!(
                        "token {:?} gives both namespace and namespaces: keep one",
                        entry.name
                    )))
                }
            };
            let mut namespaces: Vec<Namespace> = Vec::with_capacity(names.len());
            for name in &names {
                if !super::namespace::is_plain_name(name) {
                    return Err(error(format!(
                        "token {:?}: namespace {name:?} is not a plain name (1 to 64 lowercase letters, \
                         digits, '_' and '-', starting with a letter or digit)",
                        entry.name
                    )));
                }
                let namespace = Namespace::new(name);
                if namespaces.contains(&namespace) {
                    return Err(error(format!(
                        "token {:?}: namespace {name:?} is listed twice",
                        entry.name
                    )));
                }
                namespaces.push(namespace);
            }
            let mut namespaces = namespaces.into_iter();
            let namespace = namespaces.next().unwrap_or_default();
            let other_namespaces = namespaces.collect();
            let access = match entry.access {
                FileAccess::ReadWrite => Access::ReadWrite,
                FileAccess::ReadOnly => Access::ReadOnly,
            };
            if entry.forward && access == Access::ReadOnly {
                return Err(error(format!(
                    "token {:?} is read-only, so `forward` means nothing: remove it or make \
                     the token read-write",
                    entry.name
                )));
            }
            let mut writer = Writer::user(entry.user.as_deref().unwrap_or(&entry.name));
            writer.roles = entry.roles;
            let identity = Identity::new(entry.name.clone())
                .sites(entry.sites)
                .max_sites(entry.max_sites.unwrap_or(DEFAULT_MAX_SITES))
                .forward(entry.forward);
            tokens.add_hashed(
                entry.name,
                hash,
                Grant {
                    access,
                    writer,
                    namespace,
                    other_namespaces,
                    identity: Some(identity),
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

    /// The namespaces the tokens grant, each once.
    pub fn namespaces(&self) -> std::collections::BTreeSet<Namespace> {
        self.entries
            .iter()
            .flat_map(|e| std::iter::once(&e.grant.namespace).chain(&e.grant.other_namespaces))
            .cloned()
            .collect()
    }

    /// The number of tokens.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// A session authorizer checking against these tokens. Each grant's
    /// identity knows every token's listed sites, so no token binds a site
    /// listed for another.
    pub fn authorizer(self: &Arc<Self>) -> Authorize {
        let tokens = Arc::clone(self);
        Arc::new(move |token| {
            tokens.check(token).map(|(_, grant)| {
                let mut grant = grant.clone();
                grant.identity = grant
                    .identity
                    .map(|i| i.with_listed(Arc::clone(&tokens.listed)));
                grant
            })
        })
    }
}

fn access_word(access: Access) -> &'static str {
    match access {
        Access::ReadWrite => "read-write",
        Access::ReadOnly => "read-only",
    }
}

impl FileAccess {
    fn word(&self) -> &'static str {
        match self {
            FileAccess::ReadWrite => "read-write",
            FileAccess::ReadOnly => "read-only",
        }
    }
}

fn parse_hash(text: &str) -> Option<blake3::Hash> {
    let hex = text.strip_prefix("blake3:")?;
    (hex.len() == 64).then_some(())?;
    blake3::Hash::from_hex(hex).ok()
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
    fn a_hashed_token_checks_like_the_secret_and_only_one_form_is_given(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let secret = "a-long-random-secret-0123456789";
        let text = format!(
            "[[token]]\nname = \"a\"\ntoken_hash = \"{}\"\naccess = \"read-write\"",
            Tokens::hash_line(secret)
        );
        let tokens = Tokens::from_toml_str(&text, "t.toml")?;
        assert_eq!(tokens.check(Some(secret)).map(|(n, _)| n), Some("a"));
        assert!(tokens
            .check(Some("a-long-random-secret-012345678"))
            .is_none());
        let entry =
            |fields: &str| format!("[[token]]\nname = \"a\"\naccess = \"read-write\"\n{fields}");
        let hash = Tokens::hash_line(secret);
        for (fields, needle) in [
            (
                format!("token = \"{secret}\"\ntoken_hash = \"{hash}\""),
                "both",
            ),
            (String::new(), "neither"),
            ("token_hash = \"blake3:abc\"".to_string(), "64 hex"),
            (format!("token_hash = \"{}\"", &hash[7..]), "64 hex"),
            (
                format!("token_hash = \"blake3:{}\"", "g".repeat(64)),
                "64 hex",
            ),
        ] {
            let err = Tokens::from_toml_str(&entry(&fields), "t.toml").map(|_| ());
            let message = format!("{err:?}");
            assert!(message.contains(needle), "{fields}: {message}");
        }
        // The same secret, once hashed and once in clear, is refused too.
        let both = format!(
            "{}\n[[token]]\nname = \"b\"\ntoken = \"{secret}\"\naccess = \"read-only\"",
            text
        );
        let err = Tokens::from_toml_str(&both, "t.toml").map(|_| ());
        assert!(format!("{err:?}").contains("same secret"), "{err:?}");
        Ok(())
    }

    #[test]
    fn a_token_names_its_namespace_and_only_a_plain_one() -> Result<(), Box<dyn std::error::Error>>
    {
        let tokens = Tokens::from_toml_str(
            "[[token]]\nname = \"a\"\ntoken = \"secret-one\"\naccess = \"read-write\"\n\
             namespace = \"team-7\"\n\
             [[token]]\nname = \"b\"\ntoken = \"secret-two\"\naccess = \"read-only\"",
            "t.toml",
        )?;
        let (_, grant) = tokens.check(Some("secret-one")).ok_or("no a")?;
        assert_eq!(grant.namespace, Namespace::new("team-7"));
        let (_, grant) = tokens.check(Some("secret-two")).ok_or("no b")?;
        assert_eq!(grant.namespace, Namespace::default());
        for bad in ["../up", "", ".x", "a/b"] {
            let text = format!(
                "[[token]]\nname = \"a\"\ntoken = \"secret-one\"\naccess = \"read-write\"\n\
                 namespace = {bad:?}"
            );
            let err = Tokens::from_toml_str(&text, "t.toml").map(|_| ());
            let message = format!("{err:?}");
            assert!(
                message.contains("plain name") && message.contains("t.toml"),
                "{message}"
            );
        }
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
            (
                "[[token]]\nname = \"a\"\ntoken = \"longenough\"\naccess = \"read-only\"\n\
                 [[token]]\nname = \"b\"\ntoken = \"longenough\"\naccess = \"read-write\"",
                "the same secret is given to \"a\" (read-only) and \"b\" (read-write)",
            ),
            (
                "[[token]]\nname = \"a\"\ntoken = \"longenough\"\naccess = \"read-write\"\n\
                 sites = [\"01010101-0101-0101-0101-010101010101\"]\n\
                 [[token]]\nname = \"b\"\ntoken = \"longenough2\"\naccess = \"read-write\"\n\
                 sites = [\"01010101-0101-0101-0101-010101010101\"]",
                "listed for both \"a\" and \"b\"",
            ),
            (
                "[[token]]\nname = \"a\"\ntoken = \"longenough\"\naccess = \"read-only\"\n\
                 forward = true",
                "read-only",
            ),
            (
                "[[token]]\nname = \"a\"\ntoken = \"longenough\"\naccess = \"read-write\"\n\
                 sites = [\"not-a-uuid\"]",
                "sites",
            ),
        ] {
            let message = match Tokens::from_toml_str(text, "t.toml") {
                Ok(_) => "accepted".to_string(),
                Err(e) => e.to_string(),
            };
            assert!(
                message.contains(needle) && message.contains("t.toml"),
                "{message}"
            );
        }
    }

    #[test]
    fn every_token_has_an_identity_and_listed_sites_are_known_to_all(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let tokens = Arc::new(Tokens::from_toml_str(
            r#"
            [[token]]
            name = "till-1"
            token = "secret-one"
            access = "read-write"
            max_sites = 2
            sites = ["01010101-0101-0101-0101-010101010101"]
            [[token]]
            name = "relay-b"
            token = "secret-two"
            access = "read-write"
            forward = true
            "#,
            "tokens.toml",
        )?);
        let authorize = tokens.authorizer();
        let till = authorize(Some("secret-one")).ok_or("till-1")?;
        let identity = till.identity.ok_or("an identity")?;
        assert_eq!(identity.token(), "till-1");
        assert_eq!(identity.listed_sites(), [SiteId::from_bytes([1; 16])]);
        assert!(!identity.forwards());
        let relay = authorize(Some("secret-two")).ok_or("relay-b")?;
        let identity = relay.identity.ok_or("an identity")?;
        assert!(identity.forwards());
        // relay-b's identity knows that site 1 is till-1's.
        assert_eq!(
            identity
                .listed
                .get(&SiteId::from_bytes([1; 16]))
                .map(String::as_str),
            Some("till-1")
        );
        // A token added in code gets an identity named after it.
        let mut added = Tokens::new();
        added.add("app", "secret-app", Grant::read_write());
        let (_, grant) = added.check(Some("secret-app")).ok_or("app")?;
        assert_eq!(grant.identity.as_ref().map(Identity::token), Some("app"));
        Ok(())
    }
}
