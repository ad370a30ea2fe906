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

/// Whether `name` may name a namespace kept on disk: 1 to 64 lowercase
/// ASCII letters, digits, `_` and `-`, starting with a letter or a digit,
/// so no name is a path, a hidden file or a command-line option, and no
/// two names are one file on a case-insensitive file system (`Team` and
/// `team` on macOS or Windows).
pub(crate) fn is_plain_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let plain = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    (1..=64).contains(&bytes.len())
        && plain(bytes[0])
        && bytes.iter().all(|&b| plain(b) || b == b'_' || b == b'-')
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

#[cfg(test)]
mod tests {
    use super::is_plain_name;

    #[test]
    fn plain_names_are_lowercase_and_never_paths() {
        for good in ["default", "team-7", "a", "0_x", &"z".repeat(64)] {
            assert!(is_plain_name(good), "{good}");
        }
        for bad in [
            "",
            "Team",
            "TEAM",
            "-x",
            "_x",
            ".x",
            "a/b",
            "..",
            "a.db",
            "a b",
            "é",
            &"z".repeat(65),
        ] {
            assert!(!is_plain_name(bad), "{bad:?}");
        }
    }
}
