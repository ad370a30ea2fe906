//! A `Want`'s version vector as a diff against the previous `Want` on the
//! same connection (protocol 4): the sites whose ranges changed or are
//! new, each with its whole new ranges. Pure logic; `wire` puts it in
//! bytes and the connection keeps the previous vector on each side.
//!
//! Invariants: `apply(a, &diff(a, b)?) == b` for every `a ≤ b`; a diff
//! exists only when the new vector contains the old one (a version vector
//! only grows, and a diff cannot say "forget"), otherwise the sender sends
//! the whole vector; `apply` refuses an entry that would lose a dot the
//! previous vector had, so a peer can never make this side believe the
//! other has less than it said.

use crate::version::VersionVector;

/// The entries of `next` that differ from `previous` (changed or new), or
/// `None` when `next` lacks some dot of `previous` and cannot be a diff.
pub(crate) fn diff(previous: &VersionVector, next: &VersionVector) -> Option<VersionVector> {
    if !previous.le(next) {
        return None;
    }
    let mut out = VersionVector::new();
    for (site, ranges) in next.iter() {
        if previous.site(site) != Some(ranges) {
            for &(first, last) in ranges.ranges() {
                out.insert(*site, first, last);
            }
        }
    }
    Some(out)
}

/// `previous` with the entries of `diff` replacing its own; an error
/// naming the site when an entry lacks a dot `previous` had for it.
pub(crate) fn apply(
    previous: &VersionVector,
    diff: &VersionVector,
) -> Result<VersionVector, String> {
    let mut out = VersionVector::new();
    for (site, ranges) in previous.iter() {
        match diff.site(site) {
            Some(new) => {
                for &(first, last) in ranges.ranges() {
                    if new.intersect(first, last) != [(first, last)] {
                        return Err(format!(
                            "the entry of site {site} drops dots {first}..={last} the previous Want had"
                        ));
                    }
                }
                for &(first, last) in new.ranges() {
                    out.insert(*site, first, last);
                }
            }
            None => {
                for &(first, last) in ranges.ranges() {
                    out.insert(*site, first, last);
                }
            }
        }
    }
    for (site, ranges) in diff.iter() {
        if previous.site(site).is_none() {
            for &(first, last) in ranges.ranges() {
                out.insert(*site, first, last);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SiteId;
    use proptest::prelude::*;

    fn vv(entries: &[(u8, u64, u64)]) -> VersionVector {
        let mut v = VersionVector::new();
        for &(s, first, last) in entries {
            v.insert(SiteId::from_bytes([s; 16]), first, last);
        }
        v
    }

    fn arb_vv() -> impl Strategy<Value = VersionVector> {
        proptest::collection::vec((0u8..6, 1u64..40, 0u64..10), 0..12).prop_map(|e| {
            vv(&e
                .into_iter()
                .map(|(s, first, len)| (s, first, first + len))
                .collect::<Vec<_>>())
        })
    }

    proptest! {
        /// Applying the diff of (a, b) to a gives b, for every b that
        /// grew from a (b = a merged with anything).
        #[test]
        fn applying_the_diff_gives_the_new_vector(a in arb_vv(), extra in arb_vv()) {
            let mut b = a.clone();
            b.merge(&extra);
            let d = diff(&a, &b).expect("b contains a");
            prop_assert_eq!(apply(&a, &d), Ok(b.clone()));
            // A diff holds only what changed: never more sites than b.
            prop_assert!(d.iter().count() <= b.iter().count());
        }

        /// Any two vectors: a diff exists exactly when a ≤ b.
        #[test]
        fn a_diff_exists_only_when_the_vector_grew(a in arb_vv(), b in arb_vv()) {
            match diff(&a, &b) {
                Some(d) => prop_assert_eq!(apply(&a, &d), Ok(b)),
                None => prop_assert!(!a.le(&b)),
            }
        }
    }

    #[test]
    fn unchanged_entries_are_left_out_and_a_shrinking_entry_is_refused() {
        let a = vv(&[(1, 1, 5), (2, 1, 3)]);
        let b = vv(&[(1, 1, 9), (2, 1, 3), (3, 1, 1)]);
        let d = diff(&a, &b).expect("grew");
        assert_eq!(d, vv(&[(1, 1, 9), (3, 1, 1)]));
        assert_eq!(diff(&b, &a), None, "a shrunk vector is sent whole");
        let err = apply(&a, &vv(&[(1, 1, 4)])).expect_err("drops dot 5");
        assert!(err.contains("drops dots 1..=5"), "{err}");
        assert_eq!(apply(&a, &VersionVector::new()), Ok(a.clone()));
    }
}
