//! The column kinds: which CRDT each column of a schema is.

use serde::{Deserialize, Serialize};
use std::fmt;

/// How a column merges concurrent writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Kind {
    /// Last writer wins (the default).
    Lww,
    /// Grow-only counter: increments only.
    GCounter,
    /// Counter with increments and decrements.
    PnCounter,
    /// Observed-remove set of strings, add wins.
    OrSet,
}

impl Kind {
    /// The name used in schema files.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Lww => "lww",
            Kind::GCounter => "g_counter",
            Kind::PnCounter => "pn_counter",
            Kind::OrSet => "or_set",
        }
    }

    /// Parses a schema-file name.
    pub fn from_name(name: &str) -> Option<Kind> {
        [Kind::Lww, Kind::GCounter, Kind::PnCounter, Kind::OrSet]
            .into_iter()
            .find(|k| k.name() == name)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
