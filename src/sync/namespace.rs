//! The name a relay keeps one replica's data under: [`Namespace`]. A
//! plain value, below both the provider that serves namespaces and the
//! errors that name one.

use std::fmt;

/// The name of a set of data a relay keeps apart from the others: one
/// replica per namespace.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Namespace(String);

impl Namespace {
    /// The name of the namespace tokens grant when they name none.
    pub const DEFAULT_NAME: &'static str = "default";

    /// The namespace called `name`.
    pub fn new(name: impl Into<String>) -> Namespace {
        Namespace(name.into())
    }

    /// Its name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whether `name` may name a namespace kept on disk: 1 to 64 ASCII
/// letters, digits, `_` and `-`, starting with a letter or a digit, so no
/// name is a path, a hidden file or a command-line option.
pub(crate) fn is_plain_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (1..=64).contains(&bytes.len())
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Default for Namespace {
    /// The default namespace, which every relay serves.
    fn default() -> Namespace {
        Namespace::new(Namespace::DEFAULT_NAME)
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
