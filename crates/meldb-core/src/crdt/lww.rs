//! Last-writer-wins register.
//!
//! The write with the greatest `(hlc, site)` wins. A replica's HLC never
//! issues the same timestamp twice, so `(hlc, site)` identifies a write; the
//! value is compared only to stay deterministic if hostile input reuses one.
//!
//! Columns with a policy pick differently ([`RegisterRule`]): a first-write
//! column keeps the earliest non-NULL write, a forward-only state column the
//! write of the latest state. Each rule is a total order on writes, so each
//! merge is still a join.

use super::column::{ColumnKind, Op, OpError, Stamp, StateSink, StateSource};
use super::{Kind, RowClock, StateOrder};
use crate::clock::{Hlc, SiteId};
use crate::value::{SqlType, Value};
use std::cmp::{Ordering, Reverse};
use std::sync::Arc;

/// How a register column picks between two writes.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub enum RegisterRule {
    /// The latest write wins (plain last-writer-wins).
    #[default]
    Latest,
    /// The earliest non-NULL write wins (first-write-wins and immutable
    /// columns): a NULL never beats a value.
    Earliest,
    /// The write of the later state wins; equal ranks fall back to latest.
    Ranked(Arc<StateOrder>),
}

/// A register write: its timestamp, its writer and the value written.
#[derive(Clone, Debug, PartialEq)]
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
        self.merge_by(other, &RegisterRule::Latest)
    }

    /// The winner of the two writes under `rule`.
    pub fn merge_by(&self, other: &Lww, rule: &RegisterRule) -> Lww {
        if self.order_by(other, rule) == Ordering::Less {
            other.clone()
        } else {
            self.clone()
        }
    }

    /// The total order `rule` picks the greater write by.
    pub fn order_by(&self, other: &Lww, rule: &RegisterRule) -> Ordering {
        match rule {
            RegisterRule::Latest => self.order(other),
            RegisterRule::Earliest => {
                let key = |w: &Lww| (w.value != Value::Null, Reverse((w.hlc, w.site)));
                key(self)
                    .cmp(&key(other))
                    .then_with(|| self.value.total_cmp(&other.value))
            }
            RegisterRule::Ranked(states) => states
                .rank(&self.value)
                .cmp(&states.rank(&other.value))
                .then_with(|| self.order(other)),
        }
    }
}

impl ColumnKind for Lww {
    const KIND: Kind = Kind::Lww;
    const NAME: &'static str = "lww";
    const SQL_TYPE: Option<SqlType> = None;

    fn unset(default: Option<&Value>) -> Value {
        default.cloned().unwrap_or(Value::Null)
    }

    fn join(&self, _: &RowClock, other: &Lww, _: &RowClock, rule: &RegisterRule) -> Lww {
        self.merge_by(other, rule)
    }

    fn is_canonical(&self, _: &RowClock) -> bool {
        true
    }

    fn read(&self) -> Value {
        self.value.clone()
    }

    fn check(op: Op) -> Result<Op, OpError> {
        match op {
            Op::Assign { .. } => Ok(op),
            other => Err(other.unsupported()),
        }
    }

    fn apply(state: &mut Option<Lww>, op: &Op, at: Stamp) -> Result<(), OpError> {
        let Op::Assign { value, .. } = op else {
            return Err(op.unsupported());
        };
        *state = Some(Lww {
            hlc: at.hlc,
            site: at.dot.site,
            value: value.clone(),
        });
        Ok(())
    }

    fn rebuild(target: &Value) -> Option<Op> {
        Some(Op::Assign {
            value: target.clone(),
            initial: true,
        })
    }

    fn reach(current: &Value, target: &Value, rule: &RegisterRule) -> Option<Op> {
        let wins = match rule {
            RegisterRule::Latest => true,
            RegisterRule::Earliest => *current == Value::Null && *target != Value::Null,
            RegisterRule::Ranked(order) => order.rank(target) >= order.rank(current),
        };
        wins.then(|| Op::Assign {
            value: target.clone(),
            initial: false,
        })
    }

    /// The schema's declared type is checked by the store.
    fn check_target(_: &str, _: &Value) -> Result<(), String> {
        Ok(())
    }

    fn encode(&self, out: &mut impl StateSink) {
        out.stamp(self.hlc);
        out.site(self.site);
        out.column_value(&self.value);
    }

    fn decode<S: StateSource>(input: &mut S) -> Result<Lww, S::Error> {
        Ok(Lww {
            hlc: input.stamp()?,
            site: input.site()?,
            value: input.column_value()?,
        })
    }

    fn size_hint(&self) -> usize {
        12 + self.value.size_hint()
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

    fn rules() -> Vec<RegisterRule> {
        let states = StateOrder::new(
            vec![vec!["1".into(), "2".into(), "3".into()]],
            vec!["3".into()],
        )
        .expect("valid order");
        vec![
            RegisterRule::Latest,
            RegisterRule::Earliest,
            RegisterRule::Ranked(Arc::new(states)),
        ]
    }

    #[test]
    fn earliest_keeps_the_first_value_and_never_prefers_null() {
        let first = Lww {
            hlc: Hlc(5),
            site: site(2),
            value: "alice".into(),
        };
        let second = Lww {
            hlc: Hlc(7),
            site: site(1),
            value: "bob".into(),
        };
        let null = Lww {
            hlc: Hlc(1),
            site: site(1),
            value: Value::Null,
        };
        let rule = RegisterRule::Earliest;
        assert_eq!(second.merge_by(&first, &rule), first);
        assert_eq!(null.merge_by(&second, &rule), second);
    }

    #[test]
    fn ranked_keeps_the_later_state_whatever_the_timestamps() {
        let rule = rules().pop().expect("three rules");
        let shipped = Lww {
            hlc: Hlc(1),
            site: site(1),
            value: "3".into(),
        };
        let pending = Lww {
            hlc: Hlc(9),
            site: site(2),
            value: "1".into(),
        };
        assert_eq!(pending.merge_by(&shipped, &rule), shipped);
    }

    proptest! {
        #[test]
        fn merge_laws(a in lww(), b in lww(), c in lww()) {
            for rule in rules() {
                prop_assert_eq!(a.merge_by(&b, &rule), b.merge_by(&a, &rule));
                prop_assert_eq!(
                    a.merge_by(&b, &rule).merge_by(&c, &rule),
                    a.merge_by(&b.merge_by(&c, &rule), &rule)
                );
                prop_assert_eq!(a.merge_by(&a, &rule), a.clone());
            }
        }
    }
}
