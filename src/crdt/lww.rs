//! Last-writer-wins register.
//!
//! The write with the greatest `(hlc, site)` wins. A replica's HLC never
//! issues the same timestamp twice, so `(hlc, site)` identifies a write; the
//! value is compared only to stay deterministic if hostile input reuses one.

use crate::clock::{Hlc, SiteId};
use crate::value::Value;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;

/// A register write: its timestamp, its writer and the value written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Lww {
    /// When it was written.
    pub hlc: Hlc,
    /// Who wrote it.
    pub site: SiteId,
    /// What was written.
    pub value: Value,
}

impl Lww {
    /// The order that decides the winner.
    pub fn order(&self, other: &Lww) -> Ordering {
        (self.hlc, self.site)
            .cmp(&(other.hlc, other.site))
            .then_with(|| self.value.total_cmp(&other.value))
    }

    /// The winner of the two writes.
    pub fn merge(&self, other: &Lww) -> Lww {
        if self.order(other) == Ordering::Less {
            other.clone()
        } else {
            self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crdt::strategies::{lww, site};
    use proptest::prelude::*;

    #[test]
    fn later_timestamp_wins_then_greater_site() {
        let old = Lww {
            hlc: Hlc(5),
            site: site(9),
            value: "old".into(),
        };
        let new = Lww {
            hlc: Hlc(6),
            site: site(0),
            value: "new".into(),
        };
        assert_eq!(old.merge(&new).value, Value::from("new"));
        let tie = Lww {
            hlc: Hlc(6),
            site: site(1),
            value: "tie".into(),
        };
        assert_eq!(new.merge(&tie).value, Value::from("tie"));
        assert_eq!(tie.merge(&new).value, Value::from("tie"));
    }

    proptest! {
        #[test]
        fn merge_laws(a in lww(), b in lww(), c in lww()) {
            prop_assert_eq!(a.merge(&b), b.merge(&a));
            prop_assert_eq!(a.merge(&b).merge(&c), a.merge(&b.merge(&c)));
            prop_assert_eq!(a.merge(&a), a.clone());
        }
    }
}
