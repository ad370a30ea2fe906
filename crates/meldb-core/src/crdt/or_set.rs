//! Observed-remove set with add-wins semantics (an "optimized OR-set").
//!
//! Every add tags the element with the dot of the write that added it;
//! a remove drops the tags it has seen. When two states merge, a tag present
//! on one side only survives if the other side has not seen its dot (then it
//! is a new add) and is dropped if it has (then the other side removed it).
//! "Seen" is the row clock of the row the set lives in, so the set carries no
//! tombstones of its own. A remove and a concurrent add of the same element:
//! the add wins, because the remover never saw the new tag.

use super::column::{capped, ColumnKind, Op, OpError, Stamp, StateSink, StateSource};
use super::row_clock::{Dot, RowClock};
use super::{Kind, RegisterRule};
use crate::value::{SqlType, Value};

/// Elements with their live add-tags, sorted by element; tags sorted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OrSet(Vec<(String, Vec<Dot>)>);

impl OrSet {
    /// Adds `elem`, tagged with the dot of the write that adds it. Earlier
    /// tags of the same element are superseded (the writer has seen them).
    pub fn add(&mut self, elem: &str, dot: Dot) {
        match self.0.binary_search_by(|(e, _)| e.as_str().cmp(elem)) {
            Ok(i) => self.0[i].1 = vec![dot],
            Err(i) => self.0.insert(i, (elem.to_owned(), vec![dot])),
        }
    }

    /// Removes `elem` (every tag of it this replica has seen). Returns whether
    /// it was present.
    pub fn remove(&mut self, elem: &str) -> bool {
        match self.0.binary_search_by(|(e, _)| e.as_str().cmp(elem)) {
            Ok(i) => {
                self.0.remove(i);
                true
            }
            Err(_) => false,
        }
    }

    /// Makes `elements` (sorted, distinct) the set's content: removes the
    /// others, adds the missing ones with `dot`.
    pub fn assign(&mut self, elements: &[String], dot: Dot) {
        self.0
            .retain(|(e, _)| elements.binary_search_by(|x| x.as_str().cmp(e)).is_ok());
        for e in elements {
            if !self.contains(e) {
                self.add(e, dot);
            }
        }
    }

    /// Whether `elem` is in the set.
    pub fn contains(&self, elem: &str) -> bool {
        self.0
            .binary_search_by(|(e, _)| e.as_str().cmp(elem))
            .is_ok()
    }

    /// The elements, sorted.
    pub fn elements(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(e, _)| e.as_str())
    }

    /// Elements with their tags.
    pub fn entries(&self) -> &[(String, Vec<Dot>)] {
        &self.0
    }

    /// Builds a set from entries as stored; [`OrSet::is_canonical`] checks them.
    pub fn from_entries(entries: Vec<(String, Vec<Dot>)>) -> Self {
        OrSet(entries)
    }

    /// Whether elements are sorted and unique, and every element has sorted,
    /// unique, non-empty tags.
    pub fn is_canonical(&self) -> bool {
        self.0.windows(2).all(|w| w[0].0 < w[1].0)
            && self
                .0
                .iter()
                .all(|(_, tags)| !tags.is_empty() && tags.windows(2).all(|w| w[0] < w[1]))
    }

    /// The sorted JSON array users read from SQL.
    pub fn to_json(&self) -> String {
        let elems: Vec<&str> = self.elements().collect();
        serde_json::to_string(&elems).unwrap_or_else(|_| "[]".to_owned())
    }

    /// Joins two sets; `a_seen` and `b_seen` are what each side's row had seen.
    pub fn merge(&self, a_seen: &RowClock, other: &OrSet, b_seen: &RowClock) -> OrSet {
        use std::cmp::Ordering;
        let mut out = Vec::with_capacity(self.0.len().max(other.0.len()));
        let (mut left, mut right) = (self.0.iter().peekable(), other.0.iter().peekable());
        loop {
            let order = match (left.peek(), right.peek()) {
                (None, None) => break,
                (Some(a), Some(b)) => a.0.cmp(&b.0),
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
            };
            let (elem, tags) = match order {
                Ordering::Equal => match (left.next(), right.next()) {
                    (Some(a), Some(b)) => (&a.0, merge_tags(&a.1, b_seen, &b.1, a_seen)),
                    _ => break,
                },
                Ordering::Less => match left.next() {
                    Some(a) => (&a.0, unseen(&a.1, b_seen)),
                    None => break,
                },
                Ordering::Greater => match right.next() {
                    Some(b) => (&b.0, unseen(&b.1, a_seen)),
                    None => break,
                },
            };
            if !tags.is_empty() {
                out.push((elem.clone(), tags));
            }
        }
        OrSet(out)
    }
}

impl ColumnKind for OrSet {
    const KIND: Kind = Kind::OrSet;
    const NAME: &'static str = "or_set";
    const SQL_TYPE: Option<SqlType> = Some(SqlType::Text);

    fn unset(_: Option<&Value>) -> Value {
        Value::Text("[]".into())
    }

    fn join(
        &self,
        seen: &RowClock,
        other: &OrSet,
        other_seen: &RowClock,
        _: &RegisterRule,
    ) -> OrSet {
        self.merge(seen, other, other_seen)
    }

    fn is_canonical(&self, clock: &RowClock) -> bool {
        OrSet::is_canonical(self)
            && self
                .0
                .iter()
                .flat_map(|(_, tags)| tags)
                .all(|&d| clock.contains(d))
    }

    fn read(&self) -> Value {
        Value::Text(self.to_json())
    }

    fn check(op: Op) -> Result<Op, OpError> {
        match op {
            Op::Assign { value, .. } => match elements(&value) {
                Ok(elements) => Ok(Op::Elements(elements)),
                Err(NotElements::Type(found, _)) => Err(OpError::BadSet {
                    problem: format!("got a {found} value"),
                }),
                Err(NotElements::Json(problem)) => Err(OpError::BadSet { problem }),
            },
            Op::Add(_) | Op::Remove(_) | Op::Elements(_) => Ok(op),
            Op::Increment(_) => Err(op.unsupported()),
        }
    }

    fn apply(state: &mut Option<OrSet>, op: &Op, at: Stamp) -> Result<(), OpError> {
        let set = state.get_or_insert_with(OrSet::default);
        match op {
            Op::Add(elem) => set.add(elem, at.dot),
            Op::Remove(elem) => {
                set.remove(elem);
            }
            Op::Elements(elements) => set.assign(elements, at.dot),
            Op::Assign { .. } => match Self::check(op.clone())? {
                Op::Elements(elements) => set.assign(&elements, at.dot),
                other => return Err(other.unsupported()),
            },
            Op::Increment(_) => return Err(op.unsupported()),
        }
        Ok(())
    }

    // `rebuild` and `reach` take values `check_target` accepted (the engine
    // checks a resolver's row before it corrects anything), so an
    // unparsable target cannot reach them.
    fn rebuild(target: &Value) -> Option<Op> {
        let elements = checked_elements(target);
        (!elements.is_empty()).then_some(Op::Elements(elements))
    }

    fn reach(_: &Value, target: &Value, _: &RegisterRule) -> Option<Op> {
        Some(Op::Elements(checked_elements(target)))
    }

    fn check_target(column: &str, value: &Value) -> Result<(), String> {
        let problem = match elements(value) {
            Ok(_) => return Ok(()),
            Err(NotElements::Type(_, shown)) => {
                format!("expected a JSON array of strings, got {shown}")
            }
            Err(NotElements::Json(e)) => format!("expected a JSON array of strings: {e}"),
        };
        Err(format!("set {column:?}: {problem}"))
    }

    fn encode(&self, out: &mut impl StateSink) {
        out.len(self.0.len());
        for (element, tags) in &self.0 {
            out.text(element);
            out.len(tags.len());
            for &dot in tags {
                out.dot(dot);
            }
        }
    }

    fn decode<S: StateSource>(input: &mut S) -> Result<OrSet, S::Error> {
        let n = input.len(2, "set element")?;
        let mut entries = capped(n);
        for _ in 0..n {
            let element = input.text()?;
            let ntags = input.len(2, "set tag")?;
            let mut tags = capped(ntags);
            for _ in 0..ntags {
                tags.push(input.dot()?);
            }
            entries.push((element, tags));
        }
        Ok(OrSet::from_entries(entries))
    }

    fn size_hint(&self) -> usize {
        4 + self
            .0
            .iter()
            .map(|(e, tags)| e.len() + 2 + 12 * tags.len())
            .sum::<usize>()
    }
}

/// Why a value is not a set's content.
enum NotElements {
    /// Not text: its type name and how it reads.
    Type(&'static str, String),
    /// Text, but not a JSON array of strings.
    Json(String),
}

/// The sorted, distinct elements of a set column's JSON text.
/// The elements of a value `check_target` accepted.
fn checked_elements(target: &Value) -> Vec<String> {
    let parsed = elements(target);
    debug_assert!(
        parsed.is_ok(),
        "an or_set target that check_target refuses: {target:?}"
    );
    parsed.unwrap_or_default()
}

fn elements(value: &Value) -> Result<Vec<String>, NotElements> {
    let Value::Text(text) = value else {
        return Err(NotElements::Type(value.type_name(), value.to_string()));
    };
    let mut elements: Vec<String> =
        serde_json::from_str(text).map_err(|e| NotElements::Json(e.to_string()))?;
    elements.sort_unstable();
    elements.dedup();
    Ok(elements)
}

/// Tags of one side that the other side has not seen.
fn unseen(tags: &[Dot], other_seen: &RowClock) -> Vec<Dot> {
    tags.iter()
        .copied()
        .filter(|&d| !other_seen.contains(d))
        .collect()
}

/// Tags on both sides, plus tags on one side the other has not seen.
fn merge_tags(a: &[Dot], b_seen: &RowClock, b: &[Dot], a_seen: &RowClock) -> Vec<Dot> {
    let mut out: Vec<Dot> = a
        .iter()
        .copied()
        .filter(|d| b.contains(d) || !b_seen.contains(*d))
        .collect();
    out.extend(
        b.iter()
            .copied()
            .filter(|d| !a.contains(d) && !a_seen.contains(*d)),
    );
    out.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crdt::strategies::{or_set_replicas, site};
    use proptest::prelude::*;

    fn dot(s: u8, seq: u64) -> Dot {
        Dot { site: site(s), seq }
    }

    #[test]
    fn concurrent_add_wins_over_remove() {
        let mut base = OrSet::default();
        base.add("x", dot(0, 1));
        let base_seen = RowClock::from_entries([(site(0), 1)]);
        // Site 0 removes x; site 1 concurrently re-adds it.
        let mut removed = base.clone();
        removed.remove("x");
        let removed_seen = RowClock::from_entries([(site(0), 2)]);
        let mut readded = base.clone();
        readded.add("x", dot(1, 1));
        let readded_seen = base_seen.join(&RowClock::from_entries([(site(1), 1)]));
        let merged = removed.merge(&removed_seen, &readded, &readded_seen);
        assert!(merged.contains("x"));
        assert_eq!(merged.to_json(), "[\"x\"]");
    }

    #[test]
    fn observed_remove_sticks() {
        let mut a = OrSet::default();
        a.add("x", dot(0, 1));
        let a_seen = RowClock::from_entries([(site(0), 1)]);
        let mut b = a.clone();
        b.remove("x");
        let b_seen = RowClock::from_entries([(site(0), 1), (site(1), 1)]);
        assert!(!a.merge(&a_seen, &b, &b_seen).contains("x"));
        assert!(!b.merge(&b_seen, &a, &a_seen).contains("x"));
    }

    proptest! {
        #[test]
        fn merge_laws(states in or_set_replicas()) {
            let [(a, sa), (b, sb), (c, sc)] = &states;
            let ab = a.merge(sa, b, sb);
            let sab = sa.join(sb);
            prop_assert_eq!(&ab, &b.merge(sb, a, sa));
            let left = ab.merge(&sab, c, sc);
            let bc = b.merge(sb, c, sc);
            let right = a.merge(sa, &bc, &sb.join(sc));
            prop_assert_eq!(left, right);
            prop_assert_eq!(&a.merge(sa, a, sa), a);
            prop_assert!(ab.is_canonical());
        }
    }
}
