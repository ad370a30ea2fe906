//! The column kinds, one module each, and their registration.
//!
//! Each kind is a type implementing [`ColumnKind`] in its own file: its
//! merge, the value users read, the local writes it takes, the write that
//! reaches a resolver's value, and its state's fields in every byte
//! layout. This file registers them: [`Kind`] (the schema word and the
//! wire tag), [`ColumnState`] (a column's state, one variant per kind) and
//! the two dispatch tables below, the only `match`es over every kind in
//! meldb. A new kind is its file and one line in each of them.
//!
//! Nothing here touches SQLite, the network or the clock: every function
//! is a deterministic function of its arguments, so the laws (commutative,
//! associative, idempotent) can be tested exhaustively with proptest.
//! Every merge is a *join*: merging a state with anything it already
//! contains changes nothing, and the order of merges never matters.

mod column;
mod counter;
mod lww;
mod or_set;
mod row_clock;
mod state_order;

#[cfg(test)]
pub(crate) mod strategies;

pub use column::{capped, ColumnKind, Op, OpError, Stamp, StateSink, StateSource, MAX_PREALLOC};
pub use counter::{GCounter, PnCounter};
pub use lww::{Lww, RegisterRule};
pub use or_set::OrSet;
pub use row_clock::{Causality, Dot, RowClock};
pub use state_order::StateOrder;

use crate::value::{SqlType, Value};
use serde::{Deserialize, Serialize};
use std::fmt;

/// How a column merges concurrent writes. The discriminant is the kind's
/// tag in every byte layout: it never changes, and a new kind takes the
/// next number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Kind {
    /// Last writer wins (the default).
    Lww = 0,
    /// Grow-only counter: increments only.
    GCounter = 1,
    /// Counter with increments and decrements.
    PnCounter = 2,
    /// Observed-remove set of strings, add wins.
    OrSet = 3,
}

/// The CRDT state of one column of one row.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum ColumnState {
    /// A last-writer-wins register.
    Lww(Lww),
    /// A grow-only counter.
    GCounter(GCounter),
    /// An increment/decrement counter.
    PnCounter(PnCounter),
    /// An observed-remove, add-wins set of strings.
    OrSet(OrSet),
}

/// Runs `$body` with `$K` naming the type of kind `$kind`.
macro_rules! with_kind {
    ($kind:expr, $K:ident => $body:expr) => {
        match $kind {
            Kind::Lww => {
                type $K = Lww;
                $body
            }
            Kind::GCounter => {
                type $K = GCounter;
                $body
            }
            Kind::PnCounter => {
                type $K = PnCounter;
                $body
            }
            Kind::OrSet => {
                type $K = OrSet;
                $body
            }
        }
    };
}

/// Runs `$body` with `$s` bound to the state inside `$state`.
macro_rules! with_state {
    ($state:expr, $s:ident => $body:expr) => {
        match $state {
            ColumnState::Lww($s) => $body,
            ColumnState::GCounter($s) => $body,
            ColumnState::PnCounter($s) => $body,
            ColumnState::OrSet($s) => $body,
        }
    };
}

/// Moving between each kind's own state type and [`ColumnState`].
macro_rules! register {
    ($($V:ident),*) => {
        $(impl Registered for $V {
            fn into_state(self) -> ColumnState {
                ColumnState::$V(self)
            }
            fn from_state(state: ColumnState) -> Option<Self> {
                match state {
                    ColumnState::$V(s) => Some(s),
                    _ => None,
                }
            }
            fn of_state(state: &ColumnState) -> Option<&Self> {
                match state {
                    ColumnState::$V(s) => Some(s),
                    _ => None,
                }
            }
        })*
    };
}
register!(Lww, GCounter, PnCounter, OrSet);

impl Kind {
    /// Every kind, in tag order.
    pub const ALL: [Kind; 4] = [Kind::Lww, Kind::GCounter, Kind::PnCounter, Kind::OrSet];

    /// The name used in schema files.
    pub fn name(self) -> &'static str {
        with_kind!(self, K => K::NAME)
    }

    /// Parses a schema-file name.
    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The kind's tag in byte layouts.
    pub fn tag(self) -> u8 {
        self as u8
    }

    /// The kind with tag `tag`.
    pub fn from_tag(tag: u8) -> Option<Kind> {
        Kind::ALL.get(usize::from(tag)).copied()
    }

    /// The only SQL type a column of this kind can have; `None` for a
    /// register, whose type the schema declares (and with it whether the
    /// column is nullable, its default and its policy).
    pub fn fixed_type(self) -> Option<SqlType> {
        with_kind!(self, K => K::SQL_TYPE)
    }

    /// What a column of this kind reads before it is written.
    pub fn unset(self, default: Option<&Value>) -> Value {
        with_kind!(self, K => K::unset(default))
    }

    /// Checks a write before any row is read (see [`ColumnKind::check`]).
    pub fn check(self, op: Op) -> Result<Op, OpError> {
        with_kind!(self, K => K::check(op))
    }

    /// Applies a checked write to a column's state (see
    /// [`ColumnKind::apply`]). After an error the state is unspecified:
    /// the write it belonged to is abandoned.
    pub fn apply(self, state: &mut Option<ColumnState>, op: &Op, at: Stamp) -> Result<(), OpError> {
        with_kind!(self, K => {
            let mut own = state.take().and_then(K::from_state);
            let result = K::apply(&mut own, op, at);
            *state = own.map(K::into_state);
            result
        })
    }

    /// The write that rebuilds `target` in a new life of a row.
    pub fn rebuild(self, target: &Value) -> Option<Op> {
        with_kind!(self, K => K::rebuild(target))
    }

    /// The write that moves a column reading `current` to `target` and
    /// wins the merge, if one can.
    pub fn reach(self, current: &Value, target: &Value, rule: &RegisterRule) -> Option<Op> {
        with_kind!(self, K => K::reach(current, target, rule))
    }

    /// Checks a value a resolver chose for column `column`.
    pub fn check_target(self, column: &str, value: &Value) -> Result<(), String> {
        with_kind!(self, K => K::check_target(column, value))
    }

    /// Reads a state of this kind (see [`ColumnKind::decode`]).
    pub fn decode<S: StateSource>(self, input: &mut S) -> Result<ColumnState, S::Error> {
        with_kind!(self, K => K::decode(input).map(K::into_state))
    }

    /// "a g_counter", "an or_set".
    pub fn article(self) -> &'static str {
        match self.name().as_bytes().first() {
            Some(b'a' | b'e' | b'i' | b'o' | b'u') => "an",
            _ => "a",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A kind's state type, registered as a variant of [`ColumnState`].
trait Registered: ColumnKind {
    fn into_state(self) -> ColumnState;
    fn from_state(state: ColumnState) -> Option<Self>;
    fn of_state(state: &ColumnState) -> Option<&Self>;
}

impl ColumnState {
    /// The column kind this state belongs to.
    pub fn kind(&self) -> Kind {
        with_state!(self, s => kind_of(s))
    }

    /// Joins two states of the same column. `a_seen` / `b_seen` are the row
    /// clocks of the rows the states come from (the OR-set needs them to tell
    /// a removed element from one not yet seen). States of different kinds
    /// cannot be merged; callers validate kinds against the schema first
    /// (a debug build panics if they did not; a release build keeps the
    /// left state).
    pub fn merge(&self, a_seen: &RowClock, other: &ColumnState, b_seen: &RowClock) -> ColumnState {
        self.merge_by(a_seen, other, b_seen, &RegisterRule::Latest)
    }

    /// [`ColumnState::merge`], with registers picking by `rule`.
    pub fn merge_by(
        &self,
        a_seen: &RowClock,
        other: &ColumnState,
        b_seen: &RowClock,
        rule: &RegisterRule,
    ) -> ColumnState {
        with_state!(self, a => join(a, a_seen, other, b_seen, rule))
    }

    /// Whether the state is in the one form the merge produces, in a row
    /// whose clock is `clock`.
    pub fn is_canonical(&self, clock: &RowClock) -> bool {
        with_state!(self, s => ColumnKind::is_canonical(s, clock))
    }

    /// The value users read.
    pub fn read(&self) -> Value {
        with_state!(self, s => s.read())
    }

    /// Writes the state's fields (see [`ColumnKind::encode`]); the layout
    /// writes [`ColumnState::kind`]'s tag before them.
    pub fn encode(&self, out: &mut impl StateSink) {
        with_state!(self, s => s.encode(out))
    }

    /// About how many bytes the state costs in a sync batch.
    pub fn size_hint(&self) -> usize {
        with_state!(self, s => s.size_hint())
    }
}

fn kind_of<K: ColumnKind>(_: &K) -> Kind {
    K::KIND
}

fn join<K: Registered>(
    a: &K,
    a_seen: &RowClock,
    other: &ColumnState,
    b_seen: &RowClock,
    rule: &RegisterRule,
) -> ColumnState {
    // The schema fixes each column's kind, and every state is checked
    // against it when it arrives (`check_shape`) or is loaded; a mismatch
    // here is a bug, and release builds keep the local state.
    debug_assert_eq!(
        K::KIND,
        other.kind(),
        "merging states of different kinds: kinds are checked before any merge"
    );
    match K::of_state(other) {
        Some(b) => a.join(a_seen, b, b_seen, rule).into_state(),
        None => a.clone().into_state(),
    }
}

/// Merges two optional column states; `None` (never written in this row's
/// life) is the identity.
pub fn merge_optional(
    a: Option<&ColumnState>,
    a_seen: &RowClock,
    b: Option<&ColumnState>,
    b_seen: &RowClock,
    rule: &RegisterRule,
) -> Option<ColumnState> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.merge_by(a_seen, b, b_seen, rule)),
        (Some(a), None) => Some(a.clone()),
        (None, Some(b)) => Some(b.clone()),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::strategies::{g_counter, lww, or_set_replicas, pn_counter, site, value};
    use super::*;
    use crate::clock::{Hlc, SiteId};
    use proptest::prelude::*;

    /// Fields as tokens: what every layout's sink sees, in order.
    #[derive(Debug, Clone, PartialEq)]
    enum Field {
        Len(usize),
        Uint(u64),
        Site(SiteId),
        Text(String),
        Stamp(Hlc),
        Value(Value),
    }

    impl StateSink for Vec<Field> {
        fn len(&mut self, n: usize) {
            self.push(Field::Len(n));
        }
        fn uint(&mut self, n: u64) {
            self.push(Field::Uint(n));
        }
        fn site(&mut self, site: SiteId) {
            self.push(Field::Site(site));
        }
        fn text(&mut self, s: &str) {
            self.push(Field::Text(s.to_owned()));
        }
        fn stamp(&mut self, hlc: Hlc) {
            self.push(Field::Stamp(hlc));
        }
        fn column_value(&mut self, value: &Value) {
            self.push(Field::Value(value.clone()));
        }
    }

    struct Tokens(std::vec::IntoIter<Field>);

    impl Tokens {
        fn next(&mut self) -> Result<Field, String> {
            self.0.next().ok_or_else(|| "ran out of fields".to_owned())
        }
    }

    impl StateSource for Tokens {
        type Error = String;
        fn len(&mut self, _: usize, what: &'static str) -> Result<usize, String> {
            match self.next()? {
                Field::Len(n) => Ok(n),
                other => Err(format!("{what}: expected a count, got {other:?}")),
            }
        }
        fn uint(&mut self) -> Result<u64, String> {
            match self.next()? {
                Field::Uint(n) => Ok(n),
                other => Err(format!("expected an integer, got {other:?}")),
            }
        }
        fn site(&mut self) -> Result<SiteId, String> {
            match self.next()? {
                Field::Site(s) => Ok(s),
                other => Err(format!("expected a site, got {other:?}")),
            }
        }
        fn text(&mut self) -> Result<String, String> {
            match self.next()? {
                Field::Text(s) => Ok(s),
                other => Err(format!("expected text, got {other:?}")),
            }
        }
        fn stamp(&mut self) -> Result<Hlc, String> {
            match self.next()? {
                Field::Stamp(h) => Ok(h),
                other => Err(format!("expected a stamp, got {other:?}")),
            }
        }
        fn column_value(&mut self) -> Result<Value, String> {
            match self.next()? {
                Field::Value(v) => Ok(v),
                other => Err(format!("expected a value, got {other:?}")),
            }
        }
    }

    fn state() -> impl Strategy<Value = ColumnState> {
        prop_oneof![
            lww().prop_map(ColumnState::Lww),
            g_counter().prop_map(ColumnState::GCounter),
            pn_counter().prop_map(ColumnState::PnCounter),
            or_set_replicas().prop_map(|[(s, _), _, _]| ColumnState::OrSet(s)),
        ]
    }

    fn at(seq: u64) -> Stamp {
        Stamp {
            dot: Dot { site: site(1), seq },
            hlc: Hlc(seq),
        }
    }

    #[test]
    fn kinds_are_named_and_tagged_by_their_registration() {
        for (i, kind) in Kind::ALL.into_iter().enumerate() {
            assert_eq!(usize::from(kind.tag()), i);
            assert_eq!(Kind::from_tag(kind.tag()), Some(kind));
            assert_eq!(Kind::from_name(kind.name()), Some(kind));
        }
        assert_eq!(Kind::from_tag(Kind::ALL.len() as u8), None);
        assert_eq!(Kind::from_name("max_register"), None);
        assert_eq!(Kind::OrSet.article(), "an");
        assert_eq!(Kind::GCounter.article(), "a");
    }

    #[test]
    fn each_kind_refuses_the_writes_it_does_not_take() {
        let hint = |kind: Kind, op: Op| match kind.check(op) {
            Err(OpError::Unsupported { hint }) => hint,
            other => panic!("{kind}: expected a refusal, got {other:?}"),
        };
        let assign = Op::Assign {
            value: Value::Integer(1),
            initial: false,
        };
        assert_eq!(
            hint(Kind::Lww, Op::Increment(1)),
            "only counters can be incremented"
        );
        assert_eq!(
            hint(Kind::Lww, Op::Add("x".into())),
            "only or_set columns take elements"
        );
        assert_eq!(
            hint(Kind::OrSet, Op::Increment(1)),
            "only counters can be incremented"
        );
        assert_eq!(
            hint(Kind::PnCounter, assign),
            "counters cannot be assigned; use increment"
        );
        assert_eq!(
            Kind::GCounter.check(Op::Increment(-1)),
            Err(OpError::Negative { amount: -1 })
        );
        assert_eq!(
            Kind::GCounter.check(Op::Assign {
                value: Value::Text("1".into()),
                initial: true
            }),
            Err(OpError::TypeMismatch {
                expected: SqlType::Integer,
                found: "text"
            })
        );
        assert!(matches!(
            Kind::OrSet.check(Op::Assign {
                value: Value::Text("[1]".into()),
                initial: false
            }),
            Err(OpError::BadSet { .. })
        ));
    }

    #[test]
    fn counters_refuse_to_leave_the_sql_integer_range() {
        let mut state = None;
        Kind::PnCounter
            .apply(&mut state, &Op::Increment(i64::MAX), at(1))
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            Kind::PnCounter.apply(&mut state, &Op::Increment(1), at(2)),
            Err(OpError::Overflow)
        );
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "kinds are checked before any merge")]
    fn states_of_different_kinds_never_merge() {
        let clock = RowClock::new();
        let counter = ColumnState::GCounter(GCounter::default());
        let set = ColumnState::OrSet(OrSet::default());
        let _ = counter.merge(&clock, &set, &clock);
    }

    proptest! {
        /// Every layout reads back what it wrote: a state's fields come
        /// out in the order they went in, and decode to the same state.
        #[test]
        fn fields_round_trip(state in state()) {
            let mut fields = Vec::new();
            state.encode(&mut fields);
            let decoded = state.kind().decode(&mut Tokens(fields.into_iter()));
            prop_assert_eq!(decoded, Ok(state));
        }

        /// A correction reaches its target: when a kind names the write
        /// that moves a column to a value, applying it reads that value.
        #[test]
        fn a_reached_value_is_read(
            start in -1000i64..1000,
            target in -1000i64..1000,
            elements in proptest::collection::btree_set("[a-c]", 0..3),
            text in value(),
        ) {
            let json = Value::Text(serde_json::to_string(&elements).unwrap_or_default());
            let cases = [
                (Kind::PnCounter, Value::Integer(start), Value::Integer(target)),
                (Kind::GCounter, Value::Integer(start.abs()), Value::Integer(target.abs())),
                (Kind::OrSet, Value::Text("[\"z\"]".into()), json),
                (Kind::Lww, Value::Text("old".into()), text),
            ];
            for (kind, from, to) in cases {
                let mut state = None;
                if let Some(op) = kind.rebuild(&from) {
                    let op = kind.check(op).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
                    kind.apply(&mut state, &op, at(1))
                        .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
                }
                let current = state.as_ref().map_or(kind.unset(None), ColumnState::read);
                prop_assert_eq!(&current, &from);
                if current == to {
                    continue;
                }
                match kind.reach(&current, &to, &RegisterRule::Latest) {
                    Some(op) => {
                        kind.apply(&mut state, &op, at(2))
                            .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
                        let read = state.as_ref().map(ColumnState::read);
                        prop_assert_eq!(read, Some(to));
                    }
                    // Only a grow-only counter cannot go back.
                    None => prop_assert!(
                        kind == Kind::GCounter && to.total_cmp(&current).is_lt()
                    ),
                }
            }
        }
    }
}
