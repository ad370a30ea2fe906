//! [`Outcome`]: how a conflict ended, as the engine decides it and the
//! conflict log names it. The names are stored: they never change.

use std::fmt;

/// How a conflict ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Outcome {
    /// The CRDT merge stood; no resolver decided.
    AutoMerged,
    /// A resolver accepted the merged row.
    Accepted,
    /// A resolver replaced the merged row with one it built.
    Merged,
    /// The local row was kept.
    KeptLocal,
    /// The incoming change was refused; its writer is told why.
    Rejected,
    /// Waiting for a person (the store's `resolve_deferred`).
    Deferred,
}

impl Outcome {
    /// Every outcome, in order.
    pub const ALL: [Outcome; 6] = [
        Outcome::AutoMerged,
        Outcome::Accepted,
        Outcome::Merged,
        Outcome::KeptLocal,
        Outcome::Rejected,
        Outcome::Deferred,
    ];

    /// The name the log stores.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::AutoMerged => "auto_merged",
            Outcome::Accepted => "accepted",
            Outcome::Merged => "merged",
            Outcome::KeptLocal => "kept_local",
            Outcome::Rejected => "rejected",
            Outcome::Deferred => "deferred",
        }
    }

    /// Parses [`Outcome::name`].
    pub fn from_name(name: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.name() == name)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
