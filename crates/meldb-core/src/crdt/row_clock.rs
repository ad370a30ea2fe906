//! Row clocks: what a replica has seen of one row.
//!
//! Every local write to a row is a *dot* `(site, seq)`: `seq` counts that
//! site's writes across the whole database. A row's clock maps each site to
//! the greatest dot of that site whose effect the row's state contains.
//! Because row states always travel and merge whole, containing dot
//! `(s, n)` means containing every earlier write of `s` to the same row, so
//! one number per site is exact.
//!
//! Comparing the local and the incoming clock classifies a change
//! ([`Causality`]): already seen, a fast-forward, or truly concurrent.
//! Timestamps play no part in it.

use crate::clock::SiteId;

/// One write: the site that made it and that site's sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dot {
    /// The writing replica.
    pub site: SiteId,
    /// The writer's sequence number, from 1.
    pub seq: u64,
}

/// How an incoming row state relates to the local one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Causality {
    /// Everything in it is already here; merging changes nothing.
    Duplicate,
    /// It descends from the local state (its writer had seen everything the
    /// local row has): the merge result is the incoming state.
    FastForward,
    /// Neither side saw all of the other: a real conflict.
    Concurrent,
}

/// Per-site greatest dot seen, sorted by site.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct RowClock(Vec<(SiteId, u64)>);

impl RowClock {
    /// An empty clock (nothing seen).
    pub fn new() -> Self {
        RowClock(Vec::new())
    }

    /// Builds a clock from entries, keeping the greatest seq per site.
    pub fn from_entries(entries: impl IntoIterator<Item = (SiteId, u64)>) -> Self {
        // Sorted once, then the greatest seq kept per site: what observing
        // each entry in turn gives, in O(n log n) whatever the order (a
        // decoded clock with its sites in descending order must not cost
        // a quadratic run of inserts at the front).
        let mut entries: Vec<(SiteId, u64)> = entries.into_iter().collect();
        entries.sort_unstable();
        let mut out: Vec<(SiteId, u64)> = Vec::with_capacity(entries.len());
        for (site, seq) in entries {
            match out.last_mut() {
                Some(last) if last.0 == site => last.1 = last.1.max(seq),
                _ => out.push((site, seq)),
            }
        }
        RowClock(out)
    }

    /// The entries, sorted by site.
    pub fn entries(&self) -> &[(SiteId, u64)] {
        &self.0
    }

    /// True when the entries are sorted by site with no repeats and no zero
    /// seq: the form every constructor produces. Decoded input is checked.
    pub fn is_canonical(&self) -> bool {
        self.0.windows(2).all(|w| w[0].0 < w[1].0) && self.0.iter().all(|&(_, s)| s > 0)
    }

    /// The greatest seq seen from `site` (0 if none).
    pub fn get(&self, site: &SiteId) -> u64 {
        match self.0.binary_search_by(|(s, _)| s.cmp(site)) {
            Ok(i) => self.0[i].1,
            Err(_) => 0,
        }
    }

    /// Whether the dot's effect is contained.
    pub fn contains(&self, dot: Dot) -> bool {
        self.get(&dot.site) >= dot.seq
    }

    /// Records a dot (keeps the maximum per site).
    pub fn observe(&mut self, dot: Dot) {
        match self.0.binary_search_by(|(s, _)| s.cmp(&dot.site)) {
            Ok(i) => self.0[i].1 = self.0[i].1.max(dot.seq),
            Err(i) => self.0.insert(i, (dot.site, dot.seq)),
        }
    }

    /// Pointwise maximum.
    pub fn join(&self, other: &RowClock) -> RowClock {
        let mut out = Vec::with_capacity(self.0.len().max(other.0.len()));
        let (mut i, mut j) = (0, 0);
        while i < self.0.len() && j < other.0.len() {
            let (a, b) = (self.0[i], other.0[j]);
            match a.0.cmp(&b.0) {
                std::cmp::Ordering::Less => {
                    out.push(a);
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    out.push(b);
                    j += 1;
                }
                std::cmp::Ordering::Equal => {
                    out.push((a.0, a.1.max(b.1)));
                    i += 1;
                    j += 1;
                }
            }
        }
        out.extend_from_slice(&self.0[i..]);
        out.extend_from_slice(&other.0[j..]);
        RowClock(out)
    }

    /// Whether every entry of `self` is contained in `other`.
    pub fn le(&self, other: &RowClock) -> bool {
        self.0.iter().all(|&(site, seq)| other.get(&site) >= seq)
    }

    /// Classifies an incoming clock against this (local) one.
    pub fn classify(&self, incoming: &RowClock) -> Causality {
        if incoming.le(self) {
            Causality::Duplicate
        } else if self.le(incoming) {
            Causality::FastForward
        } else {
            Causality::Concurrent
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crdt::strategies::{row_clock, site};
    use proptest::prelude::*;

    proptest! {
        /// Building a clock from entries in any order is observing each.
        #[test]
        fn from_entries_is_observing_each_entry(
            entries in proptest::collection::vec((0u8..6, 0u64..20), 0..30)
        ) {
            let entries: Vec<(SiteId, u64)> =
                entries.into_iter().map(|(s, n)| (site(s), n)).collect();
            let mut observed = RowClock::new();
            for &(site, seq) in &entries {
                observed.observe(Dot { site, seq });
            }
            prop_assert_eq!(RowClock::from_entries(entries), observed);
        }
    }

    #[test]
    fn classify_tells_the_three_cases_apart() {
        let (a, b) = (site(0), site(1));
        let local = RowClock::from_entries([(a, 3), (b, 1)]);
        assert_eq!(
            local.classify(&RowClock::from_entries([(a, 2)])),
            Causality::Duplicate
        );
        assert_eq!(local.classify(&local.clone()), Causality::Duplicate);
        assert_eq!(
            local.classify(&RowClock::from_entries([(a, 4), (b, 1)])),
            Causality::FastForward
        );
        assert_eq!(
            local.classify(&RowClock::from_entries([(a, 2), (b, 2)])),
            Causality::Concurrent
        );
    }

    proptest! {
        #[test]
        fn join_is_a_semilattice(x in row_clock(), y in row_clock(), z in row_clock()) {
            prop_assert_eq!(x.join(&y), y.join(&x));
            prop_assert_eq!(x.join(&y).join(&z), x.join(&y.join(&z)));
            prop_assert_eq!(x.join(&x), x.clone());
            prop_assert!(x.le(&x.join(&y)));
            prop_assert!(x.join(&y).is_canonical());
        }
    }
}
