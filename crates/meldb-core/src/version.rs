//! Version vectors: which dots a replica has.
//!
//! For each site, a set of sequence ranges. Normally one range `1..=n` per
//! site; ranges with gaps appear while changes arrive out of order and close
//! as the missing ones come. "Having" dot `(s, n)` means the local state
//! contains that write's effect, or a later write of `s` to the same row
//! that is itself not yet had, so asking for everything not had is enough to
//! converge. `Store::changes_since` answers exactly that question.

use crate::clock::SiteId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Disjoint, sorted, non-adjacent inclusive ranges of sequence numbers (≥ 1).
/// Deserializing normalizes whatever ranges it is given (a version vector
/// file is user input), so the invariant always holds. The serde derives
/// are for JSON (the command line's version vector files); the sync
/// protocol's bytes are written by `codec`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Vec<(u64, u64)>", into = "Vec<(u64, u64)>")]
pub struct SeqRanges(Vec<(u64, u64)>);

impl From<Vec<(u64, u64)>> for SeqRanges {
    fn from(ranges: Vec<(u64, u64)>) -> Self {
        let mut out = SeqRanges::default();
        for (first, last) in ranges {
            out.insert(first, last);
        }
        out
    }
}

impl From<SeqRanges> for Vec<(u64, u64)> {
    fn from(ranges: SeqRanges) -> Self {
        ranges.0
    }
}

impl SeqRanges {
    /// The ranges, sorted.
    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.0
    }

    /// Whether `seq` is in a range.
    pub fn contains(&self, seq: u64) -> bool {
        let i = self.0.partition_point(|&(_, last)| last < seq);
        self.0.get(i).is_some_and(|&(first, _)| first <= seq)
    }

    /// Whether every seq of `first..=last` is contained (true if empty).
    pub fn contains_all(&self, first: u64, last: u64) -> bool {
        if first > last {
            return true;
        }
        let i = self.0.partition_point(|&(_, l)| l < first);
        self.0.get(i).is_some_and(|&(f, l)| f <= first && last <= l)
    }

    /// Adds `first..=last` (ignored if empty or starting at 0).
    pub fn insert(&mut self, first: u64, last: u64) {
        if first == 0 || first > last {
            return;
        }
        // Ranges that overlap or touch the new one are absorbed.
        let start = self
            .0
            .partition_point(|&(_, l)| l.saturating_add(1) < first);
        let end = self
            .0
            .partition_point(|&(f, _)| f <= last.saturating_add(1));
        let (mut lo, mut hi) = (first, last);
        if start < end {
            lo = lo.min(self.0[start].0);
            hi = hi.max(self.0[end - 1].1);
        }
        self.0.splice(start..end, [(lo, hi)]);
    }

    /// The lowest sequence number ≥ 1 not contained.
    pub fn first_missing(&self) -> u64 {
        match self.0.first() {
            Some(&(1, last)) => last.saturating_add(1),
            _ => 1,
        }
    }

    /// The greatest contained sequence number (0 if none).
    pub fn max(&self) -> u64 {
        self.0.last().map_or(0, |&(_, last)| last)
    }

    /// The parts of `first..=last` that are contained.
    pub fn intersect(&self, first: u64, last: u64) -> Vec<(u64, u64)> {
        self.0
            .iter()
            .filter_map(|&(f, l)| {
                let (lo, hi) = (f.max(first), l.min(last));
                (lo <= hi).then_some((lo, hi))
            })
            .collect()
    }
}

/// Per-site ranges of dots a replica has.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionVector(BTreeMap<SiteId, SeqRanges>);

impl VersionVector {
    /// Nothing seen.
    pub fn new() -> Self {
        VersionVector::default()
    }

    /// Whether dot `(site, seq)` is had.
    pub fn contains(&self, site: &SiteId, seq: u64) -> bool {
        self.0.get(site).is_some_and(|r| r.contains(seq))
    }

    /// Marks `first..=last` of `site` as had.
    pub fn insert(&mut self, site: SiteId, first: u64, last: u64) {
        if first == 0 || first > last {
            return;
        }
        self.0.entry(site).or_default().insert(first, last);
    }

    /// The ranges of one site.
    pub fn site(&self, site: &SiteId) -> Option<&SeqRanges> {
        self.0.get(site)
    }

    /// Every site with its ranges.
    pub fn iter(&self) -> impl Iterator<Item = (&SiteId, &SeqRanges)> {
        self.0.iter()
    }

    /// Adds everything `other` has.
    pub fn merge(&mut self, other: &VersionVector) {
        for (site, ranges) in &other.0 {
            for &(first, last) in ranges.ranges() {
                self.insert(*site, first, last);
            }
        }
    }

    /// Whether every dot of `self` is in `other`.
    pub fn le(&self, other: &VersionVector) -> bool {
        self.0.iter().all(|(site, ranges)| {
            ranges.ranges().iter().all(|&(f, l)| {
                other
                    .site(site)
                    .is_some_and(|o| o.intersect(f, l) == [(f, l)])
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn deserialized_ranges_are_normalized() -> Result<(), serde_json::Error> {
        let r: SeqRanges =
            serde_json::from_str("[[9,12],[0,3],[5,1],[2,4],[13,13],[1,18446744073709551615]]")?;
        assert_eq!(r.ranges(), &[(1, u64::MAX)]);
        assert_eq!(r.first_missing(), u64::MAX);
        let r: SeqRanges = serde_json::from_str("[[9,12],[2,4],[5,5]]")?;
        assert_eq!(r.ranges(), &[(2, 5), (9, 12)]);
        Ok(())
    }

    #[test]
    fn ranges_merge_when_they_touch() {
        let mut r = SeqRanges::default();
        r.insert(5, 6);
        r.insert(1, 2);
        assert_eq!(r.ranges(), &[(1, 2), (5, 6)]);
        assert_eq!(r.first_missing(), 3);
        r.insert(3, 4);
        assert_eq!(r.ranges(), &[(1, 6)]);
        assert!(r.contains(4) && !r.contains(7) && !r.contains(0));
        assert_eq!(r.intersect(0, 3), vec![(1, 3)]);
    }

    proptest! {
        #[test]
        fn ranges_match_a_plain_set(inserts in prop::collection::vec((0u64..40, 0u64..6), 0..20)) {
            let mut r = SeqRanges::default();
            let mut set = std::collections::BTreeSet::new();
            for (first, len) in inserts {
                r.insert(first, first + len);
                if first > 0 {
                    set.extend(first..=first + len);
                }
            }
            for seq in 0..50 {
                prop_assert_eq!(r.contains(seq), set.contains(&seq));
                for len in 0..4 {
                    let all = (seq..=seq + len).all(|s| set.contains(&s));
                    prop_assert_eq!(r.contains_all(seq, seq + len), all);
                }
            }
            prop_assert!(r.ranges().windows(2).all(|w| w[0].1 + 1 < w[1].0));
            let first_missing = (1..).find(|s| !set.contains(s)).unwrap_or(1);
            prop_assert_eq!(r.first_missing(), first_missing);
        }
    }
}
