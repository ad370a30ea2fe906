//! Grow-only and increment/decrement counters.
//!
//! Each site owns its own running total (for a PN counter, one for
//! increments and one for decrements) and only ever raises it, so the merge
//! is the per-site maximum and every increment from every site is counted
//! exactly once, whatever the delivery order. The value is the sum.

use super::column::{capped, ColumnKind, Op, OpError, Stamp, StateSink, StateSource};
use super::{Kind, RegisterRule, RowClock};
use crate::clock::SiteId;
use crate::value::{SqlType, Value};

/// Per-site totals, sorted by site.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GCounter(Vec<(SiteId, u64)>);

/// Per-site increment and decrement totals, sorted by site.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PnCounter(Vec<(SiteId, u64, u64)>);

/// Adding to a counter would overflow its 64-bit per-site total.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CounterOverflow;

fn slot<T>(entries: &mut Vec<(SiteId, T)>, site: SiteId, empty: T) -> &mut T {
    let i = match entries.binary_search_by(|(s, _)| s.cmp(&site)) {
        Ok(i) => i,
        Err(i) => {
            entries.insert(i, (site, empty));
            i
        }
    };
    &mut entries[i].1
}

impl GCounter {
    /// Adds `amount` to `site`'s total.
    pub fn increment(&mut self, site: SiteId, amount: u64) -> Result<(), CounterOverflow> {
        let total = slot(&mut self.0, site, 0);
        *total = total.checked_add(amount).ok_or(CounterOverflow)?;
        Ok(())
    }

    /// The sum of all sites' totals.
    pub fn value(&self) -> i128 {
        self.0.iter().map(|&(_, n)| i128::from(n)).sum()
    }

    /// The per-site totals.
    pub fn entries(&self) -> &[(SiteId, u64)] {
        &self.0
    }

    /// Builds a counter from per-site totals, keeping the max per site.
    pub fn from_entries(entries: impl IntoIterator<Item = (SiteId, u64)>) -> Self {
        let mut out = GCounter::default();
        for (site, n) in entries {
            let total = slot(&mut out.0, site, 0);
            *total = (*total).max(n);
        }
        out
    }

    /// Whether entries are sorted by site with no repeats.
    pub fn is_canonical(&self) -> bool {
        self.0.windows(2).all(|w| w[0].0 < w[1].0)
    }

    /// Per-site maximum.
    pub fn merge(&self, other: &GCounter) -> GCounter {
        GCounter::from_entries(self.0.iter().chain(&other.0).copied())
    }
}

impl PnCounter {
    /// Adds `delta` (negative to decrement) on behalf of `site`.
    pub fn add(&mut self, site: SiteId, delta: i64) -> Result<(), CounterOverflow> {
        let (p, n) = slot_pn(&mut self.0, site);
        let amount = delta.unsigned_abs();
        let total = if delta >= 0 { p } else { n };
        *total = total.checked_add(amount).ok_or(CounterOverflow)?;
        Ok(())
    }

    /// Σ increments − Σ decrements.
    pub fn value(&self) -> i128 {
        self.0
            .iter()
            .map(|&(_, p, n)| i128::from(p) - i128::from(n))
            .sum()
    }

    /// The per-site `(increments, decrements)` totals.
    pub fn entries(&self) -> &[(SiteId, u64, u64)] {
        &self.0
    }

    /// Builds a counter from per-site totals, keeping the max of each.
    pub fn from_entries(entries: impl IntoIterator<Item = (SiteId, u64, u64)>) -> Self {
        let mut out = PnCounter::default();
        for (site, p, n) in entries {
            let (total_p, total_n) = slot_pn(&mut out.0, site);
            *total_p = (*total_p).max(p);
            *total_n = (*total_n).max(n);
        }
        out
    }

    /// Whether entries are sorted by site with no repeats.
    pub fn is_canonical(&self) -> bool {
        self.0.windows(2).all(|w| w[0].0 < w[1].0)
    }

    /// Per-site maximum of each total.
    pub fn merge(&self, other: &PnCounter) -> PnCounter {
        PnCounter::from_entries(self.0.iter().chain(&other.0).copied())
    }
}

fn slot_pn(entries: &mut Vec<(SiteId, u64, u64)>, site: SiteId) -> (&mut u64, &mut u64) {
    let i = match entries.binary_search_by(|(s, _, _)| s.cmp(&site)) {
        Ok(i) => i,
        Err(i) => {
            entries.insert(i, (site, 0, 0));
            i
        }
    };
    let (_, p, n) = &mut entries[i];
    (p, n)
}

/// What both counters take and do, `grow_only` telling them apart.
mod rules {
    use super::*;

    pub fn read(total: i128) -> Value {
        Value::Integer(total.clamp(i64::MIN.into(), i64::MAX.into()) as i64)
    }

    pub fn check(op: Op, grow_only: bool) -> Result<Op, OpError> {
        let amount = match op {
            Op::Increment(amount) => amount,
            Op::Assign {
                initial: true,
                value,
            } => match value {
                Value::Integer(amount) => amount,
                other => {
                    return Err(OpError::TypeMismatch {
                        expected: SqlType::Integer,
                        found: other.type_name(),
                    })
                }
            },
            other => return Err(other.unsupported()),
        };
        if grow_only && amount < 0 {
            return Err(OpError::Negative { amount });
        }
        Ok(Op::Increment(amount))
    }

    pub fn amount(op: &Op) -> Result<i64, OpError> {
        match op {
            Op::Increment(amount) => Ok(*amount),
            other => Err(other.unsupported()),
        }
    }

    /// The sum users read must stay an SQL integer.
    pub fn fits(total: i128) -> Result<(), OpError> {
        i64::try_from(total)
            .map(drop)
            .map_err(|_| OpError::Overflow)
    }

    pub fn rebuild(target: &Value) -> Option<Op> {
        match target {
            Value::Integer(0) => None,
            Value::Integer(n) => Some(Op::Increment(*n)),
            _ => None,
        }
    }

    pub fn reach(current: &Value, target: &Value, grow_only: bool) -> Option<Op> {
        let (Value::Integer(to), Value::Integer(from)) = (target, current) else {
            return None;
        };
        let diff = to.checked_sub(*from)?;
        (diff >= 0 || !grow_only).then_some(Op::Increment(diff))
    }

    pub fn check_target(column: &str, value: &Value, grow_only: bool) -> Result<(), String> {
        match value {
            Value::Integer(n) if *n >= 0 || !grow_only => Ok(()),
            other => Err(format!(
                "counter {column:?} needs {}, got {other}",
                if grow_only {
                    "a non-negative integer"
                } else {
                    "an integer"
                }
            )),
        }
    }
}

impl ColumnKind for GCounter {
    const KIND: Kind = Kind::GCounter;
    const NAME: &'static str = "g_counter";
    const SQL_TYPE: Option<SqlType> = Some(SqlType::Integer);

    fn unset(_: Option<&Value>) -> Value {
        Value::Integer(0)
    }

    fn join(&self, _: &RowClock, other: &GCounter, _: &RowClock, _: &RegisterRule) -> GCounter {
        self.merge(other)
    }

    fn is_canonical(&self, _: &RowClock) -> bool {
        GCounter::is_canonical(self)
    }

    fn read(&self) -> Value {
        rules::read(self.value())
    }

    fn check(op: Op) -> Result<Op, OpError> {
        rules::check(op, true)
    }

    fn apply(state: &mut Option<GCounter>, op: &Op, at: Stamp) -> Result<(), OpError> {
        let amount = rules::amount(op)?;
        let counter = state.get_or_insert_with(GCounter::default);
        counter
            .increment(at.dot.site, amount.unsigned_abs())
            .map_err(|_| OpError::Overflow)?;
        rules::fits(counter.value())
    }

    fn rebuild(target: &Value) -> Option<Op> {
        rules::rebuild(target)
    }

    fn reach(current: &Value, target: &Value, _: &RegisterRule) -> Option<Op> {
        rules::reach(current, target, true)
    }

    fn check_target(column: &str, value: &Value) -> Result<(), String> {
        rules::check_target(column, value, true)
    }

    fn encode(&self, out: &mut impl StateSink) {
        out.len(self.0.len());
        for &(site, n) in &self.0 {
            out.site(site);
            out.uint(n);
        }
    }

    fn decode<S: StateSource>(input: &mut S) -> Result<GCounter, S::Error> {
        let n = input.len(2, "counter entry")?;
        let mut entries = capped(n);
        for _ in 0..n {
            entries.push((input.site()?, input.uint()?));
        }
        Ok(GCounter::from_entries(entries))
    }

    fn size_hint(&self) -> usize {
        4 + 12 * self.0.len()
    }
}

impl ColumnKind for PnCounter {
    const KIND: Kind = Kind::PnCounter;
    const NAME: &'static str = "pn_counter";
    const SQL_TYPE: Option<SqlType> = Some(SqlType::Integer);

    fn unset(_: Option<&Value>) -> Value {
        Value::Integer(0)
    }

    fn join(&self, _: &RowClock, other: &PnCounter, _: &RowClock, _: &RegisterRule) -> PnCounter {
        self.merge(other)
    }

    fn is_canonical(&self, _: &RowClock) -> bool {
        PnCounter::is_canonical(self)
    }

    fn read(&self) -> Value {
        rules::read(self.value())
    }

    fn check(op: Op) -> Result<Op, OpError> {
        rules::check(op, false)
    }

    fn apply(state: &mut Option<PnCounter>, op: &Op, at: Stamp) -> Result<(), OpError> {
        let amount = rules::amount(op)?;
        let counter = state.get_or_insert_with(PnCounter::default);
        counter
            .add(at.dot.site, amount)
            .map_err(|_| OpError::Overflow)?;
        rules::fits(counter.value())
    }

    fn rebuild(target: &Value) -> Option<Op> {
        rules::rebuild(target)
    }

    fn reach(current: &Value, target: &Value, _: &RegisterRule) -> Option<Op> {
        rules::reach(current, target, false)
    }

    fn check_target(column: &str, value: &Value) -> Result<(), String> {
        rules::check_target(column, value, false)
    }

    fn encode(&self, out: &mut impl StateSink) {
        out.len(self.0.len());
        for &(site, p, n) in &self.0 {
            out.site(site);
            out.uint(p);
            out.uint(n);
        }
    }

    fn decode<S: StateSource>(input: &mut S) -> Result<PnCounter, S::Error> {
        let n = input.len(3, "counter entry")?;
        let mut entries = capped(n);
        for _ in 0..n {
            entries.push((input.site()?, input.uint()?, input.uint()?));
        }
        Ok(PnCounter::from_entries(entries))
    }

    fn size_hint(&self) -> usize {
        4 + 20 * self.0.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crdt::strategies::{g_counter, pn_counter, site};
    use proptest::prelude::*;

    #[test]
    fn concurrent_increments_both_count() -> Result<(), CounterOverflow> {
        let (a, b) = (site(0), site(1));
        let mut base = PnCounter::default();
        base.add(a, 10)?;
        let (mut left, mut right) = (base.clone(), base.clone());
        left.add(a, -1)?;
        right.add(b, -1)?;
        assert_eq!(left.merge(&right).value(), 8);
        Ok(())
    }

    #[test]
    fn overflow_is_an_error_not_a_wrap() {
        let mut c = GCounter::default();
        assert_eq!(c.increment(site(0), u64::MAX), Ok(()));
        assert_eq!(c.increment(site(0), 1), Err(CounterOverflow));
        assert_eq!(c.value(), i128::from(u64::MAX));
    }

    proptest! {
        #[test]
        fn g_counter_laws(a in g_counter(), b in g_counter(), c in g_counter()) {
            prop_assert_eq!(a.merge(&b), b.merge(&a));
            prop_assert_eq!(a.merge(&b).merge(&c), a.merge(&b.merge(&c)));
            prop_assert_eq!(a.merge(&a), a.clone());
            prop_assert!(a.merge(&b).value() >= a.value().max(b.value()));
        }

        #[test]
        fn pn_counter_laws(a in pn_counter(), b in pn_counter(), c in pn_counter()) {
            prop_assert_eq!(a.merge(&b), b.merge(&a));
            prop_assert_eq!(a.merge(&b).merge(&c), a.merge(&b.merge(&c)));
            prop_assert_eq!(a.merge(&a), a.clone());
        }
    }
}
