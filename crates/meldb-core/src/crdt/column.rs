//! What every column kind provides: the [`ColumnKind`] trait.
//!
//! A kind is one type that implements it, in one file: how two states
//! join, what users read, which local writes it takes and what each does,
//! which write moves a state to a value a resolver chose, and its state's
//! fields in order for every byte layout. Everything else (the store, the
//! codecs, the schema checks) goes through [`Kind`] and
//! [`ColumnState`](super::ColumnState), which dispatch to the trait, so
//! none of it names a kind.
//!
//! Invariant: every method is a deterministic function of its arguments
//! (no SQLite, no I/O, no clock); a state's fields are written and read in
//! the same order ([`StateSink`], [`StateSource`]), so one description
//! serves every layout that carries the state.

use super::row_clock::{Dot, RowClock};
use super::{Kind, RegisterRule};
use crate::clock::{Hlc, SiteId};
use crate::value::{SqlType, Value};
use std::fmt;

/// The CRDT of one column kind.
pub trait ColumnKind: Sized + Clone + PartialEq + fmt::Debug {
    /// The kind, as schemas name it and byte layouts tag it.
    const KIND: Kind;
    /// The word schema files use (`kind = "..."`).
    const NAME: &'static str;
    /// The only SQL type the column can have; `None` for a register, whose
    /// type, nullability, default and policy the schema declares.
    const SQL_TYPE: Option<SqlType>;

    /// What a column of this kind reads before anything was written to it
    /// (a register reads its default).
    fn unset(default: Option<&Value>) -> Value;

    /// Joins two states; `seen` / `other_seen` are the row clocks of the
    /// rows they come from, `rule` how registers pick.
    fn join(
        &self,
        seen: &RowClock,
        other: &Self,
        other_seen: &RowClock,
        rule: &RegisterRule,
    ) -> Self;

    /// Whether a decoded state is in the one form the merge produces
    /// (sorted, no repeats, tags all seen by `clock`).
    fn is_canonical(&self, clock: &RowClock) -> bool;

    /// The value users read.
    fn read(&self) -> Value;

    /// Checks a write against the kind before any row is read, and puts it
    /// in the form [`ColumnKind::apply`] takes. A register's value has been
    /// checked against the column's declared type already.
    fn check(op: Op) -> Result<Op, OpError>;

    /// Applies a checked write made at `at` to the column's state (`None`:
    /// never written in this row's life).
    fn apply(state: &mut Option<Self>, op: &Op, at: Stamp) -> Result<(), OpError>;

    /// The write that rebuilds `target` in a new life of the row, if it
    /// takes one (a counter at 0 or an empty set takes none).
    fn rebuild(target: &Value) -> Option<Op>;

    /// The write that moves a column reading `current` to `target` (a
    /// different value) and wins every merge with the versions it joined;
    /// `None` if no write can (a counter cannot go down).
    fn reach(current: &Value, target: &Value, rule: &RegisterRule) -> Option<Op>;

    /// Checks a value a resolver chose for column `column`; the error says
    /// what is wrong.
    fn check_target(column: &str, value: &Value) -> Result<(), String>;

    /// Writes the state's fields.
    fn encode(&self, out: &mut impl StateSink);

    /// Reads the fields [`ColumnKind::encode`] wrote.
    fn decode<S: StateSource>(input: &mut S) -> Result<Self, S::Error>;

    /// About how many bytes the state costs in a sync batch.
    fn size_hint(&self) -> usize;
}

/// A local write to one column, as the API's verbs make it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Op {
    /// A value for the column: by an insert (`initial`) or an update.
    Assign {
        /// The value.
        value: Value,
        /// Whether it is the row's first value (a counter takes an initial
        /// amount; it cannot be assigned later).
        initial: bool,
    },
    /// Adds to a counter.
    Increment(i64),
    /// Adds an element to a set.
    Add(String),
    /// Removes an element from a set.
    Remove(String),
    /// A set's whole content, sorted and distinct (a checked `Assign`).
    Elements(Vec<String>),
}

impl Op {
    /// What the write is, for errors: the verb of the API that makes it.
    fn verb(&self) -> &'static str {
        match self {
            Op::Assign { .. } => "assigned",
            Op::Increment(_) => "incremented",
            Op::Add(_) | Op::Remove(_) | Op::Elements(_) => "given elements",
        }
    }

    /// The refusal of a kind that has no such write: it says which kinds do.
    pub fn unsupported(&self) -> OpError {
        OpError::Unsupported {
            hint: match self {
                Op::Increment(_) => "only counters can be incremented",
                Op::Add(_) | Op::Remove(_) | Op::Elements(_) => "only or_set columns take elements",
                Op::Assign { .. } => "counters cannot be assigned; use increment",
            },
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.verb())
    }
}

/// Why a write to a column was refused; the store adds the table and the
/// column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpError {
    /// The kind has no such write; `hint` says what to do instead.
    Unsupported {
        /// What the kind does take.
        hint: &'static str,
    },
    /// The value has the wrong type.
    TypeMismatch {
        /// The type the kind takes.
        expected: SqlType,
        /// The value's type.
        found: &'static str,
    },
    /// A grow-only counter was given a negative amount.
    Negative {
        /// The amount.
        amount: i64,
    },
    /// A set's value is not a JSON array of strings.
    BadSet {
        /// What is wrong with it.
        problem: String,
    },
    /// The counter's total would leave the 64-bit range.
    Overflow,
}

/// The identity of a local write: its dot and timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The write's dot.
    pub dot: Dot,
    /// The write's timestamp.
    pub hlc: Hlc,
}

/// Where a state's fields go: one implementation per byte layout, which
/// decides how each field is spelled (varints, sites as positions in a
/// table or as 16 bytes, a register's timestamp relative to its row's).
pub trait StateSink {
    /// A count of the items that follow.
    fn len(&mut self, n: usize);
    /// An unsigned integer.
    fn uint(&mut self, n: u64);
    /// A site.
    fn site(&mut self, site: SiteId);
    /// A string.
    fn text(&mut self, s: &str);
    /// A register's timestamp.
    fn stamp(&mut self, hlc: Hlc);
    /// The value users read, which the stored layout keeps in the
    /// column's own SQL value rather than in the row's metadata.
    fn column_value(&mut self, value: &Value);

    /// A dot: its site and sequence number.
    fn dot(&mut self, dot: Dot) {
        self.site(dot.site);
        self.uint(dot.seq);
    }
}

/// Where a state's fields come from: the reading side of [`StateSink`].
pub trait StateSource {
    /// The layout's decode error.
    type Error;
    /// A count of items of at least `min_bytes` each (`what`, for errors);
    /// never more than the input can hold.
    fn len(&mut self, min_bytes: usize, what: &'static str) -> Result<usize, Self::Error>;
    /// An unsigned integer.
    fn uint(&mut self) -> Result<u64, Self::Error>;
    /// A site.
    fn site(&mut self) -> Result<SiteId, Self::Error>;
    /// A string.
    fn text(&mut self) -> Result<String, Self::Error>;
    /// A register's timestamp.
    fn stamp(&mut self) -> Result<Hlc, Self::Error>;
    /// The value users read (see [`StateSink::column_value`]).
    fn column_value(&mut self) -> Result<Value, Self::Error>;

    /// A dot.
    fn dot(&mut self) -> Result<Dot, Self::Error> {
        Ok(Dot {
            site: self.site()?,
            seq: self.uint()?,
        })
    }
}

/// The most memory a decoder reserves for a sequence before its elements
/// arrive.
pub const MAX_PREALLOC: usize = 1 << 20;

/// A vector for `n` announced elements, reserving at most
/// [`MAX_PREALLOC`] bytes.
pub fn capped<T>(n: usize) -> Vec<T> {
    Vec::with_capacity(n.min(MAX_PREALLOC / std::mem::size_of::<T>().max(1)))
}
